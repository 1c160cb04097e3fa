"""Models of the Sudoku experiment.

* :class:`FeasibleQP` (OptNet style, feasible by construction)::

      x* = argmin 1/2 eps|x|^2 - p'x  s.t.  A x = A z0,  x >= 0,   z0 = exp(log_z0) > 0

  Learned: A (values on a fixed pattern) and log_z0. z0 is feasible, so the QP always is.
* :class:`LearnedQP` (the QPLayer paper's "learning feasibility")::

      x*, s* = closest-feasible solution of  min 1/2 eps|x|^2 - p'x  s.t.  A x = b,  x >= 0

  Learned: A and b (b initialized to ones; ``learn_b=False`` keeps b = 1 as in the paper). The
  constraints can be inconsistent during training; the loss penalizes the shifts s, so training
  drives the learned constraints towards consistency.
* :class:`MLP`: a one-hidden-layer baseline with about as many parameters.

Every model maps one-hot puzzles p (B, n) to a dict with ``x`` (B, n) and the shifts
``s_eq``/``s_in`` (None for the MLP).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .layer import Pattern, pattern_matvec, qp_layer

__all__ = ["FeasibleQP", "LearnedQP", "MLP", "make_model", "n_params", "default_m"]


def default_m(k: int) -> int:
    """Rank of the true Sudoku constraint matrix: 40 for 4x4 (as in OptNet), 249 for 9x9."""
    return {2: 40, 3: 249}[k]


def pattern_rows(k: int, pattern: str = "random", m: int | None = None) -> int:
    """Rows of A: the Sudoku pattern has all 4 N^2 rows of the true constraint matrix (64 for 4x4,
    324 for 9x9; redundant rows are allowed), a random or dense A ``m`` (default: the rank)."""
    if pattern == "sudoku":
        rows = 4 * k ** 4
        if m is not None and m != rows:
            raise ValueError(f"pattern 'sudoku' has {rows} rows, got m={m}")
        return rows
    return m or default_m(k)


def make_pattern(k: int, m: int, seed: int, per_col: int | None, pattern: str = "random") -> Pattern:
    n = k ** 6
    if pattern == "sudoku":
        return Pattern.sudoku(k)
    if pattern != "random":
        raise ValueError(f"unknown pattern {pattern!r}")
    if per_col is None:
        return Pattern.dense(m, n)
    return Pattern.random_sparse(m, n, per_col, np.random.default_rng(seed))


class _QPBase(nn.Module):
    mode = "loop"

    def __init__(self, k, m=None, eps=0.1, per_col=None, seed=0, n_jobs=1, settings=None,
                 init="uniform", mode=None, pattern="random"):
        super().__init__()
        self.k, self.n = k, k ** 6
        self.m = pattern_rows(k, pattern, m)
        self.eps, self.n_jobs = eps, n_jobs
        if mode is not None:
            self.mode = mode
        # pcg_max_iter=0 (refactorize at every active-set change) halves the solve time of these
        # small, degenerate problems (measured: 25 vs 49 ms per 4x4 closest-feasible solve)
        self.settings = dict(pcg_max_iter=0) | dict(settings or {})
        self.pattern = make_pattern(k, self.m, seed, per_col, pattern)
        g = torch.Generator().manual_seed(seed)
        per_row = max(1.0, self.pattern.nnz / self.m)
        if init == "uniform":
            # OptNet's init (A ~ U[0, c]), scaled so that A x = 1 at the uniform fractional board
            # x = 1/N: positive rows, so {A x = 1, x >= 0} is (nearly always) feasible at start
            c = 2.0 * k * k / per_row
            a = torch.rand(self.pattern.nnz, generator=g, dtype=torch.float64) * c
        elif init == "normal":
            # entries ~ N(0, 1/(nnz per row)): rows of unit scale, often inconsistent with b = 1
            a = torch.randn(self.pattern.nnz, generator=g, dtype=torch.float64) / np.sqrt(per_row)
        else:
            raise ValueError(f"unknown init {init!r}")
        self.a = nn.Parameter(a)
        self.last_info = {}

    def A_dense(self):
        return self.pattern.to_dense(self.a.detach())

    def _solve(self, p, b):
        x, s_eq, s_in = qp_layer(p.double(), self.a, b, self.pattern, eps=self.eps,
                                 settings=self.settings, n_jobs=self.n_jobs, mode=self.mode)
        return {"x": x, "s_eq": s_eq, "s_in": s_in}


class FeasibleQP(_QPBase):
    name = "feasible"
    mode = "block"      # always feasible: one block-diagonal solve per batch (2x faster for 4x4)

    def __init__(self, k, **kw):
        super().__init__(k, **kw)
        g = torch.Generator().manual_seed(kw.get("seed", 0) + 1)
        # log z0 near log(1/N): z0 ~ the uniform fractional board (A z0 ~ 1 with the uniform init)
        self.log_z0 = nn.Parameter(torch.full((self.n,), -np.log(k * k), dtype=torch.float64)
                                   + 0.1 * torch.randn(self.n, generator=g, dtype=torch.float64))

    def forward(self, p):
        b = pattern_matvec(self.pattern, self.a, torch.exp(self.log_z0))
        return self._solve(p, b)


class LearnedQP(_QPBase):
    name = "learned"
    # one solve per puzzle by default (--learned-mode block: one block-diagonal solve per batch).
    # Older sparseqp was slow or failed on block-diagonal batches of inconsistent blocks; with the
    # current one the block solve works but was not faster on 9x9 (0.45 vs 0.41 s per batch of 10)
    mode = "loop"

    def __init__(self, k, learn_b=True, b_init="ones", **kw):
        super().__init__(k, **kw)
        if b_init == "ones":        # the paper's b (the right-hand side of the true rules)
            b = torch.ones(self.m, dtype=torch.float64)
        elif b_init == "center":    # b = A x for the uniform fractional board x = 1/N
            b = pattern_matvec(self.pattern, self.a.detach(), torch.full((self.n,), 1.0 / (k * k),
                                                                         dtype=torch.float64))
        else:
            raise ValueError(f"unknown b_init {b_init!r}")
        self.b = nn.Parameter(b) if learn_b else nn.Parameter(b, requires_grad=False)

    def forward(self, p):
        return self._solve(p, self.b)


class MLP(nn.Module):
    name = "mlp"

    def __init__(self, k, hidden=None, target_params=None, seed=0, **_):
        super().__init__()
        n = k ** 6
        if hidden is None:
            target = target_params or default_m(k) * n
            hidden = max(4, round((target - n) / (2 * n + 1)))
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, n))
        self.double()

    def forward(self, p):
        return {"x": torch.sigmoid(self.net(p.double())), "s_eq": None, "s_in": None}


def make_model(name, k, **kw):
    if name == "feasible":
        return FeasibleQP(k, **kw)
    if name == "learned":
        return LearnedQP(k, **kw)
    if name == "mlp":
        qp_params = LearnedQP(k, **kw)
        target = n_params(qp_params)
        return MLP(k, target_params=target, seed=kw.get("seed", 0))
    raise ValueError(f"unknown model {name!r}")


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
