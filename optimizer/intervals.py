"""Interval energy data: the one in-memory shape every module passes around.

Energies are kWh per interval (never kW). Timestamps are interval *starts* as UTC epoch
seconds (int64); local time is derived with :mod:`optimizer.localtime` when billing.
Import and export are gross meter register quantities for the interval: both may be
non-zero in one interval (docs/billing-rules.md, 'Gross flows, not net').
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class IntervalData:
    """A regular series of metered intervals.

    Attributes:
        start_utc: interval starts, UTC epoch seconds (int64), strictly increasing by
            ``interval_s``.
        interval_s: the fixed interval length in seconds (300, 900, 3600 ...).
        import_kwh: gross energy imported from the grid per interval, kWh (≥ 0).
        export_kwh: gross energy exported to the grid per interval, kWh (≥ 0).
        load_kwh: home consumption per interval, kWh, when known.
        pv_kwh: solar production per interval, kWh, when known.
        battery_kwh: battery energy per interval, kWh, positive = discharging, when known.
        source: where the data came from (a file name), for messages.
        notes: warnings accumulated while reading (gaps accepted with --allow-gaps ...).
    """

    start_utc: np.ndarray
    interval_s: int
    import_kwh: np.ndarray
    export_kwh: np.ndarray
    load_kwh: np.ndarray | None = None
    pv_kwh: np.ndarray | None = None
    battery_kwh: np.ndarray | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        n = len(self.start_utc)
        for name in ("import_kwh", "export_kwh", "load_kwh", "pv_kwh", "battery_kwh"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} values, start_utc has {n}")
        if self.interval_s <= 0:
            raise ValueError("interval_s must be positive")

    def __len__(self) -> int:
        return len(self.start_utc)

    @property
    def end_utc(self) -> int:
        """End of the last interval, UTC epoch seconds (exclusive)."""
        return int(self.start_utc[-1]) + self.interval_s if len(self) else 0

    @classmethod
    def regular(
        cls,
        start_utc: int,
        interval_s: int,
        import_kwh,
        export_kwh,
        *,
        load_kwh=None,
        pv_kwh=None,
        battery_kwh=None,
        source: str = "",
    ) -> IntervalData:
        """Build a gap-free series from a first start and arrays of kWh."""
        imp = np.asarray(import_kwh, dtype=float)
        starts = int(start_utc) + interval_s * np.arange(len(imp), dtype=np.int64)

        def opt(a):
            return None if a is None else np.asarray(a, dtype=float)

        return cls(
            start_utc=starts,
            interval_s=int(interval_s),
            import_kwh=imp,
            export_kwh=np.asarray(export_kwh, dtype=float),
            load_kwh=opt(load_kwh),
            pv_kwh=opt(pv_kwh),
            battery_kwh=opt(battery_kwh),
            source=source,
        )

    def select(self, mask: np.ndarray) -> IntervalData:
        """The intervals where ``mask`` is true (same interval length)."""

        def pick(a):
            return None if a is None else a[mask]

        return IntervalData(
            start_utc=self.start_utc[mask],
            interval_s=self.interval_s,
            import_kwh=self.import_kwh[mask],
            export_kwh=self.export_kwh[mask],
            load_kwh=pick(self.load_kwh),
            pv_kwh=pick(self.pv_kwh),
            battery_kwh=pick(self.battery_kwh),
            source=self.source,
            notes=self.notes,
        )
