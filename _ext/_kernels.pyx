# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Numeric kernels of the proximal augmented-Lagrangian solver.

Everything here assumes clean input (validated and converted by sparseqp.problem): contiguous
float64 vectors and CSC/CSR index arrays. No Python objects inside the loops.
"""
from libc.math cimport fabs, sqrt, INFINITY
from libc.stdlib cimport malloc, free, qsort
import numpy as np

ctypedef fused index_t:
    int
    long long

# ---------------------------------------------------------------------------------------------
# Ruiz equilibration
# ---------------------------------------------------------------------------------------------

cdef void _csc_absmax(const index_t[::1] indptr, const index_t[::1] indices, const double[::1] data,
                      double[::1] colmax, double[::1] rowmax, bint do_rows) noexcept nogil:
    """colmax[j] = max(colmax[j], max_i |M_ij|); rowmax[i] likewise (if do_rows)."""
    cdef Py_ssize_t j, k, ncol = indptr.shape[0] - 1
    cdef double v
    for j in range(ncol):
        for k in range(indptr[j], indptr[j + 1]):
            v = fabs(data[k])
            if v > colmax[j]:
                colmax[j] = v
            if do_rows and v > rowmax[indices[k]]:
                rowmax[indices[k]] = v


cdef void _csc_scale(const index_t[::1] indptr, const index_t[::1] indices, double[::1] data,
                     const double[::1] drow, const double[::1] dcol) noexcept nogil:
    cdef Py_ssize_t j, k, ncol = indptr.shape[0] - 1
    for j in range(ncol):
        for k in range(indptr[j], indptr[j + 1]):
            data[k] *= drow[indices[k]] * dcol[j]


cdef inline double _inv_sqrt_norm(double v) noexcept nogil:
    # Rows/columns that are (numerically) empty are left unscaled.
    if v < 1e-8:
        return 1.0
    return 1.0 / sqrt(v)


def ruiz_equilibrate(const index_t[::1] Hp, const index_t[::1] Hi, double[::1] Hx,
                     const index_t[::1] Ap, const index_t[::1] Ai, double[::1] Ax,
                     const index_t[::1] Cp, const index_t[::1] Ci, double[::1] Cx,
                     double[::1] D, double[::1] E, double[::1] F, int iters):
    """Ruiz-equilibrate the KKT matrix [H A' C'; A 0 0; C 0 0] in place.

    H (n x n), A (m x n), C (p x n) are CSC; their data arrays are scaled in place to
    diag(D) H diag(D), diag(E) A diag(D), diag(F) C diag(D). D, E, F (lengths n, m, p) must come
    in filled with ones and return the accumulated scalings.
    """
    cdef Py_ssize_t n = D.shape[0], m = E.shape[0], p = F.shape[0], i, it
    cdef double[::1] cn = np.zeros(n), rn_a = np.zeros(m), rn_c = np.zeros(p)
    cdef double[::1] dD = np.ones(n), dE = np.ones(m), dF = np.ones(p)
    cdef double[::1] dummy = np.zeros(n)
    with nogil:
        for it in range(iters):
            for i in range(n):
                cn[i] = 0.0
            for i in range(m):
                rn_a[i] = 0.0
            for i in range(p):
                rn_c[i] = 0.0
            # KKT column j < n holds H[:, j], A[:, j] and C[:, j]; column n + i holds A[i, :].
            _csc_absmax(Hp, Hi, Hx, cn, dummy, False)
            _csc_absmax(Ap, Ai, Ax, cn, rn_a, True)
            _csc_absmax(Cp, Ci, Cx, cn, rn_c, True)
            for i in range(n):
                dD[i] = _inv_sqrt_norm(cn[i])
                D[i] *= dD[i]
            for i in range(m):
                dE[i] = _inv_sqrt_norm(rn_a[i])
                E[i] *= dE[i]
            for i in range(p):
                dF[i] = _inv_sqrt_norm(rn_c[i])
                F[i] *= dF[i]
            _csc_scale(Hp, Hi, Hx, dD, dD)
            _csc_scale(Ap, Ai, Ax, dE, dD)
            _csc_scale(Cp, Ci, Cx, dF, dD)


# ---------------------------------------------------------------------------------------------
# KKT values on the fixed pattern
# ---------------------------------------------------------------------------------------------

def fill_c_block(double[::1] kkt_data, const index_t[::1] c_rowptr, const double[::1] c_data,
                 long long base, const signed char[::1] active, const double[::1] mu_in):
    """Write the C rows of the KKT matrix (column n+m+i holds C[i, :] then the diagonal).

    Row i's entries sit at kkt_data[base + k + i] for k in c_rowptr[i]:c_rowptr[i+1], its
    diagonal at kkt_data[base + c_rowptr[i+1] + i]. Inactive rows get explicit zeros, so the
    pattern (and the symbolic analysis) never changes with the active set.
    """
    cdef Py_ssize_t i, k, p = c_rowptr.shape[0] - 1
    with nogil:
        for i in range(p):
            if active[i] != 0:
                for k in range(c_rowptr[i], c_rowptr[i + 1]):
                    kkt_data[base + k + i] = c_data[k]
            else:
                for k in range(c_rowptr[i], c_rowptr[i + 1]):
                    kkt_data[base + k + i] = 0.0
            kkt_data[base + c_rowptr[i + 1] + i] = -mu_in[i]


# ---------------------------------------------------------------------------------------------
# Active set and multiplier estimate of the inner problem
# ---------------------------------------------------------------------------------------------

def inner_multipliers(const double[::1] cx, const double[::1] ze, const double[::1] mu_in,
                      const double[::1] l, const double[::1] u,
                      double[::1] z_out, signed char[::1] active_out,
                      const signed char[::1] active_ref):
    """Multiplier estimate z(x) = (w - proj_[l,u](w)) / mu_in with w = Cx + mu_in ze.

    active_out[i] = +1 (w_i > u_i), -1 (w_i < l_i), else 0. Returns (n_active, n_changed), the
    latter counting rows whose activity differs from active_ref (the factorized active set).
    """
    cdef Py_ssize_t i, p = cx.shape[0]
    cdef Py_ssize_t n_active = 0, n_changed = 0
    cdef double w
    cdef signed char a
    with nogil:
        for i in range(p):
            w = cx[i] + mu_in[i] * ze[i]
            if w > u[i]:
                z_out[i] = (w - u[i]) / mu_in[i]
                a = 1
            elif w < l[i]:
                z_out[i] = (w - l[i]) / mu_in[i]
                a = -1
            else:
                z_out[i] = 0.0
                a = 0
            active_out[i] = a
            if a != 0:
                n_active += 1
            if (a != 0) != (active_ref[i] != 0):
                n_changed += 1
    return n_active, n_changed


# ---------------------------------------------------------------------------------------------
# Exact line search on the piecewise-quadratic merit function
# ---------------------------------------------------------------------------------------------

cdef struct Breakpoint:
    double t
    double dslope


cdef int _cmp_bp(const void* a, const void* b) noexcept nogil:
    cdef double ta = (<const Breakpoint*> a).t, tb = (<const Breakpoint*> b).t
    if ta < tb:
        return -1
    if ta > tb:
        return 1
    return 0


def exact_linesearch(double quad, double lin, const double[::1] w, const double[::1] cd,
                     const double[::1] l, const double[::1] u, const double[::1] mu_in):
    """Step alpha >= 0 minimizing phi(x + alpha dx) exactly.

    phi'(alpha) = quad * alpha + lin + sum_i cd_i * r_i(alpha) / mu_in_i, with
    r_i(alpha) = v - proj_[l_i, u_i](v), v = w_i + alpha cd_i: a nondecreasing piecewise-linear
    function of alpha. ``quad`` and ``lin`` hold the smooth part (quadratic cost, proximal and
    equality terms). Returns (alpha, slope_at_alpha, dphi0); alpha is inf when phi decreases
    without bound along dx and nan when phi'(0) >= 0 (not a descent direction).
    """
    cdef Py_ssize_t i, p = w.shape[0], nb = 0
    cdef double d0 = lin, s = quad, c, v, r, t, tprev, alpha, cc
    cdef Breakpoint* bps = <Breakpoint*> malloc((2 * p + 1) * sizeof(Breakpoint))
    if bps == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(p):
                c = cd[i]
                if c == 0.0:
                    continue
                v = w[i]
                cc = c * c / mu_in[i]
                # value and slope contribution at alpha = 0+
                if v > u[i] or (v == u[i] and c > 0):
                    d0 += c * (v - u[i]) / mu_in[i]
                    s += cc
                elif v < l[i] or (v == l[i] and c < 0):
                    d0 += c * (v - l[i]) / mu_in[i]
                    s += cc
                # breakpoints strictly after 0 where v + alpha c crosses a finite bound
                if u[i] < INFINITY:
                    t = (u[i] - v) / c
                    if t > 0:
                        bps[nb].t = t
                        # crossing u: entering (c < 0) removes slope, leaving (c > 0) adds it
                        bps[nb].dslope = cc if c > 0 else -cc
                        nb += 1
                if l[i] > -INFINITY:
                    t = (l[i] - v) / c
                    if t > 0:
                        bps[nb].t = t
                        bps[nb].dslope = cc if c < 0 else -cc
                        nb += 1
            if d0 >= 0:
                alpha = -1.0
            else:
                qsort(bps, nb, sizeof(Breakpoint), _cmp_bp)
                tprev = 0.0
                r = d0
                alpha = -2.0
                for i in range(nb):
                    t = bps[i].t
                    v = r + s * (t - tprev)
                    if v >= 0 and s > 0:
                        alpha = tprev - r / s
                        break
                    r = v
                    tprev = t
                    s += bps[i].dslope
                if alpha == -2.0:
                    if s > 0:
                        alpha = tprev - r / s
                    else:
                        alpha = INFINITY
    finally:
        free(bps)
    if alpha == -1.0:
        return float("nan"), s, d0
    return alpha, s, d0


# ---------------------------------------------------------------------------------------------
# Residuals on the unscaled problem
# ---------------------------------------------------------------------------------------------

def box_residual_inf(const double[::1] v, const double[::1] l, const double[::1] u,
                     const double[::1] scale):
    """max_i |v_i - proj_[l_i,u_i](v_i)| / scale_i (scale: the row scaling to undo)."""
    cdef Py_ssize_t i, p = v.shape[0]
    cdef double r, out = 0.0
    with nogil:
        for i in range(p):
            if v[i] > u[i]:
                r = (v[i] - u[i]) / scale[i]
            elif v[i] < l[i]:
                r = (l[i] - v[i]) / scale[i]
            else:
                r = 0.0
            if r > out:
                out = r
    return out


def box_violation(const double[::1] v, const double[::1] l, const double[::1] u,
                  double[::1] out):
    """out_i = v_i - proj_[l_i,u_i](v_i) (the shift of an inequality row)."""
    cdef Py_ssize_t i, p = v.shape[0]
    with nogil:
        for i in range(p):
            if v[i] > u[i]:
                out[i] = v[i] - u[i]
            elif v[i] < l[i]:
                out[i] = v[i] - l[i]
            else:
                out[i] = 0.0


def scaled_inf_norm(const double[::1] v, const double[::1] scale, bint divide):
    """max_i |v_i / scale_i| (divide) or max_i |v_i * scale_i|."""
    cdef Py_ssize_t i, p = v.shape[0]
    cdef double r, out = 0.0
    with nogil:
        for i in range(p):
            r = fabs(v[i] / scale[i]) if divide else fabs(v[i] * scale[i])
            if r > out:
                out = r
    return out


def mask_active(const double[::1] v, const signed char[::1] active, double[::1] out):
    """out_i = v_i where active[i] != 0 else 0."""
    cdef Py_ssize_t i, p = v.shape[0]
    with nogil:
        for i in range(p):
            out[i] = v[i] if active[i] != 0 else 0.0


# ---------------------------------------------------------------------------------------------
# BLAS-free level-1 operations: numpy's dot goes to a threaded BLAS whose thread wake-ups cost
# more than the arithmetic for the vector sizes of one iteration (measured: 0.6 ms for n = 30k).
# ---------------------------------------------------------------------------------------------

def dot(const double[::1] a, const double[::1] b):
    """sum_i a_i b_i."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef double out = 0.0
    with nogil:
        for i in range(n):
            out += a[i] * b[i]
    return out


def dot_weighted(const double[::1] a, const double[::1] b, const double[::1] w):
    """sum_i a_i b_i / w_i."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef double out = 0.0
    with nogil:
        for i in range(n):
            out += a[i] * b[i] / w[i]
    return out


def norm2(const double[::1] a):
    """Euclidean norm."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef double out = 0.0
    with nogil:
        for i in range(n):
            out += a[i] * a[i]
    return sqrt(out)


def inf_norm(const double[::1] a):
    """max_i |a_i| (0 for an empty vector)."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef double out = 0.0, v
    with nogil:
        for i in range(n):
            v = fabs(a[i])
            if v > out:
                out = v
    return out


def axpy(double alpha, const double[::1] x, double[::1] y):
    """y += alpha x, in place."""
    cdef Py_ssize_t i, n = x.shape[0]
    with nogil:
        for i in range(n):
            y[i] += alpha * x[i]


# ---------------------------------------------------------------------------------------------
# Gradients on a sparsity pattern
# ---------------------------------------------------------------------------------------------

def outer_on_pattern(const index_t[::1] indptr, const index_t[::1] indices,
                     const double[::1] a, const double[::1] b,
                     const double[::1] c, const double[::1] d, double[::1] out):
    """out_k = a_i b_j + c_i d_j for each stored entry k = (i, j) of a CSC matrix.

    The gradient of a sparse matrix parameter restricted to its pattern: nothing dense is made.
    """
    cdef Py_ssize_t j, k, i, ncol = indptr.shape[0] - 1
    with nogil:
        for j in range(ncol):
            for k in range(indptr[j], indptr[j + 1]):
                i = indices[k]
                out[k] = a[i] * b[j] + c[i] * d[j]


# ---------------------------------------------------------------------------------------------
# Symmetric matrix-vector product from the stored upper triangle
# ---------------------------------------------------------------------------------------------

def sym_upper_matvec_add(const index_t[::1] indptr, const index_t[::1] indices,
                         const double[::1] data, const double[::1] u, double[::1] out):
    """out += K u for the symmetric K whose upper triangle (diagonal included) is the CSC
    (indptr, indices, data): one pass over the stored entries, no transposed copy."""
    cdef Py_ssize_t j, k, i, ncol = indptr.shape[0] - 1
    cdef double v, uj, acc
    with nogil:
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
