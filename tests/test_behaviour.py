"""The Powerwall behaviour model (optimizer/behaviour.py), with the arithmetic written out.

Unless a test says otherwise: one Powerwall 2 (13.5 kWh usable, 5 kW charge and discharge,
η_c = η_d = 0.95), 15-minute steps (h = 0.25, so 5 kW is 1.25 kWh per step), reserve 20 %
(= 2.7 kWh). SOC is usable kWh on the app scale; reserve is app %.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.behaviour import (
    BatterySpec,
    ExportRule,
    Mode,
    PriceSignal,
    Settings,
    StepFlows,
    app_to_raw,
    clamp_reserve,
    raw_to_app,
    reserve_ok_for_cloud,
    simulate,
    step,
)

PW2 = BatterySpec.powerwall()
H = 0.25
ETA = 0.95


def sp(reserve: float = 20.0, grid_charging: bool = False,
       rule: ExportRule = ExportRule.PV_ONLY) -> Settings:
    return Settings(Mode.SELF_POWERED, reserve, grid_charging, rule)


def tbc(rule: ExportRule, reserve: float = 20.0, grid_charging: bool = False) -> Settings:
    return Settings(Mode.TIME_BASED, reserve, grid_charging, rule)


def backup(reserve: float = 20.0) -> Settings:
    return Settings(Mode.BACKUP, reserve, False, ExportRule.PV_ONLY)


def assert_flows(f: StepFlows, **expected: float) -> None:
    for name, value in expected.items():
        assert getattr(f, name) == pytest.approx(value, abs=1e-9), name


def balance_error(f: StepFlows, load: float, pv: float) -> float:
    """load + export + charge_from_pv + charge_from_grid − (pv − curtailed + import + discharge)"""
    lhs = load + f.export_kwh + f.charge_from_pv_kwh + f.charge_from_grid_kwh
    rhs = pv - f.curtailed_kwh + f.import_kwh + f.discharge_kwh
    return lhs - rhs


# --------------------------------------------------------------------------------------
# Types and validation


def test_enum_values_are_pypowerwall_strings_and_strings_are_accepted():
    assert (Mode.SELF_POWERED, Mode.TIME_BASED, Mode.BACKUP) == (
        "self_consumption", "autonomous", "backup")
    assert (ExportRule.BATTERY_OK, ExportRule.PV_ONLY, ExportRule.NEVER) == (
        "battery_ok", "pv_only", "never")
    s = Settings("autonomous", 50, True, "battery_ok")
    assert s.mode is Mode.TIME_BASED and s.export_rule is ExportRule.BATTERY_OK


@pytest.mark.parametrize("reserve", [-0.1, 100.5, float("nan"), "50"])
def test_settings_refuse_a_reserve_outside_0_to_100_app_percent(reserve):
    with pytest.raises(ValueError, match=r"reserve must be a number in 0–100 \(app %\), got"):
        Settings(Mode.SELF_POWERED, reserve, False, ExportRule.PV_ONLY)


def test_settings_refuse_an_unknown_mode_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="'self_consumption', 'autonomous', 'backup'"):
        Settings("self_powered", 20, False, ExportRule.PV_ONLY)


def test_powerwall_spec_scales_with_units():
    """Two PW2: 27 kWh, 10 kW; the Self-Powered reserve-fill rate is 2 × 1.75 = 3.5 kW."""
    two = BatterySpec.powerwall(2)
    assert (two.capacity_kwh, two.max_charge_kw, two.max_discharge_kw) == (27.0, 10.0, 10.0)
    assert two.charge_efficiency * two.discharge_efficiency == pytest.approx(0.9025)
    assert two.grid_charge_kw(Mode.SELF_POWERED) == pytest.approx(3.5)
    assert two.grid_charge_kw(Mode.BACKUP) == pytest.approx(6.6)
    assert two.grid_charge_kw(Mode.TIME_BASED) == pytest.approx(10.0)


def test_battery_spec_refuses_a_round_trip_efficiency_for_a_one_way_one():
    with pytest.raises(ValueError, match="one-way"):
        BatterySpec(13.5, 5, 5, charge_efficiency=90)


# --------------------------------------------------------------------------------------
# The 80/100 reserve rule (DOMAIN §3)


@pytest.mark.parametrize(("reserve", "ok"), [
    (0, False), (0.5, False), (1, True), (20, True), (80, True), (80.5, False), (81, False),
    (95, False), (99, False), (99.9, False), (100, True), (101, False), (-1, False)])
def test_cloud_accepts_reserve_1_to_80_or_exactly_100(reserve, ok):
    assert reserve_ok_for_cloud(reserve) is ok


@pytest.mark.parametrize(("requested", "floor", "hold", "expected"), [
    (30, 20, False, 30),     # legal: unchanged
    (10, 20, False, 20),     # raised to the floor
    (0, 0, False, 1),        # 0 does not apply: 1
    (85, 20, False, 80),     # forbidden band, floor allows: down to 80
    (85, 80, False, 80),     # floor exactly 80 still allows 80
    (85, 20, True, 100),     # caller must hold at least 85: up to 100
    (85, 85, False, 100),    # floor above 80: up to 100
    (50, 90, False, 100),    # the floor itself is in the band: 100
    (100, 0, False, 100),
])
def test_clamp_reserve_rounds_the_forbidden_band_to_80_or_100(requested, floor, hold,
                                                             expected):
    assert clamp_reserve(requested, floor, hold=hold) == expected


@given(requested=st.floats(0, 100), floor=st.floats(0, 100), hold=st.booleans())
def test_clamp_reserve_is_always_legal_and_never_below_the_floor(requested, floor, hold):
    r = clamp_reserve(requested, floor, hold=hold)
    assert reserve_ok_for_cloud(r)
    assert r >= floor


def test_clamp_reserve_refuses_values_outside_0_to_100():
    with pytest.raises(ValueError, match="floor"):
        clamp_reserve(50, 120)


# --------------------------------------------------------------------------------------
# Raw vs app scale (DOMAIN §4; pypowerwall: app = (raw − 5) / 0.95)


def test_raw_and_app_scales_match_pypowerwall():
    """raw 5 → app 0; raw 100 → app 100; app 25 → raw 25 × 0.95 + 5 = 28.75 (pypowerwall's
    own test); raw below 5 (FleetAPI's failure value is 5.0) clamps to 0, never negative."""
    assert raw_to_app(5.0) == 0.0
    assert raw_to_app(100.0) == pytest.approx(100.0)
    assert raw_to_app(28.75) == pytest.approx(25.0)
    assert raw_to_app(4.0) == 0.0
    assert app_to_raw(25.0) == pytest.approx(28.75)
    assert app_to_raw(0.0) == 5.0
    np.testing.assert_allclose(raw_to_app(np.array([5.0, 52.5, 100.0])), [0.0, 50.0, 100.0])


def test_app_to_raw_refuses_app_percent_outside_0_to_100():
    with pytest.raises(ValueError, match="outside 0–100"):
        app_to_raw(101.0)


@given(app=st.floats(0, 100))
def test_app_to_raw_to_app_round_trips(app):
    raw = app_to_raw(app)
    assert 5.0 <= raw <= 100.0
    assert raw_to_app(raw) == pytest.approx(app, abs=1e-9)


@given(raw=st.floats(5, 100))
def test_raw_to_app_to_raw_round_trips(raw):
    assert app_to_raw(raw_to_app(raw)) == pytest.approx(raw, abs=1e-9)


# --------------------------------------------------------------------------------------
# Self-Powered


def test_self_powered_surplus_charges_at_max_power_then_exports():
    """PV 2.0, load 0.25 → surplus 1.75. Charge limit 5 kW × 0.25 h = 1.25 → charge 1.25,
    export 1.75 − 1.25 = 0.5. SOC 10 + 1.25 × 0.95 = 11.1875."""
    f = step(sp(), 10.0, 0.25, 2.0, H, PW2)
    assert_flows(f, charge_kwh=1.25, charge_from_grid_kwh=0.0, export_kwh=0.5, import_kwh=0.0,
                 discharge_kwh=0.0, curtailed_kwh=0.0, soc_end_kwh=11.1875)
    assert f.grid_kwh == pytest.approx(-0.5)


def test_self_powered_surplus_fills_to_100_percent_then_exports_the_rest():
    """SOC 13.0: room (13.5 − 13.0) / 0.95 = 0.526316 kWh AC. Surplus 1.75 → charge 0.526316,
    export 1.75 − 0.526316 = 1.223684, SOC exactly 13.5."""
    f = step(sp(), 13.0, 0.25, 2.0, H, PW2)
    assert_flows(f, charge_kwh=0.5 / ETA, export_kwh=1.75 - 0.5 / ETA, soc_end_kwh=13.5)


def test_self_powered_exports_surplus_pv_whatever_the_export_rule():
    """Export rule NEVER does not curtail in Self-Powered: full battery, surplus 1.75 → export."""
    f = step(sp(rule=ExportRule.NEVER), 13.5, 0.25, 2.0, H, PW2)
    assert_flows(f, export_kwh=1.75, curtailed_kwh=0.0, charge_kwh=0.0)


def test_self_powered_deficit_discharges_at_max_power_and_imports_the_rest():
    """Load 1.5, PV 0.2 → deficit 1.3; discharge limit 1.25 → discharge 1.25, import 0.05.
    SOC 10 − 1.25 / 0.95 = 8.684211."""
    f = step(sp(), 10.0, 1.5, 0.2, H, PW2)
    assert_flows(f, discharge_kwh=1.25, import_kwh=0.05, export_kwh=0.0,
                 soc_end_kwh=10.0 - 1.25 / ETA)


def test_self_powered_deficit_stops_at_the_reserve():
    """Reserve 20 % = 2.7 kWh, SOC 3.0: available (3.0 − 2.7) × 0.95 = 0.285 kWh AC.
    Deficit 1.3 → discharge 0.285, import 1.3 − 0.285 = 1.015; SOC ends exactly at 2.7."""
    f = step(sp(), 3.0, 1.5, 0.2, H, PW2)
    assert_flows(f, discharge_kwh=0.285, import_kwh=1.015, soc_end_kwh=2.7)
    g = step(sp(), f.soc_end_kwh, 1.5, 0.2, H, PW2)
    assert_flows(g, discharge_kwh=0.0, import_kwh=1.3, soc_end_kwh=2.7)


def test_self_powered_never_exports_battery_energy():
    """Full battery, no load, no PV: nothing moves."""
    f = step(sp(reserve=5, rule=ExportRule.BATTERY_OK), 13.5, 0.0, 0.0, H, PW2)
    assert_flows(f, export_kwh=0.0, discharge_kwh=0.0, import_kwh=0.0, soc_end_kwh=13.5)


# --------------------------------------------------------------------------------------
# Reserve above SOC: charges from the grid even with grid charging off


def test_reserve_above_soc_charges_from_grid_at_1_75_kw_with_grid_charging_off():
    """Reserve 50 % = 6.75 kWh, SOC 2.0 → needs (6.75 − 2.0) / 0.95 = 5.0 kWh AC. Self-Powered
    rate 1.75 kW × 0.25 h = 0.4375 kWh from the grid; import = load 0.3 + 0.4375 = 0.7375.
    SOC 2.0 + 0.4375 × 0.95 = 2.415625. No discharge below the reserve."""
    f = step(sp(reserve=50, grid_charging=False), 2.0, 0.3, 0.0, H, PW2)
    assert_flows(f, charge_from_grid_kwh=0.4375, charge_kwh=0.4375, import_kwh=0.7375,
                 discharge_kwh=0.0, export_kwh=0.0, soc_end_kwh=2.0 + 0.4375 * ETA)


def test_reserve_fill_stops_exactly_at_the_reserve():
    """SOC 6.6, reserve 6.75: needs 0.15 / 0.95 = 0.157895 kWh AC < 0.4375 → SOC ends 6.75."""
    f = step(sp(reserve=50), 6.6, 0.0, 0.0, H, PW2)
    assert_flows(f, charge_from_grid_kwh=0.15 / ETA, import_kwh=0.15 / ETA, soc_end_kwh=6.75)


def test_reserve_fill_takes_surplus_pv_first_then_the_grid_rate():
    """PV 0.8, load 0.3 → surplus 0.5 charges first; the grid adds min(0.4375,
    1.25 − 0.5 = 0.75, 5.0 − 0.5 = 4.5) = 0.4375. Charge 0.9375, SOC 2 + 0.9375 × 0.95."""
    f = step(sp(reserve=50), 2.0, 0.3, 0.8, H, PW2)
    assert_flows(f, charge_kwh=0.9375, charge_from_grid_kwh=0.4375, import_kwh=0.4375,
                 export_kwh=0.0, soc_end_kwh=2.0 + 0.9375 * ETA)


def test_reserve_fill_rate_is_per_unit_and_per_mode():
    """Two PW2 in Self-Powered: 2 × 1.75 × 0.25 = 0.875 kWh. One PW2 under TBC (hold):
    5 × 0.25 = 1.25 kWh."""
    f2 = step(sp(reserve=50), 2.0, 0.0, 0.0, H, BatterySpec.powerwall(2))
    assert_flows(f2, charge_from_grid_kwh=0.875)
    ft = step(tbc(ExportRule.PV_ONLY, reserve=50), 2.0, 0.0, 0.0, H, PW2)
    assert_flows(ft, charge_from_grid_kwh=1.25)


# --------------------------------------------------------------------------------------
# Backup


def test_backup_charges_from_grid_at_3_3_kw_and_does_not_discharge():
    """SOC 5, load 1.0, no PV, grid charging off. Backup rate 3.3 × 0.25 = 0.825 kWh;
    import 1.0 + 0.825 = 1.825; SOC 5 + 0.825 × 0.95 = 5.78375."""
    f = step(backup(), 5.0, 1.0, 0.0, H, PW2)
    assert_flows(f, charge_from_grid_kwh=0.825, import_kwh=1.825, discharge_kwh=0.0,
                 soc_end_kwh=5.78375)


def test_backup_full_battery_imports_the_load():
    f = step(backup(), 13.5, 1.0, 0.0, H, PW2)
    assert_flows(f, import_kwh=1.0, discharge_kwh=0.0, charge_kwh=0.0, soc_end_kwh=13.5)


def test_backup_surplus_pv_uses_the_charge_power_before_the_grid():
    """Surplus 2.5 ≥ 1.25 → PV fills the charge limit, the grid adds nothing, 1.25 exported."""
    f = step(backup(), 5.0, 0.5, 3.0, H, PW2)
    assert_flows(f, charge_kwh=1.25, charge_from_grid_kwh=0.0, export_kwh=1.25,
                 import_kwh=0.0, soc_end_kwh=5.0 + 1.25 * ETA)


# --------------------------------------------------------------------------------------
# Time-Based Control (our model of it)


def test_tbc_export_with_battery_ok_exports_battery_energy():
    """SOC 10, load 0.5, PV 0.3 → deficit 0.2. Full power 1.25 (available 7.3 × 0.95 =
    6.935): 0.2 to the load, 1.05 exported. SOC 10 − 1.25 / 0.95."""
    f = step(tbc(ExportRule.BATTERY_OK), 10.0, 0.5, 0.3, H, PW2, price_signal="export")
    assert_flows(f, discharge_kwh=1.25, export_kwh=1.05, import_kwh=0.0,
                 soc_end_kwh=10.0 - 1.25 / ETA)


def test_tbc_export_with_battery_ok_stops_at_the_reserve():
    """SOC 3.0, reserve 2.7: available 0.285; 0.2 to the load, 0.085 exported."""
    f = step(tbc(ExportRule.BATTERY_OK), 3.0, 0.5, 0.3, H, PW2, price_signal="export")
    assert_flows(f, discharge_kwh=0.285, export_kwh=0.085, soc_end_kwh=2.7)


def test_tbc_export_with_pv_only_covers_the_load_and_exports_no_battery_energy():
    """Same step with PV_ONLY: discharge = deficit 0.2, export 0; SOC 10 − 0.2 / 0.95."""
    f = step(tbc(ExportRule.PV_ONLY), 10.0, 0.5, 0.3, H, PW2, price_signal="export")
    assert_flows(f, discharge_kwh=0.2, export_kwh=0.0, import_kwh=0.0,
                 soc_end_kwh=10.0 - 0.2 / ETA)


def test_tbc_export_with_pv_only_exports_surplus_pv_instead_of_storing_it():
    """Load 0.3, PV 1.3 → surplus 1.0 exported, nothing charged."""
    f = step(tbc(ExportRule.PV_ONLY), 10.0, 0.3, 1.3, H, PW2, price_signal=PriceSignal.EXPORT)
    assert_flows(f, export_kwh=1.0, charge_kwh=0.0, discharge_kwh=0.0)


def test_tbc_export_with_never_stores_surplus_pv_and_curtails_the_rest():
    """Load 0.3, PV 2.3 → surplus 2.0; charge 1.25 (limit), curtail 0.75, export 0."""
    f = step(tbc(ExportRule.NEVER), 10.0, 0.3, 2.3, H, PW2, price_signal="export")
    assert_flows(f, charge_kwh=1.25, curtailed_kwh=0.75, export_kwh=0.0,
                 soc_end_kwh=10.0 + 1.25 * ETA)


def test_tbc_charge_with_grid_charging_on_charges_at_the_tbc_rate():
    """SOC 5, load 0.5: grid 5 kW × 0.25 = 1.25; import 0.5 + 1.25 = 1.75."""
    f = step(tbc(ExportRule.PV_ONLY, grid_charging=True), 5.0, 0.5, 0.0, H, PW2,
             price_signal="charge")
    assert_flows(f, charge_from_grid_kwh=1.25, import_kwh=1.75, discharge_kwh=0.0,
                 soc_end_kwh=5.0 + 1.25 * ETA)


def test_tbc_charge_with_grid_charging_off_charges_from_pv_only_and_holds():
    """SOC 5 above the reserve: no grid charge, no discharge; load imported; surplus stored."""
    s = tbc(ExportRule.PV_ONLY, grid_charging=False)
    night = step(s, 5.0, 0.5, 0.0, H, PW2, price_signal="charge")
    assert_flows(night, charge_kwh=0.0, discharge_kwh=0.0, import_kwh=0.5, soc_end_kwh=5.0)
    day = step(s, 5.0, 0.5, 1.0, H, PW2, price_signal="charge")
    assert_flows(day, charge_kwh=0.5, charge_from_grid_kwh=0.0, import_kwh=0.0)


@pytest.mark.parametrize(("soc", "load", "pv"), [(10.0, 1.5, 0.2), (3.0, 1.5, 0.2),
                                                 (10.0, 0.25, 2.0), (2.0, 0.3, 0.8)])
@pytest.mark.parametrize("signal", [None, "hold"])
def test_tbc_hold_behaves_like_self_powered_but_fills_the_reserve_at_the_tbc_rate(
        soc, load, pv, signal):
    a = step(tbc(ExportRule.PV_ONLY), soc, load, pv, H, PW2, price_signal=signal)
    b = step(sp(), soc, load, pv, H, PW2)
    assert a == b  # reserve 20 % < SOC in these cases: no reserve fill


def test_price_signal_is_ignored_outside_tbc():
    assert step(sp(), 10.0, 0.5, 0.3, H, PW2, price_signal="export") == \
        step(sp(), 10.0, 0.5, 0.3, H, PW2)


def test_unknown_price_signal_is_refused():
    with pytest.raises(ValueError):
        step(tbc(ExportRule.PV_ONLY), 10.0, 0.5, 0.3, H, PW2, price_signal="discharge")


def test_step_refuses_soc_beyond_capacity():
    with pytest.raises(ValueError, match="app %"):
        step(sp(), 14.0, 0.5, 0.3, H, PW2)


# --------------------------------------------------------------------------------------
# Properties: energy conservation and bounds for any settings and state

SETTINGS = st.builds(Settings, mode=st.sampled_from(Mode),
                     reserve_percent=st.floats(0, 100),
                     grid_charging=st.booleans(), export_rule=st.sampled_from(ExportRule))
SIGNALS = st.sampled_from([None, *PriceSignal])


@settings(max_examples=400, deadline=None)
@given(s=SETTINGS, signal=SIGNALS, units=st.integers(1, 3), soc_frac=st.floats(0, 1),
       load=st.floats(0, 4), pv=st.floats(0, 6), hours=st.sampled_from([1 / 12, 0.25, 0.5, 1]))
def test_energy_is_conserved_and_soc_stays_in_bounds(s, signal, units, soc_frac, load, pv,
                                                     hours):
    spec = BatterySpec.powerwall(units)
    soc = soc_frac * spec.capacity_kwh
    f = step(s, soc, load, pv, hours, spec, price_signal=signal)
    eps = 1e-9
    for name in ("import_kwh", "export_kwh", "charge_kwh", "discharge_kwh",
                 "charge_from_grid_kwh", "curtailed_kwh"):
        assert getattr(f, name) >= 0.0, name
    assert f.charge_from_grid_kwh <= f.charge_kwh + eps
    # the identity: load + export + charge_from_pv + charge_from_grid
    #             = pv − curtailed + import + discharge
    assert abs(balance_error(f, load, pv)) <= eps
    # SOC dynamics and bounds
    assert f.soc_end_kwh == pytest.approx(
        soc + f.charge_kwh * spec.charge_efficiency - f.discharge_kwh / spec.discharge_efficiency,
        abs=eps)
    assert 0.0 <= f.soc_end_kwh <= spec.capacity_kwh
    # power limits
    assert f.charge_kwh <= spec.max_charge_kw * hours + eps
    assert f.discharge_kwh <= spec.max_discharge_kw * hours + eps
    # discharge never takes the battery below the reserve
    if f.discharge_kwh > 0:
        assert f.soc_end_kwh >= s.reserve_kwh(spec) - eps
        assert f.charge_kwh == 0.0
    # the grid never both supplies and takes in the same step
    assert min(f.import_kwh, f.export_kwh) <= eps
    # battery energy is exported only by TBC + export signal + BATTERY_OK
    battery_export_allowed = (s.mode is Mode.TIME_BASED and signal is PriceSignal.EXPORT
                              and s.export_rule is ExportRule.BATTERY_OK)
    if not battery_export_allowed:
        assert f.export_kwh <= max(0.0, pv - load) + eps
    # curtailment only under TBC + NEVER; Backup never discharges
    if f.curtailed_kwh > 0:
        assert s.mode is Mode.TIME_BASED and s.export_rule is ExportRule.NEVER
    if s.mode is Mode.BACKUP:
        assert f.discharge_kwh == 0.0


# --------------------------------------------------------------------------------------
# simulate


def test_simulate_carries_soc_from_step_to_step_like_step_does():
    """A day in hours: PV bell at noon, flat 0.6 kWh load; Self-Powered until 16:00, then TBC
    exporting at 16–21 with BATTERY_OK. simulate must equal a hand loop over step."""
    hours = np.arange(24)
    pv = np.clip(5.0 * np.sin((hours - 6) / 12 * np.pi), 0, None)
    load = np.full(24, 0.6)
    per_step = [sp() if h < 16 else tbc(ExportRule.BATTERY_OK) for h in hours]
    signals = [("export" if 16 <= h < 21 else None) for h in hours]
    sim = simulate(per_step, 4.0, load, pv, 1.0, PW2, signals)

    soc = 4.0
    for i in range(24):
        f = step(per_step[i], soc, load[i], pv[i], 1.0, PW2, price_signal=signals[i])
        assert sim.import_kwh[i] == f.import_kwh and sim.export_kwh[i] == f.export_kwh
        assert sim.charge_kwh[i] == f.charge_kwh and sim.discharge_kwh[i] == f.discharge_kwh
        assert sim.soc_kwh[i] == f.soc_end_kwh
        soc = f.soc_end_kwh
    # whole-day balance: the same identity summed
    lhs = load.sum() + sim.export_kwh.sum() + sim.charge_kwh.sum()
    rhs = pv.sum() - sim.curtailed_kwh.sum() + sim.import_kwh.sum() + sim.discharge_kwh.sum()
    assert lhs == pytest.approx(rhs, abs=1e-9)
    # 16–21 is exporting battery energy; the battery ends at the reserve (2.7 kWh) or above
    assert sim.discharge_kwh[16:21].sum() > 0 and sim.export_kwh[16:21].sum() > 0
    assert sim.soc_kwh.min() >= 2.7 - 1e-9


def test_simulate_accepts_one_settings_for_every_step():
    sim = simulate(backup(), 5.0, [1.0, 1.0], [0.0, 0.0], H, PW2)
    np.testing.assert_allclose(sim.charge_from_grid_kwh, [0.825, 0.825])
    np.testing.assert_allclose(sim.soc_kwh, [5.78375, 5.78375 + 0.825 * ETA])


def test_simulate_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="settings_per_step has 1 entries for 2 steps"):
        simulate([backup()], 5.0, [1.0, 1.0], [0.0, 0.0], H, PW2)
