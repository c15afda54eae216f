"""What the web page and MQTT add to the daemon's memory: RSS of a real `trueup run`.

Two runs of the real daemon process on the simulated site (dry run, 60× real time, a fresh
data dir each): **baseline** — HTTP on, nobody reads the page, `[mqtt]` off; **page + MQTT**
— the page fetched every second and `[mqtt]` publishing to a real mosquitto (Debian's, on a
free loopback port). After a warm-up, VmRSS is sampled every second; the script prints the
median and p95 of each run and the difference of the medians (target: ≤ 20 MB).

    .venv/bin/python bench/rss_page_mqtt.py [--seconds 60] [--warmup 20]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRUEUP = Path(sys.executable).with_name("trueup")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def config(folder: Path, http_port: int, mqtt_port: int | None) -> Path:
    text = (ROOT / "trueup" / "example-site.toml").read_text()
    text = text.replace('bind = "127.0.0.1:9871"', f'bind = "127.0.0.1:{http_port}"', 1)
    text = text.replace("[gateway]\n", "[gateway]\nsim_speed = 60\n", 1)
    if mqtt_port is not None:
        text += f'\n[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
    path = folder / "trueup.toml"
    path.write_text(text)
    return path


def run(label: str, seconds: float, warmup: float, *, mqtt_port: int | None,
        fetch_page: bool) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="trueup-rss-") as tmp:
        folder = Path(tmp)
        port = free_port()
        cfg = config(folder, port, mqtt_port)
        proc = subprocess.Popen([str(TRUEUP), "run", "--config", str(cfg), "--dry-run",
                                 "--data-dir", str(folder / "data")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples: list[float] = []
        try:
            t0 = time.monotonic()
            while time.monotonic() - t0 < warmup + seconds:
                if proc.poll() is not None:
                    raise RuntimeError(f"{label}: trueup run exited ({proc.returncode})")
                if fetch_page:
                    with contextlib.suppress(OSError):  # not listening yet
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                if time.monotonic() - t0 >= warmup:
                    samples.append(rss_mb(proc.pid))
                time.sleep(1.0)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return samples


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=20.0)
    args = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        print("mosquitto is not installed: bash deploy/ci-deps.sh installs it")
        return 2
    with tempfile.TemporaryDirectory(prefix="trueup-broker-") as tmp:
        mport = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {mport} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            base = run("baseline", args.seconds, args.warmup, mqtt_port=None, fetch_page=False)
            both = run("page + MQTT", args.seconds, args.warmup, mqtt_port=mport,
                       fetch_page=True)
        finally:
            broker.terminate()
            broker.wait(timeout=10)
    print(f"RSS of `trueup run` (simulated site, dry run), {len(base)} samples each after "
          f"{args.warmup:.0f} s")
    print(f"{'run':<14} {'median MB':>10} {'p95 MB':>8}")
    for label, xs in (("baseline", base), ("page + MQTT", both)):
        print(f"{label:<14} {statistics.median(xs):>10.1f} {p95(xs):>8.1f}")
    delta = statistics.median(both) - statistics.median(base)
    print(f"page + MQTT add {delta:+.1f} MB (median; target ≤ 20 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
