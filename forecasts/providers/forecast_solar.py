"""Forecast.Solar: PV power estimates per plane, public (no key) or keyed.

Request, one per array: ``GET https://api.forecast.solar/estimate/watts/:lat/:lon/:dec/:az/:kwp``
(public) or ``https://api.forecast.solar/:apikey/estimate/watts/...`` (keyed plans), with
``time=iso8601`` so every timestamp carries its UTC offset (the default format is naive local
time, whose repeated DST hour would collide as a JSON key). ``:az`` is Forecast.Solar's
azimuth: -180..180 with 0 = south, -90 = east (ours minus 180). Answer::

    {"result": {"2024-04-26T06:20:17+02:00": 0, "2024-04-26T07:00:00+02:00": 270, ...},
     "message": {"code": 0, "type": "success", "info": {"timezone": "Europe/Amsterdam", ...},
                 "ratelimit": {"period": 3600, "limit": 12, "remaining": 11}}}

(``/estimate`` without ``/watts`` nests the same under ``result.watts``; both are read.) Values
are instantaneous watts at sunrise, each full hour and sunset, for today and tomorrow on the
public plan; energy between samples is the trapezoid rule, as the provider's own
``watt_hours_period`` is. Naive times are read in ``message.info.timezone``.

Rate limits: 12 calls per hour per IP on the public plan; the answer's
``message.ratelimit.remaining`` is obeyed before the next array's call, and a 429's
``message.ratelimit.retry-at`` (or the ``X-Ratelimit-Retry-At`` header) sets the back-off.
Forecasts change at most every 15 minutes; we fetch at most every 30.
"""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import requests

from forecasts.providers.base import (
    ForecastRequest,
    Http,
    Limits,
    ProviderError,
    ProviderOutput,
    Reason,
    check_energy,
    parse_times,
    samples_to_grid,
)

BASE_URL = "https://api.forecast.solar"


def _retry_at(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _ratelimit(obj: object) -> dict:
    msg = obj.get("message") if isinstance(obj, dict) else None
    rl = msg.get("ratelimit") if isinstance(msg, dict) else None
    return rl if isinstance(rl, dict) else {}


class ForecastSolarProvider:
    name = "forecast_solar"
    remote = True

    def __init__(self, *, api_key: str | None = None, base_url: str = BASE_URL,
                 calls_per_hour: int | None = None, min_refresh_s: float = 1800.0,
                 max_stale_s: float = 6 * 3600.0) -> None:
        self.api_key = api_key or None
        self.base_url = base_url.rstrip("/")
        calls = calls_per_hour or (60 if self.api_key else 12)
        self._limits = Limits(calls=calls, window_s=3600.0, min_refresh_s=min_refresh_s,
                              max_stale_s=max_stale_s)

    def missing(self) -> str | None:
        return None  # the public endpoint needs no key

    def limits(self, req: ForecastRequest) -> Limits:
        return self._limits

    def calls_needed(self, req: ForecastRequest) -> int:
        return len(req.arrays)

    def cache_key(self, req: ForecastRequest) -> str:
        return f"solar:{self.name}:{req.site_key(self.base_url, bool(self.api_key))}"

    def url(self, req: ForecastRequest, i: int) -> str:
        a = req.arrays[i]
        az = (a.azimuth - 180.0 + 180.0) % 360.0 - 180.0
        path = (f"estimate/watts/{req.latitude:.4f}/{req.longitude:.4f}/{round(a.tilt)}/"
                f"{round(az)}/{a.kw_dc:g}")
        return f"{self.base_url}/{self.api_key}/{path}" if self.api_key else \
            f"{self.base_url}/{path}"

    def params(self, req: ForecastRequest, i: int) -> dict[str, str]:
        p = {"time": "iso8601"}
        if req.arrays[i].inverter_kw_ac:
            p["inverter"] = f"{req.arrays[i].inverter_kw_ac:g}"
        return p

    @staticmethod
    def _hint(r: requests.Response) -> float | None:
        try:
            body = r.json()
        except ValueError:
            body = None
        return _retry_at(_ratelimit(body).get("retry-at")) or \
            _retry_at(r.headers.get("X-Ratelimit-Retry-At"))

    def fetch(self, req: ForecastRequest, http: Http, on_attempt=None
              ) -> tuple[str, float | None]:
        answers = []
        retry_at = None
        for i in range(len(req.arrays)):
            data, _ = http.get_json(self.url(req, i), params=self.params(req, i),
                                    attempts=self._limits.attempts, secrets=[self.api_key or ""],
                                    on_attempt=on_attempt, rate_limit_hint=self._hint)
            answers.append(data)
            rl = _ratelimit(data)
            remaining = rl.get("remaining")
            if isinstance(remaining, int | float) and remaining <= 0:
                period = rl.get("period") if isinstance(rl.get("period"), int | float) \
                    else 3600
                retry_at = _retry_at(rl.get("retry-at")) or http.clock() + float(period)
                if i + 1 < len(req.arrays):
                    raise ProviderError(Reason.RATE_LIMITED,
                                        f"no calls left this period for arrays {i + 2}.."
                                        f"{len(req.arrays)} (message.ratelimit.remaining = "
                                        f"{remaining})", retry_at=retry_at)
        return json.dumps({"responses": answers}), retry_at

    def parse(self, payload: str, req: ForecastRequest) -> ProviderOutput:
        try:
            answers = json.loads(payload)["responses"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(Reason.MALFORMED, "cached payload is not ours") from None
        if not isinstance(answers, list) or len(answers) != len(req.arrays):
            raise ProviderError(Reason.MALFORMED,
                                f"{len(answers) if isinstance(answers, list) else 0} answers "
                                f"for {len(req.arrays)} arrays")
        rows = []
        for i, data in enumerate(answers):
            what = f"forecast.solar array {i + 1}"
            if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
                raise ProviderError(Reason.MALFORMED, f"{what}: no 'result' object")
            watts = data["result"].get("watts", data["result"])
            if not isinstance(watts, dict) or not watts:
                raise ProviderError(Reason.MALFORMED, f"{what}: 'result' has no watts")
            info = (data.get("message") or {}).get("info") or {}
            tz = info.get("timezone") if isinstance(info, dict) else None
            try:
                t = parse_times(list(watts), tz or None, what=what)
            except ProviderError:
                raise
            except Exception as e:  # an unknown zone name
                raise ProviderError(Reason.MALFORMED, f"{what}: timezone {tz!r}: {e}") \
                    from None
            try:
                w = np.array([float(v) for v in watts.values()])
            except (TypeError, ValueError):
                raise ProviderError(Reason.MALFORMED, f"{what}: watts are not numbers") \
                    from None
            if (w < 0).any() or not np.isfinite(w).all():
                raise ProviderError(Reason.MALFORMED, f"{what}: negative or missing watts")
            rows.append(samples_to_grid(t, w / 1000.0, req.starts_utc, req.step_s))
        kwh = np.array(rows)
        check_energy(kwh, req.arrays, req.step_s, what="forecast.solar")
        return ProviderOutput(p50=kwh, notes=[
            f"Forecast.Solar ({'keyed' if self.api_key else 'public'} endpoint), one call per "
            "array"])
