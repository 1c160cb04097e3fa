"""Backward (VJP) time versus forward time on MPC problems, through the forward factorization.

    python benchmarks/bench_backward.py                 # n from ~1,000 to ~120,000
    python benchmarks/bench_backward.py --horizons 40000 --nx 20 --nu 10   # n = 1.2M (slow)

Prints per problem: n, forward time, numeric factorizations of the forward, backward time,
backward/forward ratio, factorizations and symbolic analyses in the backward, refinement steps
and residual reached, peak RSS, and the gradient check |<J'v, d> - <v, J d>| (adjoint identity
between the VJP and the JVP).
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

import sparseqp
from sparseqp.problems import mpc_qp


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(nx, nu, horizon, seed=0, eps_abs=1e-8):
    m = mpc_qp(nx=nx, nu=nu, horizon=horizon, seed=seed)
    p = m.problem
    t0 = time.perf_counter()
    solver = sparseqp.Solver(p, eps_abs=eps_abs)
    r = solver.solve()
    t_fw = time.perf_counter() - t0
    kkt = solver._kkt
    sym0 = kkt.n_symbolic
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(p.n)
    t0 = time.perf_counter()
    g = r.vjp(dx=v)
    t_bw = time.perf_counter() - t0
    sym_bw = kkt.n_symbolic - sym0
    # adjoint identity on a direction in (g, b)
    dg = rng.standard_normal(p.n)
    db = rng.standard_normal(p.n_eq)
    t = r.jvp(dg=dg, db=db)
    lhs = float(v @ t.x)
    rhs = float(g.g @ dg + g.b @ db)
    return {
        "n": p.n, "status": r.status.name, "forward_s": t_fw, "fw_fact": r.n_factorizations,
        "backward_s": t_bw, "ratio": t_bw / t_fw, "bw_fact": g.info["n_factorizations"],
        "bw_symbolic": sym_bw, "refine": g.info["n_refine"], "residual": g.info["residual"],
        "adjoint_err": abs(lhs - rhs) / max(abs(lhs), 1e-300), "peak_rss_mb": _peak_rss_mb(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nx", type=int, default=20)
    ap.add_argument("--nu", type=int, default=10)
    ap.add_argument("--horizons", type=int, nargs="+", default=[33, 100, 330, 1000, 4000])
    args = ap.parse_args(argv)
    cols = ["n", "status", "forward_s", "fw_fact", "backward_s", "ratio", "bw_fact",
            "bw_symbolic", "refine", "residual", "adjoint_err", "peak_rss_mb"]
    print(" ".join(f"{c:>12}" for c in cols))
    for N in args.horizons:
        row = run_one(args.nx, args.nu, N)
        out = []
        for c in cols:
            v = row[c]
            out.append(f"{v:>12.3g}" if isinstance(v, float) else f"{v!s:>12}")
        print(" ".join(out), flush=True)


if __name__ == "__main__":
    main()
