"""GMRES refinement of a regularized KKT factorization (sparseqp.refine)."""
import numpy as np
import pytest
import qdldl
import scipy.sparse as sp

from sparseqp.refine import gmres_refine


def _kkt(n, m, seed, rank_deficient=False, mu=1e-3):
    """Target K = [H A'; A 0] and K_reg = K - diag(corr) with corr = (-rho, +mu)."""
    rng = np.random.default_rng(seed)
    G = sp.random(n, n, density=0.1, random_state=rng) + sp.eye(n)
    H = (G @ G.T).tocsc()
    A = sp.random(m, n, density=0.2, random_state=rng, format="csr")
    if rank_deficient:
        A = sp.vstack([A, A[:1] * 2.0]).tocsr()   # a repeated row: K singular
        m += 1
    K = sp.bmat([[H, A.T], [A, None]], format="csc")
    corr = np.concatenate((np.full(n, -1e-7), np.full(m, mu)))
    K_reg = (K - sp.diags(corr)).tocsc()
    solver = qdldl.Solver(sp.triu(K_reg, format="csc"), upper=True)
    return K, corr, solver.solve, n, m


@pytest.mark.parametrize("seed", range(4))
def test_converges_to_the_target_solution(seed):
    K, corr, solve, n, m = _kkt(60, 25, seed)
    rhs = np.random.default_rng(seed + 10).standard_normal(n + m)
    u, n_solves = gmres_refine(solve, corr, rhs, 1e-12, 40)
    assert np.linalg.norm(K @ u - rhs) <= 1e-11 * np.linalg.norm(rhs)
    np.testing.assert_allclose(u, np.linalg.solve(K.toarray(), rhs), rtol=1e-8, atol=1e-10)
    assert 1 < n_solves <= 40


def test_fewer_solves_than_plain_refinement():
    # a large penalty: refinement contracts slowly
    K, corr, solve, n, m = _kkt(80, 30, 7, mu=0.3)
    rhs = np.random.default_rng(3).standard_normal(n + m)
    tol = 1e-11
    _, n_gmres = gmres_refine(solve, corr, rhs, tol, 60)
    u = solve(rhs)
    n_plain = 1
    while np.linalg.norm(rhs - K @ u) > tol * np.linalg.norm(rhs) and n_plain < 60:
        u = u + solve(rhs - K @ u)
        n_plain += 1
    assert n_gmres < n_plain


def test_budget_is_respected():
    K, corr, solve, n, m = _kkt(60, 25, 1)
    rhs = np.ones(n + m)
    calls = []

    def counting_solve(v):
        calls.append(1)
        return solve(v)

    _, n_solves = gmres_refine(counting_solve, corr, rhs, 1e-30, 4)
    assert n_solves == len(calls) == 4


def test_inconsistent_singular_system_stops_finite():
    K, corr, solve, n, m = _kkt(50, 20, 2, rank_deficient=True)
    rhs = np.random.default_rng(5).standard_normal(n + m)   # not in range(K)
    u, n_solves = gmres_refine(solve, corr, rhs, 1e-14, 200)
    assert np.all(np.isfinite(u))
    assert n_solves < 200      # the stall test ends it, not the budget
    # no worse than the first regularized solve
    r0 = np.linalg.norm(K @ solve(rhs) - rhs)
    assert np.linalg.norm(K @ u - rhs) <= r0


@pytest.mark.parametrize("seed", range(3))
def test_op_variant_matches_diagonal_variant_and_projects(seed):
    """gmres_refine with the diagonal correction given as an operator gives gmres_refine's
    answer; with the non-diagonal -[H 0; 0 0] (target [0 A'; A -mu I], the projection of the
    closest-feasible derivatives) it splits r = A t + n with A'n = 0."""

    K, corr, solve, n, m = _kkt(60, 25, seed)
    rhs = np.random.default_rng(seed + 20).standard_normal(n + m)
    u1, _ = gmres_refine(solve, corr, rhs, 1e-12, 40)
    u2, _ = gmres_refine(solve, lambda u: corr * u, rhs, 1e-12, 40)
    np.testing.assert_allclose(u2, u1, rtol=1e-9, atol=1e-11)
    # projection target T = [0 A'; A -mu I] from K_mu = [H + rho I, A'; A, -mu I]
    rng = np.random.default_rng(seed)
    H = (K[:n, :n]).tocsc()
    A = K[n:, :n].tocsc()
    A = sp.vstack([A, A[:2] * 3.0]).tocsc()          # dependent rows: null(A') of dim 2
    mm = A.shape[0]
    mu = 1e-4
    K_mu = sp.bmat([[H + 1e-9 * sp.eye(n), A.T], [A, -mu * sp.eye(mm)]], format="csc")
    solve_mu = qdldl.Solver(sp.triu(K_mu, format="csc"), upper=True).solve
    Hreg = H + 1e-9 * sp.eye(n)

    def corr_op(u):
        return np.concatenate((-(Hreg @ u[:n]), np.zeros(mm)))

    r = rng.standard_normal(mm)
    u, _ = gmres_refine(solve_mu, corr_op, np.concatenate((np.zeros(n), r)), 1e-13, 40)
    pr = r + mu * u[n:]
    Ad = A.toarray()
    P = Ad @ np.linalg.pinv(Ad)
    np.testing.assert_allclose(pr, P @ r, atol=1e-9 * np.linalg.norm(r))


# ----------------------------------------------------------------------------------------------
# the Cython kernels of the backward's solves
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_ldl_solve_on_copied_factors_matches_qdldl(seed, index):
    from sparseqp import _krylov

    K, corr, _, n, m = _kkt(70, 30, seed)
    K_reg = (K - sp.diags(corr)).tocsc()
    s = qdldl.Solver(sp.triu(K_reg, format="csc"), upper=True)
    L, d, perm = s.factors()
    rhs = np.random.default_rng(seed).standard_normal(n + m)
    out = np.empty(n + m)
    _krylov.ldl_solve(L.indptr.astype(index), L.indices.astype(index), L.data, 1.0 / d,
                      perm.astype(np.int64), rhs, out)
    ref = s.solve(rhs)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    assert np.linalg.norm(K_reg @ out - rhs) <= 1e-10 * np.linalg.norm(rhs)


def test_sym_upper_residual_matches_dense():
    from sparseqp import _krylov

    K, corr, _, n, m = _kkt(40, 15, 3)
    U = sp.triu(K, format="csc")
    rng = np.random.default_rng(1)
    u, rhs = rng.standard_normal(n + m), rng.standard_normal(n + m)
    r = np.empty(n + m)
    nrm = _krylov.sym_upper_residual(U.indptr, U.indices, U.data, corr, u, rhs, r)
    ref = rhs - (K.toarray() + np.diag(corr)) @ u
    np.testing.assert_allclose(r, ref, rtol=1e-12, atol=1e-12)
    assert nrm == pytest.approx(np.linalg.norm(ref), rel=1e-12)


def test_gmres_rejects_a_restart_beyond_its_work_arrays():
    from sparseqp import _krylov

    K, corr, solve, n, m = _kkt(20, 5, 0)
    Q = np.empty((_krylov.MAX_RESTART + 2, n + m))
    with pytest.raises(ValueError):
        _krylov.gmres(solve, corr, np.ones(n + m), 1e-12, 10, _krylov.MAX_RESTART + 1, Q)


def test_same_support_and_all_finite_kernels():
    from sparseqp import _krylov

    a = np.array([0, 1, -1, 0], dtype=np.int8)
    assert _krylov.same_support(a, np.array([0, 1, 1, 0], dtype=np.int8))
    assert not _krylov.same_support(a, np.array([0, 1, 0, 0], dtype=np.int8))
    assert not _krylov.same_support(a, a[:3].copy())
    assert _krylov.all_finite(np.array([1e308, -1e308, 0.0]))
    for bad in (np.nan, np.inf, -np.inf):
        assert not _krylov.all_finite(np.array([1.0, bad, 2.0]))
