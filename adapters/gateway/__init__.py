"""The Tesla gateway: one protocol, several adapters (pypowerwall, simulated, dry run), and
the safety rails every write goes through."""

from adapters.gateway.base import ApplyResult, Clock, Gateway, SiteState, SystemClock

__all__ = ["ApplyResult", "Clock", "Gateway", "SiteState", "SystemClock"]
