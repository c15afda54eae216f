"""Read the Tesla app's energy data export (Powerwall and Tesla Solar owners).

The app's Energy screen exports the period on screen as a CSV. Two layouts exist, told apart
by the units in the header (docs/formats.md, 'Tesla app export'):

- **Day view** (read): one row per 5 minutes, *average power in kW*, rounded to 0.1 kW::

      Date time,Home (kW),Solar (kW),Powerwall (kW),Grid (kW),Energy Remaining (%)
      2023-03-25T14:30:00-07:00,0.9,7.9,-1.1,-5.8,100

  ``Date time`` is ISO 8601 with the UTC offset in force at that instant, so the DST days are
  unambiguous (spring-forward: ``01:55-08:00`` is followed by ``03:00-07:00``; fall-back: the
  ``01:00``–``01:55`` hour appears at ``-07:00`` and again at ``-08:00``). Signs: Grid positive
  = import from the grid, negative = export; Powerwall positive = discharging, negative =
  charging; Home = Solar + Powerwall + Grid (to the rounding). ``Energy Remaining (%)`` (state
  of energy, filled every 15 minutes) is not read.
- **Week, Month, Year and Lifetime views** (refused for billing): one *energy total in kWh* per
  day or per month, e.g. ``Date time,Home (kWh),Vehicle (kWh),From Powerwall (kWh),Solar
  Energy (kWh),From Grid (kWh),To Grid (kWh)``, one row per local day. Daily totals cannot
  be split into time-of-use periods, so they are refused with the fix (export the Day view).

Where the layout comes from (no official specification is published; Tesla's support pages
describe the Energy screen and its Day/Week/Month/Year/Lifetime views and say detailed data
can be exported):

- Day-view files exported from the app, including both 2022 DST days, published in the
  craigahobbs/tespo repository (``data-raw/2023-03-25.csv``,
  ``scenarios/powerwall/seattle/2022-03-13.csv`` and ``2022-11-06.csv``);
- Month-view files in the craigahobbs/solar repository (``data-raw/2020-03.csv`` …
  ``2025-03.csv``): daily kWh rows, the ``Vehicle (kWh)`` column appearing by 2025;
- programs that read these files: cjw296/energy (README: the app saves each export as
  ``data.csv``, one day at a time; ``octopus-tesla-rec.py``: ``Date time`` index, ``Grid
  (kW)`` negative = export, kW × 5/60 h = kWh) and client-side-apps/life-dashboard
  (``src/importers/energy/tesla.js``: ``Date time``, ``Solar Energy (kWh)``, ``Home
  (kWh)``);
- the cloud API the app reads (timdorr's tesla-api documentation, energy history: power in W
  as ``solar_power``, ``battery_power``, ``grid_power``; jasonacox/Powerwall-Dashboard
  GitHub #87, the ``tesla-history`` tool's mapping: home = solar + battery + grid, battery > 0
  = from Powerwall, grid > 0 = from grid);
- tomhollander/PowerwallCompanion GitHub #8 (the app rounds power to 0.1 kW);
  netzero-labs/tesla-solar-download GitHub #6 (values in the app's download appear 5 minutes
  later than in the API's start-stamped series, checked against Powerwall-Dashboard's
  gateway readings) and #21 (the app exports one day at a time, at limited precision).

Interval timing: each row is read as the average over the 5 minutes *starting* at its time,
so a day's rows 00:00 … 23:55 tile that day and a month of day files bills as that month.
The 5-minute lag reported against the API (above) is a known limitation of the app's file;
``timestamps="end"`` reads each row as the 5 minutes *ending* at its time instead.

Energy per interval: kWh = kW × interval h (5-minute rows: kW × 5/60). Mapping (with the
app's signs): import = max(Grid, 0), export = max(−Grid, 0), load = Home (+ Vehicle when a
``Vehicle (kW)`` column exists and balances), pv = max(Solar, 0), battery = Powerwall
(positive = discharging). A net Grid value per 5 minutes cannot show a flow reversal inside
those 5 minutes, so gross import/export can be slightly understated against the utility
meter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Literal

import numpy as np

from adapters.usage._assemble import Parsed, assemble, check_sequence
from adapters.usage._csv_input import PathLike, header_and_rows, parse_number, rows_with_fields
from adapters.usage._problems import Problems, fail
from adapters.usage._times import LocalClock, duration_text, time_zone
from optimizer.intervals import IntervalData

#: The Day view's header as the app writes it (the columns this reader needs, in its order).
DAY_HEADER = "Date time,Home (kW),Solar (kW),Powerwall (kW),Grid (kW)"
#: An interval start as the app writes it.
EXAMPLE_TIME = "2024-06-01T00:00:00-07:00"

Signs = Literal["auto", "tesla", "reversed"]
Timestamps = Literal["start", "end"]

_UNIT = re.compile(r"^(.*?)\s*\(\s*([^)]*?)\s*\)\s*$")
_POWER = ("home", "solar", "powerwall", "grid", "vehicle")
_ENERGY = ("home", "vehicle", "powerwall", "from powerwall", "to powerwall", "solar",
           "solar energy", "grid", "grid energy", "from grid", "to grid")
_REQUIRED = ("home", "solar", "powerwall", "grid")
_NAMES = {"home": "Home (kW)", "solar": "Solar (kW)", "powerwall": "Powerwall (kW)",
          "grid": "Grid (kW)", "vehicle": "Vehicle (kW)"}
#: kW: a row balances when |Home − (Solar + Powerwall + Grid)| is within this plus
#: :data:`_BALANCE_SHARE` of the row's largest value (four values each rounded to 0.1 kW).
_BALANCE_KW = 0.25
_BALANCE_SHARE = 0.03
#: Share of rows that may miss the balance (grid-services events, rounding) before the file
#: is refused as not the app's columns or signs.
_UNBALANCED_SHARE = 0.10
#: Longest step between Day-view rows that is read as interval data.
_MAX_STEP_S = 3600
_DAY_FIX = ("in the Tesla app open Energy, choose the Day view and export it (5-minute "
            f"power: {DAY_HEADER}); join several days into one file (docs/formats.md, "
            "'Tesla app export')")


@dataclass
class Header:
    """A Tesla app export header: ``layout`` 'power' (Day view, kW) or 'energy' (kWh)."""

    layout: str
    ts: int
    cols: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # key: (i, name, unit)
    extra: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)


def _norm(cell: str) -> str:
    return re.sub(r"\s+", " ", cell.strip()).lower()


def header_columns(cells: Sequence[str]) -> Header | None:
    """The Tesla app export header in ``cells``, or None if the row is not one.

    A header has a ``Date time`` column and at least one of the app's quantities with a unit:
    ``Home (kW)`` … (Day view) or ``Home (kWh)``, ``From Grid (kWh)`` … (longer views).
    """
    ts = None
    power: dict[str, tuple[int, str, str]] = {}
    energy: dict[str, tuple[int, str, str]] = {}
    other: dict[str, tuple[int, str, str]] = {}
    extra: list[str] = []
    for i, c in enumerate(cells):
        name = _norm(c)
        if name in ("date time", "datetime", "date/time") and ts is None:
            ts = i
            continue
        m = _UNIT.match(name)
        base, unit = (m.group(1), m.group(2)) if m else (name, "")
        if base in _POWER and unit == "kw":
            power.setdefault(base, (i, c.strip(), unit))
        elif base in _ENERGY and unit == "kwh":
            energy.setdefault(base, (i, c.strip(), unit))
        elif base in _POWER and unit:
            other.setdefault(base, (i, c.strip(), unit))
        else:
            extra.append(c.strip())
    if ts is None or not (power or energy):
        return None
    if power:
        cols = {**other, **power}
        extra += [name for _, name, _ in energy.values()]
        return Header("power", ts, cols, extra, list(cells))
    return Header("energy", ts, energy, extra, list(cells))


def _to_utc(ts: str, clock: LocalClock | None) -> int | str | None:
    """UTC epoch seconds of the app's time; None for a local time that does not exist;
    a string saying what is wrong otherwise."""
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        return f"{ts!r} is not an ISO 8601 time"
    if dt.microsecond:
        return f"{ts!r} has fractional seconds"
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        return int(dt.timestamp())
    if clock is None:
        return "no-zone"
    return clock.to_utc(dt)


def _refuse_energy(src: str, hline: int, h: Header, rows) -> None:
    """The longer views' kWh totals: refused, saying which view it looks like."""
    stamps: list[tuple[int, int]] = []
    for line, cells in rows:
        if len(cells) <= h.ts:
            continue
        t = _to_utc(cells[h.ts].strip(), None)
        if isinstance(t, int):
            stamps.append((line, t))
        if len(stamps) == 3:
            break
    cols = ", ".join(name for _, name, _ in h.cols.values())
    where, per = f"{src}:{hline}", "row"
    if len(stamps) >= 2:
        step = min(b - a for (_, a), (_, b) in pairwise(stamps))
        where = f"{src}:{stamps[1][0]}"
        if step >= 28 * 86400:
            per = "month (the Year or Lifetime view)"
        elif step >= 23 * 3600:
            per = "day (the Week or Month view)"
        else:
            per = f"{duration_text(step)}"
    raise fail(
        f"this Tesla app export holds energy totals in kWh ({cols}), one per {per}, not "
        "5-minute power: totals cannot be split into the tariff's time-of-use periods, so "
        "they cannot be billed",
        where,
        _DAY_FIX,
    )


def read_tesla_app_csv(
    path: PathLike,
    *,
    tz: str | None = None,
    allow_gaps: bool = False,
    signs: Signs = "auto",
    timestamps: Timestamps = "start",
    service_kw: float | None = None,
) -> IntervalData:
    """Read the Tesla app's Day-view energy export (5-minute power, kW) into kWh per interval.

    Args:
        path: the CSV: one day as the app exports it, or several days joined (header rows
            repeated inside the file are skipped; rows out of time order are sorted).
        tz: IANA zone for times written without a UTC offset (the app writes offsets; a
            spreadsheet may drop them). Times with an offset ignore it.
        allow_gaps: accept missing intervals (missing days), as the other readers do.
        signs: ``"tesla"`` (Grid positive = import, Powerwall positive = discharging),
            ``"reversed"`` (both negated), or ``"auto"`` (default): whichever makes Home =
            Solar + Powerwall + Grid hold in more rows, the app's on a tie; a reversed file
            is noted.
        timestamps: ``"start"`` (default; each row is the interval starting at its time) or
            ``"end"`` (the interval ending at its time).
        service_kw: the site's service size for the plausibility check (:mod:`._plausible`).

    Returns:
        IntervalData: UTC interval starts; import, export, load, pv and battery kWh per
        interval (battery positive = discharging).

    Raises:
        UsageError: not a Tesla app header, the Week/Month/Year views' kWh totals, missing
            or non-kW columns, unreadable times or numbers (naming line and column), a
            negative Home, rows more than an hour apart, Home ≠ Solar + Powerwall + Grid in
            more than 10 % of rows, duplicates, mixed intervals, gaps (unless
            ``allow_gaps``), implausible power.
    """
    src = str(path)
    if signs not in ("auto", "tesla", "reversed"):
        raise fail(f"unknown signs {signs!r}", src, "give signs='auto', 'tesla' or 'reversed'")
    if timestamps not in ("start", "end"):
        raise fail(f"unknown timestamps {timestamps!r}", src,
                   "give timestamps='start' or 'end'")
    zone = time_zone(tz, src) if tz else None
    hline, hcells, rows = header_and_rows(path, _DAY_FIX)
    h = header_columns(hcells)
    if h is None:
        raise fail(
            f"not a Tesla app export header: {[c.strip() for c in hcells][:8]}",
            f"{src}:{hline}",
            _DAY_FIX,
        )
    if h.layout == "energy":
        _refuse_energy(src, hline, h, rows)
    for i, name, unit in h.cols.values():
        if unit != "kw":
            raise fail(
                f"column {i + 1} {name!r} is in {unit!r}; the Day view's columns are in kW",
                f"{src}:{hline}",
                f"use the app's unedited Day export ({DAY_HEADER})",
            )
    missing = [_NAMES[k] for k in _REQUIRED if k not in h.cols]
    if missing:
        raise fail(
            f"missing column(s) {missing}; found {[c.strip() for c in hcells]}",
            f"{src}:{hline}",
            f"use the app's unedited Day export, whose header is {DAY_HEADER}",
        )
    keys = [k for k in (*_REQUIRED, "vehicle") if k in h.cols]
    idx = [h.cols[k][0] for k in keys]
    need = max([h.ts, *idx]) + 1
    header_norm = [_norm(c) for c in hcells]
    clock = LocalClock(zone) if zone is not None else None

    probs = Problems(src)
    starts: list[int] = []
    lines: list[int] = []
    labels: list[str] = []
    values: list[list[float]] = []
    repeated = 0

    def body():
        nonlocal repeated
        for line, cells in rows:
            if [_norm(c) for c in cells] == header_norm:
                repeated += 1
                continue
            yield line, cells

    ts_col = f"Date time (column {h.ts + 1})"
    for line, cells in rows_with_fields(body(), probs, need):
        ts = cells[h.ts].strip()
        t = _to_utc(ts, clock)
        if t == "no-zone":
            raise fail(
                f"{ts_col} {ts!r} has no UTC offset, and no time zone was given",
                f"{src}:{line}",
                f"keep the app's offsets ({EXAMPLE_TIME}), or pass --timezone "
                "America/Los_Angeles (tz=; the site's zone)",
            )
        if isinstance(t, str):
            if probs.add(line, f"{ts_col} {t}", f"the app writes times like {EXAMPLE_TIME}"):
                break
            continue
        row: list[float] = []
        for k, i in zip(keys, idx, strict=True):
            cell = cells[i]
            try:
                v = float(cell)
                if not math.isfinite(v):
                    raise ValueError
            except ValueError:
                try:
                    v = parse_number(cell)
                except ValueError as e:
                    name = h.cols[k][1]
                    probs.add(line, f"{name} (column {i + 1}) {e}",
                              f"give {name} as a number of kW")
                    break
            row.append(v)
        else:
            if t is None:
                probs.add(line, f"{ts_col} {ts!r} does not exist in {tz} (the clocks "
                          "spring forward over it)",
                          f"check the zone (is the site in {tz}?), or keep the app's offsets")
            else:
                starts.append(t)
                lines.append(line)
                labels.append(ts)
                values.append(row)
            if probs.full:
                break
            continue
        if probs.full:
            break
    probs.raise_if_any()
    if not starts:
        raise fail("no data rows below the header", f"{src}:{hline}", _DAY_FIX)

    notes: list[str] = []
    if repeated:
        notes.append(f"skipped {repeated} repeated header row(s) (day files joined into one)")
    if clock is not None:
        notes += clock.fall_back_notes()
    t = np.asarray(starts, dtype=np.int64)
    v = np.asarray(values, dtype=float)
    line_arr = np.asarray(lines)
    if np.any(np.diff(t) < 0):
        order = np.argsort(t, kind="stable")
        t, v, line_arr = t[order], v[order], line_arr[order]
        labels = [labels[i] for i in order]
        notes.append("rows were not in time order (day files joined out of order?); read in "
                     "time order")
    lines = [int(x) for x in line_arr]
    col = {k: v[:, j] for j, k in enumerate(keys)}

    neg = np.flatnonzero(col["home"] < 0)
    for i in neg:
        if probs.add(lines[i], f"{h.cols['home'][1]} (column {h.cols['home'][0] + 1}) is "
                     f"negative ({col['home'][i]:g} kW)",
                     "Home is the house's consumption and never negative: check the columns "
                     "are the app's, unedited"):
            break
    probs.raise_if_any()

    p = Parsed(src, starts=list(t), lines=lines, labels=labels)
    step = check_sequence(p, t, None)
    if step > _MAX_STEP_S:
        raise fail(
            f"rows are {duration_text(step)} apart: power samples that far apart are not "
            "interval data",
            f"{src}:{lines[1]}",
            _DAY_FIX,
        )

    sign, load_kw, rule = _balance(src, h, col, lines, signs, notes)
    hours = step / 3600.0
    grid = sign * col["grid"]
    solar = col["solar"]
    neg_solar = solar < 0
    if neg_solar.any():
        notes.append(f"{int(neg_solar.sum())} row(s) with negative Solar (inverter standby): "
                     "pv set to 0 there")
    p.starts = list(t - step) if timestamps == "end" else list(t)
    p.cols = {
        "import_kwh": list(np.maximum(grid, 0.0) * hours),
        "export_kwh": list(np.maximum(-grid, 0.0) * hours),
        "load_kwh": list(load_kw * hours),
        "pv_kwh": list(np.maximum(solar, 0.0) * hours),
        "battery_kwh": list(sign * col["powerwall"] * hours),
    }
    notes.insert(0, (
        f"Tesla app Day export: average kW × {duration_text(step)} = kWh per interval, each "
        f"row the interval {'ending' if timestamps == 'end' else 'starting'} at its time; "
        f"{rule}; Grid is net per interval, so flow reversals inside one are lost"))
    p.notes = notes
    if h.extra:
        p.notes.append(f"ignored column(s) {h.extra}")
    return assemble(p, interval_s=step, allow_gaps=allow_gaps, zone=zone,
                    service_kw=service_kw)


def _balance(src: str, h: Header, col: dict[str, np.ndarray], lines: list[int],
             signs: Signs, notes: list[str]) -> tuple[float, np.ndarray, str]:
    """The sign convention and load (kW per row): the candidate under which Home (+ Vehicle)
    = Solar + Powerwall + Grid holds in most rows, the app's convention first on a tie."""
    home, solar, pw, grid = col["home"], col["solar"], col["powerwall"], col["grid"]
    loads = [("Home", home)]
    if "vehicle" in col:
        loads.append(("Home + Vehicle", home + col["vehicle"]))
    allowed = {"auto": (1.0, -1.0), "tesla": (1.0,), "reversed": (-1.0,)}[signs]
    big = np.max(np.abs(np.column_stack([home, solar, pw, grid])), axis=1)
    tol = _BALANCE_KW + _BALANCE_SHARE * big
    cands = []
    for s in allowed:
        for lname, load in loads:
            resid = load - (solar + s * (pw + grid))
            ok = np.abs(resid) <= tol
            cands.append((int(ok.sum()), s, lname, load, ok))
    best = max(range(len(cands)), key=lambda k: (cands[k][0], -k))
    n_ok, s, lname, load, ok = cands[best]
    n = len(home)
    bad = np.flatnonzero(~ok)
    cols = ", ".join(f"{h.cols[k][1]} {col[k][bad[0]]:g}" for k in ("home", "solar",
                                                                      "powerwall", "grid")
                     ) if len(bad) else ""
    sign_text = ("Grid positive = import, Powerwall positive = discharging" if s > 0 else
                 "Grid positive = export, Powerwall positive = charging")
    if len(bad) > _UNBALANCED_SHARE * n:
        raise fail(
            f"{lname} ≠ Solar + Powerwall + Grid in {len(bad)} of {n} rows (first at line "
            f"{lines[bad[0]]}: {cols}), with either sign convention",
            f"{src}:{lines[bad[0]]}",
            "use the app's unedited Day export: Home = Solar + Powerwall + Grid, with Grid "
            "positive = import and Powerwall positive = discharging",
        )
    if len(bad):
        notes.append(f"{lname} ≠ Solar + Powerwall + Grid beyond rounding in {len(bad)} of {n} "
                     f"row(s) (first at {src}:{lines[bad[0]]}: {cols}; grid services or an "
                     "outage?): Grid is billed as exported, Home kept as load")
    if s < 0:
        notes.append(f"signs are reversed from the app's ({sign_text}): read that way "
                     f"because {lname} = Solar − Powerwall − Grid holds in {n_ok} of {n} rows")
    if lname != "Home":
        notes.append("load = Home + Vehicle (the Vehicle column balances the rows)")
    return s, load, f"{sign_text}; load = {lname}, pv = Solar, battery = Powerwall"
