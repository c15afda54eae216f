"""make_plan end to end: config → forecasts → billing state → plan → settings, and the
fallback chain when no plan can be solved."""

from __future__ import annotations

from optimizer.behaviour import Mode
from trueup.config import load_config
from trueup.planning import make_plan, parse_at

AT = parse_at("2025-07-15T14:00-07:00")


def test_the_example_site_plans_offline_with_a_checked_schedule():
    r = make_plan(load_config(), at_utc=AT, soc_percent=50)
    assert r.plan.status == "optimal"
    assert r.schedule is not None and r.schedule.entries
    assert r.outlook is not None and r.outlook.cap_kwh == 730
    assert r.plan.true_up_due is not None  # NEM2: the projection is part of the model


def test_an_unsolvable_plan_falls_back_to_safe_default_settings(tmp_path):
    """A 0.5 kW service cannot carry the home's evening load with a 1 kWh battery: both
    solvers find no plan, there is no last good plan, so the settings are Self-Powered at
    the owner's floor, and the notes say why."""
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[battery]\nusable_kwh = 1.0\nbackup_floor_percent = 30\n"
                        "[optimizer]\nservice_limit_kw = 0.5\n")
    r = make_plan(load_config(cfg_file), at_utc=AT, soc_percent=50)
    assert not r.plan.ok
    (entry,) = r.schedule.entries
    assert entry.settings.mode == Mode.SELF_POWERED
    assert entry.settings.reserve_percent == 30
    assert any("safe default" in n for n in r.notes)
    assert any("trying cbc" in n for n in r.notes)


def test_an_unsolvable_plan_keeps_the_last_good_plan_when_there_is_one(tmp_path):
    good = make_plan(load_config(), at_utc=AT, soc_percent=50)
    cfg_file = tmp_path / "trueup.toml"
    cfg_file.write_text("[battery]\nusable_kwh = 1.0\n[optimizer]\nservice_limit_kw = 0.5\n")
    r = make_plan(load_config(cfg_file), at_utc=AT, soc_percent=50, last_good=good)
    assert r is good
    assert any("last good plan" in n for n in r.notes)


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
