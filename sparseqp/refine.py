"""Solve a KKT system with the factorization of a regularized copy of it.

The derivatives need ``K u = r`` for a target matrix ``K`` (no proximal term on H, zero or tiny
diagonal blocks on the constraint rows) while the factorization the forward pass left behind is
of ``K_reg = K - diag(corr)`` (``corr``: ``-rho`` on the variables, the penalty ``mu`` minus the
target's block on active constraint rows, 0 elsewhere). Plain iterative refinement contracts the
error by ``max mu / (sigma + mu)`` per solve (sigma: eigenvalues of the constraint Schur
complement), about 0.1 with the forward's last penalties.

GMRES on the right-preconditioned system ``(I + diag(corr) K_reg^{-1}) v = r``, ``u = K_reg^{-1} v``
needs the same one solve per step but no product with K (the operator is a solve and a diagonal
scaling) and takes the best polynomial in the preconditioned operator instead of the fixed one.
The spectrum of that operator sits in a small interval near 1, where the best polynomial
contracts several times faster than refinement does.
The recurrence's residual is checked against the true one (one product with K) at the end.
"""
from __future__ import annotations

import threading

import numpy as np

from ._krylov import arnoldi_step

# 2 x (restart + 1) vectors of length N are kept: restart length capped so that they stay below
# this many bytes (the n = 1.2M MPC problem has N = 3.2M: 16 vectors of 26 MB each)
_KRYLOV_BYTES = 1 << 30
_MAX_RESTART = 15
# Krylov bases up to this size are kept between calls (per thread): a fresh 1 MB array costs
# more in page faults (~0.3 ms) than the seven solves of a backward pass on n = 3,000 take
_CACHED_BYTES = 32 << 20
_cache = threading.local()


def _workspace(rows, N):
    """Arrays Q (rows + 1, N) and Z (rows, N), reused between calls when small."""
    need = (2 * rows + 1) * N * 8
    if need > _CACHED_BYTES:
        return np.empty((rows + 1, N)), np.empty((rows, N))
    ws = getattr(_cache, "ws", None)
    if ws is None or ws[0].shape[0] < rows + 1 or ws[0].shape[1] != N:
        ws = (np.empty((rows + 1, N)), np.empty((rows, N)))
        _cache.ws = ws
    return ws[0], ws[1]


def gmres_refine(solve, corr, rhs, tol, max_solves):
    """Approximately solve ``(K_reg + C) u = rhs`` given ``solve(v) = K_reg^{-1} v``.

    Parameters
    ----------
    solve : callable, (N,) -> (N,)
        Solve with the factorized regularized matrix.
    corr : ndarray (N,), or callable (N,) -> (N,)
        The correction C = target minus regularized matrix: its diagonal (the derivatives'
        usual case: the Arnoldi kernel scales by it directly), or ``u -> C u`` for one that
        is not diagonal (the kernel then gets ``C z`` with a unit diagonal).
    rhs : ndarray, (N,), nonzero
    tol : float
        Stop when the (recurrence) residual is at most ``tol * |rhs|``.
    max_solves : int
        At most this many calls of ``solve`` (at least 1).

    Returns
    -------
    u : ndarray, (N,)
    n_solves : int
    """
    N = rhs.shape[0]
    diagonal = not callable(corr)
    scale = corr if diagonal else np.ones(N)
    norm_rhs = float(np.linalg.norm(rhs))
    u = solve(rhs)
    v = rhs.copy()
    n_solves = 1
    restart = int(max(1, min(_MAX_RESTART, _KRYLOV_BYTES // (16 * max(N, 1)))))
    Q, Z = _workspace(restart, N)
    R = np.zeros((restart + 1, restart))
    cs = np.zeros(restart)
    sn = np.zeros(restart)
    g = np.zeros(restart + 1)
    while n_solves < max_solves:
        # rhs - (K_reg + C) u with K_reg u = v
        r = rhs - v - (corr * u if diagonal else corr(u))
        beta = float(np.linalg.norm(r))
        if beta <= tol * norm_rhs or not np.isfinite(beta):
            break
        np.divide(r, beta, out=Q[0])
        g[:] = 0.0
        g[0] = beta
        k_used = 0
        slow = 0
        prev = beta
        for k in range(restart):
            Z[k] = solve(Q[k])
            n_solves += 1
            cz = Z[k] if diagonal else np.ascontiguousarray(corr(Z[k]))
            res, hn = arnoldi_step(Q, k, scale, cz, R, cs, sn, g)
            if R[k, k] == 0.0 or not np.isfinite(res):
                break               # no new direction: drop this column
            k_used = k + 1
            # an inconsistent singular system: the residual stops falling
            slow = slow + 1 if res > 0.5 * prev else 0
            prev = res
            if res <= tol * norm_rhs or hn <= 1e-14 or slow >= 3 or n_solves >= max_solves:
                break
        if k_used == 0:
            break
        y = _upper_solve(R[:k_used, :k_used], g[:k_used])
        v += y @ Q[:k_used]
        u += y @ Z[:k_used]
        if slow >= 3:
            break
    return u, n_solves


def _upper_solve(R, b):
    """Back substitution with the (k, k) upper triangle of R; zero pivots give zero."""
    k = b.shape[0]
    y = np.zeros(k)
    for i in range(k - 1, -1, -1):
        s = b[i] - R[i, i + 1:k] @ y[i + 1:k]
        y[i] = s / R[i, i] if R[i, i] != 0.0 else 0.0
    return y
