"""Benchmark: plan latency (build + solve) for 24 h, 48 h and 7 days of 15-minute steps,
and 24 hourly steps (one re-plan of a backtest).

Prints median and p95 wall time over repeated runs and the process's peak memory (RSS).
Target on this 2-core machine: 48 h median ≤ 0.25 s, p95 ≤ 0.5 s. Not a test: nothing is
asserted. The same inputs `trueup plan` builds for the example site (offline forecasts,
EV2-A NEM2-PS with the export cap budget and the true-up projection in nine scenarios).
``make_plan`` is timed twice: cold (a fresh planner memo: the month outlook, the expected
rest of the period and every month's bill computed, as `trueup plan` does) and warm (the
daemon's steady state: the same memo, the next plan 15 minutes later).

    .venv/bin/python bench/bench_plan.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from optimizer.plan import solve
from trueup.config import load_config
from trueup.planning import PlanMemo, make_plan, parse_at


def stats(runs: list[float]) -> str:
    return f"{np.median(runs):8.4f} {np.percentile(runs, 95):8.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    at = parse_at("2025-07-15T14:00-07:00")
    print(f"{'horizon':<10} {'steps':>6} {'median s':>8} {'p95 s':>8}   "
          f"{'cold make_plan':>16} {'p95':>6}  {'warm median':>12} {'p95':>6}  "
          f"(LP; MILP re-solves)")
    for hours, minutes in ((24, 60), (24, 15), (48, 15), (168, 15)):
        cfg = load_config()
        cfg.optimizer.horizon_hours = hours
        cfg.optimizer.step_minutes = minutes
        result = make_plan(cfg, at_utc=at, soc_percent=50)  # warm: imports, tariff, banner
        x = result.inputs
        solve_runs, full_runs, warm_runs, milps = [], [], [], 0
        memo = PlanMemo()
        make_plan(cfg, at_utc=at, soc_percent=50, memo=memo)
        for i in range(args.repeat):
            t0 = time.perf_counter()
            plan = solve(x)
            solve_runs.append(time.perf_counter() - t0)
            milps += plan.binaries > 0
            t0 = time.perf_counter()
            make_plan(cfg, at_utc=at, soc_percent=50)
            full_runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            make_plan(cfg, at_utc=at + 900 * (i + 1), soc_percent=50, memo=memo)
            warm_runs.append(time.perf_counter() - t0)
        print(f"{hours:>4} h     {len(x.pv_kwh):>6} {stats(solve_runs)}   "
              f"{np.median(full_runs):16.3f} {np.percentile(full_runs, 95):6.3f}  "
              f"{np.median(warm_runs):12.3f} {np.percentile(warm_runs, 95):6.3f}  "
              f"({args.repeat - milps}; {milps})")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (RSS): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
