"""Tests of sparseqp.derivatives: VJP/JVP/Jacobian against finite differences, the adjoint
identity, the LQR gain of an unconstrained MPC, degenerate cases, gradient patterns,
factorization reuse and errors.

Sign convention: H x + g + A'y + C'z = 0.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparseqp
from sparseqp import Status
from sparseqp.derivatives import DerivativeError
from sparseqp.problem import make_problem
from sparseqp.problems import mpc_qp

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


def fd_gradients(d, w, status, h=FD_H, names=NAMES, one_sided=False):
    """Central (or one-sided +/-) FD of loss_of over every parameter entry.

    For H, symmetric pairs (i, j), (j, i) are perturbed together; the FD value is stored at
    both positions of the pair (compare with G.H[i,j] + G.H[j,i]).
    Returns {name: array on the pattern (matrices: per stored entry)}; with one_sided returns
    ({name: forward}, {name: backward}).
    """
    base = loss_of(solve(d), w) if one_sided else None

    def ev(dd):
        r = solve(dd)
        assert r.status == status, (r.status, status)
        return loss_of(r, w)

    fwd, bwd = {}, {}
    for name in names:
        v = d[name]
        if sp.issparse(v):
            M = v.tocsc()
            rows, cols = M.indices, col_of(M)
            out_p = np.zeros(M.nnz)
            out_m = np.zeros(M.nnz)
            done = np.zeros(M.nnz, dtype=bool)
            for k in range(M.nnz):
                if done[k]:
                    continue
                ks = [k]
                if name == "H" and rows[k] != cols[k]:
                    # position of the transposed entry
                    i, j = rows[k], cols[k]
                    seg = slice(M.indptr[i], M.indptr[i + 1])
                    kk = M.indptr[i] + np.nonzero(M.indices[seg] == j)[0]
                    assert kk.size == 1
                    ks.append(int(kk[0]))
                Mp, Mm = M.copy(), M.copy()
                for kk in ks:
                    Mp.data[kk] += h
                    Mm.data[kk] -= h
                lp = ev({**d, name: Mp})
                lm = ev({**d, name: Mm})
                for kk in ks:
                    out_p[kk], out_m[kk] = lp, lm
                    done[kk] = True
            fp, fm = out_p, out_m
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


def grad_on_pattern(G, name, M=None):
    """The VJP gradient in the FD layout: H -> G[i,j] + G[j,i] (i != j), G[i,i] (diagonal)."""
    v = getattr(G, name)
    if not sp.issparse(v):
        return np.asarray(v)
    if name == "H":
        Hd = v.toarray()
        rows, cols = v.indices, col_of(v)
        out = np.where(rows == cols, Hd[rows, cols], Hd[rows, cols] + Hd[cols, rows])
        return out
    return v.data.copy()


def assert_all_finite(G):
    for name in NAMES:
        v = getattr(G, name)
        arr = v.data if sp.issparse(v) else np.asarray(v)
        assert np.all(np.isfinite(arr)), f"gradient {name} not finite: {arr}"


def compare_fd(G, fd, rtol=1e-5, names=NAMES, label=""):
    scale = max(1.0, max(np.max(np.abs(grad_on_pattern(G, n)), initial=0.0) for n in names))
    errs = {}
    for name in names:
        a = grad_on_pattern(G, name)
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
    p = well_scaled_qp(n=n, seed=seed)
    d = data_of(p)
    A, C = d["A"].toarray(), d["C"].toarray()
    if kind in ("eq", "mixed"):
        A = np.vstack([A, A[0]])
        d["b"] = np.append(d["b"], d["b"][0] + 1.0)
    if kind in ("ineq", "mixed"):
        # row 1 duplicated with a range entirely above u[1]
        C = np.vstack([C, C[1]])
        d["l"] = np.append(d["l"], d["u"][1] + 0.5)
        d["u"] = np.append(d["u"], d["u"][1] + 2.0)
    q = make_problem(d["H"], d["g"], sp.csc_matrix(A), d["b"], sp.csc_matrix(C), d["l"], d["u"])
    return q


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
    compare_fd(G, fd, label=f"feasible seed {seed}")


@pytest.mark.parametrize("kind", ["eq", "ineq", "mixed"])
def test_vjp_fd_closest_feasible(kind):
    p = infeasible_problem(kind, seed=3)
    d = data_of(p)
    r = solve(d)
    assert r.status == Status.SOLVED_CLOSEST_FEASIBLE
    rng = np.random.default_rng(7)
    w = {"x": rng.standard_normal(p.n), "s_eq": rng.standard_normal(p.n_eq),
         "s_in": rng.standard_normal(p.n_in)}
    G = r.vjp(dx=w["x"], ds_eq=w["s_eq"], ds_in=w["s_in"])
    assert_all_finite(G)
    fd = fd_gradients(d, w, Status.SOLVED_CLOSEST_FEASIBLE)
    compare_fd(G, fd, label=f"closest {kind}")
