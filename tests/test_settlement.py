"""The NEM true-up rules (optimizer/settlement.py), by hand, and the bill engine using them."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.billing import bill
from optimizer.intervals import IntervalData
from optimizer.settlement import (
    PeriodTotals,
    closing_month,
    leftover_credit,
    net_surplus_kwh,
    settles_at,
    true_up_anchor,
    true_up_charges,
    true_up_due,
)
from optimizer.tariff import load_tariff


def test_a_period_ending_in_charges_pays_them_and_the_nbc_beyond_the_minimum():
    """ΣCx $200, ΣNBC $60, ΣMDC $143: charges = max(60 + 200, 143) = 260; the $143 of
    minimums were billed monthly, so the true-up asks 260 − 143 = $117."""
    t = PeriodTotals(energy_charges=200.0, nbc=60.0, import_kwh=3000.0,
                     credited_export_kwh=2000.0, minimum=143.0)
    assert true_up_charges(t) == pytest.approx(260.0)
    assert true_up_due(t, 0.04) == pytest.approx(117.0)
    assert leftover_credit(t.energy_charges) == 0.0


def test_a_period_in_credit_pays_only_what_the_minimum_does_not_cover_and_forfeits_the_rest():
    """ΣCx −$150 (credit), ΣNBC $40, ΣMDC $143: charges = max(40 + 0, 143) = 143, all billed
    already: due 0, the $150 of credit is left over (forfeited under NEM2)."""
    t = PeriodTotals(energy_charges=-150.0, nbc=40.0, import_kwh=3000.0,
                     credited_export_kwh=2500.0, minimum=143.0)
    assert true_up_due(t, 0.04) == pytest.approx(0.0)
    assert leftover_credit(t.energy_charges) == pytest.approx(150.0)


def test_the_nsc_pays_the_surplus_of_credited_exports_over_imports():
    """5,000 kWh credited out, 4,000 in: 1,000 kWh surplus × $0.04 = $40 off the true-up."""
    t = PeriodTotals(energy_charges=-300.0, nbc=200.0, import_kwh=4000.0,
                     credited_export_kwh=5000.0, minimum=143.0)
    assert net_surplus_kwh(t.credited_export_kwh, t.import_kwh) == pytest.approx(1000.0)
    # charges = max(200 + 0, 143) = 200; due = 200 − 143 − 40 = 17
    assert true_up_due(t, 0.04) == pytest.approx(17.0)
    assert net_surplus_kwh(3000.0, 4000.0) == 0.0  # never negative


@pytest.mark.parametrize("month, true_up_month, period, closes", [
    (2025 * 12 + 5, 4, 12, 2026 * 12 + 4),  # May 2025 is settled in April 2026
    (2025 * 12 + 4, 4, 12, 2025 * 12 + 4),  # April 2025 closes its own period
    (2024 * 12 + 12, 4, 12, 2025 * 12 + 4),  # December 2024 in April 2025
    (2025 * 12 + 1, 12, 12, 2025 * 12 + 12),
    (2025 * 12 + 7, 12, 1, 2025 * 12 + 7),  # monthly settlement: every month alone
])
def test_which_true_up_settles_a_month(month, true_up_month, period, closes):
    anchor = true_up_anchor(2024 * 12 + 1, true_up_month)
    assert closing_month(month, anchor, period) == closes
    assert settles_at(month, closes, anchor, period)


def test_the_first_true_up_of_the_tariff_anchors_the_cycle():
    """A six-month cycle whose first true-up was March 2024: periods end in March and
    September, so July 2025 is settled in September 2025."""
    anchor = true_up_anchor(2025 * 12 + 7, 3, "2024-03")
    assert anchor == 2024 * 12 + 3
    assert closing_month(2025 * 12 + 7, anchor, 6) == 2025 * 12 + 9


@pytest.mark.parametrize("tariff_id", ["pge-ev2a-nem2-2024", "pge-ev2a-nem2ps-2024",
                                       "pge-ev2a-nem1-2024", "pge-etouc-nem2-2024"])
@pytest.mark.parametrize("true_up_month", [12, 4])
def test_the_bill_engine_settles_by_these_rules(tariff_id, true_up_month):
    """Every true-up the engine bills equals true_up_due on its own months' sums (with an
    April true-up, 2025 holds January–April, settled in April, and May–December, shown as
    if trued up in December)."""
    from trueup.example import example_year

    tariff = load_tariff(tariff_id)
    b = bill(tariff, example_year(2025), true_up_month=true_up_month)
    periods = sorted({m.settlement_period for m in b.months})
    assert len(periods) == len(b.true_ups) == (1 if true_up_month == 12 else 2)
    for tu, period in zip(b.true_ups, periods, strict=True):
        months = [m for m in b.months if m.settlement_period == period]
        t = sum((PeriodTotals(m.energy_charges, m.nbc, m.import_kwh, m.credited_export_kwh,
                              m.minimum) for m in months), PeriodTotals())
        assert tu.due == pytest.approx(true_up_due(t, tariff.spec.settlement.surplus_rate),
                                       abs=1e-9)
        assert tu.forfeited_credit == pytest.approx(leftover_credit(t.energy_charges), abs=1e-9)


def test_exports_over_the_nem_ps_cap_earn_no_nsc():
    """NEM2 Paired Storage, one month of 31 days: 1,000 kWh exported against a 310 kWh cap,
    400 kWh imported. Gross, the month would be 600 kWh in surplus; credited, it is
    310 − 400 < 0: no surplus, no NSC (exports the cap de-credits are not eligible
    generation). The period is billed as settling in that month."""
    tariff = load_tariff("pge-ev2a-nem2ps-2024")
    start = 1735718400  # 2025-01-01 00:00 PST
    n = 31 * 24
    imp = np.full(n, 400.0 / n)
    exp = np.full(n, 1000.0 / n)
    b = bill(tariff, IntervalData.regular(start, 3600, imp, exp), true_up_month=1)
    m, tu = b.months[0], b.true_ups[0]
    assert m.export_cap_excess_kwh == pytest.approx(690.0)
    assert m.credited_export_kwh == pytest.approx(310.0)
    assert tu.surplus_kwh == 0.0 and tu.surplus_credit == 0.0
