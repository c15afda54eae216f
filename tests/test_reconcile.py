"""Reconcile a statement (optimizer/reconcile.py): built under each rule, recognised.

The example home's 2025 (its metered import/export, with the battery) on PG&E EV2-A NEM2
(December true-up). Each statement is the engine's own bill under one rule, written as an
owner would transcribe it (to the cent); reconcile must name the rule that made it and the
dollar difference from the tariff as written.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from optimizer.billing import bill
from optimizer.errors import UsageError
from optimizer.reconcile import (
    VARIANTS,
    read_statement,
    reconcile,
    statement_figures,
    variant_tariff,
)
from optimizer.settlement import PeriodTotals, true_up_charges
from optimizer.tariff import load_tariff
from trueup.example import example_year


@pytest.fixture(scope="module")
def year():
    return example_year(2025)


@pytest.fixture(scope="module")
def tariff():
    return load_tariff("pge-ev2a-nem2-2024")


def write_statement(path, figures) -> None:
    rows = ["line,month,amount", "# transcribed from the NEM true-up statement"]
    rows += [f"{line},{month},{amount:.2f}" for (line, month), amount in sorted(figures.items())]
    path.write_text("\n".join(rows) + "\n")


def test_the_nbc_only_rule_by_hand():
    """NBCs $120, net energy charges $300, minimums $143: NEM2 charges 120 + 300 = $420; the
    NBC-only reading max(120, 143) = $143."""
    t = PeriodTotals(energy_charges=300.0, nbc=120.0, minimum=143.0)
    assert true_up_charges(t) == pytest.approx(420.0)
    assert true_up_charges(t, "nbc_only") == pytest.approx(143.0)


def test_a_statement_as_the_tariff_says_matches(tmp_path, year, tariff):
    path = tmp_path / "statement.csv"
    write_statement(path, statement_figures(bill(tariff, year)))
    r = reconcile(tariff, year, read_statement(path))
    assert r.matched == "tariff" and not r.differing()


@pytest.mark.parametrize("tariff_id, variant", [
    ("pge-ev2a-nem2-2024", "nbc_only"),
    ("pge-ev2a-nbt-2024", "hourly"),  # net billing: the netting window changes the bill
])
def test_a_statement_under_a_variant_is_recognised_with_its_difference(tmp_path, year,
                                                                       tariff_id, variant):
    tariff = load_tariff(tariff_id)
    if variant == "hourly":
        # the same home without its battery: hours that import and export both (a battery
        # absorbs them, and then every netting window bills alike)
        net = year.load_kwh - year.pv_kwh
        year = replace(year, import_kwh=np.maximum(net, 0.0), export_kwh=np.maximum(-net, 0.0))
    theirs = bill(variant_tariff(tariff, VARIANTS[variant][1]), year)
    path = tmp_path / f"{variant}.csv"
    write_statement(path, statement_figures(theirs))
    r = reconcile(tariff, year, read_statement(path))
    assert r.matched == variant
    ours = statement_figures(bill(tariff, year))
    # every difference reported is the two bills' difference, line by line
    diff = {(x.line, x.month): d for x, d in r.differing()}
    assert diff
    for key, d in diff.items():
        assert d == pytest.approx(round(statement_figures(theirs)[key], 2) - ours[key],
                                  abs=0.006)
    if variant == "nbc_only":  # the home owes: the NBC-only reading charges far less
        assert diff[("true_up_due", "2025-12")] < -100


def test_variants_that_change_nothing_here_are_not_offered(year, tariff):
    """On untiered NEM, credits and imports share each period's rate: hourly or 15-minute
    netting bill exactly as billing-period netting (the NBC is on gross imports either
    way), so those variants cannot explain a difference and are left out."""
    r = reconcile(tariff, year, [])
    assert "hourly" not in r.variants and "15min" not in r.variants
    assert "nbc_only" in r.variants


def test_bad_statement_rows_name_the_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("line,month,amount\nnbc,2025-13,1.00\n")
    with pytest.raises(UsageError) as e:
        read_statement(path)
    assert e.value.where == f"{path}:2" and "YYYY-MM" in e.value.what
    path.write_text("line,month,amount\nnem,2025-01,1.00\n")
    with pytest.raises(UsageError) as e:
        read_statement(path)
    assert "unknown line 'nem'" in e.value.what


def test_trueup_reconcile_prints_the_table_and_names_the_rule(tmp_path, year, tariff, capsys):
    from trueup.cli import main
    from trueup.example import write_csv

    usage = tmp_path / "year.csv"
    write_csv(year, usage)
    theirs = bill(variant_tariff(tariff, VARIANTS["nbc_only"][1]), year)
    path = tmp_path / "true-up.csv"
    write_statement(path, statement_figures(theirs))
    assert main(["reconcile", "--statement", str(path), "--usage", str(usage),
                 "--tariff", "pge-ev2a-nem2-2024"]) == 0
    out = capsys.readouterr().out
    assert "statement $" in out and "difference $" in out
    assert "the true-up charged only the NBCs" in out and "(nbc_only)" in out
    assert "2025-12 true_up_due: the statement says" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("month,amount\n")
    assert main(["reconcile", "--statement", str(bad), "--usage", str(usage),
                 "--tariff", "pge-ev2a-nem2-2024"]) == 2
    assert "no header line,month,amount" in capsys.readouterr().err


def _no_battery(year):
    net = year.load_kwh - year.pv_kwh
    return replace(year, import_kwh=np.maximum(net, 0.0), export_kwh=np.maximum(-net, 0.0))


def test_15_minute_netting_is_recognised_against_an_hourly_tariff(tmp_path, year):
    """A net-billing tariff that nets hourly, and a statement netted per 15 minutes."""
    hourly = variant_tariff(load_tariff("pge-ev2a-nbt-2024"), VARIANTS["hourly"][1])
    data = _no_battery(year)
    theirs = bill(variant_tariff(hourly, VARIANTS["15min"][1]), data)
    path = tmp_path / "s.csv"
    write_statement(path, statement_figures(theirs))
    r = reconcile(hourly, data, read_statement(path))
    assert r.matched == "15min" and r.differing()


@pytest.mark.parametrize("variant", ["first", "fill"])
def test_the_tier_credit_rule_is_recognised(tmp_path, year, variant):
    """PG&E E-1 (tiered) under NEM with the importer's default ("fill", SAM's rule) and the
    other: a month's surplus beyond tier 1 credited at tier 1 or in the tiers it fills."""
    import json

    from optimizer.tariff import Tariff
    from optimizer.urdb import urdb_to_toml

    raw = json.loads((__import__("pathlib").Path(__file__).parent / "data" / "urdb" / "real"
                      / "pge_e1.json").read_text())
    text, _ = urdb_to_toml(raw, timezone="America/Los_Angeles", source="pge_e1")
    e1 = Tariff.from_text(text, source="pge_e1.toml")
    base = variant_tariff(e1, VARIANTS["first" if variant == "fill" else "fill"][1])
    # twice the PV, no battery: spring months export more than tier 1 holds
    data = _no_battery(replace(year, pv_kwh=2.0 * year.pv_kwh))
    theirs = bill(variant_tariff(base, VARIANTS[variant][1]), data)
    path = tmp_path / "s.csv"
    write_statement(path, statement_figures(theirs))
    r = reconcile(base, data, read_statement(path))
    assert r.matched == variant and r.differing()
