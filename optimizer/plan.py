"""The dispatch plan: an LP (a MILP only where needed), assembled as numpy arrays and
solved in-process by HiGHS (highspy); CBC, the fallback, gets the same model through PuLP.

One function per physical or billing rule, named after it, so the model reads like the
tariff (docs/billing-rules.md). Each adds its columns and rows to a small matrix builder
(:class:`_LP`: blocks of bounds and COO triplets, one numpy call per rule rather than an
expression per step):

* :func:`add_power_balance` — PV − curtailed + import + discharge = load + export + charge.
* :func:`add_no_pass_through` — no kWh imported only to be exported in the same step.
* :func:`add_inverter_limit` — the battery charges or discharges, one way at a time.
* :func:`add_soc_dynamics` — SOC with one-way efficiencies, the floor and the ceiling.
* :func:`add_grid_charge_limit` — grid charging no faster than a setting can command.
* :func:`add_export_cap` — the NEM-PS monthly cap on *total* exports, soft: kWh beyond the
  month's budget are allowed only at the price the tariff de-credits them (docs/billing-rules.md,
  'The NEM-PS export cap and de-credit order').
* :func:`add_wear` — battery wear on the cycling a plan adds beyond Self-Powered's.
* :func:`add_true_up_epigraph` — PG&E NEM2's true-up as convex epigraph variables
  (docs/true-up.md):
  ``due = max(ΣNBC + max(0, ΣCx), ΣMDC) − ΣMDC`` over year-to-date + plan + rest of period.
* :func:`add_no_simultaneous_flows` — binaries, added only when the LP's answer charges and
  discharges (or imports and exports) in the same step.

The objective ($) is put together in :func:`build_lp`; :func:`build` gives the same model as
a PuLP problem, with the variables and rows named as the rules name them (``imp_3``,
``excess_<month key>``, ``balance_3``, ``cap_<month key>`` …).

Units: every flow is kWh per step (never kW); SOC is stored kWh; prices $/kWh; times UTC
epoch seconds. The solve is bounded in wall-clock time; see :func:`solve`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import numpy as np
import pulp
import scipy.sparse as sp

from optimizer.demand import DemandBudget
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
class TrueUpScenario:
    """How one scenario of the rest of a settlement period adds up *outside* the plan's
    horizon ($, kWh, period totals: history, then the expected rest in this scenario)."""

    weight: float  # probability
    cx: float  # ΣCx outside the plan, $ (< 0: credit)
    nbc: float  # ΣNBC outside the plan, $
    surplus_kwh: float  # Σ credited exports − Σ imports outside the plan, kWh
    # the NSC's regime: None = as the scenario stands without the plan (the planner's
    # linearisation); "surplus" / "deficit" = the period's net surplus is held ≥ 0 / ≤ 0
    # and the NSC is exact there (the perfect-foresight bound solves both)
    regime: str | None = None
    # kind "carry" (monthly charges, credit carried and forfeited: net billing): the credit
    # carried into the plan's first month, $, and each month's energy charges outside the
    # plan from that month to the period's end ($, < 0: credit; NBC excluded)
    credit_in: float = 0.0
    month_charges: tuple[float, ...] = ()
    # the hedge (TrueUpContext.hedged): "the period surely ends owing" — credits at face
    # value, as a plan that ignores the true-up values them; not part of the projection
    hedge: bool = False


#: $ of net charges outside the plan that make a period owe whatever the plan does (a 48 h
#: plan cannot credit this much): the hedge scenario's ΣCx, and each of its months' charges
OWING_FOR_SURE = 1.0e4


@dataclass(frozen=True)
class TrueUpContext:
    """One settlement period the plan's steps ``[first_step, end_step)`` fall in, for
    tariffs that settle NEM charges at a true-up and forfeit leftover credit (PG&E NEM2).

    ``scenarios`` say how the rest of the period may add up (:mod:`optimizer.projection`);
    the plan gives each its own true-up and minimises the expectation, so a credited kWh is
    worth its credit in the scenarios that end owing, the NSC rate in those that end in
    surplus, and nothing where the minimum charge covers the period.
    ``minimum_total`` is the period's ΣMDC. The period that holds the horizon's end also
    holds the battery's energy left then (``holds_end``).
    """

    first_step: int
    end_step: int
    label: str  # the true-up month closing the period, "YYYY-MM"
    minimum_total: float
    surplus_rate: float
    scenarios: tuple[TrueUpScenario, ...]
    holds_end: bool = True
    # "at_true_up" (NEM charges settled at the true-up) or "carry" (each month pays; credit
    # is carried in dollars and forfeited at the period's end: add_credit_carry_epigraph)
    kind: str = "at_true_up"
    month_of_step: tuple[int, ...] = ()  # carry: each plan step's month, 0 = the first

    def hedged(self, trust: float) -> TrueUpContext:
        """This context with the projection trusted at ``trust`` (0-1): its scenarios keep
        ``trust`` of the probability and a hedge scenario in which the period surely ends
        owing takes the rest. There a credited kWh is worth its credit, as to a plan that
        ignores the true-up; so a projection built on a generic model (no history of this
        home) cannot lead the plan to hold back exports that the real year would have paid
        in full (:func:`optimizer.projection.projection_trust`). ``trust`` ≥ 1: unchanged."""
        if trust >= 1.0 or not self.scenarios:
            return self
        t = max(0.0, float(trust))
        kept = tuple(replace(sc, weight=sc.weight * t) for sc in self.scenarios)
        ref = self.scenarios[0]
        owing = TrueUpScenario(
            weight=1.0 - t, cx=OWING_FOR_SURE,
            nbc=max(sc.nbc for sc in self.scenarios) + self.minimum_total,
            surplus_kwh=-OWING_FOR_SURE, regime=None, credit_in=0.0,
            month_charges=tuple(OWING_FOR_SURE for _ in ref.month_charges), hedge=True)
        return replace(self, scenarios=(*kept, owing))

    @classmethod
    def single(cls, *, first_step: int, end_step: int, label: str, cx: float, nbc: float,
               minimum_total: float, surplus_kwh: float, surplus_rate: float,
               holds_end: bool = True) -> TrueUpContext:
        """A period whose rest is known for sure (one scenario)."""
        return cls(first_step, end_step, label, minimum_total, surplus_rate,
                   (TrueUpScenario(1.0, cx, nbc, surplus_kwh),), holds_end)


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
    export_limit_kw: float | None = None  # None: no limit (0 during a grid outage)
    # the fastest grid charge the settings can command (Backup: ~3.3 kW per Powerwall,
    # docs/powerwall.md, 'Charge rates'); None = only the battery's own limit
    grid_charge_limit_kw: float | None = None
    terminal_value: float | None = None  # $ per stored kWh left at the end (None: derive)
    # kWh Self-Powered at the floor would discharge over the horizon (the owner's default):
    # wear is counted only on what the plan discharges beyond it (None: on all of it)
    baseline_discharge_kwh: float | None = None
    # $ per kWh imported or exported: where two plans are worth the same, the one closer to
    # Self-Powered (less grid traffic) wins; 0 = none
    tie_break_per_kwh: float = 0.0
    # demand charges over the plan's steps (optimizer/demand.py, demand_budgets)
    demand: tuple[DemandBudget, ...] = ()
    # kWh per step the home's load may reach (its recent highs at that time of day) beyond
    # the forecast: a demand charge's peak is budgeted against it (None: the forecast)
    load_high_kwh: np.ndarray | None = None


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
    true_up_due: float | None = None  # expected true-up due beyond the minimum ($), first period
    projected_cx: float | None = None  # expected ΣCx of the first period
    marginal_credit_value: float | None = None  # $/kWh a peak export is worth at the margin
    true_up_label: str | None = None  # the true-up month of that period
    # the first period's scenarios as the solver left them: the share (probability) in which
    # a credited kWh earns its full credit (the period ends owing beyond the minimum), the
    # share in which it earns only the NSC rate (the period ends in credit with a surplus)
    p_credit_counts: float | None = None
    p_nsc_only: float | None = None
    nsc_rate: float | None = None  # that period's net surplus compensation, $/kWh
    # how far the plan acted on the projection (TrueUpContext.hedged): 1 = fully
    true_up_trust: float | None = None
    shortfall_kwh: float = 0.0  # load the service limit and battery could not supply
    notes: list[str] = field(default_factory=list)
    # the peak the plan holds per demand charge, "YYYY-MM flat" → kW (the month's billing
    # demand: at least what it was before the plan)
    demand_kw: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "feasible")


# --------------------------------------------------------------------------------------
# The LP in matrix form


def _vec(v: float | np.ndarray, n: int) -> np.ndarray:
    """``v`` as a float array of length ``n`` (a scalar repeated)."""
    a = np.asarray(v, dtype=float)
    return np.full(n, a) if a.ndim == 0 else a.reshape(n)


@dataclass(frozen=True)
class _Lin:
    """A linear form Σ vals·x[cols] over the LP's columns (a repeated column adds up)."""

    cols: np.ndarray
    vals: np.ndarray

    @classmethod
    def of(cls, cols, vals: float | np.ndarray = 1.0) -> _Lin:
        c = np.asarray(cols, dtype=np.intp).reshape(-1)
        return cls(c, _vec(vals, len(c)))

    def __add__(self, other: _Lin) -> _Lin:
        return _Lin(np.concatenate([self.cols, other.cols]),
                    np.concatenate([self.vals, other.vals]))

    def __neg__(self) -> _Lin:
        return _Lin(self.cols, -self.vals)

    def __sub__(self, other: _Lin) -> _Lin:
        return self + (-other)

    def __rmul__(self, k: float) -> _Lin:
        return _Lin(self.cols, k * self.vals)

    def value(self, xval: np.ndarray) -> float:
        """The form's value at the column values ``xval``."""
        return float(self.vals @ xval[self.cols])


@dataclass(frozen=True)
class _Matrix:
    """The assembled LP: min cost·x, row_lb ≤ A·x ≤ row_ub, col_lb ≤ x ≤ col_ub."""

    cost: np.ndarray
    col_lb: np.ndarray
    col_ub: np.ndarray
    integer: np.ndarray  # bool per column
    a: sp.csc_matrix
    row_lb: np.ndarray
    row_ub: np.ndarray


class _LP:
    """A small LP builder: each rule adds a block of columns or rows with numpy arrays.

    Rows come as COO triplets (row within the block, column, coefficient); repeated (row,
    column) pairs add up, as do repeated objective terms. Names (``imp_3``, ``balance_3``)
    matter only for the PuLP copy (CBC, or to read the model) and are spelled out then.
    Bounds of ±np.inf mean none.
    """

    def __init__(self) -> None:
        self.ncol = 0
        self.nrow = 0
        self._col_lb: list[np.ndarray] = []
        self._col_ub: list[np.ndarray] = []
        self._col_int: list[np.ndarray] = []
        self._col_names: list[tuple[int, str | list[str]]] = []
        self._row_lb: list[np.ndarray] = []
        self._row_ub: list[np.ndarray] = []
        self._row_names: list[tuple[int, str | list[str]]] = []
        self._a: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._cost: list[_Lin] = []
        self._matrix: _Matrix | None = None

    def add_cols(self, n: int, lb: float | np.ndarray, ub: float | np.ndarray,
                 cost: float | np.ndarray = 0.0, *, names: str | list[str],
                 integer: bool = False) -> np.ndarray:
        """Add ``n`` columns; ``names`` is a prefix (``imp`` → imp_0 …) or one name each.
        Returns their indices."""
        idx = np.arange(self.ncol, self.ncol + n)
        self._col_lb.append(_vec(lb, n))
        self._col_ub.append(_vec(ub, n))
        self._col_int.append(np.full(n, integer))
        self._col_names.append((n, names))
        if not (np.isscalar(cost) and cost == 0):
            self.add_cost(_Lin.of(idx, cost))
        self.ncol += n
        self._matrix = None
        return idx

    def add_col(self, lb: float, ub: float, name: str) -> int:
        """Add one column; returns its index."""
        return int(self.add_cols(1, lb, ub, names=[name])[0])

    def add_rows(self, n: int, lb: float | np.ndarray, ub: float | np.ndarray,
                 rows: np.ndarray, cols: np.ndarray, vals: float | np.ndarray, *,
                 names: str | list[str]) -> None:
        """Add ``n`` rows ``lb ≤ Σ vals·x[cols] ≤ ub`` from triplets whose ``rows`` number
        the block's rows 0 … n−1; ``names`` as in :meth:`add_cols`."""
        r = np.asarray(rows, dtype=np.intp)
        self._a.append((r + self.nrow, np.asarray(cols, dtype=np.intp), _vec(vals, len(r))))
        self._row_lb.append(_vec(lb, n))
        self._row_ub.append(_vec(ub, n))
        self._row_names.append((n, names))
        self.nrow += n
        self._matrix = None

    def add_row(self, lb: float, ub: float, form: _Lin, name: str) -> None:
        """Add one row ``lb ≤ form ≤ ub``."""
        self.add_rows(1, lb, ub, np.zeros(len(form.cols)), form.cols, form.vals, names=[name])

    def add_cost(self, form: _Lin) -> None:
        """Add ``form`` to the objective ($)."""
        self._cost.append(form)
        self._matrix = None

    def matrix(self) -> _Matrix:
        """The LP as arrays and a CSC matrix (duplicates summed, zeros dropped)."""
        if self._matrix is None:
            i, j, v = (np.concatenate(k) for k in zip(*self._a, strict=True))
            a = sp.csc_matrix((v, (i, j)), shape=(self.nrow, self.ncol))
            a.sum_duplicates()
            a.eliminate_zeros()
            cost = np.zeros(self.ncol)
            if self._cost:
                np.add.at(cost, np.concatenate([f.cols for f in self._cost]),
                          np.concatenate([f.vals for f in self._cost]))
            self._matrix = _Matrix(
                cost=cost, col_lb=np.concatenate(self._col_lb),
                col_ub=np.concatenate(self._col_ub), integer=np.concatenate(self._col_int),
                a=a, row_lb=np.concatenate(self._row_lb), row_ub=np.concatenate(self._row_ub))
        return self._matrix

    @staticmethod
    def _spell(blocks: list[tuple[int, str | list[str]]]) -> list[str]:
        return [nm for n, names in blocks
                for nm in ([f"{names}_{i}" for i in range(n)] if isinstance(names, str)
                           else names)]

    def to_pulp(self, name: str = "trueup_plan"
                ) -> tuple[pulp.LpProblem, list[pulp.LpVariable]]:
        """The same LP as a PuLP problem, and its variables in column order."""
        m = self.matrix()
        prob = pulp.LpProblem(name, pulp.LpMinimize)

        def bound(b: float) -> float | None:
            return float(b) if np.isfinite(b) else None

        cols = [prob.add_variable(nm, bound(lo), bound(hi),
                                  cat=pulp.LpInteger if integer else pulp.LpContinuous)
                for nm, lo, hi, integer in zip(self._spell(self._col_names), m.col_lb,
                                               m.col_ub, m.integer, strict=True)]
        csr = m.a.tocsr()
        for r, nm in enumerate(self._spell(self._row_names)):
            s, e = csr.indptr[r], csr.indptr[r + 1]
            expr = pulp.LpAffineExpression([(cols[j], float(c)) for j, c in
                                            zip(csr.indices[s:e], csr.data[s:e], strict=True)])
            lo, hi = float(m.row_lb[r]), float(m.row_ub[r])
            if lo == hi:
                prob += pulp.LpConstraint(expr, pulp.LpConstraintEQ, nm, lo)
            elif np.isfinite(hi) and not np.isfinite(lo):
                prob += pulp.LpConstraint(expr, pulp.LpConstraintLE, nm, hi)
            elif np.isfinite(lo) and not np.isfinite(hi):
                prob += pulp.LpConstraint(expr, pulp.LpConstraintGE, nm, lo)
            else:
                raise ValueError(f"row {nm}: ranged or free rows are not used by the plan")
        nz = np.flatnonzero(m.cost)
        prob += pulp.LpAffineExpression([(cols[j], float(m.cost[j])) for j in nz]), "cost"
        return prob, cols


# --------------------------------------------------------------------------------------
# The rules


@dataclass
class _Vars:
    """Column indices of the per-step variables, one per step (flows kWh per step, SOC
    stored kWh)."""

    imp: np.ndarray
    exp: np.ndarray
    ch: np.ndarray
    dis: np.ndarray
    curt: np.ndarray
    short: np.ndarray  # load that cannot be supplied (forecast above the service limit)
    soc: np.ndarray  # soc[t] = stored kWh at the end of step t

    def take(self, values) -> _Vars:
        """The same variables looked up in ``values`` (a list of LpVariables, say)."""
        return _Vars(*([values[i] for i in getattr(self, f.name)] for f in fields(self)))


@dataclass
class _Extras:
    """What the objective and the report need besides the per-step variables."""

    excess: dict[int, int]  # month key → column of its cap excess
    binaries: int
    # (context, [(y, z) per scenario; carry: (F, F)], ΣCx of the plan, carry: the plan's
    # energy charges by month)
    periods: list[tuple[TrueUpContext, list[tuple[int, int]], _Lin, list[_Lin]]]
    demand: dict[tuple[int, str], int] = field(default_factory=dict)  # → the D column


def _variables(lp: _LP, n: int, x: PlanInputs) -> _Vars:
    """Flows in kWh per step (import within the service limit, charge and discharge within
    the battery's power), curtailment only where PV can be curtailed, shortfall up to the
    load, SOC in [floor, usable] kWh."""
    b = x.battery
    h = x.step_hours
    curt_ub = x.pv_kwh if x.can_curtail_pv else 0.0
    return _Vars(
        imp=lp.add_cols(n, 0.0, x.grid_import_limit_kw * h, names="imp"),
        exp=lp.add_cols(n, 0.0, np.inf if x.export_limit_kw is None
                        else x.export_limit_kw * h, names="exp"),
        ch=lp.add_cols(n, 0.0, b.max_charge_kw * h, names="ch"),
        dis=lp.add_cols(n, 0.0, b.max_discharge_kw * h, names="dis"),
        curt=lp.add_cols(n, 0.0, curt_ub, names="curt"),
        short=lp.add_cols(n, 0.0, x.load_kwh, names="short"),
        soc=lp.add_cols(n, _floors(n, x), b.usable_kwh, names="soc"),
    )


def _floors(n: int, x: PlanInputs) -> np.ndarray:
    """The SOC floor at the end of each step (kWh): the owner's floor, or — when the
    battery starts below it (after an outage) — as high as charging at full speed can reach
    by then, so the model is never infeasible because of where the battery is now."""
    b = x.battery
    # a reserve above SOC in Self-Powered charges at ~1.75 kW per Powerwall (owners' reports)
    rate = min(b.max_charge_kw, 1.75 * b.units)
    reachable = x.soc_kwh + b.charge_efficiency * rate * x.step_hours * np.arange(1, n + 1)
    return np.maximum(0.0, np.minimum(b.floor_kwh, reachable))


def add_power_balance(lp: _LP, v: _Vars, x: PlanInputs) -> None:
    """Energy in = energy out, each step: pv − curtailed + import + discharge + shortfall =
    load + export + charge (kWh). The shortfall (a forecast load the service limit and the
    battery cannot carry) is priced at SHORTFALL_PRICE, so it is used only when nothing
    else can balance the step, and the plan stays solvable."""
    n = len(v.imp)
    rhs = x.load_kwh - x.pv_kwh
    lp.add_rows(n, rhs, rhs, np.tile(np.arange(n), 6),
                np.concatenate([v.curt, v.imp, v.dis, v.short, v.exp, v.ch]),
                np.repeat([-1.0, 1.0, 1.0, 1.0, -1.0, -1.0], n), names="balance")


def add_no_pass_through(lp: _LP, v: _Vars, x: PlanInputs) -> None:
    """Energy cannot pass from the grid back to the grid: a step exports at most what PV
    and the battery produce in it, and imports at most what the home and the battery take
    (``export ≤ pv − curtailed + discharge``, ``import ≤ load + charge``). Without these an
    LP whose export value beats the import price (net billing's September evenings) would
    import and export the same kWh; any real flows summed over a step satisfy them, so they
    never cut off what a Powerwall can do."""
    n = len(v.imp)
    t = np.arange(n)
    lp.add_rows(n, -np.inf, x.pv_kwh, np.tile(t, 3), np.concatenate([v.exp, v.curt, v.dis]),
                np.repeat([1.0, 1.0, -1.0], n), names="export_at_most_produced")
    lp.add_rows(n, -np.inf, x.load_kwh, np.tile(t, 2), np.concatenate([v.imp, v.ch]),
                np.repeat([1.0, -1.0], n), names="import_at_most_used")


def add_inverter_limit(lp: _LP, v: _Vars, x: PlanInputs) -> None:
    """The battery's inverter carries power one way at a time: within a step, the time
    spent charging plus the time spent discharging is at most the step
    (``charge / max charge + discharge / max discharge ≤ hours``). Real flows summed over a
    step satisfy it; without it an LP could charge and discharge at full power at once."""
    b = x.battery
    if b.max_charge_kw <= 0 or b.max_discharge_kw <= 0:
        return
    n = len(v.ch)
    t = np.arange(n)
    lp.add_rows(n, -np.inf, x.step_hours, np.tile(t, 2), np.concatenate([v.ch, v.dis]),
                np.repeat([1.0 / b.max_charge_kw, 1.0 / b.max_discharge_kw], n),
                names="one_way_at_a_time")


def add_soc_dynamics(lp: _LP, v: _Vars, x: PlanInputs) -> None:
    """soc[t] = soc[t−1] + η_c·charge − discharge/η_d, within [floor, usable] (bounds)."""
    b = x.battery
    n = len(v.soc)
    t = np.arange(n)
    start = np.zeros(n)
    start[0] = min(max(x.soc_kwh, 0.0), b.usable_kwh)
    lp.add_rows(n, start, start, np.concatenate([t, t, t, t[1:]]),
                np.concatenate([v.soc, v.ch, v.dis, v.soc[:-1]]),
                np.concatenate([np.ones(n), np.full(n, -b.charge_efficiency),
                                np.full(n, 1.0 / b.discharge_efficiency), -np.ones(n - 1)]),
                names="soc")


def add_grid_charge_limit(lp: _LP, v: _Vars, x: PlanInputs) -> None:
    """Charging beyond the step's PV surplus comes from the grid, at most at the rate a
    setting can make the Powerwall charge: charge ≤ max(0, pv − load) + limit × h."""
    if x.grid_charge_limit_kw is None:
        return
    n = len(v.ch)
    surplus = np.maximum(x.pv_kwh - x.load_kwh, 0.0)
    lp.add_rows(n, -np.inf, surplus + x.grid_charge_limit_kw * x.step_hours, np.arange(n),
                v.ch, 1.0, names="grid_charge_rate")


def add_export_cap(lp: _LP, v: _Vars, x: PlanInputs) -> dict[int, int]:
    """NEM-PS cap on total exports per billing month, soft (docs/billing-rules.md).

    ``excess_m ≥ Σ_{t in m} export_t − budget_m``, ``excess_m ≥ 0``; the objective charges
    each excess kWh the credit it de-credits. A hard cap would make the model infeasible
    when PV cannot be curtailed and the battery is full. Returns month key → excess column.
    """
    excess = {}
    for cb in x.cap_budgets:
        steps = np.flatnonzero(x.prices.month_key == cb.month_key)
        if not len(steps):
            continue
        e = lp.add_col(0.0, np.inf, f"excess_{cb.month_key}")
        lp.add_row(-np.inf, max(cb.kwh, 0.0), _Lin.of(v.exp[steps]) - _Lin.of(e),
                   f"cap_{cb.month_key}")
        excess[cb.month_key] = e
    return excess


def demand_margin(x: PlanInputs) -> np.ndarray:
    """kWh per step by which the load may exceed its forecast (``load_high_kwh`` − the
    forecast, ≥ 0): what a demand peak is budgeted against. A battery lowers imports, a grid
    charge adds to them: charging from the grid at an hour the home has recently drawn much
    more than forecast (an EV's night) could set the month's peak."""
    if x.load_high_kwh is None:
        return np.zeros(len(x.load_kwh))
    return np.maximum(np.asarray(x.load_high_kwh, dtype=float) - x.load_kwh, 0.0)


def add_demand_epigraph(lp: _LP, v: _Vars, x: PlanInputs) -> dict[tuple[int, str], int]:
    """Demand charges (optimizer/demand.py) as epigraph columns, still an LP:

        D ≥ start_kw,   D ≥ (import_t + margin_t) / step_hours   for every step t it covers

    and the objective pays ``rate × D`` (the part up to ``start_kw`` is billed already, a
    constant). So the plan lowers a peak only where the kW it saves are worth more than the
    stored energy spent on them. A plan step longer than the tariff's window sees its
    average, not the window's peak. Returns (month key, name) → the D column."""
    cols = {}
    for d in x.demand:
        if not len(d.steps):
            continue
        label = f"{d.month_key // 12:04d}-{d.month_key % 12 + 1:02d} {d.name}"
        col = lp.add_col(max(d.start_kw, 0.0), np.inf, f"demand_{label}")
        n = len(d.steps)
        lp.add_rows(n, demand_margin(x)[d.steps] / x.step_hours, np.inf,
                    np.concatenate([np.arange(n), np.arange(n)]),
                    np.concatenate([np.full(n, col), v.imp[d.steps]]),
                    np.concatenate([np.ones(n), np.full(n, -1.0 / x.step_hours)]),
                    names=f"demand_over_import_{d.month_key}_{d.name}")
        lp.add_cost(_Lin.of(col, d.rate))
        cols[(d.month_key, d.name)] = col
    return cols


def add_true_up_epigraph(lp: _LP, cx_plan: _Lin, nbc_plan: _Lin, tu: TrueUpContext,
                         s: int) -> tuple[int, int]:
    """PG&E NEM2 true-up (:mod:`optimizer.settlement`) of scenario ``s`` as epigraph
    variables (convex, so an LP):

        y ≥ ΣCx, y ≥ 0                      (net energy charges: credit is not paid)
        z ≥ ΣNBC + y − ΣMDC, z ≥ 0          (due beyond the minimum already billed)

    Σ are over the whole period: the scenario's totals outside the plan + the plan ($).
    At the optimum ``z = max(ΣNBC + max(0, ΣCx), ΣMDC) − ΣMDC`` (settlement.true_up_due
    before the NSC). Returns the columns (y, z).
    """
    sc = tu.scenarios[s]
    tag = f"{tu.label}" if len(tu.scenarios) == 1 else f"{tu.label}_s{s}"
    y = lp.add_col(0.0, np.inf, f"net_charges_{tag}")
    z = lp.add_col(0.0, np.inf, f"true_up_due_{tag}")
    lp.add_row(sc.cx, np.inf, _Lin.of(y) - cx_plan, f"net_charges_floor_{tag}")
    lp.add_row(sc.nbc - tu.minimum_total, np.inf, _Lin.of(z) - _Lin.of(y) - nbc_plan,
               f"due_over_minimum_{tag}")
    return y, z


def add_wear(lp: _LP, v: _Vars, x: PlanInputs) -> None:
    """Battery wear, $ per kWh discharged (``wear_cost_per_kwh``). With a baseline (what
    Self-Powered would discharge over the horizon), only the cycling the plan *adds* costs
    wear: ``wear × max(Σ discharge − baseline, Σ battery exports, 0)``, where a step's
    battery export is its discharge beyond the load PV leaves (Self-Powered never exports
    stored energy). An epigraph column, so still an LP. The owner's battery cycles that much
    under Tesla's default anyway; the plan pays for what it adds — more discharge, or stored
    energy sent to the grid — and gets no credit for cycling less."""
    wear = x.battery.wear_cost_per_kwh
    if wear <= 0:
        return
    if x.baseline_discharge_kwh is None:
        lp.add_cost(_Lin.of(v.dis, wear))
        return
    n = len(v.dis)
    deficit = np.maximum(x.load_kwh - x.pv_kwh, 0.0)
    out = lp.add_cols(n, 0.0, np.inf, names="battery_export")
    lp.add_rows(n, -deficit, np.inf, np.concatenate([np.arange(n), np.arange(n)]),
                np.concatenate([out, v.dis]), np.repeat([1.0, -1.0], n),
                names="battery_export_floor")  # out ≥ dis − deficit
    w = lp.add_col(0.0, np.inf, "cycling_added")
    lp.add_row(-x.baseline_discharge_kwh, np.inf, _Lin.of(w) - _Lin.of(v.dis),
               "cycling_added_over_self_powered")
    lp.add_row(0.0, np.inf, _Lin.of(w) - _Lin.of(out), "cycling_added_over_exports")
    lp.add_cost(_Lin.of(w, wear))


def add_credit_carry_epigraph(lp: _LP, charges_by_month: list[_Lin], tu: TrueUpContext,
                              s: int) -> int:
    """Net billing's leftover credit in scenario ``s`` (:func:`optimizer.settlement.
    leftover_after`): each month pays its energy charges after the credit carried in, and
    what credit is left at the period's end is forfeited. The credit left is

        F = max(0, credit_in − S₀, −S₁, …, −S_K),   S_k = Σ_{m ≥ k} (charges_m + plan_m)

    (plan_m: the plan's energy charges in month m), convex, so ``F`` is an epigraph column.
    The months pay Σ charges + F in all; the linear part stays in the objective as prices.
    Returns the column."""
    sc = tu.scenarios[s]
    tag = f"{tu.label}_s{s}"
    f = lp.add_col(0.0, np.inf, f"credit_left_{tag}")
    k_months = len(sc.month_charges)
    for k in range(k_months):
        plan_after = _Lin.of([], [])
        for m in range(k, min(k_months, len(charges_by_month))):
            plan_after = plan_after + charges_by_month[m]
        rhs = (sc.credit_in if k == 0 else 0.0) - float(sum(sc.month_charges[k:]))
        lp.add_row(rhs, np.inf, _Lin.of(f) + plan_after, f"credit_left_from_{k}_{tag}")
    return f


def add_no_simultaneous_flows(lp: _LP, v: _Vars, x: PlanInputs, steps: list[int]) -> int:
    """Binaries forbidding charge+discharge and import+export in the same step (big-M by
    the physical limits, kWh per step), only on ``steps``. Returns the number of binaries
    added."""
    if not len(steps):
        return 0
    b, h = x.battery, x.step_hours
    big_ch, big_dis = b.max_charge_kw * h, b.max_discharge_kw * h
    big_imp = x.grid_import_limit_kw * h
    big_exp = float(np.max(x.pv_kwh)) + b.max_discharge_kw * h + 1.0
    s = np.asarray(steps, dtype=np.intp)
    k = len(s)
    u = lp.add_cols(k, 0.0, 1.0, names=[f"charging_{t}" for t in s], integer=True)
    w = lp.add_cols(k, 0.0, 1.0, names=[f"importing_{t}" for t in s], integer=True)
    r = np.concatenate([np.arange(k), np.arange(k)])

    def pair(name: str, flow: np.ndarray, binary: np.ndarray, big: float, on: bool) -> None:
        # flow ≤ big × binary (on) or flow ≤ big × (1 − binary)
        lp.add_rows(k, -np.inf, 0.0 if on else big, r, np.concatenate([flow[s], binary]),
                    np.repeat([1.0, -big if on else big], k),
                    names=[f"{name}_{t}" for t in s])

    pair("ch_or_dis_a", v.ch, u, big_ch, True)
    pair("ch_or_dis_b", v.dis, u, big_dis, False)
    pair("imp_or_exp_a", v.imp, w, big_imp, True)
    pair("imp_or_exp_b", v.exp, w, big_exp, False)
    return 2 * k


def default_terminal_value(x: PlanInputs) -> float:
    """$ per stored kWh left at the horizon's end at *linear* prices: what it will displace
    at least — the horizon's cheapest max(import price, export credit), the price at which
    the energy could be bought back before it is needed — after the discharge loss (and its
    wear, unless the wear is counted against Self-Powered's: then Self-Powered would spend
    it too). Keeps the plan from dumping the battery because the horizon ends, and from
    buying energy only to end the horizon full. (Under a true-up the value goes through
    the settlement instead: see build_lp().)"""
    p = x.prices
    later = float(np.min(np.maximum(p.import_price, p.export_credit)))
    wear = x.battery.wear_cost_per_kwh if x.baseline_discharge_kwh is None else 0.0
    return max(0.0, later * x.battery.discharge_efficiency - wear)


def _terminal_bill_terms(x: PlanInputs) -> tuple[float, float]:
    """Per stored kWh left at the end, what it later takes off the period's energy charges
    and its NBC: η_d × the horizon's cheapest max(rate − NBC, credit) (the energy's
    replacement price, as in default_terminal_value), and η_d × NBC (a displaced import also
    avoids its NBC)."""
    p = x.prices
    eta = x.battery.discharge_efficiency
    cx = float(np.min(np.maximum(p.import_price - p.nbc, p.export_credit)))
    return eta * cx, eta * p.nbc


# --------------------------------------------------------------------------------------
# Build and solve


def build_lp(x: PlanInputs, *, binary_steps: list[int] | None = None
             ) -> tuple[_LP, _Vars, _Extras]:
    """The plan's LP (a MILP with ``binary_steps``) in matrix form: the rules above and the
    objective, $ over the horizon:

        Σ wear × discharge + SHORTFALL_PRICE × shortfall
        + on the steps no true-up period covers: Σ import price × import − credit × export,
          + de-credit × cap excess of the months starting there
        + per true-up period: its due z − NSC × (credited exports − imports)
        + per demand charge: its rate × the month's peak D (add_demand_epigraph)
        − terminal value × the end's SOC, unless a true-up period holds the end: then the
          stored kWh enter that period's ΣCx, ΣNBC and imports (see _terminal_bill_terms)
          and cost their discharge wear

    Returns (the LP, the per-step columns, the excess/true-up columns and ΣCx of the plan).
    """
    n = len(x.pv_kwh)
    p = x.prices
    b = x.battery
    lp = _LP()
    v = _variables(lp, n, x)
    add_power_balance(lp, v, x)
    add_no_pass_through(lp, v, x)
    add_inverter_limit(lp, v, x)
    add_soc_dynamics(lp, v, x)
    add_grid_charge_limit(lp, v, x)
    excess = add_export_cap(lp, v, x)
    demand = add_demand_epigraph(lp, v, x)
    nbins = add_no_simultaneous_flows(lp, v, x, binary_steps or [])

    decredit_of = {cb.month_key: cb.decredit_value for cb in x.cap_budgets}
    add_wear(lp, v, x)
    if x.tie_break_per_kwh > 0:
        lp.add_cost(_Lin.of(np.concatenate([v.imp, v.exp]), x.tie_break_per_kwh))
    lp.add_cost(_Lin.of(v.short, SHORTFALL_PRICE))
    extras = _Extras(excess=excess, binaries=nbins, periods=[], demand=demand)
    end = _Lin.of(v.soc[-1])

    def linear(steps: np.ndarray, months: list[int]) -> _Lin:
        return (_Lin.of(v.imp[steps], p.import_price[steps])
                + _Lin.of(v.exp[steps], -p.export_credit[steps])
                + _Lin.of([excess[k] for k in months], [decredit_of[k] for k in months]))

    month_first = {k: int(np.flatnonzero(p.month_key == k)[0]) for k in excess}
    covered = np.zeros(n, dtype=bool)
    for tu in x.true_ups:
        steps = np.arange(n)[tu.first_step:tu.end_step]
        carry = tu.kind == "carry"
        covered[steps] = not carry  # a carry period keeps its linear prices (see below)
        months = [k for k, t0 in month_first.items() if tu.first_step <= t0 < tu.end_step]
        imported = _Lin.of(v.imp[steps])
        nbc_plan = p.nbc * imported
        # the plan's energy charges (NEM2: Cx, excl. NBC); de-credited exports earn nothing
        cx_plan = linear(steps, months) - nbc_plan
        exported = _Lin.of(v.exp[steps]) - _Lin.of([excess[k] for k in months])
        by_month: list[_Lin] = []
        if carry:
            mos = np.asarray(tu.month_of_step)
            for m in range(int(mos.max()) + 1 if len(mos) else 0):
                st = steps[mos == m]
                by_month.append(_Lin.of(v.imp[st], p.import_price[st] - p.nbc)
                                + _Lin.of(v.exp[st], -p.export_credit[st]))
        if tu.holds_end:
            # the energy left at the end may be spent later in this period, through the bill
            # (and its wear); ``used`` ≤ the end's SOC is the part the plan counts on, so
            # stored energy is never worth less than nothing (it can stay in the battery)
            tv_cx, tv_nbc = _terminal_bill_terms(x)
            used = _Lin.of(lp.add_col(0.0, b.usable_kwh, f"energy_used_later_{tu.label}"))
            lp.add_row(-np.inf, 0.0, used - end, f"used_later_at_most_stored_{tu.label}")
            cx_plan -= tv_cx * used
            nbc_plan -= tv_nbc * used
            imported -= b.discharge_efficiency * used
            if x.baseline_discharge_kwh is None:  # else: Self-Powered would use it too
                lp.add_cost(b.wear_cost_per_kwh * b.discharge_efficiency * used)
            if carry:  # it lowers the last month's charges, and its NBC, at linear prices
                by_month[-1] = by_month[-1] - tv_cx * used
                lp.add_cost(-(tv_cx + tv_nbc) * used)
        cols = []
        for s, sc in enumerate(tu.scenarios):
            if carry:
                y = z = add_credit_carry_epigraph(lp, by_month, tu, s)
            else:
                y, z = add_true_up_epigraph(lp, cx_plan, nbc_plan, tu, s)
            # NSC: −rate × max(0, surplus) is concave, so it is linear at a regime: the
            # scenario's own without the plan, or one imposed (see TrueUpScenario.regime)
            net = exported - imported
            if sc.regime == "surplus":
                lp.add_row(-sc.surplus_kwh, np.inf, net, f"surplus_{tu.label}_s{s}")
            elif sc.regime == "deficit":
                lp.add_row(-np.inf, -sc.surplus_kwh, net, f"deficit_{tu.label}_s{s}")
            in_surplus = sc.regime == "surplus" or (sc.regime is None and sc.surplus_kwh > 0)
            nsc = tu.surplus_rate if in_surplus else 0.0
            lp.add_cost(sc.weight * (_Lin.of(z) - nsc * net))
            cols.append((y, z))
        extras.periods.append((tu, cols, cx_plan, by_month))
    rest = np.flatnonzero(~covered)
    if len(rest):
        lp.add_cost(linear(rest, [k for k, t0 in month_first.items() if not covered[t0]]))
    if not any(tu.holds_end for tu in x.true_ups):
        tv = x.terminal_value if x.terminal_value is not None else default_terminal_value(x)
        lp.add_cost(-tv * end)
    return lp, v, extras


def build(x: PlanInputs, *, binary_steps: list[int] | None = None
          ) -> tuple[pulp.LpProblem, _Vars, dict]:
    """The same model as a PuLP problem (what CBC solves; handy to write an LP file).
    Returns (problem, variables as lists of LpVariables, extras: ``excess`` month key →
    LpVariable, ``binaries``, ``periods`` [(context, [(y, z) per scenario])])."""
    lp, v, extras = build_lp(x, binary_steps=binary_steps)
    prob, cols = lp.to_pulp()
    return prob, v.take(cols), {
        "excess": {k: cols[j] for k, j in extras.excess.items()},
        "binaries": extras.binaries,
        "periods": [(tu, [(cols[y], cols[z]) for y, z in yz])
                    for tu, yz, _, _ in extras.periods]}


def _solver(name: str, time_limit: float, gap: float, mip: bool):
    """A PuLP solver for a problem from :func:`build` (handy to check a model by hand)."""
    if name == "highs":
        return pulp.HiGHS(msg=False, timeLimit=time_limit, gapRel=gap, mip=mip)
    import warnings

    with warnings.catch_warnings():  # PuLP 3.3 warns about 4.0; we pin pulp < 4
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, gapRel=gap, mip=mip)


PulpRunner = Callable[[pulp.LpProblem, dict, float], None]
"""Solves a PuLP problem with CBC given PULP_CBC_CMD's options (``timeLimit``, ``gapRel``,
``mip``) within a wall-clock bound in seconds, leaving the values on the problem's variables
(or the problem marked not solved). The app shell supplies one that runs CBC in a child
process it can kill (``trueup.solvers.run_cbc_killable``): process effects stay out of this
package."""


def solve_in_process(prob: pulp.LpProblem, options: dict, seconds: float) -> None:
    """The default :data:`PulpRunner`: CBC in this process, bounded only by its own time
    limit (which CBC ignores in presolve)."""
    prob.solve(_solver("cbc", options["timeLimit"], options["gapRel"], options["mip"]))


def _status(prob: pulp.LpProblem) -> str:
    """Our status of a PuLP solve (the CBC path)."""
    # PuLP 3.3 says "Optimal" for a solver stopped at the time limit: only sol_status tells
    # (1 optimal, 2 solution found but not proven)
    if prob.sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    if prob.status == pulp.LpStatusInfeasible:
        return "infeasible"
    return "failed"


def _highs_status(h) -> str:
    """Our status of a highspy solve: "optimal" only when HiGHS proves it; "feasible" when
    it stopped early (time limit) holding a primal feasible solution; else infeasible or
    failed."""
    import highspy

    ms = highspy.HighsModelStatus
    status = h.getModelStatus()
    if status == ms.kOptimal:
        return "optimal"
    if status in (ms.kTimeLimit, ms.kIterationLimit, ms.kInterrupt, ms.kObjectiveBound,
                  ms.kObjectiveTarget) and (h.getInfo().primal_solution_status
                                            == highspy.SolutionStatus.kSolutionStatusFeasible):
        return "feasible"
    if status in (ms.kInfeasible, ms.kUnboundedOrInfeasible):
        return "infeasible"
    return "failed"


# HiGHS's presolve costs more than it saves on our LPs up to about two months of hourly
# steps (24 steps: 0.6 ms instead of 1.0; 720 steps: as fast or faster); MILPs and bigger
# LPs (a year: 61,000+ columns) keep it.
_PRESOLVE_FROM_COLUMNS = 10_000


def _new_highs(time_limit: float, gap: float, presolve: bool = True):
    """A quiet highspy solver bounded by ``time_limit`` seconds of wall clock, stopping a
    MILP within the relative ``gap``."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", float(gap))
    if not presolve:
        h.setOptionValue("presolve", "off")
    return h


def _pass_model(h, m: _Matrix, mip: bool) -> bool:
    """Hand the matrix LP to HiGHS in one call (integrality only for a MILP solve)."""
    import highspy

    integrality = (m.integer if mip else np.zeros_like(m.integer)).astype(np.int32)
    status = h.passModel(m.a.shape[1], m.a.shape[0], m.a.nnz,
                         int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMinimize),
                         0.0, m.cost, m.col_lb, m.col_ub, m.row_lb, m.row_ub,
                         m.a.indptr.astype(np.int32), m.a.indices.astype(np.int32),
                         m.a.data, integrality)
    return status != highspy.HighsStatus.kError


def _run(lp: _LP, name: str, time_limit: float, gap: float, mip: bool,
         run_pulp: PulpRunner | None = None) -> tuple[str, np.ndarray | None]:
    """Solve ``lp``; returns our status and the column values (None unless optimal or
    feasible: values of a failed solve are never read)."""
    if name == "cbc":
        prob, cols = lp.to_pulp()
        (run_pulp or solve_in_process)(
            prob, {"timeLimit": time_limit, "gapRel": gap, "mip": mip}, time_limit * 1.5 + 0.1)
        status = _status(prob)
        if status not in ("optimal", "feasible"):
            return status, None
        return status, np.array([c.varValue or 0.0 for c in cols])
    # HiGHS runs in-process and honours its time limit
    h = _new_highs(time_limit, gap, presolve=mip or lp.ncol >= _PRESOLVE_FROM_COLUMNS)
    if not _pass_model(h, lp.matrix(), mip):
        return "failed", None
    h.run()
    status = _highs_status(h)
    if status not in ("optimal", "feasible"):
        return status, None
    return status, np.asarray(h.getSolution().col_value)


def _extract(xval: np.ndarray, lp: _LP, v: _Vars, extras: _Extras, x: PlanInputs,
             status: str, solver: str, seconds: float) -> Plan:
    def arr(cols: np.ndarray) -> np.ndarray:
        return np.maximum(xval[cols], 0.0)

    plan = Plan(
        status=status, solver=solver, solve_seconds=seconds,
        objective=float(lp.matrix().cost @ xval),
        import_kwh=arr(v.imp), export_kwh=arr(v.exp), charge_kwh=arr(v.ch),
        discharge_kwh=arr(v.dis), curtail_kwh=arr(v.curt), soc_kwh=xval[v.soc].copy(),
        excess_kwh={k: float(xval[j]) for k, j in extras.excess.items()},
        demand_kw={f"{mk // 12:04d}-{mk % 12 + 1:02d} {name}": float(xval[j])
                   for (mk, name), j in extras.demand.items()},
        binaries=extras.binaries,
    )
    plan.shortfall_kwh = float(xval[v.short].sum())
    if plan.shortfall_kwh > EPS:
        plan.notes.append(f"{plan.shortfall_kwh:.1f} kWh of forecast load exceed the service "
                          "limit and the battery: not planned for")
    if extras.periods:
        tu, yz, cx_plan, by_month = extras.periods[0]
        if tu.kind == "carry":
            _carry_report(plan, x, tu, [f for f, _ in yz],
                          sum(c.value(xval) for c in by_month), xval)
        else:
            _true_up_report(plan, x, tu, yz, cx_plan.value(xval), xval)
    return plan


def _trust(tu: TrueUpContext) -> float:
    """The weight the plan gave the projection's own scenarios (1 − the hedge's)."""
    return 1.0 - sum(sc.weight for sc in tu.scenarios if sc.hedge)


def _projection_weights(tu: TrueUpContext) -> np.ndarray:
    """The scenarios' probabilities as the projection gave them: the hedge's weight 0, the
    rest renormalised (what the period is expected to add up to, not how far the plan
    trusts it)."""
    w = np.array([0.0 if sc.hedge else sc.weight for sc in tu.scenarios])
    return w / w.sum() if w.sum() > 0 else w


def _carry_report(plan: Plan, x: PlanInputs, tu: TrueUpContext, cols: list[int],
                  plan_charges: float, xval: np.ndarray) -> None:
    """Net billing: in the scenarios where the credit carried now is what the period ends
    up forfeiting (F = credit_in − S₀ > 0), one more credit is lost (worth only the NSC);
    elsewhere it offsets charges that would be paid, at full value."""
    steps = slice(tu.first_step, tu.end_step)
    full = float(np.max(x.prices.export_credit[steps]))
    w = np.array([sc.weight for sc in tu.scenarios])
    own = _projection_weights(tu)
    left = np.array([float(xval[f]) for f in cols])
    row0 = np.array([sc.credit_in - float(sum(sc.month_charges)) - plan_charges
                     for sc in tu.scenarios])
    lost = (left > EPS) & (left - row0 < 1e-6)
    surplus = np.array([sc.surplus_kwh for sc in tu.scenarios]) > 0
    plan.true_up_label = tu.label
    plan.true_up_due = 0.0
    plan.projected_cx = float(own @ -left)  # the credit expected to be left (a balance)
    plan.true_up_trust = _trust(tu)
    plan.p_credit_counts = float(w[~lost].sum())
    plan.p_nsc_only = float(w[lost & surplus].sum())
    plan.nsc_rate = tu.surplus_rate
    plan.marginal_credit_value = round(full * plan.p_credit_counts
                                       + tu.surplus_rate * plan.p_nsc_only, 5)


def _true_up_report(plan: Plan, x: PlanInputs, tu: TrueUpContext,
                    yz: list[tuple[int, int]], cx_plan: float, xval: np.ndarray) -> None:
    """The first period's true-up as the solver left it: the expected ΣCx and due, each
    scenario's regime, and what one more credited peak kWh was worth to the solver
    (the expectation over the scenarios: full credit where the period ends owing beyond the
    minimum, the NSC rate where it ends in credit with a surplus, nothing where the minimum
    covers it)."""
    steps = slice(tu.first_step, tu.end_step)
    full = float(np.max(x.prices.export_credit[steps]))
    w = np.array([sc.weight for sc in tu.scenarios])
    own = _projection_weights(tu)
    cx = np.array([sc.cx for sc in tu.scenarios]) + cx_plan
    due = np.array([float(xval[z]) for _, z in yz])
    owing = (cx > EPS) & (due > EPS)
    surplus = np.array([sc.surplus_kwh for sc in tu.scenarios]) > 0
    nsc_only = (cx <= EPS) & surplus
    plan.projected_cx = float(own @ cx)
    plan.true_up_due = float(own @ due)
    plan.true_up_trust = _trust(tu)
    plan.true_up_label = tu.label
    plan.p_credit_counts = float(w[owing].sum())
    plan.p_nsc_only = float(w[nsc_only].sum())
    plan.nsc_rate = tu.surplus_rate
    plan.marginal_credit_value = round(full * plan.p_credit_counts
                                       + tu.surplus_rate * plan.p_nsc_only, 5)


def _overlaps(plan: Plan) -> list[int]:
    both_batt = np.minimum(plan.charge_kwh, plan.discharge_kwh) > EPS
    both_grid = np.minimum(plan.import_kwh, plan.export_kwh) > EPS
    return [int(t) for t in np.flatnonzero(both_batt | both_grid)]


def solve(x: PlanInputs, *, solver: str = "highs", time_limit: float = 10.0,
          gap: float = 0.001, binaries: bool = True, run_pulp: PulpRunner | None = None
          ) -> Plan:
    """Solve the plan: the LP first; if it charges and discharges (or imports and exports)
    in one step, re-solve with binaries on those steps (with positive prices the binaries
    never bind, so most plans stay LPs); ``binaries=False`` keeps the LP (a relaxation, as
    the perfect-foresight bound needs). Never reads values of a failed solve.
    ``run_pulp`` runs CBC (see :data:`PulpRunner`); HiGHS runs in-process within
    ``time_limit`` seconds.
    """
    t0 = time.perf_counter()
    lp, v, extras = build_lp(x)
    status, xval = _run(lp, solver, time_limit, gap, mip=False, run_pulp=run_pulp)
    if xval is None:
        return failed_plan(x, status, solver, time.perf_counter() - t0)
    plan = _extract(xval, lp, v, extras, x, status, solver, time.perf_counter() - t0)
    overlap = _overlaps(plan) if binaries else []
    if overlap:
        left = max(0.5, time_limit - (time.perf_counter() - t0))
        lp, v, extras = build_lp(x, binary_steps=overlap)
        status, xval = _run(lp, solver, left, gap, mip=True, run_pulp=run_pulp)
        if xval is not None:
            plan = _extract(xval, lp, v, extras, x, status, solver, time.perf_counter() - t0)
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
