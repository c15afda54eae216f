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

import logging
from collections import deque
from dataclasses import dataclass, replace

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
    """A gateway whose writes obey :class:`Rails`. Reads pass through unchanged."""

    def __init__(self, inner: Gateway, rails: Rails, clock: Clock | None = None) -> None:
        self.inner = inner
        self.rails = rails
        self.clock = clock or SystemClock()
        self.name = f"safe({inner.name})"
        self.owner_settings: Settings | None = None
        self.killed = False
        self.in_fallback = False
        self.failures = 0
        self._writes: deque[float] = deque()  # times of field writes in the last day
        self._last_change: float | None = None
        self.log: list[str] = []  # what the rails did, newest last (also logged)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> SiteState:
        """Read once and record the owner's own settings, to restore on the kill switch."""
        state = self.inner.read()
        self.owner_settings = state.settings.complete()
        if self.owner_settings is None:
            self._say("warning", "could not read the owner's current settings at start-up: "
                      "the kill switch will restore Self-Powered at the floor instead")
        if self.rails.kill_switch:
            self.kill("kill switch set in the configuration")
        return state

    def kill(self, reason: str) -> ApplyResult | None:
        """Stop all writes after restoring the owner's settings (once)."""
        if self.killed:
            return None
        target = self.owner_settings or self.safe_default()
        self._say("warning", f"kill switch: {reason}; restoring the owner's settings "
                  f"{_fmt(target)} and writing nothing more")
        result = self.inner.apply(target)
        self._count(result)
        self.killed = True
        return result

    # -- the rails ---------------------------------------------------------------------

    def safe_default(self) -> Settings:
        return Settings(Mode.SELF_POWERED, self._reserve(self.rails.floor_percent), False,
                        ExportRule.PV_ONLY)

    def _reserve(self, requested: float) -> float:
        floor = max(self.rails.floor_percent, 1.0)
        if self.rails.cloud_reserve_rule:
            return clamp_reserve(requested, floor)
        return float(min(100.0, max(requested, floor)))

    def make_safe(self, settings: Settings) -> Settings:
        """The settings with a legal reserve (floor, ≥ 1, the 80/100 rule)."""
        reserve = self._reserve(settings.reserve_percent)
        return settings if reserve == settings.reserve_percent else replace(
            settings, reserve_percent=reserve)

    def read(self) -> SiteState:
        return self.inner.read()

    def apply(self, settings: Settings) -> ApplyResult:
        now = self.clock.now()
        if self.killed:
            return ApplyResult(settings, None, skipped="kill switch: writes are off")
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
        if budget <= 0:
            self._say("warning", "write budget exhausted "
                      f"({self.rails.max_writes_per_hour}/h, {self.rails.max_writes_per_day}"
                      "/day): not writing")
            return ApplyResult(settings, None, skipped="write budget exhausted", notes=notes)
        needed = _fields_to_write(self.inner, safe)
        if needed > budget:
            return ApplyResult(settings, None, skipped=f"write budget: {needed} field "
                               f"write(s) needed, {budget} left", notes=notes)
        result = self.inner.apply(safe)
        # a failed write was still an API call (and on FleetAPI, billed): count the attempt
        self._count(result, attempted=needed if result.errors else 0)
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

    def _count(self, result: ApplyResult | None, attempted: int = 0) -> None:
        if result is None:
            return
        now = self.clock.now()
        for _ in range(max(len(result.written), attempted)):
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
        gateway.kill(f"signal {signal.Signals(number).name} received")

    signal.signal(sig, handler)
