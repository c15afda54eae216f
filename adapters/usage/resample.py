"""Reshape interval data after reading: aggregate to a coarser interval, list missing spans.

Works on :class:`IntervalData` (UTC interval starts, kWh per interval); sums kWh, never
averages kW.
"""

from __future__ import annotations

import numpy as np

from adapters.usage._assemble import gap_spans
from adapters.usage._problems import fail
from adapters.usage._times import duration_text, utc_text
from optimizer.intervals import IntervalData


def coverage_gaps(data: IntervalData) -> list[tuple[int, int]]:
    """Missing spans in ``data``: ``(start, end)`` UTC epoch seconds, end exclusive.

    A gap is where one interval's end (start + ``interval_s``) is before the next start.
    """
    t = np.asarray(data.start_utc, dtype=np.int64)
    return [(a, b) for _, a, b in gap_spans(t, data.interval_s)]


def renet(data: IntervalData, interval_s: int, *, allow_gaps: bool = False) -> IntervalData:
    """Aggregate ``data`` to a coarser interval of ``interval_s`` seconds (e.g. 300 → 900).

    Each coarse interval sums the gross import, export (and load, pv, battery) kWh of the fine
    intervals inside it: gross flows are kept, nothing is netted (a tariff nets only when
    billing, at its own netting interval). Coarse intervals are aligned to **UTC multiples** of
    ``interval_s`` (``start_utc % interval_s == 0``): in every zone with a whole-hour UTC
    offset that is also aligned to the local hour; in half-hour zones (e.g. UTC+05:30) hourly
    buckets start at local :30.

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
    fine_text, target_text = duration_text(fine), duration_text(interval_s)
    if interval_s < fine or interval_s % fine:
        raise fail(
            f"cannot aggregate {fine_text} intervals to {target_text}: the "
            f"target must be a whole multiple of {fine_text}",
            src,
            f"choose a target such as {duration_text(fine * 2)}, {duration_text(fine * 4)} or "
            f"1 h that is a multiple of {fine_text}",
        )
    if interval_s == fine:
        return data
    t = np.asarray(data.start_utc, dtype=np.int64)
    off = np.nonzero(t % fine)[0]
    if off.size:
        raise fail(
            f"interval start {utc_text(t[off[0]])} is not on a UTC multiple of "
            f"{fine_text}, so the fine intervals straddle {target_text} boundaries",
            src,
            "aggregate data whose starts are aligned to UTC multiples of its interval",
        )
    bucket = t - t % interval_s
    starts, inv, counts = np.unique(bucket, return_inverse=True, return_counts=True)
    per = interval_s // fine
    notes = list(data.notes)
    partial = np.nonzero(counts < per)[0]
    if partial.size:
        listed = ", ".join(f"{utc_text(starts[i])} ({counts[i]} of {per})" for i in partial[:5])
        more = f" and {partial.size - 5} more" if partial.size > 5 else ""
        if not allow_gaps:
            raise fail(
                f"{partial.size} coarse {target_text} interval(s) are only partly covered "
                f"by the {fine_text} data: {listed}{more}",
                src,
                "supply the missing fine intervals, or pass --allow-gaps (allow_gaps=True) to sum "
                "only the metered ones",
            )
        notes.append(
            f"renet to {target_text}: {partial.size} interval(s) only partly "
            f"covered, their sums hold only the metered {fine_text} intervals "
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
