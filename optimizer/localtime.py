"""Vectorised UTC → local wall-clock fields for a time zone, DST included.

Python's :mod:`zoneinfo` converts one timestamp at a time. A year of 5-minute intervals is
105,120 timestamps, so instead we find the zone's UTC-offset transitions inside the span once
(a daily probe plus bisection to the exact second: a few hundred zoneinfo calls), then map
every timestamp to its offset with :func:`numpy.searchsorted`. Local fields then come from
integer arithmetic on local epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

_DAY = 86400


def _offset_s(zone: ZoneInfo, t: int) -> int:
    return int(datetime.fromtimestamp(t, UTC).astimezone(zone).utcoffset().total_seconds())


def utc_offsets(start_utc: np.ndarray, tz: str) -> np.ndarray:
    """UTC offset in seconds (local − UTC) at each UTC epoch second in ``start_utc``."""
    t = np.asarray(start_utc, dtype=np.int64)
    if t.size == 0:
        return np.zeros(0, dtype=np.int64)
    zone = ZoneInfo(tz)
    lo, hi = int(t.min()), int(t.max())
    probes = [*range(lo, hi, _DAY), hi]
    offsets = [_offset_s(zone, p) for p in probes]
    change_at: list[int] = []
    change_to: list[int] = []
    for a, b, oa, ob in zip(probes, probes[1:], offsets, offsets[1:], strict=False):
        if oa == ob:
            continue
        # bisect for the first second with the new offset (one transition per day at most)
        while b - a > 1:
            mid = (a + b) // 2
            if _offset_s(zone, mid) == oa:
                a = mid
            else:
                b = mid
        change_at.append(b)
        change_to.append(ob)
    table_at = np.array([lo, *change_at], dtype=np.int64)
    table_off = np.array([offsets[0], *change_to], dtype=np.int64)
    idx = np.searchsorted(table_at, t, side="right") - 1
    return table_off[idx]


@dataclass(frozen=True)
class LocalFields:
    """Local wall-clock fields for each timestamp (all int arrays, same length).

    ``day`` counts local calendar days since 1970-01-01; ``weekday`` is 0 = Monday.
    """

    local_s: np.ndarray
    year: np.ndarray
    month: np.ndarray  # 1..12
    dom: np.ndarray  # day of month 1..31
    day: np.ndarray  # local days since epoch
    weekday: np.ndarray  # 0 = Monday .. 6 = Sunday
    hour: np.ndarray  # 0..23
    minute: np.ndarray  # 0..59


def local_fields(start_utc: np.ndarray, tz: str) -> LocalFields:
    """Local calendar fields of UTC epoch seconds in time zone ``tz`` (IANA name)."""
    t = np.asarray(start_utc, dtype=np.int64)
    local_s = t + utc_offsets(t, tz)
    day = np.floor_divide(local_s, _DAY)
    sod = local_s - day * _DAY
    d64 = day.astype("datetime64[D]")
    months = d64.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    dom = (d64 - months.astype("datetime64[D]")).astype(np.int64) + 1
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (3)
    return LocalFields(
        local_s=local_s,
        year=year,
        month=month,
        dom=dom,
        day=day,
        weekday=weekday,
        hour=sod // 3600,
        minute=(sod % 3600) // 60,
    )


def local_midnight_utc(year: int, month: int, day: int, tz: str) -> int:
    """UTC epoch seconds of local midnight starting a calendar date."""
    dt = datetime(year, month, day, tzinfo=ZoneInfo(tz))
    return int(dt.timestamp())
