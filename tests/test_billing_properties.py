"""Properties of the billing engine that must hold for any data (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.billing import bill
from optimizer.intervals import IntervalData
from tests.helpers import TWO_PERIOD_UTC, tariff

JAN_2025 = 1735689600  # 2025-01-01T00:00Z
HOURS = 31 * 24 + 28 * 24  # January and February

NEM2PS = tariff(
    TWO_PERIOD_UTC,
    charges="nbc_per_kwh = 0.03\nminimum_per_day = 0.4\n",
    export="scheme = 'nem'\ncredit = 'import_minus_nbc'\nnetting = 'billing_period'\n",
    settlement="period_months = 12\ncharges = 'at_true_up'\nsurplus_rate = 0.04\n",
    export_cap="monthly_kwh = [150, 150, 150, 150, 150, 150, 150, 150, 150, 150, 150, 150]\n",
)


def hourly_series(draw_seed: int, export_scale: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(draw_seed)
    imp = rng.gamma(0.6, 0.8, HOURS) * (rng.random(HOURS) < 0.6)
    exp = rng.gamma(0.6, export_scale, HOURS) * (rng.random(HOURS) < 0.4)
    return imp, exp


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), export_scale=st.floats(0.0, 3.0),
       split_seed=st.integers(0, 2**32 - 1))
def test_nem_bill_does_not_change_when_intervals_are_split_finer(seed, export_scale,
                                                                  split_seed):
    """NEM with per-period netting over the billing period depends only on each period's
    totals (and gross import totals for NBC, gross export totals for the cap), so cutting
    every hour into four 15-minute intervals with the same hourly totals — in any
    proportions — gives the same bill."""
    imp, exp = hourly_series(seed, export_scale)
    coarse = IntervalData.regular(JAN_2025, 3600, imp, exp)
    rng = np.random.default_rng(split_seed)
    w_imp = rng.dirichlet(np.ones(4), HOURS)
    w_exp = rng.dirichlet(np.ones(4), HOURS)
    fine = IntervalData.regular(JAN_2025, 900, (imp[:, None] * w_imp).ravel(),
                                (exp[:, None] * w_exp).ravel())
    a, b = bill(NEM2PS, coarse), bill(NEM2PS, fine)
    assert b.annual_total == pytest.approx(a.annual_total, abs=1e-6)
    for ma, mb in zip(a.months, b.months, strict=True):
        assert mb.energy_charges == pytest.approx(ma.energy_charges, abs=1e-6)
        assert mb.nbc == pytest.approx(ma.nbc, abs=1e-9)
        assert mb.export_cap_excess_kwh == pytest.approx(ma.export_cap_excess_kwh, abs=1e-9)
    assert b.true_up.due == pytest.approx(a.true_up.due, abs=1e-6)


def _tariff_with_rates(scheme: str, peak: float, off: float, tiered: bool):
    off_value = (f"[{{ up_to_kwh = 120, rate = {off} }}, {{ rate = {off + 0.07} }}]"
                 if tiered else str(off))
    text = TWO_PERIOD_UTC.replace("all = { peak = 0.50, off_peak = 0.30 }",
                                  f"all = {{ peak = {peak}, off_peak = {off_value} }}")
    export = {
        "net_billing": "scheme = 'net_billing'\nflat_rate = 0.05\n",
        "none": "scheme = 'none'\n",
        "nem": "scheme = 'nem'\n",
    }[scheme]
    return tariff(text, charges="nbc_per_kwh = 0.02\nfixed_per_month = 3\n"
                  "minimum_per_month = 12\n", export=export,
                  settlement="period_months = 12\ncharges = 'monthly'\n"
                  "leftover_credit = 'forfeit'\n")


@settings(max_examples=40, deadline=None)
@given(scheme=st.sampled_from(["net_billing", "none", "nem"]),
       seed=st.integers(0, 2**32 - 1),
       peak=st.floats(0.05, 0.8), off=st.floats(0.05, 0.8),
       raise_peak=st.booleans(), delta=st.floats(0.001, 0.5), tiered=st.booleans())
def test_raising_an_import_rate_never_lowers_the_bill(scheme, seed, peak, off, raise_peak,
                                                      delta, tiered):
    """Raising any import rate never lowers a bill.

    Under net billing and with no export credit, exports are valued independently of the
    import rates, so this holds for any data. Under NEM an exported kWh is credited *at* the
    import rate, so a higher rate rightly lowers an exporter's bill: there the property is
    checked on homes that export nothing.
    """
    imp, exp = hourly_series(seed, 1.0)
    if scheme == "nem":
        exp = np.zeros_like(exp)
    data = IntervalData.regular(JAN_2025, 3600, imp, exp)
    base = bill(_tariff_with_rates(scheme, peak, off, tiered), data).annual_total
    if raise_peak:
        higher = _tariff_with_rates(scheme, peak + delta, off, tiered)
    else:
        higher = _tariff_with_rates(scheme, peak, off + delta, tiered)
    assert bill(higher, data).annual_total >= base - 1e-9
