"""The store (adapters/store): real SQLite files in tmp_path.

Times are seconds after T0 = 2025-01-01T00:00Z; intervals are 300 s unless a test says so.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from adapters.gateway.base import ApplyResult, CurrentSettings, SiteState
from adapters.store import (
    DB_FILE,
    Store,
    default_data_dir,
    open_store,
    schema_version,
)
from adapters.store import schema as store_schema
from adapters.telemetry import readings_to_intervals
from optimizer.behaviour import ExportRule, Mode, Settings
from optimizer.errors import InputError
from optimizer.intervals import IntervalData
from trueup.cli import main

T0 = 1_735_689_600  # 2025-01-01T00:00Z
DAY = 86_400
REPO = Path(__file__).resolve().parents[1]


def series(start: float, n: int, imp: float | list = 1.0, exp: float | list = 0.0,
           interval_s: int = 300, **opt) -> IntervalData:
    imp = np.full(n, imp) if np.isscalar(imp) else np.asarray(imp, dtype=float)
    exp = np.full(n, exp) if np.isscalar(exp) else np.asarray(exp, dtype=float)
    opt = {k: (np.full(n, v) if np.isscalar(v) else v) for k, v in opt.items()}
    return IntervalData.regular(int(T0 + start), interval_s, imp, exp, **opt)


def fingerprint(path: Path) -> tuple[str, int, int]:
    return (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns,
            path.stat().st_size)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / DB_FILE) as s:
        yield s


# --------------------------------------------------------------------------------------
# the file and its settings


def test_a_new_store_is_in_wal_mode_with_normal_sync_foreign_keys_and_the_latest_schema(
        store):
    db = store._conn()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert db.execute("PRAGMA user_version").fetchone()[0] == schema_version() == 3
    assert store.schema_version == schema_version()
    assert store.integrity_check() == ["ok"]


def test_the_data_dir_is_state_directory_under_systemd_else_the_user_data_dir():
    assert default_data_dir({"STATE_DIRECTORY": "/var/lib/trueup"}) == Path("/var/lib/trueup")
    # several StateDirectory= entries arrive colon-separated: the first is ours
    assert default_data_dir({"STATE_DIRECTORY": "/var/lib/trueup:/var/lib/x"}) == \
        Path("/var/lib/trueup")
    user = default_data_dir({})
    assert user.name == "trueup" and user != Path("/var/lib/trueup")


def test_open_store_creates_the_data_dir_and_the_database(tmp_path):
    d = tmp_path / "state" / "trueup"
    with open_store(d) as s:
        assert s.path == d / DB_FILE
    assert (d / DB_FILE).is_file()
    assert (d.stat().st_mode & 0o777) == 0o700


def test_a_closed_store_says_so(tmp_path):
    s = Store(tmp_path / DB_FILE)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        s.intervals(T0, T0 + DAY)


# --------------------------------------------------------------------------------------
# telemetry intervals: idempotent, with precedence


def test_a_year_of_five_minute_intervals_round_trips_exactly(store, capsys):
    n = 365 * 288
    rng = np.random.default_rng(7)
    data = series(0, n, rng.random(n), rng.random(n), load_kwh=rng.random(n),
                  pv_kwh=rng.random(n), battery_kwh=rng.random(n) - 0.5)
    t = time.perf_counter()
    r = store.add_intervals(data, "local")
    ingest = time.perf_counter() - t
    t = time.perf_counter()
    back = store.intervals(T0, T0 + 365 * DAY)
    read = time.perf_counter() - t
    with capsys.disabled():
        print(f"\n  store: {n:,} intervals ingested in {ingest:.2f} s, read in {read:.2f} s")
    assert (r.new, r.replaced, r.unchanged, r.kept) == (n, 0, 0, 0)
    assert back.interval_s == 300
    np.testing.assert_array_equal(back.start_utc, data.start_utc)
    for name in ("import_kwh", "export_kwh", "load_kwh", "pv_kwh", "battery_kwh"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))


def test_ingesting_the_same_intervals_twice_leaves_the_same_totals(store):
    data = series(0, 288, 0.25, 0.1)
    first = store.add_intervals(data, "local")
    again = store.add_intervals(data, "local")
    assert (first.new, again.new, again.unchanged, again.replaced) == (288, 0, 288, 0)
    back = store.intervals(T0, T0 + DAY)
    assert len(back) == 288
    assert back.import_kwh.sum() == pytest.approx(72.0)
    assert back.export_kwh.sum() == pytest.approx(28.8)


def test_overlapping_windows_store_each_interval_once(store):
    # the daemon re-derives the last hours on every run: windows [0, 6 h) and [4 h, 10 h)
    store.add_intervals(series(0, 72, 0.5), "local")
    r = store.add_intervals(series(4 * 3600, 72, 0.5), "local")
    assert (r.new, r.unchanged) == (48, 24)
    back = store.intervals(T0, T0 + DAY)
    assert len(back) == 120 and back.import_kwh.sum() == pytest.approx(60.0)
    assert np.all(np.diff(back.start_utc) == 300)


def test_a_metered_interval_beats_an_estimated_one_whichever_arrives_first(store):
    store.add_intervals(series(0, 1, 0.30), "cloud", estimated=True)
    r = store.add_intervals(series(0, 1, 0.25), "local", estimated=False)
    assert r.replaced == 1
    r = store.add_intervals(series(0, 1, 0.40), "cloud", estimated=True)  # arrives later
    assert r.kept == 1
    assert store.intervals(T0, T0 + 300).import_kwh.tolist() == [0.25]


def test_a_complete_interval_beats_a_partial_one_and_a_restart_cannot_shrink_it(store):
    store.add_intervals(series(0, 1, 0.1), "local", coverage=0.4)  # in progress
    r = store.add_intervals(series(0, 1, 0.25), "local", coverage=1.0)  # completed
    assert r.replaced == 1
    # after a restart only the end of the interval was seen: it must not overwrite
    r = store.add_intervals(series(0, 1, 0.05), "local", coverage=0.2)
    assert r.kept == 1
    # a complete estimate beats a partial counter value (it holds the whole interval)
    store.add_intervals(series(300, 1, 0.1), "local", coverage=0.5)
    assert store.add_intervals(series(300, 1, 0.3), "local", estimated=True).replaced == 1
    back = store.intervals(T0, T0 + 600)
    assert back.import_kwh.tolist() == [0.25, 0.3]
    assert store.partial_intervals(T0, T0 + 600) == []


def test_an_equally_ranked_newer_value_replaces_the_older(store):
    store.add_intervals(series(0, 2, 0.20), "local")
    r = store.add_intervals(series(0, 2, 0.21), "local")  # re-derived from newer counters
    assert (r.replaced, r.kept) == (2, 0)
    assert store.intervals(T0, T0 + 600).import_kwh.tolist() == [0.21, 0.21]


def test_telemetry_stored_every_minute_ends_up_equal_to_one_pass_over_all_readings(store):
    # readings every 60 s with lifetime counters; the daemon re-derives the last 15 min
    # each minute and stores it: partial intervals grow, complete ones are replayed
    rs = [SiteState(timestamp=T0 + 60 * k, source="local", grid_import_wh=1000 + 7.0 * k,
                    grid_export_wh=2.0 * k, home_wh=9.0 * k, solar_wh=4.0 * k)
          for k in range(121)]
    for k in range(2, 121):
        window = rs[max(0, k - 15):k + 1]
        store.add_telemetry(readings_to_intervals(window, 300))
    once = readings_to_intervals(rs, 300)
    back = store.intervals(T0, T0 + 2 * 3600)
    np.testing.assert_array_equal(back.start_utc, once.data.start_utc)
    np.testing.assert_allclose(back.import_kwh, once.data.import_kwh)
    np.testing.assert_allclose(back.load_kwh, once.data.load_kwh)
    assert back.import_kwh.sum() == pytest.approx(120 * 7.0 / 1000)
    assert store.partial_intervals(T0, T0 + 2 * 3600) == []


def test_intervals_that_are_not_gross_finite_kwh_are_refused(store):
    with pytest.raises(InputError, match="import_kwh is nan"):
        store.add_intervals(series(0, 3, [0.1, np.nan, 0.1]), "local")
    with pytest.raises(InputError, match=r"export_kwh is -0\.5"):
        store.add_intervals(series(0, 2, 0.1, [0.0, -0.5]), "local")
    overlapping = IntervalData(start_utc=np.array([T0, T0 + 100]), interval_s=300,
                               import_kwh=np.ones(2), export_kwh=np.zeros(2))
    with pytest.raises(InputError, match="overlaps"):
        store.add_intervals(overlapping, "local")
    assert len(store.intervals(T0, T0 + DAY)) == 0


def test_unknown_load_is_kept_unknown_not_zero(store):
    store.add_intervals(series(0, 3, 0.1, load_kwh=[0.2, np.nan, 0.4]), "local")
    back = store.intervals(T0, T0 + 900)
    assert back.load_kwh[0] == 0.2 and np.isnan(back.load_kwh[1])
    assert back.pv_kwh is None  # never known


# --------------------------------------------------------------------------------------
# utility data and telemetry


def test_utility_data_wins_where_it_covers_and_telemetry_fills_the_rest(store):
    # telemetry: two days of 5-min, 0.1 kWh import each and 0.2 kWh load;
    # the utility's 15-min data covers the first day only, 0.33 kWh each
    store.add_intervals(series(0, 576, 0.1, load_kwh=0.2), "local")
    store.add_utility(series(0, 96, 0.33, interval_s=900), "pge.csv")
    back = store.intervals(T0, T0 + 2 * DAY, interval_s=900)
    assert len(back) == 192 and back.interval_s == 900
    np.testing.assert_allclose(back.import_kwh[:96], 0.33)  # billed on the utility's data
    np.testing.assert_allclose(back.import_kwh[96:], 0.3)  # 3 × 0.1 from telemetry
    np.testing.assert_allclose(back.load_kwh, 0.6)  # the utility meters no load
    assert "96 intervals from utility data, 96 from gateway telemetry" in back.notes[0]
    telemetry_only = store.intervals(T0, T0 + 2 * DAY, interval_s=900, prefer="telemetry")
    np.testing.assert_allclose(telemetry_only.import_kwh, 0.3)
    utility_only = store.intervals(T0, T0 + 2 * DAY, sources=["utility"])
    assert len(utility_only) == 96 and utility_only.interval_s == 900


def test_complete_telemetry_beats_partly_covering_utility_data(store):
    # asked for hours: the utility's two 15-min rows cover half of the hour, telemetry all
    store.add_utility(series(0, 2, 0.5, interval_s=900), "pge.csv")
    store.add_intervals(series(0, 12, 0.1), "local")
    back = store.intervals(T0, T0 + 3600, interval_s=3600)
    assert back.import_kwh.tolist() == pytest.approx([1.2])  # telemetry: the whole hour


def test_a_newer_utility_import_replaces_the_rows_it_covers_and_keeps_the_rest(store):
    store.add_utility(series(0, 96, 0.5, interval_s=900), "jan.csv")
    r = store.add_utility(series(12 * 3600, 96, 0.7, interval_s=900), "jan-corrected.csv")
    assert (r.new, r.replaced, r.unchanged) == (48, 48, 0)
    back = store.intervals(T0, T0 + 2 * DAY, sources="utility")
    assert len(back) == 144
    assert back.import_kwh.sum() == pytest.approx(48 * 0.5 + 96 * 0.7)
    imports = store.utility_imports()
    assert [(i.file, i.rows, i.new, i.replaced) for i in imports] == [
        ("jan.csv", 96, 96, 0), ("jan-corrected.csv", 96, 48, 48)]
    again = store.add_utility(series(12 * 3600, 96, 0.7, interval_s=900), "jan-corrected.csv")
    assert again.unchanged == 96 and again.new == again.replaced == 0


def test_a_utility_import_at_another_length_supersedes_the_rows_it_overlaps(store):
    store.add_utility(series(0, 24, 1.0, interval_s=3600), "hourly.csv")
    r = store.add_utility(series(0, 48, 0.3, interval_s=900), "15min.csv")  # first 12 h
    assert r.superseded == 12
    back = store.intervals(T0, T0 + DAY, interval_s=3600, sources="utility")
    assert len(back) == 24
    np.testing.assert_allclose(back.import_kwh, [1.2] * 12 + [1.0] * 12)


# --------------------------------------------------------------------------------------
# gaps


def test_gaps_stay_gaps_and_coverage_lists_the_missing_spans(store):
    store.add_intervals(series(0, 12, 0.1), "local")  # [0, 1 h)
    store.add_intervals(series(7200, 12, 0.1), "local")  # [2 h, 3 h)
    back = store.intervals(T0, T0 + 4 * 3600)
    assert len(back) == 24
    assert not np.isin(T0 + 3600 + 300 * np.arange(12), back.start_utc).any()
    assert store.coverage(T0, T0 + 4 * 3600) == [(T0 + 3600, T0 + 7200),
                                                 (T0 + 3 * 3600, T0 + 4 * 3600)]
    # a window starting inside an interval counts that interval as covering it
    assert store.coverage(T0 + 150, T0 + 3600) == []


def test_a_coarse_interval_only_partly_covered_by_finer_rows_is_kept_and_flagged(store):
    store.add_intervals(series(0, 2, 0.1), "local")  # 10 of the first 15 minutes
    back = store.intervals(T0, T0 + 900, interval_s=900)
    assert back.import_kwh.tolist() == pytest.approx([0.2])  # what was measured, no fill
    assert any("partly measured" in n for n in back.notes)


def test_partly_measured_telemetry_is_listed(store):
    store.add_intervals(series(0, 2, 0.1), "local", coverage=[1.0, 0.5])
    parts = store.partial_intervals(T0, T0 + 600)
    assert [(p.start, p.coverage) for p in parts] == [(T0 + 300, 0.5)]


# --------------------------------------------------------------------------------------
# refusing files trueup must not touch


def _refused(path: Path, match: str) -> InputError:
    before = fingerprint(path)
    siblings = sorted(p.name for p in path.parent.iterdir())
    with pytest.raises(InputError, match=match) as e:
        Store(path)
    assert fingerprint(path) == before  # not a byte, not the mtime
    assert sorted(p.name for p in path.parent.iterdir()) == siblings  # no -wal/-shm left
    assert str(path) in str(e.value) and "will not overwrite it" in str(e.value)
    return e.value


def test_a_store_from_a_newer_trueup_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / DB_FILE
    with Store(path) as s:
        s.add_intervals(series(0, 12, 0.1), "local")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    err = _refused(path, "newer trueup")
    assert "schema version 99" in err.what and "upgrade trueup" in err.fix


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header_only", "zeroed_pages"])
def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path, damage):
    path = tmp_path / DB_FILE
    if damage == "garbage":
        path.write_bytes(os.urandom(8192))
    else:
        with Store(path) as s:
            s.add_intervals(series(0, 20_000, 0.1), "local")
        raw = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(raw[: len(raw) // 2])
        elif damage == "header_only":
            path.write_bytes(raw[:60])
        else:
            page = 4096
            path.write_bytes(raw[:page * 3] + bytes(page * 4) + raw[page * 7:])
    _refused(path, "not a SQLite database|corrupt")


def test_another_applications_sqlite_database_is_refused(tmp_path):
    path = tmp_path / DB_FILE
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    _refused(path, "not a trueup store")


def test_an_empty_file_becomes_a_new_store(tmp_path):
    path = tmp_path / DB_FILE
    path.touch()
    with Store(path) as s:
        s.add_intervals(series(0, 1, 0.1), "local")
        assert s.schema_version == schema_version()


# --------------------------------------------------------------------------------------
# migrations


def _store_at_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    store_schema.migrate(db, path, target=version)
    db.execute("INSERT INTO telemetry VALUES (?, 300, 0.4, 0.0, NULL, NULL, NULL, 0, 1.0, "
               "'local', 0)", (T0,))
    db.close()


def test_a_version_1_store_is_migrated_keeping_its_data_and_a_backup(tmp_path):
    path = tmp_path / DB_FILE
    _store_at_version(path, 1)
    with Store(path) as s:
        assert s.schema_version == schema_version()
        assert s.intervals(T0, T0 + 300).import_kwh.tolist() == [0.4]
        s.forecast_cache.put("k", {"a": 1}, 5.0)  # a table version 2 added
    backup = tmp_path / f"{DB_FILE}.v1.bak"
    db = sqlite3.connect(backup)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT import_kwh FROM telemetry").fetchall() == [(0.4,)]
    db.close()


def test_migrations_run_in_order_and_a_failing_step_leaves_the_previous_version(
        tmp_path, monkeypatch):
    """Two more steps after this code's own: the first runs, the second fails half-way,
    and the store is left at the first one's version, its data intact."""
    path = tmp_path / DB_FILE
    n = len(store_schema.MIGRATIONS)
    _store_at_version(path, n)
    ran = []

    def one_more(db):
        ran.append(n + 1)
        db.execute("CREATE TABLE one_more (x)")

    def buggy(db):
        ran.append(n + 2)
        db.execute("CREATE TABLE buggy (x)")
        db.execute("INSERT INTO no_such_table VALUES (1)")  # a buggy step

    monkeypatch.setattr(store_schema, "MIGRATIONS", [*store_schema.MIGRATIONS, one_more, buggy])
    with pytest.raises(InputError, match=f"from schema version {n + 1} to {n + 2} failed"):
        Store(path)
    assert ran == [n + 1, n + 2]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == n + 1
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert "one_more" in tables and "buggy" not in tables
    assert db.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 1
    db.close()


# --------------------------------------------------------------------------------------
# crashes and threads

CHILD = """
import sys, time
import numpy as np
from adapters.store import Store
from optimizer.intervals import IntervalData

path, t0 = sys.argv[1], int(sys.argv[2])
s = Store(path)
s.add_intervals(IntervalData.regular(t0, 300, np.full(288, 0.5), np.zeros(288)), "child")
print("committed", flush=True)
year = IntervalData.regular(t0 + 86400, 300, np.ones(105120), np.zeros(105120))
with s.transaction():
    s.add_intervals(year, "child")
    s.save_plan({"status": "optimal"})
    print("in transaction", flush=True)
    time.sleep(120)
"""


def test_a_writer_killed_mid_transaction_leaves_its_committed_data_and_nothing_partial(
        tmp_path):
    path = tmp_path / DB_FILE
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(T0)], cwd=REPO,
                             env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "committed"
        assert child.stdout.readline().strip() == "in transaction"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with Store(path) as s:
        assert s.integrity_check() == ["ok"]
        back = s.intervals(T0, T0 + 400 * DAY)
        assert len(back) == 288 and back.import_kwh.sum() == pytest.approx(144.0)
        assert s.last_plan() is None


def test_concurrent_writer_threads_lose_and_double_count_nothing(store):
    errors: list[BaseException] = []
    shared = series(99 * DAY, 288, 0.01)

    def writer(k: int) -> None:
        try:
            for h in range(24):
                store.add_intervals(series(k * DAY + h * 3600, 12, 0.1 * (k + 1)), f"t{k}")
                store.add_intervals(shared, f"t{k}")  # every thread replays the same day
        except BaseException as e:
            errors.append(e)

    def reader(stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                store.intervals(T0, T0 + 100 * DAY)
        except BaseException as e:
            errors.append(e)

    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    rd = threading.Thread(target=reader, args=(stop,))
    rd.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    rd.join()
    assert errors == []
    back = store.intervals(T0, T0 + 100 * DAY)
    assert len(back) == 9 * 288
    for k in range(8):
        day = (back.start_utc >= T0 + k * DAY) & (back.start_utc < T0 + (k + 1) * DAY)
        assert back.import_kwh[day].sum() == pytest.approx(288 * 0.1 * (k + 1))
    assert back.import_kwh[back.start_utc >= T0 + 99 * DAY].sum() == pytest.approx(2.88)


def test_a_long_read_does_not_block_a_write_on_another_thread(store):
    store.add_intervals(series(0, 12, 0.1), "local")
    in_snapshot, release = threading.Event(), threading.Event()
    seen = []

    def slow_solve() -> None:
        with store.snapshot():
            seen.append(len(store.intervals(T0, T0 + DAY)))
            in_snapshot.set()
            release.wait(10)
            seen.append(len(store.intervals(T0, T0 + DAY)))  # still the same view

    t = threading.Thread(target=slow_solve)
    t.start()
    assert in_snapshot.wait(10)
    started = time.perf_counter()
    store.add_intervals(series(3600, 12, 0.1), "local")
    waited = time.perf_counter() - started
    release.set()
    t.join()
    assert waited < 2.0  # not the 30 s busy timeout
    assert seen == [12, 12]
    assert len(store.intervals(T0, T0 + DAY)) == 24


def test_a_transaction_commits_all_of_its_writes_or_none(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.add_intervals(series(0, 12, 0.1), "local")
        store.save_plan({"status": "optimal"})
        raise RuntimeError("the solve crashed")
    assert len(store.intervals(T0, T0 + DAY)) == 0 and store.last_plan() is None
    with store.transaction():
        store.add_intervals(series(0, 12, 0.1), "local")
        store.save_plan({"status": "optimal"})
    assert len(store.intervals(T0, T0 + DAY)) == 12 and store.last_plan() is not None


# --------------------------------------------------------------------------------------
# the other records


def test_the_forecast_cache_round_trips_json_and_bytes(store):
    cache = store.forecast_cache
    assert cache.get("open-meteo:37.77,-122.42") is None
    payload = {"hourly": {"time": ["2025-01-01T00:00"], "gti": [0.0, 12.5]}, "ok": True}
    cache.put("open-meteo:37.77,-122.42", payload, 1_735_689_600.5)
    got, fetched_at = cache.get("open-meteo:37.77,-122.42")
    assert got == payload and fetched_at == 1_735_689_600.5
    cache.put("solcast:raw", b"\x00\x01 binary", 10.0)
    assert cache.get("solcast:raw") == (b"\x00\x01 binary", 10.0)
    cache.put("open-meteo:37.77,-122.42", {"v": 2}, 20.0)  # replaces
    assert cache.get("open-meteo:37.77,-122.42") == ({"v": 2}, 20.0)
    with pytest.raises(TypeError, match="JSON"):
        cache.put("bad", {"x": object()}, 1.0)
    assert cache.prune(15.0) == 1 and cache.get("solcast:raw") is None


def test_forecast_records_round_trip_with_missing_values(store):
    starts = T0 + 900 * np.arange(4)
    store.record_forecast("clearsky", "pv", T0 - 60, starts, [0.0, 0.5, np.nan, 1.0],
                          {"model": "ineichen"})
    store.record_forecast("clearsky", "pv", T0 - 60, starts, [0.0, 0.6, 0.7, 1.0])  # replaces
    store.record_forecast("history", "load", T0, starts, [1, 1, 1, 1])
    pv = store.forecast_records("clearsky", "pv")
    assert len(pv) == 1 and pv[0].values.tolist() == [0.0, 0.6, 0.7, 1.0]
    assert pv[0].starts.tolist() == starts.tolist()
    store.record_forecast("clearsky", "pv", T0 + 60, starts, [0.0, np.nan, 0.7, 1.0])
    last = store.forecast_records(kind="pv", since=T0)
    assert len(last) == 1 and np.isnan(last[0].values[1])
    assert store.prune_forecasts(T0) == 1


def test_plans_are_kept_with_their_metadata_and_the_last_one_survives_pruning(store):
    first = {"generated_at": "2025-01-01T00:00:00-08:00", "status": "optimal",
             "objective": -1.25, "solver": "highs", "solve_seconds": 0.4, "intervals": []}
    store.save_plan(first, saved_at=100.0)
    store.save_plan({**first, "objective": -2.0}, saved_at=200.0)
    last = store.last_plan()
    assert last.objective == -2.0 and last.status == "optimal" and last.saved_at == 200.0
    assert last.plan["generated_at"] == "2025-01-01T00:00:00-08:00"
    assert [p.objective for p in store.plans(since=0)] == [-1.25, -2.0]
    assert store.prune_plans(before=1e9) == 1
    assert store.last_plan().id == last.id


def test_settings_writes_and_their_verification_round_trip(store):
    want = Settings(Mode.TIME_BASED, 35.0, True, ExportRule.BATTERY_OK)
    sent = Settings(Mode.TIME_BASED, 40.0, True, ExportRule.BATTERY_OK)
    done = ApplyResult(requested=want, applied=sent, written=("reserve_percent", "mode"),
                       verified=True, notes=("reserve raised to the floor 40 %",))
    skipped = ApplyResult(requested=want, applied=None, skipped="dry run")
    failed = ApplyResult(requested=want, applied=sent, errors=("HTTP 503",))
    for at, r in ((100.0, done), (200.0, skipped), (300.0, failed)):
        store.record_write(r, at)
    got = store.writes(since=150.0)
    assert [w.at for w in got] == [200.0, 300.0]
    assert [w.result for w in store.writes(since=0)] == [done, skipped, failed]


def test_a_billing_state_snapshot_round_trips(store):
    from optimizer.billing import billing_state
    from optimizer.tariff import load_tariff
    from trueup.example import example_year

    data = example_year(2025)
    tariff = load_tariff("pge-ev2a-nem2ps-2024")
    march = billing_state(tariff, data.select(data.start_utc < T0 + 75 * DAY))
    april = billing_state(tariff, data.select(data.start_utc < T0 + 100 * DAY))
    store.save_billing_state(april)
    store.save_billing_state(march)
    store.save_billing_state(march)  # the same as_of replaces
    assert store.billing_state() == april
    assert store.billing_state(as_of=march.as_of_utc) == march
    assert store.billing_state(as_of=T0) is None


def test_raw_readings_round_trip_and_are_pruned(store):
    full = SiteState(timestamp=T0 + 1.5, source="local", soc_percent=55.0, solar_w=1200.0,
                     home_w=800.0, battery_w=-400.0, grid_w=0.0, grid_status="up",
                     grid_import_wh=1e6, grid_export_wh=2e5,
                     settings=CurrentSettings(Mode.SELF_POWERED, 20.0, False,
                                              ExportRule.PV_ONLY))
    sparse = SiteState(timestamp=T0 + 61.5, source="cloud", soc_percent=54.0,
                       unknown={"solar_w": "HTTP 503"})
    assert store.add_readings([full, sparse, full]) == 3  # a re-read replaces
    assert store.readings(T0, T0 + 120) == [full, sparse]
    assert store.prune_readings(T0 + 60) == 1
    assert store.readings(T0, T0 + 120) == [sparse]


# --------------------------------------------------------------------------------------
# trueup import --usage


@pytest.fixture(scope="module")
def january_csv(tmp_path_factory):
    from trueup.example import example_year, write_csv

    data = example_year(2025)
    path = tmp_path_factory.mktemp("usage") / "pge-january.csv"
    write_csv(data.select(data.start_utc < T0 + 31 * DAY + 8 * 3600), path)
    return path


def test_import_stores_the_utility_data_and_reports_counts_span_and_what_is_missing(
        january_csv, tmp_path, capsys):
    args = ["import", "--usage", str(january_csv), "--data-dir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2,976 intervals of 15 min: 2,976 new, 0 replaced, 0 unchanged" in out
    assert "2025-01-01T08:00Z – 2025-02-01T08:00Z" in out
    assert "(2025-01-01 00:00 PST – 2025-02-01 00:00 PST, 31 d)" in out
    assert "missing in the span: nothing" in out
    assert "after the span, up to now:" in out
    assert main(args) == 0  # again: nothing changes
    assert "0 new, 0 replaced, 2,976 unchanged" in capsys.readouterr().out
    with Store(tmp_path / DB_FILE) as s:
        back = s.intervals(T0, T0 + 40 * DAY)
        assert len(back) == 2976 and back.interval_s == 900
        assert [i.file for i in s.utility_imports()] == ["pge-january.csv"] * 2


def test_import_with_gaps_needs_allow_gaps_and_then_lists_them(tmp_path, capsys):
    csv = tmp_path / "gappy.csv"
    rows = ["timestamp,import_kwh,export_kwh"]
    for k in list(range(0, 8)) + list(range(12, 16)):  # 02:00–03:00 local missing
        rows.append(f"2025-01-01T{k // 4:02d}:{15 * (k % 4):02d}:00-08:00,0.2,0.0")
    csv.write_text("\n".join(rows) + "\n")
    args = ["import", "--usage", str(csv), "--data-dir", str(tmp_path / "d")]
    assert main(args) == 2
    assert "gap" in capsys.readouterr().err
    assert main([*args, "--allow-gaps"]) == 0
    out = capsys.readouterr().out
    assert "missing from the utility data in the span: 1 gap(s), 1 h in all" in out
    assert "2025-01-01T10:00Z – 2025-01-01T11:00Z (2025-01-01 02:00 PST" in out


def test_import_into_a_corrupt_store_exits_2_and_leaves_it_alone(january_csv, tmp_path,
                                                                 capsys):
    db = tmp_path / DB_FILE
    db.write_bytes(b"this is not a database" * 100)
    before = fingerprint(db)
    assert main(["import", "--usage", str(january_csv), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(db) in err and "not a SQLite database" in err and "fix:" in err
    assert fingerprint(db) == before


def test_two_stores_creating_the_same_new_file_at_once_both_succeed(tmp_path):
    path = tmp_path / DB_FILE
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            with Store(path) as s:
                s.add_intervals(series(0, 12, 0.1), "local")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store(path) as s:
        assert s.schema_version == schema_version()
        assert len(s.intervals(T0, T0 + DAY)) == 12


def test_a_data_dir_that_cannot_be_created_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot create the data directory"):
        open_store(blocker / "trueup")
