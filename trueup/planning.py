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
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np

from forecasts.clearsky import expected_pv_kwh
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
            "status": p.status, "objective": round(p.objective, 4),
            "intervals": intervals, "settings": settings, "export_cap": cap,
            "true_up": true_up,
            "tariff": self.tariff.id,
            "soc_percent": round(100 * x.soc_kwh / x.battery.usable_kwh, 2),
            "forecasts": self.forecast_sources,
            "notes": self.notes + p.notes,
        }
        if self.schedule:
            out["value"] = {"plan_dollars": round(self.schedule.plan_value, 4),
                            "settings_dollars": round(self.schedule.settings_value, 4)}
        return out


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


def _expected(cfg: TrueupConfig, starts: np.ndarray, step_s: int, tz: str,
              history: IntervalData | None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    site = cfg.site
    month = local_fields(starts, tz).month
    pv = expected_pv_kwh(starts, step_s, site.latitude, site.longitude, cfg.pv, month)
    load, load_src = expected_load_kwh(starts, step_s, tz, history)
    return pv, load, {"pv": "offline clear-sky × monthly clearness", "load": load_src}


def _true_up_context(cfg: TrueupConfig, tariff: Tariff, state: BillingState | None,
                     horizon_end: int, true_up_month: int, tz: str,
                     history: IntervalData | None) -> TrueUpContext | None:
    """NEM with charges settled at the true-up: the period's figures before the plan and
    the expected rest after it (expected PV and load, Self-Powered at the floor)."""
    st = tariff.spec.settlement
    if tariff.spec.export.scheme != "nem" or st.charges != "at_true_up":
        return None
    zone = ZoneInfo(tz)
    end_local = datetime.fromtimestamp(horizon_end, zone)
    # the true-up month that closes the period holding the horizon's end
    y = end_local.year if end_local.month <= true_up_month else end_local.year + 1
    ey, em = (y + 1, 1) if true_up_month == 12 else (y, true_up_month + 1)
    period_end = int(datetime(ey, em, 1, tzinfo=zone).timestamp())
    first = ey * 12 + (em - 1) - st.period_months
    days = (date(ey, em, 1) - date(first // 12, first % 12 + 1, 1)).days
    ch = tariff.spec.charges
    minimum_total = ch.minimum_per_day * days + ch.minimum_per_month * st.period_months

    cx_after = nbc_after = surplus_after = 0.0
    n = max(0, (period_end - horizon_end) // 3600)
    if n:
        starts = horizon_end + 3600 * np.arange(n, dtype=np.int64)
        pv, load, _ = _expected(cfg, starts, 3600, tz, history)
        imp, exp = _self_powered(pv, load, cfg)
        prices = step_prices(tariff, starts)
        nbc = prices.nbc
        cx_after = float(np.sum(imp * (prices.import_price - nbc))
                         - np.sum(exp * prices.export_credit))
        nbc_after = float(nbc * imp.sum())
        surplus_after = float(exp.sum() - imp.sum())
    before = state
    return TrueUpContext(
        cx_before=before.period_energy_charges if before else 0.0,
        nbc_before=before.period_nbc if before else 0.0,
        cx_after=cx_after, nbc_after=nbc_after, minimum_total=minimum_total,
        surplus_kwh_before=(before.period_export_kwh - before.period_import_kwh)
        if before else 0.0,
        surplus_kwh_after=surplus_after, surplus_rate=st.surplus_rate)


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


def make_plan(cfg: TrueupConfig, *, at_utc: int | None = None, soc_percent: float | None = None,
              history: IntervalData | None = None, last_good: PlanResult | None = None
              ) -> PlanResult:
    """One plan from the configuration, the battery's SOC and the history so far."""
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

    pv, load, sources = _expected(cfg, starts, step_s, tz, history)
    prices = step_prices(tariff, starts)
    true_up_month = opt.true_up_month or tariff.spec.settlement.true_up_month
    caps = opt.export_cap_kwh
    state = None
    if history is not None and len(history):
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
            used = state.month_export_kwh if (state and state.month == _month_label(key)) \
                else 0.0
            if key == int(prices.month_key[0]):
                hours = np.arange(start, m_end, 3600, dtype=np.int64)
                opv, oload, _ = _expected(cfg, hours, 3600, tz, history)
                k = min(len(hours), (horizon_end - start) // 3600)  # forecast hours first
                opv[:k] = np.add.reduceat(pv, np.arange(0, n, 3600 // step_s))[:k]
                oload[:k] = np.add.reduceat(load, np.arange(0, n, 3600 // step_s))[:k]
                outlook = month_outlook(tariff, start, m_end, opv, oload, soc_kwh, b, cap,
                                        used, horizon_end,
                                        can_curtail_pv=cfg.site.can_curtail_pv)
                kwh = outlook.horizon_budget_kwh
            else:
                share = (horizon_end - m_start) / (m_end - m_start)
                kwh = cap * min(1.0, share)
            budgets.append(CapBudget(key, kwh, decredit_value(tariff, key)))

    x = PlanInputs(
        prices=prices, pv_kwh=pv, load_kwh=load, soc_kwh=soc_kwh, battery=b,
        step_hours=step_s / 3600.0, can_curtail_pv=cfg.site.can_curtail_pv,
        cap_budgets=tuple(budgets),
        true_up=_true_up_context(cfg, tariff, state, horizon_end, true_up_month, tz, history),
        grid_charge_limit_kw=battery_spec(b).grid_charge_kw(_backup_mode()),
        grid_import_limit_kw=opt.service_limit_kw,
    )
    plan = solve(x, solver=opt.solver, time_limit=opt.time_limit_s, gap=opt.mip_gap)
    if not plan.ok:
        other = "cbc" if opt.solver == "highs" else "highs"
        notes.append(f"{opt.solver} failed ({plan.status}); trying {other}")
        plan = solve(x, solver=other, time_limit=opt.time_limit_s, gap=opt.mip_gap)
    cap_left = None
    if outlook is not None:
        cap_left = max(0.0, outlook.cap_kwh - outlook.used_kwh)
    result = PlanResult(generated_at=now, inputs=x, plan=plan, schedule=None, tariff=tariff,
                        tz=tz, outlook=outlook, state=state, forecast_sources=sources,
                        notes=notes,
                        cap_budget_kwh=budgets[0].kwh if budgets else None)
    if plan.ok:
        result.schedule = schedule(plan, x, tz, cap_left_kwh=cap_left)
        return result
    if last_good is not None and last_good.schedule is not None:
        notes.append("no plan could be solved: keeping the last good plan")
        last_good.notes = notes
        return last_good
    notes.append("no plan could be solved: safe default settings")
    result.plan = failed_plan(x, plan.status, plan.solver, plan.solve_seconds)
    default = safe_default(b, start)
    result.schedule = Schedule(entries=(default,), per_step=(default.settings,) * n,
                               signals=(default.signal,) * n, plan_value=float("nan"),
                               settings_value=float("nan"),
                               simulated_soc_kwh=np.full(n, soc_kwh))
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
