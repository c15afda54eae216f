"""Build the configured gateway: the simulated example Powerwall or the real one."""

from __future__ import annotations

import time

import numpy as np

from adapters.gateway.base import Clock, Gateway
from forecasts.clearsky import expected_pv_kwh
from forecasts.load import expected_load_kwh
from optimizer.localtime import local_fields
from optimizer.policy import battery_spec
from trueup.config import TrueupConfig

STEP_S = 300


def simulated_site(cfg: TrueupConfig, clock: Clock, *, soc_percent: float = 50.0) -> Gateway:
    """The configured site simulated: expected PV (clear sky × clearness) and the typical
    load, 5-minute steps, lifetime counters with a few years on them."""
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
    return SimulatedGateway(battery_spec(cfg.battery), soc_percent, pv, load, step_s=STEP_S,
                            clock=clock, counters_wh=counters)


def build_gateway(cfg: TrueupConfig, clock: Clock | None = None) -> Gateway:
    """The gateway ``[gateway] kind`` names. No I/O happens until its first read."""
    if cfg.gateway.kind == "simulated":
        from adapters.gateway.simulated import SimClock

        sim_clock = clock or SimClock(time.time() - STEP_S)
        gw = simulated_site(cfg, sim_clock)
        if clock is None:
            sim_clock.advance(STEP_S)  # five minutes of physics, so flows have a value
        return gw
    from adapters.gateway.powerwall import PowerwallGateway

    return PowerwallGateway.from_config(cfg.gateway, clock=clock)
