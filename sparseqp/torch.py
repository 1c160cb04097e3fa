"""PyTorch layers: differentiable sparse convex QPs.

    x*(theta) = argmin_x  1/2 x'Hx + g'x   s.t.   A x = b,   l <= C x <= u

:class:`QPFunction` (a :class:`torch.autograd.Function`) and :class:`QPLayer` (an
:class:`torch.nn.Module`) solve a batch of such problems with :class:`sparseqp.Solver` and
differentiate them with ``Result.vjp``, which reuses the factorization of the forward pass.

Each matrix argument (H, A, C) may be

* a dense tensor, (m, n) or batched (B, m, n): every entry, zero or not, is a parameter, and the
  gradient is dense (use this only for small problems: the solver sees a dense matrix);
* a sparse COO tensor, (m, n) or batched (B, m, n) with a sparse batch dimension, possibly
  uncoalesced (duplicates are summed), or a sparse CSR tensor, (m, n) or batched (B, m, n) with
  the same number of stored entries in each batch element; the gradient is a sparse tensor with
  the input's layout and stored entries (same indices, same order);
* in the **pattern-fixed form** (:class:`QPLayer` built from sparsity patterns), the stored values
  only, a dense tensor (nnz,) or (B, nnz) in the order of the pattern's stored entries; the
  gradient is a dense tensor of values. The layer keeps one :class:`sparseqp.Solver` per batch
  element and re-solves with ``Solver.update`` (no new symbolic analysis) and a warm start.

Vectors g (n,), b (n_eq,), l, u (n_in,) may be batched (B, len). Unbatched arguments broadcast
against batched ones. A, b, C, l, u are optional; with C, a missing l (u) means -inf (+inf).

H enters through its symmetric part (H + H') / 2 (the objective only sees that part), so any
square H is accepted and the gradient with respect to each stored entry is exact.

Computation happens in float64 on the CPU; outputs and gradients are cast back to the dtype of
the inputs (float32 or float64) and placed on the device of ``g`` (gradients on the device of
their input).

The numerical work (canonical patterns, solves, gradient assembly) is plain NumPy/SciPy in the
``_`` helpers below; only the argument parsing and the Function/Module touch torch.
"""
from __future__ import annotations

import dataclasses
import importlib
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from .interface import Solver
from .problem import make_problem
from .settings import Settings, make_settings
from .status import SOLUTION_STATUSES, Status

__all__ = ["QPFunction", "QPLayer", "QPOptions", "QPSolveError", "STATS_FIELDS", "common_batch"]

#: Columns of the ``stats`` output of :class:`QPFunction` (and keys of ``QPLayer.last_info``).
STATS_FIELDS = ("iterations", "n_factorizations", "n_symbolic", "prim_res", "dual_res",
                "shift_norm", "solve_time")

_OUTPUT_NAMES = ("x", "y", "z", "s_eq", "s_in")
_INFEASIBLE_MODES = ("closest", "raise")
_FAILURE_MODES = ("warn", "raise", "ignore")
_SUCCESS = SOLUTION_STATUSES


class QPSolveError(RuntimeError):
    """A batch element could not be solved (or differentiated) and the options ask to raise."""


# =============================================================================================
# Options
# =============================================================================================

@dataclass(frozen=True)
class QPOptions:
    """Options of :class:`QPFunction` (built by :class:`QPLayer` from its arguments).

    Attributes
    ----------
    settings : sparseqp.Settings
        Solver settings (eps_abs, eps_rel, max_iter, ...). ``settings.infeasible`` is derived
        from ``infeasible``.
    infeasible : {"closest", "raise"}
        "closest": an element with inconsistent constraints returns the solution of the closest
        feasible QP (status SOLVED_CLOSEST_FEASIBLE, shifts in s_eq, s_in), differentiable.
        "raise": such an element raises :class:`QPSolveError`.
    on_failure : {"warn", "raise", "ignore"}
        What to do when an element fails (max_iter, time limit, numerical error, unbounded):
        "warn" (default) returns its last iterate (zeros where not finite) with its status, and
        its gradients are zero, with a RuntimeWarning; "raise" raises :class:`QPSolveError`;
        "ignore" is "warn" without the warning.
    warm_start : bool
        Start each element from the previous call's solution when the shapes match (layers
        only; QPFunction alone keeps no state).
    n_jobs : int
        1 (default): solve the batch in this process, one kept solver per element. Any other
        value (k > 1 workers, -1 all CPUs, -2 all but one): solve it with
        ``sparseqp.batch.solve_batch(problems, n_jobs=...)`` on the sticky worker pool, whose
        workers keep the factorizations for the backward (no solver reuse between calls).
    patterns : tuple of (_Pattern or None), (3,)
        Fixed sparsity patterns of H, A, C (pattern-fixed form), None where the matrix is given
        in full at each call.
    cache : _SolverCache or None
        Per-element solvers and solutions kept between calls (owned by a layer).
    """

    settings: Settings = field(default_factory=Settings)
    infeasible: str = "closest"
    on_failure: str = "warn"
    warm_start: bool = True
    n_jobs: int = 1
    patterns: tuple = (None, None, None)
    cache: object = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, *, infeasible="closest", on_failure="warn", warm_start=True, n_jobs=1,
             patterns=(None, None, None), cache=None, **settings) -> "QPOptions":
        """Validated options; ``**settings`` are fields of :class:`sparseqp.Settings`.

        Raises
        ------
        ValueError
            On an unknown or out-of-range option (the message lists the valid values).
        """
        if infeasible not in _INFEASIBLE_MODES:
            raise ValueError(f"infeasible must be one of {_INFEASIBLE_MODES}, got {infeasible!r}")
        if on_failure not in _FAILURE_MODES:
            raise ValueError(f"on_failure must be one of {_FAILURE_MODES}, got {on_failure!r}")
        if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
            raise ValueError(f"n_jobs must be a nonzero integer (1: in-process, k > 1: k "
                             f"workers, -1: all CPUs), got {n_jobs!r}")
        if "infeasible" in settings:
            raise ValueError("pass infeasible= directly ('closest' or 'raise')")
        mode = "closest" if infeasible == "closest" else "certificate"
        st = make_settings(**settings, infeasible=mode)
        return cls(settings=st, infeasible=infeasible, on_failure=on_failure,
                   warm_start=bool(warm_start), n_jobs=n_jobs, patterns=tuple(patterns),
                   cache=cache)


# =============================================================================================
# Canonical patterns (NumPy/SciPy)
# =============================================================================================

@dataclass(frozen=True, eq=False)
class _Pattern:
    """Map from the stored entries of an input matrix to its canonical CSC pattern.

    The canonical pattern is sorted, without duplicates, explicit zeros kept: exactly the pattern
    :func:`sparseqp.problem.make_problem` produces from ``matrix(data)``.

    Attributes
    ----------
    shape : tuple (m, n)
    indptr : ndarray of int64, (n + 1,)
    indices : ndarray of int64, (nnz,)
        Canonical CSC pattern.
    scatter : scipy.sparse.csr_matrix, (nnz, k)
        ``data = scatter @ values`` (k stored input entries; duplicates summed; for a symmetric
        pattern, H's entries enter (H + H') / 2). The gradient of the stored values is
        ``scatter.T @ gdata``.
    mult : ndarray, (k,)
        Number of stored input entries at the same (i, j) as each entry.
    """

    shape: tuple
    indptr: np.ndarray
    indices: np.ndarray
    scatter: sp.csr_matrix
    mult: np.ndarray

    @property
    def nnz(self) -> int:
        return self.indices.shape[0]

    def matrix(self, data: np.ndarray) -> sp.csc_matrix:
        """CSC matrix on the canonical pattern with the given data, (m, n)."""
        return sp.csc_matrix((data, self.indices, self.indptr), shape=self.shape)

    def same_as(self, other: "_Pattern | None") -> bool:
        """Same canonical pattern (shape, indptr, indices)."""
        if other is self:
            return True
        return (other is not None and other.shape == self.shape
                and np.array_equal(other.indptr, self.indptr)
                and np.array_equal(other.indices, self.indices))

    def data_of(self, M: sp.spmatrix) -> np.ndarray:
        """The values of sparse ``M`` on this pattern (entries of M outside it are dropped)."""
        M = sp.csc_matrix(M)
        if np.array_equal(M.indptr, self.indptr) and np.array_equal(M.indices, self.indices):
            return np.asarray(M.data, dtype=np.float64)
        M = M.copy()
        M.sum_duplicates()
        out = np.zeros(self.nnz)
        if M.nnz == 0:
            return out
        want = _csc_keys(self.indptr, self.indices, self.shape[0])
        have = _csc_keys(M.indptr, M.indices, self.shape[0])
        pos = np.minimum(np.searchsorted(have, want), have.size - 1)
        hit = have[pos] == want
        out[hit] = M.data[pos[hit]]
        return out


def _csc_keys(indptr, indices, m) -> np.ndarray:
    cols = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
    return cols * m + np.asarray(indices, dtype=np.int64)


def _pattern_from_entries(rows, cols, shape, *, symmetric=False, columns=None,
                          n_values=None, name="matrix") -> _Pattern:
    """Canonical pattern of the entries (rows[e], cols[e]) of an (m, n) matrix.

    ``columns`` (default ``arange(len(rows))``) says which column of the value array holds entry
    e, out of ``n_values`` (default ``len(rows)``): batched COO input uses one value array for
    all elements. ``symmetric``: the pattern of (M + M') / 2 (M square).
    """
    m, n = shape
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= m or cols.min() < 0 or cols.max() >= n):
        raise ValueError(f"{name} has indices outside its shape {(m, n)}")
    k = rows.shape[0]
    columns = np.arange(k) if columns is None else np.asarray(columns, dtype=np.int64)
    n_values = k if n_values is None else n_values
    keys = cols * m + rows
    if symmetric:
        all_keys = np.concatenate((keys, rows * m + cols))
        ent = np.concatenate((columns, columns))
        weight = np.full(2 * k, 0.5)
    else:
        all_keys, ent, weight = keys, columns, np.ones(k)
    ukeys, inv, counts = np.unique(all_keys, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    scatter = sp.csr_matrix((weight, (inv, ent)), shape=(ukeys.size, n_values))
    scatter.sum_duplicates()
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(ukeys // m, minlength=n), out=indptr[1:])
    if symmetric:   # multiplicities among the input's own entries
        _, own_inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        inv = own_inv.reshape(-1)
    mult = np.ones(n_values)
    mult[columns] = counts[inv[:k]]
    return _Pattern(shape=(m, n), indptr=indptr, indices=(ukeys % m).astype(np.int64),
                    scatter=scatter, mult=mult)


def _dense_pattern(shape, symmetric) -> _Pattern:
    """Pattern of every entry of an (m, n) matrix, values in row-major order."""
    m, n = shape
    rows = np.repeat(np.arange(m, dtype=np.int64), n)
    cols = np.tile(np.arange(n, dtype=np.int64), m)
    return _pattern_from_entries(rows, cols, shape, symmetric=symmetric)


def _pattern_of_scipy(M, name, symmetric) -> _Pattern:
    """Pattern of a scipy sparse matrix; values follow ``M.data`` (COO/CSR/CSC) order."""
    if M.ndim != 2:
        raise ValueError(f"{name} pattern must be 2-D, got shape {M.shape}")
    coo = M.tocoo() if M.format != "coo" else M
    return _pattern_from_entries(coo.row, coo.col, M.shape, symmetric=symmetric, name=name)


# =============================================================================================
# Argument parsing (torch -> NumPy)
# =============================================================================================

@dataclass(eq=False)
class _MatrixArg:
    """One matrix argument after parsing.

    Element b of the batch uses ``values[b if values.shape[0] > 1 else 0]`` scattered by
    ``patterns[b if len(patterns) > 1 else 0]``.

    Attributes
    ----------
    name : str
    kind : {"dense", "coo", "csr", "values"}
    batch : int or None
        Batch size of the argument (None: unbatched, broadcast).
    values : ndarray, (1 or B, k)
    patterns : list of _Pattern
    tensor : torch.Tensor
        The input (for the layout, indices, dtype and device of the gradient).
    """

    name: str
    kind: str
    batch: int | None
    values: np.ndarray
    patterns: list
    tensor: torch.Tensor

    @property
    def shape(self) -> tuple:
        return self.patterns[0].shape

    def pattern(self, b: int) -> _Pattern:
        return self.patterns[b if len(self.patterns) > 1 else 0]

    def data(self, b: int) -> np.ndarray:
        """Canonical CSC data of element b, (nnz,)."""
        v = self.values[b if self.values.shape[0] > 1 else 0]
        return self.pattern(b).scatter @ v


@dataclass(eq=False)
class _VectorArg:
    """One vector argument: ``values`` (1 or B, length), ``tensor`` the input or None."""

    name: str
    batch: int | None
    values: np.ndarray
    tensor: torch.Tensor | None

    def data(self, b: int) -> np.ndarray:
        return self.values[b if self.values.shape[0] > 1 else 0]


def _check_float(name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {t.dtype}")


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def _check_finite(name: str, arr: np.ndarray, allow_inf: str = "") -> None:
    """NaN is never allowed; +inf only if "+" in allow_inf, -inf only if "-" in allow_inf."""
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if "+" not in allow_inf and np.isposinf(arr).any():
        raise ValueError(f"{name} contains +inf")
    if "-" not in allow_inf and np.isneginf(arr).any():
        raise ValueError(f"{name} contains -inf")


def _batch_of(name: str, t: torch.Tensor, core: str) -> int | None:
    """Leading batch size of ``t`` whose core dims are named by ``core`` (None: unbatched).

    ``core`` is e.g. "m, n" (two core dims) or "n" (one).
    """
    core_ndim = core.count(",") + 1
    if t.dim() == core_ndim:
        return None
    if t.dim() == core_ndim + 1:
        return int(t.shape[0])
    raise ValueError(f"{name} must have shape ({core}) or (B, {core}), got {tuple(t.shape)}")


def common_batch(named_batches) -> int | None:
    """The batch size shared by the batched arguments (None when all are unbatched).

    This is the one batching rule of the module: a leading batch dimension is optional, and
    unbatched arguments broadcast against batched ones.

    Parameters
    ----------
    named_batches : iterable of (str, int or None)
        Argument names and their batch sizes (None for unbatched).

    Raises
    ------
    ValueError
        When two batched arguments disagree (the message names both).
    """
    seen = None
    for name, size in named_batches:
        if size is None:
            continue
        if seen is None:
            seen = (name, size)
        elif size != seen[1]:
            raise ValueError(f"batch sizes differ: {seen[0]} has batch size {seen[1]} but "
                             f"{name} has {size}")
    return None if seen is None else seen[1]


def _parse_dense(name, t, symmetric, cache=None) -> _MatrixArg:
    batch = _batch_of(name, t, "m, n")
    shape = tuple(t.shape[-2:])
    vals = _to_numpy(t).reshape(batch or 1, shape[0] * shape[1])
    _check_finite(name, vals)
    key = (shape, symmetric)
    if cache is not None and key in cache.dense_patterns:
        pattern = cache.dense_patterns[key]
    else:
        pattern = _dense_pattern(shape, symmetric)
        if cache is not None:
            cache.dense_patterns[key] = pattern
    return _MatrixArg(name, "dense", batch, vals, [pattern], t)


def _parse_coo(name, t, symmetric) -> _MatrixArg:
    if t.dense_dim() != 0:
        raise ValueError(f"{name}: hybrid sparse COO tensors (dense_dim > 0) are not supported")
    batch = _batch_of(name, t, "m, n")
    shape = tuple(t.shape[-2:])
    idx = t._indices().detach().cpu().numpy()
    vals = _to_numpy(t._values()).reshape(1, -1)
    _check_finite(name, vals)
    k = idx.shape[1]
    if batch is None:
        pats = [_pattern_from_entries(idx[0], idx[1], shape, symmetric=symmetric, name=name)]
    else:
        pats = []
        for b in range(batch):
            sel = np.flatnonzero(idx[0] == b)
            pats.append(_pattern_from_entries(idx[1, sel], idx[2, sel], shape,
                                              symmetric=symmetric, columns=sel, n_values=k,
                                              name=name))
    return _MatrixArg(name, "coo", batch, vals, pats, t)


def _parse_csr(name, t, symmetric) -> _MatrixArg:
    if t.dense_dim() != 0:
        raise ValueError(f"{name}: hybrid sparse CSR tensors (dense_dim > 0) are not supported")
    batch = _batch_of(name, t, "m, n")
    shape = tuple(t.shape[-2:])
    crow = t.crow_indices().detach().cpu().numpy().reshape(batch or 1, -1)
    col = t.col_indices().detach().cpu().numpy().reshape(batch or 1, -1)
    vals = _to_numpy(t.values()).reshape(batch or 1, -1)
    _check_finite(name, vals)
    pats = []
    for b in range(crow.shape[0]):
        rows = np.repeat(np.arange(shape[0], dtype=np.int64), np.diff(crow[b]))
        pats.append(_pattern_from_entries(rows, col[b], shape, symmetric=symmetric, name=name))
    return _MatrixArg(name, "csr", batch, vals, pats, t)


def _parse_values(name, t, pattern: _Pattern) -> _MatrixArg:
    k = pattern.scatter.shape[1]
    if t.layout != torch.strided:
        raise TypeError(f"{name}: this layer was built from a fixed sparsity pattern and takes "
                        f"the {k} stored values as a dense tensor (nnz,) or (B, nnz), got a "
                        f"{t.layout} tensor; build a QPLayer without a pattern for sparse input")
    batch = _batch_of(name, t, "nnz")
    if t.shape[-1] != k:
        raise ValueError(f"{name}: expected {k} values (the stored entries of the {name} "
                         f"pattern given to the layer), got {t.shape[-1]}; the pattern of a "
                         f"pattern-fixed layer cannot change between calls (build a new QPLayer)")
    vals = _to_numpy(t).reshape(batch or 1, k)
    _check_finite(name, vals)
    return _MatrixArg(name, "values", batch, vals, [pattern], t)


def _parse_matrix(name, t, *, symmetric, pattern=None, cache=None) -> _MatrixArg:
    _check_float(name, t)
    if pattern is not None:
        return _parse_values(name, t, pattern)
    if t.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (m, n) or (B, m, n), got {tuple(t.shape)}")
    if symmetric and t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(t.shape)}")
    if t.layout == torch.strided:
        return _parse_dense(name, t, symmetric, cache)
    if t.layout == torch.sparse_coo:
        return _parse_coo(name, t, symmetric)
    if t.layout == torch.sparse_csr:
        return _parse_csr(name, t, symmetric)
    raise TypeError(f"{name}: unsupported layout {t.layout} (use a dense, sparse COO or sparse "
                    "CSR tensor)")


def _parse_vector(name, t, length, *, fill=0.0, allow_inf="") -> _VectorArg:
    if t is None:
        return _VectorArg(name, None, np.full((1, length), fill, dtype=np.float64), None)
    _check_float(name, t)
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {t.layout}")
    batch = _batch_of(name, t, "len")
    if t.shape[-1] != length:
        raise ValueError(f"{name} has length {t.shape[-1]}, expected {length}")
    vals = _to_numpy(t).reshape(batch or 1, length)
    _check_finite(name, vals, allow_inf)
    return _VectorArg(name, batch, vals, t)


@dataclass(eq=False)
class _Batch:
    """All arguments of one call, parsed and checked.

    Attributes
    ----------
    n, n_eq, n_in : int
    batch : int or None
        Common batch size (None: every argument unbatched).
    mats : dict of str -> _MatrixArg or None
        "H", "A", "C" (None where absent; an absent H is the zero matrix).
    vecs : dict of str -> _VectorArg
        "g", "b", "l", "u" (b, l, u with zero length where absent).
    dtype : torch.dtype
    device : torch.device
        Dtype and device of the outputs.
    """

    n: int
    n_eq: int
    n_in: int
    batch: int | None
    mats: dict
    vecs: dict
    dtype: torch.dtype
    device: torch.device

    @property
    def size(self) -> int:
        return self.batch or 1


def _check_matrix_shape(arg: _MatrixArg | None, n: int) -> None:
    """H must be (n, n); A and C must have n columns (n from g)."""
    if arg is None:
        return
    m, k = arg.shape
    want_rows = n if arg.name == "H" else m
    if (m, k) != (want_rows, n):
        rows = n if arg.name == "H" else "n_eq" if arg.name == "A" else "n_in"
        raise ValueError(f"{arg.name} has shape {(m, k)}, expected ({rows}, {n}) (n = {n} from "
                         "the length of g)")


def _parse_inputs(H, g, A, b, C, l, u, options: QPOptions) -> _Batch:
    """Validate and convert the arguments of one call (see the module docstring)."""
    pH, pA, pC = options.patterns
    if g is None:
        raise ValueError("g is required")
    _check_float("g", g)
    if g.dim() not in (1, 2):
        raise ValueError(f"g must have shape (n,) or (B, n), got {tuple(g.shape)}")
    n = int(g.shape[-1])
    mats = {"H": None, "A": None, "C": None}
    for name, t, pat in (("H", H, pH), ("A", A, pA), ("C", C, pC)):
        if t is None and pat is not None:
            raise ValueError(f"{name} values are required: the layer was built with a {name} "
                             "pattern")
        if t is not None:
            mats[name] = _parse_matrix(name, t, symmetric=name == "H", pattern=pat,
                                       cache=options.cache)
    for arg in mats.values():
        _check_matrix_shape(arg, n)
    n_eq = mats["A"].shape[0] if mats["A"] is not None else 0
    n_in = mats["C"].shape[0] if mats["C"] is not None else 0
    _check_absent_partners(mats, b, l, u)
    if mats["C"] is not None and l is None and u is None:
        raise ValueError("C is given but neither l nor u")
    vecs = {
        "g": _parse_vector("g", g, n),
        "b": _parse_vector("b", b, n_eq),
        "l": _parse_vector("l", l, n_in, fill=-np.inf, allow_inf="-"),
        "u": _parse_vector("u", u, n_in, fill=np.inf, allow_inf="+"),
    }
    _check_bounds_order(vecs["l"].values, vecs["u"].values)
    batch = common_batch([(k, v.batch) for k, v in {**mats, **vecs}.items() if v is not None])
    given = [t for t in (H, g, A, b, C, l, u) if t is not None]
    dtype = _promoted_dtype(given)
    return _Batch(n, n_eq, n_in, batch, mats, vecs, dtype, g.device)


def _check_absent_partners(mats, b, l, u) -> None:
    if mats["A"] is None and b is not None:
        raise ValueError("b is given but A is None")
    if mats["A"] is not None and b is None:
        raise ValueError("A is given but b is None")
    if mats["C"] is None and (l is not None or u is not None):
        raise ValueError("l or u is given but C is None")


def _check_bounds_order(l: np.ndarray, u: np.ndarray) -> None:
    if l.size and u.size:
        bad = np.argwhere(np.broadcast_to(l > u, np.broadcast_shapes(l.shape, u.shape)))
        if bad.size:
            e, i = bad[0]
            raise ValueError(f"l > u at {len(bad)} place(s), first at row {i} (batch element "
                             f"{e}): l={l[min(e, l.shape[0] - 1), i]!r} > "
                             f"u={u[min(e, u.shape[0] - 1), i]!r}")


def _promoted_dtype(tensors) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


# =============================================================================================
# Solving (NumPy/SciPy)
# =============================================================================================

@dataclass(eq=False)
class _Slot:
    """What a layer keeps of one batch element between calls."""

    solver: Solver | None = None
    patterns: tuple = (None, None, None)
    data: tuple = (None, None, None)
    warm: dict | None = None   # x0 (, y0, z0) from the last solve of this element


class _SolverCache:
    """Per-element solvers and last solutions of a layer (its only mutable state)."""

    def __init__(self):
        self.slots: list[_Slot] = []
        self.dense_patterns: dict = {}   # (shape, symmetric) -> _Pattern of dense inputs

    def slot(self, b: int) -> _Slot:
        while len(self.slots) <= b:
            self.slots.append(_Slot())
        return self.slots[b]

    def trim(self, size: int) -> None:
        del self.slots[size:]

    def clear(self) -> None:
        self.slots = []
        self.dense_patterns = {}


def _element_patterns(batch: _Batch, b: int) -> tuple:
    return tuple(None if batch.mats[k] is None else batch.mats[k].pattern(b) for k in "HAC")


def _element_data(batch: _Batch, b: int) -> dict:
    """The data of element b as keyword arguments of :class:`sparseqp.Solver`."""
    out = {}
    for k in "HAC":
        arg = batch.mats[k]
        out[k] = None if arg is None else arg.pattern(b).matrix(arg.data(b))
    for k in "gblu":
        out[k] = batch.vecs[k].data(b)
    if out["A"] is None:
        out["b"] = None
    if out["C"] is None:
        out["l"] = out["u"] = None
    return out


def _settings_dict(settings: Settings) -> dict:
    return dataclasses.asdict(settings)


def _same_patterns(slot: _Slot, pats: tuple, sizes: tuple) -> bool:
    if slot.solver is None:
        return False
    p = slot.solver.problem
    if (p.n, p.n_eq, p.n_in) != sizes:
        return False
    return all((a is None and c is None) or (a is not None and a.same_as(c))
               for a, c in zip(pats, slot.patterns))


def _changed_values(slot: _Slot, data: dict) -> dict:
    """Keyword arguments of ``Solver.update``: everything but unchanged matrices."""
    upd = {k: data[k] for k in "gblu" if data[k] is not None}
    for i, k in enumerate("HAC"):
        M = data[k]
        if M is not None and not np.array_equal(M.data, slot.data[i]):
            upd[k] = M
    return upd


def _warm_of(result) -> dict | None:
    """x0 (and y0, z0 after a feasible solve) for a later warm start; None if not usable.

    Only the vectors are kept, not the Result (which holds the solve's scaled problem).
    """
    if Status(result.status) not in _SUCCESS or not np.all(np.isfinite(result.x)):
        return None
    if Status(result.status).feasible_solution:
        return {"x0": result.x, "y0": result.y, "z0": result.z}
    return {"x0": result.x}


def _warm_point(slot: _Slot, sizes: tuple) -> dict:
    """The slot's warm start when its shapes match ``sizes`` = (n, n_eq, n_in), else {}."""
    w = slot.warm
    if w is None or w["x0"].shape[0] != sizes[0]:
        return {}
    if "y0" in w and (w["y0"].shape[0], w["z0"].shape[0]) != sizes[1:]:
        return {"x0": w["x0"]}
    return w


def _solve_element(batch: _Batch, b: int, options: QPOptions):
    """Solve element b, reusing the layer's solver for b when its patterns are unchanged."""
    data = _element_data(batch, b)
    pats = _element_patterns(batch, b)
    sizes = (batch.n, batch.n_eq, batch.n_in)
    settings = _settings_dict(options.settings)
    cache = options.cache
    if cache is None:
        return Solver(**data, **settings).solve()
    slot = cache.slot(b)
    if _same_patterns(slot, pats, sizes):
        slot.solver.update(**_changed_values(slot, data))
        result = _solve_warm(slot.solver, {}, options.warm_start)
    else:
        warm = _warm_point(slot, sizes) if options.warm_start else {}
        slot.solver = Solver(**data, **settings)
        slot.patterns = pats
        result = _solve_warm(slot.solver, warm, bool(warm))
    slot.data = tuple(None if data[k] is None else data[k].data.copy() for k in "HAC")
    slot.warm = _warm_of(result)
    return result


def _solve_warm(solver: Solver, warm: dict, warm_start: bool):
    """Warm-started solve, retried from a cold start when the warm one runs out of iterations.

    (A warm start from the previous solution can stall at tight tolerances; the cold retry
    costs a second solve only for the elements where that happened. One that ends in
    NUMERICAL_ERROR the solver itself repeats from the cold start.)
    """
    result = solver.solve(**warm, warm_start=warm_start)
    if warm_start and result.status == Status.MAX_ITER_REACHED:
        result = solver.solve(warm_start=False)
    return result


def _solve_parallel(batch: _Batch, options: QPOptions) -> list:
    """Solve the batch with ``sparseqp.batch.solve_batch`` (n_jobs != 1)."""
    try:
        solve_batch = importlib.import_module("sparseqp.batch").solve_batch
    except (ImportError, AttributeError):
        raise NotImplementedError(
            "n_jobs != 1 needs sparseqp.batch.solve_batch, which is not available in this "
            "installation; use n_jobs=1") from None
    problems = []
    for b in range(batch.size):
        d = _element_data(batch, b)
        problems.append(make_problem(d["H"], d["g"], d["A"], d["b"], d["C"], d["l"], d["u"],
                                     check_symmetric=options.settings.check_symmetric))
    return list(solve_batch(problems, n_jobs=options.n_jobs, **_settings_dict(options.settings)))


def _solve_all(batch: _Batch, options: QPOptions) -> list:
    if options.n_jobs != 1:
        return _solve_parallel(batch, options)
    results = []
    for b in range(batch.size):
        try:
            results.append(_solve_element(batch, b, options))
        except ValueError as exc:   # invalid data found by the solver (e.g. H not PSD)
            if batch.batch is None:
                raise
            raise ValueError(f"batch element {b}: {exc}") from exc
    if options.cache is not None:
        options.cache.trim(batch.size)
    return results


def _handle_failures(results, options: QPOptions) -> np.ndarray:
    """Raise or warn about failed elements; returns the boolean mask of successful ones."""
    status = [Status(r.status) for r in results]
    ok = np.array([s in _SUCCESS for s in status], dtype=bool)
    infeasible = [b for b, s in enumerate(status) if s == Status.PRIMAL_INFEASIBLE]
    if infeasible and options.infeasible == "raise":
        raise QPSolveError(f"batch element(s) {infeasible} have inconsistent constraints "
                           "(PRIMAL_INFEASIBLE) and infeasible='raise'; use "
                           "infeasible='closest' to solve the closest feasible QP instead")
    failed = np.flatnonzero(~ok).tolist()
    if failed:
        detail = ", ".join(f"{b}: {status[b].name}" for b in failed[:10])
        more = "" if len(failed) <= 10 else f" (and {len(failed) - 10} more)"
        msg = (f"{len(failed)} of {len(results)} QP(s) failed ({detail}{more}); their outputs "
               "are the solver's last iterates and their gradients will be zero")
        if options.on_failure == "raise":
            raise QPSolveError(msg)
        if options.on_failure == "warn":
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
    return ok


def _finite_or_zero(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v if np.all(np.isfinite(v)) else np.where(np.isfinite(v), v, 0.0)


def _stack_outputs(results, batch: _Batch) -> dict:
    """Arrays (B, len) of x, y, z, s_eq, s_in, the statuses (B,) and the stats (B, 7)."""
    sizes = {"x": batch.n, "y": batch.n_eq, "z": batch.n_in, "s_eq": batch.n_eq,
             "s_in": batch.n_in}
    out = {}
    for k, size in sizes.items():
        arr = np.zeros((len(results), size))
        for b, r in enumerate(results):
            v = r.get(k)
            if v is not None and np.shape(v) == (size,):
                arr[b] = _finite_or_zero(v)
        out[k] = arr
    out["status"] = np.array([int(r.status) for r in results], dtype=np.int64)
    out["stats"] = np.array([_stats_row(r) for r in results], dtype=np.float64)
    return out


def _stats_row(r) -> list:
    s_eq = np.asarray(r.get("s_eq", np.zeros(0)))
    s_in = np.asarray(r.get("s_in", np.zeros(0)))
    shift = float(np.sqrt(np.sum(s_eq ** 2) + np.sum(s_in ** 2)))
    return [r.get("nit", 0), r.get("n_factorizations", 0), r.get("n_symbolic", 0),
            r.get("prim_res", np.nan),
            r.get("dual_res", np.nan), shift, r.get("solve_time", np.nan)]


# =============================================================================================
# Backward (NumPy/SciPy)
# =============================================================================================

def _element_cotangents(douts: dict, b: int, result) -> dict | None:
    """Keyword arguments of ``result.vjp`` for element b (None when all are zero)."""
    kw = {}
    for k, arr in douts.items():
        if arr is None:
            continue
        v = arr[b if arr.shape[0] > 1 else 0]
        if np.any(v):
            kw["d" + k] = v
    if result.status == Status.SOLVED_CLOSEST_FEASIBLE and ("dy" in kw or "dz" in kw):
        kw.pop("dy", None)
        kw.pop("dz", None)
        warnings.warn("the multipliers y, z of a closest-feasible solution are not unique; their "
                      "cotangents are ignored for the infeasible batch element(s)",
                      RuntimeWarning, stacklevel=5)
    return kw or None


def _vjp_all(results, ok, douts: dict, options: QPOptions) -> list:
    """``result.vjp`` of every successful element with a nonzero cotangent (None otherwise).

    Pooled results (n_jobs != 1) go through ``sparseqp.batch.vjp_batch`` (one message per
    worker); an element that cannot be differentiated is then retried alone to name it.
    """
    from .derivatives import DerivativeError

    todo = {}
    for b, r in enumerate(results):
        kw = _element_cotangents(douts, b, r) if ok[b] else None
        if kw is not None:
            todo[b] = kw
    grads = [None] * len(results)
    if options.n_jobs != 1 and len(todo) > 1:
        try:
            done = _vjp_pooled([results[b] for b in todo], list(todo.values()))
            for b, gr in zip(todo, done):
                grads[b] = gr
            return grads
        except DerivativeError:
            pass
    for b, kw in todo.items():
        try:
            grads[b] = results[b].vjp(**kw)
        except DerivativeError as exc:
            if options.on_failure == "raise":
                raise QPSolveError(f"batch element {b} could not be differentiated: {exc}") from exc
            if options.on_failure == "warn":
                warnings.warn(f"batch element {b} could not be differentiated ({exc}); its "
                              "gradients are zero", RuntimeWarning, stacklevel=4)
    return grads


def _vjp_pooled(results: list, kwargs: list) -> list:
    vjp_batch = importlib.import_module("sparseqp.batch").vjp_batch
    cols = {k: [kw.get(k) for kw in kwargs] for k in ("dx", "dy", "dz", "ds_eq", "ds_in")}
    return vjp_batch(results, **{k: v for k, v in cols.items() if any(e is not None for e in v)})


def _matrix_grad_values(arg: _MatrixArg, grads: list) -> np.ndarray:
    """Gradient of ``arg.values``, (1 or B, k), from the per-element canonical gradients."""
    gv = np.zeros_like(arg.values)
    for b, gr in enumerate(grads):
        if gr is None:
            continue
        pat = arg.pattern(b)
        gdata = pat.data_of(getattr(gr, arg.name))
        gv[b if gv.shape[0] > 1 else 0] += pat.scatter.T @ gdata
    return gv


def _vector_grad_values(arg: _VectorArg, grads: list) -> np.ndarray:
    gv = np.zeros_like(arg.values)
    for b, gr in enumerate(grads):
        if gr is not None:
            gv[b if gv.shape[0] > 1 else 0] += np.asarray(getattr(gr, arg.name), dtype=np.float64)
    return gv


# =============================================================================================
# NumPy -> torch
# =============================================================================================

def _as_tensor(arr: np.ndarray, like: torch.Tensor | None, dtype=None, device=None):
    dtype = dtype if dtype is not None else like.dtype
    device = device if device is not None else like.device
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=dtype)


def _matrix_grad_tensor(arg: _MatrixArg, gv: np.ndarray) -> torch.Tensor:
    """The gradient in the layout of the input (dense, COO, CSR or values)."""
    t = arg.tensor
    if arg.kind in ("dense", "values"):
        return _as_tensor(gv.reshape(t.shape), t)
    if arg.kind == "coo":
        # duplicates: the tensor holds g / mult at each, so that it sums to g at (i, j) and the
        # gradient of each duplicate's value (through torch.sparse_coo_tensor) is g
        mult = arg.patterns[0].mult
        for pat in arg.patterns[1:]:
            mult = np.maximum(mult, pat.mult)
        vals = _as_tensor(gv[0] / mult, t)
        return torch.sparse_coo_tensor(t._indices(), vals, t.shape, check_invariants=False,
                                       is_coalesced=t.is_coalesced())
    vals = _as_tensor(gv.reshape(t.values().shape), t)
    return torch.sparse_csr_tensor(t.crow_indices(), t.col_indices(), vals, t.shape,
                                   check_invariants=False)


def _vector_grad_tensor(arg: _VectorArg, gv: np.ndarray) -> torch.Tensor:
    return _as_tensor(gv.reshape(arg.tensor.shape), arg.tensor)


# =============================================================================================
# The autograd Function
# =============================================================================================

@dataclass(eq=False)
class _Record:
    """What the backward needs: the parsed batch, the results and their success mask."""

    batch: _Batch
    results: list
    ok: np.ndarray
    options: QPOptions


class QPFunction(torch.autograd.Function):
    """Differentiable batch of sparse convex QPs (see the module docstring for the inputs).

    ``QPFunction.apply(H, g, A, b, C, l, u, options)``

    Parameters
    ----------
    H : Tensor or None, (n, n) or (B, n, n); dense, sparse COO or sparse CSR
        Cost matrix (enters through (H + H') / 2). None: zero (an LP). In the pattern-fixed form
        (``options.patterns[0]`` set): its stored values, (nnz_H,) or (B, nnz_H).
    g : Tensor, (n,) or (B, n)
    A : Tensor or None, (n_eq, n) or (B, n_eq, n); or values (nnz_A,) / (B, nnz_A)
    b : Tensor or None, (n_eq,) or (B, n_eq)
    C : Tensor or None, (n_in, n) or (B, n_in, n); or values (nnz_C,) / (B, nnz_C)
    l, u : Tensor or None, (n_in,) or (B, n_in)
        Bounds (-inf / +inf allowed); a missing one is infinite.
    options : QPOptions or None
        Solver settings and failure handling (defaults when None).

    Returns
    -------
    x : Tensor, (n,) or (B, n)
    y : Tensor, (n_eq,) or (B, n_eq)
    z : Tensor, (n_in,) or (B, n_in)
    s_eq : Tensor, (n_eq,) or (B, n_eq)
    s_in : Tensor, (n_in,) or (B, n_in)
        Solution, multipliers and constraint shifts (zero unless the element is
        SOLVED_CLOSEST_FEASIBLE), all differentiable (the multipliers of a closest-feasible
        element are not: their cotangents are ignored with a warning). The batch dimension is
        present when any input is batched.
    status : Tensor of int64, () or (B,)
        :class:`sparseqp.Status` values (not differentiable).
    stats : Tensor of float64, (7,) or (B, 7)
        Columns :data:`STATS_FIELDS` (not differentiable).
    record : object
        Internal record of the solves, for the backward.

    Examples
    --------
    >>> import torch
    >>> from sparseqp.torch import QPFunction, QPOptions
    >>> H = torch.eye(2, dtype=torch.float64)
    >>> g = torch.tensor([-1.0, -1.0], dtype=torch.float64, requires_grad=True)
    >>> C = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    >>> u = torch.tensor([1.0], dtype=torch.float64)
    >>> x, *_ = QPFunction.apply(H, g, None, None, C, None, u, QPOptions.make(eps_abs=1e-10))
    >>> x.detach().numpy().round(6)
    array([0.5, 0.5])
    >>> x[0].backward()                                     # dx_0/dg on the face x_0 + x_1 = 1
    >>> g.grad.numpy().round(6)
    array([-0.5,  0.5])
    """

    @staticmethod
    def forward(H, g, A=None, b=None, C=None, l=None, u=None, options=None):
        options = options if options is not None else QPOptions.make()
        batch = _parse_inputs(H, g, A, b, C, l, u, options)
        results = _solve_all(batch, options)
        ok = _handle_failures(results, options)
        arrays = _stack_outputs(results, batch)
        squeeze = batch.batch is None

        def out(arr, dtype):
            return _as_tensor(arr[0] if squeeze else arr, None, dtype=dtype, device=batch.device)

        tensors = tuple(out(arrays[k], batch.dtype) for k in _OUTPUT_NAMES)
        status = out(arrays["status"], torch.int64)
        stats = out(arrays["stats"], torch.float64)
        return (*tensors, status, stats, _Record(batch, results, ok, options))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.record = output[-1]
        ctx.mark_non_differentiable(output[5], output[6])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gx, gy, gz, gs_eq, gs_in, _gstatus=None, _gstats=None, _grecord=None):
        rec: _Record = ctx.record
        batch = rec.batch
        rows = batch.size if batch.batch is not None else 1
        douts = {k: None if t is None else _to_numpy(t).reshape(rows, t.shape[-1])
                 for k, t in zip(_OUTPUT_NAMES, (gx, gy, gz, gs_eq, gs_in))}
        _warn_failed_gradients(rec)
        grads = _vjp_all(rec.results, rec.ok, douts, rec.options)
        need = ctx.needs_input_grad  # as many as the arguments given to apply
        names = ("H", "g", "A", "b", "C", "l", "u", "options")[:len(need)]
        return tuple(_input_grad(batch, k, grads) if k != "options" and need[i] else None
                     for i, k in enumerate(names))


def _input_grad(batch: _Batch, name: str, grads: list):
    if name in "HAC":
        arg = batch.mats[name]
        return None if arg is None else _matrix_grad_tensor(arg, _matrix_grad_values(arg, grads))
    arg = batch.vecs[name]
    if arg.tensor is None:
        return None
    return _vector_grad_tensor(arg, _vector_grad_values(arg, grads))


def _warn_failed_gradients(rec: _Record) -> None:
    failed = np.flatnonzero(~rec.ok).tolist()
    if failed and rec.options.on_failure == "warn":
        warnings.warn(f"gradients of the failed batch element(s) {failed[:10]} are zero",
                      RuntimeWarning, stacklevel=3)


# =============================================================================================
# The Module
# =============================================================================================

def _as_pattern(name: str, M, symmetric: bool) -> _Pattern | None:
    """Pattern of a scipy sparse matrix or a 2-D torch sparse tensor (None stays None)."""
    if M is None:
        return None
    if sp.issparse(M):
        return _pattern_of_scipy(M, name, symmetric)
    if isinstance(M, torch.Tensor) and M.dim() == 2:
        if M.layout == torch.sparse_coo:
            idx = M._indices().cpu().numpy()
            return _pattern_from_entries(idx[0], idx[1], tuple(M.shape), symmetric=symmetric,
                                         name=name)
        if M.layout == torch.sparse_csr:
            crow = M.crow_indices().cpu().numpy()
            rows = np.repeat(np.arange(M.shape[0], dtype=np.int64), np.diff(crow))
            return _pattern_from_entries(rows, M.col_indices().cpu().numpy(), tuple(M.shape),
                                         symmetric=symmetric, name=name)
    raise TypeError(f"{name} pattern must be a scipy sparse matrix or a 2-D torch sparse COO/CSR "
                    f"tensor, got {type(M).__name__}")


class QPLayer(torch.nn.Module):
    """A differentiable QP layer ``x*(H, g, A, b, C, l, u)`` for batches of sparse QPs.

    Built without patterns, ``forward`` takes full matrices (dense, sparse COO or sparse CSR
    tensors, see :class:`QPFunction`). Built with the sparsity pattern of H, A and/or C (the
    **pattern-fixed form**), ``forward`` takes, for those matrices, their stored values only as
    dense tensors (nnz,) or (B, nnz), in the order of the pattern's stored entries
    (``M.data`` for scipy COO/CSR/CSC, ``M.values()`` for torch), and their gradients are dense
    tensors of values. In both forms the layer keeps one :class:`sparseqp.Solver` per batch
    element: when an element's patterns are unchanged it is re-solved with ``Solver.update`` (no
    new symbolic analysis), warm-started from the previous call's solution.

    Parameters
    ----------
    H, A, C : scipy sparse matrix or torch sparse tensor (2-D), optional
        Fixed sparsity patterns (their values are ignored), (n, n), (n_eq, n), (n_in, n).
    outputs : str or sequence of str
        Outputs of ``forward``, among "x", "y", "z", "s_eq", "s_in"; a single name returns a
        tensor, a sequence a tuple in that order. Default "x".
    eps_abs, eps_rel : float
        Solver tolerances (defaults 1e-8, 0).
    max_iter : int, optional
        Maximum outer iterations (solver default when None).
    infeasible : {"closest", "raise"}
        See :class:`QPOptions`.
    on_failure : {"warn", "raise", "ignore"}
        See :class:`QPOptions`.
    warm_start : bool
        Warm start from the previous call (default True).
    n_jobs : int
        > 1 solves the batch with ``sparseqp.batch.solve_batch`` (no solver reuse).
    **settings
        Other fields of :class:`sparseqp.Settings` (time_limit, ...).

    Attributes
    ----------
    last_info : dict or None
        After a call: "status" (int64 tensor, () or (B,), :class:`sparseqp.Status` values) and
        the :data:`STATS_FIELDS` ("iterations", "n_factorizations", "n_symbolic" (0 when the
        kept solver was re-used), "prim_res", "dual_res", "shift_norm" = |(s_eq, s_in)|_2,
        "solve_time"), float64 tensors of the same shape.
    pattern_nnz : dict
        Number of stored values expected for each pattern-fixed matrix.

    Examples
    --------
    >>> import torch, scipy.sparse as sp
    >>> from sparseqp.torch import QPLayer
    >>> n = 3
    >>> layer = QPLayer(H=sp.eye(n), C=sp.eye(n), eps_abs=1e-10)
    >>> Hv = torch.ones(n, dtype=torch.float64)              # the diagonal of H
    >>> g = torch.tensor([[-1.0, 0.0, 2.0], [0.5, -3.0, 0.0]], dtype=torch.float64,
    ...                  requires_grad=True)
    >>> Cv = torch.ones(n, dtype=torch.float64)
    >>> u = torch.full((n,), 1.0, dtype=torch.float64)
    >>> x = layer(Hv, g, C=Cv, l=-u, u=u)                    # batch of 2
    >>> x.detach().numpy().round(6)
    array([[ 1. ,  0. , -1. ],
           [-0.5,  1. ,  0. ]])
    >>> layer.last_info["status"].tolist()
    [1, 1]
    """

    def __init__(self, H=None, A=None, C=None, *, outputs=("x",), eps_abs=1e-8, eps_rel=0.0,
                 max_iter=None, infeasible="closest", on_failure="warn", warm_start=True,
                 n_jobs=1, **settings):
        super().__init__()
        self.outputs, self._single = _check_outputs(outputs)
        patterns = (_as_pattern("H", H, True), _as_pattern("A", A, False),
                    _as_pattern("C", C, False))
        if max_iter is not None:
            settings["max_iter"] = max_iter
        self._cache = _SolverCache()
        self.options = QPOptions.make(infeasible=infeasible, on_failure=on_failure,
                                      warm_start=warm_start, n_jobs=n_jobs, patterns=patterns,
                                      cache=self._cache, eps_abs=eps_abs, eps_rel=eps_rel,
                                      **settings)
        self.pattern_nnz = {k: p.scatter.shape[1] for k, p in zip("HAC", patterns)
                            if p is not None}
        self.last_info = None

    def forward(self, H, g, A=None, b=None, C=None, l=None, u=None):
        """Solve the batch; see the class docstring and :class:`QPFunction` for shapes.

        Returns
        -------
        Tensor or tuple of Tensor
            The requested outputs, (n,) / (B, n) for x, etc.
        """
        out = QPFunction.apply(H, g, A, b, C, l, u, self.options)
        status, stats = out[5], out[6]
        self.last_info = {"status": status}
        for j, key in enumerate(STATS_FIELDS):
            self.last_info[key] = stats[..., j]
        chosen = tuple(out[_OUTPUT_NAMES.index(k)] for k in self.outputs)
        return chosen[0] if self._single else chosen

    def reset(self) -> None:
        """Forget the kept solvers and solutions (the next call starts cold)."""
        self._cache.clear()
        self.last_info = None

    def __getstate__(self):
        # copies and pickles carry the patterns and options, not the kept solvers
        state = self.__dict__.copy()
        state["_cache"] = None
        state["options"] = dataclasses.replace(self.options, cache=None)
        state["last_info"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._cache = _SolverCache()
        self.options = dataclasses.replace(self.options, cache=self._cache)

    def extra_repr(self) -> str:
        fixed = ", ".join(f"{k}: {v} values" for k, v in self.pattern_nnz.items())
        st = self.options.settings
        return (f"outputs={self.outputs}, eps_abs={st.eps_abs}, eps_rel={st.eps_rel}, "
                f"infeasible={self.options.infeasible!r}"
                + (f", pattern-fixed ({fixed})" if fixed else ""))


def _check_outputs(outputs) -> tuple[tuple, bool]:
    single = isinstance(outputs, str)
    names = (outputs,) if single else tuple(outputs)
    if not names:
        raise ValueError("outputs must name at least one of " + ", ".join(_OUTPUT_NAMES))
    bad = [k for k in names if k not in _OUTPUT_NAMES]
    if bad:
        raise ValueError(f"unknown output(s) {bad}; valid outputs are {list(_OUTPUT_NAMES)}")
    return names, single or len(names) == 1
