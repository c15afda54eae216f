"""Solcast rooftop sites: PV power forecasts with P10/P50/P90, API key required.

Request, one per rooftop site (resource id): ``GET
https://api.solcast.com.au/rooftop_sites/{resource_id}/forecasts?format=json&hours=N`` with
``Authorization: Bearer <api key>``. Answer::

    {"forecasts": [{"pv_estimate": 1.93, "pv_estimate10": 1.1, "pv_estimate90": 2.2,
                    "period_end": "2025-03-09T17:30:00.0000000Z", "period": "PT30M"}, ...]}

``pv_estimate*`` are mean kW over the period ending at ``period_end`` (UTC). A site is set up
on solcast.com with its own tilt, azimuth and size: give one resource id per ``[[pv]]`` array
(in the same order), or a single id for the whole site, whose forecast is then shared between
the arrays by their clear-sky output.

Budget: hobbyist accounts get 10 calls a day (reset at 00:00 UTC) for up to two sites, so by
default we call at most 10 times in any 24 h and refresh no sooner than
``24 h × sites / 10`` (2.4 h with one site), and one retry at most. A 429 "daily limit"
backs off to the next 00:00 UTC.
"""

from __future__ import annotations

import json
import re

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
    intervals_to_grid,
    parse_times,
)

BASE_URL = "https://api.solcast.com.au"
_PERIOD = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?$")


def _period_s(text: object) -> int:
    m = _PERIOD.match(text) if isinstance(text, str) else None
    if not m or not (m.group(1) or m.group(2)):
        raise ProviderError(Reason.MALFORMED, f"solcast: period {text!r} is not like PT30M")
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60


class SolcastProvider:
    name = "solcast"
    remote = True

    def __init__(self, *, api_key: str | None = None, resource_ids: list[str] | None = None,
                 base_url: str = BASE_URL, calls_per_day: int = 10,
                 min_refresh_s: float | None = None, max_stale_s: float = 12 * 3600.0) -> None:
        self.api_key = api_key or None
        self.resource_ids = [r for r in (resource_ids or []) if r]
        self.base_url = base_url.rstrip("/")
        self.calls_per_day = calls_per_day
        self.min_refresh_s = min_refresh_s
        self.max_stale_s = max_stale_s

    def missing(self) -> str | None:
        if not self.api_key:
            return "no Solcast API key configured"
        if not self.resource_ids:
            return "no Solcast rooftop site (resource id) configured"
        return None

    def limits(self, req: ForecastRequest) -> Limits:
        n = len(self.resource_ids) or 1
        spread = 86400.0 * n / max(1, self.calls_per_day)
        return Limits(calls=self.calls_per_day, window_s=86400.0,
                      min_refresh_s=max(self.min_refresh_s or 0.0, spread),
                      max_stale_s=self.max_stale_s, attempts=2)

    def calls_needed(self, req: ForecastRequest) -> int:
        return len(self.resource_ids)

    def cache_key(self, req: ForecastRequest) -> str:
        return f"solar:{self.name}:{req.site_key(self.base_url, self.resource_ids)}"

    def _check_mapping(self, req: ForecastRequest) -> None:
        if len(self.resource_ids) not in (1, len(req.arrays)):
            raise ProviderError(Reason.NO_KEY,
                                f"{len(self.resource_ids)} Solcast sites for "
                                f"{len(req.arrays)} arrays: give one resource id per array, "
                                "or one for the whole site")

    @staticmethod
    def _hint(r: requests.Response, now: float) -> float | None:
        """A 429 that names the daily quota lasts until 00:00 UTC, when the quota resets."""
        text = (r.text or "").lower()
        if "daily" in text or "per day" in text:
            return (now // 86400 + 1) * 86400.0
        return None

    def fetch(self, req: ForecastRequest, http: Http, on_attempt=None
              ) -> tuple[str, float | None]:
        self._check_mapping(req)
        answers = []
        for rid in self.resource_ids:
            data, _ = http.get_json(
                f"{self.base_url}/rooftop_sites/{rid}/forecasts",
                params={"format": "json", "hours": str(min(168, req.hours + 1))},
                headers={"Authorization": f"Bearer {self.api_key}"},
                attempts=self.limits(req).attempts, secrets=[self.api_key or ""],
                on_attempt=on_attempt,
                rate_limit_hint=lambda r: self._hint(r, http.clock()))
            answers.append(data)
        return json.dumps({"responses": answers}), None

    def _site(self, data: object, req: ForecastRequest, what: str
              ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        rows = data.get("forecasts") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not rows:
            raise ProviderError(Reason.MALFORMED, f"{what}: no 'forecasts' list")
        if not all(isinstance(r, dict) for r in rows):
            raise ProviderError(Reason.MALFORMED, f"{what}: 'forecasts' holds non-objects")
        try:
            ends = parse_times([r.get("period_end") for r in rows], "UTC", what=what)
        except ProviderError:
            raise
        periods = np.array([_period_s(r.get("period")) for r in rows])

        def column(key: str) -> np.ndarray | None:
            vals = [r.get(key) for r in rows]
            if all(v is None for v in vals):
                return None
            try:
                return np.array([np.nan if v is None else float(v) for v in vals])
            except (TypeError, ValueError):
                raise ProviderError(Reason.MALFORMED, f"{what}: {key} is not a number") \
                    from None

        p50 = column("pv_estimate")
        if p50 is None:
            raise ProviderError(Reason.MALFORMED, f"{what}: no pv_estimate values")
        out = []
        for col in (p50, column("pv_estimate10"), column("pv_estimate90")):
            out.append(None if col is None else
                       intervals_to_grid(ends, periods, col, req.starts_utc, req.step_s))
        return out[0], out[1], out[2]

    def parse(self, payload: str, req: ForecastRequest) -> ProviderOutput:
        self._check_mapping(req)
        try:
            answers = json.loads(payload)["responses"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(Reason.MALFORMED, "cached payload is not ours") from None
        if not isinstance(answers, list) or len(answers) != len(self.resource_ids):
            raise ProviderError(Reason.MALFORMED, "one answer per Solcast site expected")
        sites = [self._site(d, req, f"solcast site {i + 1}") for i, d in enumerate(answers)]
        notes = ["Solcast rooftop sites (P10/P50/P90)"]
        if len(sites) == len(req.arrays):
            p50 = np.array([s[0] for s in sites])
            p10 = None if any(s[1] is None for s in sites) else np.array([s[1] for s in sites])
            p90 = None if any(s[2] is None for s in sites) else np.array([s[2] for s in sites])
        else:  # one site for several arrays: share by each array's clear-sky output
            from forecasts.providers.clear_sky import expected_kwh

            cs = expected_kwh(req, clearness=False)
            total = cs.sum(axis=0)
            kw = np.array([a.kw_dc for a in req.arrays])
            share = np.where(total > 0, cs / np.where(total > 0, total, 1.0),
                             (kw / kw.sum())[:, None])
            p50, p10, p90 = (None if s is None else share * s[None, :] for s in sites[0])
            notes.append(f"one Solcast site for {len(req.arrays)} arrays: shared by clear-sky "
                         "output")
        for q, name in ((p50, "pv_estimate"), (p10, "pv_estimate10"), (p90, "pv_estimate90")):
            if q is not None:
                check_energy(q, req.arrays, req.step_s, what=f"solcast {name}")
        if p10 is None or p90 is None:
            notes.append("Solcast gave no P10/P90: only P50 kept")
        return ProviderOutput(p50=p50, p10=p10, p90=p90, notes=notes)
