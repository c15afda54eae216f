"""The planner exists once: a backtest step and the daemon's plan job, given the same state,
history, clock and forecast, make the same plan and the same settings."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from adapters.gateway.simulated import SimClock
from optimizer.tariff import load_tariff
from trueup.backtest import Replay, context_of, planner_config, rolling, select_period
from trueup.config import load_config
from trueup.daemon import Daemon
from trueup.example import example_year
from trueup.gateways import simulated_site


def test_a_backtest_step_and_the_daemons_plan_job_give_the_same_settings(tmp_path):
    """The example home on NEM2 Paired Storage (export cap and true-up both in play), three
    July days replayed with the daemon's own offline forecast. At the start of the second
    day (when both re-solve the month outlook) the backtest's call is captured; a daemon
    whose store holds the same history, whose gateway reads the same SOC at the same clock,
    plans the same flows and applies the same settings."""
    tariff = load_tariff("pge-ev2a-nem2ps-2024")
    year, prior = example_year(2025), example_year(2024)
    window = select_period(year, date(2025, 7, 14), 3, tariff.tz)
    r = Replay(window, tariff, load_config(), forecast="clear_sky",
               context=context_of(year, window, prior))
    seen = {}

    def capture(k, kwargs, result):
        if k == 24:
            seen.update(kwargs=kwargs, result=result)

    rolling(r, billing_aware=True, on_plan=capture)
    kw, bt = seen["kwargs"], seen["result"]
    assert bt.inputs.cap_budgets and bt.inputs.true_ups and len(bt.schedule.entries) > 1

    cfg = planner_config(r)
    clock = SimClock(kw["at_utc"])
    gateway = simulated_site(cfg, clock, soc_percent=kw["soc_percent"])
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=gateway, data_dir=tmp_path)
    daemon.store.add_utility(kw["history"], file="the backtest's history")
    daemon.start()
    daemon.read_job()
    got = daemon.plan_job()

    assert got.inputs.soc_kwh == pytest.approx(bt.inputs.soc_kwh, abs=1e-9)
    np.testing.assert_allclose(got.inputs.pv_kwh, bt.inputs.pv_kwh, atol=1e-9)
    np.testing.assert_allclose(got.inputs.load_kwh, bt.inputs.load_kwh, atol=1e-9)
    assert [b.kwh for b in got.inputs.cap_budgets] == pytest.approx(
        [b.kwh for b in bt.inputs.cap_budgets], abs=1e-6)
    for a, b in zip(got.inputs.true_ups, bt.inputs.true_ups, strict=True):
        assert [s.cx for s in a.scenarios] == pytest.approx([s.cx for s in b.scenarios],
                                                            abs=1e-6)
    np.testing.assert_allclose(got.plan.import_kwh, bt.plan.import_kwh, atol=1e-6)
    np.testing.assert_allclose(got.plan.export_kwh, bt.plan.export_kwh, atol=1e-6)
    assert [e.settings for e in got.schedule.entries] == \
        [e.settings for e in bt.schedule.entries]
    daemon.close()
