"""Small builders for tests: tariffs from TOML snippets, hourly data from daily patterns."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from optimizer.intervals import IntervalData
from optimizer.tariff import Tariff

TWO_PERIOD_UTC = """
id = "test"
name = "test tariff"
timezone = "UTC"
[calendar]
seasons = { all = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] }
[[periods]]
name = "peak"
hours = [[16, 21]]
[[periods]]
name = "off_peak"
hours = [[0, 24]]
[import_rates]
all = { peak = 0.50, off_peak = 0.30 }
"""


def tariff(text: str, **sections: str) -> Tariff:
    """A tariff from TOML text (dedented); ``sections`` are appended as ``[name]`` blocks."""
    body = textwrap.dedent(text)
    for name, block in sections.items():
        body += f"\n[{name}]\n" + textwrap.dedent(block)
    return Tariff.from_text(body, source="test.toml")


def hourly(
    first: date,
    last: date,
    pattern,
    tz: str = "UTC",
    *,
    with_load: bool = False,
) -> IntervalData:
    """Hourly intervals for local dates first..last (inclusive) in ``tz``.

    ``pattern(day: date, hour: int) -> (import_kwh, export_kwh)`` or, with ``with_load``,
    ``(import_kwh, export_kwh, load_kwh, pv_kwh)``. Local hours follow the wall clock, so a
    DST day has 23 or 25 of them (the repeated hour is called twice with the same hour).
    """
    zone = ZoneInfo(tz)
    t0 = int(datetime(first.year, first.month, first.day, tzinfo=zone).timestamp())
    end = last + timedelta(days=1)
    t1 = int(datetime(end.year, end.month, end.day, tzinfo=zone).timestamp())
    starts = np.arange(t0, t1, 3600, dtype=np.int64)
    rows = []
    for t in starts:
        local = datetime.fromtimestamp(int(t), zone)
        rows.append(pattern(local.date(), local.hour))
    arr = np.array(rows, dtype=float)
    kw = {}
    if with_load:
        kw = {"load_kwh": arr[:, 2], "pv_kwh": arr[:, 3]}
    return IntervalData(start_utc=starts, interval_s=3600, import_kwh=arr[:, 0],
                        export_kwh=arr[:, 1], source="test data", **kw)
