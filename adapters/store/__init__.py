"""The daemon's memory: SQLite in WAL mode under a data directory (``adapters.store``).

What it keeps, one table each (times are UTC epoch seconds, energies kWh per interval):

* **telemetry** — intervals derived from gateway reads (:mod:`adapters.telemetry`), with an
  ``estimated`` flag (power-integrated rather than counter-derived), a ``coverage`` share
  and their source; **readings** — the raw :class:`SiteState` reads, kept a few days so a
  restart can re-derive the interval it interrupted, then pruned.
* **utility intervals** — the utility's interval data (``trueup import --usage``), kept apart
  from telemetry, each row tied to the import (file name, time, counts) it came from.
* **billing states** (:class:`~optimizer.billing.BillingState` snapshots), **plans** (the
  plan JSON contract and its metadata), **writes** (every :class:`ApplyResult`: what was
  asked, sent, written, verified), the **forecast cache** (:attr:`Store.forecast_cache`,
  the ``ForecastCache`` protocol of ``forecasts/cache.py``) and **forecast records** (issued
  forecasts, kept to measure their accuracy).

Idempotent ingestion — a restart or a replayed read never double-counts. An interval is keyed
by ``(start, length)``; storing one that is already there *replaces* it or is ignored, never
adds to it. Which of two versions of the same interval is kept:

* **telemetry vs telemetry**: ranked by (1) complete (coverage 1) beats partial, (2) metered
  (counter-derived) beats estimated (power-integrated), (3) higher coverage beats lower; on
  equal rank the newer ingest replaces the older (a replay writes the same values again; a
  re-derivation from newer counters supersedes). So the in-progress interval, stored every
  minute with growing coverage, ends up whole; a restart that sees only part of an interval
  cannot overwrite the complete one stored before it.
* **utility vs utility**: the newer import replaces the rows it covers (a re-download carries
  the utility's corrections), including stored rows of another length that overlap them;
  rows it does not cover stay.
* **utility vs telemetry**: both are kept. :meth:`Store.intervals` prefers utility data
  (``prefer="utility"``, the default) wherever it covers an interval completely — it is what
  you are billed on — and uses telemetry elsewhere (after the last download, in its gaps).
  Load, PV and battery, which the utility does not meter, come from telemetry. The merge
  rules are in :mod:`adapters.store.merge`. Gaps stay gaps: nothing is filled in.

Safety: on opening, an existing file that is not SQLite, fails ``PRAGMA integrity_check``,
belongs to another application or has a newer schema is refused with an
:class:`~optimizer.errors.InputError` naming the file and the fix, and is not modified
(:mod:`adapters.store.schema`). An older schema is migrated in order, one transaction per
step, after copying the file to ``trueup.db.v<N>.bak``.

Durability: WAL with ``synchronous=NORMAL``. A killed process (kill -9, OOM) loses nothing
committed and leaves no partial transaction; a power cut may lose the last transactions
before the cut but never corrupts the file. Group writes that belong together with
:meth:`Store.transaction`.

Threads: **one SQLite connection per thread** (made on the thread's first use). In WAL mode
readers never block the writer nor it them, so a plan solve reading a year of intervals does
not hold up the telemetry write; writers take the write lock at ``BEGIN IMMEDIATE`` and wait
up to :data:`BUSY_TIMEOUT_S` for each other. Call :meth:`Store.close` once the other threads
have stopped using the store. Do not share a Store across ``fork()``.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from adapters.gateway.base import ApplyResult, SiteState
from adapters.store import codec
from adapters.store.merge import Buckets, Rows, bucket, combine, missing_spans
from adapters.store.schema import check_file, migrate, schema_version
from optimizer.billing import BillingState
from optimizer.errors import InputError
from optimizer.intervals import IntervalData

if TYPE_CHECKING:
    from adapters.telemetry import Telemetry

__all__ = [
    "DB_FILE",
    "SOURCES",
    "ForecastRecord",
    "IngestResult",
    "PartialInterval",
    "SqliteForecastCache",
    "Store",
    "StoredPlan",
    "UtilityImport",
    "WriteRecord",
    "default_data_dir",
    "open_store",
    "schema_version",
]

APP_NAME = "trueup"
DB_FILE = "trueup.db"
#: What systemd's ``StateDirectory=trueup`` gives the service (as ``$STATE_DIRECTORY``).
SYSTEMD_STATE_DIR = Path("/var/lib/trueup")
BUSY_TIMEOUT_S = 30.0
#: The longest interval the store accepts, s (a day: Green Button daily reads).
MAX_INTERVAL_S = 86_400
#: Where stored intervals come from, for :meth:`Store.intervals` and :meth:`Store.coverage`.
SOURCES = ("utility", "telemetry")
_COMPLETE = 1 - 1e-9


class _Clock(Protocol):
    def now(self) -> float: ...


def default_data_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the store lives: ``$STATE_DIRECTORY`` when systemd sets it (its first entry;
    ``/var/lib/trueup`` for the shipped unit's ``StateDirectory=trueup``), else the user's
    data directory from platformdirs (``~/.local/share/trueup`` on Linux)."""
    env = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0].strip()
    if state:
        return Path(state)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def open_store(data_dir: str | Path | None = None, *, clock: _Clock | None = None) -> Store:
    """Open (or create) ``trueup.db`` in ``data_dir`` (default :func:`default_data_dir`)."""
    return Store(Path(data_dir or default_data_dir()) / DB_FILE, clock=clock)


# --------------------------------------------------------------------------------------
# what the API returns


@dataclass(frozen=True)
class IngestResult:
    """What storing a batch of intervals did (counts of intervals).

    ``new``: not stored before; ``replaced``: stored before with other values, now
    overwritten; ``unchanged``: stored before with the same values (a replay); ``kept``: the
    stored version outranks the new one and stays (telemetry only); ``superseded``: stored
    rows of another length that the new utility rows overlap, removed.
    """

    rows: int
    interval_s: int
    new: int = 0
    replaced: int = 0
    unchanged: int = 0
    kept: int = 0
    superseded: int = 0
    first: int | None = None  # first interval start, UTC epoch s
    end: int | None = None  # end of the last interval, UTC epoch s (exclusive)
    import_id: int | None = None  # utility imports: the utility_imports row

    @property
    def stored(self) -> int:
        """Rows whose values are now the ones given."""
        return self.new + self.replaced + self.unchanged


@dataclass(frozen=True)
class UtilityImport:
    id: int
    file: str
    imported_at: float
    interval_s: int
    first: int | None
    end: int | None
    rows: int
    new: int
    replaced: int
    unchanged: int
    superseded: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class PartialInterval:
    """A telemetry interval only partly measured (its kWh hold the measured part)."""

    start: int
    length: int
    coverage: float


@dataclass(frozen=True)
class StoredPlan:
    id: int
    saved_at: float
    generated_at: str | None
    status: str | None
    objective: float | None
    plan: dict


@dataclass(frozen=True)
class WriteRecord:
    id: int
    at: float
    result: ApplyResult


@dataclass(frozen=True)
class ForecastRecord:
    provider: str
    kind: str
    issued_at: float
    starts: np.ndarray  # int64 UTC epoch s
    values: np.ndarray  # float, NaN = missing
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------


def _rank(t: str) -> str:
    """The telemetry precedence of table alias ``t`` as an SQL row value (bigger wins)."""
    return f"({t}.coverage >= {_COMPLETE!r}, {t}.estimated = 0, {t}.coverage)"


_VALUE_COLS = ("import_kwh", "export_kwh", "load_kwh", "pv_kwh", "battery_kwh")
_SAME = " AND ".join(f"s.{c} IS t.{c}" for c in _VALUE_COLS)
_TELEMETRY_COUNTS = f"""
    SELECT count(*),
           coalesce(sum(t.start IS NULL), 0),
           coalesce(sum(t.start IS NOT NULL AND {_rank('s')} >= {_rank('t')} AND
                        ({_SAME} AND s.estimated IS t.estimated AND s.coverage IS t.coverage)),
                    0),
           coalesce(sum(t.start IS NOT NULL AND {_rank('s')} >= {_rank('t')} AND NOT
                        ({_SAME} AND s.estimated IS t.estimated AND s.coverage IS t.coverage)),
                    0),
           coalesce(sum(t.start IS NOT NULL AND {_rank('s')} < {_rank('t')}), 0)
    FROM temp.stage AS s LEFT JOIN main.telemetry AS t
         ON t.start = s.start AND t.length = s.length
"""
_TELEMETRY_UPSERT = f"""
    INSERT INTO main.telemetry (start, length, import_kwh, export_kwh, load_kwh, pv_kwh,
                                battery_kwh, estimated, coverage, source, ingested_at)
    SELECT start, length, import_kwh, export_kwh, load_kwh, pv_kwh, battery_kwh, estimated,
           coverage, ?, ? FROM temp.stage WHERE true
    ON CONFLICT (start, length) DO UPDATE SET
        import_kwh = excluded.import_kwh, export_kwh = excluded.export_kwh,
        load_kwh = excluded.load_kwh, pv_kwh = excluded.pv_kwh,
        battery_kwh = excluded.battery_kwh, estimated = excluded.estimated,
        coverage = excluded.coverage, source = excluded.source,
        ingested_at = excluded.ingested_at
    WHERE {_rank('excluded')} >= {_rank('telemetry')}
"""
_UTILITY_COUNTS = f"""
    SELECT count(*), coalesce(sum(t.start IS NULL), 0),
           coalesce(sum(t.start IS NOT NULL AND ({_SAME})), 0),
           coalesce(sum(t.start IS NOT NULL AND NOT ({_SAME})), 0)
    FROM temp.stage AS s LEFT JOIN main.utility_intervals AS t
         ON t.start = s.start AND t.length = s.length
"""
_UTILITY_UPSERT = """
    INSERT INTO main.utility_intervals (start, length, import_kwh, export_kwh, load_kwh,
                                        pv_kwh, battery_kwh, import_id)
    SELECT start, length, import_kwh, export_kwh, load_kwh, pv_kwh, battery_kwh, ?
    FROM temp.stage WHERE true
    ON CONFLICT (start, length) DO UPDATE SET
        import_kwh = excluded.import_kwh, export_kwh = excluded.export_kwh,
        load_kwh = excluded.load_kwh, pv_kwh = excluded.pv_kwh,
        battery_kwh = excluded.battery_kwh, import_id = excluded.import_id
"""
_ROWS_SQL = {
    "telemetry": "SELECT start, length, import_kwh, export_kwh, load_kwh, pv_kwh, battery_kwh,"
                 " coverage, estimated FROM main.telemetry WHERE start >= ? AND start < ?"
                 " ORDER BY start",
    "utility": "SELECT start, length, import_kwh, export_kwh, load_kwh, pv_kwh, battery_kwh,"
               " 1.0, 0 FROM main.utility_intervals WHERE start >= ? AND start < ?"
               " ORDER BY start",
}
_ROW_DTYPE = np.dtype([(f"c{i}", np.float64) for i in range(9)])  # None → NaN
_TABLE = {"telemetry": "main.telemetry", "utility": "main.utility_intervals"}


class Store:
    """The SQLite store at ``path`` (see the module doc). Use as a context manager, or call
    :meth:`close`.

    Raises:
        InputError: the file exists but is not a usable trueup store (not SQLite, corrupt,
            another application's, a newer schema), or cannot be opened; it is left as it is.
    """

    def __init__(self, path: str | Path, *, clock: _Clock | None = None) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()  # guards the connection registry, not the database
        self._local = threading.local()
        self._conns: list[tuple[weakref.ref, sqlite3.Connection]] = []
        self._closed = False
        check_file(self.path)  # raises before anything is created or changed
        if not self.path.parent.exists():
            try:
                self.path.parent.mkdir(parents=True, mode=0o700)
            except OSError as e:
                raise InputError(f"cannot create the data directory ({e.strerror})",
                                 where=str(self.path.parent),
                                 fix="create it for the trueup user, or give another with "
                                 "--data-dir") from None
        if not self.path.exists():
            # the owner's meter data: readable by the trueup user alone (SQLite gives the
            # -wal and -shm files the database file's permissions)
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self.schema_version = migrate(self._conn(), self.path)
        except BaseException:
            self.close()
            raise
        self.forecast_cache = SqliteForecastCache(self)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- connections and transactions --------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        where = str(self.path)
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
            # switching a new file to WAL takes an exclusive lock that the busy timeout
            # does not wait for: when two processes create the store at once, retry briefly
            for attempt in range(50):
                try:
                    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 49:
                        raise
                    time.sleep(0.05)
        except sqlite3.Error as e:
            raise InputError(f"cannot open the store ({e})", where=where,
                             fix="check that the directory exists and the trueup user may "
                             "write it (systemd: StateDirectory=trueup)") from None
        if str(mode).lower() != "wal":
            db.close()
            raise InputError(f"the store's filesystem does not support WAL (journal mode "
                             f"{mode!r})", where=where,
                             fix="put the data directory on a local disk (--data-dir)")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute("PRAGMA journal_size_limit = 67108864")
        db.execute("""CREATE TEMP TABLE IF NOT EXISTS stage (
            start INTEGER, length INTEGER, import_kwh REAL, export_kwh REAL, load_kwh REAL,
            pv_kwh REAL, battery_kwh REAL, estimated INTEGER, coverage REAL)""")
        return db

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (made on first use)."""
        if self._closed:
            raise RuntimeError(f"the store {self.path} is closed")
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            with self._lock:
                # connections of threads that have ended are idle: close them
                live = []
                for ref, c in self._conns:
                    th = ref()
                    if th is not None and th.is_alive():
                        live.append((ref, c))
                    else:
                        c.close()
                live.append((weakref.ref(threading.current_thread()), db))
                self._conns = live
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Make the writes inside one atomic commit (this thread's; nests as a no-op)."""
        with self._write():
            yield

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        if db.in_transaction:
            if getattr(self._local, "reading", False):
                # upgrading a read snapshot to a write can fail at once (SQLITE_BUSY_SNAPSHOT)
                raise RuntimeError("Store: write inside snapshot(); write after it instead")
            yield db
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One consistent view of the store for the reads inside (this thread's): e.g. the
        intervals and the billing state a plan is made from. Writers are not blocked."""
        with self._read():
            yield

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        if db.in_transaction:
            yield db
            return
        db.execute("BEGIN")
        self._local.reading = True
        try:
            yield db
        finally:
            self._local.reading = False
            db.execute("COMMIT")

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.time()

    def close(self) -> None:
        """Close every thread's connection (the last one checkpoints the WAL)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conns, self._conns = self._conns, []
        for _, db in conns:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            db.close()

    def integrity_check(self) -> list[str]:
        """``PRAGMA integrity_check``: ``["ok"]`` or the problems found."""
        return [r[0] for r in self._conn().execute("PRAGMA integrity_check")]

    # ---- intervals ------------------------------------------------------------------------

    def add_intervals(self, data: IntervalData, source: str, estimated: Any = None, *,
                      coverage: Any = None) -> IngestResult:
        """Store gateway telemetry intervals (idempotent; precedence in the module doc).

        Args:
            data: intervals (UTC starts, kWh per interval); NaN load/PV/battery = unknown.
            source: where they came from (``"local"``, ``"simulated"`` ...), for messages.
            estimated: per interval (or one bool for all): power-integrated rather than
                counter-derived. None: all metered.
            coverage: per interval, the measured share (0, 1] of it. None: all complete.
        """
        n = len(data)
        est = _per_interval(estimated, n, False, "estimated").astype(bool)
        cov = _per_interval(coverage, n, 1.0, "coverage")
        _check_batch(data, source or "telemetry")
        if np.any(~np.isfinite(cov) | (cov <= 0) | (cov > 1)):
            raise InputError("coverage must be in (0, 1] for every interval",
                             where=f"{source}: coverage", fix="pass Telemetry.coverage as is")
        if n == 0:
            return IngestResult(rows=0, interval_s=data.interval_s)
        with self._write() as db:
            _stage(db, data, est, cov)
            rows, new, unchanged, replaced, kept = db.execute(_TELEMETRY_COUNTS).fetchone()
            db.execute(_TELEMETRY_UPSERT, (str(source), self._now()))
        return IngestResult(rows=rows, interval_s=data.interval_s, new=new, replaced=replaced,
                            unchanged=unchanged, kept=kept, first=int(data.start_utc[0]),
                            end=data.end_utc)

    def add_telemetry(self, telemetry: Telemetry, source: str | None = None) -> IngestResult:
        """Store :func:`adapters.telemetry.readings_to_intervals`'s result, with its
        ``estimated`` flags and ``coverage``."""
        return self.add_intervals(telemetry.data, source or telemetry.data.source or "telemetry",
                                  telemetry.estimated, coverage=telemetry.coverage)

    def add_utility(self, data: IntervalData, file: str | None = None) -> IngestResult:
        """Store the utility's interval data (from :func:`adapters.usage.read_usage`) as one
        import of ``file``: it replaces the stored utility rows it covers (module doc)."""
        file = file or data.source or "utility data"
        n = len(data)
        _check_batch(data, file)
        with self._write() as db:
            _stage(db, data, np.zeros(n, dtype=bool), np.ones(n))
            rows, new, unchanged, replaced = db.execute(_UTILITY_COUNTS).fetchone()
            stale = self._overlapping_other_lengths(db, data) if n else []
            first, end = (int(data.start_utc[0]), data.end_utc) if n else (None, None)
            import_id = db.execute(
                "INSERT INTO utility_imports (file, imported_at, interval_s, first_start, "
                "end_utc, rows, new, replaced, unchanged, superseded, notes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (file, self._now(), data.interval_s, first, end, rows, new, replaced,
                 unchanged, len(stale), codec.dumps(list(data.notes)))).lastrowid
            db.executemany("DELETE FROM main.utility_intervals WHERE start = ? AND length = ?",
                           stale)
            db.execute(_UTILITY_UPSERT, (import_id,))
        return IngestResult(rows=rows, interval_s=data.interval_s, new=new, replaced=replaced,
                            unchanged=unchanged, superseded=len(stale), first=first, end=end,
                            import_id=import_id)

    @staticmethod
    def _overlapping_other_lengths(db: sqlite3.Connection, data: IntervalData,
                                   ) -> list[tuple[int, int]]:
        """Stored utility rows of another length that the new rows overlap."""
        L = data.interval_s
        old = np.array(db.execute(
            "SELECT start, length FROM main.utility_intervals "
            "WHERE start >= ? AND start < ? AND length != ?",
            (int(data.start_utc[0]) - MAX_INTERVAL_S, data.end_utc, L)).fetchall(),
            dtype=np.int64).reshape(-1, 2)
        if not len(old):
            return []
        s, e = old[:, 0], old[:, 0] + old[:, 1]
        new = np.asarray(data.start_utc, dtype=np.int64)
        i = np.searchsorted(new, e, side="left") - 1  # the last new row starting before e
        hit = (i >= 0) & (new[np.maximum(i, 0)] + L > s)
        return [(int(a), int(b)) for a, b in old[hit]]

    def utility_imports(self) -> list[UtilityImport]:
        """Every import of utility data, oldest first."""
        rows = self._conn().execute(
            "SELECT id, file, imported_at, interval_s, first_start, end_utc, rows, new, "
            "replaced, unchanged, superseded, notes FROM utility_imports ORDER BY id")
        return [UtilityImport(*r[:11], notes=tuple(json.loads(r[11]))) for r in rows]

    def intervals(self, start: int, end: int, *, interval_s: int | None = None,
                  prefer: str = "utility", sources: Sequence[str] = SOURCES) -> IntervalData:
        """The stored energy in intervals of ``interval_s`` (starting on UTC multiples of it)
        whose start lies in [start, end), as one series.

        Args:
            start, end: UTC epoch seconds.
            interval_s: the length of the result's intervals, s. Finer stored rows are
                summed into it (UTC-aligned); coarser ones cannot be used. Default: the
                coarsest length stored in the window (all of them must divide it).
            prefer: ``"utility"`` (default: what you are billed on) or ``"telemetry"``: the
                source that wins an interval both cover completely.
            sources: which sources to read (default both).

        Returns:
            IntervalData, kWh per interval; intervals no row touches are absent (gaps stay
            gaps). ``notes`` say how many came from each source, and which are partial.
        """
        srcs = _sources(sources)
        if prefer not in SOURCES:
            raise InputError(f"prefer={prefer!r} is not one of {list(SOURCES)}",
                             where="Store.intervals(prefer)")
        start, end = int(start), int(end)
        with self._read() as db:
            T = (self._default_length(db, start, end, srcs) if interval_s is None
                 else int(interval_s))
            if T <= 0:
                raise InputError(f"interval_s {T} must be > 0", where="Store.intervals")
            lo, hi = -(-start // T) * T, -(-end // T) * T  # rounded up to multiples of T
            bks = {}
            for s in srcs:
                table = np.fromiter(db.execute(_ROWS_SQL[s], (lo, hi)), dtype=_ROW_DTYPE)
                bks[s] = bucket(Rows.from_table(table.view(np.float64)), T)
        other = "telemetry" if prefer == "utility" else "utility"
        c = combine(bks.get(prefer, Buckets.empty()), bks.get(other, Buckets.empty()))
        from_utility = c.from_first if prefer == "utility" else ~c.from_first
        n_u = int(from_utility.sum())
        notes = [f"{n_u} intervals from utility data, {len(c.start) - n_u} from gateway "
                 f"telemetry ({int((c.estimated & ~from_utility).sum())} of them estimated)"]
        partial = int((c.coverage < _COMPLETE).sum())
        if partial:
            notes.append(f"{partial} intervals only partly measured: their kWh hold only the "
                         "measured part")
        unusable = sum(b.unusable for b in bks.values())
        if unusable:
            notes.append(f"{unusable} stored intervals longer than {T} s or not aligned to "
                         f"it were left out (ask for a coarser interval_s)")

        def opt(name: str) -> np.ndarray | None:
            v = c.values[name]
            return None if np.isnan(v).all() else v

        return IntervalData(
            start_utc=c.start.astype(np.int64), interval_s=T,
            import_kwh=c.values["import_kwh"], export_kwh=c.values["export_kwh"],
            load_kwh=opt("load_kwh"), pv_kwh=opt("pv_kwh"), battery_kwh=opt("battery_kwh"),
            source=f"trueup store {self.path} ({' + '.join(srcs)})", notes=tuple(notes))

    @staticmethod
    def _default_length(db: sqlite3.Connection, start: int, end: int,
                        srcs: Sequence[str]) -> int:
        lengths = sorted({r[0] for s in srcs for r in db.execute(
            f"SELECT DISTINCT length FROM {_TABLE[s]} WHERE start >= ? AND start < ?",
            (start, end))})
        if not lengths:
            return 300
        T = lengths[-1]
        if any(T % x for x in lengths):
            raise InputError(f"stored intervals of {lengths} s cannot all be summed into one "
                             "length", where="Store.intervals",
                             fix="pass interval_s (a multiple of the lengths you need)")
        return T

    def coverage(self, start: int, end: int, *, sources: Sequence[str] = SOURCES,
                 ) -> list[tuple[int, int]]:
        """The spans of [start, end) (UTC epoch s) that no stored interval of ``sources``
        covers, as ``(start, end)`` pairs, oldest first. A partly measured telemetry interval
        counts as covered here: :meth:`partial_intervals` lists those."""
        start, end = int(start), int(end)
        parts = []
        with self._read() as db:
            for s in _sources(sources):
                parts += db.execute(f"SELECT start, length FROM {_TABLE[s]} "
                                    "WHERE start >= ? AND start < ?",
                                    (start - MAX_INTERVAL_S, end)).fetchall()
        a = np.array(parts, dtype=np.int64).reshape(-1, 2)
        return missing_spans(a[:, 0], a[:, 1], start, end)

    def partial_intervals(self, start: int, end: int) -> list[PartialInterval]:
        """Telemetry intervals starting in [start, end) that were only partly measured."""
        rows = self._conn().execute(
            "SELECT start, length, coverage FROM main.telemetry WHERE start >= ? AND "
            f"start < ? AND coverage < {_COMPLETE!r} ORDER BY start", (int(start), int(end)))
        return [PartialInterval(*r) for r in rows]

    # ---- raw readings ---------------------------------------------------------------------

    def add_readings(self, readings: Iterable[SiteState]) -> int:
        """Store gateway reads; a read with the same timestamp replaces the stored one."""
        rows = [codec.reading_to_row(r) for r in readings
                if r.timestamp is not None and math.isfinite(r.timestamp)]
        cols = ", ".join(("t", "source", *codec.READING_FIELDS, "settings", "unknown"))
        with self._write() as db:
            db.executemany(f"INSERT OR REPLACE INTO readings ({cols}) VALUES "
                           f"({', '.join('?' * (len(codec.READING_FIELDS) + 4))})", rows)
        return len(rows)

    def readings(self, start: float, end: float) -> list[SiteState]:
        """Stored reads with start <= timestamp < end, oldest first."""
        cols = ", ".join(("t", "source", *codec.READING_FIELDS, "settings", "unknown"))
        rows = self._conn().execute(f"SELECT {cols} FROM readings WHERE t >= ? AND t < ? "
                                    "ORDER BY t", (float(start), float(end)))
        return [codec.reading_from_row(r) for r in rows]

    def prune_readings(self, before: float) -> int:
        """Delete reads older than ``before`` (UTC epoch s); returns how many."""
        with self._write() as db:
            return db.execute("DELETE FROM readings WHERE t < ?", (float(before),)).rowcount

    # ---- billing state --------------------------------------------------------------------

    def save_billing_state(self, state: BillingState, *, computed_at: float | None = None,
                           ) -> None:
        """Keep a billing-state snapshot (one per ``as_of_utc``; the same one replaces)."""
        import dataclasses

        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO billing_states (as_of, month, computed_at, state)"
                       " VALUES (?, ?, ?, ?)",
                       (int(state.as_of_utc), state.month,
                        self._now() if computed_at is None else float(computed_at),
                        codec.dumps(dataclasses.asdict(state))))

    def billing_state(self, as_of: int | None = None) -> BillingState | None:
        """The latest snapshot (at or before ``as_of`` UTC epoch s); None if none fits."""
        row = self._conn().execute(
            "SELECT state FROM billing_states WHERE as_of <= ? ORDER BY as_of DESC LIMIT 1",
            (2**62 if as_of is None else int(as_of),)).fetchone()
        return None if row is None else codec.billing_state_from_json(json.loads(row[0]))

    # ---- plans ----------------------------------------------------------------------------

    def save_plan(self, plan: dict, *, saved_at: float | None = None) -> int:
        """Keep a plan (the plan JSON contract); returns its id."""
        if not isinstance(plan, dict):
            raise TypeError(f"save_plan takes the plan JSON as a dict, not {type(plan)}")
        objective = plan.get("objective")
        with self._write() as db:
            return db.execute(
                "INSERT INTO plans (saved_at, generated_at, status, objective, solver, "
                "solve_seconds, plan) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self._now() if saved_at is None else float(saved_at),
                 _str_or_none(plan.get("generated_at")), _str_or_none(plan.get("status")),
                 float(objective) if isinstance(objective, int | float) else None,
                 _str_or_none(plan.get("solver")), _float_or_none(plan.get("solve_seconds")),
                 codec.dumps(plan))).lastrowid

    def last_plan(self) -> StoredPlan | None:
        """The plan saved last, or None."""
        row = self._conn().execute(
            "SELECT id, saved_at, generated_at, status, objective, plan FROM plans "
            "ORDER BY saved_at DESC, id DESC LIMIT 1").fetchone()
        return None if row is None else StoredPlan(*row[:5], plan=json.loads(row[5]))

    def plans(self, since: float, until: float | None = None) -> list[StoredPlan]:
        """Plans saved in [since, until), oldest first."""
        rows = self._conn().execute(
            "SELECT id, saved_at, generated_at, status, objective, plan FROM plans "
            "WHERE saved_at >= ? AND saved_at < ? ORDER BY saved_at, id",
            (float(since), math.inf if until is None else float(until)))
        return [StoredPlan(*r[:5], plan=json.loads(r[5])) for r in rows]

    def prune_plans(self, before: float) -> int:
        """Delete plans saved before ``before``, always keeping the last one."""
        with self._write() as db:
            return db.execute(
                "DELETE FROM plans WHERE saved_at < ? AND id != (SELECT id FROM plans "
                "ORDER BY saved_at DESC, id DESC LIMIT 1)", (float(before),)).rowcount

    # ---- settings writes ------------------------------------------------------------------

    def record_write(self, result: ApplyResult, at: float) -> int:
        """Keep what a settings request did (asked, sent, written, verified ...)."""
        with self._write() as db:
            return db.execute(
                "INSERT INTO writes (at, requested, applied, written, verified, skipped, "
                "errors, notes, api_calls) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (float(at), *codec.apply_result_to_row(result))).lastrowid

    def writes(self, since: float, until: float | None = None) -> list[WriteRecord]:
        """Settings requests recorded in [since, until), oldest first."""
        rows = self._conn().execute(
            "SELECT id, at, requested, applied, written, verified, skipped, errors, notes, "
            "api_calls FROM writes WHERE at >= ? AND at < ? ORDER BY at, id",
            (float(since), math.inf if until is None else float(until)))
        return [WriteRecord(r[0], r[1], codec.apply_result_from_row(*r[2:])) for r in rows]

    # ---- forecast records -----------------------------------------------------------------

    def record_forecast(self, provider: str, kind: str, issued_at: float, starts: Any,
                        values: Any, meta: dict | None = None) -> None:
        """Keep an issued forecast (``starts`` UTC epoch s, ``values`` in the kind's unit,
        kWh per step for energy) to measure its accuracy later. The same provider, kind and
        issue time replaces."""
        s = np.asarray(starts, dtype=np.int64)
        v = np.asarray(values, dtype=float)
        if s.shape != v.shape or s.ndim != 1:
            raise InputError(f"starts ({s.shape}) and values ({v.shape}) must be 1-D and the "
                             "same length", where=f"forecast {provider}/{kind}")
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO forecasts (provider, kind, issued_at, "
                       "starts_json, values_json, meta) VALUES (?, ?, ?, ?, ?, ?)",
                       (provider, kind, float(issued_at), codec.dumps(s), codec.dumps(v),
                        codec.dumps(meta or {})))

    def forecast_records(self, provider: str | None = None, kind: str | None = None, *,
                         since: float = -math.inf, until: float = math.inf,
                         ) -> list[ForecastRecord]:
        """Issued forecasts with since <= issued_at < until, oldest first."""
        rows = self._conn().execute(
            "SELECT provider, kind, issued_at, starts_json, values_json, meta FROM forecasts "
            "WHERE (?1 IS NULL OR provider = ?1) AND (?2 IS NULL OR kind = ?2) AND "
            "issued_at >= ?3 AND issued_at < ?4 ORDER BY issued_at, provider, kind",
            (provider, kind, float(since), float(until)))
        return [ForecastRecord(p, k, t, np.array(json.loads(s), dtype=np.int64),
                               np.array(json.loads(v), dtype=float), json.loads(m))
                for p, k, t, s, v, m in rows]

    def prune_forecasts(self, before: float) -> int:
        """Delete forecast records issued before ``before``; returns how many."""
        with self._write() as db:
            return db.execute("DELETE FROM forecasts WHERE issued_at < ?",
                              (float(before),)).rowcount


class SqliteForecastCache:
    """The ``ForecastCache`` protocol (``forecasts/cache.py``) on the store: provider
    responses by key, with the time they were fetched. ``Store.forecast_cache`` is one."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str) -> tuple[dict | bytes, float] | None:
        """``(payload, fetched_at)`` for ``key``, or None. Payloads come back as stored:
        bytes as bytes, JSON as a fresh object."""
        row = self._store._conn().execute(
            "SELECT kind, payload, fetched_at FROM forecast_cache WHERE key = ?",
            (str(key),)).fetchone()
        if row is None:
            return None
        kind, payload, fetched_at = row
        return (bytes(payload) if kind == "bytes" else json.loads(payload)), fetched_at

    def put(self, key: str, payload: dict | bytes, fetched_at: float) -> None:
        """Keep ``payload`` (bytes, or anything JSON-serialisable) under ``key``, replacing
        what was there."""
        if isinstance(payload, bytes | bytearray | memoryview):
            kind, blob = "bytes", bytes(payload)
        else:
            try:
                kind, blob = "json", json.dumps(payload, separators=(",", ":"))
            except (TypeError, ValueError) as e:
                raise TypeError(f"forecast cache payload for {key!r} is neither bytes nor "
                                f"JSON-serialisable: {e}") from None
        with self._store._write() as db:
            db.execute("INSERT OR REPLACE INTO forecast_cache (key, fetched_at, kind, payload)"
                       " VALUES (?, ?, ?, ?)", (str(key), float(fetched_at), kind, blob))

    def prune(self, before: float) -> int:
        """Delete entries fetched before ``before``; returns how many."""
        with self._store._write() as db:
            return db.execute("DELETE FROM forecast_cache WHERE fetched_at < ?",
                              (float(before),)).rowcount


# --------------------------------------------------------------------------------------
# helpers


def _sources(sources: Sequence[str]) -> list[str]:
    srcs = [sources] if isinstance(sources, str) else list(sources)
    bad = [s for s in srcs if s not in SOURCES]
    if bad or not srcs:
        raise InputError(f"sources {srcs!r} must be some of {list(SOURCES)}",
                         where="Store(sources)")
    return [s for s in SOURCES if s in srcs]


def _per_interval(value: Any, n: int, default: float, name: str) -> np.ndarray:
    if value is None:
        return np.full(n, default, dtype=float)
    a = np.asarray(value, dtype=float)
    if a.ndim == 0:
        return np.full(n, float(a))
    if a.shape != (n,):
        raise InputError(f"{name} has {a.size} values for {n} intervals",
                         where=f"Store.add_intervals({name})")
    return a


def _check_batch(data: IntervalData, where: str) -> None:
    L = data.interval_s
    if isinstance(L, bool) or int(L) != L or not 0 < L <= MAX_INTERVAL_S:
        raise InputError(f"interval length {L!r} s is not a whole number of seconds in "
                         f"1–{MAX_INTERVAL_S}", where=where)
    t = np.asarray(data.start_utc, dtype=np.int64)
    bad = np.nonzero(np.diff(t) < L)[0]
    if bad.size:
        raise InputError(f"interval starting {_utc(t[bad[0] + 1])} overlaps or precedes the "
                         "one before it", where=where,
                         fix="store intervals sorted, one row per interval")
    for name in ("import_kwh", "export_kwh"):
        a = np.asarray(getattr(data, name), dtype=float)
        bad = np.nonzero(~np.isfinite(a) | (a < 0))[0]
        if bad.size:
            raise InputError(f"{name} is {float(a[bad[0]])!r} in the interval starting "
                             f"{_utc(t[bad[0]])} ({bad.size} such values)", where=where,
                             fix="gross register energies are finite kWh ≥ 0; leave an "
                             "unknown interval out rather than storing it")


def _stage(db: sqlite3.Connection, data: IntervalData, est: np.ndarray, cov: np.ndarray,
           ) -> None:
    """Load a batch into this connection's temp staging table (one executemany)."""

    def col(a: np.ndarray | None) -> Iterable[float | None]:
        if a is None:
            return repeat(None)
        return [None if x != x else x for x in np.asarray(a, dtype=float).tolist()]

    db.execute("DELETE FROM temp.stage")
    db.executemany(
        "INSERT INTO temp.stage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        zip(np.asarray(data.start_utc, dtype=np.int64).tolist(), repeat(int(data.interval_s)),
            np.asarray(data.import_kwh, dtype=float).tolist(),
            np.asarray(data.export_kwh, dtype=float).tolist(), col(data.load_kwh),
            col(data.pv_kwh), col(data.battery_kwh), est.astype(int).tolist(),
            cov.tolist(), strict=False))


def _utc(t: int) -> str:
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%dT%H:%MZ")


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _float_or_none(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
