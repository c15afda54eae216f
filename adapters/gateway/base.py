"""What every gateway adapter speaks: an immutable :class:`SiteState` per read, and
:meth:`Gateway.apply` for settings, answered by an :class:`ApplyResult`.

A reading that is really a failure is never data (docs/powerwall.md, 'Failure shapes'): every
field that could not be read is ``None`` and :attr:`SiteState.unknown` says why. Units: power W
(battery positive = discharging, grid positive = importing, as the Tesla API reports), energy
counters Wh since installation, SOC app % (what the Tesla app shows), times UTC epoch s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from optimizer.behaviour import ExportRule, Mode, Settings


class Clock(Protocol):
    """The only source of time for adapters, so tests can run faster than real time."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class CurrentSettings:
    """Settings as the gateway reports them; a field is None when it could not be read."""

    mode: Mode | None = None
    reserve_percent: float | None = None  # app %
    grid_charging: bool | None = None
    export_rule: ExportRule | None = None

    def complete(self) -> Settings | None:
        if None in (self.mode, self.reserve_percent, self.grid_charging, self.export_rule):
            return None
        return Settings(self.mode, self.reserve_percent, self.grid_charging,  # type: ignore
                        self.export_rule)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SiteState:
    """One read of the site. ``None`` means unknown, with the reason in ``unknown``."""

    timestamp: float  # UTC epoch seconds of the read
    source: str  # which connection answered: local | tedapi | fleetapi | cloud | simulated
    soc_percent: float | None = None  # app %
    solar_w: float | None = None
    home_w: float | None = None
    battery_w: float | None = None  # + discharging, − charging
    grid_w: float | None = None  # + importing, − exporting
    grid_status: str | None = None  # "up" | "down"
    # lifetime energy counters, Wh (local/TEDAPI only; cloud and FleetAPI have none)
    grid_import_wh: float | None = None
    grid_export_wh: float | None = None
    solar_wh: float | None = None
    home_wh: float | None = None
    battery_import_wh: float | None = None
    battery_export_wh: float | None = None
    settings: CurrentSettings = field(default_factory=CurrentSettings)
    unknown: dict[str, str] = field(default_factory=dict)  # field → why it is unknown

    @property
    def ok(self) -> bool:
        """The essentials (SOC and the power flows) were all read."""
        return None not in (self.soc_percent, self.solar_w, self.home_w, self.battery_w,
                            self.grid_w)


@dataclass(frozen=True)
class ApplyResult:
    """What happened to a request to apply settings."""

    requested: Settings
    applied: Settings | None  # what was sent after the safety rails (None: nothing sent)
    written: tuple[str, ...] = ()  # settings fields actually written
    verified: bool = False  # read back (and, where possible, seen acting)
    skipped: str | None = None  # why nothing was written (no change, budget, dry run ...)
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    # write commands actually sent (re-sends included; FleetAPI bills each); None: the
    # adapter does not count them, so one per written field is assumed
    api_calls: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and (self.verified or self.skipped is not None)


@runtime_checkable
class Gateway(Protocol):
    """A Tesla gateway, real or simulated."""

    name: str

    def read(self) -> SiteState: ...

    def apply(self, settings: Settings) -> ApplyResult: ...
