"""PV power from irradiance with pvlib: PVWatts v5 for the site's arrays, on numpy arrays.

One modelling chain for every solar figure trueup computes: the offline clear-sky forecast
(``forecasts/clearsky.py``), Open-Meteo's irradiance forecast and the NEM-PS "Estimated PV
Generation" from a typical-year weather file (``forecasts/nem_ps.py``). It is pvlib's
``ModelChain.with_pvwatts`` configuration, called function by function on numpy arrays (pandas
only once per place, for pvlib's Linke turbidity lookup) so that a year of hours takes ~10 ms
and a single step under one:

===================  ===================================================================
sun position         NREL SPA (``pvlib.spa``) declination and equation of time, once per day
                     and interpolated, then pvlib's analytical zenith/azimuth and SPA's
                     refraction for the apparent zenith
clear sky            ``pvlib.clearsky.ineichen`` with pvlib's Linke turbidity climatology
                     (interpolated by day) and its altitude map; Kasten-Young air mass
plane of array       ``pvlib.irradiance.get_total_irradiance``, Perez 1990, albedo 0.2
reflection           ``pvlib.iam.physical`` on the beam (ModelChain's order)
cell temperature     ``pvlib.temperature.sapm_cell``, open rack, glass/polymer
DC                   ``pvlib.pvsystem.pvwatts_dc``, γ = -0.37 %/°C (PVWatts standard module)
losses               ``PVArray.losses_percent`` (PVWatts' default 14 %)
AC                   ``pvlib.inverter.pvwatts``, 96 % nominal; AC limit
                     ``PVArray.inverter_kw_ac`` or ``kw_dc / 1.2`` (PVWatts' DC/AC ratio)
===================  ===================================================================

Units: times are UTC epoch seconds (instants: pass the middle of an averaging interval),
irradiance W/m², temperatures °C, wind m/s, power kW (AC unless named ``dc``), angles degrees
with azimuth 180 = south (the ``[[pv]]`` convention and pvlib's).

References: Dobos, *PVWatts Version 5 Manual*, NREL/TP-6A20-62641 (2014); Holmgren et al.,
pvlib python, JOSS 3(29) 884 (2018); Reda & Andreas, *Solar position algorithm for solar
radiation applications*, NREL/TP-560-34302 (2003). The solar position is within ~0.01° of SPA;
tests/test_solar_forecast.py checks the whole chain against ``ModelChain.with_pvwatts``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pvlib
from pvlib import atmosphere, iam, inverter, irradiance, pvsystem, solarposition, spa, temperature

from optimizer.site import PVArray

GAMMA_PDC = -0.0037  # 1/°C, PVWatts v5 "standard" module
DC_AC_RATIO = 1.2  # PVWatts' default when the array's inverter size is not given
ETA_INV_NOM = 0.96  # PVWatts' nominal inverter efficiency
ALBEDO = 0.2  # PVWatts' default ground reflectance
TEMP_PARAMS = temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"]
CLEAR_SKY_TEMP_AIR = 20.0  # °C: the clear-sky model has no weather (an assumption)
CLEAR_SKY_WIND = 1.0  # m/s


@dataclass(frozen=True)
class Sun:
    """The sun's position at instants ``utc_s`` (UTC epoch seconds), angles in degrees."""

    utc_s: np.ndarray
    zenith: np.ndarray  # geometric
    apparent_zenith: np.ndarray  # with atmospheric refraction (ModelChain uses this one)
    azimuth: np.ndarray  # 180 = south
    dni_extra: np.ndarray  # extraterrestrial normal irradiance, W/m²
    airmass: np.ndarray  # relative air mass (Kasten-Young), NaN with the sun down


@dataclass(frozen=True)
class Irradiance:
    """Horizontal irradiance components, W/m²: global, direct normal, diffuse."""

    ghi: np.ndarray
    dni: np.ndarray
    dhi: np.ndarray


def _day_of_year(utc_s: np.ndarray) -> np.ndarray:
    """Fractional day of the year (1 = 1 January 00:00 UTC)."""
    t = np.asarray(utc_s, dtype="datetime64[s]")
    year_start = t.astype("datetime64[Y]").astype("datetime64[s]")
    return (t - year_start).astype(np.int64) / 86400.0 + 1.0


@lru_cache(maxsize=64)
def _spa_year(year: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NREL SPA's geocentric declination (degrees) and equation of time (minutes) at 00:00 UTC
    of every day from 1 January of ``year`` to 2 January of the next: (utc_s, decl, eot)."""
    start = np.datetime64(f"{year:04d}-01-01", "s").astype(np.int64)
    end = np.datetime64(f"{year + 1:04d}-01-03", "s").astype(np.int64)
    t = np.arange(start, end, 86400, dtype=np.int64).astype(float)
    jd = spa.julian_day(t)
    jde = spa.julian_ephemeris_day(jd, spa.calculate_deltat(year, 7))
    jce = spa.julian_ephemeris_century(jde)
    jme = spa.julian_ephemeris_millennium(jce)
    radius = spa.heliocentric_radius_vector(jme)
    theta = spa.geocentric_longitude(spa.heliocentric_longitude(jme))
    beta = spa.geocentric_latitude(spa.heliocentric_latitude(jme))
    nutation = np.empty((2, len(t)))
    spa.longitude_obliquity_nutation(
        jce, spa.mean_elongation(jce), spa.mean_anomaly_sun(jce), spa.mean_anomaly_moon(jce),
        spa.moon_argument_latitude(jce), spa.moon_ascending_longitude(jce), nutation)
    epsilon = spa.true_ecliptic_obliquity(spa.mean_ecliptic_obliquity(jme), nutation[1])
    lamd = spa.apparent_sun_longitude(theta, nutation[0], spa.aberration_correction(radius))
    alpha = spa.geocentric_sun_right_ascension(lamd, epsilon, beta)
    delta = spa.geocentric_sun_declination(lamd, epsilon, beta)
    eot = spa.equation_of_time(spa.sun_mean_longitude(jme), alpha, nutation[0], epsilon)
    return t.astype(np.int64), np.asarray(delta, dtype=float), np.asarray(eot, dtype=float)


def _declination_eot(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SPA's declination (degrees) and equation of time (minutes) at UTC seconds ``t``,
    interpolated from daily values (error < 0.001°: both are smooth within a day)."""
    years = np.unique(t.astype("datetime64[s]").astype("datetime64[Y]").astype(int) + 1970)
    tables = [_spa_year(int(y)) for y in years]
    grid = np.concatenate([tb[0] for tb in tables])
    decl = np.concatenate([tb[1] for tb in tables])
    eot = np.concatenate([tb[2] for tb in tables])
    order = np.argsort(grid, kind="stable")
    grid, decl, eot = grid[order], decl[order], eot[order]
    return np.interp(t, grid, decl), np.interp(t, grid, eot)


def sun_position(utc_s: np.ndarray, latitude: float, longitude: float) -> Sun:
    """Solar zenith and azimuth at UTC epoch seconds ``utc_s`` (any shape) for a site at
    ``latitude``/``longitude`` (degrees, east positive)."""
    t = np.atleast_1d(np.asarray(utc_s, dtype=np.int64)).ravel()
    decl, eot = _declination_eot(t)
    hours_utc = (t % 86400) / 3600.0
    hour_angle = 15.0 * (hours_utc - 12.0) + longitude + eot / 4.0
    ha = np.radians((hour_angle + 180.0) % 360.0 - 180.0)
    lat = np.radians(latitude)
    zen = solarposition.solar_zenith_analytical(lat, ha, np.radians(decl))
    azi = solarposition.solar_azimuth_analytical(lat, ha, np.radians(decl), zen)
    zenith = np.degrees(zen)
    refraction = spa.atmospheric_refraction_correction(1010.0, 10.0, 90.0 - zenith, 0.5667)
    apparent = zenith - refraction
    airmass = atmosphere.get_relative_airmass(apparent, model="kastenyoung1989")
    return Sun(utc_s=t, zenith=zenith, apparent_zenith=apparent,
               azimuth=np.degrees(azi) % 360.0,
               dni_extra=np.asarray(irradiance.get_extra_radiation(_day_of_year(t)),
                                    dtype=float),
               airmass=np.asarray(airmass, dtype=float))


@lru_cache(maxsize=64)
def _linke_by_day(latitude: float, longitude: float) -> np.ndarray:
    """pvlib's Linke turbidity climatology for one place, interpolated to days 1..366."""
    import pandas as pd

    days = pd.date_range("2001-01-01 12:00", periods=365, freq="D", tz="UTC")
    with warnings.catch_warnings():  # pvlib 0.16 uses an attribute pandas 3 deprecates
        warnings.simplefilter("ignore")
        tl = np.asarray(pvlib.clearsky.lookup_linke_turbidity(days, latitude, longitude),
                        dtype=float)
    return np.append(tl, tl[-1])


@lru_cache(maxsize=64)
def site_altitude(latitude: float, longitude: float) -> float:
    """Ground altitude (m) from pvlib's coarse altitude map (errors of 100 m are possible)."""
    return float(pvlib.location.lookup_altitude(latitude, longitude))


def clear_sky(sun: Sun, latitude: float, longitude: float) -> Irradiance:
    """Ineichen-Perez clear-sky irradiance with pvlib's Linke turbidity for the place."""
    lat, lon = round(float(latitude), 3), round(float(longitude), 3)
    tl = _linke_by_day(lat, lon)[np.clip(_day_of_year(sun.utc_s).astype(int), 1, 366) - 1]
    alt = site_altitude(lat, lon)
    am_abs = atmosphere.get_absolute_airmass(sun.airmass, atmosphere.alt2pres(alt))
    with np.errstate(divide="ignore", invalid="ignore"):  # the sun below the horizon
        cs = pvlib.clearsky.ineichen(sun.apparent_zenith, am_abs, tl, altitude=alt,
                                     dni_extra=sun.dni_extra)
    return Irradiance(*(np.nan_to_num(np.asarray(cs[k], dtype=float)) for k in
                        ("ghi", "dni", "dhi")))


def inverter_ac_kw(array: PVArray) -> float:
    """The array's AC limit, kW: its inverter, else PVWatts' DC/AC ratio of 1.2."""
    return array.inverter_kw_ac or array.kw_dc / DC_AC_RATIO


def array_ac_kw(array: PVArray, sun: Sun, irr: Irradiance,
                temp_air: float | np.ndarray = CLEAR_SKY_TEMP_AIR,
                wind_speed: float | np.ndarray = CLEAR_SKY_WIND) -> np.ndarray:
    """AC power (kW) of one array at the instants of ``sun`` under irradiance ``irr``
    (W/m², horizontal components), air temperature (°C) and wind speed (m/s)."""
    if not array.kw_dc > 0:
        raise ValueError(f"a PV array of {array.kw_dc} kW DC has no output to model")
    up = sun.apparent_zenith < 90.0
    ghi = np.where(up, np.maximum(irr.ghi, 0.0), 0.0)
    dni = np.where(up, np.maximum(irr.dni, 0.0), 0.0)
    dhi = np.where(up, np.maximum(irr.dhi, 0.0), 0.0)
    poa = irradiance.get_total_irradiance(
        array.tilt, array.azimuth, sun.apparent_zenith, sun.azimuth, dni, ghi, dhi,
        dni_extra=sun.dni_extra, airmass=np.where(up, sun.airmass, 1.0), albedo=ALBEDO,
        model="perez")
    poa_direct = np.nan_to_num(np.asarray(poa["poa_direct"], dtype=float))
    poa_diffuse = np.nan_to_num(np.asarray(poa["poa_diffuse"], dtype=float))
    aoi = irradiance.aoi(array.tilt, array.azimuth, sun.apparent_zenith, sun.azimuth)
    effective = poa_direct * np.nan_to_num(iam.physical(aoi)) + poa_diffuse
    cell = temperature.sapm_cell(poa_direct + poa_diffuse, temp_air, wind_speed,
                                 **TEMP_PARAMS)
    dc_w = pvsystem.pvwatts_dc(effective, cell, array.kw_dc * 1000.0, GAMMA_PDC)
    dc_w = dc_w * (1.0 - array.losses_percent / 100.0)
    ac_w = inverter.pvwatts(np.asarray(dc_w, dtype=float),
                            inverter_ac_kw(array) * 1000.0 / ETA_INV_NOM,
                            eta_inv_nom=ETA_INV_NOM)
    return np.where(up, np.maximum(np.asarray(ac_w, dtype=float), 0.0), 0.0) / 1000.0


def clear_sky_ac_kw(utc_s: np.ndarray, latitude: float, longitude: float,
                    arrays: list[PVArray] | tuple[PVArray, ...]) -> np.ndarray:
    """Clear-sky AC kW of each array at instants ``utc_s``: shape (len(arrays), len(utc_s))."""
    sun = sun_position(utc_s, latitude, longitude)
    irr = clear_sky(sun, latitude, longitude)
    return np.array([array_ac_kw(a, sun, irr) for a in arrays]).reshape(len(arrays), -1)
