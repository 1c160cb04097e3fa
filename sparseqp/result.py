"""The result of a solve: a dict with attribute access, like scipy's OptimizeResult."""
from __future__ import annotations

import numpy as np

__all__ = ["Result"]


class Result(dict):
    """Solution of a QP and what the solver did to get it.

    Attributes
    ----------
    x : ndarray, (n,)
        Primal solution (of the closest feasible QP when status is SOLVED_CLOSEST_FEASIBLE).
    y : ndarray, (n_eq,)
        Multipliers of A x = b (convention H x + g + A'y + C'z = 0).
    z : ndarray, (n_in,)
        Multipliers of l <= C x <= u: z_i > 0 at an active upper bound, z_i < 0 at an active
        lower bound. For a closest-feasible solution these are multipliers of the shifted QP
        (finite; they are not unique along the shift direction (s_eq, s_in)).
    s_eq : ndarray, (n_eq,)
        Equality shift A x - b (zeros unless status is SOLVED_CLOSEST_FEASIBLE).
    s_in : ndarray, (n_in,)
        Inequality shift C x - proj_[l,u](C x) (zeros unless status is SOLVED_CLOSEST_FEASIBLE).
    fun : float
        Objective 1/2 x'Hx + g'x (+ the problem's constant when a Problem was solved).
    status : sparseqp.Status
    success : bool
        True for SOLVED, SOLVED_CLOSEST_FEASIBLE and SOLVED_INACCURATE (a solution is returned).
    message : str
    nit : int
        Outer (proximal multiplier) iterations.
    n_newton : int
        Semismooth Newton iterations, all outer iterations together.
    n_factorizations : int
        Numeric LDL' factorizations of the KKT matrix performed by this solve.
    n_symbolic : int
        Symbolic analyses (AMD ordering + elimination tree) performed by this solve (0 for a
        re-solve of a problem whose pattern was already analysed).
    n_pcg : int
        Preconditioned CG iterations (Newton steps taken with a stale factorization).
    n_polish_solves : int
        Solves spent by the Krylov polish (GMRES on the equality QP of the identified active
        set, preconditioned by the factorization at hand; warm starts and settled cold runs).
    prim_res, dual_res : float
        Unscaled residuals (infinity norms) at the returned point.
    shift_res : float
        |A's_eq + C's_in| (optimality of the shift; 0 for a feasible solve).
    setup_time, solve_time : float
        Seconds spent in setup (validation, scaling, symbolic analysis) and in the iterations.
    certificate : dict or None
        PRIMAL_INFEASIBLE: {'dy': (n_eq,), 'dz': (n_in,)} with A'dy + C'dz ~ 0 and
        b'dy + u'[dz]_+ - l'[dz]_- < 0. DUAL_INFEASIBLE: {'dx': (n,)} with Hdx ~ 0, Adx ~ 0,
        C dx in the recession cone of [l, u] and g'dx < 0.
    """

    # derivatives (see sparseqp.derivatives) -------------------------------------------------
    def vjp(self, dx=None, dy=None, dz=None, ds_eq=None, ds_in=None):
        """Gradients of a loss w.r.t. (H, g, A, b, C, l, u); see :func:`sparseqp.derivatives.vjp`."""
        from .derivatives import vjp

        return vjp(self, dx, dy, dz, ds_eq, ds_in)

    def jvp(self, dH=None, dg=None, dA=None, db=None, dC=None, dl=None, du=None):
        """Directional derivative of the solution; see :func:`sparseqp.derivatives.jvp`."""
        from .derivatives import jvp

        return jvp(self, dH, dg, dA, db, dC, dl, du)

    def jacobian(self, wrt="b", index=None, of="x"):
        """Jacobian of ``of`` w.r.t. a vector parameter; see :func:`sparseqp.derivatives.jacobian`."""
        from .derivatives import jacobian

        return jacobian(self, wrt=wrt, index=index, of=of)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self):
        keys = [k for k in self.keys() if not k.startswith("_")]
        width = max(map(len, keys)) + 1 if keys else 0
        lines = []
        for k in keys:
            v = self[k]
            if isinstance(v, np.ndarray):
                text = np.array2string(v, threshold=6, precision=6)
            else:
                text = repr(v)
            lines.append(k.rjust(width) + ": " + text)
        return "\n".join(lines)

    def __dir__(self):
        return list(self.keys())
