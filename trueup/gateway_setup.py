"""``trueup gateway setup``: connect trueup to a Powerwall, guided or scripted.

What each mode needs (docs/powerwall.md, "Connecting your Powerwall"):

* ``local`` — the gateway's IP address and its customer password; read-only.
* ``tedapi`` — this machine on the gateway's own Wi-Fi network and the Wi-Fi password from
  the gateway's QR sticker; read-only.
* ``v1r`` — the gateway's IP address, the customer password and an RSA key registered with
  ``python -m pypowerwall setup -v1r``; reads and controls (Powerwall 3, wired LAN).
* ``cloud`` — the Tesla account email and pypowerwall's cloud login file, made by
  ``python -m pypowerwall setup``; reads and controls.
* ``fleetapi`` — pypowerwall's FleetAPI configuration, made by ``python -m pypowerwall setup
  -fleetapi``; reads and controls, billed per request.

What it does: asks for what the mode needs (flags answer the questions; ``--yes`` never
asks), keeps each password in a file of mode 0600 (never in trueup.toml, never printed or
logged), runs pypowerwall's own setup where its login file is missing (only when asked to
interactively: it needs a person), reads the gateway once with the new ``[gateway]``
(read-only: nothing is written to the battery), and, if the gateway answered, writes the
``[gateway]`` keys into trueup.toml — the rest of the file byte-for-byte, the old file kept
as ``trueup.toml.bak`` — and prints the reading.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import shlex
import shutil
import stat
import sys
import textwrap
import tomllib
from pathlib import Path

from optimizer.errors import InputError

MODES = ("local", "tedapi", "v1r", "cloud", "fleetapi")
CONFIG_MODE = {"local": "none", "tedapi": "tedapi", "v1r": "v1r", "cloud": "cloud",
               "fleetapi": "fleetapi"}
TEDAPI_HOST = "192.168.91.1"  # the gateway on its own Wi-Fi network
FLEET_CONFIG, CLOUD_AUTH, V1R_KEY = ".pypowerwall.fleetapi", ".pypowerwall.auth", \
    "tedapi_rsa_private.pem"

NEEDS = {
    "local": "Reads the gateway's local API on your LAN: free, and the only path with lifetime "
             "energy counters, but read-only. Needs the gateway's IP address and its customer "
             "password (pypowerwall: the last 5 characters of the password on its QR sticker).",
    "tedapi": "Reads the gateway over its own Wi-Fi network (TEG-…) at 192.168.91.1; "
              "read-only. Needs this machine joined to that network and the whole Wi-Fi "
              "password printed on the gateway's QR sticker.",
    "v1r": "Reads and controls a Powerwall 3 over your wired LAN. Needs the gateway's IP "
           "address, its customer password, and an RSA key registered once with pypowerwall's "
           "v1r setup (run from here if missing).",
    "cloud": "Reads and controls through the Tesla cloud (Owner API). Needs your Tesla account "
             "email and pypowerwall's cloud login file, made once by pypowerwall's setup (run "
             "from here if missing).",
    "fleetapi": "Reads and controls through Tesla's Fleet API (Tesla bills each request; about "
                "5 setting changes a day). Needs a Tesla developer app and pypowerwall's "
                "FleetAPI setup (run from here if missing).",
}
ASKS = {  # what pypowerwall 0.22's own setup asks, in its order
    "fleetapi": [
        "whether to overwrite the FleetAPI configuration already there, if there is one",
        "your Tesla developer app's Client ID, Client Secret, domain and redirect URI, and "
        "your region",
        "it then checks that the app's public key is served at https://<domain>/.well-known/"
        "appspecific/com.tesla.3p.public-key.pem",
        "it prints a Tesla login address: open it, log in, allow access, and paste the code "
        "from the address you land on",
        "which energy site to use, if your account has several"],
    "cloud": [
        "whether to overwrite the login file already there, if there is one",
        "on a desktop it opens Tesla's login page in your browser; over SSH or without a "
        "display it asks you to paste the tokens `python -m pypowerwall authtoken` prints on "
        "a machine with a browser",
        "your Tesla account email, if it cannot tell it from the login",
        "which energy site to use, if your account has several"],
    "v1r": [
        "how to log in to Tesla: [1] the Owner API (your Tesla email and password) or [2] "
        "the Fleet API (a developer app's Client ID, Client Secret and redirect URI)",
        "after the login, which energy site, if your account has several; it then makes an "
        "RSA-4096 key in the auth folder and registers it with your Powerwall",
        "if Tesla cannot confirm the key, to switch the Powerwall off and on within about "
        "10 minutes and press Enter"],
}


def add_parser(sub) -> None:
    """``trueup gateway setup`` (registered by trueup.cli)."""
    g = sub.add_parser("gateway", help="connect trueup to your Powerwall (gateway setup)",
                       description="Connect trueup to your Tesla gateway.")
    gsub = g.add_subparsers(dest="gateway_cmd", required=True, metavar="{setup}")
    s = gsub.add_parser(
        "setup", help="guided connection: choose a mode, test it, write [gateway]",
        description=(
            "Connect trueup to your Powerwall: choose how (local, tedapi, v1r, cloud or "
            "fleetapi), give what that mode needs, and trueup reads the gateway once "
            "(read-only) and writes the [gateway] section of trueup.toml (the rest of the "
            "file unchanged, the old one kept as trueup.toml.bak). Passwords are kept in "
            "files of mode 0600, never in trueup.toml. Asks for what the flags do not give; "
            "--yes never asks."),
        epilog=(
            "modes:\n" + "".join(_wrap(NEEDS[m], f"  {m:<9} ") + "\n" for m in MODES) +
            "\nexamples:\n"
            "  trueup gateway setup                                   guided\n"
            "  trueup gateway setup --mode local --host 192.168.1.50 --password-file pw "
            "--yes\n"
            "  trueup gateway setup --mode tedapi --gw-pwd-file wifi-pw --yes\n"
            "  trueup gateway setup --mode cloud --email me@example.com --config "
            "/etc/trueup/trueup.toml\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--mode", choices=MODES, help="how trueup reaches the gateway")
    s.add_argument("--host", help="the gateway's IP address (tedapi: 192.168.91.1)")
    s.add_argument("--password-file", metavar="FILE",
                   help="a file holding the gateway's customer password (local, v1r; also "
                   "cloud/fleetapi to read locally); made 0600")
    s.add_argument("--gw-pwd-file", metavar="FILE",
                   help="a file holding the gateway's Wi-Fi password, from its QR sticker "
                   "(tedapi); made 0600")
    s.add_argument("--email", help="your Tesla account email (cloud)")
    s.add_argument("--authpath", metavar="DIR",
                   help="folder for pypowerwall's login files, the gateway certificate pin "
                   "and passwords typed here (default: the config's [gateway] authpath)")
    s.add_argument("--config", metavar="FILE", default="trueup.toml",
                   help="the trueup.toml to write (default: ./trueup.toml; made from the "
                   "example site if missing)")
    s.add_argument("--yes", "-y", action="store_true",
                   help="never ask: take flags and defaults, fail naming a missing flag")
    s.add_argument("--write-anyway", action="store_true",
                   help="write [gateway] even if the gateway did not answer (e.g. set up "
                   "away from its network)")


def cmd_gateway(args) -> int:
    return _Setup(args).run()


def run_pypowerwall(argv: list[str]) -> int:
    """``python -m pypowerwall <argv>`` on this terminal (its questions and the answers
    never pass through trueup); the exit status."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "pypowerwall", *argv], check=False).returncode


def write_secret(path: Path, value: str) -> None:
    """``value`` alone in ``path``, mode 0600 from the start (folder made 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(value + "\n")
    os.replace(tmp, path)


class _Setup:
    def __init__(self, args) -> None:
        self.a = args
        self.asking = not args.yes
        self.path = Path(args.config).expanduser().absolute()

    # -- talking --------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, flush=True)

    def ask(self, prompt: str, default: str = "") -> str:
        try:
            answer = input(f"{prompt} [{default}]: " if default else f"{prompt}: ").strip()
        except EOFError:
            raise InputError("no answer: the input ended", where=prompt,
                             fix="answer on a terminal, or give the flags and --yes") from None
        return answer or default

    def yes(self, prompt: str, default: bool) -> bool:
        answer = self.ask(f"{prompt} ({'Y/n' if default else 'y/N'})").lower()
        return default if not answer else answer.startswith("y")

    def missing(self, flag: str, what: str) -> InputError:
        return InputError(f"{what} is needed", where=flag,
                          fix=f"give {flag}, or leave --yes out to be asked")

    # -- the steps --------------------------------------------------------------------------

    def run(self) -> int:
        from trueup.config import GatewaySection, load_config

        exists = self.path.is_file()
        base = load_config(self.path if exists else None)
        raw = tomllib.loads(self.path.read_text(encoding="utf-8")) if exists else {}
        self.old = raw.get("gateway", {}) if isinstance(raw.get("gateway"), dict) else {}
        self.base_gw = base.gateway
        mode = self.mode()
        if self.a.mode:  # (the menu has said it)
            self.say(_wrap(NEEDS[mode], f"{mode}: ") + "\n")
        self.reject_flags(mode)
        authpath = self.authpath()
        values = {"kind": "powerwall", "mode": CONFIG_MODE[mode], "authpath": str(authpath),
                  "host": "", "password_file": "", "gw_pwd_file": ""}
        if mode in ("local", "v1r"):
            values["host"] = self.host()
            values["password_file"] = self.password(authpath)
        if mode == "tedapi":
            values["host"] = self.a.host or (self.ask("The gateway's Wi-Fi address", TEDAPI_HOST)
                                             if self.asking else TEDAPI_HOST)
            values["gw_pwd_file"] = self.wifi_password(authpath)
        if mode == "v1r" and not (authpath / V1R_KEY).is_file():
            self.pypowerwall("v1r", authpath / V1R_KEY, ["setup", "-v1r"], authpath)
        if mode == "cloud":
            self.cloud_login(authpath)
        if mode == "fleetapi":
            self.fleet_login(authpath)
        if mode in ("cloud", "fleetapi") and self.local_reads():
            values["host"] = self.host()
            values["password_file"] = self.password(authpath)
        try:
            section = GatewaySection(**{**base.gateway.model_dump(), **values})
        except ValueError as e:
            raise InputError(f"invalid [gateway]: {e}", where=str(self.path)) from None
        cfg = base.model_copy(update={"gateway": section, "source": str(self.path)})
        for name in sorted(os.environ):
            if name.upper().startswith("TRUEUP_GATEWAY__"):
                self.say(f"note: {name} in the environment overrides the file's "
                         f"{name[16:].lower()}")
        ok = self.read(cfg)
        if not ok:
            write = self.a.write_anyway or (self.asking and self.yes(
                "The gateway did not answer as it should (see above). Write this [gateway] "
                "anyway", False))
            if not write:
                self.say(f"{self.path} not changed: fix what is above and run this again "
                         "(or add --write-anyway).")
                return 1
        self.write(values, exists)
        self.say(f"Next: trueup status --config {shlex.quote(str(self.path))}")
        return 0 if ok else 1

    def mode(self) -> str:
        if self.a.mode:
            return self.a.mode
        if not self.asking:
            raise self.missing("--mode", "the connection mode (" + ", ".join(MODES) + ")")
        current = {v: k for k, v in CONFIG_MODE.items()}.get(self.base_gw.mode, "local") \
            if self.base_gw.kind == "powerwall" else "local"
        self.say("How should trueup reach your Powerwall?")
        for i, m in enumerate(MODES, 1):
            self.say(_wrap(NEEDS[m], f"  {i}. {m:<9} "))
        while True:
            answer = self.ask(f"Mode (1-{len(MODES)} or a name)", current).lower()
            if answer.isdigit() and 1 <= int(answer) <= len(MODES):
                return MODES[int(answer) - 1]
            if answer in MODES:
                return answer
            self.say(f"  {answer!r} is not one of them")

    def reject_flags(self, mode: str) -> None:
        if self.a.gw_pwd_file and mode != "tedapi":
            raise InputError("--gw-pwd-file is the Wi-Fi password of --mode tedapi",
                             where="--gw-pwd-file", fix="leave it out, or use --mode tedapi")
        if self.a.email and mode != "cloud":
            raise InputError("--email is the Tesla account of --mode cloud", where="--email",
                             fix="leave it out, or use --mode cloud")
        if mode == "tedapi" and self.a.password_file:
            raise InputError("tedapi logs in with the Wi-Fi password, not the customer "
                             "password", where="--password-file",
                             fix="give --gw-pwd-file with the QR sticker's password instead")

    def authpath(self) -> Path:
        default = self.a.authpath or self.base_gw.authpath
        if not self.a.authpath and self.asking:
            default = self.ask("Folder for pypowerwall's login files and the passwords",
                               default)
        path = Path(default).expanduser().absolute()
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise InputError(f"cannot make the folder {path}: {e.strerror or e}",
                             where="--authpath", fix="give a folder you can write, e.g. "
                             f"--authpath {self.path.parent / 'auth'}") from None
        return path

    def host(self) -> str:
        if self.a.host:
            return self.a.host.strip()
        old = self.old.get("host", "") if self.base_gw.kind == "powerwall" else ""
        if not self.asking:
            raise self.missing("--host", "the gateway's IP address")
        while True:
            host = self.ask("The gateway's IP address on your LAN (`python -m pypowerwall "
                            "scan` finds it)", "" if old == TEDAPI_HOST else old)
            if host:
                return host

    def password(self, authpath: Path) -> str:
        return self.secret_file(
            self.a.password_file, "--password-file", "the gateway's customer password",
            Path(self.old.get("password_file") or authpath / "gw_password"))

    def wifi_password(self, authpath: Path) -> str:
        return self.secret_file(
            self.a.gw_pwd_file, "--gw-pwd-file",
            "the gateway's Wi-Fi password (the whole password on its QR sticker)",
            Path(self.old.get("gw_pwd_file") or authpath / "gw_wifi_password"))

    def secret_file(self, given: str | None, flag: str, what: str, default: Path) -> str:
        """The file holding a password: the one given (made 0600), or one written here from
        what the person types (hidden). Never the password itself."""
        if given:
            return str(self.own_secret(Path(given).expanduser().absolute(), flag))
        if not self.asking:
            raise self.missing(flag, f"a file with {what}")
        path = Path(self.ask(f"File to keep {what} in", str(default))).expanduser().absolute()
        if path.is_file() and path.stat().st_size and \
                self.yes(f"{path} exists: use the password already in it", True):
            return str(self.own_secret(path, flag))
        value = getpass.getpass(f"{what[0].upper()}{what[1:]} (not shown): ").strip()
        if not value:
            raise InputError("no password given", where=what,
                             fix="type the password (nothing is shown as you type)")
        write_secret(path, value)
        self.say(f"  kept in {path} (mode 0600)")
        return str(path)

    def own_secret(self, path: Path, flag: str) -> Path:
        if not path.is_file():
            raise InputError(f"{path} is not a file", where=flag,
                             fix="give the file that holds the password (one line)")
        if not path.read_text(encoding="utf-8", errors="replace").strip():
            raise InputError(f"{path} is empty", where=flag,
                             fix="write the password into it, alone on one line")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)
            self.say(f"  {path} was readable by others (mode {mode:04o}): now 0600")
        return path

    def local_reads(self) -> bool:
        if self.a.host or self.a.password_file:
            return True
        if not self.asking:
            return False
        had = bool(self.old.get("host") and self.old.get("password_file"))
        return self.yes("Also read the gateway on your LAN (free, and the only way to the "
                        "lifetime energy counters; needs its IP address and customer password)",
                        had)

    def cloud_login(self, authpath: Path) -> None:
        auth = authpath / CLOUD_AUTH
        have = _auth_email(auth)
        email = self.a.email or have
        if not email and self.asking:
            email = self.ask("Your Tesla account email")
        if not email:
            raise self.missing("--email", "your Tesla account email")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            raise InputError(f"{email!r} is not an email address", where="--email",
                             fix="give the email you log in to the Tesla app with")
        if have and have.lower() == email.lower():
            self.say(f"pypowerwall's cloud login for {have} is in {auth}")
            return
        why = f"{auth} holds the login of {have}, not {email}" if have else \
            f"there is no cloud login in {auth}"
        self.pypowerwall("cloud", auth, ["setup", "-email", email], authpath, why=why)
        if (_auth_email(auth) or "").lower() != email.lower():
            raise InputError(f"{auth} does not hold a login for {email}", where="--email",
                             fix=f"run `python -m pypowerwall setup -email {email} -authpath "
                                 f"{authpath}` and log in as {email}")

    def fleet_login(self, authpath: Path) -> None:
        conf = authpath / FLEET_CONFIG
        if conf.is_file() and not (self.asking and not self.yes(
                f"pypowerwall's FleetAPI configuration is in {conf}: use it", True)):
            return
        self.pypowerwall("fleetapi", conf, ["setup", "-fleetapi"], authpath,
                         why=f"there is no FleetAPI configuration in {conf}"
                         if not conf.is_file() else "")

    def pypowerwall(self, kind: str, file: Path, argv: list[str], authpath: Path, *,
                    why: str = "") -> None:
        """Run pypowerwall's own setup (interactive only), saying first what it asks."""
        argv = [*argv, "-authpath", str(authpath)]
        shown = "python -m pypowerwall " + " ".join(shlex.quote(a) for a in argv)
        why = why or f"{file} is missing"
        asks = "; ".join(ASKS[kind])
        if not self.asking:
            raise InputError(why, where=f"--mode {kind}",
                             fix=f"run `{shown}` (it asks: {asks}), then run this again")
        self.say(f"{why[0].upper()}{why[1:]}. pypowerwall's own setup makes it:\n  {shown}\n"
                 "It will ask:")
        for item in ASKS[kind]:
            self.say(f"  - {item}")
        self.say("What you type there goes to pypowerwall and Tesla, not to trueup.")
        if not self.yes("Run it now", True):
            raise InputError(why, where=f"--mode {kind}",
                             fix=f"run `{shown}` yourself, then run this again")
        code = run_pypowerwall(argv)
        if code != 0 or not file.is_file():
            raise InputError(f"pypowerwall's setup did not finish (exit status {code}) and "
                             f"{file} is missing", where=shown,
                             fix="run it again and answer each question; its messages above "
                                 "say what went wrong")
        with contextlib.suppress(OSError):
            file.chmod(0o600)

    def read(self, cfg) -> bool:
        """Read the gateway once with ``cfg`` (read-only) and print what it read."""
        from trueup.gateway_check import check, held_logs
        from trueup.gateways import build_gateway
        from trueup.report import status_report

        self.say("Reading the gateway once (read-only: nothing is written to it) …")
        gw = build_gateway(cfg)
        try:
            result = check(gw, firmware=True)
        finally:
            with held_logs(), contextlib.suppress(Exception):
                gw.close()
        if result.answered:
            self.say(status_report(result.state, gw.name, cfg, answered_by=result.answered_by,
                                   limits=result.limits, firmware=result.firmware))
        else:
            self.say("Nothing answered:")
        sys.stdout.flush()
        result.print_failures()
        return result.ok

    def write(self, values: dict, exists: bool) -> None:
        from trueup.config import EXAMPLE_CONFIG, GatewaySection, load_config
        from trueup.toml_section import set_keys

        defaults = GatewaySection()
        todo = {k: v for k, v in values.items()
                if k in self.old or v != getattr(defaults, k)}  # no default keys added
        text = self.path.read_text(encoding="utf-8") if exists else \
            EXAMPLE_CONFIG.read_text(encoding="utf-8")
        new = set_keys(text, "gateway", todo)
        if exists and new == text:
            self.say(f"{self.path} already has this [gateway]: not changed.")
            return
        tmp = self.path.with_name(f".{self.path.name}.new")
        tmp.write_text(new, encoding="utf-8")
        try:
            if exists:
                tmp.chmod(stat.S_IMODE(self.path.stat().st_mode))
            load_config(tmp)  # the file as trueup will read it
            if exists:
                shutil.copy2(self.path, self.path.with_name(self.path.name + ".bak"))
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        if exists:
            self.say(f"Wrote [gateway] to {self.path} (the previous file is "
                     f"{self.path.name}.bak).")
        else:
            self.say(f"Created {self.path} from the example site with this [gateway]: edit "
                     "tariff, [site], [battery] and [[pv]] for your home.")


def _wrap(text: str, first: str) -> str:
    """``text`` in lines of 92 columns, after ``first`` and indented under it."""
    return textwrap.fill(text, 92, initial_indent=first, subsequent_indent=" " * len(first),
                         break_on_hyphens=False)


def _auth_email(path: Path) -> str | None:
    """The Tesla account in pypowerwall's cloud login file (its first key), or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(next(iter(data))) if isinstance(data, dict) and data else None
    except (OSError, ValueError):
        return None
