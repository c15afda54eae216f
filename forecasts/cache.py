"""Where provider responses are kept, so a restart does not spend an API budget again.

``ForecastCache`` is the protocol the solar forecaster talks to: ``get(key)`` →
``(payload, fetched_at)`` or None, and ``put(key, payload, fetched_at)``. The forecaster puts
text (a provider's raw JSON answer, or small JSON state such as the calls made today);
``fetched_at`` is UTC epoch seconds. Two implementations here: ``MemoryCache`` (tests, a
one-shot ``trueup plan``) and ``SQLiteCache`` (one small table in a file). The daemon's store
implements the same two methods (``adapters.store.Store.forecast_cache``, which gives JSON
payloads back decoded: :func:`normalise` turns any such answer back into text).

A cache that fails (disk full, database locked) raises ``CacheError``; the forecaster records
it and carries on without the cache rather than failing the forecast.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from optimizer.errors import InputError


class CachedPayload(NamedTuple):
    """One cache entry: the payload text and when it was fetched (UTC epoch seconds)."""

    payload: str
    fetched_at: float


def normalise(hit: object) -> CachedPayload | None:
    """Any ``get`` answer as a :class:`CachedPayload`: a ``(payload, fetched_at)`` pair whose
    payload is text, bytes (UTF-8) or a JSON-decoded value (a store that decodes what it
    kept). Raises :class:`CacheError` for anything else."""
    if hit is None:
        return None
    try:
        payload, fetched_at = hit  # type: ignore[misc]
        fetched_at = float(fetched_at)
    except (TypeError, ValueError):
        raise CacheError(f"a cache entry should be (payload, fetched_at), got "
                         f"{type(hit).__name__}") from None
    if isinstance(payload, bytes | bytearray | memoryview):
        payload = bytes(payload).decode("utf-8", errors="replace")
    elif not isinstance(payload, str):
        payload = json.dumps(payload)
    return CachedPayload(payload, fetched_at)


@runtime_checkable
class ForecastCache(Protocol):
    """Key → (payload, fetched_at). ``put`` replaces any earlier entry of the key."""

    def get(self, key: str) -> tuple[object, float] | None: ...

    def put(self, key: str, payload: str, fetched_at: float) -> None: ...


class CacheError(RuntimeError):
    """The cache could not be read or written."""


class MemoryCache:
    """A dict behind a lock: forgets everything when the process ends."""

    def __init__(self) -> None:
        self._data: dict[str, CachedPayload] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> CachedPayload | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, payload: str, fetched_at: float) -> None:
        with self._lock:
            self._data[key] = CachedPayload(str(payload), float(fetched_at))

    def __len__(self) -> int:
        return len(self._data)


class SQLiteCache:
    """One table, ``forecast_cache(key PRIMARY KEY, payload, fetched_at)``, in the SQLite
    file at ``path`` (created with its directory's existing permissions if missing). Each call
    opens its own short connection, so the cache can be shared between threads and
    processes; WAL keeps readers and the writer from blocking each other."""

    TABLE = "forecast_cache"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise InputError(f"the directory {self.path.parent} does not exist",
                             where=f"forecast cache {self.path}",
                             fix="create the directory, or give a path in an existing one")
        try:
            with self._connect() as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (key TEXT PRIMARY KEY, "
                           "payload TEXT NOT NULL, fetched_at REAL NOT NULL)")
        except sqlite3.Error as e:
            raise InputError(f"cannot open the forecast cache: {e}",
                             where=f"forecast cache {self.path}",
                             fix="give a writable path to a SQLite file (it is created if "
                             "missing)") from None

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5.0)

    def get(self, key: str) -> CachedPayload | None:
        try:
            db = self._connect()
            try:
                row = db.execute(f"SELECT payload, fetched_at FROM {self.TABLE} WHERE key = ?",
                                 (key,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error as e:
            raise CacheError(f"{self.path}: cannot read {key!r}: {e}") from None
        return CachedPayload(row[0], float(row[1])) if row else None

    def put(self, key: str, payload: str, fetched_at: float) -> None:
        try:
            db = self._connect()
            try:
                with db:
                    db.execute(f"INSERT OR REPLACE INTO {self.TABLE} (key, payload, fetched_at)"
                               " VALUES (?, ?, ?)", (key, str(payload), float(fetched_at)))
            finally:
                db.close()
        except sqlite3.Error as e:
            raise CacheError(f"{self.path}: cannot write {key!r}: {e}") from None
