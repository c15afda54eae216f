"""Open-Meteo: free irradiance forecasts (no key), turned into each array's power with pvlib.

Request: ``GET https://api.open-meteo.com/v1/forecast`` with ``minutely_15`` =
shortwave_radiation (GHI), direct_normal_irradiance (DNI), diffuse_radiation (DHI),
temperature_2m, wind_speed_10m, ``wind_speed_unit=ms`` and ``timezone=GMT``. Radiation values
are means over the *preceding* 15 minutes (the ``hourly`` block, if that is all there is: the
preceding hour); temperature and wind are instants. Times are ISO 8601 without an offset in the
response's ``timezone`` (GMT as requested; another zone is converted with its DST rules; plain
epoch seconds also work with ``timeformat=unixtime``).

Each interval's GHI/DNI/DHI go through ``forecasts.pvmodel`` (Perez POA, PVWatts) with the sun
at the interval's middle. Limits: 10,000 calls/day free for non-commercial use; forecasts
refresh at most every 15 minutes, so we fetch at most every 30.
"""

from __future__ import annotations

import json
import math

import numpy as np

from forecasts.providers.base import (
    ForecastRequest,
    Http,
    Limits,
    ProviderError,
    ProviderOutput,
    Reason,
    check_energy,
    intervals_to_grid,
    parse_times,
)

URL = "https://api.open-meteo.com/v1/forecast"
VARIABLES = ("shortwave_radiation", "direct_normal_irradiance", "diffuse_radiation",
             "temperature_2m", "wind_speed_10m")


class OpenMeteoProvider:
    name = "open_meteo"
    remote = True

    def __init__(self, *, url: str = URL, min_refresh_s: float = 1800.0,
                 calls_per_day: int = 1000, max_stale_s: float = 6 * 3600.0) -> None:
        self.url = url
        self._limits = Limits(calls=calls_per_day, window_s=86400.0,
                              min_refresh_s=min_refresh_s, max_stale_s=max_stale_s)

    def missing(self) -> str | None:
        return None

    def limits(self, req: ForecastRequest) -> Limits:
        return self._limits

    def calls_needed(self, req: ForecastRequest) -> int:
        return 1

    def cache_key(self, req: ForecastRequest) -> str:
        return f"solar:{self.name}:{req.site_key(self.url)}"

    def params(self, req: ForecastRequest) -> dict[str, str]:
        days = min(16, math.ceil(req.hours / 24) + 2)  # today (from 00:00 GMT) + horizon
        return {"latitude": f"{req.latitude:.4f}", "longitude": f"{req.longitude:.4f}",
                "minutely_15": ",".join(VARIABLES), "wind_speed_unit": "ms",
                "timezone": "GMT", "forecast_days": str(days)}

    def fetch(self, req: ForecastRequest, http: Http, on_attempt=None
              ) -> tuple[str, float | None]:
        _, text = http.get_json(self.url, params=self.params(req), on_attempt=on_attempt,
                                attempts=self._limits.attempts)
        return text, None

    def parse(self, payload: str, req: ForecastRequest) -> ProviderOutput:
        try:
            data = json.loads(payload)
        except ValueError:
            raise ProviderError(Reason.MALFORMED, "the answer is not JSON") from None
        if not isinstance(data, dict):
            raise ProviderError(Reason.MALFORMED, "the answer is not a JSON object")
        if data.get("error"):
            raise ProviderError(Reason.REJECTED, str(data.get("reason", "error"))[:160])
        block, period = None, 0
        for name, seconds in (("minutely_15", 900), ("hourly", 3600)):
            b = data.get(name)
            if isinstance(b, dict) and b.get("time"):
                block, period = b, seconds
                break
        if block is None:
            raise ProviderError(Reason.MALFORMED, "no minutely_15 or hourly block in the answer")
        times = block["time"]
        cols: dict[str, np.ndarray] = {}
        for v in VARIABLES:
            col = block.get(v)
            if v == "wind_speed_10m" and col is None:
                col = [1.0] * len(times)
            if not isinstance(col, list) or len(col) != len(times):
                raise ProviderError(Reason.MALFORMED,
                                    f"{v}: missing or not {len(times)} values long")
            try:
                cols[v] = np.array([np.nan if x is None else float(x) for x in col])
            except (TypeError, ValueError):
                raise ProviderError(Reason.MALFORMED, f"{v}: values are not numbers") from None
        tz = data.get("timezone") or "GMT"
        if data.get("utc_offset_seconds") not in (None, 0) and tz in ("GMT", "UTC"):
            raise ProviderError(Reason.MALFORMED, f"timezone {tz} with a UTC offset of "
                                f"{data.get('utc_offset_seconds')} s")
        try:
            labels = parse_times(times, "UTC" if tz in ("GMT", "UTC") else tz,
                                 what="open-meteo time")
        except ProviderError:
            raise
        except Exception as e:  # an unknown zone name
            raise ProviderError(Reason.MALFORMED, f"timezone {tz!r}: {e}") from None
        ghi, dni, dhi = (cols["shortwave_radiation"], cols["direct_normal_irradiance"],
                         cols["diffuse_radiation"])
        if (np.nan_to_num(np.stack([ghi, dni, dhi])) < -1).any():
            raise ProviderError(Reason.MALFORMED, "negative irradiance")
        # only intervals that can touch the horizon
        keep = (labels > req.start_utc) & (labels - period < req.end_utc)
        if not keep.any():
            raise ProviderError(Reason.SHORT, "no data inside the forecast horizon")
        labels = labels[keep]
        mid = labels - period // 2
        from forecasts import pvmodel  # pvlib, loaded on first use

        sun = pvmodel.sun_position(mid, req.latitude, req.longitude)
        irr = pvmodel.Irradiance(ghi=ghi[keep], dni=dni[keep], dhi=dhi[keep])
        temp = np.nan_to_num(cols["temperature_2m"][keep], nan=pvmodel.CLEAR_SKY_TEMP_AIR)
        wind = np.nan_to_num(cols["wind_speed_10m"][keep], nan=pvmodel.CLEAR_SKY_WIND)
        missing = ~(np.isfinite(irr.ghi) & np.isfinite(irr.dni) & np.isfinite(irr.dhi))
        filled = pvmodel.Irradiance(*(np.nan_to_num(x) for x in (irr.ghi, irr.dni, irr.dhi)))
        kw = np.array([pvmodel.array_ac_kw(a, sun, filled, temp, wind) for a in req.arrays]).T
        kw[missing] = np.nan
        kwh = intervals_to_grid(labels, np.full(labels.shape, period), kw, req.starts_utc,
                                req.step_s).T
        check_energy(kwh, req.arrays, req.step_s, what="open-meteo")
        notes = [f"Open-Meteo irradiance ({'15-minute' if period == 900 else 'hourly'} means)"
                 " → pvlib Perez POA → PVWatts"]
        return ProviderOutput(p50=kwh, notes=notes)
