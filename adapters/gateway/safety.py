"""The safety rails: the one place every write to a battery passes through.

:class:`SafeGateway` wraps any :class:`~adapters.gateway.base.Gateway` and, before a write:

* **reserve**: never below the owner's floor, never 0 (≥ 1 %), and — on the cloud and
  FleetAPI paths — ≤ 80 or exactly 100 (owners report that 81-99 is rejected or snaps to
  80; docs/powerwall.md, 'Reserve');
* **budget**: at most ``max_writes_per_hour`` and ``max_writes_per_day`` field writes
  (FleetAPI bills per command and limits them; a loop must never spend the owner's money;
  docs/powerwall.md, 'The write budget').
  The defaults depend on the control path (``PATH_BUDGETS``);
* **pace**: at least ``min_change_interval_s`` between changes;
* **kill switch** (config, a reload or a signal): restore the owner's own settings recorded
  at start-up, then never write again. The first restore is sent whatever the budget and
  the pace say (the owner's word wins); a restore that failed is retried with a growing
  pause (1, 2, 4 … 60 minutes) and only within the budget;
* **failures**: every failed write is logged; after ``failures_before_fallback`` failed
  writes in a row, fall back to Self-Powered at the floor, loudly, and write nothing else
  until that fallback succeeds.

Each refusal is an :class:`ApplyResult` with ``skipped`` saying why; nothing is raised.
Every result (plan writes, refusals, kill-switch restores) is passed to ``on_result``, so
the daemon keeps one record of everything sent. Times come from the injected clock (UTC
epoch seconds).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from adapters.gateway.base import ApplyResult, Clock, Gateway, SiteState, SystemClock
from optimizer.behaviour import ExportRule, Mode, Settings, clamp_reserve

log = logging.getLogger("trueup.safety")

HOUR, DAY = 3600.0, 86400.0
# Default write budgets per control path: (field writes an hour, a day). Each field written
# (mode, reserve, grid charging, export rule) is one API command. Tesla bills Fleet API
# commands, and its subscription plans page lists 5 energy-settings requests per site a day
# for the Discovery plan (docs/powerwall.md, 'Fleet API billing and limits'); the Owner-API
# cloud and v1r (LAN) paths publish no limit, so 4 an hour / 24 a day stays. The hourly
# budget is never below 4: one change (Time-Based Control, its reserve and its export rule)
# can take three or four commands, and a smaller hourly budget would forbid it outright.
# Override with [safety].
PATH_BUDGETS: dict[str, tuple[int, int]] = {
    "fleetapi": (4, 5),
    "cloud": (4, 24),
    "v1r": (4, 24),
    "none": (4, 24),  # read-only: nothing is ever written
    "simulated": (4, 24),
}
RESTORE_RETRY_S = (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0)  # then hourly


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
                 owner_file: str | Path | None = None,
                 on_result: Callable[[str, ApplyResult], None] | None = None) -> None:
        self.inner = inner
        self.on_result = on_result  # (kind: "plan" | "kill", result), for store and metrics
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
        self._restore_attempts = 0
        self._next_restore_at: float | None = None
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

    @property
    def kill_requested(self) -> bool:
        return self._kill_reason is not None

    def update_rails(self, rails: Rails) -> None:
        """New limits from a reloaded configuration. A kill switch set there is carried
        out at once; one already tripped stays tripped (only a restart clears it)."""
        with self._lock:
            self.rails = replace(rails, kill_switch=rails.kill_switch or self.rails.kill_switch)
        if rails.kill_switch:
            self.request_kill("kill switch set in the reloaded configuration")
            self.service_kill()

    def service_kill(self) -> None:
        """Carry out a requested kill (once), or retry a restore that failed when its
        pause is over and the budget allows."""
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

    def _restore_owner(self) -> ApplyResult | None:
        """The first call sends the restore whatever the budget says; a retry waits for
        its pause (``RESTORE_RETRY_S``) and for budget, and returns None while it waits."""
        now = self.clock.now()
        first = not self.killed
        self.killed = True  # from here on, nothing but the restore is written
        target = self._owner_restorable()
        if first:
            self._say("warning", f"kill switch: {self._kill_reason}; restoring the owner's "
                      f"settings {_fmt(target)} and writing nothing more")
        else:
            if self._next_restore_at is not None and now < self._next_restore_at:
                return None
            needed = _fields_to_write(self.inner, target)
            if needed > self._budget_left(now):
                self._next_restore_at = now + HOUR / 4
                if now - self._last_budget_warning >= HOUR:
                    self._last_budget_warning = now
                    self._say("warning", f"kill switch: the restore needs {needed} write(s) "
                              "and the write budget has fewer left; retrying when it allows")
                return None
        self._restore_attempts += 1
        result = self.inner.apply(target)
        self._count(result)
        self._report("kill", result)
        if result.errors and target != self.safe_default() and (
                first or _fields_to_write(self.inner, self.safe_default())
                <= self._budget_left(now)):
            self._say("error", "kill switch: restoring the owner's settings failed ("
                      + "; ".join(result.errors) + "): trying Self-Powered at the floor")
            result = self.inner.apply(self.safe_default())
            self._count(result)
            self._report("kill", result)
        self.kill_confirmed = not result.errors
        if not self.kill_confirmed:
            pause = RESTORE_RETRY_S[min(self._restore_attempts, len(RESTORE_RETRY_S)) - 1]
            self._next_restore_at = now + pause
            self._say("error", "kill switch: the gateway took neither the owner's settings "
                      f"nor the safe default; retrying in {pause / 60:.0f} min (within the "
                      "write budget)")
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
        fd = os.open(self.owner_file, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.close(fd)
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
                result = ApplyResult(settings, None, skipped="kill switch: writes are off")
            else:
                result = self._apply_locked(settings)
        self._report("plan", result)
        if self._kill_reason is not None:  # requested while the write was in flight
            self.service_kill()
        return result

    def _report(self, kind: str, result: ApplyResult) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(kind, result)
        except Exception as e:  # a full disk must not stop a restore or a fallback
            log.error("could not record a %s write: %s", kind, e)

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
            elif not self.in_fallback:
                self._say("warning", f"write of {_fmt(safe)} failed ("
                          f"{'; '.join(result.errors)}); {self.failures} of "
                          f"{self.rails.failures_before_fallback} failures in a row before "
                          "falling back to Self-Powered at the floor")
            else:
                self._say("warning", "the fallback write failed ("
                          f"{'; '.join(result.errors)}); trying again on the next plan")
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

    def remember_writes(self, sent: list[tuple[float, int, bool]]) -> None:
        """Writes a previous process sent, from the store's record: ``(when, commands
        sent, a field changed)``, UTC epoch s. The budget counts them and the pace starts
        from the last change, so a restart never opens a fresh budget."""
        now = self.clock.now()
        with self._lock:
            for t, calls, changed in sorted(sent):
                if now - t < DAY:
                    self._writes.extend([t] * calls)
                if changed and (self._last_change is None or t > self._last_change):
                    self._last_change = t
            self._writes = deque(sorted(self._writes))

    def clock_jumped(self, seconds: float) -> None:
        """The wall clock moved ``seconds`` without time passing: move the rails' record
        with it, so the budget and the pace keep counting elapsed time (after a jump back,
        writes would otherwise look to come from the future and block every change)."""
        with self._lock:
            self._writes = deque(t + seconds for t in self._writes)
            if self._last_change is not None:
                self._last_change += seconds
            if self._next_restore_at is not None:
                self._next_restore_at += seconds

    def write_ages(self) -> tuple[float, ...]:
        """Seconds since each write command of the last day (what the budget counts)."""
        now = self.clock.now()
        return tuple(now - t for t in self._writes if now - t < DAY)

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
