"""Benchmark: next-day hourly load forecast on a year of the example home's data.

For every local day from day 29 of 2025 on, at local midnight, each method forecasts that
day's hourly loads (23 or 25 hours on the DST days, by local clock) from the history before
midnight only; the actual hourly loads are the example's 15-minute loads summed. Printed:
MAE (kWh per hour) and bias (forecast − actual, kWh per hour) of

- ours: ``forecasts.load.expected_load_kwh`` with the default settings;
- ours + the EV schedule from config (``KnownLoad``: weekdays 00:30–03:30, 3.6 kW, already
  in the history), to show a configured load is not counted twice;
- persistence: yesterday's load in the same local clock hour (the baseline to beat);
- the typical profile (``history=None``): the built-in generic household profile, which
  knows nothing of this home (the example year is now synPRO's family, an EV charged after
  midnight and air conditioning — see trueup/example.py).

Plus the wall time per forecast, MAE by month, and (``--sweep``) MAE over half-lives and
look-back windows. Data: ``trueup.example.example_year(2025)``, 15-minute, America/Los_Angeles.
Not a test: nothing is asserted.

    .venv/bin/python bench/bench_load_forecast.py [--sweep]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from forecasts.load import KnownLoad, LoadSettings, expected_load_kwh
from optimizer.intervals import IntervalData
from optimizer.localtime import local_fields
from trueup.example import TIMEZONE, example_year

FIRST_DAY = 29  # 1-based: the first forecast day has 28 days of history
EV = KnownLoad(name="EV", kw=3.6, start="00:30", end="03:30", days="weekdays")


def day_starts(data: IntervalData, tz: str) -> np.ndarray:
    """Indices of the intervals starting at local midnight, plus len(data)."""
    f = local_fields(data.start_utc, tz)
    return np.append(np.flatnonzero((f.hour == 0) & (f.minute == 0)), len(data))


def hourly(data: IntervalData, i0: int, i1: int) -> np.ndarray:
    """kWh per hour of intervals [i0, i1) (a whole number of hours)."""
    per_hour = 3600 // data.interval_s
    return data.load_kwh[i0:i1].reshape(-1, per_hour).sum(axis=1)


def persistence_table(data: IntervalData, tz: str) -> tuple[np.ndarray, int]:
    """Mean kW by [local day − first day, local hour] (NaN for the skipped spring hour)."""
    f = local_fields(data.start_utc, tz)
    day = f.day - f.day[0]
    cell = day * 24 + f.hour
    n = int(day.max() + 1) * 24
    kw = data.load_kwh * 3600.0 / data.interval_s
    counts = np.bincount(cell, minlength=n)
    sums = np.bincount(cell, kw, minlength=n)
    with np.errstate(invalid="ignore"):
        return (sums / counts).reshape(-1, 24), int(f.day[0])


def evaluate(data: IntervalData, tz: str, methods: dict) -> dict[str, dict]:
    """Run each method over the year; returns per method the errors and per-call times."""
    bounds = day_starts(data, tz)
    f = local_fields(data.start_utc, tz)
    out = {name: {"err": [], "month": [], "secs": []} for name in methods}
    for d in range(FIRST_DAY - 1, len(bounds) - 1):
        i0, i1 = int(bounds[d]), int(bounds[d + 1])
        n_h = (i1 - i0) * data.interval_s // 3600
        starts = int(data.start_utc[i0]) + 3600 * np.arange(n_h, dtype=np.int64)
        actual = hourly(data, i0, i1)
        history = data.select(slice(0, i0))
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fc = fn(starts, history)
            out[name]["secs"].append(time.perf_counter() - t0)
            out[name]["err"].append(fc - actual)
            out[name]["month"].append(np.full(n_h, f.month[i0]))
    for r in out.values():
        r["err"] = np.concatenate(r["err"])
        r["month"] = np.concatenate(r["month"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sweep", action="store_true", help="also MAE over half-life/look-back")
    args = ap.parse_args()
    tz = TIMEZONE
    data = example_year(2025)
    table, day0 = persistence_table(data, tz)

    def persistence(starts, history):
        f = local_fields(starts, tz)
        d, h = f.day - day0 - 1, f.hour
        kw = table[d, h]
        return np.where(np.isnan(kw), table[d, np.maximum(h - 1, 0)], kw)  # spring hour

    sources: set[str] = set()

    def ours(starts, history):
        kwh, src = expected_load_kwh(starts, 3600, tz, history)
        sources.add(src.split(" from ")[0])
        return kwh

    methods = {
        "ours": ours,
        "ours + EV schedule": lambda s, h: expected_load_kwh(s, 3600, tz, h,
                                                             known_loads=[EV])[0],
        "persistence (yesterday)": persistence,
        "typical profile (oracle)": lambda s, h: expected_load_kwh(s, 3600, tz)[0],
    }
    res = evaluate(data, tz, methods)
    n_days = len(res["ours"]["secs"])
    n_hours = len(res["ours"]["err"])
    mean_load = float(np.mean(data.load_kwh) * 3600 / data.interval_s)
    print(f"example year 2025, {len(data):,} 15-min intervals, {tz}; mean load "
          f"{mean_load:.3f} kWh/h")
    print(f"next-day hourly forecasts at local midnight: {n_days} days from day {FIRST_DAY}, "
          f"{n_hours} hours\n")
    print(f"{'method':<26} {'MAE kWh/h':>9} {'bias kWh/h':>10} {'RMSE':>7} "
          f"{'vs persist.':>11} {'ms/forecast (median, p95)':>26}")
    base = float(np.mean(np.abs(res["persistence (yesterday)"]["err"])))
    for name, r in res.items():
        e = r["err"]
        mae = float(np.mean(np.abs(e)))
        ms = np.array(r["secs"]) * 1e3
        print(f"{name:<26} {mae:>9.4f} {float(np.mean(e)):>+10.4f} "
              f"{float(np.sqrt(np.mean(e**2))):>7.4f} {1 - mae / base:>+10.1%} "
              f"{np.median(ms):>13.2f} {np.percentile(ms, 95):>12.2f}")
    print(f"\nour source: {sorted(sources)}")

    print("\nMAE kWh/h by month (ours | persistence | typical)")
    for m in range(1, 13):
        row = []
        for name in ("ours", "persistence (yesterday)", "typical profile (oracle)"):
            sel = res[name]["month"] == m
            row.append(f"{np.mean(np.abs(res[name]['err'][sel])):.3f}" if sel.any() else "  -  ")
        print(f"  {m:02d}: {' | '.join(row)}")

    if args.sweep:
        print("\nMAE kWh/h of ours by half-life (days) × look-back (days)")
        lookbacks = (28, 56, 112)
        print(f"{'half-life':>10} " + " ".join(f"{lb:>8}" for lb in lookbacks))
        for hl in (3.0, 7.0, 14.0, 28.0, 1e6):
            row = []
            for lb in lookbacks:
                st = LoadSettings(half_life_days=hl, lookback_days=lb)
                r = evaluate(data, tz, {"x": lambda s, h, st=st: expected_load_kwh(
                    s, 3600, tz, h, settings=st)[0]})["x"]
                row.append(f"{np.mean(np.abs(r['err'])):>8.4f}")
            print(f"{'none' if hl > 1e5 else f'{hl:g}':>10} " + " ".join(row))


if __name__ == "__main__":
    main()
