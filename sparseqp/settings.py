"""Every solver option, its default, its allowed range and its meaning, in one place.

Use :func:`make_settings` to build a :class:`Settings` from keyword arguments: unknown names raise a
``ValueError`` listing the valid ones, and values are range-checked.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Settings", "make_settings"]

_INFEASIBLE_MODES = ("closest", "certificate")


@dataclass(frozen=True)
class Settings:
    """Solver settings (all tolerances are on the unscaled problem, infinity norms).

    Attributes
    ----------
    eps_abs : float
        Absolute tolerance on the primal residual ``max(|Ax-b|, |Cx - proj_[l,u](Cx)|)`` and the
        dual residual ``|Hx + g + A'y + C'z|``. Default 1e-8.
    eps_rel : float
        Relative tolerance; the stopping threshold is ``eps_abs + eps_rel * scale`` where scale is
        the largest norm of the terms making up each residual. Default 0.
    check_duality_gap : bool
        Also require the duality gap ``|x'Hx + g'x + b'y + u'[z]_+ + l'[z]_-|`` to be at most
        ``eps_abs + eps_rel * scale`` (scale: the largest of those terms). Residuals of 1e-6 on
        thousands of rows can leave the objective far from optimal (Maros-Meszaros LISWET*);
        this keeps iterating until the objective is accurate too. When the gap stops improving
        first (rounding), the status is SOLVED_INACCURATE with the gap named in ``message``.
        Default True.
    eps_gap_rel : float or None
        The duality gap is also accepted at ``eps_gap_rel`` times the larger magnitude of the
        primal and the dual objective: the objective's relative accuracy. An absolute gap of ``eps_abs`` alone asks for the
        objective to ~1e-11 relative on a 20,000-variable problem with objective 1e5, which
        needs residuals far below ``eps_abs`` (the gap is x'r_d - y'r_p). 0 leaves only the
        rounding floor of the sum (1e-13 times its largest term). Default None: ``1e-3 * eps_abs`` (1e-9 at
        eps_abs = 1e-6, PIQP's default relative gap; tighter with tighter tolerances).
    max_iter : int
        Maximum number of outer (multiplier) iterations. Default 10000.
    max_iter_in : int
        Maximum number of semismooth Newton iterations per outer iteration. Default 200.
    time_limit : float or None
        Wall-clock limit in seconds for setup + solve; None for none.
    infeasible : {"closest", "certificate"}
        What to do when the constraints are inconsistent: return the solution of the closest
        feasible QP (status SOLVED_CLOSEST_FEASIBLE) or stop with PRIMAL_INFEASIBLE and a
        certificate.
    verbose : bool
        Print an iteration log.
    rho : float
        Primal proximal parameter (regularizes H + rho I). Default 1e-7.
    mu_eq, mu_in : float
        Initial dual proximal parameters (inverse penalties) for equalities / inequalities.
    mu_min_eq, mu_min_in : float
        Smallest values the dual proximal parameters may be driven to.
    mu_closest : float
        Penalty used once the constraints are found inconsistent (closest-feasible mode),
        relative to the largest row scaling.
    mu_update_factor : float
        Factor by which mu is divided on insufficient primal progress (in (0, 1)).
    ruiz_iter : int
        Number of Ruiz equilibration passes (0 disables scaling).
    eps_infeas : float
        Relative tolerance of the primal / dual infeasibility certificates.
    check_symmetric : bool
        Reject a visibly non-symmetric H with a ValueError.
    active_set_polish : bool
        Solve the equality QP of the active set that the iterates identify (GMRES on the
        factorization at hand; primal-dual active-set rounds) where that can end the run early:
        after a cold start's first outer iteration, once z's signs settle, and at a warm start.
        Accepted only when it passes every stopping test. Default True; False runs the ALM
        alone.
    pcg_max_iter : int
        Maximum preconditioned-CG iterations used to take a Newton step with the stale
        factorization after an active-set change (0: always refactorize).
    bw_tol : float
        Backward (derivative) solve: relative residual targeted by the refinement (GMRES
        preconditioned by the stored factorization, then plain refinement steps if rounding
        left the true residual above it).
    bw_reg : float
        Backward (derivative) solve: size of the regularization of the KKT matrix (rho_b, mu_b).
    bw_closest_eps : float
        Closest-feasible derivatives: the elastic parameter eps (relative to the largest row
        scaling) of the KKT matrix factorized for them, raised where its smallest block would
        be below 1e-11; the derivatives are the exact eps -> 0 limit (refined).
    bw_max_refine : int
        Backward (derivative) solve: maximum solves with the factorization beyond the first
        (GMRES iterations plus refinement steps).
    """

    eps_abs: float = 1e-8
    eps_rel: float = 0.0
    check_duality_gap: bool = True
    eps_gap_rel: float | None = None
    max_iter: int = 10000
    max_iter_in: int = 200
    time_limit: float | None = None
    infeasible: str = "closest"
    verbose: bool = False
    rho: float = 1e-7
    mu_eq: float = 1e-3
    mu_in: float = 1e-1
    mu_min_eq: float = 1e-9
    mu_min_in: float = 1e-8
    mu_closest: float = 1e-4
    mu_update_factor: float = 0.1
    ruiz_iter: int = 10
    eps_infeas: float = 1e-6
    check_symmetric: bool = True
    active_set_polish: bool = True
    pcg_max_iter: int = 40
    bw_tol: float = 1e-11
    bw_reg: float = 1e-9
    bw_closest_eps: float = 1e-8
    bw_max_refine: int = 30

    @property
    def gap_rel(self) -> float:
        """The relative duality-gap tolerance in effect (``eps_gap_rel`` or its default)."""
        return 1e-3 * self.eps_abs if self.eps_gap_rel is None else self.eps_gap_rel

    def replace(self, **changes) -> "Settings":
        """Return a copy with some settings changed (validated like :func:`make_settings`)."""
        return make_settings(self, **changes)


_FIELDS = {f.name for f in dataclasses.fields(Settings)}


def _check_positive(name, value, allow_zero=False):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise TypeError(f"setting {name!r} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        raise ValueError(f"setting {name!r} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")


def make_settings(base: Settings | None = None, **kwargs) -> Settings:
    """Build validated settings from ``base`` (default settings if None) and keyword overrides.

    Raises
    ------
    ValueError
        On an unknown setting name (the message lists the valid ones) or a value out of range.
    TypeError
        On a value of the wrong type.
    """
    unknown = sorted(set(kwargs) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; valid settings are {sorted(_FIELDS)}")
    s = dataclasses.replace(base if base is not None else Settings(), **kwargs)
    for name in ("eps_abs", "eps_rel", "eps_infeas", "bw_tol", "bw_reg"):
        _check_positive(name, getattr(s, name), allow_zero=True)
    if s.eps_gap_rel is not None:
        _check_positive("eps_gap_rel", s.eps_gap_rel, allow_zero=True)
    for name in ("rho", "mu_eq", "mu_in", "mu_min_eq", "mu_min_in", "mu_closest",
                 "bw_closest_eps"):
        _check_positive(name, getattr(s, name))
    if s.eps_abs == 0 and s.eps_rel == 0:
        raise ValueError("eps_abs and eps_rel cannot both be 0")
    for name in ("max_iter", "max_iter_in", "ruiz_iter", "pcg_max_iter", "bw_max_refine"):
        v = getattr(s, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"setting {name!r} must be a non-negative integer, got {v!r}")
    for name in ("check_duality_gap", "verbose", "check_symmetric", "active_set_polish"):
        v = getattr(s, name)
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"setting {name!r} must be True or False, got {v!r}")
    if s.max_iter < 1 or s.max_iter_in < 1:
        raise ValueError("max_iter and max_iter_in must be >= 1")
    if not (0 < s.mu_update_factor < 1):
        raise ValueError(f"setting 'mu_update_factor' must be in (0, 1), got {s.mu_update_factor!r}")
    if s.time_limit is not None:
        _check_positive("time_limit", s.time_limit)
    if s.infeasible not in _INFEASIBLE_MODES:
        raise ValueError(f"setting 'infeasible' must be one of {_INFEASIBLE_MODES}, got {s.infeasible!r}")
    return s
