"""The site: battery, PV arrays, metering topology, location (pydantic, validated at the door).

Units: energy kWh, power kW (AC unless named ``kw_dc``), percentages are *app* % (what the
Tesla app shows; pypowerwall's ``level(scale=True)``), angles degrees, azimuth 180 = south.
These are the ``[site]``, ``[battery]`` and ``[[pv]]`` sections of ``trueup.toml``; their
keys are a contract: extend them, never rename (README, "Configuration").
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Percent = Annotated[float, Field(ge=0, le=100)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Battery(_Model):
    """The Powerwall(s). Defaults: one Powerwall 2 (13.5 kWh usable, 5 kW continuous)."""

    units: Annotated[int, Field(ge=1, le=10)] = 1
    usable_kwh: Annotated[float, Field(gt=0)] = 13.5  # all units together
    max_charge_kw: Annotated[float, Field(gt=0)] = 5.0  # all units together
    max_discharge_kw: Annotated[float, Field(gt=0)] = 5.0
    charge_efficiency: Annotated[float, Field(gt=0.5, le=1)] = 0.95  # one way, AC → stored
    discharge_efficiency: Annotated[float, Field(gt=0.5, le=1)] = 0.95  # one way, stored → AC
    backup_floor_percent: Percent = 20.0  # never below this, whatever the plan says (app %)
    # marginal wear, $ per kWh discharged: replacement cost × capacity lost over the
    # warranty / the warranty's throughput (PW2: 70 % after 37.8 MWh; $9,000 is an assumption)
    wear_cost_per_kwh: Annotated[float, Field(ge=0)] = round(9000 * (1 - 0.70) / 37800, 4)

    @field_validator("backup_floor_percent")
    @classmethod
    def _settable_floor(cls, v: float) -> float:
        if 80 < v < 100:
            raise ValueError(f"a backup floor of {v:g}% cannot be set through the cloud or "
                             "FleetAPI (81-99 % are rejected or snap to 80 since firmware "
                             "25.18): use 80 or less, or 100")
        return v

    @property
    def floor_kwh(self) -> float:
        """The backup floor as stored energy, kWh."""
        return self.usable_kwh * self.backup_floor_percent / 100.0


class PVArray(_Model):
    """One PV array (used by forecasts and the NEM-PS cap estimate)."""

    kw_dc: Annotated[float, Field(gt=0)]
    tilt: Annotated[float, Field(ge=0, le=90)] = 20.0
    azimuth: Annotated[float, Field(ge=0, lt=360)] = 180.0
    losses_percent: Annotated[float, Field(ge=0, lt=100)] = 14.0  # PVWatts' default
    inverter_kw_ac: Annotated[float, Field(gt=0)] | None = None


class Location(_Model):
    latitude: Annotated[float, Field(ge=-90, le=90)] = 37.77
    longitude: Annotated[float, Field(ge=-180, le=180)] = -122.42
    timezone: str = "America/Los_Angeles"
    # how the site's meter/CTs see the PV (docs/billing-rules.md, 'Metering topology')
    metering_topology: Literal["backfed", "line_side_tap"] = "backfed"
    # can the site curtail PV (e.g. an export limit)? If not, surplus beyond the battery
    # must be exported whatever the cap says.
    can_curtail_pv: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as "
                             "'America/Los_Angeles'") from None
        return v


class Site(_Model):
    """Everything physical about the home the optimizer needs."""

    location: Location = Location()
    battery: Battery = Battery()
    pv: list[PVArray] = [PVArray(kw_dc=7.2, tilt=22, azimuth=180)]

    @property
    def pv_kw_dc(self) -> float:
        return sum(a.kw_dc for a in self.pv)
