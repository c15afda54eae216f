"""Home Assistant through MQTT discovery (``[mqtt]`` in trueup.toml, off by default).

:class:`MqttBridge` connects to the broker in paho-mqtt's own thread (``loop_start``),
reconnecting with a growing pause, and announces trueup as one Home Assistant device:
retained discovery configs under ``<discovery_prefix>/<component>/<client_id>/<object>/config``,
retained states under ``<base_topic>/<object>/state``, and the availability topic
``<base_topic>/status`` ("online" on connect, "offline" as the broker-held last will).

Publishing never blocks the daemon: a state is only handed to paho (QoS 0) while connected,
and the latest value of every entity is kept to be sent again on (re)connect. A broker that
is down is logged once per outage and counted in ``trueup_mqtt_errors_total``. Unknown is
published as ``None``, which Home Assistant shows as "unknown" (never 0).

Commands: the kill-switch switch's ON goes to ``on_kill`` — the daemon passes the safety
rails' ``request_kill``, the same call SIGUSR1's handler makes. OFF cannot un-trip it (only
a restart clears the kill switch): the true state is published back.

The broker password is read from ``password_file`` and never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from optimizer.errors import InputError

log = logging.getLogger("trueup.mqtt")

ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
UNKNOWN = "None"  # Home Assistant's payload for an unknown state
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 120

#: object_id → (component, name, extra discovery keys)
ENTITIES: dict[str, tuple[str, str, dict]] = {
    "soc": ("sensor", "Battery charge", {"unit_of_measurement": "%", "device_class": "battery",
                                         "state_class": "measurement"}),
    "reserve": ("sensor", "Backup reserve", {"unit_of_measurement": "%",
                                             "state_class": "measurement",
                                             "icon": "mdi:battery-lock"}),
    "mode": ("sensor", "Operation mode", {"icon": "mdi:home-battery"}),
    "next_change": ("sensor", "Next planned change", {"device_class": "timestamp"}),
    "next_change_reason": ("sensor", "Next planned change: what and why",
                           {"icon": "mdi:calendar-clock"}),
    "export_cap_used": ("sensor", "Export cap used this month",
                        {"unit_of_measurement": "kWh", "device_class": "energy",
                         "state_class": "total"}),
    "export_cap_budget": ("sensor", "Export cap budget this month",
                          {"unit_of_measurement": "kWh", "device_class": "energy"}),
    "true_up_p10": ("sensor", "True-up projection P10",
                    {"unit_of_measurement": "USD", "device_class": "monetary"}),
    "true_up_p50": ("sensor", "True-up projection P50",
                    {"unit_of_measurement": "USD", "device_class": "monetary"}),
    "true_up_p90": ("sensor", "True-up projection P90",
                    {"unit_of_measurement": "USD", "device_class": "monetary"}),
    "savings_month": ("sensor", "Savings this month",
                      {"unit_of_measurement": "USD", "device_class": "monetary"}),
    "last_plan": ("sensor", "Last plan", {"device_class": "timestamp"}),
    "kill_switch": ("switch", "Kill switch", {"payload_on": ON, "payload_off": OFF,
                                              "state_on": ON, "state_off": OFF,
                                              "icon": "mdi:power-plug-off"}),
    # the daemon wraps the gateway for a dry run at start: it cannot change while running,
    # so Home Assistant sees it, read-only
    "dry_run": ("binary_sensor", "Dry run", {"payload_on": ON, "payload_off": OFF}),
}


def read_password(path: str) -> str | None:
    """The broker password from ``path`` ("" = none); an unreadable file is an error
    naming the key, never the contents."""
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise InputError(f"cannot read the MQTT password file {path}: {e.strerror or e}",
                         where="[mqtt] password_file",
                         fix="create it holding only the broker password (chmod 600), or "
                         "set password_file = \"\" for a broker without one") from None


class MqttBridge:
    """trueup as a Home Assistant device over MQTT. ``cfg`` is the ``[mqtt]`` section;
    ``on_kill(reason)`` trips the kill switch; ``kill_state()`` says whether it is on;
    ``errors`` (optional) is a counter incremented once per failure seen."""

    def __init__(self, cfg, *, on_kill: Callable[[str], None],
                 kill_state: Callable[[], bool], errors=None, connected=None,
                 model: str = "Powerwall planner") -> None:
        import paho.mqtt.client as mqtt

        self.cfg = cfg
        self.on_kill, self.kill_state = on_kill, kill_state
        self._errors, self._connected_gauge = errors, connected
        self.model = model
        self.node = cfg.client_id
        self.status_topic = f"{cfg.base_topic}/status"
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}  # object_id → the last payload, resent on connect
        self._in_outage = False
        self.connected = threading.Event()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                      client_id=cfg.client_id, clean_session=True)
        password = read_password(cfg.password_file)
        if cfg.username or password:
            c.username_pw_set(cfg.username or None, password)
        c.will_set(self.status_topic, OFFLINE, qos=1, retain=True)
        c.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._started = False

    # -- topics and payloads -------------------------------------------------------------

    def state_topic(self, object_id: str) -> str:
        return f"{self.cfg.base_topic}/{object_id}/state"

    def command_topic(self, object_id: str) -> str:
        return f"{self.cfg.base_topic}/{object_id}/set"

    def config_topic(self, object_id: str) -> str:
        component = ENTITIES[object_id][0]
        return f"{self.cfg.discovery_prefix}/{component}/{self.node}/{object_id}/config"

    def discovery(self) -> dict[str, dict]:
        """config topic → the discovery payload of each entity."""
        device = {"identifiers": [self.node], "name": "trueup", "manufacturer": "trueup",
                  "model": self.model}
        out = {}
        for object_id, (component, name, extra) in ENTITIES.items():
            payload = {"name": name, "unique_id": f"{self.node}_{object_id}",
                       "object_id": f"trueup_{object_id}",
                       "state_topic": self.state_topic(object_id),
                       "availability_topic": self.status_topic,
                       "payload_available": ONLINE, "payload_not_available": OFFLINE,
                       "device": device, **extra}
            if component == "switch":
                payload["command_topic"] = self.command_topic(object_id)
            out[self.config_topic(object_id)] = payload
        return out

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> MqttBridge:
        """Connect in paho's thread; returns at once (a broker that is down is retried)."""
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        self.client.loop_start()
        self._started = True
        log.info("MQTT: connecting to %s:%d as %s (Home Assistant discovery under %s/)",
                 self.cfg.host, self.cfg.port, self.node, self.cfg.discovery_prefix)
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2)
        self.client.disconnect()
        self.client.loop_stop()

    # -- state ---------------------------------------------------------------------------

    def publish_state(self, values: dict[str, object]) -> None:
        """Publish the states in ``values`` (object_id → value; None = unknown) retained.
        Never blocks: while disconnected they are only kept, for the next connect."""
        payloads = {k: _payload(v) for k, v in values.items() if k in ENTITIES}
        # under the lock, as _on_connect's re-send is: a re-send's snapshot must not reach
        # the broker after a newer value (the retained state would go back in time)
        with self._lock:
            changed = {k: p for k, p in payloads.items() if self._states.get(k) != p}
            self._states.update(payloads)
            if changed and self.connected.is_set():
                for object_id, payload in changed.items():
                    self._publish(self.state_topic(object_id), payload)

    def _publish(self, topic: str, payload: str, qos: int = 0) -> None:
        import paho.mqtt.client as mqtt

        info = self.client.publish(topic, payload, qos=qos, retain=True)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._failed(f"publishing failed ({mqtt.error_string(info.rc)})")

    # -- paho's callbacks (its thread) ---------------------------------------------------

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self._failed(f"the broker refused the connection: {reason_code}")
            return
        if self._in_outage:
            log.info("MQTT: connected again to %s:%d", self.cfg.host, self.cfg.port)
        else:
            log.info("MQTT: connected to %s:%d", self.cfg.host, self.cfg.port)
        self._in_outage = False
        self.connected.set()
        if self._connected_gauge is not None:
            self._connected_gauge.set(1.0)
        client.subscribe(self.command_topic("kill_switch"), qos=1)
        for topic, payload in self.discovery().items():
            client.publish(topic, json.dumps(payload), qos=1, retain=True)
        client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        with self._lock:  # see publish_state: snapshot and send as one
            self._states["kill_switch"] = ON if self.kill_state() else OFF
            for object_id, payload in self._states.items():
                client.publish(self.state_topic(object_id), payload, qos=1, retain=True)

    def _on_connect_fail(self, _client, _userdata) -> None:
        self._failed("cannot connect")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected.clear()
        if self._connected_gauge is not None:
            self._connected_gauge.set(0.0)
        if self._started:
            self._failed(f"disconnected ({reason_code})")

    def _failed(self, what: str) -> None:
        """One log line per outage (paho keeps retrying); every failure counted."""
        if self._errors is not None:
            self._errors.inc()
        if not self._in_outage:
            self._in_outage = True
            log.warning("MQTT: %s to the broker %s:%d; retrying in the background (planning "
                        "goes on; Home Assistant shows trueup unavailable)", what,
                        self.cfg.host, self.cfg.port)

    def _on_message(self, _client, _userdata, msg) -> None:
        if msg.topic != self.command_topic("kill_switch"):
            return
        command = msg.payload.decode("utf-8", "replace").strip().upper()
        if command == ON:
            log.warning("MQTT: kill switch turned on from Home Assistant")
            self.on_kill("kill switch turned on over MQTT (Home Assistant)")
        elif command == OFF and self.kill_state():
            log.warning("MQTT: the kill switch cannot be turned off while trueup runs: "
                        "only a restart clears it (after you clear [safety] kill_switch)")
        else:
            log.warning("MQTT: ignoring the kill switch command %r (ON or OFF)", command[:20])
        state = ON if self.kill_state() else OFF
        with self._lock:
            self._states["kill_switch"] = state
        self._publish(self.state_topic("kill_switch"), state)


def _payload(value: object) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return ON if value else OFF
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1e12 else str(value)
    return str(value)
