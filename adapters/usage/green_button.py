"""Read PG&E's Green Button "Download my data" electric CSV.

Local wall-clock ``DATE``/``START TIME`` in the utility's zone, converted to UTC interval starts
with DST explicit; ``IMPORT (kWh)``/``EXPORT (kWh)`` or a single ``USAGE (kWh)``, kWh per
interval (never kW).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime

import numpy as np

from adapters.usage._assemble import Parsed, assemble, most_common
from adapters.usage._csv_input import (
    PathLike,
    Rows,
    csv_rows,
    parse_number,
    read_text,
    rows_with_fields,
)
from adapters.usage._problems import Problems, fail
from adapters.usage._times import LocalClock, time_zone
from optimizer.intervals import IntervalData

#: First cells of the preamble rows above a Green Button header (lower case).
PREAMBLE_KEYS = ("name", "address", "account number", "service")

_GB_COLUMN = re.compile(
    r"^(TYPE|DATE|START TIME|END TIME|IMPORT|EXPORT|USAGE|UNITS|COST|NOTES)"
    r"(?: \((\w+)\))?$"
)


def header_columns(cells: Sequence[str]) -> dict[str, tuple[int, str]] | None:
    """Map a Green Button header row to {column: (index, unit)}; None if it isn't one."""
    out: dict[str, tuple[int, str]] = {}
    for i, c in enumerate(cells):
        key = re.sub(r"\s+", " ", c.strip()).upper()
        m = _GB_COLUMN.match(key)
        if m:
            out.setdefault(m.group(1), (i, (m.group(2) or "").lower()))
    return out if "DATE" in out and "START TIME" in out else None


def _gb_date(s: str) -> date:
    s = s.strip()
    try:
        return date.fromisoformat(s)
    except ValueError:
        return datetime.strptime(s, "%m/%d/%Y").date()


def _gb_minutes(s: str) -> int:
    hh, mm = s.strip().split(":")[:2]
    h, m = int(hh), int(mm)
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError
    return h * 60 + m


def _electric_rows(
    rows: Iterable[tuple[int, list[str]]], i_type: int | None, skipped: dict[str, int]
) -> Rows:
    """The rows whose TYPE is electric (or blank, or absent); others counted in ``skipped``."""
    for line, cells in rows:
        if i_type is not None and len(cells) > i_type:
            kind = cells[i_type].strip()
            if kind and not kind.lower().startswith("electric"):
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
        yield line, cells


def read_green_button_csv(
    path: PathLike, *, tz: str = "America/Los_Angeles", allow_gaps: bool = False,
    service_kw: float | None = None,
) -> IntervalData:
    """Read a PG&E "Green Button / Download my data" electric CSV.

    The file: a UTF-8 BOM, a preamble (``Name,…``, ``Address,"…"``, ``Account Number,…``,
    ``Service,…``), a blank line, then ``TYPE,DATE,START TIME,END TIME,IMPORT (kWh),EXPORT
    (kWh),COST,NOTES`` (``(KWh)`` also accepted; ``COST``, ``NOTES`` and ``END TIME``
    optional) and rows like ``Electric usage,2025-03-20,00:00,00:59,2.94,0.00,$1.02,``.
    Hourly or 15-minute (``00:00,00:14``): ``END TIME`` is the inclusive last minute, so the
    interval length is read from it (or inferred from the steps when it is absent).

    Non-NEM downloads have one ``USAGE (kWh)`` column: import = usage, export = 0. A negative
    usage (a net export) becomes export for that interval, with a note.

    ``DATE`` and ``START TIME`` are *local wall-clock* times in ``tz`` (an IANA name). DST is
    handled explicitly:

    - fall-back: the repeated 01:00 hour appears twice; the first occurrence is read as
      daylight time, the second as standard time (PEP 495 ``fold``), so the day has 25 hours
      (25 hourly or 100 fifteen-minute intervals);
    - spring-forward: the skipped 02:00 hour is simply absent (not a gap). A row for a
      non-existent local time is skipped with a note if its values are zero, and is an error
      otherwise.

    Returns:
        IntervalData: UTC interval starts; gross import/export kWh per interval.

    Raises:
        UsageError: no header row, missing columns, unreadable dates/times/numbers, negative
            import/export, non-existent local times with energy, duplicates, rows out of order,
            mixed interval lengths, gaps (unless ``allow_gaps``).
    """
    src = str(path)
    zone = time_zone(tz, src)
    rows = csv_rows(read_text(path), str(path))
    header = None
    hline, hcells, seen = 0, [], 0
    for line, cells in rows:
        seen += 1
        header = header_columns(cells)
        if header is not None:
            hline, hcells = line, cells
            break
        if seen >= 50:
            break
    if header is None:
        raise fail(
            "no Green Button header row (TYPE,DATE,START TIME,END TIME,IMPORT (kWh),"
            "EXPORT (kWh),... or ...,USAGE (kWh),...) in the first 50 rows"
            if seen
            else "the file is empty",
            src,
            "use the CSV from PG&E 'Download my data' (Green Button), electric usage",
        )
    found = [c.strip() for c in hcells]
    unit_bad = [
        f"{k} ({u})"
        for k, (_, u) in header.items()
        if k in ("IMPORT", "EXPORT", "USAGE") and u not in ("", "kwh")
    ]
    if unit_bad:
        raise fail(
            f"energy column(s) {unit_bad} are not in kWh (a gas download?)",
            f"{src}:{hline}",
            "download the electric usage file",
        )
    nem = "IMPORT" in header or "EXPORT" in header
    need = ["DATE", "START TIME"] + (["IMPORT", "EXPORT"] if nem else ["USAGE"])
    missing = [c for c in need if c not in header]
    if missing:
        raise fail(
            f"missing column(s) {missing}; found {found}; expected TYPE,DATE,START TIME,"
            "END TIME and IMPORT (kWh),EXPORT (kWh) (NEM) or USAGE (kWh)",
            f"{src}:{hline}",
            "use the unmodified PG&E download",
        )
    ix = {k: i for k, (i, _) in header.items()}
    i_type, i_date, i_start = ix.get("TYPE"), ix["DATE"], ix["START TIME"]
    i_end, i_units, i_notes = ix.get("END TIME"), ix.get("UNITS"), ix.get("NOTES")
    need_len = max(i for k, i in ix.items() if k not in ("COST", "NOTES")) + 1

    clock = LocalClock(zone)
    p = Parsed(src, cols={"import_kwh": [], "export_kwh": []})
    imp_out, exp_out = p.cols["import_kwh"], p.cols["export_kwh"]
    probs = Problems(src)
    durations: list[tuple[int, int]] = []  # (minutes, line)
    skipped_types: dict[str, int] = {}
    nonexistent_zero: dict[date, list[str]] = {}
    neg_usage = [0, 0.0]
    utility_notes: list[tuple[int, str]] = []
    days: dict[str, date] = {}
    electric = _electric_rows(rows, i_type, skipped_types)
    for line, cells in rows_with_fields(electric, probs, need_len):
        ds, ss = cells[i_date].strip(), cells[i_start].strip()
        label = f"{ds} {ss}"
        try:
            d = days.get(ds) or days.setdefault(ds, _gb_date(ds))
            start_min = _gb_minutes(ss)
        except ValueError:
            if probs.add(
                line,
                f"DATE/START TIME {label!r} is not a date and HH:MM time",
                "dates like 2025-03-20 and times like 00:00",
            ):
                break
            continue
        if i_end is not None:
            es = cells[i_end].strip()
            try:
                end_min = _gb_minutes(es)
            except ValueError:
                if probs.add(line, f"END TIME {es!r} is not a HH:MM time", "times like 00:59"):
                    break
                continue
            durations.append((((end_min - start_min) % 1440) + 1, line))
        if i_units is not None and cells[i_units].strip().lower() not in ("kwh", ""):
            if probs.add(
                line,
                f"UNITS is {cells[i_units].strip()!r}, not kWh",
                "download the electric usage file in kWh",
            ):
                break
            continue
        try:
            if nem:
                col = "IMPORT (kWh)"
                imp = parse_number(cells[ix["IMPORT"]])
                col = "EXPORT (kWh)"
                exp = parse_number(cells[ix["EXPORT"]])
            else:
                col = "USAGE (kWh)"
                u = parse_number(cells[ix["USAGE"]])
                imp, exp = (u, 0.0) if u >= 0 else (0.0, -u)
                if u < 0:
                    neg_usage[0] += 1
                    neg_usage[1] += -u
        except ValueError as e:
            if probs.add(line, f"{col} {e}", f"give {col} as a number of kWh"):
                break
            continue
        if imp < 0 or exp < 0:
            name, v = ("IMPORT", imp) if imp < 0 else ("EXPORT", exp)
            if probs.add(
                line,
                f"{name} (kWh) is negative ({v:g})",
                "import and export are gross kWh and never negative",
            ):
                break
            continue
        naive = datetime(d.year, d.month, d.day, start_min // 60, start_min % 60)
        t = clock.to_utc(naive)
        if t is None:
            if imp == 0 and exp == 0:
                nonexistent_zero.setdefault(d, []).append(f"{ss} (line {line})")
                continue
            if probs.add(
                line,
                f"local time {label} does not exist in {tz} (the clocks spring "
                f"forward over it) but the row holds {imp:g} kWh import, {exp:g} kWh "
                "export",
                f"check tz (is the file really in {tz}?); a row for a "
                "skipped hour cannot be placed in time",
            ):
                break
            continue
        if i_notes is not None and len(cells) > i_notes and cells[i_notes].strip():
            utility_notes.append((line, cells[i_notes].strip()))
        p.starts.append(t)
        p.lines.append(line)
        p.labels.append(label)
        imp_out.append(imp)
        exp_out.append(exp)
    interval_s = None
    if durations and not probs.items:
        common = most_common(np.array([m for m, _ in durations]))
        for m, line in durations:
            if m != common and probs.add(
                line,
                f"START TIME to END TIME spans {m} min, but the "
                f"file's interval is {common} min (mixed intervals)",
                "use one interval length throughout: split the file",
            ):
                break
        interval_s = common * 60
    probs.raise_if_any()
    if not p.starts:
        raise fail(
            "no 'Electric usage' rows below the header",
            f"{src}:{hline}",
            "download the electric usage file with at least one day of data",
        )
    for kind, n in skipped_types.items():
        p.notes.append(f"skipped {n} row(s) of TYPE {kind!r} (only electric usage is read)")
    p.notes += clock.fall_back_notes()
    for d, rows_ in sorted(nonexistent_zero.items()):
        p.notes.append(
            f"{d}: skipped {len(rows_)} row(s) for local times that do not exist in "
            f"{tz} (DST spring-forward), all with zero kWh: {', '.join(rows_[:4])}"
            + (" ..." if len(rows_) > 4 else "")
        )
    if neg_usage[0]:
        p.notes.append(
            f"{neg_usage[0]} interval(s) have negative USAGE (net export), "
            f"{neg_usage[1]:.3f} kWh in total: read as export for those intervals "
            "(a net-usage file cannot show flows in both directions within one "
            "interval)"
        )
    if utility_notes:
        distinct = sorted({n for _, n in utility_notes})
        p.notes.append(
            f"{len(utility_notes)} row(s) carry a utility NOTE "
            f"(first at line {utility_notes[0][0]}): {distinct[:5]}"
        )
    return assemble(p, interval_s=interval_s, allow_gaps=allow_gaps, zone=zone,
                    service_kw=service_kw)
