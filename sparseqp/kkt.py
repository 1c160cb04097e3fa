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

import functools

import numpy as np
import qdldl
import scipy.linalg
import scipy.sparse as sp
from scipy.linalg.lapack import dgetrs as _getrs

from . import _kernels, _krylov
from .problem import Problem

__all__ = ["ScaledProblem", "KKTSystem"]

# Derivative solves use a copy of the factors and the Cython LDL' kernel (_krylov.ldl_solve,
# ~30% faster than qdldl's solve on banded KKT matrices), unless the copy of L would take more
# than this many bytes (it doubles the factorization's memory until the next factorization).
# The copy (qdldl's factors()) costs ~2 solves right after a forward solve (~285 us at
# N = 8,540): the ~7 solves of one MPC backward gain a little more (1.63 -> 1.48 ms at n = 3,205,
# 4.18 -> 3.63 ms at n = 10,000), later derivative calls on the factorization all of it. Every
# derivative solve goes through it, also the first: repeated backward passes give bitwise the
# same gradients (torch's gradcheck tests reentrancy with zero tolerance).
_FACTOR_COPY_MAX_BYTES = 256 << 20
# switched_solve's Woodbury columns (one solve each, kept for the life of the factorization)
# may number at most this many times the solves one factorization costs (flop counts, see
# inertia_ok); beyond it a refactorization is cheaper. Warm `update` re-solves (g moved 1e-3
# relative; the polish's J differs from the factorization's set in 5-34 rows) in units of one
# factorization's time, refactorizing -> switched: random 5k/20k 1.84/1.68 -> 0.70/1.38,
# portfolio 20k 1.17 -> 0.10, lasso 20k 1.80 -> 0.56.
SWITCH_BUDGET = 2.0


def _idx(a):
    return np.ascontiguousarray(a, dtype=np.int64)


def capacitance_lu(M):
    """Pivoted LU of a small dense Woodbury capacitance matrix, or None when it is not
    finite or exactly singular."""
    try:
        lu = scipy.linalg.lu_factor(M, check_finite=True)
    except (ValueError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(lu[0])) or np.min(np.abs(np.diag(lu[0])), initial=1.0) == 0.0:
        return None
    return lu


def capacitance_solve(lu, b):
    """M^-1 b (new array) from :func:`capacitance_lu`'s factors: LAPACK's getrs directly, as
    ``scipy.linalg.lu_solve`` does after ~25 us of argument checks per call (a warm re-solve
    at mpc n = 1,000 makes two such calls in 0.4 ms)."""
    x, info = _getrs(lu[0], lu[1], b)
    if info != 0:
        raise ValueError(f"getrs: illegal argument {-info}")
    return x


def row_switch_product(CD, s, pos, n, N):
    """u -> sum_i s_i (e_i c_i' + c_i e_i') u (a new (N,) array): the change of the KKT
    matrix when the rows D enter (s_i = +1) or leave (s_i = -1) its active set; ``CD`` holds
    their rows of C (scaled, CSR, x-part of length n), ``pos`` their multipliers' positions
    (all >= n). One kernel call (``_krylov.switch_product``) per product."""
    CDt = CD.T.tocsr()
    (cd_ptr, cd_ind), (cdt_ptr, cdt_ind) = _same_index_parts(CD, CDt)
    cd_val, cdt_val = _f64(CD.data), _f64(CDt.data)
    s, pos = _f64(s), _idx(pos)
    product_kernel = _krylov.switch_product

    def product(u):
        out = np.empty(N)
        product_kernel(_f64(u), pos, s, cd_ptr, cd_ind, cd_val, cdt_ptr, cdt_ind, cdt_val, out)
        return out
    return product


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def _same_index_parts(*mats):
    """:func:`index_parts` of each matrix, all of one index type (int64 unless they agree)."""
    parts = [index_parts(M) for M in mats]
    if len({ip.dtype for ip, _ in parts}) > 1:
        parts = [(_idx(ip), _idx(ix)) for ip, ix in parts]
    return parts


def index_parts(M):
    """(indptr, indices) of a CSC/CSR matrix for the Cython kernels (one index type for both):
    as stored when both are int32 or both int64 (scipy's usual case), int64 copies otherwise."""
    ip, ix = M.indptr, M.indices
    if ip.dtype == ix.dtype and ip.dtype in (np.int32, np.int64):
        return np.ascontiguousarray(ip), np.ascontiguousarray(ix)
    return _idx(ip), _idx(ix)


class ScaledProblem:
    """Ruiz-equilibrated copy of a :class:`Problem`.

    Scaled data: H~ = c D H D, g~ = c D g, A~ = E A D, b~ = E b, C~ = F C D, l~ = F l, u~ = F u.
    Unscaling: x = D x~, y = E y~ / c, z = F z~ / c.
    """

    def __init__(self, problem: Problem, ruiz_iter: int):
        self.n, self.m, self.p = n, m, p = problem.n, problem.n_eq, problem.n_in
        # Raw arrays, not scipy matrices: building the half dozen scipy objects (copies, tocsr,
        # transposes) cost more than the rest of the setup at small n. The scipy views below are
        # made on first use, over these same arrays.
        H, A, C = problem.H, problem.A, problem.C
        h = (_idx(H.indptr), _idx(H.indices), np.array(H.data, dtype=np.float64))
        a = (_idx(A.indptr), _idx(A.indices), np.array(A.data, dtype=np.float64))
        c_ = (_idx(C.indptr), _idx(C.indices), np.array(C.data, dtype=np.float64))
        D, E, F = np.ones(n), np.ones(m), np.ones(p)
        if ruiz_iter > 0:
            _kernels.ruiz_equilibrate(*h, *a, *c_, D, E, F, ruiz_iter)
        g = D * problem.g
        self._ruiz = ruiz_iter > 0
        # mean column max of D H D (before the cost scale): with_vectors reuses it
        self._mean_col = self._mean_col_max(h[0], h[2], n)
        c = self._cost_scale(self._mean_col, g) if self._ruiz else 1.0
        hx = h[2]
        hx *= c
        self.c, self.D, self.E, self.F = c, D, E, F
        self.g = c * g
        #: (indptr, indices, data) of H (CSC), A and C (CSC = the CSR of the transpose, and CSR)
        self.h_csc, self.a_csc, self.c_csc = h, a, c_
        self.a_csr = _kernels.csc_to_csr(*a, m)
        self.c_csr = _kernels.csc_to_csr(*c_, p)
        # shared by the copies below: the matrices are
        self.ops = _kernels.SparseOps(n, m, p, h, self.a_csr, a, self.c_csr, c_)
        self.b = E * problem.b
        self.l = F * problem.l
        self.u = F * problem.u
        # shared by copies with other b, l, u: the KKT values only depend on H, A, C
        self.values_key = object()

    @functools.cached_property
    def curved_share(self) -> float:
        """Share of the coordinates along which H has curvature (a positive diagonal entry;
        1.0 for n = 0)."""
        ptr, idx, val = self.h_csc
        cols = np.repeat(np.arange(self.n), np.diff(ptr))
        on_diag = idx == cols
        return int(np.count_nonzero(val[on_diag] > 0)) / max(self.n, 1)

    @property
    def curved(self) -> bool:
        """Whether every diagonal entry of H is positive (curvature along every coordinate)."""
        return self.curved_share == 1.0

    # scipy views of the scaled matrices (same arrays), for the less frequent paths
    @functools.cached_property
    def H(self):
        return sp.csc_matrix(self.h_csc[::-1], shape=(self.n, self.n))

    @functools.cached_property
    def A(self):
        return sp.csr_matrix(self.a_csr[::-1], shape=(self.m, self.n))

    @functools.cached_property
    def At(self):
        """A' as CSR: the arrays of A's CSC."""
        return sp.csr_matrix(self.a_csc[::-1], shape=(self.n, self.m))

    @functools.cached_property
    def C(self):
        return sp.csr_matrix(self.c_csr[::-1], shape=(self.p, self.n))

    @functools.cached_property
    def Ct(self):
        """C' as CSR: the arrays of C's CSC."""
        return sp.csr_matrix(self.c_csc[::-1], shape=(self.n, self.p))

    def constraints_t(self, v_eq, v_in):
        """A' v_eq + C' v_in of the scaled matrices (a new (n,) array); v_eq (m,), v_in (p,)."""
        v = np.zeros(self.n)
        if self.m:
            v += self.At @ v_eq
        if self.p:
            v += self.Ct @ v_in
        return v

    def with_rhs(self, problem: Problem):
        """Copy for new b, l, u of the same matrices and g: the scaling (which depends only on
        H, A, C, g) and the KKT values are shared, so a factorization stays valid."""
        out = object.__new__(ScaledProblem)
        out.__dict__.update(self.__dict__)
        out.b = self.E * problem.b
        out.l = self.F * problem.l
        out.u = self.F * problem.u
        return out

    def with_vectors(self, problem: Problem, max_ratio: float = 10.0):
        """Copy for new g, b, l, u of the same matrices, or None.

        D, E, F depend only on H, A, C; the cost scale c also depends on |g|. It is kept (and
        with it the KKT values, so a factorization stays valid) while the c that the new g
        would get is within ``max_ratio`` of it: a g that moved by orders of magnitude gets
        a new scaling (None; the caller rescales)."""
        g = self.D * problem.g
        if self._ruiz:
            c_new = self._cost_scale(self._mean_col, g)
            if not (self.c / max_ratio <= c_new <= self.c * max_ratio):
                return None
        out = self.with_rhs(problem)
        out.g = self.c * g
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
    def _mean_col_max(indptr, data, n):
        """Mean over the n columns of the largest |entry| (H's CSC indptr and data)."""
        if not data.size:
            return 0.0
        colmax = np.maximum.reduceat(np.abs(data), indptr[:-1][np.diff(indptr) > 0])
        return float(np.sum(colmax)) / max(n, 1)

    @staticmethod
    def _cost_scale(mean_col, g):
        """From :meth:`_mean_col_max` of the equilibrated H and g."""
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
        self.nnz_L = None
        # (fact_id, solve function) of the copied factors, see many_solves
        self._copied = None
        # (fact_id, {row: column}) of switched_solve's Woodbury columns
        self._switch_cols = (None, {})
        # (fact_id, C, rows' bytes, result) of the last switched_solve: a warm start's polish
        # and the derivatives usually ask for the set the last polish ended on
        self._switch_last = (None, None, None, None)
        self.n_column_solves = 0        # solves of switched_solve's columns
        self._factors_of = None         # (fact_id, qdldl's factors()) read by inertia_ok
        self.fact_flops = self.solve_flops = 0.0
        self._values_of = None
        self.set_values(sc)

    # pattern -------------------------------------------------------------------------------
    def _build_pattern(self, sc: ScaledProblem):
        n, m, p = self.n, self.m, self.p
        pat = _kernels.kkt_pattern(*sc.h_csc[:2], *sc.a_csr[:2], *sc.c_csr[:2])
        self._h_strict, self._hs_pos = pat["h_strict"], pat["hs_pos"]
        self._h_diag, self._h_diag_col = pat["h_diag"], pat["h_diag_col"]
        self._hd_pos, self._ad_pos, self._cd_pos = pat["hd_pos"], pat["ad_pos"], pat["cd_pos"]
        self._a_pos = pat["a_pos"]
        self._base_c = pat["base_c"]
        self._c_rowptr = sc.c_csr[0]
        N = n + m + p
        self.N = N
        self._rhs_x = np.zeros(N)
        self.data = np.zeros(pat["indices"].shape[0])
        self.K = sp.csc_matrix((self.data, pat["indices"], pat["indptr"]), shape=(N, N))
        # scipy may convert the index arrays but keeps our data buffer: write through K.data.
        self.data = self.K.data
        self._K_parts = index_parts(self.K)

    def set_values(self, sc: ScaledProblem):
        """Load the (scaled) H, A, C values; invalidates the factorization."""
        h_data, a_data, c_data = sc.h_csc[2], sc.a_csr[2], sc.c_csr[2]
        self._hdiag_vals = np.zeros(self.n)
        self._hdiag_vals[self._h_diag_col] = h_data[self._h_diag]
        self.data[self._hs_pos] = h_data[self._h_strict]
        self.data[self._a_pos] = a_data
        self._c_data = c_data
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

    def holds(self, fact_id, sc: ScaledProblem, active: np.ndarray) -> bool:
        """True when the stored factorization is ``fact_id`` (None: never), of ``sc``'s values
        with none loaded since (rho is None after :meth:`set_values`, e.g. a solve that
        converged at its warm start after ``Solver.update`` without factorizing), for this
        active set."""
        return self.holds_values(fact_id, sc) and _krylov.same_support(self.active, active)

    def holds_values(self, fact_id, sc: ScaledProblem) -> bool:
        """:meth:`holds` for any active set (see :meth:`switched_solve`)."""
        return (fact_id is not None and self.fact_id == fact_id and self.rho is not None
                and self._values_of is not None and self._values_of.values_key is sc.values_key)

    def factorize(self, rho: float, mu_eq: np.ndarray, mu_in: np.ndarray, active: np.ndarray):
        """Numeric factorization for these penalties and active set (symbolic once).

        ``mu_eq`` / ``mu_in`` are per-row arrays; callers must pass a new array object whenever
        the values change (identity is how :meth:`matches` detects a change cheaply).
        """
        _kernels.fill_kkt_diagonals(self.data, self._hd_pos, self._hdiag_vals, rho, self._ad_pos,
                                    mu_eq)
        _kernels.fill_c_block(self.data, self._c_rowptr, self._c_data, self._base_c,
                              active, mu_in)
        if self.solver is None:
            self.solver = qdldl.Solver(self.K, upper=True)
            self.n_symbolic += 1
        else:
            self.solver.update(self.K, upper=True)
        self.n_factorizations += 1
        self.fact_id += 1
        self._copied = None     # the factors copied for many_solves are stale now
        self.rho, self.mu_eq, self.mu_in = rho, mu_eq, mu_in
        self.active = active.copy()

    def inertia_ok(self) -> bool:
        """True when the factorization has exactly m + p negative pivots (quasi-definite).

        Also records the flops of one numeric factorization (sum of squared column counts of L)
        and of one solve (4 nnz(L) + N), a deterministic cost model for choosing between a
        refactorization and PCG steps on the stale factors."""
        L, d, perm = self.solver.factors()
        self.nnz_L = L.nnz      # fixed by the symbolic analysis
        if 12 * L.nnz <= _FACTOR_COPY_MAX_BYTES:   # kept for _factor_copy (8 ms at 20k)
            self._factors_of = (self.fact_id, (L, d, perm))
        counts = np.diff(L.indptr).astype(np.float64)
        fact_flops = float(np.sum(counts * counts)) + L.nnz
        solve_flops = 4.0 * L.nnz + self.N
        self.fact_flops, self.solve_flops = fact_flops, solve_flops
        return int(np.count_nonzero(d < 0)) == self.m + self.p

    @property
    def solves_per_factorization(self) -> float:
        """Flops of one factorization over one solve's (0 before :meth:`inertia_ok`)."""
        return self.fact_flops / max(self.solve_flops, 1.0)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return self.solver.solve(rhs)

    def _factor_copy(self):
        """(Lp, Li, Lx, 1/d, perm) copied from qdldl for the current factorization (once per
        factorization), or None when the size of L is unknown (no :meth:`inertia_ok` yet) or
        its copy would exceed _FACTOR_COPY_MAX_BYTES."""
        if self._copied is not None and self._copied[0] == self.fact_id:
            return self._copied[2]
        if self.nnz_L is None or 12 * self.nnz_L > _FACTOR_COPY_MAX_BYTES:
            return None
        got = self._factors_of
        self._factors_of = None
        if got is not None and got[0] == self.fact_id:
            L, d, perm = got[1]
        else:
            L, d, perm = self.solver.factors()
        Lp, Li = index_parts(L)
        with np.errstate(divide="ignore"):   # a zero pivot: the solves give inf/nan, which
            dinv = 1.0 / d                   # the callers' residual checks catch
        factors = (Lp, Li, L.data, dinv, np.ascontiguousarray(perm, dtype=np.int64))
        N = self.N
        ldl_solve = _krylov.ldl_solve

        def solve(rhs):
            out = np.empty(N)
            ldl_solve(*factors, np.ascontiguousarray(rhs, dtype=np.float64), out)
            return out

        self._copied = (self.fact_id, solve, factors)
        return factors

    def many_solves(self):
        """A function ``v -> K^{-1} v`` (new array) for the current factorization, for a
        derivative solve about to do several solves with it: a copy of qdldl's factors (made
        once per factorization) and the Cython LDL' kernel. Plain :meth:`solve` when there is
        no copy (see :meth:`_factor_copy`)."""
        if self._factor_copy() is None:
            return self.solve
        return self._copied[1]

    def block_solves(self, B: np.ndarray) -> np.ndarray:
        """K^{-1} applied to each row of ``B`` (k, N); a new (k, N) array. With the copied
        factors, four at a time by one pass over L (_krylov.ldl_solve4; measured at
        n = 20,000, 24 solves: random 56 -> 45 ms, lasso 37 -> 14, box 14 -> 6.4)."""
        B = np.ascontiguousarray(B, dtype=np.float64)
        factors = self._factor_copy()
        out = np.empty_like(B)
        k = B.shape[0]
        if factors is None:
            for c in range(k):
                out[c] = self.solve(B[c])
            return out
        k4 = k - k % 4
        for a in range(0, k4, 4):
            _krylov.ldl_solve4(*factors, B[a:a + 4], out[a:a + 4])
        if k - k4 == 1:
            # one column alone: a padded pass costs ~2 single solves (box n = 20,000)
            out[k4] = self._copied[1](B[k4])
        elif k > k4:
            pad = np.zeros((4, B.shape[1]))
            pad[:k - k4] = B[k4:]
            res = np.empty_like(pad)
            _krylov.ldl_solve4(*factors, pad, res)
            out[k4:] = res[:k - k4]
        return out

    def switched_solve(self, active: np.ndarray, C, max_cols: int | None = None):
        """Solves with the factorized matrix as it would be for the active set ``active``
        (same penalties), without refactorizing: ``(solve, delta)`` or None.

        The two matrices differ in the rows D where ``active`` and the factorization's set
        disagree: P = K_f + sum_i s_i (e_i c_i' + c_i e_i') over i in D (e_i the unit vector of
        row i's multiplier, c_i row i of ``C`` (scaled CSR, p x n) padded to N, s_i = +1 for a
        row entering, -1 leaving). Woodbury with U = [E_D, C_D'] (rank 2k for k rows) needs
        K_f^-1 U, and one solve per row gives it: an entering row is decoupled in K_f
        (column -mu_i e_i), so K_f^-1 e_i = -e_i / mu_i and the solve is K_f^-1 c_i; a leaving
        row's column of K_f is c_i - mu_i e_i, so K_f^-1 c_i = e_i + mu_i K_f^-1 e_i and the
        solve is K_f^-1 e_i. The columns are kept for the life of the factorization (an MPC
        loop's warm starts and the derivatives of its solutions share them), and so is the
        last result (asked again for the same set, it costs nothing). ``solve(v)``
        returns P^-1 v (new array), ``delta(u)`` returns (P - K_f) u (None when D is empty).
        None when more than ``max_cols`` columns (kept ones included; default SWITCH_BUDGET
        times :attr:`solves_per_factorization`) would be needed, or the capacitance matrix is
        singular.
        """
        n, base = self.n, self.n + self.m
        if max_cols is None:
            max_cols = int(SWITCH_BUDGET * self.solves_per_factorization)
        solve = self.many_solves()
        rows = np.flatnonzero((np.asarray(active) != 0) != (self.active != 0))
        k = rows.size
        if k == 0:
            return solve, None
        key = rows.tobytes()
        last = self._switch_last
        if last[0] == self.fact_id and last[1] is C and last[2] == key:
            return last[3]
        if self._switch_cols[0] != self.fact_id:
            self._switch_cols = (self.fact_id, {})
        cols = self._switch_cols[1]
        new = [int(i) for i in rows if int(i) not in cols]
        if len(cols) + len(new) > max_cols:
            return None
        leaving = self.active[rows] != 0
        CD = C[rows]
        if new:
            rhs = np.zeros((len(new), self.N))
            for c, i in enumerate(new):
                if self.active[i] != 0:
                    rhs[c, base + i] = 1.0
                else:
                    lo, hi = C.indptr[i], C.indptr[i + 1]
                    rhs[c, C.indices[lo:hi]] = C.data[lo:hi]
            for i, col in zip(new, self.block_solves(rhs)):
                cols[i] = col
            self.n_column_solves += len(new)
        GT = np.stack([cols[int(i)] for i in rows])     # (k, N): the columns K_f^-1 U needs
        mu = self.mu_in[rows]
        s = np.where(leaving, -1.0, 1.0)
        # Z = K_f^-1 U = G Gam + E_D Lam: first k columns K_f^-1 e_i, last k K_f^-1 c_i
        idx = np.arange(k)
        Gam = np.zeros((k, 2 * k))
        Lam = np.zeros((k, 2 * k))
        Gam[idx, idx] = np.where(leaving, 1.0, 0.0)
        Lam[idx, idx] = np.where(leaving, 0.0, -1.0 / mu)
        Gam[idx, k + idx] = np.where(leaving, mu, 1.0)
        Lam[idx, k + idx] = np.where(leaving, 1.0, 0.0)
        pos = _idx(base + rows)
        UtG = np.vstack((GT[:, pos].T, CD @ GT[:, :n].T))     # U' G, (2k, k)
        cap = UtG @ Gam
        cap[:k] += Lam
        cap[idx, k + idx] += s                         # S^-1 = S (s_i = +-1)
        cap[k + idx, idx] += s
        # the e-rows carry 1/mu (up to 1e8): scale them by sqrt(mu) before the LU
        sig = np.concatenate((np.sqrt(mu), np.ones(k)))
        cap = sig[:, None] * cap * sig[None, :]
        lu = capacitance_lu(cap)
        if lu is None:
            return None
        (cd_ptr, cd_ind), = _same_index_parts(CD)
        cd_val = _f64(CD.data)
        t = np.empty(2 * k)             # sig * [w[pos]; CD w[:n]]: getrs copies it
        gather = _krylov.switch_gather

        def switched(v):
            w = solve(v)
            gather(w, pos, cd_ptr, cd_ind, cd_val, sig, t)
            c = sig * capacitance_solve(lu, t)
            w -= (Gam @ c) @ GT
            w[pos] -= Lam @ c
            return w

        result = (switched, row_switch_product(CD, s, pos, n, self.N))
        self._switch_last = (self.fact_id, C, key, result)
        return result

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """K v for the matrix of the current factorization (full symmetric K)."""
        return self.matvec_add(v, np.zeros(self.N))

    def matvec_add(self, v: np.ndarray, out: np.ndarray) -> np.ndarray:
        """out += K v (in place; returns out), K as in :meth:`matvec`."""
        _krylov.sym_upper_matvec_add(self._K_parts[0], self._K_parts[1], self.data, v, out)
        return out

    def residual(self, u: np.ndarray, rhs: np.ndarray, corr: np.ndarray,
                 out: np.ndarray) -> float:
        """out = rhs - (K + diag(corr)) u (K as in :meth:`matvec`); returns |out|."""
        return _krylov.sym_upper_residual(self._K_parts[0], self._K_parts[1], self.data, corr,
                                          u, rhs, out)

    def solve_x_many(self, r: np.ndarray) -> np.ndarray:
        """:meth:`solve_x` through :meth:`many_solves`, for the forward's paths that do several
        solves on one factorization (PCG, the low-rank correction): the copy of the factors
        costs ~2 solves once, each solve with the Cython kernel then 1.4-3.3x less than qdldl's
        (measured at n = 20,000: random 1.7 vs 3.7 ms, portfolio 3.6 vs 11.9 ms, lasso 1.4 vs
        1.6 ms)."""
        rhs = self._rhs_x
        rhs[: self.n] = r
        return self.many_solves()(rhs)[: self.n]

    def solve_x(self, r: np.ndarray) -> np.ndarray:
        """M_f^{-1} r where M_f = H + rho I + A'M_eq^{-1}A + C_J'M_in^{-1}C_J is the Schur
        complement of the factorized K (rhs [r; 0; 0])."""
        rhs = self._rhs_x  # zero beyond n; qdldl does not write into its right-hand side
        rhs[: self.n] = r
        return self.solve(rhs)[: self.n]
