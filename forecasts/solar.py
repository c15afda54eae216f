"""Solar forecasts: one interface over Solcast, Forecast.Solar, Open-Meteo and clear sky.

``SolarForecaster(providers, cache).forecast(request)`` walks a fallback chain — by default
solcast → forecast_solar → open_meteo → clear_sky — and returns the first usable answer as a
:class:`SolarForecast`: kWh per 15-minute step (UTC step starts) for each array and summed,
P50 always, P10/P90 when the provider gives them (Solcast), and ``skipped``: every provider
passed over before it and why (:class:`~forecasts.providers.base.Reason`: no_key, budget,
rate_limited, down, rejected, malformed, short, error). Clear sky (pvlib, offline) is always
the last link, so a valid request always gets a forecast.

Per remote provider the forecaster keeps, in a :class:`~forecasts.cache.ForecastCache` (so a
restart neither re-fetches nor forgets its budget):

- the last good raw answer (``solar:<provider>:<site digest>``), reused without a call until
  the provider's minimum refresh interval has passed, and up to ``max_stale_s`` old when a
  refresh fails (the result's notes say so);
- its call log and back-off (``solar:<provider>:state``): HTTP attempts in a sliding window
  against the provider's budget (Solcast hobbyist: 10 a day), and the time before which it
  must not be asked again after a 429 or a spent ``ratelimit``.

A provider's answer must cover ≥ 90 % of the daylight steps in the next 24 h (else ``short``);
steps it does not cover (beyond its horizon, gaps) are filled from the clear-sky expectation and
``provider_steps`` marks which steps are the provider's. Time zones: every provider's times are
converted explicitly to UTC (``forecasts/providers/base.py``); steps are UTC epoch seconds.

Configuration: :class:`SolarSettings` (the ``[forecast.solar]`` section the daemon's config
can embed) and :func:`build_forecaster`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from forecasts.cache import CachedPayload, ForecastCache, MemoryCache, normalise
from forecasts.providers.base import (
    STEP_S,
    ForecastRequest,
    Http,
    Limits,
    Provider,
    ProviderError,
    ProviderOutput,
    Reason,
)
from forecasts.providers.clear_sky import ClearSkyProvider, expected_kwh
from forecasts.providers.forecast_solar import ForecastSolarProvider
from forecasts.providers.open_meteo import OpenMeteoProvider
from forecasts.providers.solcast import SolcastProvider
from optimizer.site import Location, PVArray

__all__ = [
    "ForecastRequest", "ForecastUnavailable", "Quantile", "Reason", "Skip", "SolarForecast",
    "SolarForecaster", "SolarSettings", "build_forecaster", "make_request",
]

log = logging.getLogger("trueup.forecasts.solar")

Quantile = Literal["p10", "p50", "p90"]
DAYLIGHT_KWH = 1e-3  # a step with less clear-sky energy than this (per array) is night


@dataclass(frozen=True)
class Skip:
    """A provider passed over: which, why (a :class:`Reason`) and the details."""

    provider: str
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.provider}: {self.reason.value} ({self.detail})"


@dataclass(frozen=True, eq=False)
class SolarForecast:
    """kWh per step for each array (rows, in ``[[pv]]`` order) and in total.

    ``starts_utc``: step starts, UTC epoch seconds, every ``step_s`` seconds. ``p10``/``p90``
    are None when the provider gives no quantiles. ``provider_steps[i]`` is False where the
    provider said nothing and the clear-sky expectation was used. ``fetched_at``: when the
    provider's answer was fetched (UTC epoch s; for clear sky, when it was computed)."""

    provider: str
    starts_utc: np.ndarray
    step_s: int
    p50: np.ndarray
    p10: np.ndarray | None
    p90: np.ndarray | None
    provider_steps: np.ndarray
    fetched_at: float
    generated_at: float
    from_cache: bool
    planning_quantile: Quantile
    skipped: tuple[Skip, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def has_quantiles(self) -> bool:
        return self.p10 is not None and self.p90 is not None

    def array_kwh(self, quantile: Quantile = "p50") -> np.ndarray:
        """kWh per array and step, shape (n_arrays, n_steps); P50 if the quantile is absent."""
        q = {"p10": self.p10, "p50": self.p50, "p90": self.p90}[quantile]
        return self.p50 if q is None else q

    def total_kwh(self, quantile: Quantile = "p50") -> np.ndarray:
        """kWh per step, all arrays together."""
        return self.array_kwh(quantile).sum(axis=0)

    @property
    def planning_kwh(self) -> np.ndarray:
        """What the optimizer should plan on: the configured quantile (P50 when absent)."""
        return self.total_kwh(self.planning_quantile)

    @property
    def age_s(self) -> float:
        return max(0.0, self.generated_at - self.fetched_at)

    def to_json(self) -> dict:
        def rows(a: np.ndarray | None) -> list[list[float]] | None:
            return None if a is None else [[round(float(x), 4) for x in r] for r in a]

        iso = [datetime.fromtimestamp(int(t), UTC).isoformat() for t in self.starts_utc]
        return {"provider": self.provider, "step_minutes": self.step_s // 60, "starts": iso,
                "total_kwh": [round(float(x), 4) for x in self.total_kwh()],
                "arrays_kwh": {"p50": rows(self.p50), "p10": rows(self.p10),
                               "p90": rows(self.p90)},
                "planning_quantile": self.planning_quantile,
                "provider_steps": [bool(x) for x in self.provider_steps],
                "fetched_at": datetime.fromtimestamp(self.fetched_at, UTC).isoformat(),
                "from_cache": self.from_cache,
                "skipped": [{"provider": s.provider, "reason": s.reason.value,
                             "detail": s.detail} for s in self.skipped],
                "notes": list(self.notes)}


class ForecastUnavailable(RuntimeError):
    """Not even the clear-sky model answered (a bug): ``skipped`` says what each did."""

    def __init__(self, skipped: Sequence[Skip]) -> None:
        self.skipped = tuple(skipped)
        super().__init__("no solar forecast: " + "; ".join(str(s) for s in skipped))


def make_request(location: Location, arrays: Sequence[PVArray], *,
                 start_utc: float | None = None, hours: int = 48,
                 step_s: int = STEP_S) -> ForecastRequest:
    """A request for the site from ``start_utc`` (default now; floored to the step)."""
    return ForecastRequest(latitude=location.latitude, longitude=location.longitude,
                           timezone=location.timezone, arrays=tuple(arrays),
                           start_utc=int(time.time() if start_utc is None else start_utc),
                           hours=hours, step_s=step_s)


class SolarForecaster:
    """The fallback chain. ``providers`` in order of preference; clear sky is appended when
    it is not the last. ``cache`` keeps answers and budgets (default: in memory only);
    ``http`` carries timeouts and retries; ``clock`` gives UTC epoch seconds."""

    def __init__(self, providers: Sequence[Provider], cache: ForecastCache | None = None,
                 *, http: Http | None = None, clock: Callable[[], float] | None = None,
                 planning_quantile: Quantile = "p50", min_daylight_cover: float = 0.9) -> None:
        self.providers = list(providers)
        if not self.providers or self.providers[-1].name != "clear_sky":
            self.providers.append(ClearSkyProvider())
        self.cache = cache if cache is not None else MemoryCache()
        self.clock = clock or (http.clock if http is not None else time.time)
        self.http = http or Http(clock=self.clock)
        self.planning_quantile = planning_quantile
        self.min_daylight_cover = min_daylight_cover

    # -------------------------------------------------------------- cache and state

    def _get(self, key: str, notes: list[str]) -> CachedPayload | None:
        try:
            return normalise(self.cache.get(key))
        except Exception as e:  # CacheError, or whatever another store's cache raises
            notes.append(f"cache unreadable, going without it: {e}")
            return None

    def _put(self, key: str, payload: str, at: float, notes: list[str]) -> None:
        try:
            self.cache.put(key, payload, at)
        except Exception as e:  # CacheError, or whatever another store's cache raises
            notes.append(f"cache unwritable, the answer is not kept: {e}")

    def _state(self, p: Provider, notes: list[str]) -> dict:
        hit = self._get(f"solar:{p.name}:state", notes)
        try:
            state = json.loads(hit.payload) if hit else {}
        except ValueError:
            state = {}
        calls = state.get("calls") if isinstance(state, dict) else None
        retry_at = state.get("retry_at") if isinstance(state, dict) else None
        return {"calls": [float(c) for c in calls if isinstance(c, int | float)]
                if isinstance(calls, list) else [],
                "retry_at": float(retry_at) if isinstance(retry_at, int | float) else None,
                "why": str(state.get("why", "")) if isinstance(state, dict) else ""}

    def _save_state(self, p: Provider, state: dict, limits: Limits, now: float,
                    notes: list[str]) -> None:
        state["calls"] = [c for c in state["calls"] if c > now - limits.window_s]
        self._put(f"solar:{p.name}:state", json.dumps(state), now, notes)

    # ------------------------------------------------------------------- the chain

    def forecast(self, req: ForecastRequest) -> SolarForecast:
        """The first usable forecast along the chain; never raises for a provider's failure."""
        now = float(self.clock())
        expected = expected_kwh(req)  # clear sky × clearness: the filler and the last link
        daylight = expected_kwh(req, clearness=False).sum(axis=0) > DAYLIGHT_KWH * \
            len(req.arrays)
        skipped: list[Skip] = []
        for p in self.providers:
            notes: list[str] = []
            try:
                got = self._try(p, req, now, daylight, notes)
            except ProviderError as e:
                got = e
            except Exception as e:  # a bug in a provider must not stop the chain
                log.exception("solar provider %s failed", p.name)
                got = ProviderError(Reason.ERROR, f"{type(e).__name__}: {e}")
            if isinstance(got, ProviderError):
                skip = Skip(p.name, got.reason, got.detail)
                log.info("solar forecast: skipped %s", skip)
                skipped.append(skip)
                continue
            out, fetched_at, from_cache = got
            return self._result(p.name, req, out, expected, fetched_at, from_cache, now,
                                skipped, notes)
        raise ForecastUnavailable(skipped)

    def _try(self, p: Provider, req: ForecastRequest, now: float, daylight: np.ndarray,
             notes: list[str]) -> tuple[ProviderOutput, float, bool] | ProviderError:
        if not p.remote:
            return self._checked(p, p.parse("", req), req, daylight), now, False
        missing = p.missing()
        if missing:
            return ProviderError(Reason.NO_KEY, missing)
        limits = p.limits(req)
        key = p.cache_key(req)
        cached = self._get(key, notes)
        age = now - cached.fetched_at if cached else math.inf
        if cached and age < limits.min_refresh_s:
            try:
                out = self._checked(p, p.parse(cached.payload, req), req, daylight)
                notes.append(f"cached answer from {age / 60:.0f} min ago (refresh after "
                             f"{limits.min_refresh_s / 60:.0f} min)")
                return out, cached.fetched_at, True
            except ProviderError as e:
                notes.append(f"cached answer unusable ({e}): fetching")
        state = self._state(p, notes)
        failure = self._blocked(state, limits, p.calls_needed(req), now)
        if failure is None:
            failure = self._fetch(p, req, limits, state, now, key, daylight, notes)
            if not isinstance(failure, ProviderError):
                return failure
        if cached and age <= limits.max_stale_s:
            try:
                out = self._checked(p, p.parse(cached.payload, req), req, daylight)
                notes.append(f"stale: answer from {age / 3600:.1f} h ago, because the refresh "
                             f"failed: {failure.reason.value} ({failure.detail})")
                return out, cached.fetched_at, True
            except ProviderError:
                pass
        return failure

    @staticmethod
    def _blocked(state: dict, limits: Limits, needed: int, now: float
                 ) -> ProviderError | None:
        if state["retry_at"] and now < state["retry_at"]:
            until = datetime.fromtimestamp(state["retry_at"], UTC).strftime("%Y-%m-%dT%H:%MZ")
            return ProviderError(Reason.RATE_LIMITED, f"backing off until {until}"
                                 + (f" after: {state['why']}" if state["why"] else ""))
        if needed > limits.calls:
            return ProviderError(Reason.BUDGET, f"a refresh needs {needed} calls, the budget is "
                                 f"{limits.calls} per {limits.window_s / 3600:g} h")
        used = [c for c in state["calls"] if c > now - limits.window_s]
        if len(used) + needed > limits.calls:
            free_at = sorted(used)[len(used) + needed - limits.calls - 1] + limits.window_s
            return ProviderError(Reason.BUDGET,
                                 f"{len(used)} of {limits.calls} calls used in the last "
                                 f"{limits.window_s / 3600:g} h, {needed} needed; next at "
                                 f"{datetime.fromtimestamp(free_at, UTC):%Y-%m-%dT%H:%MZ}")
        return None

    def _fetch(self, p: Provider, req: ForecastRequest, limits: Limits, state: dict,
               now: float, key: str, daylight: np.ndarray, notes: list[str]
               ) -> tuple[ProviderOutput, float, bool] | ProviderError:
        def on_attempt() -> None:
            t = float(self.clock())
            if len([c for c in state["calls"] if c > t - limits.window_s]) >= limits.calls:
                raise ProviderError(Reason.BUDGET, f"the budget of {limits.calls} calls per "
                                    f"{limits.window_s / 3600:g} h ran out during the fetch")
            state["calls"].append(t)

        try:
            payload, retry_at = p.fetch(req, self.http, on_attempt)
            out = self._checked(p, p.parse(payload, req), req, daylight)
        except ProviderError as e:
            if e.retry_at:
                state["retry_at"], state["why"] = e.retry_at, f"{e.reason.value}: {e.detail}"
            return e
        finally:
            self._save_state(p, state, limits, now, notes)
        if retry_at:
            state["retry_at"], state["why"] = retry_at, "the provider's rate limit is spent"
            self._save_state(p, state, limits, now, notes)
        self._put(key, payload, now, notes)
        return out, now, False

    def _checked(self, p: Provider, out: ProviderOutput, req: ForecastRequest,
                 daylight: np.ndarray) -> ProviderOutput:
        shape = (len(req.arrays), req.n_steps)
        for name in ("p50", "p10", "p90"):
            q = getattr(out, name)
            if q is not None and np.shape(q) != shape:
                raise ProviderError(Reason.ERROR, f"{name} has shape {np.shape(q)}, not "
                                    f"{shape}")
        covered = np.isfinite(out.p50).all(axis=0)
        window = req.starts_utc < req.start_utc + 24 * 3600
        light = daylight & window
        if light.any():
            share = covered[light].mean()
            if share < self.min_daylight_cover:
                raise ProviderError(Reason.SHORT,
                                    f"covers {covered[light].sum()} of {light.sum()} daylight "
                                    f"steps in the next 24 h")
        return out

    def _result(self, name: str, req: ForecastRequest, out: ProviderOutput,
                expected: np.ndarray, fetched_at: float, from_cache: bool, now: float,
                skipped: list[Skip], notes: list[str]) -> SolarForecast:
        def filled(q: np.ndarray | None) -> np.ndarray | None:
            return None if q is None else np.where(np.isfinite(q), q, expected)

        covered = np.isfinite(out.p50).all(axis=0)
        if out.p10 is not None:
            covered &= np.isfinite(out.p10).all(axis=0)
        if out.p90 is not None:
            covered &= np.isfinite(out.p90).all(axis=0)
        all_notes = [*out.notes, *notes]
        gap = ~covered & (expected.sum(axis=0) > 0)
        if gap.any() and name != "clear_sky":
            first = datetime.fromtimestamp(int(req.starts_utc[gap][0]), UTC)
            all_notes.append(f"{int(gap.sum())} daylight steps without {name} data (from "
                             f"{first:%Y-%m-%dT%H:%MZ}) filled with the clear-sky expectation")
        if self.planning_quantile != "p50" and (out.p10 is None or out.p90 is None):
            all_notes.append(f"planning on P50: {name} gives no {self.planning_quantile}")
        return SolarForecast(
            provider=name, starts_utc=req.starts_utc, step_s=req.step_s,
            p50=filled(out.p50), p10=filled(out.p10), p90=filled(out.p90),
            provider_steps=covered, fetched_at=fetched_at, generated_at=now,
            from_cache=from_cache, planning_quantile=self.planning_quantile,
            skipped=tuple(skipped), notes=tuple(all_notes))


# ----------------------------------------------------------------------- configuration


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyedSettings(_Settings):
    """An API key, preferably from a file (``api_key_file``) so it stays out of the config."""

    api_key: str | None = None
    api_key_file: str | None = None

    def key(self) -> tuple[str | None, str | None]:
        """(the key, or None; what went wrong reading it, or None)."""
        if self.api_key:
            return self.api_key.strip(), None
        if self.api_key_file:
            try:
                return Path(self.api_key_file).read_text(encoding="utf-8").strip() or None, None
            except OSError as e:
                return None, f"cannot read api_key_file {self.api_key_file}: {e.strerror}"
        return None, None


class SolcastSettings(KeyedSettings):
    resource_ids: list[str] = []  # one per [[pv]] array, or one for the whole site
    calls_per_day: Annotated[int, Field(ge=1, le=10000)] = 10  # hobbyist accounts: 10
    min_refresh_minutes: Annotated[float, Field(ge=0)] | None = None  # default: spread budget


class ForecastSolarSettings(KeyedSettings):
    calls_per_hour: Annotated[int, Field(ge=1, le=10000)] | None = None  # public 12, keyed 60
    min_refresh_minutes: Annotated[float, Field(ge=15)] = 30.0


class OpenMeteoSettings(_Settings):
    url: str = "https://api.open-meteo.com/v1/forecast"
    min_refresh_minutes: Annotated[float, Field(ge=15)] = 30.0


ProviderName = Literal["solcast", "forecast_solar", "open_meteo", "clear_sky"]


class SolarSettings(_Settings):
    """``[forecast.solar]``: the providers in order of preference (clear sky is always the
    last resort), the horizon, the quantile the optimizer plans on, and each provider's
    keys and limits."""

    providers: list[ProviderName] = ["solcast", "forecast_solar", "open_meteo", "clear_sky"]
    hours: Annotated[int, Field(ge=24, le=168)] = 48
    planning_quantile: Quantile = "p50"
    cache_file: str | None = None  # a SQLite file; None = memory only (re-fetch on restart)
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 20.0
    solcast: SolcastSettings = SolcastSettings()
    forecast_solar: ForecastSolarSettings = ForecastSolarSettings()
    open_meteo: OpenMeteoSettings = OpenMeteoSettings()


class _Unconfigured:
    """A remote provider whose key could not be read: always skipped with the reason."""

    remote = True

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why

    def missing(self) -> str:
        return self.why


def build_forecaster(settings: SolarSettings | None = None, *,
                     cache: ForecastCache | None = None, http: Http | None = None,
                     clock: Callable[[], float] | None = None) -> SolarForecaster:
    """The chain ``settings`` describes. ``cache`` overrides ``settings.cache_file`` (the
    daemon passes its store)."""
    s = settings or SolarSettings()
    if cache is None and s.cache_file:
        from forecasts.cache import SQLiteCache

        cache = SQLiteCache(s.cache_file)
    http = http or Http(timeout=(5.0, s.timeout_s), clock=clock or time.time)
    chain: list = []
    for name in s.providers:
        if name == "solcast":
            key, problem = s.solcast.key()
            chain.append(_Unconfigured(name, problem) if problem else SolcastProvider(
                api_key=key, resource_ids=s.solcast.resource_ids,
                calls_per_day=s.solcast.calls_per_day,
                min_refresh_s=None if s.solcast.min_refresh_minutes is None
                else s.solcast.min_refresh_minutes * 60))
        elif name == "forecast_solar":
            key, problem = s.forecast_solar.key()
            chain.append(_Unconfigured(name, problem) if problem else ForecastSolarProvider(
                api_key=key, calls_per_hour=s.forecast_solar.calls_per_hour,
                min_refresh_s=s.forecast_solar.min_refresh_minutes * 60))
        elif name == "open_meteo":
            chain.append(OpenMeteoProvider(url=s.open_meteo.url,
                                           min_refresh_s=s.open_meteo.min_refresh_minutes * 60))
        else:
            chain.append(ClearSkyProvider())
    return SolarForecaster(chain, cache, http=http, clock=clock,
                           planning_quantile=s.planning_quantile)
