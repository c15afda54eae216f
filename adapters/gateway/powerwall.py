"""A real Tesla Powerwall through pypowerwall 0.22: :class:`PowerwallGateway`.

Two connections, each opened lazily on first use (pypowerwall does network I/O in its
constructor) with ``failover=False`` and an explicit mode, so a failure is reported and
never silently answered by another path (docs/powerwall.md, 'Connection paths'):

* **reads** — the gateway's local API (customer password) when ``host`` and
  ``password_file`` are set: free, within the LAN, and the only path with lifetime energy
  counters. Otherwise (``host`` or ``password_file`` empty) reads go over the control
  connection (about two billed requests per read on FleetAPI). In ``v1r`` mode one
  TEDAPI-v1r connection reads and writes. In ``tedapi`` mode (read-only) reads go over
  the gateway's Wi-Fi TEDAPI at ``host`` (192.168.91.1 on the gateway's own Wi-Fi
  network) with the Wi-Fi password from the gateway's QR sticker, kept in ``gw_pwd_file``.
* **control** — ``fleetapi`` (Tesla Fleet API; billed per request), ``cloud`` (Owner API)
  or ``v1r`` (LAN TEDAPI with an RSA key registered by ``python -m pypowerwall setup -v1r``
  and stored as ``<authpath>/tedapi_rsa_private.pem``). ``none`` and ``tedapi`` are
  read-only: :meth:`apply` refuses. The local customer login cannot write (the gateway
  answers 403).

Reads never raise and never turn a failure into a number: each of pypowerwall's failure shapes
(docs/powerwall.md, 'Failure shapes') becomes ``None`` with the reason in
:attr:`SiteState.unknown` — all-zero power flows, FleetAPI's 5.0 raw (0 app %) SOC, a missing
client or ``None`` answers, ``AttributeError`` from
``get_grid_charging()``/``get_grid_export()``, timeouts, HTTP errors, bodies that are not JSON,
login failures.

Writes (:meth:`apply`) refuse a reserve outside the 80/100 rule (defence in depth behind the
safety rails), send the reserve as a whole app %, and touch only the fields that differ from
what the control connection reports (read with ``force=True``; nothing is written blind when
none can be read), one field per write in the order reserve, mode, grid charging, export rule,
stopping at the first failure. Each write is read back (``force=True``) after
``verify_delay_s`` with bounded backoff and re-sent at most ``write_attempts`` times; a write
that answers success but never reads back is an error naming the field. When reserve or mode
changed, the battery's power is then watched for ``effect_wait_s`` (grid up, SOC known): in
Self-Powered or Backup, which act within about a minute (docs/powerwall.md, 'How fast settings
act'), a setting that should charge must show ``battery_w < 0`` and a hold ``battery_w ≤ 0``
(±100 W), else it is an error; Time-Based Control with export ``battery_ok`` should show
``battery_w > 0``, but TBC can take 15–45 minutes, so not seeing it is only a note. Every wait
goes through the injected :class:`Clock`.

Public API: :class:`PowerwallGateway` — ``from_config(section)``, ``read()``,
``apply(settings)``, ``fields_to_write(settings)`` (for the safety rails' write budget),
``connect()`` (raises :class:`~optimizer.errors.InputError` naming the fix), ``close()``,
``firmware()`` (read-only), ``source``, ``warnings``.

A connection that fails is logged once (the same failure again only at debug level), and
its reading's unknown fields are not logged a second time; what pypowerwall logs while a
connection is opened goes into that one message rather than to the log. Each failure's
:class:`InputError` says what failed and the one thing to try: a refused login names the
password and its file, an address that does not answer names ``host``.

Units: power W (battery + discharging, grid + importing), counters Wh since
installation, SOC and reserve **app %** (``level(scale=True)``, ``get_reserve()``).

Secrets live in files: the gateway customer password in ``password_file`` and the gateway
Wi-Fi password in ``gw_pwd_file`` (one line each; never logged), pypowerwall's token files
under ``authpath`` (``.pypowerwall.fleetapi``, ``.pypowerwall.auth``,
``tedapi_rsa_private.pem``; the local session cookie is cached there as ``.powerwall``). A
secret readable by every user is reported in :attr:`PowerwallGateway.warnings` and logged.

The gateway's TLS certificate is self-signed and pypowerwall accepts any certificate, so
the local connections (``local``, ``v1r`` and ``tedapi``) pin it on first use: before
pypowerwall is given the password, the certificate presented at ``host`` is read
(verification off, only to hash it) and its SHA-256 fingerprint compared with
``tls_pin_file`` (default ``<authpath>/gateway-cert.sha256``, mode 0600, written after the
first successful login).
A different certificate refuses the connection with an :class:`InputError` naming the pin
file and the fix, and reads are unknown with that reason. pypowerwall's sessions to the
gateway then check the same fingerprint on every new TLS connection (urllib3's
``assert_fingerprint``), so a later re-login cannot go to another peer either; a TLS error
on them makes the next use check the certificate again.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import socket
import ssl
import stat
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from typing import Any

from adapters.gateway.base import ApplyResult, Clock, CurrentSettings, SiteState, SystemClock
from optimizer.behaviour import ExportRule, Mode, Settings, reserve_ok_for_cloud
from optimizer.errors import InputError

log = logging.getLogger("trueup.gateway.powerwall")

MODES = ("fleetapi", "cloud", "v1r", "tedapi", "none")
FLEET_CONFIG = ".pypowerwall.fleetapi"  # pypowerwall.fleetapi.fleetapi.CONFIGFILE
CLOUD_AUTH = ".pypowerwall.auth"  # pypowerwall.cloud.pypowerwall_cloud.AUTHFILE
V1R_KEY = "tedapi_rsa_private.pem"  # where `python -m pypowerwall setup -v1r` puts it
LOCAL_COOKIE = ".powerwall"  # pypowerwall's local session cache
PIN_FILE = "gateway-cert.sha256"  # the gateway certificate's SHA-256, pinned on first use

_REMOTE = ("fleetapi", "cloud")
_LAN = ("local", "v1r", "tedapi")  # the kinds that send a gateway password to ``host``
_FLOWS = {"grid_w": "site", "battery_w": "battery", "home_w": "load", "solar_w": "solar"}
_COUNTERS = {
    "grid_import_wh": ("site", "energy_imported"),
    "grid_export_wh": ("site", "energy_exported"),
    "solar_wh": ("solar", "energy_exported"),
    "home_wh": ("load", "energy_imported"),
    "battery_import_wh": ("battery", "energy_imported"),
    "battery_export_wh": ("battery", "energy_exported"),
}
_SETTINGS = ("reserve_percent", "mode", "grid_charging", "export_rule")  # write order
_LABEL = {"reserve_percent": "backup reserve", "mode": "operation mode",
          "grid_charging": "grid charging", "export_rule": "export rule"}
_ALL_FIELDS = ("soc_percent", *_FLOWS, "grid_status", *_COUNTERS,
               *(f"settings.{f}" for f in _SETTINGS))
_RESERVE_TOLERANCE = 0.5  # app %: pypowerwall's raw↔app round trip is not exact
_MOVING_W = 100.0  # W: battery power beyond this counts as charging/discharging


@dataclass(frozen=True)
class _Expect:
    """What the battery should be seen doing once settings act."""

    direction: str  # "charge" (battery_w < −100) | "hold" (≤ +100) | "export" (> +100)
    strict: bool  # False: Time-Based Control may take 15–45 min; not seeing it is a note
    why: str


class PowerwallGateway:
    """The Gateway protocol over pypowerwall (see the module docstring).

    Args:
        host: the gateway's LAN address, optionally ``host:port`` ("" = no local reads).
        mode: control path — ``"fleetapi"``, ``"cloud"``, ``"v1r"``, or read-only
            ``"none"`` (the local API) or ``"tedapi"`` (the gateway's Wi-Fi TEDAPI).
        authpath: directory of pypowerwall's token files (and the local session cookie).
        password_file: file holding the gateway customer password ("" = none).
        gw_pwd_file: file holding the gateway Wi-Fi password (QR sticker), for ``tedapi``.
        clock: source of time and sleep (tests pass a fake one).
        timeout_s: per-request timeout, s.
        cache_s: pypowerwall's read cache (``pwcacheexpire``), s; read-backs bypass it.
        verify_delay_s: first wait before reading a write back, s; doubles (``backoff``)
            for each of ``verify_attempts`` read-backs.
        write_attempts: how often one field is sent before it is reported not applied.
        effect_wait_s, effect_poll_s: how long to watch the battery's power after reserve
            or mode changes, and how often, s.
        remote_settings_ttl_s: how long grid charging and export rule read over
            FleetAPI/cloud are reused by :meth:`read` when reads are local (each FleetAPI
            request is billed), s. :meth:`apply` always reads fresh.
        reconnect_interval_s: after a failed connection, how long to answer with the same
            error before trying again, s.
        tls_pin_file: where the gateway certificate's SHA-256 fingerprint is pinned
            ("" = ``<authpath>/gateway-cert.sha256``).
    """

    name = "powerwall"

    def __init__(self, *, host: str, mode: str, authpath: str, password_file: str,
                 clock: Clock | None = None, timeout_s: float = 5.0, cache_s: float = 5.0,
                 verify_delay_s: float = 5.0, verify_attempts: int = 4, backoff: float = 2.0,
                 write_attempts: int = 2, effect_wait_s: float = 120.0,
                 effect_poll_s: float = 15.0, remote_settings_ttl_s: float = 600.0,
                 reconnect_interval_s: float = 60.0, tls_pin_file: str = "",
                 gw_pwd_file: str = "") -> None:
        if mode not in MODES:
            raise InputError(f"gateway mode {mode!r} is not one of {', '.join(MODES)}",
                             where="[gateway] mode",
                             fix="fleetapi, cloud or v1r to control; none or tedapi to only "
                                 "read")
        if verify_attempts < 1 or write_attempts < 1:
            raise InputError("verify_attempts and write_attempts must be ≥ 1",
                             where="PowerwallGateway")
        self.host = host.strip()
        self.mode = mode
        self.authpath = os.path.expanduser(authpath) if authpath else ""
        self.password_file = os.path.expanduser(password_file) if password_file else ""
        self.gw_pwd_file = os.path.expanduser(gw_pwd_file) if gw_pwd_file else ""
        self.tls_pin_file = (os.path.expanduser(tls_pin_file) if tls_pin_file
                             else os.path.join(self.authpath or ".", PIN_FILE))
        self.clock = clock or SystemClock()
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self.verify_delay_s = verify_delay_s
        self.verify_attempts = verify_attempts
        self.backoff = backoff
        self.write_attempts = write_attempts
        self.effect_wait_s = effect_wait_s
        self.effect_poll_s = effect_poll_s
        self.remote_settings_ttl_s = remote_settings_ttl_s
        self.reconnect_interval_s = reconnect_interval_s
        self.warnings: list[str] = []  # secrets readable by everyone, and the like

        local = bool(self.host and self.password_file)
        if mode == "v1r":
            if not local:
                raise InputError("v1r needs the gateway's host and the customer password",
                                 where="[gateway] host / password_file",
                                 fix="set host to the gateway's LAN address and "
                                     "password_file to a file holding its password")
            self.read_kind, self.control_kind = "v1r", "v1r"
        elif mode == "tedapi":
            if not (self.host and self.gw_pwd_file):
                raise InputError("TEDAPI mode (mode = tedapi) reads the gateway over its own "
                                 "Wi-Fi network and needs its address and Wi-Fi password",
                                 where="[gateway] host / gw_pwd_file",
                                 fix="set host = \"192.168.91.1\" and gw_pwd_file to a file "
                                     "holding the password printed on the gateway's QR "
                                     "sticker")
            self.read_kind, self.control_kind = "tedapi", None
        elif mode == "none":
            if not local:
                raise InputError("read-only mode (mode = none) reads the gateway's local "
                                 "API and needs its host and customer password",
                                 where="[gateway] host / password_file",
                                 fix="set host and password_file, or choose mode = fleetapi "
                                     "or cloud")
            self.read_kind, self.control_kind = "local", None
        else:
            self.read_kind, self.control_kind = ("local" if local else mode), mode
        self._links: dict[str, Any] = {}  # kind → pypowerwall.Powerwall
        self._failed: dict[str, tuple[float, InputError]] = {}
        self._remote_cache: dict[str, tuple[float, Any]] = {}
        self._current_cache: tuple[float, dict[str, Any], dict[str, str]] | None = None
        self._last_unknown: dict[str, str] = {}
        self._tls_recheck = False  # a pinned session met a TLS error: check the cert again
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, section: Any, *, clock: Clock | None = None,
                    **options: Any) -> PowerwallGateway:
        """Build from ``[gateway]`` (:class:`trueup.config.GatewaySection`); no I/O."""
        return cls(host=section.host, mode=section.mode, authpath=section.authpath,
                   password_file=section.password_file, clock=clock,
                   tls_pin_file=getattr(section, "tls_pin_file", ""),
                   gw_pwd_file=getattr(section, "gw_pwd_file", ""), **options)

    def __repr__(self) -> str:  # never the password
        return (f"PowerwallGateway(host={self.host!r}, mode={self.mode!r}, "
                f"reads={self.source!r}, control={self.control_kind!r})")

    @property
    def source(self) -> str:
        """Which connection answers reads: local | tedapi | fleetapi | cloud (v1r reads
        are TEDAPI over the LAN)."""
        return "tedapi" if self.read_kind in ("v1r", "tedapi") else self.read_kind

    # ---------------------------------------------------------------------------------
    # connections

    def connect(self) -> None:
        """Open the read and control connections now; raise :class:`InputError` naming
        the fix if one cannot be opened (``trueup status`` shows it as is)."""
        with self._lock:
            self._link(self.read_kind)
            if self.control_kind:
                self._link(self.control_kind)

    def close(self) -> None:
        """Log out of the local session (best effort) and forget every connection."""
        with self._lock:
            for kind, pw in self._links.items():
                if kind == "local" and getattr(pw, "client", None) is not None:
                    try:
                        pw.client.close_session()
                    except Exception as exc:
                        log.debug("logout failed: %s", exc)
            self._links.clear()

    def _link(self, kind: str) -> Any:
        if kind in self._links:
            if not (self._tls_recheck and kind in _LAN):
                return self._links[kind]
            self._tls_recheck = False
            del self._links[kind]
            log.warning("TLS error on the connection to the gateway at %s: checking its "
                        "certificate again", self.host)
        failed = self._failed.get(kind)
        if failed and self.clock.now() - failed[0] < self.reconnect_interval_s:
            raise failed[1]
        try:
            pw = self._open(kind)
        except InputError as exc:
            self._failed[kind] = (self.clock.now(), exc)
            if failed is None or str(failed[1]) != str(exc):  # the same error: logged once
                log.error("cannot connect to the Powerwall over %s: %s", kind, exc)
            else:
                log.debug("still cannot connect to the Powerwall over %s", kind)
            raise
        self._failed.pop(kind, None)
        self._links[kind] = pw
        log.info("connected to the Powerwall over %s", kind)
        return pw

    def _open(self, kind: str) -> Any:
        import pypowerwall  # deferred: importing it is slow and not needed to simulate
        from pypowerwall.exceptions import PyPowerwallInvalidConfigurationParameter

        self._check_authpath()
        common: dict[str, Any] = {"authpath": self.authpath, "timeout": self.timeout_s,
                                  "pwcacheexpire": self.cache_s, "failover": False}
        pinned = seen = None
        if kind in _LAN:
            if kind == "tedapi":  # the Wi-Fi password alone: pypowerwall's full TEDAPI mode
                common.update(password="", gw_pwd=self._read_password(
                    self.gw_pwd_file, "gw_pwd_file", "the gateway Wi-Fi password file"))
            else:
                common["password"] = self._read_password()
            pinned, seen = self._check_certificate()  # before pypowerwall gets the password
            self._tls_recheck = False
            common.update(host=self.host,
                          cachefile=os.path.join(self.authpath or ".", LOCAL_COOKIE))
        if kind == "v1r":
            common["rsa_key_path"] = self._secret(V1R_KEY, "the v1r RSA key",
                                                  "python -m pypowerwall setup -v1r")
        elif kind == "fleetapi":
            self._secret(FLEET_CONFIG, "the FleetAPI token file",
                         "python -m pypowerwall setup -fleetapi", writable=True)
            common.update(host="", cloudmode=True, fleetapi=True,
                          email=self._cloud_email(required=False))
        elif kind == "cloud":
            self._secret(CLOUD_AUTH, "the Tesla cloud login",
                         "python -m pypowerwall setup", writable=True)
            common.update(host="", cloudmode=True, fleetapi=False,
                          email=self._cloud_email(required=True))
        with _pypowerwall_messages() as said:
            try:
                pw = pypowerwall.Powerwall(**common)
            except PyPowerwallInvalidConfigurationParameter as exc:
                raise InputError(f"pypowerwall refused the configuration: {exc}",
                                 where="[gateway]", fix=self._fix(kind)) from None
            except Exception as exc:
                raise InputError(f"connecting over {kind} failed: {type(exc).__name__}: "
                                 f"{exc}", where="[gateway]", fix=self._fix(kind)) from None
            # pypowerwall 0.22.2 keeps the half-built client when authenticate() fails, so
            # `client is None` is not enough: its connect() failure is only logged
            failed = any(m.startswith(("Failed to connect using", "Unable to connect to "
                                       "Powerwall")) for m in said)
            if pw.client is None or failed:
                raise self._connect_failure(kind, said)
            if kind in _LAN:
                _pin_sessions(pw.client, seen, self._on_tls_error)
                self._probe(pw, said, kind)
        if seen and pinned is None:
            self._write_pin(seen)  # trust on first use: only after a successful login
        return pw

    # -- the gateway's TLS certificate --------------------------------------------------

    def _on_tls_error(self) -> None:
        self._tls_recheck = True

    def _check_certificate(self) -> tuple[str | None, str]:
        """(pinned, presented) SHA-256 fingerprints of the certificate at ``host``.

        Raises :class:`InputError` when the gateway cannot be reached or presents another
        certificate than the pinned one; nothing has been sent to it then."""
        pinned = self._read_pin()
        try:
            host, port = _host_port(self.host)
            seen = _peer_fingerprint(host, port, self.timeout_s)
        except (OSError, ValueError) as exc:  # ssl.SSLError and timeouts are OSErrors
            raise InputError(f"the gateway at {self.host} did not answer: {_no_answer(exc)}",
                             where="[gateway] host", fix=self._fix("host")) from None
        if pinned is not None and seen != pinned:
            pin = self.tls_pin_file
            raise InputError(
                f"the TLS certificate of the gateway at {self.host} changed from sha256 "
                f"{pinned} to sha256 {seen}: not connecting, the customer password was not "
                "sent", where=f"[gateway] host = {self.host}; pin file {pin}",
                fix=f"if the gateway was replaced or its certificate renewed, compare the new "
                    f"fingerprint with the one your browser shows for https://{self.host}/ "
                    f"(certificate details, SHA-256), then delete {pin} and restart trueup "
                    "to trust it; if they differ, something else answers at that address")
        return pinned, seen

    def _read_pin(self) -> str | None:
        path = self.tls_pin_file
        where = f"[gateway] tls_pin_file = {path}"
        try:
            with open(path, encoding="ascii") as f:
                lines = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the gateway certificate pin {path}: {exc}",
                             where=where, fix=f"chown it to the user trueup runs as and chmod "
                                              f"600 {path}") from None
        # also takes openssl's "sha256 Fingerprint=AB:CD:…"
        digits = lines[0].rsplit("=", 1)[-1].replace(":", "").lower() if lines else ""
        if not re.fullmatch(r"[0-9a-f]{64}", digits):
            raise InputError(f"the pin file {path} does not hold a SHA-256 fingerprint",
                             where=where, fix=f"delete {path}: the gateway's certificate is "
                                              "pinned again at the next connection")
        return _colon_hex(digits)

    def _write_pin(self, fingerprint: str) -> None:
        path = self.tls_pin_file
        tmp = f"{path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(fingerprint + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            with suppress(OSError):
                os.unlink(tmp)
            raise InputError(f"cannot pin the gateway's TLS certificate in {path}: {exc}",
                             where=f"[gateway] tls_pin_file = {path}",
                             fix=f"make {os.path.dirname(path) or '.'} writable by the user "
                                 "trueup runs as, or set tls_pin_file") from None
        log.info("pinned the TLS certificate of the gateway at %s (sha256 %s) in %s",
                 self.host, fingerprint, path)

    def _probe(self, pw: Any, said: list[str], kind: str) -> None:
        """The local client logs in only on its first request: make one now, so a wrong
        password or an unreachable host is reported here, with its fix, rather than as a
        read failure. (Remote clients authenticate in the constructor.)"""
        from pypowerwall.local.exceptions import LoginError

        try:
            status = pw.poll("/api/status", force=True)
        except LoginError as exc:
            raise InputError(f"the gateway at {self.host} refused the customer password "
                             f"({exc})", where=f"[gateway] password_file = "
                             f"{self.password_file}", fix=self._fix("password")) from None
        except Exception as exc:
            raise InputError(f"the gateway at {self.host} did not answer: "
                             f"{type(exc).__name__}: {exc}", where="[gateway] host",
                             fix=self._fix("host")) from None
        if isinstance(status, dict):
            return
        if kind == "v1r":  # the login went through: the host and password are right
            raise InputError(f"the gateway at {self.host} accepted the customer password but "
                             "answered no signed v1r query" + _because(said),
                             where=f"[gateway] authpath = {self.authpath or '.'}",
                             fix=self._fix("v1r"))
        if kind == "tedapi":  # the Wi-Fi password opened /tedapi/din
            raise InputError(f"the gateway at {self.host} accepted the Wi-Fi password but "
                             "answered no TEDAPI query" + _because(said),
                             where="[gateway] mode = tedapi",
                             fix="check pypowerwall's README (TEDAPI) for your gateway and "
                                 "firmware: Powerwall 3 over the LAN needs mode = v1r")
        raise InputError(f"the gateway at https://{self.host}/ did not answer /api/status"
                         + _because(said), where="[gateway] host", fix=self._fix("host"))

    def _connect_failure(self, kind: str, said: list[str]) -> InputError:
        """Why pypowerwall could not connect over ``kind``, from what it logged: a refused
        password names the password and its file, an address that did not answer names
        ``host``, a refused Tesla login names pypowerwall's setup; else its own words."""
        text, because = " | ".join(said), _because(said)
        auth = self.authpath or "."
        login = re.search(r"login failed \((401|403)\)", text)
        if kind == "v1r" and login:
            return InputError(f"the gateway at {self.host} refused the customer password "
                              f"(v1r login answered HTTP {login.group(1)})",
                              where=f"[gateway] password_file = {self.password_file}",
                              fix=self._fix("password"))
        din = re.search(r"Error fetching DIN: (401|403)", text)
        if kind == "tedapi" and (din or "Access Denied" in text):
            return InputError(f"the gateway at {self.host} refused the Wi-Fi password (TEDAPI "
                              f"answered HTTP {din.group(1) if din else 403})",
                              where=f"[gateway] gw_pwd_file = {self.gw_pwd_file}",
                              fix=self._fix("gw_pwd"))
        if kind in _REMOTE and re.search(r"\b401\b|unauthori[sz]ed|token expired", text, re.I):
            who = "Tesla's Fleet API" if kind == "fleetapi" else "the Tesla cloud (Owner API)"
            return InputError(f"{who} refused the saved login (HTTP 401: its token expired "
                              f"or was revoked){because}", where=f"[gateway] authpath = {auth}",
                              fix=self._fix(kind))
        bundles = [v for v in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if os.environ.get(v)]
        if kind in _LAN and "CERTIFICATE_VERIFY_FAILED" in text and bundles:
            return InputError(f"the gateway's self-signed certificate was checked against "
                              f"{' and '.join(bundles)}{because}", where="the environment",
                              fix=f"unset {' '.join(bundles)} for trueup: requests lets them "
                                  "override pypowerwall's verify=False for the gateway (trueup "
                                  "pins the gateway's certificate itself)")
        if _UNREACHABLE.search(text):
            if kind in _LAN:
                return InputError(f"the gateway at {self.host} did not answer{because}",
                                  where="[gateway] host", fix=self._fix("host"))
            return InputError(f"Tesla's servers did not answer over {kind}{because}",
                              where="[gateway] mode", fix="check that this machine reaches "
                              "the internet (DNS, proxy, firewall), then try again")
        return InputError(f"pypowerwall could not connect over {kind}{because}",
                          where="[gateway]", fix=self._fix(kind))

    def _fix(self, kind: str) -> str:
        auth = self.authpath or "."
        if kind in ("local", "host", "tedapi") and self.read_kind == "tedapi":
            return (f"join this machine to the gateway's own Wi-Fi network (TEG-…, password "
                    f"on the gateway's QR sticker) and keep [gateway] host = {self.host!r}: "
                    "TEDAPI answers only at 192.168.91.1 on that network")
        if kind in ("local", "host"):
            return (f"check that [gateway] host = {self.host!r} is the gateway's LAN address "
                    "(`python -m pypowerwall scan` finds it) and that this machine is on the "
                    f"same LAN: https://{self.host}/ must answer from here")
        if kind == "password":
            return (f"put the gateway's customer password (the one its web page at "
                    f"https://{self.host}/ accepts; pypowerwall's help says it is the last 5 "
                    f"characters of the password on the gateway's QR sticker) alone in "
                    f"{self.password_file}, then chmod 600 it")
        if kind == "gw_pwd":
            return (f"put the whole password printed on the gateway's QR sticker (its Wi-Fi "
                    f"password, not the customer password) alone in {self.gw_pwd_file}, then "
                    "chmod 600 it")
        if kind == "v1r":
            return (f"register this machine's key with the gateway: `python -m pypowerwall "
                    f"setup -v1r -authpath {auth}` (it writes {auth}/{V1R_KEY}, chmod 600; "
                    "switch the Powerwall off and on within 10 minutes if it asks)")
        flag, name = ("-fleetapi ", FLEET_CONFIG) if kind == "fleetapi" else ("", CLOUD_AUTH)
        email = "" if kind == "fleetapi" else self._cloud_email(required=False)
        if email and email != "nobody@nowhere.com":
            flag = f"-email {email} "
        return (f"run `python -m pypowerwall setup {flag}-authpath {auth}` as the user trueup "
                f"runs as; then check that {auth}/{name} is readable and writable by that "
                "user only (chmod 600)")

    # -- secrets ----------------------------------------------------------------------

    def _check_authpath(self) -> None:
        if self.authpath and not os.path.isdir(self.authpath):
            raise InputError(f"authpath {self.authpath} is not a directory",
                             where="[gateway] authpath",
                             fix=f"mkdir -p {self.authpath} and make it owned by the user "
                                 "trueup runs as (chmod 700)")

    def _read_password(self, path: str | None = None, key: str = "password_file",
                       what: str = "the password file") -> str:
        """The secret in ``path`` (default: the customer password file), stripped."""
        path = self.password_file if path is None else path
        where = f"[gateway] {key} = {path}"
        if not os.path.exists(path):
            fix = (f"check the path, or write the gateway's customer password to {path} "
                   "(chmod 600); or set password_file = \"\" to read over the control "
                   "connection instead") if key == "password_file" else (
                   f"check the path, or write the password printed on the gateway's QR "
                   f"sticker to {path} (chmod 600)")
            raise InputError(f"{what} {path} does not exist", where=where, fix=fix)
        if not os.path.isfile(path):
            raise InputError(f"{what} {path} is not a file", where=where,
                             fix=f"point {key} at the file holding the password")
        self._warn_if_public(path, "the gateway password file" if key == "password_file"
                             else what)
        try:
            with open(path, encoding="utf-8") as f:
                password = f.read().strip()
        except PermissionError:
            raise InputError(f"cannot read {what} {path}: permission denied",
                             where=where, fix=f"chown it to the user trueup runs as and "
                                              f"chmod 600 {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {what} {path}: {exc}",
                             where=where, fix="write the password as one line of text") \
                from None
        if not password:
            raise InputError(f"{what} {path} is empty", where=where,
                             fix=self._fix("password" if key == "password_file" else "gw_pwd"))
        return password

    def _secret(self, name: str, what: str, setup: str, *, writable: bool = False) -> str:
        path = os.path.join(self.authpath or ".", name)
        where = f"[gateway] authpath = {self.authpath or '.'}"
        fix = f"run `{setup} -authpath {self.authpath or '.'}` as the user trueup runs as"
        if not os.path.isfile(path):
            raise InputError(f"{what} {path} does not exist", where=where, fix=fix)
        self._warn_if_public(path, what)
        if not os.access(path, os.R_OK) or (writable and not os.access(path, os.W_OK)):
            need = "read and write" if writable else "read"
            raise InputError(f"{what} {path} exists but this user cannot {need} it",
                             where=where, fix=f"chown it to the user trueup runs as and "
                                              f"chmod 600 {path}")
        return path

    def _warn_if_public(self, path: str, what: str) -> None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            return
        if mode & (stat.S_IROTH | stat.S_IWOTH):
            message = (f"{what} {path} is readable by every user on this machine (mode "
                       f"{mode:04o}): run chmod 600 {path}")
            if message not in self.warnings:
                self.warnings.append(message)
                log.warning("%s", message)

    def _cloud_email(self, *, required: bool) -> str:
        """The Tesla account, as pypowerwall's CLI finds it: the auth file's first key."""
        import json

        path = os.path.join(self.authpath or ".", CLOUD_AUTH)
        try:
            with open(path, encoding="utf-8") as f:
                email = next(iter(json.load(f)))
        except (OSError, ValueError, StopIteration, TypeError):
            if required:
                raise InputError(f"no Tesla account in {path}",
                                 where=f"[gateway] authpath = {self.authpath or '.'}",
                                 fix=self._fix("cloud")) from None
            return "nobody@nowhere.com"  # pypowerwall's default; FleetAPI does not use it
        return str(email)

    # ---------------------------------------------------------------------------------
    # read

    def read(self) -> SiteState:
        """One read of the site. Never raises; unknown fields are None, with reasons."""
        with self._lock:
            state = self._read()
            # a connection that failed was logged once, by _link: not again per field
            failed = {str(exc) for _, exc in self._failed.values()}
        reasons = {k: v for k, v in state.unknown.items() if not k.endswith("_wh")}
        if reasons != self._last_unknown:
            by_reason: dict[str, list[str]] = {}
            for name, why in reasons.items():
                if why not in failed:
                    by_reason.setdefault(why, []).append(name)
            if by_reason:
                log.warning("gateway read over %s: unknown %s", state.source,
                            "; ".join(f"{', '.join(names)}: {why}"
                                      for why, names in by_reason.items()))
            elif not reasons and self._last_unknown:
                log.info("gateway read over %s: all essentials known again", state.source)
            self._last_unknown = reasons
        return state

    def firmware(self) -> str | None:
        """The gateway's firmware version as the read connection reports it (pypowerwall's
        ``version()``), or None. Reads only; never raises."""
        with self._lock:
            try:
                pw = self._link(self.read_kind)
            except InputError:
                return None
            value, _ = _call(pw.version)
        return value.strip() if isinstance(value, str) and value.strip() else None

    def _read(self) -> SiteState:
        now = self.clock.now()
        try:
            pw = self._link(self.read_kind)
        except InputError as exc:
            return SiteState(timestamp=now, source=self.source,
                             unknown=dict.fromkeys(_ALL_FIELDS, str(exc)))
        unknown: dict[str, str] = {}
        values: dict[str, Any] = {}
        aggregates, why = _call(pw.poll, "/api/meters/aggregates")
        self._flows(aggregates, why, values, unknown)
        self._counters(aggregates, why, values, unknown)
        values["soc_percent"] = self._soc(pw, unknown)
        values["grid_status"] = _grid(pw, unknown)
        settings = self._settings(pw, unknown)
        return SiteState(timestamp=now, source=self.source, settings=settings,
                         unknown=unknown, **values)

    def _flows(self, agg: Any, why: str | None, values: dict, unknown: dict) -> None:
        reason = _aggregates_problem(agg, why)
        found = {}
        for name, section in _FLOWS.items():
            value = None if reason else _number(_get(agg, section, "instant_power"))
            if value is None:
                unknown[name] = reason or f"aggregates have no number for {section} power"
            found[name] = value
        if not reason and all(v == 0 for v in found.values()):
            for name in _FLOWS:
                unknown[name] = ("every power flow reads 0 W: what pypowerwall's power() "
                                 "reports when the meter data is unavailable, not a reading")
                found[name] = None
        values.update(found)

    def _counters(self, agg: Any, why: str | None, values: dict, unknown: dict) -> None:
        if self.source in _REMOTE:
            reason = (f"the {self.source} connection has no lifetime counters (only the local "
                      "and TEDAPI paths do); its zeros are not data")
        else:
            reason = _aggregates_problem(agg, why)
        found = {}
        for name, (section, key) in _COUNTERS.items():
            value = None if reason else _number(_get(agg, section, key))
            if value is not None and value < 0:
                value = None
            found[name] = value
            if value is None:
                unknown[name] = reason or f"aggregates have no {section}.{key} counter"
        if not reason and all(v == 0 for v in found.values()):
            for name in _COUNTERS:
                unknown[name] = "every lifetime counter reads 0 Wh: not reported"
                found[name] = None
        values.update(found)

    def _soc(self, pw: Any, unknown: dict) -> float | None:
        level, why = _call(pw.level, scale=True)
        level = _number(level)
        if level is None:
            unknown["soc_percent"] = why or "no answer to /api/system_status/soe"
            return None
        if self.source in _REMOTE and abs(level) < 0.01:
            unknown["soc_percent"] = (f"{self.source} reports 0 app % (5.0 raw), which is also "
                                      "what pypowerwall returns when the live status fails")
            return None
        if not -1.0 <= level <= 101.0:
            unknown["soc_percent"] = f"SOC {level:.1f} app % is outside 0–100"
            return None
        return min(max(level, 0.0), 100.0)

    def _settings(self, pw: Any, unknown: dict) -> CurrentSettings:
        mode = _mode(*_call(pw.get_mode), unknown, "settings.mode")
        reserve = self._reserve(*_call(pw.get_reserve), unknown, "settings.reserve_percent",
                                self.source)
        if self.control_kind is None:
            for name in ("grid_charging", "export_rule"):
                unknown[f"settings.{name}"] = ("not readable over a read-only connection "
                                               f"([gateway] mode = {self.mode})")
            return CurrentSettings(mode, reserve)
        if self.control_kind == self.read_kind:
            control = pw
        else:
            try:
                control = self._link(self.control_kind)
            except InputError as exc:
                for name in ("grid_charging", "export_rule"):
                    unknown[f"settings.{name}"] = str(exc)
                return CurrentSettings(mode, reserve)
        charging = self._remote_field(control, "grid_charging", unknown)
        export = self._remote_field(control, "export_rule", unknown)
        return CurrentSettings(mode, reserve, charging, export)

    def _remote_field(self, control: Any, name: str, unknown: dict) -> Any:
        """Grid charging or export rule, reused for ``remote_settings_ttl_s`` when reads
        are local and the value comes from a billed FleetAPI/cloud request."""
        cached = self._remote_cache.get(name)
        remote = self.control_kind in _REMOTE and self.read_kind != self.control_kind
        if remote and cached and self.clock.now() - cached[0] < self.remote_settings_ttl_s:
            return cached[1]
        value, why = self._read_field(control, name, force=False)
        if value is None:
            unknown[f"settings.{name}"] = why or "no answer"
        else:
            self._remote_cache[name] = (self.clock.now(), value)
        return value

    @staticmethod
    def _reserve(value: Any, why: str | None, unknown: dict, key: str,
                 source: str) -> float | None:
        reserve = _number(value)
        if reserve is None:
            unknown[key] = why or "no answer to /api/operation (solar-only gateway?)"
            return None
        if source in _REMOTE and reserve < 0.01:
            unknown[key] = (f"{source} reads 0 %, pypowerwall's value when the site info has "
                            "no backup_reserve_percent (trueup never sets 0)")
            return None
        if not 0.0 <= reserve <= 100.5:
            unknown[key] = f"reserve {reserve:.1f} app % is outside 0–100"
            return None
        return min(reserve, 100.0)

    def _read_field(self, pw: Any, name: str, *, force: bool) -> tuple[Any, str | None]:
        """One setting from the control connection ``pw`` (app % for the reserve);
        (None, why) when unknown."""
        unknown: dict[str, str] = {}
        if name == "reserve_percent":
            value = self._reserve(*_call(pw.get_reserve, force=force), unknown, name,
                                  self.control_kind or self.source)
        elif name == "mode":
            value = _mode(*_call(pw.get_mode, force=force), unknown, name)
        else:
            client = getattr(pw, "client", None)
            if client is None:
                return None, "pypowerwall has no connected client"
            method = "get_grid_charging" if name == "grid_charging" else "get_grid_export"
            missing = _missing_components(client, force)
            if missing:
                return None, missing
            raw, why = _call(getattr(client, method), force=force)
            if raw is None:
                return None, why or f"{method}() returned nothing"
            if name == "grid_charging":
                value = raw if isinstance(raw, bool) else None
                if value is None:
                    unknown[name] = f"{method}() returned {raw!r}, not True/False"
            else:
                try:
                    value = ExportRule(raw)
                except ValueError:
                    value = None
                    unknown[name] = f"{method}() returned {raw!r}, not an export rule"
        return value, unknown.get(name)

    # ---------------------------------------------------------------------------------
    # apply

    def fields_to_write(self, settings: Settings) -> int:
        """How many field writes :meth:`apply` would make now (for the write budget)."""
        with self._lock:
            if self.control_kind is None or not reserve_ok_for_cloud(settings.reserve_percent):
                return 0
            try:
                current, _ = self._current(self._link(self.control_kind), reuse=False)
            except InputError:
                return len(_SETTINGS)
            return len(_differing(_rounded(settings), current))

    def apply(self, settings: Settings) -> ApplyResult:
        """Write the fields of ``settings`` that differ, each verified (see the module
        docstring). Never raises; failures are in :attr:`ApplyResult.errors`."""
        with self._lock:
            return self._apply(settings)

    def _apply(self, settings: Settings) -> ApplyResult:
        self._calls = 0
        result = self._apply_counted(settings)
        return replace(result, api_calls=self._calls)

    def _apply_counted(self, settings: Settings) -> ApplyResult:
        if self.control_kind is None:
            return ApplyResult(settings, None, errors=(
                "the Powerwall is configured read-only ([gateway] mode = none): nothing "
                "written. Set mode = fleetapi, cloud or v1r to let trueup change settings",))
        if self.control_kind in ("fleetapi", "cloud") and \
                not reserve_ok_for_cloud(settings.reserve_percent):
            return ApplyResult(settings, None, errors=(
                f"refused: backup reserve {settings.reserve_percent:g} % breaks the 80/100 "
                "rule (1–80 or exactly 100 app %; 81–99 is rejected or snaps to 80 since "
                "firmware 25.18, 0 does not apply — docs/powerwall.md, 'Reserve'). The "
                "safety rails should have clamped it (optimizer.behaviour.clamp_reserve); "
                "nothing written",))
        target = _rounded(settings)
        notes: list[str] = []
        if target.reserve_percent != settings.reserve_percent:
            notes.append(f"reserve {settings.reserve_percent:g} % sent as "
                         f"{target.reserve_percent:g} % (Tesla takes whole percent)")
        try:
            pw = self._link(self.control_kind)
        except InputError as exc:
            return ApplyResult(settings, None, errors=(str(exc),), notes=tuple(notes))
        current, why = self._current(pw, reuse=True)
        self._current_cache = None
        if all(v is None for v in current.values()):
            return ApplyResult(settings, None, errors=(
                f"could not read the current settings over {self.control_kind} ("
                + "; ".join(dict.fromkeys(why.values())) + "): nothing written, since a "
                "write that cannot be read back cannot be verified",), notes=tuple(notes))
        todo = _differing(target, current)
        if not todo:
            return ApplyResult(settings, None, skipped="no change: the gateway already "
                               "reports these settings", notes=tuple(notes))
        site = self._site_now() if {"reserve_percent", "mode"} & set(todo) else (None, None)
        written: list[str] = []
        errors: list[str] = []
        for i, name in enumerate(todo):
            wrote, error = self._write_verified(pw, name, getattr(target, name), notes)
            if wrote:
                written.append(name)
            if error:
                errors.append(error)
                if todo[i + 1:]:
                    notes.append("not attempted after that failure: "
                                 + ", ".join(_LABEL[n] for n in todo[i + 1:]))
                break
        verified = not errors
        if verified and {"reserve_percent", "mode"} & set(written):
            error = self._check_effect(target, *site, notes)
            if error:
                errors.append(error)
                verified = False
        return ApplyResult(settings, target, tuple(written), verified,
                           errors=tuple(errors), notes=tuple(notes))

    def _current(self, pw: Any, *, reuse: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """The settings the control connection reports now (``force=True``)."""
        cached = self._current_cache
        if reuse and cached and self.clock.now() - cached[0] < 10.0:
            return cached[1], cached[2]
        values, why = {}, {}
        for name in _SETTINGS:
            values[name], reason = self._read_field(pw, name, force=True)
            if reason:
                why[name] = reason
        self._current_cache = (self.clock.now(), values, why)
        return values, why

    def _write_verified(self, pw: Any, name: str, desired: Any,
                        notes: list[str]) -> tuple[bool, str | None]:
        """Send one field, read it back with backoff; re-send a bounded number of times.

        Returns (whether a write was accepted, the error or None)."""
        label, via = _LABEL[name], self.control_kind
        wrote, seen, failure = False, None, None
        for attempt in range(1, self.write_attempts + 1):
            response, why = self._send(pw, name, desired)
            if why and why.startswith("rejected:"):
                return wrote, f"{label} {_show(desired)}: pypowerwall {why}"
            failure = why or _write_failure(response, name)
            if failure:
                log.warning("%s write %s over %s failed (attempt %d/%d): %s", label,
                            _show(desired), via, attempt, self.write_attempts, failure)
                if attempt < self.write_attempts:
                    self.clock.sleep(self.verify_delay_s)
                continue
            wrote = True
            delay = self.verify_delay_s
            for _ in range(self.verify_attempts):
                self.clock.sleep(delay)
                seen, _why = self._read_field(pw, name, force=True)
                if _same(name, seen, desired):
                    if name in ("grid_charging", "export_rule"):
                        self._remote_cache[name] = (self.clock.now(), seen)
                    log.info("%s set to %s over %s (read back)", label, _show(desired), via)
                    return True, None
                delay *= self.backoff
            failure = None
            notes.append(f"{label}: wrote {_show(desired)} over {via}; it still read "
                         f"{_show(seen)} after {self.verify_attempts} read-backs"
                         + (" — sending again" if attempt < self.write_attempts else ""))
        if failure:
            return wrote, (f"{label} {_show(desired)}: the write failed over {via} "
                           f"{self.write_attempts} time(s): {failure}")
        waited = sum(self.verify_delay_s * self.backoff ** k
                     for k in range(self.verify_attempts))
        return wrote, (f"{label} {_show(desired)}: {via} reported the write as done but the "
                       f"gateway still reports {_show(seen)} after {self.write_attempts} "
                       f"write(s) and {waited:.0f} s of read-backs each — not applied")

    def _send(self, pw: Any, name: str, value: Any) -> tuple[Any, str | None]:
        self._calls = getattr(self, "_calls", 0) + 1  # one write command on the wire
        if name == "reserve_percent":
            return _call(pw.set_reserve, int(value))  # whole app %, as Tesla takes it
        if name == "mode":
            return _call(pw.set_mode, Mode(value).value)
        if name == "grid_charging":
            return _call(pw.set_grid_charging, bool(value))
        try:
            return pw.set_grid_export(ExportRule(value).value), None
        except ValueError as exc:
            return None, (f"rejected: set_grid_export raised ValueError ({exc}); the export "
                          "rule must be one of battery_ok, pv_only, never")
        except Exception as exc:
            return None, f"set_grid_export() raised {type(exc).__name__}: {exc}"

    # -- effect on the battery -----------------------------------------------------------

    def _site_now(self) -> tuple[float | None, str | None]:
        """SOC (app %) and grid status before writing, for the effect check."""
        try:
            pw = self._link(self.read_kind)
        except InputError:
            return None, None
        return self._soc(pw, {}), _grid(pw, {})

    def _battery_w(self) -> float | None:
        try:
            pw = self._link(self.read_kind)
        except InputError:
            return None
        agg, why = _call(pw.poll, "/api/meters/aggregates", force=True)
        if _aggregates_problem(agg, why):
            return None
        return _number(_get(agg, "battery", "instant_power"))

    def _check_effect(self, target: Settings, soc: float | None, grid: str | None,
                      notes: list[str]) -> str | None:
        if grid != "up":
            notes.append("effect on the battery not checked: the grid is "
                         + ("down" if grid == "down" else "in an unknown state"))
            return None
        expect = _expected_effect(target, soc)
        if expect is None:
            notes.append("effect on the battery not checked: "
                         + ("SOC unknown" if soc is None else "no definite direction for "
                            "these settings at this SOC"))
            return None
        deadline = self.clock.now() + self.effect_wait_s
        seen: float | None = None
        while True:
            self.clock.sleep(self.effect_poll_s)
            power = self._battery_w()
            if power is not None:
                seen = power
                if _moving(expect.direction, power):
                    notes.append(f"seen acting: battery {power:+.0f} W ({expect.why})")
                    return None
            if self.clock.now() >= deadline:
                break
        what = {"charge": "start charging", "hold": "stop discharging",
                "export": "start discharging"}[expect.direction]
        last = "unknown" if seen is None else f"{seen:+.0f} W"
        message = (f"settings read back as written, but the battery did not {what} within "
                   f"{self.effect_wait_s:.0f} s (battery {last}; {expect.why})")
        if not expect.strict:
            notes.append(message + ": Time-Based Control can take 15–45 minutes to act")
            return None
        if seen is None:
            notes.append(message + ": battery power could not be read")
            return None
        return message + (": the gateway may not have applied them (a write can report "
                          "success without taking effect)")


# --------------------------------------------------------------------------------------
# helpers


_UNREACHABLE = re.compile(
    r"timed? ?out|connection refused|max retries exceeded|name or service not known|"
    r"no route to host|network is unreachable|getaddrinfo|NewConnectionError|"
    r"Unable to connect to Powerwall at", re.I)


def _no_answer(exc: BaseException) -> str:
    """Why nothing answered at an address, in words (refused, timed out, no such name …)."""
    import errno

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens at that address and port)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer before the timeout (nothing at that address, or a firewall)"
    if isinstance(exc, socket.gaierror):
        return f"the name does not resolve ({exc})"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake failed ({exc}): is it a Tesla gateway?"
    if getattr(exc, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route to it from this machine (another network?)"
    if isinstance(exc, ValueError):
        return f"the address cannot be read ({exc})"
    return f"could not read its TLS certificate ({type(exc).__name__}: {exc})"


@contextmanager
def _pypowerwall_messages() -> Iterator[list[str]]:
    """Collect what pypowerwall logs at WARNING or above (why a connection failed) instead
    of logging it: it becomes part of the one message about the connection, so a failing
    connection is not logged again in pypowerwall's words at every retry."""
    said: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    logger = logging.getLogger("pypowerwall")
    handler = _Collect(logging.WARNING)
    level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _colon_hex(digits: str) -> str:
    """``ab12…`` → ``AB:12:…``, as browsers and ``openssl x509 -fingerprint`` show it."""
    return ":".join(digits[i:i + 2] for i in range(0, len(digits), 2)).upper()


def _host_port(host: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` → (host, port); 443 by default."""
    parts = urllib.parse.urlsplit(f"//{host}")
    return parts.hostname or host, parts.port or 443  # .port raises ValueError if bad


def _peer_fingerprint(host: str, port: int, timeout: float) -> str:
    """The SHA-256 fingerprint of the certificate presented at host:port. Verification is
    off only to read it (it is self-signed): it is compared with the pin; nothing is sent."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as sock, \
            context.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the gateway presented no certificate")
    return _colon_hex(hashlib.sha256(der).hexdigest())


def _pin_sessions(client: Any, fingerprint: str, on_tls_error: Callable[[], None]) -> None:
    """Make pypowerwall's HTTPS sessions to the gateway check ``fingerprint`` on every new
    TLS connection (urllib3's ``assert_fingerprint`` is checked even with ``verify=False``),
    so a re-login after the session expires cannot go to another peer. pypowerwall 0.22's
    sessions: the local client's ``session``; in v1r, ``tedapi.v1r_transport.session`` and
    ``tedapi.api_session`` (made here, pinned, before pypowerwall makes it unpinned); in
    tedapi (Wi-Fi) mode, ``tedapi.session``."""
    import requests
    from requests.adapters import HTTPAdapter

    class _Pinned(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, assert_fingerprint=fingerprint, **kwargs)

        def send(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().send(*args, **kwargs)
            except requests.exceptions.SSLError:
                on_tls_error()
                raise

    tedapi = getattr(client, "tedapi", None)
    if getattr(tedapi, "v1r", False) and getattr(tedapi, "api_session", False) is None:
        tedapi.api_session = requests.Session()
        tedapi.api_session.verify = False
    transport = getattr(tedapi, "v1r_transport", None)
    for session in (getattr(client, "session", None), getattr(transport, "session", None),
                    getattr(tedapi, "api_session", None), getattr(tedapi, "session", None)):
        if not isinstance(session, requests.Session):
            continue  # poolmaxsize=0 uses the requests module itself: not ours to change
        old = session.get_adapter("https://")
        session.mount("https://", _Pinned(
            pool_connections=getattr(old, "_pool_connections", 10),
            pool_maxsize=getattr(old, "_pool_maxsize", 10),
            max_retries=getattr(old, "max_retries", 0),
            pool_block=getattr(old, "_pool_block", False)))
        old.close()


def _because(said: list[str]) -> str:
    unique = list(dict.fromkeys(s.strip() for s in said if s.strip()))[:3]
    return (": " + " | ".join(unique)) if unique else ""


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """``fn(...)``, or (None, why) when it raised — pypowerwall raises from inside reads
    (LoginError on a refused session, AttributeError when site info failed, ...)."""
    try:
        return fn(*args, **kwargs), None
    except Exception as exc:
        name = getattr(fn, "__name__", "call")
        if type(exc).__name__ == "LoginError":
            return None, (f"{name}(): the gateway refused the login ({exc}); check the "
                          "password file")
        return None, f"{name}() raised {type(exc).__name__}: {exc}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _get(payload: Any, section: str, key: str) -> Any:
    part = payload.get(section) if isinstance(payload, dict) else None
    return part.get(key) if isinstance(part, dict) else None


def _aggregates_problem(agg: Any, why: str | None) -> str | None:
    if agg is None:
        return why or ("no answer to /api/meters/aggregates (timeout, HTTP error, login "
                       "refused, or a body that is not JSON)")
    if not isinstance(agg, dict):
        return f"/api/meters/aggregates answered {type(agg).__name__}, not a JSON object"
    if "ERROR" in agg or "error" in agg:
        return f"/api/meters/aggregates answered an error: {agg.get('ERROR') or agg['error']}"
    return None


def _grid(pw: Any, unknown: dict) -> str | None:
    status, why = _call(pw.grid_status)
    if status == "UP":
        return "up"
    if status == "DOWN":
        return "down"
    if status == "SYNCING":
        unknown["grid_status"] = "the gateway is switching between grid and island (SYNCING)"
    else:
        unknown["grid_status"] = why or ("no answer to /api/system_status/grid_status"
                                         if status is None else f"grid status {status!r}")
    return None


def _mode(value: Any, why: str | None, unknown: dict, key: str) -> Mode | None:
    if value is None:
        unknown[key] = why or "no answer to /api/operation"
        return None
    try:
        return Mode(value)
    except ValueError:
        unknown[key] = f"operation mode {value!r} is not one trueup knows"
        return None


def _write_failure(response: Any, name: str) -> str | None:
    """Why a write's answer is a failure, or None. pypowerwall answers a failed write with
    None/False, ``{'error': ...}`` (truthy!), ``{'ERROR': ...}``, a nested ``result`` of
    None/False/'BatteryNotFound', or a Tesla body whose ``code`` is ≥ 400."""
    if response is None or response is False:
        return "no answer (the request failed, or this connection cannot write)"
    if isinstance(response, dict):
        for key in ("error", "ERROR"):
            if response.get(key):
                return f"answered {key!r}: {response[key]}"
        key = {"reserve_percent": "set_backup_reserve_percent",
               "mode": "set_operation"}.get(name)
        if key:
            part = response.get(key)
            if not isinstance(part, dict):
                return f"answer has no {key!r}: {response!r}"
            result = part.get("result")
            if result is None or result is False or result == "BatteryNotFound":
                return f"{key} result {result!r}"
            response = result
        body = response.get("response", response) if isinstance(response, dict) else None
        if isinstance(body, dict):
            code = body.get("code", body.get("Code"))
            if isinstance(code, int) and code >= 400:
                return f"Tesla answered code {code}: {body.get('message', body)}"
            if body.get("result") is False:
                return f"Tesla answered result false: {body.get('reason', body)}"
    return None


def _rounded(settings: Settings) -> Settings:
    return replace(settings, reserve_percent=float(round(settings.reserve_percent)))


def _differing(target: Settings, current: dict[str, Any]) -> list[str]:
    return [n for n in _SETTINGS if not _same(n, current.get(n), getattr(target, n))]


def _same(name: str, seen: Any, desired: Any) -> bool:
    if seen is None:
        return False
    if name == "reserve_percent":
        return abs(float(seen) - float(desired)) <= _RESERVE_TOLERANCE
    return seen == desired


def _show(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g} %"
    return str(getattr(value, "value", value))


def _expected_effect(target: Settings, soc: float | None) -> _Expect | None:
    """Which way the battery's power should move within a minute or two (Self-Powered and
    Backup act within about a minute; docs/powerwall.md, 'How fast settings act')."""
    if soc is None:
        return None
    reserve = target.reserve_percent
    if target.mode is Mode.BACKUP and soc < 95.0:
        return _Expect("charge", True, f"Backup charges toward 100 % from SOC {soc:.0f} %")
    if target.mode is Mode.SELF_POWERED and reserve > soc + 2.0:
        return _Expect("charge", True, f"reserve {reserve:g} % above SOC {soc:.0f} % charges "
                       "up to the reserve, even with grid charging off")
    if target.mode is Mode.SELF_POWERED and reserve >= soc - 1.0:
        return _Expect("hold", True, f"reserve {reserve:g} % at SOC {soc:.0f} % stops "
                       "discharge")
    if target.mode is Mode.TIME_BASED and target.export_rule is ExportRule.BATTERY_OK and \
            soc > reserve + 5.0:
        return _Expect("export", False, "Time-Based Control with export 'battery_ok' above "
                       "the reserve")
    return None


def _moving(direction: str, battery_w: float) -> bool:
    if direction == "charge":
        return battery_w < -_MOVING_W
    if direction == "export":
        return battery_w > _MOVING_W
    return battery_w <= _MOVING_W


def _missing_components(client: Any, force: bool) -> str | None:
    """FleetAPI/cloud derive grid charging and the export rule from the site's
    ``components``; when those are missing pypowerwall returns its defaults (grid charging
    on, export ``battery_ok``) as if they were read. Say unknown instead."""
    fleet = getattr(client, "fleet", None)
    get_info = getattr(fleet, "get_site_info", None)
    if not callable(get_info):
        return None
    info, why = _call(get_info, force=force)
    if why:
        return f"site info unreadable ({why})"
    if not isinstance(info, dict) or not info.get("components"):
        return ("the site info has no 'components': pypowerwall would report its defaults "
                "(grid charging on, export battery_ok), not the site's settings")
    return None
