"""The domain types the store keeps, to and from JSON text.

Stored JSON is plain (strings, numbers, booleans, lists, objects) so that a newer or older
trueup — or ``sqlite3`` on the command line — can read it. Enum members are stored by their
value (pypowerwall's strings).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np

from adapters.gateway.base import ApplyResult, CurrentSettings, SiteState
from optimizer.behaviour import ExportRule, Mode, Settings
from optimizer.billing import BillingState


def dumps(value: Any) -> str:
    """Compact JSON; NaN and infinities become null (JSON has neither)."""
    return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    if isinstance(v, np.ndarray | np.generic):
        return _finite(v.tolist())
    return v


def settings_to_json(s: Settings | None) -> dict | None:
    if s is None:
        return None
    return {"mode": str(s.mode), "reserve_percent": float(s.reserve_percent),
            "grid_charging": bool(s.grid_charging), "export_rule": str(s.export_rule)}


def settings_from_json(d: dict | None) -> Settings | None:
    if d is None:
        return None
    return Settings(Mode(d["mode"]), float(d["reserve_percent"]), bool(d["grid_charging"]),
                    ExportRule(d["export_rule"]))


def apply_result_to_row(r: ApplyResult) -> tuple:
    """(requested, applied, written, verified, skipped, errors, notes, api_calls) for the
    writes table."""
    return (dumps(settings_to_json(r.requested)), _opt(settings_to_json(r.applied)),
            dumps(list(r.written)), int(bool(r.verified)), r.skipped, dumps(list(r.errors)),
            dumps(list(r.notes)), r.api_calls)


def apply_result_from_row(requested: str, applied: str | None, written: str, verified: int,
                          skipped: str | None, errors: str, notes: str,
                          api_calls: int | None = None) -> ApplyResult:
    return ApplyResult(
        requested=settings_from_json(json.loads(requested)),  # type: ignore[arg-type]
        applied=settings_from_json(json.loads(applied)) if applied else None,
        written=tuple(json.loads(written)), verified=bool(verified), skipped=skipped,
        errors=tuple(json.loads(errors)), notes=tuple(json.loads(notes)),
        api_calls=api_calls)


def _opt(d: dict | None) -> str | None:
    return None if d is None else dumps(d)


#: SiteState's numeric and text fields, in the readings table's column order.
READING_FIELDS = ("soc_percent", "solar_w", "home_w", "battery_w", "grid_w", "grid_status",
                  "grid_import_wh", "grid_export_wh", "solar_wh", "home_wh",
                  "battery_import_wh", "battery_export_wh")


def reading_to_row(s: SiteState) -> tuple:
    cs = s.settings
    settings = {"mode": None if cs.mode is None else str(cs.mode),
                "reserve_percent": cs.reserve_percent, "grid_charging": cs.grid_charging,
                "export_rule": None if cs.export_rule is None else str(cs.export_rule)}
    vals = tuple(_num_or_text(getattr(s, f)) for f in READING_FIELDS)
    return (float(s.timestamp), s.source, *vals, dumps(settings), dumps(dict(s.unknown)))


def _num_or_text(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    f = float(v)
    return f if math.isfinite(f) else None


def reading_from_row(row: tuple) -> SiteState:
    t, source, *vals, settings, unknown = row
    cs = json.loads(settings)
    current = CurrentSettings(
        mode=None if cs.get("mode") is None else Mode(cs["mode"]),
        reserve_percent=cs.get("reserve_percent"), grid_charging=cs.get("grid_charging"),
        export_rule=None if cs.get("export_rule") is None else ExportRule(cs["export_rule"]))
    return SiteState(timestamp=t, source=source, **dict(zip(READING_FIELDS, vals, strict=True)),
                     settings=current, unknown=json.loads(unknown))


def billing_state_from_json(d: dict) -> BillingState | None:
    """A stored snapshot back as a BillingState; None when its fields no longer match (a
    snapshot is derived data: recompute it from the intervals)."""
    names = {f.name for f in dataclasses.fields(BillingState)}
    if not names <= d.keys():
        return None
    return BillingState(**{k: d[k] for k in names})
