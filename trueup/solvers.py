"""The solvers' process effects, kept out of the pure core (``optimizer/``).

* :func:`silence_highs_banner` — HiGHS prints a licence banner on the C-level stdout the
  first time a solver is created in a process, whatever its options; that would corrupt
  ``trueup plan --json`` or ``trueup backtest --json``. Every entry point (the CLI, the
  daemon, the backtest's worker processes) calls it once before any solve.
* :func:`run_cbc_killable` — the CBC fallback in a *spawned* child process, killed with the
  CBC it starts at a wall-clock bound (CBC ignores its own time limit in presolve). A spawned
  child starts a fresh interpreter: forking the daemon, which has an APScheduler pool and an
  HTTP thread, could deadlock on a lock some other thread held at the fork.

``optimizer.plan.solve`` takes the runner as its ``run_pulp`` argument; without one it solves
in-process with CBC's own time limit.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading

import pulp

_BANNER_LOCK = threading.Lock()
_BANNER_SILENCED = False


def silence_highs_banner() -> None:
    """Create this process's first HiGHS solver with file descriptor 1 pointed at
    /dev/null, so its banner is never printed. Idempotent; call before any solve."""
    global _BANNER_SILENCED
    with _BANNER_LOCK:
        if _BANNER_SILENCED:
            return
        import highspy

        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            _BANNER_SILENCED = True


def _solve_in_child(conn, problem: dict, options: dict) -> None:
    """The spawned child: rebuild the problem by name, solve it with CBC, send back the
    status and every variable's value. Its own process group, so the parent can kill it
    together with the cbc process it starts."""
    import warnings

    os.setsid()
    _, prob = pulp.LpProblem.fromDict(problem)
    with warnings.catch_warnings():  # PuLP 3.3 warns about 4.0; we pin pulp < 4
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(msg=False, **options)
    prob.solve(solver)
    conn.send((prob.status, prob.sol_status, {v.name: v.varValue for v in prob.variables()}))
    conn.close()


def run_cbc_killable(prob: pulp.LpProblem, options: dict, seconds: float) -> None:
    """Solve ``prob`` with CBC (``options``: PULP_CBC_CMD's ``timeLimit``, ``gapRel``,
    ``mip``) in a spawned child; after ``seconds`` of wall clock the child and its CBC are
    killed and ``prob`` is marked not solved, so no value of it is ever read. The solution
    comes back by variable name."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_solve_in_child, args=(child, prob.toDict(), options),
                       daemon=True)
    proc.start()
    child.close()
    answer = None
    with contextlib.suppress(EOFError, OSError):  # a child that died sends nothing
        if parent.poll(seconds):
            answer = parent.recv()
    if answer is not None:
        proc.join(1.0)
        prob.status, prob.sol_status, values = answer
        for v in prob.variables():
            v.varValue = values.get(v.name)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its cbc, once it has its group
    proc.kill()  # a child still starting has no group of its own yet
    proc.join(1.0)
    parent.close()
    prob.status, prob.sol_status = pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound
