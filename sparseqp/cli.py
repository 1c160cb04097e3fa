"""The ``sparseqp`` command line.

Subcommands
-----------
demo
    Solve a built-in sparse MPC problem and its sensitivities.
solve FILE
    Read a QPS / MPS / ``.mat`` file, solve it and print the outcome (``--json`` for one JSON
    object on stdout, ``--output x.npy`` to save the solution).
bench DIR
    Solve every problem file of a folder and print a summary table (``--peers`` to also run the
    installed peer solvers of ``benchmarks/peers.py``).

User mistakes (a missing file, a malformed file, a bad option) are reported as one line on
stderr with exit code 2. ``solve`` exits with 1 when the solver did not succeed.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

#: Exit codes: success, solver did not succeed, user mistake.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: File name endings that ``bench`` treats as problem files (lower case).
PROBLEM_SUFFIXES = (".qps", ".mps", ".qps.gz", ".mps.gz", ".mat")

#: Shift of the shifted geometric mean of the solve times (seconds), as in Mittelmann's benchmarks.
SGM_SHIFT = 10.0


class UsageError(Exception):
    """A user mistake: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage block)."""

    def error(self, message):
        name = self.prog.split()[0]
        self.exit(EXIT_USAGE, f"{name}: error: {message} (see '{self.prog} --help')\n")


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# shared helpers of solve and bench
# --------------------------------------------------------------------------------------------
def _solver_settings(args) -> dict:
    """The solver settings given on the command line (only those the user set)."""
    settings = {"eps_abs": args.eps_abs}
    for name in ("eps_rel", "max_iter", "time_limit"):
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if getattr(args, "verbose", False):
        settings["verbose"] = True
    return settings


def _check_settings(settings: dict) -> None:
    """Raise UsageError for settings the solver rejects, before any file is read."""
    from .settings import make_settings

    try:
        make_settings(**settings)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"bad option: {exc}") from None


def _read(path):
    """Read a problem file into a Problem; any failure becomes a one-line UsageError."""
    from .io import read_problem

    path = os.fspath(path)
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory, expected a .qps, .mps or .mat file")
    try:
        return read_problem(path)
    except Exception as exc:  # any reader failure on user data is a user-facing error
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if path not in msg:
            msg = f"{path}: {msg}"
        raise UsageError(f"cannot read {msg}") from None


def _finite_or_none(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _result_record(r) -> dict:
    """The fields of a Result that solve/bench report, JSON-ready."""
    return {
        "status": r.status.name,
        "status_code": int(r.status),
        "success": bool(r.success),
        "message": r.message,
        "objective": _finite_or_none(r.fun),
        "prim_res": _finite_or_none(r.prim_res),
        "dual_res": _finite_or_none(r.dual_res),
        "iterations": int(r.nit),
        "newton_iterations": int(r.n_newton),
        "factorizations": int(r.n_factorizations),
        "setup_time": float(r.setup_time),
        "solve_time": float(r.solve_time),
        "time": float(r.setup_time + r.solve_time),
    }


# --------------------------------------------------------------------------------------------
# solve
# --------------------------------------------------------------------------------------------
def _solve(args) -> int:
    from . import solve

    settings = _solver_settings(args)
    _check_settings(settings)
    problem = _read(args.file)
    r = solve(problem, **settings)
    rec = {"file": os.fspath(args.file), "name": problem.name, "n": problem.n,
           "n_eq": problem.n_eq, "n_in": problem.n_in, **_result_record(r)}
    if args.output is not None:
        rec["output"] = _save_x(args.output, r.x)
    if args.json:
        print(json.dumps(rec))
    else:
        _print_solve(rec, settings)
    return EXIT_OK if r.success else EXIT_FAILED


def _save_x(path, x) -> str:
    path = os.fspath(path)
    if not path.endswith(".npy"):
        path += ".npy"  # what np.save does; report the real name
    try:
        np.save(path, np.asarray(x, dtype=np.float64))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _print_solve(rec: dict, settings: dict) -> None:
    print(f"{rec['file']}: {rec['name'] or '(unnamed)'}, n={rec['n']} variables, "
          f"{rec['n_eq']} equalities, {rec['n_in']} inequalities")
    print(f"  status         : {rec['status']}  ({rec['message']})")
    print(f"  objective      : {_fmt(rec['objective'], '.10g')}")
    print(f"  residuals      : primal {_fmt(rec['prim_res'], '.2e')}, dual "
          f"{_fmt(rec['dual_res'], '.2e')} (eps_abs {settings['eps_abs']:g})")
    print(f"  iterations     : {rec['iterations']} outer, {rec['newton_iterations']} Newton")
    print(f"  factorizations : {rec['factorizations']}")
    print(f"  time           : {rec['time']:.4f} s (setup {rec['setup_time']:.4f} s, "
          f"solve {rec['solve_time']:.4f} s)")
    if "output" in rec:
        print(f"  x saved to     : {rec['output']}")


def _fmt(v, spec: str) -> str:
    return "nan" if v is None else format(v, spec)


# --------------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------------
def _problem_files(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"{folder}: no such directory")
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().endswith(PROBLEM_SUFFIXES))
    if not files:
        raise UsageError(f"{folder}: no problem files (*.qps, *.mps, *.mat, optionally .gz)")
    return files


def _progress(items, desc: str):
    """tqdm progress bar on stderr when tqdm is installed, else one line per item."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _plain_progress(items, desc)
    return tqdm(items, desc=desc, unit="problem", file=sys.stderr, leave=False)


def _plain_progress(items, desc: str):
    n = len(items)
    for i, item in enumerate(items, 1):
        print(f"{desc}: [{i}/{n}] {getattr(item, 'name', item)}", file=sys.stderr, flush=True)
        yield item


def _load_peers():
    """The ``benchmarks.peers`` module (from the import path or the source tree), or None."""
    try:
        return importlib.import_module("benchmarks.peers")
    except ImportError:
        pass
    candidate = Path(__file__).resolve().parents[1] / "benchmarks" / "peers.py"
    if not candidate.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_sparseqp_bench_peers", candidate)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:  # a broken optional helper must not stop the benchmark
        return None
    return module


def _kkt_residuals(problem, x, y, z) -> tuple[float, float]:
    """Primal and dual residuals (infinity norms) of a peer's solution, in sparseqp's sense."""
    if x is None:
        return math.nan, math.nan
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros(problem.n_eq) if y is None else np.asarray(y, dtype=np.float64)
    z = np.zeros(problem.n_in) if z is None else np.asarray(z, dtype=np.float64)
    parts = [np.zeros(1)]
    if problem.n_eq:
        parts.append(np.abs(problem.A @ x - problem.b))
    if problem.n_in:
        cx = problem.C @ x
        parts.append(cx - np.clip(cx, problem.l, problem.u))
    prim = float(np.max(np.abs(np.concatenate(parts))))
    grad = problem.H @ x + problem.g + problem.A.T @ y + problem.C.T @ z
    dual = float(np.max(np.abs(grad))) if grad.size else 0.0
    return prim, dual


def _bench_sparseqp(problem, settings) -> dict:
    from . import solve

    r = solve(problem, **settings)
    rec = _result_record(r)
    return {k: rec[k] for k in ("status", "success", "objective", "time", "iterations",
                                "factorizations", "prim_res", "dual_res")}


def _bench_peer(peers, name, problem, args) -> dict:
    res = peers.solve_with(name, problem, eps_abs=args.eps_abs, eps_rel=args.eps_rel or 0.0,
                           time_limit=args.time_limit)
    prim, dual = _kkt_residuals(problem, res.x, res.y, res.z)
    t = float(res.time)
    in_time = args.time_limit is None or (math.isfinite(t) and t <= args.time_limit)
    obj = math.nan
    if res.x is not None:
        x = np.asarray(res.x, dtype=np.float64)
        obj = float(0.5 * x @ (problem.H @ x) + problem.g @ x + problem.constant)
    return {"status": res.status, "success": res.status == "solved" and in_time,
            "objective": _finite_or_none(obj), "time": t, "iterations": int(res.iterations),
            "factorizations": None, "prim_res": _finite_or_none(prim),
            "dual_res": _finite_or_none(dual)}


def _read_failure(exc: UsageError) -> dict:
    return {"status": "read error", "success": False, "objective": None, "time": math.nan,
            "iterations": 0, "factorizations": None, "prim_res": None, "dual_res": None,
            "error": str(exc)}


def _shifted_geomean(times, shift: float = SGM_SHIFT) -> float:
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0:
        return math.nan
    return float(np.exp(np.mean(np.log(t + shift))) - shift)


def _summary(rows: list[dict], solver: str, time_limit) -> dict:
    mine = [r for r in rows if r["solver"] == solver]
    ok = [r for r in mine if r["success"]]
    # failures count at the time limit (at their own time when there is none)
    times = []
    for r in mine:
        t = r["time"] if math.isfinite(r["time"]) else (time_limit or 0.0)
        times.append(t if r["success"] or time_limit is None else max(t, time_limit))
    return {"solver": solver, "problems": len(mine), "solved": len(ok),
            "success_rate": len(ok) / len(mine) if mine else math.nan,
            "shifted_geomean_time": _shifted_geomean(times), "shift": SGM_SHIFT}


def _bench(args) -> int:
    settings = _solver_settings(args)
    _check_settings(settings)
    files = _problem_files(args.dir)
    solvers = ["sparseqp"]
    notes = []
    peers = None
    if args.peers:
        peers = _load_peers()
        if peers is None:
            notes.append("peers skipped: benchmarks/peers.py is not importable")
        else:
            found = list(peers.available())
            if found:
                solvers += found
            else:
                notes.append("peers skipped: no peer solver is installed")
    rows = []
    for path in _progress(files, "bench"):
        try:
            problem = _read(path)
        except UsageError as exc:
            rows.extend({"problem": path.name, "solver": s, **_read_failure(exc)} for s in solvers)
            continue
        for s in solvers:
            rec = (_bench_sparseqp(problem, settings) if s == "sparseqp"
                   else _bench_peer(peers, s, problem, args))
            rows.append({"problem": path.name, "solver": s, **rec})
    summaries = [_summary(rows, s, args.time_limit) for s in solvers]
    if args.json:
        print(json.dumps({"dir": os.fspath(args.dir), "eps_abs": args.eps_abs,
                          "time_limit": args.time_limit, "rows": _json_rows(rows),
                          "summary": [_json_summary(s) for s in summaries], "notes": notes}))
    else:
        _print_bench(rows, summaries, notes)
    return EXIT_OK


def _json_rows(rows):
    return [{k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in r.items()}
            for r in rows]


def _json_summary(s):
    return {k: (_finite_or_none(v) if isinstance(v, float) else v) for k, v in s.items()}


def _print_bench(rows, summaries, notes) -> None:
    name_w = max(8, *(len(r["problem"]) for r in rows))
    solver_w = max(8, *(len(r["solver"]) for r in rows))
    status_w = max(8, *(len(str(r["status"])[:28]) for r in rows))
    head = (f"{'problem':<{name_w}}  {'solver':<{solver_w}}  {'status':<{status_w}}  "
            f"{'time [s]':>9}  {'iter':>6}  {'fact':>5}  {'prim_res':>9}  {'dual_res':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        fact = "-" if r["factorizations"] is None else str(r["factorizations"])
        print(f"{r['problem']:<{name_w}}  {r['solver']:<{solver_w}}  "
              f"{str(r['status'])[:28]:<{status_w}}  {_fmt(_finite_or_none(r['time']), '9.4f'):>9}  "
              f"{r['iterations']:>6}  {fact:>5}  {_fmt(r['prim_res'], '9.2e'):>9}  "
              f"{_fmt(r['dual_res'], '9.2e'):>9}")
    print()
    for s in summaries:
        print(f"{s['solver']}: solved {s['solved']}/{s['problems']} "
              f"({100 * s['success_rate']:.1f}%), shifted geometric mean time "
              f"{s['shifted_geomean_time']:.4f} s (shift {s['shift']:g} s; failures at the "
              f"time limit)")
    for note in notes:
        print(f"note: {note}")


# --------------------------------------------------------------------------------------------
# parser and entry point
# --------------------------------------------------------------------------------------------
def _add_solver_options(parser, eps_abs: float, time_limit) -> None:
    parser.add_argument("--eps-abs", type=float, default=eps_abs,
                        help=f"absolute tolerance (default {eps_abs:g})")
    parser.add_argument("--eps-rel", type=float, default=None,
                        help="relative tolerance (default: the solver's)")
    parser.add_argument("--time-limit", type=float, default=time_limit,
                        help="seconds per problem (default: "
                             f"{'none' if time_limit is None else f'{time_limit:g}'})")


def _build_parser():
    parser = _Parser(prog="sparseqp", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("demo", help="solve a built-in sparse MPC problem and its sensitivities")
    d.add_argument("--nx", type=int, default=20)
    d.add_argument("--nu", type=int, default=10)
    d.add_argument("--horizon", type=int, default=100)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--eps-abs", type=float, default=1e-8)
    d.set_defaults(func=_demo)

    s = sub.add_parser("solve", help="solve a QPS / MPS / .mat file")
    s.add_argument("file", help="problem file (.qps, .mps, optionally .gz, or .mat)")
    _add_solver_options(s, eps_abs=1e-8, time_limit=None)
    s.add_argument("--max-iter", type=int, default=None,
                   help="maximum outer iterations (default: the solver's)")
    s.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    s.add_argument("--output", metavar="X.npy", default=None, help="save x with numpy.save")
    s.add_argument("--verbose", action="store_true", help="print the solver's iteration log")
    s.set_defaults(func=_solve)

    b = sub.add_parser("bench", help="solve every problem file of a folder, print a summary")
    b.add_argument("dir", help="folder of .qps / .mps / .mat files")
    _add_solver_options(b, eps_abs=1e-6, time_limit=60.0)
    b.add_argument("--peers", action="store_true",
                   help="also run the installed peer solvers (benchmarks/peers.py)")
    b.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    b.set_defaults(func=_bench)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"sparseqp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError, OSError) as exc:
        print(f"sparseqp: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sparseqp: interrupted", file=sys.stderr)
        return 130
