"""The ``sparseqp`` command line."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main"]


def _demo(args) -> int:
    from . import Solver
    from .problems import mpc_qp

    t0 = time.perf_counter()
    mpc = mpc_qp(nx=args.nx, nu=args.nu, horizon=args.horizon, seed=args.seed)
    p = mpc.problem
    print(f"sparseqp demo: linear MPC, {mpc.nx // 2} oscillating masses, nx={mpc.nx}, "
          f"nu={mpc.nu}, horizon={mpc.horizon}")
    print(f"  QP: n={p.n} variables, {p.n_eq} equalities, {p.n_in} inequalities, "
          f"nnz(H)={p.H.nnz}, nnz(A)={p.A.nnz}, nnz(C)={p.C.nnz}  (built in "
          f"{time.perf_counter() - t0:.3f} s)")
    solver = Solver(p, eps_abs=args.eps_abs)
    r = solver.solve()
    n_active = int(np.count_nonzero(r.z))
    print(f"  status      : {r.status.name}  ({r.message})")
    print(f"  objective   : {r.fun:.10g}")
    print(f"  residuals   : primal {r.prim_res:.2e}, dual {r.dual_res:.2e} (eps_abs {args.eps_abs:g})")
    print(f"  iterations  : {r.nit} outer, {r.n_newton} Newton, {r.n_factorizations} numeric "
          f"factorizations, {r.n_symbolic} symbolic")
    print(f"  active rows : {n_active} of {p.n_in}")
    print(f"  time        : setup {r.setup_time:.3f} s, solve {r.solve_time:.3f} s")
    u0 = r.x[mpc.u0_cols]
    print(f"  first control u0 = {np.array2string(u0, precision=4)}")
    jac = getattr(r, "jacobian", None)
    if jac is not None:
        _demo_sensitivity(mpc, solver, r)
    return 0 if r.success else 1


def _demo_sensitivity(mpc, solver, r):
    from . import Solver

    t0 = time.perf_counter()
    J = r.jacobian(wrt="b", index=mpc.x0_rows)[mpc.u0_cols]  # (nu, nx): d u0 / d x0
    t_jac = time.perf_counter() - t0
    # central finite differences through fresh solves
    h = 1e-6
    fd = np.zeros_like(J)
    for j in range(mpc.nx):
        e = np.zeros(mpc.nx)
        e[j] = h
        rp = Solver(mpc.with_x0(mpc.x0 + e), eps_abs=1e-11).solve()
        rm = Solver(mpc.with_x0(mpc.x0 - e), eps_abs=1e-11).solve()
        fd[:, j] = (rp.x[mpc.u0_cols] - rm.x[mpc.u0_cols]) / (2 * h)
    err = float(np.max(np.abs(J - fd)))
    print(f"  sensitivity d u0 / d x0 ({J.shape[0]} x {J.shape[1]}) in {t_jac * 1e3:.1f} ms "
          f"through the forward factorization:")
    with np.printoptions(precision=3, suppress=True, linewidth=110):
        print("   ", str(J).replace("\n", "\n    "))
    print(f"  check against central finite differences: max |J - J_fd| = {err:.2e}")


def _build_parser():
    parser = argparse.ArgumentParser(prog="sparseqp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="solve a built-in sparse MPC problem and its sensitivities")
    d.add_argument("--nx", type=int, default=20)
    d.add_argument("--nu", type=int, default=10)
    d.add_argument("--horizon", type=int, default=100)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--eps-abs", type=float, default=1e-8)
    d.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:
        print(f"sparseqp: error: {exc}", file=sys.stderr)
        return 2
