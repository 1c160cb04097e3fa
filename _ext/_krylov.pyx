# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kernels of the GMRES refinement of KKT solves (sparseqp.refine) and of the backward pass.

Contiguous float64 arrays only; no Python objects inside the loops.

The whole GMRES loop lives here, not only its Arnoldi step: on the n = 3,205 MPC backward the
Python loop around the step (a dozen numpy temporaries, memoryview acquisitions and small
allocations per iteration, the ``y @ Q`` updates) cost ~0.2 ms, a fifth of the six solves it
drives. The only Python calls left are the solves (and a non-diagonal correction operator).
"""
from libc.math cimport sqrt, fabs
from libc.stdlib cimport malloc, free
import numpy as np

ctypedef fused index_t:
    int
    long long

# the largest restart length the fixed-size work arrays of gmres() hold
cdef enum:
    MAXR = 32
MAX_RESTART = MAXR


cdef double _dot(const double* a, const double* b, Py_ssize_t N) noexcept nogil:
    """Four partial sums: one accumulator would serialize on the add latency."""
    cdef Py_ssize_t i, N4 = N - N % 4
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    for i in range(0, N4, 4):
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
    for i in range(N4, N):
        s0 += a[i] * b[i]
    return (s0 + s1) + (s2 + s3)


cdef void _dot4(const double* Q, Py_ssize_t ld, const double* w, Py_ssize_t N,
                double* c) noexcept nogil:
    """c[0:4] = Q[0:4] w (rows ld apart) in one pass over w: four independent sums, so the add
    latency that bounds a single dot product is hidden."""
    cdef Py_ssize_t i
    cdef const double* q0 = Q
    cdef const double* q1 = Q + ld
    cdef const double* q2 = Q + 2 * ld
    cdef const double* q3 = Q + 3 * ld
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, wi
    for i in range(N):
        wi = w[i]
        a0 += q0[i] * wi
        a1 += q1[i] * wi
        a2 += q2[i] * wi
        a3 += q3[i] * wi
    c[0] = a0
    c[1] = a1
    c[2] = a2
    c[3] = a3


cdef double _project_out(const double* Q, Py_ssize_t ld, Py_ssize_t k, double* w, double* h,
                         double* c, Py_ssize_t N) noexcept nogil:
    """c = Q[:k+1] w, h[:k+1] += c, w -= Q[:k+1]' c; returns |w|^2 (Q rows ld apart).

    Classical Gram-Schmidt: the dot products four rows per pass over w, then one pass that
    subtracts every projection from each entry (in the row order: the same rounding as one
    sweep per row) and sums the squares."""
    cdef Py_ssize_t i, j, nv = k + 1
    cdef double t0, t1, cj, s0 = 0.0, s1 = 0.0
    cdef const double* q
    j = 0
    while j + 4 <= nv:
        _dot4(Q + j * ld, ld, w, N, c + j)
        j += 4
    while j < nv:
        c[j] = _dot(Q + j * ld, w, N)
        j += 1
    for j in range(nv):
        h[j] += c[j]
    i = 0
    while i + 1 < N:
        t0 = w[i]
        t1 = w[i + 1]
        for j in range(nv):
            cj = c[j]
            q = Q + j * ld
            t0 -= cj * q[i]
            t1 -= cj * q[i + 1]
        w[i] = t0
        w[i + 1] = t1
        s0 += t0 * t0
        s1 += t1 * t1
        i += 2
    if i < N:
        t0 = w[i]
        for j in range(nv):
            t0 -= c[j] * Q[j * ld + i]
        w[i] = t0
        s0 += t0 * t0
    return s0 + s1


cdef double _arnoldi_step(double* Q, Py_ssize_t ld, Py_ssize_t k, const double* scale,
                          const double* z, const Py_ssize_t* idx, double* R, double* cs,
                          double* sn, double* g, Py_ssize_t N, double* hn_out) noexcept nogil:
    """Step k of GMRES on I + T, T = diag(scale) K^{-1} (scale NULL: unit), given
    z = K^{-1} Q[k] (or the correction operator applied to it), on the N coordinates idx of z
    (idx NULL: all; the basis lives where the correction does, see gmres).

    Arnoldi: w = scale * z orthogonalized against Q[:k+1] (classical Gram-Schmidt, repeated once
    only when it cancels all but 1e-2 of |w|, i.e. loses 2+ digits of orthogonality: with at most
    MAXR vectors and the caller's check of the true residual, milder losses cost at most an
    iteration, while a second pass costs two more sweeps over the basis at every step), its
    norm hn, Q[k+1] = w / hn. The Hessenberg column (plus 1 on the diagonal for the identity)
    goes into column k of R (row-major, MAXR columns) and is reduced to triangular form by the
    stored Givens rotations (cs, sn)[:k] and a new one, also applied to the residual vector g.

    Returns |g[k+1]|, the GMRES residual norm after this step; hn_out gets hn (0: breakdown,
    the Krylov space is invariant; Q[k+1] is then left unnormalized).
    """
    cdef Py_ssize_t i, j
    cdef double* w = Q + (k + 1) * ld
    cdef double c[MAXR]
    cdef double h[MAXR]
    cdef double n0, n1, hn, t, d, hk
    if idx != NULL:
        for i in range(N):
            w[i] = scale[i] * z[idx[i]]
    elif scale != NULL:
        for i in range(N):
            w[i] = scale[i] * z[i]
    else:
        for i in range(N):
            w[i] = z[i]
    for j in range(k + 1):
        h[j] = 0.0
    n0 = _dot(w, w, N)
    n1 = _project_out(Q, ld, k, w, h, c, N)
    if n1 < 1e-4 * n0:
        n1 = _project_out(Q, ld, k, w, h, c, N)
    hn = sqrt(n1)
    if hn > 0.0:
        # (a multiplication: a division per entry costs more than the rest of the step)
        t = 1.0 / hn
        for i in range(N):
            w[i] *= t
    h[k] += 1.0
    for j in range(k):
        t = cs[j] * h[j] + sn[j] * h[j + 1]
        h[j + 1] = -sn[j] * h[j] + cs[j] * h[j + 1]
        h[j] = t
    hk = h[k]
    d = sqrt(hk * hk + hn * hn)
    if d > 0.0:
        cs[k] = hk / d
        sn[k] = hn / d
    else:
        cs[k] = 1.0
        sn[k] = 0.0
    for j in range(k):
        R[j * MAXR + k] = h[j]
    R[k * MAXR + k] = d
    g[k + 1] = -sn[k] * g[k]
    g[k] = cs[k] * g[k]
    hn_out[0] = hn
    return fabs(g[k + 1])


cdef void _axpy(double a, const double* x, double* y, Py_ssize_t N) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(N):
        y[i] += a * x[i]


cdef inline bint _finite(double x) noexcept nogil:
    return x - x == 0.0


def gmres(solve, corr, rhs_in, double tol, Py_ssize_t max_solves,
          Py_ssize_t restart, double[:, ::1] Q, Py_ssize_t patience=3, bint window=False):
    """Restarted right-preconditioned GMRES for ``(K_reg + C) u = rhs`` given
    ``solve(v) = K_reg^{-1} v`` (see :func:`sparseqp.refine.gmres_refine`, which documents the
    arguments and owns the workspace ``Q``, at least (restart + 1, N)).

    ``corr``: the diagonal of C as a float64 array, or a callable ``u -> C u``. ``solve`` must
    return a new contiguous float64 array at each call (qdldl's solve does): the results are
    kept as the basis Z = K_reg^{-1} Q without a copy, and the first one becomes u.

    With a diagonal C the residual rhs - (K_reg + C) u = (rhs - K_reg u) - C u stays on the
    rows where C is nonzero (the first part is a combination of basis vectors, and the basis
    vectors are C times solves), so the basis is kept on those rows only (compressed: in the
    derivatives the inactive constraint rows, 3,152 of 8,540 on the n = 3,205 MPC, are left
    out of every Gram-Schmidt sweep) and scattered into a full vector for each solve.

    ``patience``: steps in a row without halving the residual after which it stops (an
    inconsistent singular system); a correction of rank k may hold it for about k steps.
    With ``window``: steps since the residual last fell to half of its value at the previous
    such fall, so that a steady convergence slower than one halving per step goes on (a
    preconditioner whose penalties are far from the target's: the polish at its first
    penalties) while one slower than a halving per ``patience`` steps stops.

    Returns (u, n_solves).
    """
    cdef const double[::1] rhs = rhs_in
    cdef Py_ssize_t N = rhs.shape[0], ld = Q.shape[1], i, j, k, k_used, slow, ns
    cdef Py_ssize_t n_solves
    cdef bint diagonal = not callable(corr)
    cdef const double[::1] cdiag
    cdef double[::1] u, dv, scale_c, full
    cdef Py_ssize_t[::1] support
    cdef const Py_ssize_t* idx = NULL
    cdef const double[::1] cz
    cdef const double[::1] zk
    cdef const double* zp[MAXR]
    cdef double R[(MAXR + 1) * MAXR]
    cdef double cs[MAXR]
    cdef double sn[MAXR]
    cdef double g[MAXR + 1]
    cdef double y[MAXR]
    cdef double norm_rhs, beta, res, hn, prev, s, thresh
    if restart < 1 or restart > MAXR or Q.shape[0] < restart + 1 or ld != N:
        raise ValueError("gmres: bad restart length or workspace shape")
    ns = N
    if diagonal:
        cdiag = corr
        if cdiag.shape[0] != N:
            raise ValueError("gmres: correction of the wrong length")
        support = np.empty(N, dtype=np.intp)
        ns = 0
        for i in range(N):          # (branch-free: the pattern of C can be irregular)
            support[ns] = i
            ns += cdiag[i] != 0.0
        idx = &support[0]
        scale_c = np.empty(max(ns, 1))
        for i in range(ns):
            scale_c[i] = cdiag[idx[i]]
        full = np.zeros(N)          # the solves' input: zero off the support
        full_a = np.asarray(full)
    Qa = np.asarray(Q)
    norm_rhs = sqrt(_dot(&rhs[0], &rhs[0], N))
    thresh = tol * norm_rhs
    u = solve(rhs_in)
    n_solves = 1
    if ns == 0:                     # no correction: the factorized matrix is the target
        return np.asarray(u), n_solves
    dv = np.zeros(ns)               # K_reg u - rhs, on the support
    zs = [None] * restart           # keeps the solves' arrays (Z) alive
    while n_solves < max_solves:
        # r = rhs - (K_reg + C) u = -dv - C u, into Q[0]
        if diagonal:
            for i in range(ns):
                Q[0, i] = -dv[i] - scale_c[i] * u[idx[i]]
        else:
            cz = np.ascontiguousarray(corr(np.asarray(u)), dtype=np.float64)
            for i in range(N):
                Q[0, i] = -dv[i] - cz[i]
        beta = sqrt(_dot(&Q[0, 0], &Q[0, 0], ns))
        if beta <= thresh or not _finite(beta):
            break
        s = 1.0 / beta
        for i in range(ns):
            Q[0, i] *= s
        for j in range(restart + 1):
            g[j] = 0.0
        g[0] = beta
        k_used = 0
        slow = 0
        prev = beta
        for k in range(restart):
            if diagonal:
                for i in range(ns):
                    full[idx[i]] = Q[k, i]
                zk = solve(full_a)
            else:
                zk = solve(Qa[k])
            zs[k] = zk
            zp[k] = &zk[0]
            n_solves += 1
            if diagonal:
                res = _arnoldi_step(&Q[0, 0], ld, k, &scale_c[0], zp[k], idx, R, cs, sn, g,
                                    ns, &hn)
            else:
                cz = np.ascontiguousarray(corr(zs[k]), dtype=np.float64)
                res = _arnoldi_step(&Q[0, 0], ld, k, NULL, &cz[0], NULL, R, cs, sn, g, N, &hn)
            if R[k * MAXR + k] == 0.0 or not _finite(res):
                break               # no new direction: drop this column
            k_used = k + 1
            # an inconsistent singular system: the residual stops falling
            if res > 0.5 * prev:
                slow = slow + 1
            else:
                slow = 0
                if window:
                    prev = res
            if not window:
                prev = res
            if res <= thresh or hn <= 1e-14 or slow >= patience or n_solves >= max_solves:
                break
        if k_used == 0:
            break
        # back substitution with the triangle; zero pivots give zero
        for i in range(k_used - 1, -1, -1):
            s = g[i]
            for j in range(i + 1, k_used):
                s -= R[i * MAXR + j] * y[j]
            y[i] = s / R[i * MAXR + i] if R[i * MAXR + i] != 0.0 else 0.0
        with nogil:
            # one sweep per basis vector (contiguous, vectorizable)
            for j in range(k_used):
                s = y[j]
                for i in range(ns):
                    dv[i] += s * Q[j, i]
                _axpy(s, zp[j], &u[0], N)
        if slow >= patience:
            break
    return np.asarray(u), n_solves


cdef inline void _sym_upper_matvec_add(const index_t[::1] indptr, const index_t[::1] indices,
                                       const double[::1] data, const double[::1] u,
                                       double[::1] out) noexcept nogil:
    cdef Py_ssize_t j, k, i, ncol = indptr.shape[0] - 1
    cdef double v, uj, acc
    for j in range(ncol):
        uj = u[j]
        acc = 0.0
        for k in range(indptr[j], indptr[j + 1]):
            i = indices[k]
            v = data[k]
            if i == j:
                acc += v * uj
            else:
                out[i] += v * uj
                acc += v * u[i]
        out[j] += acc


def sym_upper_matvec_add(const index_t[::1] indptr, const index_t[::1] indices,
                         const double[::1] data, const double[::1] u, double[::1] out):
    """out += K u for the symmetric K whose upper triangle (diagonal included) is the CSC
    (indptr, indices, data): one pass over the stored entries, no transposed copy."""
    with nogil:
        _sym_upper_matvec_add(indptr, indices, data, u, out)


def sym_upper_residual(const index_t[::1] indptr, const index_t[::1] indices,
                       const double[::1] data, const double[::1] corr, const double[::1] u,
                       const double[::1] rhs, double[::1] r):
    """r = rhs - (K + diag(corr)) u for the symmetric K whose upper triangle (diagonal
    included) is the CSC (indptr, indices, data); returns |r|. One pass over K's entries and
    one over the vectors: the true residual of a refined derivative solve without the
    temporaries of ``rhs - (corr * u + K u)``."""
    cdef Py_ssize_t j, N = indptr.shape[0] - 1
    cdef double out = 0.0
    with nogil:
        for j in range(N):
            r[j] = 0.0
        _sym_upper_matvec_add(indptr, indices, data, u, r)
        for j in range(N):
            r[j] = rhs[j] - (corr[j] * u[j] + r[j])
            out += r[j] * r[j]
    return sqrt(out)


# ---------------------------------------------------------------------------------------------
# the vectors and pattern gradients of the backward pass: one pass each instead of a chain of
# numpy temporaries (each ~2-5 us on n ~ 3,000 with the caches cold after a forward solve)
# ---------------------------------------------------------------------------------------------

def active_sets(const double[::1] z, const double[::1] s_in, const double[::1] l,
                const double[::1] u, double tau, double[::1] s_out,
                signed char[::1] active, double[::1] side):
    """The rows a derivative differentiates through, from a solution's (z, s_in).

    s_out = s_in where |s_in| > tau else 0 (the shifted rows); active = (z != 0 or shifted);
    side = +1 / -1: the bound an active row's gradient goes to (upper / lower: sign of z, or of
    the shift on shifted rows; an equality row l = u with z = 0 counts as upper), 0 elsewhere.
    """
    cdef Py_ssize_t i, p = z.shape[0]
    cdef double s, sd
    with nogil:
        for i in range(p):
            s = s_in[i] if fabs(s_in[i]) > tau else 0.0
            s_out[i] = s
            if s != 0.0:
                sd = 1.0 if s > 0.0 else -1.0
            elif z[i] > 0.0:
                sd = 1.0
            elif z[i] < 0.0:
                sd = -1.0
            else:
                sd = z[i]           # 0 (or nan: np.sign's rule)
            active[i] = 1 if (z[i] != 0.0 or s != 0.0) else 0
            if active[i] and sd == 0.0 and l[i] == u[i]:
                sd = 1.0
            side[i] = sd


def scale_rhs(double c, const double[::1] D, const double[::1] E, const double[::1] F,
              const signed char[::1] active, const double[::1] vx, const double[::1] vy,
              const double[::1] vz, double[::1] out):
    """out = (c D vx, E vy, F vz) with vz zeroed on inactive rows: an unscaled KKT right-hand
    side in the Ruiz-scaled units of the factorization (see Linearization.solve_unscaled).
    vy or vz None: zero."""
    cdef Py_ssize_t i, n = D.shape[0], m = E.shape[0], p = F.shape[0]
    cdef bint has_y = vy is not None, has_z = vz is not None
    with nogil:
        for i in range(n):
            out[i] = c * D[i] * vx[i]
        for i in range(m):
            out[n + i] = E[i] * vy[i] if has_y else 0.0
        for i in range(p):
            out[n + m + i] = F[i] * vz[i] if (has_z and active[i] != 0) else 0.0


def split_sides(const double[::1] side, const double[::1] wz, double[::1] gl, double[::1] gu):
    """gu = wz where side > 0, gl = wz where side < 0, 0 elsewhere (the bound gradients)."""
    cdef Py_ssize_t i, p = side.shape[0]
    with nogil:
        for i in range(p):
            gu[i] = wz[i] if side[i] > 0.0 else 0.0
            gl[i] = wz[i] if side[i] < 0.0 else 0.0


def same_support(const signed char[::1] a, const signed char[::1] b):
    """a and b (int8 masks) are nonzero at the same positions (and have the same length)."""
    cdef Py_ssize_t i, n = a.shape[0]
    if b.shape[0] != n:
        return False
    for i in range(n):
        if (a[i] != 0) != (b[i] != 0):
            return False
    return True


def all_finite(const double[::1] a):
    """No NaN or infinite entry (one pass, no temporary)."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef double acc = 0.0
    with nogil:
        for i in range(n):
            acc += a[i] - a[i]      # nan as soon as one entry is nan or infinite
    return acc == 0.0


def unscale_solution(double c, const double[::1] D, const double[::1] E, const double[::1] F,
                     const signed char[::1] active, const double[::1] us, double[::1] wx,
                     double[::1] wy, double[::1] wz):
    """(wx, wy, wz) = (D us_x, E us_y / c, F us_z / c) with wz zeroed on inactive rows."""
    cdef Py_ssize_t i, n = D.shape[0], m = E.shape[0], p = F.shape[0]
    cdef double ic = 1.0 / c
    with nogil:
        for i in range(n):
            wx[i] = D[i] * us[i]
        for i in range(m):
            wy[i] = E[i] * us[n + i] * ic
        for i in range(p):
            wz[i] = F[i] * us[n + m + i] * ic if active[i] != 0 else 0.0


def pattern_outer(const index_t[::1] indptr, const index_t[::1] indices, double alpha,
                  const double[::1] a, const double[::1] b, const double[::1] c,
                  const double[::1] d, double[::1] out):
    """out_k = alpha (a_i b_j + c_i d_j) for each stored entry k = (i, j) of a CSC matrix: a
    matrix gradient on its pattern, nothing dense made. (alpha is a power of 2 in the backward,
    -1 or -1/2, so this is bitwise the sum of the products with the scaled vectors.)"""
    cdef Py_ssize_t j, k, i, ncol = indptr.shape[0] - 1
    with nogil:
        for j in range(ncol):
            for k in range(indptr[j], indptr[j + 1]):
                i = indices[k]
                out[k] = alpha * (a[i] * b[j] + c[i] * d[j])



# ---------------------------------------------------------------------------------------------
# LDL' solve on a copy of qdldl's factors
# ---------------------------------------------------------------------------------------------
# qdldl's solve sums each column of L' into one accumulator: on the MPC KKT matrices (banded,
# columns of ~8 entries, an elimination tree close to a path) the back substitution is then
# bound by the add latency, ~4 cycles per entry. Here the entries of a column that do not
# depend on the value just computed are summed on two accumulators first and the nearest entry
# (the first of a column with sorted row indices: the row computed last in the backward sweep)
# comes in last, so only one multiply-subtract per column is on the critical path: 131 -> ~85 us
# per solve at N = 8,540, nnz(L) = 66k.

def ldl_solve(const index_t[::1] Lp, const index_t[::1] Li, const double[::1] Lx,
              const double[::1] Dinv, const long long[::1] perm, const double[::1] b,
              double[::1] out):
    """out = P' L^-T D^-1 L^-1 P b for the factorization P K P' = L D L' (L unit lower
    triangular, strict part in CSC; P b = b[perm]). ``out`` must not alias ``b``."""
    cdef Py_ssize_t i, j, s, e, n = Dinv.shape[0]
    cdef double val, s0, s1
    cdef double* x = <double*> malloc(max(n, 1) * sizeof(double))
    if x == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            x[i] = b[perm[i]]
        # L x = P b, column by column (scatter)
        for i in range(n):
            val = x[i]
            for j in range(Lp[i], Lp[i + 1]):
                x[Li[j]] -= Lx[j] * val
        # D^-1, then L' x = y backwards; out = P' x on the way
        for i in range(n - 1, -1, -1):
            s = Lp[i]
            e = Lp[i + 1]
            val = x[i] * Dinv[i]
            if e > s:
                s0 = 0.0
                s1 = 0.0
                j = e - 1
                while j > s + 1:
                    s0 += Lx[j] * x[Li[j]]
                    s1 += Lx[j - 1] * x[Li[j - 1]]
                    j -= 2
                if j > s:
                    s0 += Lx[j] * x[Li[j]]
                val = (val - (s0 + s1)) - Lx[s] * x[Li[s]]
            x[i] = val
            out[perm[i]] = val
    free(x)


def ldl_solve4(const index_t[::1] Lp, const index_t[::1] Li, const double[::1] Lx,
               const double[::1] Dinv, const long long[::1] perm, const double[:, ::1] B,
               double[:, ::1] out):
    """:func:`ldl_solve` of the 4 rows of ``B`` (4, N) at once into ``out`` (4, N): each
    entry of L, read once, updates the 4 interleaved solutions (x[4 i + c]) held in registers,
    where 4 solves read L 4 times (it outgrows the cache at n ~ 10^4 and the solves are
    memory bound)."""
    cdef Py_ssize_t i, j, n = Dinv.shape[0]
    cdef double lx, d, v0, v1, v2, v3
    cdef double* xr
    cdef double* x = <double*> malloc(max(4 * n, 1) * sizeof(double))
    if x == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            j = perm[i]
            x[4 * i] = B[0, j]
            x[4 * i + 1] = B[1, j]
            x[4 * i + 2] = B[2, j]
            x[4 * i + 3] = B[3, j]
        for i in range(n):
            v0 = x[4 * i]
            v1 = x[4 * i + 1]
            v2 = x[4 * i + 2]
            v3 = x[4 * i + 3]
            for j in range(Lp[i], Lp[i + 1]):
                xr = x + 4 * Li[j]
                lx = Lx[j]
                xr[0] -= lx * v0
                xr[1] -= lx * v1
                xr[2] -= lx * v2
                xr[3] -= lx * v3
        for i in range(n - 1, -1, -1):
            d = Dinv[i]
            v0 = x[4 * i] * d
            v1 = x[4 * i + 1] * d
            v2 = x[4 * i + 2] * d
            v3 = x[4 * i + 3] * d
            for j in range(Lp[i], Lp[i + 1]):
                xr = x + 4 * Li[j]
                lx = Lx[j]
                v0 -= lx * xr[0]
                v1 -= lx * xr[1]
                v2 -= lx * xr[2]
                v3 -= lx * xr[3]
            x[4 * i] = v0
            x[4 * i + 1] = v1
            x[4 * i + 2] = v2
            x[4 * i + 3] = v3
            j = perm[i]
            out[0, j] = v0
            out[1, j] = v1
            out[2, j] = v2
            out[3, j] = v3
    free(x)


# ---------------------------------------------------------------------------------------------
# Row switches of the KKT matrix (kkt.switched_solve, kkt.row_switch_product)
# ---------------------------------------------------------------------------------------------
# Both repeat the summation order of the scipy/numpy expressions they replace (a CSR product
# is a gather starting from 0.0), so their results are bitwise the same; they save the ~10
# numpy and scipy calls per use (~30 us per switched solve at mpc n = 1,000, two per warm
# re-solve there).

cdef inline double _csr_row_dot(const index_t[::1] ptr, const index_t[::1] ind,
                                const double[::1] val, const double[::1] x,
                                Py_ssize_t i) noexcept nogil:
    """Row i of a CSR matrix times x, summed from 0.0 in storage order (scipy's csr_matvec)."""
    cdef double acc = 0.0
    cdef Py_ssize_t j
    for j in range(ptr[i], ptr[i + 1]):
        acc = acc + val[j] * x[ind[j]]
    return acc


def switch_gather(const double[::1] w, const long long[::1] pos, const index_t[::1] cd_ptr,
                  const index_t[::1] cd_ind, const double[::1] cd_val, const double[::1] sig,
                  double[::1] out):
    """out = sig * [w[pos]; CD w[:n]] for the k rows D (``pos``: their multipliers'
    positions in the KKT vector, CD: their rows of C as CSR, k x n); out has length 2k."""
    cdef Py_ssize_t k = pos.shape[0], i
    with nogil:
        for i in range(k):
            out[i] = sig[i] * w[pos[i]]
        for i in range(k):
            out[k + i] = sig[k + i] * _csr_row_dot(cd_ptr, cd_ind, cd_val, w, i)


def switch_product(const double[::1] u, const long long[::1] pos, const double[::1] s,
                   const index_t[::1] cd_ptr, const index_t[::1] cd_ind,
                   const double[::1] cd_val, const index_t[::1] cdt_ptr,
                   const index_t[::1] cdt_ind, const double[::1] cdt_val, double[::1] out):
    """out = sum_i s_i (e_i c_i' + c_i e_i') u (out has the KKT length N, zeroed here):
    out[:n] = CD' (s * u[pos]), out[pos] = s * (CD u[:n]), CD (k x n) and its transpose
    CD' (n x k) as CSR."""
    cdef Py_ssize_t k = pos.shape[0], n = cdt_ptr.shape[0] - 1, i
    cdef double[::1] su = np.empty(k)
    with nogil:
        for i in range(out.shape[0]):
            out[i] = 0.0
        for i in range(k):
            su[i] = s[i] * u[pos[i]]
        for i in range(n):
            out[i] = _csr_row_dot(cdt_ptr, cdt_ind, cdt_val, su, i)
        for i in range(k):
            out[pos[i]] = s[i] * _csr_row_dot(cd_ptr, cd_ind, cd_val, u, i)
