"""Offline PV estimate for any site: clear-sky output × a climatological clearness.

The default and last fallback when no forecast provider answers. Two clear-sky models, both
pure and vectorised, both returning kWh per step:

- ``model="pvlib"``: pvlib's Ineichen-Perez clear sky with its Linke turbidity, Perez
  plane-of-array irradiance, PVWatts DC, losses and inverter (``forecasts/pvmodel.py``;
  checked against pvlib's ``ModelChain.with_pvwatts`` within 0.1 %). What the ``clear_sky``
  solar provider (``forecasts/solar.py``) uses.
- ``model="simple"`` (the default, for now): the original solar-geometry model — declination
  and hour angle, Meinel's clear-sky beam and an isotropic sky term, no temperature or
  inverter losses. It gives ~10 % more energy than pvlib's PVWatts chain (13,077 vs 14,355
  kWh/yr clear-sky for the example 7.2 kW array in San Francisco). It stays the default
  because the planning scenarios (tests/test_planning.py) were tuned on it: the switch belongs
  to whoever owns trueup/planning.py.

``MONTHLY_CLEARNESS`` turns clear sky into an expectation: the month's expected share of
clear-sky output.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from optimizer.site import PVArray

# expected share of clear-sky output by calendar month (coastal California; an assumption)
MONTHLY_CLEARNESS = np.array([0.62, 0.66, 0.72, 0.80, 0.84, 0.88, 0.90, 0.90, 0.88, 0.80,
                              0.68, 0.60])

Model = Literal["simple", "pvlib"]


def _simple_kw(utc_s: np.ndarray, latitude: float, longitude: float, array: PVArray
               ) -> np.ndarray:
    t = np.asarray(utc_s, dtype=np.int64)
    doy = ((t // 86400 + 4) % 365.2422).astype(float)  # ≈ day of year (epoch = Jan 1)
    decl = np.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    solar_hours = (t % 86400) / 3600.0 + longitude / 15.0
    ha = np.radians(15.0 * (solar_hours - 12.0))
    lat = np.radians(latitude)
    cos_z = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(ha)
    # sun vector (east, north, up) and the panel normal
    sun_e = -np.cos(decl) * np.sin(ha)
    sun_n = np.sin(decl) * np.cos(lat) - np.cos(decl) * np.sin(lat) * np.cos(ha)
    tilt, az = np.radians(array.tilt), np.radians(array.azimuth)
    n_e, n_n, n_u = np.sin(tilt) * np.sin(az), np.sin(tilt) * np.cos(az), np.cos(tilt)
    cos_i = sun_e * n_e + sun_n * n_n + cos_z * n_u
    up = cos_z > 0.02
    air_mass = np.where(up, 1.0 / np.maximum(cos_z, 0.02), 40.0)
    dni = 1353.0 * 0.7 ** (air_mass**0.678)
    sky = 0.1 * dni * (1 + np.cos(tilt)) / 2
    poa = np.where(up, dni * np.maximum(cos_i, 0.0) + sky, 0.0)
    kw = array.kw_dc * poa / 1000.0 * (1 - array.losses_percent / 100.0)
    if array.inverter_kw_ac:
        kw = np.minimum(kw, array.inverter_kw_ac)
    return kw


def clear_sky_kw(utc_s: np.ndarray, latitude: float, longitude: float, array: PVArray,
                 *, model: Model = "simple") -> np.ndarray:
    """AC kW of one array at UTC epoch seconds ``utc_s`` (instants) under a clear sky."""
    if model == "pvlib":
        t = np.asarray(utc_s, dtype=np.int64)
        from forecasts import pvmodel  # pvlib (with pandas, scipy): ~100 MB, loaded on use

        return pvmodel.clear_sky_ac_kw(t.ravel(), latitude, longitude, [array])[0].reshape(
            t.shape)
    return _simple_kw(utc_s, latitude, longitude, array)


def expected_pv_kwh(starts_utc: np.ndarray, step_s: int, latitude: float, longitude: float,
                    arrays: list[PVArray], month: np.ndarray | None = None,
                    *, model: Model = "simple") -> np.ndarray:
    """Expected PV energy per step (kWh) of all ``arrays`` together: clear sky at mid-step
    × the month's clearness.

    ``starts_utc``: step starts, UTC epoch seconds; ``step_s``: step length, s; ``month``
    (1-12 per step, local) picks the clearness; None = clear sky; ``model``: see the module
    docstring."""
    starts = np.asarray(starts_utc, dtype=np.int64)
    mid = starts + step_s // 2
    if model == "pvlib":
        if not arrays or starts.size == 0:
            kw = np.zeros(starts.shape, dtype=float)
        else:
            from forecasts import pvmodel  # pvlib, loaded only when asked for

            kw = pvmodel.clear_sky_ac_kw(mid.ravel(), latitude, longitude,
                                         arrays).sum(axis=0).reshape(starts.shape)
    else:
        kw = sum((_simple_kw(mid, latitude, longitude, a) for a in arrays),
                 np.zeros(starts.shape, dtype=float))
    if month is not None:
        kw = kw * MONTHLY_CLEARNESS[np.asarray(month) - 1]
    return np.asarray(kw, dtype=float) * step_s / 3600.0


#: the days of history the calibration reads back, and those it needs for full weight
CALIBRATION_DAYS = 60
CALIBRATION_FULL_DAYS = 30


def history_ratio(starts_utc: np.ndarray, step_s: int, pv_kwh: np.ndarray, tz: str,
                  latitude: float, longitude: float, arrays: list[PVArray],
                  *, model: Model = "simple") -> tuple[float, float]:
    """How this home's metered PV compares with :func:`expected_pv_kwh` over its last
    :data:`CALIBRATION_DAYS` days of history: ``(ratio, days)``, the ratio shrunk toward 1
    with fewer than :data:`CALIBRATION_FULL_DAYS` days and clipped to 0.4-1.6.

    The offline expectation knows neither the home's shading, soiling and inverter nor the
    year's weather: over the example home's year it runs 15 % high. Scaled by this ratio,
    the weeks ahead start from what the arrays have really been doing. ``starts_utc``,
    ``step_s``, ``pv_kwh``: the history (UTC epoch seconds, kWh per interval); ``tz``: the
    site's zone (the clearness month)."""
    from optimizer.localtime import local_fields

    t = np.asarray(starts_utc, dtype=np.int64)
    pv = np.asarray(pv_kwh, dtype=float)
    if not len(t):
        return 1.0, 0.0
    keep = (t > t[-1] - CALIBRATION_DAYS * 86400) & np.isfinite(pv)
    t, pv = t[keep], pv[keep]
    if not len(t):
        return 1.0, 0.0
    expected = expected_pv_kwh(t, step_s, latitude, longitude, arrays,
                               local_fields(t, tz).month, model=model)
    days = len(t) * step_s / 86400
    if expected.sum() <= 0:
        return 1.0, days
    ratio = float(np.clip(pv.sum() / expected.sum(), 0.4, 1.6))
    weight = min(1.0, days / CALIBRATION_FULL_DAYS)
    return 1.0 + (ratio - 1.0) * weight, days
