"""The proximal augmented-Lagrangian driver (ProxQP family) over the Cython kernels and QDLDL.

Outer loop (proximal method of multipliers) around the prox center (xe, ye, ze):

    min_x  f(x) + rho/2 |x - xe|^2 + 1/2 |A x - b + M_eq ye|^2_{M_eq^-1}
                + 1/2 dist^2_{M_in^-1}(C x + M_in ze, [l, u])

with per-row penalties M_eq = diag(mu_eq), M_in = diag(mu_in). Inner loop: semismooth Newton on
its (piecewise-linear) optimality condition, an exact line search along each Newton direction.
Everything runs on the Ruiz-scaled problem; stopping tests use the unscaled residuals.

Where the time goes (design.md section 7): numeric factorizations. They happen when a penalty
changes (rare: only on insufficient primal progress) and when the active set changes. For the
latter, the Newton step is first computed by preconditioned CG on the reduced Newton matrix with
the *stale* factorization as preconditioner: the two matrices differ by a rank-k term (k rows
entering or leaving), so CG needs about k + 1 iterations, each a solve with the existing factors.
Only when that is predicted or observed to cost more than a factorization do we refactorize.
"""
from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import _kernels
from .kkt import (KKTSystem, ScaledProblem, capacitance_lu, capacitance_solve,
                  row_switch_product)
from .refine import gmres_refine
from .status import Status

__all__ = ["ProxALM", "IterationState"]

_STALL_ITERS = 100  # outer iterations without a 1% gain before declaring a stall
_MU_SHRINK_PROGRESS = 0.25  # penalty shrinks when the primal residual falls by less than this
# Primal residual met but the dual one stuck this many outer iterations: the penalties are so
# small that rounding in y = y_e + (Ax - b) / mu (about eps_mach |Ax| / mu) sets a dual floor,
# worst with dependent constraints. The penalties then grow by _MU_RESET and stay above that.
_DUAL_STALL_ITERS = 8
_MU_RESET = 100.0
# (scaled) penalties may grow past their start values up to this. 1 left STADAT1 at its floor:
# 3998 of 3999 rows active, full exact Newton steps, the unscaled gradient stuck at 1.5e-6
# (presumably the rounding of z = (Cx + mu ze - u) / mu, as in the session-2 dual stalls);
# with 100 it solves (mu_in ends at 100).
_MU_MAX = 100.0
# One PCG iteration in solves: a KKT solve for the preconditioner plus the reduced matvec;
# measured 2-2.5 on the benchmark classes at n=1k-5k when the matvec was five scipy products
# (now one fused kernel: not re-measured, so the decisions stay those of session 2).
_PCG_ITER_COST = 3.0
# PCG stops at this residual relative to the right-hand side (the gradient): an inexact Newton
# step with forcing term eta (any PCG iterate is a descent direction; on a fixed active set the
# gradient falls by about eta per step). 1e-10 asked for digits the reduced system does not have
# at small mu (its multiplier rows carry a 1/mu amplification), so PCG "failed" into a
# refactorization: QSHIP08L/12L, hundreds of those per outer iteration.
_PCG_FORCING = 1e-2
# Low-rank corrected stale factorization (see _lowrank_precond): at most this many changed
# rows, PCG iterations with it, and solves charged per step on top of the W columns.
_LR_MAX_ROWS = 64
_LR_PCG_ITER = 5
_LR_PCG_TOL = 1e-10
_LR_STEP_SOLVES = 2
_LR_STEP_FLOPS = 1e6
# The W columns' flops may reach this many factorizations' (the flop model prices a solve at
# qdldl's speed; the solves run on the copied factors, KKTSystem.solve_x_many, 1.4-3.3x faster).
# 2 with qdldl's solves: random 20k 8.0 -> 11.2 s. 2 with the copied factors (after the longer
# first-iteration steps): factorizations portfolio 5k/20k 28/31 -> 25/24, random 5k/20k 14/28
# -> 11/24, lasso 20k 8 -> 6; CPU time random 20k 2.9 -> 2.7 s, lasso 20k 1.0 -> 0.9 s.
_LR_BUDGET = 2.0
# Longer steps while a cold run is at its starting penalties (see _longer_step): the longest
# step 1, 1/2, 1/4, ... above the exact one with the Armijo decrease _LONG_STEP_SIGMA t phi'(0)
# of the merit and an inner gradient at most _LONG_STEP_GROWTH times the current one. Measured
# (eps_abs 1e-6, seed 0, first outer iteration only, before _LR_BUDGET 2): factorizations
# random 5k/20k 26/54 -> 14/28, box 5k/20k 42/50 -> 31/30. Sigma 0.1 / 0.4 kept less of it
# (random 5k 23 / 24); without the gradient test accepted full steps threw degenerate LP-like
# problems far off (QGROW7 161 -> 1187 LUs, the gradient 4 -> 3,800); with 1 instead of 2 it
# kept less (random 20k 42). Kept until the first penalty change rather than for the first
# outer iteration only: portfolio 20k 24 -> 22 LUs, Maros-Meszaros LUs -2% instead of +3%.
# Maros-Meszaros (with _LR_BUDGET 2): 84/91 solved as before; LUs fewer on 45 problems, more on
# 15, mostly degenerate LPs whose path changed (QGROW15 608 -> 1223, QGROW22 503 -> 785,
# GOULDQP2 51 -> 194).
_LONG_STEP_SIGMA = 1e-4
# Krylov polish of a warm start (see _krylov_polish): rows of J that may differ from the
# factorization's active set when the switched solve (KKTSystem.switched_solve) is beyond its
# budget (more: one refactorization; GMRES with a rank-2k correction needed 50-74 solves for
# 15-30 rows and did not converge), GMRES tolerance relative to the
# KKT residual, its solves per round (+2 per differing row), active-set rounds. Warm `update`
# re-solves (g moved 1e-3 relative) in units of one factorization's time, before -> after:
# equality 20k 2.2 -> 0.7, random 5k/20k 4.2/3.0 -> 1.1/2.5, box 20k 24.6 -> 9.1, mpc 20k
# 5.2 -> 3.1; portfolio 20k unchanged (its set moves by more: the polish gives up).
_KRYLOV_POLISH_ROWS = 4
_KRYLOV_POLISH_TOL = 1e-10
_KRYLOV_POLISH_SOLVES = 12     # ... or one factorization's worth (flop model) if more, with
# GMRES's windowed stall test: preconditioned at the first penalties (mu_eq 1e-3) GMRES falls
# steadily but slower than a halving per step (equality n = 20,000: 16 solves where the plain
# test stopped it at 6 and the run took a second factorization, 0.21 -> 0.16 s)
_KRYLOV_POLISH_ROUNDS = 3
# ... of which at most this many on a settled set whose residual the solves' rounding left
# above tolerance (lasso 20k cold: 8 -> 4 factorizations; random 1k 11 -> 9)
_POLISH_REFINES = 2
# ... and of a cold run: at most this many tries, each on a new factorization, whenever z's
# signs are those of the previous outer iteration (also tried: only once both residuals were
# within 1e3 of their tolerances: equality 5k 3 factorizations instead of 1, lasso 5k 11 as now)
_KRYLOV_COLD_TRIES = 3
# ... also in the shifted re-solves of closest mode, and again on the same factorization once
# the residuals fell this much since the last try (the ALM at fixed penalties: a shifted
# re-solve at eps_abs 1e-9 crept 8% per iteration for 300 iterations and ended in
# NUMERICAL_ERROR with its dual residual at the rounding floor; the polish solved it in 11)
_KRYLOV_RETRY_GAIN = 1e-3
# Primal-dual active-set rounds after a cold run's first outer iteration (_krylov_polish with
# tight=True): at most _PDAS_ROUNDS rounds, each on a factorization of the guessed set at
# _PDAS_MU_FACTOR times the smallest penalties, kept while the rows that change shrink by
# _PDAS_SHRINK per round. Factorizations (eps_abs 1e-6, seed 0), ALM alone -> with them:
# portfolio 5k/20k 25/24 -> 14/17, box 1k/5k/20k 14/15/14 -> 11/13/12, mpc 11/8/7 -> 6/6/5,
# lasso 1k/5k 8/11 -> 3/4; worse where the rounds do not settle: random 1k/20k 9/18 -> 11/22,
# lasso 20k 6 -> 8, portfolio 1k 30 -> 31. A shrink of 0.7 lost portfolio 20k (its rounds
# shrink by 0.54-0.84: 29 factorizations). At 1e-8 / 1e-7 the solves' backward error (growing
# like 1/mu) left lasso 20k's settled set a dual residual of 2.7e-5; a factor of 1000 fixed that
# (8 -> 4 factorizations) but its factorization, kept for warm starts, cost every warm re-solve
# a GMRES solve more (mpc 1k: 2 -> 3), so the polish refines on a settled set instead
# (_POLISH_REFINES).
# Only where H has curvature along most coordinates: on LP-like problems the rounds seldom
# settle and a failed try costs ~2 factorizations (Maros-Meszaros: 45 problems more, 7 fewer,
# mostly the LP-like Q* ones, whose H has 3-38% of its diagonal positive; lasso has 98%).
_PDAS_CURVED = 0.9
_PDAS_ROUNDS = 12
_PDAS_MU_FACTOR = 10.0
#: A warm start resumes at penalties no smaller than this times the settings' (a previous
#: solve's final ones may be tiny); a caller's full guess (x0, y0, z0) is first tried there.
WARM_MU_FACTOR = 1e-3
_PDAS_SHRINK = 0.9
# Closest mode: the smallest row penalty is at least this times mu_closest. The penalties
# follow the squared row scalings, which spanned 1e10 on a QP with a row of norm 3.5e-5
# (tests/data/equality_inconsistent_922.npz): hung from the largest, the other rows got
# 1.4e-14 and their multipliers lost every digit.
_CLOSEST_SPREAD = 1e-6
_LONG_STEP_GROWTH = 2.0
# Full steps of a cold start's first inner solve (see _inner) are kept while the rows that
# change at their end shrink at least this much per step
_FULL_STEP_SHRINK = 0.6
_GAP_STALL_ITERS = 25  # residuals met, duality gap not improving: accept with a message
_SHIFTED_PRIMAL_STALL = 15  # shifted re-solve: outer iterations without primal progress
_INNER_HOVER_STEPS = 5  # inner steps without halving the gradient ...
_INNER_HOVER_FACTOR = 10.0  # ... within this factor of its target: the rounding floor
_FLOOR_SHARE = 1.0  # penalties shrink no lower than a dual rounding floor of this x tol_d
_FLOOR_MIN_SHRINK = 0.3  # ... and not at all when that bound leaves more than this factor
_FLOOR_PATIENCE = 3  # ... while the primal residual fell by 10% within this many iterations
# A stalled point whose every residual row is within this factor of its rounding floor (eps
# times the size of the row's terms) ends SOLVED_INACCURATE, not NUMERICAL_ERROR: at eps_abs
# 1e-9 Maros-Meszaros QGFRDXPN and QSHELL stall at 5-7x (dual terms of 1e7-1e8)
_FLOOR_ACCEPT = 10.0
_FLOOR_GATE = 1e3  # ... tested only where the residuals are within this factor of tolerance
_FLOOR_STALL_ITERS = 25  # ... and ends the run after this many iterations without a 1% gain
# ... and a run that ends in NUMERICAL_ERROR at eps_abs below this is run again from its start
# at this factor times its tolerances; the result is kept where it is at the floor (STADAT1)
_LOOSER_BELOW = 1e-7
_LOOSER_FACTOR = 1e3
_PROX_SHARE = 0.5  # dual residual made of the proximal term rho (x - x_e) (see _extrapolate)
# Polish (see _polish): at most this many active-set rounds (one sparse LU each)
_POLISH_ROUNDS = 100
_POLISH_RESTARTS = 3  # failed polishes whose multipliers restart the outer loop ...
_RESTART_WORSE = 1e4  # ... unless their residuals are this much above the current point's
# the merit (residuals over their tolerances) not halved in this many outer iterations with the
# penalties at their floor: the ALM's rate can no longer improve, try one polish (LISWET12:
# the primal residual crept from 1.58e-6 to 1.0e-6 in 2,500 iterations, a 1% gain every
# 100, just fast enough to never stall)
_POLISH_SLOW_ITERS = 50
_POLISH_MAX_N = 200_000  # KKT dimension above which no polish is tried (LU fill)
_POLISH_REG = 1e-9  # (scaled) regularization when the active set's KKT matrix is singular ...
_POLISH_REG_STEPS = 10  # ... and the refinement steps against the unregularized one
# _drop_stray_multipliers: at most this many solves to filter the residual onto the left null
# space of the rows holding x, stopping once the move they give changes the dual residual by
# at most _STRAY_DUAL_SHARE of its tolerance, or when a solve filters by less than _STRAY_STALL
_STRAY_SOLVES = 60
_STRAY_DUAL_SHARE = 0.1
_STRAY_STALL = 0.95
_STRAY_DROPS = 4  # ... and at most this many rows whose multiplier the move brings to 0


class _Stall:
    """The best value of a measure and when it was reached: ``stalled`` once ``patience``
    iterations have not improved on it by the factor ``gain``."""

    __slots__ = ("gain", "patience", "best", "best_it")

    def __init__(self, patience, gain=0.9):
        self.gain, self.patience = gain, patience
        self.reset(0)

    def reset(self, it):
        self.best, self.best_it = math.inf, it

    def stalled(self, value, it):
        if value < self.gain * self.best:
            self.best, self.best_it = value, it
            return False
        return it - self.best_it >= self.patience


class _NonConvex(Exception):
    pass


def _z_signs(z):
    """Active-set signs that multipliers z point at: 1 (upper bound), -1 (lower), 0 (int8)."""
    return _kernels.z_signs(np.ascontiguousarray(z, dtype=np.float64))


class IterationState:
    """Scaled iterates and penalties carried between solves (warm starts, derivatives)."""

    __slots__ = ("x", "y", "z", "mu_eq", "mu_in", "active", "closest")

    def __init__(self, x, y, z, mu_eq, mu_in, active, closest=False):
        self.x, self.y, self.z = x, y, z
        self.mu_eq, self.mu_in = mu_eq, mu_in
        self.active = active
        self.closest = closest


def _worst_ratio(r, floor, tol):
    """max over rows of r_i / floor_i where r_i > tol (0 where every row meets tol)."""
    if not r.size:
        return 0.0
    return float(np.max(np.where(r > tol, r / np.maximum(floor, 1e-300), 0.0)))


def _floor_message(lead, rp, rd, tol_p, tol_d):
    """The message of a SOLVED_INACCURATE point at its rounding floor; ``lead`` says how the
    run got there."""
    return (f"{lead} has residuals prim {rp:.2e}, dual {rd:.2e} (scaled problem) above their "
            f"tolerances ({tol_p:.2e}, {tol_d:.2e}), each row within {_FLOOR_ACCEPT:g}x its "
            "rounding floor (eps times the size of its terms): double precision resolves no "
            "more on this problem's data")


def _gap_message(gap, tol):
    return (f"residuals met; the duality gap {gap:.2e} stopped decreasing above its "
            f"tolerance {tol:.2e}")


class ProxALM:
    """One run of the proximal ALM on a scaled problem with a (possibly pre-used) KKT system.

    Parameters
    ----------
    sc : ScaledProblem
    kkt : KKTSystem
        Its factorization is reused when it matches; on return it holds the last one.
    settings : Settings
    deadline : float or None
        ``time.perf_counter()`` value after which the run stops with TIME_LIMIT_REACHED.
    log : callable or None
        Receives one formatted line per outer iteration (verbose mode).
    """

    def __init__(self, sc: ScaledProblem, kkt: KKTSystem, settings, deadline=None, log=None):
        self.sc, self.kkt, self.st = sc, kkt, settings
        self.deadline = deadline
        self.log = log
        self.n_newton = 0
        self.n_polish_solves = 0        # solves of _krylov_polish
        self.n_pcg = 0
        self.nit = 0
        self._nit_nested = 0            # outer iterations of shifted re-solves (in nit)
        self.certificate = None
        self.allow_closest = True
        self.primal_stall_exit = 0      # > 0 in shifted re-solves (see _solve_shifted) ...
        self.reshift_ok = None          # ... where a stall exits only when this(Ax, Cx) holds
        # weights that make the scaled penalties equal in the *unscaled* norm (closest mode)
        self._w_eq = sc.E ** 2
        self._w_in = sc.F ** 2
        # maps a scaled dual-residual vector to its unscaled size
        self._dual_unscale = 1.0 / (sc.c * sc.D)
        # the inner iterate's Ax, Cx, y, z, active, gradient live in its buffers
        self._ws = _kernels.Workspace(sc.ops, sc.b, sc.l, sc.u, sc.g, self._dual_unscale)
        self._active = self._ws.active
        self._abs_a = self._abs_c = None  # (|A|, |A'|), (|C|, |C'|): see _abs_pair
        self._abs_h = None
        # (ratio, x, y, z, rp, rd): the polishes' best point within _FLOOR_ACCEPT of its
        # rounding floor, for a run that would otherwise end in NUMERICAL_ERROR
        self._floor_cand = None
        # W columns of _lowrank_precond, valid for the factorization numbered _lr_fact
        self._lr_fact, self._lr_cols = None, {}
        self._lr_off = None             # the mu_in array on which it failed
        self._long_steps = False        # see _longer_step
        self._full_steps = False        # see _inner

    # ---------------------------------------------------------------------------------------
    # residuals
    # ---------------------------------------------------------------------------------------
    def _unscaled_residuals(self, x, y, z, Ax, Cx):
        """(prim, dual, prim_scale, dual_scale), unscaled infinity norms."""
        sc = self.sc
        return self._ws.unscaled_residuals(x, y, z, Ax, Cx, sc.E, sc.F)

    def _complementarity(self, z, Cx, sc=None):
        """max over rows with z_i != 0 of the distance of C_i x to the bound z_i points at
        (unscaled): the ALM makes it small only asymptotically. ``sc``: another problem on
        the same matrices (a shifted one), by default this run's."""
        sc = self.sc if sc is None else sc
        if not sc.p:
            return 0.0
        return _kernels.complementarity(z, Cx, sc.l, sc.u, sc.F)

    def _duality_gap(self, x, y, z, sc=None):
        """(|gap|, scale, objective scale), unscaled: gap = x'Hx + g'x + b'y + u'[z]_+ +
        l'[z]_- (0 at a KKT point), scale = the largest of its terms, objective scale = the
        larger magnitude of the primal objective x'Hx/2 + g'x and the dual one
        -x'Hx/2 - b'y - u'[z]_+ - l'[z]_-. Every scaled term is c times the unscaled one.
        ``sc`` as in :meth:`_complementarity`."""
        sc = self.sc if sc is None else sc
        xhx, gx = float(x @ self._ws.h_product(x)), float(sc.g @ x)
        by = float(sc.b @ y) if sc.m else 0.0
        # z_i > 0 only at a finite u_i, z_i < 0 only at a finite l_i
        supp = (float(np.where(z > 0, sc.u, 0.0) @ z + np.where(z < 0, sc.l, 0.0) @ z)
                if sc.p else 0.0)
        terms = (xhx, gx, by, supp)
        gap = abs(sum(terms)) / sc.c
        obj = max(abs(0.5 * xhx + gx), abs(0.5 * xhx + by + supp)) / sc.c
        return gap, max(abs(t) for t in terms) / sc.c, obj

    def _gap_met(self, gap, gscale, oscale):
        """The duality-gap stopping test: its tolerance, its relative tolerance (eps_gap_rel,
        relative to the objective: the terms can cancel, LISWET5's largest is ~1e3 times its
        objective), or the rounding floor of the sum of its terms."""
        st = self.st
        return (gap <= st.eps_abs + st.eps_rel * gscale
                or gap <= st.gap_rel * oscale or gap <= 1e-13 * gscale)

    def _gap_met_or_mended(self, x, y, z, Ax, Cx, tol_d, gap_terms=None, mend=True):
        """(y, z) when the point, whose residuals meet their tolerances, meets the duality-gap
        test too: as it is, or (``mend``) with its multipliers moved off the residual's
        direction (see :meth:`_drop_stray_multipliers`); None when neither does.
        ``gap_terms``: the point's :meth:`_duality_gap` when the caller has it."""
        if not self.st.check_duality_gap:
            return y, z
        if gap_terms is None:
            gap_terms = self._duality_gap(x, y, z)
        if self._gap_met(*gap_terms):
            return y, z
        if not mend:
            return None
        mended = self._drop_stray_multipliers(x, y, z, Ax, Cx, tol_d)
        if mended is None:
            return None
        y2, z2 = mended
        _, rd, _, _ = self._unscaled_residuals(x, y2, z2, Ax, Cx)
        if rd <= tol_d and self._gap_met(*self._duality_gap(x, y2, z2)):
            return y2, z2
        return None

    def _drop_stray_multipliers(self, x, y, z, Ax, Cx, tol_d):
        """Multipliers without their stray component along the primal residual, or None.

        Where the rows that hold x (A and the rows with z_i != 0) are dependent and the data
        leaves them inconsistent by less than the tolerance, part of the residual r =
        (A x - b, C_J x - bound_J) lies in the left null space of M = [A; C_J]: no x reduces
        it, and each ALM update adds it / mu to the multipliers. The residuals stay met, but
        the duality gap holds r'(y, z_J), which grows without bound (random n = 1,000, A of
        rank 249 with its 250 rows inconsistent by 1.3e-7 after a warm ``update``: y reached
        2.7e6 along that direction, a gap of 0.34 at eps_abs 1e-5, SOLVED_INACCURATE after
        105 iterations, where the cold solve stopped after 3 with a small y).

        The null direction, from the factorization at hand (scaled): with Mu the diagonal of
        the penalties and S = M (H + rho I)^-1 M', K (u, v) = (0, Mu w) gives
        -v = (S + Mu)^-1 Mu w, which keeps w on null(S) = null(M') and shrinks its other
        components (by mu / (mu + lambda) where the penalties are equal, lambda the
        eigenvalues of S). Repeated from w = r this converges to a direction w with M' w = 0,
        along which (y, z_J) moves to cancel r'(y, z_J): the dual residual changes by t M' w.
        The solves go on until that change is below a tenth of ``tol_d``. (Two solves of
        d -> -mu v did while every row had the same penalty; with a warm start's, mu_eq = 1e-3
        and mu_in = 0.1, that iteration's fixed point is Mu w, not a null vector: at random
        n = 150 the move left a dual residual of 15 and the re-solve ended SOLVED_INACCURATE
        after 105 iterations, where the cold solve took 1.) The caller keeps the result only
        if the dual residual and the gap then meet their tests. Where the move would flip the
        sign of some z_i (a dependent inequality row whose multiplier carries part of the
        stray component: random n = 1,000 after A moved by 1e-4, SOLVED_INACCURATE after 105
        iterations), it stops where the first of them reaches 0, that row leaves the rows
        holding x, and the rest of r'(y, z_J) is cancelled along the null direction of the
        others (at most _STRAY_DROPS times). Rows outside the factorization's set are left
        alone. None when there is no factorization or no such component."""
        kkt, sc = self.kkt, self.sc
        if kkt.solver is None or kkt.rho is None or kkt.mu_eq is None:
            return None
        n, m, p = sc.n, sc.m, sc.p
        on = (z != 0) & (kkt.active != 0)
        bound = np.where(z > 0, sc.u, sc.l)
        mu = np.concatenate([kkt.mu_eq, kkt.mu_in])
        rhs = np.zeros(n + m + p)
        moved = False
        for _ in range(_STRAY_DROPS + 1):
            r = np.zeros(m + p)
            if m:
                r[:m] = Ax - sc.b
            r[m:][on] = Cx[on] - bound[on]
            keep = np.concatenate([np.ones(m, dtype=bool), on])
            ry = float(r[:m] @ y + r[m:] @ z)
            r_norm = float(np.max(np.abs(r), initial=0.0))
            w, t = r, None
            change_prev = math.inf
            for _ in range(_STRAY_SOLVES):
                rhs[n:] = mu * w
                w = np.where(keep, -kkt.solve(rhs)[n:], 0.0)
                denom = float(r @ w)
                # no component of r along null(M'): nothing stray (left) to remove
                if not (abs(denom) > 1e-12 * r_norm * float(np.max(np.abs(w), initial=0.0))
                        and math.isfinite(denom)):
                    return (y, z) if moved else None
                t = ry / denom
                # the dual residual's change by the move, unscaled
                dual = sc.constraints_t(w[:m], w[m:])
                change = abs(t) * float(np.max(np.abs(dual * self._dual_unscale), initial=0.0))
                if change <= _STRAY_DUAL_SHARE * tol_d or change > _STRAY_STALL * change_prev:
                    break
                change_prev = change
            step_z = t * w[m:]
            z2 = z - step_z
            flips = on & (np.sign(z2) != np.sign(z))
            if not flips.any():
                return y - t * w[:m], z2
            # the share of the move at which the first flipping multiplier reaches 0
            share = np.full(p, np.inf)
            share[flips] = z[flips] / step_z[flips]
            i = int(np.argmin(share))
            s_i = float(share[i])
            y = y - (s_i * t) * w[:m]
            z = z - s_i * step_z
            z[i] = 0.0
            on[i] = False
            moved = True
        return y, z

    def _shifted_kkt_met(self, x, y, z, Ax, Cx, tol_p):
        """Whether the closest-mode iterate (x, y, z) is a solution of the QP shifted by its
        own shift, the rest of the stopping tests: x satisfies those constraints exactly, the
        caller checked the dual residual and the shift's optimality; here complementarity
        and the duality gap on the shifted bounds."""
        sh = self.sc.shifted(*self._shifts(Ax, Cx))
        if self._complementarity(z, Cx, sh) > tol_p:
            return False
        return not self.st.check_duality_gap or self._gap_met(*self._duality_gap(x, y, z, sh))

    def _shifts(self, Ax, Cx):
        """(s_eq, s_in) = (A x - b, C x - proj_[l,u](C x)) of the point with these products
        (scaled)."""
        sc = self.sc
        s_eq = Ax - sc.b if sc.m else np.zeros(0)
        s_in = np.empty(sc.p)
        _kernels.box_violation(Cx, sc.l, sc.u, s_in)
        return s_eq, s_in

    def _shift_residual(self, Ax, Cx):
        """|A's_eq + C's_in| (unscaled), the optimality of the constraint shift."""
        sc = self.sc
        s_eq, s_in = self._shifts(Ax, Cx)
        v = sc.constraints_t(s_eq / sc.E ** 2, s_in / sc.F ** 2)
        return float(np.max(np.abs(v / sc.D))) if sc.n else 0.0

    # ---------------------------------------------------------------------------------------
    # Newton direction
    # ---------------------------------------------------------------------------------------
    def _pcg(self, rhs, rho, mu_eq, mu_in, active, max_iter, precond=None):
        """Solve the reduced Newton system with the stale factorization as preconditioner.

        Returns the solution or None when it did not reach the forcing tolerance
        (residual <= _PCG_FORCING |rhs|) within max_iter. With ``precond`` (an exact inverse
        up to rounding, :meth:`_lowrank_precond`'s) it aims at _LR_PCG_TOL |rhs| instead, as
        the direct solve does (an inexact step costs Newton steps), and returns the last
        iterate when that only meets the forcing tolerance.
        """
        kkt, ws = self.kkt, self._ws
        solve_x = kkt.solve_x_many if precond is None else precond
        x = solve_x(rhs)
        r = np.empty(self.sc.n)
        rn = ws.residual(rhs, x, rho, mu_eq, mu_in, active, r)
        rhs_n = max(_kernels.norm2(rhs), 1e-300)
        loose = _PCG_FORCING * rhs_n
        tol = loose if precond is None else _LR_PCG_TOL * rhs_n
        if rn <= tol:
            return x
        if precond is not None and rn > loose:
            # the low-rank correction lost its digits (the reduced residual carries the 1/mu
            # amplification at small penalties; QFORPLAN, QPILOTNO at mu ~ 1e-5 .. 1e-9):
            # iterating on it rarely pays. Refactorize, and do not build it again for these
            # penalties (they only change by the schedule, a few times per solve)
            self._lr_cols, self._lr_off = None, self.kkt.mu_in
            return None
        zv = solve_x(r)
        d = zv.copy()
        rz = _kernels.dot(r, zv)
        Md = np.empty(self.sc.n)
        for _ in range(max_iter):
            self.n_pcg += 1
            dMd = ws.reduced_matvec(d, rho, mu_eq, mu_in, active, Md)
            if not dMd > 0:
                return None
            a = rz / dMd
            _kernels.axpy(a, d, x)
            _kernels.axpy(-a, Md, r)
            rn = _kernels.norm2(r)
            if rn <= tol:
                return x
            zv = solve_x(r)
            rz_new = _kernels.dot(r, zv)
            d = zv + (rz_new / rz) * d
            rz = rz_new
        return x if rn <= loose else None

    def _pcg_budget(self, n_changed):
        """PCG iterations worth trying instead of a refactorization (0: refactorize)."""
        kkt = self.kkt
        if self.st.pcg_max_iter == 0 or kkt.solver is None:
            return 0
        # Each PCG iteration costs about one solve plus matvecs (_PCG_ITER_COST); k changes need
        # ~k+1 iterations. Only worth it when clearly cheaper than one factorization. The cost
        # ratio is a flop count (not a timing) so that solves are reproducible.
        affordable = int(kkt.solves_per_factorization / _PCG_ITER_COST)
        budget = min(self.st.pcg_max_iter, affordable)
        return budget if n_changed + 2 <= budget else 0

    def _lowrank_precond(self, mu_in, active):
        """The exact inverse of the current reduced Newton matrix from the stale factorization
        and a low-rank correction (Woodbury), or None when that is not affordable.

        The reduced matrix differs from the factorized one by sum_i s_i c_i c_i' / mu_i over the
        rows D whose activity changed (s_i = +1 entering, -1 leaving): with U = C_D' and
        W = M_f^-1 U (one solve per row, kept for the life of the factorization),
        M^-1 = M_f^-1 - W (S^-1 + U'W)^-1 W' with S^-1 = diag(s_i mu_i). PCG preconditioned by it
        converges in one or two iterations (rounding in the capacitance matrix only costs
        iterations). Rows that keep changing on one stale factorization reuse their columns, so
        a run of Newton steps with a few changes each pays the W columns once, where PCG on the
        plain stale factorization pays about k + 1 iterations at every step. Affordable while
        the solves of the columns computed since the factorization, plus a fixed cost per step,
        stay below the flops of one factorization (kkt.py's flop counts: deterministic)."""
        kkt = self.kkt
        if self.st.pcg_max_iter == 0 or kkt.solver is None or not self.sc.p:
            return None
        if self._lr_fact != kkt.fact_id:
            self._lr_fact, self._lr_cols = kkt.fact_id, {}
        cols = self._lr_cols
        if cols is None or self._lr_off is kkt.mu_in:
            return None                 # it failed on this factorization or these penalties
        rows = np.flatnonzero((active != 0) != (kkt.active != 0))
        k = rows.size
        if k == 0 or k > _LR_MAX_ROWS:
            return None
        new = [int(i) for i in rows if int(i) not in cols]
        # flop counts; the step's fixed cost (Python, the capacitance matrix) in flops: on
        # small problems (Maros QGROW*, QFORPLAN, QCAPRI: factorizations of 0.1-0.4 ms) it is
        # not cheaper than refactorizing, whatever the solve counts say
        cost = (len(cols) + len(new) + _LR_STEP_SOLVES) * kkt.solve_flops + _LR_STEP_FLOPS
        if cost > _LR_BUDGET * kkt.fact_flops:
            return None
        C = self.sc.C
        CD = C[rows]
        for i in new:
            cols[i] = kkt.solve_x_many(C[i].toarray().ravel())
        W = np.empty((self.sc.n, k))
        for j, i in enumerate(rows):
            W[:, j] = cols[int(i)]
        sgn = np.where(active[rows] != 0, 1.0, -1.0)
        cap = np.diag(sgn * mu_in[rows]) + CD @ W
        lu = capacitance_lu(0.5 * (cap + cap.T))
        if lu is None:
            return None

        def precond(r):
            zv = kkt.solve_x_many(r)
            return zv - W @ capacitance_solve(lu, CD @ zv)

        return precond

    def _refined(self, rhs, rho, mu_eq, mu_in, active):
        """Direct solve with the matching factorization plus iterative refinement: with small
        penalties the KKT matrix is ill-conditioned and one solve loses digits. Refined on the
        full KKT system: its residual in the multiplier rows, e, enters the reduced one as
        A'e / mu, so at mu ~ 1e-8 refining the reduced system cannot converge."""
        kkt = self.kkt
        n = self.sc.n
        full = np.zeros(kkt.N)
        full[:n] = rhs
        sol = kkt.solve(full)
        target = 1e-12 * max(_kernels.norm2(rhs), 1e-300)
        prev = np.inf
        for _ in range(3):
            r = full - kkt.matvec(sol)
            rn = _kernels.norm2(r)
            if rn <= target or rn >= 0.5 * prev:
                break
            prev = rn
            sol += kkt.solve(r)
        return sol[:n]

    def _newton_direction(self, grad, rho, mu_eq, mu_in, active, n_changed):
        kkt = self.kkt
        same_pen = (kkt.solver is not None and kkt.rho is not None and kkt.rho == rho
                    and kkt.mu_eq is mu_eq and kkt.mu_in is mu_in)
        if same_pen and n_changed == 0:
            return self._refined(-grad, rho, mu_eq, mu_in, active)
        if same_pen:
            precond = self._lowrank_precond(mu_in, active)
            if precond is not None:
                dx = self._pcg(-grad, rho, mu_eq, mu_in, active, _LR_PCG_ITER, precond)
                if dx is not None:
                    return dx
            budget = self._pcg_budget(n_changed)
            if budget:
                dx = self._pcg(-grad, rho, mu_eq, mu_in, active, budget)
                if dx is not None:
                    return dx
        self._factorize(rho, mu_eq, mu_in, active)
        return self._refined(-grad, rho, mu_eq, mu_in, active)

    def _factorize(self, rho, mu_eq, mu_in, active):
        kkt = self.kkt
        first = kkt.n_factorizations == 0
        kkt.factorize(rho, mu_eq, mu_in, active)
        if first and not kkt.inertia_ok():
            raise _NonConvex("the KKT factorization has the wrong inertia: H is not positive "
                             "semidefinite (non-convex problem)")

    # ---------------------------------------------------------------------------------------
    # inner loop: semismooth Newton with exact line search
    # ---------------------------------------------------------------------------------------
    def _inner(self, x, xe, ye, ze, rho, mu_eq, mu_in, eps_in):
        """Approximately minimize the proximal AL; returns (x, y, z, Ax, Cx, converged)."""
        kkt, ws = self.kkt, self._ws
        active = ws.active
        stall = 0
        floor_hits, g_prev = 0, np.inf
        g_best, since_best = np.inf, 0
        prev_active = None
        evaluated = None    # (n_changed, gnorm) of x when ws's buffers already hold it
        # Full (semismooth Newton / primal-dual active set) steps while a cold start's first
        # inner solve makes progress: from x0 the first Newton direction is the unconstrained
        # minimizer's, and the exact line search stops where the first rows reach their
        # bounds, so the active set grows a few hundred rows, and costs one factorization,
        # per step (box n = 20,000: 26 steps to 12,700 active rows). A full step takes the
        # rows violated at its end in at once; it is kept while the rows that differ from the
        # active set it was computed on shrink, then the line search takes over. Only where
        # every coordinate has curvature (H's diagonal positive): on LP-like problems the
        # full step of a barely convex piece lands far off (Maros-Meszaros, all cold starts:
        # factorizations QISRAEL 166 -> 424, QSIERRA 247 -> 562, QSHIP12L 84 -> 153; on the
        # rest with H's diagonal positive, 11 problems, 1,575 -> 1,488).
        full_steps = self._full_steps
        self._full_steps = False
        changes_prev = math.inf
        for _ in range(self.st.max_iter_in):
            # Ax, Cx, y, z, active, smooth and grad of x into ws's buffers
            if evaluated is None:
                n_changed, gnorm = ws.inner_point(x, xe, ye, ze, rho, mu_eq, mu_in, kkt.active)
            else:
                (n_changed, gnorm), evaluated = evaluated, None
            # eps_in is a tolerance on the unscaled gradient, like the dual residual
            if gnorm <= eps_in:
                return self._inner_result(x, True)
            # On a fixed active set the merit is quadratic and one Newton step is exact: a
            # gradient that no longer halves there is the rounding floor of the linear algebra.
            # "Fixed" means the rows of the previous point, whether its step came from the
            # matching factorization or from PCG on a stale one (n_changed counts the rows that
            # differ from the factorization: with PCG steps it never reaches 0, and a gradient
            # stuck at the floor ran the loop to max_iter_in).
            same = prev_active is not None and np.array_equal(prev_active, active)
            prev_active = active.copy()
            if same and gnorm > 0.5 * g_prev:
                floor_hits += 1
                if floor_hits >= 3:
                    return self._inner_result(x, False)
            g_prev = gnorm
            # The same floor with a weakly active row flipping in and out at its kink every
            # step (never the same active set twice in a row): the gradient hovers near the
            # target without ever halving. Seen on warm re-solves: 800 Newton steps (3 solves
            # each) for nothing.
            if gnorm < 0.5 * g_best:
                g_best, since_best = gnorm, 0
            else:
                since_best += 1
                if since_best >= _INNER_HOVER_STEPS and gnorm <= _INNER_HOVER_FACTOR * eps_in:
                    return self._inner_result(x, False)

            if self.deadline is not None and time.perf_counter() > self.deadline:
                return self._inner_result(x, False)
            grad = ws.grad
            dx = self._newton_direction(grad, rho, mu_eq, mu_in, active, n_changed)
            self.n_newton += 1
            if full_steps:
                # the full step x + dx minimizes the quadratic piece of the current active
                # set; it is kept while the rows that change there keep shrinking
                x_f = x + dx
                ev = ws.inner_point(x_f, xe, ye, ze, rho, mu_eq, mu_in, kkt.active)
                if ev[0] <= _FULL_STEP_SHRINK * changes_prev and np.isfinite(ev[1]):
                    x, evaluated, changes_prev = x_f, ev, ev[0]
                    continue
                full_steps = False
                ws.inner_point(x, xe, ye, ze, rho, mu_eq, mu_in, kkt.active)
            alpha = self._line_search(dx, rho, mu_eq, mu_in, ze)
            if alpha is None:
                # not a descent direction: rounding in an inexact step. Refactorize and retry.
                self._factorize(rho, mu_eq, mu_in, active)
                dx = kkt.solve_x(-grad)
                alpha = self._line_search(dx, rho, mu_eq, mu_in, ze)
                if alpha is None:
                    return self._inner_result(x, False)
            x_next = None
            if self._long_steps and alpha < 1.0:
                x_next, alpha, evaluated = self._longer_step(x, dx, alpha, gnorm, xe, ye, ze,
                                                             rho, mu_eq, mu_in)
            step = alpha * _kernels.inf_norm(dx)
            x = x + alpha * dx if x_next is None else x_next
            # rounding floor of an ill-conditioned system: steps that no longer move x
            if step <= 1e-15 * max(1.0, _kernels.inf_norm(x)):
                stall += 1
                if stall >= 3:
                    break
            else:
                stall = 0
        ws.inner_point(x, xe, ye, ze, rho, mu_eq, mu_in, kkt.active)
        return self._inner_result(x, False)

    def _longer_step(self, x, dx, alpha, gnorm, xe, ye, ze, rho, mu_eq, mu_in):
        """A step past the exact one along dx, or (None, alpha, None).

        Far from the solution (a cold run at its starting penalties), the exact line search
        stops where the merit's slope first vanishes, typically just as a batch of rows enters
        the active set; the rows beyond it enter one short Newton step, and one
        refactorization, at a time (random n = 20,000: 54 factorizations, most of them there).
        A step a little past it, while the merit still decreases by the Armijo condition, takes
        some of them in at once. It is kept only when the inner gradient there grows by at most
        _LONG_STEP_GROWTH (a full step can land far away on degenerate problems). What passes is
        mostly the next power of two above the exact step: an overshoot below 2x that takes in
        part of the next batch (box n = 5,000: 139 rows changed at the exact step, 222 at it).
        Returns (x + t dx, t, its inner_point result: ws's buffers hold that point)."""
        ws = self._ws
        t = ws.longest_armijo_step(alpha, _LONG_STEP_SIGMA, mu_in)
        if t > alpha:
            x_t = x + t * dx
            ev = ws.inner_point(x_t, xe, ye, ze, rho, mu_eq, mu_in, self.kkt.active)
            if ev[1] <= _LONG_STEP_GROWTH * gnorm:
                return x_t, t, ev
            # ws's buffers now hold x_t: the next iteration evaluates its point again
        return None, alpha, None

    def _inner_result(self, x, converged):
        # copies: the caller keeps them as prox centers while the buffers move on
        ws = self._ws
        return x, ws.y.copy(), ws.z.copy(), ws.Ax.copy(), ws.Cx.copy(), converged

    def _line_search(self, dx, rho, mu_eq, mu_in, ze):
        """Exact step along dx from the point of the last inner_point; None when dx is not a
        descent direction."""
        alpha, dHd, dd = self._ws.line_search(dx, rho, mu_eq, mu_in, ze)
        if dHd < -1e-10 * max(1.0, dd):
            raise _NonConvex(f"negative curvature d'Hd = {dHd:.3g} found: H is not positive "
                             "semidefinite (non-convex problem)")
        if math.isnan(alpha):
            return None
        if math.isinf(alpha):
            raise _NonConvex("the merit function is unbounded along the Newton direction")
        return alpha

    # ---------------------------------------------------------------------------------------
    # infeasibility certificates (unscaled)
    # ---------------------------------------------------------------------------------------
    def _primal_certificate(self, dy_s, dz_s, x_s=None):
        """Farkas test on (dy, dz): A'dy + C'dz ~ 0 and support b'dy + u'[dz]_+ + l'[dz]_- < 0.
        Every feasible x has v'x <= support (v = A'dy + C'dz), so a small v only refutes
        feasibility near the iterates when the support is below -|v_i x_i| summed at the
        current x_s (scaled): at tiny penalties the shift direction passes the plain test with
        the iterate's own violation, supp ~ v'x (Maros QPILOTNO: supp -3.5e-6, v'x -3.3e-6)."""
        sc = self.sc
        eps = self.st.eps_infeas
        # the usual outcome, |A'dy + C'dz| > eps, in one kernel call; the same numbers as below
        norm, res = self._ws.primal_certificate_test(dy_s, dz_s, sc.E, sc.F, sc.c, sc.D)
        if norm <= 1e-300 or res > eps:
            return None
        dy = sc.unscale_y(dy_s)
        dz = sc.unscale_z(dz_s)
        norm = max(np.max(np.abs(dy), initial=0.0), np.max(np.abs(dz), initial=0.0))
        if norm <= 1e-300:
            return None
        dy, dz = dy / norm, dz / norm
        # A'dy + C'dz (unscaled) = D^{-1} (A~' E^{-1} dy + C~' F^{-1} dz)
        v = sc.constraints_t(dy / sc.E, dz / sc.F)
        v /= sc.D
        if np.max(np.abs(v), initial=0.0) > eps:
            return None
        margin = float(np.sum(np.abs(v * sc.unscale_x(x_s)))) if x_s is not None else 0.0
        l, u = sc.l / sc.F, sc.u / sc.F
        pos, neg = np.maximum(dz, 0.0), np.minimum(dz, 0.0)
        if np.any((pos > eps) & np.isinf(u)) or np.any((neg < -eps) & np.isinf(l)):
            return None
        supp = float(dy @ (sc.b / sc.E)) if sc.m else 0.0
        with np.errstate(invalid="ignore"):
            supp += float(np.sum(np.where(pos > 0, u * pos, 0.0)) + np.sum(np.where(neg < 0, l * neg, 0.0)))
        if supp < -eps - margin:
            return {"dy": dy, "dz": dz}
        return None

    def _shift_certificate(self, Ax, Cx, mu_eq, mu_in, x=None):
        """The penalty-weighted constraint shift as a Farkas certificate.

        At a minimizer of the penalized infeasibility, (dy, dz) = (M_eq^-1 s_eq, M_in^-1 s_in)
        (scaled) satisfies A'dy + C'dz = 0 and b'dy + u'[dz]_+ - l'[dz]_- < 0: the direction the
        ALM multipliers move in, computed without subtracting two huge multipliers.
        """
        s_eq, s_in = self._shifts(Ax, Cx)
        dy = s_eq / mu_eq if self.sc.m else s_eq
        dz = s_in / mu_in if self.sc.p else s_in
        return self._primal_certificate(dy, dz, x)

    def _dual_certificate(self, dx_s):
        sc = self.sc
        eps = self.st.eps_infeas
        # the usual outcome, |Hd| > eps, in one kernel call; the same numbers as below
        norm, res = self._ws.dual_certificate_test(dx_s, sc.D, sc.c)
        if norm <= 1e-300 or res > eps:
            return None
        dx = sc.unscale_x(dx_s)
        norm = np.max(np.abs(dx), initial=0.0)
        if norm <= 1e-300:
            return None
        d = dx / norm
        ds = d / sc.D  # scaled direction of the unit unscaled one
        Hd = (sc.H @ ds) / (sc.c * sc.D)
        if np.max(np.abs(Hd), initial=0.0) > eps:
            return None
        if sc.m and np.max(np.abs((sc.A @ ds) / sc.E)) > eps:
            return None
        if sc.p:
            Cd = (sc.C @ ds) / sc.F
            l, u = sc.l, sc.u
            if np.any((Cd > eps) & np.isfinite(u)) or np.any((Cd < -eps) & np.isfinite(l)):
                return None
        gd = float((sc.g / (sc.c * sc.D)) @ d)
        if gd < -eps:
            return {"dx": d}
        return None

    # ---------------------------------------------------------------------------------------
    # outer loop
    # ---------------------------------------------------------------------------------------
    def run(self, x, y, z, mu_eq0=None, mu_in0=None, guess=False):
        """Iterate from scaled (x, y, z). Returns (status, IterationState, info dict).

        ``mu_eq0``, ``mu_in0``: the penalties of a warm start (None: the settings'). ``guess``:
        (x, y, z) is the caller's full primal-dual guess, worth one try of its active set
        before a cold start's penalties (see :meth:`_run`)."""
        try:
            out = self._run(x, y, z, mu_eq0, mu_in0, guess)
            if (out[0] == Status.NUMERICAL_ERROR and self.allow_closest
                    and (mu_eq0 is not None or mu_in0 is not None
                         or any(np.any(v != 0.0) for v in (x, y, z)))):   # a warm start
                out = self._retry_cold() or out
            if (out[0] == Status.NUMERICAL_ERROR and not out[1].closest
                    and self.st.eps_abs < _LOOSER_BELOW and self.allow_closest):
                out = self._retry_looser(x, y, z, mu_eq0, mu_in0) or out
            return out
        except _NonConvex as exc:
            sc = self.sc
            state = IterationState(x, y, z, None, None, np.zeros(sc.p, dtype=np.int8))
            return Status.NUMERICAL_ERROR, state, {"message": str(exc)}
        except RuntimeError as exc:  # qdldl: zero pivot and the like
            sc = self.sc
            state = IterationState(x, y, z, None, None, np.zeros(sc.p, dtype=np.int8))
            msg = f"factorization failed: {exc}"
            return Status.NUMERICAL_ERROR, state, {"message": msg}

    def _retry_cold(self):
        """After NUMERICAL_ERROR from a warm start: the cold start (zero point, the settings'
        penalties) in the iterations and time left; its result unless that fails too.

        A warm start must not do worse than no start at all. Where the constraints are
        inconsistent at eps_abs 1e-9, a warm re-solve can stall where the cold solve does not
        (update fuzz seed 29519: random n = 1,000 after b moved by 0.1, the closest-feasible
        ALM's dual residual stuck at 2.4e-4 after 520 iterations; cold: 223 iterations)."""
        sc, st = self.sc, self.st
        if self.nit >= st.max_iter:
            return None
        sub = ProxALM(sc, self.kkt, st.replace(max_iter=st.max_iter - self.nit),
                      self.deadline, self.log)
        out = sub._run(np.zeros(sc.n), np.zeros(sc.m), np.zeros(sc.p), None, None)
        self._add_work(sub)
        if out[0] == Status.NUMERICAL_ERROR:
            return None
        self.certificate = sub.certificate
        return out

    def _add_work(self, sub):
        """Count the work of a retry's sub-run (another ProxALM) as this run's."""
        self.nit += sub.nit
        self.n_newton += sub.n_newton
        self.n_pcg += sub.n_pcg
        self.n_polish_solves += sub.n_polish_solves

    def _retry_looser(self, x, y, z, mu_eq0, mu_in0):
        """After NUMERICAL_ERROR at a tight tolerance: the same start at _LOOSER_FACTOR times
        the tolerances; its solution, where every residual row meets this run's tolerance or
        is within _FLOOR_ACCEPT of its rounding floor with the duality gap met (see
        :meth:`_note_floor_candidate`), is returned as SOLVED or SOLVED_INACCURATE; else None.

        At eps_abs 1e-9 the ALM drives its penalties further down, and on some problems that
        path never reaches the points a looser run ends at (Maros-Meszaros STADAT1: dual
        residual 159 at the stall, against a solution at 1e-6 whose rows are within 1x of
        their floor at 1e-9)."""
        st = self.st
        loose = st.replace(eps_abs=st.eps_abs * _LOOSER_FACTOR,
                           eps_rel=st.eps_rel * _LOOSER_FACTOR,
                           max_iter=max(st.max_iter - self.nit, 1))
        sub = ProxALM(self.sc, self.kkt, loose, self.deadline, self.log)
        status, state, info = sub._run(x.copy(), y.copy(), z.copy(), mu_eq0, mu_in0)
        self._add_work(sub)
        if status != Status.SOLVED:
            return None
        xs, ys, zs = state.x, state.y, state.z
        Ax, Cx = self._ws.constraint_products(xs)
        rp, rd, ps, ds = self._unscaled_residuals(xs, ys, zs, Ax, Cx)
        tol_p, tol_d = st.eps_abs + st.eps_rel * ps, st.eps_abs + st.eps_rel * ds
        self._floor_cand = None
        self._note_floor_candidate(xs, ys, zs, Ax, Cx, tol_p, tol_d, rp, rd)
        if self._floor_cand is None:
            return None
        if self._floor_cand[0] == 0.0:
            return Status.SOLVED, state, info
        msg = _floor_message(f"the run at this tolerance stalled; the point one at "
                             f"{loose.eps_abs:.0e} returned", rp, rd, tol_p, tol_d)
        return Status.SOLVED_INACCURATE, state, {"message": msg}

    def _run(self, x, y, z, mu_eq0, mu_in0, guess=False):
        sc, st = self.sc, self.st
        self.kkt.ensure_values(sc)
        eps_abs, eps_rel = st.eps_abs, st.eps_rel
        rho = st.rho
        mu_eq = mu_eq0 if mu_eq0 is not None else np.full(sc.m, st.mu_eq)
        mu_in = mu_in0 if mu_in0 is not None else np.full(sc.p, st.mu_in)
        closest = False
        xe, ye, ze = x.copy(), y.copy(), z.copy()
        eps_in = 1e-1
        rp_prev = rd_prev = math.inf
        merit_stall = _Stall(_STALL_ITERS, gain=0.99)
        dual_stall = _Stall(_DUAL_STALL_ITERS)
        gap_stall = _Stall(_GAP_STALL_ITERS)
        primal_stall = _Stall(self.primal_stall_exit)
        primal_floor_stall = _Stall(_FLOOR_PATIENCE)
        slow_stall = _Stall(_POLISH_SLOW_ITERS, gain=0.5)
        floor_stall = _Stall(_FLOOR_STALL_ITERS, gain=0.99)
        slow_polished = False
        shifted_failed = False          # closest mode: a shifted re-solve ended in error
        self._floor_blocked = False
        n_restarts = 0
        self._mu_floor = (st.mu_min_eq, st.mu_min_in)
        status = Status.MAX_ITER_REACHED
        info = {}
        polish = st.active_set_polish
        Ax, Cx = self._ws.constraint_products(x)
        # a caller's guess is tried only where H curves along most coordinates: on LP-like
        # problems the try failed on all 31 Maros-Meszaros problems that solve (g moved by
        # 1e-3 from their solutions), and cost one factorization each
        guess = guess and sc.curved_share >= _PDAS_CURVED
        if polish and (mu_eq0 is not None or guess) and self.allow_closest:
            # a warm start whose active set is still right: one Krylov solve may finish it
            # the residuals' scales only matter with a relative tolerance
            ps = ds = 0.0
            if eps_rel:
                _, _, ps, ds = self._unscaled_residuals(x, y, z, Ax, Cx)
            warm = (rho, mu_eq, mu_in)
            if mu_eq0 is None:
                # The caller's guess has no penalties: a factorization at a resumed warm
                # start's smallest ones. Where the guess is wrong the run goes on at the cold
                # penalties (one factorization more); running the ALM at these from a bad
                # guess cost up to 70x the cold run's factorizations (box n = 5,000, zeros).
                warm = (rho, np.full(sc.m, st.mu_eq * WARM_MU_FACTOR),
                        np.full(sc.p, st.mu_in * WARM_MU_FACTOR))
            ok, cand = self._krylov_polish(x, y, z, Ax, Cx, eps_abs + eps_rel * ps,
                                           eps_abs + eps_rel * ds, warm_penalties=warm)
            if ok:
                x, y, z = cand
                self.nit = self._nit_nested + 1
                mu_eq, mu_in = self._at_polish_penalties()
                state = IterationState(x, y, z, mu_eq, mu_in, self._active.copy(), closest)
                return Status.SOLVED, state, info
        sign_prev, krylov_tries, krylov_fact, krylov_res = None, 0, None, math.inf
        # longer steps (see _longer_step) only while a cold run is at its starting penalties:
        # a warm start (penalties carried over) is near its solution, where they only cost
        # Newton steps (a warm re-solve of random n = 400 at eps_abs 1e-8: 17 -> 22 Newton
        # steps with them in its first outer iteration), and so is a shifted re-solve, which
        # starts from the closest loop's point (badly scaled inconsistent rows, seed 4 of the
        # derivative tests: with them its primal residual stalled at 2.6, NUMERICAL_ERROR)
        long_steps = mu_eq0 is None and mu_in0 is None and self.allow_closest
        start_penalties = (mu_eq, mu_in)
        for it in range(st.max_iter):
            if self._nit_nested + it >= st.max_iter:
                break                       # shifted re-solves used the rest of the budget
            self.nit = self._nit_nested + it + 1
            # the penalty arrays are new objects whenever they change (see KKTSystem.factorize)
            long_steps = (long_steps and not closest and mu_eq is start_penalties[0]
                          and mu_in is start_penalties[1])
            self._long_steps = long_steps
            self._full_steps = long_steps and it == 0 and sc.curved
            x, y, z, Ax, Cx, _ = self._inner(x, xe, ye, ze, rho, mu_eq, mu_in, eps_in)
            rp, rd, ps, ds = self._unscaled_residuals(x, y, z, Ax, Cx)
            tol_p = eps_abs + eps_rel * ps
            tol_d = eps_abs + eps_rel * ds
            if self.log is not None:
                self.log(it, rp, rd, float(np.min(mu_eq, initial=np.inf)),
                         float(np.min(mu_in, initial=np.inf)), rho,
                         int(np.count_nonzero(self._active)), self.kkt.n_factorizations)
            resid_ok = rp <= tol_p and rd <= tol_d and self._complementarity(z, Cx) <= tol_p
            gap_terms = (self._duality_gap(x, y, z) if resid_ok and st.check_duality_gap
                         else None)
            if resid_ok:
                # in closest mode the residual is the shift, not a stray direction: no mending
                met = self._gap_met_or_mended(x, y, z, Ax, Cx, tol_d, gap_terms,
                                              mend=not closest)
                if met is not None:
                    y, z = met
                    status = Status.SOLVED
                    break
            sign_now = _z_signs(z)
            if (polish and not closest and krylov_tries < _KRYLOV_COLD_TRIES
                    and sign_prev is not None and np.array_equal(sign_now, sign_prev)
                    and (self.kkt.fact_id != krylov_fact
                         or max(rp, rd) <= _KRYLOV_RETRY_GAIN * krylov_res)):
                # a settled active set: its equality QP may finish the run (the ALM needs an
                # outer iteration per digit or so, and a factorization per penalty change)
                krylov_tries += 1
                krylov_fact = self.kkt.fact_id
                krylov_res = max(rp, rd)
                ok, cand = self._krylov_polish(x, y, z, Ax, Cx, tol_p, tol_d, refactorize=0)
                if ok:
                    x, y, z = cand
                    mu_eq, mu_in = self._at_polish_penalties()
                    status = Status.SOLVED
                    break
            if (polish and it == 0 and long_steps and not resid_ok
                    and sc.curved_share >= _PDAS_CURVED):
                ok, cand = self._krylov_polish(x, y, z, Ax, Cx, tol_p, tol_d,
                                               refactorize=_PDAS_ROUNDS,
                                               rounds=_PDAS_ROUNDS, tight=True)
                if ok:
                    x, y, z = cand
                    mu_eq, mu_in = self._at_polish_penalties()
                    status = Status.SOLVED
                    break
            sign_prev = sign_now
            if resid_ok:
                # met residuals, duality gap short (the exit above took the rest)
                gap, gscale, oscale = gap_terms
                tol_g = eps_abs + eps_rel * gscale
                if gap_stall.stalled(gap, it):
                    ok, cand = self._polish(x, y, z, tol_p, tol_d)
                    if ok:
                        x, y, z = cand
                        status = Status.SOLVED
                        break
                    if (cand is not None and n_restarts < _POLISH_RESTARTS
                            and self._restart_point_sane(cand, rp, rd, tol_p, tol_d)):
                        n_restarts += 1
                        x, ye, ze = cand
                        xe = x
                        gap_stall.reset(it)
                        merit_stall.reset(it)
                        dual_stall.reset(it)
                        primal_floor_stall.reset(it)
                        rp_prev = rd_prev = math.inf
                        continue
                    status = Status.SOLVED_INACCURATE
                    info["message"] = _gap_message(gap, tol_g)
                    break
            if closest and self.allow_closest:
                rs = self._shift_residual(Ax, Cx)
                tol_s = eps_abs + eps_rel * max(ps, 1.0)
                if rs <= tol_s and not shifted_failed:
                    # The shift is optimal: solve the shifted (consistent) QP, same matrices
                    # and factorization pattern, warm-started. The ALM converges on it at its
                    # usual rate with finite multipliers, unlike on the inconsistent one.
                    st_sh, state_sh, info_sh = self._solve_shifted(x, Ax, Cx, tol_s)
                    if st_sh == Status.NUMERICAL_ERROR:
                        # (an error, or a point whose own shift is not optimal) Its
                        # multipliers can be huge: a shifted row that the objective pulls
                        # into its widened box [u, u + s_i] is held at u + s_i only through
                        # the shift direction, with weight s_i (random mixed seed 3635:
                        # s_i = 7e-5, multipliers 3e4; the re-solve stalls at a primal
                        # residual of 2e-7). This loop's multipliers grow along that direction
                        # anyway: go on, and stop where they solve the shifted QP (3635: 15
                        # iterations later, x within 4e-10 of the two-stage reference).
                        shifted_failed = True
                    elif st_sh is not None:
                        return st_sh, state_sh, info_sh
                if (shifted_failed and rs <= tol_s and rd <= tol_d
                        and self._shifted_kkt_met(x, y, z, Ax, Cx, tol_p)):
                    status = Status.SOLVED_CLOSEST_FEASIBLE
                    break
            if self.deadline is not None and time.perf_counter() > self.deadline:
                status = Status.TIME_LIMIT_REACHED
                break
            if (self.primal_stall_exit and rp > tol_p and primal_stall.stalled(rp, it)
                    and self.reshift_ok(Ax, Cx)):
                break                       # MAX_ITER_REACHED: the caller shifts again
            # no progress at all for many iterations: the tolerance is below what rounding
            # allows on this problem; say so instead of spinning until max_iter
            merit = max(rp / tol_p, rd / tol_d) if not closest else rd / tol_d
            if (slow_stall.stalled(merit, it) and not (slow_polished or closest)
                    and self._at_floor(mu_eq, mu_in)):
                slow_polished = True
                ok, cand = self._polish(x, y, z, tol_p, tol_d)
                if ok:
                    x, y, z = cand
                    status = Status.SOLVED
                    break
            if (self.allow_closest and not closest and not resid_ok
                    and floor_stall.stalled(merit, it) and self._at_floor(mu_eq, mu_in)):
                # the penalties cannot speed the ALM up: where the point, or one a polish
                # found, is at its rounding floor, stop there (at eps_abs 1e-9, outer
                # iterations: QSHELL 324 -> 88, QFORPLAN 138 -> 63, QGFRDXPN 215 -> 166)
                floor_stall.reset(it)
                if self._floor_point(x, y, z, Ax, Cx, tol_p, tol_d, rp, rd):
                    _, x, y, z, rp, rd = self._floor_cand
                    status = Status.SOLVED_INACCURATE
                    info["message"] = _floor_message(
                        f"no progress in {_FLOOR_STALL_ITERS} iterations; the point returned",
                        rp, rd, tol_p, tol_d)
                    break
            if merit_stall.stalled(merit, it):
                ok, cand = (False, None) if closest else self._polish(x, y, z, tol_p, tol_d)
                if ok:
                    x, y, z = cand
                    status = Status.SOLVED
                elif resid_ok:
                    status = Status.SOLVED_INACCURATE  # only the duality gap was short
                    info["message"] = _gap_message(gap, tol_g)
                elif self.allow_closest and not closest and self._floor_point(
                        x, y, z, Ax, Cx, tol_p, tol_d, rp, rd):
                    _, x, y, z, rp, rd = self._floor_cand
                    status = Status.SOLVED_INACCURATE
                    info["message"] = _floor_message(
                        f"no progress in {_STALL_ITERS} iterations; the point returned",
                        rp, rd, tol_p, tol_d)
                else:
                    status = Status.NUMERICAL_ERROR
                    info["message"] = (f"no progress in {_STALL_ITERS} iterations at primal "
                                       f"residual {rp:.2e}, dual residual {rd:.2e} (when these "
                                       "are close to the tolerance, it is below the rounding "
                                       "floor of this problem: try eps_rel)")
                break
            dy, dz, dx = y - ye, z - ze, x - xe
            if not closest:
                cert = None
                if (sc.m or sc.p) and rp > tol_p:
                    cert = (self._shift_certificate(Ax, Cx, mu_eq, mu_in, x)
                            or self._primal_certificate(dy, dz, x))
                if cert is not None:
                    if st.infeasible == "certificate":
                        self.certificate = cert
                        status = Status.PRIMAL_INFEASIBLE
                        break
                    if self.allow_closest:
                        closest = True
                        mu_eq, mu_in = self._closest_penalties(mu_eq, mu_in)
                        # The multipliers so far diverged along the shift weighted by the
                        # schedule's penalties (mu_eq and mu_in differ by 100x and shrank
                        # 10x per iteration): a stale, not a bounded, part. Kept as prox
                        # centers, they hold rows at bounds that the closest-feasible point
                        # leaves, and the ALM unwinds such a row by only gap / mu per
                        # iteration: seed 276 of the random mixed problems, z = 2951 on a row
                        # that ends 7.4e-4 inside its bound, 19 per iteration while x stood
                        # still, NUMERICAL_ERROR after 100 iterations with the shift residual
                        # at 6.8e-4; 10 of seeds 0-3000 at eps_abs 1e-8, 13 at 1e-6.
                        # From zero multipliers the closest phase starts as a pure penalty
                        # step with its own weights (the shifted re-solve also starts there).
                        y, z = np.zeros_like(y), np.zeros_like(z)
            if rd > tol_d:
                cert = self._dual_certificate(dx)
                if cert is not None:
                    self.certificate = cert
                    status = Status.DUAL_INFEASIBLE
                    break
            # multiplier update and penalty schedule
            ye, ze, xe = y, z, x
            if (not closest and rp <= tol_p and rd > tol_d and rd > _MU_SHRINK_PROGRESS * rd_prev
                    and rho * _kernels.scaled_inf_norm(dx, self._dual_unscale, False)
                    >= _PROX_SHARE * rd):
                x_ex = self._extrapolate(x, dx, ye, ze, mu_eq, mu_in)
                if x_ex is not None:
                    x = xe = x_ex
            primal_moves = not primal_floor_stall.stalled(rp, it)
            if not closest and rp > tol_p and rp > _MU_SHRINK_PROGRESS * rp_prev:
                # past the rounding floor only when the primal residual does not move at all
                # (infeasibility detection needs small penalties)
                mu_eq, mu_in = self._shrink_penalties(mu_eq, mu_in, x,
                                                      tol_d if primal_moves else None)
            if not closest and rp <= tol_p and rd > tol_d:
                if dual_stall.stalled(rd, it):
                    mu_eq, mu_in = self._grow_penalties(mu_eq, mu_in)
                    dual_stall.reset(it)
            else:
                dual_stall.reset(it)
            rp_prev, rd_prev = rp, rd
            # in closest mode the primal residual stays at the shift: drive the dual one
            eps_in = self._inner_tolerance(rd if closest else rp, rd, tol_p, tol_d)
        state = IterationState(x, y, z, mu_eq, mu_in, self._active.copy(), closest)
        return status, state, info

    def _polish(self, x, y, z, tol_p, tol_d):
        """Solve the equality-constrained QP of the active set that z identifies, exactly,
        and correct that set by an active-set method.

        Called where the ALM stalls: residuals met but a duality gap that no longer decreases,
        or no progress at all. On problems whose constraints are a nearly square, badly
        conditioned operator (LISWET: k-th differences of x >= 0 on almost every row), a primal
        residual of 1e-7 spread over thousands of rows moves the objective by 30-97%: the
        multipliers must reach ~1e5-1e8 along modes where C H^-1 C' has eigenvalues far below
        the smallest penalty, and the ALM gains a few % of that per outer iteration.

        Rows with z_i > 0 are held at u_i, with z_i < 0 at l_i, the others are dropped; the KKT
        system of that QP, [H A' C_J'; A 0 0; C_J 0 0] (scaled), is solved by a sparse LU with
        partial pivoting (SuperLU; see _polish_solve): the fixed-pattern LDL' needs a
        regularization, and refinement from it does not reach multipliers that large. Then,
        in three phases:

        1. while the solution violates rows, all of them enter the set (the set only grows, so
           this ends); its wrong-sign multipliers are left alone.
        2. from the first feasible solution, every wrong-sign row leaves, as long as the
           solutions stay feasible (to a tenth of the tolerance; QSIERRA: 7 rounds);
        3. from the last feasible solution, a primal active-set method: the row with the most
           negative multiplier (wrong sign) leaves, the QP of the smaller set is solved, and
           the step towards its solution stops at the first row it would violate (ratio test),
           which enters. Every point stays feasible and the objective decreases.
        Dropping every wrong-sign row at once (with or without the violated ones entering: the
        primal-dual active-set rule) cycles or crawls on LISWET: 1,400 wrong-sign multipliers
        at the first feasible point of LISWET9, of which 2 rows actually leave.

        Returns (True, scaled (x, y, z)) when a solution meets every stopping test (residuals,
        complementarity, duality gap; wrong-sign multipliers are set to 0 before the tests),
        else (False, the last solution or None). The caller may restart the outer loop from
        that point: its multipliers are right along the slow modes, and the ALM corrects the
        few misidentified rows quickly.
        """
        sc = self.sc
        n, m, p = sc.n, sc.m, sc.p
        if n + m + p > _POLISH_MAX_N:
            return False, None
        sign = _z_signs(z)
        H, A, C = sc.H, sc.A, sc.C
        tried = set()
        last = None
        phase = 1
        Cxf = None      # phase 3: C x at the current feasible point x
        trial = None    # phase 2: the feasible point whose drop-all round runs
        slack = 0.1 * tol_p * sc.F
        for _ in range(_POLISH_ROUNDS):
            if self.deadline is not None and time.perf_counter() > self.deadline:
                return False, last
            key = sign.tobytes()
            if key in tried:
                if trial is None:
                    return False, last
                (x, y, z, Cxf, sign), trial, phase = self._polish_drop_one(*trial), None, 3
                continue
            tried.add(key)
            J = np.flatnonzero(sign)
            CJ = C[J]
            K = sp.bmat([[H, A.T, CJ.T], [A, None, None], [CJ, None, None]], format="csc")
            rhs = np.concatenate((-sc.g, sc.b, np.where(sign[J] > 0, sc.u[J], sc.l[J])))
            sol = self._polish_solve(K, rhs, np.concatenate((x, y, z[J])), n)
            if sol is None and trial is None:
                return False, last
            if sol is not None:
                xs = sol[:n]
                Axs, Cxs = self._ws.constraint_products(xs)
            if trial is not None:
                if sol is None or np.any((sign == 0) & ((Cxs > sc.u + slack)
                                                        | (Cxs < sc.l - slack))):
                    # the drop-all round left the feasible set: phase 3 from its start
                    (x, y, z, Cxf, sign), trial, phase = self._polish_drop_one(*trial), None, 3
                    continue
                trial = None
            sign = sign.copy()
            if Cxf is not None:
                # ratio test: the largest step from the feasible x towards xs that keeps the
                # rows outside the set feasible; the blocking rows enter. Rows that xs violates
                # by less than a tenth of the tolerance do not block: a row just dropped at a
                # degenerate vertex would otherwise re-enter at t = 0 from rounding (QCAPRI)
                d = Cxs - Cxf
                free = sign == 0
                with np.errstate(divide="ignore", invalid="ignore"):
                    tu = np.where(free & (d > 0) & (Cxs > sc.u + slack), (sc.u - Cxf) / d,
                                  np.inf)
                    tl = np.where(free & (d < 0) & (Cxs < sc.l - slack), (sc.l - Cxf) / d,
                                  np.inf)
                np.maximum(tu, 0.0, out=tu)
                np.maximum(tl, 0.0, out=tl)
                t = min(float(np.min(tu)), float(np.min(tl)))
                if t < 1.0:
                    x = x + t * (xs - x)
                    Cxf = Cxf + t * d
                    sign[free & (tu <= t)] = 1
                    sign[free & (tl <= t)] = -1
                    continue
            # (x, y, z) start the next round; zp: z without its wrong-sign entries
            x, y = xs, sol[n:n + m]
            z = np.zeros(p)
            z[J] = sol[n + m:]
            wrong = ((sign > 0) & (z < 0)) | ((sign < 0) & (z > 0))
            zp = np.where(wrong, 0.0, z)
            rp, rd, _, _ = self._unscaled_residuals(x, y, zp, Axs, Cxs)
            if rp <= tol_p and rd <= tol_d and self._complementarity(zp, Cxs) <= tol_p:
                mended = self._gap_met_or_mended(x, y, zp, Axs, Cxs, tol_d)
                if mended is not None:
                    return True, (x, *mended)
            else:
                self._note_floor_candidate(x, y, zp, Axs, Cxs, tol_p, tol_d, rp, rd)
            last = (x, y, zp)
            up = (sign == 0) & (Cxs > sc.u)
            lo = (sign == 0) & (Cxs < sc.l)
            if phase == 1 and (up.any() or lo.any()):
                sign[up] = 1
                sign[lo] = -1
            elif wrong.any() and phase < 3:
                phase = 2
                trial = (x, y, z, Cxs, sign.copy(), wrong)
                sign[wrong] = 0
            elif wrong.any():
                x, y, z, Cxf, sign = self._polish_drop_one(x, y, z, Cxs, sign, wrong)
            else:
                return False, last
        return False, last

    def _krylov_polish(self, x, y, z, Ax, Cx, tol_p, tol_d, refactorize=1,
                       rounds=_KRYLOV_POLISH_ROUNDS, tight=False, warm_penalties=None):
        """Solve the equality-constrained QP of the active set that z identifies by GMRES,
        preconditioned by the factorization at hand, and correct that set for a few rounds;
        (True, scaled (x, y, z)) when a result meets every stopping test, else (False, None).
        ``Ax``, ``Cx``: the caller's constraint products at x.

        A warm start after a small data change (``Solver.update``) usually keeps most of its
        active set, and the ALM only has to move x and the multipliers along it: an outer
        iteration per digit or so, each a few solves with the kept factorization (equality
        n = 20,000: 5 outer iterations, 16 solves, 2.2x one factorization's time). The KKT
        system of that QP, [H A' C_J'; A 0 0; C_J 0 0], differs from the factorized one by the
        penalties on the diagonal and by the rows where J and the factorization's active set
        differ; preconditioned by it, GMRES needs a few solves (see refine.py). Between rounds
        the violated rows enter J and the wrong-sign ones leave (primal-dual active set), while
        their number shrinks (_FULL_STEP_SHRINK, _PDAS_SHRINK when ``tight``). Where J differs
        from the factorization's set, the preconditioner is the factorization switched to J by
        a Woodbury correction (KKTSystem.switched_solve: one solve per differing row, kept
        for the factorization's life) while that costs less than a factorization (a ``tight``
        run only after its own factorization); else, up to _KRYLOV_POLISH_ROWS rows, GMRES
        takes their C entries as part of its correction (two more solves per row); beyond
        that J's matrix is factorized, at most ``refactorize`` times:
        at the current penalties, or at _PDAS_MU_FACTOR times the smallest ones when
        ``tight`` (the rounds of a cold start, far from the ALM's end), or, when the values
        changed since the last factorization, at ``warm_penalties`` (rho, mu_eq, mu_in).
        Once no row changes, a residual still above tolerance gets up to _POLISH_REFINES more
        rounds on the same J (iterative refinement of the solves' rounding).
        """
        kkt, sc = self.kkt, self.sc
        n, m, p = sc.n, sc.m, sc.p
        n_refact = 0
        if kkt.solver is None or kkt.rho is None or kkt.mu_eq is None:
            # no factorization of these values (Solver.update of a matrix): one at the warm
            # start's penalties and active set
            if warm_penalties is None or not refactorize:
                return False, None
            self._factorize(*warm_penalties, _z_signs(z))
            n_refact = 1
        solve = kkt.many_solves()
        changes_prev = math.inf
        n_refine, miss_prev, gap_prev = 0, math.inf, math.inf
        on_f = kkt.active != 0
        sign = _z_signs(z)
        slack = 0.1 * tol_p * sc.F      # how far off J a row must be violated to enter
        for _ in range(rounds):
            on_j = sign != 0
            differ = np.flatnonzero(on_j != on_f)
            switched = None
            if differ.size and (n_refact or not tight):
                # J's matrix at the factorization's penalties by a Woodbury correction (the
                # rounds of a cold start first want their own penalties: one factorization)
                cols0 = kkt.n_column_solves
                switched = kkt.switched_solve(sign, sc.C)
                self.n_polish_solves += kkt.n_column_solves - cols0
            # GMRES takes each differing row's C entries for ~2 more solves: where one
            # factorization costs less (flop model; lasso n = 1,000: 0.7 solves, 3 rows, 15
            # solves), it refactorizes instead when it may
            cheap_fact = (differ.size and n_refact < refactorize
                          and kkt.solves_per_factorization < 2 * differ.size)
            if switched is None and (differ.size > _KRYLOV_POLISH_ROWS or cheap_fact):
                # more rows than GMRES takes in a few steps: one factorization of J's matrix
                # at the same penalties (then only the diagonal differs)
                if n_refact >= refactorize:
                    return False, None
                if tight:
                    st = self.st
                    kkt.factorize(kkt.rho, np.full(m, st.mu_min_eq * _PDAS_MU_FACTOR),
                                  np.full(p, st.mu_min_in * _PDAS_MU_FACTOR), sign)
                else:
                    kkt.factorize(kkt.rho, kkt.mu_eq, kkt.mu_in, sign)
                n_refact += 1
                solve = kkt.many_solves()
                on_f = on_j
                differ = differ[:0]
            # r: J's equality QP's residual; diag = K_true - K_reg: -rho on x, +mu on the
            # rows whose diagonal is 0 in K_true (equality and J rows); with the C entries of
            # rows entering (+) or leaving (-) when the factorization's set is not J
            r, diag, z = self._ws.polish_system(x, y, z, sign, Ax, Cx, kkt.rho, kkt.mu_eq,
                                                kkt.mu_in)
            corr, round_solve, extra = diag, solve, differ.size
            if switched is not None:
                round_solve, extra = switched[0], 0
            elif differ.size:
                corr = self._polish_correction(diag, sc.C[differ],
                                               np.where(on_j[differ], 1.0, -1.0),
                                               n + m + differ, n)
            if not np.all(np.isfinite(r)):
                return False, None
            delta, n_solves = gmres_refine(
                round_solve, corr, r, _KRYLOV_POLISH_TOL,
                max(_KRYLOV_POLISH_SOLVES, int(kkt.solves_per_factorization)) + 2 * extra,
                patience=3 + 2 * extra, window=True)
            self.n_polish_solves += n_solves
            if not np.all(np.isfinite(delta)):
                return False, None
            # rows of J whose multiplier turned leave it, violated rows off J enter
            x, y, z, Ax, Cx, sign_next, changes = self._ws.polish_step(x, y, z, delta, sign,
                                                                      slack)
            if not changes:
                rp, rd, _, _ = self._unscaled_residuals(x, y, z, Ax, Cx)
                if rp > tol_p or rd > tol_d or self._complementarity(z, Cx) > tol_p:
                    # the set has settled but the solves' rounding left the residual above
                    # tolerance (their backward error grows like 1/mu): another round on the
                    # same set refines it while that at least halves the residual
                    miss = max(rp / tol_p, rd / tol_d)
                    if n_refine < _POLISH_REFINES and miss < 0.5 * miss_prev:
                        n_refine += 1
                        miss_prev = miss
                        continue
                    self._note_floor_candidate(x, y, z, Ax, Cx, tol_p, tol_d, rp, rd)
                    return False, None
                gap_terms = self._duality_gap(x, y, z) if self.st.check_duality_gap else None
                mended = self._gap_met_or_mended(x, y, z, Ax, Cx, tol_d, gap_terms)
                if mended is None:
                    # the residuals met with the gap missed: the solves' rounding again
                    # (equality n = 5,000 from a zero guess at eps_abs 1e-6: residuals 9e-10,
                    # 5e-7 after the first round, gap missed; the next round met all)
                    gap = gap_terms[0]
                    if n_refine < _POLISH_REFINES and gap < 0.5 * gap_prev:
                        n_refine += 1
                        gap_prev = gap
                        continue
                    return False, None
                self._polish_sign = sign
                return True, (x, *mended)
            if changes > (_PDAS_SHRINK if tight else _FULL_STEP_SHRINK) * changes_prev:
                return False, None
            changes_prev = changes
            sign = sign_next
        return False, None

    def _at_polish_penalties(self):
        """After a successful :meth:`_krylov_polish`: the penalties of the factorization it
        used (the state's, so that a warm start and the derivatives find that factorization
        matching), and the polish's active set J as the state's (from the point alone, rows
        whose multiplier is below rounding would leave it, and the derivatives would
        refactorize). Returns them."""
        kkt = self.kkt
        self._active[:] = self._polish_sign
        return kkt.mu_eq, kkt.mu_in

    @staticmethod
    def _polish_correction(diag, Cd, sgn, zpos, n):
        """u -> (diag + the symmetric C_D blocks, signed) u, for :meth:`_krylov_polish`."""
        switch = row_switch_product(Cd, sgn, zpos, n, diag.shape[0])

        def corr(u):
            u = np.asarray(u)
            return diag * u + switch(u)
        return corr

    def _restart_point_sane(self, cand, rp, rd, tol_p, tol_d):
        """A failed polish's last point may restart the outer loop (its multipliers are right
        along the slow modes) unless its residuals are far worse than the current point's:
        an active set whose KKT matrix is numerically singular gives multipliers of 1e20
        (CVXQP1_L: the restart from such a point ended at dual residual 4e21, where the point
        before it met both residuals and only the gap was short)."""
        xc, yc, zc = cand
        if not all(np.all(np.isfinite(v)) for v in cand):
            return False
        Ax, Cx = self._ws.constraint_products(xc)
        rpc, rdc, _, _ = self._unscaled_residuals(xc, yc, zc, Ax, Cx)
        return (rpc <= _RESTART_WORSE * max(rp, tol_p)
                and rdc <= _RESTART_WORSE * max(rd, tol_d))

    @staticmethod
    def _polish_drop_one(x, y, z, Cx, sign, wrong):
        """A phase-3 step of the polish from the feasible (x, y, z): the row with the most
        negative multiplier leaves the set. Returns (x, y, z, Cx, new sign)."""
        sign = sign.copy()
        sign[np.argmax(np.where(wrong, np.abs(z), -1.0))] = 0
        return x, y, z, Cx, sign

    @staticmethod
    def _polish_solve(K, rhs, start, n):
        """Solve K u = rhs (the polish's KKT matrix, n variables first) by a pivoted sparse LU,
        refined. When K is singular (more active rows than the solution needs: degenerate
        vertices, dependent rows), the regularized K + diag(delta I, -delta I) is factorized
        instead and refined against K from ``start``: each step only corrects the residual of
        the current point. None when neither gives a finite solution."""
        try:
            # SuperLU can crash (not raise) on a structurally singular matrix: test first
            # (with our matching: scipy's can take exponential time, see _kernels)
            if _kernels.structural_rank(K.indptr, K.indices, K.shape[0]) < K.shape[0]:
                raise RuntimeError("structurally singular")
            lu = spla.splu(K)
            sol, steps = lu.solve(rhs), 2   # refinement: the pivoted LU is accurate, not exact
        except RuntimeError:
            reg = np.full(K.shape[0], -_POLISH_REG)
            reg[:n] = _POLISH_REG
            try:
                lu = spla.splu((K + sp.diags(reg)).tocsc())
            except RuntimeError:
                return None
            sol, steps = start.copy(), _POLISH_REG_STEPS
        for _ in range(steps):
            sol += lu.solve(rhs - K @ sol)
        return sol if np.all(np.isfinite(sol)) else None

    def _extrapolate(self, x, dx, ye, ze, mu_eq, mu_in):
        """x moved by dx in the last outer iteration and the dual residual is its proximal
        term rho dx: x creeps along a direction where the objective is (nearly) flat (degenerate
        LP-like faces), |dx| ~ |grad| / rho per iteration, until a constraint blocks it. Jump:
        the exact minimizer of the augmented Lagrangian *without* the proximal term along dx
        (the kink where blocking rows enter is among its breakpoints), i.e. the inner line
        search at rho = 0. None when that does not move x or is unbounded (left to the
        infeasibility tests)."""
        ws = self._ws
        # the next _inner evaluates its own point again: these buffers are scratch here
        ws.inner_point(x, x, ye, ze, 0.0, mu_eq, mu_in, self.kkt.active)
        alpha, _, _ = ws.line_search(dx, 0.0, mu_eq, mu_in, ze)
        if not (alpha > 0 and math.isfinite(alpha)):
            return None
        return x + alpha * dx

    def _solve_shifted(self, x, Ax, Cx, tol_s):
        """Up to three rounds: shift the data by the current shift, solve from x. ``tol_s``:
        the tolerance of the shift residual (:meth:`_shift_residual`) that x meets.

        Returns (status, state, info): SOLVED_CLOSEST_FEASIBLE, SOLVED or SOLVED_INACCURATE
        (the shift vanished), TIME_LIMIT_REACHED, NUMERICAL_ERROR (the re-solve failed, or its
        point's shift is not the optimal one: the caller goes on in closest mode), or
        (None, None, {}): the rounds or the iteration budget ran out. ``info``: the re-solve's
        (its message, e.g. a duality gap short of its tolerance)."""
        sc = self.sc
        for _ in range(3):
            s_eq, s_in = self._shifts(Ax, Cx)
            # the nested solves share this run's iteration budget (nit never exceeds max_iter)
            budget = self.st.max_iter - self.nit
            if budget < 1:
                return None, None, {}
            sub_st = self.st.replace(max_iter=budget)
            sub = ProxALM(sc.shifted(s_eq, s_in), self.kkt, sub_st, self.deadline, self.log)
            sub.allow_closest = False
            # a shift accurate to eps_abs can leave the shifted problem inconsistent by about
            # that much: its primal residual then stalls while the multipliers diverge; stop
            # early and shift again from where it got to (x satisfies that shift exactly).
            # Only from a point whose shift is still optimal: the primal residual also stalls
            # where the shifted problem is consistent but its ALM slow (seed 612 of the random
            # mixed problems: a row with l = u and a shift of 1.7e-4, so a box [u, u + 1.7e-4]
            # in the shifted problem, slid to u at the price of violating 22 other rows by
            # 5e-8), and shifting from there returned a shift 1.7e-4 off the least-squares
            # one, its residual 1.4e-4, as SOLVED_CLOSEST_FEASIBLE. There the re-solve goes
            # on (its polish solves it).
            sub.primal_stall_exit = _SHIFTED_PRIMAL_STALL
            sub.reshift_ok = lambda ax, cx: self._shift_residual(ax, cx) <= tol_s
            st, state, info = sub._run(x, np.zeros(sc.m), np.zeros(sc.p), None, None)
            self._add_work(sub)
            self._nit_nested += sub.nit
            if st.feasible_solution:
                # SOLVED_INACCURATE: the shifted QP's objective is short of its gap tolerance;
                # the shift itself is optimal (tested before this call). Its message says so.
                Ax, Cx = self._ws.constraint_products(state.x)
                rp, _, ps, _ = self._unscaled_residuals(state.x, state.y, state.z, Ax, Cx)
                tol_p = self.st.eps_abs + self.st.eps_rel * ps
                if rp <= tol_p:
                    return st, state, info  # the shift vanished: it was consistent
                if _kernels.scaled_inf_norm(self._shifts(Ax, Cx)[1] - s_in, sc.F,
                                            True) > tol_p:
                    # Solved to tolerance, but a row slid inside its widened box: the shift
                    # of the point (the one reported) moved by more than the tolerance from
                    # the optimal one (random mixed seed 9996: a row with l = u and
                    # s_i = 1.1e-5 slid to u, the reported shift's residual 9.6e-6, the
                    # other rows violated by 4e-9). Rows at their shifted bounds keep their
                    # shift to the tolerance.
                    return Status.NUMERICAL_ERROR, state, info
                state.closest = True
                return Status.SOLVED_CLOSEST_FEASIBLE, state, info
            if st in (Status.TIME_LIMIT_REACHED, Status.NUMERICAL_ERROR):
                return st, state, info
            x = state.x
            Ax, Cx = self._ws.constraint_products(x)
        return None, None, {}

    def _inner_tolerance(self, rp, rd, tol_p, tol_d):
        # Scaled-gradient tolerance: tight enough not to stall the outer loop, loose early.
        target = 0.1 * min(tol_p, tol_d)
        return max(min(1e-1, 0.1 * max(rp, rd)), target * 1e-1, 1e-14)

    def _at_floor(self, mu_eq, mu_in):
        """Whether the penalties are at their (current) floor, or the multipliers' rounding
        floor held back their last shrink: shrinking them cannot speed up the outer loop."""
        if self._floor_blocked:
            return True
        floor_eq, floor_in = self._mu_floor
        return ((not mu_eq.size or float(np.max(mu_eq)) <= floor_eq)
                and (not mu_in.size or float(np.max(mu_in)) <= floor_in))

    def _shrink_penalties(self, mu_eq, mu_in, x, tol_d):
        """Penalties times mu_update_factor, down to mu_min and, unless tol_d is None, no
        lower than where the multipliers' rounding floor (:meth:`_dual_floor`) would exceed
        the dual tolerance: below that the dual residual hovers at the floor until a stall
        grows the penalties back (equality n = 20,000 at eps_abs 1e-6: mu_eq went to 1e-6,
        floor 1e-6, and a warm re-solve spent 15 outer iterations there)."""
        st = self.st
        f = st.mu_update_factor
        floor_eq, floor_in = self._mu_floor
        new_eq = np.maximum(mu_eq * f, floor_eq) if mu_eq.size else mu_eq
        new_in = np.maximum(mu_in * f, floor_in) if mu_in.size else mu_in
        excess = 0.0 if tol_d is None else (
            self._dual_floor(x, new_eq, new_in) / (_FLOOR_SHARE * tol_d))
        self._floor_blocked = excess > 1.0
        if excess > 1.0:
            # The floor is inversely proportional to a common scaling of the penalties. A
            # shrink by less than _FLOOR_MIN_SHRINK is not worth its refactorization.
            if excess * f > _FLOOR_MIN_SHRINK:
                return mu_eq, mu_in
            new_eq = np.minimum(new_eq * excess, mu_eq) if mu_eq.size else mu_eq
            new_in = np.minimum(new_in * excess, mu_in) if mu_in.size else mu_in
        changed = (mu_eq.size and not np.array_equal(new_eq, mu_eq)) or (
            mu_in.size and not np.array_equal(new_in, mu_in))
        return (new_eq, new_in) if changed else (mu_eq, mu_in)

    def _dual_floor(self, x, mu_eq, mu_in):
        """Estimated rounding floor of the unscaled dual residual at penalties (mu_eq, mu_in).

        The multipliers are y = y_e + (Ax - b) / mu_eq (z likewise on the active rows): the
        rounding error of Ax - b, eps (|A||x| + |b|), reaches the dual residual through
        |A'| / mu. An upper estimate (sums of absolute values): 3-4x the observed floor on
        the equality class."""
        sc = self.sc
        acc = np.zeros(sc.n)
        ax = np.abs(x)
        if sc.m:
            A_abs, At_abs = self._abs_pair("a")
            acc += At_abs @ ((A_abs @ ax + np.abs(sc.b)) / mu_eq)
        if sc.p and np.any(self._active):
            C_abs, Ct_abs = self._abs_pair("c")
            act = self._active
            bound = np.where(act > 0, sc.u, np.where(act < 0, sc.l, 0.0))
            err = np.where(act != 0, C_abs @ ax + np.abs(bound), 0.0)
            acc += Ct_abs @ (err / mu_in)
        if not sc.n:
            return 0.0
        return float(np.finfo(float).eps * np.max(acc * self._dual_unscale))

    def _floor_point(self, x, y, z, Ax, Cx, tol_p, tol_d, rp, rd):
        """Where the run stalls: whether this point, or one a polish found on the way
        (:meth:`_note_floor_candidate`), is as good as double precision gets; the best of
        them is then ``self._floor_cand``."""
        self._note_floor_candidate(x, y, z, Ax, Cx, tol_p, tol_d, rp, rd)
        return self._floor_cand is not None

    def _note_floor_candidate(self, x, y, z, Ax, Cx, tol_p, tol_d, rp, rd):
        """Keep (copies of) the scaled point (x, y, z) with its unscaled residuals (rp, rd)
        when every residual row (primal, dual, complementarity) is within the tolerance or
        within _FLOOR_ACCEPT times its rounding floor (:meth:`_rounding_floor_residuals`),
        the duality gap is met, and no better such point is kept. The polishes of an ALM that
        drives its penalties to the floor at a tolerance below the rounding floor find such
        points and lose them (Maros-Meszaros QFORPLAN at eps_abs 1e-9: polish points within
        0.5-0.7x, the run's end 1e8x off)."""
        if not self.allow_closest:
            return                      # a shifted re-solve: its caller decides
        if rp > _FLOOR_GATE * tol_p or rd > _FLOOR_GATE * tol_d:
            return                      # far from any floor: not worth the O(nnz) test
        ratio = max(self._rounding_floor_residuals(x, y, z, Ax, Cx, tol_p, tol_d))
        if ratio > _FLOOR_ACCEPT or (self._floor_cand is not None
                                     and ratio >= self._floor_cand[0]):
            return
        if self.st.check_duality_gap and not self._gap_met(*self._duality_gap(x, y, z)):
            return
        self._floor_cand = (ratio, x.copy(), y.copy(), z.copy(), rp, rd)

    def _rounding_floor_residuals(self, x, y, z, Ax, Cx, tol_p, tol_d):
        """Per-row ratios of the unscaled residuals at the scaled point (x, y, z) to their
        rounding floors: (max primal ratio, max dual ratio, complementarity ratio); rows
        within their tolerance (tol_p, tol_d) count 0.

        A row's floor is eps times the sum of the absolute values of the terms that make its
        residual (dual row i: |H||x| + |g| + |A'||y| + |C'||z|; equality row: |A||x| + |b|;
        inequality row: |C||x| + |its bound|), unscaled: the error of evaluating that
        residual in double precision from an exact point, and the least that the rounding
        of x, y, z themselves leaves. A row whose residual is within the tolerance has ratio
        0. Where every ratio is small, no algorithm in double precision can do much better
        (Maros-Meszaros QSHELL at eps_abs 1e-9: dual terms of 1.6e7, floor 3.5e-9)."""
        sc = self.sc
        eps = np.finfo(float).eps
        ax = np.abs(x)
        if self._abs_h is None:
            self._abs_h = abs(sc.H)
        acc = self._abs_h @ ax + np.abs(sc.g)
        r_d = self._ws.h_product(x) + sc.g + sc.constraints_t(y, z)
        prim = comp = 0.0
        if sc.m:
            A_abs, At_abs = self._abs_pair("a")
            acc += At_abs @ np.abs(y)
            prim = _worst_ratio(np.abs(Ax - sc.b) / sc.E,
                                eps * (A_abs @ ax + np.abs(sc.b)) / sc.E, tol_p)
        if sc.p:
            C_abs, Ct_abs = self._abs_pair("c")
            acc += Ct_abs @ np.abs(z)
            cx_abs = C_abs @ ax
            proj = np.clip(Cx, sc.l, sc.u)
            prim = max(prim, _worst_ratio(np.abs(Cx - proj) / sc.F,
                                          eps * (cx_abs + np.abs(proj)) / sc.F, tol_p))
            # complementarity: rows with a multiplier, distance to the bound it points at
            bound = np.where(z > 0, sc.u, np.where(z < 0, sc.l, Cx))
            finite = np.isfinite(bound)
            comp = _worst_ratio(np.where(finite, np.abs(Cx - bound), np.inf) / sc.F,
                                eps * (cx_abs + np.abs(np.where(finite, bound, 0.0))) / sc.F,
                                tol_p)
        dual = _worst_ratio(np.abs(r_d) * self._dual_unscale, eps * acc * self._dual_unscale,
                            tol_d)
        return prim, dual, comp

    def _abs_pair(self, which):
        """(|M|, |M'|) of the scaled A (``which`` "a") or C ("c"), built once per run."""
        sc = self.sc
        if which == "a":
            if self._abs_a is None:
                self._abs_a = (abs(sc.A), abs(sc.At))
            return self._abs_a
        if self._abs_c is None:
            self._abs_c = (abs(sc.C), abs(sc.Ct))
        return self._abs_c

    def _grow_penalties(self, mu_eq, mu_in):
        """Undo part of the penalty decrease (dual floor from rounding); later shrinks stop
        a factor 10 above the penalties that stalled."""
        self._floor_blocked = False
        new_eq = np.minimum(mu_eq * _MU_RESET, _MU_MAX) if mu_eq.size else mu_eq
        new_in = np.minimum(mu_in * _MU_RESET, _MU_MAX) if mu_in.size else mu_in
        floor_eq, floor_in = self._mu_floor
        if mu_eq.size:
            floor_eq = max(floor_eq, min(float(np.min(mu_eq)) * 10.0, _MU_MAX))
        if mu_in.size:
            floor_in = max(floor_in, min(float(np.min(mu_in)) * 10.0, _MU_MAX))
        self._mu_floor = (floor_eq, floor_in)
        return new_eq, new_in

    def _closest_penalties(self, mu_eq, mu_in):
        """Penalties proportional to the squared row scalings: the limit of the ALM on an
        inconsistent problem is then the closest feasible QP in the unscaled l2 norm."""
        w_eq, w_in = self._w_eq, self._w_in
        wmax = max(np.max(w_eq, initial=0.0), np.max(w_in, initial=0.0))
        wmin = min(np.min(w_eq, initial=np.inf), np.min(w_in, initial=np.inf))
        # Fixed, not driven to mu_min: the ALM multipliers grow by s/mu per iteration in this
        # mode, and a tiny mu makes them lose digits before the shifted re-solve takes over.
        # All are raised alike until the smallest is _CLOSEST_SPREAD times mu_closest, so the
        # weights stay exact.
        mu = self.st.mu_closest * max(1.0, _CLOSEST_SPREAD * wmax / wmin)
        return mu * w_eq / wmax, mu * w_in / wmax
