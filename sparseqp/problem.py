"""Validation and canonical form of a QP.

    min 1/2 x'Hx + g'x   s.t.   A x = b,   l <= C x <= u

User data (scipy sparse of any format, numpy arrays, nested lists) goes through
:func:`make_problem`, which checks every argument (shape, dtype, NaN/inf, l <= u, symmetry of H)
and returns a :class:`Problem` holding fresh CSC float64 matrices with sorted indices and summed
duplicates. The caller's arrays are never modified: everything is copied.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

__all__ = ["Problem", "make_problem", "replace_vectors", "as_csc", "as_vector"]


@dataclass(frozen=True, eq=False)
class Problem:
    """A QP in canonical form.

    Attributes
    ----------
    H : scipy.sparse.csc_matrix, (n, n)
        Full symmetric cost matrix (both triangles stored), float64.
    g : ndarray, (n,)
        Linear cost.
    A : scipy.sparse.csc_matrix, (n_eq, n)
        Equality constraint matrix (n_eq may be 0).
    b : ndarray, (n_eq,)
    C : scipy.sparse.csc_matrix, (n_in, n)
        Inequality constraint matrix (n_in may be 0).
    l, u : ndarray, (n_in,)
        Bounds, entries may be -inf / +inf; l <= u.
    constant : float
        Objective constant (reported in ``fun``, irrelevant to the solution).
    name : str
        Optional name (files read by :mod:`sparseqp.io` carry theirs).
    """

    H: sp.csc_matrix
    g: np.ndarray
    A: sp.csc_matrix
    b: np.ndarray
    C: sp.csc_matrix
    l: np.ndarray
    u: np.ndarray
    constant: float = 0.0
    name: str = ""

    @property
    def n(self) -> int:
        return self.g.shape[0]

    @property
    def n_eq(self) -> int:
        return self.b.shape[0]

    @property
    def n_in(self) -> int:
        return self.l.shape[0]

    def objective(self, x: np.ndarray) -> float:
        """Objective value 1/2 x'Hx + g'x + constant."""
        return float(0.5 * x @ (self.H @ x) + self.g @ x + self.constant)

    def residuals(self, x, y=None, z=None):
        """Unscaled residuals (infinity norms): (primal, dual).

        primal = max(|Ax - b|, |Cx - proj_[l,u](Cx)|); dual = |Hx + g + A'y + C'z| (nan when
        y or z is None and the corresponding block is non-empty).
        """
        # np.fmax would drop a NaN and Python's max(0.0, nan) is 0.0: a NaN x must give NaN
        parts = [0.0]
        if self.n_eq:
            parts.append(float(np.max(np.abs(self.A @ x - self.b))))
        if self.n_in:
            cx = self.C @ x
            parts.append(float(np.max(np.abs(cx - np.clip(cx, self.l, self.u)))))
        rp = float(np.max(parts))
        r = self.H @ x + self.g
        if self.n_eq:
            if y is None:
                return rp, float("nan")
            r = r + self.A.T @ y
        if self.n_in:
            if z is None:
                return rp, float("nan")
            r = r + self.C.T @ z
        return rp, float(np.max(np.abs(r))) if r.size else 0.0


def _is_sparse(M) -> bool:
    return sp.issparse(M)


def as_csc(M, name: str, shape: tuple[int | None, int | None]) -> sp.csc_matrix:
    """Copy ``M`` (scipy sparse, ndarray, list) into a canonical float64 CSC matrix.

    ``shape`` entries that are None are not checked. Raises a TypeError for non-numeric data and a
    ValueError naming ``name`` for a wrong shape or NaN/inf entries.
    """
    if _is_sparse(M):
        if M.dtype.kind not in "biuf":
            raise TypeError(f"{name} must have a real numeric dtype, got {M.dtype}")
        out = sp.csc_matrix(M, dtype=np.float64, copy=True)
    else:
        try:
            arr = np.array(M, copy=True)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} could not be converted to an array: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
        out = sp.csc_matrix(arr.astype(np.float64))
    if out.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {out.shape}")
    for k, want in enumerate(shape):
        if want is not None and out.shape[k] != want:
            raise ValueError(f"{name} has shape {out.shape}, expected {tuple('*' if s is None else s for s in shape)}")
    out.sum_duplicates()
    out.sort_indices()
    if not np.all(np.isfinite(out.data)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    # int32 indices when they fit: the kernels are compiled for int32 and int64 both.
    return out


def as_vector(v, name: str, size: int | None, allow_inf: bool = False) -> np.ndarray:
    """Copy ``v`` into a float64 1-D array of length ``size`` (None: any)."""
    if _is_sparse(v):
        v = v.toarray()
    try:
        arr = np.array(v, copy=True)
    except Exception as exc:
        raise TypeError(f"{name} could not be converted to an array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must have a real numeric dtype, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"{name} has length {arr.shape[0]}, expected {size}")
    if np.any(np.isnan(arr)):
        raise ValueError(f"{name} contains NaN")
    if not allow_inf and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains infinite entries")
    return arr


def _symmetry_error(H: sp.csc_matrix) -> float:
    D = (H - H.T).tocsc()
    if D.nnz == 0:
        return 0.0
    scale = max(1.0, float(np.max(np.abs(H.data)))) if H.nnz else 1.0
    return float(np.max(np.abs(D.data))) / scale


def _check_bounds(l, u):
    if np.any(l == np.inf):
        raise ValueError("l contains +inf")
    if np.any(u == -np.inf):
        raise ValueError("u contains -inf")
    bad = np.flatnonzero(l > u)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"l > u at {bad.size} row(s), first at row {i}: l={l[i]!r} > u={u[i]!r}")


def replace_vectors(problem: Problem, g=None, b=None, l=None, u=None) -> Problem:
    """``problem`` with new vectors (None: kept), checked and copied as :func:`make_problem`
    does; the matrices are shared, not copied or checked again (a warm re-solve loop that only
    moves g, b or the bounds: at n = 20,000 the matrix checks took most of ``Solver.update``).
    """
    p = problem
    new = {}
    if g is not None:
        new["g"] = as_vector(g, "g", p.n)
    if b is not None:
        new["b"] = as_vector(b, "b", p.n_eq)
    if l is not None:
        new["l"] = as_vector(l, "l", p.n_in, allow_inf=True)
    if u is not None:
        new["u"] = as_vector(u, "u", p.n_in, allow_inf=True)
    if l is not None or u is not None:
        _check_bounds(new.get("l", p.l), new.get("u", p.u))
    return replace(p, **new)


def make_problem(H, g, A=None, b=None, C=None, l=None, u=None, *, constant=0.0, name="",
                 check_symmetric=True, upper=False) -> Problem:
    """Validate user data and return a canonical :class:`Problem` (all arrays copied).

    Parameters
    ----------
    H : sparse matrix or array_like, (n, n)
        Symmetric positive semidefinite cost matrix; None for an LP (zero matrix). With
        ``upper=True`` only the upper triangle is read.
    g : array_like, (n,)
    A : sparse matrix or array_like, (n_eq, n), optional
    b : array_like, (n_eq,), required with A
    C : sparse matrix or array_like, (n_in, n), optional
    l, u : array_like, (n_in,), optional
        Bounds on C x; a missing side is taken as -inf / +inf. At least one is required with C.
    """
    g = as_vector(g, "g", None)
    n = g.shape[0]
    if H is None:
        H = sp.csc_matrix((n, n))
    else:
        if not _is_sparse(H):
            Hs = np.asarray(H) if not isinstance(H, list) else np.array(H)
            if Hs.ndim == 2 and Hs.shape[0] != Hs.shape[1]:
                raise ValueError(f"H must be square, got shape {Hs.shape}")
        elif H.shape[0] != H.shape[1]:
            raise ValueError(f"H must be square, got shape {H.shape}")
        H = as_csc(H, "H", (n, n))
        if upper:
            Hu = sp.triu(H, format="csc")
            H = (Hu + sp.triu(Hu, k=1, format="csc").T).tocsc()
            H.sum_duplicates()
            H.sort_indices()
        elif check_symmetric:
            err = _symmetry_error(H)
            if err > 1e-10:
                raise ValueError(
                    f"H is not symmetric (max relative |H - H'| = {err:.3g}); pass the full "
                    "symmetric matrix, or upper=True to use only its upper triangle")
    # explicit zeros are kept: they belong to the pattern (updates, gradients live on it)

    if A is None:
        if b is not None and np.size(b) > 0:
            raise ValueError("b is given but A is None")
        A = sp.csc_matrix((0, n))
        b = np.zeros(0)
    else:
        A = as_csc(A, "A", (None, n))
        if b is None:
            raise ValueError("A is given but b is None")
        b = as_vector(b, "b", A.shape[0])

    if C is None:
        if (l is not None and np.size(l) > 0) or (u is not None and np.size(u) > 0):
            raise ValueError("l or u is given but C is None")
        C = sp.csc_matrix((0, n))
        l = np.zeros(0)
        u = np.zeros(0)
    else:
        C = as_csc(C, "C", (None, n))
        p = C.shape[0]
        if l is None and u is None:
            raise ValueError("C is given but neither l nor u")
        l = np.full(p, -np.inf) if l is None else as_vector(l, "l", p, allow_inf=True)
        u = np.full(p, np.inf) if u is None else as_vector(u, "u", p, allow_inf=True)
        _check_bounds(l, u)
    constant = float(constant)
    if not np.isfinite(constant):
        raise ValueError("constant must be finite")
    return Problem(H=H, g=g, A=A, b=b, C=C, l=l, u=u, constant=constant, name=str(name))
