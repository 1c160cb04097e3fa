"""Generators of test and benchmark QPs.

Every generator is deterministic given ``seed`` (a :class:`numpy.random.Generator` is created from
it), builds its matrices in sparse form only (no n x n dense array is ever formed) and returns a
:class:`sparseqp.problem.Problem` for

    min 1/2 x'Hx + g'x   s.t.   A x = b,   l <= C x <= u.

Feasible and bounded generators: :func:`random_qp`, :func:`equality_qp`, :func:`box_qp`,
:func:`mpc_qp` (returns an :class:`MPCProblem`), :func:`portfolio_qp`, :func:`lasso_qp`.
Pathological ones, for error and infeasibility tests: :func:`infeasible_qp`,
:func:`unbounded_qp`, :func:`nonconvex_qp`.

:data:`PROBLEM_CLASSES` maps the benchmark class names to ``function(size, seed) -> Problem`` where
``size`` is (about) the number of variables.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from .problem import Problem, make_problem

__all__ = [
    "CLASS_BANDWIDTH",
    "MPCProblem",
    "PROBLEM_CLASSES",
    "box_qp",
    "equality_qp",
    "infeasible_qp",
    "lasso_qp",
    "mpc_qp",
    "nonconvex_qp",
    "portfolio_qp",
    "random_qp",
    "unbounded_qp",
]

#: Default number of nonzeros per column of the factor M in H = M M' + delta I, and per row of the
#: random constraint matrices. Kept small: random sparsity patterns have almost no exploitable
#: structure, so the fill-in of the LDL' factor grows fast with the density.
_NNZ_PER_COL = 2.0


# --------------------------------------------------------------------------------------------
# sparse helpers
# --------------------------------------------------------------------------------------------
def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def _sprandn(m: int, n: int, density: float, rng: np.random.Generator,
             row_cover: bool = False, bandwidth: int | None = None) -> sp.csc_matrix:
    """Random m x n CSC matrix with about ``density * m * n`` standard normal entries.

    With ``row_cover`` every row gets at least one nonzero (no empty constraint rows). With a
    ``bandwidth`` w, the entry of row i lies in columns ``c_i - w .. c_i + w`` where
    ``c_i = i (n-1) / (m-1)`` follows the diagonal (a local pattern whose LDL' fill grows like
    ``n w`` instead of the near-quadratic fill of an unrestricted random pattern).
    """
    nnz = int(round(density * m * n))
    if m == 0 or n == 0:
        return sp.csc_matrix((m, n))
    rows = rng.integers(0, m, size=nnz)
    if row_cover:
        rows = np.concatenate([rows, np.arange(m)])
    if bandwidth is None:
        cols = rng.integers(0, n, size=rows.shape[0])
    else:
        w = _check_size("bandwidth", bandwidth)
        centers = np.round(rows * ((n - 1) / max(m - 1, 1))).astype(np.int64)
        cols = np.clip(centers + rng.integers(-w, w + 1, size=rows.shape[0]), 0, n - 1)
    data = rng.standard_normal(rows.shape[0])
    M = sp.coo_matrix((data, (rows, cols)), shape=(m, n)).tocsc()
    M.sum_duplicates()
    M.eliminate_zeros()
    return M


def _default_density(n: int, density: float | None) -> float:
    if density is not None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        return float(density)
    return min(1.0, _NNZ_PER_COL / max(n, 1))


def _psd_cost(n: int, density: float, rng: np.random.Generator, delta: float = 1e-2,
              bandwidth: int | None = None) -> sp.csc_matrix:
    """H = M M' + delta I with M sparse n x n (positive definite for delta > 0)."""
    M = _sprandn(n, n, density, rng, bandwidth=bandwidth)
    return (M @ M.T + delta * sp.identity(n, format="csc")).tocsc()


def _bounds_around(cx: np.ndarray, rng: np.random.Generator, frac_eq: float = 0.05,
                   frac_one_sided: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Bounds l <= cx <= u: random widths, some infinite sides, some l == u rows."""
    p = cx.shape[0]
    l = cx - rng.uniform(0.0, 1.0, p)
    u = cx + rng.uniform(0.0, 1.0, p)
    kind = rng.uniform(size=p)
    no_lower = kind < frac_one_sided / 2
    no_upper = (kind >= frac_one_sided / 2) & (kind < frac_one_sided)
    is_eq = (kind >= frac_one_sided) & (kind < frac_one_sided + frac_eq)
    l[no_lower] = -np.inf
    u[no_upper] = np.inf
    l[is_eq] = cx[is_eq]
    u[is_eq] = cx[is_eq]
    return l, u


def _check_size(name: str, value: int, minimum: int = 0) -> int:
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


# --------------------------------------------------------------------------------------------
# feasible, bounded problems
# --------------------------------------------------------------------------------------------
def random_qp(n: int, n_eq: int | None = None, n_in: int | None = None,
              density: float | None = None, seed=0, bandwidth: int | None = None) -> Problem:
    """Random strictly convex QP, feasible by construction.

    Parameters
    ----------
    n : int
        Number of variables.
    n_eq : int, optional
        Number of equality rows (default ``n // 4``).
    n_in : int, optional
        Number of inequality rows (default ``n // 2``).
    density : float, optional
        Density of the random factor M (H = M M' + 1e-2 I) and of A and C. Default: about
        ``2 / n`` (two nonzeros per column of M and per row of A and C, plus one extra per
        constraint row so that none is empty).
    seed : int or numpy.random.Generator
        Seed of the random generator.
    bandwidth : int, optional
        If given, every random entry of M, A and C in row i lies within ``bandwidth`` columns of
        the scaled diagonal ``i (n-1) / (rows-1)``: a local pattern whose LDL' fill-in grows
        linearly in n. None (default): unrestricted pattern, whose fill-in grows almost
        quadratically (n = 5000 already gives a factor with ~2e6 nonzeros).

    Returns
    -------
    Problem
        With ``b = A x_feas`` and bounds around ``C x_feas`` for a hidden random point x_feas.
        About 15% of the inequality rows have ``l = -inf``, 15% ``u = +inf`` and 5% ``l == u``.
    """
    n = _check_size("n", n, 1)
    n_eq = n // 4 if n_eq is None else _check_size("n_eq", n_eq)
    n_in = n // 2 if n_in is None else _check_size("n_in", n_in)
    density = _default_density(n, density)
    rng = _rng(seed)
    H = _psd_cost(n, density, rng, bandwidth=bandwidth)
    g = rng.standard_normal(n)
    A = _sprandn(n_eq, n, density, rng, row_cover=True, bandwidth=bandwidth)
    C = _sprandn(n_in, n, density, rng, row_cover=True, bandwidth=bandwidth)
    x_feas = rng.standard_normal(n)
    b = A @ x_feas
    l, u = _bounds_around(C @ x_feas, rng)
    return make_problem(H, g, A, b, C, l, u, name=f"random_n{n}_s{_seed_tag(seed)}")


def equality_qp(n: int, n_eq: int | None = None, seed=0, density: float | None = None,
                bandwidth: int | None = None) -> Problem:
    """Random strictly convex QP with equality constraints only.

    Parameters
    ----------
    n : int
        Number of variables.
    n_eq : int, optional
        Number of equality rows (default ``n // 2``).
    seed : int or numpy.random.Generator
    density, bandwidth : optional
        As in :func:`random_qp`.

    Returns
    -------
    Problem
        ``H = M M' + 1e-2 I``, ``b = A x_feas`` (consistent), no inequality rows.
    """
    n = _check_size("n", n, 1)
    n_eq = n // 2 if n_eq is None else _check_size("n_eq", n_eq)
    density = _default_density(n, density)
    rng = _rng(seed)
    H = _psd_cost(n, density, rng, bandwidth=bandwidth)
    g = rng.standard_normal(n)
    A = _sprandn(n_eq, n, density, rng, row_cover=True, bandwidth=bandwidth)
    b = A @ rng.standard_normal(n)
    return make_problem(H, g, A, b, name=f"equality_n{n}_s{_seed_tag(seed)}")


def box_qp(n: int, seed=0, density: float | None = None, bandwidth: int | None = None) -> Problem:
    """Random strictly convex QP with bounds on the variables only (C = I).

    Parameters
    ----------
    n : int
        Number of variables.
    seed : int or numpy.random.Generator
    density, bandwidth : optional
        As in :func:`random_qp`.

    Returns
    -------
    Problem
        ``H = M M' + 1e-2 I``, ``-1 <= x <= 1`` on most variables (10% have one infinite side),
        and ``g`` scaled so that a sizeable part of the bounds is active at the optimum.
    """
    n = _check_size("n", n, 1)
    density = _default_density(n, density)
    rng = _rng(seed)
    H = _psd_cost(n, density, rng, bandwidth=bandwidth)
    g = 2.0 * rng.standard_normal(n)
    l = -np.ones(n)
    u = np.ones(n)
    kind = rng.uniform(size=n)
    l[kind < 0.05] = -np.inf
    u[(kind >= 0.05) & (kind < 0.10)] = np.inf
    C = sp.identity(n, format="csc")
    return make_problem(H, g, C=C, l=l, u=u, name=f"box_n{n}_s{_seed_tag(seed)}")


@dataclass(frozen=True, eq=False)
class MPCProblem:
    """A linear MPC problem in the sparse (simultaneous) formulation, with its metadata.

    Variables, in this order: ``x_0, ..., x_N`` (each ``nx``) then ``u_0, ..., u_{N-1}`` (each
    ``nu``), N = ``horizon``. Equalities: ``x_0 = x0`` (rows ``x0_rows``, with ``+`` sign:
    ``problem.b[x0_rows] == x0``) and ``x_{k+1} - Ad x_k - Bd u_k = 0``. Inequalities:
    ``|x_k| <= x_bound`` for k >= 1 and ``|u_k| <= u_bound``. Cost
    ``sum_k 1/2 x_k'Q x_k + 1/2 u_k'R u_k + 1/2 x_N'QN x_N``.

    Attributes
    ----------
    problem : Problem
    Ad : ndarray, (nx, nx)
        Discrete-time state matrix.
    Bd : ndarray, (nx, nu)
        Discrete-time input matrix.
    Q, R, QN : ndarray
        Stage state, input and terminal weights (dense, small).
    horizon : int
    nx, nu : int
    x0 : ndarray, (nx,)
        Initial state.
    x0_rows : ndarray of int, (nx,)
        Rows of ``problem.b`` holding ``x0`` (sign +).
    u0_cols : ndarray of int, (nu,)
        Indices of the first control ``u_0`` in the variable vector.
    """

    problem: Problem
    Ad: np.ndarray
    Bd: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    QN: np.ndarray
    horizon: int
    nx: int
    nu: int
    x0: np.ndarray
    x0_rows: np.ndarray
    u0_cols: np.ndarray

    def with_x0(self, x0) -> Problem:
        """The same QP with the initial state replaced by ``x0`` (only ``b`` changes)."""
        x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
        if x0.shape[0] != self.nx:
            raise ValueError(f"x0 has length {x0.shape[0]}, expected {self.nx}")
        p = self.problem
        b = p.b.copy()
        b[self.x0_rows] = x0
        return Problem(H=p.H, g=p.g, A=p.A, b=b, C=p.C, l=p.l, u=p.u,
                       constant=p.constant, name=p.name)

    def states(self, z: np.ndarray) -> np.ndarray:
        """The states ``x_0..x_N`` of a solution vector, shape (horizon + 1, nx)."""
        return np.asarray(z)[: (self.horizon + 1) * self.nx].reshape(self.horizon + 1, self.nx)

    def inputs(self, z: np.ndarray) -> np.ndarray:
        """The inputs ``u_0..u_{N-1}`` of a solution vector, shape (horizon, nu)."""
        return np.asarray(z)[(self.horizon + 1) * self.nx:].reshape(self.horizon, self.nu)


def _oscillating_masses(nx: int, nu: int, ts: float) -> tuple[np.ndarray, np.ndarray]:
    """Chain of nx/2 unit masses, unit springs between neighbours and to two walls.

    Input j is a force on mass ``j % m``; inputs beyond the m-th are tensions between masses
    ``j % m`` and ``j % m + 1``. Exact zero-order-hold discretisation with sample time ``ts``.
    """
    if nx % 2:
        raise ValueError(f"oscillating-masses dynamics need an even nx, got {nx}")
    m = nx // 2
    K = 2.0 * np.eye(m) - np.eye(m, k=1) - np.eye(m, k=-1)
    F = np.zeros((m, nu))
    for j in range(nu):
        i = j % m
        F[i, j] = 1.0
        if j >= m:
            F[(i + 1) % m, j] = -1.0
    Ac = np.block([[np.zeros((m, m)), np.eye(m)], [-K, -0.02 * np.eye(m)]])
    Bc = np.vstack([np.zeros((m, nu)), F])
    return _zoh(Ac, Bc, ts)


def _zoh(Ac: np.ndarray, Bc: np.ndarray, ts: float) -> tuple[np.ndarray, np.ndarray]:
    nx, nu = Bc.shape
    M = np.zeros((nx + nu, nx + nu))
    M[:nx, :nx] = Ac
    M[:nx, nx:] = Bc
    E = sla.expm(M * ts)
    return E[:nx, :nx], E[:nx, nx:]


def _random_dynamics(nx: int, nu: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random Ad scaled to spectral radius 1 (marginally stable), small random Bd.

    Bd is Gaussian times 0.1, weak enough for the default input bound to be active.
    """
    Ad = rng.standard_normal((nx, nx))
    Ad /= max(np.max(np.abs(np.linalg.eigvals(Ad))), 1e-12)
    Bd = 0.1 * rng.standard_normal((nx, nu))
    return Ad, Bd


def _mpc_matrices(Ad, Bd, horizon):
    """Equality matrix of the dynamics (x0 row block first) for the sparse formulation."""
    nx, nu = Bd.shape
    N = horizon
    # x part: identity on every x_k, -Ad on x_k in the row block of x_{k+1}
    Ax = sp.kron(sp.identity(N + 1), sp.identity(nx)) + sp.kron(
        sp.eye(N + 1, k=-1), sp.csc_matrix(-Ad))
    Au = sp.vstack([sp.csc_matrix((nx, N * nu)),
                    sp.kron(sp.identity(N), sp.csc_matrix(-Bd))])
    return sp.hstack([Ax, Au]).tocsc()


def _as_bound(value, size: int, name: str) -> np.ndarray:
    v = np.broadcast_to(np.asarray(value, dtype=np.float64), (size,)).copy()
    if np.any(v <= 0):
        raise ValueError(f"{name} must be positive")
    return v


def mpc_qp(nx: int = 10, nu: int = 5, horizon: int = 100, seed=0, x0=None, u_bound=0.5,
           x_bound=4.0, dynamics: str = "oscillating-masses", ts: float = 0.5) -> MPCProblem:
    """Linear MPC (regulation to 0) with state and input bounds, sparse formulation.

    Parameters
    ----------
    nx, nu : int
        State and input dimensions (``nx`` even for the oscillating masses).
    horizon : int
        Number of steps N; the QP has ``(N+1) nx + N nu`` variables.
    seed : int or numpy.random.Generator
        Draws ``x0`` (when not given) and the random dynamics.
    x0 : array_like, (nx,), optional
        Initial state; default uniform in [-2, 2] (positions) and [-1, 1] (velocities) for the
        masses, uniform in [-1, 1] for random dynamics. With the default bounds the first inputs
        saturate at ``u_bound``.
    u_bound, x_bound : float or array_like
        Symmetric bounds ``|u_k| <= u_bound``, ``|x_k| <= x_bound`` (k >= 1; x_0 is fixed).
    dynamics : {"oscillating-masses", "random"}
        ``"oscillating-masses"``: nx/2 unit masses chained by unit springs (between walls), light
        damping, ZOH with sample time ``ts`` (stable, physical; Wang & Boyd's fast MPC example).
        ``"random"``: Gaussian Ad scaled to spectral radius 1, Gaussian Bd times 0.1.
    ts : float
        Sample time of the masses' discretisation.

    Returns
    -------
    MPCProblem
        Weights ``Q = I``, ``R = 0.1 I``, ``QN`` = solution of the discrete Riccati equation
        (falls back to ``Q`` if it fails). ``b[x0_rows] == x0``.
    """
    nx = _check_size("nx", nx, 1)
    nu = _check_size("nu", nu, 1)
    N = _check_size("horizon", horizon, 1)
    rng = _rng(seed)
    if dynamics == "oscillating-masses":
        Ad, Bd = _oscillating_masses(nx, nu, ts)
        scale = np.concatenate([2.0 * np.ones(nx // 2), np.ones(nx - nx // 2)])
    elif dynamics == "random":
        Ad, Bd = _random_dynamics(nx, nu, rng)
        scale = np.ones(nx)
    else:
        raise ValueError(f"dynamics must be 'oscillating-masses' or 'random', got {dynamics!r}")
    x0_draw = rng.uniform(-1.0, 1.0, nx) * scale
    x0 = x0_draw if x0 is None else np.asarray(x0, dtype=np.float64).reshape(-1)
    if x0.shape[0] != nx:
        raise ValueError(f"x0 has length {x0.shape[0]}, expected {nx}")
    Q, R = np.eye(nx), 0.1 * np.eye(nu)
    QN = _terminal_weight(Ad, Bd, Q, R)
    H = sp.block_diag([sp.kron(sp.identity(N), sp.csc_matrix(Q)), sp.csc_matrix(QN),
                       sp.kron(sp.identity(N), sp.csc_matrix(R))], format="csc")
    n = (N + 1) * nx + N * nu
    A = _mpc_matrices(Ad, Bd, N)
    b = np.zeros((N + 1) * nx)
    b[:nx] = x0
    xb = _as_bound(x_bound, nx, "x_bound")
    ub = _as_bound(u_bound, nu, "u_bound")
    C = sp.hstack([sp.csc_matrix((N * nx + N * nu, nx)),
                   sp.identity(N * nx + N * nu)]).tocsc()
    hi = np.concatenate([np.tile(xb, N), np.tile(ub, N)])
    problem = make_problem(H, np.zeros(n), A, b, C, -hi, hi,
                           name=f"mpc_nx{nx}_nu{nu}_N{N}_s{_seed_tag(seed)}")
    return MPCProblem(problem=problem, Ad=Ad, Bd=Bd, Q=Q, R=R, QN=QN, horizon=N, nx=nx, nu=nu,
                      x0=x0.copy(), x0_rows=np.arange(nx),
                      u0_cols=(N + 1) * nx + np.arange(nu))


def _terminal_weight(Ad, Bd, Q, R) -> np.ndarray:
    try:
        P = sla.solve_discrete_are(Ad, Bd, Q, R)
        P = 0.5 * (P + P.T)
        if np.all(np.isfinite(P)) and np.min(np.linalg.eigvalsh(P)) > 0:
            return P
    except (np.linalg.LinAlgError, ValueError):
        pass
    return Q.copy()


def portfolio_qp(n_assets: int, n_factors: int | None = None, seed=0, density: float = 0.5,
                 gamma: float = 1.0) -> Problem:
    """Factor-model portfolio optimisation (the OSQP benchmark's form).

    ``min x'Dx + y'y - mu'x / gamma  s.t.  y = F'x,  sum(x) = 1,  0 <= x <= 1``

    Parameters
    ----------
    n_assets : int
        Number of assets (x).
    n_factors : int, optional
        Number of factors (y); default ``max(1, n_assets // 100)``.
    seed : int or numpy.random.Generator
    density : float
        Density of the factor loading matrix F (n_assets x n_factors).
    gamma : float
        Risk aversion.

    Returns
    -------
    Problem
        Variables ``[x; y]``; ``H = blockdiag(2D, 2I)`` with D diagonal, uniform in
        [0, sqrt(n_factors)]; ``A = [F', -I; 1', 0]``, ``b = [0; 1]``; ``C = [I, 0]``.
    """
    n_assets = _check_size("n_assets", n_assets, 1)
    k = max(1, n_assets // 100) if n_factors is None else _check_size("n_factors", n_factors, 1)
    rng = _rng(seed)
    F = _sprandn(n_assets, k, density, rng)
    D = rng.uniform(0.0, np.sqrt(k), n_assets)
    mu = rng.standard_normal(n_assets)
    H = sp.block_diag([sp.diags(2.0 * D), 2.0 * sp.identity(k)], format="csc")
    g = np.concatenate([-mu / gamma, np.zeros(k)])
    A = sp.vstack([sp.hstack([F.T, -sp.identity(k)]),
                   sp.hstack([sp.csr_matrix(np.ones((1, n_assets))), sp.csr_matrix((1, k))])])
    b = np.concatenate([np.zeros(k), [1.0]])
    C = sp.hstack([sp.identity(n_assets), sp.csc_matrix((n_assets, k))])
    return make_problem(H, g, A, b, C, np.zeros(n_assets), np.ones(n_assets),
                        name=f"portfolio_n{n_assets}_k{k}_s{_seed_tag(seed)}")


def lasso_qp(n_features: int, n_samples: int | None = None, seed=0,
             density: float = 0.15) -> Problem:
    """Lasso regression as a QP (the OSQP benchmark's form).

    ``min 1/2 y'y + lam * sum(t)  s.t.  y = Ad x - bd,  -t <= x <= t``

    Parameters
    ----------
    n_features : int
        Number of features (x, t).
    n_samples : int, optional
        Number of samples (y); default ``100 * n_features``.
    seed : int or numpy.random.Generator
    density : float
        Density of the data matrix Ad (n_samples x n_features).

    Returns
    -------
    Problem
        Variables ``[x; y; t]``; ``A = [Ad, -I, 0]``, ``b = bd``; the two-sided constraint on x is
        written as C rows ``x - t <= 0`` and ``x + t >= 0``. The data come from a sparse ground
        truth (half the features zero) plus noise; ``lam = ||Ad' bd||_inf / 5``.
    """
    nf = _check_size("n_features", n_features, 1)
    m = 100 * nf if n_samples is None else _check_size("n_samples", n_samples, 1)
    rng = _rng(seed)
    Ad = _sprandn(m, nf, density, rng, row_cover=True)
    x_true = rng.standard_normal(nf) / np.sqrt(nf)
    x_true[rng.uniform(size=nf) < 0.5] = 0.0
    bd = Ad @ x_true + rng.standard_normal(m)
    lam = float(np.max(np.abs(Ad.T @ bd))) / 5.0
    I_f = sp.identity(nf, format="csc")
    H = sp.block_diag([sp.csc_matrix((nf, nf)), sp.identity(m), sp.csc_matrix((nf, nf))],
                      format="csc")
    g = np.concatenate([np.zeros(nf + m), lam * np.ones(nf)])
    A = sp.hstack([Ad, -sp.identity(m), sp.csc_matrix((m, nf))])
    Z = sp.csc_matrix((nf, m))
    C = sp.vstack([sp.hstack([I_f, Z, -I_f]), sp.hstack([I_f, Z, I_f])])
    l = np.concatenate([np.full(nf, -np.inf), np.zeros(nf)])
    u = np.concatenate([np.zeros(nf), np.full(nf, np.inf)])
    return make_problem(H, g, A, bd, C, l, u, name=f"lasso_n{nf}_m{m}_s{_seed_tag(seed)}")


# --------------------------------------------------------------------------------------------
# pathological problems
# --------------------------------------------------------------------------------------------
def infeasible_qp(n: int = 20, seed=0, kind: str = "eq") -> Problem:
    """Strictly convex QP with inconsistent constraints (primal infeasible).

    The problem is a feasible :func:`random_qp` (H positive definite, so the closest-feasible QP
    has a unique solution) plus two contradictory rows on the combination ``x_i + x_j`` of two
    random distinct variables:

    - ``kind="eq"``: equalities ``x_i + x_j = 1`` and ``x_i + x_j = 2`` (the last two rows of A);
    - ``kind="ineq"``: inequalities ``x_i + x_j >= 1`` and ``x_i + x_j <= 0`` (last two rows of
      C, each with l <= u individually);
    - ``kind="mixed"``: equality ``x_i + x_j = 2`` (last row of A) against the inequality
      ``-1 <= x_i + x_j <= 1`` (last row of C).

    In each case the two rows are 1 apart, so the smallest l2 shift of their right-hand sides
    that makes them consistent moves each by 1/2 (norm ``1/sqrt(2)``), unless the other rows
    happen to constrain ``x_i + x_j`` as well.

    Parameters
    ----------
    n : int
        Number of variables (>= 2).
    seed : int or numpy.random.Generator
    kind : {"eq", "ineq", "mixed"}
    """
    n = _check_size("n", n, 2)
    if kind not in ("eq", "ineq", "mixed"):
        raise ValueError(f"kind must be 'eq', 'ineq' or 'mixed', got {kind!r}")
    rng = _rng(seed)
    base = random_qp(n, n_eq=max(1, n // 5), n_in=max(1, n // 3), seed=rng)
    i, j = rng.choice(n, size=2, replace=False)
    row = sp.csc_matrix((np.ones(2), (np.zeros(2, dtype=int), np.array([i, j]))), shape=(1, n))
    A, b, C, l, u = base.A, base.b, base.C, base.l, base.u
    if kind == "eq":
        A = sp.vstack([A, row, row]).tocsc()
        b = np.concatenate([b, [1.0, 2.0]])
    elif kind == "ineq":
        C = sp.vstack([C, row, row]).tocsc()
        l = np.concatenate([l, [1.0, -np.inf]])
        u = np.concatenate([u, [np.inf, 0.0]])
    else:
        A = sp.vstack([A, row]).tocsc()
        b = np.concatenate([b, [2.0]])
        C = sp.vstack([C, row]).tocsc()
        l = np.concatenate([l, [-1.0]])
        u = np.concatenate([u, [1.0]])
    return make_problem(base.H, base.g, A, b, C, l, u,
                        name=f"infeasible_{kind}_n{n}_s{_seed_tag(seed)}")


def unbounded_qp(n: int = 20, seed=0) -> Problem:
    """Convex QP that is unbounded below (dual infeasible).

    A feasible :func:`random_qp` on ``n - 1`` variables plus one extra variable ``x_k`` (at a
    random position k) with zero curvature (row and column k of H are zero), absent from A,
    present in C only through the row ``x_k >= 0`` (last row, which does not limit increasing
    x_k), and with ``g_k = -1``: the objective decreases without bound along ``e_k``, which is
    the dual-infeasibility certificate (``H e_k = 0``, ``A e_k = 0``, ``C e_k`` in the recession
    cone of the bounds, ``g'e_k < 0``).

    Parameters
    ----------
    n : int
        Number of variables (>= 2).
    seed : int or numpy.random.Generator
    """
    n = _check_size("n", n, 2)
    rng = _rng(seed)
    base = random_qp(n - 1, n_eq=max(1, n // 5), n_in=max(1, n // 3), seed=rng)
    k = int(rng.integers(n))
    H = _insert_zero_column(_insert_zero_column(base.H, k).T.tocsc(), k)
    g = np.insert(base.g, k, -1.0)
    A = _insert_zero_column(base.A, k)
    ek = sp.csc_matrix(([1.0], ([0], [k])), shape=(1, n))
    C = sp.vstack([_insert_zero_column(base.C, k), ek]).tocsc()
    l = np.concatenate([base.l, [0.0]])
    u = np.concatenate([base.u, [np.inf]])
    return make_problem(H, g, A, base.b, C, l, u, name=f"unbounded_n{n}_s{_seed_tag(seed)}")


def _insert_zero_column(M, k: int) -> sp.csc_matrix:
    """M with a zero column inserted at position k."""
    m, n = M.shape
    M = sp.hstack([M, sp.csc_matrix((m, 1))]).tocsc()
    order = np.concatenate([np.arange(k), [n], np.arange(k, n)])
    return M[:, order].tocsc()


def nonconvex_qp(n: int = 20, seed=0) -> Problem:
    """Nonconvex QP: H has exactly one negative eigenvalue (-1), with box bounds ``|x| <= 1``.

    ``H = blockdiag(-1, M M' + 1e-2 I)`` up to a random symmetric permutation, so the problem
    is bounded (box) but not convex; meant for tests of the non-convexity error.

    Parameters
    ----------
    n : int
        Number of variables (>= 2).
    seed : int or numpy.random.Generator
    """
    n = _check_size("n", n, 2)
    rng = _rng(seed)
    Hr = _psd_cost(n - 1, _default_density(n - 1, None), rng)
    H = sp.block_diag([sp.csc_matrix([[-1.0]]), Hr], format="csc")
    perm = rng.permutation(n)
    H = H[perm][:, perm].tocsc()
    g = rng.standard_normal(n)
    C = sp.identity(n, format="csc")
    return make_problem(H, g, C=C, l=-np.ones(n), u=np.ones(n),
                        name=f"nonconvex_n{n}_s{_seed_tag(seed)}")


def _seed_tag(seed) -> str:
    return str(seed) if isinstance(seed, (int, np.integer)) else "rng"


# --------------------------------------------------------------------------------------------
# benchmark classes
# --------------------------------------------------------------------------------------------
def _mpc_class(size: int, seed=0) -> Problem:
    nx, nu = 10, 5
    horizon = max(2, int(round((size - nx) / (nx + nu))))
    return mpc_qp(nx, nu, horizon, seed=seed).problem


def _portfolio_class(size: int, seed=0) -> Problem:
    k = max(1, size // 101)
    return portfolio_qp(max(1, size - k), k, seed=seed)


def _lasso_class(size: int, seed=0) -> Problem:
    nf = max(1, int(round(size / 102)))
    return lasso_qp(nf, 100 * nf, seed=seed)


#: Half-width of the band of the random patterns in the benchmark classes (see random_qp).
CLASS_BANDWIDTH = 100

#: Benchmark classes: name -> ``function(size, seed) -> Problem`` with about ``size`` variables.
#: The random classes use a banded random pattern (``bandwidth=CLASS_BANDWIDTH``) so that the
#: factorization cost grows linearly with ``size``; call :func:`random_qp` directly for an
#: unrestricted pattern.
PROBLEM_CLASSES = {
    "random": lambda size, seed=0: random_qp(size, seed=seed, bandwidth=CLASS_BANDWIDTH),
    "equality": lambda size, seed=0: equality_qp(size, seed=seed, bandwidth=CLASS_BANDWIDTH),
    "box": lambda size, seed=0: box_qp(size, seed=seed, bandwidth=CLASS_BANDWIDTH),
    "mpc": _mpc_class,
    "portfolio": _portfolio_class,
    "lasso": _lasso_class,
}
