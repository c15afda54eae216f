"""Tariff files: validation errors name the file, the key (and line) and the fix; the TOU
calendar and rate lookup are right, vectorised over a year."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from optimizer.errors import TariffError
from optimizer.tariff import Tariff, bundled_ids, bundled_path, load_tariff

EV2A = bundled_path("pge-ev2a-nem2ps-2024").read_text()


def load(text: str) -> Tariff:
    return Tariff.from_text(text, source="my.toml")


def error_of(text: str) -> TariffError:
    with pytest.raises(TariffError) as e:
        load(text)
    return e.value


def test_every_bundled_tariff_loads_and_names_its_source_and_date():
    ids = bundled_ids()
    assert len(ids) >= 8
    for tid in ids:
        t = load_tariff(tid)
        assert t.spec.source and t.spec.effective, tid


def test_unknown_key_names_file_line_key_and_fix():
    e = error_of(EV2A.replace("nbc_per_kwh", "nbc_per_kw"))
    line = next(i for i, ln in enumerate(EV2A.splitlines(), 1) if ln.startswith("nbc_per_kwh"))
    assert f"my.toml:{line}: charges.nbc_per_kw: unknown key 'nbc_per_kw'" in str(e)
    assert "remove the key or correct its spelling" in str(e)


def test_missing_hours_are_reported_with_the_hours_and_a_fix():
    e = error_of(EV2A.replace("hours = [[0, 24]]", "hours = [[0, 14]]"))
    assert "no period covers weekday hours [14] in month 1" in e.what
    assert "catch-all" in e.fix


def test_overlapping_hours_within_a_period_are_refused():
    e = error_of(EV2A.replace("hours = [[15, 16], [21, 24]]", "hours = [[15, 17], [16, 24]]"))
    assert "overlap at [16]" in e.what
    assert "periods[1].hours" in e.where


def test_a_period_shadowed_by_earlier_ones_is_an_overlap_error():
    text = EV2A.replace('name = "part_peak"\nhours = [[15, 16], [21, 24]]',
                        'name = "part_peak"\nhours = [[16, 21]]')
    e = error_of(text)
    assert "'part_peak' never applies" in e.what


def test_missing_season_rate_names_season_period_and_fix():
    e = error_of(EV2A.replace("winter = { peak = 0.531, part_peak = 0.514, off_peak = 0.346 }",
                              "winter = { peak = 0.531, off_peak = 0.346 }"))
    assert "no import rate for period 'part_peak' in season 'winter'" in e.what
    assert "import_rates.winter" in e.where and "add part_peak" in e.fix


def test_month_in_two_seasons_and_month_in_none_are_refused():
    e = error_of(EV2A.replace("summer = [6, 7, 8, 9]", "summer = [5, 6, 7, 8, 9]"))
    assert "month 5 is in both seasons" in e.what
    e = error_of(EV2A.replace("summer = [6, 7, 8, 9]", "summer = [7, 8, 9]"))
    assert "months [6] are in no season" in e.what


def test_bad_tiers_are_refused():
    bad_last = EV2A.replace("off_peak = 0.346 }\nwinter",
                            "off_peak = [{ up_to_kwh = 100, rate = 0.3 }] }\nwinter")
    assert "the last tier has a limit" in error_of(bad_last).what
    decreasing = EV2A.replace(
        "off_peak = 0.346 }\nwinter",
        "off_peak = [{ up_to_kwh = 100, rate = 0.3 }, { up_to_kwh = 50, rate = 0.4 }, "
        "{ rate = 0.5 }] }\nwinter")
    assert "tier limits must increase" in error_of(decreasing).what


def test_net_billing_needs_exactly_one_export_value():
    text = EV2A.replace('scheme = "nem"', 'scheme = "net_billing"')
    e = error_of(text)
    assert "needs exactly one export value" in e.what and "flat_rate" in e.fix


def test_invalid_toml_and_wrong_types_are_clear():
    assert "not valid TOML" in error_of("id = ").what
    e = error_of(EV2A.replace("minimum_per_day = 0.39167", "minimum_per_day = -1"))
    assert "charges.minimum_per_day" in str(e) and "greater than or equal to 0" in str(e)


def test_unknown_time_zone_and_holiday_set():
    assert "unknown time zone" in error_of(EV2A.replace("America/Los_Angeles", "Mars/Base")).what
    assert "unknown holiday set" in error_of(
        EV2A.replace('holidays = "none"', 'holidays = "XX"')).what


def test_unknown_tariff_id_lists_bundled_ids():
    with pytest.raises(TariffError) as e:
        load_tariff("no-such-tariff")
    assert "pge-ev2a-nem2ps-2024" in e.value.fix


def test_rates_csv_outside_its_years_is_an_error():
    from optimizer.tariff import load_tariff

    t = load_tariff("pge-ev2a-nbt-2024")
    starts = np.array([int(datetime(2050, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp())])
    with pytest.raises(TariffError, match="covers 2024-2043"):
        t.sell_rate(t.classify(starts))


def test_rate_lookup_over_a_year_matches_a_per_interval_zoneinfo_loop():
    """The vectorised lookup equals a slow, obvious loop with zoneinfo, every 15 minutes of
    2025 (DST days included)."""
    t = load_tariff("pge-ev2a-nem2ps-2024")
    zone = ZoneInfo(t.tz)
    t0 = int(datetime(2025, 1, 1, tzinfo=zone).timestamp())
    starts = t0 + 900 * np.arange(35040, dtype=np.int64)
    rate = t.import_rate(t.classify(starts))
    table = {"summer": {"peak": 0.658, "part_peak": 0.548, "off_peak": 0.346},
             "winter": {"peak": 0.531, "part_peak": 0.514, "off_peak": 0.346}}
    for i in range(0, len(starts), 7):
        local = datetime.fromtimestamp(int(starts[i]), zone)
        season = "summer" if local.month in (6, 7, 8, 9) else "winter"
        h = local.hour
        period = "peak" if 16 <= h < 21 else "part_peak" if h == 15 or h >= 21 else "off_peak"
        assert rate[i] == table[season][period], local


def test_weekend_periods_and_month_restricted_periods():
    text = """
    id = "x"
    name = "x"
    timezone = "UTC"
    [calendar]
    seasons = { all = [1,2,3,4,5,6,7,8,9,10,11,12] }
    [[periods]]
    name = "summer_peak"
    hours = [[14, 20]]
    days = "weekdays"
    months = [7, 8]
    [[periods]]
    name = "base"
    hours = [[0, 24]]
    [import_rates]
    all = { summer_peak = 0.9, base = 0.1 }
    [export]
    scheme = "none"
    """
    import textwrap

    t = load(textwrap.dedent(text))
    ts = lambda *a: int(datetime(*a, tzinfo=ZoneInfo("UTC")).timestamp())  # noqa: E731
    starts = np.array([ts(2025, 7, 1, 15), ts(2025, 7, 5, 15), ts(2025, 6, 2, 15)])
    # Tuesday in July: peak; Saturday in July: base; Monday in June: base
    assert list(t.import_rate(t.classify(starts))) == [0.9, 0.1, 0.1]


def test_pge_holidays_are_the_eight_tou_holidays():
    t = load(EV2A.replace('holidays = "none"', 'holidays = "pge"'))
    days = t.holiday_days(np.array([2025]))
    as_dates = sorted(str(np.datetime64(int(d), "D")) for d in days)
    assert as_dates == ["2025-01-01", "2025-02-17", "2025-05-26", "2025-07-04", "2025-09-01",
                        "2025-11-11", "2025-11-27", "2025-12-25"]


def test_decredit_order_with_a_period_twice_is_refused():
    e = error_of(EV2A.replace('decredit_order = ["peak", "part_peak", "off_peak"]',
                              'decredit_order = ["peak", "peak"]'))
    assert "periods listed twice" in e.what


def test_surplus_rate_with_paid_out_dollar_credit_is_refused():
    e = error_of(EV2A.replace('leftover_credit = "forfeit"', 'leftover_credit = "pay_out"'))
    assert "pay it twice" in e.what and "surplus_rate = 0" in e.fix


def test_first_true_up_must_be_in_the_true_up_month():
    e = error_of(EV2A.replace("true_up_month = 12",
                              "true_up_month = 12\nfirst_true_up = '2025-04'"))
    assert "is not in true_up_month 12" in e.what


def test_unreadable_tariff_files_are_tariff_errors(tmp_path):
    with pytest.raises(TariffError, match="is a directory"):
        load_tariff(tmp_path)
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(EV2A.replace("PG&E", "PG\xe9E").encode("latin-1"))
    with pytest.raises(TariffError, match="not UTF-8"):
        load_tariff(latin)
    (tmp_path / "empty.csv").write_text("")
    nbt = bundled_path("pge-ev2a-nbt-2024").read_text()
    (tmp_path / "t.toml").write_text(nbt.replace("pge_nbt24_export_values.csv", "empty.csv"))
    with pytest.raises(TariffError, match="export-value table is empty"):
        load_tariff(tmp_path / "t.toml")


def test_estimated_cap_without_figures_points_to_the_cli_option():
    t = load(EV2A.replace(
        "monthly_kwh = [310, 370, 520, 610, 700, 720, 730, 690, 590, 470, 340, 290]",
        'estimate = "pv"'))
    with pytest.raises(TariffError) as e:
        t.export_cap_kwh(1)
    assert "--export-cap" in e.value.fix


def test_nan_and_inf_rates_are_refused_once_at_their_line():
    """TOML reads nan and inf as floats; a rate of either would bill nan or inf."""
    line = next(i for i, ln in enumerate(EV2A.splitlines(), 1) if ln.startswith("summer = {"))
    src = EV2A.splitlines()[line - 1]  # summer = { peak = 0.658, ... }
    for bad in ("nan", "inf", "-inf"):
        e = error_of(EV2A.replace(src, src.replace("peak = 0.658", f"peak = {bad}", 1)))
        assert f"my.toml:{line}: import_rates.summer.peak: Input should be a finite number" \
            in str(e)
        assert "1 problem(s)" in str(e)  # the rate's list-of-tiers branch is not repeated


def test_an_nbc_above_every_import_rate_is_refused_and_above_some_warned():
    """The NBC is a component of each import rate; 0.9 $/kWh is above all of EV2-A's
    rates (the highest, summer peak, is below 0.7), 0.4 above the off-peak rate only."""
    line = next(i for i, ln in enumerate(EV2A.splitlines(), 1) if ln.startswith("nbc_per_kwh"))
    nbc = EV2A.splitlines()[line - 1]
    e = error_of(EV2A.replace(nbc, "nbc_per_kwh = 0.9"))
    assert e.where == f"my.toml:{line}: charges.nbc_per_kwh"
    assert "above every import rate" in e.what and "not 3.273 cents" in e.fix
    t = load(EV2A.replace(nbc, "nbc_per_kwh = 0.4"))
    assert len(t.warnings) == 1 and "above the import rate" in t.warnings[0]
    assert t.warnings[0].startswith(f"my.toml:{line}:")
    assert load(EV2A).warnings == []


def test_an_import_rate_in_cents_is_warned():
    t = load(EV2A.replace("summer = { peak = 0.658", "summer = { peak = 65.8", 1))
    assert any("import rate 65.8 $/kWh is above 2 $/kWh" in w for w in t.warnings)


def with_nbc_components(components: str) -> str:
    """EV2A (nbc_per_kwh = 0.03273) with an ``nbc_components`` line under it."""
    nbc = next(ln for ln in EV2A.splitlines() if ln.startswith("nbc_per_kwh"))
    return EV2A.replace(nbc, f"{nbc}\nnbc_components = {{ {components} }}")


def test_nbc_components_that_add_up_to_the_nbc_are_kept():
    """PG&E's 2023-09-01 components: 0.02578 + 0.00135 + 0.00530 + 0.00030 = 0.03273; a
    credit among them (a negative component) is allowed, and so is rounding within
    $0.00001."""
    parts = ("public_purpose_programs = 0.02578, nuclear_decommissioning = 0.00135, "
             "wildfire_fund_charge = 0.00530, competition_transition_charge = 0.00030")
    t = load(with_nbc_components(parts))
    assert t.spec.charges.nbc_components["wildfire_fund_charge"] == 0.00530
    assert sum(t.spec.charges.nbc_components.values()) == pytest.approx(0.03273, abs=1e-12)
    # 0.02578 + 0.00136 + 0.00530 + 0.00030 = 0.03274: $0.00001 off, still rounding
    load(with_nbc_components(parts.replace("0.00135", "0.00136")))
    # a bond charge and its credit cancel: 0.03273 + 0.00857 − 0.00857
    load(with_nbc_components(parts + ", recovery_bond_charge = 0.00857, "
                                     "recovery_bond_credit = -0.00857"))


def test_nbc_components_that_do_not_add_up_are_refused_at_their_line():
    """The Competition Transition Charge left out: 0.02578 + 0.00135 + 0.00530 = 0.03243,
    $0.00030 short of nbc_per_kwh 0.03273."""
    text = with_nbc_components("public_purpose_programs = 0.02578, "
                               "nuclear_decommissioning = 0.00135, wildfire_fund_charge = 0.00530")
    line = next(i for i, ln in enumerate(text.splitlines(), 1)
                if ln.startswith("nbc_components"))
    e = error_of(text)
    assert e.where == f"my.toml:{line}: charges.nbc_components"
    assert "add up to 0.03243 $/kWh" in e.what and "nbc_per_kwh is 0.03273" in e.what
    assert "set nbc_per_kwh = 0.03243" in e.fix
    assert str(e).startswith(f"my.toml:{line}: charges.nbc_components: the components add up")
