"""The deployment files in deploy/ (README: "Installing on a Raspberry Pi or Debian host").

The systemd unit, the Prometheus scrape configuration and the dashboard's PromQL are checked
with the real tools — systemd-analyze, systemd-sysusers and promtool — which
``deploy/ci-deps.sh`` installs (``make test`` runs it). A missing tool fails the test with
that advice; nothing here is skipped.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "trueup.service"
SYSUSERS = DEPLOY / "systemd" / "trueup.sysusers"
ENV_EXAMPLE = DEPLOY / "systemd" / "trueup.env.example"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "trueup.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

EXEC_START = "/opt/trueup/.venv/bin/trueup run --config /etc/trueup/trueup.toml"

# The metric names other tools depend on (without the trueup_ prefix) and their labels.
CONTRACT_METRICS: dict[str, set[str]] = {
    "battery_soc_percent": set(),
    "power_watts": {"flow"},
    "plan_solve_seconds": set(),
    "plan_objective_dollars": set(),
    "setting_reserve_percent": set(),
    "setting_mode": {"mode"},
    "setting_grid_charging": set(),
    "setting_export_rule": {"rule"},
    "export_cap_kwh": set(),
    "export_cap_used_kwh": set(),
    "true_up_projected_dollars": set(),
    "gateway_errors_total": {"op"},
    "gateway_writes_total": {"setting"},
    "forecast_age_seconds": {"kind"},
    "last_plan_timestamp_seconds": set(),
    "dry_run": set(),
    # extensions (the contract grows, never renames)
    "true_up_projected_quantile_dollars": {"quantile"},
    "true_up_measured_fraction": set(),
    "grid_up": set(),
    "setting_known": {"setting"},
    "job_failures_total": {"job"},
    "write_budget_value_lost_dollars": set(),
    "write_budget_left": set(),
}
HISTOGRAMS = {"plan_solve_seconds"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def tool(name: str) -> str:
    """The path of a required command-line tool; fails (never skips) when it is absent."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `bash deploy/ci-deps.sh` as root (it "
                    "installs Debian's systemd and prometheus packages); `make test` does")
    return path


def run(*args: str | Path, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=120, **kw)


# -- the systemd unit ----------------------------------------------------------------------


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; keys may repeat (systemd
    appends or resets on repetition), comments and continuation lines as systemd reads
    them."""
    entries, section, pending = [], "", ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def service(key: str) -> list[str]:
    """Every value assigned to ``key`` in [Service]."""
    return [v for s, k, v in unit_entries(UNIT.read_text()) if s == "Service" and k == key]


def one(key: str) -> str:
    values = service(key)
    assert len(values) == 1, f"[Service] {key}= should be set once, found {values}"
    return values[0]


def seconds(span: str) -> float:
    """A systemd time span ("300s", "5min", "1min 30s", "90") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """A copy of the unit that systemd-analyze can check on this machine.

    ``systemd-analyze verify`` fails a unit whose ExecStart= binary does not exist, and
    /opt/trueup/.venv/bin/trueup exists only on an installed host. The copy runs the
    ``trueup`` console script of the environment running these tests instead (the same
    program; the Python interpreter when the script is absent). Nothing else changes.
    """
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC_START}\n") == 1
    script = Path(sys.executable).with_name("trueup")
    binary = script if script.exists() else Path(sys.executable)
    copy = tmp_path / "trueup.service"  # verify checks the file name as the unit name
    copy.write_text(text.replace("ExecStart=/opt/trueup/.venv/bin/trueup ",
                                 f"ExecStart={binary} "))
    return copy


def test_the_unit_passes_systemd_analyze_verify(checkable_unit):
    result = run(tool("systemd-analyze"), "verify", "--man=no", checkable_unit)
    said = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, said
    # verify only warns (status 0) about unknown keys and bad values: none are allowed
    about_us = [line for line in said.splitlines() if "trueup" in line]
    assert not about_us, "\n".join(about_us)


def test_the_unit_rates_ok_in_systemd_analyze_security(checkable_unit):
    result = run(tool("systemd-analyze"), "security", "--offline=yes", checkable_unit)
    assert result.returncode == 0, result.stderr
    found = re.search(r"Overall exposure level for trueup\.service: (\d+\.\d+)",
                      result.stdout)
    assert found, result.stdout[-2000:]
    assert float(found.group(1)) <= 2.0, result.stdout  # 1.4 "OK" when written


def test_the_unit_runs_the_daemon_from_the_venv_as_the_trueup_user():
    assert one("ExecStart") == EXEC_START
    assert one("User") == "trueup"
    assert "DynamicUser" not in {k for _, k, _ in unit_entries(UNIT.read_text())}
    assert one("Restart") == "on-failure"
    assert seconds(one("RestartSec")) >= 5
    # a verified gateway write with one re-send takes ~200 s (the comment in the unit)
    assert seconds(one("TimeoutStopSec")) >= 200
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"  # SIGHUP reloads the config


def test_the_unit_keeps_data_in_var_lib_and_secrets_out_of_the_config():
    assert one("StateDirectory").split()[0] == "trueup"  # /var/lib/trueup = $STATE_DIRECTORY
    assert "trueup/auth" in one("StateDirectory").split()  # gateway.authpath exists
    assert one("ConfigurationDirectory") == "trueup"
    assert one("LoadCredential") == "gw_password:/etc/trueup/gw_password"
    assert one("EnvironmentFile") == "-/etc/trueup/env"  # optional
    env = " ".join(service("Environment")).split()
    assert "TRUEUP_GATEWAY__PASSWORD_FILE=%d/gw_password" in env
    assert "TRUEUP_GATEWAY__AUTHPATH=%S/trueup/auth" in env


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


@pytest.mark.parametrize("key", sorted(HARDENING))
def test_the_unit_is_hardened(key):
    values = service(key)
    assert values, f"[Service] {key}= is missing"
    assert values[-1] == HARDENING[key], f"{key}={values[-1]!r}, want {HARDENING[key]!r}"


def test_the_unit_allows_only_system_service_calls_and_writes_only_its_state():
    filters = service("SystemCallFilter")
    assert filters[0] == "@system-service"  # an allow list first
    assert all(f.startswith("~") for f in filters[1:])  # then only removals
    # ProtectSystem=strict leaves StateDirectory= writable; nothing else is needed
    assert not service("ReadWritePaths"), "nothing outside /var/lib/trueup is written"


def test_the_unit_environment_points_the_config_at_the_credential(monkeypatch, tmp_path):
    """What the daemon sees under systemd: %d is $CREDENTIALS_DIRECTORY and %S /var/lib;
    the environment overrides gateway.password_file and gateway.authpath in trueup.toml."""
    from trueup.config import load_config

    expand = {"%d": "/run/credentials/trueup.service", "%S": "/var/lib"}
    for assignment in " ".join(service("Environment")).split():
        name, _, value = assignment.partition("=")
        for spec, path in expand.items():
            value = value.replace(spec, path)
        monkeypatch.setenv(name, value)
    toml = tmp_path / "trueup.toml"
    toml.write_text('[gateway]\npassword_file = "/etc/trueup/gw_password"\n'
                    'authpath = "/somewhere/else"\n')
    gateway = load_config(toml).gateway
    assert gateway.password_file == "/run/credentials/trueup.service/gw_password"
    assert gateway.authpath == "/var/lib/trueup/auth"


def test_the_env_example_names_only_real_settings(monkeypatch):
    from trueup.config import load_config

    lines = re.findall(r"^#?(TRUEUP_\w+)=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert len(lines) >= 3
    for name, value in lines:
        section, _, key = name.removeprefix("TRUEUP_").lower().partition("__")
        monkeypatch.setenv(name, value)
        config = load_config(None)  # rejects unknown keys and bad values
        assert hasattr(getattr(config, section), key), name
        monkeypatch.delenv(name)


def test_sysusers_creates_the_system_user_with_its_home_in_var_lib(tmp_path):
    (tmp_path / "etc").mkdir()
    result = run(tool("systemd-sysusers"), f"--root={tmp_path}", SYSUSERS)
    assert result.returncode == 0, result.stderr
    user = next(line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()
                if line.startswith("trueup:"))
    assert int(user[2]) < 1000  # a system user
    assert user[5:] == ["/var/lib/trueup", "/usr/sbin/nologin"]


# -- the sandbox, emulated ------------------------------------------------------------------
#
# systemd is not PID 1 in CI, so the unit cannot be started. Instead the seccomp rules that
# MemoryDenyWriteExecute=, SystemCallFilter=, SystemCallErrorNumber= and
# RestrictAddressFamilies= install (systemd's seccomp-util.c) are loaded with libseccomp in
# a child process, which then does what the daemon does: import its dependencies, solve a
# plan with HiGHS, run CBC as a child process, write SQLite in WAL mode, serve and fetch
# HTTP on loopback, and run threads. If a dependency ever needs writable+executable memory
# or a refused system call, this fails.

SANDBOX = textwrap.dedent("""
    import ctypes, errno, json, os, sys
    cfg = json.loads(os.environ.pop("SANDBOX"))

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ALLOW, EQ, MASKED_EQ = 0x7FFF0000, 4, 7

    def fail_with(code):
        return 0x00050000 | code

    def nr(name):
        return lib.seccomp_syscall_resolve_name(name.encode())

    def rule(ctx, action, name, *cmps):
        if nr(name) == -1:
            return  # not a system call on this architecture (__NR_SCMP_ERROR)
        arr = (Cmp * max(len(cmps), 1))(*cmps)
        assert lib.seccomp_rule_add_array(ctx, action, nr(name), len(cmps), arr) == 0, name

    # 1. MemoryDenyWriteExecute= and RestrictAddressFamilies= (default: allow)
    ctx = lib.seccomp_init(ALLOW)
    if cfg["mdwe"]:
        PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
        eperm = fail_with(errno.EPERM)
        wx = PROT_WRITE | PROT_EXEC
        rule(ctx, eperm, "mmap", Cmp(2, MASKED_EQ, wx, wx))
        for call in ("mprotect", "pkey_mprotect"):
            rule(ctx, eperm, call, Cmp(2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
        rule(ctx, eperm, "shmat", Cmp(2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
    for family in range(64):
        if family not in cfg["families"]:
            rule(ctx, fail_with(errno.EAFNOSUPPORT), "socket", Cmp(0, EQ, family, 0))
    assert lib.seccomp_load(ctx) == 0
    # 2. SystemCallFilter= allow list; anything else fails with SystemCallErrorNumber=
    ctx = lib.seccomp_init(fail_with(cfg["errno"]))
    for name in cfg["allowed"]:
        rule(ctx, ALLOW, name)
    assert lib.seccomp_load(ctx) == 0

    import mmap, socket
    if cfg["mdwe"]:
        try:
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            sys.exit("sandbox not active: a writable+executable mapping was allowed")
        except PermissionError:
            pass
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
        sys.exit("sandbox not active: a netlink socket was allowed")
    except OSError:
        pass
    try:
        os.chroot("/")
        sys.exit("sandbox not active: chroot() (@privileged) was allowed")
    except PermissionError:
        pass
    print("sandbox active", flush=True)
""")

WORKLOAD = textwrap.dedent("""
    import contextlib, ctypes, http.server, io, sqlite3, ssl, threading
    import urllib.error, urllib.request
    import apscheduler, highspy, numpy, prometheus_client, pulp, pydantic, pypowerwall
    import requests
    from trueup.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan", "--json"]) == 0
    plan = json.loads(out.getvalue())
    assert plan["solver"] == "highs" and plan["status"] == "optimal", plan["status"]

    problem = pulp.LpProblem("t", pulp.LpMinimize)
    x = pulp.LpVariable("x", 0, 10, cat="Integer")
    problem += x
    problem += x >= 3.5
    assert pulp.PULP_CBC_CMD(msg=0).solve(problem) == 1 and x.value() == 4

    db = sqlite3.connect(os.path.join(cfg["tmp"], "store.db"))
    assert db.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
    db.execute("create table t (x)")
    db.commit()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 501  # the bare handler answers; the round trip worked

    ssl.create_default_context()
    assert ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda v: v + 1)(1) == 2
    assert float((numpy.ones((200, 200)) @ numpy.ones((200, 200))).sum()) == 200.0 ** 3
    print("workload ok", flush=True)
""")


def syscall_group(name: str, analyze: str, seen: dict[str, set[str]]) -> set[str]:
    """The system calls in a systemd group (``@system-service``), nested groups expanded."""
    if name not in seen:
        lines = run(analyze, "syscall-filter", name).stdout.splitlines()[1:]
        calls: set[str] = set()
        for line in (s.strip() for s in lines):
            if line.startswith("@"):
                calls |= syscall_group(line, analyze, seen)
            elif line and not line.startswith("#"):
                calls.add(line)
        assert calls, f"systemd-analyze lists no system calls in {name}"
        seen[name] = calls
    return seen[name]


def test_the_sandbox_lets_the_daemon_plan_serve_and_store(tmp_path):
    analyze = tool("systemd-analyze")
    if ctypes.util.find_library("seccomp") is None:
        pytest.fail("libseccomp is not installed: run `bash deploy/ci-deps.sh` as root")
    seen: dict[str, set[str]] = {}
    allowed: set[str] = set()
    for assignment in service("SystemCallFilter"):
        deny = assignment.startswith("~")
        calls = set().union(*(syscall_group(g, analyze, seen) if g.startswith("@") else {g}
                              for g in assignment.lstrip("~").split()))
        allowed = allowed - calls if deny else allowed | calls
    families = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10}
    cfg = {"mdwe": one("MemoryDenyWriteExecute") == "yes",
           "families": [families[f] for f in one("RestrictAddressFamilies").split()],
           "errno": {"EPERM": 1, "EACCES": 13}[one("SystemCallErrorNumber")],
           "allowed": sorted(allowed), "tmp": str(tmp_path)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUEUP_")}
    env |= {"SANDBOX": json.dumps(cfg), "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", SANDBOX + WORKLOAD], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert result.stdout.splitlines()[-2:] == ["sandbox active", "workload ok"]


# -- Prometheus -----------------------------------------------------------------------------


def test_prometheus_scrapes_the_daemon_on_loopback_every_15_s():
    from trueup.config import HttpSection

    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["trueup"]
    interval = job.get("scrape_interval", config.get("global", {}).get("scrape_interval"))
    assert interval == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["127.0.0.1:9871"] == [HttpSection().bind]


def test_promtool_accepts_the_prometheus_config():
    result = run(tool("promtool"), "check", "config", PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


# -- Grafana --------------------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(model: dict) -> list[dict]:
    found = []
    for panel in model["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # inside collapsed rows
    return found


def targets(model: dict) -> list[dict]:
    return [t for p in panels(model) for t in p.get("targets", [])]


def test_the_dashboard_is_a_grafana_model_on_a_prometheus_variable():
    model = dashboard()
    assert 36 <= model["schemaVersion"] <= 41
    assert model["uid"] == "trueup"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    ds = variables["DS_PROMETHEUS"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    drawn = [p for p in panels(model) if p["type"] != "row"]
    assert len(drawn) >= 12
    for panel in drawn:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    ids = [p["id"] for p in panels(model)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(model):
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_the_dashboard_queries_only_contract_metrics_and_all_of_them():
    used: set[str] = set()
    for target in targets(dashboard()):
        expr = target["expr"]
        names = set(re.findall(r"\btrueup_([a-z_]+)", expr))
        labels: set[str] = set()
        for name in names:
            base = name
            for suffix in HISTOGRAM_SUFFIXES:
                if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                    base = name.removesuffix(suffix)
                    labels.add("le")
            assert base in CONTRACT_METRICS, f"trueup_{name} is not in the contract: {expr}"
            labels |= CONTRACT_METRICS[base]
            used.add(base)
        if not names:
            assert expr == 'up{job="trueup"}', expr  # the only other series: the scrape
            labels = {"job"}
        grouped = {g.strip() for by in re.findall(r"\bby \(([^)]*)\)", expr)
                   for g in by.split(",")}
        shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert grouped | shown <= labels, f"unknown label in {expr} / {target['legendFormat']}"
    assert used == set(CONTRACT_METRICS), f"not on the dashboard: {set(CONTRACT_METRICS) - used}"


def test_promtool_parses_every_dashboard_query(tmp_path):
    """Each query becomes a recording rule; ``promtool check rules`` parses its PromQL."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": t["expr"]}
        for i, t in enumerate(targets(dashboard()))]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool"), "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_loads_the_dashboard_from_prometheus():
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "trueup.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["type"] == "prometheus"
