"""Home Assistant through MQTT discovery against a real broker (Debian's mosquitto, on a free
loopback port, started and stopped here): the discovery payloads, the state after a read
and a plan, the kill switch from MQTT reaching the safety rails, a dead broker that never
stalls planning, and a broker password that never reaches the logs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from adapters.gateway.simulated import SimClock
from trueup.config import load_config
from trueup.daemon import Daemon, simulate
from trueup.gateways import simulated_site
from trueup.mqtt import ENTITIES
from trueup.planning import parse_at

JULY = parse_at("2025-07-01T00:00-07:00")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
COMPONENTS = {"sensor", "binary_sensor", "switch"}
SECRET = "Mqtt-S3cret-pw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp: Path, *, users: dict[str, str] | None = None) -> None:
        if not os.path.exists(MOSQUITTO):
            pytest.skip("mosquitto is not installed (bash deploy/ci-deps.sh installs it)")
        self.port = _free_port()
        conf = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr"]
        if os.geteuid() == 0:
            conf.append("user root")  # read the temporary files without dropping privileges
        if users:
            pw = tmp / "mosquitto.passwd"
            pw.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), name, password],
                               check=True, capture_output=True)
            conf += ["allow_anonymous false", f"password_file {pw}"]
        else:
            conf.append("allow_anonymous true")
        path = tmp / "mosquitto.conf"
        path.write_text("\n".join(conf) + "\n")
        self.log = tmp / "mosquitto.log"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(path)], stdout=subprocess.DEVNULL,
                                     stderr=self.log.open("w"))
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path)
    yield b
    b.stop()


class Watcher:
    """A client that keeps the last message of every topic (with its retain flag)."""

    def __init__(self, port: int, topics=("homeassistant/#", "trueup/#")) -> None:
        self.messages: dict[str, mqtt.MQTTMessage] = {}
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        for t in topics:
            self.client.subscribe(t, qos=1)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self.cond:
            self.messages[msg.topic] = msg
            self.cond.notify_all()

    def wait_for(self, topic: str, payload: str | None = None, timeout: float = 10):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                m = self.messages.get(topic)
                if m is not None and (payload is None or m.payload.decode() == payload):
                    return m
                left = deadline - time.time()
                if left <= 0:
                    seen = None if m is None else m.payload.decode()
                    raise AssertionError(f"no {payload or 'message'} on {topic} (last: {seen})")
                self.cond.wait(left)

    def text(self, topic: str) -> str:
        return self.messages[topic].payload.decode()

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(port: int, **mqtt_keys):
    cfg = load_config()
    cfg.optimizer.horizon_hours = 12
    cfg.optimizer.step_minutes = 30
    cfg.mqtt.enabled = True
    cfg.mqtt.port = port
    for k, v in mqtt_keys.items():
        setattr(cfg.mqtt, k, v)
    return cfg


def _daemon(cfg, tmp_path, *, dry_run=True):
    clock = SimClock(JULY)
    world = simulated_site(cfg, clock)
    daemon = Daemon(cfg, dry_run=dry_run, clock=clock, gateway=world, data_dir=tmp_path / "d")
    return daemon, clock, world


def test_mqtt_is_off_by_default_and_its_password_file_is_read_from_the_configs_folder(
        tmp_path):
    assert load_config().mqtt.enabled is False
    (tmp_path / "trueup.toml").write_text(
        '[mqtt]\nenabled = true\nusername = "ha"\npassword_file = "mqtt_password"\n')
    cfg = load_config(tmp_path / "trueup.toml")
    assert cfg.mqtt.password_file == str(tmp_path / "mqtt_password")
    assert (cfg.mqtt.port, cfg.mqtt.discovery_prefix, cfg.mqtt.base_topic) == (
        1883, "homeassistant", "trueup")
    (tmp_path / "bad.toml").write_text('[mqtt]\nbase_topic = "trueup/#"\n')
    with pytest.raises(Exception, match="base_topic"):
        load_config(tmp_path / "bad.toml")


def test_discovery_follows_home_assistants_schema_and_the_state_follows_reads_and_plans(
        broker, tmp_path):
    cfg = _config(broker.port)
    daemon, clock, _ = _daemon(cfg, tmp_path)
    daemon.start()
    try:
        assert daemon.mqtt.connected.wait(10)
        simulate(daemon, clock, JULY + 3600)  # reads and a plan
        assert daemon.state.last_plan is not None
        time.sleep(0.5)
        # a client arriving later (Home Assistant restarting) gets everything retained
        w = Watcher(broker.port)
        try:
            w.wait_for("trueup/status", "online")
            w.wait_for("trueup/last_plan/state")
            configs = {t: m for t, m in w.messages.items() if t.endswith("/config")}
            assert len(configs) == len(ENTITIES)
            unique_ids, objects = set(), set()
            for topic, msg in configs.items():
                assert msg.retain
                prefix, component, node, object_id, last = topic.split("/")
                assert (prefix, node, last) == ("homeassistant", "trueup", "config")
                assert component in COMPONENTS and component == ENTITIES[object_id][0]
                p = json.loads(msg.payload)
                for key in ("name", "unique_id", "state_topic", "availability_topic",
                            "device"):
                    assert p[key], (topic, key)
                assert p["unique_id"] not in unique_ids
                unique_ids.add(p["unique_id"])
                objects.add(object_id)
                assert p["availability_topic"] == "trueup/status"
                assert p["state_topic"] == f"trueup/{object_id}/state"
                d = p["device"]
                assert d["identifiers"] == ["trueup"] and d["name"] and d["manufacturer"] \
                    and d["model"]
                if component == "switch":
                    assert p["command_topic"] == f"trueup/{object_id}/set"
                    assert (p["payload_on"], p["payload_off"]) == ("ON", "OFF")
                if component == "binary_sensor":
                    assert (p["payload_on"], p["payload_off"]) == ("ON", "OFF")
                    assert "command_topic" not in p
                if p.get("device_class") == "monetary":
                    assert p["unit_of_measurement"] == "USD"
                    assert p.get("state_class") in (None, "total")
                if p.get("device_class") == "energy":
                    assert p.get("state_class") in (None, "total", "total_increasing")
                # every entity's state is retained under its own topic
                state = w.wait_for(p["state_topic"])
                assert state.retain
            assert {"soc", "reserve", "mode", "next_change", "next_change_reason",
                    "export_cap_used", "export_cap_budget", "true_up_p10", "true_up_p50",
                    "true_up_p90", "savings_month", "last_plan", "kill_switch",
                    "dry_run"} <= objects

            soc = float(w.text("trueup/soc/state"))
            assert soc == pytest.approx(daemon.state.last_state.soc_percent, abs=0.1)
            assert 0 <= soc <= 100
            # what the last read knew of the reserve: unknown is published as unknown
            known = daemon.state.last_state.settings.reserve_percent
            if known is None:
                assert w.text("trueup/reserve/state") == "None"
            else:
                reserve = float(w.text("trueup/reserve/state"))
                assert reserve == pytest.approx(known, abs=0.1)
                assert reserve >= cfg.battery.backup_floor_percent
            assert w.text("trueup/mode/state") != "None"
            last = datetime.fromisoformat(w.text("trueup/last_plan/state"))
            assert last.tzinfo is not None
            assert last.timestamp() == pytest.approx(daemon.state.last_plan_at)
            nxt = w.text("trueup/next_change/state")
            if nxt != "None":
                assert datetime.fromisoformat(nxt).timestamp() > clock.now()
            p10, p50, p90 = (w.text(f"trueup/true_up_p{q}/state") for q in (10, 50, 90))
            if p50 != "None":
                assert float(p10) <= float(p50) <= float(p90)
            sv = daemon.state.savings  # unknown (None) until a month of load and PV is billed
            assert w.text("trueup/savings_month/state") == (
                "None" if sv is None else str(round(sv.vs_no_battery, 2)))
            assert w.text("trueup/kill_switch/state") == "OFF"
            assert w.text("trueup/dry_run/state") == "ON"
        finally:
            w.close()
    finally:
        daemon.close()
    # a clean stop says offline, retained
    w = Watcher(broker.port, topics=("trueup/status",))
    try:
        w.wait_for("trueup/status", "offline")
    finally:
        w.close()


def test_the_kill_switch_from_mqtt_reaches_the_safety_rails(broker, tmp_path):
    """Not a dry run: the plan writes, then Home Assistant turns the kill switch on. The
    rails restore the owner's settings (through request_kill, as SIGUSR1), no plan writes
    after it, and OFF cannot un-trip it: the state published back stays ON."""
    cfg = _config(broker.port)
    daemon, clock, world = _daemon(cfg, tmp_path, dry_run=False)
    owner = world.settings
    daemon.start()
    w = Watcher(broker.port)
    try:
        assert daemon.mqtt.connected.wait(10)
        while world.settings == owner and clock.now() < JULY + 86400:
            simulate(daemon, clock, clock.now() + 900)
        assert world.settings != owner
        w.wait_for("trueup/kill_switch/state", "OFF")
        w.publish("trueup/kill_switch/set", "ON")
        deadline = time.time() + 10
        while not daemon.gateway.kill_requested and time.time() < deadline:
            time.sleep(0.05)
        assert daemon.gateway.kill_requested
        w.wait_for("trueup/kill_switch/state", "ON")
        simulate(daemon, clock, clock.now() + 60)  # the next read carries it out
        assert daemon.gateway.killed and daemon.gateway.kill_confirmed
        assert world.settings == owner
        assert any("over MQTT" in line for line in daemon.gateway.log)
        sent = len(world.writes)
        simulate(daemon, clock, clock.now() + 6 * 3600)
        assert len(world.writes) == sent
        w.publish("trueup/kill_switch/set", "OFF")
        time.sleep(0.5)
        assert daemon.gateway.killed
        assert w.text("trueup/kill_switch/state") == "ON"
        assert daemon.health()[1]["kill_switch"] is True
    finally:
        w.close()
        daemon.close()


def test_the_running_daemon_takes_the_kill_switch_from_mqtt(broker, tmp_path):
    """The real `trueup run` process on the simulated gateway: the ON command trips the
    kill switch within seconds (its main loop services it as it does SIGUSR1)."""
    cfg = tmp_path / "trueup.toml"
    port = _free_port()
    cfg.write_text(f'[http]\nbind = "127.0.0.1:{port}"\n[optimizer]\nhorizon_hours = 12\n'
                   f'[mqtt]\nenabled = true\nport = {broker.port}\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "trueup.cli", "run", "--config", str(cfg),
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    w = Watcher(broker.port)
    try:
        w.wait_for("trueup/status", "online", timeout=60)
        w.wait_for("trueup/kill_switch/state", "OFF", timeout=30)
        w.wait_for("trueup/soc/state", timeout=60)
        w.publish("trueup/kill_switch/set", "ON")
        w.wait_for("trueup/kill_switch/state", "ON")
        deadline = time.time() + 10
        health = {}
        while time.time() < deadline:
            health = _health(port)
            if health["kill_switch"]:
                break
            time.sleep(0.2)
        assert health["kill_switch"]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        w.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "kill switch: kill switch turned on over MQTT" in out


def _health(port: int) -> dict:
    """/healthz's JSON, 200 or 503 (a plan not yet made)."""
    import urllib.error
    import urllib.request

    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz",
                                                 timeout=2).read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def test_a_dead_broker_never_stalls_planning_and_the_password_is_never_logged(
        tmp_path, caplog):
    """Nothing listens on the port: reads and plans run as fast as without MQTT, the outage
    is one warning (and counted), the stop is quick, and the password is nowhere."""
    caplog.set_level(logging.DEBUG)
    pw = tmp_path / "mqtt_password"
    pw.write_text(SECRET + "\n")
    cfg = _config(_free_port(), username="ha", password_file=str(pw))
    daemon, clock, _ = _daemon(cfg, tmp_path)
    t0 = time.monotonic()
    daemon.start()
    simulate(daemon, clock, JULY + 2 * 3600)
    assert daemon.state.plans_made >= 1
    time.sleep(1.5)  # paho tries (and fails) to connect meanwhile
    simulate(daemon, clock, clock.now() + 3600)
    daemon.close()
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"the daemon took {elapsed:.1f} s with a dead broker"
    assert not daemon.mqtt.connected.is_set()
    assert daemon.metrics.mqtt_errors_total._value.get() >= 1
    warnings = [r for r in caplog.records
                if r.name == "trueup.mqtt" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "retrying in the background" in warnings[0].getMessage()
    assert SECRET not in caplog.text
    assert b"trueup_mqtt_connected 0.0" in daemon.metrics.exposition()


def test_a_broker_with_a_password_takes_the_right_one_and_refuses_a_wrong_one(
        tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    b = Broker(tmp_path, users={"ha": SECRET})
    try:
        good = tmp_path / "good"
        good.write_text(SECRET)
        daemon, _, _ = _daemon(_config(b.port, username="ha", password_file=str(good)),
                               tmp_path / "a")
        daemon.start()
        try:
            assert daemon.mqtt.connected.wait(10)
        finally:
            daemon.close()
        bad = tmp_path / "bad"
        bad.write_text("wrong-" + SECRET)
        daemon, _, _ = _daemon(_config(b.port, username="ha", password_file=str(bad)),
                               tmp_path / "b")
        daemon.start()
        try:
            deadline = time.time() + 10
            while daemon.metrics.mqtt_errors_total._value.get() < 1 and time.time() < deadline:
                time.sleep(0.05)
            assert not daemon.mqtt.connected.is_set()
            assert daemon.metrics.mqtt_errors_total._value.get() >= 1
        finally:
            daemon.close()
    finally:
        b.stop()
    assert SECRET not in caplog.text
    assert any("refused the connection" in r.getMessage() for r in caplog.records)
