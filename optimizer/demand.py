"""Demand charges: $ per kW of a billing month's highest average import over a window.

The rule, in one place (docs/billing-rules.md, 'Demand charges'):

* **The determinant** of a demand key — ``"flat"`` (any hour) or a TOU period — is the
  billing month's highest *average grid import power* over one window of the tariff's
  ``window_minutes``: windows are clock-aligned (:00, :15, … for 15 minutes), their kW the
  window's import kWh ÷ its hours. Data coarser than the window (hourly data on a 15-minute
  rate) cannot show a shorter peak: each interval's own average is used, and the bill notes
  it — the demand is then low by however much the load peaked within the hour. NREL SAM
  (Utilityrate5) reads demand the same way, at the time step of the load it is given.
* A window belongs to the month and TOU period of its first interval.
* **The charge** of a key is its rate for the month's season — a $/kW figure, or tiers over
  cumulative kW.
* **The ratchet** (flat demand only): the billing demand is at least ``ratchet_percent`` of the
  highest flat demand of the previous ``ratchet_months`` billing months present in the data.

Gross import is used, never net: a battery's discharge lowers demand only by lowering the
import in that window. Units: kWh per interval in, kW and $ out; times UTC epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from optimizer.tariff import Classified, Tariff

FLAT = "flat"


@dataclass(frozen=True)
class MonthDemand:
    """One billing month's demand: determinants (kW) and charges ($) per key ("flat" and TOU
    period names with a rate in the month's season)."""

    kw: dict[str, float] = field(default_factory=dict)
    charges: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.charges.values()))


def window_kw(start_utc: np.ndarray, interval_s: int, import_kwh: np.ndarray,
              window_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Average import kW per clock-aligned window of ``window_s`` seconds, and the index of
    each window's first interval. Data coarser than the window: each interval's own kW."""
    t = np.asarray(start_utc, dtype=np.int64)
    kwh = np.asarray(import_kwh, dtype=float)
    if interval_s >= window_s:
        return kwh * 3600.0 / interval_s, np.arange(len(t))
    block = t // window_s
    first = np.flatnonzero(np.concatenate([[True], block[1:] != block[:-1]]))
    sums = np.add.reduceat(kwh, first) if len(first) else np.zeros(0)
    return sums * 3600.0 / window_s, first


def tiered_demand_charge(kw: float, tiers: list[tuple[float, float]]) -> float:
    """$ for ``kw`` of demand over tiers [(cumulative kW limit, $/kW)], the last unlimited."""
    total, below = 0.0, 0.0
    for limit, rate in tiers:
        part = min(kw, limit) - below
        if part <= 0:
            break
        total += part * rate
        below = limit
    return total


def monthly_demand(tariff: Tariff, c: Classified, month_index: np.ndarray,
                   labels: list[tuple[int, int]], start_utc: np.ndarray, interval_s: int,
                   import_kwh: np.ndarray, notes: list[str]) -> list[MonthDemand]:
    """Each billing month's demand determinants and charges (module docstring)."""
    d = tariff.spec.demand
    n = len(labels)
    if d is None or not (tariff.demand_tiers or any(tariff.demand_flat_by_month)):
        return [MonthDemand() for _ in range(n)]
    window_s = d.window_minutes * 60
    if interval_s > window_s:
        notes.append(f"demand: the data's {interval_s // 60}-minute intervals are longer than "
                     f"the tariff's {d.window_minutes}-minute demand window; each interval's "
                     "average is used, so a shorter peak is not seen (demand may be low)")
    kw, first = window_kw(start_utc, interval_s, import_kwh, window_s)
    mi = np.asarray(month_index)[first]
    period = np.asarray(tariff.demand_period(c))[first]
    n_periods = len(tariff.demand_period_names)
    flat = np.zeros(n)
    np.maximum.at(flat, mi, kw)
    by_period = np.zeros((n, n_periods))
    np.maximum.at(by_period, (mi, period), kw)
    seen = np.zeros((n, n_periods), dtype=bool)
    seen[mi, period] = True
    out = []
    for i, (_, m) in enumerate(labels):
        season = tariff.season_names[tariff.month_season[m]]
        kws: dict[str, float] = {}
        charges: dict[str, float] = {}
        tiers = tariff.demand_flat_by_month[m - 1]
        if tiers is not None:
            billing = float(flat[i])
            if d.ratchet_percent > 0 and i > 0:
                back = flat[max(0, i - d.ratchet_months):i]
                billing = max(billing, d.ratchet_percent / 100.0 * float(back.max()))
            kws[FLAT] = billing
            charges[FLAT] = tiered_demand_charge(billing, tiers)
        for p, name in enumerate(tariff.demand_period_names):
            tiers = tariff.demand_tiers.get((season, name))
            if tiers is not None and seen[i, p]:
                kws[name] = float(by_period[i, p])
                charges[name] = tiered_demand_charge(kws[name], tiers)
        out.append(MonthDemand(kw=kws, charges=charges))
    return out


# --------------------------------------------------------------------------------------
# For the plan


@dataclass(frozen=True)
class DemandBudget:
    """A demand charge a plan's steps fall under (:func:`optimizer.plan.add_demand_epigraph`).

    ``steps``: indices of the plan's steps in billing month ``month_key`` (year × 12 +
    month − 1) that count for key ``name`` ("flat", or a TOU period); ``start_kw``: the
    month's billing demand so far for that key (a peak below it costs nothing more);
    ``rate``: $ per kW above it (the tier rate in force at ``start_kw``)."""

    month_key: int
    name: str
    steps: np.ndarray
    start_kw: float
    rate: float


def marginal_rate(kw: float, tiers: list[tuple[float, float]]) -> float:
    """$/kW of one more kW of demand above ``kw`` (the tier it falls in)."""
    for limit, rate in tiers:
        if kw < limit:
            return rate
    return tiers[-1][1]


def demand_budgets(tariff: Tariff, month_key: np.ndarray, period: np.ndarray,
                   so_far_kw: dict[int, dict[str, float]] | None = None
                   ) -> tuple[DemandBudget, ...]:
    """The demand charges over a plan's steps (their billing ``month_key`` and demand
    ``period`` per step: :meth:`Tariff.demand_period`), each from the month's billing demand
    so far (``so_far_kw``: month key → key → kW; missing = 0)."""
    if tariff.spec.demand is None or not (tariff.demand_tiers
                                          or any(tariff.demand_flat_by_month)):
        return ()
    out = []
    for mk in np.unique(month_key):
        mk = int(mk)
        season = tariff.season_names[tariff.month_season[mk % 12 + 1]]
        in_month = month_key == mk
        known = (so_far_kw or {}).get(mk, {})
        keys = [(FLAT, in_month)] + [(name, in_month & (period == p))
                                      for p, name in enumerate(tariff.demand_period_names)]
        for name, mask in keys:
            tiers = (tariff.demand_flat_by_month[mk % 12] if name == FLAT
                     else tariff.demand_tiers.get((season, name)))
            if tiers is None or not mask.any():
                continue
            start = float(known.get(name, 0.0))
            out.append(DemandBudget(mk, name, np.flatnonzero(mask), start,
                                    marginal_rate(start, tiers)))
    return tuple(out)


def demand_cost(budgets: tuple[DemandBudget, ...], import_kwh: np.ndarray,
                step_hours: float, margin_kwh: np.ndarray | None = None) -> float:
    """$ of demand charges a course of ``import_kwh`` (kWh per plan step) adds to the
    months' billing demand so far: Σ rate × max(0, peak kW over the charge's steps −
    start_kw). What the behaviour model's simulation of a schedule is judged by, as the
    plan's objective judges the plan."""
    imp = np.asarray(import_kwh, dtype=float)
    if margin_kwh is not None:
        imp = imp + margin_kwh  # the load's recent highs beyond the forecast
    total = 0.0
    for d in budgets:
        if len(d.steps) and d.rate > 0:
            peak = float(imp[d.steps].max()) / step_hours
            total += d.rate * max(0.0, peak - d.start_kw)
    return total
