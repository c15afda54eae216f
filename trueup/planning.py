"""Assemble one plan: config + state + forecasts + billing state → plan → settings.

The daemon and `trueup plan` both call :func:`make_plan`. It owns the *time* decisions
(the horizon's steps, the month's end, the true-up), reads the offline forecasts, builds
the billing state from history, runs the month outlook for the export cap and the
projection for the true-up, solves, and turns the plan into a checked schedule. The
fallback chain: the plan (LP, MILP where needed) → the other solver → the last good plan
→ safe default settings (Self-Powered at the floor).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from forecasts.clearsky import expected_pv_kwh
from forecasts.last_year import same_weeks_last_year
from forecasts.load import expected_load_kwh
from optimizer.billing import BillingState, billing_state
from optimizer.intervals import IntervalData
from optimizer.localtime import local_fields
from optimizer.outlook import Outlook, month_outlook
from optimizer.plan import CapBudget, Plan, PlanInputs, TrueUpContext, failed_plan, solve
from optimizer.policy import Schedule, battery_spec, safe_default, schedule
from optimizer.prices import decredit_value, step_prices
from optimizer.tariff import Tariff, load_tariff
from trueup.config import TrueupConfig


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
    state: BillingState | None = None
    forecast_sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        """The ``plan`` JSON contract (ARCHITECTURE.md), with extra keys."""
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
            true_up = {"projected_balance": round(p.projected_cx or 0.0, 2),
                       "projected_due": round(p.true_up_due, 2),
                       "marginal_credit_value": p.marginal_credit_value}
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
        if p.true_up_label:
            out["true_up"]["month"] = p.true_up_label
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
              ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Expected PV and load kWh per step. ``far``: for the month outlook and the true-up
    projection (weeks ahead), the same weeks of last year wherever the history has them
    (forecasts/last_year.py), else the offline expectation."""
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
    load, load_src = expected_load_kwh(starts, step_s, tz, history,
                                       known_loads=cfg.forecast.load.known)
    if far:
        ly_pv, ly_load, covered = same_weeks_last_year(starts, step_s, history)
        if covered.any():
            pv, load = np.where(covered, ly_pv, pv), np.where(covered, ly_load, load)
            pv_src = load_src = f"the same weeks last year ({int(covered.sum())} of " \
                f"{len(starts)} steps)"
    return pv, load, {"pv": pv_src, "load": load_src}


@dataclass(frozen=True)
class _Projection:
    """Expected bill figures of a span with no data (Self-Powered at the floor)."""

    cx: float = 0.0  # NEM energy charges excl. NBC, $
    nbc: float = 0.0  # $
    imports_kwh: float = 0.0
    exports_kwh: float = 0.0


_SPAN_CACHE: dict[tuple, _Projection] = {}
_SPAN_CACHE_MAX = 64


def _project(cfg: TrueupConfig, tariff: Tariff, t0: int, t1: int, tz: str,
             history: IntervalData | None) -> _Projection:
    """Expected PV and load over [t0, t1) (UTC s), run through a Self-Powered battery
    at the floor, priced with the tariff (hourly; the cap is not applied).

    Kept per whole hour of both ends: a daemon re-plans every 15 minutes, and the months
    of hourly battery simulation behind a true-up projection would otherwise be most of
    each plan's time."""
    h0, h1 = t0 - t0 % 3600, t1 - t1 % 3600
    key = (cfg.model_dump_json(include={"site", "battery", "pv"}), tariff.id, tariff.source,
           tz, history.end_utc // 86400 if history is not None else None, h0, h1)
    if key not in _SPAN_CACHE:
        if len(_SPAN_CACHE) >= _SPAN_CACHE_MAX:
            _SPAN_CACHE.clear()
        _SPAN_CACHE[key] = _project_span(cfg, tariff, h0, h1, tz, history)
    return _SPAN_CACHE[key]


def _project_span(cfg: TrueupConfig, tariff: Tariff, t0: int, t1: int, tz: str,
                  history: IntervalData | None) -> _Projection:
    n = max(0, (t1 - t0) // 3600)
    if n == 0:
        return _Projection()
    starts = t0 + 3600 * np.arange(n, dtype=np.int64)
    pv, load, _ = _expected(cfg, starts, 3600, tz, history, far=True)
    imp, exp = _self_powered(pv, load, cfg)
    prices = step_prices(tariff, starts)
    return _Projection(
        cx=float(np.sum(imp * (prices.import_price - prices.nbc))
                 - np.sum(exp * prices.export_credit)),
        nbc=float(prices.nbc * imp.sum()), imports_kwh=float(imp.sum()),
        exports_kwh=float(exp.sum()))


def _settlement_periods(tariff: Tariff, true_up_month: int, starts: np.ndarray, step_s: int,
                        tz: str) -> list[tuple[int, int, int, int, str]]:
    """The settlement periods the horizon's steps fall in: (first step, end step, period
    start UTC, period end UTC, true-up month label). Periods end with their true-up month
    (calendar months) and last ``period_months`` months."""
    zone = ZoneInfo(tz)
    k = tariff.spec.settlement.period_months
    f = local_fields(starts, tz)
    absm = f.year * 12 + f.month  # 1-based absolute month of each step
    close = absm + (true_up_month - absm) % k  # the month that closes each step's period

    def first_of(abs_month: int) -> int:  # UTC of local midnight starting month abs+1
        y, m = divmod(abs_month, 12)  # abs = y*12 + m with m in 1..12 → next month
        return int(datetime(y, m + 1, 1, tzinfo=zone).timestamp())

    out = []
    for c in np.unique(close):
        steps = np.flatnonzero(close == c)
        end = first_of(int(c))
        start = first_of(int(c) - k)
        label = f"{(int(c) - 1) // 12:04d}-{(int(c) - 1) % 12 + 1:02d}"
        out.append((int(steps[0]), int(steps[-1]) + 1, start, end, label))
    return out


def _true_ups(cfg: TrueupConfig, tariff: Tariff, history: IntervalData | None, start: int,
              horizon_end: int, starts: np.ndarray, step_s: int, true_up_month: int,
              tz: str, notes: list[str]) -> tuple[TrueUpContext, ...]:
    """NEM with charges settled at a true-up that forfeits leftover credit (PG&E NEM2):
    for each settlement period in the horizon, the figures before the plan (history, and
    an estimate for any part history does not cover) and the expected rest after it."""
    st = tariff.spec.settlement
    if (tariff.spec.export.scheme != "nem" or st.charges != "at_true_up"
            or st.leftover_credit != "forfeit"):
        return ()
    ch = tariff.spec.charges
    out = []
    periods = _settlement_periods(tariff, true_up_month, starts, step_s, tz)
    for i, (a, b, p_start, p_end, label) in enumerate(periods):
        days = (p_end - p_start) / 86400  # local-midnight to local-midnight: round it
        minimum = ch.minimum_per_day * round(days) + ch.minimum_per_month * st.period_months
        before = _Projection()
        if i == 0:
            before = _period_so_far(cfg, tariff, history, p_start, start, true_up_month, tz,
                                    notes)
        after = _project(cfg, tariff, horizon_end, p_end, tz, history) \
            if p_end > horizon_end else _Projection()
        out.append(TrueUpContext(
            first_step=a, end_step=b, label=label, cx_before=before.cx,
            nbc_before=before.nbc, cx_after=after.cx, nbc_after=after.nbc,
            minimum_total=minimum,
            surplus_kwh_before=before.exports_kwh - before.imports_kwh,
            surplus_kwh_after=after.exports_kwh - after.imports_kwh,
            surplus_rate=st.surplus_rate, holds_end=(i == len(periods) - 1)))
    return tuple(out)


def _period_so_far(cfg: TrueupConfig, tariff: Tariff, history: IntervalData | None,
                   p_start: int, start: int, true_up_month: int, tz: str,
                   notes: list[str]) -> _Projection:
    """The settlement period from its start to the plan: metered history where there is
    some (billed by the engine, cap included), expected values for the rest."""
    covered = None
    if history is not None and len(history):
        inside = history.select((history.start_utc >= p_start) & (history.start_utc < start))
        if len(inside):
            covered = inside
    if covered is None:
        days = (start - p_start) / 86400
        if days > 1:
            notes.append(f"no history for the {days:.0f} days of this settlement period so "
                         "far: the true-up projection estimates them (give --usage)")
        return _project(cfg, tariff, p_start, start, tz, history)
    state = billing_state(tariff, covered, true_up_month=true_up_month,
                          export_cap_kwh=cfg.optimizer.export_cap_kwh)
    head = _project(cfg, tariff, p_start, int(covered.start_utc[0]), tz, history)
    tail = _project(cfg, tariff, covered.end_utc, start, tz, history)
    gap_days = ((int(covered.start_utc[0]) - p_start) + (start - covered.end_utc)) / 86400
    if gap_days > 1:
        notes.append(f"history covers this settlement period only in part: {gap_days:.0f} "
                     "days of it are estimated for the true-up projection")
    return _Projection(
        cx=state.period_energy_charges + head.cx + tail.cx,
        nbc=state.period_nbc + head.nbc + tail.nbc,
        imports_kwh=state.period_import_kwh + head.imports_kwh + tail.imports_kwh,
        exports_kwh=state.period_export_kwh + head.exports_kwh + tail.exports_kwh)


def _self_powered(pv: np.ndarray, load: np.ndarray, cfg: TrueupConfig
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Hourly imports and exports of a Self-Powered battery at the floor (expected rest of
    the period): the behaviour model's rule, vectorised per day would be overkill here."""
    from optimizer.behaviour import ExportRule, Mode, Settings, simulate

    b = cfg.battery
    s = Settings(Mode.SELF_POWERED, max(1.0, b.backup_floor_percent), False,
                 ExportRule.PV_ONLY)
    sim = simulate(s, b.usable_kwh * 0.5, load, pv, 1.0, battery_spec(b))
    return sim.import_kwh, sim.export_kwh


def _estimated_caps(cfg: TrueupConfig, notes: list[str]) -> list[float]:
    """The tariff's cap is the utility's PV estimate: model it for the configured arrays
    (forecasts/nem_ps.py: pvlib PVWatts on a typical-year weather file)."""
    from forecasts.nem_ps import estimate_monthly_kwh

    est = estimate_monthly_kwh(cfg.pv)
    notes.append(f"export cap estimated from the arrays ({est.annual_kwh:,.0f} kWh/yr, "
                 f"{est.station} typical year): put the figures from your NEM statement in "
                 "[optimizer] export_cap_kwh when you have them")
    return list(est.monthly_kwh)


def _month_exports_so_far(cfg: TrueupConfig, tariff: Tariff, history: IntervalData | None,
                          state: BillingState | None, key: int, m_start: int, start: int,
                          tz: str, notes: list[str]) -> float:
    """This month's exports before the plan, kWh: metered where history has them, expected
    for the rest of the month so far (with a note)."""
    metered, covered_to = 0.0, m_start
    if state is not None and state.month == _month_label(key):
        metered, covered_to = state.month_export_kwh, history.end_utc
    if start - covered_to > 3600:
        guess = _project(cfg, tariff, covered_to, start, tz, history).exports_kwh
        days = (start - covered_to) / 86400
        notes.append(f"this month's exports for {days:.1f} days before the plan are not in "
                     f"the history: estimated {guess:.0f} kWh against the cap")
        metered += guess
    return metered


OUTLOOK_REUSE_S = 3600  # the month outlook is re-solved at most hourly
outlook_at: dict[int, int] = {}  # id(Outlook) → when it was solved (UTC s)


def _recent_outlook(previous: PlanResult | None, key: int, start: int, cap: float,
                    used: float) -> Outlook | None:
    """The previous plan's month outlook, if it is for this month and under an hour old,
    with its budget trimmed to the cap left now."""
    if previous is None or previous.outlook is None or previous.outlook.month_key != key:
        return None
    solved = outlook_at.get(id(previous.outlook))
    if solved is None or start - solved >= OUTLOOK_REUSE_S:
        return None
    o = previous.outlook
    budget = min(o.horizon_budget_kwh, max(0.0, cap - used))
    reused = Outlook(o.month_key, cap, used, o.planned_kwh, budget, o.status)
    outlook_at[id(reused)] = solved
    return reused


def make_plan(cfg: TrueupConfig, *, at_utc: int | None = None, soc_percent: float | None = None,
              history: IntervalData | None = None, last_good: PlanResult | None = None,
              previous: PlanResult | None = None, solar=None) -> PlanResult:
    """One plan from the configuration, the battery's SOC and the history so far.

    ``previous`` (the daemon's last plan) lets the month outlook be reused for an hour.
    ``solar`` (a forecasts.solar.SolarForecast) replaces the offline PV estimate where it
    covers the horizon's steps."""
    tariff = load_tariff(cfg.tariff)
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
        notes.append("no --soc given: planning from 50 %")

    if history is not None and len(history) and history.end_utc > start:
        later = int(np.sum(history.start_utc >= start))
        history = history.select(history.start_utc < start)
        notes.append(f"history after the plan's start ignored ({later} intervals)")
    if history is not None and not len(history):
        history = None
    pv, load, sources = _expected(cfg, starts, step_s, tz, history, solar)
    prices = step_prices(tariff, starts)
    true_up_month = opt.true_up_month or tariff.spec.settlement.true_up_month
    caps = opt.export_cap_kwh
    cap_spec = tariff.spec.export_cap
    if caps is None and cap_spec is not None and cap_spec.estimate == "pv":
        caps = _estimated_caps(cfg, notes)
    state = None
    if history is not None:
        state = billing_state(tariff, history, true_up_month=true_up_month,
                              export_cap_kwh=caps)

    # the export cap: the outlook budgets the month in progress; later months pro rata
    budgets: list[CapBudget] = []
    outlook = None
    if tariff.spec.export_cap is not None and tariff.spec.export.scheme == "nem":
        read_day = tariff.spec.calendar.meter_read_day
        for key in np.unique(prices.month_key):
            key = int(key)
            cap = caps[key % 12] if caps else tariff.export_cap_kwh(key % 12 + 1)
            m_start, m_end = _month_bounds_utc(key, tz, read_day)
            used = 0.0
            if key == int(prices.month_key[0]):
                used = _month_exports_so_far(cfg, tariff, history, state, key, m_start,
                                             start, tz, notes)
                hours = np.arange(start, m_end, 3600, dtype=np.int64)
                opv, oload, _ = _expected(cfg, hours, 3600, tz, history, far=True)
                k = min(len(hours), (horizon_end - start) // 3600)  # forecast hours first
                opv[:k] = np.add.reduceat(pv, np.arange(0, n, 3600 // step_s))[:k]
                oload[:k] = np.add.reduceat(load, np.arange(0, n, 3600 // step_s))[:k]
                outlook = _recent_outlook(previous, key, start, cap, used)
                if outlook is None:
                    outlook = month_outlook(
                        tariff, start, m_end, opv, oload, soc_kwh, b, cap, used, horizon_end,
                        can_curtail_pv=cfg.site.can_curtail_pv, solver=opt.solver,
                        time_limit=opt.time_limit_s,
                        grid_charge_limit_kw=battery_spec(b).grid_charge_kw(_backup_mode()))
                    outlook_at[id(outlook)] = start
                kwh = outlook.horizon_budget_kwh
            else:
                share = (horizon_end - m_start) / (m_end - m_start)
                kwh = cap * min(1.0, share)
            budgets.append(CapBudget(key, kwh, decredit_value(tariff, key)))

    x = PlanInputs(
        prices=prices, pv_kwh=pv, load_kwh=load, soc_kwh=soc_kwh, battery=b,
        step_hours=step_s / 3600.0, can_curtail_pv=cfg.site.can_curtail_pv,
        cap_budgets=tuple(budgets),
        true_ups=_true_ups(cfg, tariff, history, start, horizon_end, starts, step_s,
                           true_up_month, tz, notes),
        grid_charge_limit_kw=battery_spec(b).grid_charge_kw(_backup_mode()),
        grid_import_limit_kw=opt.service_limit_kw,
    )
    cap_left = None
    if outlook is not None:
        cap_left = max(0.0, outlook.cap_kwh - outlook.used_kwh)
    result = PlanResult(generated_at=now, inputs=x, plan=failed_plan(x, "failed", "", 0.0),
                        schedule=None, tariff=tariff, tz=tz, outlook=outlook, state=state,
                        forecast_sources=sources, notes=notes,
                        cap_budget_kwh=budgets[0].kwh if budgets else None)
    return solve_with_fallback(result, cfg, last_good=last_good, cap_left_kwh=cap_left)


def solve_with_fallback(result: PlanResult, cfg: TrueupConfig, *,
                        last_good: PlanResult | None = None,
                        cap_left_kwh: float | None = None) -> PlanResult:
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
        plan = solve(x, solver=opt.solver, time_limit=opt.time_limit_s, gap=opt.mip_gap)
        if not plan.ok:
            other = "cbc" if opt.solver == "highs" else "highs"
            notes.append(f"{opt.solver} failed ({plan.status}); trying {other}")
            plan = solve(x, solver=other, time_limit=opt.time_limit_s, gap=opt.mip_gap)
    if plan is not None and plan.ok:
        result.plan = plan
        result.schedule = schedule(plan, x, result.tz, cap_left_kwh=cap_left_kwh)
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


def parse_at(text: str | None) -> int | None:
    """``--at`` as UTC epoch seconds: ISO 8601 with an offset (or Z)."""
    if text is None:
        return None
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("give --at with its UTC offset, e.g. 2025-07-15T14:00-07:00")
    return int(dt.astimezone(UTC).timestamp())
