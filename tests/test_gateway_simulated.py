"""The simulated gateway (adapters/gateway/simulated.py), arithmetic written out.

Unless a test says otherwise: one Powerwall 2 (13.5 kWh usable, 5 kW, η_c = η_d = 0.95),
5-minute series steps (300 s = 1/12 h), no PV, a steady 1 kW home load (1/12 kWh per step),
Self-Powered with grid charging off. Time starts at T0 = 2024-06-01T00:00Z on a SimClock.
Powers are W with Tesla's signs (battery + discharging, grid + importing); counters are Wh.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from adapters.gateway.base import Gateway
from adapters.gateway.simulated import (
    COUNTER_FIELDS,
    COUNTERS_ZERO_REASON,
    FLOW_FIELDS,
    SOC_GLITCH_REASON,
    ZERO_POWER_REASON,
    Faults,
    SimClock,
    SimulatedGateway,
    SimulatedHTTPError,
)
from adapters.telemetry import readings_to_intervals
from optimizer.behaviour import BatterySpec, ExportRule, Mode, Settings
from optimizer.errors import InputError

PW2 = BatterySpec.powerwall()
T0 = 1_717_200_000.0  # 2024-06-01T00:00Z, a multiple of 300 s
STEP = 300.0
H = STEP / 3600.0  # one step in hours
ETA = 0.95
# a gateway with years behind it (Wh)
LIFETIME = {"grid_import_wh": 21_345_678.0, "grid_export_wh": 18_765_432.0,
            "solar_wh": 35_000_000.0, "home_wh": 30_000_000.0,
            "battery_import_wh": 9_000_000.0, "battery_export_wh": 8_100_000.0}


def kw(p: float):
    """A constant power as the simulator's profile: kWh per 5-minute step."""
    return lambda t: p * H


def sp(reserve: float = 20.0, grid_charging: bool = False) -> Settings:
    return Settings(Mode.SELF_POWERED, reserve, grid_charging, ExportRule.PV_ONLY)


def make(soc: float = 40.0, settings: Settings | None = None, *, pv_kw: float = 0.0,
         load_kw: float = 1.0, spec: BatterySpec = PW2, **kwargs):
    clock = SimClock(T0)
    gw = SimulatedGateway(spec, soc, pv=kw(pv_kw), load=kw(load_kw), step_s=STEP,
                          clock=clock, settings=settings or sp(), **kwargs)
    return gw, clock


def read_after(gw: SimulatedGateway, clock: SimClock, seconds: float):
    clock.advance(seconds)
    return gw.read()


def test_is_a_gateway_named_simulated_and_reads_are_simulated():
    gw, _ = make()
    assert isinstance(gw, Gateway)
    assert gw.name == "simulated"
    s = gw.read()
    assert s.source == "simulated" and s.grid_status == "up" and s.ok
    assert s.settings.complete() == sp()


# --------------------------------------------------------------------------------------
# DOMAIN §3 behaviours


def test_reserve_above_soc_charges_from_grid_at_1_75_kw_in_self_powered_with_grid_charging_off():
    # reserve 80 % above SOC 40 %: the battery takes 1.75 kW from the grid on top of the
    # 1 kW load, grid charging switch off notwithstanding.
    gw, clock = make(soc=40.0, settings=sp(reserve=80.0, grid_charging=False))
    s = read_after(gw, clock, STEP)
    assert s.battery_w == pytest.approx(-1750.0)
    assert s.grid_w == pytest.approx(1000.0 + 1750.0)
    # 2.75 kW for 1/12 h = 229.17 Wh imported; 1.75 kW × 1/12 h × 0.95 stored
    assert s.grid_import_wh == pytest.approx(2750.0 / 12)
    assert s.soc_percent == pytest.approx(40.0 + 1.75 / 12 * ETA / 13.5 * 100)  # 41.026 %


def test_reserve_below_soc_the_battery_covers_the_load_instead():
    gw, clock = make(soc=40.0, settings=sp(reserve=20.0))
    s = read_after(gw, clock, STEP)
    assert s.battery_w == pytest.approx(1000.0)
    assert s.grid_w == pytest.approx(0.0)
    assert s.grid_import_wh == 0.0


def test_grid_charge_to_reserve_rate_scales_per_unit():
    # two Powerwalls: 2 × 1.75 kW = 3.5 kW from the grid
    gw, clock = make(soc=40.0, settings=sp(reserve=80.0), spec=BatterySpec.powerwall(2))
    s = read_after(gw, clock, STEP)
    assert s.grid_w - s.home_w == pytest.approx(3500.0)


def test_backup_mode_charges_from_the_grid_faster_than_self_powered():
    # Backup: 3.3 kW toward 100 % (vs 1.75 kW in Self-Powered), grid charging off
    gw, clock = make(soc=40.0, settings=Settings(Mode.BACKUP, 20.0, False, ExportRule.PV_ONLY))
    s = read_after(gw, clock, STEP)
    assert s.battery_w == pytest.approx(-3300.0)
    assert s.grid_w == pytest.approx(1000.0 + 3300.0)


def test_tbc_charge_signal_with_grid_charging_on_charges_at_5_kw():
    gw, clock = make(soc=40.0, settings=Settings(Mode.TIME_BASED, 20.0, True,
                                                 ExportRule.BATTERY_OK),
                     price_signal=lambda t: "charge")
    s = read_after(gw, clock, STEP)
    assert s.battery_w == pytest.approx(-5000.0)
    assert s.grid_w == pytest.approx(6000.0)


def test_tbc_defaults_to_hold_which_behaves_like_self_powered():
    gw, clock = make(soc=40.0, settings=Settings(Mode.TIME_BASED, 20.0, True,
                                                 ExportRule.BATTERY_OK))
    s = read_after(gw, clock, STEP)
    assert s.battery_w == pytest.approx(1000.0) and s.grid_w == pytest.approx(0.0)


def test_reserve_100_is_accepted_charges_to_full_and_holds():
    # The 80/100 rule is the rails' job; the simulator takes 100. From 99 %: 1 % of 13.5 kWh
    # = 0.135 kWh stored = 0.1421 kWh AC, less than one step at 1.75 kW (0.1458 kWh), so the
    # battery is full within the first step and then holds: no discharge, the grid carries the
    # 1 kW load.
    gw, clock = make(soc=99.0, settings=sp(reserve=20.0))
    result = gw.apply(sp(reserve=100.0))
    assert result.ok and result.verified and result.written == ("reserve_percent",)
    assert gw.read().settings.reserve_percent == 100.0
    read_after(gw, clock, STEP)
    s = read_after(gw, clock, 3600.0)
    assert s.soc_percent == pytest.approx(100.0)
    assert s.battery_w == pytest.approx(0.0)
    assert s.grid_w == pytest.approx(1000.0)


def test_settings_act_from_the_moment_they_are_applied():
    # 150 s at reserve 20 (battery covers 1 kW), then 150 s at reserve 80 (grid 2.75 kW):
    # import = 2.75 kW × 150 s / 3600 = 114.58 Wh
    gw, clock = make(soc=40.0)
    clock.advance(150.0)
    gw.apply(sp(reserve=80.0))
    s = read_after(gw, clock, 150.0)
    assert s.grid_import_wh == pytest.approx(2750.0 * 150 / 3600)
    assert s.battery_export_wh == pytest.approx(1000.0 * 150 / 3600)
    assert s.battery_import_wh == pytest.approx(1750.0 * 150 / 3600)


def test_partial_steps_get_their_step_energy_pro_rata():
    # load series: 0.5 kWh in step 0, 0.2 kWh in step 1; a read at 150 s has seen half of
    # step 0 (0.25 kWh), at 450 s all of step 0 and half of step 1 (0.5 + 0.1 kWh)
    clock = SimClock(T0)
    gw = SimulatedGateway(PW2, 50.0, pv=[0.0, 0.0], load=[0.5, 0.2], step_s=STEP, clock=clock)
    assert read_after(gw, clock, 150.0).home_wh == pytest.approx(250.0)
    s = read_after(gw, clock, 300.0)
    assert s.home_wh == pytest.approx(600.0)
    assert s.home_w == pytest.approx(0.2 / H * 1000)  # average of the last step: 2.4 kW


def test_a_series_too_short_raises_unless_wrapped():
    clock = SimClock(T0)
    gw = SimulatedGateway(PW2, 50.0, pv=[0.0], load=[0.1], step_s=STEP, clock=clock)
    clock.advance(2 * STEP)
    with pytest.raises(InputError, match="series"):
        gw.read()
    clock = SimClock(T0)
    gw = SimulatedGateway(PW2, 50.0, pv=[0.0], load=[0.1], step_s=STEP, clock=clock, wrap=True)
    assert read_after(gw, clock, 3 * STEP).home_wh == pytest.approx(300.0)  # 3 × 0.1 kWh


# --------------------------------------------------------------------------------------
# counters vs flows


def _day_profiles():
    hours = (np.arange(288) + 0.5) * H
    pv_kw = np.clip(6.0 * np.sin(np.pi * (hours - 6.0) / 12.0), 0.0, None)  # 6 kW peak at noon
    load_kw = 0.6 + 1.5 * ((hours >= 17) & (hours < 21))  # evening bump
    return pv_kw * H, load_kw * H


def test_counters_grow_exactly_by_the_reported_flows_over_a_day():
    # reads at step boundaries: each read's average flows × 1/12 h are the counters' deltas
    pv, load = _day_profiles()
    clock = SimClock(T0)
    gw = SimulatedGateway(PW2, 30.0, pv=pv, load=load, step_s=STEP, clock=clock,
                          counters_wh=LIFETIME)
    prev = gw.read()
    for _ in range(288):
        s = read_after(gw, clock, STEP)
        if s.ok:
            wh = H  # 1 W for 1/12 h = 1/12 Wh
            assert s.grid_w * wh == pytest.approx(
                (s.grid_import_wh - prev.grid_import_wh)
                - (s.grid_export_wh - prev.grid_export_wh), abs=1e-6)
            assert s.battery_w * wh == pytest.approx(
                (s.battery_export_wh - prev.battery_export_wh)
                - (s.battery_import_wh - prev.battery_import_wh), abs=1e-6)
            assert s.solar_w * wh == pytest.approx(s.solar_wh - prev.solar_wh, abs=1e-6)
            assert s.home_w * wh == pytest.approx(s.home_wh - prev.home_wh, abs=1e-6)
            assert s.solar_w + s.grid_w + s.battery_w == pytest.approx(s.home_w, abs=1e-6)
        prev = s
    # the day's totals: all the load was served, all the PV produced (nothing curtailed)
    assert prev.home_wh - LIFETIME["home_wh"] == pytest.approx(load.sum() * 1000)
    assert prev.solar_wh - LIFETIME["solar_wh"] == pytest.approx(pv.sum() * 1000)
    assert prev.grid_export_wh > LIFETIME["grid_export_wh"]
    assert prev.grid_import_wh > LIFETIME["grid_import_wh"]


def test_telemetry_intervals_sum_to_the_counter_deltas():
    # reads every 60 s, 5-minute intervals: Σ interval kWh == counter delta / 1000
    pv, load = _day_profiles()
    clock = SimClock(T0)
    gw = SimulatedGateway(PW2, 30.0, pv=pv, load=load, step_s=STEP, clock=clock,
                          counters_wh=LIFETIME)
    reads = [gw.read()]
    for _ in range(24 * 60):
        reads.append(read_after(gw, clock, 60.0))
    first, last = reads[0], reads[-1]
    tel = readings_to_intervals(reads, 300)
    assert len(tel.data) == 288 and tel.complete.all() and not tel.estimated.any()
    d = tel.data
    assert d.import_kwh.sum() == pytest.approx((last.grid_import_wh - first.grid_import_wh) / 1e3)
    assert d.export_kwh.sum() == pytest.approx((last.grid_export_wh - first.grid_export_wh) / 1e3)
    assert d.load_kwh.sum() == pytest.approx(load.sum())
    assert d.pv_kwh.sum() == pytest.approx(pv.sum())
    # per interval too: the simulator's steps are the intervals here
    assert d.load_kwh == pytest.approx(load)


# --------------------------------------------------------------------------------------
# faults: each shape as the real adapter presents it (unknown + reason, never 0)


def test_read_timeout_gives_all_unknown_with_the_reason_and_the_house_keeps_running():
    gw, clock = make(soc=40.0, settings=sp(reserve=80.0), faults=Faults(read_timeout=1.0))
    s = read_after(gw, clock, STEP)
    assert not s.ok
    for name in ("soc_percent", *FLOW_FIELDS, "grid_status", *COUNTER_FIELDS):
        assert getattr(s, name) is None
        assert "timed out" in s.unknown[name]
    assert s.settings.complete() is None and "settings.reserve_percent" in s.unknown
    gw.faults = Faults()
    s = read_after(gw, clock, STEP)
    assert s.grid_import_wh == pytest.approx(2 * 2750.0 / 12)  # both steps happened


def test_read_timeout_can_raise_instead():
    gw, clock = make(faults=Faults(read_timeout=1.0, errors="raise"))
    with pytest.raises(TimeoutError):
        read_after(gw, clock, STEP)


def test_http_error_on_read_is_unknown_or_raises():
    gw, clock = make(faults=Faults(http_error=1.0))
    s = read_after(gw, clock, STEP)
    assert s.soc_percent is None and "HTTP 503" in s.unknown["soc_percent"]
    gw.set_faults(errors="raise")
    with pytest.raises(SimulatedHTTPError) as e:
        read_after(gw, clock, STEP)
    assert isinstance(e.value, ConnectionError) and e.value.status == 503


def test_zero_power_glitch_is_unknown_flows_with_the_pypowerwall_reason_soc_still_read():
    gw, clock = make(soc=40.0, faults=Faults(zero_power=1.0))
    s = read_after(gw, clock, STEP)
    for name in FLOW_FIELDS:
        assert getattr(s, name) is None  # never 0
        assert s.unknown[name] == ZERO_POWER_REASON
    assert s.soc_percent == pytest.approx(40.0 - 1.0 / 12 / ETA / 13.5 * 100)
    assert s.grid_status == "up" and s.grid_import_wh == 0.0 and s.home_wh > 0


def test_an_idle_home_reads_all_zero_which_the_adapter_cannot_tell_from_a_failure():
    gw, clock = make(soc=40.0, load_kw=0.0)
    s = read_after(gw, clock, STEP)
    assert s.grid_w is None and s.unknown["grid_w"] == ZERO_POWER_REASON
    assert s.soc_percent == pytest.approx(40.0)


def test_all_zero_counters_read_as_unknown_like_the_real_adapter():
    # a fresh simulator's counters are all 0 Wh: the real adapter's "not reported" shape
    gw, clock = make(soc=40.0)
    s = gw.read()
    for name in COUNTER_FIELDS:
        assert getattr(s, name) is None and s.unknown[name] == COUNTERS_ZERO_REASON
    assert s.ok  # SOC and flows are fine
    assert read_after(gw, clock, STEP).home_wh == pytest.approx(1000.0 / 12)


def test_fleetapi_soc_glitch_is_unknown_soc_with_reason_not_zero():
    gw, clock = make(soc=40.0, faults=Faults(soc_glitch=1.0))
    s = read_after(gw, clock, STEP)
    assert s.soc_percent is None and s.unknown["soc_percent"] == SOC_GLITCH_REASON
    assert s.battery_w == pytest.approx(1000.0)  # flows unaffected
    assert gw.soc_percent == pytest.approx(40.0 - 1.0 / 12 / ETA / 13.5 * 100)  # the truth


def test_fault_probabilities_are_reproducible_from_the_seed():
    def pattern(seed: int) -> list[bool]:
        gw, clock = make(faults=Faults(zero_power=0.5), seed=seed)
        return [read_after(gw, clock, 60.0).grid_w is None for _ in range(200)]

    a = pattern(7)
    assert a == pattern(7)
    assert 60 <= sum(a) <= 140  # ~100 of 200 (binomial sd ≈ 7)


def test_dropped_write_reports_success_but_nothing_changes():
    gw, clock = make(soc=40.0, faults=Faults(drop_writes=1.0))
    result = gw.apply(sp(reserve=80.0))
    assert result.ok and result.verified and result.written == ("reserve_percent",)
    s = read_after(gw, clock, STEP)
    assert s.settings.reserve_percent == 20.0
    assert s.battery_w == pytest.approx(1000.0)  # still covering the load: no grid charge
    assert any("dropped" in what for _, what in gw.log)


def test_delayed_write_acts_and_reads_back_only_after_the_delay():
    # SOC 40 %, reserve 20 → 80 applied at T0 with a 600 s delay: for 600 s the battery covers
    # the 1 kW load (no import), then the grid carries 1 kW + 1.75 kW grid charge.
    gw, clock = make(soc=40.0, faults=Faults(apply_delay_s=600.0))
    assert gw.apply(sp(reserve=80.0)).verified
    assert gw.pending and gw.pending[0][0] == T0 + 600.0
    s = read_after(gw, clock, 300.0)
    assert s.settings.reserve_percent == 20.0 and s.grid_import_wh == 0.0
    s = read_after(gw, clock, 300.0)
    assert s.settings.reserve_percent == 80.0 and s.grid_import_wh == pytest.approx(0.0)
    s = read_after(gw, clock, 300.0)
    assert s.grid_w == pytest.approx(2750.0)
    assert s.grid_import_wh == pytest.approx(2750.0 * 300 / 3600)  # 229.17 Wh
    assert s.battery_export_wh == pytest.approx(1000.0 * 600 / 3600)  # 166.67 Wh


def test_write_error_is_reported_or_raised_and_changes_nothing():
    gw, clock = make(faults=Faults(write_error=1.0))
    result = gw.apply(sp(reserve=80.0))
    assert not result.ok and not result.verified and "HTTP 503" in result.errors[0]
    assert read_after(gw, clock, STEP).settings.reserve_percent == 20.0
    gw.set_faults(errors="raise")
    with pytest.raises(SimulatedHTTPError):
        gw.apply(sp(reserve=80.0))


def test_grid_outage_battery_covers_the_load_below_the_reserve_down_to_zero():
    # SOC 10 % < reserve 20 %, grid down, 2 kW load, no PV: the battery carries the home.
    # 1.35 kWh stored × 0.95 = 1.2825 kWh AC lasts 1.2825 / 2 h = 2308.5 s.
    gw, clock = make(soc=10.0, load_kw=2.0, faults=Faults(grid_down=True))
    s = read_after(gw, clock, STEP)
    assert s.grid_status == "down"
    assert s.grid_w == pytest.approx(0.0) and s.battery_w == pytest.approx(2000.0)
    assert s.grid_import_wh == 0.0 and s.grid_export_wh == 0.0
    s = read_after(gw, clock, 3600.0)
    assert s.soc_percent == pytest.approx(0.0, abs=1e-9)  # a true 0 %: reported, not unknown
    assert s.home_wh == pytest.approx(2000.0 * 2308.5 / 3600)  # 1282.5 Wh served, then dark
    assert s.grid_import_wh == 0.0
    assert s.grid_w is None and s.unknown["grid_w"] == ZERO_POWER_REASON  # dark house
    # grid back: the reserve above SOC is filled from the grid again (1 kW... 2 kW + 1.75 kW)
    gw.set_faults(grid_down=False)
    s = read_after(gw, clock, STEP)
    assert s.grid_status == "up" and s.grid_w == pytest.approx(2000.0 + 1750.0)


def test_grid_outage_curtails_surplus_pv_instead_of_exporting():
    # 99 % full, 3 kW PV, 1 kW load: 0.135 kWh stored fills within the first step, the rest
    # of the 2 kW surplus cannot be exported
    gw, clock = make(soc=99.0, pv_kw=3.0, load_kw=1.0, faults=Faults(grid_down=True))
    read_after(gw, clock, STEP)
    s = read_after(gw, clock, STEP)
    assert s.soc_percent == pytest.approx(100.0)
    assert s.grid_export_wh == 0.0 and s.grid_w == pytest.approx(0.0)
    assert s.solar_w == pytest.approx(1000.0)  # only what the home uses
    assert s.home_w == pytest.approx(1000.0)


def test_counter_reset_restarts_counters_from_zero():
    gw, clock = make(soc=40.0, settings=sp(reserve=80.0))
    before = read_after(gw, clock, STEP)
    gw.reset_counters()
    after = read_after(gw, clock, STEP)
    assert after.grid_import_wh == pytest.approx(2750.0 / 12)  # one step since the reset
    assert after.grid_import_wh < before.grid_import_wh + 2750.0 / 12


def test_scheduled_counter_reset_fires_once_at_its_time():
    # reset at T0 + 450 s; a read at T0 + 600 s has counted 150 s of 2.75 kW = 114.58 Wh
    gw, clock = make(soc=40.0, settings=sp(reserve=80.0),
                     faults=Faults(counter_reset_at=T0 + 450.0))
    assert read_after(gw, clock, 600.0).grid_import_wh == pytest.approx(2750.0 * 150 / 3600)
    assert read_after(gw, clock, 600.0).grid_import_wh == pytest.approx(2750.0 * 750 / 3600)


def test_telemetry_handles_the_simulated_counter_reset_without_negative_or_invented_energy():
    # reads every 300 s on the interval grid; counters reset at T0 + 1050 s (inside the 4th
    # interval). The reset interval's delta is dropped; its power readings (steady 2750 W)
    # fill it as an estimate; every other interval is exact: 2.75 kW × 1/12 h = 0.22917 kWh.
    gw, clock = make(soc=40.0, settings=sp(reserve=80.0),
                     faults=Faults(counter_reset_at=T0 + 1050.0))
    reads = [read_after(gw, clock, STEP) for _ in range(6)]
    tel = readings_to_intervals(reads, 300)
    assert (tel.data.import_kwh >= 0).all()
    assert tel.data.import_kwh == pytest.approx([2.75 / 12] * 5)
    assert tel.estimated.tolist() == [False, False, True, False, False]
    assert any("reset" in n for n in tel.notes)
    # without power readings the reset interval is absent, not zero
    bare = [r.__class__(timestamp=r.timestamp, source=r.source, grid_import_wh=r.grid_import_wh,
                        grid_export_wh=r.grid_export_wh) for r in reads]
    tel = readings_to_intervals(bare, 300)
    starts = (tel.data.start_utc - int(T0)) // 300
    assert starts.tolist() == [1, 2, 4, 5]
    assert tel.data.import_kwh == pytest.approx([2.75 / 12] * 4)


def test_faulty_reads_are_skipped_by_telemetry_and_energy_is_still_conserved():
    pv, load = _day_profiles()
    clock = SimClock(T0)
    gw = SimulatedGateway(PW2, 30.0, pv=pv, load=load, step_s=STEP, clock=clock, seed=3,
                          counters_wh=LIFETIME,
                          faults=Faults(read_timeout=0.2, zero_power=0.2, soc_glitch=0.2))
    reads = [gw.read()] + [read_after(gw, clock, 60.0) for _ in range(24 * 60)]
    good = [r for r in reads if r.grid_import_wh is not None]
    tel = readings_to_intervals(reads, 300)
    net = tel.data.import_kwh.sum() - tel.data.export_kwh.sum()
    counted = ((good[-1].grid_import_wh - good[0].grid_import_wh)
               - (good[-1].grid_export_wh - good[0].grid_export_wh)) / 1000
    assert net == pytest.approx(counted)
    assert not tel.estimated.any()
    assert math.isclose(tel.data.load_kwh.sum(), (good[-1].home_wh - good[0].home_wh) / 1000)


def test_a_newer_write_supersedes_an_older_one_still_pending():
    # reserve 80 with a 600 s delay, then reserve 30 at once: 80 must never land later
    gw, clock = make(soc=40.0, faults=Faults(apply_delay_s=600.0))
    gw.apply(sp(reserve=80.0))
    gw.set_faults(apply_delay_s=0.0)
    gw.apply(sp(reserve=30.0))
    assert gw.pending == ()
    assert read_after(gw, clock, 900.0).settings.reserve_percent == 30.0
