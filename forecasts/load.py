"""Load forecast from the home's own recorded intervals, or a typical profile.

The model, fitted by :func:`fit_load_profile` and evaluated by :meth:`LoadProfile.forecast`:

1. **Hour-of-day profile.** The history's intervals are first averaged into one kW value
   per local (day, clock hour). The profile is their weighted mean in 48 cells: local clock
   hour (0–23) × day type (Monday–Friday, Saturday–Sunday), over the last ``lookback_days``
   (default 56). Each local day is weighted ``0.5 ** (age_days / half_life_days)`` (default
   7 days; age counted in local calendar days back from the last day of history), so a
   change of habits shows up within a week or two. Each hour's weekday and weekend means
   are shrunk toward the hour's all-days mean by ``λ = max(0, 1 − s²/δ²)`` (δ: their
   difference, s²: its sampling variance), so a weekend difference smaller than its noise is
   not trusted and a clear one (an EV on weekdays) is kept whole; a cell seen on fewer than
   2 days takes the all-days mean. (Defaults and the shrinkage were chosen on
   ``bench/bench_load_forecast.py`` on the first, synthetic example year: MAE 0.189 → 0.184
   kWh/h against 0.362 for persistence.)
2. **Temperature sensitivity** (when a :class:`Temperatures` series covers the history). Per
   local hour ``h``, a weighted least-squares fit of the load's deviation from its cell mean on
   the deviations of cooling degree-hours ``max(T − cooling_base_c, 0)`` and heating
   degree-hours ``max(heating_base_c − T, 0)`` from *their* cell means (a fixed-effects
   regression: 2 slopes per hour, 48 in all). **Rule:** the term is used only when at least
   ``min_temperature_days`` days of history have temperatures *and* the slopes explain at
   least ``min_temperature_r2`` (default 10 %) of the variance left after the profile, as an
   adjusted R² counting each effective day as 24 observations and charging 48 degrees of
   freedom for the cell means and 48 for the slopes, so that noise fitted by two free slopes
   per hour does not pass. Forecast steps with no temperature get the profile alone.
3. **Known loads** (:class:`KnownLoad`, e.g. an EV charging schedule from config): removed
   from the history first when ``in_history`` (so they are not counted twice and a moved
   schedule moves its load), then added on their own schedule, by local clock.
4. **Fallback.** With less than ``min_history_days`` of valid load intervals (default 14
   days), intervals longer than an hour, or an hour of day never seen, the example home's
   typical profile (:func:`typical_load_kw`) is used instead — rescaled to the home's mean
   when at least one day of history exists — and the source string says so and why.

Forecasts are kWh per step for any step starts (UTC epoch s) and step length: each step is
sampled every 5 minutes of its span (at most; a 5-minute step is sampled once, at its middle)
by *local* clock via :func:`optimizer.localtime.local_fields`, so a 23- or 25-hour DST day
gets 23 or 25 hourly steps of its own local clock hours. Everything is vectorised numpy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from optimizer.intervals import IntervalData
from optimizer.localtime import LocalFields, local_fields

_DAY = 86400
_SUB_S = 300  # a step is sampled at most every 5 minutes of its span
_MIN_SCALE_DAYS = 1.0  # the typical profile is rescaled to the home's mean from 1 day on
_SCALE_LIMITS = (0.2, 5.0)

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_SETS = {"all": (0, 1, 2, 3, 4, 5, 6), "weekdays": (0, 1, 2, 3, 4), "weekends": (5, 6)}


def seasonal_load_kwh(starts_utc: np.ndarray, step_s: int, tz: str,
                      history: IntervalData | None = None, *,
                      known_loads: Sequence[KnownLoad] = ()) -> tuple[np.ndarray, str]:
    """Expected load weeks or months ahead, kWh per step, and its source: the typical
    profile's hours and seasons (summer air conditioning, an EV) scaled to this home's mean
    over up to a year of history.

    A profile fitted to the last weeks is the best guess for tomorrow but carries July's air
    conditioning into December; for the weeks ahead the seasons matter more than the hour.
    (With a year of history the planner reads the same weeks of last year instead:
    :mod:`forecasts.last_year`.)"""
    s = LoadSettings(lookback_days=366, min_history_days=10**6)  # always the typical shape
    profile = fit_load_profile(history, tz, known_loads=known_loads, settings=s)
    kwh, source = profile.forecast(starts_utc, step_s)
    return kwh, source.replace(f"; its own profile needs {s.min_history_days:g}", "")


# --------------------------------------------------------------------------------------
# the example home's typical profile (also the fallback; trueup/example.py builds on it)


def household_kw(local_hour: np.ndarray, month: np.ndarray) -> np.ndarray:
    """The example home's appliances and cooling, kW, by local hour (fractional) and month:
    a base load, morning and evening peaks, summer afternoon air conditioning."""
    base = 0.45
    morning = 0.9 * np.exp(-(((local_hour - 7.5) / 1.2) ** 2))
    evening = 1.6 * np.exp(-(((local_hour - 19.0) / 2.0) ** 2))
    summer = np.isin(month, [6, 7, 8, 9])
    cooling = np.where(summer, 1.4 * np.exp(-(((local_hour - 16.5) / 2.5) ** 2)), 0.0)
    return base + morning + evening + cooling


def ev_kw(local_hour: np.ndarray, weekday: np.ndarray) -> np.ndarray:
    """The example home's EV: 3.6 kW from 00:30 to 03:30 on weekdays (0 = Monday)."""
    return np.where((local_hour >= 0.5) & (local_hour < 3.5) & (weekday < 5), 3.6, 0.0)


def typical_load_kw(local_hour: np.ndarray, month: np.ndarray, weekday: np.ndarray
                    ) -> np.ndarray:
    """The example home's expected load, kW, by local hour (fractional), month, weekday."""
    return household_kw(local_hour, month) + ev_kw(local_hour, weekday)


# --------------------------------------------------------------------------------------
# inputs


class KnownLoad(BaseModel):
    """A big scheduled load, e.g. an EV charger on a timer, by local clock.

    ``start``/``end`` are local ``HH:MM`` (``end`` may be ``24:00``); an ``end`` earlier than
    ``start`` runs past midnight into the next day, and that part belongs to the start day's
    schedule (``22:00``–``02:00`` on ``fri`` runs Friday night into Saturday). ``days`` is
    ``all``, ``weekdays``, ``weekends`` or a list of ``mon`` … ``sun``. ``in_history``: the
    recorded history already contains this load (it is removed from the history before the
    profile is fitted, then added back on this schedule); set false for a new load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "known load"
    kw: float = Field(gt=0, le=1000, description="power while running, kW")
    start: str = Field(description="local clock HH:MM")
    end: str = Field(description="local clock HH:MM; earlier than start = past midnight")
    days: tuple[int, ...] = Field(default=_DAY_SETS["all"],
                                  description="all | weekdays | weekends | [mon, ..., sun]")
    in_history: bool = True

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, v: str) -> str:
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", v.strip())
        if not m or int(m[2]) > 59 or int(m[1]) * 60 + int(m[2]) > 1440:
            raise ValueError(f"{v!r} is not a local clock time HH:MM (00:00 to 24:00)")
        return f"{int(m[1]):02d}:{m[2]}"

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v) -> tuple[int, ...]:
        if isinstance(v, str):
            if v.lower() in _DAY_SETS:
                return _DAY_SETS[v.lower()]
            v = [v]
        out = set()
        for d in v:
            if isinstance(d, int) and 0 <= d <= 6:
                out.add(d)
            elif isinstance(d, str) and d.lower()[:3] in _DAY_NAMES:
                out.add(_DAY_NAMES.index(d.lower()[:3]))
            else:
                raise ValueError(f"day {d!r} is not one of {', '.join(_DAY_NAMES)} "
                                 "(or use all | weekdays | weekends)")
        if not out:
            raise ValueError("days is empty: give all, weekdays, weekends or a list of days")
        return tuple(sorted(out))

    @model_validator(mode="after")
    def _not_empty(self) -> KnownLoad:
        if self.start_min >= 1440:
            raise ValueError(f"{self.name}: start {self.start} must be before 24:00")
        if self.start_min == self.end_min % 1440 and self.end_min != 1440:
            raise ValueError(f"{self.name}: start and end are both {self.start}: "
                             "a known load needs a running time")
        return self

    @property
    def start_min(self) -> int:
        h, m = self.start.split(":")
        return int(h) * 60 + int(m)

    @property
    def end_min(self) -> int:
        h, m = self.end.split(":")
        return int(h) * 60 + int(m)

    def kw_at(self, f: LocalFields) -> np.ndarray:
        """Power, kW, at instants with local fields ``f``."""
        minute = f.hour * 60 + f.minute
        days = np.array(self.days)
        today = np.isin(f.weekday, days)
        s, e = self.start_min, self.end_min
        if s < e:
            on = today & (minute >= s) & (minute < e)
        else:  # past midnight: the early part belongs to yesterday's schedule
            yesterday = np.isin((f.weekday - 1) % 7, days)
            on = (today & (minute >= s)) | (yesterday & (minute < e))
        return np.where(on, self.kw, 0.0)


@dataclass(frozen=True)
class Temperatures:
    """Outdoor air temperature, °C, at UTC epoch seconds (e.g. Open-Meteo's hourly
    ``temperature_2m``, past days and forecast in one series). Linearly interpolated;
    NaN more than ``tolerance_s`` outside the series or where its values are NaN."""

    utc_s: np.ndarray
    temp_c: np.ndarray
    tolerance_s: int = 3600

    def __post_init__(self) -> None:
        t = np.asarray(self.utc_s, dtype=np.int64)
        c = np.asarray(self.temp_c, dtype=float)
        if t.shape != c.shape or t.ndim != 1:
            raise ValueError(f"Temperatures: {t.size} times but {c.size} temperatures; "
                             "give one °C value per timestamp")
        ok = np.isfinite(c)
        order = np.argsort(t[ok], kind="stable")
        object.__setattr__(self, "utc_s", t[ok][order])
        object.__setattr__(self, "temp_c", c[ok][order])

    def at(self, utc_s: np.ndarray) -> np.ndarray:
        """Temperature, °C, at UTC epoch seconds; NaN where the series does not reach."""
        t = np.asarray(utc_s, dtype=np.int64)
        if not self.utc_s.size:
            return np.full(t.shape, np.nan)
        out = np.interp(t, self.utc_s, self.temp_c)
        inside = (t >= self.utc_s[0] - self.tolerance_s) & (t <= self.utc_s[-1] + self.tolerance_s)
        # a gap in the series longer than 2 × tolerance is not bridged
        i = np.clip(np.searchsorted(self.utc_s, t), 1, max(1, self.utc_s.size - 1))
        if self.utc_s.size > 1:
            gap = self.utc_s[i] - self.utc_s[i - 1]
            near = np.minimum(np.abs(t - self.utc_s[i - 1]), np.abs(self.utc_s[i] - t))
            inside &= (gap <= 2 * self.tolerance_s) | (near <= self.tolerance_s)
        return np.where(inside, out, np.nan)


class LoadSettings(BaseModel):
    """Tuning of the history-based load forecast (defaults chosen on
    bench/bench_load_forecast.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life_days: float = Field(default=7.0, gt=0, description="recency weighting, days")
    lookback_days: int = Field(default=56, ge=1, description="history used at most, days")
    min_history_days: float = Field(default=14.0, ge=1,
                                    description="less valid history than this: typical profile")
    cooling_base_c: float = Field(default=21.0, description="cooling degree-hours above, °C")
    heating_base_c: float = Field(default=15.0, description="heating degree-hours below, °C")
    min_temperature_days: float = Field(default=14.0, ge=1)
    min_temperature_r2: float = Field(default=0.10, ge=0, le=1)


# --------------------------------------------------------------------------------------
# the fitted model


@dataclass(frozen=True)
class TemperatureFit:
    """Per-hour slopes of load (kW) on cooling/heating degree-hours (K), and the degree-hour
    means of each (day type, hour) cell they are measured from."""

    cooling_kw_per_k: np.ndarray  # (24,)
    heating_kw_per_k: np.ndarray  # (24,)
    cdh_mean: np.ndarray  # (2, 24)
    hdh_mean: np.ndarray  # (2, 24)
    cooling_base_c: float
    heating_base_c: float
    r2: float

    def kw(self, temp_c: np.ndarray, weekend: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """Load change, kW, from the cell's mean conditions; 0 where ``temp_c`` is NaN."""
        cdh = np.maximum(temp_c - self.cooling_base_c, 0.0)
        hdh = np.maximum(self.heating_base_c - temp_c, 0.0)
        d = (self.cooling_kw_per_k[hour] * (cdh - self.cdh_mean[weekend, hour])
             + self.heating_kw_per_k[hour] * (hdh - self.hdh_mean[weekend, hour]))
        return np.where(np.isfinite(d), d, 0.0)


@dataclass(frozen=True)
class LoadProfile:
    """A fitted load model. ``kind`` is ``"history"`` (own profile) or ``"typical"``.

    Attributes:
        tz: IANA time zone of the local clock.
        kind: which model produces the forecast.
        profile_kw: (2, 24) mean kW by [weekend, local hour] (``kind == "history"``).
        typical_scale: factor on the typical profile (``kind == "typical"``).
        temperature: the temperature term when it passed the rule, else None.
        known_loads: added to every forecast on their schedules.
        history_days: valid load history used, days.
        source: how the forecast was made, for plans and logs.
    """

    tz: str
    kind: str
    profile_kw: np.ndarray | None = None
    typical_scale: float = 1.0
    temperature: TemperatureFit | None = None
    known_loads: tuple[KnownLoad, ...] = ()
    history_days: float = 0.0
    source: str = ""

    def kw_at(self, utc_s: np.ndarray, temperatures: Temperatures | None = None) -> np.ndarray:
        """Expected load, kW, at instants (UTC epoch s)."""
        t = np.asarray(utc_s, dtype=np.int64)
        f = local_fields(t, self.tz)
        if self.kind == "history":
            weekend = (f.weekday >= 5).astype(np.intp)
            kw = self.profile_kw[weekend, f.hour]
            if self.temperature is not None and temperatures is not None:
                kw = kw + self.temperature.kw(temperatures.at(t), weekend, f.hour)
        else:
            hour = f.hour + f.minute / 60.0
            kw = household_kw(hour, f.month)
            if not self.known_loads:
                kw = kw + ev_kw(hour, f.weekday)
            kw = kw * self.typical_scale
        kw = np.maximum(kw, 0.0)
        return kw + _known_kw(self.known_loads, f)

    def forecast(self, starts_utc: np.ndarray, step_s: int,
                 temperatures: Temperatures | None = None) -> tuple[np.ndarray, str]:
        """Expected load per step, kWh, for steps ``[start, start + step_s)`` (UTC epoch s),
        and the source string."""
        if step_s <= 0:
            raise ValueError(f"step_s must be positive seconds, got {step_s}")
        starts = np.asarray(starts_utc, dtype=np.int64).ravel()
        pts, k = _subsample(starts, step_s)
        kwh = self.kw_at(pts, temperatures).reshape(len(starts), k).mean(axis=1) * step_s / 3600
        source = self.source
        if self.temperature is not None:
            temp = None if temperatures is None else temperatures.at(pts)
            if temp is None or not np.isfinite(temp).any():
                source += "; no temperatures for the forecast steps: temperature term not applied"
            elif not np.isfinite(temp).all():
                source += "; temperature term applied where temperatures reach"
        return kwh, source


# --------------------------------------------------------------------------------------
# fitting


def fit_load_profile(history: IntervalData | None, tz: str, *,
                     known_loads: Sequence[KnownLoad] = (),
                     temperatures: Temperatures | None = None,
                     settings: LoadSettings | None = None) -> LoadProfile:
    """Fit the load model to ``history`` (kWh per interval, ``load_kwh``; NaN = unknown).

    Only the last ``settings.lookback_days`` before ``history.end_utc`` are read; the history
    must be in time order (as :class:`IntervalData` is). See the module docstring for the
    model, the temperature rule and the fallback.
    """
    s = settings or LoadSettings()
    known = tuple(known_loads)
    if history is None or history.load_kwh is None or not len(history):
        return _typical(tz, known, None, "no load history")
    step = history.interval_s
    lo = int(np.searchsorted(history.start_utc, history.end_utc - s.lookback_days * _DAY))
    kwh = np.asarray(history.load_kwh[lo:], dtype=float)
    ok = np.isfinite(kwh)
    starts = history.start_utc[lo:][ok]
    kw = kwh[ok] * 3600.0 / step
    days = len(kw) * step / _DAY
    if not len(kw):
        return _typical(tz, known, None, "no valid load values in the history")
    pts, k = _subsample(starts, step)
    fs = local_fields(pts, tz)
    in_hist = tuple(x for x in known if x.in_history)
    if in_hist:
        kw = np.maximum(kw - _known_kw(in_hist, fs).reshape(-1, k).mean(axis=1), 0.0)
    mid = starts + step // 2  # the interval's clock hour: its middle's
    f = fs if k == 1 else local_fields(mid, tz)
    if step > 3600:
        return _typical(tz, known, (kw, fs, k, days),
                        f"history intervals are {step} s; an hour-of-day profile needs ≤ 3600 s")
    if days < s.min_history_days:
        return _typical(tz, known, (kw, fs, k, days),
                        f"only {days:.1f} days of load history; its own profile needs "
                        f"{s.min_history_days:g}")

    # one row per (local day, clock hour) seen: its mean kW (and mean °C)
    d0 = int(f.day.min())
    dh = (f.day - d0) * 24 + f.hour
    n_dh = np.bincount(dh)
    rows = np.flatnonzero(n_dh)
    y = np.bincount(dh, kw)[rows] / n_dh[rows]
    day, hour = rows // 24 + d0, rows % 24
    weekend = ((day + 3) % 7 >= 5).astype(np.intp)  # day 0 (1970-01-01) was a Thursday
    w = 0.5 ** ((day.max() - day) / s.half_life_days)
    if len(np.unique(hour)) < 24:
        missing = ", ".join(str(h) for h in sorted(set(range(24)) - set(hour.tolist())))
        return _typical(tz, known, (kw, fs, k, days), f"no load history in local hours {missing}")
    profile, lam = _profile(y, w, weekend, hour)

    source = (f"history: weekday/weekend hour-of-day profile from {days:.1f} days "
              f"(half-life {s.half_life_days:g} d)")
    fit = None
    if temperatures is not None:
        temp = temperatures.at(mid)
        have = np.isfinite(temp)
        n_t = np.bincount(dh[have], minlength=len(n_dh))[rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            t_rows = np.bincount(dh[have], temp[have], minlength=len(n_dh))[rows] / n_t
        fit, why = _fit_temperature(y - profile[weekend, hour], weekend, hour, day, w,
                                    np.where(n_t > 0, t_rows, np.nan), lam, s)
        source += "; " + why
    if known:
        source += "; known loads: " + ", ".join(f"{x.name} {x.kw:g} kW" for x in known)
    return LoadProfile(tz=tz, kind="history", profile_kw=profile, temperature=fit,
                       known_loads=known, history_days=days, source=source)


def _profile(y: np.ndarray, w: np.ndarray, weekend: np.ndarray, hour: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """(2, 24) kW by [weekend, hour] from (day, hour) means ``y`` with day weights ``w``,
    and the (24,) shrinkage factors λ.

    Each hour's weekday and weekend means are shrunk toward the hour's all-days mean by
    ``λ = max(0, 1 − s²/δ²)``, where δ is the weekend − weekday difference and s² its sampling
    variance (from the spread between days and the effective number of days in each cell):
    a difference no larger than its noise is not trusted, a clear one (an EV on weekdays) is
    kept whole. A cell seen on fewer than 2 days takes the all-days mean (λ = 0).
    """
    cell = weekend * 24 + hour
    sw = np.bincount(cell, w, 48)
    sw2 = np.bincount(cell, w * w, 48)
    ok = sw > 0
    mean = np.bincount(cell, w * y, 48) / np.where(ok, sw, 1.0)
    var = np.bincount(cell, w * (y - mean[cell]) ** 2, 48) / np.where(ok, sw, 1.0)
    n_eff = np.where(ok, sw**2 / np.where(ok, sw2, 1.0), 0.0)
    days = np.bincount(cell, minlength=48)  # one row per (day, hour): rows are days
    se2 = var / np.maximum(n_eff - 1.0, 1e-9)  # squared standard error of each cell mean
    mean, se2, days = mean.reshape(2, 24), se2.reshape(2, 24), days.reshape(2, 24)
    delta2 = (mean[1] - mean[0]) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(delta2 > 0, np.clip(1.0 - (se2[0] + se2[1]) / delta2, 0.0, 1.0), 0.0)
    lam = np.where((days >= 2).all(axis=0), lam, 0.0)
    return _shrunk(y, w, weekend, hour, lam), lam


def _shrunk(v: np.ndarray, w: np.ndarray, weekend: np.ndarray, hour: np.ndarray,
            lam: np.ndarray) -> np.ndarray:
    """(2, 24) weighted means of ``v`` by [weekend, hour], each shrunk toward its hour's
    all-days mean: ``pooled + λ · (cell − pooled)`` (a cell with no rows takes ``pooled``)."""
    cell = weekend * 24 + hour
    sw = np.bincount(cell, w, 48)
    mean = (np.bincount(cell, w * v, 48) / np.where(sw > 0, sw, 1.0)).reshape(2, 24)
    hw = np.bincount(hour, w, 24)
    pooled = np.bincount(hour, w * v, 24) / np.where(hw > 0, hw, 1.0)
    mean = np.where(sw.reshape(2, 24) > 0, mean, pooled)
    return pooled + lam * (mean - pooled)


def _fit_temperature(resid: np.ndarray, weekend: np.ndarray, hour: np.ndarray,
                     day: np.ndarray, w: np.ndarray, temp_c: np.ndarray, lam: np.ndarray,
                     s: LoadSettings) -> tuple[TemperatureFit | None, str]:
    """Per-hour fixed-effects regression of the profile residual (kW, one value per local
    (day, hour)) on cooling/heating degree-hours; see the module docstring for the rule.

    The slopes come from deviations from each (day type, hour) cell's own mean; a forecast
    measures degree-hours from the cell's mean shrunk like the profile (``lam``), so that
    the profile plus the term reproduces a load that is exactly linear in degree-hours."""
    have = np.isfinite(temp_c)
    t_days = len(np.unique(day[have]))
    if t_days < s.min_temperature_days:
        return None, (f"temperature not used (temperatures on {t_days} days of history, "
                      f"needs {s.min_temperature_days:g})")
    r, we, h, d, w, tc = resid[have], weekend[have], hour[have], day[have], w[have], temp_c[have]
    cell = we * 24 + h
    cdh = np.maximum(tc - s.cooling_base_c, 0.0)
    hdh = np.maximum(s.heating_base_c - tc, 0.0)
    sw = np.bincount(cell, w, 48)
    sw1 = np.where(sw > 0, sw, 1.0)
    # centre everything on its (day type, hour) cell's weighted mean: the fixed effects
    r_mean = np.bincount(cell, w * r, 48) / sw1
    c_mean = np.bincount(cell, w * cdh, 48) / sw1
    h_mean = np.bincount(cell, w * hdh, 48) / sw1
    y = r - r_mean[cell]
    x = np.stack([cdh - c_mean[cell], hdh - h_mean[cell]], axis=1)
    xtx = np.zeros((24, 2, 2))
    xty = np.zeros((24, 2))
    for i in range(2):
        xty[:, i] = np.bincount(h, w * x[:, i] * y, 24)
        for j in range(2):
            xtx[:, i, j] = np.bincount(h, w * x[:, i] * x[:, j], 24)
    beta = np.einsum("hij,hj->hi", np.linalg.pinv(xtx), xty)  # (24, 2)
    sse = float(np.sum(w * (y - np.sum(x * beta[h], axis=1)) ** 2))
    sst = float(np.sum(w * y**2))
    dw = w[np.unique(d, return_index=True)[1]]  # one weight per day
    n = 24.0 * dw.sum() ** 2 / np.sum(dw**2)  # effective observations: 24 per day
    if sst <= 1e-12 * max(1.0, float(np.sum(w))) or n <= 96:
        return None, "temperature not used (load does not vary beyond the profile)"
    r2 = 1.0 - (sse / (n - 96)) / (sst / (n - 48))
    if r2 < s.min_temperature_r2:
        return None, (f"temperature not used (explains {max(r2, 0):.0%} of the remaining "
                      f"variance, needs {s.min_temperature_r2:.0%})")
    fit = TemperatureFit(cooling_kw_per_k=beta[:, 0], heating_kw_per_k=beta[:, 1],
                         cdh_mean=_shrunk(cdh, w, we, h, lam),
                         hdh_mean=_shrunk(hdh, w, we, h, lam),
                         cooling_base_c=s.cooling_base_c, heating_base_c=s.heating_base_c,
                         r2=r2)
    return fit, (f"temperature: cooling/heating degree-hours (base {s.cooling_base_c:g}/"
                 f"{s.heating_base_c:g} °C) explain {r2:.0%} of the remaining variance")


def _typical(tz: str, known: tuple[KnownLoad, ...], hist, why: str) -> LoadProfile:
    """The typical profile; rescaled to the home's mean when ≥ 1 day of history is given."""
    scale, days, source = 1.0, 0.0, f"typical home profile ({why})"
    if hist is not None:
        kw, fs, k, days = hist  # kW per interval; local fields of its k sampling instants
        if days >= _MIN_SCALE_DAYS:
            hour = fs.hour + fs.minute / 60.0
            typ = household_kw(hour, fs.month)
            if not known:
                typ = typ + ev_kw(hour, fs.weekday)
            typ = typ.reshape(-1, k).mean(axis=1)
            scale = float(np.clip(kw.sum() / max(typ.sum(), 1e-9), *_SCALE_LIMITS))
            source = (f"typical home profile scaled ×{scale:.2f} to the home's mean over "
                      f"{days:.1f} days ({why})")
    if known:
        source += "; known loads: " + ", ".join(f"{x.name} {x.kw:g} kW" for x in known)
    return LoadProfile(tz=tz, kind="typical", typical_scale=scale, known_loads=known,
                       history_days=days, source=source)


def _known_kw(known: Sequence[KnownLoad], f: LocalFields) -> np.ndarray:
    out = np.zeros(len(f.hour))
    for x in known:
        out += x.kw_at(f)
    return out


def _subsample(starts: np.ndarray, step_s: int) -> tuple[np.ndarray, int]:
    """Instants sampling each step ``[start, start + step_s)``: the middles of ``k`` equal
    parts, ``k = ceil(step_s / 300)``. Returns (flat array of n·k instants, k)."""
    k = max(1, math.ceil(step_s / _SUB_S))
    offsets = ((2 * np.arange(k, dtype=np.int64) + 1) * step_s) // (2 * k)
    return (starts[:, None] + offsets[None, :]).ravel(), k


# --------------------------------------------------------------------------------------
# the one call the planner makes


def expected_load_kwh(starts_utc: np.ndarray, step_s: int, tz: str,
                      history: IntervalData | None = None, *,
                      known_loads: Sequence[KnownLoad] = (),
                      temperatures: Temperatures | None = None,
                      settings: LoadSettings | None = None) -> tuple[np.ndarray, str]:
    """Expected load per step, kWh, and which source it came from.

    Args:
        starts_utc: step starts, UTC epoch seconds (any spacing).
        step_s: step length, seconds.
        tz: IANA time zone of the home (the profile is by local clock hour).
        history: the home's recorded intervals with ``load_kwh`` (kWh per interval); only
            what lies before the forecast should be passed.
        known_loads: scheduled big loads (an EV charger) to add, by local clock.
        temperatures: outdoor °C over the history and the forecast steps, if known.
        settings: model tuning (:class:`LoadSettings`).
    """
    profile = fit_load_profile(history, tz, known_loads=known_loads,
                               temperatures=temperatures, settings=settings)
    return profile.forecast(starts_utc, step_s, temperatures)
