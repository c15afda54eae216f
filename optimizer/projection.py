"""The projection of a settlement period: what the true-up will be, and how sure that is.

A projection is the bill engine (:func:`optimizer.billing.bill`) run over the whole period:

* **metered history** where there is some;
* the **plan's own flows** over its horizon (or nothing there, when the planner asks what
  the rest of the period adds up to without its own decisions);
* for every other hour, an **expected year**: expected PV and load (the caller's far
  expectation — the same weeks last year where the history has them) run through a
  Self-Powered battery at the owner's floor by the behaviour model, in several
  **scenarios**: how much the unseen part can differ from the expectation.

Each month is billed as the bill engine bills it (the NEM-PS cap, tiers, baseline,
minimums), and the months' sums are settled by :mod:`optimizer.settlement`. With nothing
left to forecast (history covers the period) the projection *is* the bill: the same
figure as ``trueup bill`` to the cent.

Scenarios: nine equally likely years, PV and load each at the 1/6, 1/2 and 5/6 quantiles of
a log-normal spread around the expectation (independent): the median year and its
neighbours, each standing for a ninth of the probability. The spread is the caller's: wide
when the expectation is a generic model (no history of this home), narrow when it is this
home's own last year. The planner gives each scenario its own true-up (see
:mod:`optimizer.plan`), so a credited kWh is worth the expectation over the scenarios, never
one guessed regime.

Pure: arrays in, figures out; a :class:`ProjectionMemo` (owned by the caller) keeps month
bills that cannot change (past months, months of an unchanged expectation). Units: kWh, $;
times UTC epoch seconds; months absolute (``year × 12 + month``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from optimizer.behaviour import BatterySpec, simulate_self_powered
from optimizer.billing import bill
from optimizer.intervals import IntervalData
from optimizer.settlement import (
    PeriodTotals,
    carries_credit_to_forfeit,
    closing_month,
    leftover_after,
    leftover_credit,
    month_label,
    net_surplus_kwh,
    true_up_anchor,
    true_up_due,
)
from optimizer.tariff import Tariff

HOUR = 3600
# the 5/6 quantile of the standard normal: nine cells of probability 1/9 each
_Z = 0.967421566101701


# --------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    """One possible course of the unseen part of a period: PV and load × their scales."""

    label: str
    pv_scale: float
    load_scale: float
    weight: float


def scenario_grid(pv_sigma: float, load_sigma: float) -> tuple[Scenario, ...]:
    """Nine equally likely scenarios: PV and load each × exp(σ·z) at z = −0.97, 0, +0.97
    (the 1/6, 1/2 and 5/6 quantiles of a log-normal with ``σ``), all combinations. σ = 0
    gives one scenario (the expectation itself)."""
    if pv_sigma <= 0 and load_sigma <= 0:
        return (Scenario("expected", 1.0, 1.0, 1.0),)
    names = ("low", "typical", "high")
    out = []
    for i, zp in enumerate((-_Z, 0.0, _Z)):
        for j, zl in enumerate((-_Z, 0.0, _Z)):
            out.append(Scenario(f"PV {names[i]}, load {names[j]}",
                                math.exp(pv_sigma * zp), math.exp(load_sigma * zl), 1 / 9))
    return tuple(out)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a discrete distribution (values with probabilities), each value
    standing for the middle of its probability mass, linear in between."""
    order = np.argsort(values)
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    mid = np.cumsum(w) - w / 2
    return float(np.interp(q * w.sum(), mid, v))


# --------------------------------------------------------------------------------------
# Periods


@dataclass(frozen=True)
class SettlementPeriod:
    """One settlement period: the billing months a true-up settles, [start, end) in UTC."""

    closing: int  # the true-up month, absolute
    start_utc: int
    end_utc: int

    @property
    def label(self) -> str:
        return month_label(self.closing)


def _read_day_utc(month: int, tz: str, read_day: int) -> int:
    """UTC of local midnight on the meter-read day of absolute month ``month``."""
    y, m = divmod(month - 1, 12)
    return int(datetime(y, m + 1, read_day, tzinfo=ZoneInfo(tz)).timestamp())


def billing_month(tariff: Tariff, t_utc: int) -> int:
    """The absolute billing month holding instant ``t_utc`` (the tariff's local clock and
    meter-read day, as the bill engine counts months)."""
    d = datetime.fromtimestamp(int(t_utc), ZoneInfo(tariff.tz))
    return d.year * 12 + d.month - (d.day < tariff.spec.calendar.meter_read_day)


def settlement_period(tariff: Tariff, t_utc: int, true_up_month: int) -> SettlementPeriod:
    """The settlement period holding instant ``t_utc`` (as the bill engine groups months)."""
    st = tariff.spec.settlement
    month = billing_month(tariff, t_utc)
    close = closing_month(month, true_up_anchor(month, true_up_month, st.first_true_up),
                          st.period_months)
    read_day = tariff.spec.calendar.meter_read_day
    return SettlementPeriod(close, _read_day_utc(close - st.period_months + 1, tariff.tz,
                                                 read_day),
                            _read_day_utc(close + 1, tariff.tz, read_day))


def periods_between(tariff: Tariff, a_utc: int, z_utc: int, true_up_month: int
                    ) -> list[SettlementPeriod]:
    """The settlement periods that [a_utc, z_utc) touches, in order."""
    out = [settlement_period(tariff, a_utc, true_up_month)]
    while out[-1].end_utc < z_utc:
        out.append(settlement_period(tariff, out[-1].end_utc, true_up_month))
    return out


# --------------------------------------------------------------------------------------
# The expected rest


@dataclass(frozen=True)
class RestBook:
    """Hourly imports and exports [scenario, hour] over a period: the expected PV and load
    × each scenario's scales, through a Self-Powered battery at the floor."""

    key: str  # identifies the inputs (for the memo)
    start_utc: int
    scenarios: tuple[Scenario, ...]
    import_kwh: np.ndarray
    export_kwh: np.ndarray


def rest_book(period: SettlementPeriod, pv_kwh: np.ndarray, load_kwh: np.ndarray,
              scenarios: tuple[Scenario, ...], spec: BatterySpec, floor_percent: float,
              memo: ProjectionMemo | None = None) -> RestBook:
    """The expected rest of ``period`` per scenario. ``pv_kwh`` and ``load_kwh`` hold the
    expectation for every hour of the period (kWh per hour)."""
    n = (period.end_utc - period.start_utc) // HOUR
    pv, load = np.asarray(pv_kwh, float)[:n], np.asarray(load_kwh, float)[:n]
    if len(pv) != n or len(load) != n:
        raise ValueError(f"the expectation has {len(pv)}/{len(load)} hours, the period {n}")
    key = _digest(pv, load, np.array([s.pv_scale for s in scenarios]),
                  np.array([s.load_scale for s in scenarios]),
                  np.array([spec.capacity_kwh, spec.max_charge_kw, spec.max_discharge_kw,
                            spec.charge_efficiency, spec.discharge_efficiency, floor_percent,
                            period.start_utc]))
    if memo is not None and key in memo.books:
        return memo.books[key]
    scale_pv = np.array([s.pv_scale for s in scenarios])[:, None]
    scale_load = np.array([s.load_scale for s in scenarios])[:, None]
    imp, exp, _ = simulate_self_powered(pv[None, :] * scale_pv, load[None, :] * scale_load,
                                     0.5 * spec.capacity_kwh, floor_percent, 1.0, spec)
    book = RestBook(key, period.start_utc, scenarios, imp, exp)
    if memo is not None:
        memo.books[key] = book
        while len(memo.books) > 4:
            memo.books.pop(next(iter(memo.books)))
    return book


# --------------------------------------------------------------------------------------
# The projection


@dataclass
class ProjectionMemo:
    """Month bills and books that cannot change until their inputs do. One per planner."""

    months: OrderedDict = field(default_factory=OrderedDict)
    books: dict = field(default_factory=dict)
    max_months: int = 400

    def month(self, key: tuple, compute) -> PeriodTotals:
        if key in self.months:
            self.months.move_to_end(key)
            return self.months[key]
        value = compute()
        self.months[key] = value
        if len(self.months) > self.max_months:
            self.months.popitem(last=False)
        return value


@dataclass(frozen=True)
class PeriodProjection:
    """What a settlement period adds up to in each scenario, and the true-up it makes."""

    period: SettlementPeriod
    scenarios: tuple[Scenario, ...]
    months: tuple[tuple[PeriodTotals, ...], ...]  # [scenario][billing month of the period]
    month_starts: tuple[int, ...]  # UTC start of each billing month
    surplus_rate: float
    measured_fraction: float  # share of the period's time with metered history
    planned_fraction: float  # share inside the plan's horizon
    carries_credit: bool = False  # monthly charges, credit carried and forfeited (NBT)

    @property
    def totals(self) -> tuple[PeriodTotals, ...]:
        """The period's sums, one per scenario."""
        return tuple(sum(m, PeriodTotals()) for m in self.months)

    @property
    def weights(self) -> np.ndarray:
        return np.array([s.weight for s in self.scenarios])

    @property
    def dues(self) -> np.ndarray:
        """$ due at the true-up per scenario (< 0: paid to the customer). Under monthly
        charges (net billing) the months have paid their charges: the true-up only pays
        the NSC."""
        if self.carries_credit:
            return np.array([-net_surplus_kwh(t.credited_export_kwh, t.import_kwh)
                             * self.surplus_rate for t in self.totals])
        return np.array([true_up_due(t, self.surplus_rate) for t in self.totals])

    @property
    def forfeited(self) -> np.ndarray:
        """$ credit forfeited at the true-up per scenario."""
        if self.carries_credit:
            return np.array([leftover_after(0.0, [t.energy_charges for t in m])
                             for m in self.months])
        return np.array([leftover_credit(t.energy_charges) for t in self.totals])

    @property
    def central(self) -> int:
        """The scenario of typical PV and load (the expectation itself)."""
        return int(np.argmin([abs(math.log(s.pv_scale)) + abs(math.log(s.load_scale))
                              for s in self.scenarios]))

    @property
    def due(self) -> float:
        """The central figure: the true-up due in the typical scenario, $."""
        return float(self.dues[self.central])

    def quantile(self, q: float) -> float:
        """The ``q`` quantile of the true-up due, $."""
        return weighted_quantile(self.dues, self.weights, q)

    @property
    def p_in_credit(self) -> float:
        """Probability that the period ends with credit left over (forfeited)."""
        return float(self.weights[self.forfeited > 0].sum())

    def to_json(self) -> dict:
        return {"true_up_month": self.period.label, "due": round(self.due, 2),
                "p10": round(self.quantile(0.1), 2), "p50": round(self.quantile(0.5), 2),
                "p90": round(self.quantile(0.9), 2),
                "forfeited_credit": round(float(self.forfeited[self.central]), 2),
                "p_in_credit": round(self.p_in_credit, 3),
                "measured_fraction": round(self.measured_fraction, 4),
                "planned_fraction": round(self.planned_fraction, 4),
                "estimated_fraction": round(1 - self.measured_fraction
                                            - self.planned_fraction, 4),
                "scenarios": [{"label": s.label, "weight": round(s.weight, 4),
                               "due": round(float(d), 2)}
                              for s, d in zip(self.scenarios, self.dues, strict=True)]}


def project_period(tariff: Tariff, period: SettlementPeriod, book: RestBook | None, *,
                   history: IntervalData | None = None, horizon: tuple[int, int] | None = None,
                   planned: IntervalData | None = None, true_up_month: int | None = None,
                   export_cap_kwh: list[float] | None = None,
                   memo: ProjectionMemo | None = None) -> PeriodProjection:
    """Bill ``period`` in every scenario of ``book``: history where it has intervals, inside
    ``horizon`` (UTC [start, end)) the ``planned`` flows (none given: zero), the book
    everywhere else.

    ``book`` may be None only when history (and the plan) cover the whole period. The
    period's months are billed one by one as :func:`optimizer.billing.bill` bills them and
    settled by :mod:`optimizer.settlement`; with ``memo`` a month whose inputs did not change
    is not billed again.
    """
    res = _resolution(tariff, history, planned)
    a, z = period.start_utc, period.end_utc
    n = (z - a) // res
    if (z - a) % res:
        raise ValueError(f"period {period.label} is not on a {res}-second grid")
    # on the period's grid: metered and planned kWh, and the share of each step they cover
    hist_imp, hist_exp, hist_cov = _on_grid(history, a, res, n)
    plan_imp, plan_exp, plan_cov = np.zeros(n), np.zeros(n), np.zeros(n)
    if horizon is not None:
        lo, hi = max(horizon[0], a), min(horizon[1], z)
        if hi > lo:
            edges = a + res * np.arange(n + 1)
            inside = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, res)
            plan_cov = np.maximum(0.0, inside / res - hist_cov)
            if planned is not None and len(planned):
                plan_imp, plan_exp, _ = _on_grid(planned, a, res, n)
    rest = np.clip(1.0 - hist_cov - plan_cov, 0.0, 1.0)
    rest[rest < 1e-9] = 0.0
    if rest.any() and book is None:
        raise ValueError(f"no expected rest for {rest.sum() * res / 3600:.1f} unmetered hours "
                         f"of period {period.label}")
    scenarios = book.scenarios if book is not None else (Scenario("metered", 1, 1, 1.0),)
    months = _month_edges(tariff, a, z, res)
    per = HOUR // res if book is not None else 1
    per_month: list[list[PeriodTotals]] = [[] for _ in scenarios]
    tum = true_up_month or tariff.spec.settlement.true_up_month
    caps = tuple(export_cap_kwh) if export_cap_kwh else None
    known_imp, known_exp = hist_imp + plan_imp, hist_exp + plan_exp
    for mi, (i0, i1) in enumerate(months):
        known_key = _digest(known_imp[i0:i1], known_exp[i0:i1], rest[i0:i1])
        uses_book = bool(rest[i0:i1].any())
        for s in range(len(scenarios)):
            key = (tariff.id, tariff.source, tum, caps, period.closing, mi, res, known_key,
                   (book.key, s) if uses_book else None)

            def compute(s=s, i0=i0, i1=i1, uses_book=uses_book) -> PeriodTotals:
                imp, exp = known_imp[i0:i1].copy(), known_exp[i0:i1].copy()
                if uses_book:
                    hours = (a + res * np.arange(i0, i1) - book.start_utc) // HOUR
                    r = rest[i0:i1]
                    imp += r * book.import_kwh[s, hours] / per
                    exp += r * book.export_kwh[s, hours] / per
                return _month_totals(tariff, a + res * i0, res, imp, exp, tum,
                                     export_cap_kwh)

            t = memo.month(key, compute) if memo is not None else compute()
            per_month[s].append(t)
    st = tariff.spec.settlement
    return PeriodProjection(period, scenarios, tuple(tuple(m) for m in per_month),
                            tuple(a + res * i0 for i0, _ in months), st.surplus_rate,
                            measured_fraction=float(hist_cov.mean()),
                            planned_fraction=float(plan_cov.mean()),
                            carries_credit=carries_credit_to_forfeit(
                                st.charges, st.leftover_credit, st.period_months))


def _month_totals(tariff: Tariff, start_utc: int, res: int, imp: np.ndarray, exp: np.ndarray,
                  true_up_month: int, caps: list[float] | None) -> PeriodTotals:
    """One whole billing month billed by the engine, as the period's sums need it."""
    data = IntervalData.regular(start_utc, res, imp, exp, source="projection")
    m = bill(tariff, data, true_up_month=true_up_month, export_cap_kwh=caps).months[0]
    return PeriodTotals(energy_charges=m.energy_charges, nbc=m.nbc, import_kwh=m.import_kwh,
                        credited_export_kwh=m.credited_export_kwh, minimum=m.minimum)


def _resolution(tariff: Tariff, history: IntervalData | None,
                planned: IntervalData | None) -> int:
    """The grid the period is billed on: hours, which bill exactly as the finer intervals
    do whenever the tariff does not net over windows shorter than an hour (prices change
    on the hour; gross imports and exports add up); else the finest interval given."""
    if tariff.netting != "15min":
        return HOUR
    res = 900
    for d in (history, planned):
        if d is not None and len(d):
            res = math.gcd(res, d.interval_s)
    return res


def _on_grid(data: IntervalData | None, a: int, res: int, n: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``data``'s kWh summed onto the grid of ``n`` steps of ``res`` seconds from ``a``
    (coarser intervals split evenly), and the share of each step it covers."""
    imp, exp, cov = np.zeros(n), np.zeros(n), np.zeros(n)
    if data is None or not len(data):
        return imp, exp, cov
    step = data.interval_s
    k = max(1, step // res)  # grid steps per interval (coarser data)
    sub = max(1, res // step)  # intervals per grid step (finer data)
    lo, hi = np.searchsorted(data.start_utc, [a - step, a + n * res])  # starts are sorted
    starts = data.start_utc[lo:hi]
    d_imp, d_exp = data.import_kwh[lo:hi] / k, data.export_kwh[lo:hi] / k
    for j in range(k):
        pos = (starts - a) // res + j
        ok = (pos >= 0) & (pos < n)
        imp += np.bincount(pos[ok], weights=d_imp[ok], minlength=n)
        exp += np.bincount(pos[ok], weights=d_exp[ok], minlength=n)
        cov += np.bincount(pos[ok], minlength=n) / sub
    return imp, exp, np.minimum(cov, 1.0)


def _month_edges(tariff: Tariff, a: int, z: int, res: int) -> list[tuple[int, int]]:
    """[first, end) grid indices of each billing month in [a, z)."""
    edges = [0]
    month = billing_month(tariff, a)
    read_day = tariff.spec.calendar.meter_read_day
    while True:
        month += 1
        t = _read_day_utc(month, tariff.tz, read_day)
        if t >= z:
            break
        edges.append((t - a) // res)
    edges.append((z - a) // res)
    return list(itertools.pairwise(edges))


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        h.update(np.ascontiguousarray(arr).tobytes())
        h.update(b"|")
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# How far a plan may act on a projection


def projection_trust(measured_fraction: float, planned_fraction: float,
                     own_rest_share: float, p_in_credit: float | None = None) -> float:
    """The share of a settlement period whose figures are this home's own: metered, this
    plan's, or — for the unseen rest — the same weeks of the home's own last year
    (``own_rest_share`` of the rest, 0-1). What is left comes from a generic model (clear
    sky × climatological clearness, a typical household), whose errors are this home's
    biases, not noise: a new owner's projection can say "in credit" of a home that owes
    hundreds. The planner acts on the projection only this far
    (:meth:`optimizer.plan.TrueUpContext.hedged`) and otherwise values credits at face value.

    Why that side: a plan that wrongly believes the period ends in credit withholds exports
    worth the full credit (0.3-0.5 $/kWh on PG&E); one that wrongly believes it ends owing
    exports energy whose credit becomes the NSC rate, losing the NBC and the round trip
    (≈ 0.05 $/kWh) — and a home with no history of its own cannot tell which it is.

    Unless the projection is decisive: with ``p_in_credit`` (its scenarios' probability of
    ending in credit) beyond 90/10, the trust grows to 1 at 100/0 — the scenarios' spread is
    wide where the model is generic (load ±40 %, PV ±15 %), so when even its extremes agree,
    a bias of that size would not change the answer. A home with twice the PV it uses is in
    credit whatever the model's errors; hedging it toward "owing" would shuffle energy
    through the battery for credits that are forfeited."""
    rest = max(0.0, 1.0 - measured_fraction - planned_fraction)
    own = measured_fraction + planned_fraction + rest * min(1.0, max(0.0, own_rest_share))
    decisive = 0.0
    if p_in_credit is not None:
        decisive = (abs(2.0 * p_in_credit - 1.0) - 0.8) / 0.2
    return min(1.0, max(0.0, own, decisive))
