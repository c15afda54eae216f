"""The backtest: replay PV and load through the Powerwall behaviour model, bill the result.

A period of 15-minute PV and load (the example year, or a site's CSV with ``load_kwh`` and
``pv_kwh``) is replayed under each *strategy*: a function that returns the gateway settings
(and Time-Based Control's price signal) for every step, decided causally — from the tariff,
the forecasts a daemon would have had and the simulated past — except ``perfect_foresight``,
which sees the whole period by design. The settings go through
:func:`optimizer.behaviour.simulate` (the same model the policy and the simulated gateway
use), and the *simulated* imports and exports are billed by :func:`optimizer.billing.bill`.
No strategy is ever billed on a plan.

Strategies:

* ``self_powered`` — Tesla's default: Self-Powered at the owner's backup floor.
* ``tbc_like`` — Time-Based Control with grid charging on and export "Everything": charge
  toward 100 % in the tariff's cheapest TOU period, export at full power in its dearest
  (peak = the period with the highest import rate, off-peak = the lowest), hold otherwise.
* ``tou_lp`` — re-plans every hour over the next 24 hours (hourly steps) with
  :func:`optimizer.plan.solve` on linear prices, export cap and true-up ignored (what
  EMHASS-style tools do); the first hour of each plan is carried out as settings through
  the policy, then the next decision is taken from the simulated SOC.
* ``trueup`` — the same cadence with the daemon's billing logic: the NEM-PS export cap
  budgeted by the month outlook (:mod:`optimizer.outlook`, re-solved daily, re-read every
  hour against the simulated exports so far) and, on NEM2, the true-up (the period so far
  — expected before the replay began, simulated since — the plan, and the expected rest).
* ``perfect_foresight`` — one LP over the whole period (hourly steps) with the true PV and
  load, the tariff's step prices, the export cap and the true-up; its flows become settings
  through :func:`optimizer.policy.schedule` and are replayed like every other strategy. Its
  LP objective is reported as the bound.

Forecasts (what ``tou_lp`` and ``trueup`` are told; :class:`_Forecaster`): ``noisy`` (the
default: the actuals with documented bias and a lead-growing AR(1) error,
:class:`ForecastNoise`), ``persistence`` (the same hour yesterday), ``clear_sky`` (the
daemon's offline PV model; load the mean of the hour over the last 7 days), ``perfect``
(a reference only). Weeks ahead — the month outlook and the true-up projection — come from
the same weeks of the prior year (:mod:`forecasts.last_year`), as a daemon with a year of
history has them; without a prior year, the clear-sky model and the typical load profile.

Speed: the rolling strategies solve ~8,760 LPs a year each (~7-9 ms per re-plan with the
schedule and the replay); ``run_backtest(jobs=2)`` runs strategies in forked processes.

Units: kWh per step, $; times UTC epoch seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

import numpy as np

from optimizer.behaviour import ExportRule, Mode, PriceSignal, Settings, clamp_reserve, simulate
from optimizer.billing import Bill, bill
from optimizer.errors import InputError
from optimizer.intervals import IntervalData
from optimizer.plan import CapBudget, Plan, PlanInputs, TrueUpContext, solve
from optimizer.policy import battery_spec, schedule
from optimizer.prices import StepPrices, decredit_value, step_prices
from optimizer.site import Battery
from optimizer.tariff import Tariff

STRATEGIES = ("self_powered", "tbc_like", "tou_lp", "trueup", "perfect_foresight")
SOC0_FRACTION = 0.5  # the battery starts the period half full
SCHEDULE_CHUNK_H = 24 * 7  # the policy turns the annual plan into settings a week at a time


@dataclass(frozen=True)
class Replay:
    """What every strategy replays: the period's actual PV and load, the tariff, the site."""

    data: IntervalData  # start_utc, interval_s, load_kwh, pv_kwh (import/export ignored)
    tariff: Tariff
    battery: Battery
    tz: str
    export_cap_kwh: list[float] | None = None  # 12 monthly caps overriding the tariff's
    true_up_month: int | None = None
    can_curtail_pv: bool = False
    # the site, for the expected (not actual) PV of the rest of a settlement period
    latitude: float = 37.77
    longitude: float = -122.42
    pv: tuple = ()
    # what the rolling strategies are told: the forecast kind and its noise, and the prior
    # year (load_kwh, pv_kwh) a daemon with history would know the far future from
    forecast: str = "noisy"
    noise: ForecastNoise = field(default_factory=lambda: ForecastNoise())
    prior: IntervalData | None = None

    @property
    def hours(self) -> float:
        return self.data.interval_s / 3600.0

    @property
    def soc0_kwh(self) -> float:
        return SOC0_FRACTION * self.battery.usable_kwh


@dataclass
class Directive:
    """A strategy's answer: settings and TBC signals for every step of the period."""

    settings: list[Settings]
    signals: list[PriceSignal]
    plans: int = 0  # how many optimisations it solved
    plan: Plan | None = None  # perfect_foresight: the LP it solved


@dataclass
class StrategyResult:
    name: str
    intervals: IntervalData  # the simulated import/export, billed
    bill: Bill
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
        """The backtest JSON contract (ARCHITECTURE.md), with extra keys."""
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
                "exports_vs_cap": [{"month": m["month"], "export_kwh": m["export_kwh"],
                                    "cap_kwh": m["export_cap_kwh"],
                                    "excess_kwh": m["export_cap_excess_kwh"]} for m in months],
            })
        pf = self.result("perfect_foresight")
        bound = None
        if pf is not None and pf.lp is not None:
            bound = {"lp_objective": round(pf.lp.objective, 2), "status": pf.lp.status,
                     "solve_seconds": round(pf.lp.solve_seconds, 3),
                     "definition": "Σ import × price − Σ export × credit + wear + de-credited "
                                   "cap excess, hourly, no value for energy left at the end",
                     "annual_total": round(pf.bill.annual_total, 2)}
        d = self.replay.data
        return {
            "tariff": self.replay.tariff.id,
            "period": {"start_utc": int(d.start_utc[0]), "end_utc": d.end_utc,
                       "intervals": len(d), "load_kwh": round(float(d.load_kwh.sum()), 2),
                       "pv_kwh": round(float(d.pv_kwh.sum()), 2), "source": d.source},
            "no_battery": {"annual_total": round(base, 2)},
            "strategies": out,
            "perfect_foresight": bound,
            "notes": self.notes,
        }


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


def _hourly(r: Replay) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Hour starts, and PV and load summed per hour; the data must start on an hour."""
    per = round(3600 / r.data.interval_s)
    n = len(r.data) // per
    if n == 0 or int(r.data.start_utc[0]) % 3600:
        raise InputError("perfect_foresight plans in whole hours: the period must start on "
                         "an hour and last at least one", where="backtest")
    m = n * per
    starts = r.data.start_utc[:m:per]
    pv = r.data.pv_kwh[:m].reshape(n, per).sum(axis=1)
    load = r.data.load_kwh[:m].reshape(n, per).sum(axis=1)
    return starts, pv, load, per


def _caps(r: Replay) -> list[float] | None:
    t = r.tariff
    if t.spec.export_cap is None or t.spec.export.scheme != "nem":
        return None
    if r.export_cap_kwh is not None:
        return list(r.export_cap_kwh)
    return [t.export_cap_kwh(m) for m in range(1, 13)]


def period_cap_budgets(r: Replay, prices: StepPrices) -> tuple[CapBudget, ...]:
    """Each billing month's cap for the replayed period, pro-rated to the share of the month
    the period covers (as the billing engine pro-rates it for a partly covered month)."""
    caps = _caps(r)
    if caps is None:
        return ()
    read_day = r.tariff.spec.calendar.meter_read_day
    zone = ZoneInfo(r.tariff.tz)
    out = []
    for key in np.unique(prices.month_key):
        key = int(key)
        y, m = key // 12, key % 12 + 1
        a = datetime(y, m, read_day, tzinfo=zone).timestamp()
        z = datetime(y + (m == 12), m % 12 + 1, read_day, tzinfo=zone).timestamp()
        share = min(1.0, float(np.sum(prices.month_key == key)) * 3600 / (z - a))
        out.append(CapBudget(key, caps[m - 1] * share, decredit_value(r.tariff, key)))
    return tuple(out)


def _slice_inputs(x: PlanInputs, plan: Plan, a: int, z: int) -> tuple[PlanInputs, Plan]:
    p = x.prices
    prices = replace(p, start_utc=p.start_utc[a:z], import_price=p.import_price[a:z],
                     export_credit=p.export_credit[a:z], period=p.period[a:z],
                     month_key=p.month_key[a:z])
    soc = x.soc_kwh if a == 0 else float(plan.soc_kwh[a - 1])
    xs = replace(x, prices=prices, pv_kwh=x.pv_kwh[a:z], load_kwh=x.load_kwh[a:z],
                 soc_kwh=soc, cap_budgets=())
    ps = replace(plan, import_kwh=plan.import_kwh[a:z], export_kwh=plan.export_kwh[a:z],
                 charge_kwh=plan.charge_kwh[a:z], discharge_kwh=plan.discharge_kwh[a:z],
                 curtail_kwh=plan.curtail_kwh[a:z], soc_kwh=plan.soc_kwh[a:z])
    return xs, ps


def _settles_at_true_up(r: Replay) -> bool:
    st = r.tariff.spec.settlement
    return (r.tariff.spec.export.scheme == "nem" and st.charges == "at_true_up"
            and st.leftover_credit == "forfeit")


@dataclass
class _TrueUpBook:
    """Hour by hour, for every hour of the settlement periods the replay touches: the
    period each hour is in, the period's minimum charges, and the *expected* energy
    charges (Cx), NBC and net surplus of each hour (expected PV and load, Self-Powered):
    what a controller may assume about the rest of a period without seeing it."""

    starts: np.ndarray  # hour starts, UTC, from the first period's start
    period: np.ndarray  # period index per hour
    minimum: dict[int, float]
    label: dict[int, str]
    exp_cx: np.ndarray
    exp_nbc: np.ndarray
    exp_surplus: np.ndarray

    def index(self, t: int) -> int:
        return int((t - self.starts[0]) // 3600)


def _true_up_book(r: Replay, starts_h: np.ndarray) -> _TrueUpBook:
    from trueup.planning import _settlement_periods

    tum = r.true_up_month or r.tariff.spec.settlement.true_up_month
    periods = _settlement_periods(r.tariff, tum, starts_h, 3600, r.tz)
    first, last = periods[0][2], periods[-1][3]
    hours = np.arange(first, last, 3600, dtype=np.int64)
    spans = _settlement_periods(r.tariff, tum, hours, 3600, r.tz)
    period = np.zeros(len(hours), dtype=np.int64)
    minimum, label = {}, {}
    ch, st = r.tariff.spec.charges, r.tariff.spec.settlement
    for i, (a, b, p0, p1, lab) in enumerate(spans):
        period[a:b] = i
        minimum[i] = ch.minimum_per_day * round((p1 - p0) / 86400) + \
            ch.minimum_per_month * st.period_months
        label[i] = lab
    pv, load, _ = _far_expectation(r, hours)
    sp = [_floor_settings(r.battery)] * len(hours)
    sim = simulate(sp, r.soc0_kwh, load, pv, 1.0, battery_spec(r.battery))
    prices = step_prices(r.tariff, hours)
    return _TrueUpBook(
        starts=hours, period=period, minimum=minimum, label=label,
        exp_cx=sim.import_kwh * (prices.import_price - prices.nbc)
        - sim.export_kwh * prices.export_credit,
        exp_nbc=prices.nbc * sim.import_kwh, exp_surplus=sim.export_kwh - sim.import_kwh)


def _contexts(book: _TrueUpBook, k0: int, z0: int, before_cx: float, before_nbc: float,
              before_surplus: float, surplus_rate: float, *, holds_end: bool,
              count_after: bool = True) -> tuple[TrueUpContext, ...]:
    """True-up contexts for plan steps [0, z0 − k0) starting at book hour k0: the first
    period gets what happened before (simulated), the last the expected rest."""
    out = []
    idx = np.arange(k0, z0)
    pids = book.period[idx]
    for n, pid in enumerate(np.unique(pids)):
        steps = np.flatnonzero(pids == pid)
        a, b = int(steps[0]), int(steps[-1]) + 1
        end_hour = int(np.flatnonzero(book.period == pid)[-1]) + 1
        after = slice(z0, end_hour) if count_after else slice(0, 0)
        first = n == 0
        out.append(TrueUpContext(
            first_step=a, end_step=b, label=book.label[int(pid)],
            cx_before=before_cx if first else 0.0,
            nbc_before=before_nbc if first else 0.0,
            cx_after=float(book.exp_cx[after].sum()),
            nbc_after=float(book.exp_nbc[after].sum()),
            minimum_total=book.minimum[int(pid)],
            surplus_kwh_before=before_surplus if first else 0.0,
            surplus_kwh_after=float(book.exp_surplus[after].sum()),
            surplus_rate=surplus_rate, holds_end=holds_end and b == z0 - k0))
    return tuple(out)


def perfect_foresight(r: Replay, progress: Callable[[float], None] | None = None
                      ) -> Directive:
    """One LP over the whole period with the true PV and load (hourly), carried out as
    settings through the policy, a week of the plan at a time."""
    starts, pv, load, per = _hourly(r)
    prices = step_prices(r.tariff, starts)
    true_ups: tuple[TrueUpContext, ...] = ()
    if _settles_at_true_up(r):
        # the true bill's settlement in the objective: the periods' parts outside the replay
        # at their expected values, the replayed hours exact (the LP's own flows)
        book = _true_up_book(r, starts)
        k0 = book.index(int(starts[0]))
        head = slice(int(np.flatnonzero(book.period == book.period[k0])[0]), k0)
        true_ups = _contexts(book, k0, k0 + len(starts), float(book.exp_cx[head].sum()),
                             float(book.exp_nbc[head].sum()),
                             float(book.exp_surplus[head].sum()),
                             r.tariff.spec.settlement.surplus_rate, holds_end=False)
    x = PlanInputs(prices=prices, pv_kwh=pv, load_kwh=load, soc_kwh=r.soc0_kwh,
                   battery=r.battery, step_hours=1.0, can_curtail_pv=r.can_curtail_pv,
                   cap_budgets=period_cap_budgets(r, prices), terminal_value=0.0,
                   true_ups=true_ups)
    plan = solve(x, time_limit=300.0)
    if not plan.ok:
        raise RuntimeError(f"the perfect-foresight LP did not solve ({plan.status})")
    settings: list[Settings] = []
    signals: list[PriceSignal] = []
    for a in range(0, len(starts), SCHEDULE_CHUNK_H):
        xs, ps = _slice_inputs(x, plan, a, min(a + SCHEDULE_CHUNK_H, len(starts)))
        sched = schedule(ps, xs, r.tz)
        for s, g in zip(sched.per_step, sched.signals, strict=True):
            settings += [s] * per
            signals += [g] * per
    # a tail shorter than an hour: the owner's default
    tail = len(r.data) - len(settings)
    settings += [_floor_settings(r.battery)] * tail
    signals += [PriceSignal.HOLD] * tail
    return Directive(settings, signals, plans=1, plan=plan)


REPLAN_EVERY_H = 1  # rolling strategies re-plan every hour ...
HORIZON_H = 24  # ... over the next 24 hours, in hourly steps
OUTLOOK_EVERY_H = 24  # trueup re-solves the month outlook for the export cap daily
FORECASTS = ("noisy", "persistence", "clear_sky", "perfect")


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


class _Forecaster:
    """What a controller is told at hour ``k`` about hours ``[k, z)``: never the actuals
    beyond ``k`` except through the documented noise (``noisy``) or by design
    (``perfect``, a reference only)."""

    def __init__(self, r: Replay, starts: np.ndarray, pv_h: np.ndarray, load_h: np.ndarray):
        self.kind = r.forecast
        self.noise = r.noise
        self.pv, self.load = pv_h, load_h
        self.rng = np.random.default_rng(r.noise.seed)
        self.clear = None
        if self.kind == "clear_sky":
            from forecasts.clearsky import expected_pv_kwh
            from optimizer.localtime import local_fields

            self.clear = expected_pv_kwh(starts, 3600, r.latitude, r.longitude, list(r.pv),
                                         local_fields(starts, r.tz).month) \
                if r.pv else np.zeros(len(starts))

    @property
    def needs_history_h(self) -> int:
        """Hours of replayed data the forecast needs before its first plan."""
        return 24 if self.kind in ("persistence", "clear_sky") else 0

    def _errors(self, n: int, sigma: tuple[float, float], bias: float) -> np.ndarray:
        rho = self.noise.rho
        e = np.empty(n)
        e[0] = self.rng.standard_normal()
        for i in range(1, n):
            e[i] = rho * e[i - 1] + np.sqrt(1 - rho * rho) * self.rng.standard_normal()
        lead = np.linspace(sigma[0], sigma[1], HORIZON_H)[:n]
        return np.maximum(0.0, 1.0 + bias + lead * e)

    def __call__(self, k: int, z: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(k, z)
        if self.kind == "perfect":
            return self.pv[idx], self.load[idx]
        if self.kind == "noisy":
            n, nz = z - k, self.noise
            return (self.pv[idx] * self._errors(n, nz.pv_sigma, nz.pv_bias),
                    self.load[idx] * self._errors(n, nz.load_sigma, nz.load_bias))
        # persistence: the same hour yesterday; clear_sky: PV from the clear-sky model ×
        # the month's clearness, load the mean of the same hour over the last 7 days
        if self.kind == "persistence":
            return self.pv[idx - 24], self.load[idx - 24]
        days = [d for d in range(1, 8) if k - 24 * d >= 0]
        load = np.mean([self.load[idx - 24 * d] for d in days], axis=0)
        return self.clear[idx], load


def _far_expectation(r: Replay, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """PV and load kWh expected weeks ahead, per hour of ``hours``: the same weeks of the
    prior year where ``r.prior`` has them (what a daemon with a year of history knows),
    else the offline clear-sky × clearness PV and the typical load profile."""
    from forecasts.clearsky import expected_pv_kwh
    from forecasts.last_year import same_weeks_last_year
    from forecasts.load import expected_load_kwh
    from optimizer.localtime import local_fields

    pv = expected_pv_kwh(hours, 3600, r.latitude, r.longitude, list(r.pv),
                         local_fields(hours, r.tz).month) if r.pv else np.zeros(len(hours))
    load, _ = expected_load_kwh(hours, 3600, r.tz)
    ly_pv, ly_load, covered = same_weeks_last_year(hours, 3600, r.prior)
    if covered.all():
        return ly_pv, ly_load, "the same weeks of the prior year"
    if covered.any():
        return (np.where(covered, ly_pv, pv), np.where(covered, ly_load, load),
                f"the prior year where it reaches ({int(covered.sum())} of {len(hours)} h), "
                "else clear-sky × clearness and the typical profile")
    return pv, load, "clear-sky × clearness PV and the typical load profile (no prior year)"


def _rolling(r: Replay, *, cap_aware: bool, true_up_aware: bool = False,
             progress: Callable[[float], None] | None = None) -> Directive:
    """Re-plan every REPLAN_EVERY_H hours over HORIZON_H hourly steps with
    :func:`optimizer.plan.solve`, from the simulated SOC at the decision time and the
    replay's forecast (:class:`_Forecaster`); carry out the first REPLAN_EVERY_H hours of
    each plan as settings through the policy, replayed by the behaviour model on the actual
    15-minute PV and load before the next decision. A forecast that needs yesterday
    (persistence, clear_sky) runs Self-Powered on the first day.

    ``cap_aware``: the NEM-PS export cap as the daemon budgets it — the month outlook (an
    hourly LP to the month's end on the forecast, then the far expectation), re-solved
    daily and re-read hourly against the exports so far; months starting inside the
    horizon pro rata. ``true_up_aware``: the NEM2 true-up — the period so far (expected
    before the replay, simulated since), the plan, and the expected rest. Both off, the LP
    sees linear prices only (EMHASS-style).
    """
    from optimizer.outlook import Outlook, month_outlook

    starts, pv_h, load_h, per = _hourly(r)
    n_h = len(starts)
    spec = battery_spec(r.battery)
    prices_all = step_prices(r.tariff, starts)
    caps = _caps(r) if cap_aware else None
    budgets_full = {cb.month_key: cb for cb in period_cap_budgets(r, prices_all)} \
        if caps else {}
    month_first = {k: int(np.flatnonzero(prices_all.month_key == k)[0]) for k in budgets_full}
    month_end = {k: int(np.flatnonzero(prices_all.month_key == k)[-1]) + 1
                 for k in budgets_full}
    forecast = _Forecaster(r, starts, pv_h, load_h)
    far_pv = far_load = None
    if budgets_full:
        far_pv, far_load, _ = _far_expectation(r, starts)
    outlook: Outlook | None = None
    outlook_at = -OUTLOOK_EVERY_H
    exported_by_month: dict[int, float] = {}
    floor_s = _floor_settings(r.battery)
    settings: list[Settings] = []
    signals: list[PriceSignal] = []
    soc = r.soc0_kwh
    plans = 0
    grid_limit = spec.grid_charge_kw(Mode.BACKUP)
    book = _true_up_book(r, starts) if true_up_aware and _settles_at_true_up(r) else None
    done_cx = np.zeros(n_h)  # simulated Cx, NBC and surplus per replayed hour
    done_nbc = np.zeros(n_h)
    done_surplus = np.zeros(n_h)
    tick = max(1, n_h // 100)
    for k in range(0, n_h, REPLAN_EVERY_H):
        if progress and k % tick == 0:
            progress(k / n_h)
        todo = min(REPLAN_EVERY_H, n_h - k)
        if k < forecast.needs_history_h:
            block_s, block_g = [floor_s] * todo, [PriceSignal.HOLD] * todo
        else:
            z = min(k + HORIZON_H, n_h)
            pv_f, load_f = forecast(k, z)
            prices = replace(prices_all, start_utc=starts[k:z],
                             import_price=prices_all.import_price[k:z],
                             export_credit=prices_all.export_credit[k:z],
                             period=prices_all.period[k:z],
                             month_key=prices_all.month_key[k:z])
            budgets = []
            for key, cb in budgets_full.items():
                if not np.any(prices.month_key == key):
                    continue
                used = exported_by_month.get(key, 0.0)
                if month_first[key] > k:  # the month starts inside the horizon
                    in_h = int(np.sum(prices.month_key == key))
                    share = min(1.0, in_h / max(month_end[key] - month_first[key], 1))
                    budgets.append(CapBudget(key, cb.kwh * share, cb.decredit_value))
                    continue
                if (outlook is None or outlook.month_key != key
                        or k - outlook_at >= OUTLOOK_EVERY_H):
                    m_end = month_end[key]
                    opv, oload = far_pv[k:m_end].copy(), far_load[k:m_end].copy()
                    n_f = min(z, m_end) - k  # the forecast first, then the far expectation
                    opv[:n_f], oload[:n_f] = pv_f[:n_f], load_f[:n_f]
                    outlook = month_outlook(
                        r.tariff, int(starts[k]), int(starts[m_end - 1]) + 3600, opv, oload,
                        soc, r.battery, cb.kwh, used, int(starts[z - 1]) + 3600,
                        can_curtail_pv=r.can_curtail_pv, grid_charge_limit_kw=grid_limit)
                    outlook_at = k
                    plans += 1
                budgets.append(CapBudget(key, outlook.budget(
                    int(starts[k]), int(starts[z - 1]) + 3600, used), cb.decredit_value))
            true_ups: tuple[TrueUpContext, ...] = ()
            if book is not None:
                k0 = book.index(int(starts[k]))
                pid = book.period[k0]
                p_first = int(np.flatnonzero(book.period == pid)[0])
                # the period so far: expected before the replay began, simulated since
                pre = slice(p_first, book.index(int(starts[0])))
                mine = (book.period[book.index(int(starts[0])) + np.arange(k)] == pid) \
                    if k else np.zeros(0, dtype=bool)
                true_ups = _contexts(
                    book, k0, k0 + (z - k),
                    float(book.exp_cx[pre].sum() + done_cx[:k][mine].sum()),
                    float(book.exp_nbc[pre].sum() + done_nbc[:k][mine].sum()),
                    float(book.exp_surplus[pre].sum() + done_surplus[:k][mine].sum()),
                    r.tariff.spec.settlement.surplus_rate, holds_end=True)
            x = PlanInputs(prices=prices, pv_kwh=pv_f, load_kwh=load_f,
                           soc_kwh=soc, battery=r.battery, step_hours=1.0,
                           can_curtail_pv=r.can_curtail_pv, cap_budgets=tuple(budgets),
                           grid_charge_limit_kw=grid_limit, true_ups=true_ups)
            plan = solve(x, time_limit=10.0)
            plans += 1
            if plan.ok:
                sched = schedule(plan, x, r.tz)
                block_s = list(sched.per_step[:todo])
                block_g = list(sched.signals[:todo])
            else:
                block_s, block_g = [floor_s] * todo, [PriceSignal.HOLD] * todo
        # carry the block out on the actual PV and load (15-minute steps)
        q_s = [s for s in block_s for _ in range(per)]
        q_g = [g for g in block_g for _ in range(per)]
        a, b = k * per, (k + todo) * per
        sim = simulate(q_s, soc, r.data.load_kwh[a:b], r.data.pv_kwh[a:b], r.hours, spec,
                       price_signals=q_g)
        soc = float(sim.soc_kwh[-1])
        imp_h = sim.import_kwh.reshape(todo, per).sum(axis=1)
        exp_h = sim.export_kwh.reshape(todo, per).sum(axis=1)
        hs = np.arange(k, k + todo)
        nbc = prices_all.nbc
        for h, e in zip(hs, exp_h, strict=True):
            key = int(prices_all.month_key[h])
            exported_by_month[key] = exported_by_month.get(key, 0.0) + float(e)
        done_cx[hs] = imp_h * (prices_all.import_price[hs] - nbc) \
            - exp_h * prices_all.export_credit[hs]
        done_nbc[hs] = nbc * imp_h
        done_surplus[hs] = exp_h - imp_h
        settings += q_s
        signals += q_g
    tail = len(r.data) - len(settings)
    settings += [floor_s] * tail
    signals += [PriceSignal.HOLD] * tail
    return Directive(settings, signals, plans=plans)


def tou_lp(r: Replay, progress: Callable[[float], None] | None = None) -> Directive:
    """Rolling LP re-planning on linear prices, export cap ignored (EMHASS-style)."""
    return _rolling(r, cap_aware=False, progress=progress)


def trueup(r: Replay, progress: Callable[[float], None] | None = None) -> Directive:
    """Rolling LP re-planning with the export cap budgeted by the month outlook and, on
    NEM2, the true-up: the period so far (simulated) + the plan + the expected rest, as the
    daemon plans."""
    return _rolling(r, cap_aware=True, true_up_aware=True, progress=progress)


STRATEGY_FUNCS: dict[str, Callable[..., Directive]] = {
    "self_powered": self_powered,
    "tbc_like": tbc_like,
    "tou_lp": tou_lp,
    "trueup": trueup,
    "perfect_foresight": perfect_foresight,
}


# --------------------------------------------------------------------------------------
# Replay and bill


def _bill(r: Replay, data: IntervalData) -> Bill:
    return bill(r.tariff, data, true_up_month=r.true_up_month, export_cap_kwh=_caps(r),
                allow_gaps=True)


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
    """Σ import × price − Σ export × credit + wear × Σ discharge, at the tariff's step
    prices (the perfect-foresight LP's cost, without the cap's de-crediting)."""
    p = step_prices(r.tariff, data.start_utc)
    dis = np.maximum(battery_kwh, 0.0)
    return float(np.sum(data.import_kwh * p.import_price) - np.sum(data.export_kwh
                 * p.export_credit) + r.battery.wear_cost_per_kwh * np.sum(dis))


def run_strategy(r: Replay, name: str, progress: Callable[[float], None] | None = None
                 ) -> StrategyResult:
    """Decide, replay through the behaviour model, and bill the simulated intervals."""
    if name not in STRATEGY_FUNCS:
        raise InputError(f"unknown strategy {name!r}", where="--strategy",
                         fix=f"use one of {', '.join(STRATEGY_FUNCS)}")
    t0 = time.perf_counter()
    d = STRATEGY_FUNCS[name](r, progress=progress)
    data = r.data
    sim = simulate(d.settings, r.soc0_kwh, data.load_kwh, data.pv_kwh, r.hours,
                   battery_spec(r.battery), price_signals=d.signals)
    intervals = IntervalData(start_utc=data.start_utc, interval_s=data.interval_s,
                             import_kwh=sim.import_kwh, export_kwh=sim.export_kwh,
                             load_kwh=data.load_kwh, pv_kwh=data.pv_kwh,
                             battery_kwh=sim.discharge_kwh - sim.charge_kwh,
                             source=f"{data.source} ({name}, simulated)")
    b = _bill(r, intervals)
    if progress:
        progress(1.0)
    return StrategyResult(name=name, intervals=intervals, bill=b, plans=d.plans,
                          wall_seconds=time.perf_counter() - t0, soc_kwh=sim.soc_kwh,
                          lp=d.plan)


Progress = Callable[[str, float], None]  # (strategy, fraction done)
_JOB: dict = {}  # the replay and progress queue handed to forked workers


def _job(name: str) -> StrategyResult:
    q = _JOB["queue"]
    return run_strategy(_JOB["replay"], name, progress=lambda f: q.put((name, f)))


def run_backtest(r: Replay, strategies: list[str] | tuple[str, ...] = STRATEGIES,
                 progress: Progress | None = None, jobs: int = 1) -> Backtest:
    """Run ``strategies`` (self_powered is always added: savings are measured against it)
    and the no-battery reference. ``jobs`` > 1 runs strategies in that many forked worker
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
    if jobs <= 1 or len(names) == 1:
        results = [run_strategy(r, n, progress=(lambda f, n=n: progress(n, f))
                                if progress else None) for n in names]
    else:
        results = _run_parallel(r, names, progress, jobs)
    notes = [f"rolling strategies: re-plan every {REPLAN_EVERY_H} h over {HORIZON_H} h "
             f"(hourly steps), forecast {r.forecast}"
             + (f": {r.noise.describe()}" if r.forecast == "noisy" else "")]
    if any(n in ("trueup", "perfect_foresight") for n in names) and (
            _settles_at_true_up(r) or _caps(r)):
        notes.append("weeks ahead (month outlook, true-up projection): "
                     + _far_expectation(r, _hourly(r)[0][:1])[2])
    if "perfect_foresight" in names and _settles_at_true_up(r):
        notes.append("the perfect-foresight LP has the true-up in its objective (the NSC "
                     "at the regime of the Self-Powered projection); parts of a settlement "
                     "period outside the replay enter at their expected values")
    return Backtest(replay=r, results=results, no_battery=_bill(r, no_battery_intervals(r)),
                    notes=notes)


def _run_parallel(r: Replay, names: list[str], progress: Progress | None, jobs: int
                  ) -> list[StrategyResult]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("fork")
    _JOB["replay"], _JOB["queue"] = r, ctx.SimpleQueue()
    slow_first = sorted(names, key=lambda n: n not in ("trueup", "tou_lp"))
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {n: pool.submit(_job, n) for n in slow_first}
            pending = set(futures.values())
            while pending:
                _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not _JOB["queue"].empty():
                    name, frac = _JOB["queue"].get()
                    if progress:
                        progress(name, frac)
            got = {n: f.result() for n, f in futures.items()}
    finally:
        _JOB.clear()
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
                         "pv_kwh columns", where=data.source or "usage")
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
    return out


def replay_from_config(cfg, tariff: Tariff, data: IntervalData, *,
                       prior: IntervalData | None = None, forecast: str = "noisy",
                       noise: ForecastNoise | None = None) -> Replay:
    """A :class:`Replay` for a loaded ``TrueupConfig``."""
    opt = cfg.optimizer
    caps = opt.export_cap_kwh
    return Replay(data=data, tariff=tariff, battery=cfg.battery, tz=cfg.site.timezone,
                  export_cap_kwh=list(caps) if caps else None,
                  true_up_month=opt.true_up_month, can_curtail_pv=cfg.site.can_curtail_pv,
                  latitude=cfg.site.latitude, longitude=cfg.site.longitude,
                  pv=tuple(cfg.pv), forecast=forecast, noise=noise or ForecastNoise(),
                  prior=prior)


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
        lines.append(f"\nperfect-foresight LP objective (the bound on energy cost): "
                     f"{money(pf.lp.objective)} ({pf.lp.status}, {pf.lp.solve_seconds:.1f} s)")
    settled = [(r.name, r.bill.true_ups) for r in bt.results if r.bill.true_ups]
    if settled:
        rows = []
        for name, tus in settled:
            for tu in tus:
                rows.append([name, tu.month, money(tu.charges), money(tu.minimum_billed),
                             money(tu.due), money(tu.forfeited_credit)])
        lines.append("\ntrue-up per strategy")
        lines.append(table(["strategy", "true-up", "charges $", "minimum billed $", "due $",
                            "forfeited credit $"], rows))
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
