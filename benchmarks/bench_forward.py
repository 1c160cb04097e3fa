"""Forward benchmark: sparseqp against peer QP solvers on generated classes and Maros-Meszaros.

    python benchmarks/bench_forward.py --quick
    python benchmarks/bench_forward.py --sizes 1000 5000 20000 --json results/forward.json
    python benchmarks/bench_forward.py --no-generated --maros /work/shared/data/maros_meszaros

For every problem and solver: wall-clock time, iterations, factorizations (sparseqp), the primal
and dual residuals recomputed here from the returned x, y, z (infinity norms, sparseqp's sign
convention), the status, and success = (status solved) and (both residuals <= eps_abs) and
(objective within 1e-6 relative of the reference, where there is one). Per class: success rate
and shifted geometric mean of the time (failures counted at the time limit) relative to the best
solver. Also: the time of ONE numeric QDLDL factorization of the problem's KKT matrix (the floor
of any factorization-based method), the ratio sparseqp time / one factorization, and a warm start
(g perturbed by 1e-3 relative, re-solved from the first solution). See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/ is not a package)

from sparseqp.problem import make_problem  # noqa: E402
from sparseqp.problems import PROBLEM_CLASSES, mpc_qp  # noqa: E402

DEFAULT_SIZES = (1000, 5000, 20000)
QUICK_SIZES = (200, 1000)
OBJ_RTOL = 1e-6
MAROS_INF = 1e19
#: Known erratum of the published reference values (see the data README).
MAROS_REF_FIX = {"LISWET8": 7.1447006e02}
#: References ~0: the objective is compared absolutely.
MAROS_ABS_REF = {"HS268", "S268"}


def _mpc_wide_class(size: int, seed=0):
    """MPC with 200 states and 100 inputs, random (dense) dynamics: stage blocks of 200 x 300
    make L dense enough that the numeric factorization dominates a solve (n = 6,200: about
    0.2 s per factorization, as much as QDLDL's analysis), which the default classes at
    n <= 20,000 never reach on box and mpc. Not in the default run (``--classes mpc_wide``)."""
    nx, nu = 200, 100
    horizon = max(2, int(round((size - nx) / (nx + nu))))
    return mpc_qp(nx, nu, horizon, seed=seed, dynamics="random").problem


#: The library's generated classes (the default run) and the benchmark's own opt-in ones.
BENCH_CLASSES = dict(PROBLEM_CLASSES, mpc_wide=_mpc_wide_class)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help=f"problem sizes (about n) of the generated classes "
                         f"(default {' '.join(map(str, DEFAULT_SIZES))})")
    ap.add_argument("--quick", action="store_true",
                    help=f"small sizes ({' '.join(map(str, QUICK_SIZES))}) for a smoke run")
    ap.add_argument("--classes", nargs="+", default=list(PROBLEM_CLASSES),
                    choices=list(BENCH_CLASSES),
                    help="generated classes to run (default: all but mpc_wide)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-generated", action="store_true", help="skip the generated classes")
    ap.add_argument("--maros", metavar="DIR", help="also run the Maros-Meszaros .mat files in DIR")
    ap.add_argument("--maros-names", nargs="+", default=None, help="only these Maros problems")
    ap.add_argument("--maros-max-n", type=int, default=None,
                    help="skip Maros problems with more variables than this")
    ap.add_argument("--solvers", nargs="+", default=None,
                    help="solvers to run (default: sparseqp and every installed peer; "
                         f"known peers: {', '.join(peers.PEERS)})")
    ap.add_argument("--eps-abs", type=float, default=1e-6)
    ap.add_argument("--eps-rel", type=float, default=0.0)
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per solve")
    ap.add_argument("--shift", type=float, default=10.0,
                    help="shift (s) of the shifted geometric mean (qpbenchmark: 10)")
    ap.add_argument("--no-warm", action="store_true", help="skip the warm-start measurement")
    ap.add_argument("--isolate", choices=("auto", "always", "never"), default="auto",
                    help="run peers in a child process killed past the time limit: auto = only "
                         f"those without a time limit setting ({', '.join(peers.NO_TIME_LIMIT)})")
    ap.add_argument("--no-skip", action="store_true",
                    help="do not skip a solver on the larger sizes of a class after it ran out "
                         "of time on a smaller one")
    ap.add_argument("--json", metavar="PATH", help="write all records and summaries here")
    ap.add_argument("--progress", action="store_true", help="tqdm progress bar (if installed)")
    args = ap.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    return args


def select_solvers(requested) -> list[str]:
    installed = ["sparseqp"] + peers.available()
    if requested is None:
        return installed
    unknown = [s for s in requested if s != "sparseqp" and s not in peers.PEERS]
    if unknown:
        raise SystemExit(f"unknown solver(s): {', '.join(unknown)}")
    missing = [s for s in requested if s not in installed]
    if missing:
        print(f"# not installed, skipped: {', '.join(missing)}")
    return [s for s in requested if s in installed]


# --------------------------------------------------------------------------------------------
# problems
# --------------------------------------------------------------------------------------------
def generated_cases(classes, sizes, seed):
    """Yield (class name, problem, reference objective or None) for the generated classes."""
    for size in sorted(sizes):
        for name in classes:
            yield name, BENCH_CLASSES[name](size, seed), None


def _maros_vector(data, key) -> np.ndarray:
    v = np.asarray(data[key]).astype(float).reshape(-1)
    v[v >= MAROS_INF] = np.inf
    v[v <= -MAROS_INF] = -np.inf
    return v


def read_maros_mat(path):
    """Read a Maros-Meszaros .mat file (qpbenchmark layout) into a Problem.

    Rows of A = [C; I] with l == u become equalities, rows with both sides infinite are dropped,
    the others (the variable bounds included) become inequality rows.
    """
    data = scipy.io.loadmat(path)
    P = sp.csc_matrix(data["P"]).astype(float)
    q = np.asarray(data["q"]).astype(float).reshape(-1)
    r = float(np.asarray(data["r"]).astype(float).reshape(-1)[0]) if "r" in data else 0.0
    M = sp.csr_matrix(data["A"]).astype(float)
    lo, hi = _maros_vector(data, "l"), _maros_vector(data, "u")
    eq = lo == hi
    ineq = ~eq & (np.isfinite(lo) | np.isfinite(hi))
    return make_problem(P, q, M[eq], lo[eq], M[ineq], lo[ineq], hi[ineq], constant=r,
                        name=Path(path).stem)


def read_problem(path):
    """sparseqp.io.read_mat when the package has it, else the reader above."""
    try:
        from sparseqp.io import read_mat
    except ImportError:
        return read_maros_mat(path)
    try:
        return read_mat(path)
    except Exception:  # a different signature or layout: fall back on ours
        return read_maros_mat(path)


def maros_references(directory) -> dict:
    path = Path(directory) / "reference_objectives.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        refs = {row["name"]: float(row["objective"]) for row in csv.DictReader(f)}
    refs.update(MAROS_REF_FIX)
    return refs


def maros_cases(directory, names=None, max_n=None):
    """Yield ("maros", problem, reference objective or None), smallest files first."""
    refs = maros_references(directory)
    files = sorted(Path(directory).glob("*.mat"), key=lambda p: p.stat().st_size)
    if names:
        missing = sorted(set(names) - {p.stem for p in files})
        if missing:
            print(f"# Maros problems not found in {directory}: {', '.join(missing)}")
    for path in files:
        if names and path.stem not in names:
            continue
        problem = read_problem(path)
        if max_n is not None and problem.n > max_n:
            continue
        yield "maros", problem, refs.get(path.stem)


# --------------------------------------------------------------------------------------------
# one factorization of the KKT matrix: the floor of every factorization-based solver
# --------------------------------------------------------------------------------------------
def kkt_upper(p) -> sp.csc_matrix:
    """Upper triangle of [H + 1e-7 I, A', C'; A, -1e-3 I, 0; C, 0, -1e-1 I]."""
    K = sp.bmat([[p.H + 1e-7 * sp.identity(p.n), p.A.T, p.C.T],
                 [p.A, -1e-3 * sp.identity(p.n_eq), None],
                 [p.C, None, -1e-1 * sp.identity(p.n_in)]], format="csc")
    return sp.triu(K, format="csc")


def time_one_factorization(p, repeats: int = 3, budget: float = 2.0) -> tuple[float, float]:
    """(best time of ``qdldl.Solver.update``, the numeric factorization alone, over a few
    repeats; time of the analysis: ``qdldl.Solver(K)`` (best of two) less that best, i.e. its
    AMD ordering, permutation and elimination tree, which a solver pays once per pattern)."""
    import qdldl

    K = kkt_upper(p)
    first = math.inf
    for _ in range(2):       # best of two: a single construction varied by up to 2x
        t0 = time.perf_counter()
        solver = qdldl.Solver(K, upper=True)
        first = min(first, time.perf_counter() - t0)
        if first > budget:
            break
    best, spent = math.inf, 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        solver.update(K, upper=True)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget:
            break
    return best, max(first - best, 0.0)


# --------------------------------------------------------------------------------------------
# solving and judging
# --------------------------------------------------------------------------------------------
def run_sparseqp(p, eps_abs, eps_rel, time_limit, x0=None, y0=None, z0=None) -> dict:
    import sparseqp

    t0 = time.perf_counter()
    try:
        r = sparseqp.solve(p, eps_abs=eps_abs, eps_rel=eps_rel, time_limit=time_limit,
                           x0=x0, y0=y0, z0=z0)
    except Exception as exc:
        return dict(x=None, y=None, z=None, status=f"error: {type(exc).__name__}: {exc}",
                    time=time.perf_counter() - t0, iterations=0)
    t = time.perf_counter() - t0
    status = "solved" if r.status == sparseqp.Status.SOLVED else r.status.name.lower()
    return dict(x=r.x, y=r.y, z=r.z, status=status, time=t, iterations=int(r.nit),
                factorizations=int(r.n_factorizations), setup_time=float(r.setup_time),
                solve_time=float(r.solve_time))


def run_solver(name, p, args) -> dict:
    if name == "sparseqp":
        return run_sparseqp(p, args.eps_abs, args.eps_rel, args.time_limit)
    isolate = args.isolate == "always" or (args.isolate == "auto" and name in peers.NO_TIME_LIMIT)
    solve = peers.solve_isolated if isolate else peers.solve_with
    res = solve(name, p, args.eps_abs, args.eps_rel, args.time_limit)
    return dict(res._asdict())


def skipped(time_limit) -> dict:
    return dict(x=None, y=None, z=None, status="skipped_after_timeout", time=math.nan,
                iterations=0)


def ran_out_of_time(rec: dict, time_limit) -> bool:
    return rec["time"] >= 0.99 * time_limit or "time" in rec["status"] or "killed" in rec["status"]


def objective_ok(obj: float, ref: float | None, absolute: bool) -> bool | None:
    if ref is None:
        return None
    scale = 1.0 if absolute else max(1.0, abs(ref))
    return abs(obj - ref) <= OBJ_RTOL * scale


def judge(p, out: dict, ref, eps_abs, time_limit) -> dict:
    """Recompute residuals and objective from x, y, z; decide success."""
    rec = {k: v for k, v in out.items() if k not in ("x", "y", "z")}
    if out["x"] is None or out["y"] is None or out["z"] is None:
        rec.update(prim_res=math.nan, dual_res=math.nan, objective=math.nan, obj_ok=None,
                   success=False)
        return rec
    x = np.asarray(out["x"], dtype=float)
    rp, rd = p.residuals(x, np.asarray(out["y"], dtype=float), np.asarray(out["z"], dtype=float))
    obj = p.objective(x)
    obj_ok = objective_ok(obj, ref, p.name in MAROS_ABS_REF)
    ok = (out["status"] == "solved" and rp <= eps_abs and rd <= eps_abs
          and obj_ok is not False and out["time"] <= time_limit)
    rec.update(prim_res=rp, dual_res=rd, objective=obj, obj_ok=obj_ok, success=bool(ok))
    return rec


def perturbed(p, seed: int = 0):
    """Same problem with g + 1e-3 * max(|g|_inf, 1) * w, w standard normal (deterministic)."""
    rng = np.random.default_rng(seed)
    scale = max(float(np.max(np.abs(p.g))) if p.n else 0.0, 1.0)
    g = p.g + 1e-3 * scale * rng.standard_normal(p.n)
    return make_problem(p.H, g, p.A, p.b, p.C, p.l, p.u, constant=p.constant, name=p.name)


def warm_start(p, first: dict, args) -> dict:
    """Re-solve the perturbed problem with sparseqp from the first solution (a new solve:
    scaling and symbolic analysis included)."""
    q = perturbed(p, args.seed)
    out = run_sparseqp(q, args.eps_abs, args.eps_rel, args.time_limit,
                       x0=first["x"], y0=first["y"], z0=first["z"])
    return judge(q, out, None, args.eps_abs, args.time_limit)


def warm_update(p, args) -> dict:
    """The MPC-loop way: one ``Solver`` solves p, takes the perturbed g by ``update`` (same
    pattern: no new symbolic analysis) and re-solves warm-started from its own solution and
    penalties. Times ``update`` + the second ``solve``."""
    import sparseqp

    q = perturbed(p, args.seed)
    s = sparseqp.Solver(p.H, p.g, p.A, p.b, p.C, p.l, p.u, eps_abs=args.eps_abs,
                        eps_rel=args.eps_rel, time_limit=args.time_limit)
    s.solve()
    t0 = time.perf_counter()
    s.update(g=q.g)
    r = s.solve()
    t = time.perf_counter() - t0
    status = "solved" if r.status == sparseqp.Status.SOLVED else r.status.name.lower()
    out = dict(x=r.x, y=r.y, z=r.z, status=status, time=t, iterations=int(r.nit),
               factorizations=int(r.n_factorizations))
    return judge(q, out, None, args.eps_abs, args.time_limit)


# --------------------------------------------------------------------------------------------
# one problem
# --------------------------------------------------------------------------------------------
def problem_info(cls, p, ref) -> dict:
    return dict(cls=cls, problem=p.name, n=p.n, n_eq=p.n_eq, n_in=p.n_in,
                nnz=int(p.H.nnz + p.A.nnz + p.C.nnz), reference=ref)


def bench_problem(cls, p, ref, solvers, args, timed_out: set) -> list[dict]:
    """Every solver on one problem; ``timed_out`` holds the (class, solver) pairs to skip."""
    info = problem_info(cls, p, ref)
    info["one_fact"], info["analysis"] = time_one_factorization(p)
    print_problem_header(info)
    records = []
    for name in solvers:
        if (cls, name) in timed_out:
            out = skipped(args.time_limit)
        else:
            out = run_solver(name, p, args)
        rec = dict(info, solver=name, **judge(p, out, ref, args.eps_abs, args.time_limit))
        rec["ratio_fact"] = rec["time"] / info["one_fact"] if info["one_fact"] > 0 else math.nan
        if name == "sparseqp" and cls != "maros" and not args.no_warm and out["x"] is not None:
            rec["warm"] = warm_start(p, out, args)
            rec["warm"]["ratio_fact"] = rec["warm"]["time"] / info["one_fact"]
            rec["update"] = warm_update(p, args)
            rec["update"]["ratio_fact"] = rec["update"]["time"] / info["one_fact"]
        print_record(rec)
        records.append(rec)
        if cls != "maros" and not args.no_skip and ran_out_of_time(rec, args.time_limit):
            timed_out.add((cls, name))
    return records


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
ROW = "{:<10} {:<22} {:>9} {:>7} {:>6} {:>9} {:>9} {:>9} {:>8} {:<5}"


def print_problem_header(info: dict) -> None:
    ref = "" if info["reference"] is None else f"  ref obj {info['reference']:.8g}"
    print(f"\n== {info['problem']} [{info['cls']}]  n={info['n']} n_eq={info['n_eq']} "
          f"n_in={info['n_in']} nnz={info['nnz']}  1 fact (s) {info['one_fact']:.3g}  "
          f"analysis (s) {info['analysis']:.3g}{ref}")
    print(ROW.format("solver", "status", "time (s)", "iter", "fact", "prim res", "dual res",
                     "obj err", "t/1fact", "ok"))


def _fmt(v, spec=".1e") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def print_record(rec: dict) -> None:
    ref = rec.get("reference")
    obj_err = abs(rec["objective"] - ref) / max(1.0, abs(ref)) if ref is not None else None
    print(ROW.format(rec["solver"], rec["status"][:22], _fmt(rec["time"], ".4f"),
                     rec["iterations"], rec.get("factorizations", "-"), _fmt(rec["prim_res"]),
                     _fmt(rec["dual_res"]), _fmt(obj_err), _fmt(rec["ratio_fact"], ".1f"),
                     "yes" if rec["success"] else "NO"))
    for key, label in (("warm", "  warm"), ("update", "  update")):
        w = rec.get(key)
        if w:
            print(ROW.format(label, w["status"][:22], _fmt(w["time"], ".4f"), w["iterations"],
                             w.get("factorizations", "-"), _fmt(w["prim_res"]),
                             _fmt(w["dual_res"]), "-", _fmt(w["ratio_fact"], ".1f"),
                             "yes" if w["success"] else "NO"))


def shifted_geomean(times, shift: float) -> float:
    times = np.asarray(times, dtype=float)
    return float(np.exp(np.mean(np.log(times + shift))) - shift)


def summarize(records, solvers, time_limit, shift) -> dict:
    """Per class: success rate and shifted geometric mean of time relative to the best solver."""
    out = {}
    for cls in dict.fromkeys(r["cls"] for r in records):
        rows = [r for r in records if r["cls"] == cls]
        stats = {}
        for s in solvers:
            mine = [r for r in rows if r["solver"] == s]
            times = [r["time"] if r["success"] else time_limit for r in mine]
            stats[s] = dict(success_rate=float(np.mean([r["success"] for r in mine])),
                            shm=shifted_geomean(times, shift),
                            shm_1ms=shifted_geomean(times, 1e-3), count=len(mine))
        best = min(v["shm"] for v in stats.values())
        best_1ms = min(v["shm_1ms"] for v in stats.values())
        for v in stats.values():
            v["shm_rel"] = v["shm"] / best if best > 0 else math.nan
            v["shm_1ms_rel"] = v["shm_1ms"] / best_1ms if best_1ms > 0 else math.nan
        out[cls] = stats
    return out


def print_summary(summary: dict, shift: float) -> None:
    print(f"\n== Summary (failures counted at the time limit; shm = shifted geometric mean of "
          f"time, relative to the best: shift {shift:g} s and 1 ms)")
    fmt = "{:<10} {:<10} {:>8} {:>12} {:>12} {:>12}"
    print(fmt.format("class", "solver", "success", f"shm({shift:g}s)", "shm(1ms)", "shm(1ms) s"))
    for cls, stats in summary.items():
        for s, v in stats.items():
            print(fmt.format(cls, s, f"{100 * v['success_rate']:.0f}%", f"{v['shm_rel']:.2f}",
                             f"{v['shm_1ms_rel']:.2f}", f"{v['shm_1ms']:.4f}"))


def metadata(args, solvers) -> dict:
    versions = {}
    for name in solvers:
        try:
            versions[name] = __import__(name).__version__
        except Exception:
            versions[name] = "?"
    return dict(date=_dt.datetime.now().isoformat(timespec="seconds"),
                machine=platform.machine(), processor=platform.processor(),
                cpu_count=os.cpu_count(), python=platform.python_version(),
                versions=versions, eps_abs=args.eps_abs, eps_rel=args.eps_rel,
                time_limit=args.time_limit, shift=args.shift, seed=args.seed)


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return None if not math.isfinite(o) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def write_json(path, meta, records, summary) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(_jsonable(dict(meta=meta, records=records, summary=summary)), f, indent=1)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def all_cases(args):
    if not args.no_generated:
        yield from generated_cases(args.classes, args.sizes, args.seed)
    if args.maros:
        yield from maros_cases(args.maros, args.maros_names, args.maros_max_n)


def _progress(iterable, enabled: bool, total=None):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, unit="problem", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    solvers = select_solvers(args.solvers)
    meta = metadata(args, solvers)
    print(f"# bench_forward  {meta['date']}  cpus={meta['cpu_count']}  eps_abs={args.eps_abs:g} "
          f"eps_rel={args.eps_rel:g}  time limit {args.time_limit:g} s")
    print("# " + "  ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    total = None if args.maros else len(args.classes) * len(args.sizes) * (not args.no_generated)
    records, timed_out = [], set()
    for cls, p, ref in _progress(all_cases(args), args.progress, total):
        records.extend(bench_problem(cls, p, ref, solvers, args, timed_out))
    summary = summarize(records, solvers, args.time_limit, args.shift)
    print_summary(summary, args.shift)
    if args.json:
        write_json(args.json, meta, records, summary)
        print(f"\n# results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
