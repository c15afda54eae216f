"""Offline PV estimate for any site: clear-sky geometry × a climatological clearness.

The default and last fallback until a forecast provider answers (issue 5 brings pvlib and
the providers). A simple solar-position calculation (declination, hour angle), Meinel's
clear-sky beam irradiance and an isotropic sky term, on each array's tilt and azimuth,
times a monthly clearness for coastal California. Returns kWh per step. Pure and vectorised.
"""

from __future__ import annotations

import numpy as np

from optimizer.site import PVArray

# expected share of clear-sky output by calendar month (coastal California, assumption [U])
MONTHLY_CLEARNESS = np.array([0.62, 0.66, 0.72, 0.80, 0.84, 0.88, 0.90, 0.90, 0.88, 0.80,
                              0.68, 0.60])


def clear_sky_kw(utc_s: np.ndarray, latitude: float, longitude: float, array: PVArray
                 ) -> np.ndarray:
    """AC kW of one array at UTC epoch seconds ``utc_s`` under a clear sky."""
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


def expected_pv_kwh(starts_utc: np.ndarray, step_s: int, latitude: float, longitude: float,
                    arrays: list[PVArray], month: np.ndarray | None = None) -> np.ndarray:
    """Expected PV energy per step (kWh): clear sky at mid-step × the month's clearness.

    ``month`` (1-12 per step, local) picks the clearness; None = clear sky."""
    mid = np.asarray(starts_utc, dtype=np.int64) + step_s // 2
    kw = sum(clear_sky_kw(mid, latitude, longitude, a) for a in arrays)
    if month is not None:
        kw = kw * MONTHLY_CLEARNESS[np.asarray(month) - 1]
    return np.asarray(kw, dtype=float) * step_s / 3600.0
