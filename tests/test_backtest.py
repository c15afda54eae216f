"""The backtest on two weeks of the example year (July 2025): every strategy is billed on
what the simulated Powerwall did, and the perfect-foresight LP bounds every strategy.

Tariff: PG&E EV2-A NEM2 Paired Storage (``pge-ev2a-nem2ps-2024``, export cap included) with
its settlement made monthly (charges settled every month, leftover credit paid out), so a
two-week period is billed as it would be inside a year, without a projected annual true-up.
"""

from __future__ import annotations

import json
from dataclasses import replace as dc_replace
from datetime import date

import numpy as np
import pytest

from optimizer.behaviour import simulate
from optimizer.billing import bill
from optimizer.intervals import IntervalData
from optimizer.policy import battery_spec
from optimizer.prices import decredit_value, step_prices
from optimizer.tariff import Tariff, bundled_path
from trueup.backtest import (
    STRATEGIES,
    STRATEGY_FUNCS,
    Replay,
    peak_and_off_peak,
    run_backtest,
    select_period,
)
from trueup.cli import main
from trueup.config import load_config
from trueup.example import example_year

MONTHLY_SETTLEMENT = """[settlement]
period_months = 1
true_up_month = 12
carryover = "dollars"
charges = "monthly"
leftover_credit = "pay_out"
surplus_rate = 0.0
"""


def _monthly_nem2ps() -> Tariff:
    text = bundled_path("pge-ev2a-nem2ps-2024").read_text(encoding="utf-8")
    head, rest = text.split("[settlement]", 1)
    tail = rest[rest.index("[export_cap]"):]
    return Tariff.from_text(head + MONTHLY_SETTLEMENT + "\n" + tail, source="nem2ps-monthly")


@pytest.fixture(scope="module")
def replay() -> Replay:
    tariff = _monthly_nem2ps()
    data = select_period(example_year(2025), date(2025, 7, 1), 14, tariff.tz)
    return Replay(data=data, tariff=tariff, cfg=load_config(None))


@pytest.fixture(scope="module")
def backtest(replay):
    return run_backtest(replay, STRATEGIES)


def test_two_weeks_of_july_are_replayed_at_15_minutes(replay):
    assert len(replay.data) == 14 * 96
    assert replay.data.interval_s == 900


def test_each_strategy_is_billed_on_its_own_simulated_intervals(replay, backtest):
    spec = battery_spec(replay.battery)
    for name in STRATEGIES[:-1]:  # the bound's own flows are billed (next test)
        r = backtest.result(name)
        d = STRATEGY_FUNCS[name](replay)  # decide again and replay independently
        sim = simulate(d.settings, replay.soc0_kwh, replay.data.load_kwh, replay.data.pv_kwh,
                       0.25, spec, price_signals=d.signals)
        np.testing.assert_allclose(r.intervals.import_kwh, sim.import_kwh, atol=1e-9)
        np.testing.assert_allclose(r.intervals.export_kwh, sim.export_kwh, atol=1e-9)
        data = IntervalData(start_utc=replay.data.start_utc, interval_s=900,
                            import_kwh=sim.import_kwh, export_kwh=sim.export_kwh)
        expected = bill(replay.tariff, data, allow_gaps=True)
        assert r.bill.annual_total == pytest.approx(expected.annual_total, abs=1e-6), name
        assert [m.billed for m in r.bill.months] == pytest.approx(
            [m.billed for m in expected.months], abs=1e-6)


def _energy_cost(replay: Replay, imp, exp, dis, excess_by_month) -> float:
    """Σ import × price − Σ export × credit + wear × Σ discharge, plus the export cap's
    de-credited kWh at the credit they lose (the LP's definition of its objective)."""
    p = step_prices(replay.tariff, replay.data.start_utc)
    decredit = sum(decredit_value(replay.tariff, k) * kwh for k, kwh in excess_by_month.items())
    return float(np.sum(imp * p.import_price) - np.sum(exp * p.export_credit)
                 + replay.battery.wear_cost_per_kwh * np.sum(dis) + decredit)


def test_perfect_foresight_lp_bounds_every_strategys_energy_cost(replay, backtest):
    """The bound minimises Σ import × price − Σ export × credit + the cap's de-credits over
    the LP's own hourly flows (no wear): its objective is that sum for its flows, and no
    strategy's flows cost less. Its bill is the bill of those flows (each hour split evenly
    over its quarter hours)."""
    pf = backtest.result("perfect_foresight")
    bound = pf.lp.objective
    p = step_prices(replay.tariff, replay.data.start_utc)
    month_key = int(p.month_key[0])
    cap = 730.0 * 14 / 31  # July's cap, pro-rated to the two weeks
    costs = {}
    no_wear = dc_replace(replay, cfg=replay.cfg.model_copy(update={
        "battery": replay.battery.model_copy(update={"wear_cost_per_kwh": 0.0})}))
    for r in backtest.results:
        iv = r.intervals
        excess = max(0.0, float(iv.export_kwh.sum()) - cap)
        costs[r.name] = _energy_cost(no_wear, iv.import_kwh, iv.export_kwh,
                                     np.maximum(iv.battery_kwh, 0.0), {month_key: excess})
        assert bound <= costs[r.name] + 1e-6, (r.name, bound, costs)
    assert bound == pytest.approx(costs["perfect_foresight"], abs=1e-6)
    hourly = pf.intervals.import_kwh.reshape(-1, 4)
    np.testing.assert_allclose(hourly.sum(axis=1), pf.lp.import_kwh, atol=1e-9)
    assert np.all(hourly == hourly[:, :1])
    data = IntervalData(start_utc=replay.data.start_utc, interval_s=900,
                        import_kwh=pf.intervals.import_kwh, export_kwh=pf.intervals.export_kwh)
    assert pf.bill.annual_total == pytest.approx(
        bill(replay.tariff, data, allow_gaps=True).annual_total, abs=1e-9)


def test_tbc_like_charges_in_the_cheapest_period_and_exports_in_the_dearest(replay):
    peak, off = peak_and_off_peak(replay.tariff)
    assert replay.tariff.period_names[peak] == "peak"
    assert replay.tariff.period_names[off] == "off_peak"
    d = STRATEGY_FUNCS["tbc_like"](replay)
    period = replay.tariff.classify(replay.data.start_utc).period
    sig = np.array([str(s) for s in d.signals])
    assert set(sig[period == peak]) == {"export"}
    assert set(sig[period == off]) == {"charge"}
    assert all(s.grid_charging for s in d.settings)


def test_no_battery_baseline_is_the_pv_home_without_storage(replay, backtest):
    d = replay.data
    data = IntervalData(start_utc=d.start_utc, interval_s=900,
                        import_kwh=np.maximum(d.load_kwh - d.pv_kwh, 0.0),
                        export_kwh=np.maximum(d.pv_kwh - d.load_kwh, 0.0))
    assert backtest.no_battery.annual_total == pytest.approx(
        bill(replay.tariff, data, allow_gaps=True).annual_total, abs=1e-6)


def test_json_has_the_backtest_contract_keys(backtest):
    out = json.loads(json.dumps(backtest.to_json()))
    assert set(out) >= {"strategies", "perfect_foresight"}
    assert [s["name"] for s in out["strategies"]] == list(STRATEGIES)
    for s in out["strategies"]:
        assert set(s) >= {"name", "annual_total", "bill_months", "import_kwh", "export_kwh",
                          "export_cap_excess_kwh", "plans", "wall_seconds"}
        assert [m["month"] for m in s["bill_months"]] == ["2025-07"]
    assert out["perfect_foresight"]["lp_objective"] == pytest.approx(
        backtest.result("perfect_foresight").lp.objective, abs=0.01)


def test_cli_backtest_prints_json_for_the_chosen_strategies(capsys):
    assert main(["backtest", "--start", "2025-07-01", "--days", "2", "--strategy", "tbc_like",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in out["strategies"]] == ["self_powered", "tbc_like"]
    assert out["perfect_foresight"] is None


def test_perfect_foresight_bills_no_more_than_any_strategy_and_trueup_beats_self_powered(
        backtest):
    """The ordering on the true bill: the bound ≤ every strategy (each billed on what its
    simulated Powerwall did), trueup (noisy forecasts) < Self-Powered."""
    bills = {r.name: r.bill.annual_total for r in backtest.results}
    for b in bills.values():
        assert bills["perfect_foresight"] <= b + 1e-9, bills
    assert bills["trueup"] < bills["self_powered"], bills


def test_each_strategys_bill_equals_trueup_bill_on_its_simulated_intervals(
        backtest, tmp_path, capsys):
    """The CLI's `trueup bill` on each strategy's simulated intervals, written as the
    interval CSV contract, gives the backtest's figures month by month."""
    from trueup.example import write_csv

    tariff_file = tmp_path / "nem2ps-monthly.toml"
    text = bundled_path("pge-ev2a-nem2ps-2024").read_text(encoding="utf-8")
    head, rest = text.split("[settlement]", 1)
    tariff_file.write_text(head + MONTHLY_SETTLEMENT + "\n" + rest[rest.index("[export_cap]"):],
                           encoding="utf-8")
    for r in backtest.results:
        csv = tmp_path / f"{r.name}.csv"
        write_csv(r.intervals, csv)
        assert main(["bill", "--tariff", str(tariff_file), "--usage", str(csv),
                     "--allow-gaps", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        # the CSV carries 4 decimals per interval: 1,344 roundings of ≤ 0.00005 kWh
        assert out["annual_total"] == pytest.approx(r.bill.annual_total, abs=0.05), r.name
        assert [m["billed"] for m in out["months"]] == pytest.approx(
            [m.billed for m in r.bill.months], abs=0.05)


def test_a_decision_never_depends_on_data_after_it(replay):
    """Causality: with the persistence forecast, changing PV and load from day 8 on leaves
    every setting of the first 7 days unchanged (the far expectation has no prior year here
    and the tariff settles monthly, so nothing else reads the future)."""
    from dataclasses import replace as dc_replace

    r = dc_replace(replay, forecast="persistence")
    cut = 7 * 96
    d = r.data
    later = dc_replace(d, load_kwh=np.concatenate([d.load_kwh[:cut], d.load_kwh[cut:] * 3]),
                       pv_kwh=np.concatenate([d.pv_kwh[:cut], d.pv_kwh[cut:] * 0.2]))
    a = STRATEGY_FUNCS["trueup"](r)
    b = STRATEGY_FUNCS["trueup"](dc_replace(r, data=later))
    assert a.settings[:cut] == b.settings[:cut]
    assert a.signals[:cut] == b.signals[:cut]
    assert a.settings[cut:] != b.settings[cut:]  # and the change did reach the later days


def test_noisy_forecast_errors_have_the_documented_bias_and_spread(replay):
    """The noisy forecast is the actual × (1 + bias + σ(lead)·e): over many re-plans the
    mean ratio at lead 0 is 1 + bias and its spread σ(0); at lead 23 the spread is σ(23)."""
    from trueup.backtest import ForecastNoise, _Forecaster, _hourly

    starts, pv_h, load_h, _ = _hourly(replay)
    pv_h = np.ones_like(pv_h)  # ratios are then the multipliers themselves
    load_h = np.ones_like(load_h)
    f = _Forecaster(replay, starts, pv_h, load_h)
    nz = ForecastNoise()
    draws = np.array([np.concatenate(f(0, 24)[:2]) for _ in range(4000)])
    pv0, pv23, load0 = draws[:, 0], draws[:, 23], draws[:, 24]
    assert pv0.mean() == pytest.approx(1 + nz.pv_bias, abs=0.01)
    assert pv0.std() == pytest.approx(nz.pv_sigma[0], rel=0.06)
    assert pv23.std() == pytest.approx(nz.pv_sigma[1], rel=0.06)
    assert load0.mean() == pytest.approx(1 + nz.load_bias, abs=0.01)
    # consecutive lead hours are correlated as documented (ρ = 0.8)
    assert np.corrcoef(draws[:, 0], draws[:, 1])[0, 1] == pytest.approx(nz.rho, abs=0.05)


def test_two_jobs_give_the_same_results_as_one(replay):
    from dataclasses import replace as dc_replace

    short = dc_replace(replay, data=replay.data.select(np.arange(len(replay.data)) < 2 * 96))
    names = ["tbc_like", "tou_lp"]
    one = run_backtest(short, names, jobs=1)
    seen = []
    two = run_backtest(short, names, jobs=2, progress=lambda n, f: seen.append((n, f)))
    for a, b in zip(one.results, two.results, strict=True):
        assert a.name == b.name
        assert a.bill.annual_total == pytest.approx(b.bill.annual_total, abs=1e-9)
    assert {n for n, f in seen if f == 1.0} == {"self_powered", "tbc_like", "tou_lp"}


def test_cli_backtest_rejects_an_unknown_strategy(capsys):
    assert main(["backtest", "--days", "1", "--strategy", "magic"]) == 2
    assert "unknown strategy" in capsys.readouterr().err


def test_cli_backtest_short_window_is_refused_and_an_unwritable_plot_keeps_the_results(
        tmp_path, capsys):
    from trueup.example import example_year, write_csv

    usage = tmp_path / "year.csv"
    write_csv(select_period(example_year(2025), date(2025, 7, 1), 2, "America/Los_Angeles"),
              usage)
    prior = tmp_path / "prior.csv"
    prior.write_text("timestamp,import_kwh,export_kwh\n2024-07-01T00:00:00-07:00,1.0,0.0\n"
                     "2024-07-01T00:15:00-07:00,1.0,0.0\n", encoding="utf-8")
    # a prior of meter data alone is completed like the usage (PV estimated, load rebuilt);
    # two intervals of 2024 say nothing of 2025's other months: still refused
    assert main(["backtest", "--usage", str(usage), "--prior", str(prior),
                 "--strategy", "tbc_like"]) == 2
    err = capsys.readouterr().err
    assert "scored on its whole settlement periods" in err
    # two days of a year-long settlement period, nothing else known: refused, never trued
    # up at the end of the data; the message says what to pass
    assert main(["backtest", "--usage", str(usage), "--strategy", "tbc_like"]) == 2
    err = capsys.readouterr().err
    assert "scored on its whole settlement periods" in err and "--prior" in err
    assert "--start 2025-01-01 --days 365" in err
    # a tariff whose months settle alone bills the two days; an unwritable plot keeps them
    tariff_file = tmp_path / "monthly.toml"
    text = bundled_path("pge-ev2a-nem2ps-2024").read_text(encoding="utf-8")
    head, rest = text.split("[settlement]", 1)
    tariff_file.write_text(head + MONTHLY_SETTLEMENT + "\n" + rest[rest.index("[export_cap]"):],
                           encoding="utf-8")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    assert main(["backtest", "--usage", str(usage), "--tariff", str(tariff_file),
                 "--strategy", "tbc_like", "--json", "--plot", str(blocked / "plot.png")]) == 2
    out = capsys.readouterr()
    assert [s["name"] for s in json.loads(out.out)["strategies"]] == ["self_powered", "tbc_like"]
    assert "cannot write the plot" in out.err
