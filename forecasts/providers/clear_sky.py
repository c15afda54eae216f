"""The offline provider: pvlib clear sky × the month's clearness, per array. Needs nothing,
never fails for a valid request: the default and the chain's last fallback."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from forecasts.clearsky import MONTHLY_CLEARNESS
from forecasts.providers.base import ForecastRequest, Limits, ProviderOutput


def local_months(starts_utc: np.ndarray, tz: str) -> np.ndarray:
    """Local calendar month (1-12) of each UTC epoch second."""
    zone = ZoneInfo(tz)
    return np.array([datetime.fromtimestamp(int(t), UTC).astimezone(zone).month
                     for t in starts_utc], dtype=np.int64)


def expected_kwh(req: ForecastRequest, *, clearness: bool = True) -> np.ndarray:
    """kWh per array and step, shape (len(arrays), n_steps): clear sky at mid-step, times the
    local month's clearness unless ``clearness`` is False."""
    starts = req.starts_utc
    from forecasts import pvmodel  # pvlib, loaded on first use

    kw = pvmodel.clear_sky_ac_kw(starts + req.step_s // 2, req.latitude, req.longitude,
                                 req.arrays)
    if clearness:
        kw = kw * MONTHLY_CLEARNESS[local_months(starts + req.step_s // 2, req.timezone) - 1]
    return kw * req.step_s / 3600.0


class ClearSkyProvider:
    """pvlib Ineichen clear sky → Perez POA → PVWatts, × ``MONTHLY_CLEARNESS`` (an expected
    value, not a weather forecast; no quantiles)."""

    name = "clear_sky"
    remote = False

    def missing(self) -> str | None:
        return None

    def limits(self, req: ForecastRequest) -> Limits:
        return Limits(calls=0, window_s=0, min_refresh_s=0, max_stale_s=0, attempts=0)

    def calls_needed(self, req: ForecastRequest) -> int:
        return 0

    def cache_key(self, req: ForecastRequest) -> str:
        return f"solar:{self.name}:{req.site_key()}"

    def fetch(self, req, http, on_attempt):  # pragma: no cover - local provider
        # the chain never fetches a local provider (remote = False): it computes in parse()
        raise RuntimeError("the clear-sky provider computes locally; there is nothing to "
                           "fetch")

    def parse(self, payload: str, req: ForecastRequest) -> ProviderOutput:
        return ProviderOutput(p50=expected_kwh(req), notes=[
            "clear sky (pvlib Ineichen + PVWatts) × the month's typical clearness: an "
            "expectation, not a weather forecast"])
