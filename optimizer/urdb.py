"""Import a tariff from the OpenEI Utility Rate Database (URDB, API v7/v8 JSON) into trueup's
tariff TOML (the schema is in the README, "The tariff file").

:func:`urdb_to_toml` is pure: it takes the parsed JSON (one rate object, or the API's
``{"items": [...]}`` wrapper) and returns ``(toml_text, warnings)``. :func:`import_urdb_file`
reads a file and calls it. The text loads with :meth:`optimizer.tariff.Tariff.from_text` and
gives, for every month × weekday/weekend × hour, the URDB schedule's period and rates
(``rate + adj``, plus ``fueladjustmentsmonthly`` when present), in $/kWh.

What URDB does not hold is written as a default with a ``#`` comment and listed in the
warnings: the NBC ($/kWh), the settlement (true-up month, leftover credit, NSC), an export cap,
the time zone and holidays. Demand charges are imported (``[demand]``, see :func:`_demand`).

Mapping:

- seasons: calendar months whose weekday row, weekend row (and monthly fuel adjustment) are
  identical form one season; two seasons are named ``summer`` (holds July) and ``winter``
  (holds January), others by month range (``jun_sep``) or ``s1``, ``s2``...
- periods: URDB period index N becomes period ``pN``; each (period, season, day type) gives
  ``[[periods]]`` entries with ``seasons = [...]`` and ``days``, hours merged to
  ``[start, end)`` ranges. Entries never overlap, so their order does not matter.
- tiers: ``max`` with unit ``kWh`` → ``up_to_kwh`` (kWh per billing month); ``kWh daily`` →
  ``up_to_kwh_per_day``; other units are refused.
- ``dgrules``: Net Metering → ``nem``; Net Billing Instantaneous/Hourly → ``net_billing``
  netted instantaneously/hourly; Buy All Sell All → ``buy_all_sell_all``.
- rules URDB cannot hold are written as NREL SAM applies them, each with a CHECK comment and
  a warning: a tiered NEM rate credits a month's net export in the tiers it fills
  (``export.surplus_tiers = "fill"``); when a month's periods differ from the month before
  at the same clock hour (URDB numbers each season's periods apart), banked kWh follow the
  clock hour (``settlement.kwh_bank_pairing = "time_of_day"``, used with kWh carryover).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from optimizer.errors import TariffError

__all__ = ["DEFAULT_TIMEZONE", "DGRULES", "import_urdb_file", "urdb_to_toml"]

DEFAULT_TIMEZONE = "America/Los_Angeles"

#: URDB ``dgrules`` → (export.scheme, export.netting); netting None = the loader's default.
DGRULES: dict[str, tuple[str, str | None]] = {
    "Net Metering": ("nem", "billing_period"),
    "Net Billing Instantaneous": ("net_billing", "instantaneous"),
    "Net Billing Hourly": ("net_billing", "hourly"),
    "Buy All Sell All": ("buy_all_sell_all", None),
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_TIER_UNITS = {"kWh": False, "kWh daily": True}  # unit → limit is per day
_NOTES = ("Imported from OpenEI URDB. Set charges.nbc_per_kwh, [settlement] and any export cap "
          "from your tariff sheet.")
_DEMAND_WINDOWS = (5, 15, 30, 60)
#: URDB keys holding prose; the importer names them, it cannot read them
_FREE_TEXT = ("description", "basicinformationcomments", "energycomments", "demandcomments")
#: URDB keys saying who may take the rate (eligibility, not billing)
_APPLICABILITY = ("peakkwcapacitymin", "peakkwcapacitymax", "peakkwcapacityhistory",
                  "voltagecategory", "voltageminimum", "voltagemaximum")
_ROUND = 10  # decimals kept on $/kWh sums (0.11 + 0.03 → 0.14, not 0.14000000000000001)


@dataclass(frozen=True)
class _Tier:
    limit: float | None  # cumulative kWh (per month, or per day when per_day); None = no limit
    per_day: bool
    rate: float  # $/kWh, rate + adj
    sell: float | None  # $/kWh export value, when URDB gives one


@dataclass(frozen=True)
class _Season:
    name: str
    months: list[int]  # 1-12, in calendar-range order
    weekday: tuple[int, ...]  # 24 URDB period indices
    weekend: tuple[int, ...]
    fuel: float  # $/kWh added to every import rate in these months


# --------------------------------------------------------------------------------------
# Public API


def urdb_to_toml(data: dict[str, Any], *, item: int = 0, timezone: str = DEFAULT_TIMEZONE,
                 source: str = "<urdb>") -> tuple[str, list[str]]:
    """Convert a URDB rate (parsed JSON) to trueup tariff TOML.

    Args:
        data: one URDB rate object, or the API response ``{"items": [rate, ...]}``.
        item: which rate of ``items`` to import (0-based).
        timezone: IANA zone of the utility (URDB has none); default America/Los_Angeles.
        source: the file name, used in error messages (``"rate.json: energyratestructure"``).

    Returns:
        ``(toml_text, warnings)``: the tariff (rates in $/kWh, fixed charges in $/month or
        $/day, minimums in $/day, $/month or $/year) and one sentence per thing the user must
        check or fill in.

    Raises:
        TariffError: malformed or unsupported input, naming the JSON key and the fix.
    """
    warnings: list[str] = []
    rate, prefix = _select_item(data, item, source, warnings)
    where = _Where(source, prefix)
    try:
        ZoneInfo(timezone)
    except Exception:
        raise TariffError(f"unknown time zone {timezone!r}", where=f"{source}: timezone argument",
                          fix="use an IANA name such as 'America/Los_Angeles'") from None

    ers = rate.get("energyratestructure")
    if not isinstance(ers, list) or not ers:
        raise TariffError("no energyratestructure: this URDB rate has no energy charges"
                          if ers is None or ers == [] else
                          f"energyratestructure is a {type(ers).__name__}, not a list of periods",
                          where=where("energyratestructure"),
                          fix="export the rate with detail=full from the URDB API, or pick a "
                          "rate that has energy charges")
    weekday = _schedule(rate, "energyweekdayschedule", len(ers), where)
    weekend = _schedule(rate, "energyweekendschedule", len(ers), where)
    used = sorted({p for row in weekday + weekend for p in row})
    periods = {p: _period_tiers(ers, p, where, warnings) for p in used}
    unused = [p for p in range(len(ers)) if p not in periods]
    if unused:
        warnings.append(f"energyratestructure periods {unused} appear in no schedule hour and "
                        "were not imported")
    fuel = _fuel_adjustments(rate, where, warnings)
    seasons = _seasons(weekday, weekend, fuel)

    scheme, netting = _export_scheme(rate, where, warnings)
    sell = _sell_rates(scheme, periods, warnings)
    charges = _charges(rate, where, warnings)
    demand = _demand(rate, where, warnings)
    if rate.get("fixedchargeeaaddl"):
        warnings.append("fixedchargeeaaddl (charge per additional meter) is not imported")
    for key in ("energyattrs", "fixedattrs"):
        if rate.get(key):
            warnings.append(f"{key} (free-form extra charges) is not imported: check it by hand")
    tiered = any(len(t) > 1 for t in periods.values())
    if scheme == "nem" and tiered:
        warnings.append("URDB does not say in which tiers a month's net export is credited: "
                        "export.surplus_tiers = 'fill' was written (the surplus fills the "
                        "tiers from the first up, as NREL SAM credits it); set 'first' if "
                        "your tariff credits it all at the first tier's rate")
    pair_by_hour = _periods_change_at_the_same_hour(weekday)
    if pair_by_hour:
        warnings.append("URDB numbers each season's periods apart: settlement.kwh_bank_pairing"
                        " = 'time_of_day' was written, so with carryover = 'kwh' banked kWh "
                        "offset the period at the same clock hour in later months (NREL SAM's "
                        "rule); set 'period' to keep each period's kWh to itself")
    if len(periods) > 1:
        warnings.extend(_unpaired_bank_periods(weekday, weekend))
    text_keys = [k for k in _FREE_TEXT if isinstance(rate.get(k), str) and rate[k].strip()]
    if text_keys:
        warnings.append(f"{', '.join(text_keys)}: free text, not imported; read it for charges "
                        "or conditions the rate's structured fields do not hold")
    limits = {k: rate[k] for k in _APPLICABILITY if rate.get(k) not in (None, "")}
    if limits:
        shown = ", ".join(f"{k} = {v!r}" for k, v in limits.items())
        warnings.append(f"applicability limits ({shown}) are not imported or checked: make "
                        "sure the rate applies to your service")
    warnings.extend([
        "URDB has no NBC field: charges.nbc_per_kwh = 0; set it from your tariff sheet",
        "URDB has no settlement fields (true-up month, carryover, leftover credit, NSC rate): "
        "defaults were written to [settlement]; fill them in from your tariff",
        "URDB has no export-cap field: no [export_cap] was written; add one if your "
        "interconnection caps exports (NEM-PS)",
        f"URDB has no time zone: timezone = {timezone!r} was used; pass the utility's zone "
        "if it is elsewhere",
        "URDB has no holiday list: calendar.holidays = 'none'; set 'US' or 'pge' if your "
        "tariff bills holidays as weekends",
    ])
    end = _date(rate.get("enddate"), timezone)
    start = _date(rate.get("startdate"), timezone)
    if end and start and end < start:
        warnings.append(f"URDB's enddate ({end}) is before its startdate ({start}): the "
                        "record's dates are inconsistent; effective = startdate was written — "
                        "check both against the utility's tariff sheet")
    elif end:
        warnings.append(f"URDB gives this rate an end date ({end}): check it is still current")

    text = _emit(rate, seasons, periods, sell, charges, scheme, netting, timezone,
                 pair_by_hour)
    if demand:
        text += "\n" + _emit_demand(demand, [s.name for s in seasons])
    _self_check(text, source)
    return text, warnings


def import_urdb_file(path: str | Path, *, item: int = 0,
                     timezone: str = DEFAULT_TIMEZONE) -> tuple[str, list[str]]:
    """Read a URDB JSON file (API response or one rate) and convert it with
    :func:`urdb_to_toml`. Returns ``(toml_text, warnings)``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise TariffError(f"cannot read the file: {e.strerror}", where=str(p),
                          fix="give the path of a URDB JSON file") from None
    except json.JSONDecodeError as e:
        raise TariffError(f"not valid JSON: {e.msg}", where=f"{p}:{e.lineno}",
                          fix="save the URDB API response (format=json) unchanged") from None
    return urdb_to_toml(data, item=item, timezone=timezone, source=str(p))


# --------------------------------------------------------------------------------------
# Reading the URDB rate


class _Where:
    """Builds ``where`` strings: ``"rate.json: items[0].energyweekdayschedule[6][17]"``."""

    def __init__(self, source: str, prefix: str) -> None:
        self.source, self.prefix = source, prefix

    def __call__(self, key: str) -> str:
        return f"{self.source}: {self.prefix}{key}"


def _select_item(data: Any, item: int, source: str,
                 warnings: list[str]) -> tuple[dict[str, Any], str]:
    if not isinstance(data, dict):
        raise TariffError(f"the JSON is a {type(data).__name__}, not an object", where=source,
                          fix="give a URDB API response {\"items\": [...]} or one rate object")
    if "items" not in data:
        return data, ""
    items = data["items"]
    if not isinstance(items, list) or not items:
        raise TariffError("the response holds no rates (items is empty)",
                          where=f"{source}: items",
                          fix="search URDB again (check the label, address or sector)")
    if not 0 <= item < len(items):
        raise TariffError(f"item {item} asked for, the response holds {len(items)} rate(s)",
                          where=f"{source}: items",
                          fix=f"pass an item between 0 and {len(items) - 1}")
    rate = items[item]
    if not isinstance(rate, dict):
        raise TariffError("the item is not a rate object", where=f"{source}: items[{item}]",
                          fix="give a URDB API response unchanged")
    if len(items) > 1:
        listing = "; ".join(f"{i}: {r.get('name', '?')!s} ({r.get('label', '?')!s})"
                            for i, r in enumerate(items[:10]) if isinstance(r, dict))
        more = f"; ... {len(items) - 10} more" if len(items) > 10 else ""
        warnings.append(f"the file holds {len(items)} rates; imported item {item} "
                        f"({rate.get('name', '?')!s}); pass item=N for another: {listing}{more}")
    return rate, f"items[{item}]."


def _number(value: Any, where: str, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TariffError(f"{what} is {value!r}, not a finite number", where=where,
                          fix="correct the value in the JSON (a number, e.g. 0.25)")
    return float(value)


def _schedule(rate: dict[str, Any], key: str, n_periods: int,
              where: _Where) -> list[tuple[int, ...]]:
    sched = rate.get(key)
    fix = "URDB schedules are 12 rows (January first) of 24 period indices (hour 0 first)"
    if sched is None:
        raise TariffError(f"{key} is missing", where=where(key),
                          fix=f"export the rate with detail=full; {fix}")
    if not isinstance(sched, list) or len(sched) != 12:
        n = len(sched) if isinstance(sched, list) else type(sched).__name__
        raise TariffError(f"{key} is not 12×24: it has {n} rows", where=where(key), fix=fix)
    rows = []
    for m, row in enumerate(sched):
        if not isinstance(row, list) or len(row) != 24:
            n = len(row) if isinstance(row, list) else type(row).__name__
            raise TariffError(f"{key} is not 12×24: row {m} ({_MONTHS[m]}) has {n} hours",
                              where=where(f"{key}[{m}]"), fix=fix)
        row = [int(p) if isinstance(p, float) and p.is_integer() else p for p in row]
        for h, p in enumerate(row):
            if isinstance(p, bool) or not isinstance(p, int) or p < 0:
                raise TariffError(f"{key} has {p!r} for {_MONTHS[m]} hour {h}, not a period "
                                  "index", where=where(f"{key}[{m}][{h}]"), fix=fix)
            if p >= n_periods:
                raise TariffError(f"{key} uses period {p} ({_MONTHS[m]} hour {h}), but "
                                  f"energyratestructure has only {n_periods} period(s) "
                                  f"(0-{n_periods - 1})", where=where(f"{key}[{m}][{h}]"),
                                  fix=f"add period {p} to energyratestructure or correct the "
                                  "schedule (indices are 0-based)")
        rows.append(tuple(row))
    return rows


def _period_tiers(ers: list[Any], p: int, where: _Where, warnings: list[str]) -> list[_Tier]:
    key = f"energyratestructure[{p}]"
    raw = ers[p]
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise TariffError(f"period {p} has no tiers (got {raw!r})", where=where(key),
                          fix="give each period a list of tiers like [{\"rate\": 0.25, "
                          "\"unit\": \"kWh\"}]")
    tiers: list[_Tier] = []
    last_limit = -1.0
    for k, t in enumerate(raw):
        tk = f"{key}[{k}]"
        is_last = k == len(raw) - 1
        r = _number(t.get("rate"), where(f"{tk}.rate"), "rate")
        adj = _number(t.get("adj"), where(f"{tk}.adj"), "adj")
        if r is None and adj is None:
            raise TariffError(f"period {p} tier {k} has no rate", where=where(tk),
                              fix="give the tier a \"rate\" in $/kWh")
        total = round((r or 0.0) + (adj or 0.0), _ROUND)
        sell = _number(t.get("sell"), where(f"{tk}.sell"), "sell")
        if sell is not None:
            sell = round(sell, _ROUND)
        limit = _number(t.get("max"), where(f"{tk}.max"), "max")
        unit = t.get("unit") or "kWh"
        if len(raw) > 1 and unit not in _TIER_UNITS:
            raise TariffError(
                f"period {p} tier {k}: tier unit {unit!r} is not supported (trueup tier limits "
                "are kWh per billing month or kWh per day)", where=where(f"{tk}.unit"),
                fix="convert the tier limits yourself (e.g. 'kWh/kW': multiply max by your "
                "billing demand in kW) and set unit to 'kWh' or 'kWh daily' in the JSON, or "
                "write the tiers in the tariff TOML by hand")
        if limit is not None and limit < 0:
            raise TariffError(f"period {p} tier {k} has a negative max ({limit:g})",
                              where=where(f"{tk}.max"), fix="tier maxima are kWh >= 0")
        if is_last:
            if limit is not None:
                warnings.append(f"period {p}: the last tier's max ({limit:g} {unit}) was "
                                "dropped: usage above it is billed at the last tier's rate")
            limit = None
        elif limit is None:
            raise TariffError(f"period {p} tier {k} has no max but is not the last tier",
                              where=where(f"{tk}.max"),
                              fix="give every tier but the last a max (kWh)")
        elif limit <= last_limit:
            raise TariffError(f"period {p}: tier maxima must increase ({limit:g} after "
                              f"{last_limit:g})", where=where(f"{tk}.max"),
                              fix="order the tiers by max; URDB maxima are cumulative kWh")
        if limit is not None:
            last_limit = limit
        tiers.append(_Tier(limit, _TIER_UNITS.get(unit, False) and limit is not None,
                           total, sell))
    kinds = {t.per_day for t in tiers if t.limit is not None}
    if len(kinds) > 1:
        raise TariffError(f"period {p} mixes 'kWh' and 'kWh daily' tier units", where=where(key),
                          fix="use one unit for all tiers of a period")
    return tiers


def _fuel_adjustments(rate: dict[str, Any], where: _Where, warnings: list[str]) -> list[float]:
    raw = rate.get("fueladjustmentsmonthly")
    if not raw:
        return [0.0] * 12
    if not isinstance(raw, list) or len(raw) != 12:
        raise TariffError("fueladjustmentsmonthly must hold 12 values ($/kWh, January first)",
                          where=where("fueladjustmentsmonthly"),
                          fix="give 12 numbers, or remove the key")
    vals = [_number(v, where(f"fueladjustmentsmonthly[{i}]"), "fuel adjustment") or 0.0
            for i, v in enumerate(raw)]
    if any(vals):
        warnings.append("fueladjustmentsmonthly ($/kWh by month) was added to the import rates "
                        "of each month")
    return vals


# --------------------------------------------------------------------------------------
# Seasons


def _month_range_name(months: list[int]) -> str | None:
    """``[6, 7, 8, 9]`` → ``"jun_sep"``; ``[11, 12, 1]`` → ``"nov_jan"``; None if not a range."""
    ms = set(months)
    if len(ms) == 12:
        return "all_year"
    starts = [m for m in ms if (m - 2) % 12 + 1 not in ms]
    if len(starts) != 1:
        return None
    a = starts[0]
    b = (a - 1 + len(ms) - 1) % 12 + 1
    return _MONTHS[a - 1] if a == b else f"{_MONTHS[a - 1]}_{_MONTHS[b - 1]}"


def _range_order(months: list[int]) -> list[int]:
    """Months in calendar-range order: ``[1, 2, 11, 12]`` → ``[11, 12, 1, 2]``."""
    ms = sorted(months)
    starts = [m for m in ms if (m - 2) % 12 + 1 not in ms]
    if len(starts) == 1 and len(ms) < 12:
        i = ms.index(starts[0])
        return ms[i:] + ms[:i]
    return ms


def _seasons(weekday: list[tuple[int, ...]], weekend: list[tuple[int, ...]],
             fuel: list[float]) -> list[_Season]:
    groups: dict[tuple[Any, ...], list[int]] = {}
    for m in range(12):
        groups.setdefault((weekday[m], weekend[m], fuel[m]), []).append(m + 1)
    keys = list(groups)
    names: list[str] = []
    if len(keys) == 1:
        names = ["all_year"]
    elif len(keys) == 2 and all((7 in groups[k]) != (1 in groups[k]) for k in keys):
        names = ["summer" if 7 in groups[k] else "winter" for k in keys]
    else:
        ranged = [_month_range_name(groups[k]) for k in keys]
        if all(ranged) and len(set(ranged)) == len(ranged):
            names = [str(n) for n in ranged]
        else:
            names = [f"s{i + 1}" for i in range(len(keys))]
    return [_Season(n, _range_order(groups[k]), k[0], k[1], k[2]) for n, k in zip(names, keys,
                                                                                   strict=True)]


def _periods_change_at_the_same_hour(weekday: list[tuple[int, ...]]) -> bool:
    """Whether some month's weekday schedule has, at one of the hours
    :data:`~optimizer.tariff.KWH_BANK_HOURS`, another period than the month before: then
    ``kwh_bank_pairing = "time_of_day"`` pairs periods that ``"period"`` keeps apart."""
    from optimizer.tariff import KWH_BANK_HOURS

    return any(weekday[m - 1][h] != weekday[m][h] for m in range(12) for h in KWH_BANK_HOURS)


def _unpaired_bank_periods(weekday: list[tuple[int, ...]],
                           weekend: list[tuple[int, ...]]) -> list[str]:
    """Periods that ``kwh_bank_pairing = "time_of_day"`` cannot pair: in some month they are
    at none of the weekday hours :data:`~optimizer.tariff.KWH_BANK_HOURS`."""
    from optimizer.tariff import KWH_BANK_HOURS

    missed: dict[int, list[int]] = {}
    for m in range(12):
        at_hours = {weekday[m][h] for h in KWH_BANK_HOURS}
        for p in sorted(set(weekday[m]) | set(weekend[m])):
            if p not in at_hours:
                missed.setdefault(p, []).append(m + 1)
    hours = ", ".join(map(str, KWH_BANK_HOURS))
    return [f"period p{p} is at none of the weekday hours {hours} in months {months}: with "
            f"carryover = 'kwh' its banked kWh stay with p{p} (NREL SAM drops them)"
            for p, months in missed.items()]


# --------------------------------------------------------------------------------------
# Charges and export


def _charges(rate: dict[str, Any], where: _Where, warnings: list[str]) -> dict[str, float]:
    out = dict.fromkeys(("fixed_per_month", "fixed_per_day", "minimum_per_day",
                         "minimum_per_month", "annual_minimum"), 0.0)
    fixed = _number(rate.get("fixedchargefirstmeter"), where("fixedchargefirstmeter"),
                    "fixedchargefirstmeter")
    monthly = _number(rate.get("fixedmonthlycharge"), where("fixedmonthlycharge"),
                      "fixedmonthlycharge")
    if monthly and not fixed:
        # URDB's older field, $/month (NREL SAM's URDB converter reads only the new one)
        if monthly < 0:
            raise TariffError(f"fixedmonthlycharge is negative ({monthly:g} $/month)",
                              where=where("fixedmonthlycharge"),
                              fix="trueup takes fixed charges >= 0: net credits into the rates")
        out["fixed_per_month"] = monthly
        warnings.append(f"fixedmonthlycharge (URDB's older field) imported as "
                        f"charges.fixed_per_month = {monthly:g} $/month (NREL SAM's URDB "
                        "converter ignores this field: add it there by hand to compare)")
    elif monthly and fixed and monthly != fixed:
        warnings.append(f"fixedmonthlycharge ({monthly:g} $/month, URDB's older field) was not "
                        f"imported: fixedchargefirstmeter ({fixed:g}) was; check which your "
                        "tariff charges")
    if fixed:
        units = rate.get("fixedchargeunits")
        if units is None:
            units = "$/month"
            warnings.append("fixedchargeunits is missing: fixedchargefirstmeter read as $/month")
        if fixed < 0:
            raise TariffError(f"fixedchargefirstmeter is negative ({fixed:g} {units})",
                              where=where("fixedchargefirstmeter"),
                              fix="trueup takes fixed charges >= 0: net credits into the rates")
        if units == "$/month":
            out["fixed_per_month"] = fixed
        elif units == "$/day":
            out["fixed_per_day"] = fixed
        elif units == "$/year":
            out["fixed_per_month"] = round(fixed / 12, _ROUND)
            warnings.append(f"fixed charge {fixed:g} $/year written as {fixed / 12:g} $/month")
        else:
            raise TariffError(f"fixedchargeunits {units!r} is not understood",
                              where=where("fixedchargeunits"),
                              fix="use '$/month', '$/day' or '$/year'")
    mn = _number(rate.get("mincharge"), where("mincharge"), "mincharge")
    if mn:
        units = rate.get("minchargeunits")
        if units is None:
            units = "$/month"
            warnings.append("minchargeunits is missing: mincharge read as $/month")
        if mn < 0:
            raise TariffError(f"mincharge is negative ({mn:g} {units})", where=where("mincharge"),
                              fix="a minimum charge is >= 0; correct or remove it")
        key = {"$/month": "minimum_per_month", "$/day": "minimum_per_day",
               "$/year": "annual_minimum"}.get(units) if isinstance(units, str) else None
        if key is None:
            raise TariffError(f"minchargeunits {units!r} is not understood",
                              where=where("minchargeunits"),
                              fix="use '$/month', '$/day' or '$/year'")
        out[key] = mn
    return out


def _export_scheme(rate: dict[str, Any], where: _Where,
                   warnings: list[str]) -> tuple[str, str | None]:
    rules = rate.get("dgrules")
    if rules is None or rules == "":
        warnings.append("dgrules is missing: assumed 'Net Metering' (export.scheme = 'nem'); "
                        "check how your tariff credits exports")
        return DGRULES["Net Metering"]
    if not isinstance(rules, str) or rules not in DGRULES:
        raise TariffError(f"dgrules {rules!r} is not understood", where=where("dgrules"),
                          fix=f"use one of {sorted(DGRULES)}")
    return DGRULES[rules]


def _sell_rates(scheme: str, periods: dict[int, list[_Tier]],
                warnings: list[str]) -> dict[int, float] | None:
    """Export value per URDB period ($/kWh), or None when URDB gives none (or it is unused)."""
    has = all(t.sell is not None for tiers in periods.values() for t in tiers)
    if scheme == "nem":
        sells = sorted({float(t.sell) for tiers in periods.values() for t in tiers
                        if t.sell is not None})
        if sells:
            shown = ", ".join(f"{v:g}" for v in sells[:6]) + (" …" if len(sells) > 6 else "")
            warnings.append(f"URDB sell rates ({shown} $/kWh) were not imported: under Net "
                            "Metering exports offset imports at the import rate "
                            "(export.credit = 'import', kWh netted per period, as NREL SAM's "
                            "net metering does); for a tariff that pays those rates for "
                            "exports instead, set export.scheme = 'net_billing' and "
                            "export.sell_rates")
        return None
    if not has:
        warnings.append("URDB gives no export value (no 'sell' on every tier): export.flat_rate "
                        "= 0.0 was written; set the export value ($/kWh) before billing")
        return None
    out = {}
    for p, tiers in periods.items():
        vals = {t.sell for t in tiers}
        if len(vals) > 1:
            warnings.append(f"period {p}: sell rates differ by tier {sorted(vals)}; the first "
                            "tier's was used (trueup export values are not tiered)")
        out[p] = float(tiers[0].sell)  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------------------
# Writing TOML


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_float(x: float) -> str:
    if not math.isfinite(x):
        raise ValueError(f"cannot write {x!r} as a tariff value")
    return repr(float(x))


def _tiers_value(tiers: list[_Tier], fuel: float) -> str:
    if len(tiers) == 1:
        return _toml_float(round(tiers[0].rate + fuel, _ROUND))
    parts = []
    for t in tiers:
        r = _toml_float(round(t.rate + fuel, _ROUND))
        if t.limit is None:
            parts.append(f"{{ rate = {r} }}")
        else:
            key = "up_to_kwh_per_day" if t.per_day else "up_to_kwh"
            parts.append(f"{{ {key} = {_toml_float(t.limit)}, rate = {r} }}")
    return "[" + ", ".join(parts) + "]"


# --------------------------------------------------------------------------------------
# Demand charges


@dataclass
class _Demand:
    window: int = 15
    flat_months: list[list[_Tier]] | None = None  # 12 × tiers ($/kW; limit = kW)
    # URDB demand period → [(months, daytype "weekdays"/"weekends", hours)]
    periods: dict[int, list[tuple[list[int], str, list[int]]]] | None = None
    tou: dict[int, list[_Tier]] | None = None  # URDB demand period → tiers
    ratchet: float = 0.0


def _demand_tiers(structure: Any, p: int, key: str, where: _Where,
                  warnings: list[str]) -> list[_Tier]:
    """One demand period's tiers: rate + adj ($/kW), ``max`` as cumulative kW."""
    raw = structure[p] if isinstance(structure, list) and p < len(structure) else None
    if not isinstance(raw, list) or not raw or not all(isinstance(t, dict) for t in raw):
        raise TariffError(f"{key} has no tiers for period {p} (got {raw!r})",
                          where=where(f"{key}[{p}]"),
                          fix="give each demand period a list of tiers like [{\"rate\": 9.4}]")
    out = []
    for k, t in enumerate(raw):
        r = _number(t.get("rate", 0.0), where(f"{key}[{p}][{k}].rate"), "rate") or 0.0
        adj = _number(t.get("adj", 0.0), where(f"{key}[{p}][{k}].adj"), "adj") or 0.0
        mx = t.get("max")
        limit = None
        if mx is not None and k < len(raw) - 1:
            limit = _number(mx, where(f"{key}[{p}][{k}].max"), "max")
        elif mx is not None:
            warnings.append(f"{key}[{p}]: the last tier's max ({mx} kW) was dropped: the last "
                            "tier covers every kW above the one before")
        if r + adj < 0:
            raise TariffError(f"{key}[{p}][{k}]: a negative demand rate ({r + adj:g} $/kW)",
                              where=where(f"{key}[{p}][{k}]"),
                              fix="trueup takes demand rates >= 0")
        out.append(_Tier(rate=round(r + adj, _ROUND), limit=limit, per_day=False, sell=None))
    return out


def _demand(rate: dict[str, Any], where: _Where, warnings: list[str]) -> _Demand | None:
    """URDB's demand fields as trueup's [demand] (docs/billing-rules.md, 'Demand charges'):
    flat demand month by month, TOU demand on demand periods of their own (URDB's demand
    schedules), the window and an even ratchet. Whatever cannot be expressed is named."""
    flat_s, tou_s = rate.get("flatdemandstructure"), rate.get("demandratestructure")
    if not flat_s and not tou_s:
        for k in ("demandweekdayschedule", "flatdemandmonths"):
            if rate.get(k):
                warnings.append(f"{k} is given without its rate structure: no demand imported")
        return None
    for key in ("demandunits", "flatdemandunit", "demandrateunit"):
        unit = rate.get(key)
        if unit not in (None, "", "kW"):
            raise TariffError(f"{key} is {unit!r}: trueup bills demand in kW only",
                              where=where(key),
                              fix="convert the demand rates to $/kW by hand, or drop them")
    d = _Demand()
    window = rate.get("demandwindow")
    if window not in (None, ""):
        w = _number(window, where("demandwindow"), "demandwindow")
        if w in _DEMAND_WINDOWS:
            d.window = int(w)
        else:
            warnings.append(f"demandwindow {window!r} minutes is not one of "
                            f"{list(_DEMAND_WINDOWS)}: 15 was written")
    else:
        warnings.append("demandwindow is missing: a 15-minute demand window was written "
                        "(check the tariff; NREL SAM uses the data's own step)")
    if flat_s:
        months = rate.get("flatdemandmonths")
        if not isinstance(months, list) or len(months) != 12:
            raise TariffError("flatdemandmonths must be 12 period indices (January first)",
                              where=where("flatdemandmonths"),
                              fix="give the flat demand period of each month")
        idx = [int(m) if isinstance(m, int | float) and float(m).is_integer() else None
               for m in months]
        if None in idx:
            raise TariffError(f"flatdemandmonths {months!r} holds a value that is not a "
                              "period index", where=where("flatdemandmonths"),
                              fix="give 12 whole numbers (0-based periods)")
        d.flat_months = [_demand_tiers(flat_s, p, "flatdemandstructure", where, warnings)
                         for p in idx]  # type: ignore[arg-type]
    if tou_s:
        n = len(tou_s)
        weekday = _schedule(rate, "demandweekdayschedule", n, where)
        weekend = _schedule(rate, "demandweekendschedule", n, where)
        d.tou = {p: _demand_tiers(tou_s, p, "demandratestructure", where, warnings)
                 for p in sorted({p for row in weekday + weekend for p in row})}
        d.periods = {}
        for p in d.tou:
            groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
            for m in range(12):
                for days, sched in (("weekdays", weekday), ("weekends", weekend)):
                    hours = tuple(h for h in range(24) if sched[m][h] == p)
                    if hours:
                        groups.setdefault((days, hours), []).append(m + 1)
            d.periods[p] = [(months, days, list(hours))
                            for (days, hours), months in groups.items()]
    pct = rate.get("demandratchetpercentage")
    if isinstance(pct, list) and any(pct):
        vals = {float(x) for x in pct}
        if len(vals) == 1:
            d.ratchet = vals.pop()
        else:
            warnings.append(f"demandratchetpercentage {pct} varies by month: not imported "
                            "(trueup's ratchet is one share of the last months' highest flat "
                            "demand); add ratchet_percent by hand if it applies")
    for key in ("coincidentratestructure", "demandattrs", "demandreactivepowercharge",
                "demandmin", "demandmax"):
        if rate.get(key):
            warnings.append(f"{key} is not imported: trueup cannot express it; check it by "
                            "hand against the tariff")
    return d


def _demand_rate(tiers: list[_Tier]) -> str:
    if len(tiers) == 1 and tiers[0].limit is None:
        return _toml_float(tiers[0].rate)
    return "[" + ", ".join(f"{{ rate = {_toml_float(t.rate)} }}" if t.limit is None else
                           f"{{ up_to_kw = {_toml_float(t.limit)}, rate = "
                           f"{_toml_float(t.rate)} }}" for t in tiers) + "]"


def _emit_demand(d: _Demand, seasons: list[str]) -> str:
    L: list[str] = []
    w = L.append
    w("# Demand charges from URDB: $/kW (rate + adj) on the month's highest average import")
    w("# over the window. URDB's demand schedules become [[demand.periods]] d0, d1, ...")
    w("[demand]")
    w(f"window_minutes = {d.window}")
    if d.ratchet:
        w(f"ratchet_percent = {_toml_float(d.ratchet)}")
    if d.flat_months and any(t.rate for tiers in d.flat_months for t in tiers):
        w("flat_months = [" + ", ".join(_demand_rate(t) for t in d.flat_months) + "]")
    if d.tou and d.periods is not None:
        charged = {p: t for p, t in d.tou.items() if any(x.rate for x in t)}
        if charged:
            w("[demand.tou]")
            for season in seasons:
                w(f"{season} = {{ " + ", ".join(
                    f"d{p} = {_demand_rate(t)}" for p, t in charged.items()) + " }")
        for p, entries in d.periods.items():
            for months, days, hours in entries:
                w("[[demand.periods]]")
                w(f'name = "d{p}"')
                w("hours = [" + ", ".join(f"[{a}, {b}]" for a, b in _ranges(hours)) + "]")
                w(f'days = "{days}"')
                w(f"months = {months}")
    return "\n".join(L) + "\n"


def _ranges(hours: list[int]) -> list[tuple[int, int]]:
    """Sorted hours → contiguous ``[start, end)`` ranges."""
    out: list[tuple[int, int]] = []
    for h in hours:
        if out and out[-1][1] == h:
            out[-1] = (out[-1][0], h + 1)
        else:
            out.append((h, h + 1))
    return out


def _slug(*parts: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")
    return s or "urdb-import"


def _date(value: Any, tz: str) -> str:
    if isinstance(value, bool) or value is None or value == "":
        return ""
    if isinstance(value, int | float):  # epoch seconds; nonsense is left out, not fatal
        try:
            return datetime.fromtimestamp(value, ZoneInfo(tz)).date().isoformat()
        except (OverflowError, ValueError, OSError):
            return ""
    return str(value)[:10]


def _rank_comment(season: _Season, p: int, periods: dict[int, list[_Tier]]) -> str:
    present = sorted(set(season.weekday) | set(season.weekend))
    first = {q: periods[q][0].rate for q in present}
    if len(present) < 2 or len(set(first.values())) < len(present):
        return ""
    if first[p] == max(first.values()):
        return f", highest in {season.name} (peak)"
    if first[p] == min(first.values()):
        return f", lowest in {season.name} (off-peak)"
    return f", between in {season.name}"


def _emit(rate: dict[str, Any], seasons: list[_Season], periods: dict[int, list[_Tier]],
          sell: dict[int, float] | None, charges: dict[str, float], scheme: str,
          netting: str | None, timezone: str, pair_by_hour: bool) -> str:
    utility = str(rate.get("utility") or "").strip()
    name = str(rate.get("name") or "").strip() or str(rate.get("label") or "URDB rate")
    label = str(rate.get("label") or "")
    uri = str(rate.get("uri") or "")
    if not uri and label:
        uri = f"https://apps.openei.org/IURDB/rate/view/{label}"
    L: list[str] = []
    w = L.append
    w("# Imported from the OpenEI Utility Rate Database (URDB) by trueup (optimizer/urdb.py).")
    w("# Rates are $/kWh (URDB rate + adj). Lines marked CHECK hold values URDB does not have.")
    w(f"id = {_toml_str(_slug(utility, name))}")
    w(f"name = {_toml_str(f'{utility}: {name}' if utility else name)}")
    w(f"timezone = {_toml_str(timezone)}  # CHECK: URDB has no time zone; this is the "
      "importer's timezone argument")
    w('currency = "USD"')
    src = f"OpenEI URDB {uri}" if uri else "OpenEI URDB"
    if label:
        src += f" (label {label})"
    w(f"source = {_toml_str(src)}")
    w(f"effective = {_toml_str(_date(rate.get('startdate'), timezone))}")
    w(f"notes = {_toml_str(_NOTES)}")
    if any(len(t) > 1 for t in periods.values()):
        w('tier_basis = "month"  # URDB tiers count the month\'s total kWh across periods')
    w("")

    w("[calendar]")
    w("# A season is a set of months with identical URDB weekday and weekend schedules.")
    seas = ", ".join(f"{s.name} = [{', '.join(map(str, s.months))}]" for s in seasons)
    w(f"seasons = {{ {seas} }}")
    w('holidays = "none"  # CHECK: URDB has no holiday information (holidays billed as their '
      'weekday); set "US" if your tariff bills holidays as weekends')
    w("")

    # [[periods]]: one entry per (URDB period, day type, hour ranges), listing its seasons
    entries: dict[tuple[int, str, tuple[tuple[int, int], ...]], list[str]] = {}
    for s in seasons:
        split = [("all", s.weekday)] if s.weekday == s.weekend else [
            ("weekdays", s.weekday), ("weekends", s.weekend)]
        for days, row in split:
            for p in sorted(set(row)):
                hrs = tuple(_ranges([h for h in range(24) if row[h] == p]))
                entries.setdefault((p, days, hrs), []).append(s.name)
    order = {s.name: i for i, s in enumerate(seasons)}
    dorder = {"all": 0, "weekdays": 1, "weekends": 2}
    w("# URDB period N is period pN. Hours are [start, end) local clock hours; weekdays are")
    w("# Monday-Friday. Entries do not overlap, so their order does not matter.")
    for (p, days, hrs), snames in sorted(entries.items(), key=lambda kv: (
            kv[0][0], order[kv[1][0]], dorder[kv[0][1]], kv[0][2])):
        rates = ", ".join(f"{n} {_describe(periods[p], seasons[order[n]].fuel)}" for n in snames)
        w("[[periods]]")
        w(f"name = \"p{p}\"  # {rates}")
        w(f"hours = [{', '.join(f'[{a}, {b}]' for a, b in hrs)}]")
        w(f"days = \"{days}\"")
        if len(snames) < len(seasons):
            w(f"seasons = [{', '.join(_toml_str(n) for n in snames)}]")
    w("")

    w("# $/kWh by season, then period (URDB rate + adj). Tier limits are cumulative kWh per")
    w("# billing month (up_to_kwh) or per day of the billing month (up_to_kwh_per_day).")
    w("[import_rates]")
    for s in seasons:
        w(f"[import_rates.{s.name}]")
        for p in sorted(set(s.weekday) | set(s.weekend)):
            tiers = periods[p]
            note = "$/kWh" if len(tiers) == 1 else f"$/kWh, {len(tiers)} tiers"
            w(f"p{p} = {_tiers_value(tiers, s.fuel)}  # {note}{_rank_comment(s, p, periods)}")
    w("")

    w("[charges]")
    w(f"fixed_per_month = {_toml_float(charges['fixed_per_month'])}  # $/month")
    w(f"fixed_per_day = {_toml_float(charges['fixed_per_day'])}  # $/day")
    w("nbc_per_kwh = 0.0  # CHECK: URDB has no NBC field: set it from your tariff sheet ($/kWh)")
    w(f"minimum_per_day = {_toml_float(charges['minimum_per_day'])}  # $/day")
    w(f"minimum_per_month = {_toml_float(charges['minimum_per_month'])}  # $/month")
    w(f"annual_minimum = {_toml_float(charges['annual_minimum'])}  # $/year")
    w("")

    w("[export]")
    w(f"scheme = {_toml_str(scheme)}  # from URDB dgrules = "
      f"{_toml_str(str(rate.get('dgrules') or '(missing)'))}")
    if scheme == "nem":
        w('credit = "import"  # CHECK: "import_minus_nbc" for NEM2-type tariffs (then set the NBC)')
        if any(len(t) > 1 for t in periods.values()):
            w('surplus_tiers = "fill"  # CHECK: a month\'s net export fills the tiers from the '
              'first up (NREL SAM); "first" credits it all at tier 1')
    if netting is not None:
        w(f"netting = {_toml_str(netting)}")
    if scheme != "nem" and sell is None:
        w("# !!! CHECK: URDB gives no export value: set it. flat_rate = 0.0 credits exports")
        w("# !!! at nothing. Use flat_rate = <$/kWh>, sell_rates or rates_csv")
        w("# !!! (docs/billing-rules.md, 'Net billing and export values').")
        w("flat_rate = 0.0")
    elif sell is not None:
        w("# export value, $/kWh, from URDB's 'sell' field")
        for s in seasons:
            w(f"[export.sell_rates.{s.name}]")
            for p in sorted(set(s.weekday) | set(s.weekend)):
                w(f"p{p} = {_toml_float(sell[p])}  # $/kWh")
    w("")

    w("# CHECK: URDB has no settlement, NSC or export-cap fields. The values below are")
    w("# defaults: set the true-up month, how charges and credits settle and the NSC rate")
    w("# ($/kWh) from your tariff.")
    w("[settlement]")
    w("period_months = 12")
    w("true_up_month = 12")
    w('charges = "monthly"')
    w('leftover_credit = "forfeit"')
    w("surplus_rate = 0.0  # $/kWh")
    if pair_by_hour:
        w('kwh_bank_pairing = "time_of_day"  # with carryover = "kwh": URDB numbers each '
          "season's periods apart, banked kWh follow the clock hour (NREL SAM)")
    w("")
    w("# No [export_cap]: URDB cannot express a monthly export cap (PG&E NEM2 Paired Storage).")
    w("# Add one (monthly_kwh = [12 values] or estimate = \"pv\") if your interconnection has it.")
    return "\n".join(L) + "\n"


def _describe(tiers: list[_Tier], fuel: float) -> str:
    if len(tiers) == 1:
        return f"{round(tiers[0].rate + fuel, _ROUND):g} $/kWh"
    return "tiers " + "/".join(f"{round(t.rate + fuel, _ROUND):g}" for t in tiers) + " $/kWh"


def _self_check(text: str, source: str) -> None:
    """The generated TOML must load; anything else is an importer bug, reported as such."""
    from optimizer.tariff import Tariff

    try:
        Tariff.from_text(text, source=f"{source} (imported TOML)")
    except TariffError as e:
        raise TariffError(f"the imported tariff does not validate: {e.what}", where=e.where,
                          fix="check the URDB rate for the key named; if it looks right, "
                          "report it with the JSON (an importer bug)") from e
