"""A small differentiable LP/QP layer on top of the NumPy core of sparseqp.

    x*(p, A, b) = argmin_x 1/2 eps |x|^2 - p'x   s.t.  A x = b,  x >= 0

solved with ``infeasible="closest"``: when {A x = b, x >= 0} is empty the solver returns the
solution of the closest feasible problem, with shifts ``s_eq = A x - b`` and
``s_in = x - proj_{>=0}(x)`` (so ``s_in = min(x, 0)``). The layer returns (x, s_eq, s_in) and
differentiates all three through ``Result.vjp``.

A is given by its values on a fixed sparsity pattern (:class:`Pattern`): a full pattern gives a
dense learned A, a random sparse pattern a sparse one (the QP stays sparse for 9x9 boards).
A batch is solved as ONE block-diagonal QP (default, ``mode="block"``: one solve and one vjp
per batch), or as a loop over puzzles (``mode="loop"``; ``sparseqp.solve_batch`` / ``vjp_batch``
on a process pool when ``n_jobs > 1``). This does not depend on ``sparseqp.torch`` (written separately).
"""
from __future__ import annotations


import numpy as np
import scipy.sparse as sp
import torch

import sparseqp

__all__ = ["Pattern", "QPLayerFn", "qp_layer", "pattern_matvec"]

_OK = (sparseqp.Status.SOLVED, sparseqp.Status.SOLVED_CLOSEST_FEASIBLE)



def _values_on(M, indptr, indices, rows, cols) -> np.ndarray:
    """The entries of sparse M at (rows, cols), the CSC pattern (indptr, indices); read
    directly when M has exactly that pattern."""
    M = sp.csc_matrix(M)
    M.sum_duplicates()
    M.sort_indices()
    if (M.indptr.shape == indptr.shape and np.array_equal(M.indptr, indptr)
            and np.array_equal(M.indices, indices)):
        return np.asarray(M.data, dtype=np.float64)
    return np.asarray(M[rows, cols]).ravel().astype(np.float64)


class Pattern:
    """A fixed CSC sparsity pattern of an (m, n) matrix; values are ordered as in CSC."""

    def __init__(self, m: int, n: int, mask: np.ndarray | None = None):
        if mask is None:
            mask = np.ones((m, n), dtype=bool)
        M = sp.csc_matrix(np.asarray(mask, dtype=float))
        M.sort_indices()
        self.shape = (m, n)
        self.indptr = M.indptr.astype(np.int64)
        self.indices = M.indices.astype(np.int64)
        self.rows = self.indices
        self.cols = np.repeat(np.arange(n), np.diff(self.indptr))
        self.nnz = len(self.indices)
        self.rows_t = torch.as_tensor(self.rows)
        self.cols_t = torch.as_tensor(self.cols)

    @classmethod
    def dense(cls, m, n):
        return cls(m, n)

    @classmethod
    def random_sparse(cls, m, n, per_col, rng):
        """``per_col`` random rows in every column, every row hit at least once."""
        mask = np.zeros((m, n), dtype=bool)
        for j in range(n):
            mask[rng.choice(m, size=per_col, replace=False), j] = True
        for i in np.flatnonzero(~mask.any(1)):
            mask[i, rng.integers(n)] = True
        return cls(m, n, mask)

    @classmethod
    def sudoku(cls, k):
        """The sparsity pattern of the true Sudoku constraint matrix (4 N^2 x N^3, N = k^2: cell,
        row-digit, column-digit and box-digit rows; 4 nonzeros per column). Only the pattern is
        taken from the rules, the values are learned."""
        from .data import sudoku_constraints
        S = sudoku_constraints(k)
        return cls(S.shape[0], S.shape[1], S != 0)

    def matrix(self, values: np.ndarray) -> sp.csc_matrix:
        return sp.csc_matrix((np.array(values, dtype=np.float64, copy=True), self.indices.copy(),
                              self.indptr.copy()), shape=self.shape)

    def block_matrix(self, values: np.ndarray, B: int) -> sp.csc_matrix:
        """blockdiag(A, ..., A) (B blocks) in CSC; its data is the B value vectors in order."""
        m, n = self.shape
        nnz = self.nnz
        indptr = np.concatenate([[0], (self.indptr[1:][None, :] + nnz * np.arange(B)[:, None]).ravel()])
        indices = (self.indices[None, :] + m * np.arange(B)[:, None]).ravel()
        data = np.tile(np.asarray(values, dtype=np.float64), B)
        return sp.csc_matrix((data, indices, indptr), shape=(B * m, B * n))

    def block_values_of(self, M, B: int) -> np.ndarray:
        """The entries of a (B m, B n) matrix on the block-diagonal pattern, shape (B * nnz,)."""
        ref = self.block_matrix(np.ones(self.nnz), B)
        cols = np.repeat(np.arange(ref.shape[1]), np.diff(ref.indptr))
        return _values_on(M, ref.indptr, ref.indices, ref.indices, cols)

    def values_of(self, M) -> np.ndarray:
        """The entries of sparse M on this pattern (entries off the pattern are dropped)."""
        return _values_on(M, self.indptr, self.indices, self.rows, self.cols)

    def to_dense(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros(self.shape)
        out[self.rows_t, self.cols_t] = values
        return out


def pattern_matvec(pattern: Pattern, values: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A @ z for A given by (pattern, values); differentiable in values and z. z: (n,) or (B, n)."""
    prod = values * z[..., pattern.cols_t]
    out = prod.new_zeros(prod.shape[:-1] + (pattern.shape[0],))
    return out.index_add_(prod.dim() - 1, pattern.rows_t, prod)


class QPLayerFn(torch.autograd.Function):
    """(p (B, n), a_values (nnz,), b (m,) or (B, m)) -> (x, s_eq, s_in), each (B, .).

    ``mode="block"`` (default) solves the whole batch as ONE block-diagonal QP: the B problems
    share no variable or constraint, so its solution, its closest-feasible shifts (the sum of
    the B shift norms is minimized by minimizing each) and its vjp are exactly the per-puzzle
    ones, at the price of a single solve and a single vjp per batch. ``mode="loop"`` solves the
    puzzles one by one (``n_jobs > 1``: on a ``sparseqp.solve_batch`` process pool)."""

    @staticmethod
    def forward(ctx, p, a_values, b, pattern, eps, settings, n_jobs, mode="block"):
        m, n = pattern.shape
        P = p.detach().cpu().to(torch.float64).numpy()
        B = P.shape[0]
        bb = b.detach().cpu().to(torch.float64).numpy()
        shared_b = bb.ndim == 1
        av = a_values.detach().cpu().to(torch.float64).numpy()
        ctx.pattern, ctx.shared_b, ctx.n_jobs, ctx.dtype, ctx.mode = pattern, shared_b, n_jobs, p.dtype, mode
        ctx.B = B
        if mode == "block":
            A = pattern.block_matrix(av, B)
            N = B * n
            H = sp.identity(N, format="csc") * eps
            C = sp.identity(N, format="csc")
            bvec = np.tile(bb, B) if shared_b else bb.reshape(-1).copy()
            r = sparseqp.solve(H, -P.reshape(-1).copy(), A, bvec, C, np.zeros(N),
                               np.full(N, np.inf), **settings)
            ctx.results, ctx.bad = [r], set() if r.status in _OK else {0}
            ctx.info = {"n_failed": len(ctx.bad), "status": str(r.status), "iter": r.get("iter")}
            X, Seq, Sin = (r.x.reshape(B, n), r.s_eq.reshape(B, m), r.s_in.reshape(B, n))
        else:
            A = pattern.matrix(av)
            H = sp.identity(n, format="csc") * eps
            C = sp.identity(n, format="csc")
            lo, up = np.zeros(n), np.full(n, np.inf)
            probs = [(H, -P[i].copy(), A, (bb if shared_b else bb[i]).copy(), C, lo, up)
                     for i in range(B)]
            if n_jobs and n_jobs > 1:
                results = sparseqp.solve_batch(probs, n_jobs=n_jobs, **settings)
            else:
                results = [sparseqp.solve(*pr, **settings) for pr in probs]
            bad = [i for i, r in enumerate(results) if r.status not in _OK]
            ctx.results, ctx.bad = results, set(bad)
            ctx.info = {"n_failed": len(bad),
                        "n_closest": sum(r.status == sparseqp.Status.SOLVED_CLOSEST_FEASIBLE
                                         for r in results)}
            X = np.stack([r.x for r in results])
            Seq = np.stack([r.s_eq for r in results])
            Sin = np.stack([r.s_in for r in results])
        to = lambda a: torch.as_tensor(a, dtype=p.dtype)
        ctx.mark_non_differentiable()
        return to(X), to(Seq), to(Sin)

    @staticmethod
    def backward(ctx, dX, dSeq, dSin):
        results, pattern, B = ctx.results, ctx.pattern, ctx.B
        m, n = pattern.shape
        z = lambda shape: np.zeros(shape)
        dX = dX.detach().double().numpy() if dX is not None else z((B, n))
        dSeq = dSeq.detach().double().numpy() if dSeq is not None else z((B, m))
        dSin = dSin.detach().double().numpy() if dSin is not None else z((B, n))
        t = lambda a: torch.as_tensor(a, dtype=ctx.dtype)
        if ctx.mode == "block":
            if ctx.bad:             # a failed solve: no gradient from this batch
                dp, da, db = np.zeros((B, n)), np.zeros(pattern.nnz), np.zeros((B, m))
            else:
                g = results[0].vjp(dx=dX.reshape(-1), ds_eq=dSeq.reshape(-1), ds_in=dSin.reshape(-1))
                dp = -g.g.reshape(B, n)
                da = pattern.block_values_of(g.A, B).reshape(B, pattern.nnz).sum(0)
                db = g.b.reshape(B, m)
            if ctx.shared_b:
                db = db.sum(0)
            return t(dp), t(da), t(db), None, None, None, None, None
        good = [i for i in range(B) if i not in ctx.bad]
        if ctx.n_jobs and ctx.n_jobs > 1:
            grads = sparseqp.vjp_batch([results[i] for i in good], dx=dX[good], ds_eq=dSeq[good],
                                       ds_in=dSin[good])
        else:
            grads = [results[i].vjp(dx=dX[i], ds_eq=dSeq[i], ds_in=dSin[i]) for i in good]
        dp = np.zeros((B, n))
        da = np.zeros(pattern.nnz)
        db = np.zeros((B, m))
        for i, g in zip(good, grads):
            dp[i] = -g.g
            da += pattern.values_of(g.A)
            db[i] = g.b
        if ctx.shared_b:
            db = db.sum(0)
        return t(dp), t(da), t(db), None, None, None, None, None


def qp_layer(p, a_values, b, pattern, eps=0.1, settings=None, n_jobs=1, mode="block"):
    """The layer; ``mode="block"``: one block-diagonal solve per batch, ``"loop"``: per puzzle."""
    settings = dict(eps_abs=1e-8, infeasible="closest") | dict(settings or {})
    return QPLayerFn.apply(p, a_values, b, pattern, float(eps), settings, n_jobs, mode)
