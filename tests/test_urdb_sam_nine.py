"""Nine real URDB rates billed by trueup (its URDB importer and bill engine) and by NREL SAM
(PySAM ``Utilityrate5`` fed the same JSON through PySAM's own converter,
``PySAM.UtilityRateTools.URDBv8_to_ElectricityRates``), under four metering rules. Every
month's bill and the year's total must agree to the cent, or differ by an amount whose cause
is named here and asserted exactly.

The rates (tests/data/urdb/real/, provenance in SOURCES.md there): PG&E E-1 (3 tiers in kWh
per day, two seasons, a $10 monthly minimum), SCE GS-2 TOU-B (5 TOU periods, flat and TOU
demand, the legacy ``fixedmonthlycharge``), APS ET-2 (4 TOU periods), APS R-2 (3 TOU periods,
TOU demand), Xcel Colorado RE-TOU (4 TOU periods, a trimmed record), JEA RS and CL&P Rate 1
(flat), Consumers Energy RSP (3 TOU periods with URDB ``sell`` rates) and Jackson EMC A (senior
version; 3 tiers in kWh per month, declining in winter).

The home is tests/test_sam_crosscheck.py's synthetic 15-minute 2018 (a 12 kW PV array and an
air-conditioned house): our data are the gross import/export registers per step (with load and
PV, which buy-all/sell-all reads), SAM gets ``load`` and ``gen`` and nets them per step. Our
tariff is imported with ``timezone = "UTC"`` (SAM has no time zone; 2018 is SAM's year).

How both sides are set to the same rule. URDB holds the metering rule only as ``dgrules``, and
no settlement at all, so each case sets ``dgrules`` in a copy of the record (read by our
importer; SAM's converter reads it too, and the case then sets ``ur_metering_option``) and
writes our ``[settlement]`` to match SAM's option:

* ``net_billing``: SAM option 2. Ours: dgrules "Net Billing Instantaneous" (net_billing,
  instantaneous netting); every month settles alone (``period_months = 1``, leftover paid out).
* ``buy_all_sell_all``: SAM option 4. Ours: dgrules "Buy All Sell All"; every month settles
  alone.
* ``nem_dollars``: SAM option 1 with ``ur_sell_eq_buy = 1`` (credits at retail), credit month
  December. Ours: dgrules "Net Metering" (nem, ``credit = "import"``); $ carryover, a December
  true-up, leftover credit paid out.
* ``nem_kwh``: SAM option 0, credit month December, year-end sell rate 0. Ours: dgrules "Net
  Metering"; kWh carryover, a December true-up, leftover forfeited, ``surplus_rate = 0``.

Export value under net billing and buy-all/sell-all: URDB's per-tier ``sell``. SAM's converter
writes it to the sell column of ``ur_ec_tou_mat`` (0 where a tier has none); our importer
writes it to ``export.sell_rates`` and, when URDB gives none, ``export.flat_rate = 0.0`` with a
warning. So both sides credit exports at $0 for eight of the rates and at Consumers RSP's
``sell`` rates for that one.

Two rules that differed are now options of ours, and the importer writes SAM's choice (with a
CHECK comment and a warning, since URDB cannot say which the utility uses):

* ``export.surplus_tiers = "fill"`` (E-1 and Jackson under nem_dollars): a month's net export
  fills the tiers from the first up, as SAM credits it (ssc ``cmod_utilityrate5.cpp``: the
  month's surplus is split into tiers like its use); ``"first"``, the schema's default,
  credits it all at tier 1. See :func:`test_surplus_tiers_fill_is_sams_tier_credit`.
* ``settlement.kwh_bank_pairing = "time_of_day"`` (E-1, SCE, APS ET-2, APS R-2 and Jackson
  under nem_kwh): URDB numbers summer and winter periods apart, so banking by period never
  let winter kWh offset summer imports; SAM moves a period's banked kWh to the period the next
  month's weekday schedule has at the same clock hour (hours 0, 5, 11 and 17; ssc
  ``rate_data::transfer_surplus``). See :func:`test_kwh_bank_pairing_follows_the_clock_hour`.

One difference stays, because it is in SAM's converter, not in a billing rule:

* SCE GS-2 TOU-B gives its $259.20 customer charge only in URDB's older ``fixedmonthlycharge``
  field. Our importer bills it (and warns); ``URDBv8_to_ElectricityRates`` reads only
  ``fixedchargefirstmeter``, so SAM bills no fixed charge. Ours is exactly $259.20 more every
  month ($3,110.40 a year) in all four cases, and equal to SAM once that is subtracted.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest

ur5 = pytest.importorskip("PySAM.Utilityrate5")
tools = pytest.importorskip("PySAM.UtilityRateTools")

from optimizer.billing import Bill, bill  # noqa: E402
from optimizer.intervals import IntervalData  # noqa: E402
from optimizer.tariff import Tariff  # noqa: E402
from optimizer.urdb import urdb_to_toml  # noqa: E402
from tests.test_sam_crosscheck import (  # noqa: E402
    CENT,
    STEPS_PER_HOUR,
    YEAR_START_UTC,
    Year,
    ours_monthly,
    synthetic_year,
)

REAL = Path(__file__).parent / "data" / "urdb" / "real"
NINE = ["pge_e1", "sce_gs2_tou_b", "aps_et2", "aps_r2", "xcel_co_re_tou", "jea_rs",
        "clp_rate1", "consumers_rsp", "jackson_emc_a_senior"]

_MONTHLY = {"period_months": 1, "carryover": "dollars", "charges": "monthly",
            "leftover_credit": "pay_out"}
_ANNUAL = {"period_months": 12, "true_up_month": 12, "charges": "monthly",
           "surplus_rate": 0.0}
#: case → (URDB dgrules, our [settlement] keys, SAM inputs)
CASES: dict[str, tuple[str, dict, dict]] = {
    "net_billing": ("Net Billing Instantaneous", _MONTHLY, {"ur_metering_option": 2}),
    "buy_all_sell_all": ("Buy All Sell All", _MONTHLY, {"ur_metering_option": 4}),
    "nem_dollars": ("Net Metering",
                    {**_ANNUAL, "carryover": "dollars", "leftover_credit": "pay_out"},
                    {"ur_metering_option": 1, "ur_sell_eq_buy": 1}),
    "nem_kwh": ("Net Metering", {**_ANNUAL, "carryover": "kwh", "leftover_credit": "forfeit"},
                {"ur_metering_option": 0}),
}


@pytest.fixture(scope="module")
def year() -> Year:
    return synthetic_year()


def record(name: str) -> dict:
    return json.loads((REAL / f"{name}.json").read_text(encoding="utf-8"))


def _toml_value(v: object) -> str:
    return json.dumps(v) if isinstance(v, str) else repr(v)


def set_keys(text: str, table: str, values: dict) -> str:
    """``text`` with ``key = value`` lines of ``[table]`` set (replaced, or added under the
    header); the importer's other lines in the table stay."""
    head = f"[{table}]\n"
    start = text.index(head) + len(head)
    nxt = re.search(r"^\[", text[start:], flags=re.M)
    end = start + nxt.start() if nxt else len(text)
    body = text[start:end]
    for key, v in values.items():
        line = f"{key} = {_toml_value(v)}"
        body, n = re.subn(rf"^{key} = .*$", line, body, flags=re.M)
        if n == 0:
            body = line + "\n" + body
    return text[:start] + body + text[end:]


def ours_tariff(rate: dict, case: str, **overrides: dict) -> Tariff:
    """Our tariff for ``case``: the record imported with the case's dgrules, [settlement] set
    as the case says; ``overrides`` = {table: {key: value}} on top."""
    rules, settlement, _ = CASES[case]
    r = copy.deepcopy(rate)
    r["dgrules"] = rules
    text, _ = urdb_to_toml(r, timezone="UTC", source=f"{r.get('label')}.json")
    text = set_keys(text, "settlement", settlement)
    for table, values in overrides.items():
        text = set_keys(text, table, values)
    return Tariff.from_text(text, source="imported.toml")


def sam(rate: dict, case: str, year: Year):
    """SAM's ``Utilityrate5`` on the same record (converted by PySAM) and the same year."""
    rules, _, options = CASES[case]
    r = copy.deepcopy(rate)  # the converter adds 1 to the schedules in place
    r["dgrules"] = rules
    m = ur5.new()
    m.ElectricityRates.assign(tools.URDBv8_to_ElectricityRates(r))
    inputs = {
        "analysis_period": 1, "system_use_lifetime_output": 0, "inflation_rate": 0.0,
        "degradation": [0.0], "load_escalation": [0.0], "rate_escalation": [0.0],
        "gen": (year.pv_kwh * STEPS_PER_HOUR).tolist(),
        "load": (year.load_kwh * STEPS_PER_HOUR).tolist(),
        "ur_yearzero_usage_peaks": [0.0] * 12, "TOU_demand_single_peak": 0,
        "ur_en_ts_sell_rate": 0, "ur_en_ts_buy_rate": 0,
        "ur_nm_credit_month": 11, "ur_nm_credit_rollover": 0, "ur_nm_yearend_sell_rate": 0.0,
        "ur_sell_eq_buy": 0, "ur_nb_credit_expire": 0, "ur_nb_apply_credit_current_month": 0,
        **options,
    }
    for key, val in inputs.items():
        m.value(key, val)
    m.execute(0)
    o = m.Outputs
    return (np.asarray(o.utility_bill_w_sys_ym, dtype=float)[1],
            np.asarray(o.charge_w_sys_fixed_ym, dtype=float)[1],
            float(o.utility_bill_w_sys_year1))


def converter_fixed_gap(rate: dict) -> float:
    """$/month our bill has over SAM's for the converter's reason: URDB's older
    ``fixedmonthlycharge``, which our importer bills when ``fixedchargefirstmeter`` is absent
    and ``URDBv8_to_ElectricityRates`` ignores."""
    if rate.get("fixedchargefirstmeter"):
        return 0.0
    return float(rate.get("fixedmonthlycharge") or 0.0)


def run(name: str, case: str, year: Year, **overrides: dict) -> tuple[Bill, np.ndarray]:
    t = ours_tariff(record(name), case, **overrides)
    return bill(t, year.data), sam(record(name), case, year)[0]


# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", NINE)
def test_nine_urdb_rates_bill_as_sam_bills_them(year: Year, name: str, case: str):
    """Every month and the year, to the cent, after the one converter difference (module
    docstring): ours − SAM = ``fixedmonthlycharge`` per month for SCE GS-2 TOU-B, else 0."""
    rate = record(name)
    t = ours_tariff(rate, case)
    b = bill(t, year.data)
    s_bill, s_fixed, s_annual = sam(rate, case, year)
    gap = converter_fixed_gap(rate)
    ours = ours_monthly(b)
    assert ours - gap == pytest.approx(s_bill, abs=CENT), (
        f"\nours − gap {np.round(ours - gap, 2).tolist()}\nSAM        "
        f"{np.round(s_bill, 2).tolist()}")
    assert b.annual_total - 12 * gap == pytest.approx(s_annual, abs=CENT)
    # the gap is the fixed charge and nothing else
    assert [m.fixed for m in b.months] == pytest.approx(s_fixed + gap, abs=1e-9)
    if name == "sce_gs2_tou_b":
        assert gap == 259.2 and (s_fixed == 0).all()
        assert b.annual_total - s_annual == pytest.approx(3110.40, abs=CENT)
    else:
        assert gap == 0.0


def test_the_cases_are_not_vacuous(year: Year):
    """The year exports in some months and imports in others, the export value path is used
    (Consumers RSP's sell rates), NEM $ credit is paid out and kWh are banked."""
    b, _ = run("consumers_rsp", "net_billing", year)
    t = ours_tariff(record("consumers_rsp"), "net_billing")
    assert t.sell_matrix is not None and t.sell_matrix.max() > 0.1
    assert sum(m.energy_charges < 0 for m in b.months) >= 3
    b, _ = run("clp_rate1", "nem_dollars", year)
    assert b.true_ups[-1].paid_out_credit > 100
    b, _ = run("aps_et2", "nem_kwh", year)
    assert max(m.kwh_bank for m in b.months) > 100


# --------------------------------------------------------------------------------------
# The two options that close the gaps


def _first_vs_fill_credit(t: Tariff, b: Bill) -> float:
    """$ more that "fill" credits than "first", computed by hand for a rate with one period
    per month: each month's net export X fills the tiers [0, L1), [L1, L2), ... (limits × the
    month's days when per day), each tier's kWh earning (its rate − the first tier's)."""
    extra = 0.0
    for m in b.months:
        net = sum(m.net_kwh_by_period.values())
        if net >= 0:
            continue
        mo = int(m.month[5:])
        si = int(t.month_season[mo])
        (pi,) = {int(p) for p in t.period_table[mo - 1].ravel()}
        lim, rates = t.tier_limits[si, pi], t.tier_rates[si, pi]
        lim = np.where(t.tier_per_day[si, pi] & np.isfinite(lim), lim * m.days, lim)
        lo = 0.0
        for k in range(len(rates)):
            hi = float(lim[k])
            extra += max(0.0, min(-net, hi) - lo) * (rates[k] - rates[0])
            if not np.isfinite(hi) or -net <= hi:
                break
            lo = hi
    return extra


@pytest.mark.parametrize(("name", "explained"), [("pge_e1", 344.06),
                                                 ("jackson_emc_a_senior", -7.79)])
def test_surplus_tiers_fill_is_sams_tier_credit(year: Year, name: str, explained: float):
    """NEM with $ credits on a tiered rate: SAM credits a month's net export in the tiers it
    fills from the first up (ssc ``cmod_utilityrate5.cpp``, the surplus split into tiers
    like use; SAM's help, 'Metering and Billing': the sell rate is applied 'for each period
    and tier'). The importer writes ``export.surplus_tiers = "fill"``, which bills as SAM.

    With the schema's default ``"first"`` (all surplus at tier 1) ours pays out less on E-1
    (rising tiers: $344.06 less in the December payout) and more on Jackson EMC (winter tiers
    fall: $7.79 more), each exactly the surplus kWh above tier 1 × (tier rate − tier 1 rate).
    """
    t_fill = ours_tariff(record(name), "nem_dollars")
    assert t_fill.spec.export.surplus_tiers == "fill"  # what the importer wrote
    fill, s_bill = run(name, "nem_dollars", year)
    assert ours_monthly(fill) == pytest.approx(s_bill, abs=CENT)

    first, _ = run(name, "nem_dollars", year, export={"surplus_tiers": "first"})
    gap = first.annual_total - fill.annual_total
    assert gap == pytest.approx(_first_vs_fill_credit(t_fill, fill), abs=CENT)
    assert round(gap, 2) == explained
    # the whole difference is in the December payout; other months bill the same either way
    assert ours_monthly(first)[:11] == pytest.approx(ours_monthly(fill)[:11], abs=1e-9)


@pytest.mark.parametrize("name", ["pge_e1", "sce_gs2_tou_b", "aps_et2", "aps_r2",
                                  "jackson_emc_a_senior"])
def test_kwh_bank_pairing_follows_the_clock_hour(year: Year, name: str):
    """NEM with kWh carryover: URDB numbers summer and winter periods apart (E-1: p0 summer,
    p1 winter). Banking by period (``kwh_bank_pairing = "period"``) keeps winter kWh off
    summer imports; SAM moves each period's banked kWh on to the period the next month's
    weekday schedule has at the same clock hour. The importer writes ``"time_of_day"``,
    which bills as SAM; ``"period"`` bills some months differently (APS R-2 by cents: its
    winter on-peak p1 and summer on-peak p2 bank little)."""
    rate = record(name)
    gap = converter_fixed_gap(rate)
    assert ours_tariff(rate, "nem_kwh").spec.settlement.kwh_bank_pairing == "time_of_day"
    tod, s_bill = run(name, "nem_kwh", year)
    assert ours_monthly(tod) - gap == pytest.approx(s_bill, abs=CENT)
    by_period, _ = run(name, "nem_kwh", year, settlement={"kwh_bank_pairing": "period"})
    off = ours_monthly(by_period) - gap - s_bill
    assert np.abs(off).max() > 0.03, off


# --------------------------------------------------------------------------------------
# SAM's pairing, on purpose-built rates


def _two_season_rate(winter: list[int], summer: list[int]) -> dict:
    """A URDB record: January-May weekdays and weekends ``winter``, June-December
    ``summer`` (24 period indices each); periods 0-3 at $0.10, 0.20, 0.30, 0.50."""
    def sched() -> list[list[int]]:  # twelve separate rows: PySAM's converter edits them
        return [list(winter) for _ in range(5)] + [list(summer) for _ in range(7)]

    return {"label": "synthetic", "name": "time-of-day pairing", "utility": "Test",
            "dgrules": "Net Metering", "energyweekdayschedule": sched(),
            "energyweekendschedule": sched(),
            "energyratestructure": [[{"rate": r, "unit": "kWh"}] for r in
                                    (0.10, 0.20, 0.30, 0.50)]}


def _hourly_year(gen: dict[tuple[int, int], float],
                 load: dict[tuple[int, int], float]) -> tuple[IntervalData, np.ndarray,
                                                             np.ndarray]:
    """An hourly 2018 with ``kW`` at (month, hour) every day of that month: our data and
    SAM's ``load`` and ``gen`` (kW)."""
    n = 8760
    day, hour = np.arange(n) // 24, np.arange(n) % 24
    days = np.arange(np.datetime64("2018-01-01"), np.datetime64("2019-01-01"))
    month = (days.astype("datetime64[M]").astype(np.int64) % 12 + 1)[day]
    g, ld = np.zeros(n), np.zeros(n)
    for (mo, h), kw in gen.items():
        g[(month == mo) & (hour == h)] = kw
    for (mo, h), kw in load.items():
        ld[(month == mo) & (hour == h)] = kw
    data = IntervalData.regular(YEAR_START_UTC, 3600, np.maximum(ld - g, 0.0),
                                np.maximum(g - ld, 0.0), source="hourly 2018")
    return data, ld, g


def _sam_hourly(rate: dict, load_kw: np.ndarray, gen_kw: np.ndarray) -> np.ndarray:
    m = ur5.new()
    m.ElectricityRates.assign(tools.URDBv8_to_ElectricityRates(copy.deepcopy(rate)))
    for key, val in {"analysis_period": 1, "system_use_lifetime_output": 0,
                     "inflation_rate": 0.0, "degradation": [0.0], "load_escalation": [0.0],
                     "rate_escalation": [0.0], "gen": gen_kw.tolist(), "load": load_kw.tolist(),
                     "ur_yearzero_usage_peaks": [0.0] * 12, "ur_metering_option": 0,
                     "ur_nm_credit_month": 11, "ur_nm_credit_rollover": 0,
                     "ur_nm_yearend_sell_rate": 0.0}.items():
        m.value(key, val)
    m.execute(0)
    return np.asarray(m.Outputs.utility_bill_w_sys_ym, dtype=float)[1]


def _ours_hourly(rate: dict, data: IntervalData, **settlement: str) -> np.ndarray:
    text, _ = urdb_to_toml(copy.deepcopy(rate), timezone="UTC", source="synthetic.json")
    text = set_keys(text, "settlement", {**CASES["nem_kwh"][1], **settlement})
    return ours_monthly(bill(Tariff.from_text(text, source="synthetic.toml"), data))


def test_sam_pairs_banked_kwh_by_clock_hour_not_by_position():
    """Winter: p0 all day but 11-15 (p1); summer: p2 until 17, then p3. By clock hour
    (SAM's weekday hours 0, 5, 11, 17) p1 pairs with p2; by position in the sorted period
    lists it would pair with p3. 310 kWh banked in May's p1 offset June's 150 kWh in p2
    ($0.30), not those in p3 ($0.50): June bills 150 × 0.50 = $75.00 in SAM and in ours."""
    rate = _two_season_rate([0] * 11 + [1] * 4 + [0] * 9, [2] * 17 + [3] * 7)
    data, load, gen = _hourly_year(gen={(5, 12): 10.0}, load={(6, 3): 5.0, (6, 20): 5.0})
    s, ours = _sam_hourly(rate, load, gen), _ours_hourly(rate, data)
    assert s[5] == pytest.approx(75.0, abs=CENT)
    assert ours == pytest.approx(s, abs=CENT)


def test_a_period_at_none_of_sams_hours_keeps_its_kwh_where_sam_drops_them():
    """A period SAM cannot pair (p1, weekdays and weekends 12-15 all year: at none of the
    hours 0, 5, 11, 17) loses its banked kWh in SAM at every month change (ssc logs 'Unable
    to determine period for energy charge rollover'). Ours keeps them with p1, whether
    banking by period (what the importer writes here: one season, nothing to pair) or by
    time of day, and the importer warns. March banks 310 kWh in p1; April's 150 kWh in p1
    ($0.20) are offset in ours and billed in SAM. The difference is exactly
    150 × 0.20 = $30.00, in April."""
    rate = _two_season_rate([0] * 12 + [1] * 3 + [0] * 9, [0] * 12 + [1] * 3 + [0] * 9)
    data, load, gen = _hourly_year(gen={(3, 13): 10.0}, load={(4, 14): 5.0})
    s = _sam_hourly(rate, load, gen)
    for pairing in ("period", "time_of_day"):
        diff = s - _ours_hourly(rate, data, kwh_bank_pairing=pairing)
        assert diff[3] == pytest.approx(30.0, abs=CENT)
        assert np.delete(diff, 3) == pytest.approx(np.zeros(11), abs=CENT)
    text, warnings = urdb_to_toml(copy.deepcopy(rate), timezone="UTC")
    assert "kwh_bank_pairing" not in text
    assert any("p1 is at none of the weekday hours 0, 5, 11, 17" in w for w in warnings)
