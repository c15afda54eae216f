"""Bills and the true-up from interval data, for every scheme in the tariff schema.

The rules live here, one function each; docs/billing-rules.md describes each rule and its
source:

* :func:`decredit_capped_exports` — the NEM-PS monthly total-export cap.
* :func:`net_to_window` — netting imports and exports over the tariff's interval.
* :func:`tiered_cost` — tiered (and flat) rates on a bucket's kWh.
* :func:`nem_month_charges`, :func:`net_billing_month_charges` — a month's energy charges.
* :class:`_Settlement` — carryover, minimums, true-up, NSC and leftover credit.

Units: energies kWh, money $ (the tariff's currency), rates $/kWh. Interval times are UTC
epoch seconds; billing months, seasons and TOU periods come from *local* time in the
tariff's zone. Billing month ``YYYY-MM`` runs from the tariff's meter-read day of that month
to the day before the next month's read day (calendar months when the read day is 1).

Sign conventions: ``energy_charges`` < 0 is a credit. ``billed`` is what the month's
statement asks the customer to pay (negative = a payment to the customer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date

import numpy as np

from optimizer.demand import MonthDemand, monthly_demand
from optimizer.errors import UsageError
from optimizer.intervals import IntervalData
from optimizer.localtime import local_midnight_utc
from optimizer.settlement import (
    PeriodTotals,
    carry_credit,
    closing_month,
    leftover_credit,
    net_surplus_compensation,
    net_surplus_kwh,
    true_up_anchor,
    true_up_charges,
)
from optimizer.tariff import Classified, Tariff

_WINDOW_S = {"15min": 900, "hourly": 3600, "daily": 86400}


# --------------------------------------------------------------------------------------
# Result types


@dataclass
class TrueUp:
    """The settlement that closes a period (PG&E's annual true-up)."""

    month: str
    due: float  # paid at true-up (< 0: paid to the customer); net of NSC and payouts
    surplus_kwh: float  # net surplus kWh of the period (NSC basis)
    surplus_credit: float  # NSC: surplus_kwh × surplus_rate
    forfeited_credit: float  # $ credit left and lost
    charges: float  # at_true_up: max(ΣNBC + max(0, ΣCx), ΣMDC) before the MDC already billed
    minimum_billed: float  # minimum charges billed monthly during the period
    paid_out_credit: float
    rolled_over_credit: float
    annual_minimum_topup: float
    months: int  # months of the period present in the data
    complete: bool  # False: the data ends before the true-up month (a projection)


@dataclass
class MonthStatement:
    """One billing month. kWh and $; see the module docstring for signs."""

    month: str
    days: int
    import_kwh: float  # gross, as the meter's import register counts
    export_kwh: float  # gross, as the meter's export register counts
    credited_export_kwh: float  # exports left after the export cap's de-crediting
    energy_charges: float  # the month's own netted energy charges excl. NBC (< 0: credit)
    credit_applied: float  # monthly mode: $ of carried credit used this month
    nbc: float  # non-bypassable charges on gross imports
    fixed: float
    minimum: float  # minimum charge billed (at_true_up: the MDC; monthly: the top-up)
    baseline_credit: float  # already included in energy_charges (shown for checking)
    export_cap_kwh: float | None
    export_cap_excess_kwh: float
    billed: float  # payable on this month's statement
    credit_balance: float  # $ credit carried after this month (≥ 0)
    accrued_charges: float  # at_true_up: NEM charges accrued in the period so far (ΣCx+ΣNBC)
    kwh_bank: float  # kWh carryover banked after this month (all periods)
    net_kwh_by_period: dict[str, float]  # import − export by TOU period, after the cap
    settlement_period: int  # the true-up month (year × 12 + month) that settles this month
    covered_fraction: float  # share of the month's intervals present in the data
    settlement: TrueUp | None = None  # when every month settles alone (period_months = 1)
    # demand charges (optimizer/demand.py): billed every month, never offset by credit
    demand_kw: dict[str, float] = field(default_factory=dict)  # determinant per key
    demand_charges: float = 0.0  # $ this month
    demand_charges_by_key: dict[str, float] = field(default_factory=dict)  # $ per key


@dataclass
class Bill:
    tariff: str
    months: list[MonthStatement]
    true_ups: list[TrueUp]
    annual_total: float
    notes: list[str] = field(default_factory=list)

    @property
    def true_up(self) -> TrueUp | None:
        """The last settlement, or None when every month settles alone."""
        return self.true_ups[-1] if self.true_ups else None

    def to_json(self) -> dict:
        """The ``bill`` JSON contract (README, "JSON (--json)"), with extra keys."""
        return {
            "tariff": self.tariff,
            "months": [_rounded(asdict(m)) for m in self.months],
            "true_up": _rounded(asdict(self.true_up)) if self.true_up else None,
            "true_ups": [_rounded(asdict(t)) for t in self.true_ups],
            "annual_total": round(self.annual_total, 2),
            "notes": self.notes,
        }


def _rounded(value, key: str = ""):
    """Round floats for JSON: kWh to 4 decimals, $ to cents; recurse into dicts and lists."""
    if isinstance(value, dict):
        return {k: _rounded(v, k if not isinstance(v, float) or key == "" else key)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, key) for v in value]
    if isinstance(value, float):
        return round(value, 4 if key.endswith("kwh") or key.endswith("by_period") else 2)
    return value


# --------------------------------------------------------------------------------------
# Calendar: billing months


@dataclass(frozen=True)
class _Months:
    index: np.ndarray  # per interval: index into labels
    labels: list[tuple[int, int]]  # (year, month) per billing month
    days: np.ndarray  # calendar days in each billing month
    expected: np.ndarray  # intervals a full month has (DST-aware)
    season_days: np.ndarray  # [month, season] days of the month in each season


def _billing_months(tariff: Tariff, c: Classified, interval_s: int) -> _Months:
    f = c.fields
    d = tariff.spec.calendar.meter_read_day
    ym = f.year * 12 + (f.month - 1) - (f.dom < d)
    uniq, index = np.unique(ym, return_inverse=True)
    labels = [(int(u // 12), int(u % 12) + 1) for u in uniq]
    days = np.zeros(len(labels), dtype=np.int64)
    expected = np.zeros(len(labels), dtype=np.int64)
    season_days = np.zeros((len(labels), len(tariff.season_names)))
    for i, (y, m) in enumerate(labels):
        start = date(y, m, d)
        end = date(y + (m == 12), m % 12 + 1, d)
        days[i] = (end - start).days
        span = local_midnight_utc(end.year, end.month, end.day, tariff.tz) - local_midnight_utc(
            start.year, start.month, start.day, tariff.tz
        )
        expected[i] = span // interval_s
        dates = np.arange(np.datetime64(start), np.datetime64(end))
        cal_month = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
        np.add.at(season_days[i], tariff.month_season[cal_month], 1)
    return _Months(index=index, labels=labels, days=days, expected=expected,
                   season_days=season_days)


# --------------------------------------------------------------------------------------
# The rules


def decredit_capped_exports(
    export_kwh: np.ndarray,
    month_index: np.ndarray,
    period: np.ndarray,
    cap_kwh: np.ndarray,
    order: list[int],
    n_periods: int,
) -> tuple[np.ndarray, np.ndarray]:
    """NEM-PS export cap: remove each month's excess exports from credit.

    ``excess[m] = max(0, Σ_m export − cap[m])`` is taken from the month's exports in the
    periods of ``order`` first (peak, then part-peak, then off-peak by default), then from
    any remaining periods in index order. Within a (month, period) the reduction is shared
    pro rata over its intervals.

    Args:
        export_kwh: gross exports per interval, kWh.
        month_index: billing-month index per interval.
        period: TOU period index per interval.
        cap_kwh: cap per billing month, kWh (``inf`` for no cap).
        order: period indices in de-crediting order.
    Returns:
        (credited exports per interval kWh, excess kWh per month).
    """
    n_months = len(cap_kwh)
    key = month_index * n_periods + period
    by_mp = np.bincount(key, weights=export_kwh, minlength=n_months * n_periods).reshape(
        n_months, n_periods
    )
    excess = np.maximum(by_mp.sum(axis=1) - cap_kwh, 0.0)
    excess[~np.isfinite(excess)] = 0.0
    full_order = list(dict.fromkeys(order)) + [p for p in range(n_periods) if p not in order]
    remove = np.zeros_like(by_mp)
    left = excess.copy()
    for p in full_order:
        take = np.minimum(left, by_mp[:, p])
        remove[:, p] = take
        left -= take
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.where(by_mp > 0, 1.0 - remove / by_mp, 1.0)
    return export_kwh * keep.ravel()[key], excess


def net_to_window(
    import_kwh: np.ndarray, export_kwh: np.ndarray, group: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Net imports against exports within each netting group (the tariff's netting interval).

    A group is one netting window inside one TOU period and billing month, so netting never
    moves energy across a price boundary. The group's net import (or export) is shared back
    over its intervals pro rata to their gross import (or export), so later per-interval
    valuation (hourly export values, tiers) still works. ``group=None``: no netting
    (instantaneous: the meter registers as they are).

    Returns:
        (net imports per interval kWh, net exports per interval kWh).
    """
    if group is None:
        return import_kwh, export_kwh
    n = int(group.max()) + 1 if len(group) else 0
    gi = np.bincount(group, weights=import_kwh, minlength=n)
    ge = np.bincount(group, weights=export_kwh, minlength=n)
    net = gi - ge
    with np.errstate(invalid="ignore", divide="ignore"):
        si = np.where(gi > 0, np.maximum(net, 0.0) / gi, 0.0)
        se = np.where(ge > 0, np.maximum(-net, 0.0) / ge, 0.0)
    return import_kwh * si[group], export_kwh * se[group]


def tiered_cost(q: np.ndarray, limits: np.ndarray, rates: np.ndarray, *,
                shared: bool = False, surplus: str = "first") -> np.ndarray:
    """Cost of ``q`` kWh per bucket under cumulative tiers.

    Args:
        q: kWh per bucket (may be negative: a net export under NEM, a surplus credited as
            ``surplus`` says).
        limits: [bucket, tier] cumulative upper limits, kWh (``inf`` for the last tier).
        rates: [bucket, tier] $/kWh.
        shared: False (``tier_basis = "period"``): each bucket fills its own tiers.
            True (``tier_basis = "month"``, URDB's and SAM's reading): the month's total
            use ``U = Σ max(q, 0)`` fills the tiers, and each bucket takes its share
            ``max(q, 0) / U`` of every tier's kWh at its own period's tier rate.
        surplus: how a net export (``q < 0``) is credited (``export.surplus_tiers``):
            ``"first"``, every kWh at the bucket's first-tier rate; ``"fill"`` (NREL SAM's
            rule), the surplus fills the tiers from the first up exactly as use does (its own
            tiers, or with ``shared`` the month's total surplus shared pro rata over the
            buckets), each tier's kWh credited at that tier's rate.
    Returns:
        $ per bucket (< 0: a credit).
    """
    prev = np.concatenate([np.zeros((len(q), 1)), limits[:, :-1]], axis=1)
    with np.errstate(invalid="ignore"):
        width = np.where(np.isinf(prev), 0.0, limits - prev)  # padding tiers after the last

    def filled(x: np.ndarray) -> np.ndarray:
        """[bucket, tier] kWh of ``x`` (>= 0 per bucket) in each tier."""
        if shared:
            total = x.sum()
            share = x / total if total > 0 else np.zeros_like(x)
            return share[:, None] * np.clip(total - prev, 0.0, width)
        return np.clip(x[:, None] - prev, 0.0, width)

    cost = (filled(np.maximum(q, 0.0)) * rates).sum(axis=1)
    if surplus == "fill":
        return cost - (filled(np.maximum(-q, 0.0)) * rates).sum(axis=1)
    return cost + np.minimum(q, 0.0) * rates[:, 0]


# --------------------------------------------------------------------------------------
# The engine


@dataclass
class _Prepared:
    """Everything per month the settlement needs, computed vectorised from intervals."""

    months: _Months
    imp_raw: np.ndarray  # [month] gross imports
    exp_raw: np.ndarray  # [month] gross exports
    exp_credited: np.ndarray  # [month] after the cap
    cap: np.ndarray  # [month] cap kWh (nan = none)
    excess: np.ndarray  # [month] excess kWh
    bucket_imp: np.ndarray  # [month, season, period] net imports after netting
    bucket_exp: np.ndarray  # [month, season, period] net (credited) exports after netting
    export_value: np.ndarray  # [month] $ value of exports (net billing schemes)
    covered: np.ndarray  # [month] share of intervals present
    day_share: np.ndarray  # [month] share of the month's days that per-day quantities get
    demand: list[MonthDemand]  # [month] demand determinants and charges


def _prepare(tariff: Tariff, data: IntervalData, cap_override: list[float] | None,
             allow_gaps: bool, notes: list[str], in_progress: bool = False) -> _Prepared:
    if len(data) == 0:
        raise UsageError("no intervals to bill", where=data.source or "usage",
                         fix="give a file with at least one whole billing month")
    scheme = tariff.spec.export.scheme
    imp, exp = data.import_kwh, data.export_kwh
    if scheme == "buy_all_sell_all":
        if data.load_kwh is None or data.pv_kwh is None:
            raise UsageError("buy_all_sell_all bills all load at retail and all PV at the "
                             "sell rate, so it needs load_kwh and pv_kwh columns",
                             where=data.source or "usage",
                             fix="add load_kwh and pv_kwh columns to the interval CSV")
        imp, exp = data.load_kwh, data.pv_kwh
    c = tariff.classify(data.start_utc)
    months = _billing_months(tariff, c, data.interval_s)
    M, S, P = len(months.labels), len(tariff.season_names), len(tariff.period_names)
    mi = months.index

    counts = np.bincount(mi, minlength=M)
    covered = counts / months.expected
    short = [i for i in range(M) if counts[i] < months.expected[i]]
    if short:
        desc = ", ".join(
            f"{y:04d}-{m:02d} ({months.expected[i] - counts[i]} of {months.expected[i]} "
            f"intervals missing)" for i, (y, m) in ((i, months.labels[i]) for i in short[:4])
        )
        hint = _zone_shift_hint(short, counts, months, data, tariff)
        if not allow_gaps:
            raise UsageError(f"the data does not cover whole billing months: {desc}{hint}",
                             where=data.source or "usage",
                             fix="give whole months (meter-read day "
                             f"{tariff.spec.calendar.meter_read_day}), trim the file, or pass "
                             "--allow-gaps to bill the months partly (charges then cover "
                             "only the metered intervals)")
        notes.append(f"billed partial months (missing data not billed): {desc}")

    cap = np.full(M, np.nan)
    if tariff.spec.export_cap is not None and scheme == "nem":
        caps = cap_override or [tariff.export_cap_kwh(m) for m in range(1, 13)]
        cap = np.array([caps[m - 1] for _, m in months.labels], dtype=float)
        # a partly covered month gets a pro-rated cap; the month in progress keeps its
        # whole cap (exports so far count against all of it)
        share = np.minimum(covered, 1.0)
        if in_progress:
            share[-1] = 1.0
        cap = cap * share
        order = tariff.decredit_order()
        exp_cred, excess = decredit_capped_exports(
            exp, mi, c.period, np.where(np.isnan(cap), np.inf, cap), order, P
        )
    else:
        exp_cred, excess = exp, np.zeros(M)

    group = _netting_groups(tariff, c, mi, data, notes)
    imp_n, exp_n = net_to_window(imp, exp_cred, group)

    bkey = (mi * S + c.season) * P + c.period
    bucket_imp = np.bincount(bkey, weights=imp_n, minlength=M * S * P).reshape(M, S, P)
    bucket_exp = np.bincount(bkey, weights=exp_n, minlength=M * S * P).reshape(M, S, P)
    # per-day allowances (baseline, per-day tiers) follow the covered share, except in the
    # month in progress (history so far: the whole month's allowance is ahead of it)
    day_share = np.minimum(covered, 1.0)
    if in_progress:
        day_share[-1] = 1.0
    export_value = np.zeros(M)
    if scheme in ("net_billing", "buy_all_sell_all"):
        export_value = np.bincount(mi, weights=exp_n * tariff.sell_rate(c), minlength=M)
    return _Prepared(
        months=months,
        imp_raw=np.bincount(mi, weights=imp, minlength=M),
        exp_raw=np.bincount(mi, weights=exp, minlength=M),
        exp_credited=np.bincount(mi, weights=exp_cred, minlength=M),
        cap=cap,
        excess=excess,
        bucket_imp=bucket_imp,
        bucket_exp=bucket_exp,
        export_value=export_value,
        covered=covered,
        day_share=day_share,
        demand=monthly_demand(tariff, c, mi, months.labels, data.start_utc, data.interval_s,
                              imp, notes),
    )


def _zone_shift_hint(short: list[int], counts: np.ndarray, months: _Months,
                     data: IntervalData, tariff: Tariff) -> str:
    """When only the first and last months are partial and the last holds exactly what the
    first misses, the data's year was cut in another time zone: say so."""
    last = len(months.labels) - 1
    if short != [0, last] or last == 0:
        return ""
    missing = int(months.expected[0] - counts[0])
    if missing != int(counts[last]):
        return ""
    hours = missing * data.interval_s / 3600
    return (f". The first month misses exactly what the last month has ({hours:g} h): the "
            f"data looks cut at midnight in another time zone than the tariff's "
            f"({tariff.tz}); check the file's UTC offsets or the tariff's timezone")


def _netting_groups(tariff: Tariff, c: Classified, mi: np.ndarray, data: IntervalData,
                    notes: list[str]) -> np.ndarray | None:
    netting = tariff.netting
    if tariff.spec.export.scheme == "none" or netting == "instantaneous":
        return None
    S, P = len(tariff.season_names), len(tariff.period_names)
    if netting == "billing_period":
        window = mi
    else:
        w = _WINDOW_S[netting]
        if w <= data.interval_s:
            if w < data.interval_s:
                notes.append(f"the tariff nets every {netting} but the data's interval is "
                             f"{data.interval_s // 60} min: billed at the data's resolution")
            return None
        if netting == "daily":
            window = c.fields.day
        else:
            # the UTC start of each local window: the two 01:00 hours of a DST fall-back
            # are different windows (local seconds alone would merge them)
            window = data.start_utc - (c.fields.local_s % w)
    key = (window.astype(np.int64) * S + c.season) * P + c.period
    _, group = np.unique(key, return_inverse=True)
    return group


def _tier_tables(tariff: Tariff, months: _Months,
                 day_share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tier limits and rates per [month, season, period, tier]; per-day limits × days."""
    lim = np.broadcast_to(tariff.tier_limits, (len(months.labels), *tariff.tier_limits.shape))
    lim = lim.copy()
    per_day = tariff.tier_per_day
    if per_day.any():
        days = (months.season_days * day_share[:, None])[:, :, None, None]  # [m, s, 1, 1]
        scale = per_day[None, :, :, None] & np.isfinite(lim)  # never inf × 0
        lim = np.where(scale, np.where(np.isfinite(lim), lim, 0.0) * days, lim)
    rates = np.broadcast_to(tariff.tier_rates, lim.shape)
    return lim, rates


class _Settlement:
    """Walks billing months in order: carryover, minimums, true-ups."""

    def __init__(self, tariff: Tariff, prep: _Prepared, true_up_month: int) -> None:
        self.t = tariff
        self.p = prep
        self.true_up_month = true_up_month
        # the absolute month (year × 12 + month) of one true-up: the tariff's first_true_up,
        # else the first true-up month on or after the data's first billing month
        y0, m0 = prep.months.labels[0]
        self.anchor = true_up_anchor(y0 * 12 + m0, true_up_month,
                                     tariff.spec.settlement.first_true_up)
        self.lim, self.rates = _tier_tables(tariff, prep.months, prep.day_share)
        self.nbc = tariff.spec.charges.nbc_per_kwh
        self.shared = tariff.spec.tier_basis == "month"

    def period_of(self, y: int, m: int) -> int:
        """The settlement period holding billing month (y, m), named by the absolute month
        of the true-up that settles it."""
        return closing_month(y * 12 + m, self.anchor, self.t.spec.settlement.period_months)

    def energy_charges(self, i: int, bank: np.ndarray) -> _MonthEnergy:
        """Month ``i``'s own energy charges (before carried credit) and the kWh bank."""
        t, p = self.t, self.p
        scheme = t.spec.export.scheme
        imp, exp = p.bucket_imp[i], p.bucket_exp[i]  # [season, period] kWh after netting
        lim = self.lim[i].reshape(-1, self.lim.shape[-1])
        # the NBC part of each all-in rate is billed on gross imports instead
        rates = (self.rates[i] - self.nbc).reshape(-1, self.rates.shape[-1])
        if scheme == "nem":
            q = imp - exp
            if t.spec.settlement.carryover == "kwh":
                targets = None
                if i > 0:  # the bank moves on from the previous billing month's periods
                    targets = t.kwh_bank_targets(p.months.labels[i - 1][1],
                                                 p.months.labels[i][1])
                q, bank = _apply_kwh_bank(q, bank, targets)
            charges = float(tiered_cost(q.ravel(), lim, rates, shared=self.shared,
                                        surplus=t.spec.export.surplus_tiers).sum())
            if t.spec.export.credit == "import":
                # exports earn the full rate: each credited kWh also cancels its NBC
                charges -= self.nbc * float(p.exp_credited[i])
            net_kwh = float((imp - exp).sum())
            excess_rate = t.spec.settlement.monthly_excess_rate
            if excess_rate > 0:
                # Nebraska-type: retail offsets only up to the month's usage; the
                # month's net excess kWh earns the avoided-cost rate.
                charges = net_kwh * excess_rate if net_kwh < 0 else max(charges, 0.0)
            baseline = self._baseline_credit(i, max(net_kwh, 0.0))
            purchases = max(charges, 0.0)
        else:
            purchases = float(tiered_cost(imp.ravel(), lim, rates, shared=self.shared).sum())
            baseline = self._baseline_credit(i, float(imp.sum()))
            charges = purchases - float(p.export_value[i])
        return _MonthEnergy(charges=charges - baseline, purchases=purchases - baseline,
                            baseline=baseline, bank=bank)

    def _baseline_credit(self, i: int, usage_kwh: float) -> float:
        """Baseline credit ($) on the month's usage up to its allowance (E-TOU-C style)."""
        b = self.t.spec.baseline
        if b is None:
            return 0.0
        allowance = sum(
            b.allowance_kwh_per_day[s] * self.p.months.season_days[i, si] * self.p.day_share[i]
            for si, s in enumerate(self.t.season_names)
        )
        return float(b.credit_per_kwh * min(usage_kwh, allowance))

    def run(self) -> tuple[list[MonthStatement], list[TrueUp]]:
        t, p = self.t, self.p
        st, ch = t.spec.settlement, t.spec.charges
        at_true_up = st.charges == "at_true_up"
        settles_monthly = st.period_months == 1
        statements: list[MonthStatement] = []
        true_ups: list[TrueUp] = []
        credit = 0.0  # $ credit carried (≥ 0)
        bank = np.zeros(len(t.period_names))  # kWh carryover per period
        acc = _PeriodAccumulator()
        # the annual minimum's basis: Σ max(0, energy + NBC + fixed) (monthly charges) or
        # Σ fixed + true-up charges (at_true_up), over the months since the last anniversary
        annual_basis = 0.0
        annual_months = 0
        labels = p.months.labels
        for i, (y, m) in enumerate(labels):
            pid = self.period_of(y, m)
            last = i == len(labels) - 1
            closes = last or self.period_of(*labels[i + 1]) != pid
            days = int(p.months.days[i])
            cov = float(min(p.covered[i], 1.0))
            fixed = (ch.fixed_per_month + ch.fixed_per_day * days) * cov
            min_month = (ch.minimum_per_month + ch.minimum_per_day * days) * cov
            nbc = self.nbc * float(p.imp_raw[i])
            dem = p.demand[i]
            demand = dem.total
            me = self.energy_charges(i, bank)
            bank = me.bank
            if at_true_up:
                # PG&E NEM2: only fixed charges and the minimum (MDC) are billed monthly;
                # NEM charges and NBCs accrue to the true-up.
                minimum = min_month
                billed = fixed + demand + minimum
                acc.cx += me.charges
                acc.nbc += nbc
                credit = leftover_credit(acc.cx + acc.carried_in)
                applied = 0.0
                annual_basis += fixed + demand
            else:
                applied = min(credit, max(me.charges, 0.0)) if credit else 0.0
                if (me.charges < credit and closes and settles_monthly
                        and st.leftover_credit == "pay_out"):
                    ec, credit = me.charges - credit, 0.0  # paid out on this statement
                else:
                    ec, credit = carry_credit(credit, me.charges)
                # SAM's model: the minimum tops up max(0, energy + fixed) and is never
                # refunded; buy-all/sell-all compares the load meter's purchases only.
                basis = me.purchases if t.spec.export.scheme == "buy_all_sell_all" else ec
                pre = max(0.0, basis + nbc + fixed + demand)
                minimum = max(0.0, min_month - pre)
                billed = ec + nbc + fixed + demand + minimum
                annual_basis += pre
            annual_months += 1
            acc.add(p.imp_raw[i], p.exp_credited[i], billed, minimum, fixed)
            net_by_period = (p.bucket_imp[i] - p.bucket_exp[i]).sum(axis=0)
            stmt = MonthStatement(
                month=f"{y:04d}-{m:02d}", days=days,
                import_kwh=float(p.imp_raw[i]), export_kwh=float(p.exp_raw[i]),
                credited_export_kwh=float(p.exp_credited[i]),
                energy_charges=me.charges, credit_applied=applied, nbc=nbc, fixed=fixed,
                minimum=minimum, baseline_credit=me.baseline,
                export_cap_kwh=None if np.isnan(p.cap[i]) else float(p.cap[i]),
                export_cap_excess_kwh=float(p.excess[i]),
                billed=billed, credit_balance=credit,
                accrued_charges=(acc.cx + acc.nbc) if at_true_up else 0.0,
                kwh_bank=float(bank.sum()),
                net_kwh_by_period={n: float(v) for n, v in zip(t.period_names, net_by_period,
                                                              strict=True)},
                settlement_period=pid, covered_fraction=cov,
                demand_kw=dict(dem.kw), demand_charges=demand,
                demand_charges_by_key=dict(dem.charges),
            )
            statements.append(stmt)
            tu = None
            if closes:
                complete = pid == y * 12 + m  # the data reaches the true-up month
                tu, credit, bank = self._close(acc, credit, bank, y, m, complete)
                if complete:
                    stmt.credit_balance = credit  # after forfeiture / payout
                if at_true_up:
                    annual_basis += tu.charges
            # the annual minimum tops up each anniversary (the true-up month) and the
            # data's end, pro rata to the months seen, whenever settlement periods close
            if ch.annual_minimum > 0 and (m == self.true_up_month or last):
                topup = max(0.0, ch.annual_minimum * min(annual_months, 12) / 12 - annual_basis)
                annual_basis, annual_months = 0.0, 0
                if tu is not None and not settles_monthly:
                    tu.annual_minimum_topup = topup
                    tu.due += topup
                else:
                    stmt.minimum += topup
                    stmt.billed += topup
                    if tu is not None:
                        tu.annual_minimum_topup = topup
            if tu is None:
                continue
            if settles_monthly:
                # every month settles alone: the settlement lands on the month's statement
                stmt.billed += tu.due
                stmt.settlement = tu
            else:
                true_ups.append(tu)
            # roll_over: at_true_up carries the credit into the next period's ΣCx;
            # monthly mode carries it in `credit` itself
            acc = _PeriodAccumulator(carried_in=-credit if at_true_up else 0.0)
        return statements, true_ups

    def _close(self, acc: _PeriodAccumulator, credit: float, bank: np.ndarray, y: int,
               m: int, complete: bool) -> tuple[TrueUp, float, np.ndarray]:
        """Settle a period: charges due, NSC, leftover credit (forfeit/pay out/roll over),
        by the rules of :mod:`optimizer.settlement` (PG&E NEM2 when charges = at_true_up)."""
        st = self.t.spec.settlement
        charges = due = 0.0
        if st.charges == "at_true_up":
            totals = acc.totals()
            charges = true_up_charges(totals, st.true_up_rule)
            due = charges - totals.minimum
            credit = leftover_credit(totals.energy_charges)
        if st.carryover == "kwh":
            surplus_kwh = float(bank.sum())  # banked kWh left at the anniversary
        else:
            surplus_kwh = net_surplus_kwh(acc.exp, acc.imp)
        surplus_credit = net_surplus_compensation(surplus_kwh, st.surplus_rate)
        forfeited = paid_out = rolled = 0.0
        if st.leftover_credit == "forfeit":
            forfeited, credit = credit, 0.0
        elif st.leftover_credit == "pay_out":
            paid_out, credit = credit, 0.0
        else:
            rolled = credit
        if st.carryover == "kwh":
            if st.leftover_credit == "roll_over":
                surplus_credit = 0.0  # the kWh stay banked instead of being cashed out
            else:
                bank = np.zeros_like(bank)
        due -= surplus_credit + paid_out
        tu = TrueUp(
            month=f"{y:04d}-{m:02d}", due=due, surplus_kwh=surplus_kwh,
            surplus_credit=surplus_credit, forfeited_credit=forfeited, charges=charges,
            minimum_billed=acc.minimum, paid_out_credit=paid_out, rolled_over_credit=rolled,
            annual_minimum_topup=0.0, months=acc.months, complete=complete,
        )
        return tu, credit, bank


@dataclass
class _MonthEnergy:
    charges: float  # $ the month's own energy charges excl. NBC (< 0: credit)
    purchases: float  # $ the import side alone (the load meter under buy-all/sell-all)
    baseline: float  # $ baseline credit included in charges
    bank: np.ndarray  # kWh banked per period after the month


def _apply_kwh_bank(q: np.ndarray, bank: np.ndarray,
                    targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """kWh carryover by TOU period (kWh banking; like SAM's NEM option 0).

    First the bank carried in from the previous month moves to the periods it pairs with in
    this month (``settlement.kwh_bank_pairing``; :meth:`Tariff.kwh_bank_targets`). Then a
    period whose month nets to an export banks that many kWh (and is billed nothing); a
    period that nets to an import is first offset by the kWh banked for that period.

    Args:
        q: [season, period] net kWh of the month (import − credited export).
        bank: [period] banked kWh.
        targets: [period] the period whose bank each period's banked kWh join at the start
            of this month (None: each keeps its own).
    Returns:
        (the kWh left to bill [season, period], the new bank [period]).
    """
    q = q.copy()
    if targets is None:
        bank = bank.copy()
    else:
        bank = np.bincount(targets, weights=bank, minlength=len(bank)).astype(float)
    total = q.sum(axis=0)
    excess = total < 0
    bank[excess] += -total[excess]
    q[:, excess] = 0.0
    for s in range(q.shape[0]):
        use = np.where(excess, 0.0, np.minimum(bank, np.maximum(q[s], 0.0)))
        q[s] -= use
        bank -= use
    return q, bank


@dataclass
class _PeriodAccumulator:
    carried_in: float = 0.0  # at_true_up: $ charges (+) or credit (−) rolled in
    pid: int = 0
    months: int = 0
    cx: float = 0.0
    nbc: float = 0.0
    imp: float = 0.0
    exp: float = 0.0
    billed: float = 0.0
    minimum: float = 0.0
    fixed: float = 0.0

    def totals(self) -> PeriodTotals:
        """The period's sums for the settlement rules (credit rolled in counts as ΣCx)."""
        return PeriodTotals(energy_charges=self.cx + self.carried_in, nbc=self.nbc,
                            import_kwh=self.imp, credited_export_kwh=self.exp,
                            minimum=self.minimum)

    def add(self, imp: float, exp: float, billed: float, minimum: float, fixed: float) -> None:
        self.months += 1
        self.imp += float(imp)
        self.exp += float(exp)
        self.billed += billed
        self.minimum += minimum
        self.fixed += fixed


def bill(
    tariff: Tariff,
    data: IntervalData,
    *,
    true_up_month: int | None = None,
    export_cap_kwh: list[float] | None = None,
    allow_gaps: bool = False,
    in_progress: bool = False,
) -> Bill:
    """Bill interval data under a tariff: monthly statements and the period settlements.

    Args:
        tariff: the tariff.
        data: gross import/export kWh per interval (UTC starts).
        true_up_month: overrides ``settlement.true_up_month`` (it is per customer).
        export_cap_kwh: 12 monthly caps (kWh, January first), overriding the tariff's
            (needed when the tariff says ``estimate = "pv"``).
        allow_gaps: bill months that the data covers only partly (fixed and minimum
            charges and the cap are pro-rated to the covered share) instead of failing.
        in_progress: the last month is the month in progress (history so far): its export
            cap is not pro-rated.
    """
    notes = list(data.notes)
    prep = _prepare(tariff, data, export_cap_kwh, allow_gaps, notes, in_progress)
    tum = true_up_month or tariff.spec.settlement.true_up_month
    statements, true_ups = _Settlement(tariff, prep, tum).run()
    for tu in true_ups:
        if not tu.complete:
            notes.append(f"the data ends before the true-up month: the settlement shown for "
                         f"{tu.month} is a projection as if trued-up then")
        elif tu.months < tariff.spec.settlement.period_months:
            notes.append(f"the settlement period ending {tu.month} has only {tu.months} of "
                         f"{tariff.spec.settlement.period_months} months in the data")
    total = sum(s.billed for s in statements) + sum(t.due for t in true_ups)
    if not np.isfinite(total) or any(not np.isfinite(s.energy_charges) for s in statements):
        # never print a wrong bill: a non-finite figure is a bug in the engine or the tariff
        raise ArithmeticError(f"billing {data.source or 'the data'} under {tariff.id} gave a "
                              "non-finite amount; please report it with the tariff file")
    return Bill(tariff=tariff.id, months=statements, true_ups=true_ups, annual_total=total,
                notes=notes)


def load_only(data: IntervalData) -> IntervalData:
    """The same home without solar or battery: imports = load, no exports (the baseline of
    the savings; docs/billing-rules.md, 'Savings: cost avoidance')."""
    if data.load_kwh is None:
        raise UsageError("savings need the home's load (a load_kwh column)",
                         where=data.source or "usage", fix="add a load_kwh column")
    return IntervalData(start_utc=data.start_utc, interval_s=data.interval_s,
                        import_kwh=data.load_kwh, export_kwh=np.zeros(len(data)),
                        load_kwh=data.load_kwh, pv_kwh=np.zeros(len(data)),
                        source=data.source)



@dataclass(frozen=True)
class BillingState:
    """Month-to-date and period-to-date totals the optimizer plans against.

    kWh and $; ``as_of_utc`` is the end of the last interval billed (UTC epoch seconds).
    The month figures cover the billing month in progress; the period figures the
    settlement period in progress (since the last true-up).
    """

    as_of_utc: int
    month: str
    month_import_kwh: float
    month_export_kwh: float  # gross: what counts against the NEM-PS cap
    month_net_kwh_by_period: dict[str, float]
    export_cap_kwh: float | None  # this month's full cap (not pro-rated)
    export_cap_used_kwh: float
    export_cap_remaining_kwh: float | None
    period_months: int  # billing months of the period so far, this one included
    true_up_month: int  # calendar month that closes the period
    period_import_kwh: float
    period_export_kwh: float  # credited exports
    period_energy_charges: float  # ΣCx so far ($, < 0 credit)
    period_nbc: float
    period_minimum_billed: float
    period_billed: float
    credit_balance: float  # $ of credit carried now
    accrued_charges: float  # at_true_up: ΣCx + ΣNBC so far
    kwh_bank: float
    # demand charges: this month's billing demand so far per key ("flat", TOU periods), kW
    # (the flat one at least its ratchet): a plan's peaks below these cost nothing more
    month_demand_kw: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return _rounded(asdict(self))


def billing_state(
    tariff: Tariff,
    data: IntervalData,
    *,
    true_up_month: int | None = None,
    export_cap_kwh: list[float] | None = None,
) -> BillingState:
    """The billing state at the end of ``data`` (history so far; months may be partial)."""
    b = bill(tariff, data, true_up_month=true_up_month, export_cap_kwh=export_cap_kwh,
             allow_gaps=True, in_progress=True)
    last = b.months[-1]
    in_period = [m for m in b.months if m.settlement_period == last.settlement_period]
    mo = int(last.month[5:])
    cap = None
    if tariff.spec.export_cap is not None and tariff.spec.export.scheme == "nem":
        cap = (export_cap_kwh[mo - 1] if export_cap_kwh else tariff.export_cap_kwh(mo))
    return BillingState(
        as_of_utc=data.end_utc,
        month=last.month,
        month_import_kwh=last.import_kwh,
        month_export_kwh=last.export_kwh,
        month_net_kwh_by_period=dict(last.net_kwh_by_period),
        export_cap_kwh=cap,
        export_cap_used_kwh=last.export_kwh,
        export_cap_remaining_kwh=None if cap is None else max(0.0, cap - last.export_kwh),
        period_months=len(in_period),
        true_up_month=true_up_month or tariff.spec.settlement.true_up_month,
        period_import_kwh=sum(m.import_kwh for m in in_period),
        period_export_kwh=sum(m.credited_export_kwh for m in in_period),
        period_energy_charges=sum(m.energy_charges for m in in_period),
        period_nbc=sum(m.nbc for m in in_period),
        period_minimum_billed=sum(m.minimum for m in in_period),
        period_billed=sum(m.billed for m in in_period),
        credit_balance=last.credit_balance,
        accrued_charges=last.accrued_charges,
        kwh_bank=last.kwh_bank,
        month_demand_kw=dict(last.demand_kw),
    )
