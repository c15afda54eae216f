"""make_plan end to end: config → forecasts → billing state → plan → settings, and the
fallback chain when no plan can be solved."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from optimizer.behaviour import Mode
from trueup.config import load_config
from trueup.planning import make_plan, parse_at, solve_with_fallback

AT = parse_at("2025-07-15T14:00-07:00")


def test_the_example_site_plans_offline_with_a_checked_schedule():
    r = make_plan(load_config(), at_utc=AT, soc_percent=50)
    assert r.plan.status == "optimal"
    assert r.schedule is not None and r.schedule.entries
    assert r.outlook is not None and r.outlook.cap_kwh == 730
    assert r.plan.true_up_due is not None  # NEM2: the projection is part of the model


def _broken_forecast(result):
    """The same plan inputs with a load forecast a broken provider might send."""
    import dataclasses

    import numpy as np

    load = result.inputs.load_kwh.copy()
    load[5] = -3.0
    load[9] = np.nan
    result.inputs = dataclasses.replace(result.inputs, load_kwh=load)
    return result


def test_a_broken_forecast_falls_back_to_safe_default_settings(tmp_path):
    """Negative and missing load values are a provider's failure: no plan is made on them;
    with no last good plan the settings are Self-Powered at the owner's floor, and the
    notes say why."""
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[battery]\nbackup_floor_percent = 30\n")
    cfg = load_config(cfg_file)
    r = solve_with_fallback(_broken_forecast(make_plan(cfg, at_utc=AT, soc_percent=50)), cfg)
    assert not r.plan.ok
    (entry,) = r.schedule.entries
    assert entry.settings.mode == Mode.SELF_POWERED
    assert entry.settings.reserve_percent == 30
    assert any("negative or missing values" in n for n in r.notes)
    assert any("safe default" in n for n in r.notes)
    assert r.to_json()["objective"] is None  # valid JSON: no NaN
    from trueup.report import plan_report

    assert "No plan could be solved" in plan_report(r, cfg)


def test_a_broken_forecast_keeps_the_last_good_plan_when_there_is_one():
    cfg = load_config()
    good = make_plan(cfg, at_utc=AT, soc_percent=50)
    r = solve_with_fallback(_broken_forecast(make_plan(cfg, at_utc=AT, soc_percent=50)), cfg,
                            last_good=good)
    assert r is good
    assert any("last good plan" in n for n in r.notes)


def test_a_load_above_the_service_limit_is_reported_not_fatal(tmp_path):
    """A 0.5 kW service cannot carry the home's evening load with a 1 kWh battery: the
    plan still solves and says how much load it could not plan for."""
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[battery]\nusable_kwh = 1.0\n[optimizer]\nservice_limit_kw = 0.5\n")
    r = make_plan(load_config(cfg_file), at_utc=AT, soc_percent=50)
    assert r.plan.ok and r.plan.shortfall_kwh > 10
    assert any("exceed the service limit" in n for n in r.plan.notes)


def test_environment_overrides_the_config_file(tmp_path, monkeypatch):
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[battery]\nbackup_floor_percent = 25\n")
    monkeypatch.setenv("TRUEUP_BATTERY__BACKUP_FLOOR_PERCENT", "40")
    assert load_config(cfg_file).battery.backup_floor_percent == 40
    monkeypatch.delenv("TRUEUP_BATTERY__BACKUP_FLOOR_PERCENT")
    assert load_config(cfg_file).battery.backup_floor_percent == 25


def test_a_bad_config_key_names_the_file_key_and_fix(tmp_path):
    import pytest

    from optimizer.errors import InputError

    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[battery]\nbackup_floor_pct = 25\n")
    with pytest.raises(InputError) as e:
        load_config(cfg_file)
    assert "battery.backup_floor_pct: unknown key" in str(e.value)
    assert str(cfg_file) in str(e.value)


def test_history_after_the_plan_start_is_ignored_and_the_month_so_far_is_metered(tmp_path):
    """A whole 2025 history with a plan on 15 July: only January to 15 July 14:00 counts;
    July's metered exports so far are what the cap has used."""
    from trueup.example import example_year

    year = example_year(2025)
    r = make_plan(load_config(), at_utc=AT, soc_percent=50, history=year)
    assert any("history after the plan's start ignored" in n for n in r.notes)
    july = (year.start_utc >= parse_at("2025-07-01T00:00-07:00")) & (year.start_utc < AT)
    assert r.outlook.used_kwh == pytest.approx(float(year.export_kwh[july].sum()))
    assert not any("exports for" in n for n in r.notes)  # the month so far is metered
    # 1 January 00:00 to 15 July 14:00 is metered: 195 days of 24 h, less the hour of the
    # spring-forward day, plus 14 h, of the year's 8,760 h
    assert r.true_up_projection().measured_fraction == pytest.approx(
        (195 * 24 - 1 + 14) / 8760, abs=1e-9)


def test_without_history_the_period_so_far_is_estimated_and_said():
    r = make_plan(load_config(), at_utc=AT, soc_percent=50)
    assert any("no history for the 196 days" in n for n in r.notes)
    assert any("exports for 14.6 days before the plan" in n for n in r.notes)


def test_a_horizon_across_the_true_up_gives_each_period_its_own_true_up():
    """Planning from 31 December 00:00 for 48 h: the first day closes the 2025 period, the
    second opens 2026's; the JSON reports the period in progress."""
    r = make_plan(load_config(), at_utc=parse_at("2025-12-31T00:00-08:00"), soc_percent=50)
    labels = [tu.label for tu in r.inputs.true_ups]
    assert labels == ["2025-12", "2026-12"]
    a, b = r.inputs.true_ups
    assert (a.first_step, a.end_step, b.first_step, b.end_step) == (0, 96, 96, 192)
    assert not a.holds_end and b.holds_end
    # nothing of 2026 is known yet: its scenarios spread wider than 2025's, of which the
    # plan's day is the last
    def spread(tu):
        return np.ptp([sc.cx for sc in tu.scenarios if not sc.hedge])

    assert spread(b) > spread(a)
    assert r.to_json()["true_up"]["month"] == "2025-12"


def test_with_last_years_data_a_credit_is_worth_its_expectation_over_the_scenarios():
    """July evening, battery empty, the weeks ahead known from last year of a home with a
    9 kW array (its own data: the projection is trusted fully): whether the period ends owing
    or in credit is uncertain, so a peak credit is worth neither its face value (0.625) nor
    the NSC (0.04) but the blend over the nine scenarios — and the export reasons quote the
    value the solver used. The only grid charge is back up to the 20 % floor."""
    from trueup.example import Home, example_year

    last_year = example_year(2024, home=Home(pv_kw_dc=9.0))
    r = make_plan(load_config(), at_utc=parse_at("2025-07-15T19:00-07:00"), soc_percent=0,
                  history=last_year)
    x, p = r.inputs, r.plan
    assert p.true_up_trust == pytest.approx(1.0)
    assert 0 < p.p_credit_counts < 1 and 0 < p.p_nsc_only < 1
    peak = float(np.max(x.prices.export_credit))
    assert p.marginal_credit_value == pytest.approx(
        peak * p.p_credit_counts + 0.04 * p.p_nsc_only, abs=1e-5)
    assert 0.04 < p.marginal_credit_value < peak
    exports = [e.reason for e in r.schedule.entries if e.intent == "export"]
    assert all(f"worth up to {p.marginal_credit_value:.3f} $/kWh" in e for e in exports)
    surplus = np.maximum(x.pv_kwh - x.load_kwh, 0.0)
    grid_charge = np.maximum(p.charge_kwh - surplus, 0.0)
    floor = x.battery.floor_kwh
    assert grid_charge.sum() <= floor / x.battery.charge_efficiency + 0.01


def test_with_no_history_the_plan_trusts_the_generic_projection_only_as_far_as_it_is_own():
    """The same evening with no history at all: the projection is a clear-sky model and a
    typical household, whose errors are biases (on the example home it says "in credit in
    56 %" of a year that owes $135). The plan trusts it only for its own share of the
    period — this plan's 48 h of 8,760 h, 0.55 % — and otherwise credits exports at face
    value, as a plan that ignores the true-up does; the reasons say so."""
    r = make_plan(load_config(), at_utc=parse_at("2025-07-15T19:00-07:00"), soc_percent=0)
    x, p = r.inputs, r.plan
    assert p.true_up_trust == pytest.approx(48 / 8760, abs=1e-4)
    hedge = [sc for sc in x.true_ups[0].scenarios if sc.hedge]
    assert len(hedge) == 1 and hedge[0].weight == pytest.approx(1 - p.true_up_trust)
    peak = float(np.max(x.prices.export_credit))
    assert p.p_credit_counts > 0.99
    assert p.marginal_credit_value > 0.99 * peak
    assert any("projection trusted 1%" in e.reason
               for e in r.schedule.entries)
    assert any("acts on the projection only 1% of the way" in n for n in r.notes)
    # the projection itself is reported as the projection (the hedge is not in it)
    assert 0 < r.true_up_projection().p_in_credit < 1


def test_a_tariff_whose_cap_is_the_pv_estimate_gets_it_from_the_arrays(tmp_path):
    """estimate = "pv" and no caps in the config: the plan models the arrays' monthly PV
    (PVWatts on pvlib's typical-year file) as July's cap and says so."""
    from optimizer.tariff import bundled_path

    text = bundled_path("pge-ev2a-nem2ps-2024").read_text().replace(
        "monthly_kwh = [310, 370, 520, 610, 700, 720, 730, 690, 590, 470, 340, 290]",
        'estimate = "pv"')
    (tmp_path / "t.toml").write_text(text)
    (tmp_path / "trueup.toml").write_text(f'tariff = "{tmp_path / "t.toml"}"\n')
    r = make_plan(load_config(tmp_path / "trueup.toml"), at_utc=AT, soc_percent=50)
    from forecasts.nem_ps import estimate_monthly_kwh

    july = estimate_monthly_kwh(load_config().pv).monthly_kwh[6]
    assert r.outlook.cap_kwh == pytest.approx(july)
    assert any("export cap estimated from the arrays" in n for n in r.notes)


def _writes_in_first_day(result, current) -> list[tuple[int, int]]:
    """(UTC start, field writes) of each change in the plan's first 24 h, from the
    settings in force before it (``current`` before the first)."""
    from optimizer.policy import writes_between

    entries = result.schedule.entries
    t0 = int(result.inputs.prices.start_utc[0])
    out = [(entries[0].start_utc, writes_between(current, entries[0].settings))]
    for before, e in itertools.pairwise(entries):
        if e.start_utc < t0 + 86400:
            out.append((e.start_utc, writes_between(before.settings, e.settings)))
    return out


def test_a_fleet_api_budget_fits_the_days_changes_and_says_what_it_costs():
    """A July afternoon with 48 h of 15-minute steps: unlimited, the plan changes settings
    with more field writes than Fleet API's 5 a day; fitted, its first day needs 5 or
    fewer, and the plan value lost is reported (≥ 0: dropping changes can only cost)."""
    from optimizer.behaviour import ExportRule, Settings

    now = Settings(Mode.SELF_POWERED, 20.0, False, ExportRule.PV_ONLY)
    at = parse_at("2025-07-15T10:00-07:00")
    free = load_config()
    free.safety.max_writes_per_day, free.safety.max_writes_per_hour = 500, 60
    wanted = sum(n for _, n in _writes_in_first_day(
        make_plan(free, at_utc=at, soc_percent=50, current_settings=now), now))
    assert wanted > 5
    fleet = load_config()
    fleet.gateway.kind, fleet.gateway.mode = "powerwall", "fleetapi"
    result = make_plan(fleet, at_utc=at, soc_percent=50, current_settings=now)
    fit = result.schedule.budget
    kept = sum(n for _, n in _writes_in_first_day(result, now))
    assert kept == fit.writes_kept <= 5 and fit.writes_wanted >= kept
    assert fit.changes_dropped >= 1 and fit.value_lost >= -1e-6
    assert any("write budget (5 field writes a day" in n for n in result.notes)
    assert result.to_json()["write_budget"]["writes_per_day"] == 5


def test_writes_sent_in_the_last_day_count_against_the_budget():
    """Five writes sent an hour ago use the whole day's Fleet API budget: until they are
    a day old (23 h from now) the plan sends nothing; the settings in force stay."""
    from optimizer.behaviour import ExportRule, Settings

    fleet = load_config()
    fleet.gateway.kind, fleet.gateway.mode = "powerwall", "fleetapi"
    now = Settings(Mode.SELF_POWERED, 20.0, False, ExportRule.PV_ONLY)
    result = make_plan(fleet, at_utc=parse_at("2025-07-15T10:00-07:00"), soc_percent=50,
                       writes_sent_ago_s=(3600.0,) * 5, current_settings=now)
    t0 = int(result.inputs.prices.start_utc[0])
    first = result.schedule.entries[0]
    assert first.settings == now
    assert all(n == 0 or t >= t0 + 23 * 3600 for t, n in _writes_in_first_day(result, now))
    assert result.schedule.budget.left_today == 0


def test_when_dropping_a_write_cannot_help_the_budget_delays_it():
    """Found by the year's replay on a 5-a-day budget: five commands sent in the last day,
    the plan wants Time-Based Control at 20 % now (one command: the reserve) and Self-Powered
    at the floor an hour later. Keeping 41 % an hour longer saves no command over the next
    24 h (41 % → Self-Powered needs one more), yet it is the only way to stay in the budget
    now: the fit waits instead of sending a sixth command."""
    from optimizer.behaviour import ExportRule, PriceSignal, Settings
    from optimizer.policy import WriteBudget, _Block, battery_spec, fit_to_budget

    fleet = load_config()
    fleet.gateway.kind, fleet.gateway.mode = "powerwall", "fleetapi"
    fleet.optimizer.step_minutes = 60
    x = make_plan(fleet, at_utc=parse_at("2025-02-19T16:00-08:00"), soc_percent=45).inputs
    n = len(x.pv_kwh)
    tbc = Settings(Mode.TIME_BASED, 41.0, False, ExportRule.BATTERY_OK)
    floor = Settings(Mode.SELF_POWERED, 20.0, False, ExportRule.PV_ONLY)
    blocks = [_Block(0, 1, Settings(Mode.TIME_BASED, 20.0, False, ExportRule.BATTERY_OK),
                     PriceSignal.HOLD, "export", ""),
              _Block(1, n, floor, PriceSignal.HOLD, "self", "")]
    budget = WriteBudget(per_hour=4, per_day=5, sent_ago_s=(25200.0,) * 3 + (14400.0, 7200.0))
    fitted, fit = fit_to_budget(blocks, x, battery_spec(x.battery), budget, tbc)
    assert fitted[0].settings == tbc  # nothing sent now
    assert fit.left_today == 0 and fit.changes_dropped >= 1


def test_a_tariff_path_in_the_config_is_relative_to_the_config_file(tmp_path, monkeypatch):
    """trueup.toml names `tariff = "rates/mine.toml"`: read beside the file, whatever the
    current directory; a tariff that is neither bundled nor a file is refused at load,
    naming the key."""
    from optimizer.errors import InputError
    from optimizer.tariff import bundled_path

    (tmp_path / "rates").mkdir()
    (tmp_path / "rates" / "mine.toml").write_text(
        bundled_path("pge-ev2a-nem2-2024").read_text())
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text('tariff = "rates/mine.toml"\n')
    monkeypatch.chdir("/")
    cfg = load_config(cfg_file)
    assert cfg.tariff == str(tmp_path / "rates" / "mine.toml")
    assert make_plan(cfg, at_utc=parse_at("2025-07-15T10:00-07:00"), soc_percent=50).plan.ok
    cfg_file.write_text('tariff = "rates/typo.toml"\n')
    with pytest.raises(InputError) as e:
        load_config(cfg_file)
    assert e.value.where == f"{cfg_file}: tariff" and "bundled tariff" in e.value.what


def test_a_plan_far_from_the_tariffs_effective_date_says_so():
    """The bundled EV2-A rates are effective 2024-01-01: a plan in 2010 or in 2026 is
    priced at rates that may not apply, and says so; one in 2024 does not."""
    cfg = load_config()
    notes = {year: make_plan(cfg, at_utc=parse_at(f"{year}-07-15T10:00-07:00"),
                             soc_percent=50).notes for year in (2010, 2024, 2026)}
    assert any("take effect 2024-01-01, after 2010-07-15" in n for n in notes[2010])
    assert not any("2024-01-01" in n for n in notes[2024])
    assert any("2.5 years before 2026-07-15" in n and "newer bundled tariff" in n
               and "docs/tariffs.md" in n for n in notes[2026])


def test_gateway_file_keys_are_read_from_the_config_files_folder(tmp_path, monkeypatch):
    """authpath, password_file and tls_pin_file, relative, are the config folder's (not the
    current directory's, which for a systemd unit is /)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    cfg_file = folder / "trueup.toml"
    cfg_file.write_text('[gateway]\nkind = "powerwall"\nmode = "v1r"\nauthpath = "auth"\n'
                        'password_file = "secrets/gw_password"\n'
                        'gw_pwd_file = "secrets/wifi"\n'
                        'tls_pin_file = "/var/lib/trueup/pin"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    g = load_config(cfg_file).gateway
    assert g.authpath == str(folder / "auth")
    assert g.password_file == str(folder / "secrets" / "gw_password")
    assert g.gw_pwd_file == str(folder / "secrets" / "wifi")
    assert g.tls_pin_file == "/var/lib/trueup/pin"


def test_a_decisive_generic_projection_is_trusted():
    """A home with 30 kW of PV on the example household, no history: even the generic
    model's widest scenarios end in credit, so the plan acts on the projection fully (its
    exports are worth the NSC, not the credit) and says why; the trust rule itself by
    hand: 30 % own data and 97.5 % in credit → (|2 × 0.975 − 1| − 0.8) / 0.2 = 0.75; at
    89 % (the Sacramento new owner's first March) not decisive: its own share."""
    from optimizer.projection import projection_trust

    assert projection_trust(0.3, 0.0, 0.0, 0.975) == pytest.approx(0.75)
    assert projection_trust(0.3, 0.0, 0.0, 0.89) == pytest.approx(0.3)
    assert projection_trust(0.3, 0.0, 0.0, 0.56) == pytest.approx(0.3)
    assert projection_trust(0.3, 0.0, 0.0, 0.0) == pytest.approx(1.0)
    cfg = load_config()
    cfg.pv = [cfg.pv[0].model_copy(update={"kw_dc": 30.0})]
    r = make_plan(cfg, at_utc=parse_at("2025-07-15T19:00-07:00"), soc_percent=50)
    assert r.true_up_projection().p_in_credit == pytest.approx(1.0)
    assert r.plan.true_up_trust == pytest.approx(1.0)
    assert any("its scenarios agree (in credit in 100% of them" in n for n in r.notes)
