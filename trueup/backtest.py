"""The backtest: replay PV and load through the Powerwall behaviour model, bill the result.

A window of 15-minute PV and load (the example year, or a site's CSV with ``load_kwh`` and
``pv_kwh``) is replayed under each *strategy*: a function that returns the gateway settings
(and Time-Based Control's price signal) for every step, decided causally — from the tariff,
the forecasts a daemon would have had and the simulated past. The settings go through
:func:`optimizer.behaviour.simulate` (the model the policy and the simulated gateway use),
and the *simulated* imports and exports are billed by :func:`optimizer.billing.bill`.

Strategies:

* ``self_powered`` — Tesla's default: Self-Powered at the owner's backup floor.
* ``tbc_like`` — Time-Based Control with grid charging on and export "Everything": charge
  toward 100 % in the tariff's cheapest TOU period, export at full power in its dearest.
* ``trueup`` — **the daemon's planner** (:func:`trueup.planning.make_plan`, the same
  function the daemon's plan job and ``trueup plan`` call) every hour over the next 24 hours
  in hourly steps, given only the clock, the history (what happened before the window, then
  the simulated window so far) and the forecast; the first hour of each plan's settings is
  carried out, then the next decision is taken from the simulated SOC.
* ``tou_lp`` — the same planner with the billing rules off (linear prices, no export cap,
  no true-up): what EMHASS-style tools do.
* ``perfect_foresight`` — the bound: one LP over the whole window (hourly) with the true PV
  and load, minimising exactly what is billed (no wear term, no binaries, no grid-charge-rate
  limit: a relaxation of every strategy's flows; the true-up settled exactly by solving its
  two NSC regimes). Its own flows are billed, not replayed, so it is ≤ every strategy.

**Scored on whole settlement periods.** A true-up settles a period (12 billing months on
PG&E NEM2 and NBT), and a window rarely matches one. The months of the periods the window
touches that lie outside it are billed as the data has them — the usage outside the window
and the year before (``context``), or failing that the same weeks 52 or 104 weeks earlier —
the same for every strategy; a month that cannot be filled is refused with what to pass. No
window is trued up at the end of its data. The planner sees the months before the window as
history, never those after it.

Forecasts (what ``tou_lp`` and ``trueup`` are told of the next 24 h; :class:`_Forecaster`):
``noisy`` (the default: the actuals with documented bias and a lead-growing AR(1) error,
:class:`ForecastNoise`), ``persistence`` (the same hour yesterday), ``clear_sky`` (the
daemon's own offline forecast: clear sky × monthly clearness, load from the history),
``perfect`` (a reference only). Weeks ahead are the planner's own: the same weeks of the
year before, from the history.

Units: kWh per step, $; times UTC epoch seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np

from optimizer.behaviour import ExportRule, Mode, PriceSignal, Settings, clamp_reserve, simulate
from optimizer.billing import Bill, bill
from optimizer.errors import InputError
from optimizer.intervals import IntervalData
from optimizer.plan import CapBudget, Plan, PlanInputs, TrueUpContext, solve
from optimizer.policy import battery_spec, writes_between
from optimizer.prices import StepPrices, decredit_value, step_prices
from optimizer.projection import periods_between, project_period
from optimizer.settlement import carries_credit_to_forfeit, settles_at_true_up
from optimizer.site import Battery
from optimizer.tariff import Tariff

STRATEGIES = ("self_powered", "tbc_like", "tou_lp", "trueup", "perfect_foresight")
SOC0_FRACTION = 0.5  # the battery starts the window half full
REPLAN_EVERY_H = 1  # rolling strategies re-plan every hour ...
HORIZON_H = 24  # ... over the next 24 hours, in hourly steps
FORECASTS = ("noisy", "persistence", "clear_sky", "perfect")
YEAR_S = 364 * 86400  # 52 weeks: the same weekday a year earlier


@dataclass(frozen=True)
class ForecastNoise:
    """The ``noisy`` forecast: the actual hourly PV and load times ``1 + bias + σ(lead)·e``
    (clipped at 0), σ growing linearly from the first to the 24th hour ahead, ``e`` an AR(1)
    series over the lead hours (correlation ``rho``: errors persist, as a wrong cloud or
    a guest's evening do), drawn anew at every re-plan from a seeded generator. The default
    is a decent day-ahead provider: PV 10 % → 30 % error and 5 % optimistic, load 15 % →
    25 % error and 5 % low."""

    pv_bias: float = 0.05
    pv_sigma: tuple[float, float] = (0.10, 0.30)
    load_bias: float = -0.05
    load_sigma: tuple[float, float] = (0.15, 0.25)
    rho: float = 0.8
    seed: int = 2025

    def describe(self) -> str:
        return (f"PV ×(1{self.pv_bias:+.0%} ± {self.pv_sigma[0]:.0%}→{self.pv_sigma[1]:.0%}), "
                f"load ×(1{self.load_bias:+.0%} ± {self.load_sigma[0]:.0%}→"
                f"{self.load_sigma[1]:.0%}) over 1→24 h ahead, AR(1) ρ={self.rho}, "
                f"seed {self.seed}")


@dataclass(frozen=True)
class Replay:
    """What every strategy replays: the window's actual PV and load, the tariff, the site.

    ``cfg`` is the owner's configuration (site, battery, arrays, ``[optimizer]``
    true_up_month and export caps); the planner runs on it with a 24-hour horizon in hourly
    steps. ``context`` is every other interval known (the year before, the usage outside
    the window): history for the planner before the window, and the months of the window's
    settlement periods outside it."""

    data: IntervalData  # start_utc, interval_s, load_kwh, pv_kwh (import/export ignored)
    tariff: Tariff
    cfg: object  # trueup.config.TrueupConfig
    forecast: str = "noisy"
    noise: ForecastNoise = field(default_factory=ForecastNoise)
    context: IntervalData | None = None

    @property
    def battery(self) -> Battery:
        return self.cfg.battery

    @property
    def tz(self) -> str:
        return self.tariff.tz

    @property
    def hours(self) -> float:
        return self.data.interval_s / 3600.0

    @property
    def soc0_kwh(self) -> float:
        return SOC0_FRACTION * self.battery.usable_kwh

    @property
    def true_up_month(self) -> int:
        return self.cfg.optimizer.true_up_month or self.tariff.spec.settlement.true_up_month

    @property
    def export_cap_kwh(self) -> list[float] | None:
        caps = self.cfg.optimizer.export_cap_kwh
        return list(caps) if caps else None


@dataclass
class Directive:
    """A strategy's answer: settings and TBC signals for every step of the window."""

    settings: list[Settings]
    signals: list[PriceSignal]
    plans: int = 0  # how many optimisations it solved
    plan: Plan | None = None  # perfect_foresight: the LP it solved (its flows are billed)


@dataclass
class StrategyResult:
    name: str
    intervals: IntervalData  # the window's simulated import/export (PF: the LP's flows)
    bill: Bill  # the whole settlement periods the window touches
    plans: int
    wall_seconds: float
    soc_kwh: np.ndarray
    lp: Plan | None = None

    @property
    def import_kwh(self) -> float:
        return float(self.intervals.import_kwh.sum())

    @property
    def export_kwh(self) -> float:
        return float(self.intervals.export_kwh.sum())

    @property
    def excess_kwh(self) -> float:
        return float(sum(m.export_cap_excess_kwh for m in self.bill.months))


@dataclass
class Backtest:
    replay: Replay
    results: list[StrategyResult]
    no_battery: Bill
    notes: list[str] = field(default_factory=list)

    def result(self, name: str) -> StrategyResult | None:
        return next((r for r in self.results if r.name == name), None)

    def shares(self, name: str) -> dict[str, float | None] | None:
        """The share of the perfect-foresight savings ``name`` captures, on the true bill:
        vs no battery ((no battery − it) / (no battery − PF)) and vs Self-Powered (the value
        of the dispatch itself). None without a perfect_foresight result."""
        pf, me, sp = self.result("perfect_foresight"), self.result(name), \
            self.result("self_powered")
        if pf is None or me is None:
            return None
        base = self.no_battery.annual_total

        def share(ref: float) -> float | None:
            gain = ref - pf.bill.annual_total
            return round((ref - me.bill.annual_total) / gain, 4) if gain > 1e-9 else None

        return {"vs_no_battery": share(base),
                "vs_self_powered": share(sp.bill.annual_total) if sp else None}

    def to_json(self) -> dict:
        """The backtest JSON contract, with extra keys."""
        base = self.no_battery.annual_total
        sp = self.result("self_powered")
        out = []
        for r in self.results:
            months = r.bill.to_json()["months"]
            out.append({
                "name": r.name,
                "annual_total": round(r.bill.annual_total, 2),
                "bill_months": months,
                "import_kwh": round(r.import_kwh, 3),
                "export_kwh": round(r.export_kwh, 3),
                "export_cap_excess_kwh": round(r.excess_kwh, 3),
                "plans": r.plans,
                "wall_seconds": round(r.wall_seconds, 3),
                "savings_vs_no_battery": round(base - r.bill.annual_total, 2),
                "savings_vs_self_powered": (round(sp.bill.annual_total - r.bill.annual_total, 2)
                                            if sp else None),
                "share_of_perfect_foresight": self.shares(r.name),
                "energy_cost": round(energy_cost(self.replay, r.intervals,
                                                 r.intervals.battery_kwh), 2),
                "true_up": (r.bill.to_json()["true_up"]),
                "true_ups": r.bill.to_json()["true_ups"],
                "exports_vs_cap": [{"month": m["month"], "export_kwh": m["export_kwh"],
                                    "cap_kwh": m["export_cap_kwh"],
                                    "excess_kwh": m["export_cap_excess_kwh"]} for m in months],
            })
        pf = self.result("perfect_foresight")
        bound = None
        if pf is not None and pf.lp is not None:
            bound = {"lp_objective": round(pf.lp.objective, 2), "status": pf.lp.status,
                     "solve_seconds": round(pf.lp.solve_seconds, 3),
                     "definition": "one LP over the window, hourly, minimising the bill: "
                                   "import × price − export × credit, the cap's de-credits, "
                                   "the true-up; no wear, no binaries; its flows billed",
                     "annual_total": round(pf.bill.annual_total, 2)}
        d = self.replay.data
        return {
            "tariff": self.replay.tariff.id,
            "period": {"start_utc": int(d.start_utc[0]), "end_utc": d.end_utc,
                       "intervals": len(d), "load_kwh": round(float(d.load_kwh.sum()), 2),
                       "pv_kwh": round(float(d.pv_kwh.sum()), 2), "source": d.source},
            "billed_span": _span_json(self.replay),
            "no_battery": {"annual_total": round(base, 2)},
            "strategies": out,
            "perfect_foresight": bound,
            "notes": self.notes,
        }


# --------------------------------------------------------------------------------------
# Whole settlement periods


def _concat(*parts: IntervalData | None) -> IntervalData | None:
    """Intervals of several series (same length) as one, sorted; the first wins a start
    they share."""
    parts = tuple(p for p in parts if p is not None and len(p))
    if not parts:
        return None
    step = parts[0].interval_s
    if any(p.interval_s != step for p in parts):
        raise InputError("the window and the other data have different interval lengths "
                         f"({sorted({p.interval_s for p in parts})} s)", where="--prior",
                         fix="give the year before in the same interval length as --usage")
    starts = np.concatenate([p.start_utc for p in parts])
    _, first = np.unique(starts, return_index=True)

    def col(name: str) -> np.ndarray | None:
        arrs = [getattr(p, name) for p in parts]
        if any(a is None for a in arrs):
            return None
        return np.concatenate(arrs)[first]

    return IntervalData(start_utc=starts[first], interval_s=step,
                        import_kwh=col("import_kwh"), export_kwh=col("export_kwh"),
                        load_kwh=col("load_kwh"), pv_kwh=col("pv_kwh"),
                        source=parts[0].source)


def billed_span(r: Replay) -> tuple[int, int] | None:
    """[start, end) UTC of the settlement periods the window touches, when they are longer
    than a month (a true-up settles them); None when every month settles alone."""
    if r.tariff.spec.settlement.period_months <= 1:
        return None
    d = r.data
    periods = periods_between(r.tariff, int(d.start_utc[0]), d.end_utc, r.true_up_month)
    return periods[0].start_utc, periods[-1].end_utc


def _span_json(r: Replay) -> dict | None:
    span = billed_span(r)
    if span is None:
        return None
    return {"start_utc": span[0], "end_utc": span[1],
            "outside_window_from": "the data outside the window, else 52/104 weeks earlier"}


def outside_window(r: Replay) -> IntervalData | None:
    """The intervals of the billed span outside the window, as the data has them: the
    context at the same time, else the context or the window 52 (then 104) weeks earlier.
    Raises InputError naming what to pass when some cannot be filled."""
    span = billed_span(r)
    if span is None:
        return None
    d, step = r.data, r.data.interval_s
    grid = np.arange(span[0], span[1], step, dtype=np.int64)
    grid = grid[(grid < int(d.start_utc[0])) | (grid >= d.end_utc)]
    if not len(grid):
        return None
    window = IntervalData(start_utc=d.start_utc, interval_s=step, import_kwh=d.import_kwh,
                          export_kwh=d.export_kwh, load_kwh=d.load_kwh, pv_kwh=d.pv_kwh)
    source = _concat(r.context, window)
    imp, exp = np.full(len(grid), np.nan), np.full(len(grid), np.nan)
    load, pv = np.full(len(grid), np.nan), np.full(len(grid), np.nan)
    pos = {int(t): i for i, t in enumerate(source.start_utc)}
    for shift in (0, YEAR_S, 2 * YEAR_S):
        todo = np.flatnonzero(np.isnan(imp))
        if not len(todo):
            break
        for i in todo:
            j = pos.get(int(grid[i]) - shift)
            if j is None:
                continue
            # the planner reads months before the window as history: never fill them from
            # later data (shift ≥ 0 only looks back)
            imp[i], exp[i] = source.import_kwh[j], source.export_kwh[j]
            if source.load_kwh is not None:
                load[i], pv[i] = source.load_kwh[j], source.pv_kwh[j]
    missing = np.isnan(imp)
    if missing.any():
        zone = ZoneInfo(r.tz)

        def day(t: int) -> str:
            return datetime.fromtimestamp(int(t), zone).date().isoformat()

        first, last = int(grid[missing][0]), int(grid[missing][-1])
        raise InputError(
            f"the replay ({day(d.start_utc[0])} – {day(d.end_utc - 1)}) is scored on its whole "
            f"settlement periods ({day(span[0])} – {day(span[1] - 1)}, true-up month "
            f"{r.true_up_month}), but {day(first)} – {day(last)} has no data, neither then "
            "nor a year or two earlier", where="backtest",
            fix="give --prior with the year before --usage (load_kwh,pv_kwh with "
                f"import_kwh,export_kwh), or replay whole settlement periods (--start "
                f"{day(span[0])} --days {round((span[1] - span[0]) / 86400)})")
    has_lp = not np.isnan(load).any()
    return IntervalData(start_utc=grid, interval_s=step, import_kwh=imp, export_kwh=exp,
                        load_kwh=load if has_lp else None, pv_kwh=pv if has_lp else None,
                        source="outside the replay")


def history_before(r: Replay) -> IntervalData | None:
    """What the planner knows at the window's start: the context and the filled months
    before the window (never anything after it)."""
    t0 = int(r.data.start_utc[0])
    out = outside_window(r)
    before = out.select(out.start_utc < t0) if out is not None else None
    ctx = r.context.select(r.context.start_utc < t0) if r.context is not None else None
    return _concat(before, ctx)


# --------------------------------------------------------------------------------------
# Strategies


def _floor_settings(b: Battery) -> Settings:
    floor = b.backup_floor_percent
    return Settings(Mode.SELF_POWERED, clamp_reserve(floor, floor), False, ExportRule.PV_ONLY)


def self_powered(r: Replay, progress: Callable[[float], None] | None = None) -> Directive:
    """Tesla's default: Self-Powered at the owner's backup floor, every step."""
    n = len(r.data)
    return Directive([_floor_settings(r.battery)] * n, [PriceSignal.HOLD] * n)


def peak_and_off_peak(tariff: Tariff) -> tuple[int, int]:
    """(peak, off-peak) period indices: the TOU periods with the highest and the lowest
    first-tier import rate (over all seasons)."""
    rates = tariff.tier_rates[:, :, 0]
    return int(np.argmax(rates.max(axis=0))), int(np.argmin(rates.min(axis=0)))


def tbc_like(r: Replay, progress: Callable[[float], None] | None = None) -> Directive:
    """Time-Based Control, grid charging on, export Everything: charge toward 100 % in the
    off-peak period, export at full power down to the floor in the peak, hold otherwise.
    Decided from the clock and the tariff alone (causal)."""
    peak, off = peak_and_off_peak(r.tariff)
    period = r.tariff.classify(r.data.start_utc).period
    floor = r.battery.backup_floor_percent
    s = Settings(Mode.TIME_BASED, clamp_reserve(floor, floor), True, ExportRule.BATTERY_OK)
    signals = [PriceSignal.EXPORT if p == peak else PriceSignal.CHARGE if p == off
               else PriceSignal.HOLD for p in period]
    return Directive([s] * len(r.data), signals)


def plan_step_s(r: Replay) -> int:
    """The rolling planners' step: an hour, or the data's own interval (15 minutes) on a
    tariff with demand charges, whose peaks an hourly average hides (the daemon plans in
    15-minute steps by default)."""
    d = r.tariff.spec.demand
    if d is not None and r.data.interval_s < 3600 and 3600 % r.data.interval_s == 0:
        return int(r.data.interval_s)
    return 3600


def _steps(r: Replay, step_s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Planning-step starts, and PV and load summed per step (``step_s`` a multiple of the
    data's interval), and the data's intervals per step; the data must start on an hour."""
    if step_s == 3600:
        return _hourly(r)
    per = round(step_s / r.data.interval_s)
    _hourly(r)  # the same checks: whole hours
    n = (len(r.data) // round(3600 / r.data.interval_s)) * round(3600 / step_s)
    m = n * per
    return (r.data.start_utc[:m:per], r.data.pv_kwh[:m].reshape(n, per).sum(axis=1),
            r.data.load_kwh[:m].reshape(n, per).sum(axis=1), per)


def _hourly(r: Replay) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Hour starts, and PV and load summed per hour; the data must start on an hour."""
    per = round(3600 / r.data.interval_s)
    n = len(r.data) // per
    if n == 0 or int(r.data.start_utc[0]) % 3600:
        raise InputError("the planning strategies plan in whole hours: the window must "
                         "start on an hour and last at least one", where="backtest",
                         fix="give --start a whole day and data that starts on the hour")
    m = n * per
    starts = r.data.start_utc[:m:per]
    pv = r.data.pv_kwh[:m].reshape(n, per).sum(axis=1)
    load = r.data.load_kwh[:m].reshape(n, per).sum(axis=1)
    return starts, pv, load, per


class _Forecaster:
    """What a controller is told at hour ``k`` about hours ``[k, z)``: never the actuals
    beyond ``k`` except through the documented noise (``noisy``) or by design
    (``perfect``, a reference only)."""

    def __init__(self, r: Replay, starts: np.ndarray, pv_h: np.ndarray, load_h: np.ndarray,
                 step_s: int = 3600):
        self.kind = r.forecast
        self.noise = r.noise
        self.cfg = r.cfg
        self.starts = starts
        self.pv, self.load = pv_h, load_h
        self.rng = np.random.default_rng(r.noise.seed)
        self.step_s = step_s
        self.per_h = 3600 // step_s  # planning steps per hour

    @property
    def needs_history_h(self) -> int:
        """Planning steps of replayed data the forecast needs before its first plan."""
        return 24 * self.per_h if self.kind == "persistence" else 0

    def _errors(self, n: int, sigma: tuple[float, float], bias: float) -> np.ndarray:
        # AR(1) per step with the hourly correlation ρ whatever the step (ρ^(step/1 h))
        rho = self.noise.rho ** (self.step_s / 3600)
        e = np.empty(n)
        e[0] = self.rng.standard_normal()
        for i in range(1, n):
            e[i] = rho * e[i - 1] + np.sqrt(1 - rho * rho) * self.rng.standard_normal()
        lead = np.linspace(sigma[0], sigma[1], HORIZON_H * self.per_h)[:n]
        return np.maximum(0.0, 1.0 + bias + lead * e)

    def __call__(self, k: int, z: int, history: IntervalData | None = None):
        """(PV, load, sources) for hours [k, z)."""
        from trueup.planning import horizon_forecast

        idx = np.arange(k, z)
        if self.kind == "perfect":
            return self.pv[idx], self.load[idx], "the actuals (perfect, a reference)"
        if self.kind == "noisy":
            n, nz = z - k, self.noise
            return (self.pv[idx] * self._errors(n, nz.pv_sigma, nz.pv_bias),
                    self.load[idx] * self._errors(n, nz.load_sigma, nz.load_bias),
                    f"noisy: {nz.describe()}")
        if self.kind == "persistence":
            back = 24 * self.per_h
            return self.pv[idx - back], self.load[idx - back], "persistence (the same " \
                "hour yesterday)"
        # clear_sky: exactly what the daemon forecasts offline from the same history
        f = horizon_forecast(self.cfg, self.starts[idx], self.step_s, history)
        return f.pv_kwh, f.load_kwh, f"the daemon's offline forecast (PV {f.sources['pv']}; " \
            f"load {f.sources['load']})"


def planner_config(r: Replay, hours: int = HORIZON_H, step_minutes: int = 60):
    """The owner's configuration with the backtest's planning grid: ``hours`` ahead in
    steps of ``step_minutes``."""
    opt = r.cfg.optimizer.model_copy(update={"horizon_hours": hours,
                                             "step_minutes": step_minutes})
    return r.cfg.model_copy(update={"optimizer": opt})


def rolling(r: Replay, *, billing_aware: bool, progress: Callable[[float], None] | None = None,
            on_plan: Callable | None = None) -> Directive:
    """Every REPLAN_EVERY_H hours, the planner (:func:`trueup.planning.make_plan`) over the
    next HORIZON_H hours in hourly steps, from the simulated SOC, the history so far (before
    the window, then the simulated window) and the replay's forecast; the first hours of
    each plan's settings are carried out on the actual 15-minute PV and load by the
    behaviour model before the next decision. ``on_plan(k, kwargs, result)`` sees every call
    (for tests). A forecast that needs yesterday (persistence) runs Self-Powered first."""
    from trueup.planning import Forecast, PlanMemo, make_plan

    ps = plan_step_s(r)
    sph = 3600 // ps  # planning steps per hour
    starts, pv_h, load_h, per = _steps(r, ps)
    n_h = len(starts)  # planning steps
    spec = battery_spec(r.battery)
    forecast = _Forecaster(r, starts, pv_h, load_h, ps)
    before = history_before(r)
    nb = len(before) if before is not None else 0
    d = r.data
    step = d.interval_s
    cat = (lambda a, b: np.concatenate([a, b])) if before is not None else (lambda a, b: b)
    h_start = cat(before.start_utc if before else None, d.start_utc)
    h_imp = cat(before.import_kwh if before else None, np.zeros(len(d)))
    h_exp = cat(before.export_kwh if before else None, np.zeros(len(d)))
    h_load = h_pv = None
    if before is None or before.load_kwh is not None:
        h_load = cat(before.load_kwh if before else None, d.load_kwh)
        h_pv = cat(before.pv_kwh if before else None, d.pv_kwh)
    memo = PlanMemo()
    cfg_full = planner_config(r, step_minutes=ps // 60)
    horizon = HORIZON_H * sph
    floor_s = _floor_settings(r.battery)
    settings: list[Settings] = []
    signals: list[PriceSignal] = []
    soc = r.soc0_kwh
    plans = 0
    sent: deque[tuple[int, int]] = deque()  # (hour index, field writes) of the last day
    tick = max(1, n_h // 100)
    for k in range(0, n_h, REPLAN_EVERY_H * sph):
        if progress and k % tick < REPLAN_EVERY_H * sph:
            progress(k / n_h)
        todo = min(REPLAN_EVERY_H * sph, n_h - k)
        if k < forecast.needs_history_h:
            block_s, block_g = [floor_s] * todo, [PriceSignal.HOLD] * todo
        else:
            m = nb + k * per
            history = IntervalData(start_utc=h_start[:m], interval_s=step,
                                   import_kwh=h_imp[:m], export_kwh=h_exp[:m],
                                   load_kwh=None if h_load is None else h_load[:m],
                                   pv_kwh=None if h_pv is None else h_pv[:m]) if m else None
            z = min(k + horizon, n_h)
            cfg = cfg_full if z - k == horizon else planner_config(r, (z - k) // sph,
                                                                   ps // 60)
            pv_f, load_f, said = forecast(k, z, history)
            while sent and sent[0][0] <= k - 24 * sph:
                sent.popleft()
            kwargs = dict(at_utc=int(starts[k]), soc_percent=100 * soc / r.battery.usable_kwh,
                          history=history,
                          forecast=Forecast(pv_f, load_f, {"pv": said, "load": said}),
                          grid_up=True, billing_aware=billing_aware, tariff=r.tariff,
                          writes_sent_ago_s=tuple(float(ps) * (k - h) for h, n in sent
                                                  for _ in range(n)),
                          current_settings=settings[-1] if settings else floor_s)
            result = make_plan(cfg, memo=memo, **kwargs)
            if on_plan is not None:
                on_plan(k, kwargs, result)
            plans += 1
            block_s = list(result.schedule.per_step[:todo])
            block_g = list(result.schedule.signals[:todo])
        # the writes the daemon would send for it (the rails' budget counts fields)
        before = settings[-1] if settings else floor_s
        for h, s in enumerate(block_s):
            n = writes_between(before, s)
            if n:
                sent.append((k + h, n))
            before = s
        # carry the block out on the actual PV and load (15-minute steps)
        q_s = [s for s in block_s for _ in range(per)]
        q_g = [g for g in block_g for _ in range(per)]
        a, b = k * per, (k + todo) * per
        sim = simulate(q_s, soc, d.load_kwh[a:b], d.pv_kwh[a:b], r.hours, spec,
                       price_signals=q_g)
        soc = float(sim.soc_kwh[-1])
        h_imp[nb + a:nb + b] = sim.import_kwh
        h_exp[nb + a:nb + b] = sim.export_kwh
        settings += q_s
        signals += q_g
    tail = len(d) - len(settings)
    settings += [floor_s] * tail
    signals += [PriceSignal.HOLD] * tail
    return Directive(settings, signals, plans=plans)


def tou_lp(r: Replay, progress: Callable[[float], None] | None = None) -> Directive:
    """The planner on linear prices alone: no export cap, no true-up (EMHASS-style)."""
    return rolling(r, billing_aware=False, progress=progress)


def trueup(r: Replay, progress: Callable[[float], None] | None = None) -> Directive:
    """The daemon's planner, hour by hour."""
    return rolling(r, billing_aware=True, progress=progress)


def _pf_cap_budgets(r: Replay, prices: StepPrices, outside: IntervalData | None
                    ) -> tuple[CapBudget, ...]:
    """Each billing month's cap for the window's hours: the cap less the month's exports
    outside the window (when whole periods are billed), or pro rata to the share of the
    month the window covers (months settled alone, billed partly)."""
    t = r.tariff
    if t.spec.export_cap is None or t.spec.export.scheme != "nem":
        return ()
    caps = r.export_cap_kwh or [t.export_cap_kwh(m) for m in range(1, 13)]
    read_day = t.spec.calendar.meter_read_day
    zone = ZoneInfo(r.tz)
    out = []
    for key in np.unique(prices.month_key):
        key = int(key)
        y, m = key // 12, key % 12 + 1
        a = int(datetime(y, m, read_day, tzinfo=zone).timestamp())
        z = int(datetime(y + (m == 12), m % 12 + 1, read_day, tzinfo=zone).timestamp())
        if outside is not None:
            inside = (outside.start_utc >= a) & (outside.start_utc < z)
            kwh = caps[m - 1] - float(outside.export_kwh[inside].sum())
        else:
            share = min(1.0, float(np.sum(prices.month_key == key)) * 3600 / (z - a))
            kwh = caps[m - 1] * share
        out.append(CapBudget(key, kwh, decredit_value(t, key)))
    return tuple(out)


def _pf_true_ups(r: Replay, starts: np.ndarray, outside: IntervalData | None,
                 regime: str | None) -> tuple[TrueUpContext, ...]:
    """The settlement of each period the window touches (NEM charges at the true-up, or
    monthly charges with credit carried to it), with the months outside the window exactly
    as billed (one certain scenario)."""
    from trueup.planning import settlement_context

    st = r.tariff.spec.settlement
    carry = carries_credit_to_forfeit(st.charges, st.leftover_credit, st.period_months)
    if not carry and not settles_at_true_up(r.tariff.spec.export.scheme, st.charges,
                                            st.leftover_credit):
        return ()
    horizon = (int(starts[0]), int(starts[-1]) + 3600)
    out = []
    for period in periods_between(r.tariff, horizon[0], horizon[1], r.true_up_month):
        proj = project_period(r.tariff, period, None, history=outside, horizon=horizon,
                              true_up_month=r.true_up_month, export_cap_kwh=r.export_cap_kwh)
        inside = np.flatnonzero((starts >= period.start_utc) & (starts < period.end_utc))
        out.append(settlement_context(proj, starts, inside, carry, holds_end=False,
                                      regime=regime))
    return tuple(out)


def perfect_foresight(r: Replay, progress: Callable[[float], None] | None = None
                      ) -> Directive:
    """The bound: one LP over the window (hourly) with the true PV and load, minimising
    exactly what is billed. Its own flows are billed (not carried out as settings): a
    relaxation of every strategy's flows, so no strategy can bill less. A true-up whose
    net surplus could go either way is solved in both NSC regimes; the lower bill wins."""
    starts, pv, load, _ = _hourly(r)
    prices = step_prices(r.tariff, starts)
    outside = outside_window(r)
    battery = r.battery.model_copy(update={"wear_cost_per_kwh": 0.0})
    best = None
    regimes = ("surplus", "deficit") if _pf_true_ups(r, starts, outside, None) else (None,)
    for regime in regimes:
        x = PlanInputs(prices=prices, pv_kwh=pv, load_kwh=load, soc_kwh=r.soc0_kwh,
                       battery=battery, step_hours=1.0, can_curtail_pv=r.cfg.site.can_curtail_pv,
                       cap_budgets=_pf_cap_budgets(r, prices, outside), terminal_value=0.0,
                       true_ups=_pf_true_ups(r, starts, outside, regime),
                       grid_charge_limit_kw=None,
                       grid_import_limit_kw=r.cfg.optimizer.service_limit_kw)
        plan = solve(x, time_limit=300.0, binaries=False)
        if plan.ok and (best is None or plan.objective < best.objective):
            best = plan
    if best is None:
        raise RuntimeError("the perfect-foresight LP did not solve")
    n = len(r.data)
    return Directive([_floor_settings(r.battery)] * n, [PriceSignal.HOLD] * n, plans=len(regimes),
                     plan=best)


STRATEGY_FUNCS: dict[str, Callable[..., Directive]] = {
    "self_powered": self_powered,
    "tbc_like": tbc_like,
    "tou_lp": tou_lp,
    "trueup": trueup,
    "perfect_foresight": perfect_foresight,
}


# --------------------------------------------------------------------------------------
# Replay and bill


def bill_window(r: Replay, data: IntervalData) -> Bill:
    """The bill of the window's flows within its whole settlement periods (the months
    outside the window as the data has them), or of the window alone when every month
    settles by itself (partial months billed in part)."""
    outside = outside_window(r)
    whole = _concat(outside, IntervalData(start_utc=data.start_utc, interval_s=data.interval_s,
                                          import_kwh=data.import_kwh,
                                          export_kwh=data.export_kwh))
    return bill(r.tariff, whole, true_up_month=r.true_up_month,
                export_cap_kwh=r.export_cap_kwh, allow_gaps=outside is None)


def no_battery_intervals(r: Replay) -> IntervalData:
    """The same home with its PV but no battery: import = max(load − pv, 0),
    export = max(pv − load, 0)."""
    d = r.data
    net = d.load_kwh - d.pv_kwh
    return IntervalData(start_utc=d.start_utc, interval_s=d.interval_s,
                        import_kwh=np.maximum(net, 0.0), export_kwh=np.maximum(-net, 0.0),
                        load_kwh=d.load_kwh, pv_kwh=d.pv_kwh,
                        battery_kwh=np.zeros(len(d)), source=f"{d.source} (no battery)")


def energy_cost(r: Replay, data: IntervalData, battery_kwh: np.ndarray) -> float:
    """Σ import × price − Σ export × credit + wear × Σ discharge over the window, at the
    tariff's step prices (without the cap's de-crediting and the true-up)."""
    p = step_prices(r.tariff, data.start_utc)
    dis = np.maximum(battery_kwh, 0.0)
    return float(np.sum(data.import_kwh * p.import_price) - np.sum(data.export_kwh
                 * p.export_credit) + r.battery.wear_cost_per_kwh * np.sum(dis))


def _lp_intervals(r: Replay, plan: Plan, per: int) -> tuple[IntervalData, np.ndarray]:
    """The LP's hourly flows on the window's intervals (each hour split evenly), and the
    SOC at each interval's end."""
    d = r.data
    n = len(plan.import_kwh) * per

    def spread(a: np.ndarray) -> np.ndarray:
        out = np.zeros(len(d))
        out[:n] = np.repeat(a, per) / per
        return out

    soc_h = np.concatenate([[r.soc0_kwh], plan.soc_kwh])
    frac = (np.arange(n) % per + 1) / per
    soc = np.full(len(d), float(plan.soc_kwh[-1]))
    soc[:n] = np.repeat(soc_h[:-1], per) + np.repeat(np.diff(soc_h), per) * frac
    tail_imp = np.maximum(d.load_kwh[n:] - d.pv_kwh[n:], 0.0)  # a tail shorter than an hour
    tail_exp = np.maximum(d.pv_kwh[n:] - d.load_kwh[n:], 0.0)
    imp, exp = spread(plan.import_kwh), spread(plan.export_kwh)
    imp[n:], exp[n:] = tail_imp, tail_exp
    battery = spread(plan.discharge_kwh - plan.charge_kwh)
    return IntervalData(start_utc=d.start_utc, interval_s=d.interval_s, import_kwh=imp,
                        export_kwh=exp, load_kwh=d.load_kwh, pv_kwh=d.pv_kwh,
                        battery_kwh=battery, source=f"{d.source} (perfect_foresight, the LP)"), soc


def run_strategy(r: Replay, name: str, progress: Callable[[float], None] | None = None
                 ) -> StrategyResult:
    """Decide, replay through the behaviour model (the bound: take the LP's flows), and
    bill the window within its whole settlement periods."""
    if name not in STRATEGY_FUNCS:
        raise InputError(f"unknown strategy {name!r}", where="--strategy",
                         fix=f"use one of {', '.join(STRATEGY_FUNCS)}")
    t0 = time.perf_counter()
    d = STRATEGY_FUNCS[name](r, progress=progress)
    data = r.data
    if d.plan is not None:
        intervals, soc = _lp_intervals(r, d.plan, round(3600 / data.interval_s))
    else:
        sim = simulate(d.settings, r.soc0_kwh, data.load_kwh, data.pv_kwh, r.hours,
                       battery_spec(r.battery), price_signals=d.signals)
        intervals = IntervalData(start_utc=data.start_utc, interval_s=data.interval_s,
                                 import_kwh=sim.import_kwh, export_kwh=sim.export_kwh,
                                 load_kwh=data.load_kwh, pv_kwh=data.pv_kwh,
                                 battery_kwh=sim.discharge_kwh - sim.charge_kwh,
                                 source=f"{data.source} ({name}, simulated)")
        soc = sim.soc_kwh
    b = bill_window(r, intervals)
    if progress:
        progress(1.0)
    return StrategyResult(name=name, intervals=intervals, bill=b, plans=d.plans,
                          wall_seconds=time.perf_counter() - t0, soc_kwh=soc, lp=d.plan)


Progress = Callable[[str, float], None]  # (strategy, fraction done)
_JOB: dict = {}  # the replay and progress queue handed to worker processes


def _job(name: str) -> StrategyResult:
    q = _JOB["queue"]
    return run_strategy(_JOB["replay"], name, progress=lambda f: q.put((name, f)))


def _init_worker(replay: Replay, queue) -> None:
    from trueup.solvers import silence_highs_banner

    silence_highs_banner()  # the worker shares the parent's stdout (``--json``)
    _JOB["replay"], _JOB["queue"] = replay, queue


def run_backtest(r: Replay, strategies: list[str] | tuple[str, ...] = STRATEGIES,
                 progress: Progress | None = None, jobs: int = 1) -> Backtest:
    """Run ``strategies`` (self_powered is always added: savings are measured against it)
    and the no-battery reference. ``jobs`` > 1 runs strategies in that many worker
    processes (the rolling ones take most of the time)."""
    names = list(dict.fromkeys(strategies))
    for name in names:
        if name not in STRATEGY_FUNCS:
            raise InputError(f"unknown strategy {name!r}", where="--strategy",
                             fix=f"use one of {', '.join(STRATEGY_FUNCS)}")
    if "self_powered" not in names:
        names.insert(0, "self_powered")  # the reference every saving is measured against
    if r.forecast not in FORECASTS:
        raise InputError(f"unknown forecast {r.forecast!r}", where="--forecast",
                         fix=f"use one of {', '.join(FORECASTS)}")
    no_battery = bill_window(r, no_battery_intervals(r))  # refuses an unfillable span first
    if jobs <= 1 or len(names) == 1:
        results = [run_strategy(r, n, progress=(lambda f, n=n: progress(n, f))
                                if progress else None) for n in names]
    else:
        results = _run_parallel(r, names, progress, jobs)
    ps = plan_step_s(r)
    steps = "hourly steps" if ps == 3600 else (f"{ps // 60}-minute steps: the tariff bills "
                                              "demand, whose peaks an hourly average hides")
    notes = [f"trueup and tou_lp: the daemon's planner every {REPLAN_EVERY_H} h over "
             f"{HORIZON_H} h ({steps}), forecast {r.forecast}"
             + (f": {r.noise.describe()}" if r.forecast == "noisy" else "")]
    span = billed_span(r)
    if span is not None and outside_window(r) is not None:
        zone = ZoneInfo(r.tz)
        a = datetime.fromtimestamp(span[0], zone).date()
        z = datetime.fromtimestamp(span[1] - 1, zone).date()
        notes.append(f"scored on the whole settlement period(s) {a} – {z}: the months outside "
                     "the replay are billed as the data has them (the same for every "
                     "strategy)")
    return Backtest(replay=r, results=results, no_battery=no_battery, notes=notes)


def _run_parallel(r: Replay, names: list[str], progress: Progress | None, jobs: int
                  ) -> list[StrategyResult]:
    """Strategies in worker processes started fresh (spawn: never fork a process that may
    hold threads), each sent the replay once."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    slow_first = sorted(names, key=lambda n: n not in ("trueup", "tou_lp"))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(r, queue)) as pool:
        futures = {n: pool.submit(_job, n) for n in slow_first}
        pending = set(futures.values())
        while pending:
            _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            while not queue.empty():
                name, frac = queue.get()
                if progress:
                    progress(name, frac)
        got = {n: f.result() for n, f in futures.items()}
    if progress:
        for n in names:
            progress(n, 1.0)
    return [got[n] for n in names]


# --------------------------------------------------------------------------------------
# Data


def select_period(data: IntervalData, start: date | None, days: int | None,
                  tz: str) -> IntervalData:
    """The intervals from local midnight of ``start`` (default: the data's start) for
    ``days`` days (default: to the end)."""
    if data.load_kwh is None or data.pv_kwh is None:
        raise InputError("the backtest replays load and PV: the usage needs load_kwh and "
                         "pv_kwh columns", where=data.source or "usage",
                         fix="add load_kwh and pv_kwh columns (the gateway's readings, or "
                         "trueup import of the store), or use `trueup bill` for the bill alone")
    zone = ZoneInfo(tz)
    a = int(data.start_utc[0]) if start is None else int(
        datetime(start.year, start.month, start.day, tzinfo=zone).timestamp())
    mask = data.start_utc >= a
    if days is not None:
        first = datetime.fromtimestamp(a, zone).date()
        end = date.fromordinal(first.toordinal() + days)
        z = int(datetime(end.year, end.month, end.day, tzinfo=zone).timestamp())
        mask &= data.start_utc < z
    out = data.select(mask)
    if not len(out):
        raise InputError("no intervals in the chosen period", where="--start/--days",
                         fix="choose a start and length inside the data")
    if (start is not None and a < int(data.start_utc[0])) or (
            days is not None and z > data.end_utc):
        have = (f"{datetime.fromtimestamp(int(data.start_utc[0]), zone):%Y-%m-%d %H:%M} to "
                f"{datetime.fromtimestamp(data.end_utc, zone):%Y-%m-%d %H:%M}")
        raise InputError(f"the data covers {have}, not all of the {days or ''} day(s) from "
                         f"{datetime.fromtimestamp(a, zone):%Y-%m-%d}",
                         where=f"--start/--days ({data.source or 'usage'})",
                         fix="choose a start and --days inside the data (leave --days out to "
                         "replay to its end), or give data that covers the period")
    return out


def replay_from_config(cfg, tariff: Tariff, data: IntervalData, *,
                       context: IntervalData | None = None, forecast: str = "noisy",
                       noise: ForecastNoise | None = None) -> Replay:
    """A :class:`Replay` for a loaded ``TrueupConfig``."""
    return Replay(data=data, tariff=tariff, cfg=cfg, forecast=forecast,
                  noise=noise or ForecastNoise(), context=context)


def context_of(usage: IntervalData, window: IntervalData,
               prior: IntervalData | None) -> IntervalData | None:
    """Everything known besides the window: the usage outside it and the year before."""
    outside = usage.select((usage.start_utc < int(window.start_utc[0]))
                           | (usage.start_utc >= window.end_utc))
    return _concat(outside, prior)


# --------------------------------------------------------------------------------------
# Report


def report_table(bt: Backtest) -> str:
    from trueup.report import kwh, money, table

    base = bt.no_battery.annual_total
    sp = bt.result("self_powered")

    def pct(x: float | None) -> str:
        return "" if x is None else f"{x:.1%}"

    rows = [["no_battery", money(base), "", "", "", "", "", "", "", "", ""]]
    for r in bt.results:
        sh = bt.shares(r.name) or {}
        rows.append([r.name, money(r.bill.annual_total), money(base - r.bill.annual_total),
                     money(sp.bill.annual_total - r.bill.annual_total) if sp else "",
                     pct(sh.get("vs_no_battery")), pct(sh.get("vs_self_powered")),
                     money(energy_cost(bt.replay, r.intervals, r.intervals.battery_kwh)),
                     kwh(r.import_kwh), kwh(r.export_kwh), kwh(r.excess_kwh),
                     f"{r.wall_seconds:.1f}"])
    lines = [table(["strategy", "bill $", "saves vs no batt", "vs self_powered",
                    "of PF (no batt)", "of PF (self_p)", "energy cost $", "import kWh",
                    "export kWh", "cap excess kWh", "wall s"],
                   rows)]
    pf = bt.result("perfect_foresight")
    if pf is not None and pf.lp is not None:
        lines.append(f"\nperfect_foresight is the bound: one LP over the replay minimising "
                     f"what is billed ({pf.lp.status}, {pf.lp.solve_seconds:.1f} s); its own "
                     "flows are billed, so no strategy can bill less")
    settled = [(r.name, r.bill.true_ups) for r in bt.results if r.bill.true_ups]
    if settled:
        rows = []
        for name, tus in settled:
            for tu in tus:
                rows.append([name, tu.month, money(tu.charges), money(tu.minimum_billed),
                             money(tu.surplus_credit), money(tu.due),
                             money(tu.forfeited_credit)])
        lines.append("\ntrue-up per strategy")
        lines.append(table(["strategy", "true-up", "charges $", "minimum billed $", "NSC $",
                            "due $", "forfeited credit $"], rows))
    if any(m.export_cap_kwh is not None for r in bt.results for m in r.bill.months):
        head = ["month"] + [r.name for r in bt.results] + ["cap"]
        rows = []
        for i, m in enumerate(bt.results[0].bill.months):
            rows.append([m.month] + [kwh(r.bill.months[i].export_kwh) for r in bt.results]
                        + [kwh(m.export_cap_kwh or 0.0)])
        lines.append("\nexports vs cap per month (kWh)")
        lines.append(table(head, rows))
    for n in bt.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def whatif_summary(bt: Backtest, metered: IntervalData | None = None) -> str:
    """The owner's question in three lines: the bill with no battery, with the battery as
    Tesla runs it (Self-Powered at the owner's floor) and with trueup, in dollars over the
    scored period; with ``metered`` (the file's own import/export over the window) also the
    bill of what the meter saw."""
    from trueup.report import money, table

    base = bt.no_battery.annual_total
    rows = [["no battery (the same home, its PV, no battery)", money(base), ""]]
    labels = {"self_powered": "the battery as Tesla runs it (Self-Powered)",
              "trueup": "the battery run by trueup"}
    for name, label in labels.items():
        r = bt.result(name)
        if r is not None:
            rows.append([label, money(r.bill.annual_total), money(base - r.bill.annual_total)])
    sp, tu = bt.result("self_powered"), bt.result("trueup")
    lines = [table(["what-if", "bill $", "saves vs no battery $"], rows)]
    if metered is not None:
        m = bill_window(bt.replay, metered)
        lines.append(f"as metered (the file's import and export, billed): "
                     f"${m.annual_total:,.2f}")
    if sp is not None and tu is not None:
        more = sp.bill.annual_total - tu.bill.annual_total
        lines.append(f"trueup {'saves' if more >= 0 else 'costs'} ${abs(more):,.2f} "
                     f"more than Self-Powered over this period")
    return "\n".join(lines)
