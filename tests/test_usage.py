"""Usage readers: trueup CSV, PG&E Green Button, CT registers; renet; gaps; bad input."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.usage import (
    coverage_gaps,
    read_ct_register_csv,
    read_green_button_csv,
    read_interval_csv,
    read_usage,
    renet,
    sniff_format,
)
from optimizer.errors import UsageError
from optimizer.intervals import IntervalData

LA = "America/Los_Angeles"
GB_HEADER = "TYPE,DATE,START TIME,END TIME,IMPORT (kWh),EXPORT (kWh),COST,NOTES"
GB_PREAMBLE = [
    "Name,JANE DOE",
    'Address,"1 MAIN ST, OAKLAND CA 94610"',
    "Account Number,1234567890",
    "Service,Service 1",
    "",
]  # the header is line 6, the first data row line 7


def utc(s: str) -> int:
    """UTC epoch seconds of an ISO string with offset."""
    return int(datetime.fromisoformat(s).timestamp())


def write(tmp_path, name: str, lines: list[str], *, bom: bool = False) -> str:
    p = tmp_path / name
    p.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return str(p)


def csv_rows(start: str, n: int, step_min: int, imp: float = 0.25, exp: float = 0.1) -> list[str]:
    t0 = utc(start)
    out = []
    for k in range(n):
        ts = datetime.fromtimestamp(t0 + k * step_min * 60, UTC).isoformat().replace("+00:00", "Z")
        out.append(f"{ts},{imp},{exp}")
    return out


def gb_file(tmp_path, rows: list[str], header: str = GB_HEADER, name: str = "gb.csv") -> str:
    return write(tmp_path, name, [*GB_PREAMBLE, header, *rows], bom=True)


def gb_day(day: str, hours, *, quarter: bool = False, imp: float = 1.0, exp: float = 0.0):
    rows = []
    for h in hours:
        for m0 in (0, 15, 30, 45) if quarter else (0,):
            m1 = m0 + 14 if quarter else 59
            rows.append(
                f"Electric usage,{day},{h:02d}:{m0:02d},{h:02d}:{m1:02d},{imp:.2f},{exp:.2f},$0.30,"
            )
    return rows


def raises_at(fn, where: str, phrase: str) -> UsageError:
    with pytest.raises(UsageError) as ei:
        fn()
    msg = str(ei.value)
    assert where in msg, msg
    assert phrase in msg, msg
    return ei.value


# ----------------------------------------------------------------------------------------
# trueup interval CSV
# ----------------------------------------------------------------------------------------


def test_interval_csv_reads_offsets_to_utc_with_optional_columns(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh,load_kwh,pv_kwh,battery_kwh",
            "2025-03-09T01:00:00-08:00,0.50,0.00,0.50,0.00,0.00",
            "2025-03-09T01:15:00-08:00,0.10,0.20,0.60,0.40,-0.30",
            "2025-03-09T09:30:00Z,0.00,0.05,0.40,0.45,0.00",
        ],
    )
    d = read_interval_csv(p)
    assert d.interval_s == 900
    assert d.start_utc.tolist() == [
        utc("2025-03-09T09:00:00Z"),
        utc("2025-03-09T09:15:00Z"),
        utc("2025-03-09T09:30:00Z"),
    ]
    assert d.start_utc.dtype == np.int64
    assert d.import_kwh.tolist() == [0.5, 0.1, 0.0]
    assert d.export_kwh.tolist() == [0.0, 0.2, 0.05]
    assert d.battery_kwh.tolist() == [0.0, -0.3, 0.0]  # negative = charging, allowed
    assert d.load_kwh is not None and d.pv_kwh is not None
    assert d.source == p


def test_interval_csv_infers_five_minute_interval_and_spans_spring_forward(tmp_path):
    # local clock jumps 01:55 PST -> 03:00 PDT; the UTC starts stay 5 minutes apart
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh",
            "2025-03-09T01:50:00-08:00,0.1,0",
            "2025-03-09T01:55:00-08:00,0.1,0",
            "2025-03-09T03:00:00-07:00,0.1,0",
        ],
    )
    d = read_interval_csv(p)
    assert d.interval_s == 300
    assert np.diff(d.start_utc).tolist() == [300, 300]
    assert d.load_kwh is None and d.notes == ()


def test_interval_csv_ignores_extra_columns_with_a_note(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh,cost",
            *[r + ",1.0" for r in csv_rows("2025-01-01T00:00:00Z", 3, 60)],
        ],
    )
    d = read_interval_csv(p)
    assert any("ignored column(s) ['cost']" in n for n in d.notes)


def test_interval_csv_bad_number_names_line_and_column(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 4, 15)
    rows[2] = rows[2].replace("0.25", "abc")
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    raises_at(lambda: read_interval_csv(p), f"{p}:4", "import_kwh 'abc' is not a number")


def test_interval_csv_nan_is_an_error_not_a_value(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 3, 15)
    rows[0] = rows[0].replace("0.1", "nan")
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    raises_at(lambda: read_interval_csv(p), f"{p}:2", "export_kwh 'nan' is not a finite number")


def test_interval_csv_empty_cell_is_an_error_not_a_zero(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 3, 15)
    rows[1] = rows[1].replace(",0.1", ",")
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    raises_at(lambda: read_interval_csv(p), f"{p}:3", "export_kwh is empty")


def test_decimal_comma_is_refused_but_thousands_separator_is_read(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh",
            '2025-01-01T00:00:00Z,"1,234.5",0',
            '2025-01-01T01:00:00Z,"1,5",0',
        ],
    )
    raises_at(lambda: read_interval_csv(p), f"{p}:3", "import_kwh '1,5' is not a number")
    p2 = write(
        tmp_path,
        "u2.csv",
        [
            "timestamp,import_kwh,export_kwh",
            '2025-01-01T00:00:00Z,"1,234.5",0',  # daily: 51 kW on average, plausible
            "2025-01-02T00:00:00Z,1.5,0",
        ],
    )
    assert read_interval_csv(p2).import_kwh.tolist() == [1234.5, 1.5]


def test_interval_csv_bad_timestamp_is_reported(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 3, 15)
    rows[1] = "01/01/2025 00:15,0.25,0.1"
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    raises_at(lambda: read_interval_csv(p), f"{p}:3", "'01/01/2025 00:15' is not ISO 8601")


def test_interval_csv_timestamp_without_offset_is_refused(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh",
            "2025-01-01T00:00:00-08:00,1,0",
            "2025-01-01T00:15:00,1,0",
        ],
    )
    e = raises_at(lambda: read_interval_csv(p), f"{p}:3", "has no UTC offset")
    assert "2025-03-09T01:45:00-08:00" in e.fix


def test_interval_csv_duplicate_timestamp_names_both_lines(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 3, 15)
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows, rows[-1]])
    raises_at(lambda: read_interval_csv(p), f"{p}:5", "repeats the row at line 4")


def test_interval_csv_same_instant_in_two_offsets_is_a_duplicate(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh",
            "2025-01-01T00:00:00-08:00,1,0",
            "2025-01-01T08:00:00Z,1,0",
        ],
    )
    raises_at(lambda: read_interval_csv(p), f"{p}:3", "repeats the row at line 2")


def test_interval_csv_rows_out_of_order_are_refused(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 4, 15)
    rows[1], rows[2] = rows[2], rows[1]
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    e = raises_at(lambda: read_interval_csv(p), f"{p}:4", "is earlier than the row before it")
    assert "sort the rows oldest first" in e.fix


def test_interval_csv_odd_step_is_mixed_intervals(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh",
            "2025-01-01T00:00:00Z,1,0",
            "2025-01-01T00:15:00Z,1,0",
            "2025-01-01T00:30:00Z,1,0",
            "2025-01-01T00:35:00Z,1,0",
        ],
    )
    raises_at(lambda: read_interval_csv(p), f"{p}:5", "mixed intervals")


def test_interval_csv_hourly_section_in_15_minute_file_is_mixed_not_gaps(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 8, 15) + csv_rows("2025-01-01T03:00:00Z", 4, 60)
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    raises_at(
        lambda: read_interval_csv(p),
        f"{p}:11",
        "rows from line 10 to line 13 are 1 h apart, but the file's interval is 15 min",
    )


def test_interval_csv_negative_export_is_refused(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 3, 15)
    rows[2] = rows[2].replace(",0.1", ",-0.1")
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    raises_at(lambda: read_interval_csv(p), f"{p}:4", "export_kwh is negative (-0.1 kWh)")


def test_interval_csv_negative_pv_is_refused(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh,pv_kwh",
            "2025-01-01T00:00:00Z,1,0,0",
            "2025-01-01T00:15:00Z,1,0,-0.2",
        ],
    )
    raises_at(lambda: read_interval_csv(p), f"{p}:3", "pv_kwh is negative")


def test_interval_csv_collects_several_row_errors_with_their_lines(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 8, 15)
    rows[1] = rows[1].replace("0.25", "x")
    rows[3] = rows[3].replace("Z", "")
    rows[5] = rows[5].replace("0.25", "-1")
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    e = raises_at(lambda: read_interval_csv(p), f"{p}:3", "import_kwh 'x' is not a number")
    msg = str(e)
    assert f"{p}:5: timestamp" in msg and "has no UTC offset" in msg
    assert f"{p}:7: import_kwh is negative" in msg
    assert [w for w, _, _ in e.problems] == [f"{p}:3", f"{p}:5", f"{p}:7"]


def test_interval_csv_stops_after_ten_problems(tmp_path):
    rows = [r.replace("0.25", "?") for r in csv_rows("2025-01-01T00:00:00Z", 30, 15)]
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    e = raises_at(lambda: read_interval_csv(p), f"{p}:2", "stopped after 10 problems")
    assert len(e.problems) == 10


def test_interval_csv_empty_file_is_an_error(tmp_path):
    p = write(tmp_path, "u.csv", [""])
    raises_at(lambda: read_interval_csv(p), p, "the file is empty")


def test_interval_csv_header_only_is_an_error(tmp_path):
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh"])
    raises_at(lambda: read_interval_csv(p), f"{p}:1", "no data rows")


def test_interval_csv_missing_columns_names_found_and_expected(tmp_path):
    p = write(tmp_path, "u.csv", ["time,import_kwh,exports", "2025-01-01T00:00:00Z,1,0"])
    e = raises_at(
        lambda: read_interval_csv(p),
        f"{p}:1",
        "missing required column(s) ['timestamp', 'export_kwh']",
    )
    assert "found ['time', 'import_kwh', 'exports']" in str(e)


def test_interval_csv_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "u.csv"
    p.write_bytes(b"timestamp,import_kwh,export_kwh\n2025-01-01T00:00:00Z,1,0\n\xff\xfe,1,0\n")
    raises_at(lambda: read_interval_csv(p), f"{p}:3", "not UTF-8")


def test_interval_csv_gap_is_an_error_listing_the_gap(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 8, 15)
    del rows[3:5]  # 00:45 and 01:00 missing
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    e = raises_at(
        lambda: read_interval_csv(p),
        f"{p}:5",
        "1 gap(s) in the data, 2 interval(s) (0.50 h) missing: "
        "2025-01-01T00:45Z–2025-01-01T01:15Z (2 intervals)",
    )
    assert "allow_gaps=True" in e.fix


def test_interval_csv_allow_gaps_keeps_only_real_rows_and_notes_an_estimate(tmp_path):
    rows = csv_rows("2025-01-01T00:00:00Z", 96, 15, imp=0.25, exp=0.1)
    del rows[40:42]  # 10:00 and 10:15 UTC
    p = write(tmp_path, "u.csv", ["timestamp,import_kwh,export_kwh", *rows])
    d = read_interval_csv(p, allow_gaps=True)
    assert len(d) == 94 and d.interval_s == 900
    assert d.import_kwh.sum() == pytest.approx(94 * 0.25)  # nothing invented
    assert coverage_gaps(d) == [(utc("2025-01-01T10:00:00Z"), utc("2025-01-01T10:30:00Z"))]
    notes = "\n".join(d.notes)
    assert "1 gap(s), 0.50 h missing in total" in notes
    assert "NOT billed" in notes and "nothing is filled in" in notes
    assert (
        "gap 2025-01-01T10:00Z–2025-01-01T10:30Z: 0.50 h (2 intervals) missing; "
        "ESTIMATE (not billed) at the mean rate of the 24 h either side (94 intervals): "
        "import ≈ 0.50 kWh, export ≈ 0.20 kWh"
    ) in notes


def test_interval_csv_reads_a_year_of_5_minute_rows_quickly(tmp_path):
    t0 = utc("2025-01-01T00:00:00-08:00")
    n = 105_120
    lines = ["timestamp,import_kwh,export_kwh"]
    lines += [
        f"{datetime.fromtimestamp(t0 + 300 * k, UTC).isoformat()},0.042,0.013" for k in range(n)
    ]
    p = write(tmp_path, "year.csv", lines)
    t = time.perf_counter()
    d = read_interval_csv(p)
    elapsed = time.perf_counter() - t
    assert len(d) == n and d.interval_s == 300
    assert elapsed < 2.0, f"{elapsed:.2f} s"


# ----------------------------------------------------------------------------------------
# PG&E Green Button
# ----------------------------------------------------------------------------------------


def test_green_button_nem_hourly_reads_local_times_to_utc(tmp_path):
    p = gb_file(
        tmp_path,
        [
            "Electric usage,2025-03-20,00:00,00:59,2.94,0.00,$1.02,",
            "Electric usage,2025-03-20,01:00,01:59,1.10,0.00,$0.38,",
            "Electric usage,2025-03-20,02:00,02:59,0.00,0.35,-$0.10,",
        ],
    )
    d = read_green_button_csv(p)
    assert d.interval_s == 3600
    assert d.start_utc.tolist() == [
        utc("2025-03-20T07:00:00Z"),  # local midnight, PDT (UTC-7)
        utc("2025-03-20T08:00:00Z"),
        utc("2025-03-20T09:00:00Z"),
    ]
    assert d.import_kwh.tolist() == [2.94, 1.10, 0.0]
    assert d.export_kwh.tolist() == [0.0, 0.0, 0.35]
    assert d.notes == ()


def test_green_button_accepts_kwh_spelling_without_cost_column(tmp_path):
    p = gb_file(
        tmp_path,
        [
            "Electric usage,2025-06-01,12:00,12:14,0.00,0.80,",
            "Electric usage,2025-06-01,12:15,12:29,0.10,0.70,",
        ],
        header="TYPE,DATE,START TIME,END TIME,IMPORT (KWh),EXPORT (KWh),NOTES",
    )
    d = read_green_button_csv(p)
    assert d.interval_s == 900
    assert d.export_kwh.tolist() == [0.8, 0.7]
    assert d.start_utc[0] == utc("2025-06-01T12:00:00-07:00")


def test_green_button_usage_only_file_is_import_with_zero_export(tmp_path):
    p = gb_file(
        tmp_path,
        [
            "Electric usage,2025-01-10,00:00,00:59,0.52,$0.15,",
            "Electric usage,2025-01-10,01:00,01:59,0.48,$0.14,",
        ],
        header="TYPE,DATE,START TIME,END TIME,USAGE (kWh),COST,NOTES",
    )
    d = read_green_button_csv(p)
    assert d.import_kwh.tolist() == [0.52, 0.48]
    assert d.export_kwh.tolist() == [0.0, 0.0]
    assert d.start_utc[0] == utc("2025-01-10T00:00:00-08:00")


def test_green_button_negative_usage_becomes_export_with_a_note(tmp_path):
    p = gb_file(
        tmp_path,
        [
            "Electric usage,2025-06-10,12:00,12:59,-0.75,$0.00,",
            "Electric usage,2025-06-10,13:00,13:59,0.25,$0.10,",
        ],
        header="TYPE,DATE,START TIME,END TIME,USAGE (kWh),COST,NOTES",
    )
    d = read_green_button_csv(p)
    assert d.import_kwh.tolist() == [0.0, 0.25]
    assert d.export_kwh.tolist() == [0.75, 0.0]
    assert any("negative USAGE" in n and "0.750 kWh" in n for n in d.notes)


def test_green_button_fall_back_day_has_25_hourly_intervals_in_utc_order(tmp_path):
    hours = [0, 1, 1, *range(2, 24)]
    p = gb_file(tmp_path, gb_day("2025-11-02", hours))
    d = read_green_button_csv(p, tz=LA)
    assert len(d) == 25
    first = utc("2025-11-02T00:00:00-07:00")  # 07:00Z
    assert d.start_utc.tolist() == [first + 3600 * k for k in range(25)]
    assert d.start_utc[1] == utc("2025-11-02T01:00:00-07:00")  # first 01:00 = PDT
    assert d.start_utc[2] == utc("2025-11-02T01:00:00-08:00")  # second 01:00 = PST
    assert d.import_kwh.sum() == pytest.approx(25.0)
    assert any("2025-11-02: DST fall-back" in n and "PDT, then as PST" in n for n in d.notes)


def test_green_button_fall_back_day_has_100_quarter_hours(tmp_path):
    hours = [0, 1, 1, *range(2, 24)]
    p = gb_file(tmp_path, gb_day("2025-11-02", hours, quarter=True, imp=0.25))
    d = read_green_button_csv(p)
    assert len(d) == 100 and d.interval_s == 900
    first = utc("2025-11-02T00:00:00-07:00")
    assert d.start_utc.tolist() == [first + 900 * k for k in range(100)]
    assert d.start_utc[8] == utc("2025-11-02T01:00:00-08:00")  # the repeat starts at row 9
    assert d.import_kwh.sum() == pytest.approx(25.0)


def test_green_button_spring_forward_day_has_23_hours_and_no_gap(tmp_path):
    hours = [0, 1, *range(3, 24)]
    rows = (
        gb_day("2025-03-08", range(24))
        + gb_day("2025-03-09", hours)
        + gb_day("2025-03-10", range(24))
    )
    d = read_green_button_csv(gb_file(tmp_path, rows))
    assert len(d) == 24 + 23 + 24
    assert coverage_gaps(d) == []
    assert d.start_utc[24 + 2] == utc("2025-03-09T03:00:00-07:00")
    assert d.start_utc[24 + 2] - d.start_utc[24 + 1] == 3600


def test_green_button_spring_forward_quarter_hours_give_92_intervals(tmp_path):
    p = gb_file(tmp_path, gb_day("2025-03-09", [0, 1, *range(3, 24)], quarter=True))
    d = read_green_button_csv(p)
    assert len(d) == 92 and coverage_gaps(d) == []
    assert d.start_utc[0] == utc("2025-03-09T00:00:00-08:00")
    assert d.end_utc == utc("2025-03-10T00:00:00-07:00")


def test_green_button_zero_row_for_nonexistent_hour_is_skipped_with_a_note(tmp_path):
    skipped_hour = "Electric usage,2025-03-09,02:00,02:59,0.00,0.00,$0.00,"
    rows = [*gb_day("2025-03-09", [0, 1]), skipped_hour, *gb_day("2025-03-09", [3, 4])]
    d = read_green_button_csv(gb_file(tmp_path, rows))
    assert len(d) == 4 and coverage_gaps(d) == []
    assert any(
        "2025-03-09: skipped 1 row(s) for local times that do not exist" in n
        and "02:00 (line 9)" in n
        for n in d.notes
    )


def test_green_button_nonzero_row_for_nonexistent_hour_is_an_error(tmp_path):
    skipped_hour = "Electric usage,2025-03-09,02:00,02:59,0.40,0.00,$0.12,"
    rows = [*gb_day("2025-03-09", [0, 1]), skipped_hour, *gb_day("2025-03-09", [3])]
    p = gb_file(tmp_path, rows)
    raises_at(
        lambda: read_green_button_csv(p),
        f"{p}:9",
        "local time 2025-03-09 02:00 does not exist in America/Los_Angeles",
    )


def test_green_button_missing_export_column_is_named(tmp_path):
    p = gb_file(
        tmp_path,
        ["Electric usage,2025-03-20,00:00,00:59,2.94,$1.02"],
        header="TYPE,DATE,START TIME,END TIME,IMPORT (kWh),COST",
    )
    raises_at(lambda: read_green_button_csv(p), f"{p}:6", "missing column(s) ['EXPORT']")


def test_green_button_without_header_row_is_refused(tmp_path):
    p = write(tmp_path, "gb.csv", ["Name,JANE", "", "foo,bar", "1,2"])
    raises_at(lambda: read_green_button_csv(p), p, "no Green Button header row")


def test_green_button_bad_number_and_bad_time_are_both_reported(tmp_path):
    rows = gb_day("2025-03-20", range(4))
    rows[1] = rows[1].replace("1.00", "1.0.0")
    rows[3] = rows[3].replace("03:00,", "3 pm,")
    p = gb_file(tmp_path, rows)
    e = raises_at(
        lambda: read_green_button_csv(p), f"{p}:8", "IMPORT (kWh) '1.0.0' is not a number"
    )
    assert f"{p}:10: DATE/START TIME '2025-03-20 3 pm'" in str(e)


def test_green_button_end_time_revealing_a_different_interval_is_mixed(tmp_path):
    rows = gb_day("2025-03-20", range(3))
    rows.append("Electric usage,2025-03-20,03:00,03:14,0.25,0.00,$0.10,")
    p = gb_file(tmp_path, rows)
    raises_at(
        lambda: read_green_button_csv(p),
        f"{p}:10",
        "START TIME to END TIME spans 15 min, but the file's interval is 60 min",
    )


def test_green_button_missing_hour_is_a_gap_with_local_times(tmp_path):
    p = gb_file(tmp_path, gb_day("2025-03-20", [0, 1, 2, 5, 6]))
    raises_at(
        lambda: read_green_button_csv(p),
        f"{p}:10",
        "2025-03-20T10:00Z–2025-03-20T12:00Z (2025-03-20 03:00 PDT–2025-03-20 05:00 PDT)",
    )


def test_green_button_negative_import_is_refused(tmp_path):
    p = gb_file(tmp_path, ["Electric usage,2025-03-20,00:00,00:59,-2.94,0.00,$1.02,"])
    raises_at(lambda: read_green_button_csv(p), f"{p}:7", "IMPORT (kWh) is negative")


# ----------------------------------------------------------------------------------------
# CT registers
# ----------------------------------------------------------------------------------------

CT_ROWS_BACKFED = [
    "timestamp,grid_kwh,solar_kwh",
    "2025-06-01T12:00:00-07:00,0.50,0.00",
    "2025-06-01T12:15:00-07:00,-0.30,0.80",
    "2025-06-01T12:30:00-07:00,0.10,0.20",
]


def test_ct_backfed_grid_sign_is_import_export_and_load_adds_solar(tmp_path):
    d = read_ct_register_csv(write(tmp_path, "ct.csv", CT_ROWS_BACKFED), topology="backfed")
    # grid +0.50, -0.30, +0.10 ; solar 0.00, 0.80, 0.20
    assert d.import_kwh.tolist() == pytest.approx([0.50, 0.00, 0.10])
    assert d.export_kwh.tolist() == pytest.approx([0.00, 0.30, 0.00])
    assert d.pv_kwh.tolist() == pytest.approx([0.00, 0.80, 0.20])
    assert d.load_kwh.tolist() == pytest.approx([0.50, 0.50, 0.30])  # grid + solar
    assert d.start_utc[0] == utc("2025-06-01T19:00:00Z") and d.interval_s == 900
    assert any("flow reversals inside an interval are lost" in n for n in d.notes)


def test_ct_line_side_tap_nets_solar_against_consumption(tmp_path):
    p = write(
        tmp_path,
        "ct.csv",
        [
            "timestamp,grid_kwh,solar_kwh",
            "2025-06-01T12:00:00-07:00,0.50,0.00",
            "2025-06-01T12:15:00-07:00,0.40,1.00",
            "2025-06-01T12:30:00-07:00,0.60,0.25",
        ],
    )
    d = read_ct_register_csv(p, topology="line_side_tap")
    assert d.import_kwh.tolist() == pytest.approx([0.50, 0.00, 0.35])  # max(grid - solar, 0)
    assert d.export_kwh.tolist() == pytest.approx([0.00, 0.60, 0.00])  # max(solar - grid, 0)
    assert d.load_kwh.tolist() == pytest.approx([0.50, 0.40, 0.60])  # grid
    assert d.pv_kwh.tolist() == pytest.approx([0.00, 1.00, 0.25])


def test_ct_egauge_newest_first_cumulative_registers_are_sorted_and_differenced(tmp_path):
    t0 = utc("2025-06-01T19:00:00Z")
    p = write(
        tmp_path,
        "egauge.csv",
        [
            "Date & Time,Usage [kWh],Generation [kWh],Grid [kWh],Solar [kWh]",
            f"{t0 + 2700},1.0,1.0,12000.40,5001.00",
            f"{t0 + 1800},1.0,1.0,12000.20,5001.00",
            f"{t0 + 900},1.0,1.0,12000.50,5000.20",
            f"{t0},1.0,1.0,12000.00,5000.20",
        ],
    )
    d = read_ct_register_csv(p, topology="backfed")
    # readings oldest first: grid 12000.00, .50, .20, .40 -> +0.50, -0.30, +0.20
    #                        solar 5000.20, .20, 5001.00, 5001.00 -> 0.00, 0.80, 0.00
    assert d.start_utc.tolist() == [t0, t0 + 900, t0 + 1800]
    assert d.import_kwh.tolist() == pytest.approx([0.50, 0.00, 0.20])
    assert d.export_kwh.tolist() == pytest.approx([0.00, 0.30, 0.00])
    assert d.pv_kwh.tolist() == pytest.approx([0.00, 0.80, 0.00])
    assert d.load_kwh.tolist() == pytest.approx([0.50, 0.50, 0.20])
    notes = "\n".join(d.notes)
    assert "newest first" in notes and "cumulative readings" in notes


def test_ct_egauge_local_times_need_tz_and_fold_the_fall_back_hour(tmp_path):
    lines = [
        "Date & Time,Grid [kWh],Solar [kWh]",
        "2025-11-02 02:00:00,0.40,0.00",
        "2025-11-02 01:00:00,0.30,0.00",
        "2025-11-02 01:00:00,0.20,0.00",
        "2025-11-02 00:00:00,0.10,0.00",
    ]
    p = write(tmp_path, "egauge.csv", lines)
    raises_at(
        lambda: read_ct_register_csv(p, topology="backfed"),
        f"{p}:2",
        "is a local time without a UTC offset, and no time zone was given",
    )
    d = read_ct_register_csv(p, topology="backfed", tz=LA)
    first = utc("2025-11-02T00:00:00-07:00")
    assert d.start_utc.tolist() == [first, first + 3600, first + 7200, first + 10800]
    assert d.import_kwh.tolist() == pytest.approx([0.10, 0.20, 0.30, 0.40])
    assert any("per-interval kWh" in n for n in d.notes)


def test_ct_average_power_columns_are_refused(tmp_path):
    p = write(tmp_path, "egauge.csv", ["Date & Time,Grid [kW],Solar [kW]", "1748800800,1,0"])
    raises_at(
        lambda: read_ct_register_csv(p, topology="backfed"),
        f"{p}:1",
        "column 'Grid [kW]' is average power (kW), not energy",
    )


def test_ct_line_side_negative_grid_suggests_backfed(tmp_path):
    p = write(tmp_path, "ct.csv", CT_ROWS_BACKFED)
    e = raises_at(
        lambda: read_ct_register_csv(p, topology="line_side_tap"),
        f"{p}:3",
        "grid register is negative (-0.3 kWh)",
    )
    assert "topology='backfed'" in e.fix


def test_ct_backfed_negative_load_is_an_error(tmp_path):
    p = write(
        tmp_path,
        "ct.csv",
        [
            "timestamp,grid_kwh,solar_kwh",
            "2025-06-01T12:00:00-07:00,-1.00,0.50",
            "2025-06-01T12:15:00-07:00,0.10,0.00",
        ],
    )
    raises_at(
        lambda: read_ct_register_csv(p, topology="backfed"),
        f"{p}:2",
        "load comes out negative (-0.5 kWh",
    )


def test_ct_small_negative_solar_is_kept_in_load_with_a_note(tmp_path):
    p = write(
        tmp_path,
        "ct.csv",
        [
            "timestamp,grid_kwh,solar_kwh",
            "2025-06-01T02:00:00-07:00,0.40,-0.01",
            "2025-06-01T02:15:00-07:00,0.30,0.50",
        ],
    )
    d = read_ct_register_csv(p, topology="backfed")
    assert d.pv_kwh.tolist() == pytest.approx([0.0, 0.5])
    assert d.load_kwh.tolist() == pytest.approx([0.40, 0.80])
    assert (d.import_kwh - d.export_kwh + d.pv_kwh).tolist() == pytest.approx(d.load_kwh)
    assert any("negative solar" in n for n in d.notes)


def test_ct_unknown_topology_is_refused(tmp_path):
    p = write(tmp_path, "ct.csv", CT_ROWS_BACKFED)
    raises_at(
        lambda: read_ct_register_csv(p, topology="sideways"),
        p,
        "unknown metering topology 'sideways'",
    )


def test_ct_missing_solar_column_names_what_was_found(tmp_path):
    p = write(tmp_path, "ct.csv", ["timestamp,grid_kwh,pv", "2025-06-01T12:00:00Z,1,0"])
    raises_at(
        lambda: read_ct_register_csv(p, topology="backfed"),
        f"{p}:1",
        "found ['timestamp', 'grid_kwh', 'pv']",
    )


# ----------------------------------------------------------------------------------------
# renet and coverage
# ----------------------------------------------------------------------------------------


def five_minute_hour(start: str = "2025-06-01T08:00:00Z") -> IntervalData:
    imp = [0.1 * (k + 1) for k in range(12)]  # 0.1 .. 1.2
    return IntervalData.regular(
        utc(start), 300, imp, [0.05] * 12, load_kwh=[0.2] * 12, source="five.csv"
    )


def test_renet_5_to_15_minutes_sums_gross_flows_per_utc_quarter(tmp_path):
    r = renet(five_minute_hour(), 900)
    t0 = utc("2025-06-01T08:00:00Z")
    assert r.interval_s == 900
    assert r.start_utc.tolist() == [t0, t0 + 900, t0 + 1800, t0 + 2700]
    assert r.import_kwh.tolist() == pytest.approx([0.6, 1.5, 2.4, 3.3])
    assert r.export_kwh.tolist() == pytest.approx([0.15, 0.15, 0.15, 0.15])
    assert r.load_kwh.tolist() == pytest.approx([0.6] * 4)
    assert r.pv_kwh is None


def test_renet_15_to_60_of_a_read_file_keeps_totals(tmp_path):
    p = write(
        tmp_path,
        "u.csv",
        [
            "timestamp,import_kwh,export_kwh",
            *csv_rows("2025-01-01T00:00:00-08:00", 8, 15, 0.3, 0.1),
        ],
    )
    r = renet(read_interval_csv(p), 3600)
    assert r.import_kwh.tolist() == pytest.approx([1.2, 1.2])
    assert r.start_utc[0] == utc("2025-01-01T08:00:00Z")


def test_renet_refuses_finer_or_non_multiple_targets():
    d = renet(five_minute_hour(), 900)
    raises_at(lambda: renet(d, 300), "five.csv", "cannot aggregate 15 min intervals to 5 min")
    raises_at(lambda: renet(d, 1200), "five.csv", "must be a whole multiple of 15 min")


def test_renet_partly_covered_bucket_is_an_error_unless_gaps_allowed():
    d = five_minute_hour("2025-06-01T08:05:00Z")  # 08:00 bucket has 2 of 3
    raises_at(
        lambda: renet(d, 900),
        "five.csv",
        "2 coarse 15 min interval(s) are only partly covered by the 5 min data: "
        "2025-06-01T08:00Z (2 of 3)",
    )
    r = renet(d, 900, allow_gaps=True)
    assert r.import_kwh.sum() == pytest.approx(d.import_kwh.sum())
    assert r.import_kwh[0] == pytest.approx(0.1 + 0.2)
    assert any("only partly covered" in n and "nothing filled in" in n for n in r.notes)


def test_renet_refuses_starts_off_the_utc_grid():
    d = IntervalData.regular(utc("2025-06-01T08:05:00Z"), 900, [1.0] * 8, [0.0] * 8)
    raises_at(lambda: renet(d, 3600), "usage data", "is not on a UTC multiple of 15 min")


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=48),
    st.integers(0, 11),
    st.sampled_from([900, 3600]),
)
def test_renet_preserves_total_import_with_gaps_allowed(values, shift, target):
    d = IntervalData.regular(
        utc("2025-06-01T08:00:00Z") + 300 * shift, 300, values, [0.0] * len(values)
    )
    r = renet(d, target, allow_gaps=True)
    assert r.import_kwh.sum() == pytest.approx(sum(values))
    assert (r.start_utc % target == 0).all()


def test_coverage_gaps_lists_each_missing_span():
    t0 = utc("2025-06-01T00:00:00Z")
    d = IntervalData(
        start_utc=np.array([t0, t0 + 900, t0 + 3600, t0 + 4500, t0 + 9000]),
        interval_s=900,
        import_kwh=np.ones(5),
        export_kwh=np.zeros(5),
    )
    assert coverage_gaps(d) == [(t0 + 1800, t0 + 3600), (t0 + 5400, t0 + 9000)]


# ----------------------------------------------------------------------------------------
# read_usage: sniff and dispatch
# ----------------------------------------------------------------------------------------


def test_read_usage_sniffs_each_format(tmp_path):
    ours = write(
        tmp_path,
        "u.csv",
        ["timestamp,import_kwh,export_kwh", *csv_rows("2025-01-01T00:00:00Z", 2, 60)],
    )
    gb = gb_file(tmp_path, gb_day("2025-03-20", range(2)))
    ct = write(tmp_path, "ct.csv", CT_ROWS_BACKFED)
    assert [sniff_format(x) for x in (ours, gb, ct)] == ["interval", "green_button", "ct_register"]
    assert len(read_usage(ours)) == 2
    assert read_usage(gb).start_utc[0] == utc("2025-03-20T00:00:00-07:00")
    assert read_usage(ct, topology="backfed").export_kwh.tolist() == pytest.approx([0, 0.3, 0])


def test_read_usage_accepts_the_cli_format_names(tmp_path):
    ours = write(
        tmp_path,
        "u.csv",
        ["timestamp,import_kwh,export_kwh", *csv_rows("2025-01-01T00:00:00Z", 2, 60)],
    )
    gb = gb_file(tmp_path, gb_day("2025-03-20", range(2)))
    ct = write(tmp_path, "ct.csv", CT_ROWS_BACKFED)
    assert len(read_usage(ours, fmt="csv")) == 2
    assert len(read_usage(gb, fmt="green-button", tz=LA)) == 2
    assert len(read_usage(ct, fmt="ct", tz=LA, topology="backfed")) == 3


def test_read_usage_ct_without_topology_says_which_to_pass(tmp_path):
    ct = write(tmp_path, "ct.csv", CT_ROWS_BACKFED)
    e = raises_at(lambda: read_usage(ct), ct, "needs the site's metering topology")
    assert "line_side_tap" in e.fix


def test_read_usage_unknown_header_is_refused(tmp_path):
    p = write(tmp_path, "x.csv", ["when,kw", "2025-01-01,1"])
    raises_at(lambda: read_usage(p), f"{p}:1", "cannot tell the file's format")


def test_read_usage_missing_file_is_a_usage_error(tmp_path):
    raises_at(lambda: read_usage(tmp_path / "nope.csv"), "nope.csv", "file not found")


def test_wh_under_a_kwh_header_is_refused_with_the_unit_fix(tmp_path):
    """A quarter-hour of 1.8 kWh written in Wh reads 1,800 kWh: 7,200 kW, no home's
    service; the file is refused (it would bill thousands) and the fix names the unit."""
    rows = csv_rows("2025-07-01T00:00:00Z", 8, 15, imp=0.3)
    rows[5] = rows[5].replace(",0.3,", ",1800.0,")
    p = write(tmp_path, "wh.csv", ["timestamp,import_kwh,export_kwh", *rows])
    e = raises_at(lambda: read_interval_csv(p), f"{p}:7",
                  "import_kwh 1,800 kWh in a 15-min interval is 7,200 kW on average")
    assert "looks like it is in Wh: divide every energy by 1000" in e.fix


def test_a_corrupt_huge_value_is_refused_not_billed(tmp_path):
    rows = csv_rows("2025-07-01T00:00:00Z", 4, 60, imp=0.3)
    rows[2] = rows[2].replace(",0.3,", ",1e308,")
    p = write(tmp_path, "big.csv", ["timestamp,import_kwh,export_kwh", *rows])
    e = raises_at(lambda: read_interval_csv(p), f"{p}:4", "import_kwh 1e+308 kWh")
    assert "no home's service carries a megawatt" in e.fix


def test_an_interval_above_the_service_size_is_kept_with_a_note(tmp_path):
    """30 kWh in a quarter-hour is 120 kW: above a 96 kW service (the default) and a
    48 kW one, below the refusal limit: kept, and the notes say where."""
    rows = csv_rows("2025-07-01T00:00:00Z", 4, 15, imp=0.3)
    rows[1] = rows[1].replace(",0.3,", ",30,")
    p = write(tmp_path, "hi.csv", ["timestamp,import_kwh,export_kwh", *rows])
    d = read_interval_csv(p)
    assert d.import_kwh[1] == 30.0
    note = next(n for n in d.notes if "kW service" in n)
    assert "import_kwh reaches 120.0 kW" in note and f"{p}:3" in note and "96 kW" in note
    assert any("48 kW service" in n for n in read_usage(p, service_kw=48).notes)
    assert not any("kW service" in n for n in read_usage(p, service_kw=200).notes)


def test_a_row_too_long_for_csv_is_a_usage_error_at_its_line(tmp_path):
    rows = csv_rows("2025-07-01T00:00:00Z", 4, 60)
    rows[1] = rows[1] + ',"' + "x" * 200_000 + '"'
    p = write(tmp_path, "long.csv", ["timestamp,import_kwh,export_kwh", *rows])
    raises_at(lambda: read_usage(p), f"{p}:3", "not a CSV row: field larger than field limit")
