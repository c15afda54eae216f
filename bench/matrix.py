"""The scenario matrix: does trueup's true-up and cap logic ever make an owner worse off?

Four homes × four PG&E EV2-A tariffs (NEM2 Paired Storage, NEM2, NEM1, NBT) × three true-up
months (January, April, December) × two windows (the whole settlement period that ends at the
true-up in 2025, and the one month that ends at it, scored on its whole period). Every cell
runs the backtest's self_powered, tou_lp, trueup and perfect_foresight strategies on noisy
forecasts and checks:

* trueup ≤ self_powered (never worse than Tesla's default);
* trueup ≤ tou_lp + 1 % of the no-battery bill (the billing logic never backfires);
* perfect_foresight ≤ every strategy (the bound is a bound).

Homes (trueup/example.py's ``Home``; PV moved from Greensboro's typical year):

* ``example`` — the example home: 1 Powerwall, 7.2 kW PV, family + 1 EV + cooling.
* ``large`` — 4 Powerwalls (54 kWh, 20 kW), 8 kW PV, a large family, three EVs charged at
  home, more cooling; the NEM-PS cap (scaled to its PV) binds when it exports stored energy.
* ``surplus`` — 7.2 kW PV on a home without EV (PV ≈ 1.4 × load): ends NEM2 in credit.
* ``small_pv`` — 3 kW PV on the example home's load.

``--no-history`` replays each whole settlement period as a new owner's first year: nothing
known before it (no prior year, no months outside), so the weeks ahead come from the offline
models (clear sky × clearness, a typical household) calibrated on the months replayed so far.

Usage::

    .venv/bin/python bench/matrix.py --jobs 2            # the whole matrix (~60 min here)
    .venv/bin/python bench/matrix.py --homes example --tariffs nem2 --windows month
    .venv/bin/python bench/matrix.py --no-history --true-ups 12 --windows period

Prints one row per cell and a summary; ``--json FILE`` keeps every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARIFFS = {"nem2ps": "pge-ev2a-nem2ps-2024", "nem2": "pge-ev2a-nem2-2024",
           "nem1": "pge-ev2a-nem1-2024", "nbt": "pge-ev2a-nbt-2024"}
TRUE_UPS = (1, 4, 12)
WINDOWS = ("period", "month")
STRATEGIES = ("self_powered", "tou_lp", "trueup", "perfect_foresight")
SHARE_MIN_SAVING = 25.0  # $: cells where a battery can save less are left out of the share


@dataclass(frozen=True)
class HomeSpec:
    name: str
    pv_kw: float
    household_kwh: float
    evs: int
    cooling: float
    units: int


HOMES = {
    "example": HomeSpec("example", 7.2, 6000, 1, 0.40, 1),
    "large": HomeSpec("large", 8.0, 8000, 3, 0.60, 4),
    "surplus": HomeSpec("surplus", 7.2, 6000, 0, 0.20, 1),
    "small_pv": HomeSpec("small_pv", 3.0, 6000, 1, 0.40, 1),
}


def _config(h: HomeSpec, tariff, true_up_month: int):
    from trueup.config import load_config

    cfg = load_config()
    battery = cfg.battery.model_copy(update={
        "units": h.units, "usable_kwh": 13.5 * h.units, "max_charge_kw": 5.0 * h.units,
        "max_discharge_kw": 5.0 * h.units})
    pv = [cfg.pv[0].model_copy(update={"kw_dc": h.pv_kw})]
    caps = None
    if tariff.spec.export_cap is not None:  # the utility's estimate scales with the PV
        caps = [tariff.export_cap_kwh(m) * h.pv_kw / 7.2 for m in range(1, 13)]
    opt = cfg.optimizer.model_copy(update={"true_up_month": true_up_month,
                                           "export_cap_kwh": caps})
    return cfg.model_copy(update={"battery": battery, "pv": pv, "optimizer": opt})


def _window(tariff, true_up_month: int, kind: str) -> tuple[date, int]:
    """(first day, days) of the window: the period that ends at the 2025 true-up, or its
    last month."""
    from optimizer.projection import settlement_period

    tz = ZoneInfo(tariff.tz)
    t = int(datetime(2025, true_up_month, 15, tzinfo=tz).timestamp())
    p = settlement_period(tariff, t, true_up_month)
    a = datetime.fromtimestamp(p.start_utc, tz).date()
    z = datetime.fromtimestamp(p.end_utc, tz).date()
    if kind == "month":
        a = date(2025, true_up_month, 1)
    return a, (z - a).days


def run_cell(home: str, tariff_key: str, true_up_month: int, window: str,
             history: bool = True) -> dict:
    from optimizer.intervals import IntervalData
    from optimizer.tariff import load_tariff
    from trueup.backtest import Replay, context_of, run_backtest, select_period
    from trueup.example import Home, example_year
    from trueup.solvers import silence_highs_banner

    silence_highs_banner()

    h = HOMES[home]
    tariff = load_tariff(TARIFFS[tariff_key])
    cfg = _config(h, tariff, true_up_month)
    spec = Home(pv_kw_dc=h.pv_kw, household_kwh=h.household_kwh, evs=h.evs,
                cooling_kw_per_c=h.cooling)
    years = [example_year(y, home=spec) for y in (2023, 2024, 2025)]
    import numpy as np

    data = IntervalData(**{k: np.concatenate([getattr(y, k) for y in years])
                           for k in ("start_utc", "import_kwh", "export_kwh", "load_kwh",
                                     "pv_kwh", "battery_kwh")},
                        interval_s=900, source=f"{home} home 2023-2025")
    first, days = _window(tariff, true_up_month, window)
    w = select_period(data, first, days, tariff.tz)
    r = Replay(w, tariff, cfg, context=context_of(data, w, None) if history else None)
    t0 = time.perf_counter()
    bt = run_backtest(r, STRATEGIES)
    bills = {x.name: round(x.bill.annual_total, 2) for x in bt.results}
    tu = bt.result("trueup").bill.true_ups
    return {"home": home, "tariff": tariff_key, "true_up_month": true_up_month,
            "window": window, "history": history, "start": first.isoformat(), "days": days,
            "no_battery": round(bt.no_battery.annual_total, 2), "bills": bills,
            "cap_binds": bool(bt.result("tou_lp").excess_kwh > 1.0),
            "ends_in_credit": bool(tu and any(t.forfeited_credit > 0 for t in tu)),
            "wall_s": round(time.perf_counter() - t0, 1)}


def check(cell: dict) -> list[str]:
    b, base = cell["bills"], cell["no_battery"]
    bad = []
    if b["trueup"] > b["self_powered"] + 0.005:
        bad.append(f"trueup {b['trueup']} > self_powered {b['self_powered']}")
    if b["trueup"] > b["tou_lp"] + 0.01 * abs(base) + 0.005:
        bad.append(f"trueup {b['trueup']} > tou_lp {b['tou_lp']} + 1 % of {base}")
    for name, v in b.items():
        if b["perfect_foresight"] > v + 0.005:
            bad.append(f"perfect_foresight {b['perfect_foresight']} > {name} {v}")
    return bad


def share(cell: dict) -> float | None:
    """trueup's share of the perfect-foresight savings against no battery (None where a
    battery cannot save SHARE_MIN_SAVING)."""
    b, base = cell["bills"], cell["no_battery"]
    gain = base - b["perfect_foresight"]
    return None if gain < SHARE_MIN_SAVING else (base - b["trueup"]) / gain


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--homes", nargs="*", default=list(HOMES))
    ap.add_argument("--tariffs", nargs="*", default=list(TARIFFS))
    ap.add_argument("--true-ups", nargs="*", type=int, default=list(TRUE_UPS))
    ap.add_argument("--windows", nargs="*", default=list(WINDOWS))
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--no-history", action="store_true",
                    help="a new owner's first year: nothing known before the window "
                    "(whole-period windows only)")
    args = ap.parse_args(argv)
    if args.no_history and "month" in args.windows:
        ap.error("--no-history scores whole settlement periods: give --windows period")
    cells = [(h, t, m, w) for h in args.homes for t in args.tariffs for m in args.true_ups
             for w in args.windows]
    t0 = time.perf_counter()
    out = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_cell, *c, not args.no_history) for c in cells]
        for i, f in enumerate(as_completed(futures), 1):
            cell = f.result()
            out.append(cell)
            b = cell["bills"]
            bad = check(cell)
            print(f"[{i:3d}/{len(cells)}] {cell['home']:9s} {cell['tariff']:6s} "
                  f"TU {cell['true_up_month']:2d} {cell['window']:6s} no batt "
                  f"{cell['no_battery']:9.2f}  SP {b['self_powered']:9.2f}  tou_lp "
                  f"{b['tou_lp']:9.2f}  trueup {b['trueup']:9.2f}  PF "
                  f"{b['perfect_foresight']:9.2f}  {cell['wall_s']:5.0f} s"
                  + ("  FAIL: " + "; ".join(bad) if bad else ""), flush=True)
    wall = time.perf_counter() - t0
    fails = [c for c in out if check(c)]
    shares = [s for c in out if (s := share(c)) is not None]
    print(f"\n{len(out)} cells in {wall / 60:.1f} min with --jobs {args.jobs}; "
          f"{len(fails)} fail a check")
    if shares:
        print(f"mean share of perfect-foresight savings (cells where a battery can save "
              f"≥ ${SHARE_MIN_SAVING:.0f}): {sum(shares) / len(shares):.1%} over {len(shares)}")
    for label, key in (("the cap binds", "cap_binds"), ("the home ends in credit",
                                                        "ends_in_credit")):
        sel = [c for c in out if c[key]]
        if sel:
            gain = [c["bills"]["tou_lp"] - c["bills"]["trueup"] for c in sel]
            print(f"where {label} ({len(sel)} cells): trueup beats tou_lp by "
                  f"${min(gain):,.2f} – ${max(gain):,.2f} (mean ${sum(gain) / len(gain):,.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_s": round(wall, 1), "cells": out},
                                              indent=1))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
