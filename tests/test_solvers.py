"""The solvers' process effects (trueup/solvers.py): CBC in a spawned child killed at its
wall-clock bound, and HiGHS's banner kept off stdout."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pulp
import pytest

from optimizer.plan import build, solve
from tests.test_plan import NEM1, four_steps
from trueup.solvers import run_cbc_killable

OPTIONS = {"timeLimit": 10.0, "gapRel": 0.001, "mip": False}


def test_a_cbc_solve_past_its_wall_clock_is_killed_and_marked_unsolved():
    """No time left: the child (and any CBC it started) is killed at once; the problem is
    marked not solved, so no value of it is ever read."""
    prob, v, _ = build(four_steps(NEM1))
    run_cbc_killable(prob, OPTIONS, 0.0)
    assert prob.sol_status == pulp.LpSolutionNoSolutionFound
    assert all(x.varValue is None for x in v.imp)


def test_cbc_in_a_spawned_child_of_a_threaded_process_gives_highs_answer():
    """The daemon has threads (scheduler, HTTP); one holds a lock through the solve. A
    forked child could inherit that lock held; a spawned one starts clean and answers."""
    lock, stop = threading.Lock(), threading.Event()

    def hold() -> None:
        with lock:
            stop.wait(30)

    t = threading.Thread(target=hold, daemon=True)
    t.start()
    try:
        x = four_steps(NEM1)
        cbc = solve(x, solver="cbc", run_pulp=run_cbc_killable)
    finally:
        stop.set()
        t.join()
    highs = solve(x)
    assert cbc.status == "optimal" and cbc.solver == "cbc"
    assert cbc.objective == pytest.approx(highs.objective)
    assert np.allclose(cbc.import_kwh, highs.import_kwh, atol=1e-4)


def test_the_highs_banner_never_reaches_stdout():
    code = ("from trueup.solvers import silence_highs_banner\n"
            "silence_highs_banner()\n"
            "import highspy\nhighspy.Highs()\nprint('{}')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout == "{}\n"
    # and without it the banner does appear (the check above can fail)
    raw = subprocess.run([sys.executable, "-c", "import highspy\nhighspy.Highs()"],
                         capture_output=True, text=True, check=True)
    assert "HiGHS" in raw.stdout
