"""How often the plan needs binaries: one plan a week through 2025 for the example site.

The plan is an LP; binaries (no charging and discharging, or importing and exporting, in the
same step) are added only on the steps where the LP's answer does both. For each tariff
this prints how many of the 53 weekly plans (the daemon's 48 h in 15-minute steps, Monday
14:00, SOC 50 %, the example year as history) were re-solved as a MILP, and the median and
slowest solve. Not a test: nothing is asserted.

    .venv/bin/python bench/bench_milp.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARIFFS = ("pge-ev2a-nem2ps-2024", "pge-ev2a-nem2-2024", "pge-ev2a-nem1-2024",
           "pge-ev2a-nbt-2024")


def main() -> None:
    from trueup.config import load_config
    from trueup.example import example_year
    from trueup.planning import PlanMemo, make_plan, parse_at
    from trueup.solvers import silence_highs_banner

    silence_highs_banner()
    history = example_year(2025)
    first = parse_at("2025-01-06T14:00-08:00")  # a Monday
    print(f"{'tariff':<24} {'MILPs':>9} {'median s':>9} {'max s':>7}")
    for tariff in TARIFFS:
        cfg = load_config().model_copy(update={"tariff": tariff})
        memo = PlanMemo()
        milps, seconds = 0, []
        for week in range(53):
            r = make_plan(cfg, at_utc=first + week * 7 * 86400, soc_percent=50,
                          history=history, memo=memo)
            milps += r.plan.binaries > 0
            seconds.append(r.plan.solve_seconds)
        print(f"{tariff:<24} {milps:>3} of 53 {np.median(seconds):9.3f} {max(seconds):7.3f}")


if __name__ == "__main__":
    main()
