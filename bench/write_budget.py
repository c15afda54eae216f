"""What a control path's write budget costs: the example year replayed by the backtest's
``trueup`` strategy (the daemon's planner, hour by hour, its schedule fitted to the budget
of writes the safety rails allow) under three budgets, billed by the billing engine.

* ``unlimited`` — 60 writes an hour, 500 a day: the plan as the optimizer wants it;
* ``lan`` — the local and Owner-API paths' default (4 an hour, 24 a day);
* ``fleetapi`` — Tesla's Fleet API default (4 an hour, 5 a day).

For each: the year's bill, what the budget costs against ``unlimited``, field writes a day
(mean and the busiest day) and the changes the fitting dropped. Not a test: nothing is
asserted.

    .venv/bin/python bench/write_budget.py [--tariff pge-ev2a-nem2ps-2024] [--days 365]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from optimizer.behaviour import simulate
    from optimizer.intervals import IntervalData
    from optimizer.policy import battery_spec, writes_between
    from optimizer.tariff import load_tariff
    from trueup.backtest import Replay, bill_window, context_of, rolling, select_period
    from trueup.config import load_config
    from trueup.example import example_year
    from trueup.solvers import silence_highs_banner

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tariff", default="pge-ev2a-nem2ps-2024")
    ap.add_argument("--start", default="2025-01-01")
    ap.add_argument("--days", type=int, default=365)
    args = ap.parse_args()
    silence_highs_banner()
    tariff = load_tariff(args.tariff)
    data = example_year(2025, tz=tariff.tz)
    prior = example_year(2024, tz=tariff.tz)  # the history before, as `trueup backtest`
    window = select_period(data, date.fromisoformat(args.start), args.days, tariff.tz)
    base = load_config()
    budgets = {
        "unlimited": {"safety": base.safety.model_copy(update={"max_writes_per_hour": 60,
                                                               "max_writes_per_day": 500})},
        "lan": {},
        "fleetapi": {"gateway": base.gateway.model_copy(update={"kind": "powerwall",
                                                                "mode": "fleetapi"})},
    }
    print(f"{args.tariff}, {args.start} + {args.days} days, example home, noisy forecasts")
    print(f"{'budget':<10} {'per h/day':>9} {'bill $':>10} {'lost $':>8} {'writes/day':>10} "
          f"{'busiest':>7} {'dropped':>7} {'wall s':>7}")
    first = None
    for name, update in budgets.items():
        cfg = base.model_copy(update=update)
        rails = cfg.rails()
        r = Replay(window, tariff, cfg, context=context_of(data, window, prior))
        dropped: list[int] = []

        def seen(k, kwargs, res, dropped=dropped) -> None:
            fit = res.schedule.budget
            dropped.append(fit.changes_dropped if fit else 0)

        t0 = time.perf_counter()
        d = rolling(r, billing_aware=True, on_plan=seen)
        wall = time.perf_counter() - t0
        sim = simulate(d.settings, r.soc0_kwh, window.load_kwh, window.pv_kwh, r.hours,
                       battery_spec(r.battery), price_signals=d.signals)
        flows = IntervalData(start_utc=window.start_utc, interval_s=window.interval_s,
                             import_kwh=sim.import_kwh, export_kwh=sim.export_kwh)
        total = bill_window(r, flows).annual_total
        per_day = round(86400 / window.interval_s)
        w = np.array([writes_between(a, b) for a, b in zip(d.settings[:-1], d.settings[1:],
                                                             strict=True)] + [0])
        daily = np.add.reduceat(w, np.arange(0, len(w), per_day))
        first = total if first is None else first
        print(f"{name:<10} {rails.max_writes_per_hour:>4}/{rails.max_writes_per_day:<4} "
              f"{total:>10,.2f} {total - first:>8,.2f} {daily.mean():>10.1f} "
              f"{daily.max():>7d} {sum(dropped):>7d} {wall:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
