"""Dry run: read from any gateway, never write — log and record what would be written."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from adapters.gateway.base import ApplyResult, Clock, Gateway, SiteState, SystemClock
from optimizer.behaviour import Settings

log = logging.getLogger("trueup.dryrun")


@dataclass(frozen=True)
class WouldWrite:
    at: float  # UTC epoch seconds
    settings: Settings
    current: Settings | None  # what the gateway reported at the last read


@dataclass
class DryRunGateway:
    """Wraps ``inner``: :meth:`read` passes through, :meth:`apply` only records.

    Truly read-only: nothing here ever calls ``inner.apply``.
    """

    inner: Gateway
    clock: Clock = field(default_factory=SystemClock)
    would_write: list[WouldWrite] = field(default_factory=list)
    _last: SiteState | None = None

    @property
    def name(self) -> str:
        return f"dry-run({self.inner.name})"

    def read(self) -> SiteState:
        self._last = self.inner.read()
        return self._last

    def apply(self, settings: Settings) -> ApplyResult:
        current = self._last.settings.complete() if self._last else None
        if current == settings:
            return ApplyResult(settings, None, skipped="dry run: already so")
        self.would_write.append(WouldWrite(self.clock.now(), settings, current))
        log.info("dry run: would write %s (now %s)", settings, current)
        return ApplyResult(settings, None, skipped="dry run: not written", api_calls=0)
