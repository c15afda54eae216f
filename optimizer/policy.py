"""A plan becomes settings the Powerwall can carry out, each with a reason in plain words.

trueup sends no power set-point (the cloud paths have none; docs/powerwall.md, 'What can
be set'), so each planned step is read as one of four intents and mapped to settings the way
peers do (Predbat):

* **charge** (the plan charges from the grid): Self-Powered with the reserve raised to the
  target and grid charging on (~1.75 kW per Powerwall), or Backup when the plan needs more
  (~3.3 kW per Powerwall);
* **export** (the plan exports battery energy): Time-Based Control, export rule
  "Everything" (``battery_ok``), reserve at the plan's lowest SOC of the window;
* **hold** (the plan keeps its energy while the home imports): Self-Powered with the
  reserve at the current SOC;
* **self** (everything else): Self-Powered at the owner's floor.

Then changes are kept rare (a minimum dwell time, a budget of changes per day), the reserve
obeys the 80/100 rule and the floor, and the schedule is *checked*: the behaviour model
(:mod:`optimizer.behaviour`) says what the settings would really do, and both values are
reported. Units: kWh per step, app %, UTC epoch seconds.

**The write budget.** Each field a change sets (mode, reserve, grid charging, export rule)
is one command to the gateway, and the safety rails allow so many an hour and a day per
control path (Tesla's Fleet API: 5 a day). :func:`fit_to_budget` fits the schedule to what
is left: while the next day's changes need more writes than the budget (or any hour more
than its share), it drops the change whose loss costs least — the settings before it, or
the ones after it, simply last longer — judged by the behaviour model over the horizon,
with the energy left at the end valued as the plan values it. A change worth less than
``write_price`` $ per write is dropped too. What the budget costs is reported
(:class:`BudgetFit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from optimizer.behaviour import (
    BatterySpec,
    ExportRule,
    Mode,
    PriceSignal,
    Settings,
    clamp_reserve,
    simulate,
)
from optimizer.demand import demand_cost
from optimizer.localtime import local_fields
from optimizer.plan import Plan, PlanInputs, default_terminal_value, demand_margin
from optimizer.site import Battery

EPS_KWH = 0.05  # below this a step's flow is noise, not an intent


@dataclass(frozen=True)
class ScheduledSetting:
    """Settings from ``start_utc`` until the next entry, and why."""

    start_utc: int
    settings: Settings
    signal: PriceSignal
    intent: str  # charge | export | hold | self
    reason: str


@dataclass(frozen=True)
class WriteBudget:
    """Field writes the control path allows (the safety rails' budget, per rolling hour and
    rolling day), the ages of those already sent (seconds before the plan's start, one per
    write, the last day's), and ``write_price``: $ a change must earn per write it sends."""

    per_hour: int
    per_day: int
    sent_ago_s: tuple[float, ...] = ()
    write_price: float = 0.0

    @property
    def left_now(self) -> int:
        """Writes the day's budget leaves at the plan's start."""
        return max(0, self.per_day - sum(1 for a in self.sent_ago_s if a < 86400))


@dataclass(frozen=True)
class BudgetFit:
    """What fitting the schedule to the write budget did: writes the schedule needed over
    the next 24 h and writes it keeps, changes dropped, and the value lost, $ over the
    horizon (behaviour model, energy left at the end valued as the plan values it)."""

    writes_wanted: int
    writes_kept: int
    changes_dropped: int
    value_lost: float
    per_day: int
    left_today: int


@dataclass(frozen=True)
class Schedule:
    entries: tuple[ScheduledSetting, ...]
    per_step: tuple[Settings, ...]
    signals: tuple[PriceSignal, ...]
    plan_value: float  # $ the plan's flows cost over the horizon (import − export credit)
    settings_value: float  # $ the settings' simulated flows cost
    simulated_soc_kwh: np.ndarray
    budget: BudgetFit | None = None


def battery_spec(b: Battery) -> BatterySpec:
    """The behaviour model's view of the configured battery."""
    return BatterySpec(capacity_kwh=b.usable_kwh, max_charge_kw=b.max_charge_kw,
                       max_discharge_kw=b.max_discharge_kw,
                       charge_efficiency=b.charge_efficiency,
                       discharge_efficiency=b.discharge_efficiency, units=b.units)


def intents(plan: Plan, x: PlanInputs) -> list[str]:
    """What each planned step asks of the battery: charge | export | hold | self."""
    surplus = np.maximum(x.pv_kwh - x.load_kwh, 0.0)
    deficit = np.maximum(x.load_kwh - x.pv_kwh, 0.0)
    grid_charge = plan.charge_kwh - surplus
    batt_export = plan.discharge_kwh - deficit
    b = x.battery
    floor = b.floor_kwh
    soc_before = np.concatenate([[x.soc_kwh], plan.soc_kwh[:-1]])
    # what Self-Powered would discharge: the deficit, within the battery's power and what
    # lies above the floor; a plan discharging less than that is holding energy back
    could = np.minimum(np.minimum(deficit, b.max_discharge_kw * x.step_hours),
                       np.maximum(soc_before - floor, 0.0) * b.discharge_efficiency)
    out = []
    for t in range(len(plan.charge_kwh)):
        if grid_charge[t] > EPS_KWH:
            out.append("charge")
        elif batt_export[t] > EPS_KWH:
            out.append("export")
        elif deficit[t] > EPS_KWH and plan.discharge_kwh[t] < could[t] - EPS_KWH:
            out.append("hold")
        else:
            out.append("self")
    return out


def demand_covers(plan: Plan, x: PlanInputs, tz: str) -> dict[int, tuple[str, int]]:
    """The steps a Powerwall should cover in full to hold the demand peaks the plan holds.

    The LP lowers a peak by discharging *part* of each window's load (import capped at the
    month's peak D); the Powerwall cannot cap its import, it covers the whole load
    (Self-Powered) or none (hold). So, per demand charge and local day (the battery
    recharges between days), the energy the plan discharges on the charge's steps is given
    to the steps with the highest deficit first, each covered whole, until it runs out: the
    peak left is the highest step not covered. Returns step → (the reason's words, its
    local day) for the covered steps."""
    out: dict[int, tuple[str, int]] = {}
    if not x.demand:
        return out
    deficit = np.maximum(x.load_kwh - x.pv_kwh, 0.0)
    per_step = x.battery.max_discharge_kw * x.step_hours
    day = local_fields(x.prices.start_utc, tz).day
    for d in sorted(x.demand, key=lambda d: -d.rate):
        if d.rate <= 0 or not len(d.steps):
            continue
        # steps at or below the peak the plan holds do not set it: no need to cover them
        held = plan.demand_kw.get(f"{d.month_key // 12:04d}-{d.month_key % 12 + 1:02d} "
                                  f"{d.name}", d.start_kw)
        above = held * x.step_hours + EPS_KWH
        for g in np.unique(day[d.steps]):
            steps = d.steps[day[d.steps] == g]
            energy = float(plan.discharge_kwh[steps].sum())
            need = np.minimum(deficit[steps], per_step)
            used, covered = 0.0, []
            for k in np.argsort(-deficit[steps], kind="stable"):
                if deficit[steps[k]] <= above or used + need[k] > energy + EPS_KWH:
                    break
                used += float(need[k])
                covered.append(int(steps[k]))
            if not covered:
                continue
            left = [int(t) for t in steps if int(t) not in covered]
            peak = max(max((float(deficit[t]) for t in left), default=0.0),
                       max(float(deficit[t] - per_step) for t in covered)) / x.step_hours
            words = (f"{d.name} demand charge {d.rate:.2f} $/kW: the battery covers the "
                     f"{len(covered)} highest steps of the day in full ({used:.1f} kWh), "
                     f"the day's peak left {max(peak, d.start_kw):.1f} kW")
            for t in covered:
                out.setdefault(t, (words, int(g)))
    return out


def _demand_labels(labels: list[str], covers: dict[int, tuple[str, int]], plan: Plan,
                   x: PlanInputs) -> list[str]:
    """``labels`` with the demand charges' peak steps covered in full ("self"), and the
    steps where the plan only partly covers the load held instead (Self-Powered would
    cover them whole and spend the energy the peak steps need)."""
    out = list(labels)
    deficit = np.maximum(x.load_kwh - x.pv_kwh, 0.0)
    full = np.minimum(deficit, x.battery.max_discharge_kw * x.step_hours)
    steps = sorted({int(t) for d in x.demand if d.rate > 0 for t in d.steps})
    for t in steps:
        if t in covers:
            out[t] = "self"
        elif (out[t] == "self" and deficit[t] > EPS_KWH
              and plan.discharge_kwh[t] < full[t] - EPS_KWH):
            out[t] = "hold"
    return out


def _pct(kwh: float, b: Battery) -> float:
    return 100.0 * kwh / b.usable_kwh


def _settings_for(intent: str, target_pct: float, needs_kw: float, b: Battery,
                  spec: BatterySpec, hold_high: bool = False) -> tuple[Settings, PriceSignal]:
    """Whole app percents, as the app and the API take them: a hold rounds down (never a
    grid charge to reach it), an export's reserve up (stop a little early), a charge
    target to the nearest. Targets in 81-99 become 80 (the 80/100 rule), except a hold the
    caller found worth topping up to 100 (``hold_high``)."""
    floor = b.backup_floor_percent
    if intent == "hold":
        target_pct = math.floor(target_pct + 1e-9)
    elif intent == "export":
        target_pct = math.ceil(target_pct - 1e-9)
    else:
        target_pct = round(target_pct)
    if intent == "charge":
        mode = Mode.SELF_POWERED if needs_kw <= spec.grid_charge_kw(Mode.SELF_POWERED) + 1e-9 \
            else Mode.BACKUP
        reserve = clamp_reserve(max(target_pct, floor), floor)
        return Settings(mode, reserve, True, ExportRule.PV_ONLY), PriceSignal.CHARGE
    if intent == "export":
        reserve = clamp_reserve(max(target_pct, floor), floor)
        return (Settings(Mode.TIME_BASED, reserve, False, ExportRule.BATTERY_OK),
                PriceSignal.EXPORT)
    if intent == "hold":
        reserve = clamp_reserve(max(target_pct, floor), floor, hold=hold_high)
        return Settings(Mode.SELF_POWERED, reserve, False, ExportRule.PV_ONLY), PriceSignal.HOLD
    return (Settings(Mode.SELF_POWERED, clamp_reserve(floor, floor), False, ExportRule.PV_ONLY),
            PriceSignal.HOLD)


def _hold_high(target_pct: float, a: int, z: int, plan: Plan, x: PlanInputs) -> bool:
    """A hold above 80 % cannot be set (the 80/100 rule): either reserve 80, and the home
    draws the battery down to 80 % now, or reserve 100, and the grid tops it up. Take the
    cheaper: (target − 80) % at the value the plan kept it for, minus what it saves now,
    against (100 − target) % bought now and worth that later value after losses."""
    if target_pct <= 80:
        return False
    cap, eta = x.battery.usable_kwh, x.battery.discharge_efficiency
    later = np.flatnonzero(plan.discharge_kwh[z:] > EPS_KWH)
    if not len(later):
        return False
    t = z + int(later[0])
    value_later = max(float(x.prices.import_price[t]), float(x.prices.export_credit[t]))
    price_now = float(np.mean(x.prices.import_price[a:z]))
    lose_80 = (target_pct - 80) / 100 * cap * (eta * value_later - price_now)
    cost_100 = (100 - target_pct) / 100 * cap * (
        price_now / x.battery.charge_efficiency - eta * value_later)
    return cost_100 < lose_80


def _blocks(labels: list[str]) -> list[tuple[int, int, str]]:
    out = []
    start = 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            out.append((start, t, labels[start]))
            start = t
    return out


def _enforce_dwell(labels: list[str], min_steps: int) -> list[str]:
    """Blocks shorter than ``min_steps`` take the intent of the block before them (the
    first block keeps its own): a setting must stay long enough to act."""
    labels = list(labels)
    changed = True
    while changed:
        changed = False
        blocks = _blocks(labels)
        for i, (a, b, _) in enumerate(blocks):
            if i > 0 and b - a < min_steps:
                prev = blocks[i - 1][2]
                labels[a:b] = [prev] * (b - a)
                changed = True
                break
    return labels


def _enforce_budget(labels: list[str], max_changes: int, steps_per_day: int) -> list[str]:
    """At most ``max_changes`` setting changes in any day: merge the shortest blocks."""
    labels = list(labels)
    while True:
        blocks = _blocks(labels)
        changes = [a for a, _, _ in blocks[1:]]
        worst = max((sum(1 for c in changes if s <= c < s + steps_per_day)
                     for s in range(0, len(labels), max(1, steps_per_day // 4))), default=0)
        if worst <= max_changes or len(blocks) <= 1:
            return labels
        i = min(range(1, len(blocks)), key=lambda k: blocks[k][1] - blocks[k][0])
        a, b, _ = blocks[i]
        labels[a:b] = [blocks[i - 1][2]] * (b - a)


def _span(a_utc: int, b_utc: int, tz: str) -> str:
    """'14:00–16:45', with weekdays when the span crosses midnight ('Tue 21:00–Wed 07:00')."""
    zone = ZoneInfo(tz)
    sa, sb = datetime.fromtimestamp(int(a_utc), zone), datetime.fromtimestamp(int(b_utc), zone)
    if sa.date() == sb.date() or (b_utc - a_utc <= 86400 and sb.hour == sb.minute == 0
                                  and (sb - sa).days == 0):
        return f"{sa:%H:%M}–{sb:%H:%M}"
    return f"{sa:%a %H:%M}–{sb:%a %H:%M}"


def _clock(t: int, tz: str) -> str:
    return datetime.fromtimestamp(int(t), ZoneInfo(tz)).strftime("%a %H:%M")


def _regime(plan: Plan) -> str:
    """Why battery energy is worth what it is to the solver: the true-up scenarios."""
    p, q = plan.p_credit_counts, plan.p_nsc_only
    if p is None or q is None:
        return ""
    v = plan.marginal_credit_value or 0.0
    t = 1.0 if plan.true_up_trust is None else plan.true_up_trust
    if t < 0.995:
        if v <= 0.0005:
            return ""  # exports earn nothing here: the true-up changes nothing to say
        return f"a peak credit is worth {v:.3f} $/kWh; the true-up projection trusted {t:.0%}"
    if p >= 0.999:
        return ""  # every likely year ends owing: a credit is worth its face value
    if p <= 0.001 and q >= 0.999:
        return (f"credit is forfeited at the true-up in every likely year: a kWh more earns "
                f"only the NSC, {v:.3f} $/kWh")
    if p <= 0.001 and q <= 0.001:
        return "the minimum charges cover the true-up: a kWh more changes nothing"
    return (f"the true-up ends owing in {p:.0%} of the likely years, in credit in {q:.0%}: "
            f"a peak credit is worth {v:.3f} $/kWh")


def _credit_words(plan: Plan, credit: float) -> str:
    """What exporting a kWh at ``credit`` $/kWh was worth to the solver, in words: the
    credit itself, or under a true-up its expectation over the scenarios."""
    p, q = plan.p_credit_counts, plan.p_nsc_only
    if p is None or q is None or p >= 0.999:
        return f"for up to {credit:.3f} $/kWh credit"
    worth = credit * p + (plan.nsc_rate or 0.0) * q
    t = 1.0 if plan.true_up_trust is None else plan.true_up_trust
    if t < 0.995:
        return (f"worth up to {worth:.3f} $/kWh at the true-up ({credit:.3f} credit; the "
                f"projection trusted {t:.0%})")
    return (f"worth up to {worth:.3f} $/kWh at the true-up ({credit:.3f} credit in the "
            f"{p:.0%} of likely years that end owing, {plan.nsc_rate or 0:.3f} NSC in the "
            f"{q:.0%} that end in credit)")


def _reason(intent: str, a: int, b: int, x: PlanInputs, plan: Plan, tz: str,
            reserve: float, mode: Mode, cap_left: float | None) -> str:
    p = x.prices
    starts = p.start_utc
    end = int(starts[b - 1]) + round(x.step_hours * 3600)
    span = _span(int(starts[a]), end, tz)
    cap = f"; {cap_left:,.0f} kWh of this month's export cap left" if cap_left is not None \
        else ""
    floor = x.battery.backup_floor_percent
    if intent == "charge":
        surplus = np.maximum(x.pv_kwh[a:b] - x.load_kwh[a:b], 0.0)
        grid = float(np.maximum(plan.charge_kwh[a:b] - surplus, 0.0).sum())
        to = "toward 100% (Backup charges full)" if mode == Mode.BACKUP else f"to {reserve:.0f}%"
        if reserve <= floor and mode != Mode.BACKUP:
            return f"recharge {grid:.1f} kWh from the grid {span} back up to the {floor:g}% floor"
        later = p.import_price[b:]
        why = (f" for later hours up to {float(np.max(later)):.3f} $/kWh" if len(later)
               else "")
        return (f"charge {grid:.1f} kWh from the grid {span} at {p.import_price[a]:.3f} $/kWh "
                f"{to}{why}")
    if intent == "export":
        deficit = np.maximum(x.load_kwh[a:b] - x.pv_kwh[a:b], 0.0)
        kwh = float(np.maximum(plan.discharge_kwh[a:b] - deficit, 0.0).sum())
        return (f"export {kwh:.1f} kWh of stored energy {span} "
                f"{_credit_words(plan, float(np.max(p.export_credit[a:b])))}{cap}")
    regime = _regime(plan)
    if intent == "hold":
        nxt = np.flatnonzero(plan.discharge_kwh[b:] > EPS_KWH)
        if len(nxt):
            t = b + int(nxt[0])
            why = (f"keep it for {_clock(starts[t], tz)} "
                   f"({max(p.import_price[t], p.export_credit[t]):.3f} $/kWh, now "
                   f"{float(np.mean(p.import_price[a:b])):.3f})")
        elif regime:
            why = f"using it would only add wear ({regime})"
        else:
            why = "using it would cost more in wear and losses than it saves"
        return f"hold charge at {reserve:.0f}% {span}: {why}{cap}"
    tail = f" ({regime})" if regime else ""
    return (f"self-powered {span}: solar first, battery covers the home down to "
            f"{reserve:.0f}%{tail}")


def schedule(plan: Plan, x: PlanInputs, tz: str, *, min_dwell_minutes: float = 30.0,
             max_changes_per_day: int = 8, cap_left_kwh: float | None = None,
             budget: WriteBudget | None = None, current: Settings | None = None) -> Schedule:
    """Settings for the plan's steps, merged, rate-limited, reasoned and checked; fitted to
    the control path's write ``budget`` when one is given (``current``: the settings in
    force, so the first change's writes count too)."""
    b = x.battery
    spec = battery_spec(b)
    steps_per_day = round(24 / x.step_hours)
    dwell = max(1, round(min_dwell_minutes / 60 / x.step_hours))

    def settle(labels: list[str]) -> list[str]:
        return _enforce_budget(_enforce_dwell(labels, dwell), max_changes_per_day,
                               steps_per_day)

    labels = intents(plan, x)
    blocks = _build_blocks(settle(labels), plan, x, tz, cap_left_kwh, {})
    covers = demand_covers(plan, x, tz)
    if covers:
        # the Powerwall covers all or nothing: judged by the behaviour model with the
        # demand charges, the shaped schedule is kept only where it is worth more
        shaped = _build_blocks(settle(_demand_labels(labels, covers, plan, x)), plan, x, tz,
                               cap_left_kwh, covers)
        if _schedule_cost(shaped, x, spec) <= _schedule_cost(blocks, x, spec) + 1e-6:
            blocks = shaped  # no worse (the same settings, then with the demand's reasons)
    if x.demand:
        blocks = _slower_charges(blocks, x, spec)
    fit = None
    if budget is not None:
        blocks, fit = fit_to_budget(blocks, x, spec, budget, current)
    return _finish(blocks, plan, x, spec, fit)


def _build_blocks(labels: list[str], plan: Plan, x: PlanInputs, tz: str,
                  cap_left_kwh: float | None, covers: dict[int, tuple[str, int]]
                  ) -> list[_Block]:
    """Settings blocks for per-step intents, each with its reason."""
    b = x.battery
    spec = battery_spec(b)
    blocks: list[_Block] = []
    soc_before = np.concatenate([[x.soc_kwh], plan.soc_kwh[:-1]])
    for a, z, intent in _blocks(labels):
        if intent == "charge":
            target = _pct(float(plan.soc_kwh[a:z].max()), b)
        elif intent == "export":
            target = _pct(float(plan.soc_kwh[a:z].min()), b)
        else:
            target = _pct(float(soc_before[a]), b)
        surplus = np.maximum(x.pv_kwh[a:z] - x.load_kwh[a:z], 0.0)
        needs_kw = float(np.max(plan.charge_kwh[a:z] - surplus, initial=0.0)) / x.step_hours
        high = intent == "hold" and _hold_high(target, a, z, plan, x)
        s, sig = _settings_for(intent, target, needs_kw, b, spec, hold_high=high)
        reason = _reason(intent, a, z, x, plan, tz, s.reserve_percent, s.mode, cap_left_kwh)
        demand = _demand_reason(intent, a, z, covers, x, tz)
        if demand:
            reason = demand
        if blocks and blocks[-1].settings == s and blocks[-1].signal == sig:
            blocks[-1] = replace(blocks[-1], z=z)
            continue
        blocks.append(_Block(a, z, s, sig, intent, reason))
    return blocks


def _demand_reason(intent: str, a: int, z: int, covers: dict[int, tuple[str, int]],
                   x: PlanInputs, tz: str) -> str:
    """A demand charge's words for a block that covers its peak steps or holds for them."""
    if not covers:
        return ""
    starts = x.prices.start_utc
    span = _span(int(starts[a]), int(starts[z - 1]) + round(x.step_hours * 3600), tz)
    here = [covers[t][0] for t in range(a, z) if t in covers]
    if intent == "self" and here:
        return f"self-powered {span}: {here[0]}"
    later = sorted(t for t in covers if t >= z)
    if intent == "hold" and later:
        deficit = np.maximum(x.load_kwh - x.pv_kwh, 0.0)
        words, g = covers[later[0]]
        kwh = float(sum(min(deficit[t], x.battery.max_discharge_kw * x.step_hours)
                        for t in later if covers[t][1] == g))
        return (f"hold charge {span}: keep {kwh:.1f} kWh for the peak from "
                f"{_clock(starts[later[0]], tz)} ({words})")
    return ""


def _slower_charges(blocks: list[_Block], x: PlanInputs, spec: BatterySpec) -> list[_Block]:
    """Under a demand charge, a grid charge in Backup (~3.3 kW per Powerwall) can set a
    new peak where the plan charged slower: each Backup charge is tried as Self-Powered with
    grid charging (~1.75 kW) and kept so when the behaviour model says it costs less."""
    out = list(blocks)
    for i, k in enumerate(out):
        if k.intent != "charge" or k.settings.mode != Mode.BACKUP:
            continue
        slow = replace(k, settings=replace(k.settings, mode=Mode.SELF_POWERED),
                       reason=k.reason.replace("toward 100% (Backup charges full)",
                                               f"to {k.settings.reserve_percent:.0f}% at "
                                               "Self-Powered's slower rate, under the "
                                               "month's demand peak"))
        cand = [*out[:i], slow, *out[i + 1:]]
        if _schedule_cost(cand, x, spec) < _schedule_cost(out, x, spec) - 1e-6:
            out = cand
    return out


def _schedule_cost(blocks: list[_Block], x: PlanInputs, spec: BatterySpec) -> float:
    """$ the behaviour model says the settings cost over the horizon: energy at step prices
    − credits + wear + the demand charges they add − the stored energy left, valued as the
    plan values it (what fit_to_budget compares)."""
    b = x.battery
    tv = x.terminal_value if x.terminal_value is not None else default_terminal_value(x)
    p = x.prices
    st, sg = _per_step(blocks)
    sim = simulate(st, x.soc_kwh, x.load_kwh, x.pv_kwh, x.step_hours, spec,
                   price_signals=sg)
    return float(np.sum(sim.import_kwh * p.import_price)
                 - np.sum(sim.export_kwh * p.export_credit)
                 + b.wear_cost_per_kwh * np.sum(sim.discharge_kwh)
                 + demand_cost(x.demand, sim.import_kwh, x.step_hours, demand_margin(x))
                 - tv * sim.soc_kwh[-1])


def _finish(blocks: list[_Block], plan: Plan, x: PlanInputs, spec: BatterySpec,
            fit: BudgetFit | None) -> Schedule:
    entries = tuple(ScheduledSetting(int(x.prices.start_utc[k.a]), k.settings, k.signal,
                                     k.intent, k.reason) for k in blocks)
    per_step, signals = _per_step(blocks)
    sim = simulate(per_step, x.soc_kwh, x.load_kwh, x.pv_kwh, x.step_hours, spec,
                   price_signals=signals)
    p = x.prices
    b = x.battery

    def value(imp, exp, dis):
        return float(np.sum(imp * p.import_price) - np.sum(exp * p.export_credit)
                     + b.wear_cost_per_kwh * np.sum(dis)
                     + demand_cost(x.demand, imp, x.step_hours, demand_margin(x)))

    return Schedule(
        entries=entries, per_step=tuple(per_step), signals=tuple(signals),
        plan_value=value(plan.import_kwh, plan.export_kwh, plan.discharge_kwh),
        settings_value=value(sim.import_kwh, sim.export_kwh, sim.discharge_kwh),
        simulated_soc_kwh=sim.soc_kwh, budget=fit,
    )


@dataclass(frozen=True)
class _Block:
    """Steps [a, z) under one setting, with its intent and reason."""

    a: int
    z: int
    settings: Settings
    signal: PriceSignal
    intent: str
    reason: str


WRITE_FIELDS = ("mode", "reserve_percent", "grid_charging", "export_rule")


def writes_between(before: Settings | None, after: Settings) -> int:
    """Field writes a change from ``before`` to ``after`` sends (every field when
    ``before`` is unknown: the adapter writes what it cannot compare)."""
    if before is None:
        return len(WRITE_FIELDS)
    return sum(getattr(before, f) != getattr(after, f) for f in WRITE_FIELDS)


def _per_step(blocks: list[_Block]) -> tuple[list[Settings], list[PriceSignal]]:
    per_step: list[Settings] = []
    signals: list[PriceSignal] = []
    for k in blocks:
        per_step += [k.settings] * (k.z - k.a)
        signals += [k.signal] * (k.z - k.a)
    return per_step, signals


def _merged(blocks: list[_Block]) -> list[_Block]:
    """Neighbours with the same settings and signal become one block."""
    out: list[_Block] = []
    for k in blocks:
        if out and out[-1].settings == k.settings and out[-1].signal == k.signal:
            out[-1] = replace(out[-1], z=k.z)
        else:
            out.append(k)
    return out


def fit_to_budget(blocks: list[_Block], x: PlanInputs, spec: BatterySpec,
                  budget: WriteBudget, current: Settings | None
                  ) -> tuple[list[_Block], BudgetFit]:
    """Drop changes until the next 24 h need no more writes than the day's budget leaves
    and no hour more than the hour's (see the module's docstring); greedy, cheapest loss
    per write saved first. Returns the blocks and what it cost."""
    per_hour = max(1, round(1 / x.step_hours))
    per_day = round(24 / x.step_hours)

    def cost(bl: list[_Block]) -> float:
        return _schedule_cost(bl, x, spec)

    def writes(bl: list[_Block]) -> list[int]:
        return [writes_between(current if i == 0 else bl[i - 1].settings, k.settings)
                for i, k in enumerate(bl)]

    step_s = x.step_hours * 3600

    def excess(bl: list[_Block]) -> int:
        """How far the worst rolling hour or day over the next 24 h exceeds its budget, as
        the rails count it at each write: the writes sent and planned in the hour (day)
        up to and including it."""
        w = writes(bl)
        over = 0
        for k0, n0 in zip(bl, w, strict=True):
            if k0.a >= per_day:
                break
            if not n0:
                continue
            t = k0.a * step_s
            for span, limit, steps in ((3600, budget.per_hour, per_hour),
                                       (86400, budget.per_day, per_day)):
                past = sum(1 for a in budget.sent_ago_s if a < span - t)
                planned = sum(n for k, n in zip(bl, w, strict=True)
                              if k0.a - steps < k.a <= k0.a)
                over = max(over, past + planned - limit)
        return over

    def day_writes(bl: list[_Block]) -> int:
        return sum(n for k, n in zip(bl, writes(bl), strict=True) if k.a < per_day)

    start = list(blocks)
    wanted = day_writes(start)
    base = cur = cost(start)
    bl = start
    while True:
        over, n_now = excess(bl), day_writes(bl)
        best = None
        for i, k in enumerate(bl):
            if k.a >= per_day:
                break
            options = []
            if i > 0:
                options.append(replace(bl[i - 1], a=k.a, z=k.z))  # the setting before lasts
            elif current is not None and current != k.settings:
                options.append(replace(k, settings=current))  # leave what is in force
            if i + 1 < len(bl):
                options.append(replace(bl[i + 1], a=k.a, z=k.z))  # the next one starts early
            for new in options:
                cand = _merged([*bl[:i], new, *bl[i + 1:]])
                saved = n_now - day_writes(cand)
                if over:  # any change that eases the worst window, a delay included
                    if excess(cand) >= over:
                        continue
                elif saved <= 0:
                    continue
                c = cost(cand)
                key = (c - cur) / max(saved, 1)
                if best is None or key < best[0]:
                    best = (key, cand, c)
        if best is None and over and current is not None and bl[0].settings != current:
            # nothing else helps: send nothing now, keep what is in force
            cand = _merged([replace(bl[0], settings=current), *bl[1:]])
            best = (0.0, cand, cost(cand))
        if best is None:
            break
        key, cand, c = best
        if not over and (budget.write_price <= 0 or key >= budget.write_price):
            break  # within the budget only a change worth less than its writes goes
        bl, cur = cand, c
    dropped = max(0, len(_merged(start)) - len(bl))
    return bl, BudgetFit(writes_wanted=wanted, writes_kept=day_writes(bl),
                         changes_dropped=dropped, value_lost=cur - base,
                         per_day=budget.per_day, left_today=budget.left_now)


def safe_default(b: Battery, start_utc: int) -> ScheduledSetting:
    """What to run when no plan can be trusted: Self-Powered at the owner's floor."""
    s = Settings(Mode.SELF_POWERED, clamp_reserve(b.backup_floor_percent,
                                                  b.backup_floor_percent),
                 False, ExportRule.PV_ONLY)
    return ScheduledSetting(start_utc, s, PriceSignal.HOLD, "self",
                            f"safe default: self-powered at the {s.reserve_percent:.0f}% floor "
                            "(no trustworthy plan)")
