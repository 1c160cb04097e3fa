"""Adapters from a :class:`sparseqp.problem.Problem` to peer QP solvers.

Every adapter returns a :class:`PeerResult` (a 6-tuple ``x, y, z, status, time, iterations``) in
sparseqp's conventions:

    H x + g + A'y + C'z = 0,   z > 0 where an upper bound of l <= Cx <= u is active,
                               z < 0 where a lower bound is active.

``status`` is ``"solved"`` when the solver reports an optimal solution (at its own tolerance),
otherwise the solver's own status name in lower case, ``"not installed"`` or
``"error: <message>"``. ``time`` is the wall-clock time of the solver's own setup + solve calls
(the conversion of the data into the solver's input format is not counted), in seconds.

Solvers are imported lazily: ``available()`` lists the installed ones. Tolerances: ``eps_abs`` and
``eps_rel`` are passed to the solver's own settings as the closest equivalent; the benchmark judges
success on residuals it recomputes itself, never on the solver's word alone.
"""
from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import re
import time
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

__all__ = ["NO_TIME_LIMIT", "PEERS", "PeerResult", "available", "solve_isolated", "solve_with"]

class PeerResult(NamedTuple):
    x: np.ndarray | None
    y: np.ndarray | None
    z: np.ndarray | None
    status: str
    time: float
    iterations: int


def _failed(status: str, t: float = float("nan")) -> PeerResult:
    return PeerResult(None, None, None, status, t, 0)


def _normalize(status) -> str:
    """Solver status -> lower snake case without the solver prefix; "solved" for success."""
    s = str(status).split(".")[-1]
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", s).lower().replace(" ", "_")
    for prefix in ("proxqp_", "piqp_", "osqp_"):
        s = s.removeprefix(prefix)
    return s


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# --------------------------------------------------------------------------------------------
# OSQP: l <= [A; C] x <= u in one block, y with the same sign as ours. Infinite bounds are
# passed as inf (a large finite stand-in such as 1e20 is NOT infinite for OSQP, whose infinity is
# 1e30, and would hide dual infeasibility). Settings: defaults except tolerances, verbose, and
# max_iter (lifted: the time limit ends the run).
# --------------------------------------------------------------------------------------------
def osqp_data(p):
    """(P upper triangle, [A; C], lower, upper) of a sparseqp Problem in OSQP's form."""
    return (sp.triu(p.H, format="csc"), sp.vstack([p.A, p.C], format="csc"),
            np.concatenate([p.b, p.l]), np.concatenate([p.b, p.u]))


def _solve_osqp(p, eps_abs, eps_rel, time_limit):
    osqp = _import("osqp")
    if osqp is None:
        return _failed("not installed")
    P, M, lo, hi = osqp_data(p)
    settings = dict(eps_abs=eps_abs, eps_rel=eps_rel, max_iter=10**9, verbose=False)
    if time_limit:
        settings["time_limit"] = float(time_limit)
    solver = osqp.OSQP()
    t0 = time.perf_counter()
    solver.setup(P, p.g, M, lo, hi, **settings)
    res = solver.solve()
    t = time.perf_counter() - t0
    status = _normalize(res.info.status)
    y = res.y
    return PeerResult(res.x, y[: p.n_eq], y[p.n_eq:], status, t, int(res.info.iter))


# --------------------------------------------------------------------------------------------
# ProxQP (proxsuite, sparse backend): same form and signs as ours; inf bounds accepted. No time
# limit setting; max_iter is proxsuite's default.
# --------------------------------------------------------------------------------------------
def _solve_proxsuite(p, eps_abs, eps_rel, time_limit):
    proxsuite = _import("proxsuite")
    if proxsuite is None:
        return _failed("not installed")
    proxqp = proxsuite.proxqp
    qp = proxqp.sparse.QP(p.n, p.n_eq, p.n_in)
    qp.settings.eps_abs = eps_abs
    qp.settings.eps_rel = eps_rel
    qp.settings.verbose = False
    H = sp.triu(p.H, format="csc")  # same solution as the full H, ~30% faster
    A = p.A if p.n_eq else None
    b = p.b if p.n_eq else None
    C = p.C if p.n_in else None
    l = p.l if p.n_in else None
    u = p.u if p.n_in else None
    t0 = time.perf_counter()
    qp.init(H, p.g, A, b, C, l, u)
    qp.solve()
    t = time.perf_counter() - t0
    info = qp.results.info
    status = _normalize(info.status)
    return PeerResult(np.array(qp.results.x), np.array(qp.results.y), np.array(qp.results.z),
                      status, t, int(info.iter))


# --------------------------------------------------------------------------------------------
# Clarabel: A x + s = b, s in cones. Rows: equalities (zero cone), then C x <= u and -C x <= -l
# (finite sides only, nonnegative cone). Duals: P x + q + A'z = 0, z >= 0 on the nonnegative cone,
# so ours are y = z_eq, z = z_upper - z_lower.
# --------------------------------------------------------------------------------------------
def _clarabel_data(p):
    up = np.flatnonzero(np.isfinite(p.u))
    lo = np.flatnonzero(np.isfinite(p.l))
    M = sp.vstack([p.A, p.C[up], -p.C[lo]], format="csc")
    rhs = np.concatenate([p.b, p.u[up], -p.l[lo]])
    return M, rhs, up, lo


def _solve_clarabel(p, eps_abs, eps_rel, time_limit):
    clarabel = _import("clarabel")
    if clarabel is None:
        return _failed("not installed")
    M, rhs, up, lo = _clarabel_data(p)
    cones = []
    if p.n_eq:
        cones.append(clarabel.ZeroConeT(p.n_eq))
    if up.size + lo.size:
        cones.append(clarabel.NonnegativeConeT(up.size + lo.size))
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_feas = eps_abs
    st.tol_gap_abs = eps_abs
    st.tol_gap_rel = eps_rel
    if time_limit:
        st.time_limit = float(time_limit)
    P = sp.triu(p.H, format="csc")
    t0 = time.perf_counter()
    solver = clarabel.DefaultSolver(P, p.g, M, rhs, cones, st)
    sol = solver.solve()
    t = time.perf_counter() - t0
    status = _normalize(sol.status)
    dual = np.asarray(sol.z)
    z = np.zeros(p.n_in)
    k = p.n_eq
    z[up] += dual[k: k + up.size]
    z[lo] -= dual[k + up.size:]
    return PeerResult(np.asarray(sol.x), dual[: p.n_eq].copy(), z, status, t,
                      int(sol.iterations))


# --------------------------------------------------------------------------------------------
# PIQP (sparse): A x = b, h_l <= G x <= h_u (inf accepted); duals with
# P x + c + A'y + G'(z_u - z_l) = 0. No time limit setting; max_iter is piqp's default.
# --------------------------------------------------------------------------------------------
def _solve_piqp(p, eps_abs, eps_rel, time_limit):
    piqp = _import("piqp")
    if piqp is None:
        return _failed("not installed")
    solver = piqp.SparseSolver()
    solver.settings.eps_abs = eps_abs
    solver.settings.eps_rel = eps_rel
    solver.settings.verbose = False
    P = sp.triu(p.H, format="csc")
    args = dict(A=p.A if p.n_eq else None, b=p.b if p.n_eq else None)
    if p.n_in:
        args.update(G=p.C, h_l=p.l.copy(), h_u=p.u.copy())
    t0 = time.perf_counter()
    solver.setup(P, p.g, **args)
    st = solver.solve()
    t = time.perf_counter() - t0
    status = _normalize(st)
    r = solver.result
    z = np.asarray(r.z_u) - np.asarray(r.z_l) if p.n_in else np.zeros(0)
    return PeerResult(np.asarray(r.x), np.asarray(r.y), z, status, t, int(r.info.iter))


#: name -> (module to import, adapter)
PEERS = {
    "osqp": ("osqp", _solve_osqp),
    "proxsuite": ("proxsuite", _solve_proxsuite),
    "clarabel": ("clarabel", _solve_clarabel),
    "piqp": ("piqp", _solve_piqp),
}


#: Peers without a time limit setting: run them with :func:`solve_isolated` to bound their time.
NO_TIME_LIMIT = ("proxsuite", "piqp")


def available() -> list[str]:
    """Names of the installed peer solvers."""
    out = []
    for name, (module, _) in PEERS.items():
        if importlib.util.find_spec(module) is not None:
            out.append(name)
    return out


def solve_with(name: str, problem, eps_abs: float = 1e-6, eps_rel: float = 0.0,
               time_limit: float | None = 60.0) -> PeerResult:
    """Solve ``problem`` with the peer solver ``name`` (see :data:`PEERS`).

    Returns ``x, y, z, status, time, iterations`` in sparseqp's sign convention. Exceptions in
    the solver are caught and reported as status ``"error: ..."``; a missing package as
    ``"not installed"``. Solvers without a time limit setting (proxsuite, piqp) run to their own
    end; the benchmark counts a run longer than the limit as a failure.
    """
    if name not in PEERS:
        raise ValueError(f"unknown solver {name!r}; known: {', '.join(PEERS)}")
    _, adapter = PEERS[name]
    try:
        return adapter(problem, float(eps_abs), float(eps_rel), time_limit)
    except Exception as exc:  # a peer crash must not stop the benchmark
        return _failed(f"error: {type(exc).__name__}: {exc}")


def _child(conn, name, problem, eps_abs, eps_rel, time_limit):
    conn.send(solve_with(name, problem, eps_abs, eps_rel, time_limit))
    conn.close()


def solve_isolated(name: str, problem, eps_abs: float = 1e-6, eps_rel: float = 0.0,
                   time_limit: float | None = 60.0, hard_limit: float | None = None) -> PeerResult:
    """:func:`solve_with` in a spawned child process, killed after ``hard_limit`` seconds.

    For solvers without a time limit setting. The default hard limit is
    ``1.2 * time_limit + 10`` s (the child's start-up, a second or so, is inside it but not in
    the reported time). A killed run has status ``"killed_at_time_limit"``, a crashed child
    ``"error: child process died"``.
    """
    if hard_limit is None:
        hard_limit = 1.2 * time_limit + 10.0 if time_limit else None
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, name, problem, eps_abs, eps_rel, time_limit),
                       daemon=True)
    proc.start()
    send.close()
    try:
        if recv.poll(hard_limit):
            res = recv.recv()
        else:
            res = _failed("killed_at_time_limit", float(hard_limit))
    except EOFError:
        res = _failed("error: child process died")
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()
        recv.close()
    return res
