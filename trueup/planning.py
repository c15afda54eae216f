"""The planner: state + forecasts + history → plan → settings. It exists once.

The daemon's plan job, `trueup plan` and every rolling strategy of the backtest call
:func:`make_plan` with the same inputs — the battery's SOC, the grid's state, the forecast
of the horizon (or none: the offline one is made here), the metered history, the clock
(``at_utc``) — and a :class:`PlanMemo` that keeps what need not be recomputed between
plans. A backtest supplies only a clock, history and forecasts.

It owns the *time* decisions (the horizon's steps, the month's end, the settlement
periods), and assembles the tariff's view of the horizon:

* the **export cap** (NEM-PS): the month outlook (:mod:`optimizer.outlook`) budgets the
  month in progress, re-solved daily and re-read against the exports so far every plan;
  months that start inside the horizon get their cap pro rata;
* the **true-up** (NEM1/NEM2): for every settlement period the horizon touches, the
  projection (:mod:`optimizer.projection`) bills the period — metered history, the expected
  rest in nine scenarios — without the horizon, and the plan gives each scenario its own
  true-up (:mod:`optimizer.plan`). After the solve the projection bills the plan's own flows
  too: the figure `trueup plan`, ``/plan`` and the metrics show.

The fallback chain: the plan (LP, MILP where needed) → the other solver → the last good plan
→ safe default settings (Self-Powered at the floor). Times UTC epoch seconds; kWh; app %.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from forecasts.clearsky import expected_pv_kwh, history_ratio
from forecasts.last_year import same_weeks_last_year
from forecasts.load import expected_load_kwh, seasonal_load_kwh
from optimizer.behaviour import Settings
from optimizer.demand import demand_budgets
from optimizer.intervals import IntervalData
from optimizer.localtime import local_fields
from optimizer.outlook import Outlook, month_outlook
from optimizer.plan import (
    CapBudget,
    Plan,
    PlanInputs,
    TrueUpContext,
    TrueUpScenario,
    failed_plan,
    solve,
)
from optimizer.policy import Schedule, WriteBudget, battery_spec, safe_default, schedule
from optimizer.prices import decredit_value, step_prices
from optimizer.projection import (
    PeriodProjection,
    ProjectionMemo,
    RestBook,
    SettlementPeriod,
    periods_between,
    project_period,
    projection_trust,
    rest_book,
    scenario_grid,
)
from optimizer.settlement import carries_credit_to_forfeit, leftover_after, settles_at_true_up
from optimizer.tariff import Tariff, load_tariff, rates_date_note
from trueup.config import TrueupConfig
from trueup.solvers import run_cbc_killable

OUTLOOK_REUSE_S = 86400  # the month outlook is re-solved daily, re-read every plan
# How far the unseen rest of a settlement period may stray from its expectation (σ of a
# log-normal, per year-long stretch): the same weeks last year of this home (PV: weather
# from year to year; load: habits), a profile fitted to its recent weeks (the season's
# own loads, air conditioning, are not in it yet), or a generic model (nothing of this
# home's size, shading or EVs is known). Our judgement, documented in the README.
SPREAD_PV = {"last_year": 0.06, "model": 0.15}
SPREAD_LOAD = {"last_year": 0.12, "profile": 0.25, "typical": 0.40}
PROFILE_MIN_DAYS = 14  # forecasts/load.py fits this home's profile from 14 days on
# $ per kWh of grid traffic: breaks ties toward Self-Powered, where every choice is worth the
# same to the bill as the planner sees it (a period deep in credit, its NBC under the
# minimum) but the sum of many small choices is not
TIE_BREAK_PER_KWH = 0.002


@dataclass(frozen=True)
class Forecast:
    """PV and load, kWh per plan step, and where each came from."""

    pv_kwh: np.ndarray
    load_kwh: np.ndarray
    sources: dict[str, str]


@dataclass
class PlanMemo:
    """What one planner keeps between its plans (the daemon keeps one, each backtest
    strategy its own): month bills and expected rests that did not change, the month
    outlook, the far expectation of each settlement period (recomputed daily)."""

    projection: ProjectionMemo = field(default_factory=ProjectionMemo)
    outlook: Outlook | None = None
    outlook_at: int | None = None
    far: dict = field(default_factory=dict)


@dataclass
class _TrueUpBasis:
    """What the true-up part of a plan was built from (to bill the plan's flows after)."""

    period: SettlementPeriod
    book: RestBook
    history: IntervalData | None
    horizon: tuple[int, int]
    tariff: Tariff
    true_up_month: int
    caps: list[float] | None
    memo: ProjectionMemo


@dataclass
class PlanResult:
    """Everything `trueup plan` prints, and the daemon applies."""

    generated_at: int
    inputs: PlanInputs
    plan: Plan
    schedule: Schedule | None
    tariff: Tariff
    tz: str
    outlook: Outlook | None = None
    cap_budget_kwh: float | None = None
    forecast_sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    basis: _TrueUpBasis | None = None
    _projection: PeriodProjection | None = None

    def true_up_projection(self) -> PeriodProjection | None:
        """The settlement period in progress billed with this plan's own flows over its
        horizon (history and the expected rest around them), in every scenario. Computed
        on first use."""
        b = self.basis
        if b is None or not self.plan.ok:
            return None
        if self._projection is None:
            x, p = self.inputs, self.plan
            step_s = round(x.step_hours * 3600)
            planned = IntervalData(start_utc=x.prices.start_utc, interval_s=step_s,
                                   import_kwh=p.import_kwh, export_kwh=p.export_kwh)
            self._projection = project_period(
                b.tariff, b.period, b.book, history=b.history, horizon=b.horizon,
                planned=planned, true_up_month=b.true_up_month, export_cap_kwh=b.caps,
                memo=b.memo)
        return self._projection

    def to_json(self) -> dict:
        """The ``plan`` JSON contract, with extra keys."""
        x, p = self.inputs, self.plan
        iso = _iso_factory(self.tz)
        step_s = round(x.step_hours * 3600)
        intervals = [
            {"start": iso(x.prices.start_utc[t]), "pv_kwh": round(float(x.pv_kwh[t]), 4),
             "load_kwh": round(float(x.load_kwh[t]), 4),
             "import_kwh": round(float(p.import_kwh[t]), 4),
             "export_kwh": round(float(p.export_kwh[t]), 4),
             "charge_kwh": round(float(p.charge_kwh[t]), 4),
             "discharge_kwh": round(float(p.discharge_kwh[t]), 4),
             "soc_percent": round(100 * float(p.soc_kwh[t]) / x.battery.usable_kwh, 2)}
            for t in range(len(x.pv_kwh))
        ]
        settings = [
            {"start": iso(e.start_utc), "mode": str(e.settings.mode),
             "reserve_percent": e.settings.reserve_percent,
             "grid_charging": e.settings.grid_charging,
             "export_rule": str(e.settings.export_rule), "reason": e.reason,
             "intent": e.intent}
            for e in (self.schedule.entries if self.schedule else ())
        ]
        cap = None
        if self.outlook is not None:
            o = self.outlook
            cap = {"month": _month_label(o.month_key), "cap_kwh": round(o.cap_kwh, 2),
                   "used_kwh": round(o.used_kwh, 2),
                   "planned_kwh": round(float(p.export_kwh[x.prices.month_key == o.month_key]
                                              .sum()), 2),
                   "outlook_kwh": round(o.planned_kwh, 2),
                   "horizon_budget_kwh": round(self.cap_budget_kwh or 0.0, 2)}
        true_up = None
        if p.true_up_due is not None:
            true_up = {"month": p.true_up_label,
                       "projected_balance": round(p.projected_cx or 0.0, 2),
                       "marginal_credit_value": p.marginal_credit_value,
                       "p_credit_counts": p.p_credit_counts, "p_nsc_only": p.p_nsc_only}
            proj = self.true_up_projection()
            if proj is not None:
                true_up.update(proj.to_json())
                true_up["projected_due"] = true_up.pop("due")
        out = {
            "generated_at": iso(self.generated_at),
            "horizon_hours": round(len(x.pv_kwh) * x.step_hours, 2),
            "step_minutes": step_s // 60,
            "solver": p.solver, "solve_seconds": round(p.solve_seconds, 4),
            "status": p.status, "objective": _finite(p.objective),
            "intervals": intervals, "settings": settings, "export_cap": cap,
            "true_up": true_up,
            "tariff": self.tariff.id,
            "soc_percent": round(100 * x.soc_kwh / x.battery.usable_kwh, 2),
            "forecasts": self.forecast_sources,
            "notes": self.notes + p.notes,
        }
        if self.schedule:
            out["value"] = {"plan_dollars": _finite(self.schedule.plan_value),
                            "settings_dollars": _finite(self.schedule.settings_value)}
            fit = self.schedule.budget
            if fit is not None:
                out["write_budget"] = {
                    "writes_per_day": fit.per_day, "left_today": fit.left_today,
                    "writes_wanted": fit.writes_wanted, "writes_kept": fit.writes_kept,
                    "changes_dropped": fit.changes_dropped,
                    "value_lost_dollars": _finite(fit.value_lost)}
        return out


def _finite(x: float, digits: int = 4) -> float | None:
    """JSON has no NaN: a value that could not be computed is null."""
    return round(float(x), digits) if np.isfinite(x) else None


def _iso_factory(tz: str):
    zone = ZoneInfo(tz)
    return lambda t: datetime.fromtimestamp(int(t), zone).isoformat()


def _month_label(key: int) -> str:
    return f"{key // 12:04d}-{key % 12 + 1:02d}"


def _month_bounds_utc(key: int, tz: str, read_day: int) -> tuple[int, int]:
    zone = ZoneInfo(tz)
    y, m = key // 12, key % 12 + 1
    start = datetime(y, m, read_day, tzinfo=zone)
    end = datetime(y + (m == 12), m % 12 + 1, read_day, tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())


# --------------------------------------------------------------------------------------
# Forecasts: the horizon, and weeks ahead


def _from_forecast(solar, starts: np.ndarray, step_s: int) -> tuple[np.ndarray, np.ndarray]:
    """The solar forecast's kWh on the plan's steps (sums or even splits of its 15-minute
    steps) and a mask of the steps it covers."""
    f_starts = np.asarray(solar.starts_utc, dtype=np.int64)
    f_kwh = solar.planning_kwh
    fs = solar.step_s
    out = np.zeros(len(starts))
    covered = np.zeros(len(starts), dtype=bool)
    for i, t in enumerate(starts):
        if step_s >= fs:
            sel = (f_starts >= t) & (f_starts < t + step_s)
            if sel.sum() == step_s // fs:
                out[i], covered[i] = float(f_kwh[sel].sum()), True
        else:
            j = np.flatnonzero((f_starts <= t) & (t < f_starts + fs))
            if len(j):
                out[i], covered[i] = float(f_kwh[j[0]]) * step_s / fs, True
    return out, covered


def _expected(cfg: TrueupConfig, starts: np.ndarray, step_s: int, tz: str,
              history: IntervalData | None, solar=None, *, far: bool = False
              ) -> tuple[np.ndarray, np.ndarray, dict[str, str], np.ndarray]:
    """Expected PV and load kWh per step, their sources, and which steps came from last
    year. ``far``: for the month outlook and the true-up projection (weeks ahead), the same
    weeks of last year wherever the history has them (forecasts/last_year.py), else the
    offline expectation."""
    site = cfg.site
    month = local_fields(starts, tz).month
    pv = expected_pv_kwh(starts, step_s, site.latitude, site.longitude, cfg.pv, month)
    pv_src = "offline clear-sky × monthly clearness"
    if solar is not None:
        forecast, covered = _from_forecast(solar, starts, step_s)
        if covered.any():
            pv = np.where(covered, forecast, pv)
            pv_src = (f"{solar.provider} ({int(covered.sum())} of {len(starts)} steps; the "
                      "rest clear-sky × clearness)") if not covered.all() else solar.provider
    if far:  # weeks ahead: the seasons matter more than the last weeks' habits
        load, load_src = seasonal_load_kwh(starts, step_s, tz, history,
                                           known_loads=cfg.forecast.load.known)
    else:
        load, load_src = expected_load_kwh(starts, step_s, tz, history,
                                           known_loads=cfg.forecast.load.known)
    covered = np.zeros(len(starts), dtype=bool)
    if far:
        ratio, days = _pv_calibration(cfg, history)
        if abs(ratio - 1.0) > 1e-3:
            pv = pv * ratio
            pv_src += f" × {ratio:.2f} (this home's last {days:.0f} days against the model)"
        ly_pv, ly_load, covered = same_weeks_last_year(starts, step_s, history)
        if covered.any():
            pv, load = np.where(covered, ly_pv, pv), np.where(covered, ly_load, load)
            pv_src = load_src = f"the same weeks last year ({int(covered.sum())} of " \
                f"{len(starts)} steps)"
    return pv, load, {"pv": pv_src, "load": load_src}, covered


def _pv_calibration(cfg: TrueupConfig, history: IntervalData | None) -> tuple[float, float]:
    """The offline PV model's scale for this home, from its metered PV
    (:func:`forecasts.clearsky.history_ratio`); (1, 0) without a PV history."""
    if history is None or not len(history) or history.pv_kwh is None:
        return 1.0, 0.0
    site = cfg.site
    return history_ratio(history.start_utc, history.interval_s, history.pv_kwh,
                         site.timezone, site.latitude, site.longitude, cfg.pv)


def horizon_forecast(cfg: TrueupConfig, starts: np.ndarray, step_s: int,
                     history: IntervalData | None, solar=None) -> Forecast:
    """The daemon's own forecast of the horizon: the solar providers' forecast (else clear
    sky × clearness) and the load from the home's history (else a typical profile)."""
    pv, load, sources, _ = _expected(cfg, starts, step_s, cfg.site.timezone, history, solar)
    return Forecast(pv, load, sources)


@dataclass(frozen=True)
class _Far:
    pv: np.ndarray  # kWh per hour of the period
    load: np.ndarray
    last_year: float  # share of the hours ahead known from last year
    sources: str


def _far_expectation(cfg: TrueupConfig, period: SettlementPeriod, now: int,
                     history: IntervalData | None, memo: PlanMemo) -> _Far:
    """Expected PV and load for every hour of ``period`` (weeks ahead: last year's same
    weeks where the history has them), kept for the local day."""
    tz = cfg.site.timezone
    day = datetime.fromtimestamp(now, ZoneInfo(tz)).date().toordinal()
    key = (period.closing, period.start_utc, day)
    if key not in memo.far:
        hours = np.arange(period.start_utc, period.end_utc, 3600, dtype=np.int64)
        pv, load, sources, covered = _expected(cfg, hours, 3600, tz, history, far=True)
        ahead = hours >= now
        share = float(covered[ahead].mean()) if ahead.any() else 1.0
        memo.far = {k: v for k, v in memo.far.items() if k[2] == day}  # today's only
        memo.far[key] = _Far(pv, load, share, f"PV {sources['pv']}; load {sources['load']}")
    return memo.far[key]


def _spread(far: _Far, history: IntervalData | None) -> tuple[float, float]:
    """σ of the PV and load scenarios for the unseen rest (``SPREAD_PV``, ``SPREAD_LOAD``)."""
    days = 0.0
    if history is not None and history.load_kwh is not None and len(history):
        days = float(np.isfinite(history.load_kwh).sum()) * history.interval_s / 86400
    f = far.last_year
    other = SPREAD_LOAD["profile"] if days >= PROFILE_MIN_DAYS else SPREAD_LOAD["typical"]
    return (f * SPREAD_PV["last_year"] + (1 - f) * SPREAD_PV["model"],
            f * SPREAD_LOAD["last_year"] + (1 - f) * other)


# --------------------------------------------------------------------------------------
# The true-up


def _true_up_contexts(cfg: TrueupConfig, tariff: Tariff, history: IntervalData | None,
                      starts: np.ndarray, step_s: int, horizon: tuple[int, int],
                      true_up_month: int, caps: list[float] | None, memo: PlanMemo,
                      notes: list[str]) -> tuple[tuple[TrueUpContext, ...], _TrueUpBasis | None]:
    """For each settlement period the horizon touches, on tariffs that forfeit leftover
    credit at a true-up — NEM charges settled there (NEM1/NEM2), or monthly charges with the
    credit carried to it (net billing) — the period billed without the horizon, per
    scenario, as the plan's true-up context."""
    st = tariff.spec.settlement
    carry = carries_credit_to_forfeit(st.charges, st.leftover_credit, st.period_months)
    if not carry and not settles_at_true_up(tariff.spec.export.scheme, st.charges,
                                            st.leftover_credit):
        return (), None
    spec = battery_spec(cfg.battery)
    floor = max(1.0, cfg.battery.backup_floor_percent)
    out, basis = [], None
    periods = periods_between(tariff, horizon[0], horizon[1], true_up_month)
    for i, period in enumerate(periods):
        far = _far_expectation(cfg, period, horizon[0], history, memo)
        pv_sigma, load_sigma = _spread(far, history)
        book = rest_book(period, far.pv, far.load, scenario_grid(pv_sigma, load_sigma), spec,
                         floor, memo.projection)
        proj = project_period(tariff, period, book, history=history, horizon=horizon,
                              true_up_month=true_up_month, export_cap_kwh=caps,
                              memo=memo.projection)
        inside = np.flatnonzero((starts >= period.start_utc) & (starts < period.end_utc))
        own = projection_trust(proj.measured_fraction, proj.planned_fraction,
                               far.last_year)
        trust = projection_trust(proj.measured_fraction, proj.planned_fraction,
                                 far.last_year, proj.p_in_credit)
        out.append(settlement_context(proj, starts, inside, carry,
                                      i == len(periods) - 1).hedged(trust))
        if i == 0 and own < 0.995:
            if trust < 0.995:
                notes.append(
                    f"true-up {period.label}: {own:.0%} of the period is this home's own "
                    "data (metered, planned, or its last year); the rest is a generic model, "
                    f"so the plan acts on the projection only {trust:.0%} of the way and "
                    "otherwise credits exports at face value (import a year of your meter's "
                    "data, `trueup import`, to let it act fully)")
            else:
                notes.append(
                    f"true-up {period.label}: {own:.0%} of the period is this home's own "
                    "data, the rest a generic model, but its scenarios agree (in credit in "
                    f"{proj.p_in_credit:.0%} of them, whatever the model's errors): the plan "
                    "acts on it fully")
            basis = _TrueUpBasis(period, book, history, horizon, tariff, true_up_month, caps,
                                 memo.projection)
            measured = proj.measured_fraction
            if measured < 0.999:
                days = (period.end_utc - period.start_utc) / 86400
                notes.append(
                    f"true-up {period.label}: {measured:.0%} of the settlement period is "
                    f"metered, {proj.planned_fraction:.0%} is this plan, the rest "
                    f"({(1 - measured - proj.planned_fraction) * days:.0f} days) is estimated "
                    f"in {len(book.scenarios)} scenarios (PV ±{pv_sigma:.0%}, load "
                    f"±{load_sigma:.0%}; {far.sources})")
            if (history is None or not len(history)) and horizon[0] - period.start_utc > 86400:
                notes.append(f"no history for the {(horizon[0] - period.start_utc) / 86400:.0f}"
                             " days of this settlement period so far: import your meter's "
                             "interval data (`trueup import`, or `trueup plan --usage`) to "
                             "narrow the projection")
    return tuple(out), basis


def settlement_context(proj: PeriodProjection, starts: np.ndarray, inside: np.ndarray,
                       carry: bool, holds_end: bool, regime: str | None = None
                       ) -> TrueUpContext:
    """The plan's view of one projected period (its steps ``inside`` the horizon's
    ``starts``): its totals outside the plan per scenario; for a carry tariff also the
    credit carried into the plan's first month and each later month's charges (months
    before the plan are paid and gone). ``regime``: see TrueUpScenario."""
    first, end = int(inside[0]), int(inside[-1]) + 1
    month = np.searchsorted(proj.month_starts, starts[first:end], side="right") - 1
    j = int(month[0])
    scenarios = []
    for s, t, months in zip(proj.scenarios, proj.totals, proj.months, strict=True):
        charges = [m.energy_charges for m in months]
        scenarios.append(TrueUpScenario(
            s.weight, t.energy_charges, t.nbc, t.credited_export_kwh - t.import_kwh,
            regime=regime, credit_in=leftover_after(0.0, charges[:j]) if carry else 0.0,
            month_charges=tuple(charges[j:]) if carry else ()))
    return TrueUpContext(first, end, proj.period.label,
                         minimum_total=proj.totals[proj.central].minimum,
                         surplus_rate=proj.surplus_rate, scenarios=tuple(scenarios),
                         holds_end=holds_end, kind="carry" if carry else "at_true_up",
                         month_of_step=tuple(int(m) - j for m in month) if carry else ())


# --------------------------------------------------------------------------------------
# The export cap


def _estimated_caps(cfg: TrueupConfig, notes: list[str]) -> list[float]:
    """The tariff's cap is the utility's PV estimate: model it for the configured arrays
    (forecasts/nem_ps.py: pvlib PVWatts on a typical-year weather file)."""
    from forecasts.nem_ps import estimate_monthly_kwh

    est = estimate_monthly_kwh(cfg.pv)
    notes.append(f"export cap estimated from the arrays ({est.annual_kwh:,.0f} kWh/yr, "
                 f"{est.station} typical year): put the figures from your NEM statement in "
                 "[optimizer] export_cap_kwh when you have them")
    return list(est.monthly_kwh)


def _month_exports_so_far(cfg: TrueupConfig, history: IntervalData | None, m_start: int,
                          start: int, notes: list[str]) -> float:
    """This billing month's gross exports before the plan, kWh: metered where the history
    has them, expected (Self-Powered on the expected PV and load) for the rest."""
    metered, covered_to = 0.0, m_start
    if history is not None and len(history):
        inside = (history.start_utc >= m_start) & (history.start_utc < start)
        if inside.any():
            metered = float(history.export_kwh[inside].sum())
            covered_to = int(history.start_utc[inside][-1]) + history.interval_s
    if start - covered_to > 3600:
        from optimizer.behaviour import simulate_self_powered

        hours = np.arange(covered_to - covered_to % 3600, start, 3600, dtype=np.int64)
        pv, load, _, _ = _expected(cfg, hours, 3600, cfg.site.timezone, history, far=True)
        _, exp, _ = simulate_self_powered(pv, load, 0.5 * cfg.battery.usable_kwh,
                                       max(1.0, cfg.battery.backup_floor_percent), 1.0,
                                       battery_spec(cfg.battery))
        guess = float(exp.sum())
        notes.append(f"this month's exports for {(start - covered_to) / 86400:.1f} days "
                     f"before the plan are not in the history: estimated {guess:.0f} kWh "
                     "against the cap")
        metered += guess
    return metered


def _cap_budgets(cfg: TrueupConfig, tariff: Tariff, history: IntervalData | None,
                 prices, fc: Forecast, soc_kwh: float, start: int, horizon_end: int,
                 caps: list[float] | None, memo: PlanMemo, notes: list[str]
                 ) -> tuple[list[CapBudget], Outlook | None]:
    """NEM-PS: the month in progress budgeted by the month outlook (re-solved daily, read
    against the exports so far every plan); months starting inside the horizon pro rata."""
    tz, opt, b = cfg.site.timezone, cfg.optimizer, cfg.battery
    read_day = tariff.spec.calendar.meter_read_day
    step_s = round((horizon_end - start) / len(fc.pv_kwh))
    n = len(fc.pv_kwh)
    budgets: list[CapBudget] = []
    outlook = None
    grid_limit = battery_spec(b).grid_charge_kw(_backup_mode())
    for key in np.unique(prices.month_key):
        key = int(key)
        cap = caps[key % 12] if caps else tariff.export_cap_kwh(key % 12 + 1)
        m_start, m_end = _month_bounds_utc(key, tz, read_day)
        if key != int(prices.month_key[0]):
            share = (horizon_end - m_start) / (m_end - m_start)
            budgets.append(CapBudget(key, cap * min(1.0, share), decredit_value(tariff, key)))
            continue
        used = _month_exports_so_far(cfg, history, m_start, start, notes)
        o = memo.outlook
        if (o is None or o.month_key != key or o.cap_kwh != cap or memo.outlook_at is None
                or not 0 <= start - memo.outlook_at < OUTLOOK_REUSE_S):
            hours = np.arange(start - start % 3600, m_end, 3600, dtype=np.int64)
            opv, oload, _, _ = _expected(cfg, hours, 3600, tz, history, far=True)
            per = max(1, 3600 // step_s)
            k = min(len(hours), n // per)  # the forecast hours first
            opv[:k] = np.add.reduceat(fc.pv_kwh, np.arange(0, n, per))[:k]
            oload[:k] = np.add.reduceat(fc.load_kwh, np.arange(0, n, per))[:k]
            o = month_outlook(tariff, int(hours[0]), m_end, opv, oload, soc_kwh, b, cap, used,
                              horizon_end, can_curtail_pv=cfg.site.can_curtail_pv,
                              solver=opt.solver, time_limit=opt.time_limit_s,
                              grid_charge_limit_kw=grid_limit, run_pulp=run_cbc_killable)
            memo.outlook, memo.outlook_at = o, start
        outlook = replace(o, used_kwh=used)
        kwh = o.budget(start, horizon_end, used)
        outlook = replace(outlook, horizon_budget_kwh=kwh)
        budgets.append(CapBudget(key, kwh, decredit_value(tariff, key)))
    return budgets, outlook


# --------------------------------------------------------------------------------------
# The plan


def _self_powered_discharge(cfg: TrueupConfig, forecast: Forecast, soc_kwh: float,
                            step_s: int) -> float:
    """kWh Tesla's default (Self-Powered at the floor) would discharge over the horizon on
    this forecast: the cycling the owner's battery does anyway (plan.add_wear)."""
    from optimizer.behaviour import simulate_self_powered

    b = cfg.battery
    _, _, dis = simulate_self_powered(forecast.pv_kwh, forecast.load_kwh,
                                      min(max(soc_kwh, 0.0), b.usable_kwh),
                                      max(1.0, b.backup_floor_percent), step_s / 3600.0,
                                      battery_spec(b))
    return float(dis.sum())


def make_plan(cfg: TrueupConfig, *, at_utc: int | None = None, soc_percent: float | None = None,
              history: IntervalData | None = None, forecast: Forecast | None = None,
              solar=None, grid_up: bool | None = None, billing_aware: bool = True,
              memo: PlanMemo | None = None, tariff: Tariff | None = None,
              last_good: PlanResult | None = None, writes_sent_ago_s: tuple[float, ...] = (),
              current_settings: Settings | None = None) -> PlanResult:
    """One plan from the battery's SOC, the grid's state, the forecasts and the history.

    Args:
        cfg: the site (``[optimizer]`` sets the horizon and step).
        at_utc: the clock, UTC epoch s (default: now); the plan starts at the step it is in.
        soc_percent: the battery's SOC now, app % (None: 50 %, with a note).
        history: metered intervals so far (only what lies before the plan is used).
        forecast: PV and load per plan step (a backtest's); None: the daemon's own
            (``solar``, a forecasts.solar.SolarForecast, else clear sky; load from history).
        grid_up: False during an outage: the plan neither imports nor exports.
        billing_aware: False plans on linear prices alone, without the export cap and the
            true-up (the backtest's ``tou_lp`` reference, as EMHASS-style tools plan).
        memo: what this planner keeps between plans (the daemon's, a backtest strategy's).
        tariff: the tariff (default: ``cfg.tariff``).
        last_good: the plan to keep if this one cannot be solved.
        writes_sent_ago_s: the age, seconds, of each field write sent in the last 24 h (the
            safety rails' record): the schedule is fitted to what the path's budget leaves.
        current_settings: the settings in force (their change costs writes too), if known.
    """
    tariff = tariff or load_tariff(cfg.tariff)
    memo = memo if memo is not None else PlanMemo()
    tz = cfg.site.timezone
    opt = cfg.optimizer
    step_s = opt.step_minutes * 60
    now = int(time.time()) if at_utc is None else int(at_utc)
    start = now - now % step_s
    n = opt.horizon_hours * 3600 // step_s
    starts = start + step_s * np.arange(n, dtype=np.int64)
    horizon_end = int(starts[-1]) + step_s
    b = cfg.battery
    soc_kwh = b.usable_kwh * (50.0 if soc_percent is None else soc_percent) / 100.0
    notes: list[str] = []
    if soc_percent is None:
        notes.append("no SOC given: planning from 50 %")
    stale = rates_date_note(tariff, start)
    if stale:
        notes.append(stale)

    if history is not None and len(history) and history.end_utc > start:
        later = int(np.sum(history.start_utc >= start))
        history = history.select(history.start_utc < start)
        notes.append(f"history after the plan's start ignored ({later} intervals)")
    if history is not None and not len(history):
        history = None
    if forecast is None:
        forecast = horizon_forecast(cfg, starts, step_s, history, solar)
    elif len(forecast.pv_kwh) != n or len(forecast.load_kwh) != n:
        raise ValueError(f"the forecast has {len(forecast.pv_kwh)} steps, the horizon {n}")
    prices = step_prices(tariff, starts)
    true_up_month = opt.true_up_month or tariff.spec.settlement.true_up_month
    caps = opt.export_cap_kwh
    cap_spec = tariff.spec.export_cap
    if caps is None and cap_spec is not None and cap_spec.estimate == "pv":
        caps = _estimated_caps(cfg, notes)

    budgets: list[CapBudget] = []
    outlook = None
    true_ups: tuple[TrueUpContext, ...] = ()
    basis = None
    if billing_aware:
        if cap_spec is not None and tariff.spec.export.scheme == "nem":
            budgets, outlook = _cap_budgets(cfg, tariff, history, prices, forecast, soc_kwh,
                                            start, horizon_end, caps, memo, notes)
        true_ups, basis = _true_up_contexts(cfg, tariff, history, starts, step_s,
                                            (start, horizon_end), true_up_month, caps, memo,
                                            notes)
    demand = ()
    if billing_aware and tariff.spec.demand is not None:
        demand = demand_budgets(tariff, prices.month_key,
                                tariff.demand_period(tariff.classify(starts)),
                                _demand_so_far(tariff, history, start))
    grid_limit = battery_spec(b).grid_charge_kw(_backup_mode())
    if demand:
        # a grid charge runs on whatever the home draws meanwhile, and the Powerwall cannot
        # stop it when the load jumps (an EV starts): under a demand charge it could set
        # the month's peak. The battery fills from PV only; it lowers imports, never adds.
        grid_limit = 0.0
        notes.append("demand charges: no grid charging (a charge running when the load "
                     "jumps would set the month's peak); the battery fills from solar")
    import_limit, export_limit = opt.service_limit_kw, None
    if grid_up is False:
        import_limit, export_limit, grid_limit = 0.0, 0.0, 0.0
        notes.append("the grid is down: planning without it (no grid charging, no export) "
                     "until it is back")
    x = PlanInputs(
        prices=prices, pv_kwh=forecast.pv_kwh, load_kwh=forecast.load_kwh, soc_kwh=soc_kwh,
        battery=b, step_hours=step_s / 3600.0, can_curtail_pv=cfg.site.can_curtail_pv,
        cap_budgets=tuple(budgets), true_ups=true_ups, grid_charge_limit_kw=grid_limit,
        grid_import_limit_kw=import_limit, export_limit_kw=export_limit,
        baseline_discharge_kwh=_self_powered_discharge(cfg, forecast, soc_kwh, step_s),
        tie_break_per_kwh=TIE_BREAK_PER_KWH, demand=demand,
        load_high_kwh=_recent_high_load(history, starts, step_s, tz) if demand else None,
    )
    cap_left = None
    if outlook is not None:
        cap_left = max(0.0, outlook.cap_kwh - outlook.used_kwh)
    result = PlanResult(generated_at=now, inputs=x, plan=failed_plan(x, "failed", "", 0.0),
                        schedule=None, tariff=tariff, tz=tz, outlook=outlook,
                        forecast_sources=dict(forecast.sources), notes=notes,
                        cap_budget_kwh=budgets[0].kwh if budgets else None, basis=basis)
    rails = cfg.rails()
    budget = WriteBudget(per_hour=rails.max_writes_per_hour, per_day=rails.max_writes_per_day,
                         sent_ago_s=tuple(writes_sent_ago_s),
                         write_price=cfg.safety.write_price)
    return solve_with_fallback(result, cfg, last_good=last_good, cap_left_kwh=cap_left,
                               budget=budget, current=current_settings)


HIGH_LOAD_DAYS = 28  # the recent days whose highest load at each time of day is budgeted


def _recent_high_load(history: IntervalData | None, starts: np.ndarray, step_s: int,
                      tz: str) -> np.ndarray | None:
    """The home's highest load (kWh per plan step) at each step's local time of day over
    the last :data:`HIGH_LOAD_DAYS` days of history, or None without load history. An EV
    that charged at 03:00 on some nights may charge tonight: a grid charge there could set
    the month's demand peak (optimizer.plan.demand_margin)."""
    if history is None or not len(history) or history.load_kwh is None:
        return None
    recent = history.select(history.start_utc >= int(starts[0]) - HIGH_LOAD_DAYS * 86400)
    if not len(recent) or recent.interval_s > step_s:
        return None
    per = step_s // recent.interval_s
    f = local_fields(recent.start_utc, tz)
    slot = ((f.hour * 3600 + f.minute * 60) // step_s).astype(np.int64)
    day = f.day
    # kWh per step: the history's intervals summed into steps of the same day and slot
    key = day * (86400 // step_s) + slot
    uniq, inv = np.unique(key, return_inverse=True)
    per_step = np.bincount(inv, weights=np.nan_to_num(recent.load_kwh))
    counts = np.bincount(inv)
    full = counts >= per
    high = np.zeros(86400 // step_s)
    np.maximum.at(high, (uniq % (86400 // step_s))[full], per_step[full])
    g = local_fields(starts, tz)
    return high[((g.hour * 3600 + g.minute * 60) // step_s).astype(np.int64)]


def _demand_so_far(tariff: Tariff, history: IntervalData | None, start: int
                   ) -> dict[int, dict[str, float]]:
    """The billing month in progress: its billing demand so far per key, from the history
    (optimizer.billing.billing_state; the ratchet's months before it included)."""
    if history is None or not len(history):
        return {}
    from optimizer.billing import billing_state

    d = tariff.spec.demand
    back = start - (d.ratchet_months + 1) * 31 * 86400 if d and d.ratchet_percent else \
        start - 32 * 86400
    recent = history.select((history.start_utc >= back) & (history.start_utc < start))
    if not len(recent):
        return {}
    st = billing_state(tariff, recent)
    y, m = int(st.month[:4]), int(st.month[5:])
    return {y * 12 + m - 1: dict(st.month_demand_kw)}


def solve_with_fallback(result: PlanResult, cfg: TrueupConfig, *,
                        last_good: PlanResult | None = None,
                        cap_left_kwh: float | None = None, budget: WriteBudget | None = None,
                        current: Settings | None = None) -> PlanResult:
    """Solve ``result.inputs``; on failure the other solver, then the last good plan, then
    safe default settings (Self-Powered at the floor). Bad forecasts (negative or not
    finite) go straight to the fallbacks: they are a provider's failure, not data."""
    x, opt, notes = result.inputs, cfg.optimizer, result.notes
    bad = [name for name, a in (("PV", x.pv_kwh), ("load", x.load_kwh))
           if not np.all(np.isfinite(a)) or np.any(a < 0)]
    plan = None
    if bad:
        notes.append(f"the {' and '.join(bad)} forecast has negative or missing values: "
                     "not planning on it")
    else:
        plan = solve(x, solver=opt.solver, time_limit=opt.time_limit_s, gap=opt.mip_gap,
                     run_pulp=run_cbc_killable)
        if not plan.ok:
            other = "cbc" if opt.solver == "highs" else "highs"
            notes.append(f"{opt.solver} failed ({plan.status}); trying {other}")
            plan = solve(x, solver=other, time_limit=opt.time_limit_s, gap=opt.mip_gap,
                         run_pulp=run_cbc_killable)
    if plan is not None and plan.ok:
        result.plan = plan
        result.schedule = schedule(plan, x, result.tz, cap_left_kwh=cap_left_kwh,
                                   budget=budget, current=current)
        fit = result.schedule.budget
        if fit is not None and fit.changes_dropped:
            notes.append(f"the write budget ({fit.per_day} field writes a day, "
                         f"{fit.left_today} left) keeps {fit.writes_kept} of the "
                         f"{fit.writes_wanted} writes the next 24 h wanted: "
                         f"{fit.changes_dropped} change(s) dropped, worth "
                         f"${fit.value_lost:.2f} over the horizon")
        return result
    if last_good is not None and last_good.schedule is not None:
        last_good.notes = [*notes, "no plan could be solved: keeping the last good plan"]
        return last_good
    notes.append("no plan could be solved: safe default settings")
    n = len(x.pv_kwh)
    status = plan.status if plan is not None else "failed"
    result.plan = failed_plan(x, status, plan.solver if plan else opt.solver,
                              plan.solve_seconds if plan else 0.0)
    default = safe_default(x.battery, int(x.prices.start_utc[0]))
    result.schedule = Schedule(entries=(default,), per_step=(default.settings,) * n,
                               signals=(default.signal,) * n, plan_value=float("nan"),
                               settings_value=float("nan"),
                               simulated_soc_kwh=np.full(n, x.soc_kwh))
    return result


def _backup_mode():
    from optimizer.behaviour import Mode

    return Mode.BACKUP


AT_YEARS = (2000, 2100)  # the years --at may name
def parse_at(text: str | None) -> int | None:
    """``--at`` as UTC epoch seconds: ISO 8601 with an offset (or Z)."""
    if text is None:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("give --at with its UTC offset, e.g. 2025-07-15T14:00-07:00")
    if not AT_YEARS[0] <= dt.year <= AT_YEARS[1]:
        raise ValueError(f"year {dt.year} is outside {AT_YEARS[0]}-{AT_YEARS[1]}: tariffs, "
                         "forecasts and the history are dated")
    return int(dt.astimezone(UTC).timestamp())
