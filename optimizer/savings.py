"""What the battery has saved so far this billing month, by the bill engine.

Three bills of the same month so far, each from the same engine (:func:`optimizer.billing.
bill`), compared on the month's own charges *before* any minimum (energy + NBC + fixed +
demand: under NEM2 the statement shows only the minimum, the charges accrue to the
true-up):

* **as metered** — the month's imports and exports;
* **no battery** — the same home and PV without the battery: import = max(load − PV, 0),
  export = max(PV − load, 0) per interval;
* **Self-Powered** — Tesla's default at the owner's floor on the same load and PV, by the
  behaviour model (:func:`optimizer.behaviour.simulate_self_powered`), from the SOC the
  month started with.

Needs the month's load and PV (the gateway's readings); without them, nothing (unknown,
never 0). Units: $; kWh per interval in; times UTC epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.behaviour import BatterySpec, simulate_self_powered
from optimizer.billing import MonthStatement, bill
from optimizer.intervals import IntervalData
from optimizer.tariff import Tariff


@dataclass(frozen=True)
class MonthSavings:
    """The billing month so far (``month`` "YYYY-MM"), its charges three ways, $."""

    month: str
    metered: float
    no_battery: float
    self_powered: float

    @property
    def vs_no_battery(self) -> float:
        return self.no_battery - self.metered

    @property
    def vs_self_powered(self) -> float:
        return self.self_powered - self.metered


def month_charges(m: MonthStatement) -> float:
    """A month's own charges before any minimum: energy (after credits) + NBC + fixed +
    demand, $."""
    return m.energy_charges + m.nbc + m.fixed + m.demand_charges


def month_savings(tariff: Tariff, month: IntervalData, spec: BatterySpec, floor_percent: float,
                  soc0_kwh: float, *, export_cap_kwh: list[float] | None = None
                  ) -> MonthSavings | None:
    """The savings of the billing month ``month`` covers (its intervals so far, one billing
    month); None without load and PV."""
    if not len(month) or month.load_kwh is None or month.pv_kwh is None:
        return None
    load, pv = month.load_kwh, month.pv_kwh
    net = load - pv
    no_batt = IntervalData(start_utc=month.start_utc, interval_s=month.interval_s,
                           import_kwh=np.maximum(net, 0.0), export_kwh=np.maximum(-net, 0.0))
    imp, exp, _ = simulate_self_powered(pv, load, soc0_kwh, floor_percent,
                                        month.interval_s / 3600.0, spec)
    sp = IntervalData(start_utc=month.start_utc, interval_s=month.interval_s,
                      import_kwh=np.asarray(imp, dtype=float).ravel(),
                      export_kwh=np.asarray(exp, dtype=float).ravel())
    out = []
    for data in (month, no_batt, sp):
        b = bill(tariff, data, export_cap_kwh=export_cap_kwh, allow_gaps=True,
                 in_progress=True)
        out.append(month_charges(b.months[-1]))
    return MonthSavings(month=b.months[-1].month, metered=out[0], no_battery=out[1],
                        self_powered=out[2])
