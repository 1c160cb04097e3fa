"""The problem generators: valid, sized as asked, deterministic, MPC metadata consistent."""
import numpy as np
import pytest
import scipy.sparse as sp

from sparseqp.problem import Problem
from sparseqp.problems import (PROBLEM_CLASSES, box_qp, equality_qp, infeasible_qp, lasso_qp,
                               mpc_qp, nonconvex_qp, portfolio_qp, random_qp, unbounded_qp)


def _same(p: Problem, q: Problem) -> bool:
    mats = all((getattr(p, k) != getattr(q, k)).nnz == 0 for k in "HAC")
    vecs = all(np.array_equal(getattr(p, k), getattr(q, k)) for k in ("g", "b", "l", "u"))
    return mats and vecs


def _min_eig(H) -> float:
    return float(np.linalg.eigvalsh(H.toarray()).min())


def _feasible_point_exists(p: Problem, x) -> bool:
    rp, _ = p.residuals(x)
    return rp < 1e-9


@pytest.mark.parametrize("name", sorted(PROBLEM_CLASSES))
def test_classes_sizes_and_validity(name):
    p = PROBLEM_CLASSES[name](300, 0)
    assert isinstance(p, Problem)
    assert 250 <= p.n <= 350
    assert p.A.shape == (p.n_eq, p.n) and p.C.shape == (p.n_in, p.n)
    assert all(M.format == "csc" for M in (p.H, p.A, p.C))
    assert np.all(p.l <= p.u)
    assert _min_eig(p.H) > -1e-9  # convex


@pytest.mark.parametrize("name", sorted(PROBLEM_CLASSES))
def test_classes_deterministic(name):
    f = PROBLEM_CLASSES[name]
    assert _same(f(200, 3), f(200, 3))
    assert not _same(f(200, 3), f(200, 4))


def test_random_qp_sizes_and_feasible_by_construction():
    p = random_qp(80, n_eq=10, n_in=30, seed=1)
    assert (p.n, p.n_eq, p.n_in) == (80, 10, 30)
    assert _min_eig(p.H) > 0
    # bounds: some infinite sides, some equality rows
    assert np.any(np.isinf(p.l)) and np.any(np.isinf(p.u)) and np.any(p.l == p.u)
    # no empty constraint rows
    assert np.all(np.diff(p.A.tocsr().indptr) > 0) and np.all(np.diff(p.C.tocsr().indptr) > 0)
    # with bandwidth: entries stay near the diagonal
    q = random_qp(400, seed=2, bandwidth=5)
    r, c = q.C.nonzero()
    centers = np.round(r * (q.n - 1) / (q.n_in - 1))
    assert np.max(np.abs(c - centers)) <= 5


@pytest.mark.parametrize("kind", ["random", "infeasible"])
def test_feasibility_by_linprog(kind):
    """random_qp is feasible by construction; infeasible_qp is not (HiGHS feasibility LP)."""
    from scipy.optimize import linprog

    p = random_qp(60, n_eq=15, n_in=40, seed=0) if kind == "random" else infeasible_qp(60, 0, "ineq")
    up, lo = np.isfinite(p.u), np.isfinite(p.l)
    A_ub = sp.vstack([p.C[up], -p.C[lo]]).toarray()
    b_ub = np.concatenate([p.u[up], -p.l[lo]])
    res = linprog(np.zeros(p.n), A_ub=A_ub, b_ub=b_ub, A_eq=p.A.toarray(), b_eq=p.b,
                  bounds=(None, None), method="highs")
    assert (res.status == 0) == (kind == "random")


def test_equality_and_box():
    p = equality_qp(50, 20, seed=0)
    assert (p.n, p.n_eq, p.n_in) == (50, 20, 0)
    q = box_qp(40, seed=0)
    assert q.n_in == 40 and q.n_eq == 0
    assert (q.C != sp.identity(40)).nnz == 0


def test_portfolio_and_lasso_shapes():
    p = portfolio_qp(100, 5, seed=0)
    assert (p.n, p.n_eq, p.n_in) == (105, 6, 100)
    x = np.full(100, 0.01)
    z = np.concatenate([x, (p.A[:5, :100] @ x)])
    assert _feasible_point_exists(p, z)
    q = lasso_qp(8, 100, seed=0)
    assert (q.n, q.n_eq, q.n_in) == (8 + 100 + 8, 100, 16)


@pytest.mark.parametrize("dynamics", ["oscillating-masses", "random"])
def test_mpc_metadata(dynamics):
    nx, nu, N = 6, 3, 12
    m = mpc_qp(nx, nu, N, seed=1, dynamics=dynamics)
    p = m.problem
    assert p.n == (N + 1) * nx + N * nu
    assert m.Ad.shape == (nx, nx) and m.Bd.shape == (nx, nu)
    assert np.array_equal(p.b[m.x0_rows], m.x0)
    assert np.array_equal(m.u0_cols, (N + 1) * nx + np.arange(nu))
    # a rollout of the dynamics with zero input satisfies the equalities
    xs = [m.x0]
    for _ in range(N):
        xs.append(m.Ad @ xs[-1])
    z = np.concatenate([np.concatenate(xs), np.zeros(N * nu)])
    assert np.max(np.abs(p.A @ z - p.b)) < 1e-10
    assert np.allclose(m.states(z)[1], m.Ad @ m.x0) and m.inputs(z).shape == (N, nu)
    # a nonzero first input enters x_1 through Bd at u0_cols
    z2 = z.copy()
    z2[m.u0_cols] = 1.0
    r = p.A @ z2 - p.b
    assert np.allclose(r[nx:2 * nx], -m.Bd @ np.ones(nu))
    # with_x0 changes only b[x0_rows]
    q = m.with_x0(np.ones(nx))
    assert np.array_equal(q.b[m.x0_rows], np.ones(nx))
    assert np.array_equal(np.delete(q.b, m.x0_rows), np.delete(p.b, m.x0_rows))
    assert _min_eig(p.H) > 0


def test_mpc_deterministic_and_x0():
    a, b = mpc_qp(4, 2, 5, seed=7), mpc_qp(4, 2, 5, seed=7)
    assert _same(a.problem, b.problem)
    c = mpc_qp(4, 2, 5, seed=7, x0=[1.0, 0.0, 0.0, 0.0])
    assert np.array_equal(c.problem.b[c.x0_rows], [1.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        mpc_qp(5, 2, 5)  # odd nx for the masses
    with pytest.raises(ValueError):
        mpc_qp(4, 2, 5, dynamics="nope")


@pytest.mark.parametrize("kind", ["eq", "ineq", "mixed"])
def test_infeasible_rows_contradict(kind):
    p = infeasible_qp(30, seed=0, kind=kind)
    assert _min_eig(p.H) > 0
    if kind == "eq":
        a1, a2 = p.A[-2].toarray(), p.A[-1].toarray()
        assert np.array_equal(a1, a2) and p.b[-2] != p.b[-1]
    elif kind == "ineq":
        c1, c2 = p.C[-2].toarray(), p.C[-1].toarray()
        assert np.array_equal(c1, c2) and p.l[-2] > p.u[-1]
    else:
        a, c = p.A[-1].toarray(), p.C[-1].toarray()
        assert np.array_equal(a, c) and not (p.l[-1] <= p.b[-1] <= p.u[-1])


def test_unbounded_direction():
    p = unbounded_qp(25, seed=3)
    k = int(np.flatnonzero(p.g == -1.0)[0]) if np.sum(p.g == -1.0) == 1 else None
    assert k is not None
    d = np.zeros(p.n)
    d[k] = 1.0
    assert np.allclose(p.H @ d, 0) and np.allclose(p.A @ d, 0) and p.g @ d < 0
    cd = p.C @ d
    # C d only moves rows whose upper bound is infinite, and only upward
    assert np.all(cd >= 0) and np.all(np.isinf(p.u[cd > 0]))
    assert _min_eig(p.H) > -1e-9


def test_nonconvex_has_negative_eigenvalue():
    p = nonconvex_qp(15, seed=0)
    assert _min_eig(p.H) == pytest.approx(-1.0)
    assert p.n_in == 15


def test_invalid_sizes():
    with pytest.raises(ValueError):
        random_qp(0)
    with pytest.raises(ValueError):
        random_qp(10, density=0.0)
    with pytest.raises(ValueError):
        infeasible_qp(10, kind="other")


def test_residuals_of_a_nan_point_are_nan():
    # Python's max(0.0, nan) is 0.0: a NaN iterate must not look primal feasible
    p = random_qp(50, seed=0)
    x = np.zeros(p.n)
    x[3] = np.nan
    rp, rd = p.residuals(x, np.zeros(p.n_eq), np.zeros(p.n_in))
    assert np.isnan(rp) and np.isnan(rd)
    rp, rd = p.residuals(np.zeros(p.n), np.zeros(p.n_eq), np.zeros(p.n_in))
    assert np.isfinite(rp) and np.isfinite(rd)
