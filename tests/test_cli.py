"""The command line, end to end through main(argv): real files, real output."""

from __future__ import annotations

import json

import pytest

from trueup.cli import main
from trueup.example import example_year, write_csv


@pytest.fixture(scope="module")
def example_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("usage") / "example.csv"
    write_csv(example_year(2025), path)
    return path


def test_bill_json_has_contract_keys_and_savings(example_csv, capsys):
    assert main(["bill", "--tariff", "pge-ev2a-nem2ps-2024", "--usage", str(example_csv),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tariff"] == "pge-ev2a-nem2ps-2024"
    assert [m["month"] for m in out["months"]] == [f"2025-{m:02d}" for m in range(1, 13)]
    assert out["true_up"]["month"] == "2025-12"
    # the JSON agrees with itself: months billed + true-up due = annual total
    total = sum(m["billed"] for m in out["months"]) + out["true_up"]["due"]
    assert out["annual_total"] == pytest.approx(total, abs=0.02)
    assert out["savings"]["savings"] == pytest.approx(
        out["savings"]["without_solar_battery"] - out["annual_total"], abs=0.01)
    assert out["savings"]["savings"] > 0


def test_bill_table_shows_months_true_up_and_savings(example_csv, capsys):
    assert main(["bill", "--tariff", "pge-ev2a-nem2ps-2024", "--usage", str(example_csv),
                 "--true-up-month", "6"]) == 0
    out = capsys.readouterr().out
    assert "2025-06" in out and "True-up 2025-06:" in out
    assert "True-up 2025-12 (projected" in out
    assert "Savings:" in out


def test_bill_with_an_unknown_tariff_exits_2_and_names_the_fix(example_csv, capsys):
    assert main(["bill", "--tariff", "nope", "--usage", str(example_csv)]) == 2
    err = capsys.readouterr().err
    assert "no tariff file or bundled id 'nope'" in err and "fix:" in err


def test_bill_with_a_bad_export_cap_option_exits_2(example_csv, capsys):
    assert main(["bill", "--tariff", "pge-ev2a-nem2ps-2024", "--usage", str(example_csv),
                 "--export-cap", "1,2,3"]) == 2
    assert "3 values given, 12 needed" in capsys.readouterr().err


def test_export_cap_option_overrides_the_tariff(example_csv, capsys):
    caps = ",".join(["10000"] * 12)
    assert main(["bill", "--tariff", "pge-ev2a-nem2ps-2024", "--usage", str(example_csv),
                 "--export-cap", caps, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all(m["export_cap_excess_kwh"] == 0 for m in out["months"])
    assert out["months"][0]["export_cap_kwh"] == 10000


def test_tariff_list_and_show(capsys):
    assert main(["tariff", "list"]) == 0
    listing = capsys.readouterr().out
    for tid in ("pge-ev2a-nem2ps-2024", "pge-ev2a-nbt-2024", "kwh-banking-2024",
                "buy-all-sell-all-2024", "nebraska-monthly-netting-2024",
                "pge-etouc-nem2-2024", "pge-ev2a-nem1-2024", "pge-ev2a-nem2-2024"):
        assert tid in listing
    assert main(["tariff", "show", "pge-ev2a-nem2ps-2024"]) == 0
    shown = capsys.readouterr().out
    assert "summer  peak" in shown and "0.65800" in shown and "de-credit order" in shown


def test_tariff_import_urdb_writes_a_tariff_that_bills(tmp_path, capsys, example_csv):
    from pathlib import Path

    src = Path(__file__).parent / "data" / "urdb" / "tou_two_seasons.json"
    out = tmp_path / "imported.toml"
    assert main(["tariff", "import-urdb", str(src), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "NBC" in err and f"wrote {out}" in err
    assert main(["bill", "--tariff", str(out), "--usage", str(example_csv)]) == 0


def test_demo_writes_the_example_csv_and_prints_the_bill(tmp_path, capsys):
    out = tmp_path / "ex.csv"
    assert main(["demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.exists() and out.read_text().startswith("timestamp,import_kwh,export_kwh")
    assert "True-up 2025-12" in text and "Savings vs no solar" in text


def test_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "trueup bill --tariff" in text


@pytest.mark.parametrize("tid", ["pge-ev2a-nem2ps-2024", "pge-ev2a-nem2-2024",
                                 "pge-ev2a-nem1-2024", "pge-etouc-nem2-2024",
                                 "pge-ev2a-nbt-2024", "nebraska-monthly-netting-2024",
                                 "kwh-banking-2024", "buy-all-sell-all-2024"])
def test_every_bundled_tariff_bills_to_json(tid, tmp_path, capsys):
    from optimizer.tariff import load_tariff

    path = tmp_path / "u.csv"
    write_csv(example_year(2025, tz=load_tariff(tid).tz), path)
    assert main(["bill", "--tariff", tid, "--usage", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["months"]) == 12 and isinstance(out["annual_total"], float)


@pytest.mark.parametrize("caps, message", [
    (",".join(["nan"] * 12), "finite kWh"),
    ("-100," + ",".join(["300"] * 11), "finite kWh"),
])
def test_bad_export_cap_values_are_refused(example_csv, capsys, caps, message):
    assert main(["bill", "--tariff", "pge-ev2a-nem2ps-2024", "--usage", str(example_csv),
                 f"--export-cap={caps}"]) == 2
    assert message in capsys.readouterr().err


def test_export_cap_on_a_tariff_without_a_cap_is_refused(example_csv, capsys):
    caps = ",".join(["300"] * 12)
    assert main(["bill", "--tariff", "pge-ev2a-nem2-2024", "--usage", str(example_csv),
                 "--export-cap", caps]) == 2
    assert "has no export cap to override" in capsys.readouterr().err


def test_plan_json_has_the_contract_keys_and_never_writes(capsys):
    assert main(["plan", "--at", "2025-07-15T14:00-07:00", "--soc", "80", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # pure JSON: no solver banner on stdout
    assert set(out) >= {"generated_at", "horizon_hours", "step_minutes", "solver",
                        "solve_seconds", "status", "objective", "intervals", "settings",
                        "export_cap", "true_up"}
    assert out["status"] == "optimal" and out["horizon_hours"] == 48
    assert len(out["intervals"]) == 192 and out["step_minutes"] == 15
    assert set(out["intervals"][0]) >= {"start", "pv_kwh", "load_kwh", "import_kwh",
                                        "export_kwh", "charge_kwh", "discharge_kwh",
                                        "soc_percent"}
    assert out["intervals"][0]["start"] == "2025-07-15T14:00:00-07:00"
    assert set(out["settings"][0]) >= {"start", "mode", "reserve_percent", "grid_charging",
                                       "export_rule", "reason"}
    assert set(out["export_cap"]) >= {"month", "cap_kwh", "used_kwh", "planned_kwh"}
    assert out["export_cap"]["month"] == "2025-07" and out["export_cap"]["cap_kwh"] == 730
    assert set(out["true_up"]) >= {"projected_balance", "marginal_credit_value"}
    for s in out["settings"]:
        assert s["reserve_percent"] >= 20


def test_plan_with_history_uses_the_month_to_date_cap(example_csv, capsys):
    """History to the end of 2025 (the example year): planning on 2025-12-31 at 14:00
    sees December's exports so far against its 290 kWh cap."""
    assert main(["plan", "--at", "2025-12-31T14:00-08:00", "--usage", str(example_csv),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["export_cap"]["month"] == "2025-12"
    assert out["export_cap"]["used_kwh"] > 0


def test_plan_table_reads_like_a_plan(capsys):
    assert main(["plan", "--at", "2025-07-15T14:00-07:00"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing is written to the gateway" in out
    assert "Export cap 2025-07" in out and "True-up 2025-12 projected" in out
    assert "P10" in out and "P90" in out and "estimated" in out
    assert "hour        SOC %" in out


def test_plan_rejects_a_time_without_offset(capsys):
    assert main(["plan", "--at", "2025-07-15T14:00"]) == 2
    assert "--at" in capsys.readouterr().err


def test_status_reads_the_simulated_example_site(capsys):
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "answered by: simulated" in out and "battery" in out and "grid up" in out


def test_status_reads_a_real_gateway_through_pypowerwall(tmp_path, capsys, monkeypatch):
    """`trueup status --json` against the fake gateway's local API over loopback TLS, read
    by the real pypowerwall client: SOC in app %, flows in W, which connection answered."""
    from tests.fake_gateway import FakeGateway

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    pw = tmp_path / "gw_password"
    pw.write_text("S3cret\n")  # the fake gateway's customer password
    pw.chmod(0o600)
    auth = tmp_path / "auth"
    auth.mkdir(mode=0o700)
    with FakeGateway() as fake:
        fake.state.set_soc_app(64.0)
        cfg = tmp_path / "trueup.toml"
        cfg.write_text(f'[gateway]\nkind = "powerwall"\nhost = "{fake.host}"\nmode = "none"\n'
                       f'authpath = "{auth}"\npassword_file = "{pw}"\n')
        assert main(["status", "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "local" and out["gateway"] == "powerwall"
    assert out["soc_percent"] == pytest.approx(64.0, abs=0.01)
    assert out["grid_status"] == "up" and out["solar_w"] is not None


def test_status_with_a_missing_password_file_names_the_fix(tmp_path, capsys):
    cfg = tmp_path / "trueup.toml"
    cfg.write_text('[gateway]\nkind = "powerwall"\nhost = "127.0.0.1:9"\nmode = "none"\n'
                   f'authpath = "{tmp_path}"\npassword_file = "{tmp_path}/nope"\n')
    code = main(["status", "--config", str(cfg)])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code != 0
    assert "nope" in text


def test_files_the_cli_writes_or_reads_fail_with_exit_2_and_no_traceback(tmp_path, capsys):
    from pathlib import Path

    urdb = Path(__file__).parent / "data" / "urdb" / "tou_two_seasons.json"
    out = tmp_path / "missing-folder" / "x.toml"
    assert main(["tariff", "import-urdb", str(urdb), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {out}: No such file or directory" in err
    assert "fix: create the folder" in err and "Traceback" not in err
    assert main(["plan", "--config", str(tmp_path)]) == 2
    assert f"error: {tmp_path}: is a directory, not a config file" in capsys.readouterr().err


@pytest.mark.parametrize("at", ["0001-01-01T00:00+00:00", "9999-12-31T23:00Z"])
def test_an_at_outside_the_dated_years_is_refused(at, capsys):
    assert main(["plan", "--at", at]) == 2
    assert "is outside 2000-2100" in capsys.readouterr().err


def test_a_backtest_window_past_the_data_is_refused_not_shortened(capsys):
    """The example year ends 2026-01-01: five days from 31 December would replay one."""
    assert main(["backtest", "--start", "2025-12-31", "--days", "5",
                 "--strategy", "self_powered"]) == 2
    err = capsys.readouterr().err
    assert "the data covers 2025-01-01 00:00 to 2026-01-01 00:00" in err
    assert "not all of the 5 day(s) from 2025-12-31" in err


def test_a_misspelled_setting_in_the_environment_is_refused(monkeypatch, capsys):
    """pydantic-settings ignores TRUEUP_SAFTEY__KILL_SWITCH: a kill switch the owner
    believes is on would not be. It is refused, with the spelling it meant."""
    monkeypatch.setenv("TRUEUP_SAFTEY__KILL_SWITCH", "true")
    assert main(["plan"]) == 2
    err = capsys.readouterr().err
    assert "TRUEUP_SAFTEY__KILL_SWITCH names no setting" in err
    assert "did you mean TRUEUP_SAFETY__KILL_SWITCH?" in err
    monkeypatch.delenv("TRUEUP_SAFTEY__KILL_SWITCH")
    monkeypatch.setenv("TRUEUP_SAFETY__KILL_SWTICH", "true")
    assert main(["plan"]) == 2
    assert "did you mean TRUEUP_SAFETY__KILL_SWITCH?" in capsys.readouterr().err


def test_a_tariff_warning_reaches_stderr(tmp_path, example_csv, capsys):
    from optimizer.tariff import bundled_path

    text = bundled_path("pge-ev2a-nem2-2024").read_text()
    f = tmp_path / "t.toml"
    f.write_text(text.replace("nbc_per_kwh = 0.03273", "nbc_per_kwh = 0.4"))
    assert main(["bill", "--tariff", str(f), "--usage", str(example_csv)]) == 0
    assert "warning: " in capsys.readouterr().err



def test_bill_with_the_config_uses_its_tariff_and_true_up_month(tmp_path, example_csv, capsys):
    """`trueup bill --config mine.toml` bills as the daemon would: the config's tariff and
    true-up month, the same JSON as naming them on the command line."""
    cfg = tmp_path / "trueup.toml"
    cfg.write_text('tariff = "pge-ev2a-nem2-2024"\n[optimizer]\ntrue_up_month = 4\n')
    assert main(["bill", "--config", str(cfg), "--usage", str(example_csv), "--json",
                 "--allow-gaps"]) == 0
    with_config = json.loads(capsys.readouterr().out)
    assert main(["bill", "--tariff", "pge-ev2a-nem2-2024", "--true-up-month", "4", "--usage",
                 str(example_csv), "--json", "--allow-gaps"]) == 0
    assert with_config == json.loads(capsys.readouterr().out)
    assert with_config["true_ups"][0]["month"].endswith("-04")
    assert main(["bill", "--usage", str(example_csv)]) == 2
    assert "give --tariff, or --config" in capsys.readouterr().err


def test_tariff_list_shows_pge_tariffs_with_effective_dates_and_sources(capsys):
    assert main(["tariff", "list"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("pge-")
            and "-2026 " in line]
    # E-TOU-C, E-TOU-D, E-ELEC and EV2-A under NEM1, NEM2, NEM2-PS and NBT
    assert len(rows) == 16
    for line in rows:
        assert "2026-03-01" in line and "AL 7846-E" in line and "Schedule" in line
        assert " *" not in line or "2026-03-01 *" in line
    # the 2024 illustrative files are older than a year at any date after 2025-03: marked
    old = [line for line in out.splitlines() if line.startswith("pge-ev2a-nem2ps-2024")]
    assert old and "2024-01-01 *" in old[0]
    assert "more than a year old" in out


def test_bill_warns_when_the_rates_are_not_in_force_for_the_billed_dates(tmp_path, capsys):
    """The example year 2025 on the 2026 rates (effective 2026-03-01) is a bill at rates not
    yet in force; on the 2024 rates (effective 2024-01-01) its last day is 730 days later:
    more than 366, warned; the year 2024 on them is within 366 days: no warning."""
    from trueup.example import example_year, write_csv

    usage, usage24 = tmp_path / "year.csv", tmp_path / "2024.csv"
    write_csv(example_year(2025), usage)
    write_csv(example_year(2024), usage24)
    assert main(["bill", "--tariff", "pge-ev2a-nem2-2026", "--usage", str(usage)]) == 0
    err = capsys.readouterr().err
    assert "take effect 2026-03-01, after 2025-01-01: the bill prices" in err
    assert main(["bill", "--tariff", "pge-ev2a-nem2-2024", "--usage", str(usage)]) == 0
    assert "rates are from 2024-01-01, 2.0 years before 2025-12-31" in capsys.readouterr().err
    assert main(["bill", "--tariff", "pge-ev2a-nem2-2024", "--usage", str(usage24)]) == 0
    assert "warning: the tariff" not in capsys.readouterr().err
