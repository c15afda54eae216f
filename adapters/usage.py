"""Read metered interval data (usage CSVs) into :class:`optimizer.intervals.IntervalData`.

Three formats (ARCHITECTURE.md "Interval data (CSV)", DOMAIN.md §2.1, §2.5, §2.8):

- **trueup interval CSV** (:func:`read_interval_csv`): ``timestamp,import_kwh,export_kwh`` and
  optional ``load_kwh,pv_kwh,battery_kwh``; ISO 8601 interval starts with a UTC offset.
- **PG&E Green Button "Download my data"** (:func:`read_green_button_csv`): local wall-clock
  times, a preamble, ``IMPORT (kWh)``/``EXPORT (kWh)`` or a single ``USAGE (kWh)`` column.
- **CT-register exports** (:func:`read_ct_register_csv`, eGauge-style): a Grid and a Solar
  register, turned into meter import/export by the site's metering topology.

Every reader returns kWh per interval (never kW) with interval starts as UTC epoch seconds,
one fixed interval length, and warnings in ``notes``. Bad input raises
:class:`optimizer.errors.UsageError` saying what is wrong, where (``file:line``) and how to fix
it; several row problems (up to :data:`MAX_PROBLEMS`) are reported at once, and the raised error
carries them all in its ``problems`` attribute as ``(where, what, fix)`` tuples. Nothing is
filled in or zeroed: a missing interval is an error, or with ``allow_gaps=True`` a note with an
*estimate* of the kWh it held (never billed, never added to the data).

:func:`renet` aggregates to a coarser interval; :func:`coverage_gaps` lists missing spans;
:func:`read_usage` sniffs the format and dispatches.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import pairwise
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from optimizer.errors import UsageError
from optimizer.intervals import IntervalData

__all__ = [
    "FORMATS",
    "MAX_PROBLEMS",
    "coverage_gaps",
    "read_ct_register_csv",
    "read_green_button_csv",
    "read_interval_csv",
    "read_usage",
    "renet",
    "sniff_format",
]

#: How many row problems are collected before the reader stops and raises.
MAX_PROBLEMS = 10
#: How many gaps a gap error or gap note lists one by one.
MAX_GAPS_LISTED = 10
#: Format names accepted by :func:`read_usage` (``"auto"`` sniffs one of these).
FORMATS = ("interval", "green_button", "ct_register")
_FORMAT_ALIASES = {
    "csv": "interval",
    "trueup": "interval",
    "greenbutton": "green_button",
    "ct": "ct_register",
}

PathLike = str | os.PathLike[str]
Topology = Literal["backfed", "line_side_tap"]

_CONTRACT_REQUIRED = ("timestamp", "import_kwh", "export_kwh")
_CONTRACT_OPTIONAL = ("load_kwh", "pv_kwh", "battery_kwh")
_GB_PREAMBLE_KEYS = ("name", "address", "account number", "service")
_EXAMPLE_TS = "2025-03-09T01:45:00-08:00"


# ----------------------------------------------------------------------------------------
# Problems: collect several row errors, then raise one UsageError naming each line
# ----------------------------------------------------------------------------------------


@dataclass
class _Problems:
    source: str
    items: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, line: int | None, what: str, fix: str) -> bool:
        """Record a problem; true when the limit is reached and reading should stop."""
        if len(self.items) >= MAX_PROBLEMS:
            return True
        where = f"{self.source}:{line}" if line is not None else self.source
        self.items.append((where, what, fix))
        return len(self.items) >= MAX_PROBLEMS

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_PROBLEMS

    def raise_if_any(self) -> None:
        if not self.items:
            return
        where, what, _ = self.items[0]
        lines = [what]
        lines += [f"  {w}: {m}" for w, m, _ in self.items[1:]]
        if self.full:
            lines.append(f"  (stopped after {MAX_PROBLEMS} problems; there may be more)")
        fixes: list[str] = []
        for _, _, f in self.items:
            if f and f not in fixes:
                fixes.append(f)
        err = UsageError("\n".join(lines), where=where, fix="; ".join(fixes))
        err.problems = list(self.items)  # type: ignore[attr-defined]
        raise err


def _fail(what: str, where: str, fix: str) -> UsageError:
    err = UsageError(what, where=where, fix=fix)
    err.problems = [(where, what, fix)]  # type: ignore[attr-defined]
    return err


# ----------------------------------------------------------------------------------------
# Small parsing helpers
# ----------------------------------------------------------------------------------------


def _read_text(path: PathLike) -> str:
    """The file's text (UTF-8, a BOM dropped), or a UsageError saying why not."""
    src = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise _fail("file not found", src, "check the path") from None
    except OSError as e:
        raise _fail(
            f"cannot read the file: {e.strerror or e}", src, "check the path and its permissions"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise _fail(
            f"not UTF-8 text (byte 0x{raw[e.start]:02x})",
            f"{src}:{line}",
            "save the file as UTF-8 CSV",
        ) from None


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """CSV rows with the (1-based) line each ends on; blank rows skipped."""
    reader = csv.reader(io.StringIO(text))
    for cells in reader:
        if not cells or (not cells[0].strip() and all(not c.strip() for c in cells)):
            continue
        yield reader.line_num, cells


_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")


def _num(cell: str) -> float:
    """A finite float from a cell; ``1,234.5`` (thousands separators) accepted, ``1,5`` not."""
    s = cell.strip()
    if not s:
        raise ValueError("is empty")
    if "," in s and _THOUSANDS.match(s):
        s = s.replace(",", "")
    try:
        v = float(s)
    except ValueError:
        raise ValueError(f"{s!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{s!r} is not a finite number")
    return v


def _zone(tz: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise _fail(
            f"unknown time zone {tz!r}",
            where,
            "give an IANA zone name such as 'America/Los_Angeles'",
        ) from None


def _dur(seconds: int | float) -> str:
    s = int(seconds)
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


def _utc(t: int) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%MZ")


def _span(a: int, b: int, zone: ZoneInfo | None) -> str:
    """``2025-03-10T08:00Z–2025-03-10T10:00Z`` plus local wall-clock times when known."""
    text = f"{_utc(a)}–{_utc(b)}"
    if zone is not None:
        la = datetime.fromtimestamp(int(a), zone)
        lb = datetime.fromtimestamp(int(b), zone)
        text += f" ({la:%Y-%m-%d %H:%M} {la.tzname()}–{lb:%Y-%m-%d %H:%M} {lb.tzname()})"
    return text


class _LocalClock:
    """Local wall-clock → UTC for one zone, DST explicit (PEP 495 ``fold``).

    The fall-back hour occurs twice: its first occurrence in the file is read as daylight
    time (``fold=0``), the second as standard time (``fold=1``). A wall-clock time skipped by
    spring-forward does not exist and is reported as such (``None``).
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.seen: dict[datetime, int] = {}
        self.fall_back_days: dict[date, tuple[str, str]] = {}

    def to_utc(self, naive: datetime) -> int | None:
        a = naive.replace(tzinfo=self.zone)
        off0 = a.utcoffset()
        b = naive.replace(tzinfo=self.zone, fold=1)
        off1 = b.utcoffset()
        if off0 == off1:
            return int(a.timestamp())
        if off0 < off1:  # a spring-forward gap: this wall-clock time never happened
            return None
        n = self.seen.get(naive, 0)
        self.seen[naive] = n + 1
        if n == 1:
            self.fall_back_days.setdefault(naive.date(), (a.tzname() or "", b.tzname() or ""))
        return int((a if n == 0 else b).timestamp())


# ----------------------------------------------------------------------------------------
# Shared assembly: sequence checks, gaps, IntervalData
# ----------------------------------------------------------------------------------------


@dataclass
class _Parsed:
    """Rows read from a file, before the sequence checks (all lists the same length)."""

    source: str
    starts: list[int] = field(default_factory=list)  # UTC epoch seconds
    lines: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # the timestamp as the file wrote it
    cols: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _mode_step(d: np.ndarray) -> int:
    pos = d[d > 0]
    if pos.size == 0:
        return 0
    vals, counts = np.unique(pos, return_counts=True)
    return int(vals[np.argmax(counts)])


def _check_sequence(p: _Parsed, t: np.ndarray, interval_s: int | None) -> int:
    """The interval length (given, or the most common step); raises on duplicates, rows out of
    order and mixed intervals, naming each line."""
    if len(t) == 0:
        raise _fail("no data rows", p.source, "add interval rows below the header")
    d = np.diff(t)
    step = int(interval_s) if interval_s else _mode_step(d)
    if not step:
        if len(t) == 1:
            raise _fail(
                "only one data row, so the interval length cannot be inferred",
                f"{p.source}:{p.lines[0]}",
                "add the following intervals' rows",
            )
        step = 0
    probs = _Problems(p.source)
    bad = np.nonzero((d <= 0) | ((d % step != 0) if step else False))[0]
    for i in bad:
        cur, prev, prev_line = p.labels[i + 1], p.labels[i], p.lines[i]
        if d[i] == 0:
            what = f"timestamp {cur} repeats the row at line {prev_line}"
            fix = "remove the duplicate row"
        elif d[i] < 0:
            what = f"timestamp {cur} is earlier than the row before it ({prev}, line {prev_line})"
            fix = "sort the rows oldest first"
        else:
            what = (
                f"timestamp {cur} is {_dur(d[i])} after the row before it ({prev}, line "
                f"{prev_line}): not a whole number of the file's {_dur(step)} interval "
                "(mixed intervals)"
            )
            fix = (
                "use one interval length throughout: split the file, or aggregate the finer "
                "rows to the coarser interval"
            )
        if probs.add(p.lines[i + 1], what, fix):
            break
    if not probs.items and step:
        # a run of ≥ 3 equal steps longer than the interval is a coarser section, not gaps
        big = np.nonzero(d > step)[0]
        k = 0
        while k < len(big) and not probs.full:
            j = k
            while j + 1 < len(big) and big[j + 1] == big[j] + 1 and d[big[j + 1]] == d[big[k]]:
                j += 1
            if j - k + 1 >= 3:
                first, last = big[k], big[j] + 1
                probs.add(
                    p.lines[first + 1],
                    f"rows from line {p.lines[first]} to line {p.lines[last]} are "
                    f"{_dur(d[big[k]])} apart, but the file's interval is {_dur(step)} "
                    "(mixed intervals)",
                    "use one interval length throughout: split the file, or aggregate "
                    "the finer rows to the coarser interval",
                )
            k = j + 1
    probs.raise_if_any()
    return step


def _gap_spans(t: np.ndarray, step: int) -> list[tuple[int, int, int]]:
    """(index of the row before the gap, gap start, gap end) for each gap, UTC seconds."""
    d = np.diff(t)
    return [(int(i), int(t[i]) + step, int(t[i + 1])) for i in np.nonzero(d > step)[0]]


def _gap_error(p: _Parsed, spans, step: int, zone: ZoneInfo | None) -> UsageError:
    missing = sum((b - a) // step for _, a, b in spans)
    listed = "; ".join(
        f"{_span(a, b, zone)} ({(b - a) // step} intervals)" for _, a, b in spans[:MAX_GAPS_LISTED]
    )
    more = f"; and {len(spans) - MAX_GAPS_LISTED} more" if len(spans) > MAX_GAPS_LISTED else ""
    what = (
        f"{len(spans)} gap(s) in the data, {missing} interval(s) "
        f"({missing * step / 3600:.2f} h) missing: {listed}{more}"
    )
    where = f"{p.source}:{p.lines[spans[0][0] + 1]}"
    fix = (
        "add the missing rows, or pass allow_gaps=True (CLI --allow-gaps) to use only the "
        "real rows; each gap is then listed in the notes with an estimate of its kWh"
    )
    return _fail(what, where, fix)


def _gap_notes(t, step, spans, imp, exp, zone: ZoneInfo | None) -> list[str]:
    """One note per gap: its span, hours missing, and an estimate of the kWh it held."""
    missing = sum((b - a) // step for _, a, b in spans)
    notes = [
        f"allow_gaps: {len(spans)} gap(s), {missing * step / 3600:.2f} h missing in total; "
        "only the real rows are kept, nothing is filled in. The kWh figures below are "
        "ESTIMATES of what the gaps held, NOT billed and NOT added to the data"
    ]
    file_imp, file_exp = float(imp.mean()), float(exp.mean())
    for _, a, b in spans[:MAX_GAPS_LISTED]:
        m = (b - a) // step
        lo, hi = np.searchsorted(t, a - 86400), np.searchsorted(t, b + 86400)
        if (hi - lo) * step >= 12 * 3600:
            ri, rx = float(imp[lo:hi].mean()), float(exp[lo:hi].mean())
            basis = f"the mean rate of the 24 h either side ({hi - lo} intervals)"
        else:
            ri, rx, basis = file_imp, file_exp, "the mean rate of the whole file"
        notes.append(
            f"gap {_span(a, b, zone)}: {m * step / 3600:.2f} h ({m} intervals) "
            f"missing; ESTIMATE (not billed) at {basis}: import ≈ {ri * m:.2f} kWh, "
            f"export ≈ {rx * m:.2f} kWh"
        )
    if len(spans) > MAX_GAPS_LISTED:
        rest = spans[MAX_GAPS_LISTED:]
        h = sum(b - a for _, a, b in rest) / 3600
        notes.append(f"... and {len(rest)} more gap(s), {h:.2f} h (see coverage_gaps())")
    return notes


def _assemble(
    p: _Parsed, *, interval_s: int | None, allow_gaps: bool, zone: ZoneInfo | None = None
) -> IntervalData:
    t = np.asarray(p.starts, dtype=np.int64)
    step = _check_sequence(p, t, interval_s)
    cols = {k: np.asarray(v, dtype=float) for k, v in p.cols.items()}
    notes = list(p.notes)
    spans = _gap_spans(t, step)
    if spans:
        if not allow_gaps:
            raise _gap_error(p, spans, step, zone)
        notes += _gap_notes(t, step, spans, cols["import_kwh"], cols["export_kwh"], zone)
    return IntervalData(
        start_utc=t,
        interval_s=step,
        import_kwh=cols["import_kwh"],
        export_kwh=cols["export_kwh"],
        load_kwh=cols.get("load_kwh"),
        pv_kwh=cols.get("pv_kwh"),
        battery_kwh=cols.get("battery_kwh"),
        source=p.source,
        notes=tuple(notes),
    )


def _header_index(cells: Sequence[str]) -> dict[str, int]:
    return {c.strip().lower(): i for i, c in enumerate(cells)}


# ----------------------------------------------------------------------------------------
# 1. trueup interval CSV
# ----------------------------------------------------------------------------------------


def read_interval_csv(path: PathLike, *, allow_gaps: bool = False) -> IntervalData:
    """Read trueup's interval CSV (ARCHITECTURE.md "Interval data (CSV)").

    Columns (any order, names case-insensitive): ``timestamp,import_kwh,export_kwh`` and
    optionally ``load_kwh,pv_kwh,battery_kwh``; other columns are ignored with a note.

    - ``timestamp``: the interval *start*, ISO 8601 **with a UTC offset**
      (``2025-03-09T01:45:00-08:00`` or ``2025-03-09T09:45:00Z``); converted to UTC.
    - ``import_kwh``, ``export_kwh``: gross grid import/export in the interval, kWh (≥ 0;
      both may be non-zero in one interval, DOMAIN.md §2.1).
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
    rows = _rows(_read_text(path))
    first = next(rows, None)
    if first is None:
        raise _fail(
            "the file is empty",
            src,
            "write the header timestamp,import_kwh,export_kwh and one row per interval",
        )
    hline, header = first
    idx = _header_index(header)
    if len(idx) != len(header):
        dup = sorted(
            {
                c.strip().lower()
                for c in header
                if [h.strip().lower() for h in header].count(c.strip().lower()) > 1
            }
        )
        raise _fail(
            f"column(s) {dup} appear more than once in the header",
            f"{src}:{hline}",
            "keep one column of each name",
        )
    missing = [c for c in _CONTRACT_REQUIRED if c not in idx]
    if missing:
        raise _fail(
            f"missing required column(s) {missing}; found {[c.strip() for c in header]}; "
            f"expected {list(_CONTRACT_REQUIRED)} plus optional "
            f"{list(_CONTRACT_OPTIONAL)}",
            f"{src}:{hline}",
            "name the columns timestamp,import_kwh,export_kwh[,load_kwh,pv_kwh,battery_kwh]",
        )
    value_cols = [c for c in (*_CONTRACT_REQUIRED[1:], *_CONTRACT_OPTIONAL) if c in idx]
    p = _Parsed(src, cols={c: [] for c in value_cols})
    extra = [
        c.strip()
        for c in header
        if c.strip().lower() not in (*_CONTRACT_REQUIRED, *_CONTRACT_OPTIONAL)
    ]
    if extra:
        p.notes.append(f"ignored column(s) {extra}")
    i_ts = idx["timestamp"]
    value_idx = [(c, idx[c], c != "battery_kwh", p.cols[c]) for c in value_cols]
    ncols = len(header)
    probs = _Problems(src)
    fromiso = datetime.fromisoformat
    isfinite = math.isfinite
    for line, cells in rows:
        if len(cells) != ncols:
            if probs.add(
                line,
                f"row has {len(cells)} fields; the header has {ncols}",
                "give every row one value per header column",
            ):
                break
            continue
        ts = cells[i_ts].strip()
        try:
            dt = fromiso(ts)
        except ValueError:
            if probs.add(
                line,
                f"timestamp {ts!r} is not ISO 8601",
                f"write interval starts like {_EXAMPLE_TS}",
            ):
                break
            continue
        if dt.tzinfo is None or dt.utcoffset() is None:
            if probs.add(
                line,
                f"timestamp {ts!r} has no UTC offset",
                f"write it with its offset, e.g. {_EXAMPLE_TS} or 2025-03-09T09:45:00Z",
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
                v = float(cell)  # fast path; _num explains what is wrong or accepts "1,234"
                if not isfinite(v):
                    raise ValueError
            except ValueError:
                try:
                    v = _num(cell)
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
        raise _fail("no data rows below the header", f"{src}:{hline}", "add one row per interval")
    return _assemble(p, interval_s=None, allow_gaps=allow_gaps)


# ----------------------------------------------------------------------------------------
# 2. PG&E Green Button "Download my data" CSV
# ----------------------------------------------------------------------------------------

_GB_COLUMN = re.compile(
    r"^(TYPE|DATE|START TIME|END TIME|IMPORT|EXPORT|USAGE|UNITS|COST|NOTES)"
    r"(?: \((\w+)\))?$"
)


def _gb_header(cells: Sequence[str]) -> dict[str, tuple[int, str]] | None:
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


def read_green_button_csv(
    path: PathLike, *, tz: str = "America/Los_Angeles", allow_gaps: bool = False
) -> IntervalData:
    """Read a PG&E "Green Button / Download my data" electric CSV (DOMAIN.md §2.8).

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
    zone = _zone(tz, src)
    rows = _rows(_read_text(path))
    header = None
    hline, hcells, seen = 0, [], 0
    for line, cells in rows:
        seen += 1
        header = _gb_header(cells)
        if header is not None:
            hline, hcells = line, cells
            break
        if seen >= 50:
            break
    if header is None:
        raise _fail(
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
        raise _fail(
            f"energy column(s) {unit_bad} are not in kWh (a gas download?)",
            f"{src}:{hline}",
            "download the electric usage file",
        )
    nem = "IMPORT" in header or "EXPORT" in header
    need = ["DATE", "START TIME"] + (["IMPORT", "EXPORT"] if nem else ["USAGE"])
    missing = [c for c in need if c not in header]
    if missing:
        raise _fail(
            f"missing column(s) {missing}; found {found}; expected TYPE,DATE,START TIME,"
            "END TIME and IMPORT (kWh),EXPORT (kWh) (NEM) or USAGE (kWh)",
            f"{src}:{hline}",
            "use the unmodified PG&E download",
        )
    ix = {k: i for k, (i, _) in header.items()}
    i_type, i_date, i_start = ix.get("TYPE"), ix["DATE"], ix["START TIME"]
    i_end, i_units, i_notes = ix.get("END TIME"), ix.get("UNITS"), ix.get("NOTES")
    need_len = max(i for k, i in ix.items() if k not in ("COST", "NOTES")) + 1

    clock = _LocalClock(zone)
    p = _Parsed(src, cols={"import_kwh": [], "export_kwh": []})
    imp_out, exp_out = p.cols["import_kwh"], p.cols["export_kwh"]
    probs = _Problems(src)
    durations: list[tuple[int, int]] = []  # (minutes, line)
    skipped_types: dict[str, int] = {}
    nonexistent_zero: dict[date, list[str]] = {}
    neg_usage = [0, 0.0]
    utility_notes: list[tuple[int, str]] = []
    days: dict[str, date] = {}
    for line, cells in rows:
        if i_type is not None and len(cells) > i_type:
            kind = cells[i_type].strip()
            if kind and not kind.lower().startswith("electric"):
                skipped_types[kind] = skipped_types.get(kind, 0) + 1
                continue
        if len(cells) < need_len:
            if probs.add(
                line,
                f"row has {len(cells)} fields; the header needs {need_len}",
                "give every row the header's columns",
            ):
                break
            continue
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
                imp = _num(cells[ix["IMPORT"]])
                col = "EXPORT (kWh)"
                exp = _num(cells[ix["EXPORT"]])
            else:
                col = "USAGE (kWh)"
                u = _num(cells[ix["USAGE"]])
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
        mins = np.array([m for m, _ in durations])
        vals, counts = np.unique(mins, return_counts=True)
        common = int(vals[np.argmax(counts)])
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
        raise _fail(
            "no 'Electric usage' rows below the header",
            f"{src}:{hline}",
            "download the electric usage file with at least one day of data",
        )
    for kind, n in skipped_types.items():
        p.notes.append(f"skipped {n} row(s) of TYPE {kind!r} (only electric usage is read)")
    for d, what in sorted(clock.fall_back_days.items()):
        p.notes.append(
            f"{d}: DST fall-back; the repeated hour was read first as {what[0]}, then as {what[1]}"
        )
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
    return _assemble(p, interval_s=interval_s, allow_gaps=allow_gaps, zone=zone)


# ----------------------------------------------------------------------------------------
# 3. CT-register exports (eGauge-style)
# ----------------------------------------------------------------------------------------

_UNIT = re.compile(r"^(.*?)\s*\[\s*([^\]]*)\s*\]\s*$")
_ENERGY_SCALE = {"kwh": 1.0, "wh": 0.001, "mwh": 1000.0}
_TS_NAMES = ("timestamp", "date & time", "date&time", "date/time", "time")
_LOCAL_FORMATS = ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M")


def _ct_columns(header: Sequence[str]) -> dict[str, tuple[int, str, str]]:
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

    Topology (DOMAIN.md §2.5), per interval, with ``grid`` and ``solar`` in kWh:

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
        raise _fail(
            f"unknown metering topology {topology!r}",
            src,
            "give topology='backfed' (main CTs see net flow) or 'line_side_tap' "
            "(main-panel CTs see only consumption)",
        )
    if registers not in ("auto", "interval", "cumulative"):
        raise _fail(
            f"unknown registers mode {registers!r}",
            src,
            "give registers='auto', 'interval' or 'cumulative'",
        )
    zone = _zone(tz, src) if tz else None
    rows = _rows(_read_text(path))
    first = next(rows, None)
    if first is None:
        raise _fail(
            "the file is empty",
            src,
            "write the header timestamp,grid_kwh,solar_kwh and one row per interval",
        )
    hline, header = first
    cols = _ct_columns(header)
    missing = [k for k in ("ts", "grid", "solar") if k not in cols]
    if missing:
        names = {
            "ts": "timestamp (or 'Date & Time')",
            "grid": "grid_kwh (or 'Grid [kWh]')",
            "solar": "solar_kwh (or 'Solar [kWh]')",
        }
        raise _fail(
            f"missing column(s) {[names[k] for k in missing]}; found {[c.strip() for c in header]}",
            f"{src}:{hline}",
            "export the Grid and Solar registers, or rename the columns to "
            "timestamp,grid_kwh,solar_kwh",
        )
    for k in ("grid", "solar"):
        _, name, unit = cols[k]
        if unit == "kw":
            raise _fail(
                f"column {name!r} is average power (kW), not energy",
                f"{src}:{hline}",
                "export energy (kWh register readings) instead of average power",
            )
        if unit not in _ENERGY_SCALE:
            raise _fail(
                f"column {name!r} has unit {unit!r}; expected kWh",
                f"{src}:{hline}",
                "export the registers in kWh",
            )
    i_ts, i_g, i_s = cols["ts"][0], cols["grid"][0], cols["solar"][0]
    k_g, k_s = _ENERGY_SCALE[cols["grid"][2]], _ENERGY_SCALE[cols["solar"][2]]
    need_len = max(i_ts, i_g, i_s) + 1

    probs = _Problems(src)
    keys: list[int | datetime] = []
    lines: list[int] = []
    labels: list[str] = []
    grid: list[float] = []
    solar: list[float] = []
    for line, cells in rows:
        if len(cells) < need_len:
            if probs.add(
                line,
                f"row has {len(cells)} fields; the header needs {need_len}",
                "give every row the header's columns",
            ):
                break
            continue
        ts = cells[i_ts].strip()
        try:
            key = _ct_time(ts)
        except ValueError:
            if probs.add(
                line,
                f"timestamp {ts!r} is not epoch seconds or ISO 8601",
                f"write times like {_EXAMPLE_TS} or Unix seconds",
            ):
                break
            continue
        if isinstance(key, datetime) and zone is None:
            raise _fail(
                f"timestamp {ts!r} is a local time without a UTC offset, and no time "
                "zone was given",
                f"{src}:{line}",
                "pass tz='America/Los_Angeles' (the meter's zone), or export Unix timestamps",
            )
        try:
            g = _num(cells[i_g]) * k_g
            s = _num(cells[i_s]) * k_s
        except ValueError as e:
            which = cols["grid"][1] if not _is_num(cells[i_g]) else cols["solar"][1]
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
        raise _fail("no data rows below the header", f"{src}:{hline}", "add one row per interval")
    if len({type(k) for k in keys}) > 1:
        i = next(j for j, k in enumerate(keys) if type(k) is not type(keys[0]))
        raise _fail(
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
        clock = _LocalClock(zone)  # type: ignore[arg-type]
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
        for d, what in sorted(clock.fall_back_days.items()):
            notes.append(
                f"{d}: DST fall-back; the repeated hour was read first as {what[0]}, "
                f"then as {what[1]}"
            )
    else:
        starts = [int(k) for k in keys]  # type: ignore[arg-type]

    p = _Parsed(src, starts=starts, lines=lines, labels=labels, notes=notes)
    g_arr, s_arr = np.asarray(grid), np.asarray(solar)
    mode = registers
    if mode == "auto":
        mode = "cumulative" if _looks_cumulative(s_arr) else "interval"
    if mode == "cumulative":
        t = np.asarray(starts, dtype=np.int64)
        step = _check_sequence(p, t, None)
        dt = np.diff(t)
        dg, ds = np.diff(g_arr), np.diff(s_arr)
        keep = dt == step
        for i in np.nonzero(~keep)[0]:
            notes.append(
                f"register readings at lines {lines[i]} and {lines[i + 1]} are "
                f"{_dur(dt[i])} apart: across that gap the registers MEASURED grid "
                f"{dg[i]:+.3f} kWh, solar {ds[i]:+.3f} kWh (not split into intervals)"
            )
        notes.insert(
            0,
            f"registers read as cumulative readings (registers={registers!r}): "
            "reading i+1 − reading i is the energy of the interval starting at "
            "reading i",
        )
        p = _Parsed(
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
        raise _fail(
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
                "if the PV backfeeds the main panel use topology='backfed'; otherwise "
                "check the Grid CT orientation",
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
            raise _fail(
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
    return _assemble(p, interval_s=None, allow_gaps=allow_gaps, zone=zone)


def _is_num(cell: str) -> bool:
    try:
        _num(cell)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------
# 4. Aggregation and coverage
# ----------------------------------------------------------------------------------------


def coverage_gaps(data: IntervalData) -> list[tuple[int, int]]:
    """Missing spans in ``data``: ``(start, end)`` UTC epoch seconds, end exclusive.

    A gap is where one interval's end (start + ``interval_s``) is before the next start.
    """
    t = np.asarray(data.start_utc, dtype=np.int64)
    return [(a, b) for _, a, b in _gap_spans(t, data.interval_s)]


def renet(data: IntervalData, interval_s: int, *, allow_gaps: bool = False) -> IntervalData:
    """Aggregate ``data`` to a coarser interval of ``interval_s`` seconds (e.g. 300 → 900).

    Each coarse interval sums the gross import, export (and load, pv, battery) kWh of the fine
    intervals inside it: gross flows are kept, nothing is netted (DOMAIN.md §2.1 — net only
    when billing). Coarse intervals are aligned to **UTC multiples** of ``interval_s``
    (``start_utc % interval_s == 0``): in every zone with a whole-hour UTC offset that is also
    aligned to the local hour; in half-hour zones (e.g. UTC+05:30) hourly buckets start at
    local :30.

    Args:
        data: fine intervals (UTC starts, kWh per interval), starts on UTC multiples of
            ``data.interval_s``.
        interval_s: the target interval, seconds; a whole multiple of ``data.interval_s``.
        allow_gaps: keep coarse intervals that are only partly covered (their sums hold only
            the metered fine intervals) and say so in ``notes``; otherwise that is an error.

    Returns:
        IntervalData with ``interval_s`` intervals, kWh per interval; notes carried over.

    Raises:
        UsageError: target finer than or not a multiple of the data's interval, fine starts
            not on UTC multiples of their interval, partly covered coarse intervals.
    """
    src = data.source or "usage data"
    fine = data.interval_s
    if interval_s < fine or interval_s % fine:
        raise _fail(
            f"cannot aggregate {_dur(fine)} intervals to {_dur(interval_s)}: the "
            f"target must be a whole multiple of {_dur(fine)}",
            src,
            f"choose a target such as {_dur(fine * 2)}, {_dur(fine * 4)} or 1 h that "
            f"is a multiple of {_dur(fine)}",
        )
    if interval_s == fine:
        return data
    t = np.asarray(data.start_utc, dtype=np.int64)
    off = np.nonzero(t % fine)[0]
    if off.size:
        raise _fail(
            f"interval start {_utc(t[off[0]])} is not on a UTC multiple of "
            f"{_dur(fine)}, so the fine intervals straddle {_dur(interval_s)} "
            "boundaries",
            src,
            "aggregate data whose starts are aligned to UTC multiples of its interval",
        )
    bucket = t - t % interval_s
    starts, inv, counts = np.unique(bucket, return_inverse=True, return_counts=True)
    per = interval_s // fine
    notes = list(data.notes)
    partial = np.nonzero(counts < per)[0]
    if partial.size:
        listed = ", ".join(f"{_utc(starts[i])} ({counts[i]} of {per})" for i in partial[:5])
        more = f" and {partial.size - 5} more" if partial.size > 5 else ""
        if not allow_gaps:
            raise _fail(
                f"{partial.size} coarse {_dur(interval_s)} interval(s) are only partly covered "
                f"by the {_dur(fine)} data: {listed}{more}",
                src,
                "supply the missing fine intervals, or pass allow_gaps=True to sum "
                "only the metered ones",
            )
        notes.append(
            f"renet to {_dur(interval_s)}: {partial.size} interval(s) only partly "
            f"covered, their sums hold only the metered {_dur(fine)} intervals "
            f"(nothing filled in): {listed}{more}"
        )

    def agg(a):
        if a is None:
            return None
        return np.bincount(inv, weights=np.asarray(a, dtype=float), minlength=len(starts))

    return IntervalData(
        start_utc=starts.astype(np.int64),
        interval_s=int(interval_s),
        import_kwh=agg(data.import_kwh),
        export_kwh=agg(data.export_kwh),
        load_kwh=agg(data.load_kwh),
        pv_kwh=agg(data.pv_kwh),
        battery_kwh=agg(data.battery_kwh),
        source=data.source,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------------------
# 5. Format sniffing and dispatch
# ----------------------------------------------------------------------------------------


def sniff_format(path: PathLike) -> str:
    """Which of :data:`FORMATS` a file is, from its header (the first non-blank rows)."""
    src = str(path)
    text = _read_text(path)  # the same file errors as the readers (missing, not UTF-8)
    head = text[:65536]
    if len(text) > len(head) and "\n" in head:
        head = head[: head.rindex("\n")]  # whole lines only
    for n, (line, cells) in enumerate(_rows(head)):
        names = [c.strip().lower() for c in cells]
        if _gb_header(cells) is not None or (names and names[0] in _GB_PREAMBLE_KEYS):
            return "green_button"
        if n == 0:
            if "import_kwh" in names:
                return "interval"
            ct = _ct_columns(cells)
            if "grid" in ct and "solar" in ct:
                return "ct_register"
            raise _fail(
                f"cannot tell the file's format from its header {cells[:8]}",
                f"{src}:{line}",
                "use timestamp,import_kwh,export_kwh (trueup), a PG&E Green Button "
                "download, or a CT export with Grid and Solar columns; or name the "
                f"format with fmt= one of {list(FORMATS)}",
            )
    raise _fail("the file is empty", src, "give a usage CSV with a header and data rows")


def read_usage(
    path: PathLike,
    *,
    fmt: str = "auto",
    tz: str | None = None,
    topology: Topology | None = None,
    allow_gaps: bool = False,
) -> IntervalData:
    """Read any supported usage file into IntervalData (UTC starts, kWh per interval).

    Args:
        path: the CSV file.
        fmt: ``"auto"`` (sniff from the header) or one of :data:`FORMATS`; the CLI's names
            ``"csv"``, ``"green-button"`` and ``"ct"`` are accepted too.
        tz: IANA zone of local wall-clock times: Green Button files (default
            ``"America/Los_Angeles"``, PG&E) and CT exports with local times. Ignored for
            trueup's CSV, whose timestamps carry their offsets.
        topology: ``"backfed"`` or ``"line_side_tap"``; required for CT-register files.
        allow_gaps: accept missing intervals (only real rows kept, gaps described in notes).
    """
    src = str(path)
    key = str(fmt).strip().lower().replace("-", "_")
    kind = sniff_format(path) if key == "auto" else _FORMAT_ALIASES.get(key, key)
    if kind == "interval":
        return read_interval_csv(path, allow_gaps=allow_gaps)
    if kind == "green_button":
        return read_green_button_csv(path, tz=tz or "America/Los_Angeles", allow_gaps=allow_gaps)
    if kind == "ct_register":
        if topology is None:
            raise _fail(
                "CT-register data needs the site's metering topology",
                src,
                "pass topology='backfed' (PV feeds the main panel; its CTs see net "
                "flow) or 'line_side_tap' (main-panel CTs see only consumption)",
            )
        return read_ct_register_csv(path, topology=topology, tz=tz, allow_gaps=allow_gaps)
    raise _fail(f"unknown usage format {fmt!r}", src, f"use fmt='auto' or one of {list(FORMATS)}")
