"""A new owner's Sacramento home, where the true-up logic once backfired: 2 Powerwalls,
10 kW of PV, PG&E EV2-A NEM2 with an April true-up, no history at first.

Before: `trueup plan` on 20 March with no history guessed the eleven unseen months would end
in credit, valued every credit at the NSC rate and left the battery at its floor for 48 h
while 10 kW of PV exported at midday; the March backtest trued the period up at the end of
March and `trueup` lost to Self-Powered."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trueup.cli import main
from trueup.config import load_config
from trueup.example import Home, example_year, write_csv
from trueup.planning import make_plan, parse_at

SACRAMENTO = """tariff = "pge-ev2a-nem2-2024"
[site]
latitude = 38.58
longitude = -121.49
timezone = "America/Los_Angeles"
[battery]
units = 2
usable_kwh = 27.0
max_charge_kw = 10.0
max_discharge_kw = 10.0
backup_floor_percent = 25
[[pv]]
kw_dc = 10.0
tilt = 20
azimuth = 180
[optimizer]
true_up_month = 4
"""
HOME = Home(pv_kw_dc=10.0, household_kwh=7000.0, evs=1, cooling_kw_per_c=0.6)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sacramento") / "trueup.toml"
    path.write_text(SACRAMENTO, encoding="utf-8")
    return path


def test_with_no_history_the_plan_keeps_the_battery_working(config_file):
    """20 March, no history, 324 days of the period unseen: whether it ends owing or in
    credit is a generic model's guess, trusted only for the plan's own 48 h, so a credit is
    worth about its face value; the battery stores midday PV and serves the evening peak —
    it never sits at its floor for the two days, and what it holds beyond the home's peak
    it exports there at the peak credit — and the plan says how much is estimated."""
    cfg = load_config(config_file)
    r = make_plan(cfg, at_utc=parse_at("2025-03-20T08:00-07:00"), soc_percent=25)
    p, x = r.plan, r.inputs
    assert p.ok
    assert p.marginal_credit_value > 0.04  # never the NSC alone on a guess
    floor = x.battery.floor_kwh
    assert p.soc_kwh.max() > floor + 10.0  # it stores PV
    hour = (x.prices.start_utc - x.prices.start_utc[0]) // 3600 % 24 + 8  # local hour
    peak = (hour % 24 >= 16) & (hour % 24 < 21)
    deficit = np.maximum(x.load_kwh - x.pv_kwh, 0.0)
    # and serves the peak: the home imports nothing from 16:00 to 21:00
    assert p.discharge_kwh[peak].sum() >= deficit[peak].sum() - 0.01
    assert p.import_kwh[peak].sum() == pytest.approx(0.0, abs=0.01)
    assert p.marginal_credit_value > 0.95 * float(np.max(x.prices.export_credit))
    notes = " ".join(r.notes)
    assert "estimated in 9 scenarios" in notes and "no history for the 323 days" in notes
    out = r.to_json()["true_up"]
    assert out["p10"] < out["projected_due"] < out["p90"]
    assert out["measured_fraction"] == 0.0


def test_the_march_backtest_is_scored_on_the_whole_period_and_trueup_never_loses(
        config_file, tmp_path, capsys):
    """The March 2025 replay of hourly data. Without the year before it cannot be scored on
    the May 2024 – April 2025 period it belongs to, and says so (it never trues up at the end
    of March). With --prior it is: trueup bills no more than Self-Powered, no more than
    tou_lp + 1 % of the no-battery bill, and the bound no more than any strategy."""
    usage, prior = tmp_path / "2025.csv", tmp_path / "2024.csv"
    write_csv(example_year(2025, interval_min=60, home=HOME), usage)
    write_csv(example_year(2024, interval_min=60, home=HOME), prior)
    base = ["backtest", "--config", str(config_file), "--usage", str(usage), "--start",
            "2025-03-01", "--days", "31", "--strategy", "tou_lp", "--strategy", "trueup",
            "--strategy", "perfect_foresight", "--json"]
    march_only = tmp_path / "march.csv"
    from optimizer.intervals import IntervalData

    y = example_year(2025, interval_min=60, home=HOME)
    in_march = (y.start_utc >= parse_at("2025-03-01T00:00-08:00")) & (
        y.start_utc < parse_at("2025-04-01T00:00-07:00"))
    write_csv(IntervalData(**{k: getattr(y, k)[in_march] for k in
                              ("start_utc", "import_kwh", "export_kwh", "load_kwh", "pv_kwh",
                               "battery_kwh")}, interval_s=3600), march_only)
    assert main(["backtest", "--config", str(config_file), "--usage", str(march_only),
                 "--strategy", "trueup"]) == 2
    err = capsys.readouterr().err
    assert "2024-05-01 – 2025-04-30" in err and "--prior" in err

    assert main([*base, "--prior", str(prior)]) == 0
    out = json.loads(capsys.readouterr().out)
    bills = {s["name"]: s["annual_total"] for s in out["strategies"]}
    no_battery = out["no_battery"]["annual_total"]
    assert [t["month"] for s in out["strategies"] for t in s["true_ups"]][:1] == ["2025-04"]
    assert bills["trueup"] <= bills["self_powered"] + 0.005, bills
    assert bills["trueup"] <= bills["tou_lp"] + 0.01 * no_battery, bills
    for name, b in bills.items():
        assert bills["perfect_foresight"] <= b + 0.005, (name, bills)
    assert np.isfinite(list(bills.values())).all()
