"""Plain-text tables for the terminal (bills, tariffs)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from optimizer.billing import Bill
from optimizer.tariff import Tariff


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
          align: str | None = None) -> str:
    """A fixed-width table. ``align`` is one char per column: 'l' or 'r' (default: first
    column left, the rest right)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(r, widths, align, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), rule, *(fmt(r) for r in cells)])


def money(x: float) -> str:
    return f"{x:,.2f}" if x >= 0 else f"-{-x:,.2f}"


def kwh(x: float) -> str:
    return f"{x:,.1f}"


def bill_table(b: Bill, *, title: str = "") -> str:
    """Month rows, the true-up line(s) and totals, as the CLI prints them."""
    has_cap = any(m.export_cap_kwh is not None for m in b.months)
    headers = ["month", "import kWh", "export kWh"]
    if has_cap:
        headers += ["cap kWh", "excess kWh"]
    has_demand = any(m.demand_kw for m in b.months)
    headers += ["energy $", "NBC $", "fixed $"]
    if has_demand:
        headers += ["demand kW", "demand $"]
    headers += ["minimum $", "billed $", "credit $"]
    rows = []
    for m in b.months:
        r: list[object] = [m.month, kwh(m.import_kwh), kwh(m.export_kwh)]
        if has_cap:
            cap = "" if m.export_cap_kwh is None else kwh(m.export_cap_kwh)
            r += [cap, kwh(m.export_cap_excess_kwh)]
        r += [money(m.energy_charges), money(m.nbc), money(m.fixed)]
        if has_demand:
            r += [" ".join(f"{k} {v:,.2f}" for k, v in m.demand_kw.items()),
                  money(m.demand_charges)]
        r += [money(m.minimum), money(m.billed), money(m.credit_balance)]
        rows.append(r)
    tot: list[object] = ["total", kwh(sum(m.import_kwh for m in b.months)),
                         kwh(sum(m.export_kwh for m in b.months))]
    if has_cap:
        tot += ["", kwh(sum(m.export_cap_excess_kwh for m in b.months))]
    tot += [money(sum(m.energy_charges for m in b.months)), money(sum(m.nbc for m in b.months)),
            money(sum(m.fixed for m in b.months))]
    if has_demand:
        tot += ["", money(sum(m.demand_charges for m in b.months))]
    tot += [money(sum(m.minimum for m in b.months)), money(sum(m.billed for m in b.months)), ""]
    rows.append(tot)
    out = [title] if title else []
    out.append(table(headers, rows))
    for tu in b.true_ups:
        state = "" if tu.complete else " (projected: the data ends before the true-up month)"
        out.append("")
        out.append(f"True-up {tu.month}{state}:")
        lines = []
        if tu.charges:
            lines.append(("charges at true-up (NBC + net energy charges, at least the "
                          "minimums)", money(tu.charges)))
            lines.append(("minimum charges already billed", money(-tu.minimum_billed)))
        lines += [
            (f"net surplus {kwh(tu.surplus_kwh)} kWh credited (NSC)", money(-tu.surplus_credit)),
        ]
        if tu.paid_out_credit:
            lines.append(("leftover credit paid out", money(-tu.paid_out_credit)))
        if tu.annual_minimum_topup:
            lines.append(("annual minimum top-up", money(tu.annual_minimum_topup)))
        lines.append(("due at true-up", money(tu.due)))
        if tu.forfeited_credit:
            lines.append(("leftover credit forfeited (not paid)", money(tu.forfeited_credit)))
        if tu.rolled_over_credit:
            lines.append(("credit rolled over to the next period", money(tu.rolled_over_credit)))
        w = max(len(k) for k, _ in lines)
        out += [f"  {k.ljust(w)}  {v:>10}" for k, v in lines]
    out.append("")
    out.append(f"Total paid over the period (months + true-up): {money(b.annual_total)}")
    for n in b.notes:
        out.append(f"note: {n}")
    return "\n".join(out)


def tariff_summary(t: Tariff) -> str:
    """What a tariff says, in a few readable lines and a rate table."""
    s = t.spec
    out = [f"{s.id}: {s.name}", f"  time zone {s.timezone}; currency {s.currency}"]
    if s.effective or s.source:
        out.append(f"  effective {s.effective or '?'}; source: {s.source or '?'}")
    seasons = ", ".join(f"{k} = months {v}" for k, v in s.calendar.seasons.items())
    out.append(f"  seasons: {seasons}; holidays: {s.calendar.holidays}")
    for p in s.periods:
        hrs = ", ".join(f"{a:02d}-{b:02d}" for a, b in p.hours)
        extra = f" months {p.months}" if p.months else ""
        extra += f" seasons {p.seasons}" if p.seasons else ""
        out.append(f"  period {p.name:<10} {hrs} ({p.days}){extra}")
    rows = []
    for si, sn in enumerate(t.season_names):
        for pi, pn in enumerate(t.period_names):
            if not t.reachable[si, pi]:
                continue
            rates = t.tier_rates[si, pi]
            lims = t.tier_limits[si, pi]
            tiers = [f"{r:.5f}" if i == 0 else f"{r:.5f} above {lims[i - 1]:g}"
                     for i, r in enumerate(rates) if i == 0 or lims[i - 1] != float("inf")]
            rows.append([sn, pn, " / ".join(dict.fromkeys(tiers))])
    out.append("")
    out.append(table(["season", "period", "import $/kWh (all-in)"], rows, align="llr"))
    c = s.charges
    out.append("")
    out.append(f"  charges: NBC {c.nbc_per_kwh} $/kWh on every import; fixed {c.fixed_per_month}"
               f" $/month + {c.fixed_per_day} $/day; minimum {c.minimum_per_day} $/day + "
               f"{c.minimum_per_month} $/month; annual minimum {c.annual_minimum} $")
    if c.nbc_components:
        out.append("  NBC components ($/kWh): "
                   + ", ".join(f"{k} {v:.5f}" for k, v in c.nbc_components.items()))
    if s.demand is not None and (t.demand_tiers or any(t.demand_flat_by_month)):
        def rate(tiers):
            return " then ".join(f"{r:g} $/kW" + ("" if lim == float("inf") else
                                                 f" to {lim:g} kW") for lim, r in tiers)

        parts = [f"{season} {key} {rate(tiers)}" for (season, key), tiers in
                 t.demand_tiers.items()]
        if s.demand.flat_months:
            parts.insert(0, "flat by month " + ", ".join(
                rate(x) if x else "none" for x in t.demand_flat_by_month))
        ratchet = (f"; ratchet {s.demand.ratchet_percent:g} % of the highest flat demand of "
                   f"the last {s.demand.ratchet_months} months" if s.demand.ratchet_percent
                   else "")
        out.append(f"  demand ({s.demand.window_minutes}-minute window): "
                   + "; ".join(parts) + ratchet)
    e = s.export
    value = ("" if e.scheme == "nem" else
             f"; export value: flat {e.flat_rate}" if e.flat_rate is not None else
             "; export value: sell_rates table" if e.sell_rates else
             f"; export value: {e.rates_csv}" if e.rates_csv else "")
    credit = f", credit {e.credit}" if e.scheme == "nem" else ""
    if e.scheme == "nem" and e.surplus_tiers != "first":
        credit += f", surplus credited in tiers: {e.surplus_tiers}"
    out.append(f"  export: {e.scheme}{credit}, netting {t.netting}{value}")
    st = s.settlement
    out.append(f"  settlement: every {st.period_months} month(s), true-up month "
               f"{st.true_up_month}, carryover {st.carryover}, charges {st.charges}, leftover "
               f"credit {st.leftover_credit}, surplus rate {st.surplus_rate} $/kWh"
               + (f", monthly excess rate {st.monthly_excess_rate} $/kWh"
                  if st.monthly_excess_rate else "")
               + (f", kWh bank pairing {st.kwh_bank_pairing}" if st.carryover == "kwh" else ""))
    if s.export_cap:
        cap = s.export_cap.monthly_kwh or "estimated from the site's PV"
        out.append(f"  export cap (kWh/month, Jan-Dec): {cap}; de-credit order "
                   f"{[t.period_names[i] for i in t.decredit_order()]}")
    if s.notes:
        out.append("")
        out.append("  " + s.notes.strip().replace("\n", "\n  "))
    return "\n".join(out)


def _bar(value: float, scale: float, width: int = 20, char: str = "#") -> str:
    n = round(min(abs(value) / scale, 1.0) * width) if scale > 0 else 0
    return char * n


def plan_report(result, cfg) -> str:
    """The plan for the terminal: summary, settings with reasons, an hourly chart."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import numpy as np

    x, p, tz = result.inputs, result.plan, result.tz
    zone = ZoneInfo(tz)

    def clock(t, fmt="%a %H:%M"):
        return datetime.fromtimestamp(int(t), zone).strftime(fmt)

    out = [
        f"trueup plan — {cfg.source}; tariff {result.tariff.id}",
        f"  from {clock(x.prices.start_utc[0], '%Y-%m-%d %H:%M %Z')}, "
        f"{len(x.pv_kwh) * x.step_hours:g} h in {x.step_hours * 60:g}-minute steps; "
        f"SOC {100 * x.soc_kwh / x.battery.usable_kwh:.0f} %; floor "
        f"{x.battery.backup_floor_percent:g} %",
        f"  solver {p.solver}: {p.status} in {p.solve_seconds:.2f} s; forecasts: "
        f"PV {result.forecast_sources.get('pv')}, load {result.forecast_sources.get('load')}",
        "  dry run: nothing is written to the gateway",
        "",
    ]
    if result.schedule:
        rows = [[clock(e.start_utc), str(e.settings.mode), f"{e.settings.reserve_percent:g}%",
                 "on" if e.settings.grid_charging else "off", str(e.settings.export_rule),
                 e.reason] for e in result.schedule.entries]
        out.append(table(["from", "mode", "reserve", "grid chg", "export", "why"], rows,
                         align="llrlll"))
        out.append("")
    if not p.ok:
        out.append(f"No plan could be solved ({p.status}): the settings above are the "
                   "fallback.")
        out += [f"note: {n}" for n in result.notes + p.notes]
        return "\n".join(out)
    # an hourly chart: SOC and grid flow (import +, export −)
    steps = max(1, round(1 / x.step_hours))
    grid = p.import_kwh - p.export_kwh
    hourly_grid = np.add.reduceat(grid, np.arange(0, len(grid), steps)) if len(grid) else grid
    scale = max(float(np.max(np.abs(hourly_grid), initial=0.0)), 0.1)
    out.append("hour        SOC %                           grid kWh (import > 0 < export)")
    for i, t0 in enumerate(range(0, len(grid), steps)):
        soc = 100 * float(p.soc_kwh[min(t0 + steps, len(grid)) - 1]) / x.battery.usable_kwh
        g = float(hourly_grid[i])
        bar = (" " * 20 + "|" + _bar(g, scale)) if g >= 0 else \
            (_bar(g, scale, char="=").rjust(20) + "|")
        out.append(f"{clock(x.prices.start_utc[t0])}  {soc:5.1f} {_bar(soc, 100, 20):<20}  "
                   f"{g:+6.2f} {bar}")
    out.append("")
    if result.outlook is not None:
        o = result.outlook
        planned = float(p.export_kwh[x.prices.month_key == o.month_key].sum())
        out.append(f"Export cap {o.month_key // 12}-{o.month_key % 12 + 1:02d}: cap "
                   f"{o.cap_kwh:,.0f} kWh, used {o.used_kwh:,.1f}; the month outlook plans "
                   f"{o.planned_kwh:,.1f} kWh more, {result.cap_budget_kwh or 0:,.1f} of them "
                   f"in this horizon; this plan exports {planned:,.1f}.")
    proj = result.true_up_projection() if p.true_up_due is not None else None
    if proj is not None:
        est = 1 - proj.measured_fraction - proj.planned_fraction
        out.append(
            f"True-up {proj.period.label} projected (the bill engine over the period: "
            f"{proj.measured_fraction:.0%} metered, {proj.planned_fraction:.0%} this plan, "
            f"{est:.0%} estimated): due {money(proj.due)}; P10 {money(proj.quantile(0.1))}, "
            f"P50 {money(proj.quantile(0.5))}, P90 {money(proj.quantile(0.9))} (negative: "
            f"paid to you). It ends in credit in {proj.p_in_credit:.0%} of the likely years; "
            f"a peak credit is worth {p.marginal_credit_value:.3f} $/kWh to this plan.")
    if result.schedule and np.isfinite(result.schedule.plan_value):
        demand = " + demand charges added" if result.inputs.demand else ""
        out.append(f"Value over the horizon (import − export credit + wear{demand}): plan "
                   f"{money(result.schedule.plan_value)}, the settings as the Powerwall would "
                   f"carry them out {money(result.schedule.settings_value)}.")
    for key, kw in p.demand_kw.items():
        out.append(f"Demand {key}: the plan holds the month's peak at {kw:.2f} kW.")
    for n in result.notes + p.notes:
        out.append(f"note: {n}")
    return "\n".join(out)


def status_report(state, gateway: str, cfg, *, answered_by: str | None = None,
                  limits=None, firmware: str | None = None) -> str:
    """One gateway reading for the terminal. With ``limits`` (what the path cannot read,
    trueup.gateway_check) only those are explained here, the failures being printed apart;
    without, every unknown with its reason."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    def kw(w):
        return "unknown" if w is None else f"{w / 1000:+.2f} kW"

    when = datetime.fromtimestamp(state.timestamp, ZoneInfo(cfg.site.timezone))
    s = state.settings
    soc = "unknown" if state.soc_percent is None else f"{state.soc_percent:.1f} %"
    lines = [
        f"trueup status — {gateway}, answered by: {answered_by or state.source} "
        f"({when:%Y-%m-%d %H:%M:%S %Z})",
        f"  site      {cfg.source}: {cfg.battery.usable_kwh:g} kWh usable in "
        f"{cfg.battery.units} unit{'s' if cfg.battery.units > 1 else ''}, backup floor "
        f"{cfg.battery.backup_floor_percent:g} %",
        f"  battery   {soc}",
        f"  solar     {kw(state.solar_w)}",
        f"  home      {kw(state.home_w)}",
        f"  battery   {kw(state.battery_w)}   (+ discharging, − charging)",
        f"  grid      {kw(state.grid_w)}   (+ importing, − exporting); grid "
        f"{state.grid_status or 'unknown'}",
        "  settings  mode {}, reserve {}, grid charging {}, export {}".format(
            s.mode or "unknown",
            "unknown" if s.reserve_percent is None else f"{s.reserve_percent:g} %",
            "unknown" if s.grid_charging is None else ("on" if s.grid_charging else "off"),
            s.export_rule or "unknown"),
    ]
    if state.grid_import_wh is not None or state.grid_export_wh is not None:
        def kwh_or_unknown(wh):
            return "unknown" if wh is None else f"{wh / 1000:,.1f} kWh"

        lines.append(f"  counters  grid in {kwh_or_unknown(state.grid_import_wh)}, grid out "
                     f"{kwh_or_unknown(state.grid_export_wh)} since installation")
    if firmware:
        lines.append(f"  firmware  {firmware}")
    if limits is not None:
        for names, why in limits:
            lines.append(f"  not read: {', '.join(names)}: {why}")
        return "\n".join(lines)
    by_reason: dict[str, list[str]] = {}
    for name, why in state.unknown.items():
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        lines.append(f"  unknown: {', '.join(names)}: {why}")
    return "\n".join(lines)


class ProgressBar:
    """One terminal line of progress for several named tasks (the backtest's strategies):
    ``update(name, fraction)``; redrawn in place at most 5 times a second on a terminal, one
    line per finished task otherwise (a log, a pipe)."""

    def __init__(self, stream, width: int = 20):
        import time

        self.stream, self.width = stream, width
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.done: dict[str, float] = {}
        self.t0 = self.last = time.monotonic()
        self._clock = time.monotonic

    def update(self, name: str, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        finished = fraction >= 1.0 and self.done.get(name, 0.0) < 1.0
        self.done[name] = fraction
        now = self._clock()
        if not self.tty:
            if finished:
                print(f"{name}: done ({now - self.t0:.0f} s)", file=self.stream, flush=True)
            return
        if not finished and now - self.last < 0.2:
            return
        self.last = now
        parts = []
        for n, f in self.done.items():
            fill = round(f * self.width)
            parts.append(f"{n} [{'#' * fill}{'.' * (self.width - fill)}] {f:4.0%}"
                         if f < 1.0 else f"{n} done")
        line = "  ".join(parts) + f"  {now - self.t0:4.0f} s"
        cols = _columns(self.stream)
        if cols and len(line) >= cols:
            line = line[-(cols - 1):]
        print("\r" + line, end="", file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty and self.done:
            print(file=self.stream, flush=True)


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0
