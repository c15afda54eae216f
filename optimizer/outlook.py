"""The month-long outlook that budgets the NEM-PS export cap for the detailed plan.

The cap is on a month's *total* exports, but the detailed plan sees 48 hours. Spending the
remaining cap greedily today can leave the peak days at the end of the month with nothing.
So a coarse hourly LP runs from now to the end of the billing month (forecast days first,
then expected PV and load), with the month's remaining cap as a soft constraint; the cap
left minus the outlook's exports *after* the detailed horizon becomes the detailed plan's
budget for that month — its own share when the cap binds, and the slack too when it does
not, so a cap the month will never reach costs the detailed plan nothing (docs/billing-rules.md,
'The NEM-PS export cap and de-credit order'). Months that start inside the horizon get their
whole cap pro rata to the hours of them the horizon covers.

Pure: arrays in, budgets out. Units kWh, $/kWh, UTC epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.plan import CapBudget, PlanInputs, PulpRunner, solve
from optimizer.prices import decredit_value, step_prices
from optimizer.site import Battery
from optimizer.tariff import Tariff


@dataclass(frozen=True)
class Outlook:
    """What the outlook decided for the month in progress."""

    month_key: int
    cap_kwh: float  # the month's cap
    used_kwh: float  # exported so far this month
    planned_kwh: float  # the outlook's exports over the rest of the month
    horizon_budget_kwh: float  # of which inside the detailed horizon
    status: str
    start_utc: int = 0  # the outlook's first hour
    export_kwh: np.ndarray | None = None  # its planned exports per hour to the month's end

    def budget(self, now_utc: int, horizon_end_utc: int, used_kwh: float) -> float:
        """The budget for a later detailed plan of ``[now_utc, horizon_end_utc)`` with
        ``used_kwh`` exported so far this month: the cap left minus what this outlook
        planned to export after that horizon (so an outlook can serve re-plans for a while).
        """
        left = max(0.0, self.cap_kwh - used_kwh)
        if self.export_kwh is None:
            return self.horizon_budget_kwh
        first_after = max(0, (horizon_end_utc - self.start_utc + 3599) // 3600)
        return max(0.0, left - float(self.export_kwh[first_after:].sum()))


def month_outlook(
    tariff: Tariff,
    start_utc: int,
    month_end_utc: int,
    pv_kwh_hourly: np.ndarray,
    load_kwh_hourly: np.ndarray,
    soc_kwh: float,
    battery: Battery,
    cap_kwh: float,
    used_kwh: float,
    horizon_end_utc: int,
    *,
    can_curtail_pv: bool = False,
    solver: str = "highs",
    time_limit: float = 5.0,
    grid_charge_limit_kw: float | None = None,
    run_pulp: PulpRunner | None = None,
) -> Outlook:
    """Solve the hourly outlook from ``start_utc`` to ``month_end_utc``.

    ``pv_kwh_hourly`` and ``load_kwh_hourly`` hold one value per hour of that span
    (forecasts, then expected values). Returns the export budget for the part of the month
    inside ``[start_utc, horizon_end_utc)``.
    """
    n = max(1, (month_end_utc - start_utc) // 3600)
    starts = start_utc + 3600 * np.arange(n, dtype=np.int64)
    prices = step_prices(tariff, starts)
    key = int(prices.month_key[0])
    left = max(0.0, cap_kwh - used_kwh)
    x = PlanInputs(prices=prices, pv_kwh=np.asarray(pv_kwh_hourly[:n], float),
                   load_kwh=np.asarray(load_kwh_hourly[:n], float), soc_kwh=soc_kwh,
                   battery=battery, step_hours=1.0, can_curtail_pv=can_curtail_pv,
                   grid_charge_limit_kw=grid_charge_limit_kw,
                   cap_budgets=(CapBudget(key, left, decredit_value(tariff, key)),))
    plan = solve(x, solver=solver, time_limit=time_limit, run_pulp=run_pulp)
    if not plan.ok:
        # no outlook: fall back to the pro-rata share of what is left
        share = min(1.0, (horizon_end_utc - start_utc) / max(month_end_utc - start_utc, 1))
        return Outlook(key, cap_kwh, used_kwh, left, left * share, plan.status)
    in_h = starts < horizon_end_utc
    planned = float(plan.export_kwh.sum())
    # the horizon may spend what the rest of the month will not: its own planned exports
    # when the cap binds, more when the outlook leaves some of the cap unused
    later = float(plan.export_kwh[~in_h].sum())
    return Outlook(key, cap_kwh, used_kwh, planned, max(0.0, left - later), plan.status,
                   start_utc=int(start_utc), export_kwh=plan.export_kwh.copy())
