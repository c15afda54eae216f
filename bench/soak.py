"""Soak: the daemon for N simulated days (default 30) with gateway and forecast faults.

Prints crashes (target 0), unsafe writes (target 0: a reserve below the floor, 0, or in
81-99 reaching the gateway), lost intervals (target 0: 5-minute intervals missing from the
store), the plans made and their fallbacks, and the peak memory (target < 150 MB RSS).

Faults injected: gateway read timeouts, HTTP errors, all-zero power readings, the FleetAPI
5.0-raw SOC glitch, failed and dropped writes, a 3-hour gateway outage, a grid outage, and a
broken load forecast (negative/missing values) every 50th plan.

    .venv/bin/python bench/soak.py [--days 30] [--seed 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
import traceback

import numpy as np

from adapters.gateway.simulated import Faults, SimClock
from trueup import planning
from trueup.config import load_config
from trueup.daemon import Daemon, Schedule, simulate
from trueup.gateways import simulated_site
from trueup.planning import parse_at

FAULTS = Faults(read_timeout=0.02, http_error=0.02, zero_power=0.02, soc_glitch=0.01,
                write_error=0.05, drop_writes=0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    cfg = load_config()
    cfg.optimizer.horizon_hours = 24
    cfg.optimizer.step_minutes = 30
    cfg.safety.min_change_interval_s = 900
    t0 = parse_at("2025-06-01T00:00-07:00")
    end = t0 + args.days * 86400
    clock = SimClock(t0)
    world = simulated_site(cfg, clock)
    world.faults = FAULTS
    data_dir = tempfile.mkdtemp(prefix="trueup-soak-")
    daemon = Daemon(cfg, dry_run=False, clock=clock, gateway=world, data_dir=data_dir,
                    schedule=Schedule(read_s=60, plan_s=3600, rollup_s=6 * 3600))
    daemon.start()
    floor = cfg.battery.backup_floor_percent
    crashes, plans, fallbacks = [], 0, 0
    original = planning.make_plan

    def faulty_make_plan(*a, **kw):  # every 50th plan gets a broken load forecast
        nonlocal plans, fallbacks
        plans += 1
        result = original(*a, **kw)
        if plans % 50 == 0:
            load = result.inputs.load_kwh.copy()
            load[3] = np.nan
            result.inputs = dataclasses.replace(result.inputs, load_kwh=load)
            result = planning.solve_with_fallback(result, cfg, last_good=kw.get("last_good"))
        if not result.plan.ok or any("fallback" in n or "last good" in n
                                     for n in result.notes):
            fallbacks += 1
        return result

    import trueup.daemon as daemon_module

    daemon_module.make_plan = faulty_make_plan

    def events(d: Daemon) -> None:
        now = clock.now()
        day = (now - t0) / 86400
        if 10 <= day < 10.125:  # a 3-hour gateway outage on day 10
            world.faults = dataclasses.replace(FAULTS, read_timeout=1.0, write_error=1.0)
        elif 20 <= day < 20.1:  # a grid outage on day 20
            world.faults = dataclasses.replace(FAULTS, grid_down=True)
        else:
            world.faults = FAULTS

    started = time.perf_counter()
    while clock.now() < end:
        try:
            simulate(daemon, clock, min(end, clock.now() + 86400), on_step=events)
        except Exception:
            crashes.append(traceback.format_exc())
            clock.advance(60)
    wall = time.perf_counter() - started

    unsafe = [s for _, s, _ in world.attempts
              if s.reserve_percent < floor or s.reserve_percent < 1
              or 80 < s.reserve_percent < 100]
    data = daemon.store.intervals(t0, end, interval_s=300)
    expected = (end - t0) // 300
    lost = expected - len(data)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"soak: {args.days} simulated days in {wall:.0f} s wall")
    print(f"  crashes          {len(crashes)}   (target 0)")
    print(f"  unsafe writes    {len(unsafe)}   (target 0; {len(world.attempts)} writes tried)")
    print(f"  lost intervals   {lost}   (target 0; {len(data)} of {expected} stored)")
    print(f"  plans            {plans} ({fallbacks} used a fallback)")
    print(f"  peak memory      {peak_mb:.0f} MB RSS   (target < 150)")
    for c in crashes[:3]:
        print(c)
    daemon.close()


if __name__ == "__main__":
    main()
