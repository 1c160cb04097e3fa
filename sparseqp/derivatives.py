"""Derivatives of a solved QP: reverse mode (VJP), forward mode (JVP) and Jacobians.

Feasible solution (status SOLVED), active set J (rows with z_i != 0): the solution map is
differentiated through the KKT system

    K0 = [ H    A'   C_J' ]        K0 (dx, dy, dz_J) = -(dH x + dg + dA'y + dC_J'z_J,
         [ A    0    0    ]                               dA x - db,
         [ C_J  0    0    ]                               dC_J x - d(bound)_J)

and inactive rows keep dz_i = 0.

Closest-feasible solution (SOLVED_CLOSEST_FEASIBLE). Locally (active set J fixed, shifted rows
included) it is x = argmin f(x) s.t. M x = P_M d, with M = [A; C_J], d = [b; bound_J] and P_M the
orthogonal projector onto range(M); the shift is s = M x - d = -(I - P_M) d, which lies in
null(M'). It is also the eps -> 0 limit of the elastic problem min f(x) + |s|^2 / (2 eps),
A x - s_eq = b, l <= C x - s_in <= u, whose KKT matrix K_eps is K0 with -eps blocks (eps is the
same for every row in unscaled units, so the shift is measured in the unscaled l2 norm) and whose
multipliers y + s/eps diverge. We never form s/eps. Reverse mode (v on x and on the shifts):

    w = lim K_eps^{-1} (v_x + M' v_s, 0)        o = lim K_eps^{-1} (0, w_y)
    dL/dM = -y w_x' - w_y x' + v_s x' - s o_x'   dL/dd = w_y - v_s

with y the finite multipliers returned by the solve. The term -s o_x' is the finite part of the
elastic -(s/eps) w_x'; the divergent part pairs to zero with every perturbation dM that keeps the
rank of M (M w_x -> 0 and dM' s lies in range(M') there) and is dropped. Perturbations that change
the rank of M (e.g. two contradictory parallel rows that stop being parallel) make the solution
map discontinuous: no derivative exists along them, and the returned gradient is that of the
rank-preserving part. Forward mode adds eta = (M')^+ (-dM' s), the y-part of
lim K_eps^{-1} (-dM' s, 0), to the constraint right-hand side; the shifts' tangents are
M dx + dM x - dd on the shifted rows.

The limits are taken exactly, without a small eps (in unscaled units, P the l2-orthogonal
projector onto range(M)):

- lim K_eps^{-1} (r_x, r_y) has the x-part of any solution of the singular K0 u = (r_x, P r_y),
  which is consistent (unique when H is positive definite on null(M)); (I - P) r_y only adds
  -(I - P) r_y / eps to the y-part and is dropped. The y-part is the solution's y projected onto
  range(M) (y = M u_x / eps there), so w_y above is P of any K0 solution's y;
- the projection: [0, M'; M, -I] (t, y) = (0, r) (consistent, singular in t only) gives
  M'y = 0 and r = M t - y, so P r = M t = r + y.

Linear algebra: everything runs on the Ruiz-scaled problem. Feasible points use the factorization
the forward pass left behind (a regularized K0), refined against the target matrix by GMRES
preconditioned with that factorization (:mod:`sparseqp.refine`), and a numeric refactorization
(regularization ``bw_reg``) only when the stored factorization is for another active set or
values, or when refinement stalls (the solves use a copy of its factors and a faster LDL'
kernel: :meth:`~sparseqp.kkt.KKTSystem.many_solves`).
Closest-feasible points use one numeric refactorization per linearization (kept for later
vjp/jvp calls, redone when another solve replaced it), of K_mu = [H + bw_reg I, M'; M, -mu I]
(unscaled; mu = ``bw_closest_eps`` relative to the largest row scaling, raised until the
smallest scaled block is 1e-11: LDL' of blocks 1e6 apart lost every digit at 1e-14; and 100x
at a time, up to 1e-2, while one solve with the factors has a backward error above 1e-12: with
H singular the x-pivots are only bw_reg and small blocks are rounded away). GMRES
with it solves the K0 systems (K_mu^{-1} keeps y in range(M), a proximal
point iteration on the multipliers) and the projections (correction -(H + bw_reg I) on the
variables). No new symbolic analysis ever. Singular K0 (dependent active rows, singular H, weakly
active constraints): the refinement converges to the least-squares/minimum-norm solution where the
system is consistent; where it is not, the iteration stops at its smallest residual, a finite
element of the conservative Jacobian, with a RuntimeWarning when the residual is above 1e-6
(x not locally unique: H singular on the shifted face of a closest-feasible point, or on the
null space of a feasible point's active rows, as at LP-like points off a vertex). A feasible
point's weakly active rows (z_i = 0 at a bound) join its active set where that makes the
system consistent (:meth:`Linearization.settle_active_set`). Where the
fixed-pattern LDL' of the regularized K0 is unsound (dependent active rows with H singular:
zero pivots), its constraint blocks are raised until one solve's backward error is small.
The residual reached is reported in ``info``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import _kernels, _krylov
from .kkt import index_parts
from .refine import gmres_refine
from .status import SOLUTION_STATUSES, Status

__all__ = ["DerivativeError", "Gradients", "Tangents", "vjp", "jvp", "jacobian"]


# a derivative solve whose relative residual ends above this is reported with a warning
_WARN_RESIDUAL = 1e-6
# closest-feasible: the factorized elastic blocks are mu * W (W = E^2 / max, F^2 / max: the
# unscaled identity in scaled units, largest entry 1; variables regularized by bw_reg), and the
# solves refine toward mu = 0. They contract by about mu W / (mu W + sigma^2) per solve (sigma^2:
# eigenvalues of the constraint Schur complement), so mu is as small as LDL' allows:
# bw_closest_eps, raised until the smallest block mu * min(W) is at least _LIMIT_BLOCK_MIN (a
# block of 5e-15 lost every digit, 5e-13 was still exact), at most _LIMIT_MU_MAX.
_LIMIT_BLOCK_MIN = 1e-11
_LIMIT_MU_MAX = 1e-4
_LIMIT_BOOST = 100.0  # mu's factor per refactorization when the factors are unsound ...
_LIMIT_BACKWARD_ERR = 1e-12  # ... i.e. one solve's backward error is above this, up to
_LIMIT_MU_SOUND_MAX = 1e-2  # (random mixed seed 30, an LP: sound from 1e-3 on)


class DerivativeError(ValueError):
    """The result cannot be differentiated (failed solve, or unsupported cotangent)."""


@dataclass
class Gradients:
    """Gradients of a scalar loss with respect to the QP data.

    Attributes
    ----------
    H : scipy.sparse.csc_matrix, (n, n)
        On exactly the pattern of the (canonical) H; symmetric.
    g : ndarray, (n,)
    A : scipy.sparse.csc_matrix, (n_eq, n)
        On exactly the pattern of A.
    b : ndarray, (n_eq,)
    C : scipy.sparse.csc_matrix, (n_in, n)
        On exactly the pattern of C (rows of inactive constraints are zero).
    l, u : ndarray, (n_in,)
    info : dict
        ``n_factorizations`` (numeric refactorizations this call needed), ``n_refine``
        (refinement steps), ``residual`` (relative residual of the KKT solve reached).
    """

    H: sp.csc_matrix
    g: np.ndarray
    A: sp.csc_matrix
    b: np.ndarray
    C: sp.csc_matrix
    l: np.ndarray
    u: np.ndarray
    info: dict = field(default_factory=dict)


@dataclass
class Tangents:
    """Directional derivatives of the solution (forward mode), unscaled.

    Attributes: x (n,), y (n_eq,), z (n_in,), s_eq (n_eq,), s_in (n_in,), info (dict as in
    :class:`Gradients`).
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    s_eq: np.ndarray
    s_in: np.ndarray
    info: dict = field(default_factory=dict)


class Linearization:
    """The linear system of the derivatives at one solved point (scaled space)."""

    def __init__(self, result):
        status = result.status
        if status not in SOLUTION_STATUSES:
            raise DerivativeError(f"cannot differentiate a solve that ended with status "
                                  f"{Status(status).name}")
        fw = result._forward
        self.solver = result._solver
        self.sc = fw["sc"]
        self.kkt = self.solver._kkt
        self.fact_id = fw["fact_id"]
        self.st = fw["settings"]
        self.closest = status == Status.SOLVED_CLOSEST_FEASIBLE
        self.problem = fw["problem"]
        sc = self.sc
        self.x, self.y, self.z = result.x, result.y, result.z
        p = self.problem
        q = p.n_in
        self.s_eq = result.s_eq
        # the shifted rows (|s_in| > eps_abs), the active set (z != 0 or shifted) and which
        # bound each active row differentiates into (side: +1 upper, -1 lower, 0 inactive)
        self.s_in, self.active, self.side = np.empty(q), np.empty(q, dtype=np.int8), np.empty(q)
        _krylov.active_sets(_f64(self.z), _f64(result.s_in), p.l, p.u, self.st.eps_abs,
                            self.s_in, self.active, self.side)
        if self.closest:
            # W: the unscaled identity on the constraint rows in scaled units, largest entry 1
            # (unscaled K w = v is K~ u = (c D v_x, E v_y, F v_z) with blocks -eps E^2 / c)
            wmax = max(np.max(sc.E ** 2, initial=0.0), np.max(sc.F ** 2, initial=0.0))
            self.w_eq = sc.E ** 2 / wmax
            self.w_in = sc.F ** 2 / wmax
        self.n_fact = 0
        self._fallback = False
        self._settled = False           # see settle_active_set
        self._corr, self._corr_of = None, None
        # (fact_id, solve, delta) of a switched solve, see _prepare_factorization
        self._switched = None
        # closest-feasible: the factorization of K_mu (see _solve_closest)
        self._limit_fact_id = None
        # the last exact projection onto range(M) (the arrays drop_shift_component returned)
        self._projected = None
        # work of projections not yet reported (added to the next solve's info)
        self._pending = _info()

    # ---------------------------------------------------------------------------------------
    # the target matrix and the refined solve
    # ---------------------------------------------------------------------------------------
    def _correction(self):
        """Diagonal of the target K0 minus the factorized matrix: no rho on H, 0 (instead of
        the factorization's -mu) on active rows; inactive rows keep the factorization's -mu_in.
        (Closest-feasible points target K0 too, on their own factorization.)"""
        kkt = self.kkt
        if self._corr_of != kkt.fact_id:
            sc, n, m = self.sc, self.sc.n, self.sc.m
            corr = np.empty(kkt.N)
            corr[:n] = -kkt.rho
            if m:
                corr[n:n + m] = kkt.mu_eq
            if sc.p:
                corr[n + m:] = np.where(self.active != 0, kkt.mu_in, 0.0)
            self._corr, self._corr_of = corr, kkt.fact_id
        return self._corr

    def _residual(self, u, rhs, out):
        """out = rhs - target(K) u, returns |out|: one pass over the factorized matrix's stored
        upper triangle plus the diagonal correction (and the rows of another active set, see
        :meth:`_prepare_factorization`)."""
        rn = self.kkt.residual(u, rhs, self._correction(), out)
        switched = self._switched_now()
        if switched is None or switched[1] is None:
            return rn
        out -= switched[1](u)
        return _kernels.norm2(out)

    def _switched_now(self):
        """(solve, delta) of :meth:`KKTSystem.switched_solve` while its factorization stands."""
        sw = self._switched
        return sw[1:] if sw is not None and sw[0] == self.kkt.fact_id else None

    def _prepare_factorization(self):
        """Use the forward factorization when it matches this point; when it is of the same
        values for another active set (a polish ended by a Woodbury correction, or a warm
        re-solve that moved a few rows), solve through that correction while its columns are
        cheaper than a refactorization; else refactorize once."""
        kkt = self.kkt
        if kkt.holds(self.fact_id, self.sc, self.active) or self._switched_now() is not None:
            return
        if self.sc.p and kkt.holds_values(self.fact_id, self.sc):
            sw = kkt.switched_solve(self.active, self.sc.C)
            if sw is not None:
                self._switched = (kkt.fact_id,) + sw
                return
        self._refactorize()

    def _refactorize(self):
        """Factorize K0 regularized by bw_reg; where those factors are unsound (see
        :meth:`_factors_sound`: H singular on dependent active rows), with the constraint
        blocks raised _LIMIT_BOOST times at a time, up to _LIMIT_MU_SOUND_MAX (Maros-Meszaros
        DUALC8, 3 active rows of 8 variables: a zero pivot at 1e-9, and the gradients came
        back as 0 with a warning). The refinement targets K0 whatever the blocks."""
        kkt, sc = self.kkt, self.sc
        kkt.ensure_values(sc)
        self.n_fact += self._factorize_sound(
            self.st.bw_reg, _LIMIT_MU_SOUND_MAX,
            lambda t: (np.full(sc.m, t), np.full(sc.p, t)))
        self.fact_id = kkt.fact_id
        self._fallback = True

    def _factorize_sound(self, mu, mu_max, blocks):
        """Factorize K0 with the x block regularized by bw_reg and the constraint blocks
        ``blocks(mu)`` (mu_eq, mu_in arrays); while the factors are unsound
        (:meth:`_factors_sound`) and mu < mu_max, again with mu raised _LIMIT_BOOST times.
        Returns the number of factorizations."""
        n_fact = 0
        while True:
            mu_eq, mu_in = blocks(mu)
            self.kkt.factorize(self.st.bw_reg, mu_eq, mu_in, self.active)
            n_fact += 1
            if mu >= mu_max or self._factors_sound():
                return n_fact
            mu = min(mu_max, _LIMIT_BOOST * mu)

    def solve(self, rhs, y_in_range=False, warn=True):
        """Solve target(K) u = rhs (scaled) by GMRES/refinement on the stored factorization.

        Closest-feasible: see :meth:`_solve_closest` (``y_in_range``: the y-part of rhs is
        known to lie in range(M)). ``warn``: a RuntimeWarning when the residual stays above
        _WARN_RESIDUAL (feasible points). Returns (u, info).
        """
        if self.closest:
            return self._solve_closest(rhs, y_in_range)
        st = self.st
        n_fact0 = self.n_fact     # info counts this call's factorizations only
        cols0 = self.kkt.n_column_solves
        self._prepare_factorization()
        n_ref = self.kkt.n_column_solves - cols0     # a switched solve's columns
        if _kernels.norm2(rhs) == 0.0:
            return np.zeros_like(rhs), _info(self.n_fact - n_fact0, n_ref)
        accept = max(st.bw_tol * 1e3, 1e-8)
        best_u, best_r = None, np.inf
        while True:
            u, n, r = self._refined(self._correction(), self._residual, rhs, st.bw_tol)
            n_ref += n
            if best_u is None or r < best_r:
                best_u, best_r = u, r
            if best_r <= accept or self._fallback:
                break
            # slow or stalled with the forward's (larger) penalties: one refactorization with
            # the small backward regularization, then refine again (its result is kept only
            # where it is better: on a singular K0, whose least-squares residual no
            # factorization lowers, it can be worse)
            self._refactorize()
        if best_r > 1.0:
            # worse than u = 0 (GMRES on an inconsistent system can end far off): take that
            best_u, best_r = np.zeros_like(rhs), 1.0
        # A feasible point whose KKT matrix is singular with the right-hand side outside its
        # range stops at a least-squares residual: x is not locally unique along a direction
        # the cotangent reaches (H singular on the null space of the active rows, e.g. an LP
        # off a vertex or a weakly active row left out of the set), and no derivative exists.
        # Maros-Meszaros QSC205, QCAPRI, QGROW7 at eps_abs 1e-6: residuals 0.2-0.6 and
        # gradients of 1e11-1e17; said, not returned silently.
        if warn and best_r > _WARN_RESIDUAL:
            warnings.warn(
                f"derivative KKT solve reached relative residual {best_r:.1e} only: the "
                "returned derivatives are unreliable (the KKT matrix of the active set is "
                "singular along the cotangent: x is not locally unique, or the point is "
                "degenerate; no derivative exists there)", RuntimeWarning, stacklevel=5)
        return best_u, _merge_info(self._take_pending(),
                                   _info(self.n_fact - n_fact0, n_ref, best_r))

    def settle_active_set(self):
        """Take the weakly active rows (z_i = 0, C_i x within the tolerance of a bound) into
        the active set where the set of the rows with z_i != 0 leaves x not locally unique
        and the larger set does not (once per linearization, before any right-hand side is
        built; feasible points only).

        With the rows of z_i != 0 only, K0 is singular along directions the cotangents reach
        when H is singular on the null space of those rows: at an LP-like vertex whose
        multipliers are degenerate (rows held at a bound with z_i = 0) x is unique, but the
        smaller set does not see it, and the solve stops at a least-squares residual (no
        derivative). Keeping those rows tight gives the derivative along the perturbations
        that keep them so, one of the one-sided derivatives at that kink. Probed with one
        random x right-hand side (a singular K0 whose null space is only multipliers,
        dependent rows, is consistent for every one of them); its work is reported in the
        next solve's ``info``."""
        if self._settled:
            return
        self._settled = True
        if self.closest or not self.sc.p:
            return
        p, st = self.problem, self.st
        zero = (self.z == 0.0) & (self.active == 0)
        if not np.any(zero):
            return
        cx = p.C @ self.x
        tol_u = st.eps_abs + st.eps_rel * np.where(np.isfinite(p.u), np.abs(p.u), 0.0)
        tol_l = st.eps_abs + st.eps_rel * np.where(np.isfinite(p.l), np.abs(p.l), 0.0)
        at_u = zero & (np.abs(cx - p.u) <= tol_u)
        at_l = zero & (np.abs(cx - p.l) <= tol_l) & ~at_u
        weak = at_u | at_l
        if not np.any(weak):
            return
        probe = np.zeros(self.kkt.N)
        probe[:self.sc.n] = np.random.default_rng(0).standard_normal(self.sc.n)
        _, work = self.solve(probe, warn=False)
        if work["residual"] > _WARN_RESIDUAL:
            saved = (self.active.copy(), self.side.copy())
            self.active[weak] = 1
            self.side[at_u] = 1.0
            self.side[at_l] = -1.0
            self._set_changed()
            _, info = self.solve(probe, warn=False)
            if info["residual"] > _WARN_RESIDUAL:      # still no derivative: as it was
                self.active[:], self.side[:] = saved
                self._set_changed()
            work = _merge_info(work, info)
        # (the probes' work is reported, their residuals are not: the next solve has its own)
        self._pending = _merge_info(self._pending, _info(work["n_factorizations"],
                                                         work["n_refine"]))

    def _set_changed(self):
        """Forget what was built for the previous active set: the correction to the target
        and a switched solve (whether the factorization matches is asked of the KKT system,
        with the set, at the next solve)."""
        self._corr_of = None
        self._switched = None

    # ---------------------------------------------------------------------------------------
    # refined solves (both cases) and the closest-feasible limit
    # ---------------------------------------------------------------------------------------
    def _refined(self, corr, residual, rhs, tol):
        """GMRES with the stored factorization (``corr``: the correction, see
        :func:`~sparseqp.refine.gmres_refine`), then the true residual (``residual(u, rhs, out)``:
        out = rhs - target u, returns its norm) and plain refinement steps while they help.
        Returns (u, n_refine, relative residual)."""
        st, kkt = self.st, self.kkt
        norm_rhs = _kernels.norm2(rhs)
        switched = self._switched_now()
        solve = kkt.many_solves() if switched is None else switched[0]
        u, n_solves = gmres_refine(solve, corr, rhs, tol, st.bw_max_refine + 1)
        n_ref = n_solves - 1
        best_u, best_r = u, np.inf
        stalled = 0
        r = np.empty_like(rhs)
        for _ in range(max(st.bw_max_refine + 1 - n_solves, 3)):
            rn = residual(u, rhs, r) / norm_rhs
            if rn < best_r:
                if rn > 0.5 * best_r:
                    stalled += 1
                best_u, best_r = u, rn
            else:
                stalled += 1
            if rn <= tol or stalled >= 3:
                break
            u = u + solve(r)
            n_ref += 1
        if not _krylov.all_finite(best_u):
            best_u = np.nan_to_num(best_u, nan=0.0, posinf=0.0, neginf=0.0)
            best_r = np.inf
        return best_u, n_ref, best_r

    def _take_pending(self):
        info, self._pending = self._pending, _info()
        return info

    def _solve_closest(self, rhs, y_in_range):
        """Closest-feasible solve: the eps -> 0 limit of K_eps^{-1} rhs, its x-part exactly and
        its y-part up to a component in null(M') (removed by :meth:`drop_shift_component`).

        On the factorization of K_mu (elastic blocks mu W, see :meth:`_prepare_limit`; one per
        linearization, kept for later calls): the y-part of rhs is projected onto range(M)
        (unless ``y_in_range``: its null(M') component only moves the diverging multipliers,
        never x), then GMRES against K0 (eps = 0), whose system is consistent then. K_mu^{-1}
        maps range(M) right-hand sides to y in range(M) (mu W is the unscaled identity times
        mu), so the iterates keep y there: a proximal point iteration on the multipliers.
        """
        st, n = self.st, self.sc.n
        info = self._take_pending()
        if _kernels.norm2(rhs) == 0.0:
            return np.zeros_like(rhs), info
        info = _merge_info(info, _info(self._prepare_limit()))
        if not y_in_range and np.any(rhs[n:]):
            rhs = rhs.copy()
            rhs[n:], n_p, res_p = self._project_scaled(rhs[n:])
            info = _merge_info(info, _info(0, n_p, res_p))
            if _kernels.norm2(rhs) == 0.0:
                return np.zeros_like(rhs), info
        # (K0 on a consistent right-hand side: no 1/eps amplification, the feasible tolerance)
        u, n_ref, res = self._refined(self._correction(), self._residual, rhs,
                                      st.bw_tol)
        info = _merge_info(info, _info(0, n_ref, res))
        if info["residual"] > _WARN_RESIDUAL:
            warnings.warn(
                f"derivative KKT solve reached relative residual {info['residual']:.1e} only: "
                "the returned derivatives are unreliable (closest-feasible point whose limit "
                "KKT system is inconsistent for this right-hand side, e.g. H singular on the "
                "shifted face: the solution map is not differentiable there)", RuntimeWarning,
                stacklevel=6)
        return u, info

    def _prepare_limit(self):
        """Factorize K_mu = [H + bw_reg I, M'; M, -mu W] unless it is the one stored
        (another solve or linearization may have refactorized the KKT system since).
        Returns the number of factorizations done (0 or 1)."""
        kkt = self.kkt
        if kkt.holds(self._limit_fact_id, self.sc, self.active):
            return 0
        kkt.ensure_values(self.sc)
        act = self.active != 0
        wmin = min(np.min(self.w_eq, initial=1.0), np.min(self.w_in[act], initial=1.0))
        mu = min(max(_LIMIT_MU_MAX, self.st.bw_closest_eps),
                 max(self.st.bw_closest_eps, _LIMIT_BLOCK_MIN / wmin))
        # inactive rows: decoupled (zero row), any positive pivot
        n_fact = self._factorize_sound(
            mu, max(_LIMIT_MU_SOUND_MAX, mu),
            lambda t: (t * self.w_eq, np.where(act, t * self.w_in, 1.0)))
        self._mu_lim_eq, self._mu_lim_in = kkt.mu_eq, kkt.mu_in
        self._limit_fact_id = kkt.fact_id
        self.n_fact += n_fact
        return n_fact

    def _factors_sound(self):
        """One solve with the factors (K_mu's, or K0's regularized) has a normwise backward
        error |r - K u| / (|K|_F |u| + |r|) of at most _LIMIT_BACKWARD_ERR (random r).

        With H singular the x-pivots are only bw_reg, the eliminated constraint rows carry
        |M|^2 / bw_reg, and elastic blocks below eps times that are rounded away: dependent
        active rows then give zero pivots (random mixed seed 612, an LP: 53 exact zeros with
        blocks of 5e-9; the gradients came back as 0 with a warning where the finite
        difference is 14.4) or factors that no longer solve K_mu (seed 6: backward error
        2e-9, where sound factors give ~1e-15 even on badly scaled rows; its projections onto
        range(M) ended at residual 1.8, the gradient 2.3x off). Larger blocks cure both (the
        gradients of seeds 6 and 612 to 8 digits); the relative residual of the solve would
        not tell (1e-4 on sound but ill-conditioned factors of badly scaled rows)."""
        kkt = self.kkt
        r = np.random.default_rng(0).standard_normal(kkt.N)
        u = kkt.many_solves()(r)
        if not _krylov.all_finite(u):
            return False
        out = np.empty(kkt.N)
        res = kkt.residual(u, r, np.zeros(kkt.N), out)
        norm_k = np.sqrt(2.0) * _kernels.norm2(kkt.K.data)   # bounds |K|_F (upper triangle)
        return res <= _LIMIT_BACKWARD_ERR * (norm_k * _kernels.norm2(u) + _kernels.norm2(r))


    def _hx_corr(self, u):
        """-((H + bw_reg I) u_x, 0): the projection target [0, M'; M, -mu W] minus K_mu."""
        n = self.sc.n
        t = np.zeros_like(u)
        t[:n] = u[:n]
        out = self.kkt.matvec(t)
        out[:n] *= -1.0
        out[n:] = 0.0
        return out

    def _project_scaled(self, ry):
        """Unscaled-orthogonal projection onto range(M) of a constraint right-hand side given
        in scaled units (ry = (E r_eq, F r_in), zero on inactive rows).

        [0, M'; M, -mu W] (t, y) = (0, ry) (scaled; mu W is the unscaled identity times a
        constant) gives M' y = 0 and M t - mu W y = ry: ry = M t + (-mu W y), the second part
        in null(M') in the unscaled metric. The matrix is singular in t
        only (null(M)), the system consistent, y unique. GMRES with the K_mu factorization
        (operator I - [(H + bw_reg I), 0; 0, 0] K_mu^{-1}). Returns (P ry, n_refine, residual).
        """
        n, N = self.sc.n, self.kkt.N
        rhs = np.zeros(N)
        rhs[n:] = ry
        if _kernels.norm2(rhs) == 0.0:
            return ry.copy(), 0, 0.0
        def residual(v, rhs_, out):
            np.subtract(rhs_, self.kkt.matvec(v) + self._hx_corr(v), out=out)
            return _kernels.norm2(out)

        u, n_ref, res = self._refined(self._hx_corr, residual, rhs, self.st.bw_tol)
        mu = np.concatenate((self._mu_lim_eq, np.where(self.active != 0, self._mu_lim_in, 0.0)))
        return ry + mu * u[n:], n_ref + 1, res

    def drop_shift_component(self, wy, wz):
        """Remove the component in null(M') (unscaled l2; it holds the shift s) from a
        multiplier or constraint right-hand side block (unscaled) that belongs to range(M):
        the exact projection of :meth:`_project_scaled`. The refined solves leave a rounding
        error there, and a right-hand side's component there only moves the shift."""
        if not self.closest:
            return wy, wz
        sc, m = self.sc, self.sc.m
        act = self.active != 0
        ry = np.concatenate((sc.E * wy, np.where(act, sc.F * wz, 0.0)))
        if _kernels.norm2(ry) == 0.0:
            wy, wz = np.zeros(m), np.zeros(sc.p)
        else:
            n_f = self._prepare_limit()
            py, n_p, res = self._project_scaled(ry)
            self._pending = _merge_info(self._pending, _info(n_f, n_p, res))
            wy, wz = py[:m] / sc.E, np.where(act, py[m:] / sc.F, 0.0)
        self._projected = (wy, wz)
        return wy, wz

    def solve_unscaled(self, rx, ry, rz):
        """Solve target(K) w = (rx, ry, rz) in unscaled units; inactive rows of w_z are 0.

        Returns (wx, wy, wz, info).
        """
        sc = self.sc
        pr = self._projected
        y_in_range = pr is not None and ry is pr[0] and rz is pr[1]
        # unscaled K w = v  <=>  scaled K~ u = (c D v_x, E v_y, F v_z), w = (D u_x, E u_y/c, F u_z/c)
        # (inactive rows of v_z ignored)
        rhs = np.empty(self.kkt.N)
        _krylov.scale_rhs(sc.c, sc.D, sc.E, sc.F, self.active, _f64(rx), _f64_or_none(ry),
                          _f64_or_none(rz), rhs)
        u, info = self.solve(rhs, y_in_range)
        wx, wy, wz = np.empty(sc.n), np.empty(sc.m), np.empty(sc.p)
        _krylov.unscale_solution(sc.c, sc.D, sc.E, sc.F, self.active, _f64(u), wx, wy, wz)
        return wx, wy, wz, info


# ---------------------------------------------------------------------------------------------
# reverse mode
# ---------------------------------------------------------------------------------------------

def _vec(v, name, size, none=False):
    """The cotangent/direction ``v`` as a contiguous float64 vector of length ``size``,
    checked; zeros when ``v`` is None (None itself with ``none``)."""
    if v is None:
        return None if none else np.zeros(size)
    a = np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(-1))
    if a.shape[0] != size:
        raise ValueError(f"{name} has length {a.shape[0]}, expected {size}")
    if not _krylov.all_finite(a):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return a


def vjp(result, dx=None, dy=None, dz=None, ds_eq=None, ds_in=None) -> Gradients:
    """Gradients of L with respect to (H, g, A, b, C, l, u) given dL/d(x, y, z, s_eq, s_in).

    Parameters
    ----------
    result : Result
        A SOLVED or SOLVED_CLOSEST_FEASIBLE result of :func:`sparseqp.solve` / ``Solver.solve``.
    dx : array_like, (n,), optional
    dy : array_like, (n_eq,), optional
    dz : array_like, (n_in,), optional
        Cotangents of the multipliers (feasible solutions only: a closest-feasible solution's
        multipliers are not unique, see Result).
    ds_eq : array_like, (n_eq,), optional
    ds_in : array_like, (n_in,), optional
        Cotangents of the shifts (closest-feasible solutions; ignored when the shift is 0).

    Returns
    -------
    Gradients
    """
    lin = _linearization(result)
    p = lin.problem
    n, m, q = p.n, p.n_eq, p.n_in
    vx = _vec(dx, "dx", n)
    # (None: zero, not materialized)
    vy = _vec(dy, "dy", m, none=True)
    vz = _vec(dz, "dz", q, none=True)
    vse = _vec(ds_eq, "ds_eq", m, none=True)
    vsi = _vec(ds_in, "ds_in", q, none=True)
    vx_tot = vx
    if lin.closest:
        vse = np.zeros(m) if vse is None else vse
        vsi = np.zeros(q) if vsi is None else vsi
        if (vy is not None and np.any(vy)) or (vz is not None and np.any(vz)):
            raise DerivativeError("dy/dz cotangents are not supported for a closest-feasible "
                                  "solution: its multipliers are not unique")
        vsi = np.where(lin.s_in != 0, vsi, 0.0)
        # s_eq = A x - b and s_in_S = C_S x - bound_S: their cotangents flow into x too
        vx_tot = vx + (p.A.T @ vse if m else 0.0) + (p.C.T @ vsi if q else 0.0)
    # (inactive rows of vz are ignored: the solve masks them)
    wx, wy, wz, info = lin.solve_unscaled(vx_tot, vy, vz)
    wy, wz = lin.drop_shift_component(wy, wz)
    x, y, z = lin.x, lin.y, lin.z
    gH = _on_pattern(p.H, -0.5, wx, x, x, wx)
    gg = -wx
    gA = _on_pattern(p.A, -1.0, y, wx, wy, x)
    # (wy is this call's own array, unless the closest-feasible projection kept it)
    gb = wy.copy() if lin.closest else wy
    # z and wz are 0 off the active set: inactive rows get nothing
    gC = _on_pattern(p.C, -1.0, z, wx, wz, x)
    if lin.closest:
        # The shifts' own dependence on the data (v_s x', -v_s), and the motion of the
        # closest-feasible right-hand side P_M d (M = [A; C_J]) when M moves: -s o_x' with
        # o = K_delta^{-1} (0, w_y, w_z), the finite part of the elastic multipliers' term
        # -(s / delta) w_x'.  Its divergent part, (s / delta) lim w_x', pairs to zero with
        # every perturbation that keeps the rank of M and is dropped (see module docstring).
        ox, _, _, info2 = lin.solve_unscaled(np.zeros(n), wy, wz)
        info = _merge_info(info, info2)
        # added on the data arrays: a sparse sum would drop explicit zeros from the pattern
        if m:
            gA.data += _pattern_values(p.A, 1.0, vse, x, -lin.s_eq, ox)
            gb = gb - vse
        if q:
            gC.data += _pattern_values(p.C, 1.0, vsi, x, -lin.s_in, ox)
        wz = wz - vsi      # vsi is 0 off the shifted rows
    # side is +1 / -1 on the active rows (upper / lower bound), 0 elsewhere
    gl, gu = np.empty(q), np.empty(q)
    _krylov.split_sides(lin.side, _f64(wz), gl, gu)
    return Gradients(H=gH, g=gg, A=gA, b=gb, C=gC, l=gl, u=gu, info=info)


def _info(n_factorizations=0, n_refine=0, residual=0.0):
    """The ``info`` record of a derivative solve (see :class:`Gradients`)."""
    return {"n_factorizations": n_factorizations, "n_refine": n_refine, "residual": residual}


def _merge_info(a, b):
    return _info(a["n_factorizations"] + b["n_factorizations"], a["n_refine"] + b["n_refine"],
                 max(a["residual"], b["residual"]))


def _f64(a):
    return np.ascontiguousarray(a, dtype=np.float64)


def _f64_or_none(a):
    return None if a is None else _f64(a)


def _pattern_values(M, alpha, a, b, c, d):
    """The entries alpha (a_i b_j + c_i d_j) at M's stored positions (M: CSC; in its order)."""
    indptr, indices = index_parts(M)
    out = np.empty(M.nnz)
    _krylov.pattern_outer(indptr, indices, alpha, _f64(a), _f64(b), _f64(c), _f64(d), out)
    return out


def _on_pattern(M, alpha, a, b, c, d):
    """CSC matrix on M's pattern (M: CSC) with the entries of :func:`_pattern_values`."""
    return _csc_like(M, _pattern_values(M, alpha, a, b, c, d))


def _csc_like(M, data):
    """A csc_matrix with M's pattern (own copies of its index arrays) and the values ``data``.

    A shallow copy of M (the instance's attribute dict, as ``copy.copy`` makes it) with new
    arrays: scipy's constructor re-validates the index arrays, ~40 us per matrix at nnz ~ 30k
    (more than computing the values), while M's canonical pattern is valid already.
    """
    out = M.__class__.__new__(M.__class__)
    out.__dict__.update(M.__dict__)
    out.data = data
    out.indices = M.indices.copy()
    out.indptr = M.indptr.copy()
    return out


# ---------------------------------------------------------------------------------------------
# forward mode
# ---------------------------------------------------------------------------------------------

def _mat(dM, M, name):
    if dM is None:
        return None
    from .problem import as_csc

    return as_csc(dM, name, M.shape)


def jvp(result, dH=None, dg=None, dA=None, db=None, dC=None, dl=None, du=None) -> Tangents:
    """Directional derivative of (x, y, z, s_eq, s_in) along a change of the data.

    Parameters
    ----------
    result : Result
        A SOLVED or SOLVED_CLOSEST_FEASIBLE result.
    dH : sparse matrix or array_like, (n, n), optional
        Symmetric direction for H (entries outside H's pattern are allowed).
    dg : array_like, (n,), optional
    dA : sparse matrix or array_like, (n_eq, n), optional
    db : array_like, (n_eq,), optional
    dC : sparse matrix or array_like, (n_in, n), optional
    dl, du : array_like, (n_in,), optional

    Returns
    -------
    Tangents
        For a closest-feasible solution the multiplier tangents are those of the elastic
        problem's finite part and are not unique; x and the shifts are.
    """
    lin = _linearization(result)
    p = lin.problem
    n, m, q = p.n, p.n_eq, p.n_in
    dH_ = _mat(dH, p.H, "dH")
    dA_ = _mat(dA, p.A, "dA")
    dC_ = _mat(dC, p.C, "dC")
    dg_ = _vec(dg, "dg", n)
    db_ = _vec(db, "db", m)
    dl_ = _vec(dl, "dl", q)
    du_ = _vec(du, "du", q)
    return _jvp_core(lin, dH_, dg_, dA_, db_, dC_, dl_, du_)


def _jvp_core(lin, dH, dg, dA, db, dC, dl, du):
    p = lin.problem
    n, m, q = p.n, p.n_eq, p.n_in
    x, y = lin.x, lin.y
    act = lin.active != 0
    z = np.where(act, lin.z, 0.0)
    r_x = -dg.copy()
    if dH is not None:
        r_x -= dH @ x
    r_y = db.copy()
    if dA is not None:
        r_x -= dA.T @ y
        r_y -= dA @ x
    dbound = np.where(lin.side > 0, du, np.where(lin.side < 0, dl, 0.0))
    r_z = np.where(act, dbound, 0.0)
    if dC is not None:
        r_x -= dC.T @ z
        r_z -= np.where(act, dC @ x, 0.0)
    info = None
    if lin.closest and (dA is not None or dC is not None):
        # motion of the closest-feasible right-hand side P_M d when M = [A; C_J] moves:
        # eta = (M')^+ (-dM' s), the multiplier part of K_delta^{-1} (-dM' s, 0)
        qx = np.zeros(n)
        if dA is not None and m:
            qx -= dA.T @ lin.s_eq
        if dC is not None and q:
            qx -= dC.T @ lin.s_in
        if np.any(qx):
            _, eta_y, eta_z, info = lin.solve_unscaled(qx, np.zeros(m), np.zeros(q))
            r_y = r_y + eta_y
            r_z = r_z + eta_z
    if lin.closest:
        # the part of the constraint right-hand side in null(M') (which holds the shift) only
        # moves the shift: K_eps would turn it into multiplier components of size 1/eps and
        # never into x; the limit drops it (unscaled projection onto range(M))
        r_y, r_z = lin.drop_shift_component(r_y, np.where(act, r_z, 0.0))
    tx, ty, tz, info1 = lin.solve_unscaled(r_x, r_y, r_z)
    info = info1 if info is None else _merge_info(info, info1)
    s_eq = np.zeros(m)
    s_in = np.zeros(q)
    if lin.closest:
        s_eq = p.A @ tx - db
        if dA is not None:
            s_eq += dA @ x
        shifted = lin.s_in != 0
        ds = p.C @ tx - dbound
        if dC is not None:
            ds += dC @ x
        s_in = np.where(shifted, ds, 0.0)
        # ty, tz: the tangent of one choice of the (non-unique) multipliers
    return Tangents(x=tx, y=ty, z=tz, s_eq=s_eq, s_in=s_in, info=info)


def jacobian(result, wrt="b", index=None, of="x"):
    """Jacobian of an output with respect to a vector parameter, one JVP per column.

    Parameters
    ----------
    result : Result
    wrt : {"b", "g", "l", "u"}
        The vector parameter.
    index : array_like of int, optional
        The entries of ``wrt`` to differentiate with respect to (default: all).
    of : {"x", "y", "z", "s_eq", "s_in"}
        The output.

    Returns
    -------
    ndarray, (len(output), len(index))
        All columns share the one factorization.
    """
    if wrt not in ("b", "g", "l", "u"):
        raise ValueError(f"wrt must be one of 'b', 'g', 'l', 'u', got {wrt!r}")
    if of not in ("x", "y", "z", "s_eq", "s_in"):
        raise ValueError(f"of must be one of 'x', 'y', 'z', 's_eq', 's_in', got {of!r}")
    lin = _linearization(result)
    p = lin.problem
    size = {"b": p.n_eq, "g": p.n, "l": p.n_in, "u": p.n_in}[wrt]
    idx = np.arange(size) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -size or idx.max() >= size):
        raise ValueError(f"index out of range for {wrt} of length {size}")
    zeros = {"g": np.zeros(p.n), "b": np.zeros(p.n_eq), "l": np.zeros(p.n_in),
             "u": np.zeros(p.n_in)}
    cols = []
    for k in idx:
        d = dict(zeros)
        e = np.zeros(size)
        e[k] = 1.0
        d[wrt] = e
        t = _jvp_core(lin, None, d["g"], None, d["b"], None, d["l"], d["u"])
        cols.append(getattr(t, of))
    out_len = {"x": p.n, "y": p.n_eq, "z": p.n_in, "s_eq": p.n_eq, "s_in": p.n_in}[of]
    return np.column_stack(cols) if cols else np.zeros((out_len, 0))


def _linearization(result):
    lin = result.get("_linearization")
    if lin is None:
        lin = Linearization(result)
        lin.settle_active_set()
        result["_linearization"] = lin
    return lin
