"""Scaled problem data and the regularized KKT matrix on one fixed sparsity pattern.

The KKT matrix (upper triangle, CSC) of the inner Newton system is

    K = [ H + rho I    A'           C'          ]
        [ A           -diag(mu_eq)  0           ]
        [ C            0           -diag(mu_in) ]

where the C rows outside the active set hold explicit zeros. One pattern holds every row of C,
so the AMD ordering and the symbolic analysis are done once per problem; an active-set or
penalty change is a numeric refactorization (``qdldl.Solver.update``).

Column layout (all columns end with their diagonal entry):
  column j < n        : strict upper entries of H[:, j], then the diagonal,
  column n + i        : A[i, :] (row indices < n), then the diagonal,
  column n + m + i    : C[i, :], then the diagonal.
"""
from __future__ import annotations


import numpy as np
import qdldl
import scipy.sparse as sp

from . import _kernels
from .problem import Problem

__all__ = ["ScaledProblem", "KKTSystem"]


def _idx(a):
    return np.ascontiguousarray(a, dtype=np.int64)


class ScaledProblem:
    """Ruiz-equilibrated copy of a :class:`Problem`.

    Scaled data: H~ = c D H D, g~ = c D g, A~ = E A D, b~ = E b, C~ = F C D, l~ = F l, u~ = F u.
    Unscaling: x = D x~, y = E y~ / c, z = F z~ / c.
    """

    def __init__(self, problem: Problem, ruiz_iter: int):
        self.n, self.m, self.p = problem.n, problem.n_eq, problem.n_in
        H = problem.H.copy()
        A = problem.A.copy()
        C = problem.C.copy()
        D, E, F = np.ones(self.n), np.ones(self.m), np.ones(self.p)
        if ruiz_iter > 0:
            _kernels.ruiz_equilibrate(_idx(H.indptr), _idx(H.indices), H.data,
                                      _idx(A.indptr), _idx(A.indices), A.data,
                                      _idx(C.indptr), _idx(C.indices), C.data,
                                      D, E, F, ruiz_iter)
        g = D * problem.g
        c = self._cost_scale(H, g) if ruiz_iter > 0 else 1.0
        H.data *= c
        self.c, self.D, self.E, self.F = c, D, E, F
        self.H = H
        self.g = c * g
        self.A = A.tocsr()
        self.At = A.T  # the CSC of A is the CSR of A'
        self.C = C.tocsr()
        self.Ct = C.T
        self.b = E * problem.b
        self.l = F * problem.l
        self.u = F * problem.u
        # shared by copies with other b, l, u: the KKT values only depend on H, A, C
        self.values_key = object()

    def with_rhs(self, problem: Problem):
        """Copy for new b, l, u of the same matrices and g: the scaling (which depends only on
        H, A, C, g) and the KKT values are shared, so a factorization stays valid."""
        out = object.__new__(ScaledProblem)
        out.__dict__.update(self.__dict__)
        out.b = self.E * problem.b
        out.l = self.F * problem.l
        out.u = self.F * problem.u
        return out

    def shifted(self, s_eq, s_in):
        """Copy with A x = b + s_eq and bounds moved by s_in (scaled shifts; s_in_i > 0 moves
        the upper bound up, s_in_i < 0 the lower bound down). Matrices are shared."""
        out = object.__new__(ScaledProblem)
        out.__dict__.update(self.__dict__)
        out.b = self.b + s_eq
        out.l = self.l + np.minimum(s_in, 0.0)
        out.u = self.u + np.maximum(s_in, 0.0)
        return out

    @staticmethod
    def _cost_scale(H, g):
        colmax = np.zeros(H.shape[0])
        if H.nnz:
            colmax = np.maximum.reduceat(np.abs(H.data), H.indptr[:-1][np.diff(H.indptr) > 0])
            mean_col = float(np.sum(colmax)) / max(H.shape[0], 1)
        else:
            mean_col = 0.0
        gmax = float(np.max(np.abs(g))) if g.size else 0.0
        s = max(mean_col, gmax)
        if s < 1e-12:
            return 1.0
        return float(np.clip(1.0 / s, 1e-4, 1e4))

    # unscaling helpers ---------------------------------------------------------------------
    def unscale_x(self, xs):
        return self.D * xs

    def unscale_y(self, ys):
        return self.E * ys / self.c

    def unscale_z(self, zs):
        return self.F * zs / self.c

    def scale_x(self, x):
        return x / self.D

    def scale_y(self, y):
        return y * self.c / self.E

    def scale_z(self, z):
        return z * self.c / self.F


class KKTSystem:
    """The fixed-pattern regularized KKT matrix, its QDLDL factorization and solves."""

    def __init__(self, sc: ScaledProblem):
        self.n, self.m, self.p = sc.n, sc.m, sc.p
        self._build_pattern(sc)
        self.solver = None
        self.n_factorizations = 0
        self.n_symbolic = 0
        self.active = np.zeros(self.p, dtype=np.int8)
        self.rho = None
        self.mu_eq = None
        self.mu_in = None
        self.fact_id = 0
        self.solves_per_factorization = 0.0
        self._values_of = None
        self.set_values(sc)

    # pattern -------------------------------------------------------------------------------
    def _build_pattern(self, sc: ScaledProblem):
        n, m, p = self.n, self.m, self.p
        H = sc.H
        cols = np.repeat(np.arange(n), np.diff(H.indptr))
        rows = H.indices
        strict = rows < cols
        self._h_strict = np.flatnonzero(strict)
        self._h_diag = np.flatnonzero(rows == cols)
        self._h_diag_col = cols[self._h_diag]
        s_cols = cols[strict]
        s_count = np.bincount(s_cols, minlength=n)
        s_ptr = np.concatenate(([0], np.cumsum(s_count)))
        nnz_s = int(s_ptr[-1])
        self._hs_pos = np.arange(nnz_s) + s_cols
        self._hd_pos = s_ptr[1:] + np.arange(n)
        base_a = nnz_s + n
        A, C = sc.A, sc.C
        a_rows = np.repeat(np.arange(m), np.diff(A.indptr))
        self._a_pos = base_a + np.arange(A.nnz) + a_rows
        self._ad_pos = base_a + A.indptr[1:] + np.arange(m)
        base_c = base_a + A.nnz + m
        self._base_c = base_c
        self._c_rowptr = _idx(C.indptr)
        c_rows = np.repeat(np.arange(p), np.diff(C.indptr))
        c_pos = base_c + np.arange(C.nnz) + c_rows
        self._cd_pos = base_c + C.indptr[1:] + np.arange(p)
        total = base_c + C.nnz + p
        indptr = np.concatenate((s_ptr + np.arange(n + 1),
                                 base_a + A.indptr[1:] + np.arange(1, m + 1),
                                 base_c + C.indptr[1:] + np.arange(1, p + 1)))
        indices = np.empty(total, dtype=np.int64)
        indices[self._hs_pos] = rows[strict]
        indices[self._hd_pos] = np.arange(n)
        indices[self._a_pos] = A.indices
        indices[self._ad_pos] = n + np.arange(m)
        indices[c_pos] = C.indices
        indices[self._cd_pos] = n + m + np.arange(p)
        N = n + m + p
        self.N = N
        self.data = np.zeros(total)
        self.K = sp.csc_matrix((self.data, indices, indptr.astype(np.int64)), shape=(N, N))
        # scipy may convert the index arrays but keeps our data buffer: write through K.data.
        self.data = self.K.data
        ip, ix = self.K.indptr, self.K.indices
        if ip.dtype != ix.dtype:
            ip, ix = ip.astype(np.int64), ix.astype(np.int64)
        self._K_parts = (np.ascontiguousarray(ip), np.ascontiguousarray(ix))

    def set_values(self, sc: ScaledProblem):
        """Load the (scaled) H, A, C values; invalidates the factorization."""
        self._hdiag_vals = np.zeros(self.n)
        self._hdiag_vals[self._h_diag_col] = sc.H.data[self._h_diag]
        self.data[self._hs_pos] = sc.H.data[self._h_strict]
        self.data[self._a_pos] = sc.A.data
        self._c_data = np.ascontiguousarray(sc.C.data)
        self.rho = None  # force a refactorization
        self._values_of = sc

    def ensure_values(self, sc: ScaledProblem):
        """Load ``sc``'s values unless they are the ones loaded (identity check)."""
        if self._values_of is None or self._values_of.values_key is not sc.values_key:
            self.set_values(sc)

    # factorization -------------------------------------------------------------------------
    def matches(self, rho, mu_eq, mu_in, active) -> bool:
        return (self.solver is not None and self.rho is not None and self.rho == rho
                and self.mu_eq is mu_eq and self.mu_in is mu_in
                and np.array_equal(self.active != 0, active != 0))

    def factorize(self, rho: float, mu_eq: np.ndarray, mu_in: np.ndarray, active: np.ndarray):
        """Numeric factorization for these penalties and active set (symbolic once).

        ``mu_eq`` / ``mu_in`` are per-row arrays; callers must pass a new array object whenever
        the values change (identity is how :meth:`matches` detects a change cheaply).
        """
        self.data[self._hd_pos] = self._hdiag_vals + rho
        self.data[self._ad_pos] = -mu_eq
        _kernels.fill_c_block(self.data, self._c_rowptr, self._c_data, self._base_c,
                              active, mu_in)
        if self.solver is None:
            self.solver = qdldl.Solver(self.K, upper=True)
            self.n_symbolic += 1
        else:
            self.solver.update(self.K, upper=True)
        self.n_factorizations += 1
        self.fact_id += 1
        self.rho, self.mu_eq, self.mu_in = rho, mu_eq, mu_in
        self.active = active.copy()

    def inertia_ok(self) -> bool:
        """True when the factorization has exactly m + p negative pivots (quasi-definite).

        Also records ``solves_per_factorization``: the flop ratio of one numeric factorization
        (sum of squared column counts of L) to one solve (4 nnz(L) + N), a deterministic cost
        model for choosing between a refactorization and PCG steps on the stale factors."""
        L, d, _ = self.solver.factors()
        counts = np.diff(L.indptr).astype(np.float64)
        fact_flops = float(np.sum(counts * counts)) + L.nnz
        solve_flops = 4.0 * L.nnz + self.N
        self.solves_per_factorization = fact_flops / max(solve_flops, 1.0)
        return int(np.count_nonzero(d < 0)) == self.m + self.p

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self.solver.solve(rhs)

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """K v for the matrix of the current factorization (full symmetric K)."""
        out = np.zeros(self.N)
        _kernels.sym_upper_matvec_add(self._K_parts[0], self._K_parts[1], self.data, v, out)
        return out

    def solve_x(self, r: np.ndarray) -> np.ndarray:
        """M_f^{-1} r where M_f = H + rho I + A'M_eq^{-1}A + C_J'M_in^{-1}C_J is the Schur
        complement of the factorized K (rhs [r; 0; 0])."""
        rhs = np.zeros(self.N)
        rhs[: self.n] = r
        return self.solve(rhs)[: self.n]
