"""Demand charges of real URDB rates: trueup's importer and bill against NREL SAM
(PySAM Utilityrate5) fed the same JSON through PySAM's own converter
(``PySAM.UtilityRateTools.URDBv8_to_ElectricityRates``).

The home: the synthetic 15-minute year of tests/test_sam_crosscheck.py (2018, UTC, a
12 kW PV array and an air-conditioned house), here its load alone (SAM ``gen`` = 0), so
demand is the load's own peaks. Both engines read demand on 15-minute averages (ours: the
importer's 15-minute window, the files give none; SAM: the data's step). Every month's flat
and TOU demand charges must agree to the cent. Files: tests/data/urdb/real/SOURCES.md.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

ur5 = pytest.importorskip("PySAM.Utilityrate5")
tools = pytest.importorskip("PySAM.UtilityRateTools")

from optimizer.billing import bill  # noqa: E402
from optimizer.intervals import IntervalData  # noqa: E402
from optimizer.tariff import Tariff  # noqa: E402
from optimizer.urdb import urdb_to_toml  # noqa: E402
from tests.test_sam_crosscheck import STEPS_PER_HOUR, YEAR_START_UTC, synthetic_year  # noqa: E402

REAL = Path(__file__).parent / "data" / "urdb" / "real"
CENT = 0.005
# flat + TOU, TOU only, flat only, flat + TOU; tiers and adjustments among them
RATES = ["pge_e19_secondary", "aps_r2", "sce_tou8_d", "fpl_gsld1", "xcel_co_rd",
         "sce_gs2_tou_b"]


@pytest.fixture(scope="module")
def load_kwh() -> np.ndarray:
    return synthetic_year().load_kwh


def sam_demand(rate: dict, load_kwh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = ur5.new()
    m.ElectricityRates.assign(tools.URDBv8_to_ElectricityRates(copy.deepcopy(rate)))
    for key, val in {"analysis_period": 1, "system_use_lifetime_output": 0,
                     "inflation_rate": 0.0, "degradation": [0.0], "load_escalation": [0.0],
                     "rate_escalation": [0.0], "gen": [0.0] * len(load_kwh),
                     "load": (load_kwh * STEPS_PER_HOUR).tolist(),
                     "ur_yearzero_usage_peaks": [0.0] * 12}.items():
        m.value(key, val)
    m.execute(0)
    o = m.Outputs
    return (np.asarray(o.charge_w_sys_dc_fixed_ym, dtype=float)[1],
            np.asarray(o.charge_w_sys_dc_tou_ym, dtype=float)[1])


@pytest.mark.parametrize("name", RATES)
def test_real_urdb_demand_charges_match_sam(name: str, load_kwh: np.ndarray):
    rate = json.loads((REAL / f"{name}.json").read_text(encoding="utf-8"))
    text, _ = urdb_to_toml(copy.deepcopy(rate), timezone="UTC", source=name)
    t = Tariff.from_text(text, source=f"{name}.toml")
    data = IntervalData.regular(YEAR_START_UTC, 3600 // STEPS_PER_HOUR, load_kwh,
                                np.zeros(len(load_kwh)), source="load 2018")
    b = bill(t, data)
    flat = np.array([m.demand_charges_by_key.get("flat", 0.0) for m in b.months])
    tou = np.array([m.demand_charges - m.demand_charges_by_key.get("flat", 0.0)
                    for m in b.months])
    s_flat, s_tou = sam_demand(rate, load_kwh)
    assert flat == pytest.approx(s_flat, abs=CENT), (
        f"\nours {np.round(flat, 2).tolist()}\nSAM  {np.round(s_flat, 2).tolist()}")
    assert tou == pytest.approx(s_tou, abs=CENT), (
        f"\nours {np.round(tou, 2).tolist()}\nSAM  {np.round(s_tou, 2).tolist()}")
    assert (flat + tou).sum() > 100.0  # the rate has demand charges, and they bite
