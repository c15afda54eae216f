"""What every solar provider shares: the request, the provider protocol, its errors, the HTTP
client (timeouts, bounded retries with backoff, rate limits) and the conversions of a
provider's time series onto the request's 15-minute UTC grid.

Times: every timestamp leaves this module as UTC epoch seconds. Providers answer in UTC with an
offset (Solcast, Forecast.Solar with ``time=iso8601``), in naive local time with the zone named
elsewhere in the response (Forecast.Solar's default, Open-Meteo with ``timezone=``), or in
epoch seconds; :func:`parse_times` converts each form explicitly, DST included: a repeated
local hour takes the later offset the second time, a local time that does not exist is
refused rather than guessed.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import requests

from optimizer.errors import InputError
from optimizer.site import PVArray

STEP_S = 900  # the forecast grid: 15 minutes


class Reason(StrEnum):
    """Why a provider gave nothing (recorded in ``SolarForecast.skipped``)."""

    DISABLED = "disabled"  # switched off in the configuration
    NO_KEY = "no_key"  # needs an API key (or a site id) that is not configured
    BUDGET = "budget"  # its call budget for the window is spent
    RATE_LIMITED = "rate_limited"  # HTTP 429, or the provider's own rate-limit counter
    DOWN = "down"  # no answer, timeouts, HTTP 5xx (after bounded retries)
    REJECTED = "rejected"  # HTTP 4xx: bad key, unknown site, refused parameters
    MALFORMED = "malformed"  # an answer we cannot use: not JSON, missing fields, bad values
    SHORT = "short"  # too little of the horizon covered
    ERROR = "error"  # an unexpected failure inside trueup (a bug: please report it)


class ProviderError(Exception):
    """A provider could not deliver: ``reason`` (a :class:`Reason`), ``detail`` for people,
    and for rate limits the UTC epoch second before which it must not be asked again."""

    def __init__(self, reason: Reason, detail: str, *, retry_at: float | None = None) -> None:
        self.reason = Reason(reason)
        self.detail = detail
        self.retry_at = retry_at
        super().__init__(f"{self.reason.value}: {detail}")


@dataclass(frozen=True)
class ForecastRequest:
    """A solar forecast for one site: ``hours`` of ``step_s`` steps from ``start_utc`` (UTC
    epoch seconds, floored to the step). Arrays must each have a size (kW DC > 0)."""

    latitude: float
    longitude: float
    timezone: str
    arrays: tuple[PVArray, ...]
    start_utc: int
    hours: int = 48
    step_s: int = STEP_S

    def __post_init__(self) -> None:
        if not self.arrays:
            raise InputError("no PV arrays to forecast", where="[[pv]]",
                             fix="add a [[pv]] section with kw_dc, tilt and azimuth")
        for i, a in enumerate(self.arrays):
            kw = getattr(a, "kw_dc", None)
            if not isinstance(kw, int | float) or not math.isfinite(kw) or kw <= 0:
                raise InputError(f"PV array {i + 1} has a size of {kw!r} kW DC: a forecast "
                                 "needs a positive size", where=f"pv[{i}].kw_dc",
                                 fix="give the array's DC nameplate in kW, or remove the "
                                 "array")
        if not (-90 <= self.latitude <= 90 and -180 <= self.longitude <= 180):
            raise InputError(f"({self.latitude}, {self.longitude}) is not a place on Earth",
                             where="[site] latitude/longitude",
                             fix="give decimal degrees, north and east positive")
        if self.step_s not in (300, 900, 1800, 3600):
            raise InputError(f"step of {self.step_s} s", where="forecast step",
                             fix="use 300, 900, 1800 or 3600 s")
        if not 1 <= self.hours <= 7 * 24:
            raise InputError(f"a horizon of {self.hours} h", where="forecast hours",
                             fix="ask for 1 to 168 hours (48-72 h is what providers give)")
        try:
            ZoneInfo(self.timezone)
        except Exception:
            raise InputError(f"unknown time zone {self.timezone!r}", where="[site] timezone",
                             fix="use an IANA name such as 'America/Los_Angeles'") from None
        object.__setattr__(self, "arrays", tuple(self.arrays))
        object.__setattr__(self, "start_utc",
                           int(self.start_utc) // self.step_s * self.step_s)

    @property
    def n_steps(self) -> int:
        return self.hours * 3600 // self.step_s

    @property
    def starts_utc(self) -> np.ndarray:
        """Step starts, UTC epoch seconds."""
        return self.start_utc + self.step_s * np.arange(self.n_steps, dtype=np.int64)

    @property
    def end_utc(self) -> int:
        return self.start_utc + self.n_steps * self.step_s

    def site_key(self, *extra: object) -> str:
        """A short digest of what makes a provider's answer specific to this site."""
        import hashlib

        body = json.dumps([round(self.latitude, 4), round(self.longitude, 4),
                           [a.model_dump() if hasattr(a, "model_dump") else repr(a)
                            for a in self.arrays], list(extra)], sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class ProviderOutput:
    """A provider's forecast on the request grid: kWh per array and step (shape
    ``(len(arrays), n_steps)``), NaN where the provider said nothing; P10/P90 when given."""

    p50: np.ndarray
    p10: np.ndarray | None = None
    p90: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    # after a fresh fetch: do not call again before this UTC second (the provider said so)
    retry_at: float | None = None


@dataclass(frozen=True)
class Limits:
    """How often a provider may be called.

    ``calls`` HTTP requests per ``window_s`` (a sliding window); no refetch sooner than
    ``min_refresh_s`` after the last good fetch; a cached answer up to ``max_stale_s`` old
    is used when a refresh fails; ``attempts`` per request (1 + retries)."""

    calls: int
    window_s: float
    min_refresh_s: float
    max_stale_s: float
    attempts: int = 3


class Provider(Protocol):
    """A solar forecast source. Remote providers fetch text (cached by the forecaster, keyed by
    ``cache_key``) and parse it; local ones (``remote = False``) compute in ``parse``."""

    name: str
    remote: bool

    def missing(self) -> str | None:
        """What configuration is missing (an API key, a site id), or None."""

    def limits(self, req: ForecastRequest) -> Limits: ...

    def calls_needed(self, req: ForecastRequest) -> int: ...

    def cache_key(self, req: ForecastRequest) -> str: ...

    def fetch(self, req: ForecastRequest, http: Http,
              on_attempt: Callable[[], None] | None) -> tuple[str, float | None]:
        """The raw payload to cache, and a UTC second before which not to call again (or
        None). ``on_attempt`` goes to every :meth:`Http.get_json` (the call budget). Raises
        :class:`ProviderError`."""

    def parse(self, payload: str, req: ForecastRequest) -> ProviderOutput:
        """The payload on the request's grid. Raises :class:`ProviderError` (MALFORMED)."""


# ---------------------------------------------------------------------------------- HTTP


def retry_after(value: str | None, now: float) -> float | None:
    """The UTC second a ``Retry-After`` header (seconds, or an HTTP date) points to."""
    if not value:
        return None
    value = value.strip()
    try:
        return now + max(0.0, float(value))
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class Http:
    """GET JSON with a timeout on every request, bounded retries with exponential backoff on
    no answer and HTTP 5xx, and no retry on 429 (the caller backs off until ``retry_at``).

    ``sleep`` and ``clock`` are injectable so tests neither wait nor depend on the time. API keys
    passed in ``secrets`` never appear in error messages."""

    def __init__(self, session: requests.Session | None = None, *,
                 timeout: tuple[float, float] = (5.0, 20.0), backoff_s: float = 2.0,
                 max_wait_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time,
                 user_agent: str = "trueup (Powerwall dispatch; solar forecast)") -> None:
        self.session = session or requests.Session()
        self.timeout = timeout
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.clock = clock
        self.user_agent = user_agent

    def get_json(self, url: str, *, params: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, attempts: int = 3,
                 secrets: Sequence[str] = (),
                 on_attempt: Callable[[], None] | None = None,
                 rate_limit_hint: Callable[[requests.Response], float | None] | None = None,
                 ) -> tuple[Any, str]:
        """(decoded JSON, response text) of a 2xx answer; raises :class:`ProviderError`.

        ``on_attempt`` is called before every request (the call budget; it may raise).
        ``rate_limit_hint`` reads a provider-specific retry time from a 429 answer."""

        def hide(text: str) -> str:
            for s in secrets:
                if s:
                    text = text.replace(s, "***")
            return text

        hdrs = {"Accept": "application/json", "User-Agent": self.user_agent, **(headers or {})}
        last: ProviderError | None = None
        for attempt in range(max(1, attempts)):
            if attempt:
                self.sleep(min(self.max_wait_s, self.backoff_s * 2 ** (attempt - 1)))
            if on_attempt is not None:
                on_attempt()
            try:
                r = self.session.get(url, params=params, headers=hdrs, timeout=self.timeout)
            except requests.Timeout:
                last = ProviderError(Reason.DOWN, f"no answer within {self.timeout[1]:g} s")
                continue
            except requests.ConnectionError as e:
                last = ProviderError(Reason.DOWN, hide(f"cannot connect: {_short(e)}"))
                continue
            except requests.RequestException as e:
                raise ProviderError(Reason.DOWN, hide(f"request failed: {_short(e)}")) \
                    from None
            now = self.clock()
            if r.status_code == 429:
                at = (rate_limit_hint(r) if rate_limit_hint else None) or \
                    retry_after(r.headers.get("Retry-After"), now) or now + 3600.0
                raise ProviderError(Reason.RATE_LIMITED,
                                    hide(f"HTTP 429 ({_body_message(r)}); next try after "
                                         f"{_iso(at)}"), retry_at=at)
            if r.status_code >= 500:
                last = ProviderError(Reason.DOWN, hide(f"HTTP {r.status_code} "
                                                       f"({_body_message(r)})"))
                wait = retry_after(r.headers.get("Retry-After"), now)
                if wait is not None and wait - now > self.max_wait_s:
                    last.retry_at = wait
                    break
                continue
            if r.status_code in (401, 403):
                raise ProviderError(Reason.REJECTED,
                                    hide(f"HTTP {r.status_code}: the API key was refused "
                                         f"({_body_message(r)})"))
            if r.status_code >= 400:
                raise ProviderError(Reason.REJECTED,
                                    hide(f"HTTP {r.status_code}: the request was refused "
                                         f"({_body_message(r)})"))
            try:
                return r.json(), r.text
            except ValueError:
                raise ProviderError(Reason.MALFORMED,
                                    f"HTTP {r.status_code} but not JSON: {r.text[:80]!r}") \
                    from None
        assert last is not None
        raise ProviderError(last.reason, f"{last.detail} after {attempts} attempt(s)",
                            retry_at=last.retry_at)


def _short(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) < 160 else text[:157] + "..."


def _body_message(r: requests.Response) -> str:
    """A provider's error text, from the shapes providers use, else the start of the body."""
    try:
        data = r.json()
    except ValueError:
        return (r.text or r.reason or "no body")[:120].strip()
    if isinstance(data, dict):
        for path in (("message", "text"), ("response_status", "message"), ("reason",),
                     ("message",), ("error",)):
            v: Any = data
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, str) and v:
                return v[:160]
    return json.dumps(data)[:120]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%MZ")


# -------------------------------------------------------------------------------- times


def parse_times(values: Sequence[Any], tz: str | None, *, what: str) -> np.ndarray:
    """UTC epoch seconds of timestamps as providers send them: ISO 8601 with an offset or
    ``Z``; naive local wall-clock times in zone ``tz``; or epoch seconds. Raises MALFORMED
    for unreadable or non-existent times, and for naive times without a zone."""
    zone = ZoneInfo(tz) if tz else None
    out = np.empty(len(values), dtype=np.int64)
    prev: int | None = None
    for i, v in enumerate(values):
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[i] = prev = int(v)
            continue
        if not isinstance(v, str):
            raise ProviderError(Reason.MALFORMED, f"{what}: timestamp {v!r} is not a time")
        try:
            dt = datetime.fromisoformat(v.strip())
        except ValueError:
            raise ProviderError(Reason.MALFORMED, f"{what}: cannot read time {v!r}") from None
        if dt.tzinfo is not None:
            out[i] = prev = int(dt.timestamp())
            continue
        if zone is None:
            raise ProviderError(Reason.MALFORMED,
                                f"{what}: time {v!r} has no UTC offset and no zone is given")
        early = int(dt.replace(tzinfo=zone, fold=0).timestamp())
        late = int(dt.replace(tzinfo=zone, fold=1).timestamp())
        back = datetime.fromtimestamp(early, zone).replace(tzinfo=None)
        if back != dt and datetime.fromtimestamp(late, zone).replace(tzinfo=None) != dt:
            raise ProviderError(Reason.MALFORMED,
                                f"{what}: local time {v!r} does not exist in {tz} (the "
                                "clocks skip it)")
        # a repeated hour (DST ends): the first pass is the earlier offset, the second the later
        out[i] = prev = late if (early != late and prev is not None and early <= prev) \
            else early
    return out


# ----------------------------------------------------------------------------- the grid


def intervals_to_grid(ends_utc: np.ndarray, period_s: np.ndarray, kw: np.ndarray,
                      grid_starts: np.ndarray, step_s: int) -> np.ndarray:
    """kWh per grid step from interval-average power: interval ``i`` covers
    ``[ends_utc[i] - period_s[i], ends_utc[i])`` at ``kw[i]`` kW (shape (n,) or (n, k); NaN =
    missing). A step not fully covered by valid intervals is NaN."""
    kw = np.asarray(kw, dtype=float)
    flat = kw.ndim == 1
    kw2 = kw[:, None] if flat else kw
    ends = np.asarray(ends_utc, dtype=np.int64)
    starts = ends - np.asarray(period_s, dtype=np.int64)
    gs = np.asarray(grid_starts, dtype=np.int64)
    ge = gs + step_s
    valid = np.isfinite(kw2).all(axis=1)
    overlap = np.clip(np.minimum(ge[:, None], ends[None, valid]) -
                      np.maximum(gs[:, None], starts[None, valid]), 0, None).astype(float)
    energy = overlap @ kw2[valid] / 3600.0
    covered = overlap.sum(axis=1)
    energy[covered < step_s - 1] = np.nan
    return energy[:, 0] if flat else energy


def samples_to_grid(times_utc: np.ndarray, kw: np.ndarray, grid_starts: np.ndarray,
                    step_s: int, *, sub_s: int = 60) -> np.ndarray:
    """kWh per grid step from instantaneous power samples (kW at ``times_utc``), linear
    between samples (the trapezoid rule the providers use for their own energies). Steps
    not inside the sampled span are NaN."""
    t = np.asarray(times_utc, dtype=np.int64)
    p = np.asarray(kw, dtype=float)
    ok = np.isfinite(p)
    t, p = t[ok], p[ok]
    gs = np.asarray(grid_starts, dtype=np.int64)
    if t.size < 2:
        return np.full(gs.shape, np.nan)
    order = np.argsort(t, kind="stable")
    t, p = t[order], p[order]
    offsets = np.arange(sub_s // 2, step_s, sub_s)
    probe = gs[:, None] + offsets[None, :]
    kw_at = np.interp(probe, t, p, left=np.nan, right=np.nan)
    inside = (gs >= t[0]) & (gs + step_s <= t[-1])
    out = kw_at.mean(axis=1) * step_s / 3600.0
    out[~inside] = np.nan
    return out


def check_energy(kwh: np.ndarray, arrays: Sequence[PVArray], step_s: int, *,
                 what: str) -> None:
    """Refuse negative energies and energies no array of this size can make (a unit error:
    W read as kW). ``kwh`` is (len(arrays), n_steps); NaN is allowed (no data)."""
    finite = np.where(np.isfinite(kwh), kwh, 0.0)
    if (finite < -1e-6).any():
        raise ProviderError(Reason.MALFORMED, f"{what}: negative energy in the answer")
    cap = np.array([a.kw_dc for a in arrays])[:, None] * 1.5 * step_s / 3600.0
    over = finite > cap
    if over.any():
        i, j = np.argwhere(over)[0]
        raise ProviderError(Reason.MALFORMED,
                            f"{what}: {finite[i, j] * 3600 / step_s:,.1f} kW for an array of "
                            f"{arrays[i].kw_dc:g} kW DC (a unit error?)")
