"""Benchmark: bill one year of 5-minute data (105,120 intervals) under bundled tariffs.

Prints the median and p95 wall time over repeated runs (target: under 1 s on the 2-core
machine). Not a test: nothing is asserted.

    .venv/bin/python bench/bench_billing.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from optimizer.billing import bill
from optimizer.tariff import load_tariff
from trueup.example import example_year


def timed(fn, repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs)), float(np.percentile(runs, 95))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    print(f"{'tariff':<32} {'intervals':>9} {'median s':>9} {'p95 s':>7}")
    for tid, tz in [("pge-ev2a-nem2ps-2024", None), ("pge-ev2a-nbt-2024", None),
                    ("pge-etouc-nem2-2024", None), ("kwh-banking-2024", "America/New_York"),
                    ("buy-all-sell-all-2024", "America/Chicago")]:
        tariff = load_tariff(tid)
        data = example_year(2025, interval_min=5, tz=tz or tariff.tz)
        bill(tariff, data)  # warm caches (holidays) once, as a daemon would
        med, p95 = timed(lambda t=tariff, d=data: bill(t, d), args.repeat)
        print(f"{tid:<32} {len(data):>9,} {med:>9.4f} {p95:>7.4f}")
    # cold: the tariff loaded and the year billed from nothing, each run
    data = example_year(2025, interval_min=5)
    med, p95 = timed(lambda: bill(load_tariff("pge-ev2a-nbt-2024"), data), args.repeat)
    print(f"{'cold load + bill (NBT, CSV values)':<32} {len(data):>9,} {med:>9.4f} {p95:>7.4f}")


if __name__ == "__main__":
    main()
