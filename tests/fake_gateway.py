"""Fakes of the two things pypowerwall talks to, for tests that drive the REAL client.

* :class:`FakeGateway` — the Tesla gateway's **local HTTPS API** (what pypowerwall's local
  mode reads), served on 127.0.0.1 over TLS with a self-signed certificate made at test
  time. pypowerwall connects to it as to a gateway: ``host="127.0.0.1:<port>"``, TLS
  verification off (as pypowerwall does for gateways), cookie login at
  ``/api/login/Basic``. Its state (SOC, flows, counters, grid, settings) can be changed
  between reads, and any endpoint can be made to fail (HTTP status, timeout, garbage).

* :class:`FakeTeslaCloud` — Tesla's energy-site web API (``api/1/products``,
  ``api/1/energy_sites/{id}/…``), installed at pypowerwall's lowest seams as its own unit
  tests do: the FleetAPI transport function ``pypowerwall.fleetapi.fleetapi._http2_request``
  and the Owner-API ``pypowerwall.cloud.teslapy.Tesla.request``. Everything above those
  seams (pypowerwall's caches, scales, payload mapping, error handling) runs for real.

Units follow the Tesla APIs: power W (battery + discharging, site + importing), energy
counters Wh, the local gateway's SOC and reserve on the **raw** scale (app % × 0.95 + 5),
the cloud's on the **app** scale.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import ipaddress
import json
import secrets
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "gateway"


def _template(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def app_to_raw(app_pct: float) -> float:
    """Tesla app % → the gateway's raw % (``app × 0.95 + 5``)."""
    return app_pct * 0.95 + 5.0


# --------------------------------------------------------------------------------------
# TLS


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (EC P-256, valid one day). Returns paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "powerwall")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "gateway.crt", directory / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --------------------------------------------------------------------------------------
# The local gateway


@dataclass
class GatewayState:
    """What the fake gateway reports. Change it freely between reads."""

    password: str = "S3cret"  # the customer password
    gw_pwd: str = "QRSTICKER1"  # the gateway Wi-Fi password (QR sticker), for /tedapi/din
    soe_raw: float = app_to_raw(50.0)  # raw %, as /api/system_status/soe reports it
    site_w: float = 250.0  # + importing
    solar_w: float = 3200.0
    battery_w: float = -1650.0  # + discharging
    load_w: float = 1800.0
    # lifetime counters, Wh (aggregates' energy_imported / energy_exported)
    site_imported_wh: float = 8_876_020.5
    site_exported_wh: float = 4_120_775.0
    solar_exported_wh: float = 11_257_720.0
    load_imported_wh: float = 14_120_094.4
    battery_imported_wh: float = 3_161_080.0  # charged
    battery_exported_wh: float = 2_836_540.0  # discharged
    grid_status: str = "SystemGridConnected"  # or SystemIslandedActive, SystemTransition…
    real_mode: str = "self_consumption"
    backup_reserve_raw: float = app_to_raw(20.0)  # raw %

    def set_soc_app(self, app_pct: float) -> None:
        self.soe_raw = app_to_raw(app_pct)

    def zero_aggregates(self) -> None:
        """All flows and counters 0: what a gateway with no meter data serves."""
        self.site_w = self.solar_w = self.battery_w = self.load_w = 0.0
        for name in ("site_imported_wh", "site_exported_wh", "solar_exported_wh",
                     "load_imported_wh", "battery_imported_wh", "battery_exported_wh"):
            setattr(self, name, 0.0)


@dataclass
class _Failure:
    kind: str  # "500" | "503" | "404" | "403" | "timeout" | "garbage" | "empty" | "html"
    times: int | None  # None = until cleared


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, handler, context: ssl.SSLContext, gateway: FakeGateway,
                 port: int = 0) -> None:
        self.context = context
        self.gateway = gateway
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", port), handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        # the TLS handshake happens in the handler's thread (see _Handler.setup)
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.connections.add(tls)
        return tls, addr

    def drop_connections(self) -> None:
        """Cut every open (keep-alive) connection, as a gateway losing power does."""
        for sock in list(self.connections):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self.connections.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _TLSServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def setup(self) -> None:
        self.request.settimeout(10)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
        super().setup()

    def log_message(self, format, *args):
        return

    def do_GET(self):
        self.server.gateway._dispatch(self, "GET")

    def do_POST(self):
        self.server.gateway._dispatch(self, "POST")


class FakeGateway:
    """A Tesla gateway's local API on ``https://127.0.0.1:<port>``; a context manager.

    Endpoints (those pypowerwall 0.22's local mode calls for ``power()``, ``level()``,
    ``grid_status()``, ``get_reserve()``, ``get_mode()``, ``din()``/``status()`` and the
    lifetime counters): ``POST /api/login/Basic`` (form: username=customer, password;
    sets the ``AuthCookie``/``UserRecord`` cookies), ``GET /api/logout``,
    ``/api/meters/aggregates``, ``/api/system_status/soe``,
    ``/api/system_status/grid_status``, ``/api/operation`` (``POST`` answers 403: the
    customer login cannot write, DOMAIN.md §4), ``/api/system_status``, ``/api/status``,
    ``/api/site_info``, ``/api/site_info/site_name``, ``/api/powerwalls``,
    ``/api/devices/vitals`` (404, as firmware ≥ 23.44). Anything else: 404. Every request
    but the login needs a valid session cookie (else 401, and pypowerwall logs in again).
    The login takes the form body pypowerwall's local client posts and the JSON body its
    v1r transport posts.

    TEDAPI, only as far as connecting: ``GET /`` answers the web portal (200, no login, as
    a Powerwall 2 gateway does), ``GET /tedapi/din`` the DIN to HTTP Basic auth
    ``Tesla_Energy_Device:<gw_pwd>`` or a session's bearer token, else 403 (the answer
    pypowerwall reads as a wrong gateway password). The protobuf queries (``/tedapi/v1``,
    ``/tedapi/v1r``) are not faked: they answer 404, so TEDAPI and v1r connections log in
    and then read nothing.
    """

    def __init__(self, state: GatewayState | None = None, *, port: int = 0) -> None:
        """``port``: 0 = any free port; give a stopped gateway's port to replace it (a new
        gateway, with a new certificate, at the same address)."""
        self.state = state or GatewayState()
        self.cert_pem = b""  # the certificate it serves (PEM), set by start()
        self._port = port
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.logins = 0
        self.stall_s = 3.0  # how long a "timeout" failure holds the response
        self._failures: dict[str, _Failure] = {}
        self._sessions: set[str] = set()
        self._lock = threading.Lock()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._server: _TLSServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeGateway:
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-gateway-")
        cert, key = self_signed_cert(Path(self._tmp.name))
        self.cert_pem = cert.read_bytes()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = _TLSServer(_Handler, context, self, self._port)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the gateway down: new connections are refused (the gateway is 'down')."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeGateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (or listened on, once stopped)."""
        assert self._port, "start() the fake gateway first"
        return self._port

    @property
    def host(self) -> str:
        """What pypowerwall takes as ``host``: ``"127.0.0.1:<port>"``."""
        return f"127.0.0.1:{self.port}"

    # -- test controls -----------------------------------------------------------------

    def fail(self, path: str, kind: str, times: int | None = None) -> None:
        """Make ``path`` fail: an HTTP status ("500", "503", "404", "403"), "timeout"
        (hold the response for :attr:`stall_s`), "garbage" (200 with a broken JSON body),
        "empty" (200, empty body) or "html" (200 text/html). ``path="*"`` fails every
        endpoint but the login. ``times``: fail only that many requests."""
        self._failures[path] = _Failure(kind, times)

    def heal(self, path: str | None = None) -> None:
        if path is None:
            self._failures.clear()
        else:
            self._failures.pop(path, None)

    def expire_sessions(self) -> None:
        """Forget every session cookie (the next request answers 401)."""
        self._sessions.clear()

    def count(self, path: str, method: str = "GET") -> int:
        return sum(1 for m, p in self.requests if p == path and m == method)

    # -- request handling ----------------------------------------------------------------

    def _failure_for(self, path: str) -> _Failure | None:
        with self._lock:
            for key in (path, "*"):
                failure = self._failures.get(key)
                if failure is None or (key == "*" and path == "/api/login/Basic"):
                    continue
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        del self._failures[key]
                return failure
        return None

    def _dispatch(self, h: _Handler, method: str) -> None:
        path = urllib.parse.urlsplit(h.path).path
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        self.requests.append((method, path))
        failure = self._failure_for(path)
        if failure is not None:
            self._serve_failure(h, failure)
            return
        if path == "/api/login/Basic" and method == "POST":
            self._login(h, body)
            return
        if path == "/" and method == "GET":
            self._send_raw(h, 200, b"<html><body>Tesla Energy Gateway</body></html>",
                           "text/html")
            return
        if path == "/tedapi/din" and method == "GET":
            if self._basic_ok(h) or self._authorised(h):
                self._send_raw(h, 200, _template("status.json")["din"].encode(), "text/plain")
            else:
                self._send(h, 403, {"code": 403, "error": "Access Denied"})
            return
        if path.startswith("/tedapi/") and self._basic_ok(h):
            self._send(h, 404, {"code": 404, "error": "Not found", "message": path})
            return
        if not self._authorised(h):
            self._send(h, 401, {"code": 401, "error": "bad credentials",
                                "message": "Unauthorized"})
            return
        if path == "/api/logout":
            self._send(h, 204, None)
            return
        if path == "/api/operation" and method == "POST":
            # the customer login is read-only (DOMAIN.md §4)
            self._send(h, 403, {"code": 403, "error": "Unable to GET to resource",
                                "message": "User does not have adequate access rights"})
            return
        if method != "GET":
            self._send(h, 404, {"code": 404, "error": "Not found"})
            return
        route = {
            "/api/meters/aggregates": self._aggregates,
            "/api/system_status/soe": lambda: {"percentage": self.state.soe_raw},
            "/api/system_status/grid_status": lambda: {
                "grid_status": self.state.grid_status, "grid_services_active": False},
            "/api/operation": lambda: {
                "real_mode": self.state.real_mode,
                "backup_reserve_percent": self.state.backup_reserve_raw,
                "freq_shift_load_shed_soe": 0, "freq_shift_load_shed_delta_f": 0},
            "/api/system_status": self._system_status,
            "/api/status": lambda: _template("status.json"),
            "/api/site_info": lambda: _template("site_info.json"),
            "/api/site_info/site_name": lambda: {
                "site_name": "Test Home", "timezone": "America/Los_Angeles"},
            "/api/powerwalls": lambda: _template("powerwalls.json"),
        }.get(path)
        if route is None:
            self._send(h, 404, {"code": 404, "error": "Not found", "message": path})
            return
        self._send(h, 200, route())

    def _login(self, h: _Handler, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        try:  # v1r posts JSON, the local client a form
            given = json.loads(text) if text.lstrip().startswith("{") else None
        except ValueError:
            given = None
        if isinstance(given, dict):
            form = {k: [str(v)] for k, v in given.items()}
        else:
            form = urllib.parse.parse_qs(text)
        if form.get("password", [""])[0] != self.state.password or \
                form.get("username", [""])[0] != "customer":
            self._send(h, 401, {"code": 401, "error": "bad credentials",
                                "message": "Login Error"})
            return
        token = secrets.token_urlsafe(24)
        self._sessions.add(token)
        self.logins += 1
        cookies = [f"AuthCookie={token}; Path=/; Secure; HttpOnly",
                   f"UserRecord=user-{self.logins}; Path=/; Secure"]
        self._send(h, 200, {"email": "nobody@nowhere.com", "firstname": "Tesla",
                            "lastname": "Energy", "roles": ["Home_Owner"], "token": token,
                            "provider": "Basic", "loginTime": "2025-06-21T12:00:00-07:00"},
                   cookies=cookies)

    def _authorised(self, h: _Handler) -> bool:
        jar: dict[str, str] = {}
        for part in (h.headers.get("Cookie") or "").split(";"):
            if "=" in part:
                k, v = part.strip().split("=", 1)
                jar[k] = v
        bearer = (h.headers.get("Authorization") or "").removeprefix("Bearer ")
        return jar.get("AuthCookie") in self._sessions or bearer in self._sessions

    def _basic_ok(self, h: _Handler) -> bool:
        import base64

        auth = h.headers.get("Authorization") or ""
        if not auth.startswith("Basic "):
            return False
        try:
            user, _, pwd = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == "Tesla_Energy_Device" and pwd == self.state.gw_pwd

    def _aggregates(self) -> dict:
        s = self.state
        body = _template("meters_aggregates.json")
        for section, power, imported, exported in (
                ("site", s.site_w, s.site_imported_wh, s.site_exported_wh),
                ("battery", s.battery_w, s.battery_imported_wh, s.battery_exported_wh),
                ("load", s.load_w, s.load_imported_wh, 0.0),
                ("solar", s.solar_w, 0.0, s.solar_exported_wh)):
            body[section].update(instant_power=power, energy_imported=imported,
                                 energy_exported=exported)
        return body

    def _system_status(self) -> dict:
        body = _template("system_status.json")
        full = body["nominal_full_pack_energy"]
        remaining = max(0.0, (self.state.soe_raw - 5.0) / 95.0 * full)
        body.update(nominal_energy_remaining=remaining, system_island_state=self.state.grid_status)
        body["battery_blocks"][0].update(nominal_energy_remaining=remaining,
                                         p_out=self.state.battery_w)
        return body

    def _serve_failure(self, h: _Handler, failure: _Failure) -> None:
        if failure.kind == "timeout":
            time.sleep(self.stall_s)
            self._send(h, 504, {"error": "stalled"})
        elif failure.kind == "garbage":
            self._send_raw(h, 200, b'{"site": {"instant_power": 12', "application/json")
        elif failure.kind == "empty":
            self._send_raw(h, 200, b"", "application/json")
        elif failure.kind == "html":
            self._send_raw(h, 200, b"<html><body>Gateway busy</body></html>", "text/html")
        else:
            self._send(h, int(failure.kind), {"code": int(failure.kind), "error": "injected"})

    def _send(self, h: _Handler, status: int, body: Any, cookies: list[str] = ()) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self._send_raw(h, status, raw, "application/json", cookies)

    @staticmethod
    def _send_raw(h: _Handler, status: int, raw: bytes, ctype: str,
                  cookies: list[str] = ()) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", f"{ctype}; charset=utf-8")
            h.send_header("Content-Length", str(len(raw)))
            for c in cookies:
                h.send_header("Set-Cookie", c)
            h.end_headers()
            if raw:
                h.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            h.close_connection = True


# --------------------------------------------------------------------------------------
# Tesla's energy-site web API (FleetAPI and the Owner API share the paths)


@dataclass
class CloudSite:
    """One energy site as Tesla's web API reports it. Reserve and SOC are app %."""

    site_id: int = 1234567
    din: str = "1232100-00-E--TG0000000000TEST"
    reserve_percent: int = 20
    mode: str = "self_consumption"
    grid_charging: bool = False
    export_rule: str = "pv_only"
    soc_percent: float = 50.0
    solar_w: float = 3200.0
    battery_w: float = -1200.0
    load_w: float = 1800.0
    grid_w: float = -200.0
    grid_status: str = "Active"
    island_status: str = "on_grid"
    omit_components: bool = False  # a site_info answer without its "components"


@dataclass
class FakeTeslaCloud:
    """Tesla's energy-site API; install with :meth:`install_fleetapi` or
    :meth:`install_owner_api`.

    Controls:
      * ``ignore``: settings fields (``"reserve"``, ``"mode"``, ``"grid_charging"``,
        ``"export_rule"``) whose writes answer success but change nothing — the
        "reports success and is not applied" failure (DOMAIN.md §4);
      * ``status``: ``{endpoint: HTTP status}`` to fail an endpoint; endpoint is the last
        path part (``"live_status"``, ``"site_info"``, ``"site_status"``, ``"backup"``,
        ``"operation"``, ``"grid_import_export"``) or ``"products"`` / ``"token"``;
      * ``command_code``: the ``code`` in the body of command answers; ≥ 400 changes
        nothing (Owner API commands answering other than 200/201 make teslapy raise, and
        pypowerwall's cloud backend then returns ``{'error': ...}``);
      * ``physics``: after a settings write, move ``battery_w`` the way a Powerwall in
        Self-Powered/Backup does within a minute (reserve above SOC or Backup → charge;
        Time-Based Control with ``battery_ok`` and SOC above the reserve → export).
    """

    site: CloudSite = field(default_factory=CloudSite)
    ignore: set[str] = field(default_factory=set)
    status: dict[str, int] = field(default_factory=dict)
    command_code: int = 201
    physics: bool = True
    calls: list[tuple[str, str, Any]] = field(default_factory=list)

    # -- what the API answers ----------------------------------------------------------

    def writes(self) -> list[tuple[str, Any]]:
        """The settings writes received: (endpoint, body)."""
        return [(path.rsplit("/", 1)[-1], body) for method, path, body in self.calls
                if method == "POST" and "/energy_sites/" in path]

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        path = path.strip("/")
        self.calls.append((method, path, copy.deepcopy(body)))
        endpoint = "token" if path.endswith("oauth2/v3/token") else path.rsplit("/", 1)[-1]
        if endpoint in self.status:
            code = self.status[endpoint]
            return code, {"response": None, "error": f"injected HTTP {code}",
                          "error_description": ""}
        s = self.site
        if path == "api/1/products":
            return 200, {"response": [{
                "energy_site_id": s.site_id, "resource_type": "battery",
                "site_name": "Test Home", "id": s.din, "gateway_id": s.din,
                "energy_left": s.soc_percent / 100 * 13500, "total_pack_energy": 13500,
                "percentage_charged": s.soc_percent, "battery_type": "ac_powerwall",
                "backup_capable": True, "battery_power": s.battery_w}], "count": 1}
        prefix = f"api/1/energy_sites/{s.site_id}/"
        if not path.startswith(prefix):
            return 404, {"response": None, "error": "not found"}
        if method == "GET":
            return self._get(endpoint)
        return self._post(endpoint, body or {})

    def _get(self, endpoint: str) -> tuple[int, Any]:
        s = self.site
        if endpoint == "live_status":
            return 200, {"response": {
                "solar_power": s.solar_w, "percentage_charged": s.soc_percent,
                "backup_capable": True, "battery_power": s.battery_w, "load_power": s.load_w,
                "grid_status": s.grid_status, "grid_services_active": False,
                "grid_power": s.grid_w, "grid_services_power": 0, "generator_power": 0,
                "island_status": s.island_status, "storm_mode_active": False,
                "timestamp": "2025-06-21T12:00:00-07:00", "wall_connectors": []}}
        if endpoint == "site_status":
            return 200, {"response": {
                "resource_type": "battery", "site_name": "Test Home", "gateway_id": s.din,
                "energy_left": s.soc_percent / 100 * 13500, "total_pack_energy": 13500,
                "percentage_charged": s.soc_percent, "battery_type": "ac_powerwall",
                "backup_capable": True, "battery_power": s.battery_w}}
        if endpoint == "site_info":
            components = {
                "solar": True, "battery": True, "grid": True, "backup": True,
                "gateway": "teg", "load_meter": True, "tou_capable": True,
                "customer_preferred_export_rule": s.export_rule,
                "edit_setting_grid_charging": True, "edit_setting_energy_exports": True,
            }
            if not s.grid_charging:
                components["disallow_charge_from_grid_with_solar_installed"] = True
            if s.export_rule == "never":
                components["non_export_configured"] = True
            return 200, {"response": {
                "id": s.din, "site_name": "Test Home",
                "backup_reserve_percent": s.reserve_percent, "default_real_mode": s.mode,
                "installation_date": "2021-09-25T15:53:47-07:00",
                "components": {} if s.omit_components else components,
                "version": "25.10.1 c0ffee00", "battery_count": 1, "nameplate_power": 5000,
                "nameplate_energy": 13500, "installation_time_zone": "America/Los_Angeles",
                "tariff_content": {}}}
        if endpoint == "backup_time_remaining":
            return 200, {"response": {"time_remaining_hours": 7.5}}
        return 404, {"response": None, "error": "not found"}

    def _post(self, endpoint: str, body: dict) -> tuple[int, Any]:
        s = self.site
        if self.command_code >= 400:
            return 200, {"response": {"code": self.command_code, "message": "Internal error"}}
        if endpoint == "backup" and "reserve" not in self.ignore:
            s.reserve_percent = int(body["backup_reserve_percent"])
        elif endpoint == "operation" and "mode" not in self.ignore:
            s.mode = body["default_real_mode"]
        elif endpoint == "grid_import_export":
            if "disallow_charge_from_grid_with_solar_installed" in body and \
                    "grid_charging" not in self.ignore:
                s.grid_charging = not body["disallow_charge_from_grid_with_solar_installed"]
            if "customer_preferred_export_rule" in body and "export_rule" not in self.ignore:
                s.export_rule = body["customer_preferred_export_rule"]
        elif endpoint not in ("backup", "operation"):
            return 404, {"response": None, "error": "not found"}
        if self.physics:
            self._settle()
        return 200, {"response": {"code": self.command_code, "message": "Updated"}}

    def _settle(self) -> None:
        s = self.site
        if (s.mode == "backup" and s.soc_percent < 99) or \
                (s.mode == "self_consumption" and s.reserve_percent > s.soc_percent + 1):
            s.battery_w = -1800.0
        elif s.mode == "autonomous" and s.export_rule == "battery_ok" and \
                s.soc_percent > s.reserve_percent + 1:
            s.battery_w = 5000.0
        s.grid_w = s.load_w - s.solar_w - s.battery_w

    # -- installers --------------------------------------------------------------------

    def install_fleetapi(self, monkeypatch, authpath: Path) -> Path:
        """Stub FleetAPI's HTTP transport and write its config (tokens) under ``authpath``.

        Returns the config file path (``<authpath>/.pypowerwall.fleetapi``, mode 0600).
        """
        from pypowerwall.fleetapi import fleetapi

        audience = "https://fleet-api.test"

        def transport(method, url, *, headers=None, data=None, json_data=None, params=None,
                      timeout=None, verify=True):
            body = json_data
            if isinstance(data, str | bytes):
                body = json.loads(data) if data else None
            elif isinstance(data, dict):
                body = data
            path = urllib.parse.urlsplit(url).path
            status, answer = self.handle(method, path, body)
            return _Response(status, answer)

        monkeypatch.setattr(fleetapi, "_http2_request", transport)
        config = Path(authpath) / ".pypowerwall.fleetapi"
        config.write_text(json.dumps({
            "CLIENT_ID": "client-id", "CLIENT_SECRET": "client-secret",
            "DOMAIN": "example.test", "REDIRECT_URI": "https://example.test/callback",
            "AUDIENCE": audience, "partner_token": "partner-token", "partner_account": {},
            "access_token": "access-token", "refresh_token": "refresh-token",
            "site_id": self.site.site_id}))
        config.chmod(0o600)
        return config

    def install_owner_api(self, monkeypatch, authpath: Path,
                          email: str = "owner@example.com") -> Path:
        """Stub teslapy's ``Tesla.request`` (the Owner API transport pypowerwall's cloud
        mode uses) and write the cached login ``<authpath>/.pypowerwall.auth`` (0600)."""
        import requests
        from pypowerwall.cloud import teslapy

        def request(tesla, method, url, serialize=True, **kwargs):
            body = kwargs.get("json")
            status, answer = self.handle(method, urllib.parse.urlsplit(url).path, body)
            if status >= 400:
                response = _Response(status, answer)
                raise requests.exceptions.HTTPError(
                    f"{status} Client Error: injected", response=response)
            return json.loads(json.dumps(answer), object_hook=teslapy.JsonDict)

        monkeypatch.setattr(teslapy.Tesla, "request", request)
        auth = Path(authpath) / ".pypowerwall.auth"
        auth.write_text(json.dumps({email: {"url": "https://auth.tesla.com/", "sso": {
            "access_token": "access-token", "refresh_token": "refresh-token",
            "token_type": "Bearer", "expires_in": 28800,
            "expires_at": time.time() + 86400}}}))
        auth.chmod(0o600)
        return auth


class _Response:
    """Enough of requests.Response for pypowerwall's FleetAPI client and teslapy."""

    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self.reason = "injected" if status >= 400 else "OK"
        self._body = body
        self.headers: dict[str, str] = {}

    @property
    def text(self) -> str:
        return json.dumps(self._body)

    def json(self, **kwargs):
        return json.loads(json.dumps(self._body), **kwargs)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            import requests
            raise requests.exceptions.HTTPError(f"{self.status_code} Error", response=self)
