"""Month-to-date savings (optimizer/savings.py) on the example home's July 2025."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.billing import bill
from optimizer.intervals import IntervalData
from optimizer.policy import battery_spec
from optimizer.savings import month_charges, month_savings
from optimizer.tariff import load_tariff
from trueup.config import load_config
from trueup.example import example_year
from trueup.planning import parse_at


def test_the_months_savings_are_three_bills_of_the_same_engine():
    """The example's own battery runs Self-Powered at 20 %: its metered July equals the
    Self-Powered bill within the simulation's start (same rules, same floor), and both are
    below the no-battery bill; the figures are the engine's month charges, by hand."""
    cfg, tariff = load_config(), load_tariff("pge-ev2a-nem2-2024")
    year = example_year(2025)
    a, z = parse_at("2025-07-01T00:00-07:00"), parse_at("2025-07-16T00:00-07:00")
    july = year.select((year.start_utc >= a) & (year.start_utc < z))
    soc0 = float(cfg.battery.usable_kwh) * 0.5
    s = month_savings(tariff, july, battery_spec(cfg.battery),
                      cfg.battery.backup_floor_percent, soc0)
    assert s is not None and s.month == "2025-07"
    net = july.load_kwh - july.pv_kwh
    nb = IntervalData(start_utc=july.start_utc, interval_s=900,
                      import_kwh=np.maximum(net, 0), export_kwh=np.maximum(-net, 0))
    by_hand = month_charges(bill(tariff, nb, allow_gaps=True, in_progress=True).months[-1])
    assert s.no_battery == pytest.approx(by_hand)
    assert s.vs_no_battery > 20.0  # half a July of a Powerwall on EV2-A
    assert abs(s.vs_self_powered) < 0.02 * s.no_battery
    no_load = IntervalData(start_utc=july.start_utc, interval_s=900,
                           import_kwh=july.import_kwh, export_kwh=july.export_kwh)
    assert month_savings(tariff, no_load, battery_spec(cfg.battery), 20.0, soc0) is None
