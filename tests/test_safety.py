"""The safety rails, on the simulated Powerwall (real physics, injectable faults, a clock
that runs faster than real time)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.gateway.dryrun import DryRunGateway
from adapters.gateway.safety import Rails, SafeGateway
from adapters.gateway.simulated import Faults, SimClock, SimulatedGateway
from optimizer.behaviour import BatterySpec, ExportRule, Mode, Settings

OWNER = Settings(Mode.TIME_BASED, 35.0, True, ExportRule.PV_ONLY)


def site(faults: Faults | None = None, clock: SimClock | None = None) -> SimulatedGateway:
    """One Powerwall at 60 %, 0.2 kWh of load and 0.1 kWh of PV per 5 minutes, the owner's
    own settings Time-Based Control at 35 %."""
    return SimulatedGateway(BatterySpec.powerwall(), 60.0, lambda t: 0.1, lambda t: 0.2,
                            clock=clock or SimClock(), settings=OWNER, faults=faults,
                            counters_wh={"grid_import_wh": 1e6, "grid_export_wh": 5e5,
                                         "solar_wh": 2e6, "home_wh": 3e6,
                                         "battery_import_wh": 4e5, "battery_export_wh": 3.6e5})


def rails(gw: SimulatedGateway, **kw) -> SafeGateway:
    r = SafeGateway(gw, Rails(floor_percent=20.0, **kw), gw.clock)
    r.start()
    return r


def sp(reserve: float) -> Settings:
    return Settings(Mode.SELF_POWERED, reserve, False, ExportRule.PV_ONLY)


def test_a_reserve_below_the_floor_is_raised_to_the_floor():
    gw = site()
    r = rails(gw)
    res = r.apply(sp(5.0))
    assert gw.settings.reserve_percent == 20.0
    assert res.applied.reserve_percent == 20.0 and "floor 20%" in res.notes[0]


@pytest.mark.parametrize("asked, written", [(85.0, 80.0), (99.0, 80.0), (100.0, 100.0),
                                            (0.0, 20.0), (80.0, 80.0)])
def test_the_80_100_rule_and_never_zero(asked, written):
    gw = site()
    rails(gw).apply(sp(asked))
    assert gw.settings.reserve_percent == written


def test_a_floor_of_zero_still_never_writes_zero():
    gw = site()
    r = SafeGateway(gw, Rails(floor_percent=0.0), gw.clock)
    r.start()
    r.apply(sp(0.0))
    assert gw.settings.reserve_percent == 1.0


def test_changes_closer_than_the_minimum_interval_are_refused():
    gw = site()
    r = rails(gw, min_change_interval_s=900)
    assert r.apply(sp(30)).written
    gw.clock.advance(600)
    res = r.apply(sp(40))
    assert res.skipped == "too soon: next change allowed in 300 s"
    gw.clock.advance(300)
    assert r.apply(sp(40)).written == ("reserve_percent",)


def test_an_exhausted_hourly_budget_refuses_writes_until_the_hour_has_passed():
    """4 field writes an hour: mode + reserve + grid charging (3) then reserve (1) use it
    up; the next change waits until the first writes are an hour old."""
    gw = site()
    r = rails(gw, min_change_interval_s=0, max_writes_per_hour=4)
    assert len(r.apply(sp(30)).written) == 3  # mode, reserve, grid charging
    gw.clock.advance(60)
    assert r.apply(sp(40)).written == ("reserve_percent",)
    gw.clock.advance(60)
    res = r.apply(sp(50))
    assert res.skipped == "write budget exhausted" and gw.settings.reserve_percent == 40
    gw.clock.advance(3600)
    assert r.apply(sp(50)).written == ("reserve_percent",)


def test_a_change_needing_more_writes_than_are_left_is_refused_whole():
    """Budget 4/h, 3 used: a change of mode and reserve (2 writes) is not half-written."""
    gw = site()
    r = rails(gw, min_change_interval_s=0, max_writes_per_hour=4)
    r.apply(sp(30))
    res = r.apply(Settings(Mode.TIME_BASED, 50.0, False, ExportRule.BATTERY_OK))
    assert res.skipped.startswith("write budget: 3 field write(s) needed, 1 left")
    assert gw.settings.mode == Mode.SELF_POWERED


def test_the_kill_switch_restores_the_owners_settings_and_stops_all_writes():
    gw = site()
    r = rails(gw, min_change_interval_s=0)
    r.apply(sp(30))
    assert gw.settings == sp(30)
    r.kill("SIGUSR1 from the owner")
    assert gw.settings == OWNER
    assert r.apply(sp(50)).skipped == "kill switch: writes are off"
    assert gw.settings == OWNER
    assert any("kill switch: SIGUSR1 from the owner" in m for m in r.log)


def test_the_kill_switch_in_the_config_applies_at_start():
    gw = site()
    gw.apply(sp(60))  # something else changed it before trueup started
    r = SafeGateway(gw, Rails(floor_percent=20.0, kill_switch=True), gw.clock)
    r.start()
    assert r.killed and gw.settings == sp(60)  # the settings found at start are kept
    assert r.apply(sp(30)).skipped == "kill switch: writes are off"


def test_repeated_failures_fall_back_to_self_powered_at_the_floor_loudly():
    """Three failed writes in a row: from then on only Self-Powered at the floor is tried;
    when the gateway answers again, that is what it gets, then plans resume."""
    gw = site(Faults(write_error=1.0))
    r = rails(gw, min_change_interval_s=0, failures_before_fallback=3,
              max_writes_per_hour=20)
    for reserve in (30, 40, 50):
        assert r.apply(Settings(Mode.TIME_BASED, reserve, False, ExportRule.BATTERY_OK)).errors
    assert r.in_fallback and any("falling back to Self-Powered" in m for m in r.log)
    gw.set_faults(write_error=0.0)
    res = r.apply(Settings(Mode.TIME_BASED, 60, False, ExportRule.BATTERY_OK))
    assert res.applied == sp(20.0) and not r.in_fallback
    assert gw.settings == sp(20.0)


def test_a_gateway_down_for_an_hour_never_exceeds_the_budget_nor_raises():
    """Reads time out and writes fail for an hour while the daemon asks for a change every
    minute: reads say 'unknown', no exception escapes, and only the hourly budget of API
    calls is spent (12: four tries of 3 fields — failed calls count, FleetAPI bills them).
    Three failures put the rails in fallback, so when the gateway is back it gets
    Self-Powered at the floor first, not the plan's request."""
    gw = site(Faults(write_error=1.0, read_timeout=1.0))
    r = rails(gw, min_change_interval_s=0, max_writes_per_hour=12)
    for minute in range(60):
        state = r.read()
        assert state.soc_percent is None and "soc_percent" in state.unknown
        r.apply(sp(30 + minute % 2 * 10))
        gw.clock.advance(60)
    attempts = [t for t, _, fields in gw.attempts for _ in fields]
    assert len(attempts) == 12  # it did try, within budget, not every minute
    assert r.in_fallback
    gw.set_faults(write_error=0.0, read_timeout=0.0)
    gw.clock.advance(3600)
    r.apply(sp(40))
    assert gw.settings == sp(20.0)  # the fallback, not the plan's request
    assert r.read().soc_percent is not None


def test_dry_run_never_writes_and_records_what_it_would_do():
    gw = site()
    dry = DryRunGateway(gw, gw.clock)
    dry.read()
    res = dry.apply(sp(50))
    assert res.skipped == "dry run: not written" and gw.settings == OWNER
    assert [w.settings for w in dry.would_write] == [sp(50)]
    assert dry.would_write[0].current == OWNER
    assert gw.writes == []


SETTINGS = st.builds(
    Settings,
    st.sampled_from(list(Mode)),
    st.floats(0.0, 100.0),
    st.booleans(),
    st.sampled_from(list(ExportRule)),
)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(SETTINGS, st.integers(0, 1800),
                                st.floats(0.0, 1.0), st.floats(0.0, 1.0)),
                      min_size=1, max_size=60),
       per_hour=st.integers(1, 8), per_day=st.integers(1, 30))
def test_random_settings_and_faults_never_break_the_floor_or_the_budget(steps, per_hour,
                                                                         per_day):
    """Whatever is asked, whatever fails: no reserve below the floor (20 %) or in 81-99 is
    ever written, and no hour or day has more field writes than the budget."""
    gw = site(Faults(write_error=0.0))
    r = SafeGateway(gw, Rails(floor_percent=20.0, max_writes_per_hour=per_hour,
                              max_writes_per_day=per_day, min_change_interval_s=300),
                    gw.clock)
    r.start()
    gw.attempts.clear()  # count only writes through the rails
    for asked, wait, fail, drop in steps:
        gw.set_faults(write_error=fail, drop_writes=drop)
        r.apply(asked)
        gw.clock.advance(wait)
    for _t, s, _ in gw.attempts:
        assert s.reserve_percent >= 20.0
        assert s.reserve_percent <= 80.0 or s.reserve_percent == 100.0
    # every API call counts, failed or not
    times = [t for t, _, fields in gw.attempts for _ in fields]
    for t0 in times:
        assert sum(1 for t in times if t0 <= t < t0 + 3600) <= per_hour
        assert sum(1 for t in times if t0 <= t < t0 + 86400) <= per_day


def test_sigusr1_trips_the_kill_switch():
    import os
    import signal

    from adapters.gateway.safety import install_kill_signal

    gw = site()
    r = rails(gw, min_change_interval_s=0)
    r.apply(sp(30))
    old = signal.getsignal(signal.SIGUSR1)
    try:
        install_kill_signal(r)
        os.kill(os.getpid(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, old)
    # the handler only asks; the daemon's loop (or the next apply) carries it out
    assert not r.killed
    r.service_kill()
    assert r.killed and r.kill_confirmed and gw.settings == OWNER
    assert any("signal SIGUSR1 received" in m for m in r.log)


def test_the_config_builds_the_rails(tmp_path):
    from trueup.config import load_config

    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[battery]\nbackup_floor_percent = 25\n[safety]\n"
                        "max_writes_per_hour = 2\nkill_switch = true\n")
    r = load_config(cfg_file).rails()
    assert (r.floor_percent, r.max_writes_per_hour, r.kill_switch) == (25, 2, True)
    assert r.cloud_reserve_rule


class _SignalMidWrite(SimulatedGateway):
    """A simulated Powerwall where the owner's SIGUSR1 arrives while a write is on the
    wire (a real signal to this process, between the request and the gateway's answer)."""

    def apply(self, settings):
        import os
        import signal

        if settings.reserve_percent == 60.0:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().apply(settings)


def test_a_kill_during_a_write_in_flight_leaves_the_owners_settings_final():
    import signal

    from adapters.gateway.safety import install_kill_signal

    gw = _SignalMidWrite(BatterySpec.powerwall(), 60.0, lambda t: 0.1, lambda t: 0.2,
                         clock=SimClock(), settings=OWNER)
    r = rails(gw, min_change_interval_s=0)
    old = signal.getsignal(signal.SIGUSR1)
    try:
        install_kill_signal(r)
        r.apply(Settings(Mode.BACKUP, 60.0, True, ExportRule.NEVER))
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert r.killed and gw.settings == OWNER  # the restore came after the write, not before
    assert r.apply(sp(30)).skipped == "kill switch: writes are off"


def test_an_owner_reserve_of_85_is_restored_as_80_with_a_warning():
    gw = site()
    gw.apply(Settings(Mode.SELF_POWERED, 85.0, False, ExportRule.PV_ONLY))
    r = rails(gw, min_change_interval_s=0)
    r.apply(sp(30))
    r.kill("test")
    assert gw.settings.reserve_percent == 80.0
    assert any("cannot be set any more" in m for m in r.log)


def test_after_a_restart_the_kill_switch_restores_the_settings_found_at_first_start(tmp_path):
    owner_file = tmp_path / "owner-settings.json"
    gw = site()
    first = SafeGateway(gw, Rails(floor_percent=20.0, min_change_interval_s=0), gw.clock,
                        owner_file=owner_file)
    first.start()
    first.apply(Settings(Mode.BACKUP, 80.0, True, ExportRule.NEVER))  # trueup's own plan
    # the daemon restarts: the gateway now holds trueup's settings, not the owner's
    again = SafeGateway(gw, Rails(floor_percent=20.0, min_change_interval_s=0), gw.clock,
                        owner_file=owner_file)
    again.start()
    again.kill("owner's request")
    assert gw.settings == OWNER


def test_two_threads_cannot_overspend_the_budget():
    """Budget 1 write an hour; two threads ask at once: one write, one refusal."""
    import threading

    gw = site()
    r = rails(gw, min_change_interval_s=0, max_writes_per_hour=1)
    gw.attempts.clear()
    go = threading.Barrier(2)

    def ask(reserve):
        go.wait()
        r.apply(Settings(OWNER.mode, reserve, OWNER.grid_charging, OWNER.export_rule))

    threads = [threading.Thread(target=ask, args=(v,)) for v in (40.0, 50.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(f) for _, _, f in gw.attempts) == 1


def test_a_fractional_floor_is_written_as_the_next_whole_percent():
    gw = site()
    r = SafeGateway(gw, Rails(floor_percent=22.5, min_change_interval_s=0), gw.clock)
    r.start()
    r.apply(sp(10.0))
    assert gw.settings.reserve_percent == 23.0


def test_a_failing_kill_restore_is_retried_with_a_growing_pause_within_the_budget():
    """The gateway refuses every write. The kill switch's first restore is sent at once
    (the owner's settings, then the safe default: 4 + 2 field calls, over a budget of 4 an
    hour — the owner's word wins once). Its retries come after 1, 2, 4, 8 … minutes and
    only when the hour's budget has room, so three hours of service calls every minute send
    a handful of restores, not 180, and no hour after the first holds more than 4 calls."""
    gw = site()
    results = []
    r = SafeGateway(gw, Rails(floor_percent=20.0, min_change_interval_s=0,
                              max_writes_per_hour=4, max_writes_per_day=24), gw.clock,
                    on_result=lambda kind, res: results.append((kind, res)))
    r.start()
    r.apply(sp(40))  # trueup's plan is in force ...
    gw.clock.advance(3600)
    gw.set_faults(write_error=1.0)  # ... then the gateway stops taking writes
    gw.attempts.clear()
    results.clear()
    t0 = gw.clock.now()
    r.kill("owner")
    first = [a for a in gw.attempts if a[0] == t0]
    assert [a[1] for a in first] == [OWNER, sp(20.0)]  # owner's settings, then the default
    for _ in range(180):
        gw.clock.advance(60)
        r.service_kill()
    later = [t for t, _, fields in gw.attempts if t > t0 for _ in fields]
    for start in later:
        assert sum(1 for t in later if start <= t < start + 3600) <= 4
    assert 0 < len({t for t, _, _ in gw.attempts if t > t0}) <= 6
    # every attempt reached the observer (the daemon's store and metrics)
    assert sum(1 for kind, _ in results if kind == "kill") == len(
        {(t, s) for t, s, _ in gw.attempts})
    assert not r.kill_confirmed
    gw.set_faults(write_error=0.0)
    gw.clock.advance(3600)
    r.service_kill()
    assert r.kill_confirmed and gw.settings == OWNER


def test_every_failed_write_is_logged(caplog):
    gw = site(Faults(write_error=1.0))
    r = rails(gw, min_change_interval_s=0, max_writes_per_hour=20,
              failures_before_fallback=3)
    with caplog.at_level("WARNING", logger="trueup.safety"):
        r.apply(sp(30))
        r.apply(sp(40))
    failed = [m for m in caplog.messages if "failed" in m]
    assert len(failed) == 2 and "1 of 3" in failed[0] and "2 of 3" in failed[1]


def test_new_rails_with_the_kill_switch_trip_it_and_a_reload_cannot_untrip_it():
    gw = site()
    r = rails(gw, min_change_interval_s=0)
    r.apply(sp(30))
    r.update_rails(Rails(floor_percent=20.0, min_change_interval_s=0, kill_switch=True))
    assert r.killed and gw.settings == OWNER
    r.update_rails(Rails(floor_percent=20.0, min_change_interval_s=0, kill_switch=False))
    assert r.rails.kill_switch and r.apply(sp(50)).skipped == "kill switch: writes are off"


def test_after_a_clock_jump_back_the_pace_and_budget_count_elapsed_time():
    """A write, then the wall clock put back 2 h. Told of the jump, the rails move their
    record with it: 15 minutes later a change is allowed (elapsed time), not refused as
    "too soon" for 2 h 15 min, and the write still counts in the day's budget."""
    clock = SimClock()
    gw = site(clock=clock)
    r = rails(gw, min_change_interval_s=900)
    assert r.apply(sp(40)).written
    clock.jump(-7200)
    r.clock_jumped(-7200)
    clock.advance(900)
    assert r.apply(sp(50)).written
    assert sorted(round(a) for a in r.write_ages()) == [0, 900, 900, 900]  # 3 fields, then 1
