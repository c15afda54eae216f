"""Read metered interval data (usage CSVs) into :class:`optimizer.intervals.IntervalData`.

Four formats (README, "Interval data formats"; docs/billing-rules.md, 'Interval data';
docs/formats.md):

- **trueup interval CSV** (:func:`read_interval_csv`): ``timestamp,import_kwh,export_kwh`` and
  optional ``load_kwh,pv_kwh,battery_kwh``; ISO 8601 interval starts with a UTC offset.
- **PG&E Green Button "Download my data"** (:func:`read_green_button_csv`): local wall-clock
  times, a preamble, ``IMPORT (kWh)``/``EXPORT (kWh)`` or a single ``USAGE (kWh)`` column.
- **CT-register exports** (:func:`read_ct_register_csv`, eGauge-style): a Grid and a Solar
  register, turned into meter import/export by the site's metering topology.
- **Tesla app energy export** (:func:`read_tesla_app_csv`): the Day view's 5-minute average
  power ``Date time,Home (kW),Solar (kW),Powerwall (kW),Grid (kW)``, converted to kWh; the
  Week/Month/Year views' daily or monthly kWh totals are refused for billing.

Every reader returns kWh per interval (never kW) with interval starts as UTC epoch seconds,
one fixed interval length, and warnings in ``notes``. Bad input raises
:class:`optimizer.errors.UsageError` saying what is wrong, where (``file:line``) and how to fix
it; several row problems (up to :data:`MAX_PROBLEMS`) are reported at once, and the raised error
carries them all in its ``problems`` attribute as ``(where, what, fix)`` tuples. Nothing is
filled in or zeroed: a missing interval is an error, or with ``allow_gaps=True`` a note with an
*estimate* of the kWh it held (never billed, never added to the data).

:func:`renet` aggregates to a coarser interval; :func:`coverage_gaps` lists missing spans;
:func:`read_usage` sniffs the format and dispatches.

Modules: :mod:`.interval_csv`, :mod:`.green_button`, :mod:`.ct_registers`, :mod:`.tesla_app`
(one reader each),
:mod:`.resample` (renet, coverage_gaps); shared by the readers: :mod:`._csv_input` (text, rows,
numbers), :mod:`._times` (zones, local → UTC), :mod:`._problems` (collecting row errors),
:mod:`._assemble` (sequence and gap checks, building IntervalData). This module sniffs the
format and dispatches.
"""

from __future__ import annotations

from adapters.usage import ct_registers, green_button, tesla_app
from adapters.usage._csv_input import PathLike, csv_rows, read_text
from adapters.usage._problems import MAX_PROBLEMS, fail
from adapters.usage.ct_registers import Topology, read_ct_register_csv
from adapters.usage.green_button import read_green_button_csv
from adapters.usage.interval_csv import read_interval_csv
from adapters.usage.resample import coverage_gaps, renet
from adapters.usage.tesla_app import read_tesla_app_csv
from optimizer.intervals import IntervalData

__all__ = [
    "FORMATS",
    "MAX_PROBLEMS",
    "coverage_gaps",
    "read_ct_register_csv",
    "read_green_button_csv",
    "read_interval_csv",
    "read_tesla_app_csv",
    "read_usage",
    "renet",
    "sniff_format",
]

#: Format names accepted by :func:`read_usage` (``"auto"`` sniffs one of these).
FORMATS = ("interval", "green_button", "ct_register", "tesla_app")
_FORMAT_ALIASES = {
    "csv": "interval",
    "trueup": "interval",
    "greenbutton": "green_button",
    "ct": "ct_register",
    "tesla": "tesla_app",
}


def sniff_format(path: PathLike) -> str:
    """Which of :data:`FORMATS` a file is, from its header (the first non-blank rows)."""
    src = str(path)
    text = read_text(path)  # the same file errors as the readers (missing, not UTF-8)
    head = text[:65536]
    if len(text) > len(head) and "\n" in head:
        head = head[: head.rindex("\n")]  # whole lines only
    for n, (line, cells) in enumerate(csv_rows(head, src)):
        names = [c.strip().lower() for c in cells]
        if green_button.header_columns(cells) is not None or (
            names and names[0] in green_button.PREAMBLE_KEYS
        ):
            return "green_button"
        if n == 0:
            if "import_kwh" in names:
                return "interval"
            if tesla_app.header_columns(cells) is not None:
                return "tesla_app"
            ct = ct_registers.register_columns(cells)
            if "grid" in ct and "solar" in ct:
                return "ct_register"
            raise fail(
                f"cannot tell the file's format from its header {cells[:8]}",
                f"{src}:{line}",
                "use timestamp,import_kwh,export_kwh (trueup), a PG&E Green Button "
                "download, a CT export with Grid and Solar columns, or the Tesla app's Day "
                f"export ({tesla_app.DAY_HEADER}); or name the "
                f"format with --format (fmt=) one of {list(FORMATS)}",
            )
    raise fail("the file is empty", src, "give a usage CSV with a header and data rows")


def read_usage(
    path: PathLike,
    *,
    fmt: str = "auto",
    tz: str | None = None,
    topology: Topology | None = None,
    allow_gaps: bool = False,
    service_kw: float | None = None,
) -> IntervalData:
    """Read any supported usage file into IntervalData (UTC starts, kWh per interval).

    Args:
        path: the CSV file.
        fmt: ``"auto"`` (sniff from the header) or one of :data:`FORMATS`; the CLI's names
            ``"csv"``, ``"green-button"``, ``"ct"`` and ``"tesla"`` are accepted too.
        tz: IANA zone of local wall-clock times: Green Button files (default
            ``"America/Los_Angeles"``, PG&E), CT exports with local times, and Tesla app
            exports whose times lost their offsets. Ignored for trueup's CSV, whose
            timestamps carry their offsets.
        topology: ``"backfed"`` or ``"line_side_tap"``; required for CT-register files.
        allow_gaps: accept missing intervals (only real rows kept, gaps described in notes).
        service_kw: the site's service size, kW (default 96 kW, 400 A at 240 V): intervals
            whose average power exceeds it are noted; above 1,000 kW the file is refused (a
            unit mistake or a corrupt cell; see :mod:`._plausible`).
    """
    src = str(path)
    key = str(fmt).strip().lower().replace("-", "_")
    kind = sniff_format(path) if key == "auto" else _FORMAT_ALIASES.get(key, key)
    if kind == "interval":
        return read_interval_csv(path, allow_gaps=allow_gaps, service_kw=service_kw)
    if kind == "green_button":
        return read_green_button_csv(path, tz=tz or "America/Los_Angeles", allow_gaps=allow_gaps,
                                     service_kw=service_kw)
    if kind == "ct_register":
        if topology is None:
            raise fail(
                "CT-register data needs the site's metering topology",
                src,
                "pass --topology backfed (topology='backfed'; PV feeds the main panel; its "
                "CTs see net flow) or 'line_side_tap' (main-panel CTs see only consumption)",
            )
        return read_ct_register_csv(path, topology=topology, tz=tz, allow_gaps=allow_gaps,
                                    service_kw=service_kw)
    if kind == "tesla_app":
        return read_tesla_app_csv(path, tz=tz, allow_gaps=allow_gaps, service_kw=service_kw)
    raise fail(f"unknown usage format {fmt!r}", src,
               f"use --format auto (fmt='auto') or one of {list(FORMATS)}")
