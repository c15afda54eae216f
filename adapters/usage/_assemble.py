"""Turn rows read from a usage file into :class:`IntervalData`: sequence checks, gaps.

Input (:class:`Parsed`): interval starts as UTC epoch seconds and kWh per interval, in file
order. :func:`assemble` infers or checks the fixed interval length, refuses duplicates, rows
out of order and mixed intervals (naming each line), and refuses gaps or, with
``allow_gaps``, describes each in the notes with an *estimate* of the kWh it held (never
billed, never added to the data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from adapters.usage._plausible import check_plausible
from adapters.usage._problems import Problems, fail
from adapters.usage._times import duration_text, span_text
from optimizer.errors import UsageError
from optimizer.intervals import IntervalData

#: How many gaps a gap error or gap note lists one by one.
MAX_GAPS_LISTED = 10

_MIXED_FIX = (
    "use one interval length throughout: split the file, or aggregate the finer rows to the "
    "coarser interval"
)


@dataclass
class Parsed:
    """Rows read from a file, before the sequence checks (all lists the same length)."""

    source: str
    starts: list[int] = field(default_factory=list)  # UTC epoch seconds
    lines: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # the timestamp as the file wrote it
    cols: dict[str, list[float]] = field(default_factory=dict)  # kWh per interval
    notes: list[str] = field(default_factory=list)


def most_common(x: np.ndarray) -> int:
    """The most common value of a non-empty integer array (the smallest on a tie)."""
    vals, counts = np.unique(x, return_counts=True)
    return int(vals[np.argmax(counts)])


def _mode_step(d: np.ndarray) -> int:
    pos = d[d > 0]
    if pos.size == 0:
        return 0
    return most_common(pos)


def check_sequence(p: Parsed, t: np.ndarray, interval_s: int | None) -> int:
    """The interval length in seconds (given, or the most common step); raises on duplicates,
    rows out of order and mixed intervals, naming each line."""
    if len(t) == 0:
        raise fail("no data rows", p.source, "add interval rows below the header")
    d = np.diff(t)
    step = int(interval_s) if interval_s else _mode_step(d)
    if not step:
        if len(t) == 1:
            raise fail(
                "only one data row, so the interval length cannot be inferred",
                f"{p.source}:{p.lines[0]}",
                "add the following intervals' rows",
            )
        step = 0
    probs = Problems(p.source)
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
                f"timestamp {cur} is {duration_text(d[i])} after the row before it ({prev}, "
                f"line {prev_line}): not a whole number of the file's {duration_text(step)} "
                "interval (mixed intervals)"
            )
            fix = _MIXED_FIX
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
                    f"{duration_text(d[big[k]])} apart, but the file's interval is "
                    f"{duration_text(step)} (mixed intervals)",
                    _MIXED_FIX,
                )
            k = j + 1
    probs.raise_if_any()
    return step


def gap_spans(t: np.ndarray, step: int) -> list[tuple[int, int, int]]:
    """(index of the row before the gap, gap start, gap end) for each gap, UTC seconds."""
    d = np.diff(t)
    return [(int(i), int(t[i]) + step, int(t[i + 1])) for i in np.nonzero(d > step)[0]]


def _gap_error(p: Parsed, spans, step: int, zone: ZoneInfo | None) -> UsageError:
    missing = sum((b - a) // step for _, a, b in spans)
    listed = "; ".join(
        f"{span_text(a, b, zone)} ({(b - a) // step} intervals)"
        for _, a, b in spans[:MAX_GAPS_LISTED]
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
    return fail(what, where, fix)


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
            f"gap {span_text(a, b, zone)}: {m * step / 3600:.2f} h ({m} intervals) "
            f"missing; ESTIMATE (not billed) at {basis}: import ≈ {ri * m:.2f} kWh, "
            f"export ≈ {rx * m:.2f} kWh"
        )
    if len(spans) > MAX_GAPS_LISTED:
        rest = spans[MAX_GAPS_LISTED:]
        h = sum(b - a for _, a, b in rest) / 3600
        notes.append(f"... and {len(rest)} more gap(s), {h:.2f} h (see coverage_gaps())")
    return notes


def assemble(
    p: Parsed, *, interval_s: int | None, allow_gaps: bool, zone: ZoneInfo | None = None,
    service_kw: float | None = None,
) -> IntervalData:
    """IntervalData from checked rows: UTC starts, kWh per interval, the file's notes.

    ``interval_s`` is the file's stated interval in seconds (None: the most common step);
    ``zone`` only adds local times to gap messages; ``service_kw`` is the site's service
    size for the plausibility check (:mod:`._plausible`).
    """
    t = np.asarray(p.starts, dtype=np.int64)
    step = check_sequence(p, t, interval_s)
    cols = {k: np.asarray(v, dtype=float) for k, v in p.cols.items()}
    notes = list(p.notes) + check_plausible(p.source, p.lines, cols, step, service_kw)
    spans = gap_spans(t, step)
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
