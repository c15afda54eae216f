"""The backtest plot: one PNG of three panels, and the numbers behind each panel.

Backtests: two weeks across a month boundary (2025-06-24 to 2025-07-07) of the example year
on PG&E EV2-A NEM2 Paired Storage settled monthly (export cap included, as in
tests/test_backtest.py), strategies self_powered, tbc_like and trueup; and two days across a
month boundary on the bundled NEM2 tariff without an export cap (self_powered, tbc_like).
"""

from __future__ import annotations

import copy
import struct
import sys
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from optimizer.errors import InputError, UsageError
from optimizer.tariff import load_tariff
from tests.test_backtest import _monthly_nem2ps
from trueup.backtest import Replay, context_of, run_backtest, select_period
from trueup.backtest_plot import (
    NO_BATTERY,
    NO_CAP_NOTE,
    STRATEGY_COLORS,
    backtest_figure,
    monthly_bills,
    monthly_exports,
    pick_week,
    plot_backtest,
    strategy_colors,
    week_series,
)
from trueup.config import load_config
from trueup.example import example_year

mdates = pytest.importorskip("matplotlib.dates")
mcolors = pytest.importorskip("matplotlib.colors")
mimage = pytest.importorskip("matplotlib.image")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDTH_PX, HEIGHT_PX = 1100, 1300  # 11 × 13 inches at 100 dpi


@pytest.fixture(scope="module")
def cap_bt():
    tariff = _monthly_nem2ps()
    data = select_period(example_year(2025), date(2025, 6, 24), 14, tariff.tz)
    r = Replay(data=data, tariff=tariff, cfg=load_config(None))
    return run_backtest(r, ["self_powered", "tbc_like", "trueup"])


@pytest.fixture(scope="module")
def nocap_bt():
    tariff = load_tariff("pge-ev2a-nem2-2024")
    assert tariff.spec.export_cap is None
    year = example_year(2025)
    data = select_period(year, date(2025, 1, 31), 2, tariff.tz)
    # the rest of the year is billed as the example has it: the true-up is the year's
    r = Replay(data=data, tariff=tariff, cfg=load_config(None),
               context=context_of(year, data, None))
    return run_backtest(r, ["self_powered", "tbc_like"])


def _png_size(raw: bytes) -> tuple[int, int]:
    assert raw[12:16] == b"IHDR"
    return struct.unpack(">II", raw[16:24])


def _local_midnight(day: date, tz: str) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp())


# --------------------------------------------------------------------------------------
# The PNG


def test_plot_writes_one_png_of_the_expected_size(cap_bt, tmp_path):
    out = plot_backtest(cap_bt, tmp_path / "plots" / "backtest.png")
    assert out == tmp_path / "plots" / "backtest.png"
    raw = out.read_bytes()
    assert raw.startswith(PNG_SIGNATURE)
    assert _png_size(raw) == (WIDTH_PX, HEIGHT_PX)
    img = mimage.imread(out)
    assert img.shape[:2] == (HEIGHT_PX, WIDTH_PX)
    # not a blank canvas: coloured bars and lines were drawn
    assert len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 50
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["backtest.png"]


def test_figure_has_three_panels_and_a_title_with_tariff_and_period(cap_bt):
    fig = backtest_figure(cap_bt)
    ax_bill, ax_week, ax_exp = fig.axes[:3]
    title = fig.get_suptitle()
    assert cap_bt.replay.tariff.id in title
    assert "2025-06-24 to 2025-07-07 (14 days)" in title
    assert "$" in ax_bill.get_title() and ax_bill.get_ylabel() == "$ billed"
    assert "(%)" in ax_week.get_title() and "(kW)" in ax_week.get_title()
    assert "(kWh" in ax_exp.get_title()
    assert len(fig.axes) == 4  # the week's twin axis for grid kW


# --------------------------------------------------------------------------------------
# Panel 1: monthly bills


def test_monthly_bills_are_each_strategys_billed_dollars(cap_bt):
    months, bills = monthly_bills(cap_bt)
    assert months == ["2025-06", "2025-07"]
    assert list(bills) == ["self_powered", "tbc_like", "trueup", NO_BATTERY]
    for r in cap_bt.results:
        assert [m.month for m in r.bill.months] == months
        np.testing.assert_allclose(bills[r.name], [m.billed for m in r.bill.months],
                                   rtol=0, atol=1e-12)
    np.testing.assert_allclose(bills[NO_BATTERY],
                               [m.billed for m in cap_bt.no_battery.months], atol=1e-12)
    # the strategies differ, so a mix-up of names would show
    assert len({tuple(np.round(v, 6)) for v in bills.values()}) == len(bills)


def test_bill_bars_have_the_billed_heights_and_a_credit_goes_below_zero(cap_bt):
    bt = copy.deepcopy(cap_bt)
    bt.result("tbc_like").bill.months[1].billed = -60.0  # a credit month
    fig = backtest_figure(bt)
    ax = fig.axes[0]
    heights = {}
    for c in ax.containers:
        name = c.get_label().split(" (total")[0]
        heights[name] = [p.get_height() for p in c.patches]
    _, bills = monthly_bills(bt)
    assert heights["tbc_like"] == pytest.approx([bills["tbc_like"][0], -60.0])
    assert heights["trueup"] == pytest.approx(list(bills["trueup"]))
    assert heights["no battery"] == pytest.approx(list(bills[NO_BATTERY]))
    assert ax.get_ylim()[0] < -60.0


# --------------------------------------------------------------------------------------
# Panel 2: the week


def test_week_series_grid_kw_and_soc_percent_for_the_chosen_steps(cap_bt):
    rp = cap_bt.replay
    day = date(2025, 6, 30)
    w = week_series(cap_bt, day)
    a = _local_midnight(day, rp.tz)
    z = _local_midnight(day + timedelta(days=7), rp.tz)
    mask = (rp.data.start_utc >= a) & (rp.data.start_utc < z)
    assert mask.sum() == 7 * 96
    np.testing.assert_array_equal(w["start_utc"], rp.data.start_utc[mask])
    tu = cap_bt.result("trueup")
    assert w["strategy"] == "trueup"
    assert w["hours"] == 0.25
    kw = (tu.intervals.import_kwh[mask] - tu.intervals.export_kwh[mask]) / 0.25
    np.testing.assert_allclose(w["grid_kw"], kw, atol=1e-12)
    assert w["grid_kw"].min() < 0 < w["grid_kw"].max()  # both directions occur
    usable = rp.battery.usable_kwh
    assert set(w["soc_pct"]) == {"trueup", "self_powered"}
    for name in ("trueup", "self_powered"):
        soc = cap_bt.result(name).soc_kwh[mask] / usable * 100.0
        np.testing.assert_allclose(w["soc_pct"][name], soc, atol=1e-12)
        assert w["soc_pct"][name].min() >= 0.0 and w["soc_pct"][name].max() <= 100.0 + 1e-9
    # local time: the axis starts at local midnight (07:00 UTC in PDT), ends 7 days later
    first = w["start_local"][0]
    assert (first.hour, first.minute) == (0, 0) and first.date() == day
    assert first.utcoffset() == timedelta(hours=-7)
    assert int(first.timestamp()) == a
    assert int(w["end_local"][-1].timestamp()) == z


def test_week_is_clipped_to_the_data_and_outside_it_is_an_error(cap_bt):
    w = week_series(cap_bt, date(2025, 7, 4))  # the data ends after 2025-07-07
    assert len(w["start_utc"]) == 4 * 96
    assert int(w["end_local"][-1].timestamp()) == cap_bt.replay.data.end_utc
    with pytest.raises(InputError, match="no intervals in the week"):
        week_series(cap_bt, date(2025, 8, 1))


def test_default_week_is_the_one_with_the_largest_trueup_export(cap_bt):
    rp = cap_bt.replay
    t = rp.data.start_utc
    exp = cap_bt.result("trueup").intervals.export_kwh
    totals = {}
    day = date(2025, 6, 24)
    while day <= date(2025, 7, 7):
        a = _local_midnight(day, rp.tz)
        z = _local_midnight(day + timedelta(days=7), rp.tz)
        totals[day] = float(exp[(t >= a) & (t < z)].sum())
        day += timedelta(days=1)
    best = max(totals, key=totals.get)
    assert len(set(np.round(list(totals.values()), 6))) > 1  # the choice matters
    assert pick_week(cap_bt) == best
    fig = backtest_figure(cap_bt)
    assert f"{best:%Y-%m-%d}" in fig.axes[1].get_title()
    # the axis shows the chosen week from its local midnight, ticks at local midnights
    ax = fig.axes[1]
    zone = ZoneInfo(rp.tz)
    assert ax.get_xlim()[0] == pytest.approx(
        mdates.date2num(datetime(best.year, best.month, best.day, tzinfo=zone)))
    fig.canvas.draw()
    ticks = [mdates.num2date(x, tz=zone) for x in ax.get_xticks()]
    assert len(ticks) >= 7
    assert all((d.hour, d.minute) == (0, 0) for d in ticks)


def test_an_explicit_week_start_is_plotted(cap_bt, tmp_path):
    fig = backtest_figure(cap_bt, week_start=date(2025, 6, 26))
    assert "2025-06-26" in fig.axes[1].get_title()
    assert plot_backtest(cap_bt, tmp_path / "w.png", week_start=date(2025, 6, 26)).exists()


def test_week_follows_the_first_strategy_when_trueup_is_absent(nocap_bt):
    assert nocap_bt.result("trueup") is None
    assert pick_week(nocap_bt) == date(2025, 1, 31)  # a 2-day period: its first day
    w = week_series(nocap_bt, date(2025, 1, 31))
    assert w["strategy"] == "self_powered"
    assert list(w["soc_pct"]) == ["self_powered"]
    assert len(w["start_utc"]) == 2 * 96


# --------------------------------------------------------------------------------------
# Panel 3: exports vs the cap


def test_monthly_exports_and_caps_come_from_the_bills(cap_bt):
    months, exports, cap = monthly_exports(cap_bt)
    assert months == ["2025-06", "2025-07"]
    for r in cap_bt.results:
        np.testing.assert_allclose(exports[r.name], [m.export_kwh for m in r.bill.months],
                                   atol=1e-12)
    assert cap is not None
    np.testing.assert_allclose(cap, [m.export_cap_kwh for m in cap_bt.no_battery.months])
    assert np.all(cap > 0)
    fig = backtest_figure(cap_bt)
    ax = fig.axes[2]  # bills, week, exports, then the week's twin axis
    assert "export cap" in ax.get_title()
    assert NO_CAP_NOTE not in [t.get_text() for t in ax.texts]


def test_a_tariff_without_a_cap_gets_the_no_cap_note(nocap_bt, tmp_path):
    months, exports, cap = monthly_exports(nocap_bt)
    assert cap is None
    assert months == [f"2025-{m:02d}" for m in range(1, 13)]  # the whole settlement period
    assert exports["tbc_like"].sum() > 0
    fig = backtest_figure(nocap_bt)
    assert NO_CAP_NOTE in [t.get_text() for t in fig.axes[2].texts]
    out = plot_backtest(nocap_bt, tmp_path / "nocap.png")
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert _png_size(out.read_bytes()) == (WIDTH_PX, HEIGHT_PX)


# --------------------------------------------------------------------------------------
# Colours and the missing-matplotlib error


def test_strategy_colours_are_fixed_and_the_same_in_every_panel(cap_bt):
    colors = strategy_colors(["trueup", "mine", "self_powered", "other"])
    assert colors["trueup"] == STRATEGY_COLORS["trueup"]
    assert colors["self_powered"] == STRATEGY_COLORS["self_powered"]
    assert len(set(colors.values())) == 4  # newcomers get colours no known one uses
    fig = backtest_figure(cap_bt)
    ax_bill, ax_week, ax_exp = fig.axes[:3]
    for name in ("self_powered", "trueup"):
        want = STRATEGY_COLORS[name]
        bill_bar = next(c for c in ax_bill.containers if c.get_label().startswith(name))
        exp_bar = next(c for c in ax_exp.containers if c.get_label() == name)
        line = next(ln for ln in ax_week.get_lines() if ln.get_label().startswith(name))
        assert mcolors.to_hex(bill_bar.patches[0].get_facecolor()) == want
        assert mcolors.to_hex(exp_bar.patches[0].get_facecolor()) == want
        assert mcolors.to_hex(line.get_color()) == want
    dashed = next(ln for ln in ax_week.get_lines() if ln.get_label().startswith("self_"))
    assert dashed.get_linestyle() == "--"


def test_missing_matplotlib_says_how_to_install_it(cap_bt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UsageError) as e:
        plot_backtest(cap_bt, tmp_path / "x.png")
    assert "pip install 'trueup[plot]'" in e.value.fix
    assert "matplotlib" in e.value.what
    assert not (tmp_path / "x.png").exists()


def test_on_nem2_the_bill_panel_shows_the_charges_before_the_minimum(nocap_bt):
    """EV2-A NEM2 settles charges at the true-up: each statement bills only the minimum
    ($0.39167/day), so bars of `billed` would all be the minimum. The bars are the month's
    energy + NBC + fixed charges instead, and the minimum is a dashed line."""
    from trueup.backtest_plot import deferred_charges, monthly_charges

    assert deferred_charges(nocap_bt)
    _, charges, minimum = monthly_charges(nocap_bt)
    jan = nocap_bt.result("self_powered").bill.months[0]
    assert jan.billed == pytest.approx(jan.minimum)  # what the old panel showed
    assert charges["self_powered"][0] == pytest.approx(jan.energy_charges + jan.nbc
                                                       + jan.fixed)
    assert minimum[0] == pytest.approx(31 * 0.39167, abs=0.01)  # $12.14 in January
    # the months differ from the minimum and from each other
    assert len({round(v, 2) for v in charges["self_powered"]}) == 12
    fig = backtest_figure(nocap_bt)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "$ charges accrued"
    bars = {c.get_label().split(" (total")[0]: [p.get_height() for p in c.patches]
            for c in ax.containers}
    assert bars["self_powered"] == pytest.approx(list(charges["self_powered"]))
    labels = ax.get_legend_handles_labels()[1]
    assert "minimum charge, billed monthly" in labels


def test_the_no_cap_note_and_the_legend_do_not_overlap(nocap_bt):
    fig = backtest_figure(nocap_bt)
    fig.canvas.draw()
    ax = fig.axes[2]
    r = fig.canvas.get_renderer()
    note = next(t for t in ax.texts if t.get_text() == NO_CAP_NOTE).get_window_extent(r)
    legend = ax.get_legend().get_window_extent(r)
    assert not note.overlaps(legend)
