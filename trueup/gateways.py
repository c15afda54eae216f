"""Build the configured gateway: the simulated example Powerwall or the real one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from adapters.gateway.base import Clock, Gateway
from forecasts.clearsky import expected_pv_kwh
from forecasts.load import expected_load_kwh
from optimizer.localtime import local_fields
from optimizer.policy import battery_spec
from trueup.config import TrueupConfig

STEP_S = 300
log = logging.getLogger("trueup.gateways")


def simulated_site(cfg: TrueupConfig, clock: Clock, *, soc_percent: float = 50.0,
                   state_file: Path | None = None) -> Gateway:
    """The configured site simulated: expected PV (clear sky × clearness) and the typical
    load, 5-minute steps, lifetime counters with a few years on them.

    A fresh simulator starts in the configured owner's settings: Self-Powered at the
    configured backup floor (``battery.backup_floor_percent``), not the example home's 20 %.

    With ``state_file`` (``simulator.json`` in the data dir) the simulator carries on from
    the state saved there — time, SOC, lifetime counters, settings — simulating the time
    the process was stopped, as a real site runs on; it saves its state after every read
    and write (written atomically, mode 0600)."""
    from adapters.gateway.simulated import SimulatedGateway

    site, tz = cfg.site, cfg.site.timezone

    def pv(t: float) -> float:
        s = np.array([int(t)], dtype=np.int64)
        return float(expected_pv_kwh(s, STEP_S, site.latitude, site.longitude, cfg.pv,
                                     local_fields(s, tz).month)[0])

    def load(t: float) -> float:
        return float(expected_load_kwh(np.array([int(t)], dtype=np.int64), STEP_S, tz)[0][0])

    years = 3 * 365 * 24  # hours of history on the counters (≈ 3 years)
    counters = {"grid_import_wh": 0.4e3 * years, "grid_export_wh": 0.5e3 * years,
                "solar_wh": 1.3e3 * years, "home_wh": 1.2e3 * years,
                "battery_import_wh": 0.3e3 * years, "battery_export_wh": 0.27e3 * years}
    from optimizer.behaviour import ExportRule, Mode, Settings

    kw: dict = {"settings": Settings(Mode.SELF_POWERED, cfg.battery.backup_floor_percent,
                                     False, ExportRule.PV_ONLY)}
    saved = _load_state(state_file, clock.now())
    if saved is not None:
        soc_percent, counters = saved["soc_percent"], saved["counters_wh"]
        kw = {"resume_at": saved["t"], "settings": saved["settings"]}
    gw = SimulatedGateway(battery_spec(cfg.battery), soc_percent, pv, load, step_s=STEP_S,
                          clock=clock, counters_wh=counters, **kw)
    return gw if state_file is None else _Persisted(gw, state_file)


RESUME_MAX_S = 14 * 86400  # an older saved state starts a fresh simulator


def _load_state(path: Path | None, now: float) -> dict | None:
    """The saved simulator state, or None (no file, unreadable, too old: a fresh start,
    logged)."""
    if path is None or not path.exists():
        return None
    from adapters.gateway.simulated import COUNTER_FIELDS
    from optimizer.behaviour import Settings

    try:
        state = json.loads(path.read_text())
        ok = 0 <= now - float(state["t"]) <= RESUME_MAX_S
        state["settings"] = Settings(**state["settings"])
        state["soc_percent"] = min(100.0, max(0.0, float(state["soc_percent"])))
        state["counters_wh"] = {k: float(state["counters_wh"][k]) for k in COUNTER_FIELDS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("simulator state %s unreadable (%s): starting a fresh simulator", path, e)
        return None
    if not ok:
        log.info("simulator state %s is older than %d days or in the future: starting a "
                 "fresh simulator", path, RESUME_MAX_S // 86400)
        return None
    return state


class _Persisted:
    """A simulated gateway that saves its state after every read and write, and appends
    each command it receives to ``simulator-writes.jsonl`` beside it."""

    def __init__(self, inner, path: Path) -> None:
        self._inner, self._path = inner, path

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._inner.snapshot(), f)
        os.replace(tmp, self._path)

    def read(self):
        state = self._inner.read()
        with contextlib.suppress(OSError):  # a full disk must not stop the readings
            self._save()
        return state

    def apply(self, settings):
        before = len(self._inner.attempts)
        result = self._inner.apply(settings)
        with contextlib.suppress(OSError):
            self._save()
            # the site's own record of every command it received (the fault campaign
            # counts writes from it, independently of the store)
            with open(self._path.with_name("simulator-writes.jsonl"), "a") as f:
                for t, s, fields in self._inner.attempts[before:]:
                    f.write(json.dumps({"t": t, "fields": list(fields),
                                        "reserve_percent": s.reserve_percent,
                                        "mode": str(s.mode.value)}) + "\n")
        return result


def build_gateway(cfg: TrueupConfig, clock: Clock | None = None,
                  data_dir: Path | None = None) -> Gateway:
    """The gateway ``[gateway] kind`` names. No I/O happens until its first read. A
    simulated site keeps its state in ``data_dir`` when one is given (the daemon's)."""
    if cfg.gateway.kind == "simulated":
        from adapters.gateway.simulated import SimClock

        sim_clock = clock or SimClock(time.time() - STEP_S)
        state = None if data_dir is None else Path(data_dir) / "simulator.json"
        gw = simulated_site(cfg, sim_clock, state_file=state)
        if cfg.gateway.sim_faults:
            gw.set_faults(**cfg.gateway.sim_faults)
        if clock is None:
            sim_clock.advance(STEP_S)  # five minutes of physics, so flows have a value
        return gw
    from adapters.gateway.powerwall import PowerwallGateway

    return PowerwallGateway.from_config(cfg.gateway, clock=clock)
