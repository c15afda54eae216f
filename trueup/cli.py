"""The ``trueup`` command line. Each subcommand's --help explains what it does and shows an
example. Exit codes: 0 ok, 2 bad input (the message says what, where and how to fix)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from optimizer.errors import InputError

EPILOG = """\
examples:
  trueup run                                    the daemon (example site, simulated, dry run)
  trueup demo                                   bill the built-in example year
  trueup gateway setup                          connect trueup to your Powerwall (guided)
  trueup status                                 read the Powerwall once (the first thing to run)
  trueup plan                                   the battery plan for the next 48 h (dry run)
  trueup tariff list                            tariffs that ship with trueup
  trueup tariff show pge-ev2a-nem2ps-2024       periods, rates and rules of one tariff
  trueup bill --tariff pge-ev2a-nem2ps-2024 --usage my-year.csv
  trueup bill --tariff my-tariff.toml --usage pge-download.csv --true-up-month 4 --json
  trueup import --usage pge-download.csv        seed the daemon's store with the utility's data
  trueup backtest --days 14 --start 2025-07-01  strategies side by side on the example year
"""


def _bill_parser(sub) -> None:
    p = sub.add_parser(
        "bill",
        help="monthly statements and the true-up for a year of interval data",
        description=(
            "Bill interval data under a tariff: one row per billing month (imports, exports, "
            "the export cap, energy charges, NBC, fixed and minimum charges, what the "
            "statement asks you to pay, the credit carried) and the true-up that closes the "
            "settlement period. With a load_kwh column it also prints your savings: the "
            "same tariff billed on your load alone, minus the actual bill."
        ),
        epilog=(
            "usage formats (--format auto detects them):\n"
            "  csv          timestamp,import_kwh,export_kwh[,load_kwh,pv_kwh,battery_kwh]\n"
            "               ISO 8601 interval starts with their UTC offset\n"
            "  green-button PG&E 'Download my data' electric CSV (local times, --timezone)\n"
            "  ct           CT registers (Grid, Solar) with --topology backfed|line_side_tap\n"
            "  tesla        the Tesla app's Day export: 5-minute kW (Date time,Home (kW),\n"
            "               Solar (kW),Powerwall (kW),Grid (kW)); days may be joined in one file\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tariff", metavar="FILE_OR_ID",
                   help="a tariff TOML file or a bundled id (see `trueup tariff list`); "
                   "default: the config's")
    p.add_argument("--config", metavar="FILE",
                   help="your trueup.toml: its tariff, true-up month, export caps, metering "
                   "topology and service size are used where no option says otherwise")
    p.add_argument("--usage", required=True, metavar="CSV", help="interval data file")
    p.add_argument("--format", default="auto",
                   choices=["auto", "csv", "green-button", "ct", "tesla"],
                   help="the usage file's format (default: detect)")
    p.add_argument("--timezone", default=None,
                   help="time zone of local timestamps (Green Button, CT, Tesla without "
                   "offsets); default: the "
                   "tariff's")
    p.add_argument("--topology", choices=["backfed", "line_side_tap"], default=None,
                   help="how the PV is wired, for CT-register files: backfed (the grid CTs "
                   "see net flow) or line_side_tap (they see consumption only)")
    p.add_argument("--true-up-month", type=int, choices=range(1, 13), metavar="1-12",
                   help="your true-up month (on your PG&E bill); overrides the tariff's")
    p.add_argument("--export-cap", metavar="KWH,...",
                   help="12 monthly export caps (kWh, Jan-Dec), overriding the tariff's")
    p.add_argument("--allow-gaps", action="store_true",
                   help="bill data with gaps or partial months, with a warning stating what "
                   "is missing (default: refuse)")
    p.add_argument("--json", action="store_true", help="print the JSON contract instead")


def _reconcile_parser(sub) -> None:
    p = sub.add_parser(
        "reconcile",
        help="check a utility statement line by line against the bill of the same data",
        description=(
            "Bill the interval data under the tariff and compare it with a statement you "
            "transcribed (line,month,amount rows: nem_charges, nbc, minimum per month; "
            "true_up_charges, true_up_due in the true-up month). Each difference is named "
            "(line, month, dollars), and the statement is checked against known alternative "
            "rules — the same engine with one rule changed: an NBC-only true-up, hourly or "
            "15-minute netting, a surplus credited in the tiers it fills or at the first. "
            "docs/reconcile.md has the file format and a worked example."),
        epilog=("examples:\n"
                "  trueup reconcile --statement true-up.csv --usage pge-download.csv "
                "--config trueup.toml\n"
                "  trueup reconcile --statement true-up.csv --usage my-year.csv "
                "--tariff pge-ev2a-nem2-2024 --true-up-month 4 --json\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--statement", required=True, metavar="CSV",
                   help="the statement's figures: line,month,amount")
    p.add_argument("--usage", required=True, metavar="CSV",
                   help="the same period's interval data (any format `trueup bill` reads)")
    p.add_argument("--tariff", metavar="FILE_OR_ID", help="default: the config's")
    p.add_argument("--config", metavar="FILE",
                   help="your trueup.toml: its tariff, true-up month and export caps")
    p.add_argument("--true-up-month", type=int, choices=range(1, 13), metavar="1-12",
                   help="your true-up month (on your bill); overrides the tariff's")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _tariff_parser(sub) -> None:
    p = sub.add_parser("tariff", help="list, show and import tariffs",
                       description="Tariffs are TOML files (schema: README, 'Tariff files').")
    tsub = p.add_subparsers(dest="tariff_cmd", required=True,
                            metavar="{list,show,import-urdb,estimate-cap}")
    tsub.add_parser("list", help="the tariffs that ship with trueup")
    s = tsub.add_parser("show", help="periods, rates and settlement rules of a tariff",
                        epilog=("examples:\n"
                                "  trueup tariff show pge-ev2a-nem2ps-2024\n"
                                "  trueup tariff show --config trueup.toml   the config's "
                                "tariff\n"),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("tariff", metavar="FILE_OR_ID", nargs="?",
                   help="a tariff TOML file or a bundled id (trueup tariff list)")
    s.add_argument("--config", metavar="FILE",
                   help="trueup.toml: show the tariff it names (when no FILE_OR_ID is given)")
    u = tsub.add_parser(
        "import-urdb", help="convert an OpenEI URDB rate (JSON) into a trueup tariff TOML",
        description=("Convert an OpenEI Utility Rate Database JSON record (the API response "
                     "or one item of it) into a trueup tariff. URDB has no NBC, net-surplus "
                     "rate, settlement or export-cap fields: the importer says so and leaves "
                     "them for you to fill in."))
    u.add_argument("file", metavar="FILE.json")
    u.add_argument("--item", type=int, default=0, help="which item of 'items' (default 0)")
    u.add_argument("--timezone", default="America/Los_Angeles",
                   help="the utility's time zone (URDB has none)")
    u.add_argument("-o", "--output", metavar="FILE.toml",
                   help="write the TOML here (default: print it)")
    e = tsub.add_parser(
        "estimate-cap",
        help="the NEM-PS export cap: monthly PV estimate of your arrays (typical year)",
        description=(
            "Estimate the NEM2 Paired Storage export cap, the utility's 'Estimated PV "
            "Generation': kWh per month of the configured [[pv]] arrays in a typical weather "
            "year, PVWatts-like (pvlib), offline. By default the weather is pvlib's TMY3 file "
            "for Greensboro NC: the figures describe your arrays as if they stood there, not "
            "at your site's latitude. Your NEM statement's 'Solar Generation Eligible for "
            "Credit' is the real cap: prefer it (tariff monthly_kwh, or --export-cap)."),
        epilog=("examples:\n"
                "  trueup tariff estimate-cap\n"
                "  trueup tariff estimate-cap --config trueup.toml --weather 724940TYA.CSV\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--config", metavar="FILE",
                   help="trueup.toml whose [[pv]] arrays to estimate (default: the example "
                   "site)")
    e.add_argument("--weather", metavar="TMY3.CSV",
                   help="a TMY3 weather file nearer your site (default: pvlib's Greensboro "
                   "NC file)")
    e.add_argument("--json", action="store_true", help="print the estimate as JSON")


def _import_parser(sub) -> None:
    p = sub.add_parser(
        "import",
        help="seed the daemon's store with the utility's interval data (year to date)",
        description=(
            "Store the utility's interval data in trueup's database, so the daemon's billing "
            "state (export cap used, credit balance, NBCs paid) starts from what the utility "
            "metered rather than from the day trueup was installed. Utility data is kept apart "
            "from the gateway's telemetry and wins wherever both cover an interval: it is "
            "what you are billed on. Importing the same file again changes nothing; a newer "
            "download replaces the intervals it covers. Prints what was stored and what is "
            "still missing."
        ),
        epilog=(
            "usage formats (--format auto detects them):\n"
            "  csv          timestamp,import_kwh,export_kwh[,load_kwh,pv_kwh,battery_kwh]\n"
            "  green-button PG&E 'Download my data' electric CSV (local times: [site] timezone)\n"
            "  ct           CT registers (Grid, Solar); [site] metering_topology applies\n"
            "  tesla        the Tesla app's Day export (5-minute kW), days joined or not\n"
            "\nexamples:\n"
            "  trueup import --usage pge-download.csv\n"
            "  sudo -u trueup trueup import --usage pge.csv --config /etc/trueup/trueup.toml "
            "--data-dir /var/lib/trueup\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--usage", required=True, metavar="CSV", help="the utility's interval data")
    p.add_argument("--config", metavar="FILE",
                   help="trueup.toml: its [site] timezone reads local timestamps (default: "
                   "the built-in example site)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="the store's directory (default: $STATE_DIRECTORY under systemd, "
                   "else the user data directory, e.g. ~/.local/share/trueup)")
    p.add_argument("--format", default="auto",
                   choices=["auto", "csv", "green-button", "ct", "tesla"],
                   help="the usage file's format (default: detect)")
    p.add_argument("--allow-gaps", action="store_true",
                   help="import data with missing intervals (they stay missing; default: "
                   "refuse the file)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trueup",
        description=("trueup: the bill, true-up and battery dispatch for net-metered homes "
                     "(NEM2, NEM2 Paired Storage, NEM1, net billing and more)."),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _bill_parser(sub)
    _reconcile_parser(sub)
    _tariff_parser(sub)
    _import_parser(sub)
    pl = sub.add_parser(
        "plan",
        help="dry run: the battery plan for the next hours and the settings it would apply",
        description=(
            "Plan the battery for the next hours (48 h of 15-minute steps by default) and "
            "print the Powerwall settings that carry the plan out, each with its reason. "
            "Nothing is written to the gateway. The plan maximises what your bill will "
            "really credit: import prices and NBCs from the tariff, the NEM-PS export cap "
            "budgeted over the rest of the month, and, on NEM2, the projected true-up "
            "(credit that would be forfeited is worth only the surplus rate). Works offline: "
            "without forecasts it uses a clear-sky PV estimate and a typical load profile."
        ),
        epilog=(
            "examples:\n"
            "  trueup plan                                 the example site, now, SOC 50 %\n"
            "  trueup plan --at 2025-07-15T14:00-07:00 --soc 80\n"
            "  trueup plan --config trueup.toml --usage this-year.csv --json\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pl.add_argument("--config", metavar="FILE",
                    help="trueup.toml (default: the built-in example site)")
    pl.add_argument("--at", metavar="ISO8601",
                    help="plan as if it were this time (with its UTC offset); default now")
    pl.add_argument("--soc", type=float, metavar="PCT",
                    help="battery state of charge now, app %% (default 50)")
    pl.add_argument("--usage", metavar="CSV",
                    help="history so far (interval CSV): month-to-date exports against the "
                    "cap, the credit balance, the period's NBCs")
    pl.add_argument("--json", action="store_true", help="print the plan JSON contract")
    stp = sub.add_parser(
        "status",
        help="read the gateway once: SOC, power flows, grid, current settings",
        description=(
            "Read the Tesla gateway once and show the battery's state of charge, the power "
            "flows, the grid status, the current settings, and which connection answered. "
            "The first command to run after configuring [gateway]. Nothing is written. A "
            "value that could not be read is shown as unknown with the reason, never as 0."
        ),
        epilog="examples:\n  trueup status\n  trueup status --config /etc/trueup/trueup.toml "
        "--json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stp.add_argument("--config", metavar="FILE",
                     help="trueup.toml (default: the built-in example site, simulated)")
    stp.add_argument("--json", action="store_true", help="print the reading as JSON")
    from trueup.gateway_setup import add_parser as _gateway_parser

    _gateway_parser(sub)
    r = sub.add_parser(
        "run",
        help="the daemon: read, forecast, plan and apply, always on",
        description=(
            "Run trueup as a daemon: read the gateway every minute, plan every 15 minutes "
            "(and on events: a grid outage, the SOC far from the plan), apply the setting in "
            "force through the safety rails, keep every metered interval in the store, and "
            "serve /metrics, /healthz and /plan on [http] bind. Stop with SIGTERM (the write "
            "in flight finishes); SIGHUP reloads the configuration; SIGUSR1 trips the kill "
            "switch. With no --config: the example site on the simulated gateway, dry run."
        ),
        epilog="examples:\n  trueup run                                 (what `make run` does)\n"
               "  trueup run --config /etc/trueup/trueup.toml --dry-run\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--config", metavar="FILE", help="trueup.toml (default: the example site)")
    r.add_argument("--dry-run", action="store_true",
                   help="only log and record the settings it would write")
    r.add_argument("--data-dir", metavar="DIR",
                   help="where the store lives (default: $STATE_DIRECTORY under systemd, "
                   "else the user data directory)")
    r.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="one line per event, as text or JSON")
    bt = sub.add_parser(
        "backtest",
        help="replay a year through the simulated Powerwall under each strategy and bill it",
        description=(
            "Replay PV and load (kWh per interval: the built-in example year, or --usage: "
            "a trueup CSV, a PG&E Green Button download or a CT export; a file without "
            "load or PV gets PV estimated for the configured arrays and load rebuilt as "
            "import − export + PV, and the report says which columns were estimated) "
            "through the Powerwall behaviour model under each strategy's "
            "settings, and bill what the simulated battery did with the billing engine "
            "(never a plan). Strategies: self_powered (Tesla's default at the owner's floor), "
            "tbc_like (Time-Based Control: grid-charge off-peak, export everything at peak), "
            "tou_lp and trueup (re-plan every hour over the next 24 h on a forecast that "
            "never sees the actuals beyond the decision time except through documented "
            "noise; trueup budgets the NEM-PS export cap with the month outlook and plans "
            "for the NEM2 true-up, tou_lp ignores both — what EMHASS-style tools do), "
            "perfect_foresight (one LP over the period with the true PV and load, carried out "
            "as settings; its objective is reported as the bound). Forecasts: noisy (the "
            "actuals × 1 + bias + lead-growing AR(1) error: PV +5 % ± 10→30 %, load −5 % ± "
            "15→25 %), persistence (the same hour yesterday), clear_sky (clear-sky × monthly "
            "clearness PV, load the last 7 days' mean of the hour), perfect (reference only). "
            "Weeks ahead (the cap's month outlook, the true-up projection) come from the same "
            "weeks of the prior year: for the example the example home's previous year, for "
            "--usage the --prior CSV if given."
        ),
        epilog=(
            "examples:\n"
            "  trueup backtest                               the example year, all strategies\n"
            "  trueup backtest --start 2025-07-01 --days 14 --strategy tbc_like --json\n"
            "  trueup backtest --config trueup.toml --usage my-year.csv --prior last-year.csv\n"
            "  trueup backtest --config trueup.toml --usage pge-download.csv   what-if from "
            "PG&E data\n"
            "  trueup backtest --tariff pge-ev2a-nbt-2024 --jobs 2 --plot nbt.png\n"
            "  trueup backtest --forecast persistence --strategy trueup\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bt.add_argument("--config", metavar="FILE",
                    help="trueup.toml: site, battery and tariff (default: the example site)")
    bt.add_argument("--usage", metavar="CSV",
                    help="your data: trueup CSV, Green Button download (import/export is "
                    "enough) or CT export (default: the example year 2025)")
    bt.add_argument("--tariff", metavar="FILE_OR_ID",
                    help="a tariff TOML file or a bundled id (default: the config's)")
    bt.add_argument("--strategy", action="append", metavar="NAME",
                    help="a strategy to run (repeatable; default: all). self_powered is "
                    "always run: savings are measured against it")
    bt.add_argument("--start", metavar="YYYY-MM-DD",
                    help="first local day of the replay (default: the data's start)")
    bt.add_argument("--days", type=int, metavar="N", help="replay N days (default: all)")
    bt.add_argument("--prior", metavar="CSV",
                    help="the year before --usage (any --usage format): what the daemon knows "
                    "of the weeks ahead (default for the example: its previous year)")
    bt.add_argument("--forecast", default="noisy",
                    choices=["noisy", "persistence", "clear_sky", "perfect"],
                    help="what the rolling strategies are told of the next 24 h "
                    "(default: noisy)")
    bt.add_argument("--seed", type=int, default=2025,
                    help="seed of the noisy forecast's errors (default: 2025)")
    bt.add_argument("--jobs", type=int, default=1, metavar="N",
                    help=f"run strategies in N processes (this machine: {os.cpu_count() or 1} "
                    "cores)")
    bt.add_argument("--plot", metavar="FILE.png",
                    help="also draw monthly bills, a sample week and cap use (matplotlib)")
    bt.add_argument("--json", action="store_true", help="print the backtest JSON contract")
    d = sub.add_parser("demo", help="bill the built-in example year")
    d.add_argument("--out", default="build/example-usage.csv",
                   help="where to write the example interval CSV")
    return parser


def _load_tariff(name):
    """The tariff, its plausibility warnings printed on stderr."""
    from optimizer.tariff import load_tariff

    tariff = load_tariff(name)
    for w in tariff.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return tariff


def _read_usage(args, tz: str, cfg=None):
    from adapters.usage import read_usage

    topology = args.topology or (cfg.site.metering_topology if cfg is not None else None)
    return read_usage(args.usage, fmt=args.format.replace("-", "_"), tz=args.timezone or tz,
                      topology=topology, allow_gaps=args.allow_gaps,
                      service_kw=cfg.optimizer.service_limit_kw if cfg is not None else None)


def _parse_caps(text: str | None, tariff) -> list[float] | None:
    """--export-cap: 12 finite kWh values ≥ 0, for a NEM tariff that has an export cap."""
    if text is None:
        return None
    fix = "give 12 kWh values (≥ 0) separated by commas, January first"
    try:
        caps = [float(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"cannot read {text!r} as numbers", where="--export-cap",
                         fix=fix) from None
    if len(caps) != 12:
        raise InputError(f"{len(caps)} values given, 12 needed", where="--export-cap", fix=fix)
    bad = [x for x in caps if not math.isfinite(x) or x < 0]
    if bad:
        raise InputError(f"caps must be finite kWh ≥ 0, got {bad}", where="--export-cap",
                         fix=fix)
    if tariff.spec.export_cap is None or tariff.spec.export.scheme != "nem":
        raise InputError(f"tariff {tariff.id} has no export cap to override",
                         where="--export-cap",
                         fix="drop --export-cap, or use a NEM tariff with an [export_cap] "
                         "section (NEM2 Paired Storage)")
    return caps


def _config_and_tariff(args):
    """``--config`` (None without it) and the tariff: ``--tariff``, else the config's; one of
    the two is required."""
    cfg = None
    if args.config:
        from trueup.config import load_config

        cfg = load_config(args.config)
    elif args.tariff is None:
        raise InputError("no tariff: give --tariff, or --config with your trueup.toml",
                         where="--tariff",
                         fix="e.g. --tariff pge-ev2a-nem2ps-2024 (trueup tariff list)")
    return cfg, _load_tariff(args.tariff or cfg.tariff)


def cmd_bill(args) -> int:
    from optimizer.billing import bill, load_only
    from trueup.report import bill_table, money

    cfg, tariff = _config_and_tariff(args)
    data = _read_usage(args, tariff.tz, cfg)
    caps = _parse_caps(args.export_cap, tariff)
    if caps is None and cfg is not None and args.tariff is None:
        caps = cfg.optimizer.export_cap_kwh  # the config's caps go with the config's tariff
    if args.true_up_month is None and cfg is not None:
        args.true_up_month = cfg.optimizer.true_up_month
    b = bill(tariff, data, true_up_month=args.true_up_month, export_cap_kwh=caps,
             allow_gaps=args.allow_gaps)
    _warn_rates_date(tariff, data, "the bill")
    savings = None
    if data.load_kwh is not None and tariff.spec.export.scheme != "buy_all_sell_all":
        base = bill(tariff, load_only(data), true_up_month=args.true_up_month,
                    export_cap_kwh=caps, allow_gaps=args.allow_gaps)
        savings = {"without_solar_battery": round(base.annual_total, 2),
                   "with": round(b.annual_total, 2),
                   "savings": round(base.annual_total - b.annual_total, 2)}
    if args.json:
        out = b.to_json()
        out["savings"] = savings
        print(json.dumps(out, indent=2))
        return 0
    print(bill_table(b, title=f"{tariff.spec.name} — {data.source}"))
    if savings:
        print(f"Savings: {money(savings['savings'])} (the same tariff on the load alone: "
              f"{money(savings['without_solar_battery'])})")
    return 0


def cmd_reconcile(args) -> int:
    from adapters.usage import read_usage
    from optimizer.reconcile import VARIANTS, read_statement, reconcile
    from trueup.report import money, table

    cfg, tariff = _config_and_tariff(args)
    statement = read_statement(args.statement)
    data = read_usage(args.usage, tz=tariff.tz, allow_gaps=True,
                      topology=cfg.site.metering_topology if cfg else None)
    tum = args.true_up_month or (cfg.optimizer.true_up_month if cfg else None)
    caps = cfg.optimizer.export_cap_kwh if cfg is not None and args.tariff is None else None
    r = reconcile(tariff, data, statement, true_up_month=tum, export_cap_kwh=caps)
    matched = r.matched
    if args.json:
        print(json.dumps({
            "tariff": tariff.id, "matched": matched,
            "matched_rule": None if matched in (None, "tariff") else VARIANTS[matched][0],
            "lines": [{"line": x.line, "month": x.month, "statement": x.amount,
                       "trueup": round(r.ours.get((x.line, x.month), 0.0), 2),
                       "difference": round(x.amount - r.ours.get((x.line, x.month), 0.0), 2)}
                      for x in r.lines]}, indent=2))
        return 0
    rows = []
    for x in r.lines:
        ours = r.ours.get((x.line, x.month), 0.0)
        d = x.amount - ours
        rows.append([x.month, x.line, money(x.amount), money(ours),
                     "" if abs(d) < 0.01 else money(d)])
    print(f"{tariff.spec.name}: the statement ({args.statement}) against the bill of "
          f"{data.source}\n")
    print(table(["month", "line", "statement $", "trueup $", "difference $"], rows))
    print()
    diffs = r.differing()
    if matched == "tariff":
        print("Every line matches the tariff as written, to the cent.")
        return 0
    for x, d in diffs:
        print(f"- {x.month} {x.line}: the statement says {money(x.amount)}, the tariff gives "
              f"{money(r.ours.get((x.line, x.month), 0.0))}: {money(abs(d))} "
              f"{'more' if d > 0 else 'less'} on the statement")
    total = sum(d for x, d in diffs if x.line == "true_up_due") or sum(d for _, d in diffs)
    if matched is not None:
        print(f"\nThe statement follows a known alternative rule: {VARIANTS[matched][0]} "
              f"({matched}); every line equals that rule's bill to the cent. Under the "
              f"tariff as written the statement would ask {money(abs(total))} "
              f"{'less' if total > 0 else 'more'}.")
    else:
        print("\nNo known alternative rule explains the differences: check the data covers "
              "the same months, the true-up month, and the tariff's rates for that period.")
    return 0


def _warn_rates_date(tariff, data, what: str, *, before: bool = True) -> None:
    """Say on stderr when ``data``'s dates are far from the tariff's effective date
    (``before=False``: not when they precede it)."""
    from optimizer.tariff import rates_date_note

    if len(data):
        note = rates_date_note(tariff, int(data.start_utc[0]), data.end_utc - 1, what=what,
                               before=before)
        if note:
            print(f"warning: {note}", file=sys.stderr)


def cmd_tariff(args) -> int:
    from optimizer.tariff import bundled_ids, load_tariff
    from trueup.report import table, tariff_summary

    if args.tariff_cmd == "list":
        import time

        from optimizer.tariff import rates_date_note

        rows, old = [], 0
        now = int(time.time())
        for tid in bundled_ids():
            t = load_tariff(tid)
            stale = rates_date_note(t, now) is not None
            old += stale
            rows.append([tid, t.spec.export.scheme, t.spec.effective + (" *" if stale else ""),
                         _source_label(t.spec.source)])
        print(table(["id", "scheme", "effective", "source"], rows, align="llll"))
        if old:
            print(f"\n* {old} tariff(s) more than a year old today: their rates may have "
                  "changed since. `trueup tariff show ID` gives each one's source and notes; "
                  "docs/tariffs.md says how to update a file.")
        return 0
    if args.tariff_cmd == "show":
        name = args.tariff
        if name is None:
            if not args.config:
                raise InputError("which tariff? give a tariff file or bundled id, or --config",
                                 where="trueup tariff show",
                                 fix="e.g. trueup tariff show pge-ev2a-nem2ps-2024, or "
                                 "trueup tariff show --config trueup.toml")
            from trueup.config import load_config

            name = load_config(args.config).tariff
        print(tariff_summary(_load_tariff(name)))
        return 0
    if args.tariff_cmd == "estimate-cap":
        return cmd_estimate_cap(args)
    from optimizer.urdb import import_urdb_file

    text, warnings = import_urdb_file(args.file, item=args.item, timezone=args.timezone)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return 0


def _source_label(source: str) -> str:
    """A tariff's source for a table row: "<schedule>, AL <number>" when the source names an
    advice letter, else its first 72 characters."""
    import re

    m = re.search(r"Advice Letter (\S+?)[,;. ]", source + " ")
    if m:
        return f"{source.split(',')[0].strip()}, AL {m.group(1)}"
    return _short(source, 72)


def _short(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def cmd_estimate_cap(args) -> int:
    from forecasts.nem_ps import MONTHS, estimate_monthly_kwh
    from trueup.config import load_config
    from trueup.report import kwh, table

    cfg = load_config(args.config)
    est = estimate_monthly_kwh(cfg.pv, args.weather)
    if args.json:
        out = est.to_json()
        out["site"] = {"latitude": cfg.site.latitude, "longitude": cfg.site.longitude,
                       "source": cfg.source}
        print(json.dumps(out, indent=2))
        return 0
    arrays = ", ".join(f"{a.kw_dc:g} kW DC at {a.tilt:g}° tilt, azimuth {a.azimuth:g}°"
                       for a in cfg.pv)
    print(f"NEM-PS export cap estimate ('Estimated PV Generation', PVWatts-like via pvlib) "
          f"for {arrays} ({cfg.source})")
    print(f"weather: {est.weather_file}\n         {est.station}, "
          f"{est.latitude:.2f}°, {est.longitude:.2f}°, typical meteorological year")
    print(f"note: your site is at {cfg.site.latitude:.2f}°, {cfg.site.longitude:.2f}°; these "
          "figures use the weather file's sun and sky, not your site's. Your NEM statement's "
          "'Solar Generation Eligible for Credit' is the cap that counts.\n")
    rows = [[m, kwh(v)] for m, v in zip(MONTHS, est.monthly_kwh, strict=True)]
    rows.append(["year", kwh(est.annual_kwh)])
    print(table(["month", "kWh"], rows))
    for n in est.notes:
        print(f"note: {n}")
    print("\nfor a tariff file: [export_cap] monthly_kwh = ["
          + ", ".join(f"{v:.0f}" for v in est.monthly_kwh) + "]")
    return 0


def cmd_plan(args) -> int:
    from trueup.config import load_config
    from trueup.planning import make_plan, parse_at
    from trueup.report import plan_report

    cfg = load_config(args.config)
    if args.soc is not None and not 0 <= args.soc <= 100:
        raise InputError(f"--soc {args.soc} is outside 0-100", where="--soc",
                         fix="give the app's state of charge in percent")
    try:
        at = parse_at(args.at)
    except ValueError as e:
        raise InputError(str(e), where="--at",
                         fix="e.g. --at 2025-07-15T14:00-07:00 or --at 2025-07-15T21:00Z") \
            from None
    history = None
    if args.usage:
        from adapters.usage import read_usage

        history = read_usage(args.usage, tz=cfg.site.timezone, allow_gaps=True,
                             topology=cfg.site.metering_topology,
                             service_kw=cfg.optimizer.service_limit_kw)
    solar = None
    if [p for p in cfg.forecast.solar.providers if p != "clear_sky"]:
        import time

        from forecasts.solar import build_forecaster, make_request

        solar = build_forecaster(cfg.forecast.solar).forecast(make_request(
            cfg.site, cfg.pv, start_utc=at if at is not None else time.time(),
            hours=cfg.forecast.solar.hours))
    result = make_plan(cfg, at_utc=at, soc_percent=args.soc, history=history, solar=solar)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(plan_report(result, cfg))
    return 0 if result.plan.ok else 1


def cmd_status(args) -> int:
    from trueup.gateway_check import run_status

    return run_status(args.config, as_json=args.json)


def _duration(seconds: int) -> str:
    """``2 d 3 h 5 min``, ``15 min``, ``90 s``: a length of time for people (seconds are
    left out of lengths over an hour)."""
    d, rem = divmod(int(seconds), 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{d} d" if d else "", f"{h} h" if h else "", f"{m} min" if m else "",
             f"{s} s" if s and not (d or h) else ""]
    return " ".join(p for p in parts if p) or "0 s"


def _span(a: int, b: int, tz: str) -> str:
    """``2025-01-01T08:00Z – 2025-02-01T08:00Z (2025-01-01 00:00 PST – ...)``."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    ua, ub = (datetime.fromtimestamp(t, UTC) for t in (a, b))
    la, lb = (datetime.fromtimestamp(t, zone) for t in (a, b))
    return (f"{ua:%Y-%m-%dT%H:%MZ} – {ub:%Y-%m-%dT%H:%MZ} ({la:%Y-%m-%d %H:%M} {la.tzname()} – "
            f"{lb:%Y-%m-%d %H:%M} {lb.tzname()}, {_duration(b - a)})")


def cmd_import(args) -> int:
    import time

    from adapters.store import DB_FILE, SYSTEMD_STATE_DIR, default_data_dir, open_store
    from adapters.usage import read_usage
    from trueup.config import load_config

    cfg = load_config(args.config)
    data = read_usage(args.usage, fmt=args.format.replace("-", "_"), tz=cfg.site.timezone,
                      topology=cfg.site.metering_topology, allow_gaps=args.allow_gaps,
                      service_kw=cfg.optimizer.service_limit_kw)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    with open_store(data_dir) as store:
        r = store.add_utility(data, file=Path(args.usage).name)
        file_gaps = store.coverage(r.first, r.end, sources=("utility",))
        no_data = store.coverage(r.first, r.end)
        now = int(time.time())
        after = store.coverage(r.end, now) if now > r.end else []
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    tz = cfg.site.timezone

    def gaps(spans: list[tuple[int, int]]) -> str:
        return f"{len(spans)} gap(s), {_duration(sum(b - a for a, b in spans))} in all"

    print(f"Imported {Path(args.usage).name} into {data_dir / DB_FILE} as utility data "
          "(what you are billed on; it wins over gateway telemetry):")
    print(f"  {r.rows:,} intervals of {_duration(r.interval_s)}: {r.new:,} new, "
          f"{r.replaced:,} replaced, {r.unchanged:,} unchanged"
          + (f", {r.superseded:,} stored intervals of another length superseded"
             if r.superseded else ""))
    print(f"  span: {_span(r.first, r.end, tz)}")
    if not file_gaps:
        print("  missing in the span: nothing")
    else:
        print(f"  missing from the utility data in the span: {gaps(file_gaps)}")
        print("  of that, covered by neither utility data nor gateway telemetry: "
              + (gaps(no_data) + ":" if no_data else "nothing"))
        for a, b in no_data[:10]:
            print(f"    {_span(a, b, tz)}")
        if len(no_data) > 10:
            print(f"    ... and {len(no_data) - 10} more")
    if after:
        print(f"  after the span, up to now: {gaps(after)} with neither utility data nor "
              f"gateway telemetry; the first: {_span(*after[0], tz)}")
    if not args.data_dir and "STATE_DIRECTORY" not in os.environ and \
            SYSTEMD_STATE_DIR.is_dir() and data_dir != SYSTEMD_STATE_DIR:
        print(f"note: {SYSTEMD_STATE_DIR} exists (the systemd service's store); to seed that "
              f"one, run as the service's user with --data-dir {SYSTEMD_STATE_DIR}",
              file=sys.stderr)
    return 0


def cmd_run(args) -> int:
    from trueup.config import load_config
    from trueup.daemon import run
    from trueup.logs import secret_values, setup_logging

    cfg = load_config(args.config)  # errors here exit 2 before anything starts
    setup_logging(args.log_format, secrets=secret_values(cfg.gateway.password_file,
                                                         cfg.gateway.gw_pwd_file,
                                                         cfg.mqtt.password_file))
    return run(args.config, dry_run=args.dry_run or args.config is None,
               data_dir=args.data_dir)


def cmd_backtest(args) -> int:
    from datetime import date

    from trueup.backtest import (
        STRATEGIES,
        ForecastNoise,
        context_of,
        replay_from_config,
        report_table,
        run_backtest,
        select_period,
        whatif_summary,
    )
    from trueup.config import load_config
    from trueup.report import ProgressBar

    cfg = load_config(args.config)
    tariff = _load_tariff(args.tariff or cfg.tariff)
    prior = None
    if args.usage:
        from adapters.usage import read_usage
        from trueup.whatif import complete_usage

        data = read_usage(args.usage, tz=tariff.tz, service_kw=cfg.optimizer.service_limit_kw,
                          topology=cfg.site.metering_topology)
        completed = complete_usage(data, cfg)
        data = completed.data
        if args.prior:
            prior = complete_usage(read_usage(args.prior, tz=tariff.tz,
                                              service_kw=cfg.optimizer.service_limit_kw,
                                              topology=cfg.site.metering_topology), cfg).data
    else:
        from trueup.example import example_year
        from trueup.whatif import Completed

        data = example_year(2025, tz=tariff.tz)
        completed = Completed(data=data)
        prior = example_year(2024, tz=tariff.tz)
        if args.prior:
            raise InputError("--prior goes with --usage", where="--prior",
                             fix="give --usage with your year, or leave --prior out")
    start = None
    if args.start:
        try:
            start = date.fromisoformat(args.start)
        except ValueError:
            raise InputError(f"cannot read {args.start!r} as a date", where="--start",
                             fix="give the first day as YYYY-MM-DD") from None
        if not 2000 <= start.year <= 2100:
            raise InputError(f"--start {args.start} is outside 2000-2100", where="--start",
                             fix="give a first day inside the data (YYYY-MM-DD)")
    if args.days is not None and not 1 <= args.days <= 3660:
        raise InputError(f"--days {args.days} must be 1 to 3660", where="--days",
                         fix="give the number of days to replay, or leave --days out to "
                         "replay to the end of the data")
    if args.jobs < 1:
        raise InputError(f"--jobs {args.jobs} must be at least 1", where="--jobs",
                         fix="give the number of worker processes, e.g. --jobs 2")
    window = select_period(data, start, args.days, tariff.tz)
    # last year's usage at this year's rates is what a what-if asks: only old rates warn
    _warn_rates_date(tariff, window, "the backtest", before=False)
    replay = replay_from_config(cfg, tariff, window, context=context_of(data, window, prior),
                                forecast=args.forecast, noise=ForecastNoise(seed=args.seed))
    bar = None if args.json else ProgressBar(sys.stderr)
    result = run_backtest(replay, args.strategy or list(STRATEGIES),
                          progress=bar.update if bar else None, jobs=args.jobs)
    if bar:
        bar.close()
    # the results first: a plot that cannot be written must not lose minutes of replay
    metered = window if completed.estimated else None
    if args.json:
        out = result.to_json()
        out["usage"] = {"source": data.source, "estimated": list(completed.estimated),
                        "notes": list(completed.notes)}
        print(json.dumps(out, indent=2))
    else:
        print(f"backtest: {tariff.spec.name} — {window.source}, {len(window)} intervals, "
              f"{window.load_kwh.sum():,.0f} kWh load, {window.pv_kwh.sum():,.0f} kWh PV\n")
        if completed.estimated:
            print(f"estimated from the meter: {', '.join(completed.estimated)}")
            for n in completed.notes:
                print(f"  - {n}")
            print()
        print(whatif_summary(result, metered) + "\n")
        print(report_table(result))
    if args.plot:
        from trueup.backtest_plot import plot_backtest

        try:
            path = plot_backtest(result, args.plot)
        except OSError as e:
            raise InputError(f"cannot write the plot: {e.strerror or e}", where=args.plot,
                             fix="give a writable path ending in .png (the results above "
                             "are complete)") from None
        print(f"plot written to {path}", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    from optimizer.billing import bill, load_only
    from optimizer.tariff import load_tariff
    from trueup.example import example_year, write_csv
    from trueup.report import bill_table, money

    data = example_year(2025)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(data, out)
    tariff = load_tariff("pge-ev2a-nem2ps-2024")
    b = bill(tariff, data)
    base = bill(tariff, load_only(data))
    print("trueup demo: the example home (7.2 kW PV, one Powerwall in Self-Powered, "
          f"{data.load_kwh.sum():,.0f} kWh load, {data.pv_kwh.sum():,.0f} kWh PV in 2025)")
    print(f"interval data written to {out} (15-minute, the CSV contract)\n")
    print(bill_table(b, title=tariff.spec.name))
    print(f"Savings vs no solar and no battery: {money(base.annual_total - b.annual_total)}")
    tu = b.true_up
    if tu and tu.forfeited_credit > 0:
        print(f"\nThis home forfeits {money(tu.forfeited_credit)} of credit at true-up and "
              f"exceeds the export cap by "
              f"{sum(m.export_cap_excess_kwh for m in b.months):,.0f} kWh: the credits it "
              "earns are worth less than Tesla's controller assumes.")
    print(f"\nTry: trueup bill --tariff {tariff.id} --usage {out} --json")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd in ("run", "plan", "backtest", "demo"):  # they solve; stdout may be --json
        from trueup.solvers import silence_highs_banner

        silence_highs_banner()
    try:
        if args.cmd == "bill":
            return cmd_bill(args)
        if args.cmd == "reconcile":
            return cmd_reconcile(args)
        if args.cmd == "tariff":
            return cmd_tariff(args)
        if args.cmd == "demo":
            return cmd_demo(args)
        if args.cmd == "run":
            return cmd_run(args)
        if args.cmd == "plan":
            return cmd_plan(args)
        if args.cmd == "status":
            return cmd_status(args)
        if args.cmd == "gateway":
            from trueup.gateway_setup import cmd_gateway

            return cmd_gateway(args)
        if args.cmd == "import":
            return cmd_import(args)
        if args.cmd == "backtest":
            return cmd_backtest(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file or folder the command reads or writes
        print(f"error: {os_error(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line, the traceback on request
        if os.environ.get("TRUEUP_DEBUG"):
            raise
        print(f"error: unexpected {type(e).__name__}: {e}\n  this is a bug in trueup: "
              "rerun with TRUEUP_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.cmd}")
    return 2


def os_error(e: OSError) -> InputError:
    """An OSError as what/where/fix (the disk, the folder, the permissions)."""
    import errno

    where = str(e.filename or "")
    what = e.strerror or str(e)
    fix = {errno.ENOENT: "create the folder, or give a path that exists",
           errno.EACCES: "check the permissions of the path (or run as the user that owns "
                         "it)",
           errno.EISDIR: "give a file's path, not a folder's",
           errno.ENOSPC: "free space on the disk that holds it (df -h shows which); "
                         "nothing was lost, run the command again",
           errno.EROFS: "the file system is read-only: give a path on a writable disk"
           }.get(e.errno or 0, "check the path")
    return InputError(what, where=where, fix=fix)


if __name__ == "__main__":
    sys.exit(main())
