"""What one kWh is worth at each planning step, read from the tariff (never hard-coded).

For every step: the all-in import price (NBC included), the NBC alone, the export credit
the scheme gives a credited kWh, the TOU period, and the billing month (for the export cap).
Under NEM an import costs ``r`` and an export earns ``r − nbc`` (NEM2) or ``r`` (NEM1);
under net billing an export earns its hour's export value; with no export scheme it earns
nothing (docs/billing-rules.md). Units: $/kWh; times UTC epoch seconds (step starts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.tariff import Tariff


@dataclass(frozen=True)
class StepPrices:
    """Prices per planning step (arrays of one value per step)."""

    start_utc: np.ndarray
    import_price: np.ndarray  # $/kWh, all-in (NBC included), first tier
    nbc: float  # $/kWh on every imported kWh
    export_credit: np.ndarray  # $/kWh earned by a credited export
    period: np.ndarray  # TOU period index (Tariff.period_names)
    month_key: np.ndarray  # billing month as year × 12 + month − 1 (local, meter-read day)
    scheme: str

    @property
    def month_labels(self) -> list[str]:
        return [f"{k // 12:04d}-{k % 12 + 1:02d}" for k in np.unique(self.month_key)]


def step_prices(tariff: Tariff, start_utc: np.ndarray) -> StepPrices:
    """Per-step prices for interval starts ``start_utc`` (UTC epoch seconds)."""
    c = tariff.classify(start_utc)
    r = tariff.import_rate(c)
    nbc = tariff.spec.charges.nbc_per_kwh
    scheme = tariff.spec.export.scheme
    if scheme == "nem":
        credit = r - nbc if tariff.spec.export.credit == "import_minus_nbc" else r.copy()
    elif scheme in ("net_billing", "buy_all_sell_all"):
        credit = tariff.sell_rate(c)
    else:
        credit = np.zeros_like(r)
    d = tariff.spec.calendar.meter_read_day
    month_key = c.fields.year * 12 + (c.fields.month - 1) - (c.fields.dom < d)
    return StepPrices(start_utc=np.asarray(start_utc), import_price=r, nbc=nbc,
                      export_credit=credit, period=c.period, month_key=month_key,
                      scheme=scheme)


def decredit_value(tariff: Tariff, month_key: int) -> float:
    """$ lost per kWh over the NEM-PS cap in billing month ``month_key`` (docs/billing-rules.md,
    'The NEM-PS export cap and de-credit order').

    Excess exports are removed from the month's *most valuable* credits first (the
    de-credit order, peak first), so one kWh over the cap costs the credit of the first
    period in that order, not the credit of the kWh that crossed it. (Once a month's peak
    exports are all de-credited the next period's credit applies; the plan keeps exports
    within the cap unless forced, so the first period's credit is the price it sees.)
    """
    season = tariff.month_season[month_key % 12 + 1]
    first = tariff.decredit_order()[0]
    rate = float(tariff.tier_rates[season, first, 0])
    if tariff.spec.export.credit == "import_minus_nbc":
        rate -= tariff.spec.charges.nbc_per_kwh
    return rate
