"""Tests of sparseqp.derivatives: VJP/JVP/Jacobian against finite differences, the adjoint
identity, the LQR gain of an unconstrained MPC, degenerate cases, gradient patterns,
factorization reuse and errors.

Sign convention: H x + g + A'y + C'z = 0.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparseqp
from sparseqp import Status
from sparseqp.derivatives import DerivativeError
from sparseqp.problem import make_problem
from sparseqp.problems import mpc_qp

from conftest import maros_data

KW = dict(eps_abs=1e-10)
FD_H = 1e-6
NAMES = ("H", "g", "A", "b", "C", "l", "u")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def data_of(p):
    """Dict of the canonical problem data (copies)."""
    return dict(H=p.H.copy(), g=p.g.copy(), A=p.A.copy(), b=p.b.copy(), C=p.C.copy(),
                l=p.l.copy(), u=p.u.copy())


def solve(d, **kw):
    return sparseqp.solve(d["H"], d["g"], d["A"], d["b"], d["C"], d["l"], d["u"], **{**KW, **kw})


def loss_of(r, w):
    """Linear loss on x (and the shifts when given)."""
    val = w["x"] @ r.x
    if "s_eq" in w:
        val += w["s_eq"] @ r.s_eq
    if "s_in" in w:
        val += w["s_in"] @ r.s_in
    return val


def col_of(M):
    """Column index of each stored entry of a CSC matrix."""
    return np.repeat(np.arange(M.shape[1]), np.diff(M.indptr))


def entry_groups(M, name, ties=()):
    """Groups of stored-entry indices of CSC M perturbed together.

    H: the symmetric pair (i, j), (j, i). ``ties``: pairs of rows (r1, r2) with the same
    pattern whose entries in the same column move together (duplicated contradictory rows of
    an infeasible problem: moving one alone would make the problem feasible, a discontinuity).
    """
    rows, cols = M.indices, col_of(M)
    pos = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(rows, cols))}
    partner = {}
    for r1, r2 in ties:
        for (i, j), k in pos.items():
            if i == r1:
                partner[k] = pos[(r2, j)]
                partner[pos[(r2, j)]] = k
    groups, seen = [], set()
    for k in range(M.nnz):
        if k in seen:
            continue
        g = [k]
        if name == "H" and rows[k] != cols[k]:
            g.append(pos[(int(cols[k]), int(rows[k]))])
        if k in partner:
            g.append(partner[k])
        seen.update(g)
        groups.append(g)
    return groups


def fd_gradients(d, w, status, h=FD_H, names=NAMES, one_sided=False, ties=None):
    """Central (or one-sided +/-) FD of loss_of over every parameter entry.

    Matrices: one value per group of :func:`entry_groups` (compare with :func:`grad_groups`).
    Returns {name: array}; with one_sided returns ({name: forward}, {name: backward}).
    """
    ties = ties or {}
    base = loss_of(solve(d), w) if one_sided else None

    def ev(dd):
        r = solve(dd, time_limit=5.0)
        assert r.status == status, (r.status, status)
        return loss_of(r, w)

    fwd, bwd = {}, {}
    for name in names:
        v = d[name]
        if sp.issparse(v):
            M = v.tocsc()
            groups = entry_groups(M, name, ties.get(name, ()))
            fp = np.zeros(len(groups))
            fm = np.zeros(len(groups))
            for t, grp in enumerate(groups):
                Mp, Mm = M.copy(), M.copy()
                Mp.data[grp] += h
                Mm.data[grp] -= h
                fp[t] = ev({**d, name: Mp})
                fm[t] = ev({**d, name: Mm})
        else:
            fp = np.zeros(len(v))
            fm = np.zeros(len(v))
            for i in range(len(v)):
                vp, vm = v.copy(), v.copy()
                vp[i] += h
                vm[i] -= h
                fp[i] = ev({**d, name: vp})
                fm[i] = ev({**d, name: vm})
        if one_sided:
            fwd[name] = (fp - base) / h
            bwd[name] = (base - fm) / h
        else:
            fwd[name] = (fp - fm) / (2 * h)
    return (fwd, bwd) if one_sided else fwd


def grad_groups(G, name, pattern, ties=None):
    """The VJP gradient in the FD layout: sums of G over each perturbation group of the
    input ``pattern`` (values read densely, so this does not depend on G's own pattern)."""
    v = getattr(G, name)
    if not sp.issparse(v):
        return np.asarray(v, dtype=float)
    P = pattern[name]
    Gd = v.toarray()
    vals = Gd[P.indices, col_of(P)]
    groups = entry_groups(P, name, (ties or {}).get(name, ()))
    return np.array([vals[g].sum() for g in groups])


def assert_all_finite(G):
    for name in NAMES:
        v = getattr(G, name)
        arr = v.data if sp.issparse(v) else np.asarray(v)
        assert np.all(np.isfinite(arr)), f"gradient {name} not finite: {arr}"


def compare_fd(G, fd, d, rtol=1e-5, names=NAMES, label="", ties=None):
    scale = max(1.0, max(np.max(np.abs(grad_groups(G, n, d, ties)), initial=0.0)
                         for n in names))
    errs = {}
    for name in names:
        a = grad_groups(G, name, d, ties)
        errs[name] = float(np.max(np.abs(a - fd[name]), initial=0.0))
    bad = {k: v for k, v in errs.items() if v > rtol * scale}
    assert not bad, f"{label} VJP vs FD mismatch (scale {scale:.3g}): " + ", ".join(
        f"{k}: {v:.2e}" for k, v in bad.items())
    return errs


def well_scaled_qp(n=10, m=2, p=8, seed=0, density=0.6):
    """H = M M'/n + 0.5 I, |g| ~ 1, bounds of width ~1 around C x_f, b = A x_f; sparse A, C."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    H = M @ M.T / n + 0.5 * np.eye(n)
    g = rng.standard_normal(n) * 2.0
    A = sp.random(m, n, density=density, random_state=rng, data_rvs=rng.standard_normal).toarray()
    A[np.arange(m), rng.choice(n, m, replace=False)] += 1.0  # no empty row
    C = sp.random(p, n, density=density, random_state=rng, data_rvs=rng.standard_normal).toarray()
    C[np.arange(p), rng.integers(0, n, p)] += 1.0
    xf = 0.3 * rng.standard_normal(n)
    b = A @ xf
    cx = C @ xf
    l = cx - rng.uniform(0.3, 0.7, p)
    u = cx + rng.uniform(0.3, 0.7, p)
    return make_problem(sp.csc_matrix(H), g, sp.csc_matrix(A), b, sp.csc_matrix(C), l, u)


def active_inactive(r, p, tol=1e-7):
    cx = p.C @ r.x
    act = (np.abs(cx - p.l) < tol) | (np.abs(cx - p.u) < tol)
    strict = np.abs(r.z) > 1e-5
    return act, strict


def infeasible_problem(kind, seed=0, n=10):
    """Well-scaled base plus contradictory rows."""
    return contradicted(well_scaled_qp(n=n, seed=seed), kind)


def contradicted(p, kind, eq_gap=1.0, row=1, lo_gap=0.5, hi_gap=2.0):
    """``p`` made inconsistent, with the ties fd_gradients needs: for ``kind`` "eq" or
    "mixed", equality row 0 again with b_0 + ``eq_gap``; for "ineq" or "mixed", inequality
    row ``row`` again with the range [u_row + lo_gap, u_row + hi_gap] (0 < lo_gap < hi_gap),
    entirely above that row's upper bound. Returns (problem, ties)."""
    d = data_of(p)
    A, C = d["A"].toarray(), d["C"].toarray()
    ties = {}
    if kind in ("eq", "mixed"):
        A = np.vstack([A, A[0]])
        d["b"] = np.append(d["b"], d["b"][0] + eq_gap)
        ties["A"] = [(0, A.shape[0] - 1)]
    if kind in ("ineq", "mixed"):
        C = np.vstack([C, C[row]])
        d["l"] = np.append(d["l"], d["u"][row] + lo_gap)
        d["u"] = np.append(d["u"], d["u"][row] + hi_gap)
        ties["C"] = [(row, C.shape[0] - 1)]
    q = make_problem(d["H"], d["g"], sp.csc_matrix(A), d["b"], sp.csc_matrix(C), d["l"], d["u"])
    return q, ties


# ----------------------------------------------------------------------------------------------
# 1. VJP vs finite differences
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vjp_fd_feasible(seed):
    p = well_scaled_qp(seed=seed)
    d = data_of(p)
    r = solve(d)
    assert r.status == Status.SOLVED
    act, strict = active_inactive(r, p)
    assert act.any() and (~act).any(), f"need active and inactive rows, active={act}"
    # strict complementarity (FD is only valid where the map is differentiable)
    assert np.array_equal(act, strict), (act, r.z)
    w = {"x": np.random.default_rng(100 + seed).standard_normal(p.n)}
    G = r.vjp(dx=w["x"])
    assert_all_finite(G)
    fd = fd_gradients(d, w, Status.SOLVED)
    compare_fd(G, fd, d, label=f"feasible seed {seed}")


CLOSEST_KINDS = ["eq", "ineq", "mixed"]

def _closest_setup(kind):
    p, ties = infeasible_problem(kind, seed=3)
    d = data_of(p)
    r = solve(d)
    assert r.status == Status.SOLVED_CLOSEST_FEASIBLE
    rng = np.random.default_rng(7)
    w = {"x": rng.standard_normal(p.n), "s_eq": rng.standard_normal(p.n_eq),
         "s_in": rng.standard_normal(p.n_in)}
    return p, ties, d, r, w


@pytest.mark.parametrize("kind", CLOSEST_KINDS)
def test_vjp_fd_closest_feasible_vectors_and_H(kind):
    p, ties, d, r, w = _closest_setup(kind)
    G = r.vjp(dx=w["x"], ds_eq=w["s_eq"], ds_in=w["s_in"])
    assert_all_finite(G)
    names = ("H", "g", "b", "l", "u")
    fd = fd_gradients(d, w, Status.SOLVED_CLOSEST_FEASIBLE, names=names, ties=ties)
    compare_fd(G, fd, d, names=names, label=f"closest {kind}", ties=ties)


@pytest.mark.parametrize("kind", CLOSEST_KINDS)
def test_vjp_fd_closest_feasible_shift_loss_AC(kind):
    """A loss on the shifts only: here the A/C gradients do not involve the multipliers."""
    p, ties, d, r, w = _closest_setup(kind)
    w = {"x": np.zeros(p.n), "s_eq": w["s_eq"], "s_in": w["s_in"]}
    G = r.vjp(ds_eq=w["s_eq"], ds_in=w["s_in"])
    fd = fd_gradients(d, w, Status.SOLVED_CLOSEST_FEASIBLE, names=("A", "C"), ties=ties)
    compare_fd(G, fd, d, names=("A", "C"), label=f"closest {kind} shift loss", ties=ties)


@pytest.mark.parametrize("kind", CLOSEST_KINDS)
def test_vjp_fd_closest_feasible_AC(kind):
    p, ties, d, r, w = _closest_setup(kind)
    G = r.vjp(dx=w["x"], ds_eq=w["s_eq"], ds_in=w["s_in"])
    fd = fd_gradients(d, w, Status.SOLVED_CLOSEST_FEASIBLE, names=("A", "C"), ties=ties)
    compare_fd(G, fd, d, names=("A", "C"), label=f"closest {kind}", ties=ties)


def test_closest_AC_gradient_matches_finite_multiplier_formula():
    """Without FD: on rows that are not shifted, the C gradient of a loss on x is
    -z wx' - wz x' with the returned (finite) multipliers; no 1/eps term leaks in."""
    p, ties, d, r, w = _closest_setup("eq")
    G = r.vjp(dx=w["x"])
    wx = -G.g
    wz = G.u + G.l
    Cexp = np.outer(-r.z, wx) - np.outer(wz, r.x)
    err = np.max(np.abs(G.C.toarray() - np.where(p.C.toarray() != 0, Cexp, 0.0)))
    assert err <= 1e-9 * max(1.0, np.max(np.abs(Cexp))), err


def sign_infeasible_qp(seed, n=30, m=12, eps=0.1):
    """min eps/2 |x|^2 + g'x s.t. A x = b, x >= 0 with A mostly positive and b of both signs:
    inconsistent for most seeds (the learned-constraint layers' situation), many shifted
    bounds, dependent active rows (more active rows than variables)."""
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=0.3, random_state=seed,
                  data_rvs=lambda k: rng.random(k) + 0.1).tocsc()
    A.data[rng.random(A.nnz) < 0.2] *= -1.0
    return dict(H=eps * sp.eye(n, format="csc"), g=-rng.random(n), A=A,
                b=3.0 * rng.standard_normal(m), C=sp.eye(n, format="csc"), l=np.zeros(n),
                u=np.full(n, np.inf))


def directional_fd(d, w, direction, status, h=1e-6):
    vals = []
    for sgn in (1.0, -1.0):
        dd = {k: (v + sgn * h * direction[k] if k in direction else v) for k, v in d.items()}
        r = solve(dd, eps_abs=1e-11, eps_rel=0.0)
        assert r.status == status
        vals.append(loss_of(r, w))
    return (vals[0] - vals[1]) / (2 * h)


@pytest.mark.parametrize("seed", [0, 3, 6, 11])
def test_vjp_fd_closest_sign_structured(seed):
    """Directional FD (A on its pattern, b, g, H diagonal) on inconsistent x >= 0 problems.
    Seeds 6 and 11 have a shifted row with a multiplier ~1e-14; before the backward refined
    K_eps to the rounding floor their b gradients were off by 20%."""
    d = sign_infeasible_qp(seed)
    r = solve(d, eps_abs=1e-11, eps_rel=0.0)
    assert r.status == Status.SOLVED_CLOSEST_FEASIBLE
    rng = np.random.default_rng(100 + seed)
    n, m = d["A"].shape[1], d["A"].shape[0]
    w = {"x": rng.standard_normal(n), "s_eq": rng.standard_normal(m),
         "s_in": rng.standard_normal(n)}
    G = r.vjp(dx=w["x"], ds_eq=w["s_eq"], ds_in=w["s_in"])
    assert_all_finite(G)
    assert G.info["residual"] < 1e-12, G.info
    A = d["A"]
    dirs = {"A": sp.csc_matrix((rng.standard_normal(A.nnz), A.indices, A.indptr), shape=A.shape),
            "b": rng.standard_normal(m), "g": rng.standard_normal(n),
            "H": sp.diags(rng.standard_normal(n), format="csc")}
    for name, dv in dirs.items():
        if name == "A":
            pred = float(G.A.toarray()[A.nonzero()] @ dv.toarray()[A.nonzero()])
        elif name == "H":
            pred = float(G.H.diagonal() @ dv.diagonal())
        else:
            pred = float(getattr(G, name) @ dv)
        fd = directional_fd(d, w, {name: dv}, Status.SOLVED_CLOSEST_FEASIBLE)
        assert abs(pred - fd) <= 2e-5 * max(1.0, abs(fd)), (name, pred, fd)
    # forward mode agrees with reverse mode along a joint direction
    t = r.jvp(dA=dirs["A"], db=dirs["b"], dg=dirs["g"])
    lhs = w["x"] @ t.x + w["s_eq"] @ t.s_eq + w["s_in"] @ t.s_in
    rhs = (float(G.A.toarray()[A.nonzero()] @ dirs["A"].toarray()[A.nonzero()])
           + G.b @ dirs["b"] + G.g @ dirs["g"])
    assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(lhs)), (lhs, rhs)


# ----------------------------------------------------------------------------------------------
# 2. adjoint identity <v, J d> = <J' v, d>
# ----------------------------------------------------------------------------------------------
def random_direction(p, rng, ties=None):
    """Random data direction on the patterns; rows tied in ``ties`` move together (moving one
    of two contradictory parallel rows alone is not a differentiable direction: x ~ 1/eps)."""
    ties = ties or {}

    def on_pattern(M, name=None):
        out = sp.csc_matrix((rng.standard_normal(M.nnz), M.indices.copy(), M.indptr.copy()),
                            shape=M.shape)
        if ties.get(name):
            D = out.toarray()
            for r1, r2 in ties[name]:
                D[r2] = D[r1]
            out = sp.csc_matrix(D)
        return out
    dH = on_pattern(p.H)
    dH = ((dH + dH.T) * 0.5).tocsc()
    return dict(dH=dH, dg=rng.standard_normal(p.n), dA=on_pattern(p.A, "A"),
                db=rng.standard_normal(p.n_eq), dC=on_pattern(p.C, "C"),
                dl=rng.standard_normal(p.n_in), du=rng.standard_normal(p.n_in))


def pairing(G, dd):
    tot = G.g @ dd["dg"] + G.b @ dd["db"] + G.l @ dd["dl"] + G.u @ dd["du"]
    for name in "HAC":
        tot += np.sum(getattr(G, name).toarray() * dd["d" + name].toarray())
    return tot


@pytest.mark.parametrize("case", ["feasible0", "feasible1", "eq", "ineq", "mixed"])
def test_adjoint_identity(case):
    ties = None
    if case.startswith("feasible"):
        p = well_scaled_qp(seed=int(case[-1]))
        status = Status.SOLVED
    else:
        p, ties = infeasible_problem(case, seed=3)
        status = Status.SOLVED_CLOSEST_FEASIBLE
    r = solve(data_of(p))
    assert r.status == status
    rng = np.random.default_rng(11)
    for _ in range(3):
        v = rng.standard_normal(p.n)
        dd = random_direction(p, rng, ties)
        t = r.jvp(**dd)
        G = r.vjp(dx=v)
        lhs = v @ t.x
        rhs = pairing(G, dd)
        assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(lhs), abs(rhs)), (lhs, rhs)


@pytest.mark.parametrize("kind", CLOSEST_KINDS)
def test_adjoint_identity_shifts(kind):
    p, ties = infeasible_problem(kind, seed=3)
    r = solve(data_of(p))
    rng = np.random.default_rng(12)
    ve, vi = rng.standard_normal(p.n_eq), rng.standard_normal(p.n_in)
    dd = random_direction(p, rng, ties)
    t = r.jvp(**dd)
    G = r.vjp(ds_eq=ve, ds_in=vi)
    lhs = ve @ t.s_eq + vi @ t.s_in
    rhs = pairing(G, dd)
    assert abs(lhs - rhs) <= 1e-8 * max(1.0, abs(lhs), abs(rhs)), (lhs, rhs)


# ----------------------------------------------------------------------------------------------
# 3. unconstrained MPC: d u0 / d x0 = -K_0 (finite-horizon LQR)
# ----------------------------------------------------------------------------------------------
def riccati_gain0(Ad, Bd, Q, R, QN, N):
    P = QN
    K = None
    for _ in range(N):
        K = np.linalg.solve(R + Bd.T @ P @ Bd, Bd.T @ P @ Ad)
        P = Q + Ad.T @ P @ Ad - Ad.T @ P @ Bd @ K
        P = 0.5 * (P + P.T)
    return K


def test_mpc_jacobian_is_lqr_gain():
    m = mpc_qp(nx=4, nu=2, horizon=60, seed=0, u_bound=100.0, x_bound=100.0)
    r = sparseqp.solve(m.problem, eps_abs=1e-10)
    assert r.status == Status.SOLVED
    assert np.all(r.z == 0), "no inequality may be active"
    J = r.jacobian(wrt="b", index=m.x0_rows)
    assert J.shape == (m.problem.n, m.nx)
    K0 = riccati_gain0(m.Ad, m.Bd, m.Q, m.R, m.QN, m.horizon)
    np.testing.assert_allclose(J[m.u0_cols], -K0, atol=1e-7, rtol=0)
    # and the solution itself is the LQR feedback
    np.testing.assert_allclose(r.x[m.u0_cols], -K0 @ m.x0, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# 4. degenerate cases
# ----------------------------------------------------------------------------------------------
def test_duplicated_active_inequality_rows():
    p = well_scaled_qp(seed=0)
    r0 = solve(data_of(p))
    act, _ = active_inactive(r0, p)
    k = int(np.nonzero(act)[0][0])
    C = p.C.toarray()
    C = np.vstack([C, C[k]])
    q = make_problem(p.H, p.g, p.A, p.b, sp.csc_matrix(C), np.append(p.l, p.l[k]),
                     np.append(p.u, p.u[k]))
    d = data_of(q)
    r = solve(d)
    assert r.status == Status.SOLVED
    np.testing.assert_allclose(r.x, r0.x, atol=1e-7)
    w = {"x": np.random.default_rng(5).standard_normal(q.n)}
    G = r.vjp(dx=w["x"])
    assert_all_finite(G)
    # differentiable directions: g, b, H, A, and the duplicated bounds moved together
    names = ("H", "g", "A", "b")
    fd = fd_gradients(d, w, Status.SOLVED, names=names)
    compare_fd(G, fd, d, names=names, label="duplicated rows")
    G0 = r0.vjp(dx=w["x"])
    last = q.n_in - 1
    np.testing.assert_allclose(G.u[k] + G.u[last], G0.u[k], atol=1e-6)
    np.testing.assert_allclose(G.l[k] + G.l[last], G0.l[k], atol=1e-6)


def test_weakly_active_constraint():
    n = 4
    rng = np.random.default_rng(3)
    M = rng.standard_normal((n, n))
    H = M @ M.T / n + 0.5 * np.eye(n)
    xs = np.array([0.5, -0.2, 0.3, 0.1])
    g = -H @ xs  # unconstrained optimum xs
    C = np.eye(n)[:2]
    l = np.array([-1.0, -1.0])
    u = np.array([xs[0], 1.0])  # x_0 <= 0.5 weakly active at the optimum
    q = make_problem(sp.csc_matrix(H), g, None, None, sp.csc_matrix(C), l, u)
    d = data_of(q)
    r = solve(d)
    assert r.status == Status.SOLVED
    np.testing.assert_allclose(r.x, xs, atol=1e-8)
    w = {"x": rng.standard_normal(n)}
    G = r.vjp(dx=w["x"])
    assert_all_finite(G)
    t = r.jvp(du=np.array([1.0, 0.0]))
    assert np.all(np.isfinite(t.x)) and np.all(np.isfinite(t.z))
    fwd, bwd = fd_gradients(d, w, Status.SOLVED, names=("g", "u", "H", "C"), one_sided=True)
    for name in ("g", "u", "H", "C"):
        a = grad_groups(G, name, d)
        lo = np.minimum(fwd[name], bwd[name]) - 1e-5
        hi = np.maximum(fwd[name], bwd[name]) + 1e-5
        assert np.all((a >= lo) & (a <= hi)), (name, a, fwd[name], bwd[name])


def test_singular_H_lp_vertex():
    """H = 0: x is the vertex x = (1, 0) of {x0 + x1 = 1, 0 <= x <= 2} for g = (1, 2)."""
    H = sp.csc_matrix((2, 2))
    g = np.array([1.0, 2.0])
    A = sp.csc_matrix(np.array([[1.0, 1.0]]))
    b = np.array([1.0])
    C = sp.identity(2, format="csc")
    l, u = np.zeros(2), np.full(2, 2.0)
    q = make_problem(H, g, A, b, C, l, u)
    d = data_of(q)
    r = solve(d)
    assert r.status == Status.SOLVED
    np.testing.assert_allclose(r.x, [1.0, 0.0], atol=1e-8)
    w = {"x": np.array([0.7, -1.3])}
    G = r.vjp(dx=w["x"])
    assert_all_finite(G)
    names = ("g", "b", "l", "u", "A", "C")
    fd = fd_gradients(d, w, Status.SOLVED, names=names)
    compare_fd(G, fd, d, names=names, label="LP vertex")
    J = r.jacobian(wrt="b")
    assert np.all(np.isfinite(J))
    np.testing.assert_allclose(J[:, 0], [1.0, 0.0], atol=1e-7)


def test_rank_deficient_H_unique_x():
    """H = diag(1, 1, 0): x_2 is fixed by the equality x_2 - x_0 = 1."""
    H = sp.diags([1.0, 1.0, 0.0]).tocsc()
    H = sp.csc_matrix((np.array([1.0, 1.0, 0.0]), np.array([0, 1, 2]), np.array([0, 1, 2, 3])),
                      shape=(3, 3))
    g = np.array([-1.0, 0.5, 0.3])
    A = sp.csc_matrix(np.array([[-1.0, 0.0, 1.0]]))
    b = np.array([1.0])
    C = sp.csc_matrix(np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
    l = np.array([-0.2, -5.0])
    u = np.array([5.0, 5.0])
    q = make_problem(H, g, A, b, C, l, u)
    d = data_of(q)
    r = solve(d)
    assert r.status == Status.SOLVED
    w = {"x": np.array([0.4, -0.9, 1.1])}
    G = r.vjp(dx=w["x"])
    assert_all_finite(G)
    # H[2,2] = 0 cannot be perturbed downwards (H would be indefinite): data other than H
    names = ("g", "A", "b", "C", "l", "u")
    fd = fd_gradients(d, w, Status.SOLVED, names=names)
    compare_fd(G, fd, d, names=names, label="rank-deficient H")


# ----------------------------------------------------------------------------------------------
# 5. gradient patterns
# ----------------------------------------------------------------------------------------------
def messy_inputs(seed=0, n=6):
    """COO inputs with unsorted and duplicate entries and explicit zeros."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    Hd = M @ M.T / n + 0.5 * np.eye(n)
    Hd[0, 3] = Hd[3, 0] = 0.0
    r_, c_ = np.nonzero(np.ones((n, n)))
    perm = rng.permutation(r_.size)
    r_, c_ = r_[perm], c_[perm]
    vals = Hd[r_, c_]
    # split the (1, 1) entry into two duplicates
    i11 = int(np.nonzero((r_ == 1) & (c_ == 1))[0][0])
    H = sp.coo_matrix((np.append(vals, 0.25 * vals[i11]), (np.append(r_, 1), np.append(c_, 1))),
                      shape=(n, n))
    vals2 = H.data.copy()
    vals2[i11] *= 0.75
    H = sp.coo_matrix((vals2, (H.row, H.col)), shape=(n, n))
    A = sp.coo_matrix((np.array([1.0, 0.0, 2.0, -1.0, 0.5, 0.5]),
                       (np.array([1, 0, 0, 1, 0, 0]), np.array([4, 2, 0, 1, 5, 5]))), shape=(2, n))
    C = sp.coo_matrix((np.array([1.0, 0.0, 1.0, 1.0, -1.0, 0.0, 1.0]),
                       (np.array([2, 0, 0, 1, 1, 2, 2]), np.array([3, 1, 0, 1, 2, 4, 3]))),
                      shape=(3, n))
    g = rng.standard_normal(n)
    b = np.array([0.3, -0.2])
    l = np.array([-0.2, -0.3, -0.1])
    u = np.array([0.2, 0.3, 0.1])
    return H, g, A, b, C, l, u


def assert_same_pattern(G, prob, names="HAC"):
    for name in names:
        gm, pm = getattr(G, name), getattr(prob, name)
        assert sp.issparse(gm) and gm.format == "csc", name
        assert gm.shape == pm.shape, name
        assert np.array_equal(gm.indptr, pm.indptr), f"{name}: indptr differs"
        assert np.array_equal(gm.indices, pm.indices), f"{name}: indices differ"


def test_gradient_pattern_messy_inputs():
    H, g, A, b, C, l, u = messy_inputs()
    prob = make_problem(H, g, A, b, C, l, u)
    # the canonical pattern keeps explicit zeros
    assert prob.A.nnz == 5 and prob.C.nnz == 6
    assert np.any(prob.A.data == 0) and np.any(prob.C.data == 0) and np.any(prob.H.data == 0)
    r = sparseqp.solve(H, g, A, b, C, l, u, eps_abs=1e-10)
    assert r.status == Status.SOLVED
    G = r.vjp(dx=np.ones(len(g)))
    assert_same_pattern(G, prob)
    assert_all_finite(G)
    # H gradient symmetric
    np.testing.assert_allclose(G.H.toarray(), G.H.toarray().T, atol=1e-12)
    # and it is correct (FD on the canonical data)
    d = data_of(prob)
    w = {"x": np.ones(len(g))}
    fd = fd_gradients(d, w, Status.SOLVED)
    compare_fd(G, fd, d, label="messy inputs")


def test_gradient_pattern_feasible_random():
    p = well_scaled_qp(seed=1)
    r = solve(data_of(p))
    G = r.vjp(dx=np.ones(p.n))
    assert_same_pattern(G, p)


CLOSEST_PATTERN_BUG = ("closest-feasible vjp builds G.A / G.C as a sum of two sparse matrices, "
                       "which drops explicit zeros (e.g. inactive rows of C): G.C.nnz 26 vs "
                       "pattern nnz 51 for infeasible kind='eq' seed 3")


@pytest.mark.parametrize("kind", CLOSEST_KINDS)
def test_gradient_pattern_closest(kind):
    p, _ = infeasible_problem(kind, seed=3)
    r = solve(data_of(p))
    assert r.status == Status.SOLVED_CLOSEST_FEASIBLE
    G = r.vjp(dx=np.ones(p.n))
    assert_same_pattern(G, p)


def test_gradient_matrices_are_valid_and_own_their_arrays():
    """The gradient matrices are made without scipy's constructor (a shallow copy of the
    problem's matrix with new arrays): they must still be valid, canonical CSC matrices with
    the right values, and independent of the problem's and of each other's index arrays."""
    from sparseqp.derivatives import _on_pattern

    p = well_scaled_qp(seed=2)
    r = solve(data_of(p))
    G1 = r.vjp(dx=np.ones(p.n))
    G2 = r.vjp(dx=np.ones(p.n))
    prob = r._forward["problem"]
    for name in ("H", "A", "C"):
        M, P = getattr(G1, name), getattr(prob, name)
        assert type(M) is sp.csc_matrix and M.shape == P.shape
        M.check_format(full_check=True)
        assert M.has_canonical_format
        for arr in ("data", "indices", "indptr"):
            assert not np.shares_memory(getattr(M, arr), getattr(P, arr)), (name, arr)
            assert not np.shares_memory(getattr(M, arr), getattr(getattr(G2, name), arr))
        # scipy operations work on it, and changing it in place leaves the problem alone
        np.testing.assert_array_equal((M + M).toarray(), 2 * M.toarray())
        before = P.indices.copy()
        M.data[:] = 0.0
        M.eliminate_zeros()
        np.testing.assert_array_equal(P.indices, before)
    # the values: alpha (a_i b_j + c_i d_j) on the pattern
    rng = np.random.default_rng(0)
    a, c = rng.standard_normal(p.n_eq), rng.standard_normal(p.n_eq)
    b, d = rng.standard_normal(p.n), rng.standard_normal(p.n)
    M = _on_pattern(p.A, -0.5, a, b, c, d)
    mask = p.A.toarray() != 0
    ref = np.where(mask, -0.5 * (np.outer(a, b) + np.outer(c, d)), 0.0)
    np.testing.assert_allclose(M.toarray(), ref, rtol=1e-14, atol=1e-14)


def test_active_sets_kernel_matches_definition():
    """active = z != 0 or |s_in| > tau; side = sign(z), the shift's sign on shifted rows, +1 on
    an active equality row with side 0."""
    from sparseqp import _krylov

    rng = np.random.default_rng(4)
    q = 400
    z = rng.standard_normal(q) * (rng.random(q) < 0.3)
    s_in = rng.standard_normal(q) * (rng.random(q) < 0.3) * rng.choice([1e-12, 1.0], q)
    l = rng.standard_normal(q)
    u = np.where(rng.random(q) < 0.2, l, l + 1.0)
    tau = 1e-9
    s_ref = np.where(np.abs(s_in) > tau, s_in, 0.0)
    shifted = s_ref != 0
    active_ref = ((z != 0) | shifted).astype(np.int8)
    side_ref = np.sign(z)
    side_ref[shifted] = np.sign(s_ref[shifted])
    side_ref[(l == u) & (active_ref != 0) & (side_ref == 0)] = 1.0
    s_out, active, side = np.empty(q), np.empty(q, dtype=np.int8), np.empty(q)
    _krylov.active_sets(z, s_in, l, u, tau, s_out, active, side)
    np.testing.assert_array_equal(s_out, s_ref)
    np.testing.assert_array_equal(active, active_ref)
    np.testing.assert_array_equal(side, side_ref)
    assert np.any(shifted & (z == 0)) and np.any(active_ref == 0)


# ----------------------------------------------------------------------------------------------
# 6. factorization reuse
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backward_reuses_forward_factorization(seed, monkeypatch):
    """The backward reuses the forward's last factorization: as it is when it holds the
    solution's active set, through a Woodbury correction (KKTSystem.switched_solve) when it
    misses a few rows (a polish that ended on a corrected factorization). With that
    correction unaffordable it refactorizes once; both give the same gradients."""
    from sparseqp import kkt as kkt_mod

    p = well_scaled_qp(seed=seed)
    grads = []
    for budget in (kkt_mod.SWITCH_BUDGET, 0.0):
        monkeypatch.setattr(kkt_mod, "SWITCH_BUDGET", budget)
        s = sparseqp.Solver(p.H, p.g, p.A, p.b, p.C, p.l, p.u, eps_abs=1e-10)
        r = s.solve()
        assert r.status == Status.SOLVED
        matches = s._kkt.holds(r._forward["fact_id"], s._sc, s._state.active)
        G = r.vjp(dx=np.ones(p.n))
        expected = 0 if matches or budget > 0 else 1
        assert G.info["n_factorizations"] == expected, (matches, budget, G.info)
        t = r.jvp(dg=np.ones(p.n))
        assert t.info["n_factorizations"] == 0, t.info
        assert G.info["residual"] < 1e-9
        grads.append((matches, G))
    (m1, G1), (m2, G2) = grads
    if not (m1 and m2):
        for name in ("g", "b", "l", "u"):
            np.testing.assert_allclose(getattr(G1, name), getattr(G2, name),
                                       rtol=1e-6, atol=1e-8)


def test_backward_factor_copy_follows_the_factorization(monkeypatch):
    """The backward solves with a copy of the factors (the Cython LDL' kernel): repeated calls
    give bitwise the same gradients, a later solve of other values (Solver.update) must not
    reuse the copy, and above the size cap qdldl's own solve gives the same gradients."""
    from sparseqp import kkt as kkt_mod

    p = well_scaled_qp(seed=0)
    solver = sparseqp.Solver(p.H, p.g, p.A, p.b, p.C, p.l, p.u, **KW)
    r1 = solver.solve()
    v = np.random.default_rng(0).standard_normal(p.n)
    kkt = solver._kkt
    G1 = r1.vjp(dx=v)
    assert kkt._copied is not None and kkt._copied[0] == kkt.fact_id
    G1b = r1.vjp(dx=v)
    for name in ("g", "b", "l", "u"):
        np.testing.assert_array_equal(getattr(G1b, name), getattr(G1, name))
    np.testing.assert_array_equal(G1b.A.data, G1.A.data)
    H2 = (p.H * 1.5).tocsc()
    solver.update(H=H2)
    r2 = solver.solve()
    G2 = r2.vjp(dx=v)
    fresh = sparseqp.solve(H2, p.g, p.A, p.b, p.C, p.l, p.u, **KW).vjp(dx=v)
    np.testing.assert_allclose(G2.g, fresh.g, rtol=1e-8, atol=1e-10)
    assert np.linalg.norm(G2.g - G1.g) > 1e-3 * np.linalg.norm(G1.g)
    # above the cap: qdldl's own solve, no copy, the same gradients to rounding
    monkeypatch.setattr(kkt_mod, "_FACTOR_COPY_MAX_BYTES", 0)
    r3 = sparseqp.solve(p.H, p.g, p.A, p.b, p.C, p.l, p.u, **KW)
    k3 = r3._solver._kkt
    assert k3.many_solves() == k3.solve
    G3 = r3.vjp(dx=v)
    assert k3._copied is None
    for name in ("g", "b", "l", "u"):
        np.testing.assert_allclose(getattr(G3, name), getattr(G1, name), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(G3.A.data, G1.A.data, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# 7. errors
# ----------------------------------------------------------------------------------------------
def test_vjp_on_max_iter_raises():
    p = well_scaled_qp(seed=0)
    # without the active-set polish: with it, one outer iteration solves this QP to 1e-12
    r = sparseqp.solve(p, eps_abs=1e-12, max_iter=1, active_set_polish=False)
    assert r.status == Status.MAX_ITER_REACHED
    with pytest.raises(DerivativeError):
        r.vjp(dx=np.ones(p.n))
    with pytest.raises(DerivativeError):
        r.jvp(dg=np.ones(p.n))
    with pytest.raises(DerivativeError):
        r.jacobian(wrt="g")


@pytest.mark.parametrize("name,size_of", [("dx", "n"), ("dy", "n_eq"), ("dz", "n_in")])
def test_wrong_cotangent_length(name, size_of):
    p = well_scaled_qp(seed=0)
    r = solve(data_of(p))
    bad = np.ones(getattr(p, size_of) + 1)
    with pytest.raises(ValueError, match=name):
        r.vjp(**{name: bad})


def test_wrong_cotangent_length_shifts():
    p, _ = infeasible_problem("mixed", seed=3)
    r = solve(data_of(p))
    with pytest.raises(ValueError, match="ds_eq"):
        r.vjp(ds_eq=np.ones(p.n_eq + 2))
    with pytest.raises(ValueError, match="ds_in"):
        r.vjp(ds_in=np.ones(p.n_in - 1))
    with pytest.raises(DerivativeError):
        r.vjp(dy=np.ones(p.n_eq))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["dx", "dy", "dz"])
def test_non_finite_cotangent_raises(name, bad):
    p = well_scaled_qp(seed=1)
    r = solve(data_of(p))
    size = {"dx": p.n, "dy": p.n_eq, "dz": p.n_in}[name]
    v = np.ones(size)
    v[size // 2] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        r.vjp(**{name: v})
    # a strided (non-contiguous) cotangent is read as its values
    strided = np.full(2 * size, 1.0)[::2]
    G = r.vjp(**{name: strided})
    G0 = r.vjp(**{name: np.ones(size)})
    np.testing.assert_array_equal(G.g, G0.g)


def test_bound_gradients_follow_the_side_of_the_active_bound():
    """dL/du only on upper-active rows, dL/dl only on lower-active rows, both -w_z there."""
    p = well_scaled_qp(seed=3)
    r = solve(data_of(p))
    G = r.vjp(dx=np.ones(p.n))
    up, lo = r.z > 0, r.z < 0
    assert np.any(up | lo)
    assert np.all(G.u[~up] == 0) and np.all(G.l[~lo] == 0)
    from sparseqp.derivatives import _linearization
    _, _, wz, _ = _linearization(r).solve_unscaled(-np.ones(p.n), None, None)
    np.testing.assert_allclose(G.u[up], -wz[up], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(G.l[lo], -wz[lo], rtol=1e-8, atol=1e-12)


def _badly_scaled_inconsistent(seed):
    """Inconsistent equalities (5 repeated rows with other right-hand sides) on a random QP
    whose Ruiz row scalings span ~1e6 in E^2."""
    from sparseqp.problems import random_qp

    rng = np.random.default_rng(seed)
    p = random_qp(200, seed=seed, bandwidth=20)
    b = p.b + 5.0 * rng.standard_normal(p.b.shape)
    A2 = sp.vstack([p.A, p.A[:5]]).tocsc()
    b2 = np.concatenate([b, b[:5] + 1.0])
    return p, A2, b2, rng.standard_normal(p.n)


def _closest_singular_face():
    """Inconsistent x0 + x1 = 1, x0 + x1 = 2 with x2 free and costless (H = diag(1, 1, 0)):
    H is singular on the shifted face, the closest-feasible x is not unique in x2."""
    H = sp.diags([1.0, 1.0, 0.0]).tocsc()
    A = sp.csc_matrix(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
    C = sp.csc_matrix(np.array([[1.0, 0.0, 0.0]]))
    return sparseqp.solve(H, np.array([1.0, -1.0, 0.0]), A, np.array([1.0, 2.0]), C,
                          np.array([-5.0]), np.array([5.0]), eps_abs=1e-10)


def test_unconverged_derivative_solve_warns():
    """A loss on the non-unique x2: the limit KKT system is inconsistent, no derivative."""
    r = _closest_singular_face()
    assert r.status == sparseqp.Status.SOLVED_CLOSEST_FEASIBLE
    with pytest.warns(RuntimeWarning, match="unreliable"):
        G = r.vjp(dx=np.array([0.3, -0.2, 1.0]))
    assert G.info["residual"] > 1e-6


def test_closest_singular_face_well_posed_loss_does_not_warn():
    """Same point, a loss on the unique part of x: exact, no warning."""
    r = _closest_singular_face()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        G = r.vjp(dx=np.array([0.3, -0.2, 0.0]))
    assert G.info["residual"] < 1e-12
    # x0 = (1.5 - g0 + g1) / 2, x1 = (1.5 + g0 - g1) / 2 on the face x0 + x1 = 1.5
    np.testing.assert_allclose(G.g, [-0.25, 0.25, 0.0], atol=1e-9)


@pytest.mark.parametrize("seed", [11, 4, 5, 23])
def test_closest_badly_scaled_rows_no_warning(seed):
    p, A2, b2, v = _badly_scaled_inconsistent(seed)
    r = sparseqp.solve(p.H, p.g, A2, b2, p.C, p.l, p.u, eps_abs=1e-10, eps_rel=0)
    assert r.status == sparseqp.Status.SOLVED_CLOSEST_FEASIBLE
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        G = r.vjp(dx=v)
    assert G.info["residual"] < 1e-10, G.info


def test_closest_gradient_badly_scaled_rows():
    """Inconsistent rows whose row scalings are 1e3 apart (E^2: 1e6): the elastic KKT matrix
    with eps = 1e-8 has blocks of 1e-14 and LDL' lost every digit (gradients off by 1e12)."""
    p, A2, b2, v = _badly_scaled_inconsistent(11)
    kw = dict(eps_abs=1e-10, eps_rel=0)
    r = sparseqp.solve(p.H, p.g, A2, b2, p.C, p.l, p.u, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        G = r.vjp(dx=v)
    d = np.random.default_rng(1).standard_normal(b2.shape)
    h = 1e-5 * np.abs(b2).max()
    xp = sparseqp.solve(p.H, p.g, A2, b2 + h * d, p.C, p.l, p.u, **kw).x
    xm = sparseqp.solve(p.H, p.g, A2, b2 - h * d, p.C, p.l, p.u, **kw).x
    fd = v @ (xp - xm) / (2 * h)
    assert abs(G.b @ d - fd) <= 1e-4 * max(abs(fd), 1.0)


# ----------------------------------------------------------------------------------------------
# closest-feasible points with badly scaled shifted rows (row scalings ~1e3 apart)
# ----------------------------------------------------------------------------------------------
KW_BS = dict(eps_abs=1e-10, eps_rel=0)


def _badly_scaled_data(kind, seed):
    """Data dict and a cotangent on x. "eq": :func:`_badly_scaled_inconsistent`; "ineq": four
    C rows repeated with a range above their upper bound, two of them scaled by 1e-3 and 1e-2
    (row scalings 1e3 apart among the shifted rows)."""
    from sparseqp.problems import random_qp

    if kind == "eq":
        p, A2, b2, v = _badly_scaled_inconsistent(seed)
        return dict(H=p.H, g=p.g, A=A2, b=b2, C=p.C, l=p.l, u=p.u), v
    p = random_qp(200, seed=seed, bandwidth=20)
    k = np.flatnonzero(np.isfinite(p.u))[:4]
    s = np.array([1e-3, 1.0, 1e-2, 1.0])
    C2 = sp.vstack([p.C, sp.diags(s) @ p.C[k]]).tocsc()
    l2 = np.concatenate([p.l, s * (p.u[k] + 1.0)])
    u2 = np.concatenate([p.u, s * (p.u[k] + 3.0)])
    v = np.random.default_rng(seed).standard_normal(p.n)
    return dict(H=p.H, g=p.g, A=p.A, b=p.b, C=C2, l=l2, u=u2), v


def _solve_bs(d):
    return sparseqp.solve(d["H"], d["g"], d["A"], d["b"], d["C"], d["l"], d["u"], **KW_BS)


def _rank_safe_rows(r, d):
    """Rows of A and C outside the support of null(M'), M = [A; C_J] (dense SVD): moving only
    them keeps rank(M), so the closest-feasible solution map is differentiable along them."""
    from sparseqp.derivatives import _linearization

    act = _linearization(r).active != 0
    A, C = d["A"].toarray(), d["C"].toarray()
    M = np.vstack([A, C[act]])
    _, S, Vt = np.linalg.svd(M.T)
    rank = int(np.sum(S > S[0] * 1e-10))
    used = np.abs(Vt[rank:]).max(axis=0, initial=0.0) > 1e-8
    m = A.shape[0]
    safe_C = np.ones(C.shape[0], dtype=bool)
    safe_C[np.flatnonzero(act)] = ~used[m:]
    return ~used[:m], safe_C


def _bs_directions(r, d, rng):
    """Random directions for b, g, l, u (free sides of non-equality rows) and for A, C on
    their patterns, restricted to the rank-safe rows."""
    safe_A, safe_C = _rank_safe_rows(r, d)
    dirs = {"b": rng.standard_normal(d["b"].shape), "g": rng.standard_normal(d["g"].shape)}
    for name in ("l", "u"):
        ok = np.isfinite(d[name]) & (d["l"] < d["u"])
        dirs[name] = np.where(ok, rng.standard_normal(d[name].shape), 0.0)
    for name, safe in (("A", safe_A), ("C", safe_C)):
        M = d[name].tocsc()
        data = rng.standard_normal(M.nnz) * safe[M.indices]
        dirs[name] = sp.csc_matrix((data, M.indices, M.indptr), shape=M.shape)
    return dirs


def _pairing(G, dirs):
    out = 0.0
    for name, dv in dirs.items():
        gv = getattr(G, name)
        out += float(gv.multiply(dv).sum()) if sp.issparse(dv) else float(gv @ dv)
    return out


@pytest.mark.parametrize("kind,seed", [("eq", 11), ("eq", 5), ("eq", 23), ("ineq", 0),
                                       ("ineq", 2)])
def test_closest_badly_scaled_fd(kind, seed):
    """Directional FD of a loss on x along b, g, A, C (rank-safe rows), l, u."""
    d, v = _badly_scaled_data(kind, seed)
    r = _solve_bs(d)
    assert r.status == Status.SOLVED_CLOSEST_FEASIBLE
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        G = r.vjp(dx=v)
    rng = np.random.default_rng(1000 + seed)
    for name, dv in _bs_directions(r, d, rng).items():
        if not (dv.nnz if sp.issparse(dv) else np.any(dv)):
            continue
        base = d[name].data if sp.issparse(d[name]) else d[name][np.isfinite(d[name])]
        # (h = 1e-5 reaches the curvature of the nearest active-set change on ineq seed 2)
        h = 1e-6 * max(1.0, float(np.max(np.abs(base))))
        vals = []
        for sgn in (1.0, -1.0):
            rr = _solve_bs({**d, name: d[name] + sgn * h * dv})
            assert rr.status == Status.SOLVED_CLOSEST_FEASIBLE
            vals.append(v @ rr.x)
        fd = (vals[0] - vals[1]) / (2 * h)
        pred = _pairing(G, {name: dv})
        assert abs(pred - fd) <= 1e-4 * max(abs(fd), 1.0), (kind, seed, name, pred, fd)


@pytest.mark.parametrize("kind,seed", [("eq", 11), ("ineq", 0)])
def test_closest_badly_scaled_adjoint_identity(kind, seed):
    """<v, J d> from jvp equals <vjp(v), d>, with cotangents on x and on the shifts."""
    d, v = _badly_scaled_data(kind, seed)
    r = _solve_bs(d)
    assert r.status == Status.SOLVED_CLOSEST_FEASIBLE
    rng = np.random.default_rng(7)
    wse = rng.standard_normal(d["b"].shape)
    wsi = rng.standard_normal(d["l"].shape)
    dirs = _bs_directions(r, d, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        G = r.vjp(dx=v, ds_eq=wse, ds_in=wsi)
        t = r.jvp(dH=None, dg=dirs["g"], dA=dirs["A"], db=dirs["b"], dC=dirs["C"],
                  dl=dirs["l"], du=dirs["u"])
    lhs = v @ t.x + wse @ t.s_eq + wsi @ t.s_in
    rhs = _pairing(G, dirs)
    assert abs(lhs - rhs) <= 1e-8 * max(abs(lhs), 1.0), (lhs, rhs)


def test_closest_badly_scaled_factorizations_and_reuse():
    """One numeric refactorization per linearization, no symbolic analysis; later calls
    reuse it, and a linearization notices when another solve refactorized the KKT system."""
    d, v = _badly_scaled_data("eq", 11)
    S = sparseqp.Solver(d["H"], d["g"], d["A"], d["b"], d["C"], d["l"], d["u"], **KW_BS)
    r1 = S.solve()
    assert r1.status == Status.SOLVED_CLOSEST_FEASIBLE
    kkt = S._kkt
    n_sym = kkt.n_symbolic
    G1 = r1.vjp(dx=v)
    assert G1.info["n_factorizations"] == 1, G1.info
    v2 = np.random.default_rng(5).standard_normal(v.shape)
    G2 = r1.vjp(dx=v2)
    assert G2.info["n_factorizations"] == 0, G2.info
    t = r1.jvp(db=np.ones(d["b"].shape))
    assert t.info["n_factorizations"] == 0, t.info
    G1b = r1.vjp(dx=v)
    assert G1b.info["n_factorizations"] == 0
    np.testing.assert_allclose(G1b.b, G1.b, rtol=1e-9, atol=1e-9 * np.abs(G1.b).max())
    # another forward solve on the same KKT system: r1's factorization is gone
    S.update(b=d["b"] + 0.01 * np.random.default_rng(6).standard_normal(d["b"].shape))
    r2 = S.solve()
    assert r2.status == Status.SOLVED_CLOSEST_FEASIBLE
    G3 = r1.vjp(dx=v)
    assert G3.info["n_factorizations"] == 1, G3.info
    np.testing.assert_allclose(G3.b, G1.b, rtol=1e-9, atol=1e-9 * np.abs(G1.b).max())
    np.testing.assert_allclose(G3.g, G1.g, rtol=1e-9, atol=1e-9 * np.abs(G1.g).max())
    G4 = r2.vjp(dx=v)
    assert G4.info["n_factorizations"] == 1, G4.info
    G5 = r1.vjp(dx=v2)
    assert G5.info["n_factorizations"] == 1, G5.info
    np.testing.assert_allclose(G5.b, G2.b, rtol=1e-9, atol=1e-9 * np.abs(G2.b).max())
    assert kkt.n_symbolic == n_sym


@pytest.mark.parametrize("seed", [6, 30, 120, 240, 260, 612])
def test_closest_lp_with_dependent_active_rows(seed):
    # Closest-feasible LPs (H = 0) of the random mixed family whose active rows are dependent:
    # the x-pivots of K_mu are only bw_reg, so elastic blocks of ~5e-9 were rounded away
    # against |M|^2 / bw_reg and the factorization had exact zero pivots; the gradients came
    # back as 0 with a "residual inf" warning (seed 612: FD 14.43). The blocks are raised
    # until the solve converges.
    from test_solver import _random_mixed_problem

    P = _random_mixed_problem(seed)
    assert P.H.nnz == 0
    r = sparseqp.solve(P, eps_abs=1e-11)
    assert r.status == Status.SOLVED_CLOSEST_FEASIBLE
    v = np.random.default_rng(seed).standard_normal(P.n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        G = r.vjp(dx=v)
    assert G.info["residual"] <= 1e-6
    d = np.random.default_rng(3).standard_normal(P.n_eq)
    h = 1e-5

    def loss(b):
        return v @ sparseqp.solve(P.H, P.g, P.A, b, P.C, P.l, P.u, eps_abs=1e-11).x

    fd = (loss(P.b + h * d) - loss(P.b - h * d)) / (2 * h)
    assert abs(G.b @ d - fd) <= 1e-5 * max(1.0, abs(fd)), (G.b @ d, fd)


def test_vjp_where_the_regularized_factorization_is_unsound():
    """Maros-Meszaros QGFRDXPN (tests/data): an LP-like QP (H zero on 1,038 of 1,092
    variables) whose forward factorization does not match the solution's active set. The
    backward's refactorization of K0 regularized by bw_reg = 1e-9 had zero pivots, its solves
    inf: the gradients came back as 0 with a warning. Its blocks are now raised until the
    factors are sound, and GMRES refines against K0 (the system is consistent here)."""
    P = maros_data("QGFRDXPN")
    kw = dict(eps_abs=1e-8, eps_rel=0)
    r = sparseqp.solve(P, **kw)
    assert r.status == Status.SOLVED
    rng = np.random.default_rng(0)
    w = rng.standard_normal(P.n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        G = r.vjp(dx=w)
    assert G.info["residual"] < 1e-9, G.info
    v = rng.standard_normal(P.n) * np.abs(P.g).max()
    # the active set holds for steps up to ~1e-7 of v (at 1e-6 the perturbed QP is another)
    h = 1e-7
    xp = sparseqp.solve(P.H, P.g + h * v, P.A, P.b, P.C, P.l, P.u, **kw).x
    xm = sparseqp.solve(P.H, P.g - h * v, P.A, P.b, P.C, P.l, P.u, **kw).x
    fd = w @ (xp - xm) / (2 * h)
    assert abs(G.g @ v - fd) <= 1e-5 * abs(fd), (G.g @ v, fd)
    # forward mode agrees (same linearization, the transposed solve)
    assert abs(w @ r.jvp(dg=v).x - G.g @ v) <= 1e-8 * abs(fd)


def test_vjp_off_a_vertex_warns():
    """An LP whose optimum is a whole edge (x0 + x1 = 1, 0 <= x <= 1, cost (1, 1, 0) with x2
    in [0, 1] at cost 0 too): H = 0 on the null space of the active rows, x is not locally
    unique, and a loss on x has no derivative. The solve stops at a least-squares residual
    above 1e-6 and says so (it returned such elements silently below a residual of 1)."""
    H = sp.csc_matrix((3, 3))
    g = np.array([1.0, 1.0, 0.0])
    A = sp.csc_matrix(np.array([[1.0, 1.0, 0.0]]))
    C = sp.identity(3, format="csc")
    r = sparseqp.solve(H, g, A, np.array([1.0]), C, np.zeros(3), np.ones(3), eps_abs=1e-9)
    assert r.status == Status.SOLVED
    with pytest.warns(RuntimeWarning, match="no derivative exists"):
        G = r.vjp(dx=np.array([1.0, -1.0, 0.5]))
    assert G.info["residual"] > 1e-6
    assert np.all(np.isfinite(G.g))


def test_weakly_active_row_completes_a_vertex():
    """Maros-Meszaros QBEACONF (tests/data), an LP-like QP: at its solution row 104 sits at
    its lower bound with z = 0. Without it, H is singular on the null space of the rows with
    z != 0 and the derivative solve stopped at a least-squares residual of 0.07 (gradients
    of 4e22 returned with no warning). With it the active rows (313, of rank 262 = n) make x
    a vertex, and K0 is consistent: the gradients are those of the same QP with that row
    written as an equality (the derivative along perturbations that keep it tight), and the
    forward mode agrees."""
    P = maros_data("QBEACONF")
    kw = dict(eps_abs=1e-8, eps_rel=0)
    r = sparseqp.solve(P, **kw)
    assert r.status == Status.SOLVED
    cx = P.C @ r.x
    weak = (r.z == 0) & (np.abs(cx - P.l) <= 1e-8)
    assert np.flatnonzero(weak).tolist() == [104]
    w = np.random.default_rng(0).standard_normal(P.n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        G = r.vjp(dx=w)
    assert G.info["residual"] < 1e-9, G.info
    # the same QP with row 104 as an equality (A rows are always in K0)
    A2 = sp.vstack([P.A, P.C[weak]]).tocsc()
    b2 = np.concatenate([P.b, P.l[weak]])
    r2 = sparseqp.solve(P.H, P.g, A2, b2, P.C[~weak], P.l[~weak], P.u[~weak], **kw)
    assert r2.status == Status.SOLVED
    np.testing.assert_allclose(r2.x, r.x, atol=1e-8)
    G2 = r2.vjp(dx=w)
    scale = np.abs(G2.b).max()
    np.testing.assert_allclose(G.g, G2.g, atol=1e-8 * scale)
    np.testing.assert_allclose(G.l[weak], G2.b[P.n_eq:], atol=1e-8 * scale)
    # (the other rows' b, l, u gradients are not unique here: its active rows are dependent,
    # and two least-squares elements differ along directions that break feasibility)
    # forward mode: moving that bound moves x as moving the equality's right-hand side does
    dl = np.zeros(P.n_in)
    dl[104] = 1.0
    t = r.jvp(dl=dl)
    db = np.zeros(A2.shape[0])
    db[-1] = 1.0
    t2 = r2.jvp(db=db)
    np.testing.assert_allclose(t.x, t2.x, atol=1e-8 * max(1.0, np.abs(t2.x).max()))
