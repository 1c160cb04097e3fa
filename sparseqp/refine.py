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

from . import _krylov

# (restart + 1) basis vectors and restart solve results of length N are kept: restart length
# capped so that they stay below this many bytes (the n = 1.2M MPC problem has N = 3.2M: 16
# vectors of 26 MB each)
_KRYLOV_BYTES = 1 << 30
_MAX_RESTART = 15
assert _MAX_RESTART <= _krylov.MAX_RESTART
# Krylov bases up to this size are kept between calls (per thread): a fresh 1 MB array costs
# more in page faults (~0.3 ms) than the seven solves of a backward pass on n = 3,000 take
_CACHED_BYTES = 32 << 20
_cache = threading.local()


def _workspace(rows, N):
    """Array Q (rows + 1, N), reused between calls when small."""
    need = (rows + 1) * N * 8
    if need > _CACHED_BYTES:
        return np.empty((rows + 1, N))
    ws = getattr(_cache, "ws", None)
    if ws is None or ws.shape[0] < rows + 1 or ws.shape[1] != N:
        ws = np.empty((rows + 1, N))
        _cache.ws = ws
    return ws


def gmres_refine(solve, corr, rhs, tol, max_solves, patience=3, window=False):
    """Approximately solve ``(K_reg + C) u = rhs`` given ``solve(v) = K_reg^{-1} v``.

    Parameters
    ----------
    solve : callable, (N,) -> (N,)
        Solve with the factorized regularized matrix; must return a new float64 array at each
        call (the results are kept as the preconditioned basis without a copy).
    corr : ndarray (N,), or callable (N,) -> (N,)
        The correction C = target minus regularized matrix: its diagonal (the derivatives'
        usual case: the Arnoldi step scales by it directly), or ``u -> C u`` for one that
        is not diagonal.
    rhs : ndarray, (N,), nonzero
    tol : float
        Stop when the (recurrence) residual is at most ``tol * |rhs|``.
    max_solves : int
        At most this many calls of ``solve`` (at least 1).
    patience : int
        Stop after this many steps in a row without halving the residual (an inconsistent
        singular system); a non-diagonal correction of rank k may hold it for ~k steps.
    window : bool
        Count the steps since the residual last halved instead (see ``_krylov.gmres``): a
        steady convergence slower than a halving per step goes on.

    Returns
    -------
    u : ndarray, (N,)
    n_solves : int
    """
    N = rhs.shape[0]
    rhs = np.ascontiguousarray(rhs, dtype=np.float64)
    if not callable(corr):
        corr = np.ascontiguousarray(corr, dtype=np.float64)
    restart = int(max(1, min(_MAX_RESTART, _KRYLOV_BYTES // (16 * max(N, 1)))))
    return _krylov.gmres(solve, corr, rhs, float(tol), int(max_solves), restart,
                         _workspace(restart, N), int(patience), bool(window))
