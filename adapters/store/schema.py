"""The store's schema: its migrations, and the startup check that refuses a database trueup
must not touch.

The schema version is SQLite's ``PRAGMA user_version``; :data:`MIGRATIONS` is the ordered
list of functions that take a database from version ``i`` to ``i + 1``. A new table or
column is a new function appended to the list — never an edit of an old one, because a
home server may still hold a database at any earlier version.

:func:`check_file` runs before the store opens a file for writing. It opens the file
read-only (``immutable`` when there is no ``-wal`` beside it, so not even SQLite's side files
are created) and refuses, with an :class:`~optimizer.errors.InputError` naming the file and
the fix, a file that is not SQLite, fails ``PRAGMA integrity_check``, belongs to another
application, or was written by a newer trueup. The file is never modified in any of these
cases: the owner's data is worth more than a daemon that starts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from optimizer.errors import InputError

#: ``PRAGMA application_id`` of a trueup store: the bytes "trup".
APPLICATION_ID = int.from_bytes(b"trup", "big")
SQLITE_HEADER = b"SQLite format 3\x00"

MOVE_ASIDE = ("restore it from a backup, or move it aside to start a new, empty store; "
              "trueup will not overwrite it")


def _run(db: sqlite3.Connection, script: str) -> None:
    """Execute a script statement by statement inside the caller's transaction
    (``executescript`` would commit it first)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            db.execute(buf)
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip()
                               for ln in buf.splitlines()):
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:60]}")


def _v1_core(db: sqlite3.Connection) -> None:
    """Intervals (telemetry and utility), raw readings, billing state, plans, writes."""
    _run(db, f"""
        PRAGMA application_id = {APPLICATION_ID};

        -- metered intervals from the gateway: kWh per interval, interval start UTC epoch s
        CREATE TABLE telemetry (
            start       INTEGER NOT NULL,
            length      INTEGER NOT NULL CHECK (length > 0),        -- s
            import_kwh  REAL NOT NULL CHECK (import_kwh >= 0),
            export_kwh  REAL NOT NULL CHECK (export_kwh >= 0),
            load_kwh    REAL,                                       -- NULL: unknown
            pv_kwh      REAL,
            battery_kwh REAL,                                       -- + discharging
            estimated   INTEGER NOT NULL CHECK (estimated IN (0, 1)),  -- 1: from power
            coverage    REAL NOT NULL CHECK (coverage > 0 AND coverage <= 1),
            source      TEXT NOT NULL,
            ingested_at REAL NOT NULL,                              -- UTC epoch s
            PRIMARY KEY (start, length)
        ) WITHOUT ROWID;

        -- the utility's interval data, one row per import of a file
        CREATE TABLE utility_imports (
            id          INTEGER PRIMARY KEY,
            file        TEXT NOT NULL,
            imported_at REAL NOT NULL,
            interval_s  INTEGER NOT NULL,
            first_start INTEGER,
            end_utc     INTEGER,
            rows        INTEGER NOT NULL,
            new         INTEGER NOT NULL,
            replaced    INTEGER NOT NULL,
            unchanged   INTEGER NOT NULL,
            superseded  INTEGER NOT NULL,
            notes       TEXT NOT NULL                               -- JSON list
        );
        CREATE TABLE utility_intervals (
            start       INTEGER NOT NULL,
            length      INTEGER NOT NULL CHECK (length > 0),
            import_kwh  REAL NOT NULL CHECK (import_kwh >= 0),
            export_kwh  REAL NOT NULL CHECK (export_kwh >= 0),
            load_kwh    REAL,
            pv_kwh      REAL,
            battery_kwh REAL,
            import_id   INTEGER NOT NULL REFERENCES utility_imports (id),
            PRIMARY KEY (start, length)
        ) WITHOUT ROWID;

        -- raw gateway reads (SiteState), kept a few days so a restart can re-derive the
        -- interval it interrupted; pruned by the daemon
        CREATE TABLE readings (
            t                 REAL PRIMARY KEY,                     -- UTC epoch s
            source            TEXT NOT NULL,
            soc_percent       REAL,
            solar_w           REAL,
            home_w            REAL,
            battery_w         REAL,
            grid_w            REAL,
            grid_status       TEXT,
            grid_import_wh    REAL,
            grid_export_wh    REAL,
            solar_wh          REAL,
            home_wh           REAL,
            battery_import_wh REAL,
            battery_export_wh REAL,
            settings          TEXT NOT NULL,                        -- JSON object
            unknown           TEXT NOT NULL                         -- JSON object
        ) WITHOUT ROWID;

        CREATE TABLE billing_states (
            as_of       INTEGER PRIMARY KEY,                        -- end of data, UTC epoch s
            month       TEXT NOT NULL,
            computed_at REAL NOT NULL,
            state       TEXT NOT NULL                               -- JSON: BillingState
        );

        CREATE TABLE plans (
            id            INTEGER PRIMARY KEY,
            saved_at      REAL NOT NULL,
            generated_at  TEXT,
            status        TEXT,
            objective     REAL,
            solver        TEXT,
            solve_seconds REAL,
            plan          TEXT NOT NULL                             -- JSON: the plan contract
        );
        CREATE INDEX plans_by_time ON plans (saved_at);

        CREATE TABLE writes (
            id        INTEGER PRIMARY KEY,
            at        REAL NOT NULL,
            requested TEXT NOT NULL,                                -- JSON: Settings
            applied   TEXT,                                         -- JSON: Settings or NULL
            written   TEXT NOT NULL,                                -- JSON list of fields
            verified  INTEGER NOT NULL CHECK (verified IN (0, 1)),
            skipped   TEXT,
            errors    TEXT NOT NULL,
            notes     TEXT NOT NULL
        );
        CREATE INDEX writes_by_time ON writes (at);
    """)


def _v2_forecasts(db: sqlite3.Connection) -> None:
    """The forecast providers' response cache, and issued forecasts kept for accuracy."""
    _run(db, """
        CREATE TABLE forecast_cache (
            key        TEXT PRIMARY KEY,
            fetched_at REAL NOT NULL,
            kind       TEXT NOT NULL CHECK (kind IN ('json', 'bytes')),
            payload    BLOB NOT NULL
        );
        CREATE TABLE forecasts (
            provider    TEXT NOT NULL,
            kind        TEXT NOT NULL,                              -- pv | load | ...
            issued_at   REAL NOT NULL,
            starts_json TEXT NOT NULL,                              -- UTC epoch s
            values_json TEXT NOT NULL,                              -- null = missing
            meta        TEXT NOT NULL,
            PRIMARY KEY (provider, kind, issued_at)
        );
        CREATE INDEX forecasts_by_time ON forecasts (issued_at);
    """)


def _v3_write_commands(db: sqlite3.Connection) -> None:
    """The commands each settings request sent (failed sends and re-sends included), so the
    write budget counted after a restart is the one the gateway's path counted."""
    _run(db, "ALTER TABLE writes ADD COLUMN api_calls INTEGER;  -- NULL: one per field written")


#: ``MIGRATIONS[i]`` takes a database from schema version ``i`` to ``i + 1``.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1_core, _v2_forecasts,
                                                          _v3_write_commands]


def schema_version() -> int:
    """The schema version this code writes (the number of migrations)."""
    return len(MIGRATIONS)


def check_file(path: Path) -> int | None:
    """Check an existing store file without modifying it; return its schema version.

    Returns None when there is no database yet (no file, or an empty one). Raises
    :class:`InputError` naming ``path`` when the file is not a SQLite database, is corrupt
    (``PRAGMA integrity_check``), belongs to another application, or has a newer schema.
    """
    where = str(path)
    if not path.exists():
        return None
    if not path.is_file():
        raise InputError("the store path is not a file", where=where,
                         fix="point --data-dir (or $STATE_DIRECTORY) at a directory that "
                         "holds trueup.db, or remove what is there")
    wal = path.with_name(path.name + "-wal")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise InputError(f"cannot read the store: {e.strerror}", where=where,
                         fix="check that the trueup user may read and write it") from None
    if not head and not (wal.exists() and wal.stat().st_size):
        return None  # an empty file (e.g. `touch`): SQLite starts a new database in it
    if head != SQLITE_HEADER:
        raise InputError(f"not a SQLite database (it begins {head[:8]!r})", where=where,
                         fix=MOVE_ASIDE)
    # immutable: SQLite creates no -wal/-shm and takes no locks; only safe without a -wal
    mode = "mode=ro" if wal.exists() else "immutable=1"
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    except sqlite3.Error as e:
        raise InputError(f"cannot open the store: {e}", where=where,
                         fix="check that the trueup user may read and write it and its "
                         "directory") from None
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        problems = [r[0] for r in db.execute("PRAGMA integrity_check(5)")]
    except sqlite3.DatabaseError as e:
        raise InputError(f"the database is corrupt ({e})", where=where,
                         fix=MOVE_ASIDE) from None
    finally:
        db.close()
    if problems != ["ok"]:
        raise InputError("the database is corrupt: integrity_check found "
                         + "; ".join(problems), where=where, fix=MOVE_ASIDE)
    if app_id != APPLICATION_ID and (app_id != 0 or version != 0 or tables):
        raise InputError("a SQLite database, but not a trueup store (application_id "
                         f"{app_id:#x}, user_version {version})", where=where,
                         fix="point --data-dir (or $STATE_DIRECTORY) elsewhere, or move "
                         "the file aside; trueup will not overwrite it")
    if version > schema_version():
        raise InputError(f"the store was written by a newer trueup (schema version {version}; "
                         f"this trueup knows up to {schema_version()})", where=where,
                         fix="upgrade trueup, or " + MOVE_ASIDE)
    return version or None


def migrate(db: sqlite3.Connection, path: Path, *, target: int | None = None) -> int:
    """Bring ``db`` (an autocommit connection) up to ``target`` (default: the latest).

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with its version
    bump, so a failure or a kill leaves the database at the previous version, whole. Before
    the first step on a database that already holds data, a copy is written beside it
    (``trueup.db.v1.bak``). Returns the version reached.
    """
    target = schema_version() if target is None else target
    where = str(path)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version and version < target:
        backup = path.with_name(f"{path.name}.v{version}.bak")
        try:
            dest = sqlite3.connect(backup)
            try:
                db.backup(dest)
            finally:
                dest.close()
        except sqlite3.Error as e:
            raise InputError(f"cannot write the backup {backup.name} before migrating the "
                             f"store from schema version {version} ({e})", where=where,
                             fix="free disk space or fix the directory's permissions; the "
                             "store is unchanged") from None
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            # re-read under the write lock: another process may have migrated meanwhile
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version >= target:
                db.execute("COMMIT")
                break
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")
            db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise InputError(f"migrating the store from schema version {version} to "
                             f"{version + 1} failed ({e}); it is unchanged at version "
                             f"{version}", where=where,
                             fix="report this as a bug; keep the file (and its .bak copy)") \
                from None
    if version > schema_version():
        raise InputError(f"the store was written by a newer trueup (schema version {version}; "
                         f"this trueup knows up to {schema_version()})", where=where,
                         fix="upgrade trueup, or " + MOVE_ASIDE)
    return version
