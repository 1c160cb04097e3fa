"""Backward (reverse mode) of sparseqp against the peers' backward passes: same QPs, same dL/dx.

    python benchmarks/bench_backward_peers.py --quick            # n ~ 300 and ~1,000 (~1 min)
    python benchmarks/bench_backward_peers.py                    # n ~ 1,000, 3,200, 10,000
    python benchmarks/bench_backward_peers.py --sizes 3200 --solvers sparseqp osqp --json out.json

Problems: MPC (``sparseqp.problems.mpc_qp``, oscillating masses, nx = 10, nu = 5, horizon ~ n/15:
state and input bounds, degenerate active set), and at the smaller sizes a random feasible QP
(``random_qp``, banded) and a portfolio QP (``portfolio_qp``). Loss ``L = v'x`` with a fixed
seeded random ``v = dL/dx``.

Solvers and their backward:

- ``sparseqp``: ``r = sparseqp.solve(...)``, ``r.vjp(dx=v)`` (through the forward factorization);
- ``osqp``: ``OSQP.setup/solve`` (polishing on), ``adjoint_derivative_compute(dx=v)`` then
  ``adjoint_derivative_get_mat`` / ``get_vec`` (A and C stacked, ``l = u = b`` on the equality
  rows; gradients split back);
- ``proxsuite``: ``proxsuite.torch.qplayer.QPFunction`` (dense ProxQP and its dense backward
  ``compute_backward``), torch autograd on dense float64 tensors, ``eps_backward = eps_abs`` and
  ``rho_backward = mu_backward = 1e-10`` (its defaults 1e-4 and 1e-6 leave ~4e-5 relative
  error);
- ``qpth``: ``qpth.qp.QPFunction`` (dense batched PDIPM), ``G x <= h`` with ``G = [C_u; -C_l]``
  over the finite sides of the bounds (``dL/du = dL/dh`` on the upper rows, ``dL/dl = -dL/dh``
  on the lower rows);
- ``dqp``: ``dqp.dQP.dQP_layer`` (libdqp; sparse CSC tensors, OSQP inside, reduced KKT on the
  active set solved with its default sparse solver, SciPy's SPLU), same ``G x <= h`` form;
  ``dqp-qdldl``: the same with ``lin_solver="qdldl"``. Only dL/dg, dL/db, dL/dl, dL/du: the
  backward to CSC matrix values fails in torch 2.13.

Measured per solver: forward time (solver setup + solve, or the layer's forward), backward time
(the VJP call(s) only), their ratio, factorizations where known, ``|x - x_sparseqp|_inf``, and the
relative gradient difference ``|G_peer - G_sparseqp| / |G_sparseqp|`` for g, b, l, u and, on the
input patterns, H (symmetric, per-entry gradient), A and C (the denominator is at least 1e-4 times
the problem's largest gradient norm, so that a gradient that is exactly zero, e.g. dL/du with no
active upper bound, is not compared relatively with rounding noise). A peer whose x differs from
sparseqp's by more than ``--x-tol`` (1e-6, relative) is marked "not converged". Every (forward,
backward) pair is a fresh run; times are the best of ``--repeat`` runs (a single run when it takes
more than ``--slow`` s). One torch thread; run with OPENBLAS_NUM_THREADS=1.
Where a peer disagrees with sparseqp by more than ``--agree`` (1e-5), a central finite difference
of ``L`` along the difference direction ``d = G_peer - G_sparseqp`` (forward solves with sparseqp
at eps_abs 1e-10, step 1e-5 relative) says whose directional derivative ``<G, d>`` is right,
or that the one-sided differences differ (a kink: not differentiable along d), or that the
perturbed problem is not SOLVED (e.g. dependent equality rows: the gradient is then defined only
up to a component along such directions). Peers call their own code; nothing is copied.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import platform
import sys
import time
import traceback

import numpy as np
import scipy.sparse as sp

import sparseqp
from sparseqp.problems import mpc_qp, portfolio_qp, random_qp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402  (benchmarks/ is not a package)

VEC = ("g", "b", "l", "u")
MAT = ("H", "A", "C")
PARAMS = ("g", "b", "l", "u", "H", "A", "C")
SOLVERS = ("sparseqp", "osqp", "proxsuite", "qpth", "dqp")
PEER_MODULES = {"osqp": "osqp", "proxsuite": "proxsuite", "qpth": "qpth", "dqp": "dqp"}
DENSE = ("proxsuite", "qpth")
BIG = 1e20   # stand-in for an infinite bound where a peer needs finite numbers


class Skip(Exception):
    """A solver is not run on a problem (printed as the reason)."""


# --------------------------------------------------------------------------------------------
# problems
# --------------------------------------------------------------------------------------------

def make_problems(sizes, seed, extra_max_n):
    """MPC at every size; random (banded) and portfolio at the sizes <= extra_max_n."""
    out = []
    for n in sizes:
        horizon = max(1, round((n - 10) / 15))
        out.append(("mpc", mpc_qp(nx=10, nu=5, horizon=horizon, seed=seed).problem))
    for n in sizes:
        if n <= extra_max_n:
            out.append(("random", random_qp(n, seed=seed, bandwidth=100)))
            out.append(("portfolio", portfolio_qp(max(1, round(n / 1.01)), seed=seed)))
    return out


def ineq_rows(p):
    """Finite sides of l <= Cx <= u as G x <= h: (rows_u, rows_l), G = [C[rows_u]; -C[rows_l]]."""
    ru = np.flatnonzero(np.isfinite(p.u))
    rl = np.flatnonzero(np.isfinite(p.l))
    return ru, rl


def g_h(p):
    ru, rl = ineq_rows(p)
    C = p.C.tocsr()
    G = sp.vstack([C[ru], -C[rl]], format="csc")
    h = np.concatenate([p.u[ru], -p.l[rl]])
    return G, h, ru, rl


def split_gh(p, dG, dh):
    """dL/dG, dL/dh of G = [C_u; -C_l], h = [u; -l] -> dL/dC, dL/dl, dL/du."""
    ru, rl = ineq_rows(p)
    du = np.zeros(p.n_in)
    dl = np.zeros(p.n_in)
    du[ru] = dh[: ru.size]
    dl[rl] = -dh[ru.size:]
    dC = None
    if dG is not None:
        dG = sp.csr_matrix(dG) if not sp.issparse(dG) else dG.tocsr()
        Pu = sp.csr_matrix((np.ones(ru.size), (ru, np.arange(ru.size))),
                           shape=(p.n_in, dG.shape[0]))
        Pl = sp.csr_matrix((np.ones(rl.size), (rl, ru.size + np.arange(rl.size))),
                           shape=(p.n_in, dG.shape[0]))
        dC = (Pu @ dG - Pl @ dG).tocsc()
    return dC, dl, du


# --------------------------------------------------------------------------------------------
# solvers: each run_<name>(p, v, eps) returns a dict
#   x, grads {param: vector / matrix (sparse or dense, full symmetric for H) / None},
#   fw (s), bw (s), fact (numeric factorizations, None if unknown), note
# --------------------------------------------------------------------------------------------

def run_sparseqp(p, v, eps):
    note = ""
    t0 = time.perf_counter()
    r = sparseqp.solve(p.H, p.g, p.A, p.b, p.C, p.l, p.u, eps_abs=eps, eps_rel=0)
    t1 = time.perf_counter()
    if not r.success:   # reported, then retried looser so that the peers can still be compared
        note = f"eps {100 * eps:g} (at {eps:g}: {r.status.name}); "
        t0 = time.perf_counter()
        r = sparseqp.solve(p.H, p.g, p.A, p.b, p.C, p.l, p.u, eps_abs=100 * eps, eps_rel=0)
        t1 = time.perf_counter()
    G = r.vjp(dx=v)
    t2 = time.perf_counter()
    grads = {"H": G.H, "g": G.g, "A": G.A, "b": G.b, "C": G.C, "l": G.l, "u": G.u}
    return {"x": r.x, "grads": grads, "fw": t1 - t0, "bw": t2 - t1, "status": r.status.name,
            "fact": f"{r.n_factorizations}+{G.info['n_factorizations']}",
            "note": note + f"refine {G.info['n_refine']} res {G.info['residual']:.1e}"}


def run_osqp(p, v, eps):
    import osqp

    P, Af, lo, hi = peers.osqp_data(p)
    t0 = time.perf_counter()
    s = osqp.OSQP()
    s.setup(P, p.g, Af, lo, hi, eps_abs=eps, eps_rel=0.0, max_iter=1_000_000, polishing=True,
            verbose=False)
    res = s.solve(raise_error=False)
    t1 = time.perf_counter()
    status = str(res.info.status)
    if res.info.status_val != osqp.SolverStatus.OSQP_SOLVED:
        raise RuntimeError(f"osqp status {status}")
    s.adjoint_derivative_compute(dx=v)
    dP, dA = s.adjoint_derivative_get_mat(as_dense=False, dP_as_triu=True)
    dq, dlo, dhi = s.adjoint_derivative_get_vec()
    t2 = time.perf_counter()
    dP = sp.csc_matrix((np.array(dP.x), np.array(dP.i), np.array(dP.p)), shape=P.shape)
    dA = sp.csc_matrix((np.array(dA.x), np.array(dA.i), np.array(dA.p)), shape=Af.shape).tocsr()
    # osqp's dP (upper triangle) holds the per-entry gradient -(r x' + x r')/2 at (i, j), i <= j
    # (checked by finite differences): mirror it to get sparseqp's full symmetric convention
    dP_full = (dP + sp.triu(dP, 1, format="csc").T).tocsc()
    me = p.n_eq
    grads = {"H": dP_full, "g": np.asarray(dq), "A": dA[:me], "C": dA[me:],
             "b": dlo[:me] + dhi[:me], "l": dlo[me:], "u": dhi[me:]}
    pol = {1: "polished", 0: "not polished", -1: "polish failed"}.get(res.info.status_polish, "")
    return {"x": res.x, "grads": grads, "fw": t1 - t0, "bw": t2 - t1, "status": status,
            "fact": None, "note": f"iter {res.info.iter}, {pol}"}


def _torch():
    import torch

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    return torch


PROXSUITE_BW_REG = 1e-10   # rho_backward = mu_backward (proxsuite's default 1e-6: ~4e-5 rel. error)


def run_proxsuite(p, v, eps):
    torch = _torch()
    from proxsuite.torch.qplayer import QPFunction

    def t(a):
        return torch.tensor(a.toarray() if sp.issparse(a) else np.asarray(a),
                            dtype=torch.float64, requires_grad=True)

    l = np.maximum(p.l, -BIG)
    u = np.minimum(p.u, BIG)
    args = [t(p.H), t(p.g), t(p.A), t(p.b), t(p.C), t(l), t(u)]
    fn = QPFunction(eps=eps, maxIter=100_000, eps_backward=eps, rho_backward=PROXSUITE_BW_REG,
                    mu_backward=PROXSUITE_BW_REG)
    t0 = time.perf_counter()
    x, _, _ = fn(*args)
    t1 = time.perf_counter()
    (x[0] @ torch.as_tensor(v)).backward()
    t2 = time.perf_counter()
    gH, gg, gA, gb, gC, gl, gu = (a.grad.numpy() for a in args)
    grads = {"H": gH, "g": gg, "A": gA, "b": gb, "C": gC, "l": gl, "u": gu}
    return {"x": x[0].detach().numpy(), "grads": grads, "fw": t1 - t0, "bw": t2 - t1,
            "status": "-", "fact": None, "note": "dense"}


def run_qpth(p, v, eps):
    torch = _torch()
    from qpth.qp import QPFunction

    G, h, _, _ = g_h(p)

    def t(a):
        return torch.tensor(a.toarray() if sp.issparse(a) else np.asarray(a),
                            dtype=torch.float64, requires_grad=True)

    args = [t(p.H), t(p.g), t(G), t(h), t(p.A), t(p.b)]
    fn = QPFunction(verbose=-1, eps=min(eps, 1e-12), maxIter=50)
    t0 = time.perf_counter()
    x = fn(*args)
    t1 = time.perf_counter()
    (x[0] @ torch.as_tensor(v)).backward()
    t2 = time.perf_counter()
    gH, gg, gG, gh, gA, gb = (a.grad.numpy() for a in args)
    dC, dl, du = split_gh(p, gG, gh)
    grads = {"H": gH, "g": gg, "A": gA, "b": gb, "C": dC, "l": dl, "u": du}
    return {"x": x[0].detach().numpy(), "grads": grads, "fw": t1 - t0, "bw": t2 - t1,
            "status": "-", "fact": None, "note": "dense PDIPM"}


def run_dqp(p, v, eps, lin_solver="scipy SPLU"):
    torch = _torch()
    import warnings

    from dqp import dQP

    G, h, _, _ = g_h(p)

    def csc(M):
        # dQP accepts CSC tensors only; their backward to CSC matrix values fails in torch 2.13
        # ("Sparse CSC tensors do not have is_contiguous"): gradients of g, h, b only
        M = sp.csc_matrix(M)
        M.sort_indices()
        return torch.sparse_csc_tensor(torch.as_tensor(M.indptr), torch.as_tensor(M.indices),
                                       torch.as_tensor(M.data), size=M.shape)

    def vec(a):
        return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)

    settings = dQP.build_settings(solve_type="sparse", qp_solver="osqp", lin_solver=lin_solver,
                                  eps_abs=eps, eps_rel=0.0)
    layer = dQP.dQP_layer(settings=settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Ht, Gt, At = csc(p.H), csc(G), csc(p.A)
    gt, ht, bt = vec(p.g), vec(h), vec(p.b)
    log = io.StringIO()   # dQP prints its least-squares fallback: kept for the note
    with contextlib.redirect_stdout(log):
        t0 = time.perf_counter()
        x = layer(Ht, gt, Gt, ht, At, bt)[0]
        t1 = time.perf_counter()
        (x.reshape(-1) @ torch.as_tensor(v)).backward()
        t2 = time.perf_counter()
    _, dl, du = split_gh(p, None, ht.grad.numpy())
    grads = {"H": None, "g": gt.grad.numpy(), "A": None, "b": bt.grad.numpy(), "C": None,
             "l": dl, "u": du}
    note = "dL/dH, dA, dC not available"
    text = log.getvalue()
    if "least-squares" in text:
        res = [ln.split(":")[-1].strip() for ln in text.splitlines() if "LSQ residual" in ln]
        why = "not quasi-definite" if "quasi-definite" in text else (
            "singular" if "singular" in text else "weakly active")
        note = f"KKT {why}: least-squares fallback, residual {res[0] if res else '?'}"
    return {"x": x.detach().numpy().reshape(-1), "grads": grads, "fw": t1 - t0, "bw": t2 - t1,
            "status": "-", "fact": None, "note": note}


RUNNERS = {"sparseqp": run_sparseqp, "osqp": run_osqp, "proxsuite": run_proxsuite,
           "qpth": run_qpth, "dqp": run_dqp}
RUNNERS["dqp-qdldl"] = lambda p, v, eps: run_dqp(p, v, eps, lin_solver="qdldl")


# --------------------------------------------------------------------------------------------
# comparison and finite differences
# --------------------------------------------------------------------------------------------

def pattern_values(M, ref):
    """Values of M (sparse or dense) at the stored positions of ref (COO order)."""
    c = ref.tocoo()
    if sp.issparse(M):
        return np.asarray(M.tocsr()[c.row, c.col]).ravel()
    return np.asarray(M)[c.row, c.col]


def flat(p, name, G):
    """A gradient as a flat vector: on the pattern for H, A, C; finite sides for l, u."""
    if G is None:
        return None
    if name in MAT:
        return pattern_values(G, getattr(p, name))
    G = np.asarray(G, dtype=np.float64).reshape(-1)
    if name in ("l", "u"):
        G = np.where(np.isfinite(getattr(p, name)), G, 0.0)
    return G


def rel_err(a, b, floor=0.0):
    """|b - a| / max(|a|, floor): floor = 1e-4 x the largest gradient norm of the problem, so
    that a gradient that is zero (dL/du with no active upper bound) compares rounding to it."""
    if a is None or b is None:
        return None
    den = max(np.linalg.norm(a), floor)
    num = np.linalg.norm(a - b)
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return float(num / den)


def perturbed(p, name, d, t):
    data = {k: getattr(p, k) for k in ("H", "g", "A", "b", "C", "l", "u")}
    base = data[name]
    if name in MAT:
        D = base.tocoo(copy=True)
        D.data = d
        data[name] = (base + t * D.tocsc()).tocsc()
    else:
        data[name] = base + t * np.where(np.isfinite(base), d, 0.0)
    return data


def loss_at(p, v, name, d, t, eps):
    q = perturbed(p, name, d, t)
    r = sparseqp.solve(q["H"], q["g"], q["A"], q["b"], q["C"], q["l"], q["u"],
                       eps_abs=eps, eps_rel=0)
    if r.status.name != "SOLVED":
        raise NotSolved(r.status.name)
    return float(v @ r.x)


class NotSolved(Exception):
    """A perturbed problem of the finite-difference check is not SOLVED."""


def fd_check(p, v, name, ours, peer, eps=1e-10, rel_step=1e-5):
    """Central and one-sided differences of L = v'x along d = peer - ours (flat, on pattern)."""
    d = peer - ours
    if name in ("l", "u"):
        d = np.where(p.l == p.u, 0.0, d)   # keep l <= u: rows with l == u are not moved
    dmax = np.max(np.abs(d))
    if dmax == 0.0:
        return None
    base = getattr(p, name)
    scale = np.max(np.abs(base.data if sp.issparse(base) else base[np.isfinite(base)]),
                   initial=1.0)
    t = rel_step * scale / dmax
    po, pp = float(ours @ d), float(peer @ d)
    try:
        L0 = loss_at(p, v, name, d, 0.0, eps)
        Lp = loss_at(p, v, name, d, t, eps)
        Lm = loss_at(p, v, name, d, -t, eps)
    except NotSolved as e:
        # e.g. dependent equality rows: moving b off their range makes the problem infeasible;
        # the gradients are then defined up to a component along such directions only
        return {"param": name, "step": t, "ours": po, "peer": pp,
                "verdict": f"perturbed problem {e}: not identifiable along d"}
    fd, fwd, bwd = (Lp - Lm) / (2 * t), (Lp - L0) / t, (L0 - Lm) / t
    gap = abs(pp - po)
    if abs(fwd - bwd) > 0.1 * gap:
        verdict = "kink (one-sided FDs differ: not differentiable along d)"
    elif abs(fd - po) <= 0.1 * gap:
        verdict = "sparseqp right"
    elif abs(fd - pp) <= 0.1 * gap:
        verdict = "peer right"
    else:
        verdict = "neither"
    return {"param": name, "step": t, "fd": fd, "fd_fwd": fwd, "fd_bwd": bwd, "ours": po,
            "peer": pp, "verdict": verdict}


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def timed(runner, p, v, eps, repeat, slow):
    """Best of `repeat` fresh (forward, backward) runs; a single run if the first is slow."""
    best = runner(p, v, eps)
    if best["fw"] + best["bw"] > slow:
        return best, 1
    k = 1
    for _ in range(repeat - 1):
        r = runner(p, v, eps)
        k += 1
        best["fw"] = min(best["fw"], r["fw"])
        best["bw"] = min(best["bw"], r["bw"])
    return best, k


def fmt(x, spec=".1e", width=8):
    if x is None:
        return f"{'-':>{width}}"
    if isinstance(x, str):
        return f"{x:>{width}}"
    return f"{x:>{width}{spec}}"


def skip_reason(solver, p, args):
    if solver in DENSE:
        cap = args.dense_max_n if solver == "proxsuite" else args.qpth_max_n
        if p.n > cap:
            return f"skipped (dense, n={p.n} > {cap})"
    if solver.startswith("dqp") and p.n > args.dqp_max_n:
        return f"skipped (n={p.n} > {args.dqp_max_n})"
    return None


def run_problem(cls, p, solvers, args):
    rng = np.random.default_rng(args.seed)
    v = rng.standard_normal(p.n)
    print(f"\n== {p.name} [{cls}]  n={p.n} n_eq={p.n_eq} n_in={p.n_in} "
          f"nnz(H,A,C)=({p.H.nnz},{p.A.nnz},{p.C.nnz})", flush=True)
    head = (f"{'solver':<10} {'fw (s)':>8} {'bw (s)':>8} {'bw/fw':>6} {'fact':>6} {'k':>2} "
            f"{'|dx|inf':>8} " + " ".join(f"{'d' + k:>8}" for k in PARAMS) + "  note")
    print(head)
    ours = None
    records = []
    for solver in solvers:
        rec = {"problem": p.name, "class": cls, "n": p.n, "solver": solver}
        reason = skip_reason(solver, p, args)
        if reason is None and solver != "sparseqp" and ours is None:
            reason = "skipped (no sparseqp reference)"
        if reason:
            print(f"{solver:<10} {reason}")
            rec["skipped"] = reason
            records.append(rec)
            continue
        try:
            r, k = timed(RUNNERS[solver], p, v, args.eps_abs, args.repeat, args.slow)
        except Exception as e:   # a peer failing: one line, go on
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:160] if str(e) else type(e).__name__
            print(f"{solver:<10} FAILED {msg}")
            if args.traceback:
                traceback.print_exc()
            rec["error"] = msg
            records.append(rec)
            continue
        flat_g = {name: flat(p, name, r["grads"].get(name)) for name in PARAMS}
        if solver == "sparseqp":
            ours = (r, flat_g)
        scale = max(np.linalg.norm(g) for g in ours[1].values() if g is not None)
        errs = {name: rel_err(ours[1][name], flat_g[name], 1e-4 * scale) for name in PARAMS}
        dx = float(np.max(np.abs(r["x"] - ours[0]["x"]))) if p.n else 0.0
        converged = dx <= args.x_tol * max(1.0, float(np.max(np.abs(ours[0]["x"]))))
        if not converged:
            r["note"] = (r["note"] + "; " if r["note"] else "") + "x off: not converged"
        rec.update(forward_s=r["fw"], backward_s=r["bw"], ratio=r["bw"] / r["fw"],
                   fact=r["fact"], repeat=k, dx_inf=dx, status=r["status"], note=r["note"],
                   rel_err=errs, converged=bool(converged))
        print(f"{solver:<10} {r['fw']:>8.4f} {r['bw']:>8.4f} {r['bw'] / r['fw']:>6.3f} "
              f"{fmt(r['fact'], width=6)} {k:>2} {fmt(dx)} "
              + " ".join(fmt(errs[name]) for name in PARAMS) + f"  {r['note']}", flush=True)
        if solver != "sparseqp" and not args.no_fd:
            bad = [(e, name) for name, e in errs.items() if e is not None and e > args.agree]
            if bad:
                _, name = max(bad)
                try:
                    chk = fd_check(p, v, name, ours[1][name], flat_g[name], eps=args.fd_eps)
                except Exception as e:
                    chk = {"param": name, "verdict": f"FD failed: {e}"}
                rec["fd"] = chk
                if chk is not None and "fd" in chk:
                    print(f"{'':<10} FD check d{name} along (peer - sparseqp): central "
                          f"{chk['fd']:.6g} (one-sided {chk['fd_fwd']:.6g} / {chk['fd_bwd']:.6g}); "
                          f"sparseqp {chk['ours']:.6g}, {solver} {chk['peer']:.6g} -> "
                          f"{chk['verdict']}")
                elif chk is not None and "ours" in chk:
                    print(f"{'':<10} FD check d{name} along (peer - sparseqp): sparseqp "
                          f"{chk['ours']:.6g}, {solver} {chk['peer']:.6g}; {chk['verdict']}")
                elif chk is not None:
                    print(f"{'':<10} FD check d{name}: {chk['verdict']}")
        records.append(rec)
    return records


def summary(records, agree, big_n):
    print(f"\n== Targets (n >= {big_n}: sparseqp backward >= 10x faster than osqp's adjoint and "
          f"proxsuite's QPLayer backward; gradients within {agree:g} relative)")
    ok_all = True
    by_prob = {}
    for r in records:
        by_prob.setdefault(r["problem"], {})[r["solver"]] = r
    for prob, rs in by_prob.items():
        ours = rs.get("sparseqp")
        if not ours or "backward_s" not in ours:
            continue
        for peer in ("osqp", "proxsuite"):
            r = rs.get(peer)
            if r is None or "backward_s" not in r or ours["n"] < big_n:
                continue
            sp_ = r["backward_s"] / ours["backward_s"]
            hit = sp_ >= 10
            ok_all &= hit
            print(f"{prob:<28} {peer:<10} backward {r['backward_s']:.4f} s / sparseqp "
                  f"{ours['backward_s']:.4f} s = {sp_:7.1f}x  {'met' if hit else 'MISSED'}")
    for prob, rs in by_prob.items():
        for peer, r in rs.items():
            if peer == "sparseqp" or "rel_err" not in r:
                continue
            errs = [e for e in r["rel_err"].values() if e is not None]
            worst = max(errs) if errs else None
            fdv = r.get("fd", {}) or {}
            verdict = ("agrees" if worst is not None and worst <= agree
                       else "DIFFERS" if r.get("converged") else "differs (peer not converged)")
            print(f"{prob:<28} {peer:<10} max rel. gradient difference "
                  f"{fmt(worst).strip():>8}  {verdict}"
                  + (f"  (FD on d{fdv.get('param')}: {fdv.get('verdict')})" if fdv else ""))
    return ok_all


def versions():
    out = {"sparseqp": getattr(sparseqp, "__version__", "?")}
    for mod in ("osqp", "proxsuite", "qpth", "dqp", "torch"):
        try:
            m = importlib.import_module(mod)
            out[mod] = getattr(m, "__version__", "installed")
        except Exception:
            out[mod] = None
    try:
        from importlib.metadata import version
        out["dqp"] = version("libdqp") if out["dqp"] else None
        out["qpth"] = version("qpth") if out["qpth"] else None
    except Exception:
        pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="sizes 300 and 1000 only; random, portfolio and qpth at 300 (< 1 min)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="about n variables (default 1000 3200 10000)")
    ap.add_argument("--solvers", nargs="+", default=list(SOLVERS) + ["dqp-qdldl"],
                    choices=list(RUNNERS))
    ap.add_argument("--extra-max-n", type=int, default=1000,
                    help="random and portfolio problems at the sizes <= this (default 1000)")
    ap.add_argument("--eps-abs", type=float, default=1e-9)
    ap.add_argument("--agree", type=float, default=1e-5)
    ap.add_argument("--big-n", type=int, default=3000, help="speed target from this n")
    ap.add_argument("--dense-max-n", type=int, default=3500, help="largest n for proxsuite")
    ap.add_argument("--qpth-max-n", type=int, default=1000, help="largest n for qpth")
    ap.add_argument("--dqp-max-n", type=int, default=20000, help="largest n for dQP")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--slow", type=float, default=5.0,
                    help="one run only when forward + backward takes longer (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--x-tol", type=float, default=1e-6,
                    help="a peer has converged when |x - x_sparseqp|_inf <= x_tol max(1, |x|_inf)")
    ap.add_argument("--fd-eps", type=float, default=1e-10,
                    help="eps_abs of the sparseqp solves of the FD check")
    ap.add_argument("--no-fd", action="store_true", help="no finite-difference checks")
    ap.add_argument("--traceback", action="store_true")
    ap.add_argument("--json", default=None, help="write the records to this file")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([300, 1000] if args.quick else [1000, 3200, 10000])
    if args.quick and args.sizes is None:   # keep it under a minute: qpth takes ~15 s at n = 1,000
        args.extra_max_n = min(args.extra_max_n, 300)
        args.qpth_max_n = min(args.qpth_max_n, 300)
    solvers = [s for s in args.solvers if s != "sparseqp"]
    solvers = ["sparseqp"] + solvers
    vers = versions()
    for s in solvers[1:]:
        if vers.get(PEER_MODULES.get(s.split("-")[0], s)) is None:
            print(f"# {s}: not installed (skipped)")
    solvers = [s for s in solvers
               if s == "sparseqp" or vers.get(PEER_MODULES.get(s.split("-")[0], s)) is not None]
    load = os.getloadavg()
    print(f"# bench_backward_peers  {time.strftime('%Y-%m-%dT%H:%M:%S')}  cpus={os.cpu_count()}  "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}  eps_abs={args.eps_abs:g}  "
          f"python {platform.python_version()}")
    print("# " + "  ".join(f"{k} {v}" for k, v in vers.items() if v))
    print("# columns: d<p> = |G_peer - G_sparseqp| / max(|G_sparseqp|, 1e-4 max_q |G_sparseqp,q|) "
          "for dL/d<p> (H, A, C on their patterns);\n#   fact = numeric factorizations "
          "forward+backward (sparseqp); k = runs (best of k); |dx|inf = |x - x_sparseqp|_inf")
    records = []
    for cls, p in make_problems(sizes, args.seed, args.extra_max_n):
        records += run_problem(cls, p, solvers, args)
    ok = summary(records, args.agree, args.big_n)
    load = os.getloadavg()
    print(f"# load at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": vers, "settings": vars(args), "records": records,
                       "speed_targets_met": ok}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
