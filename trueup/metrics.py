"""Prometheus metrics (the names in ARCHITECTURE.md are a contract) and the daemon's small
HTTP endpoint: ``/metrics``, ``/healthz`` (503 when telemetry or plans are stale) and
``/plan`` (the current plan JSON). Bound to 127.0.0.1 by default.

Units: W for power, % (app) for SOC and reserve, kWh for the cap, $ for money, seconds.
Nothing secret is ever a label or a value here.
"""

from __future__ import annotations

import json
import threading
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

from adapters.gateway.base import SiteState
from optimizer.behaviour import ExportRule, Mode, Settings

PREFIX = "trueup_"


class Metrics:
    """The contract's metrics on their own registry (one per daemon, so tests can run
    several)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()

        def g(name, doc, labels=()):
            return Gauge(PREFIX + name, doc, labels, registry=r)

        self.battery_soc_percent = g("battery_soc_percent", "Battery state of charge, app %")
        self.power_watts = g("power_watts", "Power by flow, W (battery + discharging, grid + "
                             "importing)", ("flow",))
        self.plan_solve_seconds = Histogram(
            PREFIX + "plan_solve_seconds", "Plan build + solve time, s", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.plan_objective_dollars = g("plan_objective_dollars", "The plan's objective, $")
        self.setting_reserve_percent = g("setting_reserve_percent", "Backup reserve, app %")
        self.setting_mode = g("setting_mode", "Operation mode in force (1 for the mode)",
                              ("mode",))
        self.setting_grid_charging = g("setting_grid_charging", "Grid charging allowed (1/0)")
        self.setting_export_rule = g("setting_export_rule", "Export rule in force (1 for it)",
                                     ("rule",))
        self.export_cap_kwh = g("export_cap_kwh", "This month's NEM-PS export cap, kWh")
        self.export_cap_used_kwh = g("export_cap_used_kwh", "Exports so far this month, kWh")
        self.true_up_projected_dollars = g("true_up_projected_dollars",
                                           "Projected true-up due, $")
        self.gateway_errors_total = Counter(PREFIX + "gateway_errors_total",
                                            "Gateway failures by operation", ("op",),
                                            registry=r)
        self.gateway_writes_total = Counter(PREFIX + "gateway_writes_total",
                                            "Setting writes by field", ("setting",), registry=r)
        self.forecast_age_seconds = g("forecast_age_seconds", "Age of the forecast in use, s",
                                      ("kind",))
        self.last_plan_timestamp_seconds = g("last_plan_timestamp_seconds",
                                             "When the last plan was made, UTC epoch s")
        self.dry_run = g("dry_run", "1 when trueup only prints what it would write")
        # beyond the contract: forecast accuracy against the metered intervals
        self.forecast_mae_kw = g("forecast_mae_kw", "Forecast mean absolute error, kW",
                                 ("kind", "provider", "horizon"))
        self.forecast_bias_kw = g("forecast_bias_kw", "Forecast bias (forecast − actual), kW",
                                  ("kind", "provider", "horizon"))

    def observe_state(self, state: SiteState) -> None:
        """Gauges from one reading; unknown values are left as they were (never 0)."""
        if state.soc_percent is not None:
            self.battery_soc_percent.set(state.soc_percent)
        for flow, value in (("solar", state.solar_w), ("home", state.home_w),
                            ("battery", state.battery_w), ("grid", state.grid_w)):
            if value is not None:
                self.power_watts.labels(flow=flow).set(value)
        s = state.settings
        if s.reserve_percent is not None:
            self.setting_reserve_percent.set(s.reserve_percent)
        if s.mode is not None:
            for m in Mode:
                self.setting_mode.labels(mode=str(m)).set(1.0 if m == s.mode else 0.0)
        if s.grid_charging is not None:
            self.setting_grid_charging.set(1.0 if s.grid_charging else 0.0)
        if s.export_rule is not None:
            for rule in ExportRule:
                self.setting_export_rule.labels(rule=str(rule)).set(
                    1.0 if rule == s.export_rule else 0.0)

    def observe_write(self, settings: Settings, written: tuple[str, ...]) -> None:
        for name in written:
            self.gateway_writes_total.labels(setting=name).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args) -> None:  # the daemon logs; keep stderr quiet
        return

    def do_GET(self) -> None:
        srv = self.server
        if self.path.startswith("/metrics"):
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
            self._send(404, b"not found: try /metrics, /healthz or /plan\n", "text/plain")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, metrics: Metrics, health: Callable[[], tuple[bool, dict]],
                 plan: Callable[[], dict | None]) -> None:
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.health = health
        self.plan = plan


class HttpEndpoint:
    """The daemon's HTTP endpoint on ``bind`` ("127.0.0.1:9871"; port 0 picks one)."""

    def __init__(self, bind: str, metrics: Metrics, health: Callable[[], tuple[bool, dict]],
                 plan: Callable[[], dict | None]) -> None:
        host, _, port = bind.rpartition(":")
        self._server = _Server((host or "127.0.0.1", int(port)), metrics, health, plan)
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
