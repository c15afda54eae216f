"""The daemon's web page at ``/``: one server-rendered HTML page, readable on a phone.

:func:`render` is a pure function: a :class:`PageState` (what the daemon knows now) in, an
HTML string out. No external asset (no CDN, no font, no script library): the home server may
be offline. The chart is inline SVG; each settings change carries its reason in an SVG
``<title>``, which browsers show on hover (and on a long press on phones). The page reloads
itself every minute (a tiny inline script, which waits while the token field is in use; a
``<noscript>`` meta refresh without JavaScript).

Every string put in the HTML passes :func:`html.escape`. Unknown is never 0: a value that
was not read is written "unknown". Times are shown in the site's time zone.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

REFRESH_S = 60
CHART_HOURS = 48
# the chart's colours, also used by the legend
COLORS = {"pv": "#e6a700", "load": "#3b5bdb", "battery": "#2b8a3e", "grid": "#c92a2a",
          "soc": "#5f3dc4", "floor": "#868e96", "change": "#f76707"}


@dataclass(frozen=True)
class PageState:
    """What the page shows. Times UTC epoch seconds; ``None``: unknown or never."""

    now: float
    tz: str  # the site's time zone, for the times shown
    state: object | None = None  # the last reading (adapters.gateway.base.SiteState)
    read_at: float | None = None
    plan: object | None = None  # the current plan (trueup.planning.PlanResult)
    plan_at: float | None = None
    stale_read_s: float = 300.0
    stale_plan_s: float = 2700.0
    billing: object | None = None  # the last billing state (optimizer.billing.BillingState)
    writes: Sequence[object] = ()  # the store's write records (adapters.store.WriteRecord)
    rails_log: Sequence[str] = ()  # what the safety rails said, newest last
    kill_switch: bool = False  # tripped: nothing more is written until restart
    kill_requested: bool = False
    kill_confirmed: bool = False
    dry_run: bool = False
    control: bool = False  # an owner set [http] control_token_file: the kill switch form
    savings: object | None = None  # optimizer.savings.MonthSavings; None: not measured
    notes: Sequence[str] = field(default_factory=tuple)
    refresh_s: int = REFRESH_S


def e(x: object) -> str:
    """Escaped for HTML text and attribute values."""
    return html.escape(str(x), quote=True)


def render(page: PageState) -> str:
    """The whole page."""
    zone = ZoneInfo(page.tz)
    body = [
        _header(page),
        _section("now", "Now", _now(page, zone)),
        _section("next", f"The next {_chart_hours(page.plan):g} h",
                 _chart_section(page, zone)),
        _section("month", "This month", _month(page)),
        _section("writes", "The last writes", _writes(page, zone)),
        _section("staleness", "Staleness", _staleness(page, zone)),
    ]
    refresh = int(page.refresh_s)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trueup</title>
<noscript><meta http-equiv="refresh" content="{refresh}"></noscript>
<style>{_CSS}</style>
</head>
<body>
{"".join(body)}
<footer>Generated {e(_clock(page.now, zone, "%Y-%m-%d %H:%M:%S %Z"))}; this page reloads
every {refresh} s. Also: <a href="/plan">/plan</a> (JSON), <a href="/healthz">/healthz</a>,
<a href="/metrics">/metrics</a>.</footer>
<script>
(function () {{
  function reload() {{
    var a = document.activeElement;
    if (a && a.tagName === "INPUT") {{ setTimeout(reload, 5000); return; }}
    location.replace(location.pathname);
  }}
  setTimeout(reload, {refresh * 1000});
}})();
</script>
</body>
</html>
"""


_CSS = """
:root { color-scheme: light; }
body { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 0 auto; padding: 0.5rem 0.75rem 2rem; max-width: 52rem; color: #212529;
  background: #f8f9fa; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 0.5rem; }
h1 { font-size: 1.4rem; margin: 0.4rem 0; }
h2 { font-size: 1.1rem; margin: 0 0 0.4rem; }
section { background: #fff; border: 1px solid #dee2e6; border-radius: 0.5rem;
  padding: 0.6rem 0.8rem; margin: 0.6rem 0; }
.badge { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 1rem;
  font-size: 0.85rem; font-weight: 600; background: #e9ecef; }
.ok { background: #d3f9d8; color: #2b8a3e; }
.warn { background: #fff3bf; color: #8f5f00; }
.bad { background: #ffe3e3; color: #c92a2a; }
.why { font-size: 1.05rem; margin: 0.3rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 0.8rem; margin: 0; }
dt { color: #495057; }
dd { margin: 0; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.2rem 0.3rem; border-bottom: 1px solid #f1f3f5;
  vertical-align: top; }
svg { width: 100%; height: auto; display: block; }
.legend span { display: inline-block; margin-right: 0.8rem; font-size: 0.85rem; }
.legend i { display: inline-block; width: 0.8rem; height: 0.3rem; margin-right: 0.25rem;
  vertical-align: middle; }
.muted { color: #6c757d; font-size: 0.9rem; }
.scroll { overflow-x: auto; }
form { margin-top: 0.5rem; display: flex; flex-wrap: wrap; gap: 0.4rem; }
input[type=password] { flex: 1 1 10rem; font-size: 1rem; padding: 0.3rem; }
button { font-size: 1rem; padding: 0.3rem 0.8rem; background: #c92a2a; color: #fff;
  border: 0; border-radius: 0.3rem; }
footer { color: #6c757d; font-size: 0.8rem; margin-top: 1rem; }
"""


# -- helpers ---------------------------------------------------------------------------


def _section(ident: str, title: str, inner: str) -> str:
    return f'<section id="{e(ident)}"><h2>{e(title)}</h2>\n{inner}</section>\n'


def _clock(t: float, zone: ZoneInfo, fmt: str = "%a %H:%M") -> str:
    return datetime.fromtimestamp(float(t), zone).strftime(fmt)


def _kw(w: float | None) -> str:
    return "unknown" if w is None else f"{w / 1000:+.2f} kW"


def _pct(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.0f} %"


def _money(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "unknown"
    return f"${x:,.2f}" if x >= 0 else f"−${-x:,.2f}"


def _duration(s: float) -> str:
    return (f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400
            else f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} days")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    text = _duration(abs(seconds))
    return f"{text} ago" if seconds >= 0 else f"{text} in the future (the clock went back)"


MODE_NAMES = {"self_consumption": "Self-Powered", "autonomous": "Time-Based Control",
              "backup": "Backup"}
EXPORT_NAMES = {"battery_ok": "everything", "pv_only": "solar only", "never": "none"}


def _settings_text(s) -> str:
    """A Settings or a CurrentSettings (whose fields may be unknown) in words, as the
    Tesla app names them."""
    def known(v, f=str):
        return "unknown" if v is None else f(v)

    mode = known(s.mode, lambda m: MODE_NAMES.get(str(m), str(m)))
    return (f"{mode}, reserve {known(s.reserve_percent, lambda r: f'{r:g} %')}, "
            f"grid charging {known(s.grid_charging, lambda g: 'on' if g else 'off')}, "
            f"export {known(s.export_rule, lambda r: EXPORT_NAMES.get(str(r), str(r)))}")


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in rows) + "</dl>\n"


def entry_in_force(plan, now: float):
    """The schedule entry in force at ``now`` (the first one before the plan starts)."""
    if plan is None or not plan.schedule or not plan.schedule.entries:
        return None
    current = plan.schedule.entries[0]
    for entry in plan.schedule.entries:
        if entry.start_utc <= now:
            current = entry
    return current


# -- sections --------------------------------------------------------------------------


def _header(page: PageState) -> str:
    badges = []
    if page.kill_switch or page.kill_requested:
        badges.append('<span class="badge bad">kill switch on: trueup writes nothing</span>')
    if page.dry_run:
        badges.append('<span class="badge warn">dry run: nothing is written</span>')
    if not badges:
        badges.append('<span class="badge ok">writing through the safety rails</span>')
    return f"<header><h1>trueup</h1>{''.join(badges)}</header>\n"


def _now(page: PageState, zone: ZoneInfo) -> str:
    st = page.state
    out = []
    entry = entry_in_force(page.plan, page.now)
    if entry is not None:
        out.append(f'<p class="why"><strong>{e(_settings_text(entry.settings))}</strong>: '
                   f"{e(entry.reason)}</p>\n")
    else:
        out.append('<p class="why">No plan yet: the settings are the owner\'s.</p>\n')
    if st is None:
        out.append("<p>No reading yet: SOC, flows and grid status unknown.</p>\n")
        return "".join(out)
    rows = [
        ("battery", _pct(st.soc_percent)),
        ("solar", _kw(st.solar_w)),
        ("home", _kw(st.home_w)),
        ("battery power", _kw(st.battery_w) + ("" if st.battery_w is None else
                                                " (+ discharging, − charging)")),
        ("grid", _kw(st.grid_w) + ("" if st.grid_w is None else
                                   " (+ importing, − exporting)")),
        ("grid status", st.grid_status or "unknown"),
        ("settings read", _settings_text(st.settings)),
    ]
    out.append(_dl(rows))
    if st.unknown:
        out.append('<p class="muted">Not read: ' + e("; ".join(
            f"{k}: {v}" for k, v in st.unknown.items())) + "</p>\n")
    return "".join(out)


def _chart_section(page: PageState, zone: ZoneInfo) -> str:
    plan = page.plan
    if plan is None:
        return "<p>No plan yet.</p>\n"
    out = []
    if not plan.plan.ok:
        out.append(f"<p>The plan could not be solved ({e(plan.plan.status)}): the settings "
                   "are the fallback; the flows below are not a plan.</p>\n")
    out.append(chart_svg(plan, zone))
    legend = "".join(f'<span><i style="background:{c}"></i>{e(name)}</span>' for name, c in (
        ("PV", COLORS["pv"]), ("load", COLORS["load"]),
        ("battery (+ discharging)", COLORS["battery"]), ("grid (+ importing)", COLORS["grid"]),
        ("SOC", COLORS["soc"]), ("floor", COLORS["floor"]),
        ("settings change (tap for why)", COLORS["change"])))
    out.append(f'<p class="legend">{legend}</p>\n')
    if plan.schedule and plan.schedule.entries:
        rows = "".join(
            f"<tr><td>{e(_clock(en.start_utc, zone))}</td>"
            f"<td>{e(_settings_text(en.settings))}</td><td>{e(en.reason)}</td></tr>"
            for en in plan.schedule.entries)
        out.append('<div class="scroll"><table><thead><tr><th>from</th><th>settings</th>'
                   f"<th>why</th></tr></thead><tbody>{rows}</tbody></table></div>\n")
    return "".join(out)


def chart_svg(plan, zone: ZoneInfo, width: int = 480) -> str:
    """The plan's next :data:`CHART_HOURS` h: power per step (kW: PV, load, battery, grid)
    above, SOC against the floor below, each settings change a marked line with its reason
    in a ``<title>``."""
    x, p = plan.inputs, plan.plan
    step_h = float(x.step_hours)
    n = min(len(x.pv_kwh), max(1, round(CHART_HOURS / step_h)))
    starts = np.asarray(x.prices.start_utc[:n], dtype=float)
    if n == 0:
        return "<p>The plan has no steps.</p>\n"

    def kw(a) -> np.ndarray:
        return np.nan_to_num(np.asarray(a[:n], dtype=float)) / step_h

    series = {
        "pv": kw(x.pv_kwh), "load": kw(x.load_kwh),
        "battery": kw(p.discharge_kwh) - kw(p.charge_kwh),
        "grid": kw(p.import_kwh) - kw(p.export_kwh),
    }
    usable = float(x.battery.usable_kwh) or 1.0
    soc = np.concatenate([[x.soc_kwh], np.nan_to_num(np.asarray(p.soc_kwh[:n], float))])
    soc = 100 * soc / usable
    floor = float(x.battery.backup_floor_percent)

    left, right, top = 34, 6, 10
    power_h, gap, soc_h, axis_h = 150, 24, 80, 20
    height = top + power_h + gap + soc_h + axis_h
    plot_w = width - left - right
    t0, span = starts[0], n * step_h * 3600

    def tx(t: float) -> float:
        return left + plot_w * (t - t0) / span

    hi = max(1.0, *(float(np.max(v)) for v in series.values()))
    lo = min(0.0, *(float(np.min(v)) for v in series.values()))
    hi, lo = _nice(hi), -_nice(-lo) if lo < 0 else 0.0

    def ty(v: float) -> float:
        return top + power_h * (hi - v) / (hi - lo)

    soc_top = top + power_h + gap

    def sy(v: float) -> float:
        return soc_top + soc_h * (100 - v) / 100

    parts = [f'<svg id="plan-chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-labelledby="chart-title" font-size="10" font-family="system-ui, sans-serif">',
             f'<title id="chart-title">The plan for the next {e(f"{n * step_h:g}")} h</title>',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>']
    # grid lines and axis labels (kW)
    for v in _ticks(lo, hi):
        y = ty(v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{"#adb5bd" if v == 0 else "#e9ecef"}"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="#495057">{e(f"{v:g}")}</text>')
    parts.append(f'<text x="{left + 3}" y="{top + 9}" fill="#495057">kW</text>')
    for v in (0, 50, 100):
        y = sy(v)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e9ecef"/><text x="{left - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end" fill="#495057">{v}</text>')
    parts.append(f'<text x="{left + 3}" y="{soc_top - 3}" fill="#495057">SOC %</text>')
    # time axis: local midnight and every 6 h
    for k in range(n + 1):
        t = t0 + k * step_h * 3600
        local = datetime.fromtimestamp(t, zone)
        xx = tx(t)
        if local.minute == 0 and local.hour % 6 == 0 and left + 10 <= xx <= width - 14:
            label = local.strftime("%a") if local.hour == 0 else local.strftime("%H:%M")
            parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" '
                         f'y2="{soc_top + soc_h}" stroke="#f1f3f5"/>'
                         f'<text x="{xx:.1f}" y="{height - 6}" text-anchor="middle" '
                         f'fill="#495057">{e(label)}</text>')
    # the power series: PV as an area, the others as step lines
    ends = starts + step_h * 3600

    def steps(v: np.ndarray) -> str:
        pts = []
        for a, b, val in zip(starts, ends, v, strict=True):
            pts.append(f"{tx(a):.1f},{ty(val):.1f} {tx(b):.1f},{ty(val):.1f}")
        return " ".join(pts)

    base = ty(0.0)
    parts.append(f'<polygon class="series-pv" points="{tx(t0):.1f},{base:.1f} '
                 f'{steps(series["pv"])} {tx(ends[-1]):.1f},{base:.1f}" '
                 f'fill="{COLORS["pv"]}" fill-opacity="0.35" stroke="{COLORS["pv"]}"/>')
    for name in ("load", "battery", "grid"):
        parts.append(f'<polyline class="series-{name}" points="{steps(series[name])}" '
                     f'fill="none" stroke="{COLORS[name]}" stroke-width="1.6"/>')
    # SOC against the floor
    soc_pts = " ".join(f"{tx(t0 + k * step_h * 3600):.1f},{sy(v):.1f}"
                       for k, v in enumerate(soc))
    parts.append(f'<line class="floor" x1="{left}" x2="{width - right}" y1="{sy(floor):.1f}" '
                 f'y2="{sy(floor):.1f}" stroke="{COLORS["floor"]}" stroke-dasharray="5 3">'
                 f"<title>{e(f'backup floor {floor:g} %')}</title></line>")
    parts.append(f'<polyline class="series-soc" points="{soc_pts}" fill="none" '
                 f'stroke="{COLORS["soc"]}" stroke-width="2"/>')
    # the settings changes, each with its reason (a wide transparent band to tap)
    entries = plan.schedule.entries if plan.schedule else ()
    for en in entries:
        if not t0 <= en.start_utc < t0 + span:
            continue
        xx = tx(en.start_utc)
        tip = f"{_clock(en.start_utc, zone)}: {_settings_text(en.settings)} — {en.reason}"
        parts.append(f'<g class="change"><title>{e(tip)}</title>'
                     f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{soc_top + soc_h}" '
                     f'stroke="{COLORS["change"]}" stroke-width="1.5" '
                     f'stroke-dasharray="2 2"/>'
                     f'<rect x="{xx - 8:.1f}" y="{top}" width="16" '
                     f'height="{soc_top + soc_h - top}" fill="{COLORS["change"]}" '
                     f'fill-opacity="0.06"/>'
                     f'<circle cx="{xx:.1f}" cy="{top + 3}" r="4" '
                     f'fill="{COLORS["change"]}"/></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _chart_hours(plan) -> float:
    """Hours the chart covers: the plan's horizon, at most :data:`CHART_HOURS`."""
    if plan is None:
        return CHART_HOURS
    x = plan.inputs
    return min(CHART_HOURS, len(x.pv_kwh) * float(x.step_hours))


def _nice(v: float) -> float:
    """A round number ≥ ``v`` (1, 2, 2.5, 5 × 10^k)."""
    if v <= 0:
        return 0.0
    mag = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= v - 1e-9:
            return m * mag
    return 10 * mag


def _ticks(lo: float, hi: float) -> list[float]:
    step = _nice((hi - lo) / 5)
    first = math.ceil(lo / step - 1e-9) * step
    out, v = [], first
    while v <= hi + 1e-9:
        out.append(round(v, 6))
        v += step
    return out


def _month(page: PageState) -> str:
    plan, bill = page.plan, page.billing
    rows: list[tuple[str, str]] = []
    outlook = plan.outlook if plan is not None else None
    if outlook is not None:
        x, p = plan.inputs, plan.plan
        in_month = float(np.sum(p.export_kwh[x.prices.month_key == outlook.month_key]))
        left = max(0.0, outlook.cap_kwh - outlook.used_kwh)
        rows += [
            ("NEM-PS export cap", f"{outlook.cap_kwh:,.0f} kWh"),
            ("exported so far", f"{outlook.used_kwh:,.1f} kWh ({left:,.1f} kWh left)"),
            ("the month's budget", f"{outlook.planned_kwh:,.1f} kWh more planned to the "
             f"month's end, {plan.cap_budget_kwh or 0:,.1f} kWh of it in this plan's "
             f"horizon; this plan exports {in_month:,.1f} kWh this month"),
        ]
    elif bill is not None and bill.export_cap_kwh is not None:
        rows += [("NEM-PS export cap", f"{bill.export_cap_kwh:,.0f} kWh"),
                 ("exported so far", f"{bill.export_cap_used_kwh:,.1f} kWh"),
                 ("the month's budget", "unknown (no plan yet)")]
    else:
        rows.append(("exported so far", "unknown" if bill is None
                     else f"{bill.month_export_kwh:,.1f} kWh"))
        rows.append(("export cap", "none on this tariff" if plan is not None or
                     bill is not None else "unknown"))
    proj = None
    if plan is not None and plan.plan.ok and plan.plan.true_up_due is not None:
        proj = plan.true_up_projection()
    if proj is not None:
        rows.append((f"true-up {proj.period.label}",
                     f"P10 {_money(proj.quantile(0.1))}, P50 {_money(proj.quantile(0.5))}, "
                     f"P90 {_money(proj.quantile(0.9))} due (negative: paid to you); "
                     f"{proj.measured_fraction:.0%} of the period metered"))
    else:
        rows.append(("true-up projection", "unknown" if plan is None or not plan.plan.ok
                     else "none (this tariff has no true-up in the plan's view)"))
    sv = page.savings
    rows.append(("savings this month",
                 "unknown (needs the month's load and PV readings)" if sv is None else
                 f"{sv.month} so far: {_money(sv.vs_no_battery)} against no battery, "
                 f"{_money(sv.vs_self_powered)} against Self-Powered (charges before any "
                 f"minimum: {_money(sv.metered)} as metered, {_money(sv.no_battery)} without "
                 f"the battery, {_money(sv.self_powered)} as Self-Powered)"))
    return _dl(rows)


def write_outcome(result) -> tuple[str, str]:
    """A write record's outcome: (sent | refused | failed | dry run | no change, detail)."""
    if result.errors:
        return "failed", "; ".join(result.errors)
    if result.written:
        return "sent", "wrote " + ", ".join(result.written) + (
            ", verified" if result.verified else ", not verified yet")
    skipped = result.skipped or ""
    if skipped.startswith("dry run"):
        return "dry run", skipped
    if not skipped or "already" in skipped or "no change" in skipped:
        return "no change", skipped or "nothing to write"
    return "refused", skipped


def _writes(page: PageState, zone: ZoneInfo) -> str:
    out = []
    if page.kill_switch:
        state = ("on: the owner's settings are restored; trueup writes nothing until a "
                 "restart" if page.kill_confirmed else
                 "on: restoring the owner's settings has not succeeded yet (retrying)")
        out.append(f'<p><span class="badge bad">kill switch {e(state)}</span></p>\n')
    elif page.kill_requested:
        out.append('<p><span class="badge bad">kill switch requested: carried out within a '
                   "second</span></p>\n")
    else:
        out.append('<p><span class="badge ok">kill switch off</span></p>\n')
    recent = list(page.writes)[-10:][::-1]
    if recent:
        rows = []
        for w in recent:
            outcome, detail = write_outcome(w.result)
            cls = {"failed": "bad", "refused": "warn", "sent": "ok"}.get(outcome, "")
            rows.append(f"<tr><td>{e(_clock(w.at, zone))}</td>"
                        f"<td>{e(_settings_text(w.result.requested))}</td>"
                        f'<td><span class="badge {cls}">{e(outcome)}</span> '
                        f"{e(detail)}</td></tr>")
        out.append('<div class="scroll"><table><thead><tr><th>when</th><th>asked</th>'
                   f"<th>outcome</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
                   "</div>\n")
    else:
        out.append("<p>No write recorded yet.</p>\n")
    if page.rails_log:
        items = "".join(f"<li>{e(m)}</li>" for m in list(page.rails_log)[-5:][::-1])
        out.append(f'<p class="muted">The safety rails said (newest first):</p><ul '
                   f'class="muted">{items}</ul>\n')
    if page.control:
        if not page.kill_switch:
            out.append('<form method="post" action="/kill-switch">'
                       '<input type="password" name="token" autocomplete="current-password" '
                       'placeholder="control token" aria-label="control token" required>'
                       "<button type=\"submit\">Trip the kill switch</button></form>\n"
                       '<p class="muted">Restores your own settings and stops every write '
                       "until trueup restarts.</p>\n")
    else:
        out.append('<p class="muted">Read-only page: set <code>[http] control_token_file'
                   "</code> to trip the kill switch from here.</p>\n")
    out.append('<p class="muted">Dry run is chosen when trueup starts (<code>--dry-run'
               "</code>) and cannot be switched from this page.</p>\n")
    return "".join(out)


def _staleness(page: PageState, zone: ZoneInfo) -> str:
    def row(name: str, at: float | None, limit: float) -> str:
        age = None if at is None else page.now - at
        stale = age is None or age > limit or age < -60
        badge = ('<span class="badge bad">stale</span>' if stale
                 else '<span class="badge ok">fresh</span>')
        when = "" if at is None else f" ({_clock(at, zone, '%a %H:%M:%S')})"
        return (f"<tr><td>{e(name)}</td><td>{e(_age(age) + when)}</td><td>{badge} "
                f'<span class="muted">{e(f"stale after {_duration(limit)}")}</span>'
                "</td></tr>")

    return ("<table><tbody>" + row("last reading", page.read_at, page.stale_read_s)
            + row("last plan", page.plan_at, page.stale_plan_s) + "</tbody></table>\n")
