"""PV a home *produced*, estimated from what its meter saw: for utility data without a PV column.

A PG&E Green Button download has import and export per interval, nothing else. To replay the
year with a battery, trueup needs load and PV. Without a battery behind the meter::

    load = import − export + PV          (every interval, exactly)

so only PV must be estimated; the load follows from it. The estimate:

1. **Clear sky at the site** for the configured arrays: pvlib's Ineichen clear sky with its
   Linke turbidity climatology, Perez plane-of-array irradiance, PVWatts DC and inverter
   (:mod:`forecasts.pvmodel`), at each interval's middle. No weather data is available offline
   for the past year at an arbitrary site, so the sky's cloudiness comes from the meter:
2. **Each day's clearness from the meter.** The night's mean net import (import − export when
   the sun is down) stands in for the daytime load; the day's PV is then
   ``Σ_daylight (export − import) + night mean × daylight intervals`` and the day's clearness
   that over the day's clear-sky energy, clipped to [0.05, 1.0]. A day without night intervals
   or with no clear-sky energy takes the month's climatological clearness
   (:data:`forecasts.clearsky.MONTHLY_CLEARNESS`).
3. **Consistent with the meter**: PV is raised where the meter exported more than the estimate
   (``PV ≥ export − import``), so the rebuilt load is never negative.

What the estimate changes: nothing in the bill without a battery (load − PV = import − export
whatever PV is); with a battery, the surplus that charges it is the meter's export and the
deficit it covers the meter's import, so the strategies' bills depend on PV only where a rule
does (the NEM-PS cap's PV estimate, solar-only charging). Checked on the example home's year
in tests/test_backcast.py.

Units: kWh per interval; interval starts are UTC epoch seconds; days are local days in ``tz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from forecasts.clearsky import MONTHLY_CLEARNESS
from optimizer.localtime import local_fields
from optimizer.site import PVArray

#: bounds of a day's clearness (share of clear-sky output)
MIN_CLEARNESS, MAX_CLEARNESS = 0.05, 1.0


@dataclass(frozen=True)
class PvBackcast:
    """PV per interval estimated from a meter's import and export.

    Attributes:
        pv_kwh: estimated AC PV energy per interval, kWh (≥ 0, ≥ export − import).
        clear_kwh: the arrays' clear-sky energy per interval, kWh.
        day_clearness: the clearness used for each interval's local day (0.05-1.0).
        days_from_meter / days_from_climate: local days whose clearness came from the meter,
            or (no night or no sun that day) from the month's climatology.
        raised_kwh: kWh added where the meter exported more than the estimate.
    """

    pv_kwh: np.ndarray
    clear_kwh: np.ndarray
    day_clearness: np.ndarray
    days_from_meter: int
    days_from_climate: int
    raised_kwh: float

    def method(self, arrays: Sequence[PVArray]) -> str:
        """One sentence for the report: what estimated PV and from what."""
        kw = sum(a.kw_dc for a in arrays)
        return (f"PV estimated for the configured arrays ({len(arrays)} array(s), {kw:g} kW DC) "
                "with pvlib: clear sky at the site (Ineichen, Linke turbidity climatology) → "
                "PVWatts, scaled each day to the clearness the meter's exports imply "
                f"({self.days_from_meter} days; {self.days_from_climate} from the month's "
                "typical clearness); no past weather is available offline, so the meter "
                f"stands in for it; raised by {self.raised_kwh:,.1f} kWh where the meter "
                "exported more than the estimate")


def backcast_pv(starts_utc: np.ndarray, step_s: int, tz: str, latitude: float,
                longitude: float, arrays: Sequence[PVArray], import_kwh: np.ndarray,
                export_kwh: np.ndarray) -> PvBackcast:
    """Estimate PV per interval from metered import and export (module docstring).

    Args:
        starts_utc: interval starts, UTC epoch seconds (int64).
        step_s: interval length, s.
        tz: IANA zone of the site (local days).
        latitude, longitude: the site, degrees (north, east positive).
        arrays: the site's PV arrays (kW DC, tilt, azimuth ...).
        import_kwh, export_kwh: gross meter registers per interval, kWh.
    """
    from forecasts import pvmodel  # pvlib, loaded on use

    starts = np.asarray(starts_utc, dtype=np.int64)
    imp = np.asarray(import_kwh, dtype=float)
    exp = np.asarray(export_kwh, dtype=float)
    n = len(starts)
    if n == 0 or not arrays:
        z = np.zeros(n)
        return PvBackcast(pv_kwh=np.maximum(exp - imp, 0.0), clear_kwh=z, day_clearness=z,
                          days_from_meter=0, days_from_climate=0,
                          raised_kwh=float(np.maximum(exp - imp, 0.0).sum()))
    mid = starts + step_s // 2
    clear = pvmodel.clear_sky_ac_kw(mid, latitude, longitude, list(arrays)).sum(axis=0)
    clear = np.asarray(clear, dtype=float) * step_s / 3600.0
    f = local_fields(mid, tz)
    _, day = np.unique(f.day, return_inverse=True)
    days = int(day.max()) + 1
    sun = clear > 0
    net = imp - exp

    def per_day(w: np.ndarray) -> np.ndarray:
        return np.bincount(day, weights=w, minlength=days)

    night_n = per_day((~sun).astype(float))
    night_mean = per_day(np.where(sun, 0.0, net)) / np.maximum(night_n, 1)
    sun_n = per_day(sun.astype(float))
    clear_day = per_day(clear)
    pv_day = per_day(np.where(sun, -net, 0.0)) + np.maximum(night_mean, 0.0) * sun_n
    ok = (night_n > 0) & (clear_day > 0)
    # the month of each day: that of its first interval
    first = np.zeros(days, dtype=np.int64)
    first[day[::-1]] = np.arange(n)[::-1]
    k = np.where(ok, pv_day / np.where(clear_day > 0, clear_day, 1.0),
                 MONTHLY_CLEARNESS[f.month[first] - 1])
    k = np.clip(k, MIN_CLEARNESS, MAX_CLEARNESS)
    est = clear * k[day]
    pv = np.maximum(est, np.maximum(exp - imp, 0.0))
    return PvBackcast(pv_kwh=pv, clear_kwh=clear, day_clearness=k[day],
                      days_from_meter=int(ok.sum()), days_from_climate=int((~ok).sum()),
                      raised_kwh=float((pv - est).sum()))
