"""Prometheus metrics (their names, listed in the README under "Metrics", are a contract: the
dashboard and alerts depend on them; extend, never rename) and the daemon's small HTTP
endpoint: ``/`` (the web page, trueup/webpage.py), ``/metrics``, ``/healthz`` (503 when
telemetry or plans are stale) and ``/plan`` (the current plan JSON). Bound to 127.0.0.1 by
default.

Its only write is ``POST /kill-switch``, and only when the owner set ``[http]
control_token_file``: the request must carry the file's token (a form field ``token`` or
``Authorization: Bearer``), compared in constant time. Without a token file every POST is
refused (403). Each POST, allowed or refused, is logged.

Units: W for power, % (app) for SOC and reserve, kWh for the cap, $ for money, seconds.
Nothing secret is ever a label or a value here.

Unknown is never 0: a value that was not read (or not yet computed) is *absent* from its
gauge, so a dashboard shows "no data" and an alert on ``absent()`` fires. ``setting_known``
says which settings were read. Labelled series whose labels are known in advance (errors by
operation, writes by setting, modes, rules, flows) exist from the start.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from adapters.gateway.base import SiteState
from optimizer.behaviour import ExportRule, Mode, Settings

log = logging.getLogger("trueup.http")

PREFIX = "trueup_"
MAX_POST_BYTES = 4096
# the page loads nothing from elsewhere (the browser enforces it), posts only to this
# server, and is never framed by another site (no clickjacking of the kill switch form)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
FLOWS = ("solar", "home", "battery", "grid")
SETTINGS = ("mode", "reserve_percent", "grid_charging", "export_rule")
ERROR_OPS = ("read", "write", "forecast", "plan")
JOBS = ("read", "plan", "rollup", "forecast")
QUANTILES = (0.1, 0.5, 0.9)


class MaybeGauge(Collector):
    """An unlabelled gauge that is absent until set, and absent again after
    :meth:`clear` (prometheus_client's own Gauge starts at 0, which would read as data)."""

    def __init__(self, name: str, doc: str, registry: CollectorRegistry) -> None:
        self.name, self.doc = name, doc
        self.value: float | None = None
        registry.register(self)

    def set(self, value: float | None) -> None:
        self.value = None if value is None else float(value)

    def clear(self) -> None:
        self.value = None

    def collect(self):
        value = self.value
        if value is not None:
            yield GaugeMetricFamily(self.name, self.doc, value=value)

    def describe(self):
        return [GaugeMetricFamily(self.name, self.doc)]


class Metrics:
    """The contract's metrics on their own registry (one per daemon, so tests can run
    several)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()

        def g(name, doc, labels=()):
            return Gauge(PREFIX + name, doc, labels, registry=r)

        def maybe(name, doc):
            return MaybeGauge(PREFIX + name, doc, r)

        self.battery_soc_percent = maybe("battery_soc_percent", "Battery state of charge, "
                                         "app % (absent when unknown)")
        self.power_watts = g("power_watts", "Power by flow, W (battery + discharging, grid + "
                             "importing; a flow that was not read is absent)", ("flow",))
        self.grid_up = maybe("grid_up", "1 when the grid is up, 0 during an outage (absent "
                             "when unknown)")
        self.plan_solve_seconds = Histogram(
            PREFIX + "plan_solve_seconds", "Plan build + solve time, s", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.plan_objective_dollars = maybe("plan_objective_dollars", "The plan's objective, $")
        self.setting_reserve_percent = maybe("setting_reserve_percent",
                                             "Backup reserve, app % (absent when unknown)")
        self.setting_mode = g("setting_mode", "Operation mode in force (1 for the mode; no "
                              "series when unknown)", ("mode",))
        self.setting_grid_charging = maybe("setting_grid_charging", "Grid charging allowed "
                                           "(1/0; absent when unknown)")
        self.setting_export_rule = g("setting_export_rule", "Export rule in force (1 for it; "
                                     "no series when unknown)", ("rule",))
        self.setting_known = g("setting_known", "1 when the setting was read at the last "
                               "read, 0 when it is unknown", ("setting",))
        self.export_cap_kwh = maybe("export_cap_kwh", "This month's NEM-PS export cap, kWh")
        self.export_cap_used_kwh = maybe("export_cap_used_kwh", "Exports so far this month, kWh")
        self.true_up_projected_dollars = maybe("true_up_projected_dollars",
                                               "Projected true-up due, $ (< 0: paid to you; "
                                               "the typical scenario)")
        self.true_up_projected_quantile_dollars = g(
            "true_up_projected_quantile_dollars", "Projected true-up due by quantile of the "
            "scenarios, $", ("quantile",))
        self.true_up_measured_fraction = maybe("true_up_measured_fraction", "Share of the "
                                               "settlement period covered by metered history")
        self.write_budget_value_lost_dollars = maybe(
            "write_budget_value_lost_dollars", "What fitting the plan's next 24 h to the "
            "control path's write budget costs over the horizon, $ (behaviour model)")
        self.write_budget_left = maybe("write_budget_left", "Field writes the day's budget "
                                       "leaves now")
        self.gateway_errors_total = Counter(PREFIX + "gateway_errors_total",
                                            "Gateway failures by operation", ("op",),
                                            registry=r)
        self.gateway_writes_total = Counter(PREFIX + "gateway_writes_total",
                                            "Setting writes by field", ("setting",), registry=r)
        self.forecast_age_seconds = g("forecast_age_seconds", "Age of the forecast in use, s",
                                      ("kind",))
        self.last_plan_timestamp_seconds = maybe("last_plan_timestamp_seconds",
                                                 "When the last plan was made, UTC epoch s")
        self.dry_run = g("dry_run", "1 when trueup only prints what it would write")
        self.job_failures_total = Counter(PREFIX + "job_failures_total",
                                          "Scheduled jobs that failed, by job (the log "
                                          "says why)", ("job",), registry=r)
        self.mqtt_errors_total = Counter(PREFIX + "mqtt_errors_total",
                                         "MQTT broker failures (connects, publishes); the "
                                         "log says when an outage starts", registry=r)
        self.mqtt_connected = maybe("mqtt_connected", "1 while connected to the MQTT "
                                    "broker, 0 when not (absent when [mqtt] is off)")
        for job in JOBS:
            self.job_failures_total.labels(job=job)
        for op in ERROR_OPS:
            self.gateway_errors_total.labels(op=op)
        for name in SETTINGS:
            self.gateway_writes_total.labels(setting=name)
            self.setting_known.labels(setting=name).set(0.0)
        # beyond the contract: forecast accuracy against the metered intervals
        self.forecast_mae_kw = g("forecast_mae_kw", "Forecast mean absolute error, kW",
                                 ("kind", "provider", "horizon"))
        self.forecast_bias_kw = g("forecast_bias_kw", "Forecast bias (forecast − actual), kW",
                                  ("kind", "provider", "horizon"))

    def observe_state(self, state: SiteState) -> None:
        """Gauges from one reading; what it could not read becomes absent (never 0)."""
        self.battery_soc_percent.set(state.soc_percent)
        self.grid_up.set(None if state.grid_status is None
                         else 1.0 if state.grid_status == "up" else 0.0)
        for flow, value in zip(FLOWS, (state.solar_w, state.home_w, state.battery_w,
                                       state.grid_w), strict=True):
            _set_or_remove(self.power_watts, (flow,), value)
        s = state.settings
        self.setting_reserve_percent.set(s.reserve_percent)
        self.setting_grid_charging.set(None if s.grid_charging is None
                                       else 1.0 if s.grid_charging else 0.0)
        for m in Mode:
            _set_or_remove(self.setting_mode, (str(m),), None if s.mode is None
                           else 1.0 if m == s.mode else 0.0)
        for rule in ExportRule:
            _set_or_remove(self.setting_export_rule, (str(rule),), None if s.export_rule is None
                           else 1.0 if rule == s.export_rule else 0.0)
        for name, value in zip(SETTINGS, (s.mode, s.reserve_percent, s.grid_charging,
                                          s.export_rule), strict=True):
            self.setting_known.labels(setting=name).set(0.0 if value is None else 1.0)

    def observe_projection(self, proj) -> None:
        """The true-up projection (optimizer.projection.PeriodProjection), or None: absent."""
        self.true_up_projected_dollars.set(None if proj is None else proj.due)
        self.true_up_measured_fraction.set(None if proj is None else proj.measured_fraction)
        for q in QUANTILES:
            _set_or_remove(self.true_up_projected_quantile_dollars, (str(q),),
                           None if proj is None else proj.quantile(q))

    def observe_write(self, settings: Settings, written: tuple[str, ...]) -> None:
        for name in written:
            self.gateway_writes_total.labels(setting=name).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _set_or_remove(gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
    """Set one labelled series, or remove it when the value is unknown."""
    if value is not None:
        gauge.labels(*labels).set(value)
        return
    with contextlib.suppress(KeyError):  # never set: already absent
        gauge.remove(*labels)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 10  # s: an idle or slow connection is dropped, never holds a thread

    def log_message(self, format, *args) -> None:  # the daemon logs; keep stderr quiet
        return

    def do_GET(self) -> None:
        srv = self.server
        if not _host_allowed(self.headers.get("Host", ""), srv.allowed_hosts):
            # a page in the owner's browser reaching us through a DNS name it controls (DNS
            # rebinding) must not read the plan: only IP literals and known names answer
            self._send(421, b"unknown Host header: add the name to [http] allowed_hosts\n",
                       "text/plain")
            return
        path = self.path.split("?", 1)[0]
        if path == "/" and srv.page is not None:
            try:
                body = srv.page().encode()
            except Exception as e:  # a page that fails to build must not take /metrics down
                log.error("the web page failed: %s: %s", type(e).__name__, e)
                self._send(500, b"the page could not be built: see the daemon's log\n",
                           "text/plain")
                return
            self._send(200, body, "text/html; charset=utf-8", extra=PAGE_HEADERS)
        elif self.path.startswith("/metrics"):
            self._send(200, srv.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif self.path.startswith("/healthz"):
            ok, detail = srv.health()
            self._send(200 if ok else 503, json.dumps(detail).encode(), "application/json")
        elif self.path.startswith("/plan"):
            plan = srv.plan()
            if plan is None:
                self._send(404, b'{"error": "no plan yet"}', "application/json")
            else:
                self._send(200, json.dumps(plan).encode(), "application/json")
        else:
            self._send(404, b"not found: try /, /metrics, /healthz or /plan\n", "text/plain")

    def do_POST(self) -> None:
        srv = self.server
        who = self.client_address[0]
        if not _host_allowed(self.headers.get("Host", ""), srv.allowed_hosts):
            log.warning("web control: refused a POST from %s (unknown Host header)", who)
            self._send(421, b"unknown Host header: add the name to [http] allowed_hosts\n",
                       "text/plain")
            return
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_POST_BYTES:
            log.warning("web control: refused POST %s from %s: body too large", path[:40], who)
            self._send(413, b"request body too large\n", "text/plain")
            return
        body = self.rfile.read(length) if length else b""
        token, why = _control_token(srv.token_file() if srv.token_file else "")
        if token is None:
            log.warning("web control: refused POST %s from %s: %s", path[:40], who, why)
            self._send(403, (why + "\n").encode(), "text/plain")
            return
        given = _given_token(self.headers.get("Authorization", ""), body)
        if not hmac.compare_digest(given.encode(), token.encode()):
            log.warning("web control: refused POST %s from %s: wrong or missing token",
                        path[:40], who)
            self._send(403, b"wrong or missing control token\n", "text/plain")
            return
        if path != "/kill-switch" or srv.control is None:
            log.warning("web control: POST %s from %s: no such action", path[:40], who)
            self._send(404, b"no such action: POST /kill-switch is the only one (dry run is "
                       b"chosen when trueup starts)\n", "text/plain")
            return
        log.warning("web control: kill switch requested by %s", who)
        message = srv.control(f"web page request from {who}")
        self._send(303, (message + "\n").encode(), "text/plain", extra={"Location": "/"})

    def _send(self, status: int, body: bytes, ctype: str,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def _control_token(path: str) -> tuple[str | None, str]:
    """The owner's control token from ``path``, or None and why it cannot be used."""
    if not path:
        return None, ("writes from the web page are off: set [http] control_token_file to "
                      "allow the kill switch")
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as e:
        return None, f"the control token file cannot be read ({e.strerror or e})"
    if not token:
        return None, "the control token file is empty"
    return token, ""


def _given_token(authorization: str, body: bytes) -> str:
    """The token a request carries: ``Authorization: Bearer …`` or the form field."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return ""
    return (form.get("token") or [""])[0].strip()


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    """An IP literal, ``localhost``, or a name the owner allowed ([http] allowed_hosts)."""
    import ipaddress

    name = host.strip().lower()
    if name.startswith("["):  # [v6]:port
        name = name[1:name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if not name:
        return False
    if name == "localhost" or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, metrics: Metrics, health: Callable[[], tuple[bool, dict]],
                 plan: Callable[[], dict | None], allowed_hosts: frozenset[str], *,
                 page: Callable[[], str] | None = None,
                 control: Callable[[str], str] | None = None,
                 token_file: Callable[[], str] | None = None) -> None:
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.health = health
        self.plan = plan
        self.allowed_hosts = allowed_hosts
        self.page = page
        self.control = control
        self.token_file = token_file


class HttpEndpoint:
    """The daemon's HTTP endpoint on ``bind`` ("127.0.0.1:9871"; port 0 picks one).

    ``page`` builds the web page at ``/``; ``control(reason)`` trips the kill switch and
    says what happened; ``token_file()`` names the control token's file ("" : none), read at
    every POST so the owner can add or remove it without a restart."""

    def __init__(self, bind: str, metrics: Metrics, health: Callable[[], tuple[bool, dict]],
                 plan: Callable[[], dict | None], *,
                 allowed_hosts: tuple[str, ...] = (), page: Callable[[], str] | None = None,
                 control: Callable[[str], str] | None = None,
                 token_file: Callable[[], str] | None = None) -> None:
        host, _, port = bind.rpartition(":")
        self._server = _Server((host or "127.0.0.1", int(port)), metrics, health, plan,
                               frozenset(h.lower() for h in allowed_hosts), page=page,
                               control=control, token_file=token_file)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> HttpEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
