"""Torch-layer benchmark: forward + backward of a batch of MPC layers, sparseqp against peers.

    python benchmarks/bench_torch.py --quick
    python benchmarks/bench_torch.py                      # n 100 1000 5000 20000, batch 1 8 64
    python benchmarks/bench_torch.py --sizes 1000 --batches 8 --solvers sparseqp proxsuite
    python benchmarks/bench_torch.py --big                # + a ~1M-variable training run

The layer: the oscillating-masses MPC of :func:`sparseqp.problems.mpc_qp` (nx = 10, nu = 5,
horizon ~ n / 15), batch elements differing in the initial state x0 (the first nx entries of b),
loss = sum_k w'x_k with a fixed random w, gradient with respect to x0 (b) only. Each
configuration (solver, n, batch) runs in its own child process (so that its peak RSS is its own
and a time cap can stop it): two calls, the second with new initial states (a training step:
layers that keep state may warm-start). Columns:

    fwd1 (s)     first forward call (includes any per-layer setup done lazily)
    fwd (s)      second forward call
    bwd (s)      backward of the second call
    peak MB      peak resident set size of the child process (VmHWM; includes the ~250 MB of
                 the interpreter with torch imported)
    +MB          peak RSS minus the RSS just before the first call (the layer's own memory)
    err x        max |x - x_sparseqp| over the batch (second call), the peers' accuracy check

Solvers (each where installed): sparseqp (pattern-fixed QPLayer: values + vectors),
sparseqp-coo (QPLayer on torch sparse COO tensors), sparseqp-dense (dense tensors, small n only),
sparseqp-pool (pattern-fixed, n_jobs=-1: the batch on sparseqp.batch's worker pool; only when
named in --solvers), proxsuite (proxsuite.torch.qplayer.QPFunction, dense), qpth (dense,
G x <= h form, one torch thread), cvxpylayers (CvxpyLayer with x0 as the parameter), osqp
(osqp.nn.torch.OSQP, sparse values), dqp (dqp.dQP_layer, sparse CSC, OSQP inside; unbatched for
sparse input, so the batch is a loop over one layer per element, since a layer keeps the state
of its last solve). Dense peers are skipped where the dense data would exceed --dense-mem-gb; a
solver that hits the time cap is not run at larger n for the same batch size.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp

NX, NU = 10, 5
DEFAULT_SIZES = (100, 1000, 5000, 20000)
DEFAULT_BATCHES = (1, 8, 64)
QUICK = dict(sizes=(100, 1000), batches=(1, 8))
SOLVERS = ("sparseqp", "sparseqp-coo", "sparseqp-dense", "sparseqp-pool", "proxsuite", "qpth",
           "cvxpylayers", "osqp", "dqp")
DEFAULT_SOLVERS = tuple(s for s in SOLVERS if s != "sparseqp-pool")
PEER_MODULES = {"proxsuite": "proxsuite", "qpth": "qpth", "cvxpylayers": "cvxpylayers",
                "osqp": "osqp", "dqp": "dqp"}
DENSE = {"sparseqp-dense", "proxsuite", "qpth"}


# ---------------------------------------------------------------------------------------------
# the layer problem
# ---------------------------------------------------------------------------------------------
def horizon_for(n: int) -> int:
    return max(1, round((n - NX) / (NX + NU)))


def mpc_batch(n: int, batch: int, seed: int):
    """(problem, b0 (batch, n_eq), b1 (batch, n_eq), w (n,)): two batches of initial states."""
    from sparseqp.problems import mpc_qp

    m = mpc_qp(NX, NU, horizon_for(n), seed=seed)
    p = m.problem
    rng = np.random.default_rng(seed)

    def states():
        b = np.tile(p.b, (batch, 1))
        b[:, m.x0_rows] = m.x0 + 0.3 * rng.standard_normal((batch, NX))
        return b
    return p, states(), states(), rng.standard_normal(p.n)


def dense_bytes(p, batch: int) -> int:
    return 8 * batch * (p.n * p.n + (p.n_eq + 2 * p.n_in) * p.n)


# ---------------------------------------------------------------------------------------------
# adapters: make(p, eps) -> call(b_tensor) returning x (batch, n), differentiable w.r.t. b
# ---------------------------------------------------------------------------------------------
def _t(a):
    import torch
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def make_sparseqp(p, eps):
    from sparseqp.torch import QPLayer

    layer = QPLayer(H=p.H, A=p.A, C=p.C, eps_abs=eps)
    Hv, Av, Cv = (_t(M.data) for M in (p.H, p.A, p.C))
    g, l, u = _t(p.g), _t(p.l), _t(p.u)
    return lambda b: layer(Hv, g, Av, b, Cv, l, u)


def _coo(M):
    import torch
    c = M.tocoo()
    idx = torch.as_tensor(np.vstack([c.row, c.col]), dtype=torch.int64)
    return torch.sparse_coo_tensor(idx, _t(c.data), c.shape, check_invariants=False).coalesce()


def make_sparseqp_pool(p, eps):
    from sparseqp.torch import QPLayer

    layer = QPLayer(H=p.H, A=p.A, C=p.C, eps_abs=eps, n_jobs=-1)
    Hv, Av, Cv = (_t(M.data) for M in (p.H, p.A, p.C))
    g, l, u = _t(p.g), _t(p.l), _t(p.u)
    return lambda b: layer(Hv, g, Av, b, Cv, l, u)


def make_sparseqp_coo(p, eps):
    from sparseqp.torch import QPLayer

    layer = QPLayer(eps_abs=eps)
    H, A, C = (_coo(M) for M in (p.H, p.A, p.C))
    g, l, u = _t(p.g), _t(p.l), _t(p.u)
    return lambda b: layer(H, g, A, b, C, l, u)


def make_sparseqp_dense(p, eps):
    from sparseqp.torch import QPLayer

    layer = QPLayer(eps_abs=eps)
    H, A, C = (_t(M.toarray()) for M in (p.H, p.A, p.C))
    g, l, u = _t(p.g), _t(p.l), _t(p.u)
    return lambda b: layer(H, g, A, b, C, l, u)


def make_proxsuite(p, eps):
    from proxsuite.torch.qplayer import QPFunction

    fn = QPFunction(eps=eps)
    H, A, C = (_t(M.toarray()) for M in (p.H, p.A, p.C))
    g, l, u = _t(p.g), _t(p.l), _t(p.u)
    return lambda b: fn(H, g, A, b, C, l, u)[0]


def make_qpth(p, eps):
    import torch
    from qpth.qp import QPFunction

    fn = QPFunction(verbose=-1, eps=eps, maxIter=50)
    H, A, C = (_t(M.toarray()) for M in (p.H, p.A, p.C))
    G = torch.cat([C, -C])
    h = torch.cat([_t(p.u), -_t(p.l)])
    g = _t(p.g)
    return lambda b: fn(H, g, G, h, A, b)


def make_cvxpylayers(p, eps):
    import cvxpy as cp
    from cvxpylayers.torch import CvxpyLayer

    x = cp.Variable(p.n)
    x0 = cp.Parameter(NX)
    cons = [p.A[:NX] @ x == x0, p.A[NX:] @ x == p.b[NX:], p.C @ x <= p.u, p.C @ x >= p.l]
    obj = 0.5 * cp.quad_form(x, cp.psd_wrap(p.H)) + p.g @ x
    layer = CvxpyLayer(cp.Problem(cp.Minimize(obj), cons), parameters=[x0], variables=[x])
    return lambda b: layer(b[:, :NX])[0]    # its own default solver and tolerance


def make_osqp(p, eps):
    import torch
    from osqp.nn.torch import OSQP

    # osqp.nn's backward returns dP on the pattern it is given: pass the full symmetric H
    P = p.H.tocoo()
    Af = sp.vstack([p.A, p.C]).tocoo()
    layer = OSQP((P.row, P.col), P.shape, (Af.row, Af.col), Af.shape, eps_abs=eps, eps_rel=0.0,
                 max_iter=100000)
    Pv, Av, g = _t(P.data), _t(Af.data), _t(p.g)
    l, u = _t(p.l), _t(p.u)

    def call(b):
        k = b.shape[0]
        return layer(Pv, g, Av, torch.cat([b, l.expand(k, -1)], 1),
                     torch.cat([b, u.expand(k, -1)], 1))
    return call


def make_dqp(p, eps):
    import torch
    from dqp import dQP

    settings = dQP.build_settings(solve_type="sparse", qp_solver="osqp",
                                  lin_solver="scipy SPLU", eps_abs=eps)
    layers = []   # one per batch element: a dQP_layer keeps the state of its last solve

    def layer(k):
        while len(layers) <= k:
            layers.append(dQP.dQP_layer(settings=settings))
        return layers[k]

    def csc(M):
        M = sp.csc_matrix(M)
        return torch.sparse_csc_tensor(torch.as_tensor(M.indptr), torch.as_tensor(M.indices),
                                       _t(M.data), size=M.shape)
    H, A, G = csc(p.H), csc(p.A), csc(sp.vstack([p.C, -p.C]))
    h = torch.cat([_t(p.u), -_t(p.l)])
    g = _t(p.g)
    return lambda b: torch.stack([layer(k)(H, g, G, h, A, b[k])[0].reshape(-1)
                                  for k in range(b.shape[0])])


MAKERS = {"sparseqp": make_sparseqp, "sparseqp-coo": make_sparseqp_coo,
          "sparseqp-pool": make_sparseqp_pool,
          "sparseqp-dense": make_sparseqp_dense, "proxsuite": make_proxsuite,
          "qpth": make_qpth, "cvxpylayers": make_cvxpylayers, "osqp": make_osqp,
          "dqp": make_dqp}


# ---------------------------------------------------------------------------------------------
# one configuration, in a child process
# ---------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MB (VmRSS: now, VmHWM: peak of this process).

    (ru_maxrss would carry the parent's peak across the child's exec on Linux.)
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    return _status_mb("VmHWM")


def run_config(solver: str, n: int, batch: int, eps: float, seed: int) -> dict:
    """Two training steps of one layer; returns the timings (runs in the child)."""
    import torch

    # qpth's batched LU fails with more than one torch thread in this environment (torch's MKL
    # next to the pip "mkl" package that libdqp's dependencies install: DLASWP errors, invalid
    # pivots); it runs single-threaded
    torch.set_num_threads(1 if solver == "qpth" else max(1, os.cpu_count() or 1))
    warnings.simplefilter("ignore")
    p, b0, b1, w = mpc_batch(n, batch, seed)
    call = MAKERS[solver](p, eps)
    wt = _t(w)
    out = {"n": p.n, "nnz": int(p.H.nnz + p.A.nnz + p.C.nnz)}
    rss0 = _rss_mb()
    for step, b in enumerate((b0, b1)):
        bt = _t(b).requires_grad_()
        t0 = time.perf_counter()
        x = call(bt)
        t1 = time.perf_counter()
        (x @ wt).sum().backward()
        t2 = time.perf_counter()
        out[f"fwd{step}"], out[f"bwd{step}"] = t1 - t0, t2 - t1
    out["x"] = x.detach().numpy()
    out["peak_mb"] = _peak_mb()
    out["delta_mb"] = max(0.0, out["peak_mb"] - rss0)
    return out


def _child(conn, solver, n, batch, eps, seed):
    devnull = os.open(os.devnull, os.O_WRONLY)   # peers' C libraries print (MKL, solvers)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        conn.send(("ok", run_config(solver, n, batch, eps, seed)))
    except BaseException as exc:  # report any failure of a peer as its status
        first = str(exc).splitlines()[0][:80] if str(exc) else ""
        conn.send(("error", f"{type(exc).__name__}: {first}"))
    finally:
        conn.close()


def run_isolated(solver, n, batch, eps, seed, time_cap) -> tuple[str, dict]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, solver, n, batch, eps, seed))
    proc.start()
    child.close()
    if parent.poll(time_cap):
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = "error", "child died"
        proc.join(30)
    else:
        proc.kill()
        proc.join()
        return "timeout", {}
    if proc.is_alive():
        proc.kill()
    if status == "ok":
        return "ok", payload
    return str(payload), {}


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
HEADER = (f"{'n':>7} {'batch':>5} {'solver':<15} {'fwd1 (s)':>9} {'fwd (s)':>9} {'bwd (s)':>9} "
          f"{'peak MB':>8} {'+MB':>7} {'err x':>8}  status")


def fmt_row(n, batch, solver, status, r, ref):
    if status != "ok":
        dash = "-"
        return (f"{n:>7} {batch:>5} {solver:<15} {dash:>9} {dash:>9} {dash:>9} {dash:>8} "
                f"{dash:>7} {dash:>8}  {status}")
    err = "-"
    if ref is not None and solver != "sparseqp":
        err = f"{float(np.max(np.abs(r['x'] - ref))):.1e}"
    return (f"{n:>7} {batch:>5} {solver:<15} {r['fwd0']:>9.4f} {r['fwd1']:>9.4f} {r['bwd1']:>9.4f} "
            f"{r['peak_mb']:>8.0f} {r['delta_mb']:>7.0f} {err:>8}  ok")


def available(solver: str) -> bool:
    mod = PEER_MODULES.get(solver)
    return mod is None or importlib.util.find_spec(mod) is not None


def skip_reason(solver, n, batch, args, timed_out) -> str | None:
    if (solver, batch) in timed_out:
        return "skipped after timeout at a smaller n"
    if solver == "sparseqp-dense" and n > args.dense_max_n:
        return f"skipped (dense sparseqp only up to n = {args.dense_max_n})"
    if solver in DENSE:
        from sparseqp.problems import mpc_qp

        p = mpc_qp(NX, NU, horizon_for(n)).problem
        gb = dense_bytes(p, batch if solver == "qpth" else 1) / 2 ** 30
        if gb > args.dense_mem_gb:
            return f"skipped (dense data ~{gb:.1f} GB > {args.dense_mem_gb} GB)"
    return None


def run_table(args) -> list:
    solvers = [s for s in args.solvers if available(s)]
    missing = [s for s in args.solvers if not available(s)]
    if missing:
        print(f"# not installed: {' '.join(missing)}")
    print(HEADER)
    records, timed_out = [], set()
    for n in args.sizes:
        for batch in args.batches:
            ref = None
            for solver in solvers:
                why = skip_reason(solver, n, batch, args, timed_out)
                if why:
                    status, r = why, {}
                else:
                    status, r = run_isolated(solver, n, batch, args.eps_abs, args.seed,
                                             args.time_cap)
                if status == "timeout":
                    timed_out.add((solver, batch))
                    status = f"timeout ({args.time_cap:.0f} s cap)"
                if solver == "sparseqp" and status == "ok":
                    ref = r["x"]
                print(fmt_row(r.get("n", n), batch, solver, status, r, ref), flush=True)
                records.append({"n": r.get("n", n), "batch": batch, "solver": solver,
                                 "status": status, **{k: v for k, v in r.items() if k != "x"}})
    return records


# ---------------------------------------------------------------------------------------------
# the ~1M-variable training run (--big)
# ---------------------------------------------------------------------------------------------
def run_big(args) -> dict:
    """A few gradient steps on the linear cost g of a long-horizon MPC layer (pattern-fixed).

    Loss: |x - x_ref|^2 with x_ref the solution for the opposite initial state, so the layer
    learns a linear cost that steers towards it (plain SGD; the step must stay below ~2 / the
    curvature, ~0.01 here since R = 0.1 I). Prints the time per step and the peak RSS.
    """
    import torch
    from sparseqp.problems import mpc_qp
    from sparseqp.torch import QPLayer

    nx, nu, N = args.big_nx, args.big_nu, args.big_horizon
    t0 = time.perf_counter()
    m = mpc_qp(nx, nu, N, seed=args.seed)
    p = m.problem
    t_build = time.perf_counter() - t0
    print(f"# big: mpc_qp(nx={nx}, nu={nu}, horizon={N}): n={p.n} n_eq={p.n_eq} n_in={p.n_in} "
          f"nnz(H, A, C)=({p.H.nnz}, {p.A.nnz}, {p.C.nnz}); built in {t_build:.1f} s; "
          f"RSS {_rss_mb():.0f} MB", flush=True)
    t0 = time.perf_counter()
    layer = QPLayer(H=p.H, A=p.A, C=p.C, eps_abs=args.eps_abs)
    print(f"# big: layer built (patterns) in {time.perf_counter() - t0:.1f} s", flush=True)
    Hv, Av, Cv = (_t(M.data) for M in (p.H, p.A, p.C))
    b, l, u = _t(p.b), _t(p.l), _t(p.u)
    b_ref = b.clone()
    b_ref[:nx] = -b_ref[:nx]
    x_ref = layer(Hv, _t(p.g), Av, b_ref, Cv, l, u).detach()
    layer.reset()
    g = torch.zeros(p.n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([g], lr=args.big_lr)
    print(f"{'step':>4} {'loss':>12} {'fwd (s)':>9} {'bwd (s)':>9} {'iter':>5} {'fact':>5} "
          f"{'symb':>5} {'peak RSS MB':>12}", flush=True)
    steps = []
    for k in range(args.big_steps):
        opt.zero_grad()
        t0 = time.perf_counter()
        x = layer(Hv, g, Av, b, Cv, l, u)
        t1 = time.perf_counter()
        loss = ((x - x_ref) ** 2).sum()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        info = layer.last_info
        row = {"step": k, "loss": loss.item(), "fwd": t1 - t0, "bwd": t2 - t1,
               "iter": int(info["iterations"]), "fact": int(info["n_factorizations"]),
               "symb": int(info["n_symbolic"]), "peak_mb": _peak_mb()}
        steps.append(row)
        print(f"{k:>4} {row['loss']:>12.6e} {row['fwd']:>9.2f} {row['bwd']:>9.2f} "
              f"{row['iter']:>5} {row['fact']:>5} {row['symb']:>5} {row['peak_mb']:>12.0f}",
              flush=True)
    return {"n": p.n, "n_eq": p.n_eq, "n_in": p.n_in, "steps": steps}


# ---------------------------------------------------------------------------------------------
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                    help="approximate numbers of variables n (MPC horizon ~ n / 15)")
    ap.add_argument("--batches", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    ap.add_argument("--solvers", nargs="+", default=list(DEFAULT_SOLVERS), choices=SOLVERS,
                    help="default: all but sparseqp-pool")
    ap.add_argument("--quick", action="store_true", help="n 100 1000, batch 1 8")
    ap.add_argument("--eps-abs", type=float, default=1e-6, help="every solver's tolerance")
    ap.add_argument("--time-cap", type=float, default=120.0,
                    help="seconds per configuration (child process killed after)")
    ap.add_argument("--dense-mem-gb", type=float, default=4.0,
                    help="skip dense peers whose dense data would exceed this")
    ap.add_argument("--dense-max-n", type=int, default=500,
                    help="largest n for sparseqp-dense (every entry of a dense input is a "
                         "parameter, so its KKT matrix is dense)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-table", action="store_true", help="skip the comparison table")
    ap.add_argument("--big", action="store_true",
                    help="also run the ~1M-variable pattern-fixed training run (minutes, GBs)")
    ap.add_argument("--big-nx", type=int, default=20)
    ap.add_argument("--big-nu", type=int, default=10)
    ap.add_argument("--big-horizon", type=int, default=33000)
    ap.add_argument("--big-steps", type=int, default=3)
    ap.add_argument("--big-lr", type=float, default=0.005)
    ap.add_argument("--json", help="write the records to this file")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.batches = list(QUICK["sizes"]), list(QUICK["batches"])
    return args


def versions() -> str:
    out = []
    for name in ("sparseqp", "torch", "proxsuite", "qpth", "cvxpylayers", "osqp", "dqp"):
        try:
            mod = __import__(name)
            out.append(f"{name} {getattr(mod, '__version__', '?')}")
        except Exception:
            pass
    return "  ".join(out)


def main(argv=None):
    args = parse_args(argv)
    print(f"# bench_torch  {time.strftime('%Y-%m-%dT%H:%M:%S')}  cpus={os.cpu_count()}  "
          f"eps_abs={args.eps_abs}  time cap {args.time_cap:.0f} s  {platform.machine()}")
    print(f"# {versions()}")
    result = {"args": vars(args), "versions": versions()}
    if not args.no_table:
        result["table"] = run_table(args)
    if args.big:
        result["big"] = run_big(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=float)


if __name__ == "__main__":
    sys.exit(main())
