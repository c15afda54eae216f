"""The projection of a settlement period (optimizer/projection.py): the bill engine over
history and the expected rest, in scenarios."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.behaviour import (
    BatterySpec,
    ExportRule,
    Mode,
    Settings,
    simulate,
    simulate_self_powered,
)
from optimizer.projection import (
    ProjectionMemo,
    project_period,
    rest_book,
    scenario_grid,
    settlement_period,
    weighted_quantile,
)
from optimizer.tariff import load_tariff
from trueup.cli import main
from trueup.example import example_year, write_csv

TZ = "America/Los_Angeles"


@pytest.fixture(scope="module")
def year() -> object:
    return example_year(2025)


@pytest.mark.parametrize("tariff_id", ["pge-ev2a-nem2-2024", "pge-ev2a-nem2ps-2024",
                                       "pge-ev2a-nem1-2024", "pge-etouc-nem2-2024"])
def test_with_nothing_left_to_forecast_the_projection_is_trueup_bill_to_the_cent(
        tariff_id, year, tmp_path, capsys):
    """History covering the whole period: the projection's true-up is what `trueup bill`
    prints for the same intervals (the CLI on the interval CSV), to the cent, and the
    period is all metered."""
    csv = tmp_path / "year.csv"
    write_csv(year, csv)
    assert main(["bill", "--tariff", tariff_id, "--usage", str(csv), "--json"]) == 0
    billed = json.loads(capsys.readouterr().out)["true_up"]
    tariff = load_tariff(tariff_id)
    from adapters.usage import read_usage

    history = read_usage(str(csv), tz=TZ)  # the same 4-decimal kWh the CLI billed
    period = settlement_period(tariff, int(year.start_utc[0]), 12)
    proj = project_period(tariff, period, None, history=history, true_up_month=12)
    assert proj.measured_fraction == 1.0 and proj.planned_fraction == 0.0
    assert round(proj.due, 2) == billed["due"]
    assert round(float(proj.forfeited[0]), 2) == billed["forfeited_credit"]
    assert proj.quantile(0.1) == proj.quantile(0.9) == proj.due  # nothing is uncertain


def test_an_april_true_up_projects_may_to_april_from_two_calendar_years(tmp_path, capsys):
    """True-up in April: the period May 2024 – April 2025 projected from the intervals of
    both years equals `trueup bill --true-up-month 4` on that span."""
    both = example_year(2024)
    nxt = example_year(2025)
    from optimizer.intervals import IntervalData

    data = IntervalData(
        start_utc=np.concatenate([both.start_utc, nxt.start_utc]), interval_s=900,
        import_kwh=np.concatenate([both.import_kwh, nxt.import_kwh]),
        export_kwh=np.concatenate([both.export_kwh, nxt.export_kwh]),
        load_kwh=np.concatenate([both.load_kwh, nxt.load_kwh]),
        pv_kwh=np.concatenate([both.pv_kwh, nxt.pv_kwh]),
        battery_kwh=np.concatenate([both.battery_kwh, nxt.battery_kwh]))
    tariff = load_tariff("pge-ev2a-nem2-2024")
    period = settlement_period(tariff, int(nxt.start_utc[0]), 4)
    assert period.label == "2025-04"
    span = data.select((data.start_utc >= period.start_utc) & (data.start_utc < period.end_utc))
    csv = tmp_path / "may-april.csv"
    write_csv(span, csv)
    assert main(["bill", "--tariff", "pge-ev2a-nem2-2024", "--usage", str(csv),
                 "--true-up-month", "4", "--json"]) == 0
    billed = json.loads(capsys.readouterr().out)["true_up"]
    from adapters.usage import read_usage

    proj = project_period(tariff, period, None, history=read_usage(str(csv), tz=TZ),
                          true_up_month=4)
    assert round(proj.due, 2) == billed["due"]


def test_history_plus_the_expected_rest_says_how_much_is_measured(year):
    """History to 15 July 14:00 and the actual PV and load as the expectation of the rest
    (one scenario): 4,693 of the year's 8,760 hours are metered, and the central figure is
    within a few dollars of the year's bill (the rest replayed hourly by the behaviour
    model's Self-Powered rather than the example's own 15-minute battery column)."""
    tariff = load_tariff("pge-ev2a-nem2-2024")
    period = settlement_period(tariff, int(year.start_utc[0]), 12)
    cut = int(year.start_utc[0]) + (195 * 24 - 1 + 14) * 3600
    history = year.select(year.start_utc < cut)
    pv = year.pv_kwh.reshape(-1, 4).sum(axis=1)
    load = year.load_kwh.reshape(-1, 4).sum(axis=1)
    book = rest_book(period, pv, load, scenario_grid(0.0, 0.0), BatterySpec.powerwall(), 20.0)
    proj = project_period(tariff, period, book, history=history, true_up_month=12)
    assert proj.measured_fraction == pytest.approx(4693 / 8760)
    full = project_period(tariff, period, None, history=year, true_up_month=12)
    assert proj.due == pytest.approx(full.due, abs=5.0)


def test_the_spread_narrows_as_history_replaces_the_guess(year):
    """Nine scenarios of PV ±15 % and load ±40 %: with two months metered the P10–P90 range
    of the true-up is wider than with ten, and the P50 is the typical scenario."""
    tariff = load_tariff("pge-ev2a-nem2-2024")
    period = settlement_period(tariff, int(year.start_utc[0]), 12)
    pv = year.pv_kwh.reshape(-1, 4).sum(axis=1)
    load = year.load_kwh.reshape(-1, 4).sum(axis=1)
    memo = ProjectionMemo()
    book = rest_book(period, pv, load, scenario_grid(0.15, 0.40), BatterySpec.powerwall(),
                     20.0, memo)
    widths = []
    for months in (2, 10):
        cut = int(year.start_utc[0]) + months * 30 * 86400
        proj = project_period(tariff, period, book, history=year.select(year.start_utc < cut),
                              true_up_month=12, memo=memo)
        widths.append(proj.quantile(0.9) - proj.quantile(0.1))
        assert proj.quantile(0.5) == pytest.approx(proj.due)
    assert widths[0] > widths[1] > 0


def test_a_planned_horizon_replaces_the_expected_rest_there(year):
    """The horizon's planned flows are billed in place of the book: two extra kWh imported
    at an off-peak winter hour add exactly their price (NBC included) to ΣCx + ΣNBC."""
    from optimizer.intervals import IntervalData

    tariff = load_tariff("pge-ev2a-nem2-2024")
    period = settlement_period(tariff, int(year.start_utc[0]), 12)
    t0 = int(year.start_utc[0]) + 10 * 86400 + 3 * 3600  # 11 January 03:00, off-peak
    hist = year.select(year.start_utc < t0)
    rest = year.select(year.start_utc >= t0)
    base = project_period(tariff, period, None, history=_concat(hist, rest), true_up_month=12)
    plan = rest.select(rest.start_utc < t0 + 3600)
    more = IntervalData(start_utc=plan.start_utc, interval_s=900,
                        import_kwh=plan.import_kwh + 0.5, export_kwh=plan.export_kwh)
    proj = project_period(tariff, period, None, history=_concat(hist, rest.select(
        rest.start_utc >= t0 + 3600)), horizon=(t0, t0 + 3600), planned=more,
        true_up_month=12)
    assert proj.planned_fraction == pytest.approx(1 / 8760)
    b, p = base.totals[0], proj.totals[0]
    assert (p.energy_charges + p.nbc) - (b.energy_charges + b.nbc) == pytest.approx(
        2.0 * 0.346, abs=1e-9)  # winter off-peak all-in rate, $/kWh


def _concat(a, b):
    from optimizer.intervals import IntervalData

    return IntervalData(start_utc=np.concatenate([a.start_utc, b.start_utc]),
                        interval_s=a.interval_s,
                        import_kwh=np.concatenate([a.import_kwh, b.import_kwh]),
                        export_kwh=np.concatenate([a.export_kwh, b.export_kwh]))


def test_weighted_quantiles_of_nine_equal_scenarios():
    values = np.arange(9, dtype=float)
    w = np.full(9, 1 / 9)
    assert weighted_quantile(values, w, 0.5) == pytest.approx(4.0)
    # the 1/18 quantile is the lowest value's centre; 0.1 lies 0.4 of the way to the next
    assert weighted_quantile(values, w, 1 / 18) == pytest.approx(0.0)
    assert weighted_quantile(values, w, 0.1) == pytest.approx((0.1 - 1 / 18) * 9)


def test_the_scenario_grid_is_nine_equally_likely_years_around_the_expectation():
    grid = scenario_grid(0.15, 0.40)
    assert len(grid) == 9 and sum(s.weight for s in grid) == pytest.approx(1.0)
    pv = sorted({round(s.pv_scale, 6) for s in grid})
    assert pv[1] == 1.0 and pv[0] == pytest.approx(np.exp(-0.15 * 0.9674216), rel=1e-6)
    assert scenario_grid(0.0, 0.0)[0].pv_scale == 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), reserve=st.floats(1.0, 80.0), soc0=st.floats(0.0, 13.5),
       hours=st.sampled_from([0.25, 1.0]))
def test_the_vectorised_self_powered_replay_is_the_behaviour_model(seed, reserve, soc0, hours):
    """simulate_self_powered gives exactly what simulate() gives for Self-Powered at the same
    reserve, for random PV and load, in several scenarios at once."""
    rng = np.random.default_rng(seed)
    pv = rng.gamma(1.0, 1.5, (3, 96)) * (rng.random((3, 96)) > 0.4) * hours
    load = rng.gamma(2.0, 0.8, (3, 96)) * hours
    spec = BatterySpec.powerwall()
    imp, exp, dis = simulate_self_powered(pv, load, soc0, reserve, hours, spec)
    s = Settings(Mode.SELF_POWERED, reserve, False, ExportRule.PV_ONLY)
    for k in range(3):
        sim = simulate(s, soc0, load[k], pv[k], hours, spec)
        np.testing.assert_allclose(imp[k], sim.import_kwh, atol=1e-12)
        np.testing.assert_allclose(exp[k], sim.export_kwh, atol=1e-12)
        np.testing.assert_allclose(dis[k], sim.discharge_kwh, atol=1e-12)
