"""Months ahead: what the same weeks of last year did.

A plan's own horizon is two days; the NEM-PS month outlook and the NEM2 true-up projection
need PV and load for weeks or months beyond it. A forecast cannot see that far, but a home
with a year of history knows what the same weeks did last year — including the summer's air
conditioning that a profile fitted to the last weeks of winter cannot know, and its own PV
with its own shading and its own climate's clouds, which a clear-sky model with a generic
clearness table can miss by 15 % or more. So where the history reaches back, the far
expectation is the history 52 weeks (364 days: the same weekday) earlier, or 104 weeks.

Pure: arrays in, arrays out. Units kWh per step; times UTC epoch seconds.
"""

from __future__ import annotations

import numpy as np

from optimizer.intervals import IntervalData

WEEK_S = 7 * 86400
LOOKBACK_WEEKS = (52, 104)  # the same weekday one year ago, then two


def same_weeks_last_year(starts_utc: np.ndarray, step_s: int, history: IntervalData | None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PV and load kWh per step of ``starts_utc`` (steps of ``step_s`` seconds) from the
    history 52 (else 104) weeks earlier (summed when the history's
    intervals are shorter than the step), and a mask of the steps
    the history covered (both PV and load known for the whole step). Steps not covered hold 0.
    """
    n = len(starts_utc)
    pv, load = np.zeros(n), np.zeros(n)
    covered = np.zeros(n, dtype=bool)
    if (history is None or not len(history) or history.load_kwh is None
            or history.pv_kwh is None):
        return pv, load, covered
    h_step = history.interval_s
    h0 = int(history.start_utc[0])
    # cumulative sums on the history's own grid: any step is a difference of two of them
    dense_n = (int(history.start_utc[-1]) - h0) // h_step + 1
    idx = (history.start_utc - h0) // h_step
    present = np.zeros(dense_n, dtype=bool)
    present[idx] = np.isfinite(history.load_kwh) & np.isfinite(history.pv_kwh)
    cum = {}
    for name, arr in (("pv", history.pv_kwh), ("load", history.load_kwh)):
        dense = np.zeros(dense_n)
        dense[idx] = np.nan_to_num(arr)
        cum[name] = np.concatenate([[0.0], np.cumsum(dense)])
    cum_present = np.concatenate([[0], np.cumsum(present)])
    for weeks in LOOKBACK_WEEKS:
        todo = ~covered
        if not todo.any():
            break
        a = (starts_utc[todo] - weeks * WEEK_S - h0) / h_step
        z = a + step_s / h_step
        ok = (a >= 0) & (z <= dense_n) & (a == np.floor(a)) & (z == np.floor(z))
        ai, zi = a[ok].astype(np.int64), z[ok].astype(np.int64)
        full = (cum_present[zi] - cum_present[ai]) == (zi - ai)
        sel = np.flatnonzero(todo)[ok][full]
        pv[sel] = (cum["pv"][zi] - cum["pv"][ai])[full]
        load[sel] = (cum["load"][zi] - cum["load"][ai])[full]
        covered[sel] = True
    return pv, load, covered
