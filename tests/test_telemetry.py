"""Gateway readings → intervals (adapters/telemetry.py), arithmetic written out.

Readings are built by hand: times are seconds after T0 = 2024-06-01T00:00Z (a multiple of
900 s), counters Wh, power W (grid + importing). Intervals are 300 s unless a test says so.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.gateway.base import SiteState
from adapters.telemetry import readings_to_intervals
from optimizer.errors import InputError

T0 = 1_717_200_000


def r(t: float, *, imp: float | None = None, exp: float | None = None, source: str = "local",
      **fields) -> SiteState:
    return SiteState(timestamp=T0 + t, source=source, grid_import_wh=imp, grid_export_wh=exp,
                     **fields)


def offsets(tel) -> list[int]:
    return ((tel.data.start_utc - T0) // tel.data.interval_s).tolist()


def test_a_counter_delta_is_spread_over_the_intervals_it_spans_pro_rata():
    # 0 → 450 s: +450 Wh, 300 s of it in [0, 300) and 150 s in [300, 600);
    # 450 → 600 s: +150 Wh, all in [300, 600): 0.15 + 0.15 = 0.3 kWh
    tel = readings_to_intervals([r(0, imp=1000, exp=0), r(450, imp=1450, exp=0),
                                 r(600, imp=1600, exp=0)], 300)
    assert offsets(tel) == [0, 1]
    assert tel.data.import_kwh == pytest.approx([0.3, 0.3])
    assert tel.data.export_kwh == pytest.approx([0.0, 0.0])
    assert tel.complete.all() and not tel.estimated.any()
    assert tel.data.interval_s == 300 and (tel.data.start_utc % 300 == 0).all()


def test_intervals_are_utc_aligned_and_edge_intervals_report_partial_coverage():
    # readings at 100 s and 700 s: [0, 300) covered 200 s, [300, 600) all, [600, 900) 100 s;
    # 600 Wh over 600 s: 200, 300 and 100 Wh
    tel = readings_to_intervals([r(100, imp=0, exp=0), r(700, imp=600, exp=0)], 300)
    assert offsets(tel) == [0, 1, 2]
    assert tel.data.import_kwh == pytest.approx([0.2, 0.3, 0.1])
    assert tel.coverage == pytest.approx([2 / 3, 1.0, 1 / 3])
    assert tel.complete.tolist() == [False, True, False]


def test_counters_are_preferred_to_power_and_catch_a_reversal_inside_an_interval():
    # the power reads 0 W at both ends, but the counters saw 100 Wh in and 100 Wh out
    tel = readings_to_intervals([r(0, imp=0, exp=0, grid_w=0.0),
                                 r(300, imp=100, exp=100, grid_w=0.0)], 300)
    assert tel.data.import_kwh == pytest.approx([0.1])
    assert tel.data.export_kwh == pytest.approx([0.1])
    assert not tel.estimated.any()


def test_unknown_readings_are_skipped_never_read_as_zero():
    # the middle read failed (None): the span is bridged 0 → 600 s (+600 Wh, 300 per
    # interval). Read as 0 it would look like a reset and then a 1,000,600 Wh jump.
    tel = readings_to_intervals([r(0, imp=1_000_000, exp=5), r(300),
                                 r(600, imp=1_000_600, exp=5)], 300)
    assert tel.data.import_kwh == pytest.approx([0.3, 0.3])
    assert tel.notes == ()


def test_a_counter_reset_drops_that_one_delta_with_a_note_and_no_negative_interval():
    # 0 → 300: +250 Wh; 300 → 600: 5,000,250 → 120 (a gateway replacement): dropped;
    # 600 → 900: +250 Wh. No power readings, so [300, 600) is absent — not 0, not negative.
    reads = [r(0, imp=5_000_000, exp=0), r(300, imp=5_000_250, exp=0),
             r(600, imp=120, exp=0), r(900, imp=370, exp=0)]
    tel = readings_to_intervals(reads, 300)
    assert offsets(tel) == [0, 2]
    assert tel.data.import_kwh == pytest.approx([0.25, 0.25])
    assert len(tel.notes) == 1 and "reset" in tel.notes[0] and "grid_import_wh" in tel.notes[0]


def test_a_reset_span_with_power_readings_is_estimated_from_power():
    # power 3000 W at 300 s and 3000 W at 600 s: 3 kW × 1/12 h = 0.25 kWh, estimated
    reads = [r(0, imp=5_000_000, exp=0, grid_w=3000.0), r(300, imp=5_000_250, exp=0,
                                                          grid_w=3000.0),
             r(600, imp=120, exp=0, grid_w=3000.0), r(900, imp=370, exp=0, grid_w=3000.0)]
    tel = readings_to_intervals(reads, 300)
    assert offsets(tel) == [0, 1, 2]
    assert tel.data.import_kwh == pytest.approx([0.25, 0.25, 0.25])
    assert tel.estimated.tolist() == [False, True, False]


def test_a_counter_jump_beyond_max_power_is_dropped():
    # +50 kWh in 300 s is 600 kW on average: not energy
    reads = [r(0, imp=0, exp=0), r(300, imp=50_000, exp=0), r(600, imp=50_100, exp=0)]
    tel = readings_to_intervals(reads, 300, max_power_kw=100.0)
    assert offsets(tel) == [1]
    assert tel.data.import_kwh == pytest.approx([0.1])
    assert any("jump" in n for n in tel.notes)


def test_a_gap_longer_than_the_limit_leaves_its_intervals_absent_with_a_note():
    # readings 0, 300, then nothing until 3900, 4200 (a 1 h gap > 15 min limit): the
    # 1 kWh gained over the gap is reported in a note, not assigned to any interval
    reads = [r(0, imp=0, exp=0), r(300, imp=100, exp=0), r(3900, imp=1100, exp=0),
             r(4200, imp=1200, exp=0)]
    tel = readings_to_intervals(reads, 300)
    assert offsets(tel) == [0, 13]
    assert tel.data.import_kwh == pytest.approx([0.1, 0.1])
    assert len(tel.notes) == 1
    assert "1 h" in tel.notes[0] and "15 min" in tel.notes[0] and "1.000 kWh" in tel.notes[0]


def test_power_only_readings_are_integrated_by_trapezoid_and_marked_estimated():
    # FleetAPI readings (their zero counters are ignored): grid 1200 W at 0 s, −600 W at
    # 600 s; the line falls 3 W/s and crosses zero at 400 s.
    #   [0, 300):   1200 → 300 W: (1200 + 300) / 2 × 300 s = 225,000 J = 62.5 Wh import
    #   [300, 600): 300 → 0 W over 100 s: 15,000 J = 4.167 Wh import;
    #               0 → −600 W over 200 s: 60,000 J = 16.667 Wh export
    reads = [r(0, imp=0.0, exp=0.0, grid_w=1200.0, source="fleetapi"),
             r(600, imp=0.0, exp=0.0, grid_w=-600.0, source="fleetapi")]
    tel = readings_to_intervals(reads, 300)
    assert tel.data.import_kwh == pytest.approx([0.0625, 15_000 / 3600 / 1000])
    assert tel.data.export_kwh == pytest.approx([0.0, 60_000 / 3600 / 1000])
    assert tel.estimated.tolist() == [True, True]
    assert any("FleetAPI" in n for n in tel.notes)


def test_load_pv_and_battery_come_from_their_counters_battery_positive_discharging():
    # one interval: home +500 Wh, solar +800 Wh, battery in +400 Wh, out +100 Wh
    a = r(0, imp=0, exp=0, home_wh=0, solar_wh=0, battery_import_wh=0, battery_export_wh=0)
    b = r(300, imp=50, exp=50, home_wh=500, solar_wh=800, battery_import_wh=400,
          battery_export_wh=100)
    d = readings_to_intervals([a, b], 300).data
    assert d.load_kwh == pytest.approx([0.5])
    assert d.pv_kwh == pytest.approx([0.8])
    assert d.battery_kwh == pytest.approx([0.1 - 0.4])


def test_load_is_nan_where_unknown_and_absent_when_never_known():
    # home_wh known only for the first interval: NaN (unknown) for the second, never 0
    reads = [r(0, imp=0, exp=0, home_wh=0), r(300, imp=10, exp=0, home_wh=200),
             r(600, imp=20, exp=0)]
    d = readings_to_intervals(reads, 300).data
    assert d.load_kwh[0] == pytest.approx(0.2) and np.isnan(d.load_kwh[1])
    assert d.pv_kwh is None and d.battery_kwh is None


def test_line_side_tap_nets_the_site_meter_against_solar_per_interval():
    # the site meter sees consumption only. Interval 1: site 0.5, solar 0.8 kWh → export 0.3;
    # interval 2: site 0.6, solar 0.2 kWh → import 0.4.
    reads = [r(0, imp=0, exp=0, solar_wh=0), r(300, imp=500, exp=0, solar_wh=800),
             r(600, imp=1100, exp=0, solar_wh=1000)]
    tel = readings_to_intervals(reads, 300, topology="line_side_tap")
    assert tel.data.import_kwh == pytest.approx([0.0, 0.4])
    assert tel.data.export_kwh == pytest.approx([0.3, 0.0])
    backfed = readings_to_intervals(reads, 300)
    assert backfed.data.import_kwh == pytest.approx([0.5, 0.6])


def test_too_few_readings_give_no_intervals_and_bad_arguments_are_refused():
    assert len(readings_to_intervals([], 300).data) == 0
    assert len(readings_to_intervals([r(0, imp=0, exp=0)], 300).data) == 0
    with pytest.raises(InputError):
        readings_to_intervals([], 0)
    with pytest.raises(InputError):
        readings_to_intervals([], 300, topology="sideways")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# properties


@st.composite
def counter_readings(draw, resets: bool = False):
    """Readings at random times (steps 1 s – 15 min) with counters that only grow, except
    (``resets``) an occasional restart of both lower. Some readings are unknown (None)."""
    n = draw(st.integers(2, 60))
    t = last_known = draw(st.floats(0, 900))
    imp = known_imp = draw(st.floats(1, 1e7))
    exp = known_exp = draw(st.floats(1, 1e7))
    out = []
    for i in range(n):
        if i:
            # known readings stay ≤ 900 s apart, unknown ones in between included
            dt = draw(st.floats(1.0, 900.0 - (t - last_known)))
            t += dt
            max_wh = 20_000 * dt / 3600  # ≤ 20 kW
            imp += draw(st.floats(0, max_wh))
            exp += draw(st.floats(0, max_wh))
        unknown = 0 < i < n - 1 and t - last_known <= 899.0 and draw(st.integers(0, 4)) == 0
        if unknown:
            out.append(r(t))
            continue
        if resets and i and min(known_imp, known_exp) >= 1 and draw(st.integers(0, 9)) == 0:
            # a gateway replacement: every counter restarts below its last known value
            imp = draw(st.floats(0, min(50, known_imp) - 0.5))
            exp = draw(st.floats(0, min(50, known_exp) - 0.5))
        out.append(r(t, imp=imp, exp=exp))
        last_known, known_imp, known_exp = t, imp, exp
    return out


@settings(max_examples=200, deadline=None)
@given(counter_readings(), st.sampled_from([60, 300, 900, 3600]))
def test_intervals_conserve_energy_for_any_reading_times(reads, interval_s):
    # Σ import − Σ export over the intervals == the counters' net change, first → last
    # known reading (every span is ≤ 15 min apart, inside the gap limit)
    known = [x for x in reads if x.grid_import_wh is not None]
    tel = readings_to_intervals(reads, interval_s)
    d_imp = (known[-1].grid_import_wh - known[0].grid_import_wh) / 1000
    d_exp = (known[-1].grid_export_wh - known[0].grid_export_wh) / 1000
    d = tel.data
    assert d.import_kwh.sum() - d.export_kwh.sum() == pytest.approx(d_imp - d_exp, abs=1e-6)
    assert d.import_kwh.sum() == pytest.approx(d_imp, abs=1e-6)
    assert (d.import_kwh >= 0).all() and (d.export_kwh >= 0).all()
    assert (tel.coverage > 0).all() and (tel.coverage <= 1).all()
    assert not tel.estimated.any()
    assert (np.diff(d.start_utc) > 0).all() and (d.start_utc % interval_s == 0).all()


@settings(max_examples=200, deadline=None)
@given(counter_readings(resets=True))
def test_resets_never_make_a_negative_interval_and_only_drop_their_own_delta(reads):
    known = [x for x in reads if x.grid_import_wh is not None]
    tel = readings_to_intervals(reads, 300)
    assert (tel.data.import_kwh >= 0).all() and (tel.data.export_kwh >= 0).all()
    # what is kept is exactly the sum of the import counter's non-negative deltas
    deltas = [b.grid_import_wh - a.grid_import_wh for a, b in pairwise(known)]
    kept = sum(d for d in deltas if d >= 0)
    assert tel.data.import_kwh.sum() == pytest.approx(kept / 1000, abs=1e-6)
    if any(d < 0 for d in deltas):
        assert any("reset" in n for n in tel.notes)
