"""Read CT-register exports (eGauge-style): a Grid and a Solar register.

Register values are energy, kWh (``[Wh]``/``[MWh]`` scaled; average-power ``[kW]`` refused),
per interval or as cumulative readings; timestamps are Unix seconds, ISO 8601 with a UTC offset,
or local times in a given zone. The site's metering topology turns them into meter
import/export kWh per interval at UTC interval starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise
from typing import Literal

import numpy as np

from adapters.usage._assemble import Parsed, assemble, check_sequence
from adapters.usage._csv_input import (
    PathLike,
    header_and_rows,
    is_number,
    parse_number,
    rows_with_fields,
)
from adapters.usage._problems import Problems, fail
from adapters.usage._times import EXAMPLE_TS, LocalClock, duration_text, time_zone
from optimizer.intervals import IntervalData

Topology = Literal["backfed", "line_side_tap"]

_UNIT = re.compile(r"^(.*?)\s*\[\s*([^\]]*)\s*\]\s*$")
_ENERGY_SCALE = {"kwh": 1.0, "wh": 0.001, "mwh": 1000.0}
_TS_NAMES = ("timestamp", "date & time", "date&time", "date/time", "time")
_LOCAL_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M")


def register_columns(header: Sequence[str]) -> dict[str, tuple[int, str, str]]:
    """{'ts'|'grid'|'solar': (index, column name, unit)} for the columns found."""
    out: dict[str, tuple[int, str, str]] = {}
    for i, c in enumerate(header):
        name = c.strip()
        m = _UNIT.match(name)
        base, unit = (m.group(1), m.group(2)) if m else (name, "")
        b = base.strip().lower()
        if b in _TS_NAMES and "ts" not in out:
            out["ts"] = (i, name, "")
        elif b in ("grid", "grid_kwh") and "grid" not in out:
            out["grid"] = (i, name, unit.lower() or "kwh")
        elif b in ("solar", "solar_kwh") and "solar" not in out:
            out["solar"] = (i, name, unit.lower() or "kwh")
    return out


def _ct_time(s: str) -> int | datetime:
    """Epoch seconds (int) for epoch or offset timestamps; a naive datetime for local ones."""
    if s.isdigit() or (s.replace(".", "", 1).isdigit() and s.count(".") == 1):
        v = float(s)
        if v != int(v):
            raise ValueError
        return int(v)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        for fmt in _LOCAL_FORMATS:
            try:
                dt = datetime.strptime(s, fmt)
                break
            except ValueError:
                pass
        else:
            raise
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        return int(dt.timestamp())
    return dt


def _looks_cumulative(x: np.ndarray) -> bool:
    """A register reading rather than per-interval energy: (nearly) never falls, and its
    values are large compared with its steps."""
    if len(x) < 3:
        return False
    d = np.diff(x)
    rise, fall = d[d > 0].sum(), -d[d < 0].sum()
    mean_step = np.abs(d).mean()
    return bool(rise > 0 and fall <= 0.01 * rise and np.median(np.abs(x)) > 10 * mean_step)


def read_ct_register_csv(
    path: PathLike,
    *,
    topology: Topology,
    tz: str | None = None,
    allow_gaps: bool = False,
    registers: Literal["auto", "interval", "cumulative"] = "auto",
    service_kw: float | None = None,
) -> IntervalData:
    """Read a CT-register export (eGauge-style) with a Grid and a Solar register.

    Accepted layouts:

    - trueup's simple form ``timestamp,grid_kwh,solar_kwh``: ISO 8601 interval starts with a
      UTC offset, kWh per interval;
    - eGauge exports: a ``Date & Time`` column (Unix epoch seconds, ISO with an offset, or a
      *local* time string, which needs ``tz``) and ``Grid [kWh]``, ``Solar [kWh]`` columns
      (``[Wh]``/``[MWh]`` scaled; ``[kW]`` average-power exports are refused). Newest-first
      files are sorted (with a note).

    ``registers``: ``"interval"`` = kWh per interval at the row's interval start;
    ``"cumulative"`` = register readings (eGauge's kWh export), differenced so that reading
    *i+1* − reading *i* is the energy of the interval starting at row *i* (one interval fewer
    than rows); ``"auto"`` (default) picks cumulative when the Solar column never falls by more
    than 1 % of its rise and its values are over 10× its mean step, and says which in a note.

    Topology (docs/billing-rules.md, 'Metering topology'), per interval, with ``grid`` and
    ``solar`` in kWh:

    - ``"backfed"``: the grid register is the net flow at the meter (positive = import):
      import = max(grid, 0), export = max(−grid, 0), pv = solar, load = grid + solar;
    - ``"line_side_tap"``: the main-panel CTs see only consumption (grid ≥ 0 required):
      import = max(grid − solar, 0), export = max(solar − grid, 0), load = grid, pv = solar.

    A slightly negative solar value (inverter standby at night) gives pv = 0 and is counted in
    load, with a note, so import − export + pv = load always holds.

    Limitation: one net value per register and interval cannot show flow reversals *inside* an
    interval (export at 12:05, import at 12:10 net out), so gross import and export are
    understated compared with the utility meter's registers; use the finest interval available.

    Returns:
        IntervalData: UTC interval starts; import, export, load, pv in kWh per interval.

    Raises:
        UsageError: unknown topology, missing columns, kW columns, local times without ``tz``,
            unreadable rows, negative line-side grid values or loads, a reversed Solar CT,
            duplicates, mixed intervals, gaps (unless ``allow_gaps``).
    """
    src = str(path)
    topo = str(topology).strip().lower().replace("-", "_")
    if topo not in ("backfed", "line_side_tap"):
        raise fail(
            f"unknown metering topology {topology!r}",
            src,
            "give --topology backfed (topology='backfed': main CTs see net flow) or "
            "'line_side_tap' (main-panel CTs see only consumption)",
        )
    if registers not in ("auto", "interval", "cumulative"):
        raise fail(
            f"unknown registers mode {registers!r}",
            src,
            "give registers='auto', 'interval' or 'cumulative'",
        )
    zone = time_zone(tz, src) if tz else None
    hline, header, rows = header_and_rows(
        path, "write the header timestamp,grid_kwh,solar_kwh and one row per interval"
    )
    cols = register_columns(header)
    missing = [k for k in ("ts", "grid", "solar") if k not in cols]
    if missing:
        names = {
            "ts": "timestamp (or 'Date & Time')",
            "grid": "grid_kwh (or 'Grid [kWh]')",
            "solar": "solar_kwh (or 'Solar [kWh]')",
        }
        raise fail(
            f"missing column(s) {[names[k] for k in missing]}; found {[c.strip() for c in header]}",
            f"{src}:{hline}",
            "export the Grid and Solar registers, or rename the columns to "
            "timestamp,grid_kwh,solar_kwh",
        )
    for k in ("grid", "solar"):
        _, name, unit = cols[k]
        if unit == "kw":
            raise fail(
                f"column {name!r} is average power (kW), not energy",
                f"{src}:{hline}",
                "export energy (kWh register readings) instead of average power",
            )
        if unit not in _ENERGY_SCALE:
            raise fail(
                f"column {name!r} has unit {unit!r}; expected kWh",
                f"{src}:{hline}",
                "export the registers in kWh",
            )
    i_ts, i_g, i_s = cols["ts"][0], cols["grid"][0], cols["solar"][0]
    k_g, k_s = _ENERGY_SCALE[cols["grid"][2]], _ENERGY_SCALE[cols["solar"][2]]
    need_len = max(i_ts, i_g, i_s) + 1

    probs = Problems(src)
    keys: list[int | datetime] = []
    lines: list[int] = []
    labels: list[str] = []
    grid: list[float] = []
    solar: list[float] = []
    for line, cells in rows_with_fields(rows, probs, need_len):
        ts = cells[i_ts].strip()
        try:
            key = _ct_time(ts)
        except ValueError:
            if probs.add(
                line,
                f"timestamp {ts!r} is not epoch seconds or ISO 8601",
                f"write times like {EXAMPLE_TS} or Unix seconds",
            ):
                break
            continue
        if isinstance(key, datetime) and zone is None:
            raise fail(
                f"timestamp {ts!r} is a local time without a UTC offset, and no time "
                "zone was given",
                f"{src}:{line}",
                "pass --timezone America/Los_Angeles (tz=; the meter's zone), or export "
                "Unix timestamps",
            )
        try:
            g = parse_number(cells[i_g]) * k_g
            s = parse_number(cells[i_s]) * k_s
        except ValueError as e:
            which = cols["grid"][1] if not is_number(cells[i_g]) else cols["solar"][1]
            if probs.add(line, f"{which} {e}", "give register values as numbers"):
                break
            continue
        keys.append(key)
        lines.append(line)
        labels.append(ts)
        grid.append(g)
        solar.append(s)
    probs.raise_if_any()
    if not keys:
        raise fail("no data rows below the header", f"{src}:{hline}", "add one row per interval")
    if len({type(k) for k in keys}) > 1:
        i = next(j for j, k in enumerate(keys) if type(k) is not type(keys[0]))
        raise fail(
            f"timestamp {labels[i]!r} is in a different form from the first row's {labels[0]!r}",
            f"{src}:{lines[i]}",
            "use one timestamp form throughout",
        )
    notes: list[str] = []
    # eGauge exports run newest first: put them oldest first (the keys are comparable)
    asc = sum(1 for a, b in pairwise(keys) if b > a)
    desc = sum(1 for a, b in pairwise(keys) if b < a)
    if desc > asc:
        keys.reverse()
        lines.reverse()
        labels.reverse()
        grid.reverse()
        solar.reverse()
        notes.append("rows were newest first (eGauge export order); read oldest first")
    if isinstance(keys[0], datetime):
        clock = LocalClock(zone)  # type: ignore[arg-type]
        starts: list[int] = []
        for key, line, label in zip(keys, lines, labels, strict=True):
            t = clock.to_utc(key)  # type: ignore[arg-type]
            if t is None:
                probs.add(
                    line,
                    f"local time {label} does not exist in {tz} (DST spring-forward)",
                    f"check tz (is the meter really in {tz}?)",
                )
                t = 0
            starts.append(t)
        probs.raise_if_any()
        notes += clock.fall_back_notes()
    else:
        starts = [int(k) for k in keys]  # type: ignore[arg-type]

    p = Parsed(src, starts=starts, lines=lines, labels=labels, notes=notes)
    g_arr, s_arr = np.asarray(grid), np.asarray(solar)
    mode = registers
    if mode == "auto":
        mode = "cumulative" if _looks_cumulative(s_arr) else "interval"
    if mode == "cumulative":
        t = np.asarray(starts, dtype=np.int64)
        step = check_sequence(p, t, None)
        dt = np.diff(t)
        dg, ds = np.diff(g_arr), np.diff(s_arr)
        keep = dt == step
        for i in np.nonzero(~keep)[0]:
            notes.append(
                f"register readings at lines {lines[i]} and {lines[i + 1]} are "
                f"{duration_text(dt[i])} apart: across that gap the registers MEASURED grid "
                f"{dg[i]:+.3f} kWh, solar {ds[i]:+.3f} kWh (not split into intervals)"
            )
        notes.insert(
            0,
            f"registers read as cumulative readings (registers={registers!r}): "
            "reading i+1 − reading i is the energy of the interval starting at "
            "reading i",
        )
        p = Parsed(
            src,
            starts=list(t[:-1][keep]),
            lines=list(np.asarray(lines[:-1])[keep]),
            labels=[lb for lb, k in zip(labels[:-1], keep, strict=True) if k],
            notes=notes,
        )
        g_arr, s_arr = dg[keep], ds[keep]
    else:
        notes.insert(
            0,
            "registers read as per-interval kWh at each row's interval start "
            f"(registers={registers!r})",
        )
    if len(p.starts) == 0:
        raise fail(
            "only one register reading, so no interval energy can be computed",
            f"{src}:{lines[0]}",
            "export at least two readings",
        )

    if topo == "backfed":
        net = g_arr
        rule = "backfed: import = max(grid,0), export = max(−grid,0), load = grid + solar"
    else:
        net = g_arr - s_arr
        rule = (
            "line_side_tap: import = max(grid − solar,0), export = max(solar − grid,0), load = grid"
        )
        for i in np.nonzero(g_arr < 0)[0]:
            if probs.add(
                p.lines[i],
                f"grid register is negative ({g_arr[i]:.4g} kWh), but with "
                "a line-side tap the main-panel CTs see only consumption",
                "if the PV backfeeds the main panel use --topology backfed "
                "(topology='backfed'); otherwise check the Grid CT orientation",
            ):
                break
    imp, exp = np.maximum(net, 0.0), np.maximum(-net, 0.0)
    pv = np.maximum(s_arr, 0.0)
    load = net + pv
    for i in np.nonzero(load < -1e-12)[0]:
        if probs.add(
            p.lines[i],
            f"load comes out negative ({load[i]:.4g} kWh from grid "
            f"{g_arr[i]:.4g}, solar {s_arr[i]:.4g})",
            "check CT orientation (Grid positive = import) and register names; a "
            "battery or other source needs its own column (not read here)",
        ):
            break
    probs.raise_if_any()
    neg_s = s_arr[s_arr < 0]
    if neg_s.size:
        if -neg_s.sum() > pv.sum():
            i = int(np.nonzero(s_arr < 0)[0][0])
            raise fail(
                f"the Solar register is mostly negative ({neg_s.sum():.3f} kWh "
                f"negative vs {pv.sum():.3f} kWh positive)",
                f"{src}:{p.lines[i]}",
                "the Solar CT may be reversed (flip it, or negate the column), or a cumulative "
                "register was reset inside the file (split the file at the reset)",
            )
        notes.append(
            f"{neg_s.size} interval(s) with negative solar ({neg_s.sum():.3f} kWh, "
            "inverter standby): pv set to 0 there and the draw counted in load"
        )
    notes.append(f"topology {rule}; flow reversals inside an interval are lost")
    p.cols = {
        "import_kwh": list(imp),
        "export_kwh": list(exp),
        "load_kwh": list(load),
        "pv_kwh": list(pv),
    }
    p.notes = notes
    return assemble(p, interval_s=None, allow_gaps=allow_gaps, zone=zone,
                    service_kw=service_kw)
