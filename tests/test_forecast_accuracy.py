"""Forecast accuracy tracking (forecasts/accuracy.py, issue 5 part 4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from forecasts.accuracy import (
    ForecastLog,
    ForecastRecord,
    Score,
    horizon_bucket,
    mae_bias,
    score_records,
    sum_onto,
)
from optimizer.intervals import IntervalData

T0 = 1_750_000_000 - 1_750_000_000 % 3600  # an hour boundary, UTC
H = 3600


def actuals(start: int, interval_s: int, *, load=None, pv=None) -> IntervalData:
    n = len(load if load is not None else pv)
    zeros = np.zeros(n)
    return IntervalData.regular(start, interval_s, zeros, zeros, load_kwh=load, pv_kwh=pv)


def by_key(scores: list[Score]) -> dict[tuple[str, str, str], Score]:
    return {(s.provider, s.kind, s.horizon): s for s in scores}


def test_mae_and_bias_by_hand_on_a_tiny_example():
    """Actual load 1, 1, 4, 4 kWh in four hours.
    Provider a: 1, 2, 3, 4 → errors 0, +1, −1, 0: MAE (0+1+1+0)/4 = 0.5, bias 0.
    Provider b: 2, 2, 2, 2 → errors +1, +1, −2, −2: MAE 6/4 = 1.5, bias −2/4 = −0.5."""
    log = ForecastLog()
    starts = T0 + H * np.arange(4)
    log.record("a", "load", T0, starts, [1, 2, 3, 4], step_s=H)
    log.record("b", "load", T0, starts, [2, 2, 2, 2], step_s=H)
    scores = by_key(log.score(actuals(T0, H, load=np.array([1.0, 1.0, 4.0, 4.0]))))
    a, b = scores["a", "load", "0-6h"], scores["b", "load", "0-6h"]
    assert (a.mae_kw, a.bias_kw, a.n_steps, a.n_forecasts) == pytest.approx((0.5, 0.0, 4, 1))
    assert (b.mae_kw, b.bias_kw, b.actual_mean_kw) == pytest.approx((1.5, -0.5, 2.5))
    assert len(scores) == 2


def test_mae_is_in_kw_so_step_lengths_compare():
    """Quarter-hour steps of 0.5 kWh against actual 0.25 kWh: off by 0.25 kWh a step = 1 kW."""
    log = ForecastLog()
    log.record("q", "pv", T0, T0 + 900 * np.arange(8), np.full(8, 0.5), step_s=900)
    (s,) = log.score(actuals(T0, 900, pv=np.full(8, 0.25)))
    assert (s.mae_kw, s.bias_kw, s.actual_mean_kw) == pytest.approx((1.0, 1.0, 1.0))


def test_horizon_buckets_are_half_open_hours_from_issue_time():
    lead_h = np.array([-1, 0, 5.99, 6, 23.5, 24, 47.9, 48, 71, 72, 100])
    got = horizon_bucket(lead_h * H)
    assert got.tolist() == [-1, 0, 0, 1, 1, 2, 2, 3, 3, -1, -1]
    assert horizon_bucket(np.array([0, 3 * H]), (0, 3, 6)).tolist() == [0, 1]
    with pytest.raises(ValueError, match="increasing"):
        horizon_bucket(np.zeros(1), (6, 0))


def test_a_30_hour_forecast_is_scored_in_three_horizon_buckets():
    """Issued at T0 for 30 hourly steps starting 1 h later (leads 1 … 30 h): 5 steps in 0–6 h,
    18 in 6–24 h, 7 in 24–48 h. The forecast is actual + lead/10, so each bucket's bias is
    its mean lead/10: (1+…+5)/5/10 = 0.3, (6+…+23)/18/10 = 1.45, (24+…+30)/7/10 = 2.7."""
    lead = np.arange(1, 31)
    actual = np.full(40, 2.0)
    log = ForecastLog()
    log.record("p", "pv", T0, T0 + H * lead, 2.0 + lead / 10, step_s=H)
    scores = by_key(log.score(actuals(T0, H, pv=actual)))
    assert [k[2] for k in scores] == ["0-6h", "6-24h", "24-48h"]
    assert [s.n_steps for s in scores.values()] == [5, 18, 7]
    assert [s.bias_kw for s in scores.values()] == pytest.approx([0.3, 1.45, 2.7])
    assert [s.mae_kw for s in scores.values()] == pytest.approx([0.3, 1.45, 2.7])


def test_scores_pool_many_forecasts_of_a_provider():
    log = ForecastLog()
    for k in range(3):  # three forecasts an hour apart, each 2 h long, each 1 kWh too high
        issued = T0 + k * H
        log.record("p", "load", issued, issued + H * np.arange(2), [2.0, 2.0], step_s=H)
    (s,) = log.score(actuals(T0, H, load=np.ones(6)))
    assert (s.n_steps, s.n_forecasts, s.mae_kw, s.bias_kw) == pytest.approx((6, 3, 1.0, 1.0))


def test_finer_actuals_are_summed_and_incomplete_hours_are_left_out():
    """Hourly forecast of 2 kWh; 15-minute actuals of 0.5 kWh (2 kWh an hour) for the first
    hour, the second hour has only three quarters so far, the third a NaN: only hour one
    is scored."""
    load = np.array([0.5] * 4 + [0.5] * 3)
    log = ForecastLog()
    log.record("p", "load", T0, T0 + H * np.arange(3), [2.0, 2.0, 2.0], step_s=H)
    (s,) = log.score(actuals(T0, 900, load=load))
    assert (s.n_steps, s.mae_kw) == pytest.approx((1, 0.0))
    load_nan = np.array([0.5] * 8 + [math.nan] + [0.5] * 3)
    (s,) = log.score(actuals(T0, 900, load=load_nan))
    assert s.n_steps == 2


def test_coarser_actuals_get_the_forecast_summed_onto_them():
    """15-minute forecast of 0.25, 0.25, 0.5, 0.5 (1.5 kWh) against an hourly actual of 1 kWh:
    one pair, error +0.5 kWh over one hour."""
    log = ForecastLog()
    log.record("p", "load", T0, T0 + 900 * np.arange(4), [0.25, 0.25, 0.5, 0.5], step_s=900)
    (s,) = log.score(actuals(T0, H, load=np.array([1.0, 1.0])))
    assert (s.n_steps, s.mae_kw, s.bias_kw) == pytest.approx((1, 0.5, 0.5))


def test_sum_onto_needs_whole_aligned_spans():
    starts = T0 + 900 * np.arange(8)
    v = np.ones(8)
    got = sum_onto(np.array([T0, T0 + H, T0 + 450]), H, starts, 900, v)
    assert got[0] == 4 and got[1] == 4 and np.isnan(got[2])  # misaligned bin
    with pytest.raises(ValueError, match="whole multiple"):
        sum_onto(np.array([T0]), H, starts, 1000, v)


def test_a_step_the_actuals_cannot_match_is_skipped_with_a_note():
    log = ForecastLog()
    log.record("odd", "load", T0, T0 + 600 * np.arange(6), np.ones(6), step_s=600)
    log.record("ok", "load", T0, T0 + H * np.arange(1), [1.0], step_s=H)
    scores = log.score(actuals(T0, 900, load=np.full(4, 0.25)))
    assert [s.provider for s in scores] == ["ok"]
    assert len(log.notes) == 1 and "odd load forecast" in log.notes[0]
    with pytest.raises(ValueError, match="whole multiple"):
        score_records(log.records, actuals(T0, 900, load=np.full(4, 0.25)))


def test_actuals_without_the_kind_leave_it_unscored():
    log = ForecastLog()
    log.record("p", "pv", T0, T0 + H * np.arange(2), [1.0, 1.0], step_s=H)
    assert log.score(actuals(T0, H, load=np.ones(2))) == []
    assert "no pv_kwh column" in log.notes[0]


def test_mae_bias_skips_missing_pairs():
    assert mae_bias([1, 2, math.nan], [2, 2, 2]) == pytest.approx((0.5, -0.5, 2))
    mae, bias, n = mae_bias([math.nan], [1.0])
    assert n == 0 and math.isnan(mae) and math.isnan(bias)


def test_bad_forecasts_are_refused_at_the_door():
    with pytest.raises(ValueError, match="use one of pv, load"):
        ForecastRecord("p", "wind", T0, H, np.array([T0]), np.array([1.0]))
    with pytest.raises(ValueError, match="2 step starts but 1 values"):
        ForecastRecord("p", "pv", T0, H, np.array([T0, T0 + H]), np.array([1.0]))
    with pytest.raises(ValueError, match="overlapping"):
        ForecastRecord("p", "pv", T0, H, np.array([T0, T0 + 900]), np.array([1.0, 1.0]))


def test_log_and_scores_round_trip_through_json():
    log = ForecastLog(horizons_h=(0, 6, 24))
    log.record("a", "pv", T0, T0 + H * np.arange(3), [1.0, math.nan, 2.0], step_s=H)
    text = json.dumps(log.to_dict())  # NaN became null: valid JSON
    back = ForecastLog.from_dict(json.loads(text))
    assert back.horizons_h == (0.0, 6.0, 24.0)
    (r,) = back.records
    assert r.start_utc.tolist() == (T0 + H * np.arange(3)).tolist()
    assert r.values_kwh[0] == 1.0 and math.isnan(r.values_kwh[1])
    scores = back.score(actuals(T0, H, pv=np.array([1.0, 1.0, 1.0])))
    assert [Score.from_dict(json.loads(json.dumps(s.to_dict()))) for s in scores] == scores
    assert scores[0].n_steps == 2 and scores[0].mae_kw == pytest.approx(0.5)


def test_prune_forgets_forecasts_that_ended_before_a_time():
    log = ForecastLog()
    log.record("p", "pv", T0, T0 + H * np.arange(2), [1, 1], step_s=H)  # ends T0 + 2 h
    log.record("p", "pv", T0 + 5 * H, T0 + 5 * H + H * np.arange(2), [1, 1], step_s=H)
    assert log.prune(T0 + 3 * H) == 1
    assert len(log) == 1 and log.records[0].issued_at == T0 + 5 * H
