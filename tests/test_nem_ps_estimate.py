"""The NEM-PS "Estimated PV Generation": monthly kWh of the site's arrays from pvlib's shipped
TMY3 weather (Greensboro NC, 723170TYA.CSV), offline; checked against pvlib's own ModelChain
on the same file, and printed by ``trueup tariff estimate-cap``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecasts import pvmodel
from forecasts.nem_ps import MONTHS, estimate_monthly_kwh, pvlib_tmy3_path, read_tmy3
from optimizer.errors import InputError
from optimizer.site import PVArray
from trueup.cli import main

SOUTH_7KW = PVArray(kw_dc=7.0, tilt=20, azimuth=180)


def test_seven_kw_south_at_20_degrees_in_greensboro_is_plausible():
    """DOMAIN.md §7: ~9,100 kWh/yr (PVWatts, 7 kW south 20°, Greensboro). Ours: pvlib's
    PVWatts chain on pvlib's TMY3 file (NSRDB 1991-2005 typical months), open-rack cell
    temperature, 14 % losses, 96 % inverter at DC/AC 1.2."""
    est = estimate_monthly_kwh([SOUTH_7KW])
    print(f"\nNEM-PS estimate, 7 kW DC south 20° — weather {est.station} "
          f"({est.latitude:.2f}, {est.longitude:.2f}), file {est.weather_file}")
    for m, v in zip(MONTHS, est.monthly_kwh, strict=True):
        print(f"  {m}  {v:7.1f} kWh")
    print(f"  year {est.annual_kwh:,.0f} kWh ({est.annual_kwh / 7.0:,.0f} kWh/kWdc)")
    assert 8_500 <= est.annual_kwh <= 10_000
    assert len(est.monthly_kwh) == 12 and min(est.monthly_kwh) > 400
    summer = np.mean(est.monthly_kwh[4:8])
    winter = np.mean([est.monthly_kwh[i] for i in (0, 10, 11)])
    assert summer > 1.4 * winter
    assert est.station.startswith("GREENSBORO") and est.latitude == pytest.approx(36.1)


@pytest.mark.filterwarnings("ignore:.*dayofyear")  # pvlib 0.16 under pandas 3
def test_the_estimate_equals_pvlibs_modelchain_pvwatts_on_the_same_weather():
    """The same array and the same TMY3 hours two ways: estimate_monthly_kwh, and pvlib's
    ModelChain.with_pvwatts (SPA sun position, PVSystem, PVWatts losses)."""
    import pvlib
    from pvlib.location import Location
    from pvlib.modelchain import ModelChain
    from pvlib.pvsystem import PVSystem, pvwatts_losses

    data, meta = pvlib.iotools.read_tmy3(str(pvlib_tmy3_path()), coerce_year=2001,
                                         map_variables=True)
    weather = data[["ghi", "dni", "dhi", "temp_air", "wind_speed"]].copy()
    weather.index = weather.index - pd.Timedelta(minutes=30)  # hour-ending → mid-hour
    system = PVSystem(surface_tilt=20, surface_azimuth=180,
                      module_parameters={"pdc0": 7000, "gamma_pdc": pvmodel.GAMMA_PDC},
                      inverter_parameters={"pdc0": 7000 / 1.2 / 0.96},
                      temperature_model_parameters=pvmodel.TEMP_PARAMS, albedo=0.2)
    mc = ModelChain.with_pvwatts(system, Location(meta["latitude"], meta["longitude"],
                                                  altitude=meta["altitude"]))
    mc.run_model(weather)
    ac = mc.results.ac.clip(lower=0) / 1000.0
    theirs = ac.groupby(ac.index.month).sum().to_numpy()
    array = PVArray(kw_dc=7.0, tilt=20, azimuth=180, losses_percent=float(pvwatts_losses()))
    ours = np.array(estimate_monthly_kwh([array]).monthly_kwh)
    print(f"\nannual: ours {ours.sum():,.1f} kWh, pvlib ModelChain {theirs.sum():,.1f} kWh")
    assert ours.sum() == pytest.approx(theirs.sum(), rel=0.01)
    np.testing.assert_allclose(ours, theirs, rtol=0.01)


def test_two_arrays_are_the_sum_of_each_and_orientation_matters():
    west = PVArray(kw_dc=3.0, tilt=25, azimuth=270)
    both = estimate_monthly_kwh([SOUTH_7KW, west])
    alone = [estimate_monthly_kwh([a]).monthly_kwh for a in (SOUTH_7KW, west)]
    np.testing.assert_allclose(both.monthly_kwh, np.add(*alone))
    assert both.per_array_kwh[1] == pytest.approx(alone[1])
    assert sum(alone[1]) / 3.0 < sum(alone[0]) / 7.0  # west yields less per kW than south


def test_weather_file_and_array_errors_say_what_and_how_to_fix(tmp_path):
    with pytest.raises(InputError, match="weather file not found"):
        estimate_monthly_kwh([SOUTH_7KW], tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("not,a,tmy3\nfile\n")
    with pytest.raises(InputError, match="not a TMY3 weather file") as e:
        estimate_monthly_kwh([SOUTH_7KW], bad)
    assert "fix:" in str(e.value)
    with pytest.raises(InputError, match="no PV arrays"):
        estimate_monthly_kwh([])
    zero = PVArray.model_construct(kw_dc=0.0, tilt=20, azimuth=180, losses_percent=14,
                                   inverter_kw_ac=None)
    with pytest.raises(InputError, match=r"pv\[0\]\.kw_dc"):
        estimate_monthly_kwh([zero])


def test_the_weather_year_is_read_at_mid_hour_in_local_standard_time():
    w = read_tmy3()
    assert len(w.mid_utc) == 8760 and w.missing_hours == 0
    # the first TMY3 row is 01:00 EST on 1 January: the hour 00:00-01:00, middle 05:30Z
    assert pd.Timestamp(int(w.mid_utc[0]), unit="s", tz="UTC") == \
        pd.Timestamp("2001-01-01 05:30", tz="UTC")
    assert (np.bincount(w.month)[1:] == np.array(
        [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]) * 24).all()


def test_cli_estimate_cap_prints_twelve_months_and_the_weather_used(tmp_path, capsys):
    cfg = tmp_path / "trueup.toml"
    cfg.write_text('[site]\nlatitude = 38.58\nlongitude = -121.49\n'
                   'timezone = "America/Los_Angeles"\n'
                   '[[pv]]\nkw_dc = 7.0\ntilt = 20\nazimuth = 180\n', encoding="utf-8")
    assert main(["tariff", "estimate-cap", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + out)
    for m in MONTHS:
        assert f"\n{m} " in out
    assert "723170TYA.CSV" in out and "GREENSBORO" in out
    assert "your site is at 38.58°, -121.49°" in out
    assert "monthly_kwh = [" in out
    assert main(["tariff", "estimate-cap", "--config", str(cfg), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["monthly_kwh"]) == 12 and data["site"]["latitude"] == 38.58
    assert data["annual_kwh"] == pytest.approx(estimate_monthly_kwh([SOUTH_7KW]).annual_kwh,
                                               abs=0.1)
    assert main(["tariff", "estimate-cap", "--weather", str(tmp_path / "x.csv")]) == 2
    assert "weather file not found" in capsys.readouterr().err
