"""The far expectation: the same weeks of last year (forecasts/last_year.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from forecasts.last_year import WEEK_S, same_weeks_last_year
from optimizer.intervals import IntervalData
from trueup.report import ProgressBar

T0 = 1_704_067_200  # 2024-01-01 00:00 UTC


def _history(days: int, step_s: int = 900) -> IntervalData:
    n = days * 86400 // step_s
    starts = T0 + step_s * np.arange(n, dtype=np.int64)
    k = np.arange(n, dtype=float)
    return IntervalData(start_utc=starts, interval_s=step_s, import_kwh=np.zeros(n),
                        export_kwh=np.zeros(n), load_kwh=0.1 + k * 1e-4, pv_kwh=k * 2e-4)


def test_hourly_steps_sum_the_quarter_hours_52_weeks_earlier():
    h = _history(400)
    starts = T0 + 52 * WEEK_S + 3600 * np.arange(3, dtype=np.int64)  # 3 hours, a year on
    pv, load, covered = same_weeks_last_year(starts, 3600, h)
    assert covered.all()
    # hour 0 a year on ← quarter hours 0..3 of the history: load 0.1 + k·1e-4 summed
    assert load[0] == pytest.approx(4 * 0.1 + (0 + 1 + 2 + 3) * 1e-4, abs=1e-12)
    assert pv[1] == pytest.approx((4 + 5 + 6 + 7) * 2e-4, abs=1e-12)


def test_two_years_back_when_last_year_is_missing_and_nothing_when_neither_is():
    h = _history(60)  # only the first 60 days of 2024
    starts = np.array([T0 + 104 * WEEK_S + 3600, T0 + 200 * WEEK_S], dtype=np.int64)
    pv, load, covered = same_weeks_last_year(starts, 3600, h)
    # 104 weeks + 1 h on: 52 weeks back is day 364 (past the 60 days), 104 weeks back is
    # the history's hour 1 = quarter hours 4..7; 200 weeks on: neither reaches the history
    assert covered.tolist() == [True, False]
    assert load[0] == pytest.approx(4 * 0.1 + (4 + 5 + 6 + 7) * 1e-4, abs=1e-12)
    assert load[1] == 0.0 and pv[1] == 0.0


def test_a_gap_in_the_history_leaves_the_step_uncovered():
    h = _history(370)
    keep = np.ones(len(h), dtype=bool)
    keep[10] = False  # one quarter hour missing in hour 2
    h = h.select(keep)
    starts = T0 + 52 * WEEK_S + 3600 * np.arange(4, dtype=np.int64)
    _, _, covered = same_weeks_last_year(starts, 3600, h)
    assert covered.tolist() == [True, True, False, True]


def test_no_history_or_no_pv_column_covers_nothing():
    starts = T0 + 3600 * np.arange(3, dtype=np.int64)
    assert not same_weeks_last_year(starts, 3600, None)[2].any()
    h = _history(400)
    no_pv = IntervalData(start_utc=h.start_utc, interval_s=h.interval_s,
                         import_kwh=h.import_kwh, export_kwh=h.export_kwh, load_kwh=h.load_kwh)
    assert not same_weeks_last_year(starts + 52 * WEEK_S, 3600, no_pv)[2].any()


def test_progress_bar_off_a_terminal_prints_one_line_per_finished_task():
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.update("trueup", 0.5)
    bar.update("tou_lp", 1.0)
    bar.update("trueup", 1.0)
    bar.update("trueup", 1.0)  # told twice, printed once
    bar.close()
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["tou_lp", "trueup"]


def test_the_planner_takes_weeks_ahead_from_last_year_and_the_near_term_from_its_models():
    """planning._expected(far=True) — the month outlook and the true-up projection — reads the
    same weeks of last year where the history has them; without far it keeps the forecast
    models (a year-old hour says little about tomorrow's clouds)."""
    from trueup.config import load_config
    from trueup.planning import _expected

    cfg = load_config(None)
    h = _history(400)
    starts = T0 + 52 * WEEK_S + 86400 * 30 + 3600 * np.arange(48, dtype=np.int64)
    ly_pv, ly_load, covered = same_weeks_last_year(starts, 3600, h)
    assert covered.all()
    pv, load, src, _ = _expected(cfg, starts, 3600, cfg.site.timezone, h, far=True)
    np.testing.assert_allclose(pv, ly_pv)
    np.testing.assert_allclose(load, ly_load)
    assert "last year" in src["load"]
    _, load_near, src_near, _ = _expected(cfg, starts, 3600, cfg.site.timezone, h)
    assert "last year" not in src_near["load"]
    assert not np.allclose(load_near, ly_load)
