"""The dispatch plan: an LP (a MILP only where needed) built with PuLP, solved with HiGHS.

One function per physical or billing rule, named after it, so the model reads like
DOMAIN.md:

* :func:`add_power_balance` — PV − curtailed + import + discharge = load + export + charge.
* :func:`add_soc_dynamics` — SOC with one-way efficiencies, the floor and the ceiling.
* :func:`add_export_cap` — the NEM-PS monthly cap on *total* exports, soft: kWh beyond the
  month's budget are allowed only at the price the tariff de-credits them (§2.3).
* :func:`add_true_up_epigraph` — PG&E NEM2's true-up as convex epigraph variables (§2.2):
  ``due = max(ΣNBC + max(0, ΣCx), ΣMDC) − ΣMDC`` over year-to-date + plan + rest of period.
* :func:`add_no_simultaneous_flows` — binaries, added only when the LP's answer charges and
  discharges (or imports and exports) in the same step.

Units: every flow is kWh per step (never kW); SOC is stored kWh; prices $/kWh; times UTC
epoch seconds. The solve is bounded in wall-clock time; see :func:`solve`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import pulp

from optimizer.prices import StepPrices, decredit_value
from optimizer.site import Battery

EPS = 1e-6
SHORTFALL_PRICE = 10.0  # $/kWh of load the plan cannot supply (a penalty, never a bill)


@dataclass(frozen=True)
class CapBudget:
    """Export budget for one billing month's steps inside the horizon (NEM-PS).

    ``kwh`` is how much may be exported in the horizon's part of the month before
    de-crediting starts (the month's cap − exports so far, or less when the month-long
    outlook saves some of it for later days). ``decredit_value`` is $ lost per kWh beyond it.
    """

    month_key: int
    kwh: float
    decredit_value: float


@dataclass(frozen=True)
class TrueUpContext:
    """One settlement period the plan's steps ``[first_step, end_step)`` fall in, for
    tariffs that settle NEM charges at a true-up and forfeit leftover credit (PG&E NEM2).

    All $ or kWh, period totals: ``*_before`` cover the period before the plan (history,
    and an estimate for any part history does not cover), ``*_after`` the expected rest of
    the period after the horizon. ``minimum_total`` is the period's ΣMDC. The period that
    holds the horizon's end also holds the battery's energy left then (``holds_end``).
    """

    first_step: int
    end_step: int
    label: str  # the true-up month closing the period, "YYYY-MM"
    cx_before: float
    nbc_before: float
    cx_after: float
    nbc_after: float
    minimum_total: float
    surplus_kwh_before: float  # Σ credited exports − Σ imports so far
    surplus_kwh_after: float
    surplus_rate: float
    holds_end: bool = True


@dataclass(frozen=True)
class PlanInputs:
    """Everything one plan needs: state, forecasts and the tariff's view of them."""

    prices: StepPrices
    pv_kwh: np.ndarray  # forecast PV per step, kWh
    load_kwh: np.ndarray  # forecast home load per step, kWh
    soc_kwh: float  # stored energy now, kWh
    battery: Battery
    step_hours: float
    can_curtail_pv: bool = False
    cap_budgets: tuple[CapBudget, ...] = ()
    true_ups: tuple[TrueUpContext, ...] = ()
    grid_import_limit_kw: float = 48.0  # the service's capacity (a 200 A panel ≈ 48 kW)
    # the fastest grid charge the settings can command (Backup: ~3.3 kW per Powerwall,
    # DOMAIN.md §3); None = only the battery's own limit
    grid_charge_limit_kw: float | None = None
    terminal_value: float | None = None  # $ per stored kWh left at the end (None: derive)


@dataclass
class Plan:
    """A solved plan: flows per step and what the solver said."""

    status: str  # optimal | feasible (not proven) | infeasible | failed
    solver: str
    solve_seconds: float
    objective: float
    import_kwh: np.ndarray
    export_kwh: np.ndarray
    charge_kwh: np.ndarray
    discharge_kwh: np.ndarray
    curtail_kwh: np.ndarray
    soc_kwh: np.ndarray  # stored kWh at the END of each step
    excess_kwh: dict[int, float] = field(default_factory=dict)  # cap excess per month key
    binaries: int = 0  # how many binary variables the final solve had
    true_up_due: float | None = None  # projected true-up charges due ($), first period
    projected_cx: float | None = None  # projected ΣCx of the first period
    marginal_credit_value: float | None = None  # $/kWh a peak export is worth at the margin
    true_up_label: str | None = None  # the true-up month of that period
    shortfall_kwh: float = 0.0  # load the service limit and battery could not supply
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "feasible")


# --------------------------------------------------------------------------------------
# The rules


@dataclass
class _Vars:
    imp: list
    exp: list
    ch: list
    dis: list
    curt: list
    short: list  # load that cannot be supplied (forecast above the service limit)
    soc: list  # soc[t] = stored kWh at the end of step t


def _variables(prob: pulp.LpProblem, n: int, x: PlanInputs) -> _Vars:
    b = x.battery
    h = x.step_hours

    def many(name, ub):
        return [prob.add_variable(f"{name}_{t}", 0,
                                  float(ub[t]) if hasattr(ub, "__len__") else ub)
                for t in range(n)]

    curt_ub = x.pv_kwh if x.can_curtail_pv else np.zeros(n)
    return _Vars(
        imp=many("imp", x.grid_import_limit_kw * h),
        exp=many("exp", None),
        ch=many("ch", b.max_charge_kw * h),
        dis=many("dis", b.max_discharge_kw * h),
        curt=many("curt", curt_ub),
        short=many("short", x.load_kwh),
        soc=[prob.add_variable(f"soc_{t}", _floor_at(t, x), b.usable_kwh) for t in range(n)],
    )


def _floor_at(t: int, x: PlanInputs) -> float:
    """The SOC floor at the end of step ``t``: the owner's floor, or — when the battery
    starts below it (after an outage) — as high as charging at full speed can reach by
    then, so the model is never infeasible because of where the battery is now."""
    b = x.battery
    # a reserve above SOC in Self-Powered charges at ~1.75 kW per Powerwall (DOMAIN.md §3)
    rate = min(b.max_charge_kw, 1.75 * b.units)
    reachable = x.soc_kwh + b.charge_efficiency * rate * x.step_hours * (t + 1)
    return max(0.0, min(b.floor_kwh, reachable))


def add_power_balance(prob: pulp.LpProblem, v: _Vars, x: PlanInputs) -> None:
    """Energy in = energy out, each step: pv − curtailed + import + discharge + shortfall =
    load + export + charge (kWh). The shortfall (a forecast load the service limit and the
    battery cannot carry) is priced at SHORTFALL_PRICE, so it is used only when nothing
    else can balance the step, and the plan stays solvable."""
    for t in range(len(v.imp)):
        prob += (float(x.pv_kwh[t]) - v.curt[t] + v.imp[t] + v.dis[t] + v.short[t]
                 == float(x.load_kwh[t]) + v.exp[t] + v.ch[t]), f"balance_{t}"


def add_soc_dynamics(prob: pulp.LpProblem, v: _Vars, x: PlanInputs) -> None:
    """soc[t] = soc[t−1] + η_c·charge − discharge/η_d, within [floor, usable] (bounds)."""
    b = x.battery
    prev: float | pulp.LpVariable = min(max(x.soc_kwh, 0.0), b.usable_kwh)
    for t in range(len(v.soc)):
        prob += (v.soc[t] == prev + b.charge_efficiency * v.ch[t]
                 - v.dis[t] * (1.0 / b.discharge_efficiency)), f"soc_{t}"
        prev = v.soc[t]


def add_grid_charge_limit(prob: pulp.LpProblem, v: _Vars, x: PlanInputs) -> None:
    """Charging beyond the step's PV surplus comes from the grid, at most at the rate a
    setting can make the Powerwall charge: charge ≤ max(0, pv − load) + limit × h."""
    if x.grid_charge_limit_kw is None:
        return
    surplus = np.maximum(x.pv_kwh - x.load_kwh, 0.0)
    for t in range(len(v.ch)):
        prob += v.ch[t] <= float(surplus[t]) + x.grid_charge_limit_kw * x.step_hours, \
            f"grid_charge_rate_{t}"


def add_export_cap(prob: pulp.LpProblem, v: _Vars, x: PlanInputs) -> dict[int, pulp.LpVariable]:
    """NEM-PS cap on total exports per billing month, soft (DOMAIN.md §2.3, §6).

    ``excess_m ≥ Σ_{t in m} export_t − budget_m``, ``excess_m ≥ 0``; the objective charges
    each excess kWh the credit it de-credits. A hard cap would make the model infeasible
    when PV cannot be curtailed and the battery is full.
    """
    excess = {}
    for cb in x.cap_budgets:
        steps = np.flatnonzero(x.prices.month_key == cb.month_key)
        if not len(steps):
            continue
        e = prob.add_variable(f"excess_{cb.month_key}", 0)
        prob += pulp.lpSum(v.exp[t] for t in steps) - e <= max(cb.kwh, 0.0), \
            f"cap_{cb.month_key}"
        excess[cb.month_key] = e
    return excess


def add_true_up_epigraph(prob: pulp.LpProblem, cx_plan, nbc_plan, tu: TrueUpContext):
    """PG&E NEM2 true-up (DOMAIN.md §2.2) as epigraph variables (convex, so an LP):

        y ≥ ΣCx, y ≥ 0                      (net energy charges; credit is forfeited)
        z ≥ ΣNBC + y − ΣMDC, z ≥ 0          (due beyond the minimum already billed)

    Σ are over the whole period: before the plan + the plan + after it. Returns (y, z).
    """
    y = prob.add_variable(f"net_charges_{tu.label}", 0)
    z = prob.add_variable(f"true_up_due_{tu.label}", 0)
    prob += y >= tu.cx_before + tu.cx_after + cx_plan, f"net_charges_floor_{tu.label}"
    prob += (z >= tu.nbc_before + tu.nbc_after + nbc_plan + y - tu.minimum_total,
             f"due_over_minimum_{tu.label}")
    return y, z


def add_no_simultaneous_flows(prob: pulp.LpProblem, v: _Vars, x: PlanInputs,
                              steps: list[int]) -> int:
    """Binaries forbidding charge+discharge and import+export in the same step (big-M by
    the physical limits), only on ``steps``. Returns the number of binaries added."""
    b, h = x.battery, x.step_hours
    big_exp = float(np.max(x.pv_kwh)) + b.max_discharge_kw * h + 1.0
    for t in steps:
        u = prob.add_variable(f"charging_{t}", 0, 1, cat="Integer")
        w = prob.add_variable(f"importing_{t}", 0, 1, cat="Integer")
        prob += v.ch[t] <= b.max_charge_kw * h * u, f"ch_or_dis_a_{t}"
        prob += v.dis[t] <= b.max_discharge_kw * h * (1 - u), f"ch_or_dis_b_{t}"
        prob += v.imp[t] <= x.grid_import_limit_kw * h * w, f"imp_or_exp_a_{t}"
        prob += v.exp[t] <= big_exp * (1 - w), f"imp_or_exp_b_{t}"
    return 2 * len(steps)


def default_terminal_value(x: PlanInputs) -> float:
    """$ per stored kWh left at the horizon's end at *linear* prices: what it can later
    displace or earn — the horizon's mean of max(import price, export credit) — after the
    discharge loss and its wear. Keeps the plan from dumping the battery because the horizon
    ends. (Under a true-up the value goes through the epigraph instead: see build().)"""
    p = x.prices
    later = float(np.mean(np.maximum(p.import_price, p.export_credit)))
    return max(0.0, later * x.battery.discharge_efficiency - x.battery.wear_cost_per_kwh)


def _terminal_bill_terms(x: PlanInputs) -> tuple[float, float]:
    """Per stored kWh left at the end, what it later takes off the true-up's ΣCx and ΣNBC:
    η_d × the horizon's mean of max(rate − NBC, credit), and η_d × NBC (a displaced import
    also avoids its NBC)."""
    p = x.prices
    eta = x.battery.discharge_efficiency
    cx = float(np.mean(np.maximum(p.import_price - p.nbc, p.export_credit)))
    return eta * cx, eta * p.nbc


# --------------------------------------------------------------------------------------
# Build and solve


def build(x: PlanInputs, *, binary_steps: list[int] | None = None):
    """The PuLP problem for ``x``. Returns (problem, variables, extras)."""
    n = len(x.pv_kwh)
    p = x.prices
    prob = pulp.LpProblem("trueup_plan", pulp.LpMinimize)
    v = _variables(prob, n, x)
    add_power_balance(prob, v, x)
    add_soc_dynamics(prob, v, x)
    add_grid_charge_limit(prob, v, x)
    excess = add_export_cap(prob, v, x)
    nbins = add_no_simultaneous_flows(prob, v, x, binary_steps or [])

    decredit_of = {cb.month_key: cb.decredit_value for cb in x.cap_budgets}
    wear = x.battery.wear_cost_per_kwh * pulp.lpSum(v.dis)
    shortfall = SHORTFALL_PRICE * pulp.lpSum(v.short)
    extras: dict = {"excess": excess, "binaries": nbins, "periods": []}

    def linear(steps, months) -> pulp.LpAffineExpression:
        return (pulp.lpSum(float(p.import_price[t]) * v.imp[t] - float(p.export_credit[t])
                           * v.exp[t] for t in steps)
                + pulp.lpSum(decredit_of[k] * excess[k] for k in months))

    month_first = {k: int(np.flatnonzero(p.month_key == k)[0]) for k in excess}
    covered = np.zeros(n, dtype=bool)
    cost = wear + shortfall
    for tu in x.true_ups:
        steps = range(tu.first_step, tu.end_step)
        covered[tu.first_step:tu.end_step] = True
        months = [k for k, t0 in month_first.items() if tu.first_step <= t0 < tu.end_step]
        nbc_plan = p.nbc * pulp.lpSum(v.imp[t] for t in steps)
        # NEM2 energy charges of the plan (Cx, excl. NBC); de-credited exports earn nothing
        cx_plan = linear(steps, months) - nbc_plan
        exported = pulp.lpSum(v.exp[t] for t in steps) - pulp.lpSum(excess[k] for k in months)
        imported = pulp.lpSum(v.imp[t] for t in steps)
        if tu.holds_end:
            # the energy left at the end is spent later in this period: through the bill
            tv_cx, tv_nbc = _terminal_bill_terms(x)
            cx_plan -= tv_cx * v.soc[-1]
            nbc_plan -= tv_nbc * v.soc[-1]
            imported -= x.battery.discharge_efficiency * v.soc[-1]
            cost += x.battery.wear_cost_per_kwh * x.battery.discharge_efficiency * v.soc[-1]
        y, z = add_true_up_epigraph(prob, cx_plan, nbc_plan, tu)
        # NSC: linear at the regime of the projection without the plan (−max(0, S) is
        # concave; the rate is small)
        nsc = tu.surplus_rate if tu.surplus_kwh_before + tu.surplus_kwh_after > 0 else 0.0
        cost += z - nsc * (exported - imported)
        extras["periods"].append((tu, y, z, cx_plan))
    rest = [t for t in range(n) if not covered[t]]
    if rest:
        cost += linear(rest, [k for k, t0 in month_first.items() if not covered[t0]])
    if not any(tu.holds_end for tu in x.true_ups):
        tv = x.terminal_value if x.terminal_value is not None else default_terminal_value(x)
        cost -= tv * v.soc[-1]
    prob += cost, "cost"
    return prob, v, extras


_BANNER_SHOWN = False


def _swallow_highs_banner() -> None:
    """HiGHS prints a licence banner on stdout the first time a solver is created in a
    process, whatever its options; that would corrupt `trueup plan --json`. Create the
    first one with the C-level stdout pointed at /dev/null."""
    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        return
    import os
    import sys

    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        _BANNER_SHOWN = True


def _solver(name: str, time_limit: float, gap: float, mip: bool):
    if name == "highs":
        _swallow_highs_banner()
        return pulp.HiGHS(msg=False, timeLimit=time_limit, gapRel=gap, mip=mip)
    import warnings

    with warnings.catch_warnings():  # PuLP 3.3 warns about 4.0; we pin pulp < 4
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, gapRel=gap, mip=mip)


def _solve_killable(prob: pulp.LpProblem, solver, seconds: float) -> None:
    """Solve in a forked child and kill it (and the CBC process it starts) after
    ``seconds`` of wall clock: CBC ignores its own time limit in presolve (DOMAIN.md §5).
    The solution comes back by name; a killed solve leaves ``prob`` marked not solved."""
    import multiprocessing as mp
    import os
    import signal

    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)

    def work() -> None:
        os.setsid()  # one process group with the CBC it spawns, so both can be killed
        prob.solve(solver)
        child.send((prob.status, prob.sol_status,
                    {v.name: v.varValue for v in prob.variables()}))

    proc = ctx.Process(target=work, daemon=True)
    proc.start()
    got = parent.poll(seconds)
    if got:
        status, sol_status, values = parent.recv()
        proc.join(1.0)
        prob.status, prob.sol_status = status, sol_status
        for v in prob.variables():
            v.varValue = values.get(v.name)
        return
    with contextlib.suppress(ProcessLookupError):  # it may have just finished
        os.killpg(proc.pid, signal.SIGKILL)
    proc.join(1.0)
    prob.status, prob.sol_status = pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound


def _run(prob: pulp.LpProblem, name: str, time_limit: float, gap: float, mip: bool) -> None:
    solver = _solver(name, time_limit, gap, mip)
    if name == "cbc":
        _solve_killable(prob, solver, time_limit * 1.5 + 0.1)
    else:
        prob.solve(solver)  # HiGHS runs in-process and honours its time limit


def _status(prob: pulp.LpProblem) -> str:
    # PuLP 3.3 says "Optimal" for HiGHS stopped at the time limit: only sol_status tells
    # (1 optimal, 2 solution found but not proven) — DOMAIN.md §6
    if prob.sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    if prob.status == pulp.LpStatusInfeasible:
        return "infeasible"
    return "failed"


def _extract(prob, v: _Vars, extras: dict, x: PlanInputs, status: str, solver: str,
             seconds: float) -> Plan:
    def arr(vs):
        return np.array([max(0.0, vv.varValue or 0.0) for vv in vs])

    plan = Plan(
        status=status, solver=solver, solve_seconds=seconds,
        objective=float(pulp.value(prob.objective) or 0.0),
        import_kwh=arr(v.imp), export_kwh=arr(v.exp), charge_kwh=arr(v.ch),
        discharge_kwh=arr(v.dis), curtail_kwh=arr(v.curt),
        soc_kwh=np.array([vv.varValue or 0.0 for vv in v.soc]),
        excess_kwh={k: float(e.varValue or 0.0) for k, e in extras["excess"].items()},
        binaries=extras["binaries"],
    )
    plan.shortfall_kwh = float(sum(vv.varValue or 0.0 for vv in v.short))
    if plan.shortfall_kwh > EPS:
        plan.notes.append(f"{plan.shortfall_kwh:.1f} kWh of forecast load exceed the service "
                          "limit and the battery: not planned for")
    if extras["periods"]:
        tu, _y, z, cx_plan = extras["periods"][0]
        cx = tu.cx_before + tu.cx_after + float(pulp.value(cx_plan))
        plan.projected_cx = cx
        plan.true_up_due = float(z.varValue or 0.0)
        plan.true_up_label = tu.label
        plan.marginal_credit_value = round(_marginal_credit(x, tu, cx, plan), 5)
    return plan


def _marginal_credit(x: PlanInputs, tu: TrueUpContext, projected_cx: float,
                     plan: Plan) -> float:
    """$/kWh one more peak-credit kWh is worth at the projected balance (DOMAIN.md §2.2):
    the full credit while the period ends in net charges above the minimum, only the NSC
    rate once credit would be forfeited, nothing while the minimum charge covers it all."""
    steps = slice(tu.first_step, tu.end_step)
    full = float(np.max(x.prices.export_credit[steps]))
    nbc_total = tu.nbc_before + tu.nbc_after + x.prices.nbc * float(
        plan.import_kwh[steps].sum())
    if projected_cx <= 0:
        surplus = tu.surplus_kwh_before + tu.surplus_kwh_after + float(
            plan.export_kwh[steps].sum() - plan.import_kwh[steps].sum())
        return tu.surplus_rate if surplus > 0 else 0.0
    if nbc_total + projected_cx <= tu.minimum_total:
        return 0.0
    return full


def _overlaps(plan: Plan) -> list[int]:
    both_batt = np.minimum(plan.charge_kwh, plan.discharge_kwh) > EPS
    both_grid = np.minimum(plan.import_kwh, plan.export_kwh) > EPS
    return [int(t) for t in np.flatnonzero(both_batt | both_grid)]


def solve(x: PlanInputs, *, solver: str = "highs", time_limit: float = 10.0,
          gap: float = 0.001) -> Plan:
    """Solve the plan: the LP first; if it charges and discharges (or imports and exports)
    in one step, re-solve with binaries on those steps (DOMAIN.md §6: with positive prices
    the binaries never bind, so most plans stay LPs). Never reads values of a failed solve.
    """
    t0 = time.perf_counter()
    prob, v, extras = build(x)
    _run(prob, solver, time_limit, gap, mip=False)
    status = _status(prob)
    if status not in ("optimal", "feasible"):
        return failed_plan(x, status, solver, time.perf_counter() - t0)
    plan = _extract(prob, v, extras, x, status, solver, time.perf_counter() - t0)
    overlap = _overlaps(plan)
    if overlap:
        left = max(0.5, time_limit - (time.perf_counter() - t0))
        prob, v, extras = build(x, binary_steps=overlap)
        _run(prob, solver, left, gap, mip=True)
        status = _status(prob)
        if status in ("optimal", "feasible"):
            plan = _extract(prob, v, extras, x, status, solver, time.perf_counter() - t0)
            plan.notes.append(f"the LP charged and discharged (or imported and exported) in "
                              f"{len(overlap)} step(s); re-solved as a MILP with "
                              f"{plan.binaries} binaries")
        else:
            plan.notes.append("the MILP re-solve failed; keeping the LP answer")
    plan.solve_seconds = time.perf_counter() - t0
    return plan


def failed_plan(x: PlanInputs, status: str, solver: str, seconds: float) -> Plan:
    n = len(x.pv_kwh)
    z = np.zeros(n)
    return Plan(status=status, solver=solver, solve_seconds=seconds, objective=float("nan"),
                import_kwh=z, export_kwh=z, charge_kwh=z, discharge_kwh=z, curtail_kwh=z,
                soc_kwh=np.full(n, x.soc_kwh))


def cap_budgets_pro_rata(prices: StepPrices, caps: dict[int, float], used: dict[int, float],
                         month_hours: dict[int, float], tariff, step_hours: float
                         ) -> tuple[CapBudget, ...]:
    """The simplest budget: the month's remaining cap in proportion to the hours of the
    month left that the horizon covers (the outlook refines this; see optimizer/outlook.py).
    """
    out = []
    for key in np.unique(prices.month_key):
        key = int(key)
        if key not in caps:
            continue
        left = caps[key] - used.get(key, 0.0)
        in_h = float(np.sum(prices.month_key == key)) * step_hours
        share = min(1.0, in_h / max(month_hours.get(key, in_h), in_h))
        out.append(CapBudget(key, max(0.0, left * share), decredit_value(tariff, key)))
    return tuple(out)
