"""Shared helpers for the solver tests.

* :func:`assert_kkt` -- checks a result against the KKT conditions of a :class:`Problem`.
* :func:`reference_solve` -- independent reference solution with Clarabel (interior point).
* :func:`two_stage_closest` -- reference for the closest-feasible QP of an inconsistent problem.
* :func:`check_primal_certificate`, :func:`check_dual_certificate` -- numerical validity of
  infeasibility certificates.
* :func:`gen` -- test problem generators: those of :mod:`sparseqp.problems` when that module
  provides them, otherwise small local generators with the same signatures.
* :func:`maros_data` -- a Maros-Meszaros problem copied into ``tests/data``.

Sign convention (the solver's): the Lagrangian is ``1/2 x'Hx + g'x + y'(Ax - b) + z'(Cx - ...)``
with the stationarity condition ``Hx + g + A'y + C'z = 0``; ``z_i > 0`` means the upper bound
``u_i`` is active, ``z_i < 0`` the lower bound ``l_i``.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sparseqp.problem import Problem, make_problem

EPS = np.finfo(float).eps


# ----------------------------------------------------------------------------------------------
# small utilities
# ----------------------------------------------------------------------------------------------
def as_problem(obj) -> Problem:
    """A Problem from a generator output (a Problem, or an object with ``.problem``)."""
    if isinstance(obj, Problem):
        return obj
    if hasattr(obj, "problem"):
        return obj.problem
    raise TypeError(f"not a problem: {type(obj)}")


def _inf(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(np.max(np.abs(v))) if v.size else 0.0


def _mat_inf(M) -> float:
    M = sp.csc_matrix(M)
    return float(np.max(np.abs(M.data))) if M.nnz else 0.0


def _finite_inf(v) -> float:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    return _inf(v)


def shifted_problem(problem: Problem, s_eq, s_in) -> Problem:
    """The QP with constraints ``A x = b + s_eq``, ``l + min(s_in,0) <= C x <= u + max(s_in,0)``."""
    s_eq = np.asarray(s_eq, dtype=float)
    s_in = np.asarray(s_in, dtype=float)
    return Problem(H=problem.H, g=problem.g, A=problem.A, b=problem.b + s_eq, C=problem.C,
                   l=problem.l + np.minimum(s_in, 0.0), u=problem.u + np.maximum(s_in, 0.0),
                   constant=problem.constant, name=problem.name + "_shifted")


def kkt_residuals(problem: Problem, x, y, z) -> dict:
    """Unscaled residuals (infinity norms) and the scales of the terms that make them up."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    z = np.asarray(z, dtype=float)
    P = problem
    Ax = P.A @ x
    Cx = P.C @ x
    r_eq = Ax - P.b
    r_in = Cx - np.clip(Cx, P.l, P.u)
    prim = max(_inf(r_eq), _inf(r_in))
    Hx = P.H @ x
    ATy = P.A.T @ y
    CTz = P.C.T @ z
    rd = Hx + P.g + ATy + CTz
    dual = _inf(rd)
    prim_scale = max(_inf(Ax), _inf(P.b), _inf(Cx))
    dual_scale = max(_inf(Hx), _inf(P.g), _inf(ATy), _inf(CTz))
    # complementarity (natural residual): z_i > 0 needs C_i x = u_i, z_i < 0 needs C_i x = l_i;
    # an infinite bound makes the matching sign of z_i forbidden (min(|z_i|, inf) = |z_i|).
    gap_u = np.where(np.isfinite(P.u), np.abs(P.u - Cx), np.inf)
    gap_l = np.where(np.isfinite(P.l), np.abs(Cx - P.l), np.inf)
    comp = np.where(z > 0, np.minimum(z, gap_u), np.where(z < 0, np.minimum(-z, gap_l), 0.0))
    comp_res = _inf(comp) if comp.size else 0.0
    worst = int(np.argmax(comp)) if comp.size else -1
    comp_scale = max(_inf(z), _inf(Cx), _finite_inf(P.l), _finite_inf(P.u))
    return dict(prim=prim, dual=dual, comp=comp_res, comp_worst=worst,
                prim_scale=prim_scale, dual_scale=dual_scale, comp_scale=comp_scale)


def assert_kkt(result, problem: Problem, tol: float, *, check_reported: bool = True,
               what: str = "") -> dict:
    """Assert that ``result`` (x, y, z) is a KKT point of ``problem`` to tolerance ``tol``.

    * primal residual ``max(|Ax-b|, |Cx - proj_[l,u](Cx)|) <= tol`` (the solver's own criterion,
      eps_abs on the unscaled problem), up to floating-point rounding of the recomputation;
    * dual residual ``|Hx + g + A'y + C'z| <= tol`` (same);
    * complementarity and sign feasibility: ``min(z_i, |u_i - C_i x|) <= tol * (1 + scale)`` for
      ``z_i > 0`` and ``min(-z_i, |C_i x - l_i|) <= tol * (1 + scale)`` for ``z_i < 0`` (an
      infinite bound forbids the sign: the residual is then ``|z_i|``);
    * the reported ``fun`` matches the objective at x.
    Returns the residual dictionary.
    """
    P = problem
    x = np.asarray(result.x, dtype=float)
    y = np.asarray(result.y, dtype=float)
    z = np.asarray(result.z, dtype=float)
    assert x.shape == (P.n,), f"{what} x has shape {x.shape}, expected {(P.n,)}"
    assert y.shape == (P.n_eq,), f"{what} y has shape {y.shape}, expected {(P.n_eq,)}"
    assert z.shape == (P.n_in,), f"{what} z has shape {z.shape}, expected {(P.n_in,)}"
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(z)), \
        f"{what} non-finite entries in x/y/z"
    r = kkt_residuals(P, x, y, z)
    # rounding slack of the recomputation only (the tolerance itself is not loosened)
    p_lim = tol + 64 * EPS * (1 + r["prim_scale"])
    d_lim = tol + 64 * EPS * (1 + r["dual_scale"])
    c_lim = tol * (1 + r["comp_scale"])
    msg = (f"{what} KKT: prim={r['prim']:.3e} (lim {p_lim:.3e}), dual={r['dual']:.3e} "
           f"(lim {d_lim:.3e}), comp={r['comp']:.3e} (lim {c_lim:.3e}, row {r['comp_worst']}), "
           f"status={getattr(result, 'status', None)!r}, nit={getattr(result, 'nit', None)}")
    assert r["prim"] <= p_lim, msg
    assert r["dual"] <= d_lim, msg
    assert r["comp"] <= c_lim, msg
    if check_reported:
        # the reported residuals are those of the returned point
        if getattr(result, "prim_res", None) is not None:
            assert result.prim_res <= p_lim, f"{what} reported prim_res {result.prim_res:.3e} > tol; " + msg
        if getattr(result, "dual_res", None) is not None:
            assert result.dual_res <= d_lim, f"{what} reported dual_res {result.dual_res:.3e} > tol; " + msg
        fun = P.objective(x)
        assert abs(result.fun - fun) <= 1e-9 * (1 + abs(fun)), \
            f"{what} reported fun {result.fun!r} != objective at x {fun!r}"
    return r


# ----------------------------------------------------------------------------------------------
# infeasibility certificates
# ----------------------------------------------------------------------------------------------
def check_primal_certificate(problem: Problem, cert, tol: float = 1e-6) -> dict:
    """Check a primal infeasibility certificate (dy, dz).

    With d = (dy, dz) normalized to unit infinity norm:
      |A'dy + C'dz|_inf <= tol * (1 + |[A;C]|_max)         (the combination annihilates x)
      sigma = b'dy + u'[dz]_+ - l'[dz]_- < 0                 (Farkas: 0 = d'(Mx) <= sigma)
      [dz]_+ only where u finite, [dz]_- only where l finite
      and the violation margin dominates the residual: -sigma > residual (so no x with
      |x|_1 <= 1 can be feasible).
    """
    P = problem
    assert cert is not None, "PRIMAL_INFEASIBLE without certificate"
    dy = np.asarray(cert["dy"], dtype=float).reshape(-1)
    dz = np.asarray(cert["dz"], dtype=float).reshape(-1)
    assert dy.shape == (P.n_eq,), f"dy has shape {dy.shape}, expected {(P.n_eq,)}"
    assert dz.shape == (P.n_in,), f"dz has shape {dz.shape}, expected {(P.n_in,)}"
    assert np.all(np.isfinite(dy)) and np.all(np.isfinite(dz)), "non-finite certificate"
    nrm = max(_inf(dy), _inf(dz))
    assert nrm > 0, "zero certificate"
    dy = dy / nrm
    dz = dz / nrm
    res = _inf(P.A.T @ dy + P.C.T @ dz)
    zp = np.maximum(dz, 0.0)
    zm = np.maximum(-dz, 0.0)
    # tiny components against an infinite bound: count them as zero only if negligible
    bad_u = (zp > tol) & ~np.isfinite(P.u)
    bad_l = (zm > tol) & ~np.isfinite(P.l)
    assert not bad_u.any(), f"dz > 0 on rows with u = +inf: {np.flatnonzero(bad_u)[:10]}"
    assert not bad_l.any(), f"dz < 0 on rows with l = -inf: {np.flatnonzero(bad_l)[:10]}"
    uf = np.where(np.isfinite(P.u), P.u, 0.0)
    lf = np.where(np.isfinite(P.l), P.l, 0.0)
    sigma = float(P.b @ dy + uf @ zp - lf @ zm)
    scale = 1 + max(_mat_inf(P.A), _mat_inf(P.C))
    info = dict(residual=res, sigma=sigma)
    assert res <= tol * scale, f"primal certificate: |A'dy + C'dz| = {res:.3e} > {tol * scale:.3e} ({info})"
    assert sigma < 0, f"primal certificate: b'dy + u'dz+ - l'dz- = {sigma:.3e} is not negative ({info})"
    assert -sigma > res, f"primal certificate: margin {-sigma:.3e} does not dominate residual {res:.3e}"
    return info


def check_dual_certificate(problem: Problem, cert, tol: float = 1e-6) -> dict:
    """Check a dual infeasibility (unboundedness) certificate dx.

    With dx normalized to unit infinity norm:
      |H dx| <= tol * (1 + |H|_max), |A dx| <= tol * (1 + |A|_max),
      (C dx)_i <= tol*(1+|C|) where u_i finite, >= -tol*(1+|C|) where l_i finite,
      g'dx < 0 with a margin dominating these residuals.
    """
    P = problem
    assert cert is not None, "DUAL_INFEASIBLE without certificate"
    dx = np.asarray(cert["dx"], dtype=float).reshape(-1)
    assert dx.shape == (P.n,), f"dx has shape {dx.shape}, expected {(P.n,)}"
    assert np.all(np.isfinite(dx)), "non-finite certificate"
    nrm = _inf(dx)
    assert nrm > 0, "zero certificate"
    dx = dx / nrm
    hres = _inf(P.H @ dx)
    ares = _inf(P.A @ dx)
    Cd = P.C @ dx
    up = np.where(np.isfinite(P.u), np.maximum(Cd, 0.0), 0.0)
    lo = np.where(np.isfinite(P.l), np.maximum(-Cd, 0.0), 0.0)
    cres = max(_inf(up), _inf(lo))
    gd = float(P.g @ dx)
    info = dict(H_dx=hres, A_dx=ares, C_dx=cres, g_dx=gd)
    assert hres <= tol * (1 + _mat_inf(P.H)), f"dual certificate: |H dx| too large ({info})"
    assert ares <= tol * (1 + _mat_inf(P.A)), f"dual certificate: |A dx| too large ({info})"
    assert cres <= tol * (1 + _mat_inf(P.C)), f"dual certificate: C dx not in recession cone ({info})"
    assert gd < 0, f"dual certificate: g'dx = {gd:.3e} is not negative ({info})"
    assert -gd > max(hres, ares, cres), f"dual certificate: margin of g'dx does not dominate ({info})"
    return info


# ----------------------------------------------------------------------------------------------
# Clarabel references
# ----------------------------------------------------------------------------------------------
def _clarabel():
    return pytest.importorskip("clarabel")


def _clarabel_settings(clarabel, tight=True):
    st = clarabel.DefaultSettings()
    st.verbose = False
    if tight:
        st.tol_gap_abs = 1e-11
        st.tol_gap_rel = 1e-11
        st.tol_feas = 1e-11
        st.tol_ktratio = 1e-9
    st.max_iter = 400
    return st


def clarabel_qp(H, g, A, b, C, l, u, *, accept_almost=False):
    """Solve a QP with Clarabel; returns (obj, x, y, z, status_str) in our sign convention.

    Rows with l_i == u_i go into the zero cone; infinite bounds are dropped.
    """
    clarabel = _clarabel()
    H = sp.csc_matrix(H)
    n = H.shape[0]
    A = sp.csc_matrix(A) if A is not None else sp.csc_matrix((0, n))
    C = sp.csc_matrix(C) if C is not None else sp.csc_matrix((0, n))
    b = np.asarray(b, dtype=float) if b is not None else np.zeros(0)
    l = np.asarray(l, dtype=float) if l is not None else np.zeros(0)
    u = np.asarray(u, dtype=float) if u is not None else np.zeros(0)
    eqC = np.flatnonzero(l == u)
    upC = np.flatnonzero((l != u) & np.isfinite(u))
    loC = np.flatnonzero((l != u) & np.isfinite(l))
    blocks = [A, C[eqC], C[upC], -C[loC]]
    rhs = [b, u[eqC], u[upC], -l[loC]]
    M = sp.vstack(blocks, format="csc") if sum(B.shape[0] for B in blocks) else sp.csc_matrix((0, n))
    q = np.concatenate(rhs) if M.shape[0] else np.zeros(0)
    cones = []
    n_zero = A.shape[0] + eqC.size
    if n_zero:
        cones.append(clarabel.ZeroConeT(n_zero))
    if upC.size + loC.size:
        cones.append(clarabel.NonnegativeConeT(upC.size + loC.size))
    P = sp.triu(H, format="csc")
    solver = clarabel.DefaultSolver(P, np.asarray(g, dtype=float), M, q, cones, _clarabel_settings(clarabel))
    sol = solver.solve()
    status = str(sol.status)
    ok = {"Solved"} | ({"AlmostSolved"} if accept_almost else set())
    if status not in ok:
        return None, None, None, None, status
    x = np.asarray(sol.x, dtype=float)
    zz = np.asarray(sol.z, dtype=float)
    m_eq = A.shape[0]
    y = zz[:m_eq]
    z = np.zeros(C.shape[0])
    k = m_eq
    z[eqC] = zz[k:k + eqC.size]
    k += eqC.size
    z[upC] += zz[k:k + upC.size]
    k += upC.size
    z[loC] -= zz[k:k + loC.size]
    obj = float(0.5 * x @ (H @ x) + np.asarray(g, dtype=float) @ x)
    return obj, x, y, z, status


def reference_solve(problem: Problem, *, accept_almost=False) -> dict:
    """Reference solution of ``problem`` by Clarabel (skips the test if clarabel is missing).

    Returns a dict with ``fun`` (objective including the constant), ``x``, ``y``, ``z`` (our sign
    convention) and ``status`` (Clarabel's status string); fun/x/y/z are None when Clarabel did
    not solve the problem.
    """
    P = problem
    obj, x, y, z, status = clarabel_qp(P.H, P.g, P.A, P.b, P.C, P.l, P.u, accept_almost=accept_almost)
    fun = None if obj is None else obj + P.constant
    return dict(fun=fun, x=x, y=y, z=z, status=status)


def two_stage_closest(problem: Problem) -> dict:
    """Reference closest-feasible solution of a (possibly) inconsistent QP, by Clarabel.

    Stage 1: the smallest l2 shift making the constraints consistent,
        min 1/2|s_eq|^2 + 1/2|s_in|^2  s.t.  A x - s_eq = b,  l <= C x - s_in <= u
    (always feasible). The optimal shift s* is unique; it is recomputed from the stage-1 point x1
    as s_eq = A x1 - b, s_in = C x1 - proj_[l,u](C x1) so that the stage-2 constraints are exactly
    consistent (x1 satisfies them).
    Stage 2: the QP with shifted constraints A x = b + s_eq, l + min(s_in,0) <= C x <= u + max(s_in,0).
    Returns dict(x, s_eq, s_in, fun, y, z, stage1_status, stage2_status).
    """
    _clarabel()  # skip the test when clarabel is not installed
    P = problem
    n, m, p = P.n, P.n_eq, P.n_in
    N = n + m + p
    # variables v = (x, s_eq, s_in)
    Hs = sp.block_diag([sp.csc_matrix((n, n)), sp.eye(m + p)], format="csc")
    gs = np.zeros(N)
    As = sp.hstack([P.A, -sp.eye(m), sp.csc_matrix((m, p))], format="csc")
    Cs = sp.hstack([P.C, sp.csc_matrix((p, m)), -sp.eye(p)], format="csc")
    _, v, _, _, st1 = clarabel_qp(Hs, gs, As, P.b, Cs, P.l, P.u, accept_almost=True)
    if v is None:
        raise AssertionError(f"two_stage_closest: Clarabel failed on stage 1 ({st1})")
    x1 = v[:n]
    Cx1 = P.C @ x1
    s_eq = P.A @ x1 - P.b
    s_in = Cx1 - np.clip(Cx1, P.l, P.u)
    # stage 2: b' = A x1 exactly, bounds widened to include C x1
    b2 = P.A @ x1
    l2 = np.minimum(P.l + np.minimum(s_in, 0.0), Cx1)
    u2 = np.maximum(P.u + np.maximum(s_in, 0.0), Cx1)
    obj, x, y, z, st2 = clarabel_qp(P.H, P.g, P.A, b2, P.C, l2, u2, accept_almost=True)
    if x is None:
        raise AssertionError(f"two_stage_closest: Clarabel failed on stage 2 ({st2})")
    return dict(x=x, s_eq=s_eq, s_in=s_in, fun=obj + P.constant, y=y, z=z,
                stage1_status=st1, stage2_status=st2)


def linprog_reference(problem: Problem) -> float:
    """Optimal value of an LP (H = 0) by scipy's HiGHS."""
    from scipy.optimize import linprog

    P = problem
    rows_u = np.isfinite(P.u)
    rows_l = np.isfinite(P.l)
    A_ub = sp.vstack([P.C[rows_u], -P.C[rows_l]], format="csr")
    b_ub = np.concatenate([P.u[rows_u], -P.l[rows_l]])
    kw = {}
    if A_ub.shape[0]:
        kw.update(A_ub=A_ub, b_ub=b_ub)
    if P.n_eq:
        kw.update(A_eq=P.A.tocsr(), b_eq=P.b)
    res = linprog(P.g, bounds=(None, None), method="highs", **kw)
    assert res.status == 0, f"linprog failed: {res.message}"
    return float(res.fun) + P.constant


def is_positive_definite(H) -> bool:
    Hd = sp.csc_matrix(H).toarray()
    if Hd.size == 0:
        return True
    return float(np.min(np.linalg.eigvalsh(Hd))) > 1e-8 * max(1.0, float(np.max(np.abs(Hd))))


# ----------------------------------------------------------------------------------------------
# problem generators (sparseqp.problems when available, local fallbacks otherwise)
# ----------------------------------------------------------------------------------------------
def _rng(seed):
    return np.random.default_rng(seed)


def _sprand(rng, m, n, density):
    M = sp.random(m, n, density=density, format="csc", random_state=rng,
                  data_rvs=lambda k: rng.standard_normal(k))
    return M


def _pd_cost(rng, n, density, reg=1e-2):
    M = _sprand(rng, n, n, density)
    return (M @ M.T + reg * sp.eye(n)).tocsc()


def _bounds_around(rng, v, frac_inf=0.2, frac_eq=0.05):
    p = v.size
    l = v - rng.uniform(0.0, 1.0, p)
    u = v + rng.uniform(0.0, 1.0, p)
    kind = rng.uniform(size=p)
    l[kind < frac_inf / 2] = -np.inf
    u[(kind >= frac_inf / 2) & (kind < frac_inf)] = np.inf
    eq = (kind >= frac_inf) & (kind < frac_inf + frac_eq)
    l[eq] = v[eq]
    u[eq] = v[eq]
    return l, u


def local_random_qp(n, n_eq, n_in, density=0.1, seed=0):
    rng = _rng(seed)
    dens = max(density, 3.0 / max(n, 1))
    H = _pd_cost(rng, n, dens)
    g = rng.standard_normal(n)
    xf = rng.standard_normal(n)
    A = _sprand(rng, n_eq, n, dens)
    C = _sprand(rng, n_in, n, dens)
    b = A @ xf
    l, u = _bounds_around(rng, C @ xf)
    return make_problem(H, g, A, b, C, l, u, name=f"local_random_{n}_{seed}")


def local_equality_qp(n, n_eq, seed=0):
    rng = _rng(seed)
    dens = min(1.0, 5.0 / n)
    H = _pd_cost(rng, n, dens)
    A = _sprand(rng, n_eq, n, dens) + sp.hstack([sp.eye(n_eq), sp.csc_matrix((n_eq, n - n_eq))])
    return make_problem(H, rng.standard_normal(n), A, rng.standard_normal(n_eq),
                        name=f"local_eq_{n}_{seed}")


def local_box_qp(n, seed=0):
    rng = _rng(seed)
    dens = min(1.0, 5.0 / n)
    H = _pd_cost(rng, n, dens)
    l = -rng.uniform(0.1, 1.0, n)
    u = rng.uniform(0.1, 1.0, n)
    return make_problem(H, 3 * rng.standard_normal(n), C=sp.eye(n), l=l, u=u, name=f"local_box_{n}_{seed}")


def local_mpc_qp(nx, nu, horizon, seed=0):
    """Linear MPC: x_{k+1} = Ad x_k + Bd u_k, x_0 fixed, box bounds on x and u."""
    rng = _rng(seed)
    Ad = sp.eye(nx) + 0.1 * _sprand(rng, nx, nx, min(1.0, 3.0 / nx))
    Bd = _sprand(rng, nx, nu, min(1.0, 3.0 / nu)) + sp.eye(nx, nu)
    N = horizon
    nX = (N + 1) * nx
    nU = N * nu
    Q = sp.diags(rng.uniform(0.5, 2.0, nx))
    R = 0.1 * sp.eye(nu)
    H = sp.block_diag([sp.kron(sp.eye(N + 1), Q), sp.kron(sp.eye(N), R)], format="csc")
    xref = rng.standard_normal(nx)
    g = np.concatenate([np.tile(-(Q @ xref), N + 1), np.zeros(nU)])
    Ax = sp.kron(sp.eye(N + 1), -sp.eye(nx)) + sp.kron(sp.eye(N + 1, k=-1), Ad)
    Bu = sp.kron(sp.vstack([sp.csc_matrix((1, N)), sp.eye(N)]), Bd)
    A = sp.hstack([Ax, Bu], format="csc")
    x0 = rng.uniform(-1, 1, nx)
    b = np.concatenate([-x0, np.zeros(N * nx)])
    C = sp.eye(nX + nU, format="csc")
    l = np.concatenate([np.full(nX, -5.0), np.full(nU, -0.5)])
    u = -l
    l[:nx] = np.minimum(l[:nx], x0)
    u[:nx] = np.maximum(u[:nx], x0)
    return make_problem(H, g, A, b, C, l, u, name=f"local_mpc_{nx}_{nu}_{N}_{seed}")


def local_portfolio_qp(n_assets, n_factors, seed=0):
    """min x'Dx + y'y - mu'x  s.t.  y = F'x, 1'x = 1, 0 <= x <= 1; variables (x, y)."""
    rng = _rng(seed)
    n, k = n_assets, n_factors
    F = _sprand(rng, n, k, 0.5)
    D = sp.diags(rng.uniform(0, np.sqrt(k), n))
    mu = rng.standard_normal(n)
    H = sp.block_diag([2 * D, 2 * sp.eye(k)], format="csc")
    g = np.concatenate([-mu, np.zeros(k)])
    A = sp.vstack([sp.hstack([F.T, -sp.eye(k)]),
                   sp.hstack([sp.csc_matrix(np.ones((1, n))), sp.csc_matrix((1, k))])], format="csc")
    b = np.concatenate([np.zeros(k), [1.0]])
    C = sp.hstack([sp.eye(n), sp.csc_matrix((n, k))], format="csc")
    return make_problem(H, g, A, b, C, np.zeros(n), np.ones(n), name=f"local_portfolio_{n}_{seed}")


def local_lasso_qp(n_features, n_samples, seed=0):
    """min y'y + lam 1't  s.t.  y = Ad x - bd, -t <= x <= t; variables (x, y, t)."""
    rng = _rng(seed)
    n, m = n_features, n_samples
    Ad = _sprand(rng, m, n, 0.3)
    xt = np.where(rng.uniform(size=n) < 0.5, rng.standard_normal(n) / np.sqrt(n), 0.0)
    bd = Ad @ xt + 0.1 * rng.standard_normal(m)
    lam = 0.2 * float(np.max(np.abs(Ad.T @ bd)))
    H = sp.block_diag([sp.csc_matrix((n, n)), 2 * sp.eye(m), sp.csc_matrix((n, n))], format="csc")
    g = np.concatenate([np.zeros(n + m), np.full(n, lam)])
    A = sp.hstack([Ad, -sp.eye(m), sp.csc_matrix((m, n))], format="csc")
    In = sp.eye(n)
    C = sp.vstack([sp.hstack([In, sp.csc_matrix((n, m)), -In]),
                   sp.hstack([In, sp.csc_matrix((n, m)), In])], format="csc")
    l = np.concatenate([np.full(n, -np.inf), np.zeros(n)])
    u = np.concatenate([np.zeros(n), np.full(n, np.inf)])
    return make_problem(H, g, A, bd, C, l, u, name=f"local_lasso_{n}_{seed}")


def local_infeasible_qp(n, seed=0, kind="mixed"):
    """PD cost; inconsistent equalities (duplicated rows, different rhs) and/or inequalities
    (row c and -c with incompatible bounds, plus incompatible pairs sharing variables)."""
    rng = _rng(seed)
    dens = min(1.0, 4.0 / n)
    H = _pd_cost(rng, n, dens, reg=0.1)
    g = rng.standard_normal(n)
    xf = rng.standard_normal(n)
    A = C = b = l = u = None
    if kind in ("eq", "mixed"):
        m = max(2, n // 3)
        A0 = _sprand(rng, m, n, dens) + sp.eye(m, n)
        A = sp.vstack([A0, A0[:2]], format="csc")
        b = np.concatenate([A0 @ xf, A0[:2] @ xf + np.array([1.0, -0.5])])
    if kind in ("ineq", "mixed"):
        p = max(2, n // 2)
        C0 = _sprand(rng, p, n, dens) + sp.eye(p, n, k=1)
        cx = C0 @ xf
        l0, u0 = _bounds_around(rng, cx, frac_inf=0.0, frac_eq=0.0)
        # rows 0..1 duplicated with bounds shifted above, row 2 negated with bounds below
        C = sp.vstack([C0, C0[:2], -C0[2:3]], format="csc")
        l = np.concatenate([l0, u0[:2] + 0.7, [-l0[2] + 0.3]])
        u = np.concatenate([u0, u0[:2] + 1.5, [np.inf]])
    return make_problem(H, g, A, b, C, l, u, name=f"local_infeasible_{kind}_{n}_{seed}")


def local_unbounded_qp(n, seed=0):
    """H PSD with a null direction d, g'd < 0, constraints not restricting d (C d = 0)."""
    rng = _rng(seed)
    d = np.zeros(n)
    d[-1] = 1.0
    M = _sprand(rng, n - 1, n - 1, min(1.0, 4.0 / n))
    H = sp.block_diag([M @ M.T + 0.1 * sp.eye(n - 1), sp.csc_matrix((1, 1))], format="csc")
    g = rng.standard_normal(n)
    g[-1] = -1.0
    k = max(1, n // 3)
    C = sp.hstack([_sprand(rng, k, n - 1, 0.5) + sp.eye(k, n - 1), sp.csc_matrix((k, 1))], format="csc")
    return make_problem(H, g, C=C, l=-np.ones(k), u=np.ones(k), name=f"local_unbounded_{n}_{seed}")


def local_nonconvex_qp(n, seed=0):
    rng = _rng(seed)
    M = rng.standard_normal((n, n))
    H = (M + M.T) / 2 - 2.0 * np.sqrt(n) * np.eye(n)  # clearly indefinite / negative definite
    H[0, 0] = abs(H[0, 0]) + 1.0
    return make_problem(sp.csc_matrix(H), rng.standard_normal(n), name=f"local_nonconvex_{n}_{seed}")


_LOCAL = {
    "random_qp": local_random_qp,
    "equality_qp": local_equality_qp,
    "box_qp": local_box_qp,
    "mpc_qp": local_mpc_qp,
    "portfolio_qp": local_portfolio_qp,
    "lasso_qp": local_lasso_qp,
    "infeasible_qp": local_infeasible_qp,
    "unbounded_qp": local_unbounded_qp,
    "nonconvex_qp": local_nonconvex_qp,
}


def maros_data(name: str) -> Problem:
    """The Maros-Meszaros problem ``tests/data/<name>.mat`` (provenance in its README)."""
    import pathlib

    from sparseqp.io import read_mat

    return read_mat(pathlib.Path(__file__).parent / "data" / f"{name}.mat")


def gen(name: str, *args, **kwargs) -> Problem:
    """Problem from ``sparseqp.problems.<name>`` when available, else from the local fallback."""
    try:
        import sparseqp.problems as problems  # noqa: F401
        fn = getattr(problems, name, None)
    except ImportError:
        fn = None
    if fn is None:
        fn = _LOCAL[name]
    return as_problem(fn(*args, **kwargs))


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_qp() -> Problem:
    """A small well-conditioned QP with equalities and two-sided/one-sided/equal bounds."""
    return local_random_qp(12, 3, 8, density=0.3, seed=1)
