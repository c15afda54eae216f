"""The simulated site's clock for ``trueup run``: simulated time that runs ``speed`` times
faster than real time, kept in the data dir so that it carries on across restarts.

For trying trueup, and for the fault campaign (bench/fault_campaign.py), which drives the
real ``trueup run`` process through a simulated day in minutes. Only with
``[gateway] kind = "simulated"`` and ``sim_speed`` > 1 or a ``sim_start``: a real gateway
always runs on the system clock.

``simulator-clock.json`` holds the anchor: simulated time ``sim`` at real (system) time
``real`` and the speed, so ``now = sim + (time.time() − real) × speed``; a process started
later (after a kill -9, say) continues the same simulated time, the time it was down
included. A clock jump is injected by writing ``{"jump_s": −7200}`` to
``simulator-clock-jump.json`` in the data dir: the daemon's main loop applies it (the
simulated wall clock moves; the scheduler and the health check see a jump, as they would
when NTP corrects a clock) and deletes the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

CLOCK_FILE = "simulator-clock.json"
JUMP_FILE = "simulator-clock-jump.json"


class AcceleratedClock:
    """Simulated UTC epoch seconds advancing ``speed`` times faster than the system
    clock, anchored in ``data_dir``. Satisfies the gateway's ``Clock`` protocol."""

    def __init__(self, data_dir: Path, speed: float, start_utc: float | None) -> None:
        self.path = Path(data_dir) / CLOCK_FILE
        self.jump_path = Path(data_dir) / JUMP_FILE
        anchor = self._load()
        if anchor is None or anchor.get("speed") != speed:
            now_real = time.time()
            sim = start_utc if start_utc is not None and anchor is None else (
                self._sim_at(anchor, now_real) if anchor else now_real)
            anchor = {"sim": float(sim), "real": now_real, "speed": float(speed)}
            self._save(anchor)
        self.speed = float(anchor["speed"])
        self._sim, self._real = float(anchor["sim"]), float(anchor["real"])

    def now(self) -> float:
        return self._sim + (time.time() - self._real) * self.speed

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.speed)

    def jump(self, seconds: float) -> None:
        """Move the simulated wall clock by ``seconds`` (negative: back), persisted."""
        now_real = time.time()
        self._sim = self._sim + (now_real - self._real) * self.speed + float(seconds)
        self._real = now_real
        self._save({"sim": self._sim, "real": self._real, "speed": self.speed})

    def take_jump(self) -> float | None:
        """A jump asked for in the jump file, applied (and the file removed), or None."""
        try:
            seconds = float(json.loads(self.jump_path.read_text())["jump_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        with contextlib.suppress(OSError):
            self.jump_path.unlink()
        self.jump(seconds)
        return seconds

    @staticmethod
    def _sim_at(anchor: dict, now_real: float) -> float:
        return float(anchor["sim"]) + (now_real - float(anchor["real"])) * float(anchor["speed"])

    def _load(self) -> dict | None:
        try:
            anchor = json.loads(self.path.read_text())
            float(anchor["sim"]), float(anchor["real"]), float(anchor["speed"])
            return anchor
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save(self, anchor: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(anchor, f)
        os.replace(tmp, self.path)
