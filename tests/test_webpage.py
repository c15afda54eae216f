"""The web page at ``/``: the HTML builder against a real plan, the page and the kill switch
through the running daemon's HTTP endpoint, and a real headless browser (Debian's chromium,
driven by selenium) loading it and taking a screenshot."""

from __future__ import annotations

import html
import http.client
import json
import logging
import re
import shutil
import struct
import subprocess
import urllib.request
import zlib
from pathlib import Path

import pytest

from adapters.gateway.base import ApplyResult, CurrentSettings, SiteState
from adapters.gateway.simulated import SimClock
from adapters.store import WriteRecord
from optimizer.behaviour import ExportRule, Mode, Settings
from trueup.config import load_config
from trueup.daemon import Daemon
from trueup.gateways import simulated_site
from trueup.metrics import HttpEndpoint
from trueup.planning import make_plan, parse_at
from trueup.webpage import PageState, entry_in_force, render

NOON = parse_at("2025-07-01T12:00-07:00")
JULY = parse_at("2025-07-01T00:00-07:00")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def plan(cfg):
    """A real plan of the example site (48 h in 15-minute steps)."""
    return make_plan(cfg, at_utc=NOON, soc_percent=55.0)


def _reading(**kw) -> SiteState:
    base = dict(timestamp=NOON, source="simulated", soc_percent=62.0, solar_w=5400.0,
                home_w=1200.0, battery_w=-2500.0, grid_w=-1700.0, grid_status="up",
                settings=CurrentSettings(Mode.SELF_POWERED, 20.0, False, ExportRule.PV_ONLY))
    base.update(kw)
    return SiteState(**base)


def _page(cfg, plan, **kw) -> str:
    args = dict(now=NOON + 60, tz=cfg.site.timezone, state=_reading(), read_at=NOON,
                plan=plan, plan_at=NOON)
    args.update(kw)
    return render(PageState(**args))


def _row(page: str, label: str) -> str:
    """The table row (or dt/dd pair) that starts with ``label``."""
    m = re.search(rf"<tr><td>{re.escape(label)}</td>.*?</tr>", page) or \
        re.search(rf"<dt>{re.escape(label)}</dt><dd>.*?</dd>", page)
    assert m, f"no row {label!r}"
    return m.group(0)


def test_the_page_has_the_chart_and_every_settings_reason(cfg, plan):
    page = _page(cfg, plan)
    assert page.startswith("<!DOCTYPE html>") and '<svg id="plan-chart"' in page
    entries = plan.schedule.entries
    assert len(entries) >= 2
    for entry in entries:
        assert html.escape(entry.reason) in page
    # each change inside the chart is marked, its reason in an SVG <title>
    marks = re.findall(r'<g class="change"><title>(.*?)</title>', page)
    assert len(marks) == sum(1 for en in entries
                             if NOON <= en.start_utc < NOON + 48 * 3600)
    assert all(any(html.escape(en.reason) in m for en in entries) for m in marks)
    for series in ("pv", "load", "battery", "grid", "soc"):
        assert f'class="series-{series}"' in page
    assert 'class="floor"' in page
    # now: the reading, and the setting in force with its reason
    now = page[page.index('id="now"'):page.index('id="next"')]
    assert "62 %" in now and "+1.70" not in now and "-1.70 kW" in now
    assert html.escape(entry_in_force(plan, NOON + 60).reason) in now
    # this month: the NEM-PS cap and its budget, the true-up spread
    month = page[page.index('id="month"'):page.index('id="writes"')]
    assert "export cap" in month and "kWh left" in month and "budget" in month
    assert all(q in month for q in ("P10", "P50", "P90"))
    # nothing external: no fetched asset, no link out of the daemon
    assert not re.search(r'(src|href|action)="(https?:)?//', page) and " src=" not in page
    assert page.count("<script>") == 1  # the inline refresh


def test_stale_data_is_labelled_stale(cfg, plan):
    page = _page(cfg, plan, now=NOON + 3600, read_at=NOON, plan_at=NOON + 3000)
    assert ">stale<" in _row(page, "last reading")
    assert ">fresh<" in _row(page, "last plan")
    never = _page(cfg, None, state=None, read_at=None, plan_at=None)
    assert ">stale<" in _row(never, "last reading") and "never" in _row(never, "last reading")
    assert ">stale<" in _row(never, "last plan")


def test_unknown_is_shown_as_unknown_never_zero(cfg, plan):
    reading = _reading(soc_percent=None, grid_w=None, grid_status=None,
                       settings=CurrentSettings(None, None, None, None),
                       unknown={"soc_percent": "timeout", "grid_w": "timeout"})
    page = _page(cfg, None, state=reading)
    assert "unknown" in _row(page, "battery")
    assert "unknown" in _row(page, "grid")
    assert "unknown" in _row(page, "grid status")
    assert _row(page, "settings read").count("unknown") == 4
    assert "unknown" in _row(page, "savings this month")
    assert "unknown" in _row(page, "true-up projection")
    assert "unknown" in _row(page, "exported so far")
    assert "0 %" not in _row(page, "battery") and "$0.00" not in page
    # with a plan but no month of load and PV billed yet: unknown, not $0
    assert "unknown" in _row(_page(cfg, plan), "savings this month")


def test_the_months_savings_are_shown_both_ways(cfg, plan):
    from optimizer.savings import MonthSavings

    page = _page(cfg, plan, savings=MonthSavings("2025-07", metered=40.0, no_battery=95.5,
                                                 self_powered=52.25))
    row = _row(page, "savings this month")
    assert "2025-07 so far" in row
    assert "$55.50 against no battery" in row and "$12.25 against Self-Powered" in row


def test_every_string_is_escaped(cfg, plan):
    evil = "<script>alert(1)</script>"
    reading = _reading(unknown={"solar_w": evil})
    write = WriteRecord(1, NOON - 600, ApplyResult(
        Settings(Mode.SELF_POWERED, 20.0, False, ExportRule.PV_ONLY), None,
        skipped=f"write budget {evil}"))
    page = _page(cfg, plan, state=reading, writes=[write], rails_log=[evil])
    assert evil not in page and html.escape(evil) in page
    assert "refused" in page  # the rails' refusal is shown as such


def test_the_writes_and_the_kill_switch_state(cfg, plan):
    s = Settings(Mode.TIME_BASED, 59.0, False, ExportRule.BATTERY_OK)
    writes = [
        WriteRecord(1, NOON - 3000, ApplyResult(s, s, written=("mode", "reserve_percent"),
                                                verified=True)),
        WriteRecord(2, NOON - 2000, ApplyResult(s, None, skipped="too soon: next change "
                                                "allowed in 300 s")),
        WriteRecord(3, NOON - 1000, ApplyResult(s, s, errors=("gateway timeout",))),
    ]
    page = _page(cfg, plan, writes=writes, kill_switch=True, kill_confirmed=True)
    section = page[page.index('id="writes"'):page.index('id="staleness"')]
    for outcome in (">sent<", ">refused<", ">failed<"):
        assert outcome in section
    assert "gateway timeout" in section and "too soon" in section
    assert "kill switch on" in section
    assert "<form" not in page  # read-only without a token file
    assert "control_token_file" in section
    with_token = _page(cfg, plan, control=True)
    assert '<form method="post" action="/kill-switch">' in with_token


# -- through the running daemon ---------------------------------------------------------


def small_config():
    c = load_config()
    c.optimizer.horizon_hours = 12
    c.optimizer.step_minutes = 30
    return c


def _daemon(tmp_path, *, dry_run: bool, token: str | None = None):
    c = small_config()
    if token is not None:
        f = tmp_path / "control-token"
        f.write_text(token + "\n")
        f.chmod(0o600)
        c.http.control_token_file = str(f)
    clock = SimClock(JULY + 12 * 3600)
    world = simulated_site(c, clock)
    daemon = Daemon(c, dry_run=dry_run, clock=clock, gateway=world, data_dir=tmp_path / "data")
    daemon.start()
    clock.advance(60)
    daemon.read_job()
    daemon.plan_job()
    http_ = HttpEndpoint("127.0.0.1:0", daemon.metrics, daemon.health, daemon.current_plan,
                         page=daemon.web_page, control=daemon.web_kill,
                         token_file=daemon.control_token_file).start()
    return daemon, world, http_


def _post(address: str, path: str, body: bytes = b"", headers=None) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded", **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def _health(address: str) -> dict:
    try:
        return json.loads(urllib.request.urlopen(f"http://{address}/healthz").read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def test_the_daemon_serves_the_page_and_refuses_posts_without_a_token_file(tmp_path):
    daemon, _, http_ = _daemon(tmp_path, dry_run=True)
    try:
        r = urllib.request.urlopen(f"http://{http_.address}/")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        page = r.read().decode()
        plan = daemon.state.last_plan
        assert '<svg id="plan-chart"' in page
        for entry in plan.schedule.entries:
            assert html.escape(entry.reason) in page
        assert "dry run" in page and ">fresh<" in page
        status, text = _post(http_.address, "/kill-switch", b"token=anything")
        assert status == 403 and "control_token_file" in text and text.count("\n") == 1
        assert not daemon.gateway.killed and not _health(http_.address)["kill_switch"]
    finally:
        http_.stop()
        daemon.close()


def test_with_a_token_file_a_post_trips_the_kill_switch_and_is_logged(tmp_path, caplog):
    token = "s3cret-token-of-the-owner"
    daemon, world, http_ = _daemon(tmp_path, dry_run=False, token=token)
    owner = daemon.gateway.owner_settings
    caplog.set_level(logging.INFO)
    try:
        page = urllib.request.urlopen(f"http://{http_.address}/").read().decode()
        assert 'action="/kill-switch"' in page
        status, text = _post(http_.address, "/kill-switch", b"token=wrong")
        assert status == 403 and "token" in text
        status, _ = _post(http_.address, "/kill-switch")
        assert status == 403
        assert not daemon.gateway.killed
        assert "wrong or missing token" in caplog.text
        status, text = _post(http_.address, "/dry-run", b"token=" + token.encode())
        assert status == 404 and "dry run is chosen when trueup starts" in text
        status, text = _post(http_.address, "/kill-switch", b"token=" + token.encode())
        assert status == 303 and "kill switch on" in text
        assert daemon.gateway.killed and _health(http_.address)["kill_switch"]
        assert world.settings == owner  # the rails restored the owner's settings
        assert "web control: kill switch requested by 127.0.0.1" in caplog.text
        assert "kill switch: web page request from 127.0.0.1" in caplog.text  # the rails
        # the bearer header works too, and a second trip changes nothing
        status, _ = _post(http_.address, "/kill-switch",
                          headers={"Authorization": f"Bearer {token}"})
        assert status == 303
        # nothing more is written: the next plan is refused by the rails and recorded
        daemon.clock.advance(3600)
        daemon.read_job()
        daemon.plan_job()
        writes = daemon.store.writes(JULY)
        assert any(w.result.applied == owner for w in writes)
        assert writes[-1].result.skipped == "kill switch: writes are off"
        page = urllib.request.urlopen(f"http://{http_.address}/").read().decode()
        assert "kill switch on" in page and "kill switch: writes are off" in page
        assert token not in page and token not in caplog.text
    finally:
        http_.stop()
        daemon.close()


# -- a real browser ---------------------------------------------------------------------


def _browser_or_skip() -> tuple[str, str]:
    """Debian's chromium and chromedriver, installed by deploy/ci-deps.sh when missing;
    a skip saying why only when they cannot be installed."""
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e "
                        "'.[test]'")
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found:
        out = subprocess.run(["bash", str(ROOT / "deploy" / "ci-deps.sh")],
                             capture_output=True, text=True, timeout=900)
        found = shutil.which("chromium"), shutil.which("chromedriver")
        if None in found:
            pytest.skip("chromium and chromium-driver cannot be installed here "
                        f"(deploy/ci-deps.sh exit {out.returncode}: "
                        f"{out.stderr.strip()[-300:]})")
    return found  # type: ignore[return-value]


def _png_pixels(png: bytes) -> tuple[int, int, list[bytes], int]:
    """Width, height, the pixel rows and bytes per pixel (RGB or RGBA, 8 bits) of a
    non-interlaced PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, head = 8, b"", None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    w, h, depth, color, _, _, interlace = head
    assert depth == 8 and color in (2, 6) and interlace == 0
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return w, h, rows, bpp


def test_a_headless_browser_shows_the_chart_and_the_reason(tmp_path):
    chromium, chromedriver = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    daemon, _, http_ = _daemon(tmp_path, dry_run=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=412,1400", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=opts)
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"http://{http_.address}/")
        chart = driver.find_element(By.ID, "plan-chart")
        assert chart.tag_name.lower() == "svg" and chart.size["width"] > 200
        reason = entry_in_force(daemon.state.last_plan, daemon.clock.now()).reason
        assert reason in driver.find_element(By.ID, "now").text
        titles = [t.get_attribute("textContent")
                  for t in driver.find_elements(By.CSS_SELECTOR, "#plan-chart g.change title")]
        assert titles and all("—" in t for t in titles)
        png = driver.get_screenshot_as_png()
        (tmp_path / "page.png").write_bytes(png)
    finally:
        driver.quit()
        http_.stop()
        daemon.close()
    assert len(png) > 10_000
    w, h, rows, bpp = _png_pixels(png)
    assert w > 300 and h > 600
    colors = {row[i:i + 3] for row in rows[::4] for i in range(0, len(row), bpp * 4)}
    assert len(colors) > 50, f"a blank page? {len(colors)} distinct colours"
