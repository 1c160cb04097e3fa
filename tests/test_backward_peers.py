"""sparseqp's VJP against OSQP's adjoint derivative on a small, nondegenerate feasible QP."""
import numpy as np
import pytest
import scipy.sparse as sp

import sparseqp
from sparseqp.problems import random_qp

osqp = pytest.importorskip("osqp")


def _osqp_vjp(p, v):
    """OSQP's dL/d(H, g, A, b, C, l, u) for L = v'x, converted to sparseqp's conventions."""
    P = sp.triu(p.H, format="csc")
    Af = sp.vstack([p.A, p.C], format="csc")
    s = osqp.OSQP()
    s.setup(P, p.g, Af, np.concatenate([p.b, p.l]), np.concatenate([p.b, p.u]), eps_abs=1e-10,
            eps_rel=0.0, max_iter=200_000, polishing=True, verbose=False)
    res = s.solve(raise_error=False)
    assert res.info.status_val == osqp.SolverStatus.OSQP_SOLVED
    s.adjoint_derivative_compute(dx=v)
    dP, dA = s.adjoint_derivative_get_mat(as_dense=True, dP_as_triu=True)
    dq, dlo, dhi = s.adjoint_derivative_get_vec()
    me = p.n_eq
    # osqp's upper triangle holds the per-entry gradient: mirror it (sparseqp's G.H is symmetric)
    dH = dP + np.triu(dP, 1).T
    return res.x, {"H": dH, "g": dq, "A": dA[:me], "C": dA[me:], "b": dlo[:me] + dhi[:me],
                   "l": dlo[me:], "u": dhi[me:]}


def test_vjp_matches_osqp_adjoint():
    p = random_qp(30, seed=1)
    assert np.linalg.matrix_rank(p.A.toarray()) == p.n_eq     # nondegenerate equalities
    v = np.random.default_rng(7).standard_normal(p.n)
    r = sparseqp.solve(p.H, p.g, p.A, p.b, p.C, p.l, p.u, eps_abs=1e-10, eps_rel=0)
    assert r.status.name == "SOLVED"
    G = r.vjp(dx=v)
    x_o, Go = _osqp_vjp(p, v)
    np.testing.assert_allclose(x_o, r.x, atol=1e-7)
    Cx = p.C @ r.x
    n_active = int(np.sum(np.isclose(Cx, p.l, atol=1e-8) | np.isclose(Cx, p.u, atol=1e-8)))
    assert 0 < n_active < p.n_in       # some but not all bounds active: a nontrivial test
    for name in ("g", "b", "l", "u"):
        ours, theirs = np.asarray(getattr(G, name)), np.asarray(Go[name])
        ours = np.where(np.isfinite(getattr(p, name)), ours, 0.0) if name in "lu" else ours
        err = np.linalg.norm(ours - theirs) / max(np.linalg.norm(ours), 1e-12)
        assert err <= 1e-5, (name, err)
    for name in ("H", "A", "C"):
        M = getattr(p, name).tocoo()
        ours = np.asarray(getattr(G, name).tocsr()[M.row, M.col]).ravel()
        theirs = np.asarray(Go[name])[M.row, M.col]
        err = np.linalg.norm(ours - theirs) / max(np.linalg.norm(ours), 1e-12)
        assert err <= 1e-5, (name, err)
