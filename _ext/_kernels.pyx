# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Numeric kernels of the proximal augmented-Lagrangian solver.

Everything here assumes clean input (validated and converted by sparseqp.problem): contiguous
float64 vectors and CSC/CSR index arrays. No Python objects inside the loops.
"""
from libc.math cimport fabs, sqrt, INFINITY, NAN
from libc.stdlib cimport malloc, free
import numpy as np

ctypedef fused index_t:
    int
    long long

cdef inline double _nanmax(double out, double r) noexcept nogil:
    # np.max's rule: a nan, once seen, is the maximum
    return r if (r > out or r != r) else out


# ---------------------------------------------------------------------------------------------
# Ruiz equilibration
# ---------------------------------------------------------------------------------------------

cdef void _csc_scale_absmax(const index_t[::1] indptr, const index_t[::1] indices,
                            double[::1] data, const double[::1] drow, const double[::1] dcol,
                            bint scale, double[::1] colmax, double[::1] rowmax,
                            bint do_rows) noexcept nogil:
    """M_ij *= drow[i] dcol[j] (if ``scale``), then colmax[j] = max(colmax[j], max_i |M_ij|)
    and rowmax[i] likewise (if ``do_rows``): one pass over the data for an iteration's
    scaling and the next one's norms.

    Branch-free maxima (the conditional expressions compile to max instructions): the
    branches mispredicted on random data, and with one pass each for the norms and the
    scaling Ruiz took 23 ms for its 10 iterations at random n = 20,000 (now 6 ms)."""
    cdef Py_ssize_t j, k, i, ncol = indptr.shape[0] - 1
    cdef double v, c, r, dj
    for j in range(ncol):
        c = colmax[j]
        dj = dcol[j]
        for k in range(indptr[j], indptr[j + 1]):
            i = indices[k]
            if scale:
                data[k] *= drow[i] * dj
            v = fabs(data[k])
            c = v if v > c else c
            if do_rows:
                r = rowmax[i]
                rowmax[i] = v if v > r else r
        colmax[j] = c


cdef void _csc_scale(const index_t[::1] indptr, const index_t[::1] indices, double[::1] data,
                     const double[::1] drow, const double[::1] dcol) noexcept nogil:
    cdef Py_ssize_t j, k, ncol = indptr.shape[0] - 1
    cdef double dj
    for j in range(ncol):
        dj = dcol[j]
        for k in range(indptr[j], indptr[j + 1]):
            data[k] *= drow[indices[k]] * dj


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
    if iters <= 0:
        return
    with nogil:
        # KKT column j < n holds H[:, j], A[:, j] and C[:, j]; column n + i holds A[i, :].
        _csc_scale_absmax(Hp, Hi, Hx, dD, dD, False, cn, dummy, False)
        _csc_scale_absmax(Ap, Ai, Ax, dE, dD, False, cn, rn_a, True)
        _csc_scale_absmax(Cp, Ci, Cx, dF, dD, False, cn, rn_c, True)
        for it in range(iters):
            for i in range(n):
                dD[i] = _inv_sqrt_norm(cn[i])
                D[i] *= dD[i]
                cn[i] = 0.0
            for i in range(m):
                dE[i] = _inv_sqrt_norm(rn_a[i])
                E[i] *= dE[i]
                rn_a[i] = 0.0
            for i in range(p):
                dF[i] = _inv_sqrt_norm(rn_c[i])
                F[i] *= dF[i]
                rn_c[i] = 0.0
            if it + 1 < iters:
                _csc_scale_absmax(Hp, Hi, Hx, dD, dD, True, cn, dummy, False)
                _csc_scale_absmax(Ap, Ai, Ax, dE, dD, True, cn, rn_a, True)
                _csc_scale_absmax(Cp, Ci, Cx, dF, dD, True, cn, rn_c, True)
            else:
                _csc_scale(Hp, Hi, Hx, dD, dD)
                _csc_scale(Ap, Ai, Ax, dE, dD)
                _csc_scale(Cp, Ci, Cx, dF, dD)


# ---------------------------------------------------------------------------------------------
# Convexity check
# ---------------------------------------------------------------------------------------------

def upper_shifted(const index_t[::1] indptr, const index_t[::1] indices, const double[::1] data,
                  double delta):
    """The upper triangle of H + delta I as CSC (indptr, indices, data), and whether H has a
    nonzero off the diagonal. H (n x n) is CSC with sorted row indices, no duplicates.

    The same matrix as ``sp.triu(H) + delta * sp.eye(n)`` in scipy: rows sorted within each
    column, entries whose value is exactly 0 dropped, the diagonal value H_jj + delta.
    """
    cdef Py_ssize_t n = indptr.shape[0] - 1, j, k, i, nnz = 0
    cdef bint offdiag = False, has_diag
    cdef double v
    cdef long long[::1] up = np.empty(n + 1, dtype=np.int64)
    cdef long long[::1] ui = np.empty(indices.shape[0] + n, dtype=np.int64)
    cdef double[::1] ux = np.empty(indices.shape[0] + n)
    with nogil:
        up[0] = 0
        for j in range(n):
            has_diag = False
            for k in range(indptr[j], indptr[j + 1]):
                i = indices[k]
                if i != j and data[k] != 0.0:
                    offdiag = True
                if i > j:
                    continue
                if i == j:
                    v = data[k] + delta
                    has_diag = True
                else:
                    v = data[k] + 0.0
                if v != 0.0:
                    ui[nnz] = i
                    ux[nnz] = v
                    nnz += 1
            if not has_diag:
                v = 0.0 + delta
                if v != 0.0:
                    ui[nnz] = j
                    ux[nnz] = v
                    nnz += 1
            up[j + 1] = nnz
    return offdiag, np.asarray(up), np.asarray(ui[:nnz]).copy(), np.asarray(ux[:nnz]).copy()


def ldl_negative_pivots(const index_t[::1] indptr, const index_t[::1] indices,
                        const double[::1] data, double delta, const long long[::1] perm):
    """Number of negative pivots of the LDL' factorization of H + delta I in the elimination
    order ``perm`` (perm[k] = the column of H eliminated k-th), or -1 when a pivot is exactly
    zero. H (n x n) is CSC; only its upper triangle is read, as in :func:`upper_shifted`
    (entries exactly 0 skipped), so the matrix is the one that check gives qdldl.

    By Sylvester's law of inertia the count does not depend on the order; the order only
    sets the fill. The convexity check passes the order qdldl's AMD chose for H's first
    check, so a check of new values on the same pattern (``Solver.update(H=...)``) costs one
    numeric factorization and no ordering (box n = 20,000: 18 -> 4 ms). Up-looking: row k of
    L solves a sparse triangular system whose pattern is the reach of H's column k in the
    elimination tree; L is kept only until the function returns."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, j, p, i, k, t, top, ln, nb = 0, nnz_l = 0
    cdef Py_ssize_t neg = 0
    cdef double v, yi, lki, d
    cdef Py_ssize_t[::1] pinv = np.empty(n, dtype=np.intp)
    cdef Py_ssize_t[::1] Bp = np.zeros(n + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] parent = np.full(n, -1, dtype=np.intp)
    cdef Py_ssize_t[::1] flag = np.empty(n, dtype=np.intp)
    cdef Py_ssize_t[::1] Lp = np.empty(n + 1, dtype=np.intp)
    cdef Py_ssize_t[::1] Lnz = np.zeros(n, dtype=np.intp)
    cdef Py_ssize_t[::1] stack = np.empty(n, dtype=np.intp)
    cdef double[::1] y = np.zeros(n)
    cdef double[::1] D = np.empty(n)
    cdef Py_ssize_t[::1] Bi
    cdef double[::1] Bx
    cdef Py_ssize_t[::1] Li
    cdef double[::1] Lx
    if perm.shape[0] != n:
        raise ValueError(f"perm has {perm.shape[0]} entries for a matrix of order {n}")
    with nogil:
        for k in range(n):
            pinv[k] = -1
        for k in range(n):
            j = perm[k]
            if j < 0 or j >= n or pinv[j] >= 0:
                nb = -1
                break
            pinv[j] = k
    if nb < 0:
        raise ValueError("perm is not a permutation")
    # the upper triangle of P (H + delta I) P' as CSC (rows unsorted), column k = new index:
    # count, then fill; every column holds its diagonal (delta at least)
    with nogil:
        for j in range(n):
            Bp[pinv[j] + 1] += 1
            for p in range(indptr[j], indptr[j + 1]):
                i = indices[p]
                if i < j and data[p] != 0.0:
                    Bp[max(pinv[i], pinv[j]) + 1] += 1
        for k in range(n):
            Bp[k + 1] += Bp[k]
        nb = Bp[n]
    Bi = np.empty(nb, dtype=np.intp)
    Bx = np.empty(nb)
    with nogil:
        for k in range(n):
            flag[k] = Bp[k]             # next free slot of new column k
        for j in range(n):
            v = delta
            for p in range(indptr[j], indptr[j + 1]):
                i = indices[p]
                if i == j:
                    v = data[p] + delta
                elif i < j and data[p] != 0.0:
                    k = max(pinv[i], pinv[j])
                    Bi[flag[k]] = min(pinv[i], pinv[j])
                    Bx[flag[k]] = data[p]
                    flag[k] += 1
            k = pinv[j]
            Bi[flag[k]] = k
            Bx[flag[k]] = v
            flag[k] += 1
        # elimination tree and the column counts of L
        for k in range(n):
            flag[k] = k
            for p in range(Bp[k], Bp[k + 1]):
                i = Bi[p]
                while flag[i] != k:
                    if parent[i] == -1:
                        parent[i] = k
                    Lnz[i] += 1
                    flag[i] = k
                    i = parent[i]
        Lp[0] = 0
        for k in range(n):
            Lp[k + 1] = Lp[k] + Lnz[k]
            Lnz[k] = 0
        nnz_l = Lp[n]
    Li = np.empty(nnz_l, dtype=np.intp)
    Lx = np.empty(nnz_l)
    with nogil:
        for k in range(n):
            # y = column k of the permuted upper triangle; the pattern of row k of L is the
            # union of the tree paths from its rows up to k, stacked in topological order
            top = n
            flag[k] = k
            for p in range(Bp[k], Bp[k + 1]):
                i = Bi[p]
                y[i] += Bx[p]
                ln = 0
                while flag[i] != k:
                    stack[ln] = i           # bottom part of stack: this path, reversed below
                    ln += 1
                    flag[i] = k
                    i = parent[i]
                while ln > 0:
                    ln -= 1
                    top -= 1
                    # the path sits at stack[0:ln], disjoint from stack[top:n] (top > ln)
                    t = stack[ln]
                    stack[top] = t
            d = y[k]
            y[k] = 0.0
            for t in range(top, n):
                i = stack[t]
                yi = y[i]
                y[i] = 0.0
                for p in range(Lp[i], Lp[i] + Lnz[i]):
                    y[Li[p]] -= Lx[p] * yi
                lki = yi / D[i]
                d -= lki * yi
                Li[Lp[i] + Lnz[i]] = k
                Lx[Lp[i] + Lnz[i]] = lki
                Lnz[i] += 1
            if d == 0.0:
                neg = -1
                break
            if d < 0.0:
                neg += 1
            D[k] = d
    return neg


# ---------------------------------------------------------------------------------------------
# Format conversion
# ---------------------------------------------------------------------------------------------

def csc_to_csr(const long long[::1] indptr, const long long[::1] indices, const double[::1] data,
               Py_ssize_t nrows):
    """CSR arrays (indptr (nrows + 1,), indices, data) of the CSC matrix (nrows x ncols) given.

    The same arrays as scipy's ``tocsr()`` (a counting sort over the columns in order, so the
    column indices of each row come out sorted): products with either run the same sums.
    """
    cdef Py_ssize_t ncols = indptr.shape[0] - 1, nnz = indices.shape[0], i, j, k, dest
    cdef long long[::1] rp = np.zeros(nrows + 1, dtype=np.int64)
    cdef long long[::1] ri = np.empty(nnz, dtype=np.int64)
    cdef double[::1] rx = np.empty(nnz)
    with nogil:
        for k in range(nnz):
            rp[indices[k] + 1] += 1
        for i in range(nrows):
            rp[i + 1] += rp[i]
        # rp[i] is the next free slot of row i while filling, shifted back after
        for j in range(ncols):
            for k in range(indptr[j], indptr[j + 1]):
                i = indices[k]
                dest = rp[i]
                ri[dest] = j
                rx[dest] = data[k]
                rp[i] = dest + 1
        for i in range(nrows, 0, -1):
            rp[i] = rp[i - 1]
        rp[0] = 0
    return np.asarray(rp), np.asarray(ri), np.asarray(rx)


# ---------------------------------------------------------------------------------------------
# KKT values on the fixed pattern
# ---------------------------------------------------------------------------------------------

def kkt_pattern(const long long[::1] h_ptr, const long long[::1] h_ind,
                const long long[::1] a_ptr, const long long[::1] a_ind,
                const long long[::1] c_ptr, const long long[::1] c_ind):
    """The fixed pattern of the upper-triangular KKT matrix (layout: see sparseqp.kkt).

    H (n x n) is CSC, A (m x n) and C (p x n) are CSR, all with int64 indices. Returns a dict:
    ``indptr`` (N + 1,) and ``indices`` of K (N = n + m + p); ``h_strict`` (positions in H's
    data of its strict upper entries) and ``hs_pos`` (where they go in K's data); ``h_diag``,
    ``h_diag_col`` (positions and columns of H's diagonal entries); ``hd_pos`` (n,), ``ad_pos``
    (m,), ``cd_pos`` (p,) (K positions of the diagonals); ``a_pos`` (K positions of A's
    entries, in A's CSR order); ``base_c`` (K position of C's first entry).
    """
    cdef Py_ssize_t n = h_ptr.shape[0] - 1, m = a_ptr.shape[0] - 1, p = c_ptr.shape[0] - 1
    cdef Py_ssize_t a_nnz = a_ind.shape[0], c_nnz = c_ind.shape[0]
    cdef Py_ssize_t j, k, i, ns = 0, nd = 0, pos = 0, base_a, base_c, r
    for j in range(n):
        for k in range(h_ptr[j], h_ptr[j + 1]):
            if h_ind[k] < j:
                ns += 1
            elif h_ind[k] == j:
                nd += 1
    base_a = ns + n
    base_c = base_a + a_nnz + m
    cdef Py_ssize_t total = base_c + c_nnz + p
    cdef long long[::1] indptr = np.empty(n + m + p + 1, dtype=np.int64)
    cdef long long[::1] indices = np.empty(total, dtype=np.int64)
    cdef long long[::1] h_strict = np.empty(ns, dtype=np.int64)
    cdef long long[::1] hs_pos = np.empty(ns, dtype=np.int64)
    cdef long long[::1] h_diag = np.empty(nd, dtype=np.int64)
    cdef long long[::1] h_diag_col = np.empty(nd, dtype=np.int64)
    cdef long long[::1] hd_pos = np.empty(n, dtype=np.int64)
    cdef long long[::1] ad_pos = np.empty(m, dtype=np.int64)
    cdef long long[::1] cd_pos = np.empty(p, dtype=np.int64)
    cdef long long[::1] a_pos = np.empty(a_nnz, dtype=np.int64)
    ns = 0
    nd = 0
    with nogil:
        for j in range(n):
            indptr[j] = pos
            for k in range(h_ptr[j], h_ptr[j + 1]):
                r = h_ind[k]
                if r < j:
                    h_strict[ns] = k
                    hs_pos[ns] = pos
                    indices[pos] = r
                    ns += 1
                    pos += 1
                elif r == j:
                    h_diag[nd] = k
                    h_diag_col[nd] = j
                    nd += 1
            hd_pos[j] = pos
            indices[pos] = j
            pos += 1
        for i in range(m):
            indptr[n + i] = pos
            for k in range(a_ptr[i], a_ptr[i + 1]):
                a_pos[k] = pos
                indices[pos] = a_ind[k]
                pos += 1
            ad_pos[i] = pos
            indices[pos] = n + i
            pos += 1
        for i in range(p):
            indptr[n + m + i] = pos
            for k in range(c_ptr[i], c_ptr[i + 1]):
                indices[pos] = c_ind[k]
                pos += 1
            cd_pos[i] = pos
            indices[pos] = n + m + i
            pos += 1
        indptr[n + m + p] = pos
    return dict(indptr=np.asarray(indptr), indices=np.asarray(indices),
                h_strict=np.asarray(h_strict), hs_pos=np.asarray(hs_pos),
                h_diag=np.asarray(h_diag), h_diag_col=np.asarray(h_diag_col),
                hd_pos=np.asarray(hd_pos), ad_pos=np.asarray(ad_pos), cd_pos=np.asarray(cd_pos),
                a_pos=np.asarray(a_pos), base_c=base_c)


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


def fill_kkt_diagonals(double[::1] kkt_data, const long long[::1] hd_pos,
                       const double[::1] hdiag, double rho, const long long[::1] ad_pos,
                       const double[::1] mu_eq):
    """kkt_data[hd_pos[j]] = hdiag[j] + rho (j < n), kkt_data[ad_pos[i]] = -mu_eq[i] (i < m)."""
    cdef Py_ssize_t i
    with nogil:
        for i in range(hd_pos.shape[0]):
            kkt_data[hd_pos[i]] = hdiag[i] + rho
        for i in range(ad_pos.shape[0]):
            kkt_data[ad_pos[i]] = -mu_eq[i]


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
    Py_ssize_t k    # insertion index: ties in t are taken in insertion order


cdef inline bint _bp_less(const Breakpoint* a, const Breakpoint* b) noexcept nogil:
    return a.t < b.t or (a.t == b.t and a.k < b.k)


cdef void _sift_down(Breakpoint* h, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t c
    cdef Breakpoint x = h[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _bp_less(&h[c + 1], &h[c]):
            c += 1
        if not _bp_less(&h[c], &x):
            break
        h[i] = h[c]
        i = c
    h[i] = x


cdef inline void _ls_row(double v, double c, double l, double u, double mu, double* d0,
                         double* s, Breakpoint* bps, Py_ssize_t* nb) noexcept nogil:
    """Add row i (v = w_i, c = cd_i) to the slope d0 and curvature s at alpha = 0+, and its
    breakpoints strictly after 0 to bps[nb:]."""
    cdef double cc, t
    if c == 0.0:
        return
    cc = c * c / mu
    if v > u or (v == u and c > 0):
        d0[0] += c * (v - u) / mu
        s[0] += cc
    elif v < l or (v == l and c < 0):
        d0[0] += c * (v - l) / mu
        s[0] += cc
    if u < INFINITY:
        t = (u - v) / c
        if t > 0:
            bps[nb[0]].t = t
            bps[nb[0]].k = nb[0]
            # crossing u: entering (c < 0) removes slope, leaving (c > 0) adds it
            bps[nb[0]].dslope = cc if c > 0 else -cc
            nb[0] += 1
    if l > -INFINITY:
        t = (l - v) / c
        if t > 0:
            bps[nb[0]].t = t
            bps[nb[0]].k = nb[0]
            bps[nb[0]].dslope = cc if c < 0 else -cc
            nb[0] += 1


cdef double _ls_search(double d0, double* s, Breakpoint* bps, Py_ssize_t nb) noexcept nogil:
    """The zero of the piecewise-linear phi' from slope d0 and curvature s at 0+ over the
    breakpoints bps[:nb] (reordered here): nan when d0 >= 0, inf when phi' stays negative. s
    returns the curvature at alpha."""
    cdef Py_ssize_t i
    cdef double t, v, r, tprev, ds
    if d0 >= 0:
        return NAN
    # The zero usually comes within the first few percent of the breakpoints (Newton steps are
    # near 1): a heap, popped in (t, insertion) order, touches only those; a sort paid for all.
    for i in range(nb // 2 - 1, -1, -1):
        _sift_down(bps, nb, i)
    tprev = 0.0
    r = d0
    while nb > 0:
        t = bps[0].t
        ds = bps[0].dslope
        nb -= 1
        bps[0] = bps[nb]
        _sift_down(bps, nb, 0)
        v = r + s[0] * (t - tprev)
        if v >= 0 and s[0] > 0:
            return tprev - r / s[0]
        r = v
        tprev = t
        s[0] += ds
    if s[0] > 0:
        return tprev - r / s[0]
    return INFINITY


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
    cdef double d0 = lin, s = quad, alpha
    cdef Breakpoint* bps = <Breakpoint*> malloc((2 * p + 1) * sizeof(Breakpoint))
    if bps == NULL:
        raise MemoryError()
    with nogil:
        for i in range(p):
            _ls_row(w[i], cd[i], l[i], u[i], mu_in[i], &d0, &s, bps, &nb)
        alpha = _ls_search(d0, &s, bps, nb)
    free(bps)
    return alpha, s, d0


# ---------------------------------------------------------------------------------------------
# Residuals on the unscaled problem
# ---------------------------------------------------------------------------------------------

cdef inline void _csc_matvec(const index_t[::1] ptr, const index_t[::1] idx, const double[::1] val,
                        const double[::1] v, double[::1] out) noexcept nogil:
    """out = M v for a CSC M with len(out) rows (scipy's csc_matvec order)."""
    cdef Py_ssize_t j, k
    cdef double vj
    for j in range(out.shape[0]):
        out[j] = 0.0
    for j in range(ptr.shape[0] - 1):
        vj = v[j]
        for k in range(ptr[j], ptr[j + 1]):
            out[idx[k]] += val[k] * vj


def problem_residuals(const index_t[::1] Hp, const index_t[::1] Hi, const double[::1] Hx,
                      const index_t[::1] Ap, const index_t[::1] Ai, const double[::1] Ax,
                      const index_t[::1] Cp, const index_t[::1] Ci, const double[::1] Cx,
                      const double[::1] g, const double[::1] b, const double[::1] l,
                      const double[::1] u, const double[::1] x, const double[::1] y,
                      const double[::1] z):
    """The unscaled residuals of :meth:`sparseqp.problem.Problem.residuals`, bitwise.

    H (n x n), A (m x n), C (p x n) are the problem's CSC matrices; x (n,), y (m,), z (p,).
    Returns (Ax (m,), Cx (p,), Hx (n,), prim, dual) with prim = max(|Ax - b|, |Cx - clip(Cx,
    l, u)|) and dual = |Hx + g + A'y + C'z| (infinity norms, nan handled as there).
    """
    cdef Py_ssize_t n = Hp.shape[0] - 1, m = b.shape[0], p = l.shape[0], i, k
    ax_a, cx_a, hx_a = np.empty(m), np.empty(p), np.empty(n)
    cdef double[::1] ax = ax_a, cx = cx_a, hx = hx_a
    cdef double rp = 0.0, rd = 0.0, v, c, s, t
    with nogil:
        _csc_matvec(Ap, Ai, Ax, x, ax)
        _csc_matvec(Cp, Ci, Cx, x, cx)
        _csc_matvec(Hp, Hi, Hx, x, hx)
        # Python's max(rp, np.max(...)): a nan part leaves rp as it was
        if m:
            v = 0.0
            for i in range(m):
                v = _nanmax(v, fabs(ax[i] - b[i])) if i else fabs(ax[i] - b[i])
            rp = v if v > rp else rp
        if p:
            v = 0.0
            for i in range(p):
                # np.clip = minimum(maximum(cx, l), u), nan-propagating
                c = cx[i]
                if c != c or l[i] != l[i]:
                    c = NAN
                elif c < l[i]:
                    c = l[i]
                if c != c or u[i] != u[i]:
                    c = NAN
                elif c > u[i]:
                    c = u[i]
                t = fabs(cx[i] - c)
                v = _nanmax(v, t) if i else t
            rp = v if v > rp else rp
        for i in range(n):
            s = hx[i] + g[i]
            if m:
                t = 0.0
                for k in range(Ap[i], Ap[i + 1]):
                    t += Ax[k] * y[Ai[k]]
                s = s + t
            if p:
                t = 0.0
                for k in range(Cp[i], Cp[i + 1]):
                    t += Cx[k] * z[Ci[k]]
                s = s + t
            rd = _nanmax(rd, fabs(s)) if i else fabs(s)
    return ax_a, cx_a, hx_a, rp, rd


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


def complementarity(const double[::1] z, const double[::1] cx, const double[::1] l,
                    const double[::1] u, const double[::1] scale):
    """max over the rows with z_i != 0 of |bound_i - cx_i| / scale_i, the bound u_i where
    z_i > 0 and l_i where z_i < 0, a distance that is not finite counting as 0 (the scaled
    complementarity of ProxALM._complementarity, unscaled by ``scale`` = F)."""
    cdef Py_ssize_t i, p = z.shape[0]
    cdef double g, r, out = 0.0
    with nogil:
        for i in range(p):
            if z[i] > 0.0:
                g = u[i] - cx[i]
            elif z[i] < 0.0:
                g = cx[i] - l[i]
            else:
                continue
            if not fabs(g) < INFINITY:
                continue
            r = fabs(fabs(g) / scale[i])
            if r > out:
                out = r
    return out


def z_signs(const double[::1] z):
    """The active-set signs that multipliers z point at: 1 (upper bound), -1 (lower), 0, as
    a new int8 array."""
    cdef Py_ssize_t i, p = z.shape[0]
    cdef signed char[::1] out = np.empty(p, dtype=np.int8)
    with nogil:
        for i in range(p):
            out[i] = 1 if z[i] > 0.0 else (-1 if z[i] < 0.0 else 0)
    return np.asarray(out)


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
# Sparse products into caller buffers, and the fused steps of the ProxALM inner loop
# ---------------------------------------------------------------------------------------------
# At n in the hundreds to thousands one scipy sparse product costs ~6 us of dispatch for well
# under 1 us of arithmetic, and the solver made ~10 of them plus ~30 numpy temporaries per Newton
# step: Python overhead, not factorizations, dominated small and medium solves.
#
# Every product here repeats scipy's summation order: a CSR product is a gather starting from
# 0.0 (csr_matvec), a CSC product a scatter into a zeroed vector (csc_matvec), and fused sums add
# each complete product to the running vector in the order the numpy expressions did. The
# results are bitwise those of the scipy/numpy code they replace, so the iterates (and the
# iteration and factorization counts) do not depend on which computed them.

cdef inline double _row_dot(const long long[::1] ptr, const long long[::1] idx,
                            const double[::1] val, Py_ssize_t i, const double[::1] v) noexcept nogil:
    """Row i of a CSR matrix times v (scipy's csr_matvec order)."""
    cdef Py_ssize_t k
    cdef double s = 0.0
    for k in range(ptr[i], ptr[i + 1]):
        s += val[k] * v[idx[k]]
    return s


def _as_values(a):
    # the data arrays are views: in-place changes of the matrices' values are seen
    return np.ascontiguousarray(a, dtype=np.float64)


cdef class SparseOps:
    """The scaled matrices of a problem for products into caller buffers.

    H (n x n, symmetric with both triangles stored) as CSC; A (m x n) and C (p x n) as CSR
    (rows: A v, C v) and as CSC, i.e. the CSR of their transposes (A' w, C' w). Each matrix is
    a tuple (indptr, indices, data) of int64, int64, float64 arrays, kept as given (no copies:
    in-place changes of the values are seen).
    """
    cdef readonly Py_ssize_t n, m, p
    cdef const long long[::1] Hp, Hi, Ap, Ai, Atp, Ati, Cp, Ci, Ctp, Cti
    cdef const double[::1] Hv, Av, Atv, Cv, Ctv
    cdef object _args

    def __init__(self, Py_ssize_t n, Py_ssize_t m, Py_ssize_t p, h_csc, a_csr, a_csc, c_csr,
                 c_csc):
        self._args = (n, m, p, h_csc, a_csr, a_csc, c_csr, c_csc)
        self.n, self.m, self.p = n, m, p
        self.Hp, self.Hi, self.Hv = h_csc
        self.Ap, self.Ai, self.Av = a_csr
        self.Atp, self.Ati, self.Atv = a_csc
        self.Cp, self.Ci, self.Cv = c_csr
        self.Ctp, self.Cti, self.Ctv = c_csc

    def __reduce__(self):
        return SparseOps, self._args


cdef class Workspace:
    """Preallocated vectors and the fused kernels of one ProxALM run.

    Holds the scaled problem's operators (:class:`SparseOps`), its b (m,), l, u (p,), g (n,), the
    dual unscaling (n,), and the point quantities of the current inner iterate, exposed as numpy
    arrays that the kernels overwrite: ``Ax`` (m,), ``Cx`` (p,), ``y`` (m,), ``z`` (p,),
    ``active`` (p, int8), ``Hx``, ``smooth``, ``grad`` (n,).
    """
    cdef Py_ssize_t n, m, p
    cdef const long long[::1] Hp, Hi, Ap, Ai, Atp, Ati, Cp, Ci, Ctp, Cti
    cdef const double[::1] Hv, Av, Atv, Cv, Ctv
    cdef const double[::1] b, l, u, g, dual_unscale
    cdef readonly object Ax, Cx, y, z, active, Hx, smooth, grad
    cdef double[::1] ax, cx, yv, zv, hx, sm, gr
    cdef signed char[::1] act
    # scratch of the line search and the reduced matvec
    cdef double[::1] hd, t_eq, t_in, tn
    cdef Breakpoint* bps
    # the last line search's w = Cx + mu_in ze, cd = C dx, smooth slope and curvature and
    # slope at 0+ (see longest_armijo_step)
    cdef double[::1] ls_w, ls_cd
    cdef double ls_lin, ls_quad, ls_d0

    def __cinit__(self):
        self.bps = NULL

    def __init__(self, SparseOps op, b, l, u, g, dual_unscale):
        n, m, p = op.n, op.m, op.p
        self.Hp, self.Hi, self.Hv = op.Hp, op.Hi, op.Hv
        self.Ap, self.Ai, self.Av = op.Ap, op.Ai, op.Av
        self.Atp, self.Ati, self.Atv = op.Atp, op.Ati, op.Atv
        self.Cp, self.Ci, self.Cv = op.Cp, op.Ci, op.Cv
        self.Ctp, self.Cti, self.Ctv = op.Ctp, op.Cti, op.Ctv
        self.n, self.m, self.p = n, m, p
        self.b, self.l, self.u = _as_values(b), _as_values(l), _as_values(u)
        self.g, self.dual_unscale = _as_values(g), _as_values(dual_unscale)
        self.Ax, self.Cx, self.y, self.z = np.zeros(m), np.zeros(p), np.zeros(m), np.zeros(p)
        self.active = np.zeros(p, dtype=np.int8)
        self.Hx, self.smooth, self.grad = np.zeros(n), np.zeros(n), np.zeros(n)
        self.ax, self.cx, self.yv, self.zv = self.Ax, self.Cx, self.y, self.z
        self.act = self.active
        self.hx, self.sm, self.gr = self.Hx, self.smooth, self.grad
        self.hd, self.t_eq, self.t_in, self.tn = np.zeros(n), np.zeros(m), np.zeros(p), np.zeros(n)
        self.ls_w, self.ls_cd = np.zeros(p), np.zeros(p)
        self.ls_lin = self.ls_quad = self.ls_d0 = NAN
        self.bps = <Breakpoint*> malloc((2 * p + 1) * sizeof(Breakpoint))
        if self.bps == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.bps)

    def inner_point(self, const double[::1] x, const double[::1] xe, const double[::1] ye,
                    const double[::1] ze, double rho, const double[::1] mu_eq,
                    const double[::1] mu_in, const signed char[::1] active_ref):
        """Evaluate the inner problem at x (all vectors scaled; x, xe (n,), ye, mu_eq (m,),
        ze, mu_in (p,)).

        Fills Ax, Cx, y = ye + (Ax - b) / mu_eq, z and active (as :func:`inner_multipliers`),
        Hx, smooth = Hx + g + rho (x - xe) and grad = smooth + A'y + C'z. Returns
        (n_changed, gnorm): rows whose activity differs from active_ref, and
        max_i |grad_i * dual_unscale_i|.
        """
        cdef Py_ssize_t i, n = self.n, m = self.m, p = self.p, n_changed = 0
        cdef double w, s, gn = 0.0
        cdef signed char a
        with nogil:
            for i in range(m):
                s = _row_dot(self.Ap, self.Ai, self.Av, i, x)
                self.ax[i] = s
                self.yv[i] = ye[i] + (s - self.b[i]) / mu_eq[i]
            for i in range(p):
                s = _row_dot(self.Cp, self.Ci, self.Cv, i, x)
                self.cx[i] = s
                w = s + mu_in[i] * ze[i]
                if w > self.u[i]:
                    self.zv[i] = (w - self.u[i]) / mu_in[i]
                    a = 1
                elif w < self.l[i]:
                    self.zv[i] = (w - self.l[i]) / mu_in[i]
                    a = -1
                else:
                    self.zv[i] = 0.0
                    a = 0
                self.act[i] = a
                if (a != 0) != (active_ref[i] != 0):
                    n_changed += 1
            _csc_matvec(self.Hp, self.Hi, self.Hv, x, self.hx)
            for i in range(n):
                s = (self.hx[i] + self.g[i]) + rho * (x[i] - xe[i])
                self.sm[i] = s
                if m:
                    s = s + _row_dot(self.Atp, self.Ati, self.Atv, i, self.yv)
                if p:
                    s = s + _row_dot(self.Ctp, self.Cti, self.Ctv, i, self.zv)
                self.gr[i] = s
                s = fabs(s * self.dual_unscale[i])
                if s > gn:
                    gn = s
        return n_changed, gn

    def line_search(self, const double[::1] dx, double rho, const double[::1] mu_eq,
                    const double[::1] mu_in, const double[::1] ze):
        """Exact line search along dx (n,) from the point of the last :meth:`inner_point`
        (its smooth, y, Cx; ze (p,) the prox center of z).

        Returns (alpha, dHd, dd): alpha as :func:`exact_linesearch` (nan: not a descent
        direction, inf: unbounded), dHd = dx'H dx and dd = dx'dx for the caller's curvature
        test.
        """
        cdef Py_ssize_t i, n = self.n, m = self.m, p = self.p, nb = 0
        cdef double dHd = 0.0, dd = 0.0, lin = 0.0, wq = 0.0, wy = 0.0, s, quad, alpha, d0
        with nogil:
            _csc_matvec(self.Hp, self.Hi, self.Hv, dx, self.hd)
            for i in range(n):
                dHd += dx[i] * self.hd[i]
            for i in range(n):
                dd += dx[i] * dx[i]
            quad = dHd + rho * dd
            for i in range(n):
                lin += dx[i] * self.sm[i]
            if m:
                for i in range(m):
                    s = _row_dot(self.Ap, self.Ai, self.Av, i, dx)
                    wq += s * s / mu_eq[i]
                    wy += s * self.yv[i]
                quad += wq
                lin += wy
            self.ls_lin, self.ls_quad = lin, quad
            if p:
                # w = Cx + mu_in ze and cd = C dx, one row at a time (kept for
                # longest_armijo_step)
                d0, s = lin, quad
                for i in range(p):
                    self.ls_w[i] = self.cx[i] + mu_in[i] * ze[i]
                    self.ls_cd[i] = _row_dot(self.Cp, self.Ci, self.Cv, i, dx)
                    _ls_row(self.ls_w[i], self.ls_cd[i], self.l[i], self.u[i], mu_in[i], &d0,
                            &s, self.bps, &nb)
                self.ls_d0 = d0
                alpha = _ls_search(d0, &s, self.bps, nb)
            else:
                self.ls_d0 = lin
                alpha = -lin / quad if (lin < 0 and quad > 0) else NAN
        return alpha, dHd, dd

    cdef double _merit_change(self, double t, const double[::1] mu_in) noexcept nogil:
        # phi(x + t dx) - phi(x) along the direction of the last line_search (mu_in as there)
        cdef Py_ssize_t i
        cdef double v = self.ls_lin * t + 0.5 * self.ls_quad * t * t, s = 0.0, w, r0, r1, l, u
        for i in range(self.p):
            if self.ls_cd[i] == 0.0:
                continue
            w, l, u = self.ls_w[i], self.l[i], self.u[i]
            r0 = w - u if w > u else (w - l if w < l else 0.0)
            w = w + t * self.ls_cd[i]
            r1 = w - u if w > u else (w - l if w < l else 0.0)
            s += (r1 - r0) * (r1 + r0) / mu_in[i]
        return v + 0.5 * s

    def longest_armijo_step(self, double alpha, double sigma, const double[::1] mu_in):
        """The largest t in 1, 1/2, 1/4, ... above ``alpha`` (the exact step of the last
        :meth:`line_search`) with the sufficient decrease phi(x + t dx) - phi(x) <=
        sigma t phi'(0+); ``alpha`` when none has it."""
        cdef double t = 1.0, out = alpha
        with nogil:
            while t > alpha:
                if self._merit_change(t, mu_in) <= sigma * t * self.ls_d0:
                    out = t
                    break
                t *= 0.5
        return out

    cdef void _matvec(self, const double[::1] v, double rho, const double[::1] mu_eq,
                      const double[::1] mu_in, const signed char[::1] active,
                      const double[::1] rhs, double[::1] out) noexcept nogil:
        # out = M v, or rhs - M v when rhs has length n, for
        # M = H + rho I + A' M_eq^-1 A + C_J' M_in^-1 C_J, in _reduced_matvec's order
        cdef Py_ssize_t i, n = self.n, m = self.m, p = self.p
        cdef double s
        cdef bint sub = rhs.shape[0] == n
        _csc_matvec(self.Hp, self.Hi, self.Hv, v, self.hd)
        for i in range(m):
            self.t_eq[i] = _row_dot(self.Ap, self.Ai, self.Av, i, v) / mu_eq[i]
        for i in range(p):
            s = _row_dot(self.Cp, self.Ci, self.Cv, i, v) / mu_in[i]
            self.t_in[i] = s if active[i] != 0 else 0.0
        for i in range(n):
            s = self.hd[i] + rho * v[i]
            if m:
                s = s + _row_dot(self.Atp, self.Ati, self.Atv, i, self.t_eq)
            if p:
                s = s + _row_dot(self.Ctp, self.Cti, self.Ctv, i, self.t_in)
            out[i] = rhs[i] - s if sub else s

    def reduced_matvec(self, const double[::1] v, double rho, const double[::1] mu_eq,
                       const double[::1] mu_in, const signed char[::1] active,
                       double[::1] out):
        """out = (H + rho I + A' M_eq^-1 A + C_J' M_in^-1 C_J) v, v and out (n,); J = rows with
        active != 0. Returns v'out."""
        cdef Py_ssize_t i
        cdef double s = 0.0
        cdef const double[::1] no_rhs = self.t_eq[:0]
        with nogil:
            self._matvec(v, rho, mu_eq, mu_in, active, no_rhs, out)
            for i in range(self.n):
                s += v[i] * out[i]
        return s

    def residual(self, const double[::1] rhs, const double[::1] v, double rho,
                 const double[::1] mu_eq, const double[::1] mu_in,
                 const signed char[::1] active, double[::1] out):
        """out = rhs - M v with M as in :meth:`reduced_matvec` (all (n,)). Returns |out|_2."""
        cdef Py_ssize_t i
        cdef double s = 0.0
        with nogil:
            self._matvec(v, rho, mu_eq, mu_in, active, rhs, out)
            for i in range(self.n):
                s += out[i] * out[i]
        return sqrt(s)

    def unscaled_residuals(self, const double[::1] x, const double[::1] y,
                           const double[::1] z, const double[::1] ax, const double[::1] cx,
                           const double[::1] E, const double[::1] F):
        """(prim, dual, prim_scale, dual_scale), unscaled infinity norms at the scaled point
        x (n,), y (m,), z (p,) with Ax (m,) and Cx (p,); E (m,), F (p,) the row scalings.

        prim = max(|E^-1 (Ax - b)|, |F^-1 (Cx - proj(Cx))|), dual = |s (Hx + g + A'y + C'z)|
        with s the dual unscaling; the scales are the largest norms of the terms.
        """
        cdef Py_ssize_t i, n = self.n, m = self.m, p = self.p
        cdef double rp = 0.0, ps = 0.0, rd = 0.0, ds = 0.0, r, s, t, sc
        with nogil:
            for i in range(m):
                r = fabs((ax[i] - self.b[i]) / E[i])
                rp = r if r > rp else rp
                r = fabs(ax[i] / E[i])
                ps = r if r > ps else ps
                r = fabs(self.b[i] / E[i])
                ps = r if r > ps else ps
            for i in range(p):
                if cx[i] > self.u[i]:
                    r = (cx[i] - self.u[i]) / F[i]
                elif cx[i] < self.l[i]:
                    r = (self.l[i] - cx[i]) / F[i]
                else:
                    r = 0.0
                rp = r if r > rp else rp
                r = fabs(cx[i] / F[i])
                ps = r if r > ps else ps
            _csc_matvec(self.Hp, self.Hi, self.Hv, x, self.hd)
            for i in range(n):
                sc = self.dual_unscale[i]
                s = self.hd[i] + self.g[i]
                r = fabs(self.hd[i] * sc)
                ds = r if r > ds else ds
                r = fabs(self.g[i] * sc)
                ds = r if r > ds else ds
                if m:
                    t = _row_dot(self.Atp, self.Ati, self.Atv, i, y)
                    s = s + t
                    r = fabs(t * sc)
                    ds = r if r > ds else ds
                if p:
                    t = _row_dot(self.Ctp, self.Cti, self.Ctv, i, z)
                    s = s + t
                    r = fabs(t * sc)
                    ds = r if r > ds else ds
                r = fabs(s * sc)
                rd = r if r > rd else rd
        return rp, rd, ps, ds

    def primal_certificate_test(self, const double[::1] dy_s, const double[::1] dz_s,
                                const double[::1] E, const double[::1] F, double c,
                                const double[::1] D):
        """First test of a primal infeasibility certificate from the scaled dy_s (m,), dz_s (p,).

        With the unscaled dy = E dy_s / c, dz = F dz_s / c and norm = max(|dy|_inf, |dz|_inf)
        (Python's max of the two), returns (norm, res), res = |D^-1 (A~' E^-1 dy + C~' F^-1 dz)|_inf
        / norm, the unscaled |A'dy + C'dz|_inf of the normalized direction (nan as np.max has it;
        not computed, 0, when norm <= 1e-300).
        """
        cdef Py_ssize_t i, n = self.n, m = self.m, p = self.p
        cdef double ny = 0.0, nz = 0.0, norm, v, res = 0.0
        with nogil:
            for i in range(m):
                ny = _nanmax(ny, fabs(E[i] * dy_s[i] / c))
            for i in range(p):
                nz = _nanmax(nz, fabs(F[i] * dz_s[i] / c))
            norm = nz if nz > ny else ny
            if not norm <= 1e-300:
                for i in range(m):
                    self.t_eq[i] = (E[i] * dy_s[i] / c) / norm / E[i]
                for i in range(p):
                    self.t_in[i] = (F[i] * dz_s[i] / c) / norm / F[i]
                for i in range(n):
                    v = 0.0
                    if m:
                        v = v + _row_dot(self.Atp, self.Ati, self.Atv, i, self.t_eq)
                    if p:
                        v = v + _row_dot(self.Ctp, self.Cti, self.Ctv, i, self.t_in)
                    res = _nanmax(res, fabs(v / D[i]))
        return norm, res

    def dual_certificate_test(self, const double[::1] dx_s, const double[::1] D, double c):
        """First test of a dual infeasibility certificate from the scaled dx_s (n,).

        With the unscaled dx = D dx_s and norm = |dx|_inf, returns (norm, res),
        res = |H d|_inf (unscaled) for d = dx / norm (nan as np.max has it; 0 when
        norm <= 1e-300).
        """
        cdef Py_ssize_t i, n = self.n
        cdef double norm = 0.0, res = 0.0
        with nogil:
            for i in range(n):
                norm = _nanmax(norm, fabs(D[i] * dx_s[i]))
            if not norm <= 1e-300:
                for i in range(n):
                    self.tn[i] = (D[i] * dx_s[i]) / norm / D[i]
                _csc_matvec(self.Hp, self.Hi, self.Hv, self.tn, self.hd)
                for i in range(n):
                    res = _nanmax(res, fabs(self.hd[i] / (c * D[i])))
        return norm, res

    def h_product(self, const double[::1] x):
        """H x for x (n,), a new array."""
        out = np.empty(self.n)
        cdef double[::1] o = out
        with nogil:
            _csc_matvec(self.Hp, self.Hi, self.Hv, x, o)
        return out

    def polish_system(self, const double[::1] x, const double[::1] y, const double[::1] z,
                      const signed char[::1] sign, const double[::1] Ax, const double[::1] Cx,
                      double rho, const double[::1] mu_eq, const double[::1] mu_in):
        """One round of the Krylov polish's system for the active set J = {sign != 0} at
        (x (n,), y (m,), z (p,)) with their products Ax, Cx (all scaled). Returns new arrays
        (r (N,), diag (N,), zJ (p,)): zJ = z on J, 0 elsewhere; r = [-(Hx + g + A'y + C'zJ);
        b - Ax; (u_i if sign_i > 0 else l_i) - C_i x on J, 0 elsewhere], the residual of the
        equality QP of J; diag = [-rho; mu_eq; mu_in on J, 0 elsewhere], the regularization
        of the factorized matrix against that QP's (N = n + m + p)."""
        cdef Py_ssize_t i, n = self.n, m = self.m, p = self.p
        cdef double s
        r_a, d_a, z_a = np.empty(n + m + p), np.empty(n + m + p), np.empty(p)
        cdef double[::1] r = r_a, d = d_a, zj = z_a
        with nogil:
            for i in range(p):
                if sign[i] > 0:
                    zj[i] = z[i]
                    r[n + m + i] = self.u[i] - Cx[i]
                    d[n + m + i] = mu_in[i]
                elif sign[i] < 0:
                    zj[i] = z[i]
                    r[n + m + i] = self.l[i] - Cx[i]
                    d[n + m + i] = mu_in[i]
                else:
                    zj[i] = 0.0
                    r[n + m + i] = 0.0
                    d[n + m + i] = 0.0
            for i in range(m):
                r[n + i] = self.b[i] - Ax[i]
                d[n + i] = mu_eq[i]
            _csc_matvec(self.Hp, self.Hi, self.Hv, x, self.tn)
            for i in range(n):
                s = self.tn[i] + self.g[i]
                if m:
                    s = s + _row_dot(self.Atp, self.Ati, self.Atv, i, y)
                if p:
                    s = s + _row_dot(self.Ctp, self.Cti, self.Ctv, i, zj)
                r[i] = -s
                d[i] = -rho
        return r_a, d_a, z_a

    def polish_step(self, const double[::1] x, const double[::1] y, const double[::1] zj,
                    const double[::1] delta, const signed char[::1] sign,
                    const double[::1] slack):
        """Move the polish's point (x, y, zJ) by its solve ``delta`` (N,) and correct the
        active set J = {sign != 0} (primal-dual active set). Returns new arrays and a count
        (x, y, z, Ax, Cx, new sign, changes): z = zJ + delta on J, 0 elsewhere; in the new
        sign the rows of J whose multiplier points away from their bound leave (0), and rows
        off J with C_i x above u_i + slack_i (below l_i - slack_i) enter at 1 (-1);
        ``changes`` counts those rows."""
        cdef Py_ssize_t i, n = self.n, m = self.m, p = self.p, changes = 0
        cdef double c
        x_a, y_a, z_a = np.empty(n), np.empty(m), np.empty(p)
        ax_a, cx_a = np.empty(m), np.empty(p)
        sg_a = np.empty(p, dtype=np.int8)
        cdef double[::1] xn = x_a, yn = y_a, zn = z_a, ax = ax_a, cx = cx_a
        cdef signed char[::1] sg = sg_a
        with nogil:
            for i in range(n):
                xn[i] = x[i] + delta[i]
            for i in range(m):
                yn[i] = y[i] + delta[n + i]
                ax[i] = _row_dot(self.Ap, self.Ai, self.Av, i, xn)
            for i in range(p):
                c = _row_dot(self.Cp, self.Ci, self.Cv, i, xn)
                cx[i] = c
                sg[i] = sign[i]
                if sign[i] != 0:
                    zn[i] = zj[i] + delta[n + m + i]
                    if (sign[i] > 0 and zn[i] < 0) or (sign[i] < 0 and zn[i] > 0):
                        sg[i] = 0
                        changes += 1
                else:
                    zn[i] = 0.0
                    if c > self.u[i] + slack[i]:
                        sg[i] = 1
                        changes += 1
                    elif c < self.l[i] - slack[i]:
                        sg[i] = -1
                        changes += 1
        return x_a, y_a, z_a, ax_a, cx_a, sg_a, changes

    def constraint_products(self, const double[::1] x):
        """(A x (m,), C x (p,)) for x (n,), new arrays."""
        ax = np.empty(self.m)
        cx = np.empty(self.p)
        cdef double[::1] a = ax, c = cx
        cdef Py_ssize_t i
        with nogil:
            for i in range(self.m):
                a[i] = _row_dot(self.Ap, self.Ai, self.Av, i, x)
            for i in range(self.p):
                c[i] = _row_dot(self.Cp, self.Ci, self.Cv, i, x)
        return ax, cx


# ---------------------------------------------------------------------------------------------
# Structural rank
# ---------------------------------------------------------------------------------------------

def structural_rank(const index_t[::1] indptr, const index_t[::1] indices, Py_ssize_t n_other):
    """Size of a maximum matching between the major index (len(indptr) - 1: the columns of a
    CSC matrix, the rows of a CSR one) and the minor one (``n_other``) of a sparse pattern:
    the structural rank of the matrix (stored entries count, whatever their value).

    Hopcroft-Karp: each phase layers the graph by a breadth-first search from the unmatched
    major vertices and augments along vertex-disjoint shortest paths by depth-first searches
    that mark a vertex as a dead end once it failed, so a phase touches every entry at most
    once (O(nnz sqrt(n)) in all). scipy's ``csgraph.structural_rank`` does not mark dead ends
    and takes time exponential in the depth of chain-like patterns (scipy issue 26147): on
    the polish's KKT matrix of an MPC problem (N = 1,717, 22,324 entries) it did not return
    in minutes."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, i, k, u, w, c, top, head, tail, size = 0
    cdef Py_ssize_t INF = n + 1
    cdef bint found
    cdef Py_ssize_t[::1] mate = np.full(n, -1, dtype=np.intp)          # major -> minor
    cdef Py_ssize_t[::1] owner = np.full(n_other, -1, dtype=np.intp)   # minor -> major
    cdef Py_ssize_t[::1] dist = np.empty(n, dtype=np.intp)
    cdef Py_ssize_t[::1] queue = np.empty(n, dtype=np.intp)
    cdef Py_ssize_t[::1] stack = np.empty(n, dtype=np.intp)
    cdef Py_ssize_t[::1] nxt = np.empty(n, dtype=np.intp)             # next entry to try
    with nogil:
        # greedy start
        for i in range(n):
            for k in range(indptr[i], indptr[i + 1]):
                c = indices[k]
                if owner[c] < 0:
                    owner[c] = i
                    mate[i] = c
                    size += 1
                    break
        while True:
            # breadth-first layering from the free major vertices
            head = tail = 0
            for i in range(n):
                if mate[i] < 0:
                    dist[i] = 0
                    queue[tail] = i
                    tail += 1
                else:
                    dist[i] = INF
            found = False
            while head < tail:
                u = queue[head]
                head += 1
                for k in range(indptr[u], indptr[u + 1]):
                    w = owner[indices[k]]
                    if w < 0:
                        found = True
                    elif dist[w] == INF:
                        dist[w] = dist[u] + 1
                        queue[tail] = w
                        tail += 1
            if not found:
                break
            for i in range(n):
                nxt[i] = indptr[i]
            # depth-first augmentation from each free major vertex
            for i in range(n):
                if mate[i] >= 0 or dist[i] != 0:
                    continue
                top = 0
                stack[0] = i
                while top >= 0:
                    u = stack[top]
                    if nxt[u] == indptr[u + 1]:
                        dist[u] = INF           # dead end for the rest of this phase
                        top -= 1
                        continue
                    c = indices[nxt[u]]
                    nxt[u] += 1
                    w = owner[c]
                    if w < 0:
                        # free minor vertex: flip the path stack[0..top] (each stacked
                        # vertex's last tried entry leads to the next one)
                        while top >= 0:
                            u = stack[top]
                            c = indices[nxt[u] - 1]
                            owner[c] = u
                            mate[u] = c
                            dist[u] = INF       # used: vertex-disjoint paths per phase
                            top -= 1
                        size += 1
                    elif dist[w] == dist[u] + 1:
                        top += 1
                        stack[top] = w
    return size
