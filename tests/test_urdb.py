"""URDB JSON → tariff TOML (optimizer/urdb.py). Fixtures in tests/data/urdb/ are in the OpenEI
URDB API v7 response shape; no network."""

from __future__ import annotations

import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from optimizer.errors import TariffError
from optimizer.tariff import Tariff
from optimizer.urdb import import_urdb_file, urdb_to_toml

DATA = Path(__file__).parent / "data" / "urdb"
FLAT = [[0] * 24 for _ in range(12)]


def _load(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


def _rate(name: str) -> dict[str, Any]:
    """The first rate object of a fixture (unwrapping ``items``)."""
    data = _load(name)
    return copy.deepcopy(data["items"][0] if "items" in data else data)


def _convert(rate: dict[str, Any], **kw: Any) -> tuple[Tariff, str, list[str]]:
    text, warnings = urdb_to_toml(rate, source="rate.json", **kw)
    return Tariff.from_text(text, source="imported.toml"), text, warnings


def _minimal(**extra: Any) -> dict[str, Any]:
    rate = {"name": "Flat", "utility": "Test Co", "dgrules": "Net Metering",
            "energyratestructure": [[{"rate": 0.2, "unit": "kWh"}]],
            "energyweekdayschedule": copy.deepcopy(FLAT),
            "energyweekendschedule": copy.deepcopy(FLAT)}
    rate.update(extra)
    return rate


def assert_equivalent(rate: dict[str, Any], t: Tariff) -> None:
    """For every month × day type × hour: the tariff's period is URDB's index, and its tiers
    (limits, per-day flag, rate + adj, sell) are URDB's."""
    fuel = rate.get("fueladjustmentsmonthly") or [0.0] * 12
    for m in range(12):
        si = int(t.month_season[m + 1])
        for d, key in enumerate(("energyweekdayschedule", "energyweekendschedule")):
            for h in range(24):
                p = rate[key][m][h]
                pi = int(t.period_table[m, d, h])
                assert t.period_names[pi] == f"p{p}", (m + 1, key, h)
                tiers = rate["energyratestructure"][p]
                for k, tier in enumerate(tiers):
                    want = tier.get("rate", 0.0) + tier.get("adj", 0.0) + fuel[m]
                    assert t.tier_rates[si, pi, k] == pytest.approx(want, abs=1e-12)
                    last = k == len(tiers) - 1
                    limit = math.inf if last else tier["max"]
                    assert t.tier_limits[si, pi, k] == limit
                if len(tiers) > 1:
                    assert bool(t.tier_per_day[si, pi]) == (tiers[0]["unit"] == "kWh daily")
                if t.sell_matrix is not None:
                    assert t.sell_matrix[si, pi] == pytest.approx(tiers[0]["sell"])


# -- time of use: seasons, weekday/weekend ---------------------------------------------


def test_tou_two_seasons_rates_match_urdb_for_every_month_daytype_and_hour():
    rate = _rate("tou_two_seasons.json")
    t, _, _ = _convert(rate)
    assert_equivalent(rate, t)


def test_tou_seasons_are_named_summer_and_winter_from_july_and_january():
    t, _, _ = _convert(_rate("tou_two_seasons.json"))
    assert t.spec.calendar.seasons == {"winter": [10, 11, 12, 1, 2, 3, 4, 5],
                                       "summer": [6, 7, 8, 9]}
    assert t.spec.calendar.holidays == "none"


def test_tou_weekday_and_weekend_get_separate_period_entries_with_merged_hour_ranges():
    t, _, _ = _convert(_rate("tou_two_seasons.json"))
    got = {(p.name, p.days, tuple(p.seasons or ()), tuple(map(tuple, p.hours)))
           for p in t.spec.periods}
    assert got == {
        ("p0", "weekdays", ("summer",), ((0, 17), (20, 24))),
        ("p0", "weekends", ("summer",), ((0, 24),)),
        ("p1", "weekdays", ("summer",), ((17, 20),)),
        ("p2", "weekdays", ("winter",), ((0, 17), (20, 24))),
        ("p2", "weekends", ("winter",), ((0, 24),)),
        ("p3", "weekdays", ("winter",), ((17, 20),)),
    }
    assert t.period_names == ["p0", "p1", "p2", "p3"]


def test_import_rate_is_rate_plus_adj_per_season_and_period():
    t, text, _ = _convert(_rate("tou_two_seasons.json"))
    assert t.spec.import_rates == {"winter": {"p2": 0.35919, "p3": 0.42248},
                                   "summer": {"p0": 0.39374, "p1": 0.53427}}
    assert "p1 = 0.53427  # $/kWh, highest in summer (peak)" in text
    assert "p0 = 0.39374  # $/kWh, lowest in summer (off-peak)" in text


def test_identical_weekday_and_weekend_rows_give_days_all_and_no_seasons_key_when_all_seasons():
    t, _, _ = _convert(_minimal())
    (p,) = t.spec.periods
    assert (p.name, p.days, p.seasons, p.hours) == ("p0", "all", None, [(0, 24)])
    assert t.spec.calendar.seasons == {"all_year": list(range(1, 13))}


def test_seasons_named_by_month_range_or_s1_s2_when_a_group_is_not_a_range():
    wd = [[0] * 24 for _ in range(12)]
    for m in (5, 6, 7, 8):  # jun-sep
        wd[m] = [1] * 24
    for m in (10, 11, 0, 1):  # nov-feb
        wd[m] = [2] * 24
    ers = [[{"rate": 0.2}], [{"rate": 0.3}], [{"rate": 0.25}]]
    rate = _minimal(energyratestructure=ers, energyweekdayschedule=wd,
                    energyweekendschedule=copy.deepcopy(wd))
    t, _, _ = _convert(rate)  # mar-may and oct share a schedule: {3, 4, 5, 10} is no range
    assert t.spec.calendar.seasons == {"s1": [11, 12, 1, 2], "s2": [3, 4, 5, 10],
                                       "s3": [6, 7, 8, 9]}
    assert_equivalent(rate, t)
    wd[9] = [0] * 12 + [1] * 12  # october on its own
    rate = _minimal(energyratestructure=ers, energyweekdayschedule=wd,
                    energyweekendschedule=copy.deepcopy(wd))
    t, _, _ = _convert(rate)
    assert t.spec.calendar.seasons == {"nov_feb": [11, 12, 1, 2], "mar_may": [3, 4, 5],
                                       "jun_sep": [6, 7, 8, 9], "oct": [10]}
    assert_equivalent(rate, t)


def test_same_hours_in_several_seasons_share_one_period_entry():
    wd = [[0] * 16 + [1] * 5 + [0] * 3 if m in (5, 6, 7, 8) else [0] * 16 + [2] * 5 + [0] * 3
          for m in range(12)]
    rate = _minimal(energyratestructure=[[{"rate": 0.3}], [{"rate": 0.6}], [{"rate": 0.5}]],
                    energyweekdayschedule=wd, energyweekendschedule=copy.deepcopy(wd))
    t, _, _ = _convert(rate)
    p0 = [p for p in t.spec.periods if p.name == "p0"]
    assert len(p0) == 1 and p0[0].seasons is None and p0[0].hours == [(0, 16), (21, 24)]
    assert_equivalent(rate, t)


def test_monthly_fuel_adjustment_is_added_and_splits_seasons():
    fuel = [0.01] * 6 + [0.02] * 6
    rate = _minimal(fueladjustmentsmonthly=fuel)
    t, _, warnings = _convert(rate)
    assert t.spec.calendar.seasons == {"winter": [1, 2, 3, 4, 5, 6],
                                       "summer": [7, 8, 9, 10, 11, 12]}
    assert t.spec.import_rates == {"winter": {"p0": 0.21}, "summer": {"p0": 0.22}}
    assert_equivalent(rate, t)
    assert any("fueladjustmentsmonthly" in w for w in warnings)


# -- tiers -------------------------------------------------------------------------------


def test_tiered_flat_rate_becomes_up_to_kwh_tiers_with_unlimited_last_tier():
    rate = _rate("tiered_flat.json")
    t, _, _ = _convert(rate)
    (tiers,) = t.spec.import_rates["all_year"].values()
    assert [(x.up_to_kwh, x.up_to_kwh_per_day, x.rate) for x in tiers] == [
        (500.0, None, 0.1265), (1000.0, None, 0.146), (None, None, 0.1674)]
    assert_equivalent(rate, t)


def test_kwh_daily_tier_unit_becomes_up_to_kwh_per_day():
    rate = _rate("daily_tiers.json")
    t, _, _ = _convert(rate)
    summer = t.spec.import_rates["summer"]["p0"]
    assert [(x.up_to_kwh, x.up_to_kwh_per_day, x.rate) for x in summer] == [
        (None, 13.1, 0.40206), (None, None, 0.50323)]
    assert t.tier_per_day.any()
    assert_equivalent(rate, t)


def test_last_tier_max_is_dropped_with_a_warning():
    _, _, warnings = _convert(_rate("daily_tiers.json"))
    dropped = [w for w in warnings if "last tier's max" in w]
    assert len(dropped) == 2 and "52.4 kWh daily" in dropped[0]


@pytest.mark.parametrize("unit", ["kWh/kW", "kWh/kW daily", "kWh/day"])
def test_unsupported_tier_unit_is_refused_naming_the_field_and_the_fix(unit):
    rate = _rate("tiered_flat.json")
    for tier in rate["energyratestructure"][0]:
        tier["unit"] = unit
    with pytest.raises(TariffError) as e:
        urdb_to_toml(rate, source="rate.json")
    assert e.value.where == "rate.json: energyratestructure[0][0].unit"
    assert repr(unit) in e.value.what
    assert "'kWh'" in e.value.fix and "kWh daily" in e.value.fix


def test_single_tier_with_demand_based_unit_is_harmless_and_imported():
    rate = _minimal(energyratestructure=[[{"rate": 0.2, "unit": "kWh/kW"}]])
    t, _, _ = _convert(rate)
    assert t.spec.import_rates == {"all_year": {"p0": 0.2}}


# -- charges -----------------------------------------------------------------------------


def test_fixed_charge_per_day_and_minimum_per_month():
    t, _, _ = _convert(_rate("tiered_flat.json"))
    c = t.spec.charges
    assert (c.fixed_per_day, c.fixed_per_month) == (0.3287, 0.0)
    assert (c.minimum_per_month, c.minimum_per_day, c.annual_minimum) == (5.0, 0.0, 0.0)
    assert c.nbc_per_kwh == 0.0


@pytest.mark.parametrize(("units", "field", "value"), [
    ("$/month", "fixed_per_month", 12.5), ("$/day", "fixed_per_day", 12.5),
    ("$/year", "fixed_per_month", 12.5 / 12)])
def test_fixed_charge_units_map_to_charges(units, field, value):
    t, _, _ = _convert(_minimal(fixedchargefirstmeter=12.5, fixedchargeunits=units))
    assert getattr(t.spec.charges, field) == pytest.approx(value)


@pytest.mark.parametrize(("units", "field"), [
    ("$/month", "minimum_per_month"), ("$/day", "minimum_per_day"),
    ("$/year", "annual_minimum")])
def test_minimum_charge_units_map_to_charges(units, field):
    t, _, _ = _convert(_minimal(mincharge=0.39167, minchargeunits=units))
    assert getattr(t.spec.charges, field) == 0.39167


def test_nbc_is_zero_with_a_comment_to_set_it():
    _, text, _ = _convert(_minimal())
    assert ("nbc_per_kwh = 0.0  # CHECK: URDB has no NBC field: set it from your tariff sheet"
            in text)


# -- export (dgrules) --------------------------------------------------------------------


@pytest.mark.parametrize(("rules", "scheme", "netting"), [
    ("Net Metering", "nem", "billing_period"),
    ("Net Billing Instantaneous", "net_billing", "instantaneous"),
    ("Net Billing Hourly", "net_billing", "hourly"),
    ("Buy All Sell All", "buy_all_sell_all", "instantaneous"),
])
def test_dgrules_map_to_export_scheme_and_netting(rules, scheme, netting):
    t, _, _ = _convert(_minimal(dgrules=rules))
    assert t.spec.export.scheme == scheme
    assert t.netting == netting
    if scheme == "nem":
        assert t.spec.export.credit == "import"
        assert t.spec.export.flat_rate is None


@pytest.mark.parametrize("rules", ["Net Billing Hourly", "Buy All Sell All"])
def test_no_sell_field_gives_flat_rate_zero_with_a_loud_comment(rules):
    t, text, warnings = _convert(_minimal(dgrules=rules))
    assert t.spec.export.flat_rate == 0.0
    assert "URDB gives no export value: set it" in text
    assert any("no export value" in w for w in warnings)


def test_sell_on_every_tier_gives_sell_rates_per_season_and_period():
    rate = _rate("tou_two_seasons.json")
    rate["dgrules"] = "Buy All Sell All"
    for tiers, sell in zip(rate["energyratestructure"], (0.05, 0.06, 0.07, 0.08), strict=True):
        tiers[0]["sell"] = sell
    t, _, _ = _convert(rate)
    assert t.spec.export.sell_rates == {"winter": {"p2": 0.07, "p3": 0.08},
                                        "summer": {"p0": 0.05, "p1": 0.06}}
    assert_equivalent(rate, t)


def test_net_billing_fixture_with_sell_rates_matches_urdb():
    rate = _rate("tiered_flat.json")
    t, _, _ = _convert(rate)
    assert t.spec.export.sell_rates == {"all_year": {"p0": 0.0381}}
    assert_equivalent(rate, t)


def test_missing_dgrules_is_nem_with_a_warning():
    rate = _minimal()
    del rate["dgrules"]
    t, _, warnings = _convert(rate)
    assert t.spec.export.scheme == "nem"
    assert any("dgrules is missing" in w for w in warnings)


def test_sell_rates_under_net_metering_are_ignored_with_a_warning():
    t, _, warnings = _convert(_minimal(energyratestructure=[[{"rate": 0.2, "sell": 0.04}]]))
    assert t.spec.export.sell_rates is None
    said = [w for w in warnings if "URDB sell rates (0.04 $/kWh) were not imported" in w]
    assert said and "export.credit = 'import'" in said[0]  # what replaced them
    assert t.spec.export.credit == "import"


def test_fixedmonthlycharge_the_older_field_is_imported_and_said():
    """SCE GS-2 TOU-B carries only fixedmonthlycharge ($259.20): once dropped silently."""
    t, _, warnings = _convert(_minimal(fixedmonthlycharge=259.2))
    assert t.spec.charges.fixed_per_month == pytest.approx(259.2)
    assert any("fixedmonthlycharge" in w and "259.2 $/month" in w for w in warnings)
    # both fields, different: the new one wins and the old one is named
    t, _, warnings = _convert(_minimal(fixedmonthlycharge=10.0, fixedchargefirstmeter=12.5,
                                       fixedchargeunits="$/month"))
    assert t.spec.charges.fixed_per_month == pytest.approx(12.5)
    assert any("fixedmonthlycharge (10 $/month" in w and "was not imported" in w
               for w in warnings)


def test_an_end_date_before_the_start_date_is_flagged():
    _, text, warnings = _convert(_minimal(startdate=1704096000, enddate=1672560000))
    assert any("enddate (2023-01-01) is before its startdate (2024-01-01)" in w
               for w in warnings)
    assert 'effective = "2024-01-01"' in text


def test_schedules_written_as_floats_are_read_as_period_indices():
    rate = _minimal(energyratestructure=[[{"rate": 0.2}], [{"rate": 0.4}]])
    rate["energyweekdayschedule"] = [[0.0] * 16 + [1.0] * 5 + [0.0] * 3 for _ in range(12)]
    t, _, _ = _convert(rate)
    assert len(t.period_names) == 2
    as_ints = copy.deepcopy(rate)
    as_ints["energyweekdayschedule"] = [[int(p) for p in row]
                                        for row in rate["energyweekdayschedule"]]
    assert_equivalent(as_ints, t)  # every month, day type and hour at URDB's rate
    bad = _minimal()
    bad["energyweekdayschedule"][0][3] = 0.5
    err = _error(bad)
    assert "0.5" in err.what and "not a period index" in err.what


# -- settlement, metadata ----------------------------------------------------------------


def test_settlement_defaults_and_no_export_cap_with_comments():
    t, text, _ = _convert(_rate("tou_two_seasons.json"))
    st = t.spec.settlement
    assert (st.period_months, st.true_up_month, st.charges, st.leftover_credit,
            st.surplus_rate) == (12, 12, "monthly", "forfeit", 0.0)
    assert t.spec.export_cap is None
    assert "URDB has no settlement, NSC or export-cap fields" in text
    assert "# No [export_cap]" in text
    assert "URDB has no holiday information" in text


def test_nem_tiers_get_surplus_tiers_fill_and_periods_get_time_of_day_banking():
    """Two rules URDB cannot hold are written as NREL SAM applies them, with a CHECK comment
    and a warning each: a tiered NEM rate credits a month's net export in the tiers it fills
    (``export.surplus_tiers = "fill"``), and with several periods banked kWh follow the
    clock hour (``settlement.kwh_bank_pairing = "time_of_day"``). ``tariff show`` says both."""
    from trueup.report import tariff_summary

    tiered = _rate("tiered_flat.json")
    tiered["dgrules"] = "Net Metering"
    t, text, warnings = _convert(tiered)
    assert t.spec.export.surplus_tiers == "fill"
    assert 'surplus_tiers = "fill"  # CHECK' in text
    assert any("export.surplus_tiers = 'fill'" in w for w in warnings)
    assert "surplus credited in tiers: fill" in tariff_summary(t)
    t, text, warnings = _convert(_rate("tou_two_seasons.json"))
    assert t.spec.export.surplus_tiers == "first"  # no tiers: the key is not written
    assert "surplus_tiers" not in text
    assert t.spec.settlement.kwh_bank_pairing == "time_of_day"
    assert any("kwh_bank_pairing = 'time_of_day'" in w for w in warnings)
    kwh = Tariff.from_text(text.replace('surplus_rate = 0.0', 'carryover = "kwh"\n'
                                        'surplus_rate = 0.0'), source="kwh.toml")
    assert "kWh bank pairing time_of_day" in tariff_summary(kwh)
    # net billing (the fixture's own dgrules) values exports at sell rates: no surplus tiers
    t, text, _ = _convert(_rate("tiered_flat.json"))
    assert t.spec.export.scheme == "net_billing" and "surplus_tiers" not in text
    # one period: nothing to pair
    t, text, _ = _convert(_minimal())
    assert "kwh_bank_pairing" not in text and t.spec.settlement.kwh_bank_pairing == "period"


def test_a_period_sams_banking_cannot_pair_is_named():
    """SAM pairs periods by the weekday schedule at hours 0, 5, 11 and 17; a weekend-only
    period (or one between those hours) cannot be paired, and the importer says so."""
    weekend = [[0] * 10 + [1] * 6 + [0] * 8 for _ in range(12)]
    rate = _minimal(energyratestructure=[[{"rate": 0.2}], [{"rate": 0.1}]],
                    energyweekendschedule=weekend)
    _, _, warnings = _convert(rate)
    (w,) = [w for w in warnings if "at none of the weekday hours" in w]
    assert w.startswith("period p1 is at none of the weekday hours 0, 5, 11, 17 in months "
                        "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]")


def test_free_text_and_applicability_limits_are_named():
    rate = _minimal(description="Service up to 10 kW.", energycomments="Adjustments = fuel",
                    peakkwcapacitymax=10, voltagecategory="Secondary")
    _, _, warnings = _convert(rate)
    assert any(w.startswith("description, energycomments: free text, not imported")
               for w in warnings)
    assert any("peakkwcapacitymax = 10, voltagecategory = 'Secondary'" in w for w in warnings)


def test_metadata_id_name_source_effective_and_timezone():
    t, _, _ = _convert(_rate("tou_two_seasons.json"), timezone="America/Denver")
    s = t.spec
    assert s.id == "sierra-foothill-electric-co-residential-time-of-use-tou-5-trueup-test-fixture"
    assert s.name.startswith("Sierra Foothill Electric Co: Residential Time-of-Use TOU-5")
    assert "https://apps.openei.org/IURDB/rate/view/6f3a1c2e9b8d4e7f0a1b2c3d" in s.source
    assert s.timezone == "America/Denver"
    assert s.effective == "2024-01-01"  # 2024-01-01 00:00 Pacific, read in Mountain time
    t, _, _ = _convert(_rate("tou_two_seasons.json"))
    assert t.spec.timezone == "America/Los_Angeles"


def test_quotes_and_backslashes_in_names_are_escaped():
    rate = _minimal(name='RS "Block" \\ 2024\n', utility="A&B Power")
    t, text, _ = _convert(rate)
    assert t.spec.name == 'A&B Power: RS "Block" \\ 2024'
    assert t.spec.id == "a-b-power-rs-block-2024"
    assert tomllib.loads(text)["name"] == t.spec.name


# -- warnings ------------------------------------------------------------------------------


def test_warnings_name_what_urdb_lacks():
    _, _, warnings = _convert(_rate("tou_two_seasons.json"))
    text = "\n".join(warnings)
    for needle in ("NBC", "settlement", "export-cap", "time zone", "holiday"):
        assert needle in text, needle
    assert not any("demand" in w for w in warnings)


def test_demand_charges_are_imported_with_their_own_periods():
    """Flat demand by month (rate + adj, tiers as cumulative kW) and TOU demand on URDB's
    demand schedule (weekdays 16-21 in June-September), a 30-minute window; what cannot be
    expressed is named (a ratchet that varies by month, free-form demandattrs)."""
    weekday = [[0] * 24 for _ in range(12)]
    for m in range(5, 9):
        weekday[m][16:21] = [1] * 5
    rate = _minimal(
        flatdemandstructure=[[{"rate": 10.0, "adj": 0.5, "max": 50}, {"rate": 12.0}],
                             [{"rate": 14.0}]],
        flatdemandmonths=[0] * 5 + [1] * 4 + [0] * 3,
        demandratestructure=[[{"rate": 0}], [{"rate": 4.1}]],
        demandweekdayschedule=weekday, demandweekendschedule=[[0] * 24 for _ in range(12)],
        demandwindow=30, demandunits="kW", demandratchetpercentage=[0] * 6 + [80] * 6,
        demandattrs=[{"Power factor": "x"}])
    t, _, warnings = _convert(rate)
    d = t.spec.demand
    assert d.window_minutes == 30
    assert t.demand_flat_by_month[0] == [(50.0, 10.5), (float("inf"), 12.0)]
    assert t.demand_flat_by_month[6] == [(float("inf"), 14.0)]
    assert t.demand_period_names == ["d0", "d1"]
    july, jan = 7, 1
    assert t.demand_period_table[july - 1, 0, 17] == 1  # a weekday
    assert t.demand_period_table[july - 1, 1, 17] == 0  # a weekend day
    assert t.demand_period_table[jan - 1, 0, 17] == 0
    assert all(t.demand_tiers[(s, "d1")] == [(float("inf"), 4.1)] for s in t.season_names)
    assert any("demandratchetpercentage" in w and "varies by month" in w for w in warnings)
    assert any("demandattrs is not imported" in w for w in warnings)
    assert not any("demand charges" in w and "not imported" in w for w in warnings)


def test_demand_in_kva_is_refused_naming_the_key():
    err = _error(_minimal(flatdemandstructure=[[{"rate": 5.0}]], flatdemandmonths=[0] * 12,
                          flatdemandunit="kVA"))
    assert "flatdemandunit is 'kVA'" in err.what


def test_several_items_warn_which_one_was_imported():
    data = _load("tou_two_seasons.json")
    _, warnings = urdb_to_toml(data, item=1)
    (w,) = [w for w in warnings if "holds 2 rates" in w]
    assert "imported item 1" in w and "5e2b0d1f8a7c3e6d9b0a1f2e" in w
    t = Tariff.from_text(urdb_to_toml(data, item=1)[0])
    assert t.spec.import_rates["summer"] == {"p0": 0.35, "p1": 0.49}
    assert any("end date (2023-12-31)" in w for w in warnings)


def test_single_item_response_and_bare_rate_object_give_the_same_tariff():
    wrapped = _load("daily_tiers.json")
    assert urdb_to_toml(wrapped) == urdb_to_toml(wrapped["items"][0])


def test_periods_absent_from_the_schedules_are_warned_and_left_out():
    rate = _minimal(energyratestructure=[[{"rate": 0.2}], [{"rate": 0.9}]])
    t, _, warnings = _convert(rate)
    assert t.period_names == ["p0"]
    assert any("periods [1] appear in no schedule hour" in w for w in warnings)


# -- errors --------------------------------------------------------------------------------


def _error(rate: Any, **kw: Any) -> TariffError:
    with pytest.raises(TariffError) as e:
        urdb_to_toml(rate, source="rate.json", **kw)
    return e.value


def test_schedule_with_eleven_rows_is_an_error():
    rate = _minimal()
    rate["energyweekdayschedule"].pop()
    e = _error(rate)
    assert e.where == "rate.json: energyweekdayschedule"
    assert "12×24" in e.what and "11 rows" in e.what


def test_schedule_row_with_23_hours_is_an_error():
    rate = _minimal()
    rate["energyweekendschedule"][6].pop()
    e = _error(rate)
    assert e.where == "rate.json: energyweekendschedule[6]"
    assert "jul" in e.what and "23 hours" in e.what


def test_period_index_without_rate_structure_is_an_error():
    data = {"items": [_minimal()]}
    data["items"][0]["energyweekdayschedule"][6][17] = 3
    e = _error(data)
    assert e.where == "rate.json: items[0].energyweekdayschedule[6][17]"
    assert "period 3" in e.what and "only 1 period" in e.what


def test_missing_energyratestructure_is_an_error():
    rate = _minimal()
    del rate["energyratestructure"]
    e = _error(rate)
    assert e.where == "rate.json: energyratestructure"
    assert "no energyratestructure" in e.what and e.fix


def test_missing_schedule_is_an_error():
    rate = _minimal()
    del rate["energyweekendschedule"]
    assert _error(rate).where == "rate.json: energyweekendschedule"


def test_item_out_of_range_is_an_error():
    e = _error(_load("tou_two_seasons.json"), item=2)
    assert e.where == "rate.json: items" and "0 and 1" in e.fix


def test_unknown_dgrules_is_an_error():
    e = _error(_minimal(dgrules="Net Billing Monthly"))
    assert e.where == "rate.json: dgrules" and "Buy All Sell All" in e.fix


def test_tier_without_max_before_the_last_is_an_error():
    rate = _minimal(energyratestructure=[[{"rate": 0.1}, {"rate": 0.2}]])
    assert _error(rate).where == "rate.json: energyratestructure[0][0].max"


def test_decreasing_tier_maxima_are_an_error():
    rate = _minimal(energyratestructure=[[{"max": 500, "rate": 0.1}, {"max": 400, "rate": 0.2},
                                          {"rate": 0.3}]])
    e = _error(rate)
    assert e.where == "rate.json: energyratestructure[0][1].max" and "increase" in e.what


def test_non_numeric_rate_is_an_error():
    rate = _minimal(energyratestructure=[[{"rate": "0.2"}]])
    assert _error(rate).where == "rate.json: energyratestructure[0][0].rate"


def test_unknown_charge_units_and_negative_fixed_charge_are_errors():
    assert _error(_minimal(fixedchargefirstmeter=5, fixedchargeunits="$/week")).where == \
        "rate.json: fixedchargeunits"
    assert _error(_minimal(mincharge=5, minchargeunits="$/week")).where == \
        "rate.json: minchargeunits"
    assert _error(_minimal(fixedchargefirstmeter=-5, fixedchargeunits="$/month")).where == \
        "rate.json: fixedchargefirstmeter"


def test_unknown_timezone_is_an_error():
    assert "timezone" in _error(_minimal(), timezone="Pacific/Nowhere").where


# -- file reading --------------------------------------------------------------------------


def test_import_urdb_file_reads_a_response_file(tmp_path):
    text, warnings = import_urdb_file(DATA / "tou_two_seasons.json")
    assert Tariff.from_text(text).spec.export.scheme == "nem"
    assert warnings
    bad = tmp_path / "bad.json"
    bad.write_text('{"items": [\n  {"name": }\n]}', encoding="utf-8")
    with pytest.raises(TariffError) as e:
        import_urdb_file(bad)
    assert e.value.where == f"{bad}:2" and "not valid JSON" in e.value.what


def test_tiered_urdb_rates_fill_tiers_with_the_months_total():
    """URDB (and SAM) count tier limits against the month's total kWh, not per period."""
    from pathlib import Path

    from optimizer.tariff import Tariff
    from optimizer.urdb import import_urdb_file

    text, _ = import_urdb_file(Path(__file__).parent / "data" / "urdb" / "tiered_flat.json")
    assert 'tier_basis = "month"' in text
    assert Tariff.from_text(text).spec.tier_basis == "month"
