"""``trueup.toml``: the owner's configuration, read with pydantic-settings.

Sources, strongest first: environment variables ``TRUEUP_<SECTION>__<KEY>`` (e.g.
``TRUEUP_BATTERY__BACKUP_FLOOR_PERCENT=30``), then the TOML file, then the defaults, which
are the example site (a California home, one 13.5 kWh Powerwall, 7.2 kW PV, on PG&E EV2-A
NEM2-PS). The keys of ``tariff``, ``[site]``, ``[battery]``, ``[[pv]]``, ``[gateway]``,
``[http]`` and ``[mqtt]`` are a contract (extend, never rename); every key, ``[optimizer]``
included, is documented in the README ("Configuration").
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from optimizer.errors import InputError
from optimizer.site import Battery, Location, PVArray, Site

EXAMPLE_CONFIG = Path(__file__).with_name("example-site.toml")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GatewaySection(_Section):
    kind: Literal["simulated", "powerwall"] = "simulated"
    host: str = "192.168.91.1"
    # fleetapi | cloud | v1r control the battery; none (local API) and tedapi (the gateway's
    # Wi-Fi TEDAPI) only read it (docs/powerwall.md, "Connecting your Powerwall")
    mode: Literal["fleetapi", "cloud", "v1r", "tedapi", "none"] = "fleetapi"
    authpath: str = "/var/lib/trueup/auth"
    password_file: str = "/etc/trueup/gw_password"
    gw_pwd_file: str = ""  # the gateway Wi-Fi password (QR sticker), for mode = tedapi
    tls_pin_file: str = ""  # the gateway certificate's pin; "" = <authpath>/gateway-cert.sha256
    # the simulated site only (trueup/simclock.py): simulated seconds per real second (> 1
    # runs a day in minutes), the simulated start (ISO 8601 with its offset; default now)
    # and failures to inject (adapters/gateway/simulated.py Faults, e.g. write_error = 0.1)
    sim_speed: Annotated[float, Field(ge=1, le=3600, allow_inf_nan=False)] = 1.0
    sim_start: str | None = None
    sim_faults: dict[str, float | str | bool] = {}

    @field_validator("sim_start")
    @classmethod
    def _sim_start(cls, v: str | None) -> str | None:
        if v is not None:
            from datetime import datetime

            try:
                t = datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"cannot read {v!r} as a time; give ISO 8601 with its "
                                 "offset, e.g. 2025-07-01T00:00-07:00") from None
            if t.tzinfo is None:
                raise ValueError("give sim_start with its UTC offset, e.g. "
                                 "2025-07-01T00:00-07:00")
        return v

    @field_validator("sim_faults")
    @classmethod
    def _sim_faults(cls, v: dict) -> dict:
        from dataclasses import fields

        from adapters.gateway.simulated import Faults

        known = {f.name for f in fields(Faults)}
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown fault(s) {bad}; known: {sorted(known)}")
        Faults(**v)  # its own checks (probabilities in 0-1 ...)
        return v

    def sim_start_utc(self) -> float | None:
        from datetime import datetime

        if self.sim_start is None:
            return None
        return datetime.fromisoformat(self.sim_start.replace("Z", "+00:00")).timestamp()


def _offline_solar():
    from forecasts.solar import SolarSettings

    # trueup's default is offline (clear sky); add "open_meteo" (no key), "forecast_solar"
    # or "solcast" (keys in files) in [forecast.solar] providers
    return SolarSettings(providers=["clear_sky"])


class LoadForecastSection(_Section):
    """``[forecast.load]``: big scheduled loads the history does not show well (an EV on a
    timer), as ``[[forecast.load.known]]`` tables (forecasts/load.py's ``KnownLoad``)."""

    known: list[Any] = []

    def model_post_init(self, _context) -> None:
        from forecasts.load import KnownLoad

        object.__setattr__(self, "known", [k if isinstance(k, KnownLoad)
                                           else KnownLoad.model_validate(k)
                                           for k in self.known])


class ForecastSection(_Section):
    """``[forecast]``: ``[forecast.solar]`` is forecasts/solar.py's ``SolarSettings``;
    ``[forecast.load]`` the known loads."""

    solar: Any = Field(default_factory=_offline_solar)
    load: LoadForecastSection = Field(default_factory=LoadForecastSection)

    def model_post_init(self, _context) -> None:
        from forecasts.solar import SolarSettings

        if not isinstance(self.solar, SolarSettings):
            object.__setattr__(self, "solar", SolarSettings.model_validate(self.solar))


class SafetySection(_Section):
    """The safety rails every write passes through (adapters/gateway/safety.py). The
    reserve floor is ``battery.backup_floor_percent``."""

    # None: the control path's default (adapters/gateway/safety.py PATH_BUDGETS)
    max_writes_per_hour: Annotated[int, Field(ge=1, le=60)] | None = None
    max_writes_per_day: Annotated[int, Field(ge=1, le=500)] | None = None
    min_change_interval_s: Annotated[float, Field(ge=0)] = 900.0
    failures_before_fallback: Annotated[int, Field(ge=1, le=100)] = 3
    kill_switch: bool = False  # restore your own settings at start and never write
    # $ a change must earn per field it writes to be sent (0: every planned change is worth
    # its writes while the budget lasts; the budget itself is always kept)
    write_price: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] = 0.0


class HttpSection(_Section):
    bind: str = "127.0.0.1:9871"  # HOST:PORT; the pages read your plan: keep it on loopback
    # host names (besides IP addresses and localhost) the endpoint answers to, e.g. your
    # server's name when Prometheus scrapes it from another host
    allowed_hosts: list[str] = []
    # a file holding the control token (chmod 600; relative: to this file's folder). Set, the
    # web page at / can trip the kill switch with a POST carrying the token; "" (the
    # default): the page is read-only and every POST gets 403
    control_token_file: str = ""

    @field_validator("bind")
    @classmethod
    def _host_and_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("give HOST:PORT with a port from 0 to 65535, e.g. "
                             "\"127.0.0.1:9871\"")
        return v


class MqttSection(_Section):
    """``[mqtt]``: Home Assistant through MQTT discovery (trueup/mqtt.py); off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str = ""
    password_file: str = ""  # the broker password (chmod 600); "" = no password
    discovery_prefix: str = "homeassistant"
    base_topic: str = "trueup"
    client_id: str = "trueup"  # also the device's id in Home Assistant (unique per broker)

    @field_validator("discovery_prefix", "base_topic", "client_id")
    @classmethod
    def _topic_part(cls, v: str) -> str:
        if not v or any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError("give a non-empty MQTT topic part without +, #, or a leading "
                             "or trailing /")
        return v


class OptimizerSection(_Section):
    """How plans are made (see README, "Configuration")."""

    horizon_hours: Annotated[int, Field(ge=1, le=24 * 14)] = 48
    step_minutes: Literal[5, 15, 30, 60] = 15
    solver: Literal["highs", "cbc"] = "highs"
    time_limit_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    mip_gap: Annotated[float, Field(ge=0, le=0.5)] = 0.001
    true_up_month: Annotated[int, Field(ge=1, le=12)] | None = None  # default: the tariff's
    # 12 monthly caps, January first, overriding the tariff's
    export_cap_kwh: Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]],
                              Field(min_length=12, max_length=12)] | None = None
    service_limit_kw: Annotated[float, Field(gt=0)] = 48.0  # grid import limit (200 A ≈ 48 kW)


class TrueupConfig(BaseSettings):
    """The whole configuration. Build with :func:`load_config`."""

    model_config = SettingsConfigDict(env_prefix="TRUEUP_", env_nested_delimiter="__",
                                      extra="forbid")

    tariff: str = "pge-ev2a-nem2ps-2024"
    site: Location = Location()  # [site]: latitude, longitude, timezone, topology
    battery: Battery = Battery()
    pv: list[PVArray] = [PVArray(kw_dc=7.2, tilt=22, azimuth=180)]
    gateway: GatewaySection = GatewaySection()
    http: HttpSection = HttpSection()
    safety: SafetySection = SafetySection()
    forecast: ForecastSection = Field(default_factory=ForecastSection)
    optimizer: OptimizerSection = OptimizerSection()
    mqtt: MqttSection = MqttSection()
    source: str = "built-in example site"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # the environment overrides the file (passed in as init values)
        return env_settings, init_settings

    def rails(self):
        """The safety rails for this site (the path decides the 80/100 reserve rule)."""
        from adapters.gateway.safety import PATH_BUDGETS, Rails

        s = self.safety
        cloud_path = self.gateway.kind == "powerwall" and self.gateway.mode in (
            "fleetapi", "cloud")
        path = self.gateway.mode if self.gateway.kind == "powerwall" else "simulated"
        per_hour, per_day = PATH_BUDGETS.get(path, PATH_BUDGETS["simulated"])
        per_day = s.max_writes_per_day or per_day
        per_hour = min(s.max_writes_per_hour or per_hour, per_day)
        return Rails(floor_percent=self.battery.backup_floor_percent,
                     max_writes_per_hour=per_hour, max_writes_per_day=per_day,
                     min_change_interval_s=s.min_change_interval_s,
                     failures_before_fallback=s.failures_before_fallback,
                     cloud_reserve_rule=cloud_path or self.gateway.kind == "simulated",
                     kill_switch=s.kill_switch)

    def site_model(self) -> Site:
        """The physical site for the optimizer."""
        return Site(location=self.site, battery=self.battery, pv=self.pv)


#: environment variables of ours that are not settings
NOT_SETTINGS = {"TRUEUP_DEBUG"}


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a ``TRUEUP_…`` variable that names no setting: pydantic-settings would
    ignore it, and a misspelled ``TRUEUP_SAFTEY__KILL_SWITCH=true`` must not leave the
    battery under control in silence."""
    fields = TrueupConfig.model_fields
    for name in sorted(environ):
        if not name.upper().startswith("TRUEUP_") or name.upper() in NOT_SETTINGS:
            continue
        parts = name[len("TRUEUP_"):].lower().split("__")
        section, key = parts[0], parts[1] if len(parts) > 1 else None
        what, choices = None, []
        if section not in fields or section == "source":
            rest = "".join(f"__{p.upper()}" for p in parts[1:])
            what, choices = f"no section or key {section!r}", [
                f"TRUEUP_{f.upper()}{rest}" for f in fields if f != "source"]
        else:
            model = fields[section].annotation
            sub = getattr(model, "model_fields", None)
            if key is not None and sub is not None and key not in sub:
                what, choices = f"[{section}] has no key {key!r}", [
                    f"TRUEUP_{section.upper()}__{k.upper()}" for k in sub]
            elif key is not None and sub is None and section != "pv":
                what = f"{section!r} is a single value, not a section"
        if what:
            near = difflib.get_close_matches(name.upper(), choices, n=1, cutoff=0.6)
            raise InputError(
                f"the environment variable {name} names no setting: {what}",
                where=f"environment: {name}",
                fix=(f"did you mean {near[0]}? " if near else "")
                + "settings are TRUEUP_<SECTION>__<KEY> with two underscores (README: "
                "Configuration); unset the variable or correct it")


def load_config(path: str | Path | None = None) -> TrueupConfig:
    """Read ``trueup.toml`` (or the built-in example site when ``path`` is None).

    Errors name the file, the key and the fix; environment overrides are applied on top.
    """
    file = Path(path) if path else EXAMPLE_CONFIG
    where = str(file)
    check_environment(os.environ)
    try:
        data: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("config file not found", where=where,
                         fix="give the path of your trueup.toml, or leave --config out to "
                         "use the built-in example site") from None
    except IsADirectoryError:
        raise InputError("is a directory, not a config file", where=where,
                         fix="give the path of the trueup.toml in it") from None
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text (byte {e.start})", where=where,
                         fix="save the file as UTF-8") from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror or e}", where=where,
                         fix="check the path and its permissions") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"not valid TOML: {e}", where=where, fix="fix the TOML syntax") \
            from None
    data.setdefault("source", where if path else "built-in example site")
    try:
        cfg = TrueupConfig(**data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                msgs.append(f"{key}: unknown key; remove it or correct its spelling")
            else:
                msgs.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise InputError("invalid configuration:\n  " + "\n  ".join(msgs), where=where,
                         fix="edit the keys named above (README: Configuration); environment "
                         "variables TRUEUP_<SECTION>__<KEY> override the file") from None
    cfg.tariff = _tariff_path(cfg.tariff, file, where)
    if path:  # the example's paths are the system defaults, not relative to the package
        _relative_paths(cfg, file)
    return cfg


#: the [gateway] keys that name files or folders: relative ones are read from the config
#: file's folder, as the tariff is
GATEWAY_PATH_KEYS = ("authpath", "password_file", "gw_pwd_file", "tls_pin_file")


#: file keys of other sections, read from the config file's folder too
OTHER_PATH_KEYS = (("mqtt", "password_file"), ("http", "control_token_file"))


def _relative_paths(cfg: TrueupConfig, file: Path) -> None:
    """Resolve relative file keys against the configuration file's folder."""

    def resolved(value: str) -> str:
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else file.parent / p)

    for key in GATEWAY_PATH_KEYS:
        value = getattr(cfg.gateway, key)
        if value:
            setattr(cfg.gateway, key, resolved(value))
    for section, key in OTHER_PATH_KEYS:
        sec = getattr(cfg, section)
        value = getattr(sec, key)
        if value:
            setattr(sec, key, resolved(value))


def _tariff_path(tariff: str, file: Path, where: str) -> str:
    """``tariff`` as trueup will load it: a bundled id as it is, a path relative to the
    configuration file's folder (not the current directory); one that names neither is an
    error naming the key."""
    from optimizer.tariff import bundled_ids

    if tariff in bundled_ids():
        return tariff
    p = Path(tariff).expanduser()
    if not p.is_absolute():
        p = file.parent / p
    if not p.is_file():
        raise InputError(f"tariff {tariff!r} is neither a bundled tariff nor a file "
                         f"({p} does not exist)", where=f"{where}: tariff",
                         fix="give a bundled id (trueup tariff list) or the path of a tariff "
                         "TOML, relative to this file's folder or absolute")
    return str(p)
