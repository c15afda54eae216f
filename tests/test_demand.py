"""Demand charges (optimizer/demand.py) billed by hand.

A UTC tariff with two seasons (summer = July-August), peak 16-21, energy 0.30/0.50 $/kWh
(net billing at 0 for exports, so energy is plain), and demand: flat 10 $/kW in summer,
peak 5 $/kW in summer, nothing in winter; 15-minute window.

July of 15-minute data: 0.25 kWh every quarter hour (1 kW), except
  15 July 17:00-17:15  1.50 kWh → 6 kW (peak period)
  20 July 03:00-03:15  2.00 kWh → 8 kW (off-peak)
so the flat determinant is 8 kW ($80) and the peak one 6 kW ($30): $110 of demand.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from optimizer.billing import bill
from optimizer.demand import tiered_demand_charge, window_kw
from optimizer.errors import TariffError
from optimizer.intervals import IntervalData
from tests.helpers import tariff

BASE = """
id = "demand-test"
name = "demand test"
timezone = "UTC"
[calendar]
seasons = { summer = [7, 8], winter = [1, 2, 3, 4, 5, 6, 9, 10, 11, 12] }
[[periods]]
name = "peak"
hours = [[16, 21]]
[[periods]]
name = "off_peak"
hours = [[0, 24]]
[import_rates]
summer = { peak = 0.50, off_peak = 0.30 }
winter = { peak = 0.50, off_peak = 0.30 }
[export]
scheme = "net_billing"
flat_rate = 0.0
netting = "instantaneous"
[settlement]
period_months = 1
"""
DEMAND = """
window_minutes = 15
flat = { summer = 10.0 }
tou = { summer = { peak = 5.0 } }
"""


def _t(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp())


def july(step_s: int = 900, months: int = 1) -> IntervalData:
    start, end = _t("2025-07-01T00:00"), _t(f"2025-{7 + months:02d}-01T00:00")
    t = np.arange(start, end, 900, dtype=np.int64)
    kwh = np.full(len(t), 0.25)
    kwh[t == _t("2025-07-15T17:00")] = 1.5
    kwh[t == _t("2025-07-20T03:00")] = 2.0
    if step_s == 3600:
        t, kwh = t[::4], kwh.reshape(-1, 4).sum(axis=1)
    return IntervalData(start_utc=t, interval_s=step_s, import_kwh=kwh,
                        export_kwh=np.zeros(len(t)), source="july")


def test_flat_and_peak_demand_of_a_july_by_hand():
    b = bill(tariff(BASE, demand=DEMAND), july())
    m = b.months[0]
    assert m.demand_kw == {"flat": pytest.approx(8.0), "peak": pytest.approx(6.0)}
    assert m.demand_charges_by_key == {"flat": pytest.approx(80.0),
                                       "peak": pytest.approx(30.0)}
    assert m.demand_charges == pytest.approx(110.0)
    # energy: 2,976 quarter hours; peak 31 days × 20 = 620 of them at 0.25 kWh except the
    # 17:00 spike (+1.25 kWh); off-peak 2,356 at 0.25 except the 03:00 spike (+1.75 kWh)
    energy = (620 * 0.25 + 1.25) * 0.50 + (2356 * 0.25 + 1.75) * 0.30
    assert m.billed == pytest.approx(energy + 110.0)
    out = b.to_json()["months"][0]
    assert out["demand_kw"] == {"flat": 8.0, "peak": 6.0} and out["demand_charges"] == 110.0


def test_hourly_data_cannot_see_a_quarter_hour_peak_and_says_so():
    """The same month in hours: the 17:00 hour holds 1.50 + 3 × 0.25 = 2.25 kWh (2.25 kW),
    the 03:00 hour 2.75 kWh: $27.50 flat + $11.25 peak, with a note."""
    b = bill(tariff(BASE, demand=DEMAND), july(3600))
    m = b.months[0]
    assert m.demand_kw == {"flat": pytest.approx(2.75), "peak": pytest.approx(2.25)}
    assert m.demand_charges == pytest.approx(27.50 + 11.25)
    assert any("longer than the tariff's 15-minute demand window" in n for n in b.notes)


def test_a_30_minute_window_averages_two_quarter_hours():
    """17:00-17:30 = (1.50 + 0.25) kWh / 0.5 h = 3.5 kW; 03:00-03:30 = 2.25 / 0.5 = 4.5 kW."""
    b = bill(tariff(BASE, demand=DEMAND.replace("15", "30")), july())
    assert b.months[0].demand_kw == {"flat": pytest.approx(4.5), "peak": pytest.approx(3.5)}


def test_winter_has_no_demand_charge_and_the_ratchet_carries_july_into_august():
    """August at a flat 1 kW: with an 80 % ratchet over 11 months its billing demand is
    0.8 × July's 8 kW = 6.4 kW ($64); its peak demand is its own 1 kW ($5)."""
    ratchet = DEMAND + "ratchet_percent = 80\nratchet_months = 11\n"
    b = bill(tariff(BASE, demand=ratchet), july(months=2))
    aug = b.months[1]
    assert aug.demand_kw == {"flat": pytest.approx(6.4), "peak": pytest.approx(1.0)}
    assert aug.demand_charges == pytest.approx(64.0 + 5.0)
    b = bill(tariff(BASE, demand=DEMAND), july(months=2))
    assert b.months[1].demand_kw["flat"] == pytest.approx(1.0)


def test_tiered_demand_and_windows_by_hand():
    tiers = [(10.0, 5.0), (float("inf"), 8.0)]
    assert tiered_demand_charge(4.0, tiers) == pytest.approx(20.0)
    assert tiered_demand_charge(12.0, tiers) == pytest.approx(10 * 5.0 + 2 * 8.0)
    kw, first = window_kw(np.array([0, 300, 600, 900]), 300, np.array([0.1, 0.2, 0.3, 0.4]),
                          900)
    assert list(first) == [0, 3]
    assert kw == pytest.approx([0.6 * 4, 0.4 * 4])


@pytest.mark.parametrize("block, what", [
    ("flat = { spring = 5.0 }", "unknown season 'spring'"),
    ("tou = { summer = { super_peak = 5.0 } }", "unknown period 'super_peak'"),
    ("flat = { summer = [{ up_to_kw = 10, rate = 5.0 }, { up_to_kw = 20, rate = 8.0 }] }",
     "the last demand tier has up_to_kw = 20"),
    ("flat = { summer = [{ up_to_kw = 10, rate = 5.0 }, { up_to_kw = 5, rate = 8.0 }, "
     "{ rate = 9.0 }] }", "is not above the tier before"),
])
def test_bad_demand_blocks_are_refused_naming_the_line(block, what):
    with pytest.raises(TariffError) as e:
        tariff(BASE, demand="window_minutes = 15\n" + block + "\n")
    assert what in e.value.what
    assert "test.toml:" in e.value.where


def test_the_bill_table_shows_the_demand_determinants_and_charges():
    from trueup.report import bill_table

    out = bill_table(bill(tariff(BASE, demand=DEMAND), july()))
    assert "demand kW" in out and "demand $" in out
    assert "flat 8.00 peak 6.00" in out and "110.00" in out
    assert "demand" not in bill_table(bill(tariff(BASE), july()))


def test_tariff_show_lists_the_demand_rates():
    from trueup.report import tariff_summary

    out = tariff_summary(tariff(BASE, demand=DEMAND + "ratchet_percent = 80\n"))
    assert ("demand (15-minute window): summer flat 10 $/kW; summer peak 5 $/kW; ratchet 80 %"
            in out)


def test_the_billing_state_carries_the_month_to_date_peaks():
    """Half of July metered (to 16 July 00:00): the 15 July 17:00 peak (6 kW) is in, the
    20 July spike is not: flat 6 kW, peak 6 kW so far."""
    from optimizer.billing import billing_state

    d = july()
    half = d.select(d.start_utc < _t("2025-07-16T00:00"))
    st = billing_state(tariff(BASE, demand=DEMAND), half)
    assert st.month_demand_kw == {"flat": pytest.approx(6.0), "peak": pytest.approx(6.0)}
    assert st.to_json()["month_demand_kw"] == {"flat": 6.0, "peak": 6.0}


PLAN_TARIFF = """
id = "demand-plan-test"
name = "TOU energy, net billing, flat demand"
timezone = "America/Los_Angeles"
[calendar]
seasons = { summer = [6, 7, 8, 9], winter = [1, 2, 3, 4, 5, 10, 11, 12] }
[[periods]]
name = "peak"
hours = [[16, 21]]
[[periods]]
name = "off_peak"
hours = [[0, 24]]
[import_rates]
summer = { peak = 0.40, off_peak = 0.25 }
winter = { peak = 0.35, off_peak = 0.25 }
[export]
scheme = "net_billing"
flat_rate = 0.05
netting = "instantaneous"
[settlement]
period_months = 1
[demand]
window_minutes = 15
flat = { summer = 15.0, winter = 10.0 }
"""


def _ev_home(tmp_path):
    """The plan's inputs for 48 h of 15-minute steps from 15 July 14:00: PV a bell from 10:00
    to 16:00 peaking at 5 kW; the home 0.5 kW, 2 kW from 16:00 to midnight; an EV at 7.5 kW
    (home included) from 01:00 to 02:00."""
    from trueup.config import load_config
    from trueup.planning import Forecast

    (tmp_path / "t.toml").write_text(PLAN_TARIFF)
    (tmp_path / "trueup.toml").write_text('tariff = "t.toml"\n')
    cfg = load_config(tmp_path / "trueup.toml")
    n = 192
    hour = (14 + np.arange(n) / 4) % 24
    pv = np.where((hour >= 10) & (hour < 16), 5.0 * np.sin(np.pi * (hour - 10) / 6), 0.0)
    load = np.where(hour >= 16, 2.0, 0.5)
    load = np.where((hour >= 1) & (hour < 2), 7.5, load)
    return cfg, Forecast(pv / 4, load / 4, {"pv": "test", "load": "test"}), load / 4, pv / 4


def test_the_plan_shaves_a_peak_only_where_the_demand_charge_pays(tmp_path):
    """Without the demand term (billing_aware=False) the battery serves the evening (16-21
    at 0.40 $/kWh) and the home, and is at its floor when the EV draws 7.5 kW at 01:00; with
    a flat demand charge of $15/kW, keeping 5 kWh for the EV's hour is worth more than the
    evening's energy (0.15 $/kWh more than off-peak): the plan holds the night's peak at
    7.5 − 5.0 = 2.5 kW (the battery's 5 kW), and reports it."""
    from trueup.planning import make_plan, parse_at

    cfg, fc, _, _ = _ev_home(tmp_path)
    at = parse_at("2025-07-15T14:00-07:00")
    with_demand = make_plan(cfg, at_utc=at, soc_percent=50, forecast=fc)
    without = make_plan(cfg, at_utc=at, soc_percent=50, forecast=fc, billing_aware=False)
    peak_with = float(with_demand.plan.import_kwh.max() * 4)
    peak_without = float(without.plan.import_kwh.max() * 4)
    assert peak_without == pytest.approx(7.5, abs=0.01)
    assert peak_with == pytest.approx(2.5, abs=0.01)
    assert with_demand.plan.demand_kw["2025-07 flat"] == pytest.approx(peak_with, abs=1e-6)
    assert not without.plan.demand_kw
    # no grid charging under a demand charge: the battery fills from PV
    assert with_demand.plan.charge_kwh.sum() <= fc.pv_kwh.sum() + 1e-6
    assert any("no grid charging" in n for n in with_demand.notes)


def test_the_settings_cover_the_highest_steps_whole_and_say_why(tmp_path):
    """The same home as settings: the Powerwall covers all of a step's load or none, so the
    plan's partial discharge becomes "cover the highest steps in full, hold for them" (a
    3-hour EV charge could not be covered whole by 10.8 kWh above the floor, and then no
    setting lowers its peak). Carried out by the behaviour model, the settings import
    7.5 − 5.0 = 2.5 kW at the EV's hour at most; the plan without the demand term leaves the
    battery at its floor by then (7.5 kW); the reasons name the demand charge."""
    from optimizer.behaviour import simulate
    from optimizer.policy import battery_spec, demand_covers
    from trueup.planning import make_plan, parse_at

    cfg, fc, load, pv = _ev_home(tmp_path)
    at = parse_at("2025-07-15T14:00-07:00")
    r = make_plan(cfg, at_utc=at, soc_percent=50, forecast=fc)
    covers = demand_covers(r.plan, r.inputs, "America/Los_Angeles")
    ev = np.flatnonzero(load > 1.0)
    assert covers and set(covers) <= set(ev)  # only the EV's steps are worth covering
    spec = battery_spec(r.inputs.battery)
    sim = simulate(list(r.schedule.per_step), r.inputs.soc_kwh, load, pv, 0.25, spec,
                   price_signals=list(r.schedule.signals))
    base_plan = make_plan(cfg, at_utc=at, soc_percent=50, forecast=fc, billing_aware=False)
    base = simulate(list(base_plan.schedule.per_step), base_plan.inputs.soc_kwh, load, pv,
                    0.25, spec, price_signals=list(base_plan.schedule.signals))
    assert sim.import_kwh.max() * 4 == pytest.approx(2.5, abs=0.01)
    assert base.import_kwh.max() * 4 == pytest.approx(7.5, abs=0.01)
    assert any("demand charge 15.00 $/kW" in e.reason for e in r.schedule.entries)
