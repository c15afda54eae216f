"""The bundled tariffs: every file loads and bills a year; the PG&E 2026 files say where their
rates come from, their NBC components add up, their calendars match the schedules, and one
month is billed by hand to the cent."""

from __future__ import annotations

import math
import re
from datetime import date

import numpy as np
import pytest

from optimizer.billing import bill
from optimizer.tariff import bundled_ids, load_tariff
from tests.helpers import hourly
from trueup.example import example_year
from trueup.report import tariff_summary

PGE_2026 = [f"pge-{s}-{v}-2026" for s in ("etouc", "etoud", "eelec", "ev2a")
            for v in ("nem1", "nem2", "nem2ps", "nbt")]


def test_bundled_ev2a_tariff_loads_with_peak_at_16_to_21():
    assert "pge-ev2a-nem2ps-2024" in bundled_ids()
    t = load_tariff("pge-ev2a-nem2ps-2024")
    names = [t.period_names[i] for i in t.period_table[0, 0]]
    assert names[15] == "part_peak" and names[16:21] == ["peak"] * 5 and names[21] == "part_peak"


@pytest.fixture(scope="module")
def year_2026():
    """The example home's 2026 (PV, load, battery; hourly) in a tariff's zone."""
    years = {}

    def get(tz: str):
        if tz not in years:
            years[tz] = example_year(2026, interval_min=60, tz=tz)
        return years[tz]

    return get


@pytest.mark.parametrize("tid", bundled_ids())
def test_every_bundled_tariff_loads_and_bills_a_year(tid, year_2026):
    t = load_tariff(tid)
    assert t.warnings == []
    b = bill(t, year_2026(t.tz))
    assert len(b.months) == 12 and math.isfinite(b.annual_total)
    assert all(math.isfinite(m.billed) for m in b.months)


def test_the_2026_pge_files_are_all_bundled():
    assert set(PGE_2026) <= set(bundled_ids())


@pytest.mark.parametrize("tid", PGE_2026)
def test_each_2026_pge_file_names_its_date_source_and_nbc_components(tid):
    t = load_tariff(tid)
    s = t.spec
    assert s.id == tid
    assert s.effective == "2026-03-01"
    # the schedule, the advice letter and the tariff book's URL
    assert re.search(r"Advice Letter \d{4}-E", s.source)
    assert re.search(r"Schedule (E-TOU-C|E-TOU-D|E-ELEC|EV2)\b", s.source)
    assert "https://www.pge.com/tariffs/assets/pdf/tariffbook/ELEC_SCHEDS_" in s.source
    assert "optimizer.true_up_month" in s.notes and "--true-up-month" in s.notes
    c = s.charges
    assert c.fixed_per_day == 0.79343  # Base Services Charge, Income Tier 3
    if tid.endswith("-nem1-2026"):
        assert c.nbc_per_kwh == 0.0 and c.nbc_components is None
        assert s.export.credit == "import"
    else:  # NEM2, NEM2-PS and NBT pay NBCs on every import
        assert c.nbc_components is not None
        assert math.fsum(c.nbc_components.values()) == pytest.approx(c.nbc_per_kwh, abs=1e-5)
        assert c.nbc_per_kwh == 0.01230
        assert "NBC components ($/kWh): public_purpose_programs 0.00614" in tariff_summary(t)
    if "-nem2" in tid:
        assert s.export.credit == "import_minus_nbc" and s.settlement.charges == "at_true_up"
    if tid.endswith("-nem2ps-2026"):
        assert s.export_cap is not None and s.export_cap.decredit_order[0] == "peak"
        assert "Solar Generation Eligible for Credit" in s.notes
    if tid.endswith("-nbt-2026"):
        assert s.export.scheme == "net_billing" and s.export.rates_csv
    if tid.startswith("pge-etouc-"):
        assert s.baseline is not None and "Territory X" in s.notes


def periods_of(tid: str, month: int, weekend: bool) -> list[str]:
    t = load_tariff(tid)
    return [t.period_names[i] for i in t.period_table[month - 1, int(weekend)]]


@pytest.mark.parametrize("tid", PGE_2026)
def test_each_2026_pge_file_has_its_schedules_hours_and_seasons(tid):
    """E-TOU-C peak 16-21 every day; E-TOU-D peak 17-20 on weekdays only; E-ELEC and EV2-A
    peak 16-21 and part-peak 15-16 and 21-24 every day. Summer is June to September."""
    t = load_tariff(tid)
    summer = [m for m in range(1, 13) if t.season_names[t.month_season[m]] == "summer"]
    assert summer == [6, 7, 8, 9]
    for month in (1, 7):
        wd, we = periods_of(tid, month, False), periods_of(tid, month, True)
        if "-etouc-" in tid:
            assert wd == we == ["off_peak"] * 16 + ["peak"] * 5 + ["off_peak"] * 3
        elif "-etoud-" in tid:
            assert wd == ["off_peak"] * 17 + ["peak"] * 3 + ["off_peak"] * 4
            assert we == ["off_peak"] * 24
            assert t.spec.calendar.holidays == "pge"
        else:
            assert wd == we == (["off_peak"] * 15 + ["part_peak"] + ["peak"] * 5
                                + ["part_peak"] * 3)


def test_a_january_of_flat_load_on_e_tou_c_nem2_by_hand():
    """pge-etouc-nem2-2026, January 2026 (winter, 31 days, no DST change), 1 kWh every
    hour, no exports.

    kWh: 31 × 24 = 744; peak (16-21, every day) 31 × 5 = 155; off-peak 744 − 155 = 589.
    All-in energy: 155 × 0.39757 + 589 × 0.36757 = 61.62335 + 216.49873 = 278.12208
      (of which the NBC line on gross imports: 744 × 0.01230 = 9.15120).
    Baseline credit: allowance 9.7 kWh/day × 31 = 300.7 kWh < 744, so
      300.7 × 0.08140 = 24.47698.
    Base Services Charge: 31 × 0.79343 = 24.59633, billed on the month's statement.
    NEM2 settles energy and NBC at the true-up (no minimum, no surplus, no NSC):
      278.12208 − 24.47698 = 253.64510.
    Total: 24.59633 + 253.64510 = 278.24143 → $278.24.
    """
    t = load_tariff("pge-etouc-nem2-2026")
    data = hourly(date(2026, 1, 1), date(2026, 1, 31), lambda d, h: (1.0, 0.0),
                  tz="America/Los_Angeles")
    assert len(data) == 744 and np.all(data.import_kwh == 1.0)
    b = bill(t, data)
    (jan,) = b.months
    assert jan.import_kwh == pytest.approx(744)
    assert jan.net_kwh_by_period == pytest.approx({"peak": 155, "off_peak": 589})
    assert round(jan.nbc, 2) == 9.15
    assert round(jan.baseline_credit, 2) == 24.48
    assert round(jan.fixed, 2) == 24.60 and jan.minimum == 0.0
    assert round(jan.energy_charges + jan.nbc, 5) == round(278.12208 - 24.47698, 5)
    assert round(jan.billed, 2) == 24.60
    assert round(b.true_up.due, 2) == 253.65 and b.true_up.surplus_credit == 0.0
    assert round(b.annual_total, 2) == 278.24
