"""Stored intervals → one regular series: the pure part of :meth:`Store.intervals`.

Rows come from two sources, the utility's interval data and the gateway's telemetry, in any
stored interval lengths. :func:`bucket` sums one source's rows into target intervals of
``interval_s`` seconds (aligned to UTC multiples of it, as :func:`adapters.usage.renet`
does); :func:`combine` picks, for each target interval, the source that wins it. kWh
throughout (summed, never averaged); times UTC epoch seconds.

Rules (the store's module doc states them for users):

* A row fits a target interval when its length divides ``interval_s`` and it lies wholly
  inside one target interval; longer or straddling rows cannot be split and are left out
  (counted, for a note).
* Within one source, a target interval takes the stored length that covers most of it (the
  target length itself on a tie, then the coarser).
* Between sources, a *completely* covered interval beats a partly covered one; if both are
  complete (or both partial with equal coverage) the preferred source wins (utility by
  default: it is what you are billed on); otherwise the better-covered one.
* Load, PV and battery the winner does not have (the utility meters only the grid) come
  from the other source when it covers the interval at least as well.
* A target interval no row touches is absent: gaps stay gaps, nothing is filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLUMNS = ("import_kwh", "export_kwh", "load_kwh", "pv_kwh", "battery_kwh")
OPTIONAL = ("load_kwh", "pv_kwh", "battery_kwh")
_EPS = 1e-9


@dataclass(frozen=True)
class Rows:
    """One source's stored rows (all arrays the same length).

    ``values`` maps each of :data:`COLUMNS` to kWh per row, NaN where unknown; ``coverage``
    is the share (0–1] of each row's own length that was measured.
    """

    start: np.ndarray  # int64, UTC epoch s
    length: np.ndarray  # int64, s
    values: dict[str, np.ndarray]
    coverage: np.ndarray
    estimated: np.ndarray  # bool

    @classmethod
    def from_table(cls, table: np.ndarray) -> Rows:
        """From a float array with columns start, length, import, export, load, pv,
        battery, coverage, estimated (NaN = unknown)."""
        t = table.reshape(-1, 9)
        return cls(start=t[:, 0].astype(np.int64), length=t[:, 1].astype(np.int64),
                   values={c: t[:, 2 + i] for i, c in enumerate(COLUMNS)},
                   coverage=t[:, 7], estimated=t[:, 8] > 0)


@dataclass(frozen=True)
class Buckets:
    """One source summed into target intervals (sorted by start)."""

    start: np.ndarray
    coverage: np.ndarray  # share of the target interval measured, 0–1
    values: dict[str, np.ndarray]
    estimated: np.ndarray
    unusable: int  # rows that could not be placed in a target interval

    @classmethod
    def empty(cls, unusable: int = 0) -> Buckets:
        z = np.zeros(0)
        return cls(np.zeros(0, dtype=np.int64), z, {c: z for c in COLUMNS},
                   np.zeros(0, dtype=bool), unusable)


def bucket(rows: Rows, interval_s: int) -> Buckets:
    """Sum ``rows`` into target intervals of ``interval_s`` s (see the module doc)."""
    T = int(interval_s)
    off = rows.start % T
    fits = (rows.length <= T) & (T % np.maximum(rows.length, 1) == 0) & (off + rows.length <= T)
    unusable = int((~fits).sum())
    if not fits.any():
        return Buckets.empty(unusable)
    start, length = rows.start[fits], rows.length[fits]
    b = start - off[fits]
    lengths, li = np.unique(length, return_inverse=True)
    key = b * len(lengths) + li
    groups, inv = np.unique(key, return_inverse=True)
    gb, gl = groups // len(lengths), lengths[groups % len(lengths)]
    n = len(groups)
    cov = np.bincount(inv, weights=length * rows.coverage[fits], minlength=n) / T
    values = {}
    for c in COLUMNS:
        v = rows.values[c][fits]
        known = ~np.isnan(v)
        s = np.bincount(inv, weights=np.where(known, v, 0.0), minlength=n)
        unknown = np.bincount(inv, weights=~known, minlength=n) > 0
        values[c] = np.where(unknown, np.nan, s)
    est = np.bincount(inv, weights=rows.estimated[fits], minlength=n) > 0
    # per target interval, the group covering most (then the longest rows)
    order = np.lexsort((-gl, -np.round(cov, 9), gb))
    first = np.ones(n, dtype=bool)
    first[1:] = gb[order][1:] != gb[order][:-1]
    pick = order[first]
    return Buckets(start=gb[pick], coverage=np.minimum(cov[pick], 1.0),
                   values={c: v[pick] for c, v in values.items()}, estimated=est[pick],
                   unusable=unusable)


@dataclass(frozen=True)
class Combined:
    start: np.ndarray
    values: dict[str, np.ndarray]
    from_first: np.ndarray  # bool: the interval came from the preferred source
    coverage: np.ndarray
    estimated: np.ndarray


def combine(preferred: Buckets, other: Buckets) -> Combined:
    """One value per target interval from two sources (see the module doc)."""
    starts = np.union1d(preferred.start, other.start)
    n = len(starts)

    def spread(bk: Buckets):
        idx = np.searchsorted(starts, bk.start)
        cov = np.zeros(n)
        cov[idx] = bk.coverage
        vals = {}
        for c in COLUMNS:
            v = np.full(n, np.nan)
            v[idx] = bk.values[c]
            vals[c] = v
        est = np.zeros(n, dtype=bool)
        est[idx] = bk.estimated
        return cov, vals, est

    pc, pv, pe = spread(preferred)
    oc, ov, oe = spread(other)
    p_full, o_full = pc >= 1 - _EPS, oc >= 1 - _EPS
    take_p = (pc > 0) & ((p_full & o_full) | (p_full & ~o_full)
                         | (~p_full & ~o_full & (pc >= oc - _EPS)))
    values = {}
    for c in COLUMNS:
        v = np.where(take_p, pv[c], ov[c])
        if c in OPTIONAL:
            alt_v = np.where(take_p, ov[c], pv[c])
            alt_ok = np.where(take_p, oc >= pc - _EPS, pc >= oc - _EPS)
            v = np.where(np.isnan(v) & alt_ok, alt_v, v)
        values[c] = v
    return Combined(start=starts, values=values, from_first=take_p,
                    coverage=np.where(take_p, pc, oc), estimated=np.where(take_p, pe, oe))


def missing_spans(starts: np.ndarray, lengths: np.ndarray, a: int, b: int,
                  ) -> list[tuple[int, int]]:
    """The parts of [a, b) no interval [start, start + length) covers, as (start, end)."""
    if b <= a:
        return []
    s = np.asarray(starts, dtype=np.int64)
    e = s + np.asarray(lengths, dtype=np.int64)
    keep = (e > a) & (s < b)
    s, e = s[keep], e[keep]
    order = np.argsort(s, kind="stable")
    s, e = s[order], e[order]
    reach = np.maximum.accumulate(e) if len(e) else e
    out: list[tuple[int, int]] = []
    t = a
    # a gap opens before interval i when it starts after everything before it has ended
    prev_reach = np.concatenate(([a], reach[:-1])) if len(s) else s
    prev_reach = np.maximum(prev_reach, a)
    for i in np.nonzero(s > prev_reach)[0]:
        out.append((int(prev_reach[i]), int(s[i])))
    t = int(max(reach[-1], a)) if len(reach) else a
    if t < b:
        out.append((t, b))
    return out
