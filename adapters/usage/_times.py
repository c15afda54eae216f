"""Times for the usage readers: time zones, local wall-clock → UTC, and time text in messages.

Interval starts are UTC epoch seconds (int) everywhere; local wall-clock times exist only
while a file is read (:class:`LocalClock`) and in messages (:func:`span_text`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.usage._problems import fail

#: An interval start as the readers ask for it in fixes: ISO 8601 with its UTC offset.
EXAMPLE_TS = "2025-03-09T01:45:00-08:00"


def time_zone(tz: str, where: str) -> ZoneInfo:
    """The IANA zone ``tz``, or a UsageError at ``where`` saying it is unknown."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise fail(
            f"unknown time zone {tz!r}",
            where,
            "give an IANA zone name such as 'America/Los_Angeles'",
        ) from None


def duration_text(seconds: int | float) -> str:
    """A length of time in seconds as ``2 h``, ``15 min`` or ``90 s``."""
    s = int(seconds)
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


def utc_text(t: int) -> str:
    """UTC epoch seconds as ``2025-03-10T08:00Z``."""
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%MZ")


def span_text(a: int, b: int, zone: ZoneInfo | None) -> str:
    """``2025-03-10T08:00Z–2025-03-10T10:00Z`` plus local wall-clock times when known."""
    text = f"{utc_text(a)}–{utc_text(b)}"
    if zone is not None:
        la = datetime.fromtimestamp(int(a), zone)
        lb = datetime.fromtimestamp(int(b), zone)
        text += f" ({la:%Y-%m-%d %H:%M} {la.tzname()}–{lb:%Y-%m-%d %H:%M} {lb.tzname()})"
    return text


class LocalClock:
    """Local wall-clock → UTC for one zone, DST explicit (PEP 495 ``fold``).

    The fall-back hour occurs twice: its first occurrence in the file is read as daylight
    time (``fold=0``), the second as standard time (``fold=1``). A wall-clock time skipped by
    spring-forward does not exist and is reported as such (``None``).
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.seen: dict[datetime, int] = {}
        self.fall_back_days: dict[date, tuple[str, str]] = {}

    def to_utc(self, naive: datetime) -> int | None:
        """UTC epoch seconds of a local wall-clock time; None if it does not exist."""
        a = naive.replace(tzinfo=self.zone)
        off0 = a.utcoffset()
        b = naive.replace(tzinfo=self.zone, fold=1)
        off1 = b.utcoffset()
        if off0 == off1:
            return int(a.timestamp())
        if off0 < off1:  # a spring-forward gap: this wall-clock time never happened
            return None
        n = self.seen.get(naive, 0)
        self.seen[naive] = n + 1
        if n == 1:
            self.fall_back_days.setdefault(naive.date(), (a.tzname() or "", b.tzname() or ""))
        return int((a if n == 0 else b).timestamp())

    def fall_back_notes(self) -> list[str]:
        """One note per fall-back day met so far, oldest first: how its repeated hour was read."""
        return [
            f"{d}: DST fall-back; the repeated hour was read first as {what[0]}, then as {what[1]}"
            for d, what in sorted(self.fall_back_days.items())
        ]
