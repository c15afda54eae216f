"""How a Powerwall responds to its settings: a pure, step-by-step model.

The behaviour it encodes, and where each rule comes from, is in docs/powerwall.md.

The policy uses it to check a schedule of settings against the plan, the simulated gateway
uses it to move its battery, and the backtest uses it to replay a year. One model for all
three, so what the plan assumes and what the backtest measures cannot drift apart.

Public API:

* :class:`Mode`, :class:`ExportRule`, :class:`Settings` — what can be set on the gateway
  (the values are pypowerwall's strings).
* :func:`reserve_ok_for_cloud`, :func:`clamp_reserve` — the 80/100 reserve rule.
* :func:`raw_to_app`, :func:`app_to_raw` — pypowerwall's raw vs app SOC scales.
* :class:`BatterySpec` — capacity, power limits, efficiencies, grid-charge rates.
* :class:`PriceSignal` — what Tesla's Time-Based Control wants to do in a step (our model).
* :func:`step` → :class:`StepFlows` — the energy flows of one step.
* :func:`simulate` → :class:`Simulation` — :func:`step` over many steps, as numpy arrays.

Units: energies are kWh *for the step*; powers are kW (a limit of ``P`` kW over a step of
``h`` hours is ``P × h`` kWh); durations are hours. SOC in kWh is the usable energy on the
**app** scale: 0 kWh = 0 app % (5 % raw), ``capacity_kwh`` = 100 app %. Reserve is app %.

Energy accounting is on the AC side: ``charge_kwh`` is AC energy taken into the battery
(it stores ``charge × η_c``), ``discharge_kwh`` is AC energy delivered by it (it draws
``discharge / η_d`` from storage). Every step satisfies exactly::

    load + export + charge_from_pv + charge_from_grid = pv − curtailed + import + discharge
    soc_end = soc + charge · η_c − discharge / η_d,        0 ≤ soc_end ≤ capacity

This is a model built from owners' reports and peer practice, not Tesla's firmware: in
particular Time-Based Control is Tesla's own optimizer, which we stand in for with an
explicit :class:`PriceSignal` (see :func:`step`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from optimizer.errors import InputError

# --------------------------------------------------------------------------------------
# What can be set (docs/powerwall.md, 'What can be set')


class Mode(StrEnum):
    """Operation mode; the values are pypowerwall's ``real_mode`` strings."""

    SELF_POWERED = "self_consumption"
    TIME_BASED = "autonomous"  # Time-Based Control (TBC): Tesla's own optimizer
    BACKUP = "backup"  # API only; holds the battery full


class ExportRule(StrEnum):
    """What Time-Based Control may export (``customer_preferred_export_rule``)."""

    BATTERY_OK = "battery_ok"  # app: "Everything"
    PV_ONLY = "pv_only"  # app: "Solar"
    NEVER = "never"  # app: "None"


class PriceSignal(StrEnum):
    """What Tesla's TBC wants to do in a step — our stand-in for its optimizer.

    A plain string (``"charge"``) is accepted wherever a signal is; None means HOLD.
    """

    CHARGE = "charge"
    EXPORT = "export"
    HOLD = "hold"


CLOUD_RESERVE_MIN = 1.0  # app %: 0 was reported not to apply
CLOUD_RESERVE_SNAP = 80.0  # app %: 81–99 is rejected or snaps to 80 since fw 25.18


@dataclass(frozen=True)
class Settings:
    """The gateway settings that shape the battery's behaviour.

    Attributes:
        mode: operation mode (a :class:`Mode`; pypowerwall's strings are accepted).
        reserve_percent: backup reserve, **app %**, 0–100. Not every value is accepted by the
            cloud/FleetAPI path — see :func:`reserve_ok_for_cloud`.
        grid_charging: Tesla's "grid charging" switch. Restricts only TBC-initiated grid
            charging; it does not stop charging up to the reserve (docs/powerwall.md,
            'Reserve').
        export_rule: what TBC may export (an :class:`ExportRule`).
    """

    mode: Mode
    reserve_percent: float
    grid_charging: bool
    export_rule: ExportRule

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", _coerce(Mode, self.mode, "mode"))
        object.__setattr__(self, "export_rule",
                           _coerce(ExportRule, self.export_rule, "export_rule"))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~optimizer.errors.InputError` (a ValueError) if a value is illegal."""
        r = self.reserve_percent
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0.0 <= r <= 100.0:
            raise InputError(
                f"backup reserve must be a number in 0–100 (app %), got {r!r}",
                where="Settings.reserve_percent",
                fix="give the reserve in app % between 0 and 100 (the cloud path accepts "
                    "1–80 or exactly 100; see clamp_reserve)",
            )
        if not isinstance(self.grid_charging, bool | np.bool_):
            raise InputError(f"grid_charging must be True or False, not {self.grid_charging!r}",
                             where="Settings.grid_charging")

    def reserve_kwh(self, spec: BatterySpec) -> float:
        """The reserve as usable energy, kWh (app % × capacity)."""
        return self.reserve_percent / 100.0 * spec.capacity_kwh


def _coerce(enum: type[StrEnum], value: object, name: str) -> StrEnum:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise InputError(f"{name} {value!r} is not one of {allowed}",
                         where=f"Settings.{name}") from None


def reserve_ok_for_cloud(reserve: float) -> bool:
    """Whether a reserve (app %) is one the cloud/FleetAPI path reliably applies.

    Owners report that since firmware 25.18 the cloud and FleetAPI reject 81–99 % or snap
    it to 80, and that 0 does not apply. Legal: 1 ≤ reserve ≤ 80, or exactly 100. See
    docs/powerwall.md, 'Reserve'.
    """
    return CLOUD_RESERVE_MIN <= reserve <= CLOUD_RESERVE_SNAP or reserve == 100.0


def clamp_reserve(requested: float, floor: float = CLOUD_RESERVE_MIN, *,
                  hold: bool = False) -> float:
    """The legal reserve (app %) nearest ``requested`` that is ≥ ``floor``.

    Args:
        requested: the reserve the plan wants, app % 0–100.
        floor: the lowest reserve allowed (the owner's backup floor), app % 0–100.
        hold: the caller needs at least ``requested`` held (e.g. to stop discharge
            completely); a request in 81–99 then rounds *up* to 100.

    Returns:
        ``max(requested, floor, 1)`` when that is legal (≤ 80 or 100). A value in the
        forbidden 81–99 band rounds **down to 80** when the floor allows it (``floor ≤ 80``
        and not ``hold``), else **up to 100**. Examples: 85 with floor 20 → 80; 85 with
        floor 85 → 100; 85 with ``hold=True`` → 100; 0 → 1.

    Why down by default: a reserve above SOC makes the battery charge up to it from the
    grid, even with grid charging off (docs/powerwall.md, 'Reserve'). Rounding 85 up to
    100 could buy up to 20 % of capacity from the grid the plan did not ask for; rounding
    down to 80 holds up to 5 % less than asked, which the plan re-solves around in its
    next cycle.
    """
    for name, value in (("requested", requested), ("floor", floor)):
        if not 0.0 <= value <= 100.0:
            raise InputError(f"{name} reserve {value!r} is outside 0–100 (app %)",
                             where=f"clamp_reserve({name})")
    wanted = max(requested, floor, CLOUD_RESERVE_MIN)
    if reserve_ok_for_cloud(wanted):
        return float(wanted)
    if hold or floor > CLOUD_RESERVE_SNAP:
        return 100.0
    return CLOUD_RESERVE_SNAP


# --------------------------------------------------------------------------------------
# SOC scales (docs/powerwall.md, 'SOC scales: raw and app')

_RAW_BUFFER = 5.0  # raw % below app 0 %
_RAW_SPAN = 0.95  # raw % per app %


def raw_to_app(raw_pct):
    """Raw gateway SOC/reserve % → Tesla app %, clamped to 0–100.

    ``app = (raw − 5) / 0.95``: the gateway's raw scale keeps a 5 % buffer below the app's
    0 %. Accepts a number or a numpy array (returns a float or an array).

    References:
        pypowerwall 0.22.2, ``Powerwall.level(scale=True)`` and ``get_reserve(scale=True)``
        (``(level / 0.95) - (5 / 0.95)``, clamped at 0 by ``get_reserve``).
    """
    app = np.clip((np.asarray(raw_pct, dtype=float) - _RAW_BUFFER) / _RAW_SPAN, 0.0, 100.0)
    return float(app) if app.ndim == 0 else app


def app_to_raw(app_pct):
    """Tesla app % (0–100) → raw gateway %: ``raw = app × 0.95 + 5`` (5–100).

    Raises InputError for app % outside 0–100 (a bug upstream, not a reading to clamp).

    References:
        pypowerwall 0.22.2, ``tedapi/pypowerwall_tedapi.py`` reserve write
        (``level * 0.95 + 5``).
    """
    app = np.asarray(app_pct, dtype=float)
    if not np.all((app >= 0.0) & (app <= 100.0)):
        raise InputError(f"app % {app_pct!r} is outside 0–100", where="app_to_raw")
    raw = app * _RAW_SPAN + _RAW_BUFFER
    return float(raw) if raw.ndim == 0 else raw


# --------------------------------------------------------------------------------------
# The battery


@dataclass(frozen=True)
class BatterySpec:
    """A site's battery (all units together, except the per-unit grid-charge rates).

    Attributes:
        capacity_kwh: usable energy of all units, kWh (100 app %).
        max_charge_kw: continuous AC charge power of all units, kW.
        max_discharge_kw: continuous AC discharge power of all units, kW.
        charge_efficiency: one-way AC→stored, 0–1.
        discharge_efficiency: one-way stored→AC, 0–1.
        units: number of Powerwalls (scales the grid-charge rates below).
        self_powered_grid_charge_kw: grid charge rate **per unit** when the reserve is above
            SOC in Self-Powered, kW (owners report ~1.7–1.8 kW per PW2).
        backup_grid_charge_kw: grid charge rate **per unit** in Backup, kW (~3.3 kW reported).
        tbc_grid_charge_kw: grid charge rate **per unit** under TBC, kW (~5 kW reported).

    The rates are owners' reports, not Tesla's figures, so they are configurable
    (docs/powerwall.md, 'Charge rates'). The site's rate in a mode is
    :meth:`grid_charge_kw`: per-unit rate × units, capped by ``max_charge_kw``.
    """

    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    units: int = 1
    self_powered_grid_charge_kw: float = 1.75
    backup_grid_charge_kw: float = 3.3
    tbc_grid_charge_kw: float = 5.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity_kwh) and self.capacity_kwh > 0):
            raise InputError(f"capacity_kwh {self.capacity_kwh!r} must be > 0",
                             where="BatterySpec.capacity_kwh")
        for name in ("max_charge_kw", "max_discharge_kw", "self_powered_grid_charge_kw",
                     "backup_grid_charge_kw", "tbc_grid_charge_kw"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InputError(f"{name} {value!r} must be ≥ 0 kW", where=f"BatterySpec.{name}")
        for name in ("charge_efficiency", "discharge_efficiency"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise InputError(f"{name} {value!r} must be in (0, 1] (one-way)",
                                 where=f"BatterySpec.{name}",
                                 fix="give the one-way efficiency, e.g. 0.95 for a 90 % "
                                     "round trip")
        if isinstance(self.units, bool) or not isinstance(self.units, int) or self.units < 1:
            raise InputError(f"units {self.units!r} must be a whole number ≥ 1",
                             where="BatterySpec.units")

    @classmethod
    def powerwall(cls, units: int = 1) -> BatterySpec:
        """Powerwall 2 figures × ``units``: 13.5 kWh usable, 5 kW continuous charge and
        discharge, 0.95 one-way efficiencies (≈ 90 % round trip, Tesla's datasheet)."""
        return cls(capacity_kwh=13.5 * units, max_charge_kw=5.0 * units,
                   max_discharge_kw=5.0 * units, units=units)

    def grid_charge_kw(self, mode: Mode) -> float:
        """The site's grid-charge rate in ``mode``, kW (per-unit rate × units, ≤ max charge)."""
        per_unit = {Mode.SELF_POWERED: self.self_powered_grid_charge_kw,
                    Mode.BACKUP: self.backup_grid_charge_kw,
                    Mode.TIME_BASED: self.tbc_grid_charge_kw}[mode]
        return min(per_unit * self.units, self.max_charge_kw)


# --------------------------------------------------------------------------------------
# One step


@dataclass(frozen=True)
class StepFlows:
    """The energy flows of one step, all kWh for the step and ≥ 0.

    Attributes:
        import_kwh: energy bought from the grid (load and grid charging).
        export_kwh: energy sent to the grid (PV and, under TBC + BATTERY_OK, battery).
        charge_kwh: AC energy into the battery, from PV and grid (stores ``× η_c``).
        discharge_kwh: AC energy out of the battery (draws ``/ η_d`` from storage).
        charge_from_grid_kwh: the grid's part of ``charge_kwh``.
        soc_end_kwh: usable energy at the end of the step, kWh (app scale).
        curtailed_kwh: PV energy neither used, stored nor exported (TBC + NEVER only).
    """

    import_kwh: float
    export_kwh: float
    charge_kwh: float
    discharge_kwh: float
    charge_from_grid_kwh: float
    soc_end_kwh: float
    curtailed_kwh: float

    @property
    def grid_kwh(self) -> float:
        """Net grid energy, kWh: import − export (> 0 = net import)."""
        return self.import_kwh - self.export_kwh

    @property
    def charge_from_pv_kwh(self) -> float:
        """The PV part of ``charge_kwh``, kWh."""
        return self.charge_kwh - self.charge_from_grid_kwh


@dataclass(frozen=True)
class _Intent:
    """What the battery tries to do in a step, before limits (one mode's behaviour)."""

    pv_target_kwh: float  # surplus PV charges up to this SOC
    grid_target_kwh: float  # the grid charges up to this SOC ...
    grid_rate_kw: float  # ... at this rate
    discharge: str  # "none" | "load" (cover the load) | "max" (full power, export the rest)
    curtail_surplus: bool  # True: PV that cannot be used or stored is curtailed, not exported


def _intent(settings: Settings, signal: PriceSignal, spec: BatterySpec) -> _Intent:
    """What each mode (and TBC signal) asks of the battery (docs/powerwall.md, 'How each
    mode behaves').

    Every mode charges up to the reserve from PV and from the grid at the mode's rate, even
    with grid charging off. Then:

    * Self-Powered — store surplus PV up to 100 %; cover the load down to the reserve; export
      only the PV it cannot store (never battery energy). The export rule does not restrict
      PV export: Tesla exports surplus solar in every mode unless the site curtails.
    * Backup — hold the battery full: charge from PV and from the grid (backup rate) toward
      100 %, whatever the grid-charging switch says; never discharge while the grid is up.
    * TBC, a model of Tesla's optimizer (not its algorithm), by signal:
        - HOLD (or None): like Self-Powered.
        - CHARGE: charge toward 100 % from surplus PV and, if grid charging is on, from the
          grid at the TBC rate; no discharge.
        - EXPORT: discharge at full power down to the reserve. BATTERY_OK exports the battery
          energy beyond the load (and surplus PV); PV_ONLY covers the load only and exports
          surplus PV; NEVER covers the load only, stores surplus PV or curtails it.
      Under TBC the NEVER rule holds for every signal: PV that cannot be used or stored is
      curtailed (an unverified assumption: it needs a curtailment-capable inverter).
    """
    cap, reserve = spec.capacity_kwh, settings.reserve_kwh(spec)
    rate = spec.grid_charge_kw(settings.mode)
    never = settings.export_rule is ExportRule.NEVER
    if settings.mode is Mode.SELF_POWERED:
        return _Intent(cap, reserve, rate, "load", curtail_surplus=False)
    if settings.mode is Mode.BACKUP:
        return _Intent(cap, cap, rate, "none", curtail_surplus=False)
    # Time-Based Control
    if signal is PriceSignal.CHARGE:
        grid_target = cap if settings.grid_charging else reserve
        return _Intent(cap, grid_target, rate, "none", curtail_surplus=never)
    if signal is PriceSignal.EXPORT:
        if settings.export_rule is ExportRule.BATTERY_OK:
            return _Intent(reserve, reserve, rate, "max", curtail_surplus=False)
        if settings.export_rule is ExportRule.PV_ONLY:
            return _Intent(reserve, reserve, rate, "load", curtail_surplus=False)
        return _Intent(cap, reserve, rate, "load", curtail_surplus=True)
    return _Intent(cap, reserve, rate, "load", curtail_surplus=never)


def _check_step_inputs(soc_kwh: float, load_kwh: float, pv_kwh: float, hours: float,
                       spec: BatterySpec) -> float:
    """Validate one step's inputs; return SOC with float dust at the bounds removed."""
    if not (math.isfinite(hours) and hours > 0):
        raise InputError(f"step length {hours!r} h must be > 0", where="step(hours)")
    for name, value in (("load_kwh", load_kwh), ("pv_kwh", pv_kwh)):
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} {value!r} must be a finite kWh ≥ 0", where=f"step({name})")
    tol = 1e-9 * spec.capacity_kwh
    if not (math.isfinite(soc_kwh) and -tol <= soc_kwh <= spec.capacity_kwh + tol):
        raise InputError(f"SOC {soc_kwh!r} kWh is outside 0–{spec.capacity_kwh} kWh",
                         where="step(soc_kwh)",
                         fix="give usable energy on the app scale (app % × capacity / 100)")
    return min(max(soc_kwh, 0.0), spec.capacity_kwh)


def step(settings: Settings, soc_kwh: float, load_kwh: float, pv_kwh: float, hours: float,
         spec: BatterySpec, *, price_signal: PriceSignal | str | None = None) -> StepFlows:
    """The energy flows of ONE step of ``hours`` length under ``settings``.

    Args:
        settings: the gateway settings in force for the whole step.
        soc_kwh: usable energy at the start of the step, kWh (app scale, 0–capacity).
        load_kwh: home consumption during the step, kWh.
        pv_kwh: solar production during the step, kWh (AC).
        hours: step length, h (0.25 for 15 minutes); power limits are kW × hours.
        spec: the battery.
        price_signal: TBC only (ignored in other modes): ``"charge"``, ``"export"``, or
            ``"hold"``/None. A stand-in for Tesla's optimizer, which we cannot see.

    Returns:
        :class:`StepFlows`, all kWh for the step, satisfying exactly (up to float rounding)::

            load + export + charge_from_pv + charge_from_grid
                = pv − curtailed + import + discharge
            soc_end = soc + charge · η_c − discharge / η_d,    0 ≤ soc_end ≤ capacity

    Rules, in order (see :func:`_intent` for what each mode asks):

    1. PV serves the load first.
    2. Surplus PV charges the battery up to the mode's PV target, within the charge power.
    3. The grid charges toward the mode's grid target (at least the reserve: a reserve above
       SOC is filled from the grid even with grid charging off) at the mode's grid-charge
       rate, within what charge power PV left and what is needed to reach the target
       (``(target − soc) / η_c`` of AC energy). PV first, then grid, is our (unverified) assumption.
    4. Discharge covers the remaining load (or, TBC export + BATTERY_OK, runs at full
       power), within the discharge power and never below the reserve:
       ``discharge ≤ (soc − reserve) · η_d``.
    5. PV left over is exported, or curtailed where the intent says so; battery energy
       beyond the load is exported. The rest of the load is imported.
    """
    soc = _check_step_inputs(soc_kwh, load_kwh, pv_kwh, hours, spec)
    signal = PriceSignal.HOLD if price_signal is None else PriceSignal(price_signal)
    intent = _intent(settings, signal, spec)
    eta_c, eta_d = spec.charge_efficiency, spec.discharge_efficiency
    reserve = settings.reserve_kwh(spec)

    # 1. PV serves the load first
    pv_to_load = min(pv_kwh, load_kwh)
    surplus = pv_kwh - pv_to_load
    deficit = load_kwh - pv_to_load

    # 2. surplus PV charges toward the PV target
    charge_room = spec.max_charge_kw * hours
    charge_pv = min(surplus, charge_room, max(0.0, intent.pv_target_kwh - soc) / eta_c)

    # 3. the grid charges toward the grid target (always at least the reserve)
    grid_need = max(0.0, intent.grid_target_kwh - soc) / eta_c - charge_pv
    charge_grid = max(0.0, min(intent.grid_rate_kw * hours, charge_room - charge_pv, grid_need))

    # 4. discharge: never below the reserve, never while charging
    if intent.discharge == "none" or charge_pv + charge_grid > 0.0:
        discharge = 0.0
    else:
        available = min(spec.max_discharge_kw * hours, max(0.0, soc - reserve) * eta_d)
        discharge = available if intent.discharge == "max" else min(deficit, available)

    # 5. what is left goes to or comes from the grid
    pv_left = surplus - charge_pv
    curtailed = pv_left if intent.curtail_surplus else 0.0
    battery_to_load = min(deficit, discharge)
    export = (pv_left - curtailed) + (discharge - battery_to_load)
    imported = (deficit - battery_to_load) + charge_grid

    charge = charge_pv + charge_grid
    soc_end = min(max(soc + charge * eta_c - discharge / eta_d, 0.0), spec.capacity_kwh)
    return StepFlows(import_kwh=imported, export_kwh=export, charge_kwh=charge,
                     discharge_kwh=discharge, charge_from_grid_kwh=charge_grid,
                     soc_end_kwh=soc_end, curtailed_kwh=curtailed)


# --------------------------------------------------------------------------------------
# Many steps


@dataclass(frozen=True)
class Simulation:
    """:func:`step` over a series: numpy arrays, one value per step, kWh for the step.

    ``soc_kwh`` is the SOC at the *end* of each step (app scale, kWh).
    """

    import_kwh: np.ndarray
    export_kwh: np.ndarray
    charge_kwh: np.ndarray
    discharge_kwh: np.ndarray
    charge_from_grid_kwh: np.ndarray
    curtailed_kwh: np.ndarray
    soc_kwh: np.ndarray


def simulate(settings_per_step: Settings | Sequence[Settings], soc0_kwh: float,
             load_kwh: Sequence[float] | np.ndarray, pv_kwh: Sequence[float] | np.ndarray,
             hours: float, spec: BatterySpec,
             price_signals: Sequence[PriceSignal | str | None] | None = None) -> Simulation:
    """Run :func:`step` over ``len(load_kwh)`` steps, carrying the SOC along.

    Args:
        settings_per_step: one :class:`Settings` per step, or one for every step.
        soc0_kwh: usable energy at the start, kWh (app scale).
        load_kwh, pv_kwh: per-step energies, kWh (same length).
        hours: the step length, h.
        spec: the battery.
        price_signals: per-step TBC signals (None entries = hold), or None for all hold.

    Returns:
        A :class:`Simulation` of per-step arrays. O(steps).
    """
    load = np.asarray(load_kwh, dtype=float)
    pv = np.asarray(pv_kwh, dtype=float)
    n = len(load)
    if load.ndim != 1 or pv.shape != load.shape:
        raise InputError(f"load_kwh and pv_kwh must be 1-D of equal length "
                         f"(got shapes {load.shape} and {pv.shape})", where="simulate")
    per_step = [settings_per_step] * n if isinstance(settings_per_step, Settings) \
        else list(settings_per_step)
    signals = [None] * n if price_signals is None else list(price_signals)
    for name, seq in (("settings_per_step", per_step), ("price_signals", signals)):
        if len(seq) != n:
            raise InputError(f"{name} has {len(seq)} entries for {n} steps", where="simulate",
                             fix="give one entry per step (or one Settings for all steps)")

    out = np.zeros((7, n))
    soc = soc0_kwh
    for i in range(n):
        f = step(per_step[i], soc, float(load[i]), float(pv[i]), hours, spec,
                 price_signal=signals[i])
        out[:, i] = (f.import_kwh, f.export_kwh, f.charge_kwh, f.discharge_kwh,
                     f.charge_from_grid_kwh, f.curtailed_kwh, f.soc_end_kwh)
        soc = f.soc_end_kwh
    return Simulation(*out)


def simulate_self_powered(pv_kwh: np.ndarray, load_kwh: np.ndarray, soc0_kwh: float,
                          reserve_percent: float, hours: float, spec: BatterySpec
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Self-Powered at ``reserve_percent`` over many series at once: :func:`simulate`'s rules
    (:func:`step`, the Self-Powered row of :func:`_intent`) with numpy across the first axis.

    For projecting months ahead in several scenarios, where calling :func:`step` for every
    hour of every scenario would take most of a plan's time. Tested equal to
    :func:`simulate` with ``Settings(SELF_POWERED, reserve_percent, …)``.

    Args:
        pv_kwh, load_kwh: [scenario, step] (or 1-D) energies per step, kWh.
        soc0_kwh: usable energy at the start, kWh (the same for every scenario).
        reserve_percent: the backup reserve, app %.
        hours: step length, h.
        spec: the battery.
    Returns:
        (imports, exports, discharges) per step, kWh, the shape of ``pv_kwh``.
    """
    pv = np.atleast_2d(np.asarray(pv_kwh, dtype=float))
    load = np.atleast_2d(np.asarray(load_kwh, dtype=float))
    if pv.shape != load.shape:
        raise InputError(f"pv_kwh {pv.shape} and load_kwh {load.shape} differ in shape",
                         where="simulate_self_powered")
    cap = spec.capacity_kwh
    reserve = reserve_percent / 100.0 * cap
    eta_c, eta_d = spec.charge_efficiency, spec.discharge_efficiency
    room = spec.max_charge_kw * hours
    grid_rate = spec.grid_charge_kw(Mode.SELF_POWERED) * hours
    dis_room = spec.max_discharge_kw * hours
    to_load = np.minimum(pv, load)
    surplus, deficit = pv - to_load, load - to_load
    imp, exp, out = np.empty_like(pv), np.empty_like(pv), np.empty_like(pv)
    soc = np.full(pv.shape[0], min(max(float(soc0_kwh), 0.0), cap))
    for i in range(pv.shape[1]):
        s, d = surplus[:, i], deficit[:, i]
        ch_pv = np.minimum(np.minimum(s, room), np.maximum(0.0, cap - soc) / eta_c)
        need = np.maximum(0.0, reserve - soc) / eta_c - ch_pv
        ch_grid = np.maximum(0.0, np.minimum(np.minimum(grid_rate, room - ch_pv), need))
        charging = ch_pv + ch_grid > 0.0
        avail = np.minimum(dis_room, np.maximum(0.0, soc - reserve) * eta_d)
        dis = np.where(charging, 0.0, np.minimum(d, avail))
        exp[:, i] = s - ch_pv
        imp[:, i] = d - dis + ch_grid
        out[:, i] = dis
        soc = np.clip(soc + (ch_pv + ch_grid) * eta_c - dis / eta_d, 0.0, cap)
    shape = np.shape(pv_kwh)
    return imp.reshape(shape), exp.reshape(shape), out.reshape(shape)
