"""Plots of a backtest for the owner: one PNG with three panels.

1. **Monthly bill by strategy** — $ billed per billing month for each strategy (grouped
   bars; below zero = a credit on that month's statement) and the same home without a
   battery (hollow bars). On a tariff that settles charges at the true-up (NEM2), where each
   statement shows only the minimum, the bars are the month's charges before the minimum
   (energy + NBC + fixed) and the minimum is a dashed line.
2. **A sample week** — the battery's state of charge (% of usable kWh) under ``trueup``
   (``self_powered`` dashed) and trueup's grid flow in kW (import +, export −) on a twin
   axis, against *local* time in the replay's zone.
3. **Exports by month** — kWh exported per strategy per billing month against the month's
   NEM-PS export cap (pro-rated by the billing engine for a partly covered month), or a note
   when the tariff has no cap.

The numbers behind the panels come from pure helpers (:func:`monthly_bills`,
:func:`monthly_exports`, :func:`week_series`, :func:`pick_week`) that need no matplotlib;
:func:`backtest_figure` draws them on a :class:`matplotlib.figure.Figure` with the Agg canvas
(no pyplot, no global state, no display) and :func:`plot_backtest` writes the PNG.

Units: energies kWh (per step or per month), power kW (kWh per step ÷ step hours), money $,
state of charge % of the battery's usable kWh. Interval times are UTC epoch seconds (interval
starts); the week's axis and the period in the title are local time of ``bt.replay.tz``.
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from optimizer.errors import InputError, UsageError
from optimizer.localtime import local_fields, local_midnight_utc

if TYPE_CHECKING:
    from trueup.backtest import Backtest, StrategyResult

FIGSIZE_IN = (11.0, 13.0)  # width, height in inches
DPI = 100  # so the PNG is 1100 × 1300 pixels
WEEK_DAYS = 7
MAIN_STRATEGY = "trueup"  # the week panel's grid flow and SOC
REFERENCE_STRATEGY = "self_powered"  # dashed SOC in the week panel
NO_BATTERY = "no_battery"  # the key of the no-battery bill in :func:`monthly_bills`
NO_CAP_NOTE = "no export cap on this tariff"

# Fixed colours for the known strategies (the same in every panel); others take the rest of
# matplotlib's default cycle (tab10) in order.
STRATEGY_COLORS = {
    "self_powered": "#1f77b4",  # blue
    "tbc_like": "#ff7f0e",  # orange
    "tou_lp": "#9467bd",  # purple
    "trueup": "#2ca02c",  # green
    "perfect_foresight": "#d62728",  # red
}
_DEFAULT_CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
NO_BATTERY_COLOR = "black"
GRID_COLOR = "0.45"  # the week panel's grid flow (a quantity, not a strategy)

_INSTALL_FIX = "install the plotting extra: pip install 'trueup[plot]' (or pip install matplotlib)"


# --------------------------------------------------------------------------------------
# Panel data (no matplotlib)


def strategy_colors(names: list[str]) -> dict[str, str]:
    """A colour per strategy name: the fixed colour of a known strategy, else the next
    default-cycle colour no known strategy in ``names`` uses."""
    used = {STRATEGY_COLORS[n] for n in names if n in STRATEGY_COLORS}
    free = [c for c in _DEFAULT_CYCLE if c not in used] or list(_DEFAULT_CYCLE)
    out, k = {}, 0
    for n in names:
        if n in STRATEGY_COLORS:
            out[n] = STRATEGY_COLORS[n]
        else:
            out[n] = free[k % len(free)]
            k += 1
    return out


def _months(bt: Backtest) -> list[str]:
    """Every billing month ("YYYY-MM") any bill of the backtest has, in order."""
    bills = [r.bill for r in bt.results] + [bt.no_battery]
    return sorted({m.month for b in bills for m in b.months})


def _per_month(months: list[str], statements, attr: str) -> np.ndarray:
    by = {m.month: getattr(m, attr) for m in statements}
    return np.array([np.nan if by.get(k) is None else float(by[k]) for k in months])


def monthly_bills(bt: Backtest) -> tuple[list[str], dict[str, np.ndarray]]:
    """$ billed on each billing month's statement (< 0: paid or credited to the customer).

    Returns the billing months ("YYYY-MM", the tariff's billing months) and, per strategy in
    ``bt.results`` order and then :data:`NO_BATTERY` (the same home without a battery), an
    array of $ billed per month (NaN where a bill lacks the month).
    """
    months = _months(bt)
    out = {r.name: _per_month(months, r.bill.months, "billed") for r in bt.results}
    out[NO_BATTERY] = _per_month(months, bt.no_battery.months, "billed")
    return months, out


def deferred_charges(bt: Backtest) -> bool:
    """True when the tariff settles its energy charges at the true-up (NEM2): the monthly
    statement then shows only the minimum, so the panel shows the charges accrued instead."""
    return bt.replay.tariff.spec.settlement.charges == "at_true_up"


def monthly_charges(bt: Backtest) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """Each billing month's charges before the minimum, for a tariff that settles them at
    the true-up: energy charges (after any baseline credit; < 0: a credit) + non-bypassable
    charges + fixed charges, $, per strategy in ``bt.results`` order and then
    :data:`NO_BATTERY`; and the minimum charge billed each month (the no-battery bill's, the
    same for every strategy), $. NaN where a bill lacks the month."""
    months = _months(bt)

    def charges(statements) -> np.ndarray:
        by = {m.month: m.energy_charges + m.nbc + m.fixed for m in statements}
        return np.array([by.get(k, np.nan) for k in months], dtype=float)

    out = {r.name: charges(r.bill.months) for r in bt.results}
    out[NO_BATTERY] = charges(bt.no_battery.months)
    return months, out, _per_month(months, bt.no_battery.months, "minimum")


def monthly_exports(bt: Backtest) -> tuple[list[str], dict[str, np.ndarray], np.ndarray | None]:
    """Gross kWh exported per billing month per strategy, and the months' export caps.

    Returns (months "YYYY-MM", {strategy: kWh per month}, cap kWh per month or ``None``).
    The cap is the billing engine's (pro-rated for a partly covered month), NaN for a month
    without one; ``None`` when no month of any bill has a cap.
    """
    months = _months(bt)
    exports = {r.name: _per_month(months, r.bill.months, "export_kwh") for r in bt.results}
    cap = np.full(len(months), np.nan)
    for b in [r.bill for r in bt.results] + [bt.no_battery]:
        got = _per_month(months, b.months, "export_cap_kwh")
        cap = np.where(np.isnan(cap), got, cap)
    return months, exports, (None if np.all(np.isnan(cap)) else cap)


def main_result(bt: Backtest) -> StrategyResult:
    """The strategy the week panel follows: ``trueup``, else the first one present."""
    r = bt.result(MAIN_STRATEGY)
    if r is not None:
        return r
    if not bt.results:
        raise InputError("the backtest has no strategy results to plot", where="backtest",
                         fix="run at least one strategy (--strategy) with --plot")
    return bt.results[0]


def _week_bounds(day: date, tz: str) -> tuple[int, int]:
    """UTC epoch seconds of local midnight starting ``day`` and ``WEEK_DAYS`` days later."""
    end = day + timedelta(days=WEEK_DAYS)
    return (local_midnight_utc(day.year, day.month, day.day, tz),
            local_midnight_utc(end.year, end.month, end.day, tz))


def pick_week(bt: Backtest) -> date:
    """The local date starting the 7-day week (local midnight to local midnight, clipped to
    the data) in which the main strategy (:func:`main_result`) exports the most kWh; each
    local date of the data is a candidate, the earliest wins a tie."""
    r = main_result(bt)
    t = np.asarray(bt.replay.data.start_utc, dtype=np.int64)
    if not len(t):
        raise InputError("the backtest has no intervals to plot", where="backtest",
                         fix="choose a --start and --days inside the data")
    days = np.unique(local_fields(t, bt.replay.tz).day)
    epoch = date(1970, 1, 1).toordinal()
    cum = np.concatenate([[0.0], np.cumsum(r.intervals.export_kwh)])
    best, best_kwh = None, -np.inf
    for d in days:
        day = date.fromordinal(epoch + int(d))
        a, z = _week_bounds(day, bt.replay.tz)
        i, j = np.searchsorted(t, a, side="left"), np.searchsorted(t, z, side="left")
        kwh = cum[j] - cum[i]
        if kwh > best_kwh + 1e-9:
            best, best_kwh = day, kwh
    assert best is not None
    return best


def week_series(bt: Backtest, start: date) -> dict[str, Any]:
    """The week panel's data: the steps from local midnight of ``start`` for 7 days (local),
    clipped to the data.

    Keys:
        ``strategy``: the main strategy's name (its grid flow is shown).
        ``start``, ``tz``: the chosen local date and the replay's IANA zone.
        ``start_utc``: the steps' starts, UTC epoch seconds (int64).
        ``start_local``, ``end_local``: the steps' starts and ends as timezone-aware local
            datetimes (object arrays); SOC is at step ends, grid flow over each step.
        ``hours``: the step length in hours.
        ``import_kw``, ``export_kw``: the main strategy's mean grid import and export over
            each step, kW (kWh per step ÷ step hours, both ≥ 0).
        ``grid_kw``: ``import_kw − export_kw`` (import positive, export negative), kW.
        ``soc_pct``: {strategy: % of usable kWh stored at each step's end} for the main
            strategy and ``self_powered`` when present.
    """
    r = main_result(bt)
    rp = bt.replay
    t = np.asarray(rp.data.start_utc, dtype=np.int64)
    a, z = _week_bounds(start, rp.tz)
    sel = np.flatnonzero((t >= a) & (t < z))
    if not len(sel):
        first = datetime.fromtimestamp(int(t[0]), ZoneInfo(rp.tz)).date() if len(t) else None
        last = (datetime.fromtimestamp(rp.data.end_utc - 1, ZoneInfo(rp.tz)).date()
                if len(t) else None)
        raise InputError(f"no intervals in the week from {start.isoformat()}",
                         where="week_start",
                         fix=f"choose a date from {first} to {last}" if first else "")
    hours = rp.data.interval_s / 3600.0
    zone = ZoneInfo(rp.tz)
    starts = t[sel]
    start_local = np.array([datetime.fromtimestamp(int(s), zone) for s in starts], dtype=object)
    end_local = np.array([datetime.fromtimestamp(int(s) + rp.data.interval_s, zone)
                          for s in starts], dtype=object)
    imp = np.asarray(r.intervals.import_kwh, dtype=float)[sel] / hours
    exp = np.asarray(r.intervals.export_kwh, dtype=float)[sel] / hours
    usable = float(rp.battery.usable_kwh)
    soc = {}
    for res in (r, bt.result(REFERENCE_STRATEGY)):
        if res is not None and res.name not in soc:
            soc[res.name] = np.asarray(res.soc_kwh, dtype=float)[sel] / usable * 100.0
    return {"strategy": r.name, "start": start, "tz": rp.tz, "start_utc": starts,
            "start_local": start_local, "end_local": end_local, "hours": hours,
            "import_kw": imp, "export_kw": exp, "grid_kw": imp - exp, "soc_pct": soc}


def period_label(bt: Backtest) -> str:
    """The replayed period in local dates: "2025-07-01 to 2025-07-14 (14 days)"."""
    d = bt.replay.data
    if not len(d):
        return "no data"
    zone = ZoneInfo(bt.replay.tz)
    first = datetime.fromtimestamp(int(d.start_utc[0]), zone).date()
    last = datetime.fromtimestamp(d.end_utc - 1, zone).date()
    n = (last - first).days + 1
    return f"{first.isoformat()} to {last.isoformat()} ({n} day{'s' if n != 1 else ''})"


# --------------------------------------------------------------------------------------
# Drawing


def _matplotlib():
    """(Figure, FigureCanvasAgg, matplotlib.dates), or a UsageError saying how to install."""
    try:
        import matplotlib  # noqa: F401  (first: a missing package fails here)
        import matplotlib.dates as mdates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError(f"plotting a backtest needs matplotlib, which is not installed ({e})",
                         where="backtest plot", fix=_INSTALL_FIX) from e
    return Figure, FigureCanvasAgg, mdates


def _headroom(ax, values: np.ndarray, top: float = 0.35) -> None:
    """y limits with room above the bars for the legend (and below for credits)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    lo, hi = min(0.0, float(v.min(initial=0.0))), max(0.0, float(v.max(initial=0.0)))
    span = (hi - lo) or 1.0
    ax.set_ylim(lo - 0.1 * span if lo < 0 else 0.0, hi + top * span)


def _bills_panel(ax, bt: Backtest, colors: dict[str, str]) -> None:
    deferred = deferred_charges(bt)
    if deferred:
        months, bills, minimum = monthly_charges(bt)
    else:
        months, bills = monthly_bills(bt)
    names = [r.name for r in bt.results]
    n = len(names) + 1
    width = 0.8 / n
    x = np.arange(len(months))
    label_bars = len(months) <= 4
    vals = np.concatenate([v for v in bills.values()]) if bills else np.zeros(1)
    small = np.nanmax(np.abs(vals), initial=0.0) < 10.0
    money = "${:,.2f}" if small else "${:,.0f}"
    for k, name in enumerate([*names, NO_BATTERY]):
        off = (k - (n - 1) / 2) * width
        total = (bt.no_battery if name == NO_BATTERY else bt.result(name).bill).annual_total
        label = f"{name.replace('_', ' ') if name == NO_BATTERY else name} (total ${total:,.0f})"
        if name == NO_BATTERY:
            bars = ax.bar(x + off, bills[name], width, fill=False,
                          edgecolor=NO_BATTERY_COLOR, linewidth=1.2, label=label)
        else:
            bars = ax.bar(x + off, bills[name], width, color=colors[name], label=label)
        if label_bars:
            ax.bar_label(bars, fmt=money.format, fontsize=7, padding=2)
    ax.axhline(0.0, color="black", linewidth=0.8)
    if deferred:
        ok = ~np.isnan(minimum)
        ax.hlines(minimum[ok], x[ok] - 0.45, x[ok] + 0.45, colors="0.3", linestyles="--",
                  linewidth=1.2, label="minimum charge, billed monthly")
        vals = np.concatenate([vals, minimum])
    _headroom(ax, vals, top=0.35 + 0.1 * ((n + 2) // 3))
    ax.set_xticks(x, months)
    ax.set_xlabel("billing month")
    if deferred:
        ax.set_ylabel("$ charges accrued")
        ax.set_title("Monthly charges by strategy before the minimum ($: energy + NBC + fixed; "
                     "below 0 = credit), settled at the true-up\n(each statement shows only "
                     "the minimum, dashed; legend: the period's total incl. the true-up)")
    else:
        ax.set_ylabel("$ billed")
        ax.set_title("Monthly bill by strategy ($ per billing month; below 0 = credit; "
                     "legend: the period's total incl. any true-up)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(3, n + deferred), loc="upper left")


def _week_panel(ax, bt: Backtest, week: date, colors: dict[str, str], mdates) -> None:
    w = week_series(bt, week)
    zone = ZoneInfo(w["tz"])
    handles = []
    for name, soc in w["soc_pct"].items():
        (h,) = ax.plot(list(w["end_local"]), soc, color=colors[name],
                       linestyle="-" if name == w["strategy"] else "--",
                       linewidth=1.6 if name == w["strategy"] else 1.2,
                       label=f"{name} state of charge (%)")
        handles.append(h)
    ax.set_ylim(0, 105)
    ax.set_ylabel("state of charge (% of usable kWh)")
    ax2 = ax.twinx()
    edges = [*w["start_local"], w["end_local"][-1]]
    kw = np.append(w["grid_kw"], w["grid_kw"][-1])
    h = ax2.fill_between(edges, kw, 0.0, step="post", color=GRID_COLOR, alpha=0.35,
                         linewidth=0.0, label=f"{w['strategy']} grid (kW, import + / export −)")
    handles.append(h)
    ax2.axhline(0.0, color=GRID_COLOR, linewidth=0.6)
    lim = max(1.0, float(np.max(np.abs(w["grid_kw"])))) * 1.1
    ax2.set_ylim(-lim, lim)
    ax2.set_ylabel("grid kW (import + / export −)")
    locator = mdates.AutoDateLocator(tz=zone)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=zone))
    ax.set_xlim(w["start_local"][0], w["end_local"][-1])
    ax.set_xlabel(f"local time ({w['tz']})")
    ax.grid(alpha=0.3)
    ax.set_title(f"Week from {w['start']:%a %Y-%m-%d}: battery state of charge (%) and "
                 f"{w['strategy']} grid flow (kW)")
    ax.legend(handles=handles, fontsize=8, loc="upper left")
    ax.set_zorder(ax2.get_zorder() + 1)  # SOC lines over the grid fill
    ax.patch.set_visible(False)


def _exports_panel(ax, bt: Backtest, colors: dict[str, str]) -> None:
    months, exports, cap = monthly_exports(bt)
    names = list(exports)
    n = max(1, len(names))
    width = 0.8 / n
    x = np.arange(len(months))
    for k, name in enumerate(names):
        ax.bar(x + (k - (n - 1) / 2) * width, exports[name], width, color=colors[name],
               label=name)
    ax.set_xticks(x, months)
    ax.set_xlabel("billing month")
    ax.set_ylabel("kWh exported")
    if cap is None:
        ax.set_title("Exports by month (kWh)")
        # top right, the legend top left in at most three columns: they never meet
        ax.text(0.99, 0.95, NO_CAP_NOTE, transform=ax.transAxes, ha="right", va="top",
                fontsize=10, style="italic", bbox={"facecolor": "white", "edgecolor": "0.7"})
    else:
        ax.set_title("Exports by month vs the export cap (kWh; the cap pro-rated for a "
                     "partly covered month)")
        ok = ~np.isnan(cap)
        ax.hlines(cap[ok], x[ok] - 0.45, x[ok] + 0.45, colors="black", linestyles="--",
                  linewidth=1.5, label="export cap")
    vals = np.concatenate([*exports.values(), [] if cap is None else cap])
    cols = min(3, n + (cap is not None))
    rows = -(-(n + (cap is not None)) // cols)
    _headroom(ax, vals, top=0.3 + 0.1 * rows)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=cols, loc="upper left")


def backtest_figure(bt: Backtest, *, week_start: date | None = None):
    """The three-panel :class:`matplotlib.figure.Figure` (Agg canvas attached, no pyplot).

    ``week_start``: the local date whose midnight starts the sample week (default:
    :func:`pick_week`). Raises :class:`UsageError` when matplotlib is not installed.
    """
    Figure, FigureCanvasAgg, mdates = _matplotlib()
    week = pick_week(bt) if week_start is None else week_start
    colors = strategy_colors([r.name for r in bt.results])
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_bill, ax_week, ax_exp = fig.subplots(3, 1, height_ratios=[1.0, 1.1, 0.9])
    _bills_panel(ax_bill, bt, colors)
    _week_panel(ax_week, bt, week, colors, mdates)
    _exports_panel(ax_exp, bt, colors)
    d = bt.replay.data
    fig.suptitle(f"Backtest on tariff {bt.replay.tariff.id}: {period_label(bt)}, "
                 f"{d.interval_s // 60}-minute steps", fontsize=12)
    return fig


def plot_backtest(bt: Backtest, path: str | os.PathLike[str], *,
                  week_start: date | None = None) -> Path:
    """Write the backtest's three-panel PNG (:data:`FIGSIZE_IN` × :data:`DPI` pixels) to
    ``path`` (parent folders created) and return it as a :class:`~pathlib.Path`.

    Panels: $ billed per month by strategy, a sample week of SOC (%) and grid flow (kW) in
    local time from ``week_start`` (local midnight; default :func:`pick_week`), and kWh
    exported per month against the export cap. Raises :class:`UsageError` when matplotlib
    is not installed (``pip install 'trueup[plot]'``).
    """
    fig = backtest_figure(bt, week_start=week_start)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out
