"""The billing engine, scheme by scheme, with the arithmetic written out.

Most tests use a two-period tariff in UTC (peak 16-21 at $0.50, off-peak $0.30, one season)
and hourly data built from a daily pattern, so each expected figure can be followed by hand.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from optimizer.billing import bill, load_only
from optimizer.errors import TariffError, UsageError
from optimizer.intervals import IntervalData
from tests.helpers import TWO_PERIOD_UTC, hourly, tariff

NEM2PS = """
nbc_per_kwh = 0.03
minimum_per_day = 0.40
"""
NEM_EXPORT = """
scheme = "nem"
credit = "import_minus_nbc"
netting = "billing_period"
"""
NEM2_SETTLEMENT = """
period_months = 12
true_up_month = 12
carryover = "dollars"
charges = "at_true_up"
leftover_credit = "forfeit"
surplus_rate = 0.04
"""

DAYS_2025 = {1: 31, 2: 28, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30,
             12: 31}


def nem2ps_tariff(cap=100):
    return tariff(
        TWO_PERIOD_UTC, charges=NEM2PS, export=NEM_EXPORT, settlement=NEM2_SETTLEMENT,
        export_cap=f"monthly_kwh = {[cap] * 12}\ndecredit_order = ['peak', 'off_peak']\n",
    )


def test_nem2ps_year_with_exceeded_cap_nbc_mdc_floor_nsc_and_forfeiture():
    """A full NEM2-PS year, every step by hand.

    Tariff: peak $0.50, off-peak $0.30; NBC $0.03/kWh; MDC $0.40/day; cap 100 kWh/month;
    NSC $0.04/kWh; leftover credit forfeited. Credits are worth rate − NBC.

    Jan-Jun, every day: import 1 kWh at 02:00 (off-peak), export 5 kWh at 17:00 (peak).
    Jul-Dec, every day: import 2 kWh at 02:00, nothing exported.
    """
    t = nem2ps_tariff()

    def pattern(d, h):
        if d.month <= 6:
            return (1.0, 0.0) if h == 2 else (0.0, 5.0) if h == 17 else (0.0, 0.0)
        return (2.0, 0.0) if h == 2 else (0.0, 0.0)

    b = bill(t, hourly(date(2025, 1, 1), date(2025, 12, 31), pattern))
    jan, feb, apr, jul = b.months[0], b.months[1], b.months[3], b.months[6]

    # January: 31 kWh imported, 155 exported; the cap keeps 100 and de-credits 55 (peak).
    assert jan.import_kwh == pytest.approx(31)
    assert jan.export_kwh == pytest.approx(155)
    assert jan.export_cap_excess_kwh == pytest.approx(55)
    assert jan.credited_export_kwh == pytest.approx(100)
    # Cx = 31 × (0.30 − 0.03) − 100 × (0.50 − 0.03) = 8.37 − 47.00 = −38.63
    assert jan.energy_charges == pytest.approx(-38.63)
    assert jan.nbc == pytest.approx(31 * 0.03)  # 0.93 on gross imports
    assert jan.minimum == pytest.approx(31 * 0.40)  # MDC 12.40 billed
    assert jan.billed == pytest.approx(12.40)
    # February (28 days): 28 × 0.27 − 47.00 = −39.44;  April (30): 30 × 0.27 − 47 = −38.90
    assert feb.energy_charges == pytest.approx(-39.44)
    assert apr.energy_charges == pytest.approx(-38.90)
    # July: 62 kWh imported, none exported: 62 × 0.27 = 16.74
    assert jul.energy_charges == pytest.approx(16.74)
    assert jul.export_cap_excess_kwh == 0

    # ΣCx: Jan-Jun = 3 × (−38.63) + (−39.44) + 2 × (−38.90) = −233.13
    #      Jul-Dec = 2 kWh × 184 days × 0.27 = 99.36          → ΣCx = −133.77 (a credit)
    # ΣNBC = 0.03 × (181 + 368) = 16.47;  X = ΣNBC + max(0, ΣCx) = 16.47
    # ΣMDC = 365 × 0.40 = 146.00 ≥ X, so nothing more is due for charges: max(X, ΣMDC) − ΣMDC = 0
    # Surplus = credited exports 600 − imports 549 = 51 kWh → NSC = 51 × 0.04 = 2.04
    tu = b.true_up
    assert tu is not None and tu.complete and tu.month == "2025-12"
    assert tu.charges == pytest.approx(146.00)
    assert tu.minimum_billed == pytest.approx(146.00)
    assert tu.surplus_kwh == pytest.approx(51)
    assert tu.surplus_credit == pytest.approx(2.04)
    assert tu.forfeited_credit == pytest.approx(133.77)
    assert tu.due == pytest.approx(-2.04)
    # paid over the year: 146.00 of MDC, then 2.04 back at true-up
    assert b.annual_total == pytest.approx(143.96)
    assert b.months[-2].credit_balance == pytest.approx(133.77 + 2 * 31 * 0.27)  # before Dec
    assert b.months[-1].credit_balance == 0  # forfeited at the true-up


def test_nem2_true_up_charges_exceed_the_minimum_delivery_charges():
    """X above ΣMDC: the true-up asks for the difference.

    Every day of 2025: import 3 kWh at 17:00 (peak), export 1 kWh at 12:00 (off-peak).
    Cx per day = 3 × 0.47 − 1 × 0.27 = 1.14; ΣCx = 365 × 1.14 = 416.10
    ΣNBC = 365 × 3 × 0.03 = 32.85; X = 448.95; ΣMDC = 146.00; due = 448.95 − 146.00 = 302.95
    Surplus = max(0, 365 − 1095) = 0.
    """
    t = tariff(TWO_PERIOD_UTC, charges=NEM2PS, export=NEM_EXPORT, settlement=NEM2_SETTLEMENT)

    def pattern(d, h):
        return (3.0, 0.0) if h == 17 else (0.0, 1.0) if h == 12 else (0.0, 0.0)

    b = bill(t, hourly(date(2025, 1, 1), date(2025, 12, 31), pattern))
    tu = b.true_up
    assert tu.charges == pytest.approx(448.95)
    assert tu.due == pytest.approx(302.95)
    assert tu.surplus_kwh == 0 and tu.forfeited_credit == 0
    assert b.annual_total == pytest.approx(448.95)


def test_excess_exports_are_removed_from_peak_credits_first():
    """Cap 60 kWh; exports 30 peak + 40 part-peak + 50 off-peak = 120 → excess 60.

    De-crediting takes all 30 peak kWh, then 30 of the 40 part-peak kWh; off-peak keeps 50.
    """
    t = tariff(
        """
        id = "t"
        name = "t"
        timezone = "UTC"
        [calendar]
        seasons = { all = [1,2,3,4,5,6,7,8,9,10,11,12] }
        [[periods]]
        name = "peak"
        hours = [[16, 21]]
        [[periods]]
        name = "part_peak"
        hours = [[15, 16], [21, 24]]
        [[periods]]
        name = "off_peak"
        hours = [[0, 24]]
        [import_rates]
        all = { peak = 0.5, part_peak = 0.4, off_peak = 0.3 }
        """,
        export="scheme = 'nem'\ncredit = 'import'\n",
        settlement="period_months = 1\nleftover_credit = 'forfeit'\n",
        export_cap="monthly_kwh = [60,60,60,60,60,60,60,60,60,60,60,60]\n"
        "decredit_order = ['peak', 'part_peak', 'off_peak']\n",
    )
    # one day of April: 30 kWh at 17:00, 40 at 22:00, 50 at 10:00 (the rest of April is idle)
    loads = {17: 30.0, 22: 40.0, 10: 50.0}
    data = hourly(date(2025, 4, 1), date(2025, 4, 30),
                  lambda d, h: (0.0, loads.get(h, 0.0)) if d.day == 1 else (0.0, 0.0))
    m = bill(t, data).months[0]
    assert m.export_cap_excess_kwh == pytest.approx(60)
    assert m.net_kwh_by_period == pytest.approx({"peak": 0.0, "part_peak": -10.0,
                                                 "off_peak": -50.0})
    # credit = 10 × 0.40 + 50 × 0.30 = 19.00
    assert m.energy_charges == pytest.approx(-19.00)


def test_nem1_credits_exports_at_the_full_rate_and_charges_no_nbc():
    """NEM1 (credit = import, NBC 0): 2 kWh exported at peak and 1 imported at peak, per day
    of January → Cx = 31 × (1 − 2) × 0.50 = −15.50; the credit is carried, nothing else."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\ncredit = 'import'\n",
               settlement=NEM2_SETTLEMENT)
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (1.0, 0.0) if h == 16 else (0.0, 2.0) if h == 17 else (0.0, 0.0))
    m = bill(t, data).months[0]
    assert m.energy_charges == pytest.approx(-15.50)
    assert m.nbc == 0


def test_credit_at_import_rate_still_pays_nbc_on_gross_imports():
    """credit = "import" with an NBC: imports cost r (r − nbc netted + nbc on gross),
    exports earn the full r. Per January day: 2 kWh imported and 2 exported at peak.
    Cx = 31 × [(2 − 2) × 0.47 − 2 × 0.03] = −1.86; NBC = 31 × 2 × 0.03 = 1.86: net zero."""
    t = tariff(TWO_PERIOD_UTC, charges="nbc_per_kwh = 0.03\n",
               export="scheme = 'nem'\ncredit = 'import'\n", settlement=NEM2_SETTLEMENT)
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (2.0, 0.0) if h == 16 else (0.0, 2.0) if h == 17 else (0.0, 0.0))
    m = bill(t, data).months[0]
    assert m.energy_charges == pytest.approx(-1.86)
    assert m.nbc == pytest.approx(1.86)


def test_net_billing_values_each_export_at_its_hour_and_carries_credit():
    """Net billing, flat sell 0.05, monthly charges, dollar carryover to a December true-up
    with forfeiture.

    January, per day: import 2 kWh off-peak, export 10 kWh at 12:00.
    energy = 31 × (2 × 0.30 − 10 × 0.05) = 31 × 0.10 = 3.10 → billed 3.10
    February, per day: export 10 kWh only: −28 × 0.50 = −14.00 → billed 0, credit 14.00
    March, per day: import 1 kWh: 31 × 0.30 = 9.30, less the 14.00 credit → billed 0,
    credit 4.70 left, forfeited at the (projected) true-up that closes the data in March.
    """
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'net_billing'\nflat_rate = 0.05\n",
               settlement="period_months = 12\ncharges = 'monthly'\n"
               "leftover_credit = 'forfeit'\n")

    def pattern(d, h):
        if d.month == 1:
            return (2.0, 0.0) if h == 2 else (0.0, 10.0) if h == 12 else (0.0, 0.0)
        if d.month == 2:
            return (0.0, 10.0) if h == 12 else (0.0, 0.0)
        return (1.0, 0.0) if h == 2 else (0.0, 0.0)

    b = bill(t, hourly(date(2025, 1, 1), date(2025, 3, 31), pattern))
    jan, feb, mar = b.months
    assert jan.energy_charges == pytest.approx(3.10) and jan.billed == pytest.approx(3.10)
    assert feb.energy_charges == pytest.approx(-14.00) and feb.billed == 0
    assert feb.credit_balance == pytest.approx(14.00)
    assert mar.energy_charges == pytest.approx(9.30) and mar.billed == 0
    assert mar.credit_applied == pytest.approx(9.30)
    assert b.true_up.forfeited_credit == pytest.approx(4.70)
    assert not b.true_up.complete
    assert b.annual_total == pytest.approx(3.10)


def test_nbt_export_values_come_from_pge_hourly_table():
    """The bundled NBT tariff values 1 kWh exported at 2025-07-15 (a Tuesday) 18:00 PDT at
    the NBT24 row 2025,7,weekday,18 (generation + delivery) of PG&E's published file."""
    import csv
    from pathlib import Path

    from optimizer.tariff import load_tariff

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    path = shared / "pge_nbt24_export_values.csv"
    if not path.exists():  # the package keeps a copy of the same facts
        path = Path(__file__).resolve().parents[1] / "optimizer" / "tariffs" / path.name
    with open(path) as fh:
        row = next(r for r in csv.DictReader(fh) if (r["year"], r["month"], r["daytype"],
                                                      r["hour"]) == ("2025", "7", "weekday",
                                                                     "18"))
    expected = float(row["generation_usd_per_kwh"]) + float(row["delivery_usd_per_kwh"])
    t = load_tariff("pge-ev2a-nbt-2024")
    data = hourly(date(2025, 7, 1), date(2025, 7, 31),
                  lambda d, h: (0.0, 1.0) if (d.day, h) == (15, 18) else (0.0, 0.0),
                  tz="America/Los_Angeles")
    m = bill(t, data, allow_gaps=False).months[0]
    assert m.energy_charges == pytest.approx(-expected)


def test_buy_all_sell_all_buys_the_load_and_sells_the_pv():
    """All load bought at retail, all PV sold at 0.08, whatever the battery or meter did.

    Per January day: load 10 kWh at 02:00 (off-peak 0.30), PV 20 kWh at 12:00.
    energy = 31 × (10 × 0.30 − 20 × 0.08) = 31 × 1.40 = 43.40; fixed 5.00 → 48.40.
    """
    t = tariff(TWO_PERIOD_UTC, charges="fixed_per_month = 5.0\n",
               export="scheme = 'buy_all_sell_all'\nflat_rate = 0.08\n",
               settlement="period_months = 1\nleftover_credit = 'pay_out'\n")

    def pattern(d, h):
        # the meter registers (import 0, export 10 at noon) are not what is billed
        if h == 2:
            return (0.0, 0.0, 10.0, 0.0)
        if h == 12:
            return (0.0, 10.0, 0.0, 20.0)
        return (0.0, 0.0, 0.0, 0.0)

    data = hourly(date(2025, 1, 1), date(2025, 1, 31), pattern, with_load=True)
    m = bill(t, data).months[0]
    assert m.import_kwh == pytest.approx(310) and m.export_kwh == pytest.approx(620)
    assert m.energy_charges == pytest.approx(43.40)
    assert m.billed == pytest.approx(48.40)


def test_buy_all_sell_all_without_load_and_pv_columns_is_refused():
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'buy_all_sell_all'\nflat_rate = 0.08\n",
               settlement="period_months = 1\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31), lambda d, h: (1.0, 0.0))
    with pytest.raises(UsageError, match="load_kwh and pv_kwh"):
        bill(t, data)


def test_nebraska_monthly_excess_is_credited_at_avoided_cost_and_paid_out():
    """Flat 0.10 retail, excess at 0.03, credits in dollars paid out at the anniversary.

    January, per day: import 5, export 3 → net +2 × 31 = 62 kWh × 0.10 = 6.20 billed.
    February, per day: import 1, export 4 → net −3 × 28 = −84 kWh: imports fully offset,
    the 84 kWh excess earn 84 × 0.03 = 2.52 of credit (not 84 × 0.10).
    March, per day: import 1 → 31 × 0.10 = 3.10, paid by the 2.52 credit → billed 0.58.
    """
    t = tariff(
        TWO_PERIOD_UTC.replace("peak = 0.50, off_peak = 0.30", "peak = 0.10, off_peak = 0.10"),
        export="scheme = 'nem'\ncredit = 'import'\n",
        settlement="period_months = 12\ncharges = 'monthly'\nleftover_credit = 'pay_out'\n"
        "monthly_excess_rate = 0.03\n",
    )

    def pattern(d, h):
        if h != 2 and h != 12:
            return (0.0, 0.0)
        if d.month == 1:
            return (5.0, 0.0) if h == 2 else (0.0, 3.0)
        if d.month == 2:
            return (1.0, 0.0) if h == 2 else (0.0, 4.0)
        return (1.0, 0.0) if h == 2 else (0.0, 0.0)

    b = bill(t, hourly(date(2025, 1, 1), date(2025, 3, 31), pattern))
    jan, feb, mar = b.months
    assert jan.billed == pytest.approx(6.20)
    assert feb.energy_charges == pytest.approx(-2.52) and feb.credit_balance == pytest.approx(2.52)
    assert mar.billed == pytest.approx(0.58)


def test_kwh_banking_offsets_later_kwh_and_cashes_out_at_the_anniversary():
    """kWh carryover, flat 0.20, anniversary in March, leftover cashed out at 0.05/kWh.

    January: net −100 kWh → 100 banked, nothing billed.
    February: net +60 → all offset by the bank (40 left), nothing billed.
    March: net −10 → 50 banked; the anniversary cashes out 50 × 0.05 = 2.50.
    """
    t = tariff(
        TWO_PERIOD_UTC.replace("peak = 0.50, off_peak = 0.30", "peak = 0.20, off_peak = 0.20"),
        export="scheme = 'nem'\ncredit = 'import'\n",
        settlement="period_months = 12\ntrue_up_month = 3\ncarryover = 'kwh'\n"
        "charges = 'monthly'\nleftover_credit = 'pay_out'\nsurplus_rate = 0.05\n",
    )
    net = {1: -100.0, 2: 60.0, 3: -10.0}

    def pattern(d, h):
        if d.day != 1 or h != 2:
            return (0.0, 0.0)
        v = net[d.month]
        return (v, 0.0) if v > 0 else (0.0, -v)

    b = bill(t, hourly(date(2025, 1, 1), date(2025, 3, 31), pattern))
    jan, feb, mar = b.months
    assert jan.kwh_bank == pytest.approx(100) and jan.billed == 0
    assert feb.kwh_bank == pytest.approx(40) and feb.billed == 0
    assert mar.kwh_bank == pytest.approx(50)  # shown before the anniversary cash-out
    tu = b.true_up
    assert tu.month == "2025-03" and tu.surplus_kwh == pytest.approx(50)
    assert tu.due == pytest.approx(-2.50)


def test_tiers_fill_per_billing_month_and_period():
    """Off-peak tiers: first 100 kWh at 0.30, the rest at 0.40. January imports 5 kWh a day
    off-peak = 155 kWh → 100 × 0.30 + 55 × 0.40 = 52.00."""
    t = tariff(TWO_PERIOD_UTC.replace(
        "all = { peak = 0.50, off_peak = 0.30 }",
        "all = { peak = 0.50, off_peak = [{ up_to_kwh = 100, rate = 0.30 }, { rate = 0.40 }] }"),
        export="scheme = 'none'\n", settlement="period_months = 1\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (5.0, 0.0) if h == 2 else (0.0, 0.0))
    assert bill(t, data).months[0].energy_charges == pytest.approx(52.00)


def test_daily_tier_limits_scale_with_days_in_the_month():
    """A 3 kWh/day tier: February's limit is 84 kWh. 4 kWh/day × 28 = 112 kWh
    → 84 × 0.30 + 28 × 0.40 = 36.40."""
    t = tariff(TWO_PERIOD_UTC.replace(
        "all = { peak = 0.50, off_peak = 0.30 }",
        "all = { peak = 0.50, off_peak = [{ up_to_kwh_per_day = 3, rate = 0.30 }, "
        "{ rate = 0.40 }] }"),
        export="scheme = 'none'\n", settlement="period_months = 1\n")
    data = hourly(date(2025, 2, 1), date(2025, 2, 28),
                  lambda d, h: (4.0, 0.0) if h == 2 else (0.0, 0.0))
    assert bill(t, data).months[0].energy_charges == pytest.approx(36.40)


def test_baseline_credit_applies_to_net_usage_up_to_the_allowance():
    """Baseline 0.10/kWh off up to 5 kWh/day. January: net usage 8 kWh/day (248 kWh) →
    the allowance is 155 kWh → credit 15.50; energy = 248 × 0.30 − 15.50 = 58.90."""
    t = tariff(TWO_PERIOD_UTC, baseline="credit_per_kwh = 0.10\n"
               "allowance_kwh_per_day = { all = 5 }\n",
               export="scheme = 'nem'\n", settlement="period_months = 1\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (8.0, 0.0) if h == 2 else (0.0, 0.0))
    m = bill(t, data).months[0]
    assert m.baseline_credit == pytest.approx(15.50)
    assert m.energy_charges == pytest.approx(58.90)


def test_monthly_minimum_tops_up_energy_plus_fixed_and_is_never_refunded():
    """Fixed 5.00, minimum 20.00 a month (SAM's rule: the minimum tops up max(0, energy +
    fixed)). January: energy 31 × 1 kWh × 0.30 = 9.30 → 9.30 + 5 = 14.30 < 20 → top-up 5.70,
    billed 20.00. February: 28 × 3 × 0.30 = 25.20 → no top-up, billed 30.20."""
    t = tariff(TWO_PERIOD_UTC, charges="fixed_per_month = 5.0\nminimum_per_month = 20.0\n",
               export="scheme = 'none'\n", settlement="period_months = 1\n")
    data = hourly(date(2025, 1, 1), date(2025, 2, 28),
                  lambda d, h: ((1.0 if d.month == 1 else 3.0), 0.0) if h == 2 else (0.0, 0.0))
    jan, feb = bill(t, data).months
    assert jan.minimum == pytest.approx(5.70) and jan.billed == pytest.approx(20.00)
    assert feb.minimum == 0 and feb.billed == pytest.approx(30.20)


def test_annual_minimum_tops_up_the_year_at_the_true_up():
    """Annual minimum 200.00; every month's energy is 31/30/28 × 0.30 = ~9 → the year's
    energy is 365 × 0.30 = 109.50 → top-up 90.50 at the December true-up."""
    t = tariff(TWO_PERIOD_UTC, charges="annual_minimum = 200.0\n",
               export="scheme = 'nem'\n",
               settlement="period_months = 12\ncharges = 'monthly'\n")
    data = hourly(date(2025, 1, 1), date(2025, 12, 31),
                  lambda d, h: (1.0, 0.0) if h == 2 else (0.0, 0.0))
    b = bill(t, data)
    assert b.true_up.annual_minimum_topup == pytest.approx(90.50)
    assert b.annual_total == pytest.approx(200.00)


def test_leftover_credit_rolls_over_into_the_next_period():
    """Monthly settlement with roll_over: January's 31 × 1 × 0.50 = 15.50 credit pays
    February's 28 × 0.30 = 8.40; 7.10 is left."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\ncredit = 'import'\n",
               settlement="period_months = 1\nleftover_credit = 'roll_over'\n")

    def pattern(d, h):
        if d.month == 1:
            return (0.0, 1.0) if h == 17 else (0.0, 0.0)
        return (1.0, 0.0) if h == 2 else (0.0, 0.0)

    jan, feb = bill(t, hourly(date(2025, 1, 1), date(2025, 2, 28), pattern)).months
    assert jan.credit_balance == pytest.approx(15.50) and jan.billed == 0
    assert feb.billed == 0 and feb.credit_balance == pytest.approx(7.10)


def test_leftover_credit_paid_out_each_month_when_every_month_settles_alone():
    """Monthly settlement with pay_out: January's 15.50 credit is paid on its statement."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\ncredit = 'import'\n",
               settlement="period_months = 1\nleftover_credit = 'pay_out'\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (0.0, 1.0) if h == 17 else (0.0, 0.0))
    b = bill(t, data)
    assert b.months[0].billed == pytest.approx(-15.50)
    assert b.true_up is None


def test_dst_days_are_billed_by_local_clock_hours():
    """PG&E periods in local time: on 2025-03-09 (23 h) and 2025-11-02 (25 h), 1 kWh every
    hour. March: 31 days × 5 peak hours = 155 peak kWh; the other 31 × 24 − 1 − 155 = 588 kWh
    are off-peak (one hour fewer). November: 30 × 19 + 1 = 571 off-peak kWh."""
    t = tariff(TWO_PERIOD_UTC.replace('timezone = "UTC"',
                                      'timezone = "America/Los_Angeles"'),
               export="scheme = 'none'\n", settlement="period_months = 1\n",
               charges="fixed_per_day = 1.0\n")
    mar = bill(t, hourly(date(2025, 3, 1), date(2025, 3, 31), lambda d, h: (1.0, 0.0),
                         tz="America/Los_Angeles")).months[0]
    assert mar.import_kwh == pytest.approx(743)
    assert mar.energy_charges == pytest.approx(155 * 0.50 + 588 * 0.30)
    assert mar.fixed == pytest.approx(31.0)  # daily charges count days, not hours / 24
    nov = bill(t, hourly(date(2025, 11, 1), date(2025, 11, 30), lambda d, h: (1.0, 0.0),
                         tz="America/Los_Angeles")).months[0]
    assert nov.import_kwh == pytest.approx(721)
    assert nov.energy_charges == pytest.approx(150 * 0.50 + 571 * 0.30)
    assert nov.fixed == pytest.approx(30.0)


def test_holidays_are_billed_as_weekends():
    """Weekday peak only; 2025-07-04 (a Friday) is a US holiday: its 17:00 kWh is off-peak.
    July 2025 has 23 weekdays, 22 working days after the holiday."""
    text = TWO_PERIOD_UTC.replace('hours = [[16, 21]]', 'hours = [[16, 21]]\ndays = "weekdays"')
    data = hourly(date(2025, 7, 1), date(2025, 7, 31),
                  lambda d, h: (1.0, 0.0) if h == 17 else (0.0, 0.0))
    plain = tariff(text, export="scheme = 'none'\n", settlement="period_months = 1\n")
    with_hol = tariff(text.replace('[calendar]', '[calendar]\nholidays = "US"'),
                      export="scheme = 'none'\n", settlement="period_months = 1\n")
    assert bill(plain, data).months[0].energy_charges == pytest.approx(23 * 0.5 + 8 * 0.3)
    assert bill(with_hol, data).months[0].energy_charges == pytest.approx(22 * 0.5 + 9 * 0.3)


def test_meter_read_day_shifts_billing_months():
    """Read day 15: billing month 2025-01 runs 15 Jan to 14 Feb (31 days)."""
    t = tariff(TWO_PERIOD_UTC.replace('[calendar]', '[calendar]\nmeter_read_day = 15'),
               export="scheme = 'none'\n", settlement="period_months = 1\n",
               charges="fixed_per_day = 1.0\n")
    data = hourly(date(2025, 1, 15), date(2025, 3, 14), lambda d, h: (1.0, 0.0))
    b = bill(t, data)
    assert [m.month for m in b.months] == ["2025-01", "2025-02"]
    assert [m.days for m in b.months] == [31, 28]
    assert b.months[0].import_kwh == pytest.approx(31 * 24)


def test_hourly_netting_nets_imports_and_exports_inside_each_hour():
    """15-minute data, each off-peak hour: import 1 kWh in its first quarter, export 1 kWh in
    its second. Instantaneous netting bills 1 kWh import per hour; hourly netting bills none.
    With net billing (sell 0.10) over one day's 19 off-peak hours:
    instantaneous = 19 × (0.30 − 0.10) = 3.80, hourly = 0."""
    def data(netting):
        return tariff(TWO_PERIOD_UTC, export=f"scheme = 'net_billing'\nflat_rate = 0.10\n"
                      f"netting = '{netting}'\n", settlement="period_months = 1\n"
                      "leftover_credit = 'pay_out'\n")

    n = 31 * 96
    q = np.arange(n) % 4
    hour = (np.arange(n) // 4) % 24
    off = (hour < 16) | (hour >= 21)
    first_day = np.arange(n) < 96
    imp = np.where(first_day & off & (q == 0), 1.0, 0.0)
    exp = np.where(first_day & off & (q == 1), 1.0, 0.0)
    d = IntervalData.regular(1735689600, 900, imp, exp)  # 2025-01-01T00:00Z
    assert bill(data("instantaneous"), d).months[0].energy_charges == pytest.approx(3.80)
    assert bill(data("hourly"), d).months[0].energy_charges == pytest.approx(0.0)
    assert bill(data("15min"), d).months[0].energy_charges == pytest.approx(3.80)


def test_nbc_is_paid_on_gross_imports_whatever_the_netting():
    """The same 15-minute data under NEM with hourly netting: NBC still on the 19 kWh."""
    t = tariff(TWO_PERIOD_UTC, charges="nbc_per_kwh = 0.03\n",
               export="scheme = 'nem'\nnetting = 'hourly'\n", settlement="period_months = 1\n")
    n = 31 * 96
    imp = np.where((np.arange(n) < 96) & (np.arange(n) % 4 == 0) & (np.arange(n) // 4 < 16),
                   1.0, 0.0)
    d = IntervalData.regular(1735689600, 900, imp, np.zeros(n))
    assert bill(t, d).months[0].nbc == pytest.approx(16 * 0.03)


def test_a_partial_month_is_refused_unless_gaps_are_allowed():
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'none'\n", settlement="period_months = 1\n",
               charges="fixed_per_month = 31.0\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 10), lambda d, h: (1.0, 0.0))
    with pytest.raises(UsageError, match=r"2025-01 \(504 of 744 intervals missing\)"):
        bill(t, data)
    b = bill(t, data, allow_gaps=True)
    assert b.months[0].fixed == pytest.approx(10.0)  # pro-rated: 240 of 744 hours
    assert any("partial" in n for n in b.notes)


def test_savings_compare_the_load_alone_with_the_actual_bill():
    """Load 3 kWh at 17:00 every January day, of which PV+battery cover 2 → import 1.
    Load alone: 93 × 0.50 = 46.50; actual: 31 × 0.50 = 15.50 → savings 31.00."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\n", settlement="period_months = 1\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (1.0, 0.0, 3.0, 0.0) if h == 17 else (0, 0, 0, 0),
                  with_load=True)
    actual = bill(t, data).annual_total
    base = bill(t, load_only(data)).annual_total
    assert base - actual == pytest.approx(31.00)


def test_bill_json_has_the_contract_keys():
    b = bill(nem2ps_tariff(), hourly(date(2025, 1, 1), date(2025, 12, 31),
                                     lambda d, h: (0.5, 0.2)))
    j = b.to_json()
    assert set(j) >= {"tariff", "months", "true_up", "annual_total"}
    assert set(j["months"][0]) >= {"month", "import_kwh", "export_kwh", "energy_charges", "nbc",
                                   "fixed", "minimum", "export_cap_excess_kwh", "billed",
                                   "credit_balance"}
    assert set(j["true_up"]) >= {"month", "due", "surplus_kwh", "surplus_credit",
                                 "forfeited_credit"}
    assert j["months"][0]["month"] == "2025-01"


def test_billing_state_mid_month_reports_cap_used_and_period_totals():
    """History to 2025-03-10 under the NEM2-PS test tariff (cap 100 kWh/month).

    Jan and Feb as in the full-year test (Cx −38.63 and −39.44); March 1-10: per day 1 kWh
    imported, 5 exported → 50 kWh exported so far, 50 of the 100 kWh cap left.
    The March cap is not pro-rated: the cap is the month's, used so far is 50.
    """
    t = nem2ps_tariff()

    def pattern(d, h):
        return (1.0, 0.0) if h == 2 else (0.0, 5.0) if h == 17 else (0.0, 0.0)

    from optimizer.billing import billing_state

    s = billing_state(t, hourly(date(2025, 1, 1), date(2025, 3, 10), pattern))
    assert s.month == "2025-03"
    assert s.export_cap_kwh == 100 and s.export_cap_used_kwh == pytest.approx(50)
    assert s.export_cap_remaining_kwh == pytest.approx(50)
    assert s.period_months == 3 and s.true_up_month == 12
    # March so far: 10 × 0.27 − 50 × 0.47 = 2.70 − 23.50 = −20.80
    assert s.period_energy_charges == pytest.approx(-38.63 - 39.44 - 20.80)
    assert s.credit_balance == pytest.approx(38.63 + 39.44 + 20.80)
    assert s.period_nbc == pytest.approx((31 + 28 + 10) * 0.03)
    assert s.month_net_kwh_by_period == pytest.approx({"peak": -50.0, "off_peak": 10.0})


def test_month_tier_basis_fills_tiers_with_the_months_total_pro_rata():
    """Tiers of 100 kWh on both periods: peak 0.50 then 0.70, off-peak 0.30 then 0.40.
    January: 62 kWh peak (2/day at 17:00) and 93 off-peak (3/day at 02:00) = 155 kWh.

    tier_basis = "period": peak 62 ≤ 100 → 62 × 0.50 = 31.00; off-peak 93 ≤ 100 → 27.90;
      total 58.90 (neither period reaches its second tier).
    tier_basis = "month": the 155 kWh fill 100 in tier 1 and 55 in tier 2, shared 62:93
      (40 % peak, 60 % off-peak): peak 40 × 0.50 + 22 × 0.70 = 35.40,
      off-peak 60 × 0.30 + 33 × 0.40 = 31.20; total 66.60.
    """
    rates = ("all = { peak = [{ up_to_kwh = 100, rate = 0.50 }, { rate = 0.70 }], "
             "off_peak = [{ up_to_kwh = 100, rate = 0.30 }, { rate = 0.40 }] }")
    text = TWO_PERIOD_UTC.replace("all = { peak = 0.50, off_peak = 0.30 }", rates)
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (2.0, 0.0) if h == 17 else (3.0, 0.0) if h == 2 else (0.0, 0.0))
    per_period = tariff(text, export="scheme = 'none'\n", settlement="period_months = 1\n")
    per_month = tariff('tier_basis = "month"\n' + text, export="scheme = 'none'\n",
                       settlement="period_months = 1\n")
    assert bill(per_period, data).months[0].energy_charges == pytest.approx(58.90)
    assert bill(per_month, data).months[0].energy_charges == pytest.approx(66.60)


def test_hourly_netting_keeps_the_two_fall_back_hours_apart():
    """2025-11-02 in Los Angeles has two 01:00 hours. Import 1 kWh in the first (PDT) and
    export 1 kWh in the second (PST): hourly netting must not net them together.
    Net billing, off-peak 0.30, sell 0.05 → 0.30 − 0.05 = 0.25."""
    t = tariff(TWO_PERIOD_UTC.replace('timezone = "UTC"', 'timezone = "America/Los_Angeles"'),
               export="scheme = 'net_billing'\nflat_rate = 0.05\nnetting = 'hourly'\n",
               settlement="period_months = 1\nleftover_credit = 'pay_out'\n")
    first_0100 = 1762070400  # 2025-11-02T01:00-07:00 = 08:00Z
    month_start = 1761980400  # 2025-11-01T00:00-07:00
    n = (1764576000 - month_start) // 900  # to 2025-12-01T00:00-08:00
    imp, exp = np.zeros(n), np.zeros(n)
    imp[(first_0100 - month_start) // 900] = 1.0  # 01:00 PDT
    exp[(first_0100 + 3600 - month_start) // 900] = 1.0  # 01:00 PST, an hour later
    d = IntervalData.regular(month_start, 900, imp, exp)
    assert bill(t, d).months[0].energy_charges == pytest.approx(0.25)


def test_annual_minimum_applies_per_year_whatever_the_settlement_period():
    """Annual minimum 400 with quarterly at_true_up settlement: the year's charges are
    365 × 1 kWh × 0.30 = 109.50 (NBC 0, no MDC) → the December anniversary tops up 290.50,
    so the year costs exactly 400.00."""
    t = tariff(TWO_PERIOD_UTC, charges="annual_minimum = 400.0\n", export="scheme = 'nem'\n",
               settlement="period_months = 3\ncharges = 'at_true_up'\n")
    data = hourly(date(2025, 1, 1), date(2025, 12, 31),
                  lambda d, h: (1.0, 0.0) if h == 2 else (0.0, 0.0))
    b = bill(t, data)
    assert len(b.true_ups) == 4
    assert b.true_ups[-1].annual_minimum_topup == pytest.approx(290.50)
    assert b.annual_total == pytest.approx(400.00)


def test_two_year_settlement_bills_the_annual_minimum_each_year():
    """period_months = 24 anchored at 2025-12, two years of no use, annual minimum 120:
    both anniversaries top up 120 → 240 in all, one true-up."""
    t = tariff(TWO_PERIOD_UTC, charges="annual_minimum = 120.0\n", export="scheme = 'nem'\n",
               settlement="period_months = 24\nfirst_true_up = '2025-12'\n")
    b = bill(t, hourly(date(2024, 1, 1), date(2025, 12, 31), lambda d, h: (0.0, 0.0)))
    assert [tu.month for tu in b.true_ups] == ["2025-12"]
    assert b.months[11].minimum == pytest.approx(120.0)  # 2024-12 anniversary
    assert b.annual_total == pytest.approx(240.0)


def test_settlement_periods_start_at_the_first_true_up_month_in_the_data():
    """Without first_true_up, a 24-month period closes at the first true-up month on or
    after the data's start, whatever the year's parity."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\n", settlement="period_months = 24\n")
    for start in (date(2024, 1, 1), date(2025, 1, 1)):
        end = date(start.year + 1, 12, 31)
        b = bill(t, hourly(start, end, lambda d, h: (0.0, 0.0)))
        assert [tu.month for tu in b.true_ups] == [f"{start.year}-12", f"{end.year}-12"]


def test_partial_month_prorates_the_baseline_allowance():
    """Baseline 0.10/kWh up to 5 kWh/day; data for 10 of January's 31 days, 8 kWh/day:
    allowance 10 × 5 = 50 kWh (not 155) → credit 5.00; energy 80 × 0.30 − 5.00 = 19.00."""
    t = tariff(TWO_PERIOD_UTC, baseline="credit_per_kwh = 0.10\n"
               "allowance_kwh_per_day = { all = 5 }\n",
               export="scheme = 'nem'\n", settlement="period_months = 1\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 10),
                  lambda d, h: (8.0, 0.0) if h == 2 else (0.0, 0.0))
    m = bill(t, data, allow_gaps=True).months[0]
    assert m.baseline_credit == pytest.approx(5.00)
    assert m.energy_charges == pytest.approx(19.00)


def test_data_cut_in_another_time_zone_gets_a_hint():
    t = tariff(TWO_PERIOD_UTC.replace('timezone = "UTC"', 'timezone = "America/Chicago"'),
               export="scheme = 'none'\n", settlement="period_months = 1\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31), lambda d, h: (1.0, 0.0))  # UTC days
    with pytest.raises(UsageError, match="another time zone than the tariff's"):
        bill(t, data)


def test_nem_surplus_tiers_first_or_fill():
    """NEM, $ credits, off-peak tiers: 100 kWh at 0.30, then 0.40. January exports 5 kWh a
    day off-peak, 155 kWh net.

    surplus_tiers = "first" (default): −155 × 0.30 = −46.50.
    surplus_tiers = "fill" (SAM's): the surplus fills the tiers as use would:
      −(100 × 0.30 + 55 × 0.40) = −52.00.
    """
    text = TWO_PERIOD_UTC.replace(
        "all = { peak = 0.50, off_peak = 0.30 }",
        "all = { peak = 0.50, off_peak = [{ up_to_kwh = 100, rate = 0.30 }, { rate = 0.40 }] }")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (0.0, 5.0) if h == 12 else (0.0, 0.0))
    settlement = "period_months = 1\nleftover_credit = 'pay_out'\n"
    first = tariff(text, export="scheme = 'nem'\ncredit = 'import'\n", settlement=settlement)
    fill = tariff(text, export="scheme = 'nem'\ncredit = 'import'\nsurplus_tiers = 'fill'\n",
                  settlement=settlement)
    assert first.spec.export.surplus_tiers == "first"
    assert bill(first, data).months[0].energy_charges == pytest.approx(-46.50)
    assert bill(fill, data).months[0].energy_charges == pytest.approx(-52.00)


def test_nem_surplus_fill_with_month_tier_basis_fills_the_months_tiers_separately():
    """tier_basis = "month", tiers of 100 kWh on both periods (peak 0.50/0.70, off-peak
    0.30/0.40), surplus_tiers = "fill". January: 62 kWh imported at peak (2/day at 17:00),
    155 exported off-peak (5/day at 12:00). Use and surplus each fill the month's tiers from
    the first, as SAM's options 0/1 do: peak 62 ≤ 100 → 31.00; off-peak surplus 100 × 0.30
    + 55 × 0.40 = 52.00 credited; energy 31.00 − 52.00 = −21.00."""
    rates = ("all = { peak = [{ up_to_kwh = 100, rate = 0.50 }, { rate = 0.70 }], "
             "off_peak = [{ up_to_kwh = 100, rate = 0.30 }, { rate = 0.40 }] }")
    t = tariff('tier_basis = "month"\n'
               + TWO_PERIOD_UTC.replace("all = { peak = 0.50, off_peak = 0.30 }", rates),
               export="scheme = 'nem'\ncredit = 'import'\nsurplus_tiers = 'fill'\n",
               settlement="period_months = 1\nleftover_credit = 'pay_out'\n")
    data = hourly(date(2025, 1, 1), date(2025, 1, 31),
                  lambda d, h: (2.0, 0.0) if h == 17 else (0.0, 5.0) if h == 12 else (0.0, 0.0))
    assert bill(t, data).months[0].energy_charges == pytest.approx(-21.00)


def test_surplus_tiers_fill_needs_nem():
    with pytest.raises(TariffError, match="surplus_tiers"):
        tariff(TWO_PERIOD_UTC,
               export="scheme = 'net_billing'\nflat_rate = 0.05\nsurplus_tiers = 'fill'\n")


SEASONAL_PAIRS = """
id = "banking"
name = "kWh banking across seasons"
timezone = "UTC"
[calendar]
seasons = { winter = [1, 2, 3], summer = [4, 5, 6, 7, 8, 9, 10, 11, 12] }
[[periods]]
name = "w_day"
hours = [[6, 18]]
seasons = ["winter"]
[[periods]]
name = "w_night"
hours = [[0, 6], [18, 24]]
seasons = ["winter"]
[[periods]]
name = "s_day"
hours = [[6, 18]]
seasons = ["summer"]
[[periods]]
name = "s_night"
hours = [[0, 6], [18, 24]]
seasons = ["summer"]
[import_rates]
winter = { w_day = 0.20, w_night = 0.20 }
summer = { s_day = 0.30, s_night = 0.25 }
"""


@pytest.mark.parametrize(("pairing", "april"), [("period", 18.00),
                                                 ("time_of_day", 0.0)])
def test_kwh_bank_pairing_by_period_or_time_of_day(pairing: str, april: float):
    """Winter and summer name their periods apart (as URDB imports do). March banks 100 kWh
    in w_day (exports at 12:00); April imports 60 kWh in s_day (2 kWh at 12:00 on 30 days).

    kwh_bank_pairing = "period": w_day's bank never meets s_day: April pays 60 × 0.30.
    "time_of_day" (SAM's): at hour 11 March has w_day and April s_day, so the bank moves
    there and April pays nothing (40 kWh stay banked in s_day).
    """
    t = tariff(SEASONAL_PAIRS, export="scheme = 'nem'\ncredit = 'import'\n",
               settlement="period_months = 12\ntrue_up_month = 12\ncarryover = 'kwh'\n"
               f"kwh_bank_pairing = '{pairing}'\n")
    pattern = {3: (0.0, 100.0 / 31), 4: (2.0, 0.0)}
    data = hourly(date(2025, 3, 1), date(2025, 4, 30),
                  lambda d, h: pattern[d.month] if h == 12 else (0.0, 0.0))
    mar, apr = bill(t, data).months
    assert mar.kwh_bank == pytest.approx(100.0)
    assert apr.billed == pytest.approx(april)
    assert apr.kwh_bank == pytest.approx(100.0 if pairing == "period" else 40.0)
    assert list(t.kwh_bank_targets(3, 4)) == ([0, 1, 2, 3] if pairing == "period"
                                              else [2, 3, 2, 3])
