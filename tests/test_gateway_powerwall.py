"""PowerwallGateway through the REAL pypowerwall 0.22 client.

Reads go end to end: pypowerwall's local client logs in to :class:`FakeGateway`, a fake of
the gateway's HTTPS API on 127.0.0.1. Control goes through pypowerwall's FleetAPI and
Owner-API clients with only their transports stubbed (:class:`FakeTeslaCloud`), as
pypowerwall's own unit tests stub at the lowest seam. Our adapter is never mocked.

Units: power W (battery + discharging, grid + importing), counters Wh, SOC and reserve app %
unless a name says raw (the local gateway reports raw = app × 0.95 + 5).
"""

from __future__ import annotations

import logging
import stat

import pytest

from adapters.gateway.base import Gateway
from adapters.gateway.powerwall import PowerwallGateway
from optimizer.behaviour import ExportRule, Mode, Settings
from optimizer.errors import InputError
from tests.fake_gateway import FakeGateway, FakeTeslaCloud, app_to_raw

PASSWORD = "S3cret"

# pypowerwall turns TLS verification off for gateways (self-signed certificates)
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


class FakeClock:
    """Virtual time: sleep() advances now() instantly and is recorded."""

    def __init__(self) -> None:
        self.t = 1_750_000_000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def gateway():
    with FakeGateway() as fake:
        yield fake


@pytest.fixture
def authpath(tmp_path):
    path = tmp_path / "auth"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "gw_password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def cloud():
    return FakeTeslaCloud()


@pytest.fixture
def make(gateway, authpath, password_file, clock):
    """A PowerwallGateway on the fakes; keyword arguments override the defaults."""
    made = []

    def build(**kw) -> PowerwallGateway:
        args = {"host": gateway.host, "mode": "none", "authpath": str(authpath),
                "password_file": str(password_file), "clock": clock, "timeout_s": 1.0,
                "cache_s": 0.0,
                "verify_delay_s": 5.0, "verify_attempts": 3, "write_attempts": 2,
                "effect_wait_s": 60.0, "effect_poll_s": 15.0}
        args.update(kw)
        gw = PowerwallGateway(**args)
        made.append(gw)
        return gw

    yield build
    for gw in made:
        gw.close()


@pytest.fixture
def fleet(make, cloud, monkeypatch, authpath):
    """Control (and reads) over pypowerwall's FleetAPI client, transport stubbed."""
    cloud.install_fleetapi(monkeypatch, authpath)
    return make(mode="fleetapi", host="", password_file="")


# --------------------------------------------------------------------------------------
# reads, end to end over the local API


def test_read_gives_app_soc_flows_counters_and_settings_from_the_local_api(
        make, gateway, cloud, monkeypatch, authpath):
    """SOC app % from raw soe; flows W; counters Wh; mode and reserve (app %) from the
    local /api/operation; grid charging and export rule from the FleetAPI connection."""
    cloud.install_fleetapi(monkeypatch, authpath)
    cloud.site.grid_charging, cloud.site.export_rule = True, "battery_ok"
    s = gateway.state
    s.soe_raw = 52.5  # raw % → (52.5 − 5) / 0.95 = 50 app %
    s.site_w, s.solar_w, s.battery_w, s.load_w = -900.0, 4200.0, -1500.0, 1800.0
    s.backup_reserve_raw = app_to_raw(30.0)
    gw = make(mode="fleetapi")

    state = gw.read()

    assert isinstance(gw, Gateway)
    assert state.source == "local"
    assert state.ok and state.unknown == {}
    assert state.soc_percent == pytest.approx(50.0)
    assert (state.grid_w, state.solar_w, state.battery_w, state.home_w) == \
        (-900.0, 4200.0, -1500.0, 1800.0)
    assert state.grid_status == "up"
    assert state.grid_import_wh == s.site_imported_wh
    assert state.grid_export_wh == s.site_exported_wh
    assert state.solar_wh == s.solar_exported_wh
    assert state.home_wh == s.load_imported_wh
    assert state.battery_import_wh == s.battery_imported_wh
    assert state.battery_export_wh == s.battery_exported_wh
    assert state.settings.mode is Mode.SELF_POWERED
    assert state.settings.reserve_percent == pytest.approx(30.0)
    assert state.settings.grid_charging is True
    assert state.settings.export_rule is ExportRule.BATTERY_OK
    assert gateway.logins == 1


@pytest.mark.parametrize(("raw", "app"), [(5.0, 0.0), (24.0, 20.0), (100.0, 100.0)])
def test_local_soc_is_reported_on_the_app_scale(make, gateway, raw, app):
    """The gateway's raw soe % becomes app % = (raw − 5) / 0.95."""
    gateway.state.soe_raw = raw
    assert make().read().soc_percent == pytest.approx(app)


def test_all_zero_aggregates_are_unknown_not_zero(make, gateway):
    """power() gives 0 W everywhere when data is missing: 0 W flows and 0 Wh counters
    are reported as unknown, with the reason."""
    gateway.state.zero_aggregates()
    state = make().read()
    for name in ("grid_w", "solar_w", "battery_w", "home_w"):
        assert getattr(state, name) is None
        assert "0 W" in state.unknown[name]
    assert state.grid_import_wh is None and "0 Wh" in state.unknown["grid_import_wh"]
    assert not state.ok
    assert state.soc_percent == pytest.approx(50.0)  # the rest of the read stands


@pytest.mark.parametrize("kind", ["500", "503", "404", "garbage", "html", "empty", "timeout"])
def test_failed_aggregates_make_flows_and_counters_unknown(make, gateway, kind):
    """Every way /api/meters/aggregates can fail is unknown (None), never 0 W."""
    gateway.stall_s = 0.6  # > timeout_s
    gateway.fail("/api/meters/aggregates", kind)
    state = make(timeout_s=0.3).read()
    for name in ("grid_w", "solar_w", "battery_w", "home_w", "grid_import_wh", "solar_wh"):
        assert getattr(state, name) is None, name
        assert state.unknown[name]
    assert state.soc_percent == pytest.approx(50.0)
    assert state.grid_status == "up"


@pytest.mark.parametrize("kind", ["500", "garbage", "timeout"])
def test_failed_soe_makes_soc_unknown_not_zero(make, gateway, kind):
    """A failed /api/system_status/soe read is an unknown SOC, never 0 %."""
    gateway.stall_s = 0.6  # > timeout_s
    gateway.fail("/api/system_status/soe", kind)
    state = make(timeout_s=0.3).read()
    assert state.soc_percent is None
    assert "soe" in state.unknown["soc_percent"]
    assert state.battery_w == gateway.state.battery_w


@pytest.mark.parametrize(("status", "expected"), [
    ("SystemGridConnected", "up"), ("SystemIslandedActive", "down"),
    ("SystemTransitionToGrid", None)])
def test_grid_status_maps_up_down_and_syncing_is_unknown(make, gateway, status, expected):
    """The gateway's grid_status strings become "up" / "down"; a transition is unknown."""
    gateway.state.grid_status = status
    state = make().read()
    assert state.grid_status == expected
    if expected is None:
        assert "SYNCING" in state.unknown["grid_status"]


def test_failed_operation_read_makes_mode_and_reserve_unknown(make, gateway):
    """A failed /api/operation read: mode and reserve (app %) unknown, not 0 %."""
    gateway.fail("/api/operation", "500")
    state = make().read()
    assert state.settings.mode is None and state.settings.reserve_percent is None
    assert state.unknown["settings.mode"] and state.unknown["settings.reserve_percent"]
    assert state.ok  # SOC and flows still read


def test_read_only_mode_cannot_see_grid_charging_or_export_rule(make):
    """The local customer API has no grid-charging/export settings: unknown, with why."""
    state = make(mode="none").read()
    assert state.settings.mode is Mode.SELF_POWERED
    assert state.settings.reserve_percent == pytest.approx(20.0)
    assert state.settings.grid_charging is None and state.settings.export_rule is None
    assert "mode = none" in state.unknown["settings.grid_charging"]


def test_expired_session_logs_in_again_transparently(make, gateway):
    """A 401 on a read makes pypowerwall log in again; SOC 70 app % is read."""
    gw = make()
    assert gw.read().ok
    gateway.expire_sessions()
    gateway.state.set_soc_app(70.0)
    state = gw.read()
    assert state.ok and state.soc_percent == pytest.approx(70.0)
    assert gateway.logins == 2


def test_gateway_down_before_connecting_gives_unknowns_not_an_exception(make, gateway):
    """No gateway at all: every field None with a reason naming the host to check."""
    gw = make()
    gateway.stop()
    state = gw.read()
    assert state.source == "local"
    assert state.soc_percent is None and state.battery_w is None and not state.ok
    assert all(v is None for v in (state.solar_w, state.grid_w, state.grid_status,
                                   state.settings.mode))
    assert "host" in state.unknown["soc_percent"]  # the fix names the host to check
    with pytest.raises(InputError, match="LAN address"):
        gw.connect()


def test_gateway_down_after_connecting_gives_unknowns_not_an_exception(make, gateway):
    """The gateway drops off after a good read: SOC, flows (W), grid, reserve unknown."""
    gw = make()
    assert gw.read().ok
    gateway.stop()
    state = gw.read()
    assert state.soc_percent is None and state.battery_w is None
    assert state.grid_status is None and state.settings.reserve_percent is None


def test_failed_connection_is_retried_after_the_interval_not_on_every_read(
        make, gateway, clock):
    """A gateway answering 500 to all but the login is retried after 60 s, not each read."""
    gateway.fail("*", "500")
    gw = make(reconnect_interval_s=60.0)
    assert gw.read().soc_percent is None
    gateway.heal()
    clock.t += 30.0
    assert gw.read().soc_percent is None  # the cached failure, no new login attempt
    clock.t += 31.0
    assert gw.read().soc_percent == pytest.approx(50.0)


def test_wrong_password_names_the_password_file(make, password_file):
    """The gateway refuses the login: the reason names the password file, never the
    password."""
    password_file.write_text("not-it\n")
    gw = make()
    state = gw.read()
    assert state.soc_percent is None
    assert "refused the customer password" in state.unknown["soc_percent"]
    with pytest.raises(InputError) as err:
        gw.connect()
    assert str(password_file) in str(err.value)
    assert "not-it" not in str(err.value)


def test_missing_password_file_says_which_path(make, tmp_path):
    missing = tmp_path / "nope" / "gw_password"
    gw = make(password_file=str(missing))
    with pytest.raises(InputError, match="does not exist") as err:
        gw.connect()
    assert str(missing) in str(err.value)
    assert "does not exist" in gw.read().unknown["battery_w"]


def test_world_readable_password_file_is_warned_and_never_logged(
        make, password_file, caplog):
    password_file.chmod(0o644)
    caplog.set_level(logging.DEBUG)
    gw = make()
    assert gw.read().ok
    assert any("readable by every user" in w and "chmod 600" in w for w in gw.warnings)
    assert "readable by every user" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in repr(gw)


def test_private_password_file_gives_no_warning(make):
    gw = make()
    assert gw.read().ok
    assert gw.warnings == []


def test_the_local_login_is_never_used_to_write(make, gateway, clock):
    """Read-only mode refuses writes with the fix; nothing is posted to the gateway."""
    gw = make(mode="none")
    result = gw.apply(Settings(Mode.BACKUP, 60.0, True, ExportRule.NEVER))
    assert not result.ok and result.applied is None and result.written == ()
    assert "read-only" in result.errors[0] and "mode = fleetapi" in result.errors[0]
    assert gateway.count("/api/operation", "POST") == 0
    assert gateway.count("/api/login/Basic", "POST") == 0  # not even a connection


# --------------------------------------------------------------------------------------
# the gateway's TLS certificate, pinned on first use


def _sha256(pem: bytes) -> str:
    """The certificate's SHA-256 fingerprint, lowercase hex (computed apart from trueup)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def _hex(text: str) -> str:
    return text.strip().replace(":", "").lower()


def _replace_gateway(gateway: FakeGateway) -> FakeGateway:
    """Stop ``gateway`` and start another, with a new certificate, at the same host:port."""
    port = gateway.port
    gateway.stop()
    return FakeGateway(port=port).start()


@pytest.fixture
def pin(authpath):
    return authpath / "gateway-cert.sha256"


def test_first_connection_pins_the_gateways_certificate(make, gateway, pin):
    """The first successful connection writes the SHA-256 of the certificate the gateway
    serves to <authpath>/gateway-cert.sha256, mode 0600; later connections accept it."""
    assert not pin.exists()
    gw = make()
    assert gw.read().ok
    assert stat.S_IMODE(pin.stat().st_mode) == 0o600
    assert _hex(pin.read_text()) == _sha256(gateway.cert_pem)
    gw.close()
    assert make().read().ok  # a restart: the same certificate is accepted
    assert _hex(pin.read_text()) == _sha256(gateway.cert_pem)


def test_pin_file_can_be_set_and_a_refused_login_pins_nothing(make, tmp_path, pin,
                                                               password_file):
    custom = tmp_path / "gw.sha256"
    password_file.write_text("not-it\n")
    assert make(tls_pin_file=str(custom)).read().soc_percent is None
    assert not custom.exists() and not pin.exists()
    password_file.write_text(PASSWORD + "\n")
    assert make(tls_pin_file=str(custom)).read().ok
    assert custom.exists() and not pin.exists()


def test_a_new_certificate_is_refused_before_any_password_is_sent(
        make, gateway, pin, clock, caplog):
    """Another certificate at host:port: no request at all reaches it, reads are unknown
    with the reason, the error names the pin file and the fix and is logged once."""
    assert make().read().ok
    old = _sha256(gateway.cert_pem)
    impostor = _replace_gateway(gateway)
    try:
        gw = make(host=impostor.host)  # trueup restarts
        caplog.set_level(logging.DEBUG, logger="trueup.gateway.powerwall")
        states = []
        for _ in range(3):  # three reconnect intervals
            states.append(gw.read())
            clock.t += 61.0
        with pytest.raises(InputError) as err:
            gw.connect()
        assert impostor.requests == []
        assert impostor.count("/api/login/Basic", "POST") == 0
    finally:
        impostor.stop()
    for state in states:
        assert not state.ok and state.soc_percent is None and state.battery_w is None
        assert state.grid_import_wh is None and state.settings.reserve_percent is None
        assert "TLS certificate" in state.unknown["soc_percent"]
    message = str(err.value)
    assert old in _hex(message) and _sha256(impostor.cert_pem) in _hex(message)
    assert str(pin) in message and "replaced" in message
    assert f"delete {pin} and restart" in message
    assert _hex(pin.read_text()) == old  # the pin is kept
    logged = [r for r in caplog.records if r.name == "trueup.gateway.powerwall"
              and r.levelno >= logging.ERROR]
    assert len(logged) == 1 and "TLS certificate" in logged[0].getMessage()


def test_an_edited_pin_is_refused_and_the_gateway_gets_nothing(make, gateway, pin):
    """A pin that is not this certificate (here in openssl's format) refuses the
    connection: no login, no request."""
    pin.write_text("sha256 Fingerprint=" + ":".join(["AB"] * 32) + "\n")
    state = make().read()
    assert state.soc_percent is None and "TLS certificate" in state.unknown["soc_percent"]
    assert gateway.requests == []


def test_a_malformed_pin_file_names_the_fix(make, gateway, pin):
    pin.write_text("not a fingerprint\n")
    with pytest.raises(InputError, match="does not hold a SHA-256") as err:
        make().connect()
    assert f"delete {pin}" in str(err.value)
    assert gateway.requests == []


def test_a_certificate_changed_under_an_open_connection_gets_no_request(make, gateway):
    """The gateway is swapped while the link is open: pypowerwall's next requests, and its
    re-login with the password, are refused at the TLS handshake; no data is reported,
    and the next read says why."""
    gw = make()
    assert gw.read().ok
    impostor = _replace_gateway(gateway)
    try:
        first, second = gw.read(), gw.read()
        assert impostor.requests == []
    finally:
        impostor.stop()
    for state in (first, second):
        assert not state.ok and state.soc_percent is None and state.battery_w is None
        assert state.settings.mode is None and state.grid_status is None
    assert "TLS certificate" in second.unknown["soc_percent"]


def test_deleting_the_pin_file_trusts_the_new_certificate(make, gateway, pin, clock):
    """After the fix (delete the pin file), the new gateway is pinned and read."""
    assert make().read().ok
    renewed = _replace_gateway(gateway)
    try:
        gw = make(host=renewed.host)
        assert "TLS certificate" in gw.read().unknown["soc_percent"]
        pin.unlink()
        clock.t += 61.0  # the next connection attempt
        state = gw.read()
        assert state.ok and state.soc_percent == pytest.approx(50.0)
        assert renewed.logins == 1
        assert _hex(pin.read_text()) == _sha256(renewed.cert_pem)
        assert stat.S_IMODE(pin.stat().st_mode) == 0o600
        gw.close()
        assert make(host=renewed.host).read().ok  # and after a restart
    finally:
        renewed.stop()


# --------------------------------------------------------------------------------------
# reads over FleetAPI / cloud (no local password)


def test_fleetapi_reads_have_no_counters_and_report_app_soc(fleet, cloud):
    """FleetAPI's aggregates carry 0 Wh counters: unknown, not 0. SOC app % as is."""
    cloud.site.soc_percent = 63.0
    state = fleet.read()
    assert state.source == "fleetapi"
    assert state.soc_percent == pytest.approx(63.0)
    assert (state.solar_w, state.battery_w, state.home_w, state.grid_w) == \
        (3200.0, -1200.0, 1800.0, -200.0)
    assert state.grid_import_wh is None and "no lifetime counters" in \
        state.unknown["grid_import_wh"]
    assert state.settings.complete() == Settings(Mode.SELF_POWERED, 20.0, False,
                                                 ExportRule.PV_ONLY)


def test_fleetapi_live_status_failure_5_raw_soc_is_unknown_not_zero(fleet, cloud):
    """When the live status fails, pypowerwall's FleetAPI level() is 5.0 raw (0 app %)."""
    cloud.status["live_status"] = 500
    state = fleet.read()
    assert state.soc_percent is None and "5.0 raw" in state.unknown["soc_percent"]
    assert state.battery_w is None and state.grid_status is None
    assert state.settings.mode is Mode.SELF_POWERED  # site_info still answered


def test_grid_charging_attribute_error_is_unknown(make, cloud, monkeypatch, authpath):
    """FleetAPI get_grid_charging()/get_grid_export() raise AttributeError when site info
    fails; with local reads, everything else still reads."""
    cloud.install_fleetapi(monkeypatch, authpath)
    gw = make(mode="fleetapi")
    cloud.status["site_info"] = 500
    state = gw.read()
    assert state.settings.grid_charging is None and state.settings.export_rule is None
    for key in ("settings.grid_charging", "settings.export_rule"):
        why = state.unknown[key]
        assert "AttributeError" in why or "site info" in why
    assert state.ok and state.settings.mode is Mode.SELF_POWERED


def test_site_info_without_components_is_unknown_not_pypowerwalls_defaults(
        make, cloud, monkeypatch, authpath):
    """pypowerwall answers grid charging on / export battery_ok when the site info has no
    components; that is not a reading of the site."""
    cloud.install_fleetapi(monkeypatch, authpath)
    gw = make(mode="fleetapi")
    cloud.site.omit_components = True
    state = gw.read()
    assert state.settings.grid_charging is None and state.settings.export_rule is None
    assert "no 'components'" in state.unknown["settings.grid_charging"]


def test_remote_settings_are_reused_between_local_reads_to_save_billed_requests(
        make, cloud, monkeypatch, authpath, clock):
    cloud.install_fleetapi(monkeypatch, authpath)
    gw = make(mode="fleetapi", remote_settings_ttl_s=600.0)
    gw.read()
    site_info_reads = sum(1 for _, path, _ in cloud.calls if path.endswith("site_info"))
    clock.t += 60.0
    assert gw.read().settings.export_rule is ExportRule.PV_ONLY
    assert sum(1 for _, p, _ in cloud.calls if p.endswith("site_info")) == site_info_reads


def test_cloud_mode_reads_over_the_owner_api(make, cloud, monkeypatch, authpath):
    cloud.install_owner_api(monkeypatch, authpath)
    cloud.site.soc_percent = 81.0
    state = make(mode="cloud", host="", password_file="").read()
    assert state.source == "cloud"
    assert state.soc_percent == pytest.approx(81.0)
    assert state.battery_w == -1200.0 and state.grid_import_wh is None
    assert state.settings.export_rule is ExportRule.PV_ONLY


# --------------------------------------------------------------------------------------
# connection failures name the fix


def test_fleetapi_auth_failure_names_the_setup_command(fleet, cloud, clock):
    cloud.status.update(products=401, token=401)
    state = fleet.read()
    assert state.soc_percent is None
    assert "python -m pypowerwall setup -fleetapi" in state.unknown["soc_percent"]
    result = fleet.apply(Settings(Mode.BACKUP, 60.0, True, ExportRule.NEVER))
    assert "python -m pypowerwall setup -fleetapi" in result.errors[0]
    assert not cloud.writes()
    clock.t += 3600
    with pytest.raises(InputError, match="setup -fleetapi"):
        fleet.connect()


def test_missing_fleetapi_token_file_names_the_setup_command(make, authpath):
    gw = make(mode="fleetapi", host="", password_file="")
    with pytest.raises(InputError) as err:
        gw.connect()
    assert f"setup -fleetapi -authpath {authpath}" in str(err.value)
    assert ".pypowerwall.fleetapi" in str(err.value)


def test_world_readable_fleetapi_token_file_is_warned(make, cloud, monkeypatch, authpath):
    config = cloud.install_fleetapi(monkeypatch, authpath)
    config.chmod(0o644)
    gw = make(mode="fleetapi", host="", password_file="")
    assert gw.read().ok
    assert any(str(config) in w and "chmod 600" in w for w in gw.warnings)


def test_v1r_without_a_registered_key_names_the_setup_command(make, authpath):
    gw = make(mode="v1r")
    with pytest.raises(InputError, match="setup -v1r"):
        gw.connect()


def test_bad_configuration_is_refused_at_construction(authpath):
    with pytest.raises(InputError, match="mode"):
        PowerwallGateway(host="h", mode="local", authpath=str(authpath), password_file="p")
    with pytest.raises(InputError, match="read-only"):
        PowerwallGateway(host="", mode="none", authpath=str(authpath), password_file="")


def test_construction_does_no_io(authpath, tmp_path, monkeypatch):
    """pypowerwall connects in its constructor; we build its client only on first use."""
    import pypowerwall

    def no(*args, **kwargs):
        raise AssertionError("pypowerwall.Powerwall built at construction")

    monkeypatch.setattr(pypowerwall, "Powerwall", no)
    gw = PowerwallGateway(host="192.0.2.1", mode="fleetapi", authpath=str(authpath),
                          password_file=str(tmp_path / "absent"))
    assert gw.source == "local" and gw.name == "powerwall"


# --------------------------------------------------------------------------------------
# control, over FleetAPI with the transport stubbed


def test_no_change_means_no_write(fleet, cloud):
    """Settings equal to what FleetAPI reports (reserve 20 app %): nothing is sent."""
    result = fleet.apply(Settings(Mode.SELF_POWERED, 20.0, False, ExportRule.PV_ONLY))
    assert result.ok and result.skipped and "no change" in result.skipped
    assert result.applied is None and result.written == ()
    assert cloud.writes() == []


def test_reserve_and_mode_are_separate_verified_writes(fleet, cloud, clock):
    """Reserve 60 app % and Backup: two POSTs, each read back, then the battery is seen
    charging (battery_w < 0 W)."""
    result = fleet.apply(Settings(Mode.BACKUP, 60.0, False, ExportRule.PV_ONLY))
    assert result.ok and result.verified, result
    assert result.written == ("reserve_percent", "mode")
    assert cloud.writes() == [("backup", {"backup_reserve_percent": 60.0}),
                              ("operation", {"default_real_mode": "backup"})]
    assert (cloud.site.reserve_percent, cloud.site.mode) == (60, "backup")
    assert any("seen acting" in n for n in result.notes)
    assert sum(clock.slept) < 60.0  # instant in real time; short in virtual time


def test_only_differing_fields_are_written(fleet, cloud):
    """Only grid charging differs: one grid_import_export POST, nothing else."""
    result = fleet.apply(Settings(Mode.SELF_POWERED, 20.0, True, ExportRule.PV_ONLY))
    assert result.ok and result.written == ("grid_charging",)
    assert cloud.writes() == [("grid_import_export",
                               {"disallow_charge_from_grid_with_solar_installed": False})]
    assert fleet.fields_to_write(Settings(Mode.SELF_POWERED, 20.0, True,
                                          ExportRule.NEVER)) == 1


def test_fields_to_write_counts_what_apply_would_write(fleet):
    """The count the safety rails budget against (FleetAPI bills per command)."""
    assert fleet.fields_to_write(Settings(Mode.BACKUP, 60.0, True, ExportRule.NEVER)) == 4
    assert fleet.fields_to_write(Settings(Mode.SELF_POWERED, 20.0, False,
                                          ExportRule.PV_ONLY)) == 0


def test_write_reported_done_but_not_applied_is_an_error_after_bounded_retries(
        fleet, cloud, clock):
    """The cloud reserve write that answers 'Updated' and changes nothing (DOMAIN §4)."""
    cloud.ignore.add("reserve")
    result = fleet.apply(Settings(Mode.BACKUP, 60.0, False, ExportRule.PV_ONLY))
    assert not result.ok and not result.verified
    assert len(result.errors) == 1
    assert "backup reserve 60 %" in result.errors[0]
    assert "not applied" in result.errors[0] and "20 %" in result.errors[0]
    # bounded: write_attempts = 2 sends, 3 read-backs each at 5, 10, 20 s
    assert [w for w in cloud.writes() if w[0] == "backup"] == \
        [("backup", {"backup_reserve_percent": 60.0})] * 2
    assert clock.slept == [5.0, 10.0, 20.0] * 2
    assert ("operation", {"default_real_mode": "backup"}) not in cloud.writes()
    assert any("not attempted" in n and "operation mode" in n for n in result.notes)


def test_write_applied_on_the_second_send_is_verified(fleet, cloud, monkeypatch):
    """The first reserve write is lost, the re-send sticks: verified, with a note."""
    from pypowerwall.fleetapi.fleetapi import FleetAPI

    cloud.ignore.add("reserve")
    real = FleetAPI.set_battery_reserve
    sends = []

    def flaky(self, reserve):
        sends.append(reserve)
        if len(sends) == 2:
            cloud.ignore.discard("reserve")
        return real(self, reserve)

    monkeypatch.setattr(FleetAPI, "set_battery_reserve", flaky)
    result = fleet.apply(Settings(Mode.SELF_POWERED, 60.0, False, ExportRule.PV_ONLY))
    assert result.ok and result.written == ("reserve_percent",) and len(sends) == 2
    assert any("sending again" in n for n in result.notes)


def test_reserve_read_back_but_battery_not_charging_is_an_error(fleet, cloud):
    """Reserve 80 app % above SOC 50 % must make the battery charge within the wait."""
    cloud.physics = False
    cloud.site.battery_w = 400.0  # discharging, and stays so
    result = fleet.apply(Settings(Mode.SELF_POWERED, 80.0, False, ExportRule.PV_ONLY))
    assert result.written == ("reserve_percent",) and not result.verified
    assert "did not start charging" in result.errors[0]
    assert "+400 W" in result.errors[0]


def test_effect_is_not_judged_while_the_grid_is_down(fleet, cloud):
    """Off grid, Backup cannot charge from the grid: no effect error, a note instead."""
    cloud.physics = False
    cloud.site.grid_status, cloud.site.island_status = "Inactive", "off_grid"
    result = fleet.apply(Settings(Mode.BACKUP, 20.0, False, ExportRule.PV_ONLY))
    assert result.ok and result.written == ("mode",)
    assert any("the grid is down" in n for n in result.notes)


def test_export_intent_is_seen_as_battery_discharge(fleet, cloud):
    """Time-Based Control + battery_ok above the reserve: battery_w > 0 W is seen."""
    result = fleet.apply(Settings(Mode.TIME_BASED, 20.0, False, ExportRule.BATTERY_OK))
    assert result.ok and result.written == ("mode", "export_rule")
    assert any("seen acting: battery +5000 W" in n for n in result.notes)


def test_export_not_yet_seen_under_time_based_control_is_a_note_not_an_error(fleet, cloud):
    """TBC can take 15–45 min to act (DOMAIN §3): not seeing export in the wait is noted."""
    cloud.physics = False
    result = fleet.apply(Settings(Mode.TIME_BASED, 20.0, False, ExportRule.BATTERY_OK))
    assert result.ok and result.verified
    assert any("15–45 minutes" in n for n in result.notes)


def test_failed_write_is_an_error_naming_the_field(fleet, cloud):
    """FleetAPI answers HTTP 500 to the reserve POST (pypowerwall returns None)."""
    cloud.status["backup"] = 500
    result = fleet.apply(Settings(Mode.SELF_POWERED, 30.0, False, ExportRule.PV_ONLY))
    assert not result.ok and result.written == ()
    assert "backup reserve 30 %" in result.errors[0] and "2 time(s)" in result.errors[0]
    assert cloud.site.reserve_percent == 20


def test_set_grid_export_value_error_is_a_clear_error(fleet, cloud, monkeypatch):
    """pypowerwall raises ValueError for an export rule it does not take: one clear
    error, no retry, nothing sent."""
    from pypowerwall.fleetapi.pypowerwall_fleetapi import PyPowerwallFleetAPI

    def refuse(self, mode):
        raise ValueError(f"Invalid value for parameter 'mode': {mode}")

    monkeypatch.setattr(PyPowerwallFleetAPI, "set_grid_export", refuse)
    result = fleet.apply(Settings(Mode.SELF_POWERED, 20.0, False, ExportRule.NEVER))
    assert not result.ok and result.written == ()
    assert "export rule never" in result.errors[0]
    assert "ValueError" in result.errors[0]
    assert "battery_ok, pv_only, never" in result.errors[0]
    assert cloud.writes() == []


@pytest.mark.parametrize("reserve", [0.0, 85.0, 99.0])
def test_reserve_outside_the_80_100_rule_is_refused(fleet, cloud, reserve):
    """Reserve (app %) must be 1–80 or 100 (DOMAIN §3); refused before any request."""
    result = fleet.apply(Settings(Mode.SELF_POWERED, reserve, False, ExportRule.PV_ONLY))
    assert not result.ok and result.applied is None
    assert "80/100 rule" in result.errors[0]
    assert cloud.calls == []  # refused before connecting


def test_fractional_reserve_is_sent_as_whole_percent(fleet, cloud):
    """35.4 app % is sent as 35 (Tesla takes whole percent), so it reads back equal."""
    result = fleet.apply(Settings(Mode.SELF_POWERED, 35.4, False, ExportRule.PV_ONLY))
    assert result.ok and result.applied.reserve_percent == 35.0
    assert cloud.writes() == [("backup", {"backup_reserve_percent": 35.0})]


def test_unreadable_current_settings_mean_no_blind_write(fleet, cloud):
    """FleetAPI site info fails: the current settings are unknown, so nothing is sent."""
    cloud.status["site_info"] = 500
    result = fleet.apply(Settings(Mode.BACKUP, 60.0, True, ExportRule.NEVER))
    assert not result.ok and result.applied is None
    assert "could not read the current settings" in result.errors[0]
    assert cloud.writes() == []


# --------------------------------------------------------------------------------------
# control over the Owner API (cloud mode)


@pytest.fixture
def owner(make, cloud, monkeypatch, authpath):
    """Control (and reads) over pypowerwall's cloud client, teslapy's transport stubbed."""
    cloud.install_owner_api(monkeypatch, authpath)
    return make(mode="cloud", host="", password_file="")


def test_cloud_error_answer_is_an_error_not_a_success(owner, cloud):
    """pypowerwall's cloud backend answers a failed command with {'error': ...}: truthy,
    and still a failure."""
    cloud.command_code = 500
    result = owner.apply(Settings(Mode.SELF_POWERED, 40.0, False, ExportRule.PV_ONLY))
    assert not result.ok and result.written == ()
    assert "backup reserve 40 %" in result.errors[0] and "'error'" in result.errors[0]
    assert cloud.site.reserve_percent == 20


def test_cloud_writes_are_verified_and_seen_acting(owner, cloud):
    """Owner API: reserve 60 app % above SOC 50 %, then battery −1800 W (charging)."""
    result = owner.apply(Settings(Mode.SELF_POWERED, 60.0, True, ExportRule.BATTERY_OK))
    assert result.ok and result.verified, result
    assert result.written == ("reserve_percent", "grid_charging", "export_rule")
    assert (cloud.site.reserve_percent, cloud.site.grid_charging, cloud.site.export_rule) \
        == (60, True, "battery_ok")
    assert any("seen acting: battery -1800 W" in n for n in result.notes)


def test_cloud_login_missing_names_the_setup_command(make, authpath):
    """No .pypowerwall.auth: local reads work, the cloud-only settings name the fix."""
    gw = make(mode="cloud")
    state = gw.read()  # local reads still work
    assert state.ok
    assert "python -m pypowerwall setup -authpath" in state.unknown["settings.grid_charging"]
    assert ".pypowerwall.auth" in state.unknown["settings.export_rule"]
