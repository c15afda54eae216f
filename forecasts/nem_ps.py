"""The NEM-PS "Estimated PV Generation": monthly kWh of the site's arrays in a typical year.

NEM2 Paired Storage caps each month's credited exports at the utility's modelled PV output
(PVWatts-like, typical weather, not the real year; docs/billing-rules.md, 'The NEM-PS export
cap and de-credit order'). Until the owner copies the figure from the NEM statement ("Solar
Generation Eligible for Credit"), trueup estimates it the same way: a typical meteorological
year (TMY) of hourly irradiance, temperature and wind through pvlib's PVWatts chain
(``forecasts/pvmodel.py``), summed by calendar month.

Weather: pvlib ships one US TMY3 file usable offline — ``723170TYA.CSV``, Greensboro NC
(Piedmont Triad International, 36.10° N, 79.95° W, 273 m; NSRDB 1991-2005 typical months).
Any other TMY3 CSV (NSRDB's, for the site's own area) can be passed instead. The sun's
geometry is that of the weather file's station, so irradiance and geometry agree: with
Greensboro's file the estimate describes the arrays *as if they stood in Greensboro*, whatever
the site's own latitude. TMY3 times are local standard time, labelled at the end of each hour;
each hour is modelled at its middle and counted in the month of its middle.

Units: kWh AC per calendar month, January first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from forecasts import pvmodel
from optimizer.errors import InputError
from optimizer.site import PVArray

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def pvlib_tmy3_path() -> Path:
    """pvlib's shipped Greensboro NC TMY3 file."""
    import pvlib

    return Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"


@dataclass(frozen=True, eq=False)
class WeatherYear:
    """An hourly typical year: values at each hour's middle (``mid_utc``, UTC epoch s)."""

    path: Path
    station: str  # "GREENSBORO PIEDMONT TRIAD INT, NC (USAF 723170)"
    latitude: float
    longitude: float
    altitude_m: float
    mid_utc: np.ndarray
    month: np.ndarray  # 1..12, local standard time of the hour's middle
    ghi: np.ndarray  # W/m²
    dni: np.ndarray
    dhi: np.ndarray
    temp_air: np.ndarray  # °C
    wind_speed: np.ndarray  # m/s
    missing_hours: int = 0  # hours with no irradiance in the file (modelled as 0)


@lru_cache(maxsize=8)
def read_tmy3(path: str | Path | None = None) -> WeatherYear:
    """Read a TMY3 CSV with ``pvlib.iotools.read_tmy3`` (default: pvlib's Greensboro file).
    Raises :class:`InputError` when the file is missing or is not TMY3."""
    import warnings

    import pandas as pd
    import pvlib

    p = Path(path) if path else pvlib_tmy3_path()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, meta = pvlib.iotools.read_tmy3(str(p), coerce_year=2001, map_variables=True)
    except FileNotFoundError:
        raise InputError("weather file not found", where=str(p),
                         fix="give a TMY3 CSV (NSRDB's typical-year format), or leave "
                         "--weather out to use pvlib's Greensboro file") from None
    except Exception as e:
        raise InputError(f"not a TMY3 weather file: {type(e).__name__}: {e}", where=str(p),
                         fix="give a TMY3 CSV: a station line (USAF,name,state,TZ,lat,lon,"
                         "elevation), a header line, then 8760 hourly rows") from None
    need = ("ghi", "dni", "dhi", "temp_air", "wind_speed")
    absent = [c for c in need if c not in data.columns]
    if absent or len(data) < 8760:
        raise InputError(f"{len(data)} rows, columns {absent} missing", where=str(p),
                         fix="give a complete TMY3 file (8760 hours with GHI, DNI, DHI, "
                         "dry-bulb temperature and wind speed)")
    mid = data.index - pd.Timedelta(minutes=30)
    cols = {c: np.asarray(data[c], dtype=float) for c in need}
    gaps = ~(np.isfinite(cols["ghi"]) & np.isfinite(cols["dni"]) & np.isfinite(cols["dhi"]))
    for c in ("ghi", "dni", "dhi"):
        cols[c] = np.nan_to_num(cols[c])
    cols["temp_air"] = np.nan_to_num(cols["temp_air"], nan=15.0)
    cols["wind_speed"] = np.nan_to_num(cols["wind_speed"], nan=1.0)
    name = str(meta.get("Name", "?")).strip('"')
    return WeatherYear(path=p, station=f"{name}, {meta.get('State', '?')} (USAF "
                       f"{meta.get('USAF', '?')})",
                       latitude=float(meta["latitude"]), longitude=float(meta["longitude"]),
                       altitude_m=float(meta.get("altitude", 0.0)),
                       mid_utc=mid.as_unit("s").asi8.astype(np.int64),
                       month=np.asarray(mid.month, dtype=np.int64), missing_hours=int(gaps.sum()),
                       **cols)


@dataclass(frozen=True)
class PvEstimate:
    """Monthly AC kWh of ``arrays`` in the typical year of ``weather``."""

    monthly_kwh: tuple[float, ...]  # 12 values, January first
    per_array_kwh: tuple[tuple[float, ...], ...]  # the same, per array
    weather_file: str
    station: str
    latitude: float  # the weather station's, used for the sun's geometry
    longitude: float
    notes: tuple[str, ...] = field(default=())

    @property
    def annual_kwh(self) -> float:
        return float(sum(self.monthly_kwh))

    def to_json(self) -> dict:
        return {"monthly_kwh": [round(x, 1) for x in self.monthly_kwh],
                "annual_kwh": round(self.annual_kwh, 1),
                "per_array_kwh": [[round(x, 1) for x in a] for a in self.per_array_kwh],
                "weather_file": self.weather_file, "station": self.station,
                "latitude": self.latitude, "longitude": self.longitude,
                "notes": list(self.notes)}


def estimate_monthly_kwh(arrays: Sequence[PVArray], weather_file: str | Path | None = None
                         ) -> PvEstimate:
    """The NEM-PS "Estimated PV Generation" of ``arrays``: kWh per calendar month of a typical
    year (``weather_file``: a TMY3 CSV; default pvlib's Greensboro NC file)."""
    if not arrays:
        raise InputError("no PV arrays to estimate", where="[[pv]]",
                         fix="add a [[pv]] section with kw_dc, tilt and azimuth")
    for i, a in enumerate(arrays):
        if not getattr(a, "kw_dc", 0) > 0:
            raise InputError(f"PV array {i + 1} has a size of {a.kw_dc!r} kW DC",
                             where=f"pv[{i}].kw_dc", fix="give the DC nameplate in kW")
    w = read_tmy3(str(weather_file) if weather_file else None)
    sun = pvmodel.sun_position(w.mid_utc, w.latitude, w.longitude)
    irr = pvmodel.Irradiance(ghi=w.ghi, dni=w.dni, dhi=w.dhi)
    per_array = []
    for a in arrays:
        kwh = pvmodel.array_ac_kw(a, sun, irr, w.temp_air, w.wind_speed)  # 1 h steps
        per_array.append(tuple(float(x) for x in
                               np.bincount(w.month - 1, weights=kwh, minlength=12)))
    monthly = tuple(float(sum(col)) for col in zip(*per_array, strict=True))
    notes = []
    if w.missing_hours:
        notes.append(f"{w.missing_hours} hours without irradiance in the file, counted as 0")
    return PvEstimate(monthly_kwh=monthly, per_array_kwh=tuple(per_array),
                      weather_file=str(w.path), station=w.station, latitude=w.latitude,
                      longitude=w.longitude, notes=tuple(notes))
