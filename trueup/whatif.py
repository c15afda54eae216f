"""Complete utility data for a what-if: load and PV from a meter's import and export.

The backtest replays load and PV. An owner's own data often has less: a PG&E Green Button
download has only the meter's import and export; a monitor may have load but not PV. This
module fills in what is missing, exactly where an identity allows and by an estimate where
not, and says which columns were estimated:

- load and PV present: nothing to do;
- PV present, load missing: ``load = import − export + PV (+ battery discharge)``, exact;
- load present, PV missing: ``PV = load − import + export (− battery discharge)``, exact;
- neither: PV estimated for the configured arrays (:func:`forecasts.backcast.backcast_pv`),
  then the load rebuilt from it.

The identities hold for a home whose meter saw no battery. When the file has no battery column
and its nights look battery-served (imports near zero after dark), the notes say that the
rebuilt load then carries the battery's own flows, and what to give instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from forecasts.backcast import backcast_pv
from optimizer.intervals import IntervalData

#: an interval after dark importing less than this average power (kW) looks battery-served
NIGHT_IMPORT_KW = 0.1
#: the share of such intervals above which the notes suspect a battery in the data
BATTERY_SUSPECT_SHARE = 0.25


@dataclass(frozen=True)
class Completed:
    """Usage with load and PV, and how they were obtained.

    Attributes:
        data: the usage with ``load_kwh`` and ``pv_kwh`` filled in.
        estimated: the columns that were estimated or rebuilt (``"pv_kwh"``, ``"load_kwh"``).
        notes: one sentence per column filled in (method, source), and warnings.
    """

    data: IntervalData
    estimated: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def complete_usage(data: IntervalData, cfg) -> Completed:
    """``data`` with load and PV, estimating what is missing for the site in ``cfg`` (a
    ``TrueupConfig``: location, time zone, PV arrays). Module docstring for the rules."""
    if data.load_kwh is not None and data.pv_kwh is not None:
        return Completed(data=data)
    imp, exp = data.import_kwh, data.export_kwh
    batt = data.battery_kwh if data.battery_kwh is not None else np.zeros(len(data))
    notes: list[str] = []
    estimated: list[str] = []
    if data.pv_kwh is None and data.load_kwh is not None:
        pv = np.maximum(data.load_kwh - imp + exp - batt, 0.0)
        out = replace(data, pv_kwh=pv)
        return Completed(data=out, estimated=("pv_kwh",),
                         notes=("pv_kwh rebuilt as load − import + export"
                                + (" − battery" if data.battery_kwh is not None else "")
                                + " (exact from the file's own columns)",))
    if data.pv_kwh is None:
        site = cfg.site
        b = backcast_pv(data.start_utc, data.interval_s, site.timezone, site.latitude,
                        site.longitude, cfg.pv, imp, exp)
        pv = b.pv_kwh
        estimated.append("pv_kwh")
        notes.append(b.method(cfg.pv))
        if data.battery_kwh is None:
            share = _battery_served_share(data, b.clear_kwh)
            if share > BATTERY_SUSPECT_SHARE:
                notes.append(
                    f"{share:.0%} of the intervals after dark import less than "
                    f"{NIGHT_IMPORT_KW * 1000:.0f} W: a battery seems to be serving this home "
                    "in the data. The rebuilt load then includes the battery's charging and "
                    "discharging, and the no-battery bill is not this home's: give data from "
                    "before the battery, or the Tesla app's energy export (load and PV "
                    "measured)")
    else:
        pv = data.pv_kwh
    load = np.maximum(imp - exp + pv + batt, 0.0)
    estimated.append("load_kwh")
    notes.append("load_kwh rebuilt as import − export + PV"
                 + (" + battery" if data.battery_kwh is not None else "")
                 + (" (PV estimated above)" if "pv_kwh" in estimated else
                    " (exact from the file's own columns)"))
    out = replace(data, load_kwh=load, pv_kwh=pv)
    return Completed(data=out, estimated=tuple(estimated), notes=tuple(notes))


def _battery_served_share(data: IntervalData, clear_kwh: np.ndarray) -> float:
    """The share of intervals with the sun down whose import averages under
    :data:`NIGHT_IMPORT_KW` (a home's standby load rarely does; a battery's does)."""
    dark = clear_kwh <= 0
    if not dark.any():
        return 0.0
    limit = NIGHT_IMPORT_KW * data.interval_s / 3600.0
    return float(np.mean(data.import_kwh[dark] < limit))
