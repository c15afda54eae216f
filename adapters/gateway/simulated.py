"""A simulated Tesla gateway: the Powerwall behaviour model behind the :class:`Gateway` protocol.

:class:`SimulatedGateway` (``name = "simulated"``) moves a battery with
:func:`optimizer.behaviour.step` — the same model the policy and the backtest use — between
reads, and answers :meth:`~SimulatedGateway.read` with a :class:`SiteState` shaped like the real
adapter's: power in W, SOC in app %, lifetime counters in Wh, the settings in force, and
``None`` + a reason for anything that could not be read. :class:`SimClock` lets tests (and a
fast-forward demo) run days in milliseconds.

Physics. The PV and load profiles are energy per *series step* (kWh per ``step_s`` seconds,
from ``start``): a sequence, or a callable ``f(step_start_utc) -> kWh`` for that step. Each
read (and each :meth:`~SimulatedGateway.apply`, and each change of :attr:`faults`) first
advances the physics from where it stopped to ``clock.now()``, in segments that end at series
step boundaries, at the moment a delayed write takes effect, and at a scheduled counter reset.
A partial step gets its step's energy pro rata in time. Each segment is one
:func:`~optimizer.behaviour.step` call under the settings in force, so settings act exactly
from the moment they are applied (plus any delay). The Time-Based Control price signal (a
callable ``t -> PriceSignal``, default HOLD) is sampled at each segment's start.

Reported power is the average over the last simulated segment (before the first segment: a
1-second preview of the step in progress, not committed). Flows follow Tesla's signs: battery
``+`` discharging, grid ``+`` importing, and ``solar + grid + battery == home``.

Lifetime counters (Wh) grow by each segment's flows, like the real gateway's meters:
``grid_import_wh``/``grid_export_wh`` (import, export), ``solar_wh`` (PV produced and not
curtailed), ``home_wh`` (load served), ``battery_import_wh`` (AC into the battery: charge) and
``battery_export_wh`` (AC out of it: discharge).

Grid outage (``Faults.grid_down``): ``grid_status`` is ``"down"``, there is no import or
export, the settings are ignored and the battery covers the load down to **0 %** (the reserve
exists for exactly this). PV serves the load and charges the battery; what is left is curtailed
(an islanded inverter cannot export). Load neither PV nor the battery can cover is not served
(``home_w`` is the load served). Optimistic, and unverified: a real Powerwall that empties in
an outage shuts down, PV included, until it restarts.

What a read presents — the real adapter's rules (docs/powerwall.md, 'Failure shapes'), applied
to what the simulator "measured":

* all four power flows exactly 0 is pypowerwall's failure shape, whatever caused it (the
  ``zero_power`` fault, or an idle simulated home with no load): flows ``None`` with reason
  :data:`ZERO_POWER_REASON`;
* all six lifetime counters exactly 0 (a fresh simulator with ``counters_wh`` left at 0, or
  just after a counter reset with nothing flowing since) is how cloud paths report "no
  counters": counters ``None`` with reason :data:`COUNTERS_ZERO_REASON`;
* the FleetAPI SOC glitch (``soc_glitch`` fault: ``level()`` answered 5.0 raw = 0 app %): SOC
  ``None`` with reason :data:`SOC_GLITCH_REASON`. A true 0 % (a battery drained in an outage)
  is reported as 0 — the simulator knows which is which; a real FleetAPI adapter could not;
* read timeouts and HTTP-style errors: with ``Faults.errors == "unknown"`` (the default, what
  the real adapter returns) a :class:`SiteState` whose every field is ``None`` with the reason;
  with ``"raise"`` the transport exception itself (:class:`TimeoutError`,
  :class:`SimulatedHTTPError`), for testing the code that wraps a raw client.

Physics advance on every read, failed or not: the house does not stop when a read fails.

:meth:`~SimulatedGateway.apply` records the settings and returns ``ApplyResult(verified=True)``
— the safety rails (80/100 reserve rule, write budget, read-back) live elsewhere; the simulator
accepts any legal :class:`Settings`, including reserve 100 (it then charges to full and holds).
Faults make writes lie as the cloud path does: ``drop_writes`` reports success and changes
nothing, ``apply_delay_s`` makes settings act (and read back) only after a delay,
``write_error`` answers with an HTTP-style error.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np

from adapters.gateway.base import ApplyResult, Clock, CurrentSettings, SiteState, SystemClock
from optimizer.behaviour import (
    BatterySpec,
    ExportRule,
    Mode,
    PriceSignal,
    Settings,
    StepFlows,
    step,
)
from optimizer.errors import InputError

ZERO_POWER_REASON = "all-zero power reading (pypowerwall failure shape)"
SOC_GLITCH_REASON = "SOC read as 0 app % (5.0 raw): FleetAPI level() failure shape"
COUNTERS_ZERO_REASON = "every lifetime counter reads 0 Wh: not reported"
TIMEOUT_REASON = "read timed out (simulated)"
HTTP_ERROR_STATUS = 503

FLOW_FIELDS = ("solar_w", "home_w", "battery_w", "grid_w")
COUNTER_FIELDS = ("grid_import_wh", "grid_export_wh", "solar_wh", "home_wh",
                  "battery_import_wh", "battery_export_wh")
SETTINGS_KEYS = tuple(f"settings.{name}" for name in
                      ("mode", "reserve_percent", "grid_charging", "export_rule"))
READ_FIELDS = ("soc_percent", *FLOW_FIELDS, "grid_status", *COUNTER_FIELDS, *SETTINGS_KEYS)

DEFAULT_SETTINGS = Settings(Mode.SELF_POWERED, 20.0, False, ExportRule.PV_ONLY)

# islanded: cover the load down to 0 %, never charge from the (absent) grid
_OUTAGE_SETTINGS = Settings(Mode.SELF_POWERED, 0.0, False, ExportRule.PV_ONLY)
_PREVIEW_S = 1.0
_ZERO_W = 1e-9  # |flow| at or below this is a zero reading

Profile = Sequence[float] | np.ndarray | Callable[[float], float]
SignalHook = Callable[[float], PriceSignal | str | None]


class SimulatedHTTPError(ConnectionError):
    """An HTTP-style error from the simulated gateway (``Faults.errors == "raise"``)."""

    def __init__(self, status: int, op: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status} from the gateway on {op} (simulated)")


# --------------------------------------------------------------------------------------
# Time


class SimClock:
    """A manual clock: :meth:`sleep` and :meth:`advance` move time forward instantly.

    Args:
        start: the initial time, UTC epoch seconds (default 2024-06-01T00:00Z).
    """

    def __init__(self, start: float = 1_717_200_000.0) -> None:
        self._t = float(start)

    def now(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> float:
        """Move time forward ``seconds`` (≥ 0); return the new time."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"a clock only moves forward: got {seconds!r} s")
        self._t += float(seconds)
        return self._t

    def jump(self, seconds: float) -> float:
        """Set the clock ``seconds`` forward or back (negative), as NTP correcting a
        clock or a hand-set date does; return the new time."""
        if not math.isfinite(seconds):
            raise ValueError(f"a jump must be finite: got {seconds!r} s")
        self._t += float(seconds)
        return self._t


# --------------------------------------------------------------------------------------
# Faults


@dataclass(frozen=True)
class Faults:
    """Failures to inject; set at run time with ``gateway.faults = Faults(...)`` or
    :meth:`SimulatedGateway.set_faults`. Probabilities are per read (or per write), drawn from
    the gateway's seeded RNG, so a run is reproducible; 1.0 means always.

    Attributes:
        errors: how a failed read or write shows: ``"unknown"`` (default; what the real
            adapter does) — a :class:`SiteState` with every field ``None`` and the reason, or
            an :class:`ApplyResult` with ``errors``; ``"raise"`` — the raw transport exception
            (:class:`TimeoutError`, :class:`SimulatedHTTPError`).
        read_timeout: probability a read times out.
        http_error: probability a read answers with an HTTP error (503).
        zero_power: probability the power flows read as all zeros (SOC etc. normal).
        soc_glitch: probability SOC reads as 5.0 raw / 0 app % (FleetAPI's failure shape).
        write_error: probability a write answers with an HTTP error and changes nothing.
        drop_writes: probability a write reports success and is silently not applied.
        apply_delay_s: seconds before an accepted write takes effect (and reads back).
        grid_down: grid outage: no import or export, the battery covers the load to 0 %.
        counter_reset_at: UTC epoch s at which the lifetime counters restart from 0 (as after
            a gateway replacement); fires once. See also :meth:`SimulatedGateway.reset_counters`.
    """

    errors: Literal["unknown", "raise"] = "unknown"
    read_timeout: float = 0.0
    http_error: float = 0.0
    zero_power: float = 0.0
    soc_glitch: float = 0.0
    write_error: float = 0.0
    drop_writes: float = 0.0
    apply_delay_s: float = 0.0
    grid_down: bool = False
    counter_reset_at: float | None = None

    def __post_init__(self) -> None:
        if self.errors not in ("unknown", "raise"):
            raise InputError(f"errors {self.errors!r} must be 'unknown' or 'raise'",
                             where="Faults.errors")
        for name in ("read_timeout", "http_error", "zero_power", "soc_glitch", "write_error",
                     "drop_writes"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise InputError(f"{name} {p!r} must be a probability in 0–1",
                                 where=f"Faults.{name}")
        if not (math.isfinite(self.apply_delay_s) and self.apply_delay_s >= 0):
            raise InputError(f"apply_delay_s {self.apply_delay_s!r} must be ≥ 0 s",
                             where="Faults.apply_delay_s")


# --------------------------------------------------------------------------------------
# Profiles


class _Series:
    """kWh per step on a fixed grid (a sequence or a callable of the step's start)."""

    def __init__(self, name: str, profile: Profile, start: float, step_s: float,
                 wrap: bool) -> None:
        self.name, self.start, self.step_s, self.wrap = name, start, step_s, wrap
        if callable(profile):
            self._fn: Callable[[float], float] | None = profile
            self._values = None
        else:
            values = np.asarray(profile, dtype=float)
            if values.ndim != 1 or len(values) == 0:
                raise InputError(f"{name} must be a non-empty 1-D series of kWh per step",
                                 where=f"SimulatedGateway({name})")
            if not np.all(np.isfinite(values) & (values >= 0)):
                raise InputError(f"{name} has negative or non-finite kWh",
                                 where=f"SimulatedGateway({name})")
            self._fn, self._values = None, values

    def kwh(self, k: int) -> float:
        """The energy of step ``k`` (the step starting at ``start + k × step_s``)."""
        if self._fn is not None:
            v = float(self._fn(self.start + k * self.step_s))
            if not (math.isfinite(v) and v >= 0):
                raise InputError(f"{self.name}({self.start + k * self.step_s}) returned {v!r}; "
                                 "it must be a finite kWh ≥ 0",
                                 where=f"SimulatedGateway({self.name})")
            return v
        assert self._values is not None
        n = len(self._values)
        if k < 0 or (k >= n and not self.wrap):
            raise InputError(
                f"the simulation reached step {k} but the {self.name} series has steps 0–{n - 1}",
                where=f"SimulatedGateway({self.name})",
                fix="give a longer series, a callable, or wrap=True to repeat it")
        return float(self._values[k % n])


@dataclass
class _Flows:
    """Average power of one segment, W (Tesla's signs)."""

    solar_w: float
    home_w: float
    battery_w: float
    grid_w: float


# --------------------------------------------------------------------------------------
# The gateway


class SimulatedGateway:
    """A Powerwall site simulated with :func:`optimizer.behaviour.step` (see the module doc).

    Args:
        spec: the battery.
        soc_percent: SOC at the start, app %.
        pv, load: kWh per series step — a sequence (index 0 = the step starting at ``start``)
            or a callable ``f(step_start_utc) -> kWh`` for that step.
        step_s: the series step, seconds (default 300).
        start: UTC epoch s of series step 0 (default: the clock's time at construction).
            The physics start at the clock's time at construction (≥ ``start``).
        clock: the time source (default the system clock; tests pass a :class:`SimClock`).
        settings: the settings in force at the start (default Self-Powered, reserve 20 %,
            grid charging off, export rule ``pv_only``).
        price_signal: TBC's intent per time, ``t -> PriceSignal`` (default HOLD).
        faults: failures to inject (default none); settable at run time.
        seed: the RNG seed for fault probabilities.
        wrap: repeat sequence profiles when the simulation runs past their end (else an
            :class:`~optimizer.errors.InputError` is raised).
        counters_wh: initial lifetime counter values, Wh, by field name (default 0 each; a
            real gateway has years on them, and all-zero counters read as unknown).
        resume_at: UTC epoch s a previous simulator reached (:meth:`snapshot`); the physics
            start there instead of at the clock's time, so the first read simulates the
            time between (default None).
    """

    name = "simulated"

    def __init__(
        self,
        spec: BatterySpec,
        soc_percent: float,
        pv: Profile,
        load: Profile,
        *,
        step_s: float = 300.0,
        start: float | None = None,
        clock: Clock | None = None,
        settings: Settings | None = None,
        price_signal: SignalHook | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        wrap: bool = False,
        counters_wh: Mapping[str, float] | None = None,
        resume_at: float | None = None,
    ) -> None:
        if not 0.0 <= soc_percent <= 100.0:
            raise InputError(f"soc_percent {soc_percent!r} must be in 0–100 (app %)",
                             where="SimulatedGateway(soc_percent)")
        if not (math.isfinite(step_s) and step_s > 0):
            raise InputError(f"step_s {step_s!r} must be > 0 s", where="SimulatedGateway(step_s)")
        self.spec = spec
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._t = float(self.clock.now())
        if resume_at is not None and resume_at < self._t:
            self._t = float(resume_at)  # the site ran on while no one read it
        series_start = self._t if start is None else float(start)
        if series_start > self._t:
            raise InputError(f"the series starts at {series_start}, after the clock's time "
                             f"{self._t}", where="SimulatedGateway(start)")
        self._pv = _Series("pv", pv, series_start, float(step_s), wrap)
        self._load = _Series("load", load, series_start, float(step_s), wrap)
        self._soc_kwh = soc_percent / 100.0 * spec.capacity_kwh
        self._settings = settings if settings is not None else DEFAULT_SETTINGS
        self._last_requested = self._settings
        self._price_signal = price_signal
        self._faults = faults if faults is not None else Faults()
        self._rng = random.Random(seed)
        self._pending: list[tuple[float, int, Settings]] = []  # (effective at, seq, settings)
        self._seq = 0
        self._fired_resets: set[float] = set()
        counters = dict.fromkeys(COUNTER_FIELDS, 0.0)
        for key, value in (counters_wh or {}).items():
            if key not in counters:
                raise InputError(f"unknown counter {key!r}; counters are "
                                 f"{', '.join(COUNTER_FIELDS)}",
                                 where="SimulatedGateway(counters_wh)")
            counters[key] = float(value)
        self._counters = counters
        self._last: _Flows | None = None
        self.log: list[tuple[float, str]] = []  # (time, what happened) for tests and debugging
        # every API write made: (time, settings requested, fields written); ``attempts`` also
        # holds the writes that failed (each still one API call)
        self.writes: list[tuple[float, Settings, tuple[str, ...]]] = []
        self.attempts: list[tuple[float, Settings, tuple[str, ...]]] = []

    # ---------------------------------------------------------------- state (truth)

    @property
    def soc_percent(self) -> float:
        """The true SOC, app %, as of the last advance (no faults applied)."""
        return self._soc_kwh / self.spec.capacity_kwh * 100.0

    @property
    def settings(self) -> Settings:
        """The settings in force now (what the battery acts on)."""
        return self._settings

    @property
    def pending(self) -> tuple[tuple[float, Settings], ...]:
        """Accepted writes not yet in force: (effective at, settings)."""
        return tuple((t, s) for t, _, s in sorted(self._pending))

    def snapshot(self) -> dict:
        """What a later simulator needs to carry on where this one is (JSON-ready): the
        simulated time, true SOC (app %), lifetime counters (Wh) and the settings in force.
        Give them back as ``resume_at``, ``soc_percent``, ``counters_wh`` and ``settings``:
        its first read then simulates the time in between, as a real site runs on while
        trueup is stopped."""
        st = self._settings
        return {"t": self._t, "soc_percent": self.soc_percent, "counters_wh": self.counters_wh,
                "settings": {"mode": str(st.mode.value), "reserve_percent": st.reserve_percent,
                             "grid_charging": st.grid_charging,
                             "export_rule": str(st.export_rule.value)}}

    @property
    def counters_wh(self) -> dict[str, float]:
        """The true lifetime counters, Wh, as of the last advance."""
        return dict(self._counters)

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._advance(self.clock.now())  # the old faults held until now
        self._faults = faults

    def set_faults(self, **changes: object) -> Faults:
        """Change some fault fields (``gw.set_faults(grid_down=True)``); return the new set."""
        self.faults = replace(self._faults, **changes)  # type: ignore[arg-type]
        return self._faults

    def reset_counters(self) -> None:
        """Restart every lifetime counter from 0 now (as after a gateway replacement)."""
        now = self.clock.now()
        self._advance(now)
        self._reset_counters(now)

    # ---------------------------------------------------------------- Gateway protocol

    def read(self) -> SiteState:
        """Advance the physics to now and read the site (see the module doc for faults)."""
        now = float(self.clock.now())
        self._advance(now)
        f = self._faults
        timeout, http, zero, glitch = (self._rng.random() for _ in range(4))
        if timeout < f.read_timeout:
            self.log.append((now, "read timed out"))
            if f.errors == "raise":
                raise TimeoutError("gateway read timed out (simulated)")
            return _unreadable(now, TIMEOUT_REASON)
        if http < f.http_error:
            self.log.append((now, f"read HTTP {HTTP_ERROR_STATUS}"))
            if f.errors == "raise":
                raise SimulatedHTTPError(HTTP_ERROR_STATUS, "read")
            return _unreadable(now, f"HTTP {HTTP_ERROR_STATUS} Service Unavailable (simulated)")

        unknown: dict[str, str] = {}
        flows = self._last if self._last is not None else self._preview(now, unknown)
        if flows is not None and zero < f.zero_power:
            self.log.append((now, "power read as all zeros"))
            flows = _Flows(0.0, 0.0, 0.0, 0.0)
        values: dict[str, float | None] = dict.fromkeys(FLOW_FIELDS)
        if flows is not None:
            if all(abs(getattr(flows, k)) <= _ZERO_W for k in FLOW_FIELDS):
                unknown.update(dict.fromkeys(FLOW_FIELDS, ZERO_POWER_REASON))
            else:
                values = {k: getattr(flows, k) for k in FLOW_FIELDS}
        counters: dict[str, float | None] = dict(self._counters)
        if all(v == 0.0 for v in self._counters.values()):
            counters = dict.fromkeys(COUNTER_FIELDS)
            unknown.update(dict.fromkeys(COUNTER_FIELDS, COUNTERS_ZERO_REASON))
        soc: float | None = self.soc_percent
        if glitch < f.soc_glitch:
            self.log.append((now, "SOC read as 5.0 raw"))
            soc = None
            unknown["soc_percent"] = SOC_GLITCH_REASON
        s = self._settings
        return SiteState(
            timestamp=now, source="simulated", soc_percent=soc,
            grid_status="down" if f.grid_down else "up",
            settings=CurrentSettings(s.mode, s.reserve_percent, s.grid_charging, s.export_rule),
            unknown=unknown, **values, **counters)

    def fields_to_write(self, settings: Settings) -> int:
        """How many setting fields an :meth:`apply` of ``settings`` would write (each is one
        API command on the real gateway; the safety rails budget them)."""
        return sum(getattr(settings, fl.name) != getattr(self._last_requested, fl.name)
                   for fl in fields(Settings))

    def apply(self, settings: Settings) -> ApplyResult:
        """Record ``settings``; they act after ``faults.apply_delay_s`` (0: at once).

        Returns ``ApplyResult(verified=True)`` with the fields that differ from the previous
        request in ``written`` — also when the write is dropped (``drop_writes``), as the
        cloud path does. A ``write_error`` gives ``errors`` (or raises, ``errors="raise"``).
        """
        now = float(self.clock.now())
        self._advance(now)
        f = self._faults
        fail, drop = self._rng.random(), self._rng.random()
        tried = tuple(fl.name for fl in fields(Settings)
                      if getattr(settings, fl.name) != getattr(self._last_requested, fl.name))
        if not tried:  # nothing to send: no command, nothing to fail
            return ApplyResult(requested=settings, applied=settings, written=(),
                               verified=True, api_calls=0)
        self.attempts.append((now, settings, tried))
        if fail < f.write_error:
            self.log.append((now, f"write HTTP {HTTP_ERROR_STATUS}"))
            if f.errors == "raise":
                raise SimulatedHTTPError(HTTP_ERROR_STATUS, "write")
            return ApplyResult(requested=settings, applied=settings, verified=False,
                               errors=(f"HTTP {HTTP_ERROR_STATUS} Service Unavailable on "
                                       "write (simulated)",), api_calls=len(tried))
        written = tuple(fl.name for fl in fields(Settings)
                        if getattr(settings, fl.name) != getattr(self._last_requested, fl.name))
        self._last_requested = settings
        if written:
            self.writes.append((now, settings, written))
        if drop < f.drop_writes:
            self.log.append((now, f"write dropped: {settings}"))
        else:
            self._seq += 1
            eff = now + f.apply_delay_s
            # last write wins: an older write still pending past this one's time is superseded
            self._pending = [p for p in self._pending if p[0] <= eff]
            self._pending.append((eff, self._seq, settings))
            self._pending.sort()
            self._fire_due(now)
            if f.apply_delay_s:
                self.log.append((now, f"write accepted, acts at {now + f.apply_delay_s}"))
        return ApplyResult(requested=settings, applied=settings, written=written, verified=True,
                           api_calls=len(tried))

    # ---------------------------------------------------------------- physics

    def _step_index(self, t: float) -> int:
        s = self._pv
        k = math.floor((t - s.start) / s.step_s)
        if s.start + (k + 1) * s.step_s <= t:  # float rounding at a boundary
            k += 1
        return k

    def _next_event(self, t: float) -> float:
        times = [eff for eff, _, _ in self._pending if eff > t]
        r = self._faults.counter_reset_at
        if r is not None and r > t and r not in self._fired_resets:
            times.append(r)
        return min(times, default=math.inf)

    def _fire_due(self, t: float) -> None:
        while self._pending and self._pending[0][0] <= t:
            _, _, s = self._pending.pop(0)
            self._settings = s
        r = self._faults.counter_reset_at
        if r is not None and r <= t and r not in self._fired_resets:
            self._fired_resets.add(r)
            self._reset_counters(r)

    def _reset_counters(self, t: float) -> None:
        self._counters = dict.fromkeys(COUNTER_FIELDS, 0.0)
        self.log.append((t, "lifetime counters reset to 0"))

    def _advance(self, until: float) -> None:
        t = self._t
        if until < t:
            self.log.append((until, f"clock went back {t - until:.3f} s: physics not rewound"))
            return
        while True:
            self._fire_due(t)
            if t >= until:
                break
            k = self._step_index(t)
            end = min(until, self._pv.start + (k + 1) * self._pv.step_s, self._next_event(t))
            if end > t:
                self._segment(t, end, k, commit=True)
            t = end
        self._t = until

    def _segment(self, a: float, b: float, k: int, *, commit: bool) -> _Flows:
        """Simulate [a, b) inside series step ``k``; return the average flows (W)."""
        frac = (b - a) / self._pv.step_s
        hours = (b - a) / 3600.0
        pv, load = self._pv.kwh(k) * frac, self._load.kwh(k) * frac
        if self._faults.grid_down:
            fl = step(_OUTAGE_SETTINGS, self._soc_kwh, load, pv, hours, self.spec)
            unserved, curtailed = fl.import_kwh, fl.curtailed_kwh + fl.export_kwh
            imported = exported = 0.0
        else:
            signal = self._price_signal(a) if self._price_signal is not None else None
            fl = step(self._settings, self._soc_kwh, load, pv, hours, self.spec,
                      price_signal=signal)
            unserved, curtailed = 0.0, fl.curtailed_kwh
            imported, exported = fl.import_kwh, fl.export_kwh
        solar, home = pv - curtailed, load - unserved
        to_w = 1000.0 / hours
        flows = _Flows(solar_w=solar * to_w, home_w=home * to_w,
                       battery_w=(fl.discharge_kwh - fl.charge_kwh) * to_w,
                       grid_w=(imported - exported) * to_w)
        if commit:
            self._commit(fl, imported, exported, solar, home)
            self._last = flows
        return flows

    def _commit(self, fl: StepFlows, imported: float, exported: float, solar: float,
                home: float) -> None:
        c = self._counters
        c["grid_import_wh"] += imported * 1000.0
        c["grid_export_wh"] += exported * 1000.0
        c["solar_wh"] += solar * 1000.0
        c["home_wh"] += home * 1000.0
        c["battery_import_wh"] += fl.charge_kwh * 1000.0
        c["battery_export_wh"] += fl.discharge_kwh * 1000.0
        self._soc_kwh = fl.soc_end_kwh

    def _preview(self, now: float, unknown: dict[str, str]) -> _Flows | None:
        """Flows of the step in progress before anything was simulated (not committed)."""
        try:
            return self._segment(now, now + _PREVIEW_S, self._step_index(now), commit=False)
        except InputError as e:
            unknown.update(dict.fromkeys(FLOW_FIELDS, f"no simulated flows: {e.what}"))
            return None


def _unreadable(now: float, reason: str) -> SiteState:
    """A read that failed as a whole: every field unknown, with the reason."""
    return SiteState(timestamp=now, source="simulated",
                     unknown=dict.fromkeys(READ_FIELDS, reason))
