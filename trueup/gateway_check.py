"""One read of the configured gateway, for people (``trueup status``, ``trueup gateway
setup``): what answered, each failure once with the one thing to try next, and what the
configured path cannot read at all.

The read is read-only: the gateway's ``read()`` (and ``firmware()`` when asked), nothing
else. While it runs, the log is held back (pypowerwall and the adapter would otherwise say
the same failure many times on stderr); the failures come out once, from the reading
itself. ``TRUEUP_DEBUG=1`` lets the log through.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from adapters.gateway.base import SiteState

_READS = ("soc_percent", "solar_w", "home_w", "battery_w", "grid_w", "grid_status",
          "grid_import_wh", "grid_export_wh", "solar_wh", "home_wh", "battery_import_wh",
          "battery_export_wh")
_REMOTE_SETTINGS = ("grid_charging", "export_rule")


@dataclass(frozen=True)
class Failure:
    """A reason fields are unknown: what failed, which fields, the one thing to try."""

    what: str
    fields: tuple[str, ...]
    fix: str
    everything: bool = False  # nothing was read: every field is unknown for this reason

    def lines(self) -> list[str]:
        fields = "every reading" if self.everything else ", ".join(self.fields)
        return [f"error: {self.what}", f"  unknown: {fields}", f"  try: {self.fix}"]


@dataclass
class Check:
    """What one read gave."""

    state: SiteState
    gateway: Any
    answered: list[str] = field(default_factory=list)  # connection kinds that answered
    answered_by: str = "nothing answered"  # the same, in words
    failures: list[Failure] = field(default_factory=list)
    limits: list[tuple[tuple[str, ...], str]] = field(default_factory=list)  # not on this path
    warnings: list[str] = field(default_factory=list)
    firmware: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and bool(self.answered)

    def print_failures(self, stream=None) -> None:
        """Each failure once, then each warning once (stderr by default)."""
        stream = stream or sys.stderr
        for failure in self.failures:
            print("\n".join(failure.lines()), file=stream)
        for w in dict.fromkeys(self.warnings):
            print(f"warning: {w}", file=stream)

    def to_json(self) -> dict:
        return {"answered_by": self.answered,
                "failures": [{"what": f.what, "fields": list(f.fields), "try": f.fix}
                             for f in self.failures],
                "not_on_this_path": [{"fields": list(n), "why": w} for n, w in self.limits],
                "warnings": list(dict.fromkeys(self.warnings)), "firmware": self.firmware}


@contextlib.contextmanager
def held_logs() -> Iterator[None]:
    """Keep log records off stderr for the duration (unless TRUEUP_DEBUG is set): with
    no handler configured, Python prints warnings through its last-resort handler."""
    if os.environ.get("TRUEUP_DEBUG"):
        yield
        return
    root, handler = logging.getLogger(), logging.NullHandler()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def check(gw, *, firmware: bool = False) -> Check:
    """Read ``gw`` once (and its firmware version when asked) and explain the result."""
    with held_logs():
        state = gw.read()
        version = gw.firmware() if firmware and hasattr(gw, "firmware") else None
    out = Check(state=state, gateway=gw, firmware=version,
                warnings=list(getattr(gw, "warnings", [])))
    out.answered = answered(state, gw)
    out.answered_by = ", ".join(_label(k, gw) for k in out.answered) or "nothing answered"
    failed: dict[str, list[str]] = {}
    limited: dict[str, list[str]] = {}
    for name, why in state.unknown.items():
        limit = _limit(name, gw)
        if limit:
            limited.setdefault(limit, []).append(name)
        else:
            failed.setdefault(why, []).append(name)
    out.limits = [(tuple(names), why) for why, names in limited.items()]
    for why, names in failed.items():
        what, fix = explain(why, gw)
        out.failures.append(Failure(what, tuple(names), fix,
                                    everything=not out.answered and len(failed) == 1))
    return out


def answered(state: SiteState, gw) -> list[str]:
    """The connections that gave at least one value: ``simulated``, ``local``,
    ``tedapi``, ``v1r``, ``fleetapi`` or ``cloud``; [] when nothing answered."""
    s = state.settings
    read = [getattr(state, f) for f in _READS] + [s.mode, s.reserve_percent]
    remote = [s.grid_charging, s.export_rule]
    if getattr(gw, "name", "") != "powerwall":
        return [state.source] if any(v is not None for v in read + remote) else []
    kinds = []
    if any(v is not None for v in read):
        kinds.append(gw.read_kind)
    control = gw.control_kind
    if control and any(v is not None for v in remote) and control not in kinds:
        kinds.append(control)
    return kinds


def _label(kind: str, gw) -> str:
    host = getattr(gw, "host", "")
    return {"local": f"the gateway's local API at {host}",
            "tedapi": f"the gateway's TEDAPI (Wi-Fi) at {host}",
            "v1r": f"the gateway's TEDAPI v1r (LAN) at {host}",
            "fleetapi": "Tesla's Fleet API", "cloud": "the Tesla cloud (Owner API)"}.get(kind, kind)


def _limit(name: str, gw) -> str | None:
    """Why the configured path cannot read ``name`` at all, or None (then it failed)."""
    if getattr(gw, "name", "") != "powerwall":
        return None
    if name.endswith("_wh") and gw.source in ("fleetapi", "cloud"):
        return (f"the {gw.source} path has no lifetime energy counters (only the local API "
                "and TEDAPI have them: set [gateway] host and password_file to read locally)")
    if name.removeprefix("settings.") in _REMOTE_SETTINGS and gw.control_kind is None:
        return (f"grid charging and the export rule are read over a control path; [gateway] "
                f"mode = {gw.mode} is read-only (trueup gateway setup --mode fleetapi, cloud "
                "or v1r adds one)")
    return None


def explain(reason: str, gw) -> tuple[str, str]:
    """(what failed, the one thing to try next) for an unknown field's reason. The
    adapter's connection errors carry their own fix; other reasons get one by their kind."""
    what, sep, fix = reason.partition("\n  fix: ")
    if sep:
        return what, fix
    text, host = reason.lower(), getattr(gw, "host", "")
    if re.search(r"timed? ?out|refused|max retries|unreachable|did not answer", text) and host:
        return reason, (f"check that the gateway at {host} is on and on this machine's network "
                        f"(https://{host}/ should answer from here), then run trueup status "
                        "again")
    if re.search(r"\b(401|403)\b|login", text):
        return reason, ("the gateway refused the login: check [gateway] password_file holds "
                        "the gateway's customer password")
    if re.search(r"\b5\d\d\b|busy|syncing", text):
        return reason, ("the gateway answered with an error (busy, restarting or switching "
                        "between grid and island): run trueup status again in a few minutes")
    if getattr(gw, "name", "") == "simulated":
        return reason, ("this is the simulated gateway ([gateway] kind = \"simulated\"): "
                        "remove [gateway] sim_faults to stop injected failures")
    return reason, ("run trueup status again; if this stays unknown, check in the Tesla app "
                    "that the Powerwall is online and reporting")


def run_status(config: str | None, *, as_json: bool = False) -> int:
    """``trueup status``: read the configured gateway once and print the reading (stdout)
    and each failure once (stderr). 0 when everything was read, else 1."""
    import dataclasses
    import json

    from trueup.config import load_config
    from trueup.gateways import build_gateway
    from trueup.report import status_report

    cfg = load_config(config)
    gw = build_gateway(cfg)
    try:
        result = check(gw)
    finally:
        with held_logs(), contextlib.suppress(Exception):
            getattr(gw, "close", lambda: None)()
    state = result.state
    if as_json:
        out = dataclasses.asdict(state)
        out["settings"] = {k: (str(v) if v is not None and not isinstance(v, bool | float)
                               else v) for k, v in out["settings"].items()}
        out["gateway"] = gw.name
        out.update(result.to_json())
        print(json.dumps(out, indent=2))
    else:
        print(status_report(state, gw.name, cfg, answered_by=result.answered_by,
                            limits=result.limits))
    result.print_failures()
    return 0 if state.ok and not result.failures else 1
