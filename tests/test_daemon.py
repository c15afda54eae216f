"""The daemon end to end on the simulated Powerwall with a fast clock: a week of jobs, a
kill -9 in the middle of a month, the HTTP endpoint, and a real Prometheus scraping it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pytest

from adapters.gateway.simulated import SimClock
from optimizer.billing import billing_state
from optimizer.tariff import load_tariff
from trueup.config import load_config
from trueup.daemon import Daemon, Schedule, simulate
from trueup.gateways import simulated_site
from trueup.planning import parse_at

JULY = parse_at("2025-07-01T00:00-07:00")
COUNTERS = ("grid_import_wh", "grid_export_wh")


def small_config():
    """The example site, planned over 12 h in 30-minute steps (the jobs, not the plan's
    size, are under test here)."""
    cfg = load_config()
    cfg.optimizer.horizon_hours = 12
    cfg.optimizer.step_minutes = 30
    return cfg


def test_a_simulated_week_loses_no_interval_and_bills_like_the_engine(tmp_path):
    """A week: a read every minute, a plan every 6 hours, writes through the rails.
    Every 5-minute interval is stored complete, the stored kWh equal the simulator's
    lifetime counters, the daemon's billing state equals the billing engine on the same
    intervals, and the plans came on schedule."""
    cfg = small_config()
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    start_counters = {k: world.counters_wh[k] for k in COUNTERS}
    daemon = Daemon(cfg, dry_run=False, clock=clock, gateway=world, data_dir=tmp_path,
                    schedule=Schedule(plan_s=6 * 3600, rollup_s=6 * 3600))
    daemon.start()
    simulate(daemon, clock, JULY + 7 * 86400)

    data = daemon.store.intervals(JULY, JULY + 7 * 86400, interval_s=300)
    assert len(data) == 7 * 288  # no interval lost
    assert np.all(np.diff(data.start_utc) == 300)
    grid_in = (world.counters_wh["grid_import_wh"] - start_counters["grid_import_wh"]) / 1000
    grid_out = (world.counters_wh["grid_export_wh"] - start_counters["grid_export_wh"]) / 1000
    assert data.import_kwh.sum() == pytest.approx(grid_in, abs=1e-6)
    assert data.export_kwh.sum() == pytest.approx(grid_out, abs=1e-6)

    daemon.rollup_job()
    saved = daemon.store.billing_state()
    engine = billing_state(load_tariff(cfg.tariff), data)
    assert saved.month_export_kwh == pytest.approx(engine.month_export_kwh)
    assert saved.period_energy_charges == pytest.approx(engine.period_energy_charges)
    # the week's savings: the engine's month charges of the same stored week, three ways
    from optimizer.policy import battery_spec
    from optimizer.savings import month_savings

    sv = daemon.state.savings
    assert sv is not None and sv.month == saved.month
    again = month_savings(load_tariff(cfg.tariff), daemon.store.intervals(JULY, clock.now()),
                          battery_spec(cfg.battery), cfg.battery.backup_floor_percent,
                          cfg.battery.usable_kwh * daemon.store.readings(
                              JULY, JULY + 6 * 3600)[0].soc_percent / 100)
    assert (sv.metered, sv.no_battery, sv.self_powered) == pytest.approx(
        (again.metered, again.no_battery, again.self_powered))
    assert sv.vs_no_battery > 0  # a Powerwall on EV2-A saves in July

    plans = daemon.store.plans(JULY, JULY + 7 * 86400 + 1)
    assert len(plans) == daemon.state.plans_made >= 7 * 4
    gaps = np.diff([p.saved_at for p in plans])
    assert gaps.max() <= 6 * 3600 + 60  # on schedule (events may add plans, never fewer)
    assert daemon.store.writes(JULY)  # the plan's settings went through the rails
    daemon.close()


def _run_month(data_dir, *, start, end, kill_at=None) -> None:
    """A dry-run daemon on a fresh simulated world that began at JULY (the world is a
    function of time while nothing writes to it, so a new one continues the same world)."""
    cfg = small_config()
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    clock.advance(start - JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=world, data_dir=data_dir,
                    schedule=Schedule(read_s=300, plan_s=10 * 86400, rollup_s=10 * 86400))
    daemon.start()

    def maybe_die(d):
        if kill_at is not None and clock.now() >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close: a power cut

    simulate(daemon, clock, end, on_step=maybe_die)
    daemon.close()


def test_kill_9_mid_month_then_restart_gives_the_uninterrupted_months_totals(tmp_path):
    """A daemon is SIGKILLed on 14 July at 13:00, restarts 40 minutes later, and runs to the
    month's end. Its stored July equals a daemon's that never stopped: the restart's gap
    is bridged by the gateway's lifetime counters, nothing is lost or counted twice."""
    end = parse_at("2025-08-01T00:00-07:00")
    kill_at = parse_at("2025-07-14T13:00-07:00")
    crashed, steady = tmp_path / "crashed", tmp_path / "steady"

    pid = os.fork()
    if pid == 0:  # the child runs until it kills itself
        try:
            _run_month(crashed, start=JULY, end=end, kill_at=kill_at)
        finally:
            os._exit(3)  # never reached on success: the child dies by SIGKILL
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    _run_month(crashed, start=kill_at + 40 * 60, end=end)
    _run_month(steady, start=JULY, end=end)

    from adapters.store import open_store

    with open_store(crashed) as a, open_store(steady) as b:
        got = a.intervals(JULY, end, interval_s=3600)
        want = b.intervals(JULY, end, interval_s=3600)
    assert got.import_kwh.sum() == pytest.approx(want.import_kwh.sum(), abs=1e-6)
    assert got.export_kwh.sum() == pytest.approx(want.export_kwh.sum(), abs=1e-6)
    assert len(got) == len(want) == 31 * 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_endpoint_serves_metrics_health_and_the_plan(tmp_path):
    from trueup.metrics import HttpEndpoint

    cfg = small_config()
    clock = SimClock(JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=simulated_site(cfg, clock),
                    data_dir=tmp_path)
    daemon.start()
    http = HttpEndpoint("127.0.0.1:0", daemon.metrics, daemon.health,
                        daemon.current_plan).start()
    try:
        base = f"http://{http.address}"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/healthz")
        assert e.value.code == 503  # nothing read or planned yet: unhealthy
        clock.advance(60)
        daemon.read_job()
        daemon.plan_job()
        health = json.loads(urllib.request.urlopen(base + "/healthz").read())
        assert health["ok"] and health["dry_run"]
        metrics = urllib.request.urlopen(base + "/metrics").read().decode()
        assert "trueup_battery_soc_percent" in metrics and "trueup_dry_run 1.0" in metrics
        plan = json.loads(urllib.request.urlopen(base + "/plan").read())
        assert plan["status"] == "optimal" and plan["settings"]
        # the true-up's spread: nothing of the period is metered here, so it is wide
        tu = plan["true_up"]
        assert tu["p10"] < tu["p50"] < tu["p90"] and tu["measured_fraction"] == 0.0
        m = _samples(daemon.metrics)
        assert m["trueup_true_up_projected_quantile_dollars{quantile=0.9}"] == pytest.approx(
            tu["p90"], abs=0.006)
        assert m["trueup_true_up_measured_fraction"] == 0.0
    finally:
        http.stop()
        daemon.close()


def test_a_real_prometheus_scrapes_the_daemon(tmp_path):
    """Debian's prometheus (deploy/ci-deps.sh installs it) scrapes the daemon's /metrics on
    loopback; the query trueup_battery_soc_percent returns the simulated SOC."""
    from trueup.metrics import HttpEndpoint

    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run `bash deploy/ci-deps.sh` (make test does)"
    cfg = small_config()
    clock = SimClock(JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=simulated_site(cfg, clock),
                    data_dir=tmp_path / "data")
    daemon.start()
    clock.advance(60)
    state = daemon.read_job()
    http = HttpEndpoint("127.0.0.1:0", daemon.metrics, daemon.health,
                        daemon.current_plan).start()
    port = _free_port()
    conf = tmp_path / "prometheus.yml"
    conf.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: trueup\n"
                    f"    static_configs:\n      - targets: ['{http.address}']\n")
    proc = subprocess.Popen(
        [binary, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        value = None
        deadline = time.time() + 45
        url = f"http://127.0.0.1:{port}/api/v1/query?query=trueup_battery_soc_percent"
        while time.time() < deadline and value is None:
            time.sleep(0.5)
            try:
                body = json.loads(urllib.request.urlopen(url, timeout=2).read())
            except OSError:
                continue
            result = body.get("data", {}).get("result", [])
            if result:
                value = float(result[0]["value"][1])
        assert value == pytest.approx(state.soc_percent)
    finally:
        proc.terminate()
        proc.wait(10)
        http.stop()
        daemon.close()


def test_the_gateway_password_never_reaches_logs_metrics_the_plan_or_errors(
        tmp_path, caplog, monkeypatch):
    """A daemon reading a (fake) Powerwall through pypowerwall with the customer password
    'S3cret': after reads, a plan, a refused write and a login failure, the password is in
    no log record (DEBUG included), metric, /plan JSON or error message."""
    import logging

    from adapters.gateway.powerwall import PowerwallGateway
    from tests.fake_gateway import FakeGateway
    from trueup.logs import RedactingFilter

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    secret = "S3cret"
    pw = tmp_path / "gw_password"
    pw.write_text(secret + "\n")
    pw.chmod(0o600)
    auth = tmp_path / "auth"
    auth.mkdir(mode=0o700)
    caplog.set_level(logging.DEBUG)
    texts = []
    with FakeGateway() as fake:
        gw = PowerwallGateway(host=fake.host, mode="none", authpath=str(auth),
                              password_file=str(pw))
        cfg = small_config()
        daemon = Daemon(cfg, dry_run=False, gateway=gw, data_dir=tmp_path / "data")
        daemon.start()
        daemon.read_job()
        result = daemon.plan_job()
        texts += [daemon.metrics.exposition().decode(), json.dumps(daemon.current_plan())]
        texts += [str(e) for w in daemon.store.writes(0) for e in w.result.errors]
        fake.state.password = "changed"  # now the login fails: its message, too
        fake.expire_sessions()
        texts.append(repr(daemon.read_job()))
        daemon.close()
        gw.close()
    texts += [r.getMessage() for r in caplog.records]
    assert result is not None and texts
    assert not [t for t in texts if secret in t]
    # and the second guard masks a secret that a message did contain
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "login %s failed", (secret,),
                               None)
    RedactingFilter([secret]).filter(record)
    assert record.getMessage() == "login *** failed"


def test_a_configured_provider_that_cannot_be_reached_falls_back_and_the_plan_says_so(
        tmp_path):
    """[forecast.solar] asks for Open-Meteo; the network is not there (tests block it):
    the forecast job records why it was skipped, the clear-sky forecast is used, and the
    plan names its PV source."""
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text('[forecast.solar]\nproviders = ["open_meteo", "clear_sky"]\n'
                        'timeout_s = 1\n')
    cfg = load_config(cfg_file)
    cfg.optimizer.horizon_hours = 12
    clock = SimClock(JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=simulated_site(cfg, clock),
                    data_dir=tmp_path / "data")
    daemon.start()
    clock.advance(60)
    daemon.read_job()
    daemon.forecast_job()
    solar = daemon.state.solar
    assert solar is not None and solar.provider == "clear_sky"
    assert any("open_meteo" in str(s) for s in solar.skipped)
    plan = daemon.plan_job()
    assert plan.forecast_sources["pv"].startswith("clear_sky")
    daemon.close()


def test_forecasts_are_kept_and_scored_against_the_metered_intervals(tmp_path):
    """Two simulated days: every plan's PV and load forecasts are stored; scored against
    the metered intervals they give an MAE and bias per kind and horizon, also as metrics."""
    cfg = small_config()
    clock = SimClock(JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=simulated_site(cfg, clock),
                    data_dir=tmp_path, schedule=Schedule(plan_s=3 * 3600,
                                                         rollup_s=10 * 86400))
    daemon.start()
    simulate(daemon, clock, JULY + 2 * 86400)
    assert len(daemon.store.forecast_records(kind="pv")) == daemon.state.plans_made
    scores = daemon.score_forecasts(clock.now())
    kinds = {(s.kind, s.horizon) for s in scores}
    assert ("pv", "0-6h") in kinds and ("load", "0-6h") in kinds
    pv = next(s for s in scores if (s.kind, s.horizon) == ("pv", "0-6h"))
    assert pv.n_steps > 0 and pv.mae_kw is not None and pv.mae_kw >= 0
    assert "trueup_forecast_mae_kw{" in daemon.metrics.exposition().decode()
    daemon.close()


def test_a_known_load_in_the_config_reaches_the_plan(tmp_path):
    """[[forecast.load.known]]: a 7 kW charger 01:00-03:00 every day, not yet in the
    history. Without history the typical profile is used, and a configured load replaces
    its own EV (3.6 kW, 00:30-03:30 on weekdays = 10.8 kWh a night). From Tuesday 00:00,
    the 48 h horizon holds two weekday nights: 2 × (14.0 − 10.8) = 6.4 kWh more load."""
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text('[[forecast.load.known]]\nname = "new EV"\nkw = 7\nstart = "01:00"\n'
                        'end = "03:00"\nin_history = false\n')
    from trueup.planning import make_plan

    at = parse_at("2025-07-15T00:00-07:00")
    base = make_plan(load_config(), at_utc=at, soc_percent=50)
    make = make_plan(load_config(cfg_file), at_utc=at, soc_percent=50)
    extra = make.inputs.load_kwh.sum() - base.inputs.load_kwh.sum()
    assert extra == pytest.approx(2 * (14.0 - 10.8), abs=0.01)


def test_trueup_run_reloads_on_sighup_and_stops_cleanly_on_sigterm(tmp_path):
    """The real `trueup run` process: it serves /healthz, SIGHUP reloads the configuration,
    SIGTERM finishes the job in flight, closes the store and exits 0."""
    import sys

    port = _free_port()
    cfg = tmp_path / "trueup.toml"
    cfg.write_text(f'[http]\nbind = "127.0.0.1:{port}"\n[optimizer]\nhorizon_hours = 12\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "trueup.cli", "run", "--config", str(cfg), "--dry-run",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ok = False
        deadline = time.time() + 60
        while time.time() < deadline and not ok:
            time.sleep(0.5)
            try:
                health = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/healthz", timeout=2).read())
                ok = health["ok"]
            except OSError:
                continue
        assert ok, "the daemon never became healthy"
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        # the kill switch set in the file and a reload: tripped at once, shown by /healthz
        cfg.write_text(cfg.read_text() + "[safety]\nkill_switch = true\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline:
            health = json.loads(urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=2).read())
            if health["kill_switch"]:
                break
            time.sleep(0.2)
        assert health["kill_switch"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "configuration reloaded" in out and "stopping: finishing the job in flight" in out
    assert "kill switch set in the reloaded configuration" in out
    from adapters.store import open_store

    with open_store(tmp_path / "data") as store:
        assert store.last_plan() is not None  # the plan made before the stop is kept


def _samples(metrics) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        for smp in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(smp.labels.items()))
            out[smp.name + (f"{{{labels}}}" if labels else "")] = smp.value
    return out


def test_unknown_is_absent_from_the_metrics_never_zero(tmp_path):
    """Before any read, and while the gateway answers nothing, SOC, reserve, grid charging,
    the grid's status and the flows have no sample at all (a dashboard shows "no data"),
    ``setting_known`` is 0 for each setting, and the labelled counters exist at 0 so an
    alert on their rate works from the start. A good read fills them; a failed one removes
    them again."""
    cfg = small_config()
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=world, data_dir=tmp_path)
    daemon.start()
    unknown_names = ("trueup_battery_soc_percent", "trueup_setting_reserve_percent",
                     "trueup_setting_grid_charging", "trueup_grid_up")
    m = _samples(daemon.metrics)
    for name in unknown_names:
        assert name not in m
    assert not any(k.startswith("trueup_power_watts") for k in m)
    assert m["trueup_setting_known{setting=reserve_percent}"] == 0.0
    for op in ("read", "write", "forecast", "plan"):
        assert m[f"trueup_gateway_errors_total{{op={op}}}"] == 0.0
    assert m["trueup_gateway_writes_total{setting=mode}"] == 0.0

    clock.advance(60)
    daemon.read_job()
    m = _samples(daemon.metrics)
    assert m["trueup_grid_up"] == 1.0 and m["trueup_setting_reserve_percent"] > 0
    assert m["trueup_setting_known{setting=reserve_percent}"] == 1.0
    assert "trueup_power_watts{flow=solar}" in m

    world.set_faults(read_timeout=1.0)
    clock.advance(60)
    daemon.read_job()
    m = _samples(daemon.metrics)
    for name in unknown_names:
        assert name not in m, name
    assert not any(k.startswith("trueup_power_watts") for k in m)
    assert m["trueup_setting_known{setting=grid_charging}"] == 0.0
    assert m["trueup_gateway_errors_total{op=read}"] == 1.0
    world.set_faults(read_timeout=0.0)
    daemon.close()


def test_a_reload_with_the_kill_switch_restores_the_owners_settings_and_records_it(tmp_path):
    """Not a dry run: trueup writes its plan, then the owner sets ``kill_switch = true`` and
    reloads. The owner's settings (found at start) are back on the gateway, the restore is
    in the store's write log, and no later plan writes anything."""
    cfg = small_config()
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    owner = world.settings
    daemon = Daemon(cfg, dry_run=False, clock=clock, gateway=world, data_dir=tmp_path)
    daemon.start()
    while world.settings == owner and clock.now() < JULY + 86400:  # until the plan acts
        simulate(daemon, clock, clock.now() + 900)
    assert world.settings != owner  # trueup's plan is in force
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[optimizer]\nhorizon_hours = 12\nstep_minutes = 30\n"
                        "[safety]\nkill_switch = true\n")
    daemon.reload(str(cfg_file))
    assert daemon.gateway.killed and world.settings == owner
    sent_before = len(world.writes)
    simulate(daemon, clock, clock.now() + 6 * 3600)
    assert len(world.writes) == sent_before
    writes = daemon.store.writes(JULY)
    assert any(w.result.applied == owner for w in writes)
    assert writes[-1].result.skipped == "kill switch: writes are off"
    daemon.close()


def test_the_first_plan_waits_for_the_gateways_soc_and_uses_it(tmp_path):
    """Started at 55 %: a plan job before any reading plans nothing (never from a guessed
    50 %); after the first reading the plan starts from the gateway's 55 %."""
    cfg = small_config()
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock, soc_percent=55.0)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=world, data_dir=tmp_path)
    daemon.start()
    assert daemon.plan_job() is None
    clock.advance(60)
    state = daemon.read_job()
    result = daemon.plan_job()
    assert result is not None
    soc = 100 * result.inputs.soc_kwh / cfg.battery.usable_kwh
    assert soc == pytest.approx(state.soc_percent)
    assert abs(soc - 50.0) > 1.0
    assert not any("no SOC given" in n for n in result.notes)
    daemon.close()


def test_while_the_grid_is_down_the_plan_neither_grid_charges_nor_exports(tmp_path):
    """An outage at 15:00 on a July afternoon: the re-plan it triggers has no imports and
    no exports, and no setting turns grid charging on or exports battery energy; when the
    grid is back the next plan may use it again."""

    cfg = small_config()
    clock = SimClock(JULY + 15 * 3600)
    world = simulated_site(cfg, clock, soc_percent=60.0)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=world, data_dir=tmp_path)
    daemon.start()
    clock.advance(60)
    daemon.read_job()
    daemon.plan_job()
    world.set_faults(grid_down=True)
    clock.advance(600)
    daemon.read_job()
    assert daemon.state.replan_reason == "grid outage"
    assert daemon.replan_due(clock.now())
    down = daemon.plan_job()
    assert down.plan.import_kwh.sum() == pytest.approx(0.0, abs=1e-9)
    assert down.plan.export_kwh.sum() == pytest.approx(0.0, abs=1e-9)
    for e in down.schedule.entries:
        assert not e.settings.grid_charging and str(e.settings.export_rule) != "battery_ok"
    assert any("the grid is down" in n for n in down.notes)
    world.set_faults(grid_down=False)
    clock.advance(600)
    daemon.read_job()
    assert daemon.state.replan_reason == "the grid is back"
    daemon.close()


def test_the_http_endpoint_refuses_foreign_host_names_and_drops_idle_connections(tmp_path):
    """DNS rebinding: a request whose Host header is a name the owner did not allow gets 421
    and no plan; IP literals, localhost and allowed names are answered. A connection that
    sends nothing is closed after the handler's timeout, so idle sockets cannot pile up
    threads."""
    from trueup.metrics import HttpEndpoint, Metrics, _Handler

    http = HttpEndpoint("127.0.0.1:0", Metrics(), lambda: (True, {}), lambda: {"x": 1},
                        allowed_hosts=("home-server.lan",)).start()
    try:
        port = int(http.address.rsplit(":", 1)[1])

        def get(host: str) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/plan",
                                         headers={"Host": host})
            try:
                return urllib.request.urlopen(req, timeout=5).status
            except urllib.error.HTTPError as e:
                return e.code

        assert get("evil.example.com") == 421
        assert get(f"evil.example.com:{port}") == 421
        for ok in (f"127.0.0.1:{port}", "localhost", f"[::1]:{port}", "home-server.lan:80",
                   "192.168.1.20"):
            assert get(ok) == 200, ok
        assert _Handler.timeout == 10
        with socket.create_connection(("127.0.0.1", port)) as idle:
            idle.settimeout(_Handler.timeout + 5)
            t0 = time.monotonic()
            assert idle.recv(1) == b""  # the server hung up
            assert time.monotonic() - t0 < _Handler.timeout + 3
    finally:
        http.stop()


def test_the_store_and_the_owners_settings_are_readable_by_trueup_alone(tmp_path):
    cfg = small_config()
    clock = SimClock(JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=simulated_site(cfg, clock),
                    data_dir=tmp_path)
    daemon.start()
    daemon.close()
    for name in ("trueup.db", "owner-settings.json"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0, name


@pytest.mark.parametrize("text, key", [
    ("[optimizer]\nexport_cap_kwh = [1,2,3,4,5,6,7,8,9,10,11]\n", "optimizer.export_cap_kwh"),
    ('[http]\nbind = "localhost"\n', "http.bind"),
    ('[http]\nbind = "127.0.0.1:70000"\n', "http.bind"),
])
def test_a_config_that_would_fail_later_is_refused_at_load(tmp_path, text, key):
    """Eleven monthly caps (planning would fail in November), a bind without a port or with
    a port over 65535: refused when the file is read, naming the key."""
    from optimizer.errors import InputError

    f = tmp_path / "trueup.toml"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        load_config(f)
    assert key in str(e.value)


def test_a_busy_port_is_a_clear_error_before_the_store_is_created(tmp_path):
    import socket
    import sys

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = tmp_path / "trueup.toml"
        cfg.write_text(f'[http]\nbind = "127.0.0.1:{port}"\n')
        out = subprocess.run(
            [sys.executable, "-m", "trueup.cli", "run", "--config", str(cfg), "--dry-run",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"[http] bind: cannot listen on 127.0.0.1:{port}: another process already uses " \
           "the port" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()


def test_a_clock_jump_back_is_unhealthy_until_the_jobs_run_on_the_new_clock(tmp_path):
    """NTP puts a clock that ran 2 h fast right: the last read and plan are then 2 h in
    the future. Health is false (ages negative), the next read notices the jump, and the
    plan job re-plans at once instead of two hours later."""
    cfg = small_config()
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    begin = world.counters_wh["grid_import_wh"]
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=world, data_dir=tmp_path)
    daemon.start()
    simulate(daemon, clock, JULY + 3600)
    assert daemon.health()[0]
    # the load forecast's age is its history's: the last 5-minute interval, minutes old
    assert 0 <= _samples(daemon.metrics)["trueup_forecast_age_seconds{kind=load}"] <= 600
    plans = daemon.state.plans_made
    clock.jump(-2 * 3600)
    ok, body = daemon.health()
    assert not ok and body["plan_age_s"] < -3000
    daemon.read_job()
    assert daemon.replan_due(clock.now())
    daemon.plan_job()
    assert daemon.state.plans_made == plans + 1
    assert daemon.health()[0]
    # the readings of the next two hours are not stored over the ones already there: the
    # accounting waits for the clock to pass them, then the counters bridge; no interval
    # of the day is lost or counted twice
    simulate(daemon, clock, JULY + 3 * 3600)
    data = daemon.store.intervals(JULY, JULY + 3 * 3600, interval_s=300)
    assert len(data) == 36 and np.all(np.diff(data.start_utc) == 300)
    rise = (world.counters_wh["grid_import_wh"] - begin) / 1000
    assert data.import_kwh.sum() == pytest.approx(rise, abs=1e-6)
    daemon.close()


def test_a_reload_says_what_waits_for_a_restart(tmp_path, caplog):
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text('[http]\nbind = "127.0.0.1:9871"\n')
    cfg = load_config(cfg_file)
    clock = SimClock(JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=simulated_site(cfg, clock),
                    data_dir=tmp_path)
    cfg_file.write_text('[http]\nbind = "127.0.0.1:9872"\n[battery]\nbackup_floor_percent = 30\n')
    with caplog.at_level("INFO", logger="trueup"):
        daemon.reload(str(cfg_file))
    assert "[http] bind changed: applied at the next restart" in caplog.text
    assert daemon.cfg.battery.backup_floor_percent == 30  # the rest applied now
    daemon.close()


def test_a_full_disk_is_one_line_that_says_what_to_free_and_the_job_recovers(tmp_path, caplog):
    """SQLite refuses to grow the store (its page limit stands in for a full disk: the
    same SQLITE_FULL "database or disk is full"). The read job's failure is one line, with
    no traceback, counted by job; once there is room the next read stores again and the
    counters bridge the time missed."""
    from trueup.daemon import guarded

    cfg = small_config()
    clock = SimClock(JULY)
    daemon = Daemon(cfg, dry_run=True, clock=clock, gateway=simulated_site(cfg, clock),
                    data_dir=tmp_path)
    daemon.start()
    simulate(daemon, clock, JULY + 3600)
    db = daemon.store._conn()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    job = guarded("read", daemon.read_job, daemon)
    with caplog.at_level("DEBUG", logger="trueup"):
        for _ in range(30):  # half an hour of reads on a full disk
            clock.advance(60)
            job()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1  # said once, not every minute
    assert f"the disk holding {tmp_path} is full" in errors[0].getMessage()
    assert "MB free" in errors[0].getMessage() and errors[0].exc_info is None
    # (a read that fits in a page SQLite already has still succeeds)
    assert 10 <= _samples(daemon.metrics)['trueup_job_failures_total{job=read}'] <= 30
    db.execute("PRAGMA max_page_count = 1073741823")
    for _ in range(15):
        clock.advance(60)
        job()
    data = daemon.store.intervals(JULY, JULY + 3600 + 45 * 60, interval_s=300)
    assert len(data) == 12 + 9  # the hour, and the 45 min after (the last one unfinished)
    daemon.close()


def test_the_simulated_site_keeps_its_counters_in_the_data_dir_across_a_restart(tmp_path):
    """The simulator `trueup run` builds saves its state (time, SOC, lifetime counters,
    settings) in the data dir; a new process carries on from it and simulates the 40
    minutes it was stopped, as a real site runs on. Every interval is stored and the kWh
    equal the counters' rise across both runs: the restart is bridged by the counters."""
    import json as _json

    from trueup.gateways import build_gateway

    cfg = small_config()
    state = tmp_path / "simulator.json"
    clock = SimClock(JULY)
    gw = build_gateway(cfg, clock, tmp_path)
    begin = gw.counters_wh["grid_import_wh"]
    first = Daemon(cfg, dry_run=True, clock=clock, gateway=gw, data_dir=tmp_path)
    first.start()
    simulate(first, clock, JULY + 3600)
    first.close()  # the process stops
    saved = _json.loads(state.read_text())
    assert saved["t"] == pytest.approx(JULY + 3600)
    assert state.stat().st_mode & 0o077 == 0
    clock.advance(40 * 60)  # down for 40 minutes
    gw = build_gateway(cfg, clock, tmp_path)
    assert gw.counters_wh == saved["counters_wh"]  # carried on, not reset
    second = Daemon(cfg, dry_run=True, clock=clock, gateway=gw, data_dir=tmp_path)
    second.start()
    end = JULY + 3 * 3600
    simulate(second, clock, end)
    data = second.store.intervals(JULY, end, interval_s=300)
    assert len(data) == 3 * 12  # no interval lost, the restart's included
    rise_kwh = (gw.counters_wh["grid_import_wh"] - begin) / 1000
    assert rise_kwh > 0.5
    assert data.import_kwh.sum() == pytest.approx(rise_kwh, abs=1e-6)
    second.close()


def test_the_plan_fits_the_write_budget_so_the_rails_never_refuse_one(tmp_path):
    """Three July days on a path that allows 5 field writes a day (Tesla's Fleet API):
    the planner fits each day's changes to what the rails' record leaves, so every change
    it sends is within the budget (no write refused for the budget), no rolling day holds
    more than 5, and each plan reports what the budget costs."""
    cfg = small_config()
    cfg.safety.max_writes_per_day = 5
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    daemon = Daemon(cfg, dry_run=False, clock=clock, gateway=world, data_dir=tmp_path,
                    schedule=Schedule(plan_s=3600))
    daemon.start()
    simulate(daemon, clock, JULY + 3 * 86400)
    records = daemon.store.writes(JULY)
    refused = [r for r in records if r.result.skipped and "budget" in r.result.skipped]
    assert refused == []
    sent = sorted(t for t, _, fields in world.attempts for _ in fields)
    assert len(sent) >= 2  # the plan still changes settings
    assert max(sum(1 for u in sent if t - 86400 < u <= t) for t in sent) <= 5
    plan = daemon.store.last_plan().plan
    assert plan["write_budget"]["writes_per_day"] == 5
    assert plan["write_budget"]["writes_kept"] <= 5
    samples = _samples(daemon.metrics)
    assert samples["trueup_write_budget_value_lost_dollars"] == pytest.approx(
        plan["write_budget"]["value_lost_dollars"], abs=1e-4)
    assert 0 <= samples["trueup_write_budget_left"] <= 5
    daemon.close()


def test_a_restart_never_opens_a_fresh_write_budget(tmp_path):
    """A day on a 5-a-day budget with a restart every 4 hours: each new process reads the
    writes the store recorded (commands sent, failed ones included) into its rails, so no
    rolling day ever holds more than 5 commands."""
    cfg = small_config()
    cfg.safety.max_writes_per_day = 5
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    world.set_faults(write_error=0.2)  # failed sends count against the budget too
    for k in range(6):
        daemon = Daemon(cfg, dry_run=False, clock=clock, gateway=world, data_dir=tmp_path,
                        schedule=Schedule(plan_s=1800))
        daemon.start()
        simulate(daemon, clock, JULY + (k + 1) * 4 * 3600)
        daemon.close()
    sent = sorted(t for t, _, fields in world.attempts for _ in fields)
    assert len(sent) >= 5
    assert max(sum(1 for u in sent if t - 86400 < u <= t) for t in sent) <= 5


def test_a_restart_bridges_from_the_last_reading_with_counters(tmp_path):
    """The process dies right after a read that timed out (no counters): the next one
    bridges from the reading before it, so no interval of the time it was down is lost."""
    cfg = small_config()
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    first = Daemon(cfg, dry_run=True, clock=clock, gateway=world, data_dir=tmp_path)
    first.start()
    simulate(first, clock, JULY + 3600)
    world.set_faults(read_timeout=1.0)
    clock.advance(60)
    first.read_job()  # stored: a reading without counters
    first.close()
    world.set_faults(read_timeout=0.0)
    clock.advance(15 * 60)  # down
    second = Daemon(cfg, dry_run=True, clock=clock, gateway=world, data_dir=tmp_path)
    second.start()
    simulate(second, clock, JULY + 2 * 3600)
    data = second.store.intervals(JULY, JULY + 2 * 3600, interval_s=300)
    assert len(data) == 24
    second.close()
