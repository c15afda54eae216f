"""Check a utility statement line by line against the bill engine, and name the rule it follows.

A statement (:func:`read_statement`: ``line,month,amount`` rows an owner transcribes from a
NEM true-up statement) is compared with the bill of the same interval data under the tariff
as written, then under named **rule variants** — the same engine with one documented rule
changed (no second copy of any rule):

* ``nbc_only`` — the true-up charges only the NBCs (``settlement.true_up_rule``), where
  NEM2 asks for NBCs plus the net energy charges (optimizer/settlement.py);
* ``hourly``, ``15min`` — exports netted against imports hourly or per 15 minutes
  (``export.netting``) instead of over the billing period;
* ``fill``, ``first`` — a month's NEM surplus credited in the tiers it fills, or at the
  first tier (``export.surplus_tiers``).

A variant *matches* when every statement line equals its bill within a cent. Lines:
``nem_charges`` (the month's energy charges, credits negative, without NBC), ``nbc``,
``minimum`` (the minimum charge billed), ``true_up_charges`` and ``true_up_due`` (the
period's, in its true-up month). Units: $; months "YYYY-MM".
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from optimizer.billing import Bill, bill
from optimizer.errors import UsageError
from optimizer.intervals import IntervalData
from optimizer.tariff import Tariff

CENT = 0.01
LINES = ("nem_charges", "nbc", "minimum", "true_up_charges", "true_up_due")
#: name → (what it is, the tariff keys it changes)
VARIANTS: dict[str, tuple[str, dict[tuple[str, str], str]]] = {
    "nbc_only": ("the true-up charged only the NBCs, not NBCs + net energy charges",
                 {("settlement", "true_up_rule"): "nbc_only"}),
    "hourly": ("exports netted against imports hour by hour",
               {("export", "netting"): "hourly"}),
    "15min": ("exports netted against imports per 15 minutes",
              {("export", "netting"): "15min"}),
    "fill": ("a month's surplus credited in the tiers it fills",
             {("export", "surplus_tiers"): "fill"}),
    "first": ("a month's surplus credited at the first tier",
              {("export", "surplus_tiers"): "first"}),
}


@dataclass(frozen=True)
class StatementLine:
    line: str
    month: str
    amount: float
    where: str  # file:line


@dataclass
class Reconciliation:
    """The statement against the tariff's bill and each variant's."""

    lines: list[StatementLine]
    ours: dict[tuple[str, str], float]  # the tariff as written
    variants: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    matched: str | None = None  # "tariff", a variant's name, or None

    def difference(self, figures: dict[tuple[str, str], float]) -> float:
        """Σ |statement − figures| over the statement's lines."""
        return sum(abs(x.amount - figures.get((x.line, x.month), 0.0)) for x in self.lines)

    def differing(self) -> list[tuple[StatementLine, float]]:
        """The statement's lines that differ from the tariff's bill by a cent or more, with
        statement − ours."""
        out = []
        for x in self.lines:
            d = x.amount - self.ours.get((x.line, x.month), 0.0)
            if abs(d) >= CENT:
                out.append((x, d))
        return out


def read_statement(path: str | Path) -> list[StatementLine]:
    """``line,month,amount`` rows (a header first; ``#`` comments and blank lines skipped).
    Bad rows raise :class:`UsageError` naming the file and line."""
    src = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UsageError(f"cannot read the statement: {e.strerror or e}", where=src,
                         fix="give the path of the statement CSV") from None
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text)), 1)
            if r and r[0].strip() and not r[0].strip().startswith("#")]
    fix = ("write rows line,month,amount: line one of " + ", ".join(LINES)
           + "; month YYYY-MM; amount in $ (credits negative)")
    if not rows or [c.strip().lower() for c in rows[0][1][:3]] != ["line", "month", "amount"]:
        raise UsageError("the statement has no header line,month,amount", where=f"{src}:1",
                         fix=fix)
    out = []
    for n, r in rows[1:]:
        where = f"{src}:{n}"
        if len(r) < 3:
            raise UsageError(f"{len(r)} columns, not 3", where=where, fix=fix)
        line, month, amount = (c.strip() for c in r[:3])
        if line not in LINES:
            raise UsageError(f"unknown line {line!r}", where=where, fix=fix)
        if len(month) != 7 or month[4] != "-" or not (month[:4] + month[5:]).isdigit() \
                or not 1 <= int(month[5:]) <= 12:
            raise UsageError(f"month {month!r} is not YYYY-MM", where=where, fix=fix)
        try:
            value = float(amount.replace("$", "").replace(",", ""))
        except ValueError:
            raise UsageError(f"amount {amount!r} is not a number", where=where,
                             fix=fix) from None
        out.append(StatementLine(line, month, value, where))
    if not out:
        raise UsageError("the statement has no lines", where=src, fix=fix)
    return out


def statement_figures(b: Bill) -> dict[tuple[str, str], float]:
    """A bill as statement lines: (line, month) → $."""
    out: dict[tuple[str, str], float] = {}
    for m in b.months:
        out[("nem_charges", m.month)] = m.energy_charges
        out[("nbc", m.month)] = m.nbc
        out[("minimum", m.month)] = m.minimum
    for t in b.true_ups:
        out[("true_up_charges", t.month)] = t.charges
        out[("true_up_due", t.month)] = t.due
    return out


def variant_tariff(tariff: Tariff, changes: dict[tuple[str, str], str]) -> Tariff:
    """The tariff with ``changes`` ((section, key) → value) applied: the same engine, one
    rule different."""
    spec = tariff.spec
    for (section, key), value in changes.items():
        sub = getattr(spec, section).model_copy(update={key: value})
        spec = spec.model_copy(update={section: sub})
    return Tariff(spec, source=f"{tariff.source} (variant)", base_dir=tariff.base_dir)


def reconcile(tariff: Tariff, data: IntervalData, statement: list[StatementLine], *,
              true_up_month: int | None = None, export_cap_kwh: list[float] | None = None
              ) -> Reconciliation:
    """Bill ``data`` as the tariff says and under each variant that changes something for
    it; the first that matches every statement line within a cent is named."""

    def figures(t: Tariff) -> dict[tuple[str, str], float]:
        return statement_figures(bill(t, data, true_up_month=true_up_month,
                                      export_cap_kwh=export_cap_kwh, allow_gaps=True))

    r = Reconciliation(lines=statement, ours=figures(tariff))
    for name, (_, changes) in VARIANTS.items():
        if all(getattr(getattr(tariff.spec, s), k) == v for (s, k), v in changes.items()):
            continue  # the tariff already says so
        if ("export", "surplus_tiers") in changes and not tariff.tiered:
            continue  # no tiers: the variant changes nothing
        fig = figures(variant_tariff(tariff, changes))
        if any(abs(v - r.ours.get(k, 0.0)) >= CENT / 2 for k, v in fig.items()):
            r.variants[name] = fig  # one that bills this data as the tariff does explains nothing
    if not r.differing():
        r.matched = "tariff"
    else:
        for name, fig in r.variants.items():
            if all(abs(x.amount - fig.get((x.line, x.month), 0.0)) < CENT for x in statement):
                r.matched = name
                break
    return r
