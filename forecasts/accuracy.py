"""Forecast accuracy: keep each forecast, score it against the actuals once they arrive.

A forecast is a :class:`ForecastRecord`: who made it (``provider``), of what (``kind``:
``"pv"`` or ``"load"``), when (``issued_at``, UTC epoch s) and its values, kWh per step for
steps ``[start, start + step_s)``. Scoring pairs each step with the actual energy of the same
span (``IntervalData.pv_kwh`` or ``load_kwh``, summed when the actuals are finer; when the
actuals are coarser the forecast steps are summed onto them instead), groups the pairs by
provider, kind and *horizon bucket* — the lead time ``step start − issued_at`` falling in
``[edges[i], edges[i+1])`` hours, default 0–6, 6–24, 24–48 and 48–72 h — and reports per group:

- ``mae_kw``: mean over steps of ``|forecast − actual| / step hours``, i.e. the mean absolute
  error of the step's average power, kW (= kWh per hour; comparable across step lengths);
- ``bias_kw``: mean of ``(forecast − actual) / step hours``, kW: positive = over-forecast.

Steps without complete actuals (not arrived yet, a gap, NaN) are left out, so scoring
early is harmless. The functions are pure over arrays; :class:`ForecastLog` is the small
in-memory keeper the daemon feeds (a store persists it through ``to_dict``/``from_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from optimizer.intervals import IntervalData

KINDS = ("pv", "load")
DEFAULT_HORIZONS_H: tuple[float, ...] = (0.0, 6.0, 24.0, 48.0, 72.0)


# --------------------------------------------------------------------------------------
# data model


@dataclass(frozen=True, eq=False)
class ForecastRecord:
    """One issued forecast.

    Attributes:
        provider: who made it (``"solcast"``, ``"history"`` …).
        kind: ``"pv"`` or ``"load"``.
        issued_at: when it was made, UTC epoch seconds.
        step_s: step length, seconds.
        start_utc: step starts, UTC epoch seconds (int64), increasing.
        values_kwh: forecast energy per step, kWh (NaN = no value for that step).
    """

    provider: str
    kind: str
    issued_at: int
    step_s: int
    start_utc: np.ndarray
    values_kwh: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"forecast kind {self.kind!r} from {self.provider!r}: "
                             f"use one of {', '.join(KINDS)}")
        if int(self.step_s) <= 0:
            raise ValueError(f"forecast from {self.provider!r}: step_s must be positive "
                             f"seconds, got {self.step_s}")
        starts = np.asarray(self.start_utc, dtype=np.int64).ravel()
        values = np.asarray(self.values_kwh, dtype=float).ravel()
        if starts.shape != values.shape:
            raise ValueError(f"forecast from {self.provider!r}: {starts.size} step starts but "
                             f"{values.size} values; give one kWh value per step")
        if starts.size > 1 and (np.diff(starts) < int(self.step_s)).any():
            raise ValueError(f"forecast from {self.provider!r}: step starts must increase by "
                             f"at least step_s ({self.step_s} s) (overlapping steps)")
        object.__setattr__(self, "start_utc", starts)
        object.__setattr__(self, "values_kwh", values)
        object.__setattr__(self, "issued_at", int(self.issued_at))
        object.__setattr__(self, "step_s", int(self.step_s))

    def __len__(self) -> int:
        return len(self.start_utc)

    @property
    def end_utc(self) -> int:
        """End of the last step, UTC epoch seconds (``issued_at`` for an empty forecast)."""
        return int(self.start_utc[-1]) + self.step_s if len(self) else self.issued_at

    def to_dict(self) -> dict:
        return {"provider": self.provider, "kind": self.kind, "issued_at": self.issued_at,
                "step_s": self.step_s, "start_utc": [int(t) for t in self.start_utc],
                "values_kwh": [_json_float(v) for v in self.values_kwh]}

    @classmethod
    def from_dict(cls, d: dict) -> ForecastRecord:
        values = [math.nan if v is None else float(v) for v in d["values_kwh"]]
        return cls(provider=str(d["provider"]), kind=str(d["kind"]),
                   issued_at=int(d["issued_at"]), step_s=int(d["step_s"]),
                   start_utc=np.array(d["start_utc"], dtype=np.int64),
                   values_kwh=np.array(values, dtype=float))


@dataclass(frozen=True)
class Score:
    """Accuracy of one provider's forecasts of one kind at one horizon bucket.

    ``mae_kw``/``bias_kw``/``actual_mean_kw`` are per-step averages of power, kW (kWh per
    hour); bias is forecast − actual. ``n_steps`` steps from ``n_forecasts`` forecasts.
    """

    provider: str
    kind: str
    horizon: str  # "0-6h"
    horizon_start_h: float
    horizon_end_h: float
    n_steps: int
    n_forecasts: int
    mae_kw: float
    bias_kw: float
    actual_mean_kw: float

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> Score:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------
# pure functions


def horizon_label(start_h: float, end_h: float) -> str:
    """``"0-6h"`` for the bucket [0, 6) h."""
    return f"{start_h:g}-{end_h:g}h"


def horizon_bucket(lead_s: np.ndarray, edges_h: Sequence[float] = DEFAULT_HORIZONS_H
                   ) -> np.ndarray:
    """Index ``i`` of the bucket ``[edges_h[i], edges_h[i+1])`` hours holding each lead time
    (seconds from issue to step start); -1 before the first edge or from the last on."""
    edges = np.asarray(edges_h, dtype=float) * 3600.0
    if edges.size < 2 or (np.diff(edges) <= 0).any():
        raise ValueError(f"horizon edges {list(edges_h)} must be ≥ 2 increasing hours")
    lead = np.asarray(lead_s, dtype=float)
    i = np.searchsorted(edges, lead, side="right") - 1
    return np.where((i >= 0) & (i < edges.size - 1), i, -1)


def sum_onto(bin_start: np.ndarray, bin_s: int, start: np.ndarray, length_s: int,
             values: np.ndarray) -> np.ndarray:
    """Sum ``values`` of spans ``[start, start + length_s)`` onto bins
    ``[bin_start, bin_start + bin_s)``, where ``length_s`` divides ``bin_s``; NaN for a bin
    not tiled exactly by finite values (a span missing, misaligned or NaN)."""
    if bin_s % length_s:
        raise ValueError(f"cannot compare {bin_s} s steps with {length_s} s intervals: one "
                         "must be a whole multiple of the other")
    per_bin = bin_s // length_s
    b = np.asarray(bin_start, dtype=np.int64)
    t = np.asarray(start, dtype=np.int64)
    v = np.asarray(values, dtype=float)
    lo = np.searchsorted(t, b, side="left")
    hi = np.searchsorted(t, b + bin_s, side="left")
    finite = np.isfinite(v)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, v, 0.0))])
    cgood = np.concatenate([[0], np.cumsum(finite)])
    total = csum[hi] - csum[lo]
    complete = (hi - lo == per_bin) & (cgood[hi] - cgood[lo] == per_bin)
    # the spans must start on the bin's start and tile it (regular series, no offset)
    first = t[np.minimum(lo, max(len(t) - 1, 0))] if len(t) else np.zeros_like(b)
    last = t[np.clip(hi - 1, 0, max(len(t) - 1, 0))] if len(t) else np.zeros_like(b)
    complete &= (first == b) & (last == b + bin_s - length_s)
    return np.where(complete, total, np.nan)


def pair_with_actuals(record: ForecastRecord, actuals: IntervalData
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Forecast and actual kWh on a common grid: (starts, forecast, actual, step_s).

    The grid is the forecast's steps when they are at least as long as the actual intervals,
    else the actual intervals inside the forecast's span. Actual is NaN where incomplete.
    Raises ValueError when neither length divides the other or the actuals lack the kind.
    """
    actual = actuals.pv_kwh if record.kind == "pv" else actuals.load_kwh
    if actual is None:
        raise ValueError(f"the actuals ({actuals.source or 'interval data'}) have no "
                         f"{record.kind}_kwh column")
    if record.step_s >= actuals.interval_s:
        a = sum_onto(record.start_utc, record.step_s, actuals.start_utc, actuals.interval_s,
                     actual)
        return record.start_utc, record.values_kwh, a, record.step_s
    inside = (actuals.start_utc >= (record.start_utc[0] if len(record) else 0)) & \
             (actuals.start_utc + actuals.interval_s <= record.end_utc)
    grid = actuals.start_utc[inside]
    f = sum_onto(grid, actuals.interval_s, record.start_utc, record.step_s, record.values_kwh)
    return grid, f, actual[inside], actuals.interval_s


def mae_bias(forecast: np.ndarray, actual: np.ndarray) -> tuple[float, float, int]:
    """Mean absolute error and mean error (forecast − actual) over pairs where both are
    finite, in the inputs' unit, and the number of pairs (NaN, NaN, 0 for none)."""
    f = np.asarray(forecast, dtype=float)
    a = np.asarray(actual, dtype=float)
    ok = np.isfinite(f) & np.isfinite(a)
    if not ok.any():
        return math.nan, math.nan, 0
    e = f[ok] - a[ok]
    return float(np.mean(np.abs(e))), float(np.mean(e)), int(ok.sum())


def score_records(records: Iterable[ForecastRecord], actuals: IntervalData,
                  edges_h: Sequence[float] = DEFAULT_HORIZONS_H, *,
                  skipped: list[str] | None = None) -> list[Score]:
    """MAE and bias per (provider, kind, horizon bucket) of ``records`` against ``actuals``.

    A record that cannot be paired with the actuals (see :func:`pair_with_actuals`) raises
    ValueError, or, when a ``skipped`` list is given, is left out with the reason appended.
    Groups with no scored step are omitted. Sorted by provider, kind, horizon.
    """
    edges = tuple(float(e) for e in edges_h)
    groups: dict[tuple[str, str], list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {}
    for k, rec in enumerate(records):
        if not len(rec):
            continue
        try:
            starts, f, a, step = pair_with_actuals(rec, actuals)
        except ValueError as e:
            if skipped is None:
                raise
            skipped.append(f"{rec.provider} {rec.kind} forecast issued at {rec.issued_at} "
                           f"not scored: {e}")
            continue
        hours = step / 3600.0
        bucket = horizon_bucket(starts - rec.issued_at, edges)
        ok = np.isfinite(f) & np.isfinite(a) & (bucket >= 0)
        if ok.any():
            groups.setdefault((rec.provider, rec.kind), []).append(
                (k, bucket[ok], f[ok] / hours, a[ok] / hours))
    out: list[Score] = []
    nb = len(edges) - 1
    for (provider, kind), parts in sorted(groups.items()):
        bucket = np.concatenate([p[1] for p in parts])
        f_kw = np.concatenate([p[2] for p in parts])
        a_kw = np.concatenate([p[3] for p in parts])
        rec_id = np.concatenate([np.full(len(p[1]), p[0]) for p in parts])
        n = np.bincount(bucket, minlength=nb)
        abs_sum = np.bincount(bucket, np.abs(f_kw - a_kw), nb)
        err_sum = np.bincount(bucket, f_kw - a_kw, nb)
        act_sum = np.bincount(bucket, a_kw, nb)
        for i in np.flatnonzero(n):
            out.append(Score(provider=provider, kind=kind,
                             horizon=horizon_label(edges[i], edges[i + 1]),
                             horizon_start_h=edges[i], horizon_end_h=edges[i + 1],
                             n_steps=int(n[i]),
                             n_forecasts=len(np.unique(rec_id[bucket == i])),
                             mae_kw=float(abs_sum[i] / n[i]), bias_kw=float(err_sum[i] / n[i]),
                             actual_mean_kw=float(act_sum[i] / n[i])))
    return out


# --------------------------------------------------------------------------------------
# the keeper


class ForecastLog:
    """In-memory log of issued forecasts, scored on demand against actuals.

    ``horizons_h`` are the bucket edges, hours. ``notes`` after :meth:`score` says which
    records were skipped and why (e.g. a step length the actuals' interval does not divide).
    """

    def __init__(self, horizons_h: Sequence[float] = DEFAULT_HORIZONS_H) -> None:
        horizon_bucket(np.zeros(0), horizons_h)  # validate the edges at the door
        self.horizons_h: tuple[float, ...] = tuple(float(h) for h in horizons_h)
        self._records: list[ForecastRecord] = []
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> tuple[ForecastRecord, ...]:
        return tuple(self._records)

    def record(self, provider: str, kind: str, issued_at: int, start_utc: np.ndarray,
               values_kwh: np.ndarray, step_s: int) -> ForecastRecord:
        """Keep a forecast (kWh per step ``[start, start + step_s)``, UTC epoch s)."""
        rec = ForecastRecord(provider=provider, kind=kind, issued_at=issued_at, step_s=step_s,
                             start_utc=np.array(start_utc, dtype=np.int64),
                             values_kwh=np.array(values_kwh, dtype=float))
        self._records.append(rec)
        return rec

    def score(self, actuals: IntervalData) -> list[Score]:
        """MAE and bias per provider, kind and horizon bucket over every kept forecast."""
        self.notes = []
        return score_records(self._records, actuals, self.horizons_h, skipped=self.notes)

    def prune(self, before_utc: int) -> int:
        """Forget forecasts whose last step ended before ``before_utc``; returns how many."""
        keep = [r for r in self._records if r.end_utc >= before_utc]
        dropped = len(self._records) - len(keep)
        self._records = keep
        return dropped

    def to_dict(self) -> dict:
        return {"horizons_h": list(self.horizons_h),
                "records": [r.to_dict() for r in self._records]}

    @classmethod
    def from_dict(cls, d: dict) -> ForecastLog:
        log = cls(d.get("horizons_h", DEFAULT_HORIZONS_H))
        log._records = [ForecastRecord.from_dict(r) for r in d.get("records", [])]
        return log


def _json_float(v: float) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return float(v) if math.isfinite(v) else None
