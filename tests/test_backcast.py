"""What-if from utility data: PV estimated from a meter's import/export, load rebuilt.

The example home's year (its true load and PV) is metered as a home without a battery would
be (import = max(load − PV, 0), export = max(PV − load, 0) per 15 minutes) and written as a
PG&E Green Button download (two decimals, as PG&E writes them). Everything after that goes
through the real reader, the real pvlib model and the real backtest.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from adapters.usage import read_usage
from forecasts.backcast import backcast_pv
from trueup.cli import main
from trueup.config import load_config
from trueup.example import example_year
from trueup.whatif import complete_usage

TZ = "America/Los_Angeles"


def write_green_button(path, starts, imp, exp) -> None:
    """A PG&E "Download my data" electric CSV: preamble, header, local wall-clock rows."""
    z = ZoneInfo(TZ)
    rows = ["\ufeffName,EXAMPLE HOME", 'Address,"1 MAIN ST, SAN FRANCISCO CA 94110"',
            "Account Number,1234567890", "Service,Service 1", "",
            "TYPE,DATE,START TIME,END TIME,IMPORT (kWh),EXPORT (kWh),COST,NOTES"]
    for t, i, e in zip(starts, imp, exp, strict=True):
        a, b = datetime.fromtimestamp(int(t), z), datetime.fromtimestamp(int(t) + 840, z)
        rows.append(f"Electric usage,{a:%Y-%m-%d},{a:%H:%M},{b:%H:%M},{i:.2f},{e:.2f},,")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def year():
    d = example_year(2025)
    net = d.load_kwh - d.pv_kwh
    return d, np.maximum(net, 0.0), np.maximum(-net, 0.0)


@pytest.fixture(scope="module")
def green_button(tmp_path_factory, year):
    d, imp, exp = year
    path = tmp_path_factory.mktemp("gb") / "pge-download.csv"
    write_green_button(path, d.start_utc, imp, exp)
    return path


def test_with_the_true_pv_the_rebuilt_load_is_the_true_load(green_button, year):
    d, _, _ = year
    metered = read_usage(green_button, tz=TZ)
    assert metered.load_kwh is None and metered.pv_kwh is None
    assert np.array_equal(metered.start_utc, d.start_utc)
    done = complete_usage(replace(metered, pv_kwh=d.pv_kwh), load_config(None))
    assert done.estimated == ("load_kwh",)
    # load = import − export + PV; import and export are each rounded to 0.01 kWh in the
    # file, and one of them is 0 in every interval: at most 0.005 kWh off per interval
    assert np.max(np.abs(done.data.load_kwh - d.load_kwh)) <= 0.005 + 1e-9
    assert abs(done.data.load_kwh.sum() - d.load_kwh.sum()) < 0.001 * d.load_kwh.sum()


def test_the_estimated_pv_is_close_to_the_true_pv_over_the_year(year):
    d, imp, exp = year
    cfg = load_config(None)
    b = backcast_pv(d.start_utc, d.interval_s, TZ, cfg.site.latitude, cfg.site.longitude,
                    cfg.pv, imp, exp)
    # measured on the example home: 9,601 kWh estimated vs 9,889 kWh true (−2.9 %)
    assert abs(b.pv_kwh.sum() / d.pv_kwh.sum() - 1.0) < 0.05
    assert b.days_from_meter == 365
    # consistent with the meter: no interval exports more than its estimated PV
    assert np.all(b.pv_kwh >= exp - imp - 1e-12)
    assert np.all(b.pv_kwh[b.clear_kwh <= 0] == exp[b.clear_kwh <= 0])


def test_the_no_battery_bill_does_not_depend_on_the_pv_estimate(year):
    """load − PV = import − export whatever PV is: the no-battery flows are the meter's."""
    d, imp, exp = year
    metered = replace(d, import_kwh=imp, export_kwh=exp, load_kwh=None, pv_kwh=None,
                      battery_kwh=None)
    done = complete_usage(metered, load_config(None)).data
    net = done.load_kwh - done.pv_kwh
    assert np.allclose(np.maximum(net, 0), imp, atol=1e-9)
    assert np.allclose(np.maximum(-net, 0), exp, atol=1e-9)


def test_load_with_no_pv_column_gives_pv_exactly(year):
    d, imp, exp = year
    part = replace(d, import_kwh=imp, export_kwh=exp, pv_kwh=None, battery_kwh=None)
    done = complete_usage(part, load_config(None))
    assert done.estimated == ("pv_kwh",)
    assert np.allclose(done.data.pv_kwh, d.pv_kwh, atol=1e-9)
    assert "exact" in done.notes[0]


def test_a_battery_in_the_meter_data_is_suspected_and_said(year):
    d, imp, exp = year
    cfg = load_config(None)
    # the example's own meter columns include its Powerwall in Self-Powered
    with_battery = replace(d, load_kwh=None, pv_kwh=None, battery_kwh=None)
    notes = " ".join(complete_usage(with_battery, cfg).notes)
    assert "a battery seems to be serving this home" in notes
    # 57 % of its dark intervals import < 100 W; without the battery 4.7 %
    without = replace(with_battery, import_kwh=imp, export_kwh=exp)
    assert "battery" not in " ".join(complete_usage(without, cfg).notes)


def test_backtest_on_a_green_button_file_answers_the_what_if(green_button, capsys):
    code = main(["backtest", "--usage", str(green_button), "--start", "2025-07-01",
                 "--days", "3", "--strategy", "trueup"])
    out = capsys.readouterr().out
    assert code == 0
    assert "estimated from the meter: pv_kwh, load_kwh" in out
    assert "the battery as Tesla runs it (Self-Powered)" in out
    assert "the battery run by trueup" in out
    # no battery: the same home without one, which is what this meter saw
    nob = next(line for line in out.splitlines() if line.startswith("no battery ("))
    metered = next(line for line in out.splitlines() if line.startswith("as metered"))
    assert nob.split()[-1] == metered.split("$")[-1]


def test_backtest_json_names_the_estimated_columns(green_button, capsys):
    import json

    code = main(["backtest", "--usage", str(green_button), "--start", "2025-12-01",
                 "--days", "2", "--strategy", "self_powered", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["usage"]["estimated"] == ["pv_kwh", "load_kwh"]
    assert any("pvlib" in n for n in out["usage"]["notes"])


def test_a_green_button_year_and_a_trueup_toml_give_the_what_if_in_one_command(
        green_button, tmp_path, capsys):
    """The owner's config (its tariff, its arrays) is what the what-if uses: PV is estimated
    for its 9.6 kW array, and the 2026 tariff bills it."""
    cfg = tmp_path / "trueup.toml"
    text = (Path(__file__).resolve().parents[1] / "trueup" / "example-site.toml").read_text()
    text = text.replace('tariff = "pge-ev2a-nem2ps-2024"', 'tariff = "pge-ev2a-nem2-2026"')
    text = text.replace("kw_dc = 7.2", "kw_dc = 9.6")
    cfg.write_text(text, encoding="utf-8")
    code = main(["backtest", "--config", str(cfg), "--usage", str(green_button),
                 "--start", "2025-08-01", "--days", "2", "--strategy", "trueup"])
    out = capsys.readouterr().out
    assert code == 0
    assert "PG&E EV2-A, NEM2 (rates effective 2026-03-01" in out
    assert "(1 array(s), 9.6 kW DC)" in out
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert {"no battery (the same home, its PV, no battery)",
            "the battery as Tesla runs it (Self-Powered)",
            "the battery run by trueup"} <= set(rows)
