"""Gateway readings → metered intervals: a sequence of :class:`SiteState` becomes
:class:`~optimizer.intervals.IntervalData` (kWh per fixed, UTC-aligned interval).

Where the readings carry **lifetime counters** (Wh; the gateway's local/TEDAPI modes) each
counter's delta between two consecutive readings that have it is spread over the interval(s)
the span covers, pro rata in time: ``grid_import_wh``/``grid_export_wh`` → import/export,
``home_wh`` → load, ``solar_wh`` → PV, ``battery_export_wh − battery_import_wh`` → battery
(+ discharging). Counters capture flow reversals inside a span; sampled power does not, so
they are preferred. Counters from ``cloud``/``fleetapi`` readings are ignored: pypowerwall
reports zeros there, not counters (docs/powerwall.md, 'Energy counters').

Where no counter span covers the time, **power** readings (W) are integrated: the trapezoid of
the straight line between two consecutive readings, split exactly at its zero crossing into
its positive part (import, discharge) and negative part (export, charge). Intervals that hold
any such energy for import or export are marked ``estimated``.

Nothing is invented:

* ``None`` (unknown) readings are skipped, never read as 0: the span is bridged from the
  previous known value of that field to the next.
* Two readings of a field further apart than ``max_gap_s`` bound no span: that time is not
  covered, with a note (the energy a counter gained across it is reported, not assigned).
* A counter that goes down (a reset, e.g. after a gateway replacement) drops that one delta,
  with a note; a delta implying more than ``max_power_kw`` on average (a counter jump) too.
  Power readings then fill that span as an estimate, if there are any.
* An interval no span touches is absent from the result; one only partly touched holds the
  energy of its covered part, and ``coverage`` says how much of it was covered. Load, PV and
  battery are NaN in an interval where they cover less than import/export do.

Metering topology (docs/billing-rules.md, 'Metering topology'). The gateway's site CTs measure
the grid flow at the service entrance directly — its signed ``grid_w`` *is* import/export — so
for gateway data the backfed/line-side distinction (which matters for eGauge-style CTs on the
main feed) is normally moot: ``topology="backfed"``, the default. Use ``"line_side_tap"`` for a
site whose PV is tapped ahead of the gateway's site meter, so that meter sees consumption only:
then per interval ``import = max(site − solar, 0)`` and ``export = max(solar − site, 0)``, with
``site`` from ``grid_import_wh`` (or the positive part of ``grid_w``) and ``solar`` from
``solar_wh`` (or ``solar_w``). The site configuration's ``metering_topology`` is the value to
pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Literal

import numpy as np

from adapters.gateway.base import SiteState
from optimizer.errors import InputError
from optimizer.intervals import IntervalData

Topology = Literal["backfed", "line_side_tap"]

COUNTERLESS_SOURCES = frozenset({"cloud", "fleetapi"})
DEFAULT_MAX_GAP_S = 900.0

Part = Literal["pos", "neg"]

# quantity → (counter field, power field, part of the power that is this quantity)
_QUANTITIES: dict[str, tuple[str, str, Part]] = {
    "import": ("grid_import_wh", "grid_w", "pos"),
    "export": ("grid_export_wh", "grid_w", "neg"),
    "load": ("home_wh", "home_w", "pos"),
    "pv": ("solar_wh", "solar_w", "pos"),
    "discharge": ("battery_export_wh", "battery_w", "pos"),
    "charge": ("battery_import_wh", "battery_w", "neg"),
}


@dataclass(frozen=True)
class Telemetry:
    """Intervals from gateway readings.

    Attributes:
        data: the intervals (only those with some coverage; gaps are simply absent).
        estimated: bool per interval: its import or export came at least partly from
            integrating power rather than from counters.
        coverage: float per interval, 0–1: the share of the interval that import and export
            spans cover (1 = complete; less = the values hold only the covered part).
        notes: resets, jumps, gaps and ignored counters, one sentence each (also in
            ``data.notes``).
    """

    data: IntervalData
    estimated: np.ndarray
    coverage: np.ndarray
    notes: tuple[str, ...]

    @property
    def complete(self) -> np.ndarray:
        """bool per interval: fully covered."""
        return self.coverage >= 1.0 - 1e-9


def readings_to_intervals(
    readings: Iterable[SiteState],
    interval_s: int = 300,
    *,
    max_gap_s: float | None = None,
    topology: Topology = "backfed",
    max_power_kw: float = 100.0,
    source: str = "gateway telemetry",
) -> Telemetry:
    """Turn gateway readings into kWh per ``interval_s`` interval (see the module doc).

    Args:
        readings: :class:`SiteState` reads, any order (sorted by ``timestamp`` here).
        interval_s: the interval, seconds (300, 900, 3600 ...); intervals start on UTC
            multiples of it.
        max_gap_s: the longest span between two readings of a field that still counts as
            covered; default 900 s, whatever the interval.
        topology: ``"backfed"`` (gateway CTs; default) or ``"line_side_tap"``.
        max_power_kw: a counter delta implying more than this average power is a jump, not
            energy, and is dropped.
        source: a name for the data, for messages.

    Returns:
        :class:`Telemetry`.
    """
    if isinstance(interval_s, bool) or int(interval_s) != interval_s or interval_s <= 0:
        raise InputError(f"interval_s {interval_s!r} must be a whole number of seconds > 0",
                         where="readings_to_intervals(interval_s)")
    if topology not in ("backfed", "line_side_tap"):
        raise InputError(f"topology {topology!r} must be 'backfed' or 'line_side_tap'",
                         where="readings_to_intervals(topology)")
    interval_s = int(interval_s)
    # a fixed default: the same two readings must not count as a gap at one interval
    # length and as covered at another
    gap = float(DEFAULT_MAX_GAP_S if max_gap_s is None else max_gap_s)
    rs = sorted((r for r in readings if r.timestamp is not None and math.isfinite(r.timestamp)),
                key=lambda r: r.timestamp)
    notes = _Notes(gap)
    if len(rs) < 2:
        return _empty(interval_s, source, notes.text())
    if any(r.source in COUNTERLESS_SOURCES and r.grid_import_wh is not None for r in rs):
        notes.add("counters from cloud/FleetAPI readings were ignored (those paths report "
                  "zeros, not lifetime counters); their power was integrated instead")

    base = math.floor(rs[0].timestamp / interval_s) * interval_s
    n = math.ceil((rs[-1].timestamp - base) / interval_s) or 1
    grid = _Grid(base, interval_s, n)
    acc = {q: _quantity(rs, q, grid, gap, max_power_kw * 1000.0, notes) for q in _QUANTITIES}

    if topology == "backfed":
        imp, exp = acc["import"], acc["export"]
        cov_s = np.minimum(imp.cov_s, exp.cov_s)
        import_kwh, export_kwh = imp.kwh, exp.kwh
        est = (imp.est_s > 0) | (exp.est_s > 0)
    else:
        site, pv = acc["import"], acc["pv"]
        cov_s = np.minimum(site.cov_s, pv.cov_s)
        import_kwh = np.maximum(site.kwh - pv.kwh, 0.0)
        export_kwh = np.maximum(pv.kwh - site.kwh, 0.0)
        est = (site.est_s > 0) | (pv.est_s > 0)

    keep = cov_s > 0

    def known(*qs: _Acc) -> np.ndarray:
        """Intervals where these quantities cover at least what import/export cover."""
        return np.all([q.cov_s >= cov_s - 1e-6 for q in qs], axis=0)

    def series(values: np.ndarray, *qs: _Acc) -> np.ndarray | None:
        """The kept intervals' values, NaN where not known; None if never known."""
        if not any(q.cov_s[keep].any() for q in qs):
            return None
        return np.where(known(*qs), values, np.nan)[keep]

    note_text = notes.text()
    data = IntervalData(
        start_utc=(base + interval_s * np.arange(n, dtype=np.int64))[keep],
        interval_s=interval_s,
        import_kwh=import_kwh[keep],
        export_kwh=export_kwh[keep],
        load_kwh=series(acc["load"].kwh, acc["load"]),
        pv_kwh=series(acc["pv"].kwh, acc["pv"]),
        battery_kwh=series(acc["discharge"].kwh - acc["charge"].kwh, acc["discharge"],
                           acc["charge"]),
        source=source,
        notes=note_text,
    )
    return Telemetry(data=data, estimated=est[keep],
                     coverage=np.minimum(cov_s[keep] / interval_s, 1.0), notes=note_text)


# --------------------------------------------------------------------------------------
# internals


@dataclass
class _Acc:
    """One quantity per interval: kWh, seconds covered, seconds covered by power estimates."""

    kwh: np.ndarray
    cov_s: np.ndarray
    est_s: np.ndarray


class _Grid:
    def __init__(self, base: int, interval_s: int, n: int) -> None:
        self.base, self.interval_s, self.n = base, interval_s, n

    def pieces(self, a: float, b: float):
        """(interval index, piece start, piece end) for [a, b)."""
        i = self.interval_s
        k = max(int((a - self.base) // i), 0)
        while k < self.n:
            ks = self.base + k * i
            if ks >= b:
                break
            x0, x1 = max(a, ks), min(b, ks + i)
            if x1 > x0:
                yield k, x0, x1
            k += 1


class _Notes:
    def __init__(self, max_gap: float) -> None:
        self.max_gap = max_gap
        self._spans: dict[tuple[str, float, float], list[str]] = {}
        self._plain: list[str] = []

    def add(self, text: str) -> None:
        if text not in self._plain:
            self._plain.append(text)

    def span(self, kind: str, t0: float, t1: float, what: str) -> None:
        self._spans.setdefault((kind, t0, t1), []).append(what)

    def text(self) -> tuple[str, ...]:
        out = list(self._plain)
        for (kind, t0, t1), whats in sorted(self._spans.items(), key=lambda kv: kv[0][1:]):
            span = f"{_utc(t0)} → {_utc(t1)} ({_duration(t1 - t0)})"
            if kind == "gap":
                out.append(f"readings {span} apart, more than the {_duration(self.max_gap)} "
                           f"gap limit: not bridged ({'; '.join(whats)})")
            elif kind == "reset":
                out.append(f"counter reset {span} (e.g. a gateway replacement): that delta "
                           f"was dropped, power readings fill the span as an estimate where "
                           f"there are any ({'; '.join(whats)})")
            else:
                out.append(f"counter jump {span}: that delta was dropped "
                           f"({'; '.join(whats)})")
        return tuple(out)


def _quantity(rs: list[SiteState], q: str, grid: _Grid, max_gap: float, max_power_w: float,
              notes: _Notes) -> _Acc:
    counter, power, part = _QUANTITIES[q]
    acc = _Acc(np.zeros(grid.n), np.zeros(grid.n), np.zeros(grid.n))

    # 1. counters: consecutive readings that have the counter
    pts = [(r.timestamp, v) for r in rs
           if (v := getattr(r, counter)) is not None and r.source not in COUNTERLESS_SOURCES]
    covered: list[tuple[float, float]] = []
    for (t0, c0), (t1, c1) in pairwise(pts):
        dt, d = t1 - t0, c1 - c0
        if dt <= 0:
            continue
        if dt > max_gap:
            notes.span("gap", t0, t1,
                       f"{counter} gained {d / 1000:.3f} kWh there, not assigned")
            continue
        if d < 0:
            notes.span("reset", t0, t1, f"{counter} {c0:.0f} → {c1:.0f} Wh")
            continue
        if d / dt * 3600.0 > max_power_w:
            notes.span("jump", t0, t1, f"{counter} +{d:.0f} Wh in {_duration(dt)}")
            continue
        for k, x0, x1 in grid.pieces(t0, t1):
            acc.kwh[k] += d / 1000.0 * (x1 - x0) / dt
            acc.cov_s[k] += x1 - x0
        covered.append((t0, t1))

    # 2. power: the trapezoid over time no counter span covers
    pw = [(r.timestamp, v) for r in rs if (v := getattr(r, power)) is not None]
    same = set(covered)  # the common case: counters and power from the same readings
    for (t0, p0), (t1, p1) in pairwise(pw):
        dt = t1 - t0
        if dt <= 0 or (t0, t1) in same:
            continue
        if dt > max_gap:
            if _uncovered(t0, t1, covered):
                notes.span("gap", t0, t1, f"{power} not integrated")
            continue
        for a, b in _uncovered(t0, t1, covered):
            for k, x0, x1 in grid.pieces(a, b):
                acc.kwh[k] += _linear_part(t0, p0, t1, p1, x0, x1, part) / 1000.0
                acc.cov_s[k] += x1 - x0
                acc.est_s[k] += x1 - x0
    return acc


def _uncovered(a: float, b: float, covered: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts of [a, b) outside the sorted, non-overlapping spans ``covered``."""
    out, t = [], a
    lo = _first_ending_after(covered, a)
    for s, e in covered[lo:]:
        if s >= b:
            break
        if s > t:
            out.append((t, s))
        t = max(t, e)
        if t >= b:
            break
    if t < b:
        out.append((t, b))
    return out


def _first_ending_after(spans: list[tuple[float, float]], t: float) -> int:
    lo, hi = 0, len(spans)
    while lo < hi:
        mid = (lo + hi) // 2
        if spans[mid][1] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _linear_part(t0: float, p0: float, t1: float, p1: float, a: float, b: float,
                 part: Part) -> float:
    """Wh of the positive (or negative) part of the line through (t0, p0), (t1, p1) W over
    [a, b] s: the trapezoid, cut exactly where the line crosses zero."""
    slope = (p1 - p0) / (t1 - t0)
    sign = 1.0 if part == "pos" else -1.0
    qa, qb = sign * (p0 + slope * (a - t0)), sign * (p0 + slope * (b - t0))
    w = b - a
    if qa >= 0 and qb >= 0:
        area = (qa + qb) / 2.0 * w
    elif qa <= 0 and qb <= 0:
        area = 0.0
    else:
        tc = w * qa / (qa - qb)  # from a to the zero crossing
        area = qa * tc / 2.0 if qa > 0 else qb * (w - tc) / 2.0
    return area / 3600.0


def _empty(interval_s: int, source: str, notes: tuple[str, ...]) -> Telemetry:
    e = np.zeros(0)
    data = IntervalData(start_utc=np.zeros(0, dtype=np.int64), interval_s=interval_s,
                        import_kwh=e, export_kwh=e.copy(), source=source, notes=notes)
    return Telemetry(data=data, estimated=np.zeros(0, dtype=bool), coverage=e.copy(),
                     notes=notes)


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(s: float) -> str:
    s = round(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return " ".join(p for p in (f"{h} h" if h else "", f"{m} min" if m else "",
                                f"{sec} s" if sec or not (h or m) else "") if p)
