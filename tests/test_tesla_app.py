"""The Tesla app energy export reader (adapters/usage/tesla_app.py).

Where the layout comes from: no specification is published, so the sample files in
tests/data/tesla/ are written (with our own numbers) to the layout of Day-view files exported
from the app and published in the craigahobbs/tespo repository (``data-raw/2023-03-25.csv``;
the DST days ``scenarios/powerwall/seattle/2022-03-13.csv`` and ``2022-11-06.csv``):
``Date time,Home (kW),Solar (kW),Powerwall (kW),Grid (kW),Energy Remaining (%)``, one row per
5 minutes, ISO 8601 times with the UTC offset in force, 0.1 kW resolution, Energy Remaining
filled every 15 minutes, Grid positive = import, Powerwall positive = discharging. The
month-view sample follows the daily-kWh files in craigahobbs/solar (``data-raw/2025-03.csv``).
The reader's module docstring lists every source; docs/formats.md, 'Tesla app export',
describes the layout.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from adapters.usage import read_tesla_app_csv, read_usage, sniff_format
from optimizer.errors import UsageError
from trueup.cli import main

DATA = Path(__file__).parent / "data" / "tesla"
LA = ZoneInfo("America/Los_Angeles")
HEADER = "Date time,Home (kW),Solar (kW),Powerwall (kW),Grid (kW),Energy Remaining (%)"


def utc(s: str) -> int:
    return int(datetime.fromisoformat(s).timestamp())


def raises_at(fn, where: str, phrase: str) -> UsageError:
    with pytest.raises(UsageError) as ei:
        fn()
    msg = str(ei.value)
    assert where in msg, msg
    assert phrase in msg, msg
    return ei.value


def write(tmp_path, name: str, lines: list[str]) -> str:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


def tesla_rows(start: datetime, n: int, home=1.2, solar=0.0, powerwall=0.0, grid=None):
    """n Day-view rows from a zone-aware start, 5 minutes apart (Grid balances by default)."""
    g = home - solar - powerwall if grid is None else grid
    return [f"{(start + timedelta(minutes=5 * k)).isoformat()},{home:g},{solar:g},"
            f"{powerwall:g},{g:g}," for k in range(n)]


def test_twelve_five_minute_rows_of_1_2_kw_home_are_0_1_kwh_each():
    """1.2 kW for 5 minutes = 1.2 × 5/60 = 0.1 kWh. The first 6 rows the Powerwall carries
    the home (battery 0.1 kWh discharged each), the last 6 the grid (0.1 kWh imported)."""
    d = read_tesla_app_csv(DATA / "day-night-hour.csv")
    assert d.interval_s == 300
    assert len(d) == 12
    assert d.start_utc[0] == utc("2024-06-01T07:00:00Z")  # 00:00-07:00, the interval start
    assert np.all(np.diff(d.start_utc) == 300)
    assert d.load_kwh == pytest.approx([0.1] * 12)
    assert d.battery_kwh == pytest.approx([0.1] * 6 + [0.0] * 6)
    assert d.import_kwh == pytest.approx([0.0] * 6 + [0.1] * 6)
    assert d.export_kwh == pytest.approx([0.0] * 12)
    assert d.pv_kwh == pytest.approx([0.0] * 12)
    assert d.load_kwh.sum() == pytest.approx(1.2)
    assert any("ignored column(s) ['Energy Remaining (%)']" in n for n in d.notes)


# midday hour: 6 rows of Home 1.2, Solar 6.0, Powerwall -2.4 (charging), Grid -2.4 (export),
# then 6 rows of Home 3.6, Solar 1.2, Powerwall 1.2, Grid 1.2 (import). Per row, kW × 5/60:
MIDDAY = {
    "import_kwh": [0.0] * 6 + [0.1] * 6,
    "export_kwh": [0.2] * 6 + [0.0] * 6,
    "load_kwh": [0.1] * 6 + [0.3] * 6,
    "pv_kwh": [0.5] * 6 + [0.1] * 6,
    "battery_kwh": [-0.2] * 6 + [0.1] * 6,
}


def test_app_signs_grid_negative_is_export_and_powerwall_negative_is_charging():
    d = read_tesla_app_csv(DATA / "day-midday-app-signs.csv")
    for name, want in MIDDAY.items():
        assert getattr(d, name) == pytest.approx(want), name
    assert not any("reversed" in n for n in d.notes)


def test_reversed_signs_are_detected_from_the_balance_and_noted():
    """Grid positive = export and Powerwall positive = charging (both negated): only then
    does Home = Solar − Powerwall − Grid hold, so the file reads to the same kWh."""
    d = read_tesla_app_csv(DATA / "day-midday-reversed-signs.csv")
    for name, want in MIDDAY.items():
        assert getattr(d, name) == pytest.approx(want), name
    assert any("signs are reversed from the app's" in n and "12 of 12 rows" in n
               for n in d.notes)
    # forcing the app's convention on it fails the balance, naming the first row
    raises_at(lambda: read_tesla_app_csv(DATA / "day-midday-reversed-signs.csv",
                                         signs="tesla"),
              f"{DATA / 'day-midday-reversed-signs.csv'}:2",
              "Home ≠ Solar + Powerwall + Grid in 12 of 12 rows")


def test_spring_forward_offsets_make_the_skipped_hour_no_gap():
    """01:55-08:00 is followed by 03:00-07:00: five minutes later in UTC."""
    d = read_tesla_app_csv(DATA / "spring-forward.csv")
    assert len(d) == 12
    assert d.start_utc[0] == utc("2024-03-10T09:30:00Z")
    assert d.start_utc[-1] == utc("2024-03-10T10:25:00Z")
    assert np.all(np.diff(d.start_utc) == 300)
    assert d.load_kwh.sum() == pytest.approx(12 * 0.05)  # 0.6 kW × 5/60 h


def test_fall_back_repeated_hour_is_read_twice_by_its_offsets():
    """01:30–01:55 at -07:00 (0.6 kW), then 01:00–01:25 again at -08:00 (1.2 kW)."""
    d = read_tesla_app_csv(DATA / "fall-back.csv")
    assert d.start_utc[0] == utc("2024-11-03T08:30:00Z")
    assert d.start_utc[6] == utc("2024-11-03T09:00:00Z")
    assert np.all(np.diff(d.start_utc) == 300)
    assert d.import_kwh == pytest.approx([0.05] * 6 + [0.1] * 6)


def test_times_without_offsets_are_local_with_the_zone_and_the_fall_back_hour_folds(
        tmp_path):
    """A spreadsheet that drops the offsets: the repeated 01:xx hour is read first as PDT,
    then as PST (the note says so); without a zone the file is refused at the row."""
    first = [f"2024-11-03T01:{m:02d}:00,0.6,0,0,0.6," for m in range(0, 60, 5)]
    again = [f"2024-11-03T01:{m:02d}:00,1.2,0,0,1.2," for m in range(0, 60, 5)]
    p = write(tmp_path, "naive.csv", [HEADER, *first, *again])
    d = read_tesla_app_csv(p, tz="America/Los_Angeles")
    assert d.start_utc[0] == utc("2024-11-03T08:00:00Z")  # 01:00 PDT
    assert d.start_utc[12] == utc("2024-11-03T09:00:00Z")  # 01:00 PST
    assert np.all(np.diff(d.start_utc) == 300)
    assert d.import_kwh == pytest.approx([0.05] * 12 + [0.1] * 12)
    assert any("DST fall-back" in n for n in d.notes)
    e = raises_at(lambda: read_tesla_app_csv(p), f"{p}:2", "has no UTC offset")
    assert "--timezone" in e.fix


def test_month_view_daily_totals_are_refused_with_the_day_view_fix():
    p = DATA / "month-view.csv"
    e = raises_at(lambda: read_tesla_app_csv(p), f"{p}:3",
                  "one per day (the Week or Month view)")
    assert "cannot be billed" in str(e)
    assert "choose the Day view" in e.fix
    assert sniff_format(p) == "tesla_app"
    raises_at(lambda: read_usage(p), f"{p}:3", "energy totals in kWh")


def test_year_view_monthly_totals_are_refused(tmp_path):
    p = write(tmp_path, "year.csv", [
        "Date time,Home (kWh),Solar Energy (kWh),From Powerwall (kWh),From Grid (kWh),"
        "To Grid (kWh)",
        "2024-01-01T00:00:00-08:00,900,300,200,500,100",
        "2024-02-01T00:00:00-08:00,800,350,220,400,150",
    ])
    raises_at(lambda: read_tesla_app_csv(p), f"{p}:3", "one per month (the Year or Lifetime")


def test_missing_column_names_the_header_line_and_what_to_use():
    p = DATA / "no-grid-column.csv"
    e = raises_at(lambda: read_tesla_app_csv(p), f"{p}:1", "missing column(s) ['Grid (kW)']")
    assert "Date time,Home (kW),Solar (kW),Powerwall (kW),Grid (kW)" in e.fix


def test_a_bad_cell_names_its_line_and_column():
    p = DATA / "bad-solar-cell.csv"
    e = raises_at(lambda: read_tesla_app_csv(p), f"{p}:4",
                  "Solar (kW) (column 3) 'n/a' is not a number")
    assert "give Solar (kW) as a number of kW" in e.fix


def test_a_bad_time_and_a_unit_other_than_kw_are_refused(tmp_path):
    rows = tesla_rows(datetime(2024, 6, 1, tzinfo=LA), 3)
    rows[1] = "June 1 00:05," + rows[1].split(",", 1)[1]
    p = write(tmp_path, "t.csv", [HEADER, *rows])
    raises_at(lambda: read_tesla_app_csv(p), f"{p}:3",
              "Date time (column 1) 'June 1 00:05' is not an ISO 8601 time")
    w = write(tmp_path, "w.csv", [HEADER.replace("Grid (kW)", "Grid (W)"), *rows[:1]])
    raises_at(lambda: read_tesla_app_csv(w), f"{w}:1", "column 5 'Grid (W)' is in 'w'")


def test_joined_day_files_repeated_headers_and_any_order_read_as_one_series(tmp_path):
    """`cat day2.csv day1.csv > both.csv`: the second header is skipped, rows sorted."""
    day1 = tesla_rows(datetime(2024, 6, 1, tzinfo=LA), 288)
    day2 = tesla_rows(datetime(2024, 6, 2, tzinfo=LA), 288)
    p = write(tmp_path, "both.csv", [HEADER, *day2, HEADER, *day1])
    d = read_usage(p)  # sniffed
    assert len(d) == 576 and np.all(np.diff(d.start_utc) == 300)
    assert d.start_utc[0] == utc("2024-06-01T00:00:00-07:00")
    assert d.import_kwh.sum() == pytest.approx(2 * 24 * 1.2)
    assert any("repeated header" in n for n in d.notes)
    assert any("not in time order" in n for n in d.notes)


def test_the_same_day_joined_twice_is_a_duplicate_naming_both_lines(tmp_path):
    day = tesla_rows(datetime(2024, 6, 1, tzinfo=LA), 3)
    p = write(tmp_path, "twice.csv", [HEADER, *day, HEADER, *day])
    raises_at(lambda: read_tesla_app_csv(p), f"{p}:6", "repeats the row at line 2")


def test_a_missing_day_is_a_gap_unless_gaps_are_allowed(tmp_path):
    day1 = tesla_rows(datetime(2024, 6, 1, tzinfo=LA), 288)
    day3 = tesla_rows(datetime(2024, 6, 3, tzinfo=LA), 288)
    p = write(tmp_path, "gap.csv", [HEADER, *day1, *day3])
    raises_at(lambda: read_tesla_app_csv(p), f"{p}:290", "1 gap(s) in the data, 288 interval")
    assert len(read_tesla_app_csv(p, allow_gaps=True)) == 576


def test_interval_end_timestamps_shift_the_starts_back_one_interval():
    d = read_tesla_app_csv(DATA / "day-night-hour.csv", timestamps="end")
    assert d.start_utc[0] == utc("2024-06-01T06:55:00Z")
    assert d.load_kwh == pytest.approx([0.1] * 12)


def test_a_vehicle_column_is_added_to_load_when_it_balances(tmp_path):
    """Home 1.0 + Vehicle 6.0 = Grid 7.0: the charger is behind the meter, so it is load."""
    rows = [f"{(datetime(2024, 6, 1, 1, tzinfo=LA) + timedelta(minutes=5 * k)).isoformat()}"
            ",1.0,0,0,7.0,6.0" for k in range(12)]
    p = write(tmp_path, "ev.csv", [
        "Date time,Home (kW),Solar (kW),Powerwall (kW),Grid (kW),Vehicle (kW)", *rows])
    d = read_tesla_app_csv(p)
    assert d.load_kwh == pytest.approx([7.0 * 5 / 60] * 12)
    assert any("Home + Vehicle" in n for n in d.notes)


def test_negative_home_and_unbalanced_columns_are_refused(tmp_path):
    rows = tesla_rows(datetime(2024, 6, 1, tzinfo=LA), 4)
    rows[2] = rows[2].replace(",1.2,0,0,1.2,", ",-1.2,0,0,-1.2,")
    p = write(tmp_path, "neg.csv", [HEADER, *rows])
    raises_at(lambda: read_tesla_app_csv(p), f"{p}:4", "Home (kW) (column 2) is negative")
    odd = tesla_rows(datetime(2024, 6, 1, tzinfo=LA), 4, home=3.0, solar=0, powerwall=0,
                     grid=1.0)
    q = write(tmp_path, "odd.csv", [HEADER, *odd])
    raises_at(lambda: read_tesla_app_csv(q), f"{q}:2", "with either sign convention")


def test_watts_written_under_a_kw_header_are_refused_as_implausible(tmp_path):
    """2,400 under 'Home (kW)' is 2.4 MW: no home's service; the file is refused."""
    rows = tesla_rows(datetime(2024, 6, 1, tzinfo=LA), 4, home=2400, grid=2400)
    p = write(tmp_path, "watts.csv", [HEADER, *rows])
    raises_at(lambda: read_tesla_app_csv(p), f"{p}:2", "2,400 kW on average")


def test_sniffed_and_named_formats_reach_the_tesla_reader():
    p = DATA / "day-night-hour.csv"
    assert sniff_format(p) == "tesla_app"
    assert len(read_usage(p)) == 12
    assert len(read_usage(p, fmt="tesla")) == 12


def june_2024(tmp_path) -> Path:
    """A month of Day exports joined: Home 1.2 kW all day; Solar 6.0 kW 10:00–14:00.
    Per day: import 20 h × 1.2 kW = 24 kWh, export 4 h × 4.8 kW = 19.2 kWh; June (30 days):
    import 720 kWh, export 576 kWh."""
    lines = []
    for day in range(1, 31):
        lines.append(HEADER)
        start = datetime(2024, 6, day, tzinfo=LA)
        for k in range(288):
            t = start + timedelta(minutes=5 * k)
            solar = 6.0 if 10 <= t.hour < 14 else 0.0
            lines.append(f"{t.isoformat()},1.2,{solar:g},0,{1.2 - solar:g},")
    p = tmp_path / "tesla-june-2024.csv"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def test_bill_end_to_end_on_a_month_of_day_exports(tmp_path, capsys):
    import json

    p = june_2024(tmp_path)
    assert main(["bill", "--usage", str(p), "--tariff", "pge-ev2a-nem2-2024", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (june,) = out["months"]
    assert june["month"] == "2024-06"
    assert june["import_kwh"] == pytest.approx(720.0)
    assert june["export_kwh"] == pytest.approx(576.0)
    assert out["savings"] is not None  # load_kwh came from Home
    assert main(["bill", "--usage", str(p), "--tariff", "pge-ev2a-nem2-2024"]) == 0
    table = capsys.readouterr().out
    assert "2024-06" in table and "720" in table


def test_backtest_end_to_end_on_a_year_of_day_exports(tmp_path, capsys):
    """The backtest scores whole settlement periods, so it gets a year (2024, 105,408
    five-minute rows, both DST days by their offsets) and replays one day of it."""
    t0 = int(datetime(2024, 1, 1, tzinfo=LA).timestamp())
    t1 = int(datetime(2025, 1, 1, tzinfo=LA).timestamp())
    lines = [HEADER]
    for s in range(t0, t1, 300):
        t = datetime.fromtimestamp(s, LA)
        solar = 6.0 if 10 <= t.hour < 14 else 0.0
        lines.append(f"{t.isoformat()},1.2,{solar:g},0,{1.2 - solar:g},")
    p = write(tmp_path, "tesla-2024.csv", lines)
    assert main(["backtest", "--usage", p, "--start", "2024-06-03", "--days", "1",
                 "--strategy", "self_powered"]) == 0
    out = capsys.readouterr().out
    assert "288 intervals" in out and "self_powered" in out
