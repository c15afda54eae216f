"""`trueup gateway setup` and `trueup status`, end to end through main(argv).

The gateway is tests/fake_gateway.py's fake of its local HTTPS API on 127.0.0.1, read by the
real pypowerwall client; the cloud paths are pypowerwall's FleetAPI and Owner-API clients
with only their transports stubbed (FakeTeslaCloud). The fake speaks no TEDAPI protobuf:
tedapi and v1r connect to it (Wi-Fi password, v1r login, DIN) and then read nothing, so for
those modes the tests check the written [gateway], the connection and the failure messages,
not a reading.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
from pathlib import Path

import pytest

from tests.fake_gateway import FakeGateway, FakeTeslaCloud
from trueup.cli import main
from trueup.config import EXAMPLE_CONFIG, load_config

PASSWORD = "S3cret"  # the fake gateway's customer password
WIFI = "QRSTICKER1"  # its Wi-Fi password (QR sticker)

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

MINE = """\
# my home: every byte outside [gateway] must survive
tariff = "pge-ev2a-nem2ps-2024"   # keep this comment

[site]
latitude = 38.5    # Davis
longitude = -121.7
timezone = "America/Los_Angeles"

[battery]
units = 2
usable_kwh = 27.0
backup_floor_percent = 35   # my floor

[[pv]]
kw_dc = 9.6
tilt = 20
azimuth = 190

[gateway]                         # how trueup reaches the Powerwall
kind = "simulated"                # simulated | powerwall
mode = "fleetapi"   # will change

[safety]
kill_switch = false   # not touched
"""


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                "all_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        # a CA bundle in the environment overrides pypowerwall's verify=False (requests)
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def gateway():
    with FakeGateway() as fake:
        yield fake


@pytest.fixture
def home(tmp_path):
    """A folder with my trueup.toml, an auth folder and the customer password file."""
    (tmp_path / "trueup.toml").write_text(MINE)
    (tmp_path / "auth").mkdir(mode=0o700)
    pw = tmp_path / "gw_password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    return tmp_path


def setup(home: Path, *args: str) -> int:
    return main(["gateway", "setup", "--config", str(home / "trueup.toml"), "--authpath",
                 str(home / "auth"), *args])


def outside_gateway(text: str) -> tuple[str, str]:
    """The text before [gateway] and from the next table on."""
    start = text.index("[gateway]")
    end = text.index("\n[safety]")
    return text[:start], text[end:]


def assert_rest_kept(home: Path) -> None:
    new = (home / "trueup.toml").read_text()
    assert outside_gateway(new) == outside_gateway(MINE)
    assert (home / "trueup.toml.bak").read_text() == MINE
    assert "[gateway]                         # how trueup reaches the Powerwall" in new
    assert re.search(r'^kind = "powerwall" +# simulated \| powerwall$', new, re.M)


def rsa_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


# --------------------------------------------------------------------------------------
# each mode, non-interactively


def test_local_setup_writes_gateway_that_status_reads(home, gateway, capsys):
    gateway.state.set_soc_app(64.0)
    assert setup(home, "--mode", "local", "--host", gateway.host, "--password-file",
                 str(home / "gw_password"), "--yes") == 0
    out = capsys.readouterr().out
    assert "answered by: the gateway's local API at " + gateway.host in out
    assert "battery   64.0 %" in out and "firmware  25.10.1" in out
    assert "grid up" in out and "reserve 20 %" in out
    assert_rest_kept(home)
    cfg = load_config(home / "trueup.toml")
    g = cfg.gateway
    assert (g.kind, g.mode, g.host) == ("powerwall", "none", gateway.host)
    assert g.password_file == str(home / "gw_password")
    assert cfg.battery.usable_kwh == 27.0  # the rest of my configuration is read as before

    assert main(["status", "--config", str(home / "trueup.toml")]) == 0
    captured = capsys.readouterr()
    assert "answered by: the gateway's local API" in captured.out
    assert captured.err == ""
    assert gateway.count("/api/operation", "POST") == 0  # read-only: nothing written


def test_fleetapi_setup_uses_pypowerwalls_configuration(home, monkeypatch, capsys):
    cloud = FakeTeslaCloud()
    cloud.install_fleetapi(monkeypatch, home / "auth")
    cloud.site.soc_percent = 71.0
    assert setup(home, "--mode", "fleetapi", "--yes") == 0
    assert "answered by: Tesla's Fleet API" in capsys.readouterr().out
    g = load_config(home / "trueup.toml").gateway
    assert (g.mode, g.host, g.password_file) == ("fleetapi", "", "")
    assert_rest_kept(home)
    assert main(["status", "--config", str(home / "trueup.toml")]) == 0
    captured = capsys.readouterr()
    assert "battery   71.0 %" in captured.out and "no lifetime energy counters" in captured.out
    assert captured.err == ""
    assert cloud.writes() == []  # read-only


def test_cloud_setup_with_local_reads(home, gateway, monkeypatch, capsys):
    cloud = FakeTeslaCloud()
    cloud.install_owner_api(monkeypatch, home / "auth", email="owner@example.com")
    cloud.site.export_rule = "battery_ok"
    assert setup(home, "--mode", "cloud", "--email", "owner@example.com", "--host",
                 gateway.host, "--password-file", str(home / "gw_password"), "--yes") == 0
    out = capsys.readouterr().out
    assert ("answered by: the gateway's local API at " + gateway.host
            + ", the Tesla cloud (Owner API)") in out
    assert "export battery_ok" in out
    g = load_config(home / "trueup.toml").gateway
    assert (g.mode, g.host) == ("cloud", gateway.host)
    assert main(["status", "--config", str(home / "trueup.toml")]) == 0
    assert cloud.writes() == [] and gateway.count("/api/operation", "POST") == 0


def test_cloud_setup_without_a_login_names_pypowerwalls_setup(home, capsys):
    assert setup(home, "--mode", "cloud", "--email", "owner@example.com", "--yes") == 2
    err = capsys.readouterr().err
    auth = home / "auth"
    assert f"python -m pypowerwall setup -email owner@example.com -authpath {auth}" in err
    assert (home / "trueup.toml").read_text() == MINE


@pytest.mark.parametrize("mode", ["v1r", "tedapi"])
def test_tedapi_and_v1r_setup_write_a_gateway_that_status_tries(home, gateway, capsys, mode):
    """The fake answers the v1r login and TEDAPI's DIN but no protobuf query: the section is
    written with --write-anyway, loads, and status names what did not answer."""
    if mode == "v1r":
        rsa_key(home / "auth" / "tedapi_rsa_private.pem")
        args = ["--host", gateway.host, "--password-file", str(home / "gw_password")]
    else:
        wifi = home / "wifi"
        wifi.write_text(WIFI + "\n")
        wifi.chmod(0o600)
        args = ["--host", gateway.host, "--gw-pwd-file", str(wifi)]
    assert setup(home, "--mode", mode, *args, "--yes", "--write-anyway") == 1
    g = load_config(home / "trueup.toml").gateway
    assert (g.kind, g.mode, g.host) == ("powerwall", mode, gateway.host)
    assert_rest_kept(home)
    capsys.readouterr()
    assert main(["status", "--config", str(home / "trueup.toml")]) == 1
    err = capsys.readouterr().err
    accepted = "customer password" if mode == "v1r" else "Wi-Fi password"
    assert f"accepted the {accepted} but answered no" in err
    assert err.count("error:") == 1
    assert ("/api/login/Basic" if mode == "v1r" else "/tedapi/din") in \
        [p for _, p in gateway.requests]


def test_a_missing_trueup_toml_is_made_from_the_example(tmp_path, gateway, capsys):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    cfg = tmp_path / "new" / "trueup.toml"
    cfg.parent.mkdir()
    assert main(["gateway", "setup", "--config", str(cfg), "--authpath", str(tmp_path / "a"),
                 "--mode", "local", "--host", gateway.host, "--password-file", str(pw),
                 "--yes"]) == 0
    assert "Created" in capsys.readouterr().out
    assert load_config(cfg).gateway.host == gateway.host
    before, after = outside_gateway(EXAMPLE_CONFIG.read_text())
    assert outside_gateway(cfg.read_text()) == (before, after)
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600


def test_yes_without_a_needed_flag_names_it(home, capsys):
    assert setup(home, "--mode", "local", "--yes") == 2
    err = capsys.readouterr().err
    assert "--host" in err and "leave --yes out" in err


# --------------------------------------------------------------------------------------
# interactive


def test_interactive_setup_asks_and_keeps_the_typed_password_in_a_0600_file(
        home, gateway, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    auth = home / "auth"
    answers = iter(["1",  # mode: local
                    str(auth),  # the folder for login files
                    gateway.host,  # the gateway's IP address
                    ""])  # the password file: the default, <auth>/gw_password
    asked: list[str] = []

    def fake_input(prompt=""):
        asked.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", fake_input)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": PASSWORD)
    assert main(["gateway", "setup", "--config", str(home / "trueup.toml")]) == 0
    assert len(asked) == 4 and "Mode" in asked[0] and "IP address" in asked[2]
    secret = auth / "gw_password"
    assert secret.read_text() == PASSWORD + "\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    captured = capsys.readouterr()
    assert "answered by: the gateway's local API" in captured.out
    text = (home / "trueup.toml").read_text()
    for where in (text, captured.out, captured.err, caplog.text):
        assert PASSWORD not in where
    assert load_config(home / "trueup.toml").gateway.password_file == str(secret)
    assert_rest_kept(home)


def test_interactive_fleetapi_runs_pypowerwalls_setup_saying_what_it_asks(
        home, monkeypatch, capsys):
    cloud = FakeTeslaCloud()
    ran: list[list[str]] = []

    def fake_pypowerwall(argv):  # what `python -m pypowerwall setup -fleetapi` leaves
        ran.append(argv)
        cloud.install_fleetapi(monkeypatch, home / "auth")
        return 0

    monkeypatch.setattr("trueup.gateway_setup.run_pypowerwall", fake_pypowerwall)
    answers = iter(["fleetapi", str(home / "auth"), "y", "n"])  # run it; no local reads
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["gateway", "setup", "--config", str(home / "trueup.toml")]) == 0
    assert ran == [["setup", "-fleetapi", "-authpath", str(home / "auth")]]
    out = capsys.readouterr().out
    assert "python -m pypowerwall setup -fleetapi -authpath" in out
    assert "Client ID" in out and "paste the code" in out
    assert "answered by: Tesla's Fleet API" in out
    assert load_config(home / "trueup.toml").gateway.mode == "fleetapi"


# --------------------------------------------------------------------------------------
# failures: one message each, naming what to fix


def test_a_wrong_password_is_one_message_naming_the_password(home, gateway, capsys):
    (home / "gw_password").write_text("not-it\n")
    assert setup(home, "--mode", "local", "--host", gateway.host, "--password-file",
                 str(home / "gw_password"), "--yes") == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("refused the customer password") == 1
    assert captured.err.count("error:") == 1
    assert "try: put the gateway's customer password" in captured.err
    assert str(home / "gw_password") in captured.err and "not-it" not in text
    assert (home / "trueup.toml").read_text() == MINE  # not written
    assert not (home / "trueup.toml.bak").exists()


def test_an_unreachable_host_is_one_message_naming_the_host(home, capsys):
    with FakeGateway() as fake:
        host = fake.host
    assert setup(home, "--mode", "local", "--host", host, "--password-file",
                 str(home / "gw_password"), "--yes") == 1
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("did not answer") == 1
    assert f"the gateway at {host} did not answer: connection refused" in captured.err
    assert f"[gateway] host = '{host}' is the gateway's LAN address" in captured.err
    assert "Nothing answered" in captured.out


def test_v1r_refused_login_names_the_customer_password_not_the_host(home, gateway, capsys):
    rsa_key(home / "auth" / "tedapi_rsa_private.pem")
    (home / "gw_password").write_text("not-it\n")
    assert setup(home, "--mode", "v1r", "--host", gateway.host, "--password-file",
                 str(home / "gw_password"), "--yes") == 1
    err = capsys.readouterr().err
    assert "refused the customer password (v1r login answered HTTP 401)" in err
    assert f"password_file = {home / 'gw_password'}" in err
    assert "LAN address" not in err and err.count("error:") == 1


def test_tedapi_refused_wifi_password_names_the_wifi_password_file(home, gateway, capsys):
    wifi = home / "wifi"
    wifi.write_text("wrong\n")
    assert setup(home, "--mode", "tedapi", "--host", gateway.host, "--gw-pwd-file", str(wifi),
                 "--yes") == 1
    err = capsys.readouterr().err
    assert "refused the Wi-Fi password" in err and f"gw_pwd_file = {wifi}" in err
    assert "QR sticker" in err and err.count("error:") == 1


def test_status_prints_each_failure_once(tmp_path, capsys):
    """An address where nothing answers: one error on stderr (it used to repeat the same
    error for every field, about 16 times), 'nothing answered', exit 1."""
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    pw.chmod(0o600)
    with FakeGateway() as fake:
        host = fake.host
    cfg = tmp_path / "trueup.toml"
    cfg.write_text(f'[gateway]\nkind = "powerwall"\nhost = "{host}"\nmode = "none"\n'
                   f'authpath = "{tmp_path}"\npassword_file = "{pw}"\n')
    assert main(["status", "--config", str(cfg)]) == 1
    captured = capsys.readouterr()
    assert "answered by: nothing answered" in captured.out
    assert captured.err.count(f"the gateway at {host} did not answer") == 1
    assert captured.err.count("error:") == 1 and "unknown: every reading" in captured.err
    assert (captured.out + captured.err).count("connection refused") == 1


def test_status_prints_a_refused_fleetapi_login_once(home, monkeypatch, capsys):
    cloud = FakeTeslaCloud()
    cloud.install_fleetapi(monkeypatch, home / "auth")
    assert setup(home, "--mode", "fleetapi", "--yes") == 0
    capsys.readouterr()
    cloud.status.update(products=401, token=401)
    assert main(["status", "--config", str(home / "trueup.toml")]) == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and err.count("refused the saved login") == 1
    assert "python -m pypowerwall setup -fleetapi" in err


def test_a_failed_connection_is_logged_once_by_the_adapter(tmp_path, caplog):
    """The daemon's log: the connection error once, not again per unknown field, and not
    again at each retry while it stays the same."""
    from adapters.gateway.powerwall import PowerwallGateway

    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    with FakeGateway() as fake:
        host = fake.host
    caplog.set_level(logging.WARNING)
    gw = PowerwallGateway(host=host, mode="none", authpath=str(tmp_path),
                          password_file=str(pw), timeout_s=1.0, reconnect_interval_s=0.0)
    for _ in range(3):
        assert gw.read().soc_percent is None
    said = [r.getMessage() for r in caplog.records]
    assert sum("did not answer" in m for m in said) == 1, said


def test_status_of_the_simulated_site_shows_the_configured_reserve_and_battery(
        tmp_path, capsys):
    cfg = tmp_path / "mine.toml"
    cfg.write_text(MINE)
    assert main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "answered by: simulated" in out
    assert "reserve 35 %" in out  # my floor, not the example home's 20 %
    assert "27 kWh usable in 2 units, backup floor 35 %" in out


def test_the_written_files_hold_no_secret_and_the_backup_keeps_the_old_file(
        home, gateway, capsys):
    shutil.copy(home / "trueup.toml", home / "before.toml")
    assert setup(home, "--mode", "local", "--host", gateway.host, "--password-file",
                 str(home / "gw_password"), "--yes") == 0
    for name in ("trueup.toml", "trueup.toml.bak"):
        assert PASSWORD not in (home / name).read_text()
    assert (home / "trueup.toml.bak").read_bytes() == (home / "before.toml").read_bytes()
    assert PASSWORD not in capsys.readouterr().out


def test_the_daemon_log_masks_both_gateway_passwords(tmp_path):
    from trueup.logs import RedactingFilter, secret_values

    pw, wifi = tmp_path / "pw", tmp_path / "wifi"
    pw.write_text(PASSWORD + "\n")
    wifi.write_text(WIFI + "\n")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "got %s and %s",
                               (PASSWORD, WIFI), None)
    RedactingFilter(secret_values(str(pw), str(wifi), "")).filter(record)
    assert record.getMessage() == "got *** and ***"


def test_status_json_says_what_answered_and_what_failed(home, capsys):
    import json

    (home / "trueup.toml").write_text(MINE)
    assert main(["status", "--config", str(home / "trueup.toml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answered_by"] == ["simulated"] and out["failures"] == []
    assert out["settings"]["reserve_percent"] == 35.0


def test_the_toml_editor_changes_only_the_keys_it_sets():
    from optimizer.errors import InputError
    from trueup.toml_section import set_keys

    text = ('top = "x"  # [gateway] in a comment\r\n[gateway]\r\nhost = "a#b"   # the host\r\n'
            'hosts = ["a",  # a multi-line value\r\n  "b"]\r\n'
            '[gateway.more]\r\nz = 1\r\n')
    new = set_keys(text, "gateway", {"host": "10.0.0.2", "mode": "none"})
    assert new == text.replace('host = "a#b"   # the host',
                               'host = "10.0.0.2" # the host').replace(
        '  "b"]\r\n', '  "b"]\r\nmode = "none"\r\n')
    assert set_keys("a = 1", "gateway", {"kind": "powerwall"}) == \
        'a = 1\n\n[gateway]\nkind = "powerwall"\n'
    with pytest.raises(InputError, match="cannot edit"):
        set_keys('gateway = { kind = "simulated" }\n', "gateway", {"kind": "powerwall"})
