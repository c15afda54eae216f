"""Generated bad input through the real command line (``main(argv)``): usage CSVs, tariff
TOML, trueup.toml, URDB JSON and CLI dates.

Whatever the input, the answer is either valid — exit 0, every figure finite, and a figure
beyond what a home can bill ($50,000 a year) comes with a warning — or a clear error: exit
2, one ``error: …`` naming where and a ``fix:``, never a traceback. Exit 1 (a bug: an
exception nobody turned into a message) fails the test, as does any exception escaping
``main``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.tariff import bundled_path
from trueup.cli import main

URDB = Path(__file__).parent / "data" / "urdb" / "tou_two_seasons.json"
IMPLAUSIBLE_DOLLARS = 50_000.0
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# cells a broken or misread file holds
NUMBERS = st.sampled_from(["0.25", "0", "-0.3", "nan", "inf", "-inf", "1e308", "1e12", "250",
                           "1800.0", "", "x", "1,5", "1,234.5", "0x10", "1e-320", "  0.1 ",
                           "NaN", "9" * 400])
STAMPS = st.sampled_from(["2025-07-01T{h:02d}:00:00-07:00", "2025-07-01T{h:02d}:00:00",
                          "2025-07-01 {h:02d}:00", "2025-13-01T{h:02d}:00:00Z",
                          "2025-07-01T{h:02d}:00:00Z", "2025-07-01T{h:02d}:30:00Z", "junk",
                          "0001-01-01T{h:02d}:00:00Z", "9999-12-31T{h:02d}:00:00Z"])


def figures(obj):
    """Every number in a JSON document."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield float(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from figures(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from figures(v)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc in (0, 2), f"exit {rc} (a bug) for {argv}:\n{err}"
    assert "Traceback" not in err
    if rc == 2:
        assert err.startswith("error: ") and "fix: " in err, err
    return rc, out, err


def check_answer(out: str, err: str) -> None:
    """A valid JSON answer: finite figures; an implausible one only with a warning."""
    doc = json.loads(out)
    values = list(figures(doc))
    assert all(math.isfinite(v) for v in values), "a non-finite figure"
    if any(abs(v) > IMPLAUSIBLE_DOLLARS for v in values):
        assert doc.get("notes") or "warning:" in err, "an implausible figure without a warning"


@SETTINGS
@given(rows=st.lists(st.tuples(STAMPS, NUMBERS, NUMBERS), min_size=1, max_size=30),
       header=st.sampled_from(["timestamp,import_kwh,export_kwh",
                               "timestamp,import_kwh,export_kwh,load_kwh",
                               "timestamp,import,export", "timestamp;import_kwh;export_kwh",
                               ""]))
def test_a_usage_csv_gives_a_valid_bill_or_a_clear_error(tmp_path, capsys, rows, header):
    f = tmp_path / "usage.csv"
    body = [f"{stamp.format(h=h % 24)},{a},{b}" for h, (stamp, a, b) in enumerate(rows)]
    f.write_text("\n".join([header, *body]) + "\n")
    rc, out, err = run(["bill", "--tariff", "pge-ev2a-nem2-2024", "--usage", str(f),
                        "--allow-gaps", "--json"], capsys)
    if rc == 0:
        check_answer(out, err)


GOOD_CSV = "timestamp,import_kwh,export_kwh\n" + "".join(
    f"2025-07-01T{h:02d}:00:00-07:00,{0.5 + 0.1 * (h % 5):.2f},{0.3 if 9 < h < 16 else 0}\n"
    for h in range(24))
TARIFF_VALUES = st.sampled_from(["nan", "inf", "-inf", "-1", "1e308", "0", "65.8", "'x'",
                                 "[]", "{}", "true", "0.9", "-0.01", "1e-9"])


@SETTINGS
@given(data=st.data())
def test_a_tariff_file_gives_a_valid_bill_or_a_clear_error(tmp_path, capsys, data):
    """One number of a bundled tariff replaced, or one line dropped or doubled."""
    lines = bundled_path("pge-ev2a-nem2ps-2024").read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    how = data.draw(st.sampled_from(["value", "drop", "double"]), label="how")
    if how == "value" and "=" in lines[i] and not lines[i].lstrip().startswith("["):
        key = lines[i].split("=", 1)[0]
        lines[i] = f"{key}= {data.draw(TARIFF_VALUES, label='value')}"
    elif how == "drop":
        del lines[i]
    else:
        lines.insert(i, lines[i])
    tariff, usage = tmp_path / "t.toml", tmp_path / "u.csv"
    tariff.write_text("\n".join(lines) + "\n")
    usage.write_text(GOOD_CSV)
    rc, out, err = run(["bill", "--tariff", str(tariff), "--usage", str(usage), "--json"],
                       capsys)
    if rc == 0:
        check_answer(out, err)


CONFIG_LINES = st.sampled_from([
    "[battery]", "[optimizer]", "[safety]", "[http]", "[gateway]", "[site]", "[[pv]]",
    "usable_kwh = -5", "usable_kwh = nan", "backup_floor_percent = 140",
    "backup_floor_percent = 20", "horizon_hours = 0", "horizon_hours = 12",
    "step_minutes = 7", "export_cap_kwh = [1, 2]", "export_cap_kwh = [nan]",
    "kill_switch = 'yes'", "kill_switch = true", 'bind = "localhost"',
    'bind = "127.0.0.1:99999"', "max_writes_per_day = -1", "kw_dc = 1e308",
    "latitude = 123", "timezone = 'Mars/Base'", "solver = 'gurobi'", "true_up_month = 13",
    "mode = 'teleport'", "units = 0", 'tariff = "nope"', "= 3", "x ="])


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(CONFIG_LINES, min_size=1, max_size=6))
def test_a_config_file_gives_a_plan_or_a_clear_error(tmp_path, capsys, lines):
    f = tmp_path / "trueup.toml"
    f.write_text("\n".join(lines) + "\n")
    rc, out, _ = run(["plan", "--config", str(f), "--at", "2025-07-01T12:00-07:00",
                        "--soc", "50", "--json"], capsys)
    if rc == 0:
        doc = json.loads(out)
        assert all(math.isfinite(v) for v in figures(doc.get("settings", [])))


URDB_VALUES = st.sampled_from([None, -1, "x", [], {}, 1e308, float("nan"), 0, [[1]], [[]],
                               [[{"rate": "x"}]], 99])


@SETTINGS
@given(data=st.data())
def test_a_urdb_file_gives_a_tariff_or_a_clear_error(tmp_path, capsys, data):
    """One field of the fixture's first rate deleted or given a wrong value."""
    doc = json.loads(URDB.read_text())
    item = doc["items"][0] if isinstance(doc, dict) and "items" in doc else doc[0]
    key = data.draw(st.sampled_from(sorted(item)), label="key")
    if data.draw(st.booleans(), label="delete"):
        del item[key]
    else:
        item[key] = data.draw(URDB_VALUES, label="value")
    f, out_file = tmp_path / "rate.json", tmp_path / "out.toml"
    f.write_text(json.dumps(doc))
    rc, _, _ = run(["tariff", "import-urdb", str(f), "-o", str(out_file)], capsys)
    if rc == 0:  # what it wrote is a tariff trueup reads
        run(["tariff", "show", str(out_file)], capsys)


@pytest.mark.parametrize("argv", [
    ["plan", "--at", "2025-02-30T12:00-08:00"], ["plan", "--at", "yesterday"],
    ["plan", "--at", "2025-07-01T12:00+25:00"], ["plan", "--at", ""],
    ["backtest", "--start", "2025-02-30", "--days", "1"],
    ["backtest", "--start", "2025-07-01", "--days", "0"],
    ["backtest", "--start", "2025-07-01", "--days", "-3"],
    ["backtest", "--start", "1999-01-01", "--days", "1"],
    ["backtest", "--start", "9999-12-31", "--days", "1"],
    ["bill", "--tariff", "pge-ev2a-nem2-2024", "--usage", "/nonexistent.csv"],
    ["bill", "--tariff", "pge-ev2a-nem2-2024", "--usage", "/"],
    ["bill", "--tariff", "/", "--usage", "/nonexistent.csv"],
])
def test_bad_dates_and_paths_on_the_command_line_are_clear_errors(argv, capsys):
    rc, _, err = run([*argv] + (["--strategy", "self_powered"] if argv[0] == "backtest"
                                else []), capsys)
    assert rc == 2, err
