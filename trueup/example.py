"""A synthetic example year for the example site, so trueup shows something with no data.

The example home: San Francisco Bay Area (37.77 N, 122.42 W), 7.2 kW DC of PV facing south at
22°, one 13.5 kWh Powerwall in Self-Powered mode with a 20 % reserve, about 10,000 kWh a year of
load with evening peaks, summer afternoon cooling and an EV charged after midnight.

This is *illustrative data*, not a forecast: PV is a clear-sky model (a simple solar-geometry
calculation, not pvlib) times a seeded day-by-day clearness; the battery follows the
simplest self-consumption rule. It is deterministic for a given year and seed.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from forecasts.load import ev_kw, household_kw
from optimizer.intervals import IntervalData

LATITUDE, LONGITUDE = 37.77, -122.42
TIMEZONE = "America/Los_Angeles"
PV_KW_DC, PV_TILT, PV_LOSSES = 7.2, 22.0, 0.20
BATTERY_KWH, BATTERY_KW, RESERVE, ONE_WAY_EFF = 13.5, 5.0, 0.20, 0.95


def _pv_kw(utc_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """PV AC power, kW, at UTC epoch seconds (mid-interval), south-facing array."""
    t = datetime.fromtimestamp(int(utc_s[0]), ZoneInfo("UTC"))
    doy = (utc_s - datetime(t.year, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp()) / 86400.0
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    solar_hours = (utc_s % 86400) / 3600.0 + LONGITUDE / 15.0
    hour_angle = np.radians(15.0 * (solar_hours - 12.0))
    lat = np.radians(LATITUDE)
    cos_z = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    tilt_lat = lat - np.radians(PV_TILT)
    cos_i = np.sin(decl) * np.sin(tilt_lat) + np.cos(decl) * np.cos(tilt_lat) * np.cos(hour_angle)
    up = cos_z > 0.02
    air_mass = np.where(up, 1.0 / np.maximum(cos_z, 0.02), 40.0)
    dni = 1353.0 * 0.7 ** (air_mass**0.678)
    sky = 0.1 * dni * (1 + np.cos(np.radians(PV_TILT))) / 2
    poa = np.where(up, dni * np.maximum(cos_i, 0.0) + sky, 0.0)
    # a seeded clearness per day: cloudy days more likely in winter
    day_ids, inv = np.unique(utc_s // 86400, return_inverse=True)
    month_of_day = np.clip((doy[np.unique(inv, return_index=True)[1]] // 30.44).astype(int),
                           0, 11)
    cloudy_odds = np.array([.55, .5, .45, .3, .2, .1, .05, .05, .08, .2, .4, .55])
    cloudy = rng.random(len(day_ids)) < cloudy_odds[month_of_day]
    dimmed = 0.15 + 0.65 * rng.random(len(day_ids))
    factor = np.where(cloudy, dimmed, 1.0)[inv]
    return PV_KW_DC * poa / 1000.0 * (1 - PV_LOSSES) * factor


def _load_kw(local_hour: np.ndarray, month: np.ndarray, weekday: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Home load, kW, by local hour (fractional), month and weekday (0 = Monday): the typical
    profile (forecasts/load.py) with seeded noise on the household part."""
    noise = rng.gamma(4.0, 0.25, size=len(local_hour))
    return household_kw(local_hour, month) * noise + ev_kw(local_hour, weekday)


def example_year(year: int = 2025, *, interval_min: int = 15, seed: int = 7,
                 tz: str = TIMEZONE) -> IntervalData:
    """Import/export/load/PV/battery kWh per interval for the example home and ``year``
    (local calendar year in ``tz``; the weather and clock stay Californian)."""
    zone = ZoneInfo(tz)
    t0 = int(datetime(year, 1, 1, tzinfo=zone).timestamp())
    t1 = int(datetime(year + 1, 1, 1, tzinfo=zone).timestamp())
    step = interval_min * 60
    starts = np.arange(t0, t1, step, dtype=np.int64)
    rng = np.random.default_rng(seed)
    from optimizer.localtime import local_fields

    f = local_fields(starts + step // 2, TIMEZONE)
    hours = step / 3600.0
    pv = _pv_kw(starts + step // 2, rng) * hours
    load = _load_kw(f.hour + f.minute / 60.0, f.month, f.weekday, rng) * hours
    imp, exp, batt = _self_powered(load, pv, hours)
    return IntervalData(start_utc=starts, interval_s=step, import_kwh=imp, export_kwh=exp,
                        load_kwh=load, pv_kwh=pv, battery_kwh=batt,
                        source=f"example year {year}")


def _self_powered(load: np.ndarray, pv: np.ndarray, hours: float):
    """Tesla Self-Powered, simplified: store surplus PV, cover load down to the reserve."""
    n = len(load)
    imp, exp, batt = np.zeros(n), np.zeros(n), np.zeros(n)
    soc = BATTERY_KWH * 0.5
    floor = BATTERY_KWH * RESERVE
    limit = BATTERY_KW * hours
    for i in range(n):
        net = load[i] - pv[i]
        if net < 0:
            charge = min(-net, limit, (BATTERY_KWH - soc) / ONE_WAY_EFF)
            soc += charge * ONE_WAY_EFF
            batt[i] = -charge
            exp[i] = -net - charge
        else:
            dis = min(net, limit, (soc - floor) * ONE_WAY_EFF)
            soc -= dis / ONE_WAY_EFF
            batt[i] = dis
            imp[i] = net - dis
    return imp, exp, batt


def write_csv(data: IntervalData, path, tz: str = TIMEZONE) -> None:
    """Write the interval-CSV contract with local ISO timestamps carrying their offsets."""
    zone = ZoneInfo(tz)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("timestamp,import_kwh,export_kwh,load_kwh,pv_kwh,battery_kwh\n")
        for i, t in enumerate(data.start_utc):
            ts = datetime.fromtimestamp(int(t), zone).isoformat()
            fh.write(f"{ts},{data.import_kwh[i]:.4f},{data.export_kwh[i]:.4f},"
                     f"{data.load_kwh[i]:.4f},{data.pv_kwh[i]:.4f},{data.battery_kwh[i]:.4f}\n")
