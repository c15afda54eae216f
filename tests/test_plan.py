"""The dispatch model on cases small enough to check by hand (HiGHS really solving)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from optimizer.plan import CapBudget, PlanInputs, TrueUpContext, TrueUpScenario, solve
from optimizer.prices import decredit_value, step_prices
from optimizer.site import Battery
from tests.helpers import TWO_PERIOD_UTC, tariff

JAN_1_1400Z = 1735689600 + 14 * 3600  # 2025-01-01 14:00 UTC: two off-peak hours, then peak

# an ideal 10 kWh battery: no losses, no wear, empty floor — so the arithmetic is plain
IDEAL = Battery(usable_kwh=10, max_charge_kw=5, max_discharge_kw=5, charge_efficiency=1,
                discharge_efficiency=1, backup_floor_percent=0, wear_cost_per_kwh=0)


def four_steps(t, **kw) -> PlanInputs:
    """Hours 14, 15 (off-peak 0.30) and 16, 17 (peak 0.50); 2 kWh of load each, no PV."""
    starts = JAN_1_1400Z + 3600 * np.arange(4)
    args = dict(prices=step_prices(t, starts), pv_kwh=np.zeros(4), load_kwh=np.full(4, 2.0),
                soc_kwh=0.0, battery=IDEAL, step_hours=1.0, terminal_value=0.0)
    args.update(kw)
    return PlanInputs(**args)


NEM1 = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\ncredit = 'import'\n",
              settlement="period_months = 1\n")


def test_four_step_peak_off_peak_arbitrage_by_hand():
    """Exports earn the full rate (NEM1). Best: charge 5 kWh in each off-peak hour (the
    limit), discharge 5 kWh in each peak hour: 2 cover the load, 3 are exported.
    Cost = off-peak imports (2 + 5) × 2 × 0.30 − peak exports 3 × 2 × 0.50 = 4.20 − 3.00
    = 1.20 (against 2 × 2 × 0.30 + 2 × 2 × 0.50 = 3.20 with no battery)."""
    plan = solve(four_steps(NEM1))
    assert plan.status == "optimal"
    assert plan.objective == pytest.approx(1.20)
    assert plan.charge_kwh == pytest.approx([5, 5, 0, 0])
    assert plan.discharge_kwh == pytest.approx([0, 0, 5, 5])
    assert plan.export_kwh == pytest.approx([0, 0, 3, 3])
    assert plan.soc_kwh == pytest.approx([5, 10, 5, 0])
    # equal import and export prices make a simultaneous import+export free in the LP:
    # the solve re-ran with binaries and says so
    assert np.minimum(plan.import_kwh, plan.export_kwh).max() == pytest.approx(0)


def test_energy_never_passes_from_the_grid_back_to_the_grid():
    """Net billing where an export earns 1.00 $/kWh and an import costs 0.30 or 0.50, and no
    battery: an LP free to import and export at once (no binaries, as the perfect-foresight
    bound solves) would buy the service limit and sell it back. It may export only what PV
    and the battery produce — nothing here — so it imports the load, 2 kWh a step:
    2 × (0.30 + 0.30 + 0.50 + 0.50) = 3.20."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'net_billing'\nflat_rate = 1.0\n",
               settlement="period_months = 1\n")
    none = IDEAL.model_copy(update={"max_charge_kw": 0.0, "max_discharge_kw": 0.0})
    plan = solve(four_steps(t, battery=none), binaries=False)
    assert plan.status == "optimal"
    assert plan.export_kwh == pytest.approx([0, 0, 0, 0])
    assert plan.import_kwh == pytest.approx([2, 2, 2, 2])
    assert plan.objective == pytest.approx(3.20)


def test_the_battery_cannot_charge_and_discharge_at_full_power_in_one_step():
    """The same prices with a 10 kWh, 5 kW battery: cycling through it pays (bought at
    0.30, sold at 1.00), so a relaxation would charge 5 and discharge 5 in the same hour.
    The inverter carries 5 kW in one direction at a time: charge + discharge ≤ 5 kWh a
    step."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'net_billing'\nflat_rate = 1.0\n",
               settlement="period_months = 1\n")
    plan = solve(four_steps(t, soc_kwh=5.0), binaries=False)
    assert plan.status == "optimal"
    assert np.all(plan.charge_kwh + plan.discharge_kwh <= 5.0 + 1e-9)
    assert np.all(plan.export_kwh <= plan.discharge_kwh + 1e-9)


def test_export_cap_of_exactly_four_kwh_is_spent_and_not_exceeded():
    """Same case under a NEM-PS cap with 4 kWh of budget left. An export beyond it loses a
    peak credit (0.50), so exporting more earns nothing while the charge costs 0.30: the
    plan exports exactly 4 kWh. Battery: 4 kWh for the peak load + 4 exported = 8 kWh.
    Cost = (4 + 8) × 0.30 − 4 × 0.50 = 3.60 − 2.00 = 1.60."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\ncredit = 'import'\n",
               settlement="period_months = 1\n",
               export_cap="monthly_kwh = [500,500,500,500,500,500,500,500,500,500,500,500]\n")
    x = four_steps(t)
    key = int(x.prices.month_key[0])
    assert decredit_value(t, key) == pytest.approx(0.50)
    plan = solve(four_steps(t, cap_budgets=(CapBudget(key, 4.0, 0.50),)))
    assert plan.export_kwh.sum() == pytest.approx(4.0)
    assert plan.excess_kwh[key] == pytest.approx(0.0)
    assert plan.charge_kwh.sum() == pytest.approx(8.0)
    assert plan.objective == pytest.approx(1.60)


def test_exceeding_the_cap_is_allowed_only_when_pv_has_nowhere_to_go():
    """Battery full (10 of 10 kWh), no load, 3 kWh of PV an hour that cannot be curtailed,
    cap budget 2 kWh: 12 kWh must be exported, 10 of them over the cap, each losing a peak
    credit. The model stays feasible and reports the excess."""
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\ncredit = 'import'\n",
               settlement="period_months = 1\n",
               export_cap="monthly_kwh = [500,500,500,500,500,500,500,500,500,500,500,500]\n")
    x = four_steps(t)
    key = int(x.prices.month_key[0])
    # stored energy is worth keeping (0.20/kWh at the end), so only PV is exported
    plan = solve(four_steps(t, soc_kwh=10.0, load_kwh=np.zeros(4), pv_kwh=np.full(4, 3.0),
                            terminal_value=0.20, cap_budgets=(CapBudget(key, 2.0, 0.50),)))
    assert plan.status == "optimal"
    assert plan.export_kwh.sum() == pytest.approx(12.0)
    assert plan.excess_kwh[key] == pytest.approx(10.0)


def test_with_curtailment_the_plan_curtails_instead_of_exceeding_the_cap():
    t = tariff(TWO_PERIOD_UTC, export="scheme = 'nem'\ncredit = 'import'\n",
               settlement="period_months = 1\n",
               export_cap="monthly_kwh = [500,500,500,500,500,500,500,500,500,500,500,500]\n")
    x = four_steps(t)
    key = int(x.prices.month_key[0])
    plan = solve(four_steps(t, soc_kwh=10.0, load_kwh=np.zeros(4), pv_kwh=np.full(4, 3.0),
                            can_curtail_pv=True, terminal_value=0.20,
                            cap_budgets=(CapBudget(key, 2.0, 0.50),)))
    assert plan.export_kwh.sum() == pytest.approx(2.0)
    assert plan.curtail_kwh.sum() == pytest.approx(10.0)


NEM2 = tariff(TWO_PERIOD_UTC, charges="nbc_per_kwh = 0.03\n",
              export="scheme = 'nem'\ncredit = 'import_minus_nbc'\n",
              settlement="period_months = 12\ncharges = 'at_true_up'\nsurplus_rate = 0.04\n")


def nem2_context(cx_before: float) -> tuple[TrueUpContext]:
    """The four steps inside one NEM2 period with $20 of NBC before and $10 after, a $143
    minimum, 500 kWh of surplus so far. The terminal value is set to 0 by four_steps, and
    with a true-up the end's value goes through the bill: these periods do not hold it."""
    return (TrueUpContext.single(first_step=0, end_step=4, label="2025-12", cx=cx_before,
                                 nbc=20.0 + 10.0, minimum_total=143.0, surplus_kwh=500.0,
                                 surplus_rate=0.04, holds_end=False),)


def test_when_credit_will_be_forfeited_grid_charging_is_pointless():
    """NEM2, the period already $800 in credit: extra credit is forfeited. Importing a kWh
    off-peak then costs only its NBC (0.03) plus a kWh less of NSC surplus (0.04), and a
    peak kWh exported or not imported is worth the NSC (0.04) and the avoided NBC: buying
    at 0.07 to save 0.07 gains nothing, so the battery is not grid-charged and not used.
    With the period deep in charges ($2,000), every credit counts in full: the same model
    fills the battery off-peak (0.30) and discharges at peak, covering the load (0.50) and
    exporting the rest (0.47). A wear cost of 0.01/kWh breaks the tie in the first case."""
    worn = IDEAL.model_copy(update={"wear_cost_per_kwh": 0.01})
    forfeiting = solve(four_steps(NEM2, battery=worn, true_ups=nem2_context(-800.0)))
    assert forfeiting.ok
    assert forfeiting.charge_kwh.sum() == pytest.approx(0.0, abs=1e-6)
    assert forfeiting.marginal_credit_value == pytest.approx(0.04)

    paying = solve(four_steps(NEM2, true_ups=nem2_context(2000.0)))
    assert paying.charge_kwh.sum() == pytest.approx(10.0)
    assert paying.export_kwh.sum() == pytest.approx(6.0)
    assert paying.marginal_credit_value == pytest.approx(0.47)
    # imports: 14 kWh off-peak (4 load + 10 charge); exports 6 kWh at peak.
    # Cx_plan = 14 × (0.30 − 0.03) − 6 × 0.47 = 3.78 − 2.82 = 0.96; NBC_plan = 14 × 0.03
    # due = ΣNBC + ΣCx − ΣMDC = (20 + 10 + 0.42) + (2000 + 0.96) − 143 = 1888.38
    assert paying.true_up_due == pytest.approx(1888.38)


def test_while_the_true_up_is_uncertain_a_credit_is_worth_its_expectation():
    """Two equally likely endings of the period: $2,000 owing, or $800 in credit (500 kWh
    of surplus). To the solver an off-peak import then costs 0.5 × 0.30 + 0.5 × 0.04 NSC
    = 0.17, a peak kWh not imported saves 0.5 × 0.50 + 0.5 × 0.04 = 0.27 and a peak export
    earns 0.5 × 0.47 + 0.5 × 0.04 = 0.255: the battery still fills off-peak and serves the
    peak (the same flows as when the period surely ends owing), the marginal credit is
    0.255, never the 0.04 of one guessed regime. The expected due is half of 1,888.38."""
    owing = TrueUpScenario(0.5, 2000.0, 30.0, 500.0)
    credit = TrueUpScenario(0.5, -800.0, 30.0, 500.0)
    tu = TrueUpContext(first_step=0, end_step=4, label="2025-12", minimum_total=143.0,
                       surplus_rate=0.04, scenarios=(owing, credit), holds_end=False)
    plan = solve(four_steps(NEM2, true_ups=(tu,)))
    assert plan.charge_kwh.sum() == pytest.approx(10.0)
    assert plan.export_kwh.sum() == pytest.approx(6.0)
    assert (plan.p_credit_counts, plan.p_nsc_only) == pytest.approx((0.5, 0.5))
    assert plan.marginal_credit_value == pytest.approx(0.255)
    assert plan.true_up_due == pytest.approx(1888.38 / 2)


def test_minimum_charge_floor_makes_extra_imports_free_at_the_margin():
    """Projected charges below the period's minimum (ΣMDC 143 > ΣNBC 30 + ΣCx 50): the
    plan's kWh change nothing that is paid, so the projected due is 0 and a credit's
    marginal value is 0."""
    plan = solve(four_steps(NEM2, true_ups=nem2_context(50.0)))
    assert plan.true_up_due == pytest.approx(0.0)
    assert plan.marginal_credit_value == 0.0


def test_cbc_gives_the_same_answer_as_highs():
    """The fallback solver (CBC, run in a child process it can be killed in) solves the
    four-step case to the same 1.20."""
    plan = solve(four_steps(NEM1), solver="cbc")
    assert plan.status == "optimal" and plan.solver == "cbc"
    assert plan.objective == pytest.approx(1.20)


def test_a_battery_below_its_floor_is_planned_back_up_not_infeasible():
    """After an outage the battery holds 0.5 kWh, under a 2 kWh floor (20 % of 10 kWh):
    the floor applies once charging could have reached it, so the model stays feasible and
    climbs to the floor (here in the first hour)."""
    floored = IDEAL.model_copy(update={"backup_floor_percent": 20.0})
    plan = solve(four_steps(NEM1, battery=floored, soc_kwh=0.5))
    assert plan.ok
    assert plan.soc_kwh.min() >= 2.0 - 1e-6


def test_a_load_beyond_the_service_and_battery_is_a_priced_shortfall_not_infeasible():
    """A 100 kWh hour of load: the service gives 48 kWh and the battery at most 5 (charged
    in the hour before). The remaining 47 kWh are a shortfall the plan reports."""
    plan = solve(four_steps(NEM1, load_kwh=np.array([2.0, 100.0, 2.0, 2.0])))
    assert plan.ok
    assert plan.shortfall_kwh == pytest.approx(47.0)


NEM2PS = tariff(TWO_PERIOD_UTC, charges="nbc_per_kwh = 0.03\n",
                export="scheme = 'nem'\ncredit = 'import_minus_nbc'\n",
                settlement="period_months = 12\ncharges = 'at_true_up'\nsurplus_rate = 0.04\n",
                export_cap="monthly_kwh = [500,500,500,500,500,500,500,500,500,500,500,500]\n")

# losses and wear, so that no two plans cost the same
LOSSY = Battery(usable_kwh=10, max_charge_kw=5, max_discharge_kw=5, charge_efficiency=0.95,
                discharge_efficiency=0.95, backup_floor_percent=0, wear_cost_per_kwh=0.01)


def capped_true_up(**kw) -> PlanInputs:
    """Four NEM2-PS steps with a different rate each hour (0.30, 0.28 off-peak; 0.50, 0.55
    peak; credit = rate − 0.03 NBC), 9 kWh of PV in each peak hour that cannot be curtailed,
    1 kWh of cap budget left, and a true-up period deep in charges that holds the end: the
    cap is exceeded (PV has nowhere else to go) and every term of the epigraph is live."""
    x = four_steps(NEM2PS)
    rate = np.array([0.30, 0.28, 0.50, 0.55])
    prices = replace(x.prices, import_price=rate, export_credit=rate - 0.03)
    key = int(prices.month_key[0])
    period = TrueUpContext.single(first_step=0, end_step=4, label="2025-12", cx=2000.0,
                                  nbc=30.0, minimum_total=143.0, surplus_kwh=500.0,
                                  surplus_rate=0.04, holds_end=True)
    args = dict(prices=prices, battery=LOSSY, pv_kwh=np.array([0.0, 0.0, 9.0, 9.0]),
                cap_budgets=(CapBudget(key, 1.0, decredit_value(NEM2PS, key)),),
                true_ups=(period,))
    args.update(kw)
    return four_steps(NEM2PS, **args)


def test_the_matrix_lp_and_its_pulp_copy_for_cbc_give_the_same_plan():
    """HiGHS solves the model as arrays; CBC solves the PuLP copy of it. On a case with a
    single optimum, cap excess and the true-up epigraph, both give the same objective,
    flows, cap excess and projected true-up."""
    x = capped_true_up()
    highs, cbc = solve(x), solve(x, solver="cbc")
    assert highs.status == cbc.status == "optimal"
    assert (highs.solver, cbc.solver) == ("highs", "cbc")
    assert highs.objective == pytest.approx(cbc.objective)
    for flow in ("import_kwh", "export_kwh", "charge_kwh", "discharge_kwh", "curtail_kwh",
                 "soc_kwh"):
        assert getattr(highs, flow) == pytest.approx(getattr(cbc, flow), abs=1e-4), flow
    key = int(x.prices.month_key[0])
    assert highs.excess_kwh[key] == pytest.approx(3.0, abs=1e-6)  # 2 + 2 exported, 1 in cap
    assert cbc.excess_kwh[key] == pytest.approx(3.0, abs=1e-4)
    assert highs.true_up_due == pytest.approx(cbc.true_up_due)
    assert highs.projected_cx == pytest.approx(cbc.projected_cx)
    assert highs.marginal_credit_value == cbc.marginal_credit_value


def test_the_pulp_copy_names_the_rules_variables_and_rows_and_has_the_same_optimum():
    """build() gives the model as a PuLP problem (what CBC gets): variables and rows are named
    after the rules and steps (PuLP spells the label's '-' as '_'), and PuLP's own HiGHS
    finds the objective of the array solve."""
    import pulp

    from optimizer.plan import _solver, build

    x = capped_true_up(grid_charge_limit_kw=3.0)
    key = int(x.prices.month_key[0])
    prob, v, extras = build(x, binary_steps=[2])
    assert {"imp_0", "exp_3", "ch_1", "dis_2", "curt_0", "short_3", "soc_3", f"excess_{key}",
            "net_charges_2025_12", "true_up_due_2025_12", "charging_2", "importing_2"
            } <= {var.name for var in prob.variables()}
    assert {"balance_0", "soc_3", "grid_charge_rate_1", f"cap_{key}", "ch_or_dis_a_2",
            "ch_or_dis_b_2", "imp_or_exp_a_2", "imp_or_exp_b_2", "net_charges_floor_2025_12",
            "due_over_minimum_2025_12"} <= {c.name for c in prob.constraints()}
    assert extras["binaries"] == 2 and [var.name for var in v.imp][-1] == "imp_3"

    prob, _, _ = build(x)
    prob.solve(_solver("highs", 10.0, 0.001, mip=False))
    assert prob.sol_status == pulp.LpSolutionOptimal
    assert pulp.value(prob.objective) == pytest.approx(solve(x).objective)


def test_an_infeasible_model_is_reported_infeasible_by_both_solvers_and_not_read():
    """Two units charge a reserve at 3.5 kW, but the grid charge limit is 1 kW and there is
    no PV: the floor (50 %) cannot be reached as the model assumes, so it is infeasible.
    Both solvers say so, and the plan carries no flows."""
    b = IDEAL.model_copy(update={"units": 2, "backup_floor_percent": 50.0})
    for name in ("highs", "cbc"):
        plan = solve(four_steps(NEM1, battery=b, grid_charge_limit_kw=1.0), solver=name)
        assert plan.status == "infeasible" and not plan.ok
        assert np.isnan(plan.objective)
        assert not plan.import_kwh.any()


def test_a_highs_stop_at_the_time_limit_is_feasible_only_with_a_primal_feasible_solution():
    """"optimal" only when HiGHS proves it; stopped by the time limit, "feasible" if it
    holds a primal feasible point, else "failed" (and then nothing is read)."""
    import highspy

    from optimizer.plan import _highs_status

    ms, sol = highspy.HighsModelStatus, highspy.SolutionStatus

    class Stopped:
        def __init__(self, status, primal):
            self.status, self.primal = status, primal

        def getModelStatus(self):  # highspy's names
            return self.status

        def getInfo(self):
            return type("Info", (), {"primal_solution_status": self.primal})()

    assert _highs_status(Stopped(ms.kOptimal, sol.kSolutionStatusFeasible)) == "optimal"
    assert _highs_status(Stopped(ms.kTimeLimit, sol.kSolutionStatusFeasible)) == "feasible"
    assert _highs_status(Stopped(ms.kTimeLimit, sol.kSolutionStatusInfeasible)) == "failed"
    assert _highs_status(Stopped(ms.kTimeLimit, sol.kSolutionStatusNone)) == "failed"
    assert _highs_status(Stopped(ms.kInfeasible, sol.kSolutionStatusNone)) == "infeasible"
    assert _highs_status(Stopped(ms.kSolveError, sol.kSolutionStatusNone)) == "failed"
