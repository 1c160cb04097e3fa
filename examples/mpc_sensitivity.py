"""Receding-horizon MPC of oscillating masses, with the sensitivities of the first control.

At every step of the closed loop the QP of :func:`sparseqp.problems.mpc_qp` is re-solved for the
current state through ``Solver.update(b=...)`` (same sparsity pattern, warm start), and its
derivatives give

* the feedback gain ``d u0 / d x0`` (``nu x nx``), the local linearisation of the MPC law;
* ``d u0 / d u_max`` and ``d u0 / d u_min``, the sensitivities of the first control to the
  bounds on the first input.

Checks printed at the end:

* at steps where no constraint is active, the gain equals ``-K_0`` of the finite-horizon LQR
  (Riccati recursion from ``P_N = QN``), because the MPC law is then that linear controller;
* at steps where an input saturates, that input's gain row is 0 (it is pinned at its bound) and
  its sensitivity to that bound is 1.

Run ``python examples/mpc_sensitivity.py --quick --out fig.png`` (a few seconds).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from sparseqp import Solver
from sparseqp.problems import mpc_qp

#: Tolerances: a row is "active" when its multiplier exceeds ACTIVE_TOL, "clearly inactive" when
#: its value is at least MARGIN away from both bounds.
ACTIVE_TOL = 1e-7
MARGIN = 1e-5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="closed-loop steps (default 60)")
    parser.add_argument("--horizon", type=int, default=None, help="MPC horizon N (default 40)")
    parser.add_argument("--nx", type=int, default=8, help="state dimension (even; nx/2 masses)")
    parser.add_argument("--nu", type=int, default=3, help="number of inputs")
    parser.add_argument("--u-bound", type=float, default=0.5, help="|u_k| <= u_bound")
    parser.add_argument("--x-bound", type=float, default=4.0, help="|x_k| <= x_bound")
    parser.add_argument("--seed", type=int, default=1, help="seed of the initial state")
    parser.add_argument("--out", default="mpc_sensitivity.png", help="PNG file of the figure")
    parser.add_argument("--quick", action="store_true",
                        help="short run for tests (40 steps, horizon 15 unless given)")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 40 if args.quick else 60
    if args.horizon is None:
        args.horizon = 15 if args.quick else 40
    if args.steps < 1 or args.horizon < 1:
        parser.error("--steps and --horizon must be >= 1")
    return args


def lqr_gain(A, B, Q, R, QN, horizon):
    """First gain K_0 of the finite-horizon LQR, u_0 = -K_0 x_0 (backward Riccati recursion)."""
    P = QN
    K = np.zeros((B.shape[1], A.shape[0]))
    for _ in range(horizon):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        P = Q + A.T @ P @ A - A.T @ P @ B @ K
        P = 0.5 * (P + P.T)
    return K


def first_input_bound_rows(m):
    """Rows of C (and of l, u) that bound u_0, in the order of ``m.u0_cols``.

    Read from the structure of C: a bound row of input j is a row whose only nonzero is a 1 in
    column ``u0_cols[j]``.
    """
    C = m.problem.C.tocsr()
    nnz_per_row = np.diff(C.indptr)
    rows = []
    for col in m.u0_cols:
        hits = [i for i in np.flatnonzero(C[:, col].toarray().ravel())
                if nnz_per_row[i] == 1 and C[i, col] == 1.0]
        if len(hits) != 1:
            raise RuntimeError(f"expected one bound row for column {col}, found {hits}")
        rows.append(hits[0])
    return np.asarray(rows)


def run_loop(m, steps, u_rows):
    """Closed loop: solve, read u0 and its sensitivities, apply u0 to the plant."""
    p = m.problem
    solver = Solver(p, eps_abs=1e-10)
    b = p.b.copy()
    x = m.x0.copy()
    log = {k: [] for k in ("x", "u", "gain", "du_dumax", "du_dumin", "all_inactive",
                           "sat_hi", "sat_lo", "nit", "nfact", "time")}
    for _ in range(steps):
        b[m.x0_rows] = x
        solver.update(b=b)
        t0 = time.perf_counter()
        r = solver.solve()
        if not r.success:
            raise RuntimeError(f"MPC QP not solved: {r.status.name} ({r.message})")
        u0 = r.x[m.u0_cols]
        gain = r.jacobian(wrt="b", index=m.x0_rows)[m.u0_cols]   # (nu, nx)
        du_dumax = np.diag(r.jacobian(wrt="u", index=u_rows)[m.u0_cols])
        du_dumin = np.diag(r.jacobian(wrt="l", index=u_rows)[m.u0_cols])
        log["time"].append(time.perf_counter() - t0)
        cx = p.C @ r.x
        gap = np.minimum(cx - p.l, p.u - cx)
        log["all_inactive"].append(bool(np.all(np.abs(r.z) <= ACTIVE_TOL) and np.all(gap > MARGIN)))
        log["sat_hi"].append(r.z[u_rows] > ACTIVE_TOL)
        log["sat_lo"].append(r.z[u_rows] < -ACTIVE_TOL)
        for key, val in (("x", x.copy()), ("u", u0), ("gain", gain), ("du_dumax", du_dumax),
                         ("du_dumin", du_dumin), ("nit", r.nit), ("nfact", r.n_factorizations)):
            log[key].append(val)
        x = m.Ad @ x + m.Bd @ u0
    log["x"].append(x)
    return {k: np.asarray(v) for k, v in log.items()}


def check(log, K0):
    """LQR agreement on unconstrained steps, collapse of saturated gain rows."""
    free = log["all_inactive"]
    lqr_diff = (float(np.max(np.abs(log["gain"][free] + K0[None])))
                if free.any() else float("nan"))
    sat = log["sat_hi"] | log["sat_lo"]                       # (steps, nu)
    sat_rows = log["gain"][sat]                               # gain rows of saturated inputs
    sat_gain = float(np.max(np.abs(sat_rows))) if sat.any() else float("nan")
    bound_sens = np.where(log["sat_hi"], log["du_dumax"], np.where(log["sat_lo"], log["du_dumin"],
                                                                   np.nan))
    bound_err = float(np.nanmax(np.abs(bound_sens - 1.0))) if sat.any() else float("nan")
    return {"n_free": int(free.sum()), "lqr_diff": lqr_diff, "n_sat": int(sat.sum()),
            "sat_gain": sat_gain, "bound_err": bound_err}


def plot(m, log, K0, u_bound, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = log["u"].shape[0]
    t = np.arange(steps)
    npos = m.nx // 2
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    ax = axes[0]
    for i in range(npos):
        ax.plot(np.arange(steps + 1), log["x"][:, i], label=f"position {i + 1}")
    ax.set_ylabel("state")
    ax.set_title("closed-loop trajectory")
    ax.legend(fontsize=7, ncol=min(npos, 4))
    ax = axes[1]
    for j in range(m.nu):
        ax.step(t, log["u"][:, j], where="post", label=f"u{j + 1}")
    ax.axhline(u_bound, color="k", ls=":", lw=0.8)
    ax.axhline(-u_bound, color="k", ls=":", lw=0.8)
    ax.set_ylabel("applied input u0")
    ax.legend(fontsize=7, ncol=m.nu)
    ax = axes[2]
    norms = np.linalg.norm(log["gain"], axis=2)                 # (steps, nu)
    for j in range(m.nu):
        line, = ax.plot(t, norms[:, j], marker=".", label=f"||d u{j + 1} / d x0||")
        ax.axhline(np.linalg.norm(K0[j]), color=line.get_color(), ls="--", lw=0.8)
    free = log["all_inactive"]
    ax.fill_between(t, 0, 1, where=free, transform=ax.get_xaxis_transform(), color="0.9",
                    step="mid", label="no active constraint")
    ax.set_ylabel("gain row norm")
    ax.set_xlabel("step")
    ax.set_title("sensitivity of u0 to x0 (dashed: finite-horizon LQR gain); saturated input -> 0")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    m = mpc_qp(nx=args.nx, nu=args.nu, horizon=args.horizon, seed=args.seed,
               u_bound=args.u_bound, x_bound=args.x_bound)
    u_rows = first_input_bound_rows(m)
    K0 = lqr_gain(m.Ad, m.Bd, m.Q, m.R, m.QN, m.horizon)
    log = run_loop(m, args.steps, u_rows)
    res = check(log, K0)
    plot(m, log, K0, args.u_bound, args.out)
    p = m.problem
    print(f"MPC of {m.nx // 2} oscillating masses: nx={m.nx}, nu={m.nu}, horizon={m.horizon}, "
          f"QP n={p.n}, {p.n_eq} equalities, {p.n_in} inequalities")
    print(f"closed loop: {args.steps} steps, |x| {np.linalg.norm(log['x'][0]):.3f} -> "
          f"{np.linalg.norm(log['x'][-1]):.3e}; warm-started solves: mean {np.mean(log['nit']):.1f}"
          f" iterations, {np.mean(log['nfact']):.1f} factorizations, "
          f"{1e3 * np.mean(log['time']):.1f} ms (solve + derivatives)")
    print(f"first input bound rows of C: {u_rows.tolist()}")
    if res["n_free"]:
        print(f"unconstrained steps: {res['n_free']} of {args.steps}; "
              f"LQR check max |du0/dx0 + K_0| = {res['lqr_diff']:.3e}")
    else:
        print(f"unconstrained steps: 0 of {args.steps}; LQR check skipped (run more --steps)")
    if res["n_sat"]:
        print(f"saturated inputs: {res['n_sat']} (step, input) pairs; max |gain row| of "
              f"saturated inputs = {res['sat_gain']:.3e}; max |du0_i/d(bound_i) - 1| = "
              f"{res['bound_err']:.3e}")
    else:
        print("saturated inputs: none (raise the initial state or lower --u-bound)")
    print(f"figure saved to {args.out} ({time.perf_counter() - t_start:.2f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
