"""NREL SAM ``Utilityrate5`` (PySAM) as a test oracle for optimizer/billing.py.

Adapted from the team's wrapper in the SAM research notes (FINDINGS.md there; the rules it
relies on are summarised in tests/test_sam_crosscheck.py). It translates one of *our* tariffs
into SAM's inputs, so both engines see the same rates:

* every reachable (season, TOU period) pair of the tariff becomes one SAM period (1, 2, ...);
  the weekday and weekend 12 × 24 schedules come from ``Tariff.period_table``;
* ``ur_ec_tou_mat`` has one row ``[period, tier, max, units, buy, sell]`` per tier of each
  period: a flat rate is one row ``[period, 1, 1e38, 0, buy, sell]``; tiered import rates give
  one row per tier, ``up_to_kwh`` limits as kWh/month (units 0) and ``up_to_kwh_per_day``
  limits as kWh/day (units 2, SAM multiplies them by the month's days, as ours does); the last
  tier's max is always 1e38 with units 0 (SAM needs it: a finite last tier gives garbage).
  sell = ``export.flat_rate`` or ``export.sell_rates`` (the same in every tier), or 0 for NEM
  (use ``sell_eq_buy=1`` for retail-rate credits: SAM then credits each tier's buy rate);
* ``charges.fixed_per_month``, ``minimum_per_month`` and ``annual_minimum`` become
  ``ur_monthly_fixed_charge``, ``ur_monthly_min_charge`` and ``ur_annual_min_charge``.

Only tariffs inside SAM's model are accepted (no NBC, baseline, per-day charges, export cap,
holidays or meter-read day other than 1; time zone UTC so the data's year can be a SAM year:
365 days starting on a Monday, e.g. 2018). Tiered import rates need ``tier_basis = "month"``
(SAM fills the tiers with the month's total use, it has no per-period tiers) and, as SAM
requires, every period that occurs in a month must have the same tier limits in kWh for that
month (per-day limits compared after × the month's days). What SAM then bills equals our
``tier_basis = "month"`` (``tiered_cost(..., shared=True)``) under options 0/1 for months
without surplus in any period; with surplus only when ours has ``export.surplus_tiers =
"fill"`` (SAM fills the tiers with the month's total surplus too, pro rata over the periods,
and credits the tiers' sell rates; ours by default credits a net export at the first tier's
rate); options 2-4 fill the tiers chronologically, not pro rata.

SAM's ``load`` and ``gen`` are kW averaged over each step; :func:`sam_bill` takes kWh per step
and multiplies by the steps per hour. SAM nets ``gen − load`` per step (no hourly netting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PySAM.Utilityrate5 as ur5

from optimizer.tariff import WEEKDAY, WEEKEND, Tariff

# ur_metering_option
NEM_KWH = 0  # NEM, kWh surplus rolled over per TOU period, year-end kWh at ur_nm_yearend_sell_rate
NEM_DOLLARS = 1  # NEM, $ credits, leftover paid at face value in ur_nm_credit_month
NET_BILLING = 2  # net billing, every step settled alone, no carryover
NET_BILLING_CARRY = 3  # net billing, $ credits carried, leftover paid in ur_nm_credit_month
BUY_ALL_SELL_ALL = 4  # two meters: all load bought, all generation sold

_LAST_TIER_MAX = 1e38
# ur_ec_tou_mat units
_KWH_PER_MONTH = 0
_KWH_PER_DAY = 2
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # SAM's months (no leap day)


@dataclass(frozen=True)
class SamRates:
    weekday: list[list[int]]  # 12 × 24 SAM period numbers
    weekend: list[list[int]]
    tou_mat: list[list[float]]  # [period, tier, max, units, buy, sell]


def _check_comparable(t: Tariff) -> None:
    s = t.spec
    problems = []
    if s.timezone != "UTC":
        problems.append("timezone must be UTC (SAM has no time zone)")
    if s.calendar.holidays != "none":
        problems.append("SAM has no holidays")
    if s.calendar.meter_read_day != 1:
        problems.append("SAM bills calendar months")
    if (t.tiered or t.tier_per_day.any()) and s.tier_basis != "month":
        problems.append('SAM fills tiers with the month\'s total use: tiered rates need '
                        'tier_basis = "month"')
    if s.baseline is not None or s.export_cap is not None:
        problems.append("SAM has no baseline credit and no NEM-PS cap")
    ch = s.charges
    if ch.nbc_per_kwh or ch.fixed_per_day or ch.minimum_per_day:
        problems.append("SAM has no NBC and no per-day charges")
    if s.export.rates_csv is not None:
        problems.append("hourly export tables are not translated")
    if problems:
        raise ValueError(f"tariff {t.id} is outside SAM's model: " + "; ".join(problems))


def _tiers(t: Tariff, si: int, pi: int) -> list[tuple[float, int, float]]:
    """``(max, units, buy)`` per tier of one (season, period); the last max is 1e38."""
    lim, rate = t.tier_limits[si, pi], t.tier_rates[si, pi]
    n = int(np.isfinite(lim).sum()) + 1  # tiers after the last finite limit are padding
    units = _KWH_PER_DAY if t.tier_per_day[si, pi] else _KWH_PER_MONTH
    return [(float(lim[k]), units, float(rate[k])) for k in range(n - 1)] + [
        (_LAST_TIER_MAX, _KWH_PER_MONTH, float(rate[n - 1]))]


def _check_tiers_per_month(t: Tariff, ids: dict[tuple[int, int], int],
                           weekday: list[list[int]], weekend: list[list[int]]) -> None:
    """SAM: every period occurring in a month has the same tier maxima (kWh that month)."""
    bucket = {k: sp for sp, k in ids.items()}
    for m in range(12):
        seen: dict[tuple[float, ...], int] = {}
        for k in sorted(set(weekday[m]) | set(weekend[m])):
            maxima = tuple(x * _DAYS[m] if u == _KWH_PER_DAY else x
                           for x, u, _ in _tiers(t, *bucket[k]))
            seen.setdefault(maxima, k)
        if len(seen) > 1:
            desc = "; ".join(f"SAM period {k}: {list(v)}" for v, k in seen.items())
            raise ValueError(f"tariff {t.id} is outside SAM's model: SAM needs the same tier "
                             f"limits in every period of a month, month {m + 1} has {desc}")


def sam_rates(t: Tariff) -> SamRates:
    """SAM schedules and rate matrix for a tariff (flat or tiered import rates)."""
    _check_comparable(t)
    S, P = t.reachable.shape
    ids = {}  # (season, period) -> SAM period number
    for si in range(S):
        for pi in range(P):
            if t.reachable[si, pi]:
                ids[si, pi] = len(ids) + 1

    def schedule(daytype: int) -> list[list[int]]:
        return [[ids[int(t.month_season[m]), int(t.period_table[m - 1, daytype, h])]
                 for h in range(24)] for m in range(1, 13)]

    weekday, weekend = schedule(WEEKDAY), schedule(WEEKEND)
    _check_tiers_per_month(t, ids, weekday, weekend)
    e = t.spec.export
    rows = []
    for (si, pi), k in ids.items():
        if e.flat_rate is not None:
            sell = float(e.flat_rate)
        elif t.sell_matrix is not None:
            sell = float(t.sell_matrix[si, pi])
        else:
            sell = 0.0
        for tier, (mx, units, buy) in enumerate(_tiers(t, si, pi), start=1):
            rows.append([k, tier, mx, units, buy, sell])
    return SamRates(weekday=weekday, weekend=weekend, tou_mat=rows)


def sam_demand(t: Tariff) -> dict:
    """SAM's demand-charge inputs for ``t``'s ``[demand]``: ``ur_dc_flat_mat`` rows
    ``[month 0-11, tier, max kW, $/kW]`` (each month its flat rate, else 0);
    ``ur_dc_tou_mat`` rows ``[period, tier, max kW, $/kW]`` with ``ur_dc_sched_*`` on SAM
    demand periods numbered per (season, demand period) (each its TOU demand rate, else 0);
    the last tier's max 1e38. SAM reads demand on each step's average kW: only a window
    equal to the data's step is comparable. Ratchets are not translated."""
    d = t.spec.demand
    if d is None:
        return {"ur_dc_enable": 0}
    if d.ratchet_percent:
        raise ValueError("demand ratchets are not translated to SAM's billing demand")

    def rows(lead: int, tiers) -> list[list[float]]:
        return [[lead, k, _LAST_TIER_MAX if lim == float("inf") else lim, rate]
                for k, (lim, rate) in enumerate(tiers, start=1)]

    flat = []
    for m in range(1, 13):
        flat += rows(m - 1, t.demand_flat_by_month[m - 1] or [(float("inf"), 0.0)])
    ids: dict[tuple[int, int], int] = {}

    def schedule(daytype: int) -> list[list[int]]:
        out = []
        for m in range(1, 13):
            row = []
            for h in range(24):
                key = (int(t.month_season[m]), int(t.demand_period_table[m - 1, daytype, h]))
                row.append(ids.setdefault(key, len(ids) + 1))
            out.append(row)
        return out

    weekday, weekend = schedule(WEEKDAY), schedule(WEEKEND)
    tou = []
    for (si, pi), k in ids.items():
        key = (t.season_names[si], t.demand_period_names[pi])
        tou += rows(k, t.demand_tiers.get(key, [(float("inf"), 0.0)]))
    return {"ur_dc_enable": 1, "ur_dc_flat_mat": flat, "ur_dc_tou_mat": tou,
            "ur_dc_sched_weekday": weekday, "ur_dc_sched_weekend": weekend}


@dataclass(frozen=True)
class SamBill:
    """Year-1 monthly results (index 0 = January), $."""

    bill: np.ndarray  # utility_bill_w_sys_ym: EC + fixed + minimum − true-up payout
    energy_charge: np.ndarray  # charge_w_sys_ec_ym (after credits)
    fixed: np.ndarray
    minimum: np.ndarray  # monthly top-ups, + the annual top-up in December
    true_up_credits: np.ndarray  # year-end payout in ur_nm_credit_month
    nm_dollars_applied: np.ndarray  # option 1: $ credits used
    net_billing_credits: np.ndarray  # option 2: $ earned; option 3: $ applied
    two_meter_sales: np.ndarray  # option 4
    bill_without_system: np.ndarray  # utility_bill_wo_sys_ym: the load alone, same rates
    annual: float  # utility_bill_w_sys_year1
    demand_flat: np.ndarray  # charge_w_sys_dc_fixed_ym: flat demand charges
    demand_tou: np.ndarray  # charge_w_sys_dc_tou_ym: TOU demand charges


def sam_bill(t: Tariff, load_kwh: np.ndarray, pv_kwh: np.ndarray, steps_per_hour: int, *,
             metering_option: int, sell_eq_buy: int = 0, nm_credit_month: int = 11,
             nb_apply_credit_current_month: int = 0) -> SamBill:
    """Run Utilityrate5 for one year of ``load_kwh``/``pv_kwh`` (kWh per step) under ``t``.

    ``nm_credit_month`` is SAM's true-up month, 0 = January ... 11 = December.
    """
    n = 8760 * steps_per_hour
    load = np.asarray(load_kwh, dtype=float)
    gen = np.asarray(pv_kwh, dtype=float)
    if load.size != n or gen.size != n:
        raise ValueError(f"SAM needs {n} steps, got load={load.size} gen={gen.size}")
    r = sam_rates(t)
    ch = t.spec.charges
    m = ur5.new()
    inputs = {
        "analysis_period": 1,
        "system_use_lifetime_output": 0,
        "inflation_rate": 0.0,
        "degradation": [0.0],
        "load_escalation": [0.0],
        "rate_escalation": [0.0],
        # kW averaged over the step
        "gen": (gen * steps_per_hour).tolist(),
        "load": (load * steps_per_hour).tolist(),
        "en_electricity_rates": 1,
        "ur_metering_option": metering_option,
        "ur_nm_credit_month": nm_credit_month,
        "ur_nm_credit_rollover": 0,
        "ur_nm_yearend_sell_rate": 0.0,
        "ur_nb_credit_expire": 0,
        "ur_nb_apply_credit_current_month": nb_apply_credit_current_month,
        "ur_sell_eq_buy": sell_eq_buy,
        "ur_monthly_fixed_charge": float(ch.fixed_per_month),
        "ur_monthly_min_charge": float(ch.minimum_per_month),
        "ur_annual_min_charge": float(ch.annual_minimum),
        "ur_ec_sched_weekday": r.weekday,
        "ur_ec_sched_weekend": r.weekend,
        "ur_ec_tou_mat": r.tou_mat,
        "ur_enable_billing_demand": 0,
        "ur_yearzero_usage_peaks": [0.0] * 12,
        "TOU_demand_single_peak": 0,
        "ur_en_ts_sell_rate": 0,
        "ur_en_ts_buy_rate": 0,
    }
    inputs.update(sam_demand(t))
    for key, val in inputs.items():
        m.value(key, val)
    m.execute(0)
    o = m.Outputs

    def ym(name: str) -> np.ndarray:
        # *_ym matrices are (analysis_period + 1) × 12; row 0 is zeros, row 1 is year 1
        return np.asarray(getattr(o, name), dtype=float)[1].copy()

    return SamBill(
        bill=ym("utility_bill_w_sys_ym"),
        energy_charge=ym("charge_w_sys_ec_ym"),
        fixed=ym("charge_w_sys_fixed_ym"),
        minimum=ym("charge_w_sys_minimum_ym"),
        true_up_credits=ym("true_up_credits_ym"),
        nm_dollars_applied=ym("nm_dollars_applied_ym"),
        net_billing_credits=ym("net_billing_credits_ym"),
        two_meter_sales=ym("two_meter_sales_ym"),
        bill_without_system=ym("utility_bill_wo_sys_ym"),
        annual=float(o.utility_bill_w_sys_year1),
        demand_flat=ym("charge_w_sys_dc_fixed_ym"),
        demand_tou=ym("charge_w_sys_dc_tou_ym"),
    )
