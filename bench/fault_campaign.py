"""The fault campaign: the real `trueup run` process on the simulated site, two simulated
days at 300× real time, through the faults a home server meets.

The daemon runs as a child process (``python -m trueup.cli run``), writing through the
safety rails, with gateway faults on throughout (2 % of reads time out, 10 % of writes
fail, 10 % are accepted and dropped). On it, in simulated time from 1 July 2025 00:00
(PDT), on the local path's write budget (4 commands an hour, 24 a day):

* a busy port at start (exit 2, nothing created);
* kill -9 and a restart, ten times (each down ~10 simulated minutes);
* SIGHUP with a broken configuration (kept running on the old one);
* the wall clock jumping 2 h forward, later 2 h back;
* a full disk for three simulated hours (the data dir on a small tmpfs, filled; needs root
  to mount it, else skipped and said), then space freed;
* SIGHUP with the kill switch set (the owner's settings restored, no write after), then a
  restart without it;

then a simulated day on Tesla's Fleet API budget (5 commands a day).

It prints what the gateway itself received (``simulator-writes.jsonl``, the simulated
site's record, independent of trueup's store) and what the store kept:

* unsafe writes: a reserve below the floor or 0, above 80 and not 100, or any write after
  the kill switch other than the restore;
* writes over any budget: commands in a rolling hour or day beyond the rails' budget;
* lost intervals: 5-minute intervals of the simulated span missing from the store;
* tracebacks in the daemon's log;
* commands a day against the 5-a-day budget, and what the plans say the budget cost.

Not a test: it asserts nothing; it exits 1 when a count that must be 0 is not.

    sudo .venv/bin/python bench/fault_campaign.py      # ~10 min; root for the tmpfs
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEED = 300.0
START = "2025-07-01T00:00-07:00"
HOUR = 3600.0
FLOOR = 20.0  # the example site's backup floor, app %
LAN = (4, 24)  # the simulated (and local) path's budget: commands an hour, a day
FLEET = (4, 5)  # Tesla's Fleet API


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Campaign:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.data = work / "data"
        self.port = free_port()
        self.config = work / "trueup.toml"
        self.log = work / "daemon.log"
        self.proc: subprocess.Popen | None = None
        self.events: list[tuple[float, str]] = []  # (simulated time, what was done)
        self.kill_window: list[tuple[float, float]] = []  # simulated spans under the kill
        self.tmpfs = False
        self.budget = LAN
        self.write_config()

    # -- the daemon -----------------------------------------------------------------

    def write_config(self, extra: str = "") -> None:
        self.config.write_text(f"""
[gateway]
kind = "simulated"
sim_speed = {SPEED}
sim_start = "{START}"
sim_faults = {{ read_timeout = 0.02, write_error = 0.1, drop_writes = 0.1 }}
[safety]
max_writes_per_day = {self.budget[1]}
[http]
bind = "127.0.0.1:{self.port}"
{extra}""")

    def start(self) -> None:
        out = open(self.log, "a")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trueup.cli", "run", "--config", str(self.config),
             "--data-dir", str(self.data)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.time() + 60
        while time.time() < deadline and not (self.data / "simulator-clock.json").exists():
            time.sleep(0.1)

    def sim_now(self) -> float:
        a = json.loads((self.data / "simulator-clock.json").read_text())
        return a["sim"] + (time.time() - a["real"]) * a["speed"]

    def until(self, sim_t: float) -> None:
        """Wait for the simulated clock to reach ``sim_t``."""
        while (left := sim_t - self.sim_now()) > 0:
            time.sleep(min(left / SPEED, 1.0))

    def note(self, what: str) -> None:
        t = self.sim_now() if (self.data / "simulator-clock.json").exists() else float("nan")
        self.events.append((t, what))
        print(f"  {what}", flush=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=120)
        self.proc = None

    def restart(self, what: str) -> float:
        """Stop, write the configuration afresh, start; return when it stopped."""
        self.stop()
        stopped = self.sim_now()
        self.write_config()
        self.start()
        self.note(what)
        return stopped

    # -- the faults -----------------------------------------------------------------

    def busy_port(self) -> str:
        fresh = self.work / "busy-data"
        with socket.socket() as held:
            held.bind(("127.0.0.1", self.port))
            held.listen()
            r = subprocess.run([sys.executable, "-m", "trueup.cli", "run", "--config",
                                str(self.config), "--data-dir", str(fresh)], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        ok = (r.returncode == 2 and "already uses the port" in r.stderr
              and "Traceback" not in r.stderr and not fresh.exists())
        return f"busy port at start: exit {r.returncode}, " + (
            "one-line error, nothing created" if ok else f"UNEXPECTED: {r.stderr[-300:]}")

    def mount_tmpfs(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs",
                            str(self.data)], capture_output=True, text=True)
        self.tmpfs = r.returncode == 0

    def fill_disk(self) -> Path | None:
        if not self.tmpfs:
            return None
        filler = self.data / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 4096, 1):  # unbuffered: to the last byte
                with contextlib.suppress(OSError):
                    while True:
                        os.write(fd, b"\0" * size)
        finally:
            os.close(fd)
        return filler

    def jump(self, seconds: float) -> None:
        (self.data / "simulator-clock-jump.json").write_text(json.dumps({"jump_s": seconds}))
        deadline = time.time() + 30
        while (self.data / "simulator-clock-jump.json").exists() and time.time() < deadline:
            time.sleep(0.1)


def main() -> int:
    from adapters.store import open_store
    from trueup.planning import parse_at

    t0 = parse_at(START)
    work = Path(tempfile.mkdtemp(prefix="trueup-campaign-"))
    c = Campaign(work)
    wall0 = time.time()
    print(f"fault campaign in {work} ({SPEED:.0f}× real time, from {START})", flush=True)
    print("  " + c.busy_port(), flush=True)
    c.mount_tmpfs()
    c.start()
    c.note("started")
    for k in range(10):  # kill -9 and restart, ten times, an hour apart
        c.until(t0 + (k + 1) * HOUR)
        c.stop(signal.SIGKILL)
        time.sleep(2.0)  # ~10 simulated minutes down
        c.start()
        c.note(f"kill -9 #{k + 1} and restart")
    c.until(t0 + 11 * HOUR)
    c.write_config("[optimizer\nhorizon_hours = ")  # broken TOML
    c.proc.send_signal(signal.SIGHUP)
    time.sleep(2.0)
    alive = c.proc.poll() is None
    c.write_config()
    c.note(f"SIGHUP with a broken config: {'still running' if alive else 'DIED'}")
    c.until(t0 + 12 * HOUR)
    c.jump(2 * HOUR)
    c.note("clock jumped 2 h forward")
    c.until(t0 + 16 * HOUR)
    c.jump(-2 * HOUR)
    c.note("clock jumped 2 h back")
    c.until(t0 + 17 * HOUR)
    filler = c.fill_disk()
    c.note("disk full" if filler else "disk full: SKIPPED (mounting a tmpfs needs root)")
    c.until(t0 + 20 * HOUR)
    if filler:
        filler.unlink()
        c.note("space freed")
    c.until(t0 + 22 * HOUR)
    c.config.write_text(c.config.read_text().replace(
        "[safety]\n", "[safety]\nkill_switch = true\n"))
    c.proc.send_signal(signal.SIGHUP)
    kill_at = c.sim_now()
    c.note("SIGHUP with the kill switch set")
    c.until(t0 + 24 * HOUR)
    c.kill_window.append((kill_at, c.restart("restarted without the kill switch")))
    c.until(t0 + 26 * HOUR)
    c.budget = FLEET
    fleet_at = c.restart("restarted on the Fleet API budget (5 commands a day)")
    c.until(t0 + 50 * HOUR)
    c.stop()
    end = c.sim_now()
    wall = time.time() - wall0

    # -- what happened ----------------------------------------------------------------
    sent = [json.loads(line) for line in
            (c.data / "simulator-writes.jsonl").read_text().splitlines()] \
        if (c.data / "simulator-writes.jsonl").exists() else []
    unsafe = []
    for w in sent:
        r = w["reserve_percent"]
        if "reserve_percent" in w["fields"] and (r < FLOOR or r == 0 or 80 < r < 100):
            unsafe.append(w)
    owner = json.loads((c.data / "owner-settings.json").read_text())
    restores = [w for a, z in c.kill_window for w in sent if a - 60 <= w["t"] < z
                and w["reserve_percent"] == owner.get("reserve_percent")]
    for a, z in c.kill_window:  # after the kill switch only the restore may be sent
        unsafe += [w for w in sent if a + 2 < w["t"] < z and w not in restores]
    # the kill switch's restore is sent whatever the budget says (the owner's word wins)
    times = sorted(w["t"] for w in sent if w not in restores for _ in w["fields"])
    over = 0
    for t in times:  # each command against the budget in force when it was sent
        per_hour, per_day = FLEET if t >= fleet_at else LAN
        hour = sum(1 for u in times if t - HOUR < u <= t)
        day = sum(1 for u in times if t - 24 * HOUR < u <= t)
        over = max(over, hour - per_hour, day - per_day)
    log = c.log.read_text()
    tracebacks = log.count("Traceback")
    with open_store(c.data) as store:
        data = store.intervals(int(t0), int(end) - 600, interval_s=300)
        expected = (int(end) - 600 - int(t0)) // 300
        plans = store.plans(t0 - HOUR, end + 3 * HOUR)
    have = set(int(t) for t in data.start_utc)
    missing = [t for t in range(int(t0), int(end) - 600, 300) if t not in have]
    lost = len(missing)
    off_grid = len(have) - (expected - lost)
    days = (end - t0) / 86400
    fleet_plans = [p for p in plans if p.saved_at >= fleet_at + HOUR]
    fits = [p.plan.get("write_budget") for p in fleet_plans if p.plan.get("write_budget")]
    fleet_cmds = [t for t in times if t >= fleet_at]
    fleet_days = (end - fleet_at) / 86400
    lost_value = sorted(f["value_lost_dollars"] or 0.0 for f in fits)
    full_lines = len(re.findall(r"is full \(", log))
    failed_jobs = len(re.findall(r"job failed: ", log))
    if c.tmpfs:
        subprocess.run(["umount", str(c.data)], capture_output=True)

    print(f"\n{days:.1f} simulated days in {wall / 60:.1f} min; {len(plans)} plans; "
          f"{len(sent)} write requests reached the gateway")
    print(f"unsafe writes:            {len(unsafe)}")
    print(f"writes over any budget:   {max(0, over)}  (budget {LAN[0]} an hour and {LAN[1]} a "
          f"day, then {FLEET[1]} a day)")
    print(f"lost intervals:           {lost}  (of {expected} 5-minute intervals)"
          + (f": from {(missing[0] - t0) / HOUR:.2f} h" if missing else "")
          + (f"; {off_grid} more off the 5-minute grid" if off_grid else ""))
    print(f"tracebacks in the log:    {tracebacks}")
    print(f"commands a day:           {len(times) / days:.1f} (and {len(restores)} kill-switch "
          "restore(s), sent whatever the budget says)")
    print(f"on the Fleet API budget:  {len(fleet_cmds) / fleet_days:.1f} commands a day "
          f"against {FLEET[1]}")
    if lost_value:
        print(f"plan value lost to it:    median ${lost_value[len(lost_value) // 2]:.2f}, "
              f"max ${lost_value[-1]:.2f} per plan over its 48 h horizon "
              f"({sum(1 for f in fits if f['changes_dropped'])} of {len(fits)} plans "
              "dropped changes)")
    print(f"full disk:                {full_lines} one-line message(s) naming the disk "
          f"({failed_jobs} job failure lines in all)")
    bad = unsafe or over > 0 or lost or tracebacks
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
