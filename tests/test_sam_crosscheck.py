"""Cross-check optimizer/billing.py against NREL SAM's Utilityrate5 (docs/billing-rules.md, SAM).

One synthetic year of 15-minute data (35,040 intervals, calendar year 2018: 1 January was a
Monday and the year has 365 days, which is SAM's year) is billed by our engine and by SAM
under the same tariff, translated by tests/sam_oracle.py. Every month's bill and the annual
total must agree to the cent.

How the two see the same home (load L and PV G per step, no battery):

* ours gets the meter registers, ``import = max(L − G, 0)`` and ``export = max(G − L, 0)`` per
  interval (``load_kwh``/``pv_kwh`` too, which buy-all/sell-all needs);
* SAM gets ``load`` L and ``gen`` G as kW averaged over the step (kWh × 4) and nets ``G − L``
  per step itself (no hourly netting of sub-hourly data).

The tariff's time zone is UTC so local time = UTC and billing months are SAM's calendar months;
no holidays, no NBC, no export cap (SAM has none of them). Our tariff periods ``peak``
(weekdays 16–21), ``weekend_peak`` (weekends 16–21) and ``off_peak`` in two seasons become six
SAM periods; every rate is flat per period, except in section 6 (tiered rates on ``peak`` and
``off_peak``, filled by the month's total use, ``tier_basis = "month"``).

Rules that differ, so not cross-checked here:

* tiered rates with ``tier_basis = "period"`` (each (season, TOU period) bucket fills its own
  tiers): SAM applies the limits to the month's total use, so such bills differ unless there
  is one period (this file's year under net billing with a 300 kWh tier, +$0.10 above it, in
  every period: ours $1,070.15 a year, SAM $1,464.38). With ``tier_basis = "month"`` ours
  shares the month's total use over the periods pro rata, which is SAM's NEM rule (options
  0/1) and is cross-checked in section 6 on load-only data; still different: SAM options 2-4
  fill the tiers chronologically, and a NEM period with net surplus is split into tiers by
  SAM (pro rata over the month's surplus, credited at the tiers' sell rates) but credited at
  the first tier's rate by ours unless ``export.surplus_tiers = "fill"`` (cross-checked on
  real tiered rates in tests/test_urdb_sam_nine.py);
* SAM option 3 with ``ur_nb_apply_credit_current_month = 0`` (a month's credits only reduce
  later months): ours always nets a month's credits against its own charges first;
* SAM option 1 without ``ur_sell_eq_buy`` (surplus valued at a separate sell rate): our NEM
  credits exports at the import rate (or the rate minus NBC);
* SAM options 0/1 with ``ur_nm_credit_rollover = 1`` and SAM's ``ur_nm_yearend_sell_rate``
  (paid on SAM's whole-month cumulative excess): ours pays ``surplus_rate`` on the period's
  net surplus kWh and rolls credit over without also paying it;
* a true-up month other than December on one calendar year: both settle that month alike,
  but the data then ends inside the next period, which ours settles in December as a
  projection (``TrueUp.complete = False``, paying out the credit so far) and SAM leaves unpaid;
* per-day fixed and minimum charges (SAM's are per month only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pytest

from optimizer.billing import Bill, bill, load_only
from optimizer.intervals import IntervalData
from optimizer.tariff import Tariff
from tests import sam_oracle as sam

STEPS_PER_HOUR = 4
N_STEPS = 8760 * STEPS_PER_HOUR  # 35,040
YEAR_START_UTC = 1514764800  # 2018-01-01T00:00:00Z, a Monday
CENT = 0.005

# --------------------------------------------------------------------------------------
# Tariffs


_RATES = """
id = "sam-crosscheck"
name = "SAM cross-check, two seasons, weekday/weekend TOU"
timezone = "UTC"

[calendar]
seasons = { summer = [6, 7, 8, 9], winter = [1, 2, 3, 4, 5, 10, 11, 12] }
holidays = "none"

[[periods]]
name = "peak"
hours = [[16, 21]]
days = "weekdays"
[[periods]]
name = "weekend_peak"
hours = [[16, 21]]
days = "weekends"
[[periods]]
name = "off_peak"
hours = [[0, 24]]

[import_rates]
summer = { peak = 0.34, weekend_peak = 0.20, off_peak = 0.14 }
winter = { peak = 0.26, weekend_peak = 0.16, off_peak = 0.12 }
"""

TOU_SELL = ("sell_rates = { summer = { peak = 0.14, weekend_peak = 0.10, off_peak = 0.08 }, "
            "winter = { peak = 0.11, weekend_peak = 0.10, off_peak = 0.09 } }")
FLAT_SELL = "flat_rate = 0.085"
SELLS = pytest.mark.parametrize("sell", [TOU_SELL, FLAT_SELL], ids=["tou_sell", "flat_sell"])

NET_BILLING = "scheme = 'net_billing'\nnetting = 'instantaneous'\n{sell}"
BUY_ALL_SELL_ALL = "scheme = 'buy_all_sell_all'\n{sell}"
NEM = "scheme = 'nem'\ncredit = 'import'\nnetting = 'billing_period'"

MONTHLY = """
period_months = 1
carryover = "dollars"
charges = "monthly"
leftover_credit = "pay_out"
"""
ANNUAL_DEC = """
period_months = 12
true_up_month = 12
carryover = "dollars"
charges = "monthly"
leftover_credit = "pay_out"
surplus_rate = 0.0
"""


def make_tariff(export: str, settlement: str, *, fixed: float = 0.0, minimum: float = 0.0,
                annual_minimum: float = 0.0) -> Tariff:
    text = (
        _RATES
        + "\n[charges]\nnbc_per_kwh = 0.0\n"
        + f"fixed_per_month = {fixed}\nminimum_per_month = {minimum}\n"
        + f"annual_minimum = {annual_minimum}\n"
        + "\n[export]\n" + export + "\n"
        + "\n[settlement]\n" + settlement
    )
    return Tariff.from_text(text, source="sam-crosscheck.toml")


# --------------------------------------------------------------------------------------
# Data: one deterministic year


@dataclass(frozen=True)
class Year:
    load_kwh: np.ndarray  # per 15-minute step
    pv_kwh: np.ndarray
    data: IntervalData  # gross import/export, plus load and PV
    month: np.ndarray  # calendar month (1-12) of each step


def synthetic_year(seed: int = 20180101, pv_kw_dc: float = 12.0) -> Year:
    """A sunny-climate home: a 12 kW PV array and an air-conditioned house.

    PV: a clear-sky-shaped daily bell (day length 10-14 h, higher in summer) times a seeded
    day-to-day cloudiness (18 % of days overcast, with flicker). Load: base plus morning and
    evening peaks, summer afternoon air conditioning, lognormal noise. Months from October to
    May export more than they import; June to August import more (air conditioning).
    """
    rng = np.random.default_rng(seed)
    step = np.arange(N_STEPS)
    day = step // (24 * STEPS_PER_HOUR)
    hour = (step % (24 * STEPS_PER_HOUR) + 0.5) / STEPS_PER_HOUR  # mid-step local hour
    season = np.cos(2 * np.pi * (day - 172) / 365)  # +1 at the June solstice
    day_len = 12.0 + 2.0 * season
    x = np.clip((hour - (12.0 - day_len / 2)) / day_len, 0.0, 1.0)
    clear = np.sin(np.pi * x) ** 1.5 * (0.86 + 0.08 * season)
    overcast = rng.random(365) < 0.18
    k_day = np.where(overcast, rng.uniform(0.15, 0.6, 365), rng.uniform(0.85, 1.0, 365))
    flicker = np.clip(1 + 0.08 * rng.standard_normal(N_STEPS), 0.5, 1.2)
    pv_kw = pv_kw_dc * clear * k_day[day] * np.where(overcast[day], flicker**3, 1.0)

    base = 0.45 + 0.15 * rng.random(365)[day]
    morning = 1.1 * np.exp(-0.5 * ((hour - 7.5) / 1.0) ** 2)
    evening = 1.7 * np.exp(-0.5 * ((hour - 19.0) / 1.6) ** 2)
    cooling = np.clip(np.cos(2 * np.pi * (day - 200) / 365), 0.0, None) ** 1.2
    ac = 8.0 * cooling * np.exp(-0.5 * ((hour - 17.0) / 3.5) ** 2)
    load_kw = (base + morning + evening + ac) * rng.lognormal(0.0, 0.25, N_STEPS)

    load = load_kw / STEPS_PER_HOUR
    pv = pv_kw / STEPS_PER_HOUR
    data = IntervalData.regular(
        YEAR_START_UTC, 3600 // STEPS_PER_HOUR,
        np.maximum(load - pv, 0.0), np.maximum(pv - load, 0.0),
        load_kwh=load, pv_kwh=pv, source="synthetic 2018",
    )
    days = np.arange(np.datetime64("2018-01-01"), np.datetime64("2019-01-01"))
    month = (days.astype("datetime64[M]").astype(np.int64) % 12 + 1)[day]
    return Year(load_kwh=load, pv_kwh=pv, data=data, month=month)


@pytest.fixture(scope="module")
def year() -> Year:
    return synthetic_year()


def test_synthetic_year_is_a_sam_year_with_export_and_import_months(year: Year):
    """The data fits SAM's calendar and is not vacuous: both kinds of month occur."""
    assert len(year.data) == N_STEPS
    assert date(2018, 1, 1).weekday() == 0  # SAM's 1 January is a Monday
    assert int(year.data.end_utc) == YEAR_START_UTC + 365 * 86400
    net = np.bincount(year.month, weights=year.data.import_kwh - year.data.export_kwh,
                      minlength=13)[1:]
    assert (net > 0).sum() >= 3 and (net < 0).sum() >= 3, net
    # gross flows both ways inside a month: instantaneous netting matters
    assert (year.data.import_kwh > 0).any() and (year.data.export_kwh > 0).any()


# --------------------------------------------------------------------------------------
# Comparison helpers


def ours_monthly(b: Bill) -> np.ndarray:
    """Our 12 monthly amounts in SAM's terms.

    SAM subtracts its year-end payout (``true_up_credits_ym``) from the true-up month's
    ``utility_bill_w_sys_ym`` and puts the annual-minimum top-up into December's minimum. Ours
    keeps both in the period's TrueUp (``Bill.true_ups[-1].due``) when the settlement period
    is 12 months, so December is compared as our December ``billed`` + the true-up ``due``.
    With ``period_months = 1`` each month's settlement is already inside its ``billed``.
    """
    out = np.array([m.billed for m in b.months])
    assert len(out) == 12
    if b.true_ups:
        assert [t.month for t in b.true_ups] == ["2018-12"]
        out[-1] += b.true_ups[-1].due
    return out


def assert_same_bills(b: Bill, s: sam.SamBill) -> None:
    ours = ours_monthly(b)
    assert ours == pytest.approx(s.bill, abs=CENT), (
        f"\nours {np.round(ours, 2).tolist()}\nSAM  {np.round(s.bill, 2).tolist()}")
    assert s.annual == pytest.approx(s.bill.sum(), abs=1e-6)
    assert b.annual_total == pytest.approx(s.annual, abs=CENT)


def run(year: Year, t: Tariff, **sam_options) -> tuple[Bill, sam.SamBill]:
    return bill(t, year.data), sam.sam_bill(t, year.load_kwh, year.pv_kwh, STEPS_PER_HOUR,
                                            **sam_options)


# --------------------------------------------------------------------------------------
# The calendar translation alone


def test_load_only_bill_matches_sam_bill_without_system(year: Year):
    """TOU calendar and rates: the load alone (no PV) costs the same in both engines.

    SAM's ``utility_bill_wo_sys_ym`` bills the load under the same schedules and rates; ours
    bills ``load_only(data)``. Checks the season × weekday/weekend × hour → period translation
    before any export rule is involved.
    """
    t = make_tariff(NET_BILLING.format(sell=TOU_SELL), MONTHLY, fixed=12.0)
    s = sam.sam_bill(t, year.load_kwh, year.pv_kwh, STEPS_PER_HOUR,
                     metering_option=sam.NET_BILLING)
    b = bill(t, load_only(year.data))
    assert ours_monthly(b) == pytest.approx(s.bill_without_system, abs=CENT)


# --------------------------------------------------------------------------------------
# 1. Net billing, every month settled alone


@SELLS
def test_net_billing_monthly_settlement_matches_sam_option_2(year: Year, sell: str):
    """Net billing, no carryover: SAM ``ur_metering_option = 2``.

    Rule: every 15-minute interval is settled on its own (instantaneous netting): imports pay
    the TOU import rate, exports earn the sell rate (SAM: the sell column of
    ``ur_ec_tou_mat``, per season × period, or the same flat rate in every row). A month's
    energy charge may be negative and is paid out on that month's statement.
    Ours: ``scheme = "net_billing"``, ``netting = "instantaneous"``, ``period_months = 1``,
    ``charges = "monthly"``, ``leftover_credit = "pay_out"``.
    """
    t = make_tariff(NET_BILLING.format(sell=sell), MONTHLY)
    b, s = run(year, t, metering_option=sam.NET_BILLING)
    assert_same_bills(b, s)
    ours = ours_monthly(b)
    assert (ours < -1).sum() >= 3 and (ours > 1).sum() >= 3  # paid out and billed months
    assert [m.energy_charges for m in b.months] == pytest.approx(s.energy_charge, abs=CENT)


# --------------------------------------------------------------------------------------
# 2. Net billing, $ credit carried to a December true-up


@SELLS
def test_net_billing_carryover_matches_sam_option_3(year: Year, sell: str):
    """Net billing with $ carryover, paid out in December: SAM ``ur_metering_option = 3``,
    ``ur_nb_apply_credit_current_month = 1``, ``ur_nm_credit_month = 11`` (December),
    ``ur_nb_credit_expire = 0``.

    Rule: a month's export credits first offset its own import charges; what is left carries
    as $ and offsets later months' charges (a month's energy charge is never below 0); at the
    December true-up the leftover credit is paid at face value.
    Ours: ``period_months = 12``, ``true_up_month = 12``, ``carryover = "dollars"``,
    ``charges = "monthly"``, ``leftover_credit = "pay_out"``. The payout is our TrueUp's
    ``paid_out_credit`` and SAM's ``true_up_credits_ym[Dec]``.
    """
    t = make_tariff(NET_BILLING.format(sell=sell), ANNUAL_DEC)
    b, s = run(year, t, metering_option=sam.NET_BILLING_CARRY, nb_apply_credit_current_month=1,
               nm_credit_month=11)
    assert_same_bills(b, s)
    # not vacuous: credit was carried into a month with charges, and some is paid out
    assert any(m.credit_applied > 1 and m.energy_charges > 0 for m in b.months)
    tu = b.true_ups[-1]
    assert tu.paid_out_credit > 1
    assert tu.paid_out_credit == pytest.approx(s.true_up_credits[11], abs=CENT)
    assert s.true_up_credits[:11] == pytest.approx(np.zeros(11))


# --------------------------------------------------------------------------------------
# 3. Buy all / sell all


@SELLS
def test_buy_all_sell_all_matches_sam_option_4(year: Year, sell: str):
    """Buy all / sell all (two meters): SAM ``ur_metering_option = 4``.

    Rule: all load is bought at the TOU import rate and all PV is sold at the sell rate, step
    by step, with no netting; the month's (possibly negative) total is settled on its own
    statement. Ours: ``scheme = "buy_all_sell_all"``, ``period_months = 1``,
    ``leftover_credit = "pay_out"`` (it reads the data's ``load_kwh`` and ``pv_kwh``).
    """
    t = make_tariff(BUY_ALL_SELL_ALL.format(sell=sell), MONTHLY)
    b, s = run(year, t, metering_option=sam.BUY_ALL_SELL_ALL)
    assert_same_bills(b, s)
    assert (s.two_meter_sales > 1).all()
    assert [m.energy_charges for m in b.months] == pytest.approx(s.energy_charge, abs=CENT)


# --------------------------------------------------------------------------------------
# 4. NEM, $ credits, leftover paid out in December


def test_nem_dollar_credits_paid_out_at_year_end_match_sam_option_1(year: Year):
    """NEM with retail-value $ credits: SAM ``ur_metering_option = 1``, ``ur_sell_eq_buy = 1``,
    ``ur_nm_credit_month = 11`` (December), ``ur_nm_credit_rollover = 0``.

    Rule: per billing month and TOU period, net kWh = imports − exports; a net import is
    charged at the period's rate and a net export earns the same rate as a $ credit, which
    offsets the month's other periods and then carries to later months (a month's energy
    charge is never below 0). In December the leftover $ is paid at face value.
    Ours: ``scheme = "nem"``, ``credit = "import"``, NBC 0, ``netting = "billing_period"``,
    ``carryover = "dollars"``, ``charges = "monthly"``, ``leftover_credit = "pay_out"``,
    ``surplus_rate = 0``.
    """
    t = make_tariff(NEM, ANNUAL_DEC)
    b, s = run(year, t, metering_option=sam.NEM_DOLLARS, sell_eq_buy=1, nm_credit_month=11)
    assert_same_bills(b, s)
    assert any(m.credit_applied > 1 and m.energy_charges > 0 for m in b.months)
    assert any(m.energy_charges < -1 for m in b.months)
    assert sum(m.billed > 1 for m in b.months) >= 2  # credit ran out: some months pay
    tu = b.true_ups[-1]
    assert tu.paid_out_credit > 1
    assert tu.paid_out_credit == pytest.approx(s.true_up_credits[11], abs=CENT)


# --------------------------------------------------------------------------------------
# 5. Fixed charges and minimums on top


CASES = {
    # name: (export, settlement, SAM options)
    "net_billing": (NET_BILLING.format(sell=TOU_SELL), MONTHLY,
                    {"metering_option": sam.NET_BILLING}),
    "net_billing_carryover": (NET_BILLING.format(sell=TOU_SELL), ANNUAL_DEC,
                              {"metering_option": sam.NET_BILLING_CARRY,
                               "nb_apply_credit_current_month": 1, "nm_credit_month": 11}),
    "nem": (NEM, ANNUAL_DEC,
            {"metering_option": sam.NEM_DOLLARS, "sell_eq_buy": 1, "nm_credit_month": 11}),
    "buy_all_sell_all": (BUY_ALL_SELL_ALL.format(sell=FLAT_SELL), MONTHLY,
                         {"metering_option": sam.BUY_ALL_SELL_ALL}),
}


def ours_minimum(b: Bill) -> np.ndarray:
    """Minimum top-ups per month; a 12-month period's annual top-up sits in its TrueUp,
    SAM puts it in December's ``charge_w_sys_minimum_ym``."""
    out = np.array([m.minimum for m in b.months])
    if b.true_ups:
        out[-1] += b.true_ups[-1].annual_minimum_topup
    return out


@pytest.mark.parametrize(("case", "fixed", "minimum"), [
    ("net_billing", 12.0, 25.0),
    ("net_billing_carryover", 12.0, 25.0),
    ("nem", 12.0, 25.0),
    ("buy_all_sell_all", 12.0, 150.0),
])
def test_fixed_and_monthly_minimum_match_sam(year: Year, case: str, fixed: float,
                                             minimum: float):
    """Monthly fixed charge and monthly minimum: SAM ``ur_monthly_fixed_charge`` and
    ``ur_monthly_min_charge`` on top of options 2, 3, 1 and 4 (settings as in tests 1-4).

    Rule (SAM's, and ours with ``charges = "monthly"``): the fixed charge is billed every
    month; the minimum tops up ``max(0, energy charge after credits + fixed)`` to the minimum
    and is never refunded. A negative net-billing month counts as 0 (the full minimum is
    added and the bill can stay negative). Buy-all/sell-all compares the load meter's
    purchases + fixed with the minimum; the sales are credited after it. The charges are
    chosen so that the minimum binds in some months and not in others.
    """
    export, settlement, options = CASES[case]
    t = make_tariff(export, settlement, fixed=fixed, minimum=minimum)
    b, s = run(year, t, **options)
    assert_same_bills(b, s)
    assert [m.fixed for m in b.months] == pytest.approx(s.fixed, abs=CENT)
    mins = ours_minimum(b)
    assert mins == pytest.approx(s.minimum, abs=CENT)
    assert (mins > 0.01).sum() >= 2 and (mins == 0).sum() >= 2, mins


@pytest.mark.parametrize(("case", "annual_minimum"), [
    ("net_billing", 1500.0),
    ("net_billing_carryover", 1200.0),
    ("nem", 600.0),
    ("buy_all_sell_all", 4000.0),
])
def test_annual_minimum_matches_sam(year: Year, case: str, annual_minimum: float):
    """Annual minimum: SAM ``ur_annual_min_charge`` (with a $12 fixed charge and a $25
    monthly minimum; settings otherwise as in tests 1-4).

    Rule: in December the bill is topped up by ``max(0, annual minimum − Σ_months max(0,
    energy charge after credits + fixed))``; the sum leaves out monthly-minimum top-ups (so
    the year can cost more than the annual minimum) and the year-end payout. SAM adds the
    top-up to December's minimum; ours adds it to December's statement (``period_months = 1``)
    or to the December TrueUp (``period_months = 12``). The annual minimum is chosen to bind.
    """
    export, settlement, options = CASES[case]
    monthly = 150.0 if case == "buy_all_sell_all" else 25.0
    t = make_tariff(export, settlement, fixed=12.0, minimum=monthly,
                    annual_minimum=annual_minimum)
    b, s = run(year, t, **options)
    assert_same_bills(b, s)
    mins = ours_minimum(b)
    assert mins == pytest.approx(s.minimum, abs=CENT)
    # the annual top-up binds: December's minimum is more than the monthly top-up alone
    plain = bill(make_tariff(export, settlement, fixed=12.0, minimum=monthly), year.data)
    assert mins[-1] > ours_minimum(plain)[-1] + 1
    assert mins[:11] == pytest.approx(ours_minimum(plain)[:11], abs=1e-9)


# --------------------------------------------------------------------------------------
# 6. Tiered import rates, tiers filled by the month's total use (tier_basis = "month")


_TIERED_HEAD = """
id = "sam-crosscheck-tiered"
name = "SAM cross-check, two TOU periods, tiered"
timezone = "UTC"
tier_basis = "{basis}"

[calendar]
seasons = {{ {seasons} }}
holidays = "none"

[[periods]]
name = "peak"
hours = [[16, 21]]
days = "weekdays"
[[periods]]
name = "off_peak"
hours = [[0, 24]]
"""
_TIERED_TAIL = """
[charges]
nbc_per_kwh = 0.0

[export]
scheme = "nem"
credit = "import"
netting = "billing_period"

[settlement]
""" + ANNUAL_DEC

SEASON_MONTHS = {"summer": [6, 7, 8, 9], "winter": [1, 2, 3, 4, 5, 10, 11, 12],
                 "all": list(range(1, 13))}
TIER_RATES = {  # season: {period: rate per tier}
    "summer": {"peak": [0.34, 0.42], "off_peak": [0.14, 0.20]},
    "winter": {"peak": [0.26, 0.31, 0.38], "off_peak": [0.12, 0.15, 0.22]},
    "all": {"peak": [0.26, 0.31, 0.38], "off_peak": [0.12, 0.15, 0.22]},
}
# The home uses 650-860 kWh a month (22.6-27.6 kWh/day) from October to April, 1,509 in May
# (48.7 a day) and 1,710-2,876 from June to September (57-93 a day). Every first limit binds
# in some months and not in others.
TIER_LIMITS = {
    # name: (limit key, {season: cumulative limits, one fewer than the tiers})
    "kwh_per_month": ("up_to_kwh", {"summer": [2000], "winter": [700, 1200]}),
    "kwh_per_day": ("up_to_kwh_per_day", {"summer": [70], "winter": [23, 40]}),
    "kwh_per_day_one_season": ("up_to_kwh_per_day", {"all": [25, 60]}),
}
SAM_NEM = {
    "option_1": {"metering_option": sam.NEM_DOLLARS, "sell_eq_buy": 1, "nm_credit_month": 11},
    "option_0": {"metering_option": sam.NEM_KWH, "nm_credit_month": 11},
}


def tiered_text(limits: str, basis: str = "month") -> str:
    key, per_season = TIER_LIMITS[limits]
    seasons = ", ".join(f"{n} = {SEASON_MONTHS[n]}" for n in per_season)
    text = _TIERED_HEAD.format(basis=basis, seasons=seasons)
    for season, lims in per_season.items():
        text += f"\n[import_rates.{season}]\n"
        for period, rates in TIER_RATES[season].items():
            assert len(rates) == len(lims) + 1
            tiers = [f"{{ {key} = {lim}, rate = {r} }}"
                     for lim, r in zip(lims, rates[:-1], strict=True)]
            tiers.append(f"{{ rate = {rates[-1]} }}")
            text += f"{period} = [{', '.join(tiers)}]\n"
    return text + _TIERED_TAIL


def make_tiered_tariff(limits: str, basis: str = "month") -> Tariff:
    return Tariff.from_text(tiered_text(limits, basis), source="sam-crosscheck-tiered.toml")


def first_limit_kwh(t: Tariff, year: Year) -> np.ndarray:
    """Each calendar month's first tier limit in kWh (per-day limits × the month's days)."""
    days = np.bincount(year.month, minlength=13)[1:] / (24 * STEPS_PER_HOUR)
    season = t.month_season[1:13]
    lim = t.tier_limits[season, 0, 0]
    return np.where(t.tier_per_day[season, 0], lim * days, lim)


# Per-day limits across two seasons once billed nan (inf × 0 season days in
# ``_tier_tables``); this cross-check found it, and now guards it.
LIMIT_CASES = ["kwh_per_month", "kwh_per_day", "kwh_per_day_one_season"]


@pytest.mark.parametrize("limits", LIMIT_CASES)
@pytest.mark.parametrize("option", list(SAM_NEM))
def test_month_tier_basis_load_only_matches_sam_nem(year: Year, option: str, limits: str):
    """Tiered TOU import rates under NEM, a home without PV: SAM ``ur_metering_option = 1``
    (``ur_sell_eq_buy = 1``) and ``ur_metering_option = 0``, true-up in December.

    Rule (SAM's for options 0/1, ours with ``tier_basis = "month"``): the tiers' limits apply
    to the month's total use U = Σ_p use_p (kWh/month, or kWh/day × the month's days: SAM's
    units 0 and 2), and each period takes its share use_p / U of every tier's kWh at its own
    tier rates. With no PV no period has a surplus, so SAM's two NEM options and ours all reduce
    to this rule (no credit, no carryover, nothing to pay out). Two seasons: summer 2 tiers,
    winter 3 (the second limit binds in May only); or one season with 3 tiers.
    Ours: ``scheme = "nem"``, ``credit = "import"``, NBC 0, ``netting = "billing_period"``,
    ``period_months = 12``, ``charges = "monthly"``, ``leftover_credit = "pay_out"``.

    ``tier_basis = "period"`` (each period fills its own tiers, as a utility whose tariff
    sheet sets limits per TOU period would bill) gives a different, here lower, total on the
    same data: a period's kWh rarely reaches a limit that the month's total passes.
    """
    t = make_tiered_tariff(limits)
    data = load_only(year.data)
    b = bill(t, data)
    s = sam.sam_bill(t, year.load_kwh, np.zeros(N_STEPS), STEPS_PER_HOUR, **SAM_NEM[option])
    assert_same_bills(b, s)
    assert [m.energy_charges for m in b.months] == pytest.approx(s.energy_charge, abs=CENT)
    assert s.bill == pytest.approx(s.bill_without_system, abs=1e-6)  # no PV: same bill
    assert b.true_ups[-1].paid_out_credit == 0
    assert s.true_up_credits == pytest.approx(np.zeros(12))

    # not vacuous: the first limit binds in some months and not in others
    use = np.bincount(year.month, weights=year.load_kwh, minlength=13)[1:]
    over = use > first_limit_kwh(t, year)
    assert 3 <= over.sum() <= 9, (use, first_limit_kwh(t, year))
    # the two tier bases differ on the same data
    per_period = bill(make_tiered_tariff(limits, basis="period"), data).annual_total
    assert per_period < b.annual_total - 10, (per_period, b.annual_total)


def test_sam_oracle_refuses_tiers_it_cannot_translate():
    """The oracle translates tiers only where SAM reads them as ours can: ``tier_basis =
    "month"``, and the same limits in every period of a month (SAM raises otherwise)."""
    with pytest.raises(ValueError, match="tier_basis"):
        sam.sam_rates(make_tiered_tariff("kwh_per_month", basis="period"))
    text = tiered_text("kwh_per_month")
    uneven = text.replace("peak = [{ up_to_kwh = 700, rate = 0.26 }",
                          "peak = [{ up_to_kwh = 600, rate = 0.26 }", 1)
    assert uneven != text
    with pytest.raises(ValueError, match="same tier limits"):
        sam.sam_rates(Tariff.from_text(uneven, source="uneven.toml"))
    rows = sam.sam_rates(make_tiered_tariff("kwh_per_day")).tou_mat
    # one row per period and tier: summer 2 × 2, winter 2 × 3; kWh/day in units 2, then 1e38
    assert len(rows) == 2 * 2 + 2 * 3
    assert [r[1:4] for r in rows[-3:]] == [[1, 23.0, 2], [2, 40.0, 2], [3, 1e38, 0]]


# --------------------------------------------------------------------------------------
# 7. Demand charges


DEMANDS = {
    "flat": "window_minutes = 15\nflat = { summer = 12.5, winter = 8.0 }\n",
    "tou": "window_minutes = 15\ntou = { summer = { peak = 9.4, weekend_peak = 3.0 }, "
           "winter = { peak = 4.2 } }\n",
    "flat_tiers_and_tou": (
        "window_minutes = 15\n"
        "flat = { summer = [{ up_to_kw = 5, rate = 6.0 }, { rate = 11.0 }], winter = 7.0 }\n"
        "tou = { summer = { peak = 9.4, off_peak = 1.1 } }\n"),
    # demand periods of their own (noon-18 weekdays) and a flat rate month by month
    "own_periods_flat_months": (
        "window_minutes = 15\n"
        "flat_months = [5.0, 5.0, 5.0, 5.0, 5.0, 9.0, 9.0, 9.0, 9.0, 5.0, 5.0, 5.5]\n"
        "tou = { summer = { d_mid = 6.0 }, winter = { d_mid = 2.0 } }\n"
        "[[demand.periods]]\nname = 'd_mid'\nhours = [[12, 18]]\ndays = 'weekdays'\n"
        "[[demand.periods]]\nname = 'd_other'\nhours = [[0, 24]]\n"),
}


@pytest.mark.parametrize("case", list(DEMANDS))
@pytest.mark.parametrize("metering", ["net_billing", "nem"])
def test_demand_charges_match_sam(year: Year, case: str, metering: str):
    """Flat, TOU and tiered demand on the 15-minute year (window = step, which is how SAM
    reads demand: each step's average import kW): every month's flat and TOU demand charges,
    and the whole bill, equal SAM's ``charge_w_sys_dc_fixed_ym`` / ``charge_w_sys_dc_tou_ym``
    and ``utility_bill_w_sys_ym`` to the cent."""
    export, option = ((NET_BILLING.format(sell=FLAT_SELL), sam.NET_BILLING)
                      if metering == "net_billing" else (NEM, sam.NEM_DOLLARS))
    text = (_RATES + "\n[charges]\nfixed_per_month = 10.0\n\n[export]\n" + export + "\n"
            + "\n[settlement]\n" + (MONTHLY if metering == "net_billing" else ANNUAL_DEC)
            + "\n[demand]\n" + DEMANDS[case])
    t = Tariff.from_text(text, source="sam-demand.toml")
    b, s = run(year, t, metering_option=option,
               **({"sell_eq_buy": 1} if metering == "nem" else {}))
    flat = np.array([m.demand_charges_by_key.get("flat", 0.0) for m in b.months])
    tou = np.array([m.demand_charges - m.demand_charges_by_key.get("flat", 0.0)
                    for m in b.months])
    assert flat == pytest.approx(s.demand_flat, abs=CENT)
    assert tou == pytest.approx(s.demand_tou, abs=CENT)
    assert (flat + tou).sum() > 100.0  # not vacuous
    assert_same_bills(b, s)
