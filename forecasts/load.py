"""Offline load forecast: the home's own recent hour-of-day profile, or a typical one.

Until issue 5's full forecaster: with history (kWh per interval with a load column), the
mean by local hour of day and weekday/weekend over the last 28 days; without, a typical
Californian home profile (≈ 28 kWh/day with evening peaks, summer cooling and an EV
charged after midnight). Returns kWh per step.
"""

from __future__ import annotations

import numpy as np

from optimizer.intervals import IntervalData
from optimizer.localtime import local_fields


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


def expected_load_kwh(starts_utc: np.ndarray, step_s: int, tz: str,
                      history: IntervalData | None = None) -> tuple[np.ndarray, str]:
    """Expected load per step (kWh) and which source it came from."""
    starts = np.asarray(starts_utc, dtype=np.int64)
    f = local_fields(starts + step_s // 2, tz)
    if history is not None and history.load_kwh is not None and len(history):
        recent = history.start_utc >= history.end_utc - 28 * 86400
        h = local_fields(history.start_utc[recent], tz)
        weekend_h = (h.weekday >= 5).astype(int)
        kw = history.load_kwh[recent] * 3600.0 / history.interval_s
        sums = np.zeros((2, 24))
        counts = np.zeros((2, 24))
        np.add.at(sums, (weekend_h, h.hour), kw)
        np.add.at(counts, (weekend_h, h.hour), 1)
        if (counts > 0).all():
            profile = sums / counts
            return profile[(f.weekday >= 5).astype(int), f.hour] * step_s / 3600.0, \
                "history (28-day hour-of-day profile)"
    kw = typical_load_kw(f.hour + f.minute / 60.0, f.month, f.weekday)
    return kw * step_s / 3600.0, "typical home profile"
