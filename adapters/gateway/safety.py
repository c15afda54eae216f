"""The safety rails: the one place every write to a battery passes through.

:class:`SafeGateway` wraps any :class:`~adapters.gateway.base.Gateway` and, before a write:

* **reserve**: never below the owner's floor, never 0 (≥ 1 %), and — on the cloud and
  FleetAPI paths — ≤ 80 or exactly 100 (DOMAIN.md §3: 81-99 is rejected or snaps to 80);
* **budget**: at most ``max_writes_per_hour`` and ``max_writes_per_day`` field writes
  (FleetAPI bills per command; a loop must never spend the owner's money);
* **pace**: at least ``min_change_interval_s`` between changes;
* **kill switch** (config or a signal): restore the owner's own settings recorded at
  start-up, then never write again;
* **failures**: after ``failures_before_fallback`` failed writes in a row, fall back to
  Self-Powered at the floor, loudly, and write nothing else until that fallback succeeds.

Each refusal is an :class:`ApplyResult` with ``skipped`` saying why; nothing is raised.
Times come from the injected clock (UTC epoch seconds).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.gateway.base import ApplyResult, Clock, Gateway, SiteState, SystemClock
from optimizer.behaviour import ExportRule, Mode, Settings, clamp_reserve

log = logging.getLogger("trueup.safety")

HOUR, DAY = 3600.0, 86400.0


@dataclass(frozen=True)
class Rails:
    """The limits (``[safety]`` in trueup.toml)."""

    floor_percent: float  # the owner's backup floor, app %
    max_writes_per_hour: int = 4
    max_writes_per_day: int = 24
    min_change_interval_s: float = 900.0
    failures_before_fallback: int = 3
    cloud_reserve_rule: bool = True  # the path is cloud/FleetAPI: ≤ 80 or exactly 100
    kill_switch: bool = False  # restore the owner's settings at start and never write


class SafeGateway:
    """A gateway whose writes obey :class:`Rails`. Reads pass through unchanged.

    Thread-safe: one lock covers the budget check, the write and its count. The kill switch
    is *requested* (a signal handler may only set a flag) and carried out by whichever
    comes first: the next :meth:`apply`, the end of the apply in flight, or the daemon's
    loop calling :meth:`service_kill`.
    """

    def __init__(self, inner: Gateway, rails: Rails, clock: Clock | None = None, *,
                 owner_file: str | Path | None = None) -> None:
        self.inner = inner
        self.rails = rails
        self.clock = clock or SystemClock()
        self.name = f"safe({inner.name})"
        self.owner_file = Path(owner_file) if owner_file else None
        self.owner_settings: Settings | None = None
        self.killed = False
        self.kill_confirmed = False
        self.in_fallback = False
        self.failures = 0
        self._kill_reason: str | None = None
        self._lock = threading.RLock()
        self._writes: deque[float] = deque()  # times of write commands in the last day
        self._last_change: float | None = None
        self._last_budget_warning = -HOUR
        self.log: list[str] = []  # what the rails did, newest last (also logged)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SiteState:
        """Read once and learn the owner's own settings, to restore on the kill switch.

        They are remembered in ``owner_file`` the first time, so a restart (when the
        gateway holds trueup's settings) still restores the owner's."""
        state = self.inner.read()
        saved = self._load_owner()
        if saved is not None:
            self.owner_settings = saved
        else:
            self.owner_settings = state.settings.complete()
            if self.owner_settings is None:
                self._say("warning", "could not read the owner's current settings at "
                          "start-up: the kill switch will restore Self-Powered at the floor")
            else:
                self._save_owner(self.owner_settings)
        if self.rails.kill_switch:
            self.request_kill("kill switch set in the configuration")
            self.service_kill()
        return state

    def request_kill(self, reason: str) -> None:
        """Ask for the kill switch; safe to call from a signal handler (sets a flag)."""
        if self._kill_reason is None:
            self._kill_reason = reason

    def service_kill(self) -> None:
        """Carry out a requested kill (once), or retry a restore that failed."""
        if self._kill_reason is None:
            return
        with self._lock:
            if self.killed and self.kill_confirmed:
                return
            self._restore_owner()

    def kill(self, reason: str) -> ApplyResult | None:
        """Request and carry out the kill switch now."""
        self.request_kill(reason)
        with self._lock:
            if self.killed and self.kill_confirmed:
                return None
            return self._restore_owner()

    def _restore_owner(self) -> ApplyResult:
        first = not self.killed
        self.killed = True  # from here on, nothing but the restore is written
        target = self._owner_restorable()
        if first:
            self._say("warning", f"kill switch: {self._kill_reason}; restoring the owner's "
                      f"settings {_fmt(target)} and writing nothing more")
        result = self.inner.apply(target)
        self._count(result)
        if result.errors:
            self._say("error", "kill switch: restoring the owner's settings failed ("
                      + "; ".join(result.errors) + "): trying Self-Powered at the floor")
            result = self.inner.apply(self.safe_default())
            self._count(result)
        self.kill_confirmed = not result.errors
        if not self.kill_confirmed:
            self._say("error", "kill switch: the gateway took neither the owner's settings "
                      "nor the safe default; will retry on the next cycle")
        return result

    def _owner_restorable(self) -> Settings:
        """The owner's settings as the gateway can take them. The owner's own reserve is
        theirs (the floor limits trueup's choices, not the owner's), but 81-99 cannot be
        set on the cloud paths since firmware 25.18: it becomes 80, loudly."""
        owner = self.owner_settings or self.safe_default()
        reserve = owner.reserve_percent
        if self.rails.cloud_reserve_rule and 80 < reserve < 100:
            self._say("warning", f"the owner's reserve {reserve:g}% cannot be set any more "
                      "(81-99 snap to 80 since firmware 25.18): restoring 80%")
            return replace(owner, reserve_percent=80.0)
        return replace(owner, reserve_percent=float(max(1, math.ceil(reserve))))

    def _load_owner(self) -> Settings | None:
        if self.owner_file is None or not self.owner_file.exists():
            return None
        try:
            d = json.loads(self.owner_file.read_text())
            return Settings(Mode(d["mode"]), float(d["reserve_percent"]),
                            bool(d["grid_charging"]), ExportRule(d["export_rule"]))
        except (ValueError, KeyError, TypeError) as e:
            self._say("warning", f"ignoring unreadable {self.owner_file} ({e}); the settings "
                      "read now are taken as the owner's")
            return None

    def _save_owner(self, s: Settings) -> None:
        if self.owner_file is None:
            return
        self.owner_file.parent.mkdir(parents=True, exist_ok=True)
        self.owner_file.write_text(json.dumps(
            {"mode": str(s.mode), "reserve_percent": s.reserve_percent,
             "grid_charging": s.grid_charging, "export_rule": str(s.export_rule),
             "recorded_at": self.clock.now()}))

    # -- the rails ---------------------------------------------------------------------

    def safe_default(self) -> Settings:
        return Settings(Mode.SELF_POWERED, self._reserve(self.rails.floor_percent), False,
                        ExportRule.PV_ONLY)

    def _reserve(self, requested: float) -> float:
        """A legal reserve in whole percent (Tesla takes whole %), never below the floor."""
        floor = max(self.rails.floor_percent, 1.0)
        if self.rails.cloud_reserve_rule:
            value = clamp_reserve(requested, floor)
        else:
            value = min(100.0, max(requested, floor))
        return float(min(100, math.ceil(value - 1e-9)))

    def make_safe(self, settings: Settings) -> Settings:
        """The settings with a legal reserve (floor, ≥ 1, the 80/100 rule, whole %)."""
        reserve = self._reserve(settings.reserve_percent)
        return settings if reserve == settings.reserve_percent else replace(
            settings, reserve_percent=reserve)

    def read(self) -> SiteState:
        return self.inner.read()

    def apply(self, settings: Settings) -> ApplyResult:
        if self._kill_reason is not None:
            self.service_kill()
        with self._lock:
            if self.killed:
                return ApplyResult(settings, None, skipped="kill switch: writes are off")
            result = self._apply_locked(settings)
        if self._kill_reason is not None:  # requested while the write was in flight
            self.service_kill()
        return result

    def _apply_locked(self, settings: Settings) -> ApplyResult:
        now = self.clock.now()
        safe = self.make_safe(settings)
        notes: tuple[str, ...] = ()
        if safe != settings:
            notes = (f"reserve {settings.reserve_percent:g}% → {safe.reserve_percent:g}% "
                     f"(floor {self.rails.floor_percent:g}%, 80/100 rule)",)
        if self.in_fallback and safe != self.safe_default():
            # until the fallback succeeds, only the fallback itself may be written
            safe = self.safe_default()
            notes += ("in fallback after repeated failures: only Self-Powered at the floor",)
        if (self._last_change is not None and not self.in_fallback
                and now - self._last_change < self.rails.min_change_interval_s):
            wait = self.rails.min_change_interval_s - (now - self._last_change)
            return ApplyResult(settings, None, skipped=f"too soon: next change allowed in "
                               f"{wait:.0f} s", notes=notes)
        budget = self._budget_left(now)
        needed = _fields_to_write(self.inner, safe)
        if needed and needed > budget:
            if now - self._last_budget_warning >= HOUR:
                self._last_budget_warning = now
                self._say("warning", f"write budget: {needed} write(s) needed, {budget} left "
                          f"([safety] max_writes_per_hour = {self.rails.max_writes_per_hour},"
                          f" max_writes_per_day = {self.rails.max_writes_per_day}); not "
                          "writing")
            reason = ("write budget exhausted" if budget <= 0 else
                      f"write budget: {needed} field write(s) needed, {budget} left")
            return ApplyResult(settings, None, skipped=reason, notes=notes)
        result = self.inner.apply(safe)
        self._count(result)
        if result.written:
            self._last_change = now
        result = replace(result, requested=settings, notes=result.notes + notes)
        if result.errors:
            self.failures += 1
            if self.failures >= self.rails.failures_before_fallback and not self.in_fallback:
                self.in_fallback = True
                self._say("error", f"{self.failures} writes failed in a row "
                          f"({'; '.join(result.errors)}): falling back to Self-Powered at the "
                          f"{self.rails.floor_percent:g}% floor until a write succeeds")
        else:
            if self.in_fallback and safe == self.safe_default() and result.ok:
                self._say("warning", "fallback applied: Self-Powered at the floor; resuming")
                self.in_fallback = False
            self.failures = 0
        return result

    def _budget_left(self, now: float) -> int:
        while self._writes and now - self._writes[0] >= DAY:
            self._writes.popleft()
        last_hour = sum(1 for t in self._writes if now - t < HOUR)
        return min(self.rails.max_writes_per_hour - last_hour,
                   self.rails.max_writes_per_day - len(self._writes))

    def _count(self, result: ApplyResult | None) -> None:
        """Count the write commands sent: the adapter's own count when it keeps one
        (re-sends and failed sends included: FleetAPI bills each), else one per field."""
        if result is None:
            return
        calls = result.api_calls if result.api_calls is not None else len(result.written)
        now = self.clock.now()
        for _ in range(calls):
            self._writes.append(now)

    def writes_in_last(self, seconds: float) -> int:
        now = self.clock.now()
        return sum(1 for t in self._writes if now - t < seconds)

    def _say(self, level: str, message: str) -> None:
        self.log.append(message)
        getattr(log, level)(message)


def _fields_to_write(inner: Gateway, settings: Settings) -> int:
    """Field writes an apply would need: the gateway knows (it writes only what differs);
    one that cannot say is assumed to need all four (mode, reserve, grid charging, export)."""
    ask = getattr(inner, "fields_to_write", None)
    if callable(ask):
        return int(ask(settings))
    return 4


def _fmt(s: Settings) -> str:
    return (f"{s.mode}, reserve {s.reserve_percent:g}%, grid charging "
            f"{'on' if s.grid_charging else 'off'}, export {s.export_rule}")


def install_kill_signal(gateway: SafeGateway, signum: int | None = None) -> None:
    """Make ``kill -USR1 <pid>`` (or ``signum``) trip the kill switch: the owner's own
    settings are restored and nothing more is written until restart."""
    import signal

    sig = signal.SIGUSR1 if signum is None else signum

    def handler(number, _frame) -> None:
        # only a flag here: the restore runs outside the handler, never inside a write
        gateway.request_kill(f"signal {signal.Signals(number).name} received")

    signal.signal(sig, handler)
