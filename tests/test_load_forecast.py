"""The load forecast from the home's own history (forecasts/load.py, issue 5 part 3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pydantic import ValidationError

from forecasts.load import (
    KnownLoad,
    LoadSettings,
    Temperatures,
    expected_load_kwh,
    fit_load_profile,
    typical_load_kw,
)
from optimizer.intervals import IntervalData
from optimizer.localtime import local_fields

TZ = "America/Los_Angeles"
QUARTER = 900


def midnight(y: int, m: int, d: int) -> int:
    """UTC epoch seconds of local midnight starting that date in TZ."""
    return int(datetime(y, m, d, tzinfo=ZoneInfo(TZ)).timestamp())


def history(first: tuple[int, int, int], days: int, kw) -> IntervalData:
    """15-minute load history over ``days`` local days from ``first``; ``kw(fields)`` gives
    the load, kW, from the local fields of each interval's middle."""
    d0 = datetime(*first, tzinfo=ZoneInfo(TZ))
    t0 = int(d0.timestamp())
    t1 = int((d0 + timedelta(days=days)).timestamp())  # local midnight, DST-safe
    starts = np.arange(t0, t1, QUARTER, dtype=np.int64)
    load = np.asarray(kw(local_fields(starts + QUARTER // 2, TZ)), dtype=float) * 0.25
    load = np.broadcast_to(load, starts.shape).astype(float)
    zeros = np.zeros(len(starts))
    return IntervalData(start_utc=starts, interval_s=QUARTER, import_kwh=zeros,
                        export_kwh=zeros, load_kwh=load)


def hours_from(t0: int, n: int) -> np.ndarray:
    return t0 + 3600 * np.arange(n, dtype=np.int64)


def flat(value: float):
    return lambda f: np.full(len(f.hour), value)


# --------------------------------------------------------------------------------------
# the profile


def test_a_flat_history_forecasts_flat():
    """21 days at 2 kW: every hour of the next two days is 2 kWh, every quarter 0.5 kWh."""
    h = history((2025, 4, 1), 21, flat(2.0))
    kwh, source = expected_load_kwh(hours_from(h.end_utc, 48), 3600, TZ, h)
    assert kwh == pytest.approx(np.full(48, 2.0))
    assert source.startswith("history: weekday/weekend hour-of-day profile from 21.0 days")
    quarters, _ = expected_load_kwh(h.end_utc + 900 * np.arange(96), 900, TZ, h)
    assert quarters == pytest.approx(np.full(96, 0.5))


def test_weekday_and_weekend_profiles_differ():
    """Weekdays at 1 kW, weekends at 3 kW, 4 weeks from Monday 7 April: the next week
    forecasts 24 kWh a day Monday to Friday and 72 kWh on Saturday and Sunday."""
    h = history((2025, 4, 7), 28, lambda f: np.where(f.weekday >= 5, 3.0, 1.0))
    assert datetime.fromtimestamp(h.end_utc, ZoneInfo(TZ)).strftime("%a") == "Mon"
    kwh, _ = expected_load_kwh(hours_from(h.end_utc, 7 * 24), 3600, TZ, h)
    per_day = kwh.reshape(7, 24).sum(axis=1)
    assert per_day == pytest.approx([24, 24, 24, 24, 24, 72, 72])


def test_weekday_evening_peak_is_kept_by_the_hour():
    """Each local hour keeps its own mean: 1 kW, with 3 kW from 17:00 to 21:00."""
    h = history((2025, 4, 7), 21, lambda f: np.where((f.hour >= 17) & (f.hour < 21), 3.0, 1.0))
    kwh, _ = expected_load_kwh(hours_from(h.end_utc, 24), 3600, TZ, h)
    assert kwh == pytest.approx([1.0] * 17 + [3.0] * 4 + [1.0] * 3)


def test_recent_days_outweigh_old_ones_after_a_change_of_habits():
    """Three weeks at 1 kW then one week at 2 kW (Monday 7 April to Sunday 4 May).

    Weights are 0.5 ** (age / 7 days), age counted back from the last day (Sunday = 0).
    Every weekday cell sees the same five ages in each week, and a week further back weighs
    exactly half as much, so with S = that week's weight sum:
        forecast = (2·S + 1·(S/2 + S/4 + S/8)) / (S·(1 + 1/2 + 1/4 + 1/8)) = 2.875/1.875 = 23/15
    (the same for the weekend cells). Without decay it is the plain mean (7·2 + 21·1)/28."""
    h = history((2025, 4, 7), 28, lambda f: np.where(f.day >= f.day.max() - 6, 2.0, 1.0))
    starts = hours_from(h.end_utc, 48)
    recent, _ = expected_load_kwh(starts, 3600, TZ, h,
                                  settings=LoadSettings(half_life_days=7))
    assert recent == pytest.approx(np.full(48, 23 / 15))
    plain, _ = expected_load_kwh(starts, 3600, TZ, h,
                                 settings=LoadSettings(half_life_days=1e9))
    assert plain == pytest.approx(np.full(48, 35 / 28))


def test_history_older_than_the_lookback_is_ignored():
    """Old 5 kW days beyond a 14-day look-back do not count: the forecast is the recent 1 kW."""
    h = history((2025, 4, 1), 35, lambda f: np.where(f.day < f.day.min() + 20, 5.0, 1.0))
    kwh, _ = expected_load_kwh(hours_from(h.end_utc, 24), 3600, TZ, h,
                               settings=LoadSettings(lookback_days=14))
    assert kwh == pytest.approx(np.full(24, 1.0))


def test_unknown_history_values_are_ignored():
    h = history((2025, 4, 1), 21, flat(2.0))
    load = h.load_kwh.copy()
    load[::7] = np.nan
    h = IntervalData(start_utc=h.start_utc, interval_s=h.interval_s, import_kwh=h.import_kwh,
                     export_kwh=h.export_kwh, load_kwh=load)
    kwh, source = expected_load_kwh(hours_from(h.end_utc, 24), 3600, TZ, h)
    assert kwh == pytest.approx(np.full(24, 2.0))
    assert source.startswith("history")


def test_step_length_does_not_change_the_energy():
    """Four quarter-hour forecasts add up to the hour's, 24 hours to the day's."""
    h = history((2025, 4, 1), 21, lambda f: 0.5 + f.hour / 10.0)
    t0 = h.end_utc
    quarters, _ = expected_load_kwh(t0 + 900 * np.arange(96), 900, TZ, h)
    hours, _ = expected_load_kwh(hours_from(t0, 24), 3600, TZ, h)
    day, _ = expected_load_kwh(np.array([t0]), 86400, TZ, h)
    assert quarters.reshape(24, 4).sum(axis=1) == pytest.approx(hours)
    assert day[0] == pytest.approx(hours.sum())
    assert hours == pytest.approx(0.5 + np.arange(24) / 10.0)


# --------------------------------------------------------------------------------------
# DST: forecasts by local clock hour


def test_spring_forward_day_forecasts_its_23_local_clock_hours():
    """History where the load in kW equals the local clock hour (0 … 23). Sunday 9 March
    2025 has no 02:00 in Los Angeles: 23 hourly steps, worth hours 0, 1, 3, 4 … 23,
    total 276 − 2 = 274 kWh."""
    h = history((2025, 2, 9), 28, lambda f: f.hour.astype(float))
    t0, t1 = midnight(2025, 3, 9), midnight(2025, 3, 10)
    assert h.end_utc == t0 and (t1 - t0) // 3600 == 23
    kwh, _ = expected_load_kwh(hours_from(t0, 23), 3600, TZ, h)
    assert kwh == pytest.approx([0, 1, *range(3, 24)])
    assert kwh.sum() == pytest.approx(274)


def test_fall_back_day_forecasts_its_25_local_clock_hours():
    """Sunday 2 November 2025 has 01:00 twice: 25 hourly steps, hours 0, 1, 1, 2 … 23,
    total 276 + 1 = 277 kWh."""
    h = history((2025, 10, 5), 28, lambda f: f.hour.astype(float))
    t0, t1 = midnight(2025, 11, 2), midnight(2025, 11, 3)
    assert h.end_utc == t0 and (t1 - t0) // 3600 == 25
    kwh, _ = expected_load_kwh(hours_from(t0, 25), 3600, TZ, h)
    assert kwh == pytest.approx([0, 1, 1, *range(2, 24)])
    assert kwh.sum() == pytest.approx(277)


def test_history_across_a_dst_change_is_binned_by_local_clock():
    """History spanning the spring change (24 Feb to 24 March) still gives hour h = h kW."""
    h = history((2025, 2, 24), 28, lambda f: f.hour.astype(float))
    kwh, _ = expected_load_kwh(hours_from(h.end_utc, 24), 3600, TZ, h)
    assert kwh == pytest.approx(np.arange(24.0))


# --------------------------------------------------------------------------------------
# fallback


def test_no_history_uses_the_typical_profile_and_says_so():
    starts = midnight(2025, 7, 1) + 300 * np.arange(288, dtype=np.int64)
    kwh, source = expected_load_kwh(starts, 300, TZ)
    f = local_fields(starts + 150, TZ)  # a 5-minute step is sampled at its middle
    want = typical_load_kw(f.hour + f.minute / 60.0, f.month, f.weekday) * 300 / 3600
    assert kwh == pytest.approx(want)
    assert source == "typical home profile (no load history)"


def test_short_history_falls_back_to_the_typical_shape_at_the_homes_level():
    """Three March weekdays at a flat 2 kW (144 kWh) are too few for an own profile (14
    days): the typical profile is used, rescaled so those three days would have come out at
    144 kWh — so the same weekdays a week later (same month, same day type) do too."""
    h = history((2025, 3, 4), 3, flat(2.0))  # Tue 4 – Thu 6 March
    starts = midnight(2025, 3, 11) + 900 * np.arange(3 * 96, dtype=np.int64)  # Tue 11 – Thu
    kwh, source = expected_load_kwh(starts, 900, TZ, h)
    assert kwh.sum() == pytest.approx(144.0)
    assert source.startswith("typical home profile scaled ×")
    assert "only 3.0 days of load history; its own profile needs 14" in source
    typical, _ = expected_load_kwh(starts, 900, TZ)
    assert kwh / typical == pytest.approx(np.full(len(kwh), kwh.sum() / typical.sum()))


def test_hourly_profile_needs_intervals_of_an_hour_or_less():
    days = 30
    t0 = midnight(2025, 4, 1)
    h = IntervalData.regular(t0, 86400, np.zeros(days), np.zeros(days),
                             load_kwh=np.full(days, 24.0))
    profile = fit_load_profile(h, TZ)
    assert profile.kind == "typical"
    assert "history intervals are 86400 s" in profile.source


# --------------------------------------------------------------------------------------
# known loads


def test_ev_schedule_adds_its_kwh_in_its_local_hours():
    """July (UTC−7): a new 7.2 kW EV charging 01:00–03:00 on weekdays adds 7.2 kWh to local
    hours 1 and 2 (08:00 and 09:00 UTC) of Wednesday 30 July, nothing on Saturday 2 August."""
    h = history((2025, 7, 9), 21, flat(1.0))
    ev = KnownLoad(name="EV", kw=7.2, start="01:00", end="03:00", days="weekdays",
                   in_history=False)
    wed = midnight(2025, 7, 30)
    kwh, source = expected_load_kwh(hours_from(wed, 24), 3600, TZ, h, known_loads=[ev])
    assert kwh == pytest.approx([1.0, 8.2, 8.2] + [1.0] * 21)
    utc_hours = (hours_from(wed, 24)[kwh > 5] % 86400) // 3600
    assert utc_hours.tolist() == [8, 9]
    assert "known loads: EV 7.2 kW" in source
    sat, _ = expected_load_kwh(hours_from(midnight(2025, 8, 2), 24), 3600, TZ, h,
                               known_loads=[ev])
    assert sat == pytest.approx(np.full(24, 1.0))


def test_ev_already_in_the_history_is_not_counted_twice():
    """The history holds 1 kW plus the EV's 7.2 kW at 01:00–03:00 on weekdays; configured
    with in_history (the default), the EV is taken out and added back once: 8.2 kWh, not
    15.4, in hours 1 and 2 of a weekday; and a moved schedule moves the load."""
    def recorded(f):
        return 1.0 + np.where((f.hour >= 1) & (f.hour < 3) & (f.weekday < 5), 7.2, 0.0)
    h = history((2025, 4, 7), 21, recorded)  # ends Monday 28 April
    ev = KnownLoad(name="EV", kw=7.2, start="01:00", end="03:00", days="weekdays")
    kwh, _ = expected_load_kwh(hours_from(h.end_utc, 24), 3600, TZ, h, known_loads=[ev])
    assert kwh == pytest.approx([1.0, 8.2, 8.2] + [1.0] * 21)
    profile = fit_load_profile(h, TZ, known_loads=[ev])
    later = ev.model_copy(update={"start": "22:00", "end": "24:00"})
    kwh2, _ = replace(profile, known_loads=(later,)).forecast(hours_from(h.end_utc, 24), 3600)
    assert kwh2 == pytest.approx([1.0] * 22 + [8.2, 8.2])


def test_half_hour_start_and_a_schedule_past_midnight():
    """4 kW from 23:30 to 01:00 on Fridays: Friday hour 23 gets half an hour (2 kWh),
    Saturday hour 0 a whole hour (4 kWh); Thursday night nothing."""
    h = history((2025, 4, 7), 21, flat(1.0))
    car = KnownLoad(name="car", kw=4.0, start="23:30", end="01:00", days=["fri"],
                    in_history=False)
    thu = midnight(2025, 5, 1)
    kwh, _ = expected_load_kwh(hours_from(thu, 72), 3600, TZ, h, known_loads=[car])
    thu_23, fri_0, fri_23, sat_0 = kwh[23], kwh[24], kwh[47], kwh[48]
    assert (thu_23, fri_0, fri_23, sat_0) == pytest.approx((1.0, 1.0, 3.0, 5.0))
    assert kwh.sum() == pytest.approx(72 + 2 + 4)


def test_known_loads_replace_the_example_ev_in_the_typical_profile():
    ev = KnownLoad(name="EV", kw=2.0, start="10:00", end="11:00", in_history=False)
    t0 = midnight(2025, 4, 2)  # a Wednesday: the example EV would run 00:30–03:30
    kwh, source = expected_load_kwh(hours_from(t0, 24), 3600, TZ, known_loads=[ev])
    typical, _ = expected_load_kwh(hours_from(t0, 24), 3600, TZ)
    assert kwh[1] < 1.0 < typical[1]  # no example EV at 01:00
    assert kwh[10] == pytest.approx(typical[10] + 2.0)
    assert source.endswith("known loads: EV 2 kW")


@pytest.mark.parametrize("bad, message", [
    ({"start": "25:00", "end": "03:00"}, "not a local clock time"),
    ({"start": "01:00", "end": "01:00"}, "needs a running time"),
    ({"start": "01:00", "end": "03:00", "days": ["funday"]}, "is not one of mon"),
    ({"start": "01:00", "end": "03:00", "kw": -1}, "greater than 0"),
])
def test_known_load_config_errors_say_what_is_wrong(bad, message):
    with pytest.raises(ValidationError, match=message):
        KnownLoad(**{"kw": 7.2, **bad})


def test_known_load_days_accept_names_and_sets():
    assert KnownLoad(kw=1, start="00:00", end="24:00", days="weekends").days == (5, 6)
    assert KnownLoad(kw=1, start="00:00", end="24:00", days=["Mon", "wed"]).days == (0, 2)


# --------------------------------------------------------------------------------------
# temperature


def daily_temperatures(t0: int, days: int, per_day) -> Temperatures:
    """Temperatures constant through each day, ``per_day[d]`` °C, given at the instants the
    model samples (5-minute middles) so that no value is interpolated across midnight."""
    t = t0 + 150 + 300 * np.arange(days * 288, dtype=np.int64)
    return Temperatures(t, np.asarray(per_day, dtype=float)[(t - t0) // 86400])


def test_a_hot_forecast_day_raises_the_load_by_the_fitted_slope():
    """Load = 1 kW + 0.1 kW per K above 21 °C, daily temperatures cycling 16 … 34 °C over 28
    days: the slope is found, and a 31 °C day forecasts 1 + 0.1·(31 − 21) = 2.0 kWh per hour,
    an 18 °C day 1.0 kWh."""
    start, days = (2025, 6, 2), 28
    t0 = midnight(*start)
    temps = 16.0 + 3.0 * (np.arange(days + 2) % 7)
    h = history(start, days, lambda f: 1.0 + 0.1 * np.maximum(temps[f.day - f.day[0]] - 21, 0))
    for forecast_c, want in ((31.0, 2.0), (18.0, 1.0)):
        series = daily_temperatures(t0, days + 1, [*temps[:days], forecast_c])
        kwh, source = expected_load_kwh(hours_from(h.end_utc, 24), 3600, TZ, h,
                                        temperatures=series)
        assert kwh == pytest.approx(np.full(24, want))
        assert "temperature: cooling/heating degree-hours" in source
        assert "explain 100% of the remaining variance" in source


def test_temperature_that_does_not_explain_the_load_is_not_used():
    """Noisy load and unrelated temperatures: the fit explains too little to pass the 10 %
    rule, so the forecast is the plain profile and the source says why."""
    rng = np.random.default_rng(1)
    h = history((2025, 6, 2), 28, lambda f: 1.0 + rng.gamma(4.0, 0.25, len(f.hour)))
    t = h.start_utc[0] + 3600 * np.arange(30 * 24, dtype=np.int64)
    series = Temperatures(t, 15.0 + 20.0 * rng.random(len(t)))
    starts = hours_from(h.end_utc, 24)
    kwh, source = expected_load_kwh(starts, 3600, TZ, h, temperatures=series)
    plain, _ = expected_load_kwh(starts, 3600, TZ, h)
    assert kwh == pytest.approx(plain)
    assert "temperature not used (explains" in source and "needs 10%" in source


def test_a_fitted_temperature_term_without_forecast_temperatures_says_so():
    start, days = (2025, 6, 2), 28
    temps = 16.0 + 3.0 * (np.arange(days) % 7)
    h = history(start, days, lambda f: 1.0 + 0.1 * np.maximum(temps[f.day - f.day[0]] - 21, 0))
    profile = fit_load_profile(h, TZ, temperatures=daily_temperatures(midnight(*start), days,
                                                                     temps))
    assert profile.temperature is not None
    kwh, source = profile.forecast(hours_from(h.end_utc + 5 * 86400, 24), 3600)
    assert "temperature term not applied" in source
    assert np.all(np.isfinite(kwh))


def test_temperatures_reach_only_where_the_series_does():
    t = Temperatures(np.array([0, 3600, 7200]), np.array([10.0, 20.0, np.nan]))
    got = t.at(np.array([-3600, 1800, 3600 + 1800, 3600 + 3600 + 1]))
    assert got[1] == pytest.approx(15.0) and got[2] == pytest.approx(20.0)
    assert got[0] == pytest.approx(10.0)  # within the 1 h tolerance
    assert np.isnan(got[3])


def test_weeks_ahead_take_the_seasons_from_the_typical_profile_and_the_level_from_history():
    """The example home with history from 1 January to 15 July: the profile fitted to its
    last weeks (July's air conditioning) overstates the rest of the year by more than half;
    the seasonal expectation — the typical profile's seasons scaled to the home's mean over
    its history — lands within 5 % of what the home really used from 15 July to 31
    December (5,189 kWh)."""
    from forecasts.load import seasonal_load_kwh
    from trueup.example import example_year

    year = example_year(2025)
    at = 1752613200  # 2025-07-15 14:00 PDT
    history = year.select(year.start_utc < at)
    hours = np.arange(at, year.end_utc, 3600, dtype=np.int64)
    actual = float(year.load_kwh[year.start_utc >= at].sum())
    recent, _ = expected_load_kwh(hours, 3600, TZ, history)
    seasonal, source = seasonal_load_kwh(hours, 3600, TZ, history)
    assert recent.sum() > 1.5 * actual
    assert seasonal.sum() == pytest.approx(actual, rel=0.05)
    assert "scaled" in source and "days" in source
