"""The simulated site's accelerated clock (trueup/simclock.py) and its configuration."""

from __future__ import annotations

import json
import time

import pytest

from optimizer.errors import InputError
from trueup.config import load_config
from trueup.planning import parse_at
from trueup.simclock import AcceleratedClock

JULY = parse_at("2025-07-01T00:00-07:00")


def test_it_runs_speed_times_faster_and_carries_on_in_a_new_process(tmp_path):
    c = AcceleratedClock(tmp_path, 600.0, JULY)
    t0 = c.now()
    assert t0 == pytest.approx(JULY, abs=60)
    time.sleep(0.2)
    assert c.now() - t0 == pytest.approx(0.2 * 600, rel=0.5)
    again = AcceleratedClock(tmp_path, 600.0, JULY)  # a restart: the same simulated time
    assert again.now() == pytest.approx(c.now(), abs=30)
    assert (tmp_path / "simulator-clock.json").stat().st_mode & 0o077 == 0


def test_a_jump_asked_for_in_the_jump_file_is_applied_once_and_persisted(tmp_path):
    c = AcceleratedClock(tmp_path, 1.0, JULY)
    assert c.take_jump() is None
    (tmp_path / "simulator-clock-jump.json").write_text(json.dumps({"jump_s": -7200}))
    before = c.now()
    assert c.take_jump() == -7200
    assert c.now() == pytest.approx(before - 7200, abs=5)
    assert not (tmp_path / "simulator-clock-jump.json").exists()
    assert AcceleratedClock(tmp_path, 1.0, JULY).now() == pytest.approx(before - 7200, abs=5)


@pytest.mark.parametrize("text, key", [
    ('[gateway]\nsim_faults = { write_eror = 0.1 }\n', "gateway.sim_faults"),
    ('[gateway]\nsim_faults = { write_error = 2 }\n', "gateway.sim_faults"),
    ('[gateway]\nsim_start = "2025-07-01T00:00"\n', "gateway.sim_start"),
    ('[gateway]\nsim_speed = 0.5\n', "gateway.sim_speed"),
])
def test_bad_simulation_settings_are_refused_at_load(tmp_path, text, key):
    f = tmp_path / "trueup.toml"
    f.write_text(text)
    with pytest.raises(InputError) as e:
        load_config(f)
    assert key in str(e.value)
