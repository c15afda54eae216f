"""Plausibility of metered energies: what a home's service can carry in an interval.

An interval's energy divided by its length is the average power through the meter. A
residential service of 400 A at 240 V carries at most 96 kW (the largest single-family
services; 200 A, 48 kW, is common): above the site's service size a figure is suspicious
and reported in the notes. No home draws or feeds a megawatt: above :data:`REFUSE_KW` the file
is refused, because such a figure is a unit mistake (Wh under a kWh header makes a 2 kWh
quarter-hour read as 2,000 kWh, i.e. 8 MW) or a corrupt cell, and billing it would print a
bill of millions without a word.
"""

from __future__ import annotations

import numpy as np

from adapters.usage._problems import Problems

#: kW: a 400 A, 240 V residential service, the default service size for the warning.
SERVICE_KW = 96.0
#: kW: average power over an interval above which a file is refused.
REFUSE_KW = 1000.0


def check_plausible(source: str, lines: list[int], cols: dict[str, np.ndarray],
                    interval_s: int, service_kw: float | None = None) -> list[str]:
    """Refuse intervals above :data:`REFUSE_KW` (a UsageError listing them, with the fix);
    return notes for intervals above the service size (``service_kw``, default
    :data:`SERVICE_KW`). ``cols`` holds kWh per interval (battery: signed, its magnitude
    is checked); ``lines`` the file line of each row."""
    hours = interval_s / 3600.0
    service = SERVICE_KW if service_kw is None else float(service_kw)
    probs = Problems(source)
    notes: list[str] = []
    for name, kwh in cols.items():
        if kwh is None or not len(kwh):
            continue
        with np.errstate(over="ignore"):
            kw = np.abs(np.asarray(kwh, float)) / hours
        over = np.flatnonzero(kw > REFUSE_KW)
        as_wh = float(kw.max()) / 1000.0 <= service
        fix = ("the file looks like it is in Wh: divide every energy by 1000, or export it "
               "in kWh" if as_wh else
               "correct or remove the row: no home's service carries a megawatt")
        for i in over:
            if probs.add(lines[i] if i < len(lines) else None,
                         f"{name} {kwh[i]:,.6g} kWh in a {interval_s // 60}-min interval is "
                         f"{kw[i]:,.0f} kW on average", fix):
                break
        if not len(over):
            high = np.flatnonzero(kw > service)
            if len(high):
                i = int(high[np.argmax(kw[high])])
                where = f"{source}:{lines[i]}" if i < len(lines) else source
                notes.append(
                    f"{name} reaches {kw[i]:,.1f} kW on average in {len(high)} interval(s) "
                    f"(largest at {where}), above a {service:g} kW service: check the units "
                    "(Wh instead of kWh?) and the meter's multiplier")
    probs.raise_if_any()
    return notes
