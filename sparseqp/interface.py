"""SciPy-style entry points: the reusable :class:`Solver` and the one-shot :func:`solve`."""
from __future__ import annotations

import time

import numpy as np

from . import _kernels
from .kkt import KKTSystem, ScaledProblem, index_parts
from .problem import Problem, as_csc, as_vector, make_problem, replace_vectors
from .result import Result
from .settings import Settings, make_settings
from .solver import WARM_MU_FACTOR, ProxALM
from .status import Status

__all__ = ["Solver", "solve"]


def _log_header():
    print(f"{'iter':>5} {'prim res':>10} {'dual res':>10} {'mu_eq':>9} {'mu_in':>9} "
          f"{'rho':>9} {'|J|':>7} {'facts':>6}")


def _log_line(it, rp, rd, mu_eq, mu_in, rho, n_active, n_fact):
    print(f"{it:5d} {rp:10.3e} {rd:10.3e} {mu_eq:9.2e} {mu_in:9.2e} {rho:9.2e} "
          f"{n_active:7d} {n_fact:6d}")


class Solver:
    """A QP set up once (validation, scaling, symbolic analysis) and solved many times.

    ``min 1/2 x'Hx + g'x  s.t.  A x = b,  l <= C x <= u``

    Parameters
    ----------
    H : sparse matrix or array_like, (n, n), or Problem
        Symmetric positive semidefinite (full matrix; ``upper=True`` reads the upper triangle
        only). None for an LP. A :class:`~sparseqp.problem.Problem` may be passed instead of
        all the data (then its constant is included in ``fun``).
    g : array_like, (n,)
    A : sparse matrix or array_like, (n_eq, n), optional
    b : array_like, (n_eq,), optional
    C : sparse matrix or array_like, (n_in, n), optional
    l, u : array_like, (n_in,), optional
        Bounds on C x (+-inf allowed; a missing side is infinite).
    upper : bool
        Read only the upper triangle of H.
    **settings
        Any field of :class:`~sparseqp.settings.Settings`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparseqp
    >>> s = sparseqp.Solver(sp.eye(2), [-1.0, -1.0], C=sp.eye(2), l=[0, 0], u=[0.5, 2.0])
    >>> r = s.solve()
    >>> np.round(r.x, 6)
    array([0.5, 1. ])
    >>> s.update(g=[-2.0, -2.0])
    >>> np.round(s.solve().x, 6)   # warm-started, same symbolic analysis
    array([0.5, 2. ])
    """

    def __init__(self, H, g=None, A=None, b=None, C=None, l=None, u=None, *, upper=False,
                 **settings):
        t0 = time.perf_counter()
        self.settings: Settings = make_settings(**settings)
        if isinstance(H, Problem):
            if any(v is not None for v in (g, A, b, C, l, u)):
                raise ValueError("pass either a Problem or the data (H, g, A, b, C, l, u), not both")
            self.problem = H
            self._with_constant = True
        else:
            if g is None:
                raise ValueError("g is required")
            self.problem = make_problem(H, g, A, b, C, l, u, check_symmetric=self.settings.check_symmetric,
                                        upper=upper)
            self._with_constant = False
        # the elimination order of H's convexity check, reused by the checks of update(H=...)
        self._h_order = _check_convexity(self.problem.H)
        self._sc = ScaledProblem(self.problem, self.settings.ruiz_iter)
        self._kkt = KKTSystem(self._sc)
        self._state = None
        self._version = 0
        self._setup_time = time.perf_counter() - t0
        self._setup_pending = True

    # ---------------------------------------------------------------------------------------
    @property
    def n(self):
        return self.problem.n

    def update(self, H=None, g=None, A=None, b=None, C=None, l=None, u=None, *, upper=False):
        """Replace some problem values, keeping the sparsity patterns.

        Sparse matrices must have the same pattern as before (entries absent from the new
        matrix are taken as zeros when they are in the old pattern; an entry outside the old
        pattern raises ValueError). No new symbolic analysis is made; the next :meth:`solve`
        warm-starts from the previous solution.
        """
        t0 = time.perf_counter()
        p = self.problem
        if H is None and A is None and C is None:
            problem = replace_vectors(p, g, b, l, u)
        else:
            if g is not None:
                g = as_vector(g, "g", p.n)
            newH = p.H if H is None else self._on_pattern(H, p.H, "H", upper)
            newA = p.A if A is None else self._on_pattern(A, p.A, "A")
            newC = p.C if C is None else self._on_pattern(C, p.C, "C")
            problem = make_problem(
                newH, p.g if g is None else g, newA if p.n_eq else None,
                p.b if b is None else b, newC if p.n_in else None, p.l if l is None else l,
                p.u if u is None else u, constant=p.constant, name=p.name,
                check_symmetric=self.settings.check_symmetric)
            # make_problem copies: patterns must be unchanged (explicit zeros are kept).
        if H is not None:
            # before anything is replaced: a rejected H leaves the solver as it was
            self._h_order = _check_convexity(problem.H, self._h_order)
        self.problem = problem
        old_sc = self._sc
        sc = None
        if H is None and A is None and C is None:
            # only vectors moved: same scaling, same KKT values, factorization kept (unless g
            # moved by orders of magnitude, which asks for another cost scale)
            sc = old_sc.with_rhs(self.problem) if g is None else old_sc.with_vectors(self.problem)
        if sc is None:
            sc = ScaledProblem(self.problem, self.settings.ruiz_iter)
            self._kkt.set_values(sc)
            if self._state is not None:
                # the warm start is kept in scaled units: move it to the new scaling
                st = self._state
                st.x = sc.scale_x(old_sc.unscale_x(st.x))
                st.y = sc.scale_y(old_sc.unscale_y(st.y))
                st.z = sc.scale_z(old_sc.unscale_z(st.z))
        self._sc = sc
        self._version += 1
        self._setup_time = time.perf_counter() - t0

    def _on_pattern(self, M, old, name, upper=False):
        """Return ``M`` as CSC on exactly ``old``'s pattern (zeros filled in)."""
        new = as_csc(M, name, old.shape)
        if name == "H" and upper:
            import scipy.sparse as sp
            Hu = sp.triu(new, format="csc")
            new = (Hu + sp.triu(Hu, k=1, format="csc").T).tocsc()
            new.sort_indices()
        if (new.indptr.shape == old.indptr.shape and np.array_equal(new.indptr, old.indptr)
                and np.array_equal(new.indices, old.indices)):
            return new
        # scatter onto the old pattern via the linear index of each entry
        old_cols = np.repeat(np.arange(old.shape[1]), np.diff(old.indptr))
        new_cols = np.repeat(np.arange(new.shape[1]), np.diff(new.indptr))
        old_key = old_cols.astype(np.int64) * old.shape[0] + old.indices
        new_key = new_cols.astype(np.int64) * new.shape[0] + new.indices
        pos = np.searchsorted(old_key, new_key)
        ok = (pos < old_key.size) & (old_key[np.minimum(pos, old_key.size - 1)] == new_key)
        if not np.all(ok | (new.data == 0)):
            raise ValueError(f"{name} has nonzeros outside the sparsity pattern given at setup; "
                             "build a new Solver for a new pattern")
        out = old.copy()
        out.data[:] = 0.0
        out.data[pos[ok]] = new.data[ok]
        return out

    # ---------------------------------------------------------------------------------------
    def solve(self, x0=None, y0=None, z0=None, *, warm_start=True, **settings) -> Result:
        """Solve the QP; returns a :class:`~sparseqp.result.Result`.

        Parameters
        ----------
        x0, y0, z0 : array_like, (n,), (n_eq,), (n_in,), optional
            Initial primal / dual guesses (unscaled). Missing ones come from the previous
            solution when ``warm_start`` is True and there is one, else zeros. A full guess
            (x0 and, where the problem has such rows, y0 and z0) with no previous solution is
            first tried on the active set z0 gives, where H has curvature along at least 90%
            of the coordinates: one factorization, which a guess near the solution needs
            alone (a wrong one costs that one more than a cold start). A warm start that
            ends in ``NUMERICAL_ERROR`` is repeated from the cold start.
        **settings
            Overrides of the solver settings for this solve only.
        """
        st = self.settings if not settings else self.settings.replace(**settings)
        t_start = time.perf_counter()
        setup_time = self._setup_time if self._setup_pending else 0.0
        self._setup_pending = False
        deadline = None
        if st.time_limit is not None:
            deadline = t_start + st.time_limit - setup_time
        x, y, z, mu_eq, mu_in, guess = self._initial_point(x0, y0, z0, warm_start, st)
        sc, kkt = self._sc, self._kkt
        n_fact0, n_sym0 = kkt.n_factorizations, kkt.n_symbolic
        log = None
        if st.verbose:
            _log_header()
            log = _log_line
        alm = ProxALM(sc, kkt, st, deadline=deadline, log=log)
        status, state, info = alm.run(x, y, z, mu_eq, mu_in, guess)
        solve_time = time.perf_counter() - t_start
        self._state = state if status != Status.NUMERICAL_ERROR else None
        res = self._make_result(status, state, info, alm, st)
        res.n_factorizations = kkt.n_factorizations - n_fact0
        res.n_symbolic = kkt.n_symbolic - n_sym0
        res.setup_time = setup_time
        res.solve_time = solve_time
        res._solver = self
        res._version = self._version
        res._forward = {"sc": sc, "fact_id": kkt.fact_id, "settings": st, "problem": self.problem}
        if st.verbose:
            print(f"status: {res.status.name}  fun: {res.fun:.10g}  prim: {res.prim_res:.2e}  "
                  f"dual: {res.dual_res:.2e}  iter: {res.nit}  newton: {res.n_newton}  "
                  f"factorizations: {res.n_factorizations}  time: {solve_time:.3g}s")
        return res

    def _initial_point(self, x0, y0, z0, warm_start, st):
        sc, p = self._sc, self.problem
        prev = self._state if warm_start else None
        x = sc.scale_x(as_vector(x0, "x0", p.n)) if x0 is not None else (
            prev.x.copy() if prev is not None else np.zeros(p.n))
        y = sc.scale_y(as_vector(y0, "y0", p.n_eq)) if y0 is not None else (
            prev.y.copy() if prev is not None and not prev.closest else np.zeros(p.n_eq))
        z = sc.scale_z(as_vector(z0, "z0", p.n_in)) if z0 is not None else (
            prev.z.copy() if prev is not None and not prev.closest else np.zeros(p.n_in))
        mu_eq = mu_in = None
        if prev is not None and prev.mu_eq is not None and not prev.closest:
            # resume with moderate penalties: the final ones may be tiny after a hard solve
            lo_eq, lo_in = st.mu_eq * WARM_MU_FACTOR, st.mu_in * WARM_MU_FACTOR
            mu_eq = prev.mu_eq if np.all(prev.mu_eq >= lo_eq) else np.full(p.n_eq, lo_eq)
            mu_in = prev.mu_in if np.all(prev.mu_in >= lo_in) else np.full(p.n_in, lo_in)
        # a full primal-dual guess from the caller (no penalties of its own) gets one try
        guess = (mu_eq is None and x0 is not None and (y0 is not None or not p.n_eq)
                 and (z0 is not None or not p.n_in))
        return x, y, z, mu_eq, mu_in, guess

    # ---------------------------------------------------------------------------------------
    def _make_result(self, status, state, info, alm, st) -> Result:
        sc, p = self._sc, self.problem
        x = sc.unscale_x(state.x)
        y = sc.unscale_y(state.y)
        z = sc.unscale_z(state.z)
        Ax, Cx, Hx, rp, rd = _problem_residuals(p, x, y, z)
        s_eq = Ax - p.b
        s_in = np.empty(p.n_in)
        _kernels.box_violation(Cx, p.l, p.u, s_in)
        if status.feasible_solution:
            s_eq = np.zeros(p.n_eq)
            s_in = np.zeros(p.n_in)
        if status == Status.SOLVED_CLOSEST_FEASIBLE:
            rp = 0.0 if not (p.n_eq or p.n_in) else _shifted_primal_res(p, Ax, Cx, s_eq, s_in)
        shift_res = 0.0
        if status == Status.SOLVED_CLOSEST_FEASIBLE:
            v = p.A.T @ s_eq + p.C.T @ s_in
            shift_res = float(np.max(np.abs(v), initial=0.0))
        fun = 0.5 * float(x @ Hx) + float(p.g @ x)
        if self._with_constant:
            fun += p.constant
        message = status.message
        if "message" in info:
            message = f"{message} {info['message']}"
        if status.feasible_solution:
            note = _recomputed_note(p, x, y, z, Ax, Cx, Hx, rp, rd, st)
            if note:
                message = f"{message} {note}"
        res = Result(
            x=x, y=y, z=z, s_eq=s_eq, s_in=s_in, fun=fun, status=status,
            success=status.success, message=message, nit=alm.nit, n_newton=alm.n_newton,
            n_pcg=alm.n_pcg, n_polish_solves=alm.n_polish_solves, prim_res=rp, dual_res=rd,
            shift_res=shift_res,
            certificate=alm.certificate,
        )
        return res


def _recomputed_note(p, x, y, z, Ax, Cx, Hx, rp, rd, st):
    """A note for ``message`` when the residuals recomputed from the returned (unscaled)
    x, y, z exceed the tolerance, or "" when they do not (the solver's own tests run on the
    scaled problem). The difference is the rounding of the unscaling and of the
    recomputation, eps times the size of the terms (Maros-Meszaros QPILOTNO at eps_abs 1e-9:
    dual terms of 2.6e8, recomputed dual residual 4.5e-8)."""
    if rp <= st.eps_abs and rd <= st.eps_abs:
        return ""
    tol_p = tol_d = st.eps_abs
    if st.eps_rel:
        norms = [float(np.max(np.abs(v), initial=0.0)) for v in (Ax, p.b, Cx)]
        tol_p += st.eps_rel * max(norms)
        norms = [float(np.max(np.abs(v), initial=0.0))
                 for v in (Hx, p.g, p.A.T @ y, p.C.T @ z)]
        tol_d += st.eps_rel * max(norms)
    if rp <= tol_p and rd <= tol_d:
        return ""
    return (f"(Recomputed from the returned, unscaled x, y, z the residuals are prim "
            f"{rp:.2e}, dual {rd:.2e} against the tolerances {tol_p:.2e}, {tol_d:.2e}: the "
            "rounding of the unscaling adds eps times the size of their terms to the scaled "
            "problem's.)")


def _problem_residuals(p, x, y, z):
    """(A x, C x, H x, prim, dual) of the unscaled problem: ``p.residuals(x, y, z)`` and the
    products it makes, in one kernel call (scipy's path when the index dtypes differ)."""
    mats = (p.H, p.A, p.C)
    if len({M.indptr.dtype for M in mats} | {M.indices.dtype for M in mats}) == 1:
        return _kernels.problem_residuals(p.H.indptr, p.H.indices, p.H.data, p.A.indptr,
                                          p.A.indices, p.A.data, p.C.indptr, p.C.indices,
                                          p.C.data, p.g, p.b, p.l, p.u, x, y, z)
    rp, rd = p.residuals(x, y, z)
    return p.A @ x, p.C @ x, p.H @ x, rp, rd


def _check_convexity(H, order=None):
    """Raise ValueError when H has a clearly negative eigenvalue; return the elimination
    order for the next check of H's pattern (``order`` itself, or None, when this one needed
    no factorization).

    A diagonal H is checked directly, a diagonally dominant one needs no check; otherwise
    H + delta I (delta = 1e-9 max|H|) is factorized once: a negative pivot means an eigenvalue
    below -delta. The solver would otherwise converge to a saddle point. The first check of
    a pattern is QDLDL's (a separate n x n factorization, with its AMD ordering, which
    dominates: box n = 20,000, 14 of 19 ms); given that ordering back (``Solver.update`` with
    a new H), the check is one numeric factorization by ``_kernels.ldl_negative_pivots``
    (4.8 ms there), the inertia not depending on the order.
    """
    import qdldl
    import scipy.sparse as sp

    if H.nnz == 0:
        return order
    scale = float(np.max(np.abs(H.data)))
    delta = 1e-9 * scale
    # one pass instead of scipy's triu + eye + sum (most of the check's time at small n)
    offdiag, up, ui, ux = _kernels.upper_shifted(H.indptr, H.indices, H.data, delta)
    if not offdiag:
        d = H.diagonal()
        if np.any(d < -1e-12 * scale):
            i = int(np.argmin(d))
            raise ValueError(f"H is not positive semidefinite: H[{i},{i}] = {d[i]!r} < 0")
        return order
    # Gershgorin: a diagonal that dominates its column's off-diagonal mass cannot hide a
    # negative eigenvalue (portfolio, lasso and MPC costs: the factorization is skipped)
    d = H.diagonal()
    absd = np.abs(d)
    n = H.shape[0]
    cols = np.repeat(np.arange(n), np.diff(H.indptr))
    col_mass = np.bincount(cols, weights=np.abs(H.data), minlength=n) - absd
    if np.all(d >= col_mass):
        return order
    if order is not None and order.shape[0] == n:
        ptr, ind = index_parts(H)
        n_neg = _kernels.ldl_negative_pivots(ptr, ind, H.data, delta, order)
    else:
        Hu = sp.csc_matrix((ux, ui, up), shape=H.shape)
        try:
            _, D, perm = qdldl.Solver(Hu, upper=True).factors()
        except Exception:  # zero pivot: singular even after the shift, so not PSD + delta I
            n_neg = -1
        else:
            n_neg = int(np.count_nonzero(D < 0))
            order = np.ascontiguousarray(perm, dtype=np.int64)
    if n_neg < 0:
        raise ValueError("H is not positive semidefinite (its LDL' factorization broke down)")
    if n_neg:
        raise ValueError(f"H is not positive semidefinite: {n_neg} negative "
                         "pivot(s) in the LDL' factorization of H + 1e-9 max|H| I")
    return order


def _shifted_primal_res(p, Ax, Cx, s_eq, s_in):
    """Primal residual against the shifted constraints (0 up to rounding by construction)."""
    r = 0.0
    if p.n_eq:
        r = float(np.max(np.abs(Ax - p.b - s_eq)))
    if p.n_in:
        lo, hi = p.l + np.minimum(s_in, 0.0), p.u + np.maximum(s_in, 0.0)
        r = max(r, float(np.max(np.maximum(Cx - hi, 0.0) + np.maximum(lo - Cx, 0.0))))
    return r


def solve(H, g=None, A=None, b=None, C=None, l=None, u=None, *, x0=None, y0=None, z0=None,
          upper=False, **settings) -> Result:
    """Solve ``min 1/2 x'Hx + g'x  s.t.  A x = b,  l <= C x <= u``.

    Parameters
    ----------
    H : sparse matrix or array_like, (n, n), or Problem
        Symmetric positive semidefinite cost matrix (scipy sparse of any format, ndarray or
        nested lists); None for an LP. A :class:`~sparseqp.problem.Problem` may be passed in
        place of all the data.
    g : array_like, (n,)
    A : sparse matrix or array_like, (n_eq, n), optional
    b : array_like, (n_eq,), optional
    C : sparse matrix or array_like, (n_in, n), optional
    l, u : array_like, (n_in,), optional
        Bounds (+-inf allowed; l <= u; l_i == u_i is an equality).
    x0, y0, z0 : array_like, optional
        Warm start (see :meth:`Solver.solve`).
    upper : bool
        Read only the upper triangle of H.
    **settings
        eps_abs (1e-8), eps_rel (0), max_iter, time_limit, infeasible ("closest" or
        "certificate"), verbose, and the other fields of :class:`~sparseqp.settings.Settings`.

    Returns
    -------
    Result
        x, y, z, s_eq, s_in, fun, status, success, message, nit, n_factorizations, timings; see
        :class:`~sparseqp.result.Result`.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparseqp
    >>> H = sp.diags([1.0, 2.0]); g = np.array([-1.0, -1.0])
    >>> r = sparseqp.solve(H, g, A=[[1.0, 1.0]], b=[1.0])
    >>> r.status.name, np.round(r.x, 6)
    ('SOLVED', array([0.666667, 0.333333]))
    """
    solver = Solver(H, g, A, b, C, l, u, upper=upper, **settings)
    return solver.solve(x0, y0, z0)
