"""Tariffs as data: the TOML schema (README, "The tariff file"), validation, the TOU
calendar and vectorised rate lookup.

A tariff file is parsed into :class:`Tariff` (pydantic; unknown keys are errors), then checked
for meaning (every hour of every season and day type has a period, every reachable
season × period has a rate, tiers are ordered ...). Any problem raises
:class:`~optimizer.errors.TariffError` naming the file, the key (with a line number when it
can be found) and the fix.

Rates are $/kWh. Import rates are *all-in* retail rates: they include the non-bypassable
charge (NBC, ``charges.nbc_per_kwh``), which the bill shows as its own line on gross imports
(docs/billing-rules.md, 'Non-bypassable charges on gross imports').
Hours are local wall-clock hours ``[start, end)``; periods are matched first-match-wins, so a
catch-all ``[[0, 24]]`` period goes last. Holidays (when the calendar names a set) are billed
as weekends.
"""

from __future__ import annotations

import csv
import math
import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optimizer.errors import TariffError
from optimizer.localtime import LocalFields, local_fields

MONTHS = range(1, 13)
WEEKDAY, WEEKEND = 0, 1
NETTING_WINDOWS = ("instantaneous", "15min", "hourly", "daily", "billing_period")
#: $/kWh: an import rate above this is reported (no US residential rate comes near it)
IMPLAUSIBLE_RATE = 2.0
#: $/kWh: how far ``charges.nbc_components`` may add up from ``nbc_per_kwh`` (rounding)
NBC_SUM_TOLERANCE = 0.00001
#: ``kwh_bank_pairing = "time_of_day"``: the weekday clock hours at which a month's period
#: is matched to the next month's (NREL SAM's ``ec_rollover_periods``: hours 0, 5, 11, 17)
KWH_BANK_HOURS = (0, 5, 11, 17)


class _Model(BaseModel):
    # TOML reads nan and inf as floats; no rate, charge or limit may be either
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


NonNeg = Annotated[float, Field(ge=0)]


class Tier(_Model):
    """One block of a tiered rate. The last tier has no limit.

    ``up_to_kwh`` is a monthly limit (kWh per billing month); ``up_to_kwh_per_day`` a limit
    that scales with the billing month's days (baseline-style). Limits are cumulative.
    """

    up_to_kwh: NonNeg | None = None
    up_to_kwh_per_day: NonNeg | None = None
    rate: float


RateValue = float | list[Tier]
RateTable = dict[str, dict[str, RateValue]]


class CalendarSpec(_Model):
    seasons: dict[str, list[Annotated[int, Field(ge=1, le=12)]]]
    holidays: str = "none"
    meter_read_day: Annotated[int, Field(ge=1, le=28)] = 1


class PeriodSpec(_Model):
    name: str
    hours: list[tuple[Annotated[int, Field(ge=0, le=24)], Annotated[int, Field(ge=0, le=24)]]]
    days: Literal["all", "weekdays", "weekends"] = "all"
    months: list[Annotated[int, Field(ge=1, le=12)]] | None = None
    seasons: list[str] | None = None


class ChargesSpec(_Model):
    fixed_per_month: NonNeg = 0.0
    fixed_per_day: NonNeg = 0.0
    nbc_per_kwh: NonNeg = 0.0
    # what nbc_per_kwh is made of, name → $/kWh, as the rate schedule lists them; they must
    # add up to nbc_per_kwh. A component may be negative: PG&E publishes credits among them
    # (a Nuclear Decommissioning refund, a Recovery Bond Credit)
    nbc_components: dict[str, float] | None = None
    minimum_per_day: NonNeg = 0.0
    minimum_per_month: NonNeg = 0.0
    annual_minimum: NonNeg = 0.0


class BaselineSpec(_Model):
    """Baseline credit (PG&E E-TOU-C style): ``credit_per_kwh`` off each kWh of the billing
    month's net usage up to the allowance ``allowance_kwh_per_day[season] × days``."""

    credit_per_kwh: NonNeg
    allowance_kwh_per_day: dict[str, NonNeg]


class DemandTier(_Model):
    """One block of a tiered demand rate: ``rate`` $/kW up to ``up_to_kw`` (cumulative kW of
    the month's demand); the last tier has no limit."""

    up_to_kw: NonNeg | None = None
    rate: NonNeg


DemandRate = NonNeg | list[DemandTier]


class DemandSpec(_Model):
    """Demand charges (docs/billing-rules.md, 'Demand charges'): $ per kW of the billing
    month's highest average import over a ``window_minutes`` window.

    ``flat``: by season, on the month's highest window at any hour. ``tou``: by season and
    TOU period (the tariff's [[periods]]), each on the month's highest window inside that
    period. ``ratchet_percent``: the flat charge's billing demand is at least this share of
    the highest flat demand of the previous ``ratchet_months`` billing months (those in the
    data)."""

    window_minutes: Literal[5, 15, 30, 60] = 15
    flat: dict[str, DemandRate] = {}
    # the flat rate month by month instead (12 entries, January first; URDB's flat demand)
    flat_months: Annotated[list[DemandRate], Field(min_length=12, max_length=12)] | None = None
    tou: dict[str, dict[str, DemandRate]] = {}
    # demand periods of their own, when they differ from the energy [[periods]] (URDB has
    # separate demand schedules): tou then names these
    periods: list[PeriodSpec] | None = None
    ratchet_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    ratchet_months: Annotated[int, Field(ge=1, le=36)] = 11


class ExportSpec(_Model):
    scheme: Literal["nem", "net_billing", "buy_all_sell_all", "none"]
    credit: Literal["import", "import_minus_nbc"] = "import_minus_nbc"
    flat_rate: float | None = None
    sell_rates: dict[str, dict[str, float]] | None = None
    rates_csv: str | None = None
    netting: Literal["instantaneous", "15min", "hourly", "daily", "billing_period"] | None = None
    # NEM with tiered rates: the tiers a month's net export (surplus) is credited in
    # (docs/billing-rules.md, 'Tiered rates and NEM surplus'): "first" credits all of it at
    # the first tier's rate; "fill" lets the month's surplus fill the tiers from the first
    # up, as its use does, each tier's kWh credited at that tier's rate (NREL SAM's rule)
    surplus_tiers: Literal["first", "fill"] = "first"


class SettlementSpec(_Model):
    period_months: Annotated[int, Field(ge=1, le=60)] = 12
    true_up_month: Annotated[int, Field(ge=1, le=12)] = 12
    carryover: Literal["dollars", "kwh"] = "dollars"
    charges: Literal["monthly", "at_true_up"] = "monthly"
    leftover_credit: Literal["forfeit", "pay_out", "roll_over"] = "forfeit"
    surplus_rate: NonNeg = 0.0
    monthly_excess_rate: NonNeg = 0.0
    # carryover = "kwh": which period's bank a period's banked kWh offset in a later month
    # (docs/billing-rules.md, 'kWh banking'): "period", the same period (by name);
    # "time_of_day", the period the new month has at the same clock hour (NREL SAM's rule)
    kwh_bank_pairing: Literal["period", "time_of_day"] = "period"
    # how the true-up charges add up (optimizer.settlement.true_up_charges): "nem2" as the
    # tariff says; "nbc_only" a variant for checking a statement (trueup reconcile)
    true_up_rule: Literal["nem2", "nbc_only"] = "nem2"
    # "YYYY-MM" of one true-up, to anchor periods longer than a year (default: the first
    # true-up month on or after the data's start)
    first_true_up: Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] | None = None


class ExportCapSpec(_Model):
    monthly_kwh: list[NonNeg] | None = None
    estimate: Literal["pv"] | None = None
    # default: the tariff's periods from the most valuable down (peak first)
    decredit_order: list[str] | None = None


class TariffSpec(_Model):
    """The TOML file, as written; its keys are a contract (README, "The tariff file")."""

    id: str
    name: str
    timezone: str
    currency: str = "USD"
    source: str = ""
    effective: str = ""
    notes: str = ""
    # what fills tiered rates: each TOU period's own kWh ("period"), or the billing month's
    # total kWh shared pro rata over the periods ("month": URDB's and SAM's reading)
    tier_basis: Literal["period", "month"] = "period"
    calendar: CalendarSpec
    periods: list[PeriodSpec]
    import_rates: RateTable
    charges: ChargesSpec = ChargesSpec()
    baseline: BaselineSpec | None = None
    export: ExportSpec
    demand: DemandSpec | None = None
    settlement: SettlementSpec = SettlementSpec()
    export_cap: ExportCapSpec | None = None


# --------------------------------------------------------------------------------------
# Locating keys in the TOML text (tomllib gives no positions)


def _key_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort 1-based line of the key at ``loc`` (e.g. ``("charges", "nbc_per_kwh")``)."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    path = [p for p in loc if not isinstance(p, int)]
    idxs = [p for p in loc if isinstance(p, int)]
    if not path:
        return None
    head = path[0]
    if head == "periods" and idxs:
        hits = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*periods\s*\]\]", ln)]
        if idxs[0] < len(hits):
            start = hits[idxs[0]]
            nxt = [i for i, ln in enumerate(lines) if i > start and re.match(r"\s*\[", ln)]
            end = nxt[0] if nxt else len(lines)
            rest = path[1:]
            for i in range(start, end):
                if rest and re.match(rf"\s*{re.escape(str(rest[0]))}\s*=", lines[i]):
                    return i + 1
            return start + 1
    for i, ln in enumerate(lines):
        if re.match(rf"\s*\[\s*{re.escape(str(head))}\s*\]", ln):
            start = i
            nxt = [j for j in range(i + 1, len(lines)) if re.match(r"\s*\[", lines[j])]
            end = nxt[0] if nxt else len(lines)
            if len(path) == 1:
                return i + 1
            for j in range(start, end):
                if re.match(rf"\s*{re.escape(str(path[1]))}\s*=", lines[j]):
                    return j + 1
            return i + 1
    for i, ln in enumerate(lines):
        if re.match(rf"\s*{re.escape(str(path[-1]))}\s*=", ln):
            return i + 1
    return None


def _where(source: str, text: str, loc: tuple[Any, ...]) -> str:
    key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[")
    line = _key_line(text, loc) if text else None
    return f"{source}:{line}: {key}" if line else f"{source}: {key}"


def _pydantic_to_tariff_error(err: ValidationError, source: str, text: str) -> TariffError:
    msgs = []
    first_where = ""
    errors = err.errors()
    # a rate is a number or a list of tiers: when a number was given, the union's "should
    # be a valid list" branch only repeats the problem
    numbers = {e["loc"][:-1] for e in errors if e["loc"] and e["loc"][-1] == "float"}
    for e in errors:
        if e["loc"] and e["loc"][-1] == "list[Tier]" and e["loc"][:-1] in numbers \
                and e["type"] == "list_type":
            continue
        loc = tuple(p for p in e["loc"] if p not in ("float", "list[Tier]"))
        where = _where(source, text, loc)
        first_where = first_where or where
        if e["type"] == "extra_forbidden":
            fix = ("remove the key or correct its spelling (the schema is in the README, "
                   "'The tariff file')")
            msgs.append(f"{where}: unknown key '{loc[-1]}'; {fix}")
        elif e["type"] == "missing":
            msgs.append(f"{where}: required key is missing; add it")
        else:
            msgs.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    what = f"{len(msgs)} problem(s) in tariff\n" + "\n".join("  " + m for m in msgs)
    return TariffError(what, where=source, fix="edit the keys named above")


# --------------------------------------------------------------------------------------
# The validated, compiled tariff


@dataclass(frozen=True)
class Classified:
    """Each interval's place in the tariff calendar (all int arrays, one per interval)."""

    fields: LocalFields
    season: np.ndarray  # index into Tariff.season_names
    daytype: np.ndarray  # 0 weekday, 1 weekend or holiday
    period: np.ndarray  # index into Tariff.period_names


class Tariff:
    """A validated tariff with its calendar compiled into lookup tables.

    Build with :func:`load_tariff` or :meth:`Tariff.from_text`.
    """

    def __init__(self, spec: TariffSpec, *, source: str = "<tariff>", text: str = "",
                 base_dir: Path | None = None, sell_table: np.ndarray | None = None,
                 sell_table_year0: int = 0) -> None:
        self.spec = spec
        self.source = source
        self._text = text
        #: plausibility warnings (file:line: what), for the caller to show
        self.warnings: list[str] = []
        self._classified: dict[tuple[int, int, int], Classified] = {}
        self.base_dir = base_dir
        self.season_names: list[str] = list(spec.calendar.seasons)
        self.period_names: list[str] = []
        for p in spec.periods:
            if p.name not in self.period_names:
                self.period_names.append(p.name)
        self._check_and_compile()
        self.sell_table = sell_table
        self.sell_table_year0 = sell_table_year0
        if spec.export.rates_csv and sell_table is None:
            self.sell_table, self.sell_table_year0 = self._load_rates_csv(spec.export.rates_csv)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str, *, source: str = "<tariff>",
                  base_dir: Path | None = None) -> Tariff:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise TariffError(f"not valid TOML: {e}", where=source,
                              fix="fix the TOML syntax at the position given") from None
        try:
            spec = TariffSpec.model_validate(data)
        except ValidationError as e:
            raise _pydantic_to_tariff_error(e, source, text) from None
        return cls(spec, source=source, text=text, base_dir=base_dir)

    def _err(self, loc: tuple[Any, ...], what: str, fix: str) -> TariffError:
        return TariffError(what, where=_where(self.source, self._text, loc), fix=fix)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def tz(self) -> str:
        return self.spec.timezone

    # -- validation and compilation ---------------------------------------------------

    def _check_and_compile(self) -> None:
        s = self.spec
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(s.timezone)
        except Exception:
            raise self._err(("timezone",), f"unknown time zone {s.timezone!r}",
                            "use an IANA name such as 'America/Los_Angeles'") from None
        # seasons: every month exactly once
        month_season = np.full(13, -1, dtype=np.int64)
        for si, (sname, months) in enumerate(s.calendar.seasons.items()):
            for m in months:
                if month_season[m] >= 0:
                    other = self.season_names[month_season[m]]
                    raise self._err(("calendar", "seasons"),
                                    f"month {m} is in both seasons {other!r} and {sname!r}",
                                    "list each month in exactly one season")
                month_season[m] = si
        missing = [m for m in MONTHS if month_season[m] < 0]
        if missing:
            raise self._err(("calendar", "seasons"), f"months {missing} are in no season",
                            "add them to a season; seasons must cover months 1-12")
        self.month_season = month_season
        self._holiday_spec = self._check_holidays(s.calendar.holidays)

        table = self._period_table(s.periods, self.period_names, ('periods',))
        self.period_table = table

        # reachable (season, period) pairs must have import rates
        S, P = len(self.season_names), len(self.period_names)
        reach = np.zeros((S, P), dtype=bool)
        for m in MONTHS:
            for p in np.unique(table[m - 1]):
                reach[month_season[m], p] = True
        self.reachable = reach
        self._compile_rates(reach)
        self._check_nbc_components()
        self._check_demand()
        self._compile_export(reach)
        self._check_settlement_and_cap()

    def _period_table(self, periods: list[PeriodSpec], names: list[str],
                      root: tuple[Any, ...]) -> np.ndarray:
        """``table[month-1, daytype, hour]`` = index into ``names`` of the first of
        ``periods`` that matches; every hour covered, every period used (errors at
        ``root``: ``("periods",)`` or ``("demand", "periods")``)."""
        month_season = self.month_season
        table = np.full((12, 2, 24), -1, dtype=np.int64)
        matched_any = [False] * len(periods)
        for pi, p in enumerate(periods):
            covered: set[int] = set()
            for a, b in p.hours:
                if a >= b:
                    raise self._err((*root, pi, "hours"),
                                    f"period {p.name!r}: hours [{a}, {b}] is empty or reversed",
                                    "write hours as [start, end) with start < end, e.g. [16, 21]")
                span = set(range(a, b))
                if covered & span:
                    raise self._err((*root, pi, "hours"),
                                    f"period {p.name!r}: hour ranges overlap at "
                                    f"{sorted(covered & span)}",
                                    "list each hour once within a period")
                covered |= span
            if p.seasons:
                bad = [x for x in p.seasons if x not in self.season_names]
                if bad:
                    raise self._err((*root, pi, "seasons"),
                                    f"period {p.name!r} names unknown seasons {bad}",
                                    f"use seasons from [calendar]: {self.season_names}")
            months = set(p.months or MONTHS)
            if p.seasons:
                months &= {m for m in MONTHS if self.season_names[month_season[m]] in p.seasons}
            daytypes = {"all": (WEEKDAY, WEEKEND), "weekdays": (WEEKDAY,),
                        "weekends": (WEEKEND,)}[p.days]
            pidx = names.index(p.name)
            for m in months:
                for d in daytypes:
                    for h in covered:
                        if table[m - 1, d, h] < 0:
                            table[m - 1, d, h] = pidx
                            matched_any[pi] = True
        for pi, ok in enumerate(matched_any):
            if not ok:
                raise self._err((*root, pi),
                                f"period {periods[pi].name!r} never applies: earlier periods "
                                "already cover all its hours (overlapping periods)",
                                "remove it, or move it above the period that shadows it")
        holes = np.argwhere(table < 0)
        if len(holes):
            m, d, h = holes[0]
            hrs = sorted({int(x[2]) for x in holes if x[0] == m and x[1] == d})
            raise self._err(root,
                            f"no period covers {'weekend' if d else 'weekday'} hours {hrs} "
                            f"in month {m + 1} ({len(holes)} month-daytype-hours uncovered)",
                            "add the hours to a period, or end the list with a catch-all "
                            "period hours = [[0, 24]]")
        return table

    def _check_demand(self) -> None:
        """Demand rates name known seasons and periods; tiers are cumulative, the last
        without a limit. Compiles ``demand_tiers[(season, key)]`` = [(limit kW, $/kW)], key
        ``"flat"`` or a period name."""
        self.demand_tiers: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.demand_flat_by_month: list[list[tuple[float, float]] | None] = [None] * 12
        self.demand_period_names = self.period_names
        self.demand_period_table = self.period_table
        d = self.spec.demand
        if d is None:
            return
        if d.periods:
            names = list(dict.fromkeys(p.name for p in d.periods))
            self.demand_period_names = names
            self.demand_period_table = self._period_table(d.periods, names,
                                                          ("demand", "periods"))

        def tiers(loc, value: DemandRate) -> list[tuple[float, float]]:
            if isinstance(value, int | float):
                return [(math.inf, float(value))]
            if not value:
                raise self._err(loc, "an empty list of demand tiers",
                                "give a rate in $/kW, or tiers like [{ up_to_kw = 10, rate = "
                                "5.0 }, { rate = 8.0 }]")
            out, last = [], 0.0
            for i, t in enumerate(value):
                limit = math.inf if t.up_to_kw is None else float(t.up_to_kw)
                if t.up_to_kw is None and i < len(value) - 1:
                    raise self._err(loc, f"demand tier {i + 1} has no up_to_kw but is not the "
                                    "last tier", "give every tier but the last an up_to_kw")
                if limit <= last:
                    raise self._err(loc, f"demand tier {i + 1}'s up_to_kw ({limit:g}) is not "
                                    f"above the tier before ({last:g})",
                                    "tier limits are cumulative kW, increasing")
                if i == len(value) - 1 and t.up_to_kw is not None:
                    raise self._err(loc, f"the last demand tier has up_to_kw = {limit:g}",
                                    "remove it: the last tier covers every kW above the one "
                                    "before")
                out.append((limit, float(t.rate)))
                last = limit
            return out

        for season, value in d.flat.items():
            if season not in self.season_names:
                raise self._err(("demand", "flat", season), f"demand.flat names unknown season "
                                f"{season!r}", f"use seasons from [calendar]: "
                                f"{self.season_names}")
            self.demand_tiers[(season, "flat")] = tiers(("demand", "flat", season), value)
        if d.flat and d.flat_months:
            raise self._err(("demand", "flat_months"), "demand sets both flat (by season) and "
                            "flat_months", "give the flat demand rate one way")
        for m in MONTHS:
            if d.flat_months:
                self.demand_flat_by_month[m - 1] = tiers(("demand", "flat_months"),
                                                         d.flat_months[m - 1])
            else:
                season = self.season_names[self.month_season[m]]
                self.demand_flat_by_month[m - 1] = self.demand_tiers.get((season, "flat"))
        for season, by_period in d.tou.items():
            if season not in self.season_names:
                raise self._err(("demand", "tou", season), f"demand.tou names unknown season "
                                f"{season!r}", f"use seasons from [calendar]: "
                                f"{self.season_names}")
            for period, value in by_period.items():
                if period not in self.demand_period_names:
                    where = "[[demand.periods]]" if d.periods else "[[periods]]"
                    raise self._err(("demand", "tou", season, period),
                                    f"demand.tou.{season} names unknown period {period!r}",
                                    f"use periods from {where}: {self.demand_period_names}")
                self.demand_tiers[(season, period)] = tiers(("demand", "tou", season, period),
                                                            value)

    def _check_holidays(self, spec: str) -> str:
        if spec == "none":
            return spec
        if spec.lower() == "pge":
            return "pge"
        import holidays as hol

        country, _, subdiv = spec.partition("-")
        try:
            hol.country_holidays(country, subdiv=subdiv or None, years=2024)
        except Exception:
            raise self._err(("calendar", "holidays"), f"unknown holiday set {spec!r}",
                            "use 'none', 'pge' (PG&E's TOU holidays), a country code such "
                            "as 'US', or country-subdivision such as 'US-CA'") from None
        return spec

    def _rate_tiers(self, loc, value: RateValue) -> list[tuple[str, float, float]]:
        """Normalise a rate value to [(kind, limit, rate)], kind 'month'|'day'|'none'."""
        if isinstance(value, int | float):
            return [("none", math.inf, float(value))]
        out = []
        last = -1.0
        for i, t in enumerate(value):
            is_last = i == len(value) - 1
            if t.up_to_kwh is not None and t.up_to_kwh_per_day is not None:
                raise self._err(loc, "a tier sets both up_to_kwh and up_to_kwh_per_day",
                                "give one limit per tier")
            limit = t.up_to_kwh if t.up_to_kwh is not None else t.up_to_kwh_per_day
            kind = "month" if t.up_to_kwh is not None else "day"
            if limit is None:
                if not is_last:
                    raise self._err(loc, f"tier {i + 1} has no limit but is not the last tier",
                                    "give every tier but the last an up_to_kwh")
                kind, limit = "none", math.inf
            elif is_last:
                raise self._err(loc, "the last tier has a limit",
                                "leave up_to_kwh off the last tier (it takes all the rest)")
            if limit <= last:
                raise self._err(loc, "tier limits must increase", "order tiers by up_to_kwh")
            last = limit
            out.append((kind, float(limit), float(t.rate)))
        if not out:
            raise self._err(loc, "empty tier list", "give at least one { rate = ... }")
        kinds = {k for k, _, _ in out if k != "none"}
        if len(kinds) > 1:
            raise self._err(loc, "tiers mix up_to_kwh and up_to_kwh_per_day",
                            "use one kind of limit in a tier list")
        return out

    def _compile_rates(self, reach: np.ndarray) -> None:
        s = self.spec
        S, P = reach.shape
        for sname in s.import_rates:
            if sname not in self.season_names:
                raise self._err(("import_rates", sname), f"unknown season {sname!r}",
                                f"use seasons from [calendar]: {self.season_names}")
        tiers: dict[tuple[int, int], list[tuple[str, float, float]]] = {}
        for si, sname in enumerate(self.season_names):
            rates = s.import_rates.get(sname, {})
            for pname in rates:
                if pname not in self.period_names:
                    raise self._err(("import_rates", sname), f"unknown period {pname!r}",
                                    f"use period names from [[periods]]: {self.period_names}")
            for pi, pname in enumerate(self.period_names):
                if not reach[si, pi]:
                    continue
                if pname not in rates:
                    raise self._err(("import_rates", sname),
                                    f"no import rate for period {pname!r} in season {sname!r}",
                                    f"add {pname} = <$/kWh> to import_rates.{sname}")
                tiers[si, pi] = self._rate_tiers(("import_rates", sname), rates[pname])
        T = max(len(v) for v in tiers.values())
        lim = np.full((S, P, T), np.inf)
        rate = np.zeros((S, P, T))
        per_day = np.zeros((S, P), dtype=bool)
        for (si, pi), tl in tiers.items():
            for k, (kind, limit, r) in enumerate(tl):
                lim[si, pi, k] = limit
                rate[si, pi, k] = r
                per_day[si, pi] |= kind == "day"
            rate[si, pi, len(tl):] = tl[-1][2]
        self.tier_limits = lim  # kWh per billing month (or per day where tier_per_day)
        self.tier_rates = rate  # $/kWh, all-in (NBC included)
        self.tier_per_day = per_day
        self.tiered = T > 1
        self._check_plausible_rates(tiers)
        if s.baseline:
            for sname in self.season_names:
                if sname not in s.baseline.allowance_kwh_per_day:
                    raise self._err(("baseline", "allowance_kwh_per_day"),
                                    f"no baseline allowance for season {sname!r}",
                                    f"add {sname} = <kWh per day>")

    def _check_nbc_components(self) -> None:
        """``charges.nbc_components``, when given, must add up to ``nbc_per_kwh`` (to within
        :data:`NBC_SUM_TOLERANCE`): a component typed wrong, or left out, shows here."""
        c = self.spec.charges
        if c.nbc_components is None:
            return
        total = math.fsum(c.nbc_components.values())
        if abs(total - c.nbc_per_kwh) > NBC_SUM_TOLERANCE + 1e-12:
            parts = " + ".join(f"{k} {v:.5f}" for k, v in c.nbc_components.items()) or "nothing"
            raise self._err(("charges", "nbc_components"),
                            f"the components add up to {total:.5f} $/kWh ({parts}), but "
                            f"nbc_per_kwh is {c.nbc_per_kwh:.5f}",
                            "correct the component that is wrong or missing, or set "
                            f"nbc_per_kwh = {total:.5f} (their sum)")

    def _check_plausible_rates(self, tiers: dict[tuple[int, int], list]) -> None:
        """The NBC is a component of every import rate (PG&E's rate components), so it
        must lie below them: an NBC above every import rate is refused (imports would lower
        the energy charges), above some of them a warning; an import rate above
        :data:`IMPLAUSIBLE_RATE` $/kWh is a warning (cents given as dollars?)."""
        nbc = self.spec.charges.nbc_per_kwh
        rates = {r for tl in tiers.values() for _, _, r in tl}
        where = ("charges", "nbc_per_kwh")
        if nbc > 0 and rates and nbc > max(rates):
            raise self._err(where, f"nbc_per_kwh {nbc:g} $/kWh is above every import rate "
                            f"(the highest is {max(rates):g}): imports would lower the bill",
                            "give the NBC in $/kWh (e.g. 0.03273, not 3.273 cents); it is part "
                            "of each import rate, so it must be below all of them")
        if nbc > 0 and rates and nbc > min(rates):
            self.warnings.append(
                f"{_where(self.source, self._text, where)}: nbc_per_kwh {nbc:g} $/kWh is above "
                f"the import rate {min(rates):g} of some periods; there a credit (rate − NBC) "
                "is negative. Check both are in $/kWh")
        high = sorted(r for r in rates if r > IMPLAUSIBLE_RATE)
        if high:
            self.warnings.append(
                f"{_where(self.source, self._text, ('import_rates',))}: import rate "
                f"{high[-1]:g} $/kWh is above {IMPLAUSIBLE_RATE:g} $/kWh: rates are dollars "
                "per kWh (0.346, not 34.6 cents)")

    def _compile_export(self, reach: np.ndarray) -> None:
        e = self.spec.export
        ways = [x for x in (e.flat_rate, e.sell_rates, e.rates_csv) if x is not None]
        if e.scheme in ("net_billing", "buy_all_sell_all"):
            if len(ways) != 1:
                raise self._err(("export",),
                                f"scheme {e.scheme!r} needs exactly one export value "
                                f"(found {len(ways)})",
                                "set one of flat_rate, sell_rates or rates_csv in [export]")
        elif ways:
            raise self._err(("export",),
                            f"scheme {e.scheme!r} does not use flat_rate/sell_rates/rates_csv",
                            "remove them, or use scheme = 'net_billing'")
        self.sell_matrix = None
        if e.sell_rates is not None:
            S, P = reach.shape
            mat = np.zeros((S, P))
            for si, sname in enumerate(self.season_names):
                rates = e.sell_rates.get(sname, {})
                for pi, pname in enumerate(self.period_names):
                    if reach[si, pi]:
                        if pname not in rates:
                            raise self._err(("export", "sell_rates"),
                                            f"no sell rate for {sname}.{pname}",
                                            f"add {pname} = <$/kWh> to sell_rates.{sname}")
                        mat[si, pi] = rates[pname]
            self.sell_matrix = mat
        self.netting = e.netting or ("billing_period" if e.scheme == "nem" else "instantaneous")

    def _check_settlement_and_cap(self) -> None:
        st = self.spec.settlement
        if st.carryover == "kwh" and self.spec.export.scheme != "nem":
            raise self._err(("settlement", "carryover"),
                            "kWh carryover only applies to scheme = 'nem'",
                            "use carryover = 'dollars' or scheme = 'nem'")
        if self.spec.export.surplus_tiers != "first" and self.spec.export.scheme != "nem":
            raise self._err(("export", "surplus_tiers"),
                            "surplus_tiers says how NEM credits a month's net export in tiers; "
                            f"scheme {self.spec.export.scheme!r} values exports at its export "
                            "rates", "remove surplus_tiers, or use scheme = 'nem'")
        if st.monthly_excess_rate > 0 and self.spec.export.scheme != "nem":
            raise self._err(("settlement", "monthly_excess_rate"),
                            "monthly_excess_rate (Nebraska-type) needs scheme = 'nem'",
                            "set scheme = 'nem' or remove monthly_excess_rate")
        if st.first_true_up and int(st.first_true_up[5:]) != st.true_up_month:
            raise self._err(("settlement", "first_true_up"),
                            f"first_true_up {st.first_true_up} is not in true_up_month "
                            f"{st.true_up_month}", "make the two agree")
        if st.carryover == "dollars" and st.leftover_credit != "forfeit" and st.surplus_rate > 0:
            raise self._err(("settlement", "surplus_rate"),
                            f"leftover credit is {st.leftover_credit}, so the surplus is "
                            "already credited in dollars; an NSC on top would pay it twice",
                            "set surplus_rate = 0, or leftover_credit = 'forfeit' (PG&E NEM2)")
        cap = self.spec.export_cap
        if cap is not None:
            if (cap.monthly_kwh is None) == (cap.estimate is None):
                raise self._err(("export_cap",), "give either monthly_kwh or estimate = 'pv'",
                                "set monthly_kwh = [12 values] or estimate = 'pv'")
            if cap.monthly_kwh is not None and len(cap.monthly_kwh) != 12:
                raise self._err(("export_cap", "monthly_kwh"),
                                f"monthly_kwh has {len(cap.monthly_kwh)} values, needs 12",
                                "give one cap per calendar month, January first")
            order = cap.decredit_order or []
            if len(set(order)) != len(order):
                raise self._err(("export_cap", "decredit_order"),
                                f"periods listed twice in {order}", "list each period once")
            bad = [p for p in order if p not in self.period_names]
            if bad:
                raise self._err(("export_cap", "decredit_order"), f"unknown periods {bad}",
                                f"use period names from [[periods]]: {self.period_names}")

    def _load_rates_csv(self, name: str) -> tuple[np.ndarray, int]:
        path = Path(name)
        if not path.is_absolute():
            path = (self.base_dir or Path.cwd()) / path
        if not path.exists():
            raise self._err(("export", "rates_csv"), f"file not found: {path}",
                            "give a path relative to the tariff file, or an absolute path")
        return read_rates_csv(path)

    # -- lookups (vectorised) ---------------------------------------------------------

    @cached_property
    def _holiday_cache(self) -> dict[int, set[int]]:
        return {}

    def holiday_days(self, years: np.ndarray) -> np.ndarray:
        """Local days-since-epoch that are holidays, for the given years."""
        spec = self._holiday_spec
        if spec == "none":
            return np.zeros(0, dtype=np.int64)
        import holidays as hol

        keep_pge = {"New Year's Day", "Washington's Birthday", "Memorial Day",
                    "Independence Day", "Labor Day", "Veterans Day", "Thanksgiving Day",
                    "Christmas Day"}
        days: list[int] = []
        for y in sorted({int(y) for y in np.unique(years)}):
            if y not in self._holiday_cache:
                if spec == "pge":
                    cal = hol.country_holidays("US", years=y)
                    sel = [d for d, n in cal.items() if n.replace(" (observed)", "") in keep_pge]
                else:
                    country, _, subdiv = spec.partition("-")
                    sel = list(hol.country_holidays(country, subdiv=subdiv or None, years=y))
                self._holiday_cache[y] = {
                    int(np.datetime64(d, "D").astype(np.int64)) for d in sel if d.year == y
                }
            days.extend(self._holiday_cache[y])
        return np.array(sorted(days), dtype=np.int64)

    def demand_period(self, c: Classified) -> np.ndarray:
        """Each classified interval's demand period (index into ``demand_period_names``:
        the energy periods unless the tariff gives [[demand.periods]])."""
        return self.demand_period_table[c.fields.month - 1, c.daytype, c.fields.hour]

    def classify(self, start_utc: np.ndarray) -> Classified:
        """Season, day type and TOU period of each interval start (UTC epoch seconds).

        A regular series (one step apart) is classified once and kept (read-only): the
        projection bills the same month many times over."""
        starts = np.asarray(start_utc)
        key = None
        if starts.ndim == 1 and len(starts) > 2:
            d = np.diff(starts)
            if d[0] > 0 and np.all(d == d[0]):
                key = (int(starts[0]), int(d[0]), len(starts))
                hit = self._classified.get(key)
                if hit is not None:
                    return hit
        c = self._classify(starts)
        if key is not None:
            for a in (c.season, c.daytype, c.period, *vars(c.fields).values()):
                if isinstance(a, np.ndarray):
                    a.setflags(write=False)
            if len(self._classified) >= 256:
                self._classified.pop(next(iter(self._classified)))
            self._classified[key] = c
        return c

    def _classify(self, start_utc: np.ndarray) -> Classified:
        f = local_fields(start_utc, self.tz)
        daytype = (f.weekday >= 5).astype(np.int64)
        hol = self.holiday_days(f.year)
        if hol.size:
            daytype[np.isin(f.day, hol)] = WEEKEND
        season = self.month_season[f.month]
        period = self.period_table[f.month - 1, daytype, f.hour]
        return Classified(fields=f, season=season, daytype=daytype, period=period)

    def import_rate(self, c: Classified) -> np.ndarray:
        """First-tier all-in import rate, $/kWh, per interval."""
        return self.tier_rates[c.season, c.period, 0]

    def sell_rate(self, c: Classified) -> np.ndarray:
        """Export value, $/kWh, per interval, for net_billing and buy_all_sell_all."""
        e = self.spec.export
        if e.flat_rate is not None:
            return np.full(len(c.season), float(e.flat_rate))
        if self.sell_matrix is not None:
            return self.sell_matrix[c.season, c.period]
        if self.sell_table is not None:
            yi = c.fields.year - self.sell_table_year0
            if yi.min() < 0 or yi.max() >= self.sell_table.shape[0]:
                y0 = self.sell_table_year0
                raise self._err(("export", "rates_csv"),
                                f"the export-value table covers {y0}-"
                                f"{y0 + self.sell_table.shape[0] - 1}, the data needs "
                                f"{int(c.fields.year.min())}-{int(c.fields.year.max())}",
                                "use data inside the table's years or extend the table")
            vals = self.sell_table[yi, c.fields.month - 1, c.daytype, c.fields.hour]
            if np.isnan(vals).any():
                raise self._err(("export", "rates_csv"), "the export-value table has holes "
                                "for some of the data's hours", "complete the table")
            return vals
        raise self._err(("export",), f"scheme {e.scheme!r} has no export value",
                        "set flat_rate, sell_rates or rates_csv")

    def decredit_order(self) -> list[int]:
        """Period indices in the order the export cap de-credits them (docs/billing-rules.md):
        the tariff's ``decredit_order``, else by falling highest import rate (peak first)."""
        cap = self.spec.export_cap
        if cap is not None and cap.decredit_order:
            return [self.period_names.index(p) for p in cap.decredit_order]
        top = self.tier_rates[:, :, 0].max(axis=0)
        return [int(i) for i in np.argsort(-top, kind="stable")]

    def kwh_bank_targets(self, from_month: int, to_month: int) -> np.ndarray:
        """Where each period's banked kWh go when billing moves from calendar month
        ``from_month`` to ``to_month`` (1-12): ``targets[p]`` is the period index whose bank
        they join (``settlement.kwh_bank_pairing``; docs/billing-rules.md, 'kWh banking').

        ``"period"``: each period keeps its own bank. ``"time_of_day"`` (NREL SAM's rule):
        the period that ``to_month``'s weekday schedule has at the first of the clock hours
        :data:`KWH_BANK_HOURS` at which ``from_month``'s weekday schedule has ``p``. A period
        at none of those hours keeps its own bank (SAM drops those kWh instead).
        """
        P = len(self.period_names)
        targets = np.arange(P)
        if self.spec.settlement.kwh_bank_pairing == "period":
            return targets
        src = self.period_table[from_month - 1, WEEKDAY]
        dst = self.period_table[to_month - 1, WEEKDAY]
        for p in range(P):
            hours = [h for h in KWH_BANK_HOURS if src[h] == p]
            if hours:
                targets[p] = dst[hours[0]]
        return targets

    def export_cap_kwh(self, month: int) -> float | None:
        """The NEM-PS cap for calendar ``month`` (kWh), or None when there is no cap."""
        cap = self.spec.export_cap
        if cap is None:
            return None
        if cap.monthly_kwh is None:
            raise TariffError("the export cap is estimate = 'pv', which needs the site's "
                              "monthly PV estimate", where=f"{self.source}: export_cap.estimate",
                              fix="pass it with --export-cap K1,...,K12 (the 'Solar Generation "
                              "Eligible for Credit' on your NEM statement), or set "
                              "monthly_kwh in the tariff")
        return float(cap.monthly_kwh[month - 1])


def read_rates_csv(path: Path) -> tuple[np.ndarray, int]:
    """Read an hourly export-value table: ``year,month,daytype,hour,<$/kWh columns...>``.

    Every column after ``hour`` is a $/kWh component; they are summed (PG&E publishes
    generation and delivery parts). Returns ``(table[year - year0, month-1, daytype, hour],
    year0)`` with NaN where the file has no row.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as e:
        raise TariffError(f"cannot read the export-value table: {e}", where=str(path),
                          fix="give a UTF-8 CSV file") from None
    if not rows:
        raise TariffError("the export-value table is empty", where=str(path),
                          fix="add the header year,month,daytype,hour,<$/kWh...> and rows")
    header = [h.strip() for h in rows[0]]
    if header[:4] != ["year", "month", "daytype", "hour"] or len(header) < 5:
        raise TariffError(f"header is {header[:5]}...", where=f"{path}:1",
                          fix="use columns year,month,daytype,hour,<one or more $/kWh columns>")
    parsed = []
    for ln, r in enumerate(rows[1:], start=2):
        if not r or not "".join(r).strip():
            continue
        try:
            y, m, h = int(r[0]), int(r[1]), int(r[3])
            d = {"weekday": WEEKDAY, "weekend": WEEKEND}[r[2].strip().lower()]
            v = sum(float(x) for x in r[4:])
        except (ValueError, KeyError, IndexError):
            raise TariffError(f"cannot read row {r!r}", where=f"{path}:{ln}",
                              fix="year,month,daytype(weekday|weekend),hour(0-23),$/kWh...") \
                from None
        if not (1 <= m <= 12 and 0 <= h <= 23):
            raise TariffError(f"month {m} or hour {h} out of range", where=f"{path}:{ln}",
                              fix="months are 1-12 and hours 0-23")
        parsed.append((y, m, d, h, v))
    if not parsed:
        raise TariffError("no rows", where=str(path), fix="add the hourly export values")
    years = [p[0] for p in parsed]
    y0 = min(years)
    table = np.full((max(years) - y0 + 1, 12, 2, 24), np.nan)
    for y, m, d, h, v in parsed:
        table[y - y0, m - 1, d, h] = v
    return table, y0


# --------------------------------------------------------------------------------------
# The rates' age

#: a tariff's rates older than this (days) at a planned or billed date are noted
RATES_AGE_DAYS = 366


def rates_date_note(tariff: Tariff, first_utc: int, last_utc: int | None = None,
                    *, what: str = "the plan", before: bool = True) -> str | None:
    """A warning when ``what`` (a plan, a bill) prices dates the tariff's rates may not be
    the ones billed: before its ``effective`` date, or more than :data:`RATES_AGE_DAYS` after
    it. ``first_utc``/``last_utc``: the first and last instant priced, UTC epoch seconds.
    None when in range, or when the tariff states no effective date. ``before=False``
    leaves dates before the effective date unremarked (a what-if of past usage at today's
    rates is the point, not a mistake)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tariff.tz)
    try:
        eff = datetime.fromisoformat(tariff.spec.effective).replace(tzinfo=zone).timestamp()
    except ValueError:
        return None
    last = first_utc if last_utc is None else last_utc
    day = datetime.fromtimestamp(first_utc, zone).date().isoformat()
    if first_utc < eff and before:
        return (f"the tariff {tariff.id}'s rates take effect {tariff.spec.effective}, after "
                f"{day}: {what} prices that day at rates not yet in force (use the tariff "
                "in force then, or check the dates)")
    days = (last - eff) / 86400
    if days <= RATES_AGE_DAYS:
        return None
    day = datetime.fromtimestamp(last, zone).date().isoformat()
    return (f"the tariff {tariff.id}'s rates are from {tariff.spec.effective}, "
            f"{days / 365.25:.1f} years before {day}: {what} may not use the rates billed "
            "then. Check them against the utility's current schedule and update the file "
            "(docs/tariffs.md), or use a newer bundled tariff (trueup tariff list)")


# --------------------------------------------------------------------------------------
# Loading: a path or a bundled id


BUNDLED = "optimizer.tariffs"


def bundled_ids() -> list[str]:
    """Ids (file stems) of the tariffs shipped with trueup."""
    root = resources.files(BUNDLED)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def bundled_path(tariff_id: str) -> Path:
    return Path(str(resources.files(BUNDLED).joinpath(f"{tariff_id}.toml")))


def load_tariff(file_or_id: str | Path) -> Tariff:
    """Load a tariff from a TOML path or a bundled id (see ``trueup tariff list``)."""
    p = Path(file_or_id)
    if not p.exists():
        if str(file_or_id) in bundled_ids():
            p = bundled_path(str(file_or_id))
        else:
            raise TariffError(f"no tariff file or bundled id {str(file_or_id)!r}",
                              where=str(file_or_id),
                              fix=f"give a path to a .toml file or one of: {bundled_ids()}")
    if p.is_dir():
        raise TariffError("is a directory, not a tariff file", where=str(p),
                          fix="give the path of a .toml file in it")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TariffError(f"not UTF-8 text (byte {e.start})", where=str(p),
                          fix="save the tariff as UTF-8 TOML") from None
    except OSError as e:
        raise TariffError(f"cannot read: {e.strerror}", where=str(p),
                          fix="check the path and its permissions") from None
    return Tariff.from_text(text, source=str(p), base_dir=p.parent)
