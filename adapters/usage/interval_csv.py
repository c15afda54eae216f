"""Read trueup's own interval CSV (the format is a contract; README, "Interval data formats").

``timestamp,import_kwh,export_kwh[,load_kwh,pv_kwh,battery_kwh]``: interval starts in ISO 8601
with a UTC offset, energies in kWh per interval (never kW).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from adapters.usage._assemble import Parsed, assemble
from adapters.usage._csv_input import PathLike, header_and_rows, parse_number, rows_with_fields
from adapters.usage._problems import Problems, fail
from adapters.usage._times import EXAMPLE_TS
from optimizer.intervals import IntervalData

CONTRACT_REQUIRED = ("timestamp", "import_kwh", "export_kwh")
CONTRACT_OPTIONAL = ("load_kwh", "pv_kwh", "battery_kwh")


def _header_index(cells: Sequence[str]) -> dict[str, int]:
    return {c.strip().lower(): i for i, c in enumerate(cells)}


def read_interval_csv(path: PathLike, *, allow_gaps: bool = False,
                      service_kw: float | None = None) -> IntervalData:
    """Read trueup's interval CSV (README, "Interval data formats").

    Columns (any order, names case-insensitive): ``timestamp,import_kwh,export_kwh`` and
    optionally ``load_kwh,pv_kwh,battery_kwh``; other columns are ignored with a note.

    - ``timestamp``: the interval *start*, ISO 8601 **with a UTC offset**
      (``2025-03-09T01:45:00-08:00`` or ``2025-03-09T09:45:00Z``); converted to UTC.
    - ``import_kwh``, ``export_kwh``: gross grid import/export in the interval, kWh (≥ 0;
      both may be non-zero in one interval: gross register quantities).
    - ``load_kwh``, ``pv_kwh``: home consumption and solar production, kWh (≥ 0).
    - ``battery_kwh``: battery energy, kWh, positive = discharging (may be negative).

    The interval length (5, 15, 60 min ...) is the most common step between rows; every step
    must be a whole multiple of it. A step longer than one interval is a gap: an error, or with
    ``allow_gaps=True`` the real rows are returned (starts then skip the gap) and ``notes``
    lists each gap with an estimate of its kWh (not billed).

    Returns:
        IntervalData: UTC interval starts, kWh per interval.

    Raises:
        UsageError: unreadable rows (bad number or timestamp, no offset), duplicates, rows out
            of order, mixed intervals, negative energies, empty file, missing columns, gaps.
    """
    src = str(path)
    hline, header, rows = header_and_rows(
        path, "write the header timestamp,import_kwh,export_kwh and one row per interval"
    )
    idx = _header_index(header)
    if len(idx) != len(header):
        dup = sorted(
            {
                c.strip().lower()
                for c in header
                if [h.strip().lower() for h in header].count(c.strip().lower()) > 1
            }
        )
        raise fail(
            f"column(s) {dup} appear more than once in the header",
            f"{src}:{hline}",
            "keep one column of each name",
        )
    missing = [c for c in CONTRACT_REQUIRED if c not in idx]
    if missing:
        raise fail(
            f"missing required column(s) {missing}; found {[c.strip() for c in header]}; "
            f"expected {list(CONTRACT_REQUIRED)} plus optional "
            f"{list(CONTRACT_OPTIONAL)}",
            f"{src}:{hline}",
            "name the columns timestamp,import_kwh,export_kwh[,load_kwh,pv_kwh,battery_kwh]",
        )
    value_cols = [c for c in (*CONTRACT_REQUIRED[1:], *CONTRACT_OPTIONAL) if c in idx]
    p = Parsed(src, cols={c: [] for c in value_cols})
    extra = [
        c.strip()
        for c in header
        if c.strip().lower() not in (*CONTRACT_REQUIRED, *CONTRACT_OPTIONAL)
    ]
    if extra:
        p.notes.append(f"ignored column(s) {extra}")
    i_ts = idx["timestamp"]
    value_idx = [(c, idx[c], c != "battery_kwh", p.cols[c]) for c in value_cols]
    probs = Problems(src)
    fromiso = datetime.fromisoformat
    isfinite = math.isfinite
    for line, cells in rows_with_fields(rows, probs, len(header), exact=True):
        ts = cells[i_ts].strip()
        try:
            dt = fromiso(ts)
        except ValueError:
            if probs.add(
                line,
                f"timestamp {ts!r} is not ISO 8601",
                f"write interval starts like {EXAMPLE_TS}",
            ):
                break
            continue
        if dt.tzinfo is None or dt.utcoffset() is None:
            if probs.add(
                line,
                f"timestamp {ts!r} has no UTC offset",
                f"write it with its offset, e.g. {EXAMPLE_TS} or 2025-03-09T09:45:00Z",
            ):
                break
            continue
        if dt.microsecond:
            if probs.add(
                line,
                f"timestamp {ts!r} has fractional seconds",
                "give interval starts in whole seconds",
            ):
                break
            continue
        vals = []
        for name, i, nonneg, _ in value_idx:
            cell = cells[i]
            try:
                v = float(cell)  # fast path; parse_number says what is wrong or accepts "1,234"
                if not isfinite(v):
                    raise ValueError
            except ValueError:
                try:
                    v = parse_number(cell)
                except ValueError as e:
                    probs.add(line, f"{name} {e}", f"give {name} as a number of kWh")
                    break
            if nonneg and v < 0:
                probs.add(
                    line,
                    f"{name} is negative ({v:g} kWh)",
                    "import/export/load/pv are gross kWh and never negative; put a net "
                    "export in export_kwh",
                )
                break
            vals.append(v)
        else:
            p.starts.append(int(dt.timestamp()))
            p.lines.append(line)
            p.labels.append(ts)
            for (_, _, _, out), v in zip(value_idx, vals, strict=True):
                out.append(v)
            continue
        if probs.full:
            break
    probs.raise_if_any()
    if not p.starts:
        raise fail("no data rows below the header", f"{src}:{hline}", "add one row per interval")
    return assemble(p, interval_s=None, allow_gaps=allow_gaps, service_kw=service_kw)
