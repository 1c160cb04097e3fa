# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kernels of the GMRES refinement of KKT solves (sparseqp.refine).

Contiguous float64 arrays only; no Python objects inside the loops.
"""
from libc.math cimport sqrt
import numpy as np


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


cdef double _project_out(double[:, ::1] Q, Py_ssize_t k, double[::1] w,
                         double[::1] h, double[::1] c) noexcept nogil:
    """c = Q[:k+1] w, h[:k+1] += c, w -= Q[:k+1]' c; returns |w|^2."""
    cdef Py_ssize_t i, j, N = w.shape[0]
    cdef double t
    for j in range(k + 1):
        c[j] = _dot(&Q[j, 0], &w[0], N)
        h[j] += c[j]
    for j in range(k + 1):
        t = c[j]
        for i in range(N):
            w[i] -= t * Q[j, i]
    return _dot(&w[0], &w[0], N)


def arnoldi_step(double[:, ::1] Q, Py_ssize_t k, const double[::1] corr, const double[::1] z,
                 double[:, ::1] R, double[::1] cs, double[::1] sn, double[::1] g):
    """Step k of GMRES on I + T, T = diag(corr) K^{-1}, given z = K^{-1} Q[k].

    Arnoldi: w = corr * z orthogonalized against Q[:k+1] (classical Gram-Schmidt, repeated once
    only when it cancels all but 1e-2 of |w|, i.e. loses 2+ digits of orthogonality: with at most
    16 vectors and the caller's check of the true residual, milder losses cost at most an
    iteration, while a second pass costs two more sweeps over the basis at every step), its
    norm hn, Q[k+1] = w / hn. The
    Hessenberg column (plus 1 on the diagonal for the identity) goes into R[:k+2, k] and is
    reduced to triangular form by the stored Givens rotations (cs, sn)[:k] and a new one, also
    applied to the residual vector g. Q: (>= k+2, N); R: (>= k+2, >= k+1).

    Returns (|g[k+1]|, hn): the GMRES residual norm after this step, and hn (0: breakdown, the
    Krylov space is invariant; Q[k+1] is then left unnormalized).
    """
    cdef Py_ssize_t i, j, N = z.shape[0]
    cdef double[::1] w = Q[k + 1]
    cdef double[::1] c = np.empty(k + 1)
    cdef double[::1] h = np.zeros(k + 1)
    cdef double n0, n1, hn, t, d, hk
    with nogil:
        for i in range(N):
            w[i] = corr[i] * z[i]
        n0 = _dot(&w[0], &w[0], N)
        n1 = _project_out(Q, k, w, h, c)
        if n1 < 1e-4 * n0:
            n1 = _project_out(Q, k, w, h, c)
        hn = sqrt(n1)
        if hn > 0.0:
            for i in range(N):
                w[i] /= hn
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
            R[j, k] = h[j]
        R[k, k] = d
        g[k + 1] = -sn[k] * g[k]
        g[k] = cs[k] * g[k]
    return abs(g[k + 1]), hn
