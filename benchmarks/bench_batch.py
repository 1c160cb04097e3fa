"""Batched forward + backward on the sticky worker pool (sparseqp.batch), with printed figures.

A batch of MPC problems (oscillating masses, nx=10, nu=5, horizon 130: n = 1960 variables,
1310 equalities, 1950 bounds), each with its own initial state; forward = ``solve_batch``,
backward = ``vjp_batch`` with a random dx per problem. Figures (best of ``--repeat`` runs):

* in-process (n_jobs=1) against the local pool with 1 and 2 workers: wall times and speedup;
  CPU seconds of the parent and the workers together, their excess over in-process (the
  pool's whole cost: pickling, transfer, dispatch, the worker's reader thread), and the
  speedup projected for idle cores from those CPU times, max(busiest worker, total / cores)
  (wall-clock figures on a machine shared with other jobs mostly measure the other jobs);
* the pool's overhead per problem: CPU of the parent and of the workers outside the solves
  and derivatives (pickling, transfer, dispatch, decoding, the reader threads) against the
  CPU of the solves and derivatives; worker idle time between requests as % of the worker's
  busy time; bytes per problem;
* the machine's parallel capacity at that moment: the same solves run concurrently in each
  worker with no dispatch at all (the ceiling for any speedup; the machine may be shared);
* start methods: start-up of a 2-worker pool and replacement of a killed worker, for
  forkserver / spawn / fork;
* re-solves after eviction (cache smaller than the batch);
* the Ray backend beside the local pool (when ray is installed; ``--no-ray`` skips it).

Run: ``python benchmarks/bench_batch.py`` (about 2 minutes; ``--quick``: 16 problems, 1 run).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import signal
import time

import numpy as np

import sparseqp
from sparseqp.batch import WorkerPool, solve_batch, vjp_batch
from sparseqp.problems import mpc_qp


def make_batch(size, horizon, seed=0):
    mpc = mpc_qp(nx=10, nu=5, horizon=horizon, seed=seed)
    rng = np.random.default_rng(seed)
    scale = np.r_[2.0 * np.ones(5), np.ones(5)]
    problems = [mpc.with_x0(rng.uniform(-1.0, 1.0, 10) * scale) for _ in range(size)]
    dx = [rng.standard_normal(p.n) for p in problems]
    return problems, dx


# Settings of every solve. pcg_max_iter=0: always refactorize on an active-set change, so that
# every configuration does the same work (the default picks PCG or a refactorization from
# measured timings, which vary with the load of the machine); --pcg restores the default.
SETTINGS = {"pcg_max_iter": 0}


def timed_solves(problems, dx, settings):
    """Forward + backward of ``problems`` in this process; returns the seconds taken."""
    t0 = time.perf_counter()
    for p, d in zip(problems, dx):
        sparseqp.Solver(p, **settings).solve().vjp(dx=d)
    return time.perf_counter() - t0


@dataclasses.dataclass
class Run:
    """One forward + backward: wall times, CPU seconds (parent, each worker), pool counters."""

    fw: float
    bw: float
    cpu_parent: float
    cpu_workers: list = dataclasses.field(default_factory=list)
    counters: dict = dataclasses.field(default_factory=dict)

    @property
    def total(self):
        return self.fw + self.bw

    @property
    def cpu(self):
        return self.cpu_parent + sum(self.cpu_workers)

    def projected(self, n_cores):
        """Wall time on ``n_cores`` idle cores from the CPU times (balance included)."""
        return max(max(self.cpu_workers, default=0.0), self.cpu / n_cores)


def run_once(problems, dx, pool=None):
    """Forward (solve_batch) + backward (vjp_batch) in-process or on ``pool``."""
    gc.collect()
    before = pool.stats() if pool else {}
    w0 = pool.broadcast(time.process_time) if pool else []
    c0, t0 = time.process_time(), time.perf_counter()
    results = solve_batch(problems, executor=pool, **SETTINGS)
    t1 = time.perf_counter()
    vjp_batch(results, dx=dx)
    t2, c2 = time.perf_counter(), time.process_time()
    w2 = pool.broadcast(time.process_time) if pool else []
    after = pool.stats() if pool else {}
    del results
    gc.collect()
    return Run(t1 - t0, t2 - t1, c2 - c0, [b - a for a, b in zip(w0, w2)],
               {k: after[k] - before[k] for k in after})


def capacity(pool, problems, dx):
    """Seconds for half the batch in one process alone, and in each of 2 at once (no dispatch).

    The capacity is ``2 * alone / together`` from the best round of each (a ratio per round
    would carry the noise of both runs).
    """
    half = len(problems) // 2
    alone = timed_solves(problems[:half], dx[:half], SETTINGS)
    together = max(pool.broadcast(timed_solves, problems[:half], dx[:half], SETTINGS))
    return alone, together


def interleaved(configs, repeat):
    """Run every config once per round (so that load changes hit all alike); best round each."""
    runs = {name: [] for name in configs}
    for _ in range(repeat):
        for name, fn in configs.items():
            runs[name].append(fn())
    return {name: min(r, key=lambda run: run.total) if isinstance(r[0], Run)
            else tuple(map(min, zip(*r))) for name, r in runs.items()}


def print_header():
    print(f"\n{'':<24} {'forward':>8} {'backward':>8} {'total':>7} {'speedup':>7}   "
          f"{'CPU s':>6} {'CPU vs':>7} {'projected':>9}")
    print(f"{'':<24} {'(wall)':>8} {'(wall)':>8} {'(wall)':>7} {'(wall)':>7}   "
          f"{'':>6} {'n_jobs=1':>7} {'speedup':>9}")


def print_row(label, run, seq, n_cores):
    projected = seq.cpu / run.projected(n_cores) if run.cpu_workers else 1.0
    print(f"  {label:<22} {run.fw:6.2f} s {run.bw:6.2f} s {run.total:5.2f} s "
          f"{seq.total / run.total:6.2f}x   {run.cpu:6.2f} {100 * (run.cpu / seq.cpu - 1):+6.1f}% "
          f"{projected:8.2f}x")


def overhead_line(label, run, n):
    delta, n_workers = run.counters, len(run.cpu_workers)
    busy = delta["worker_busy_s"]
    idle = n_workers * delta["wall_s"] - busy
    kb = (delta["bytes_sent"] + delta["bytes_received"]) / n / 1024
    parent = (delta["encode_s"] + delta["decode_s"]) / n * 1e3
    compute = delta["worker_compute_s"]
    pool_cpu = run.cpu - compute
    print(f"  {label:<22} pool CPU (parent + workers outside solve/vjp) "
          f"{1e3 * pool_cpu / n:4.2f} ms/problem = {100 * pool_cpu / compute:4.1f}% of the "
          f"solve + vjp CPU ({1e3 * compute / n:5.2f} ms/problem)\n"
          f"  {'':<22} parent encode+decode {parent:4.2f} ms/problem; {kb:4.0f} KiB/problem; "
          f"{delta['messages']} messages; worker idle {100 * idle / busy:5.2f}% of busy time "
          f"({1e3 * idle / n:5.2f} ms/problem)")


def start_methods(problems, dx):
    print("\nstart methods (2 workers): start-up, replacement of a SIGKILLed worker, fw+bw")
    for method in ("forkserver", "spawn", "fork"):
        t0 = time.perf_counter()
        pool = WorkerPool(2, context=method).start()
        t_start = time.perf_counter() - t0
        run = run_once(problems, dx, pool)
        victim = pool.pids()[0]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
        t0 = time.perf_counter()
        pool.start()                          # notices the death, starts a new worker
        t_replace = time.perf_counter() - t0
        pool.close()
        print(f"  {method:<11} start {t_start:6.2f} s   replace {t_replace:6.2f} s   "
              f"fw+bw {run.total:6.2f} s")


def eviction(problems, dx, cache):
    with WorkerPool(2, cache_size=cache) as pool:
        pool.start()
        run = run_once(problems, dx, pool)
        info = pool.worker_info()
    evicted = sum(w["evicted"] for w in info)
    print(f"\neviction: cache_size={cache} per worker, {len(problems)} problems: "
          f"{evicted} states evicted, {run.counters['resolves_evicted']} re-solved for the "
          f"backward (fw {run.fw:.2f} s, bw {run.bw:.2f} s)")


def ray_figures(problems, dx, repeat):
    try:
        import ray
        from sparseqp.ray_backend import RayPool
    except ImportError:
        print("\nray: not installed")
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        pool = RayPool(2).start()
        t_start = time.perf_counter() - t0
        best = interleaved({"seq": lambda: run_once(problems, dx),
                            "ray": lambda: run_once(problems, dx, pool)}, repeat)
        print(f"\nray (2 actors, ray.init(num_cpus=2), start-up {t_start:.2f} s), "
              f"measured in rounds with in-process runs:")
        print_header()
        print_row("in-process (n_jobs=1)", best["seq"], best["seq"], 2)
        print_row("ray, 2 actors", best["ray"], best["seq"], 2)
        overhead_line("ray, 2 actors", best["ray"], len(problems))
        pool.close()
    finally:
        ray.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--horizon", type=int, default=130)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=int, default=8, help="cache_size of the eviction run")
    ap.add_argument("--quick", action="store_true", help="16 problems, one run")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-start-methods", action="store_true")
    ap.add_argument("--pcg", action="store_true",
                    help="default solver settings (PCG steps chosen from measured timings)")
    args = ap.parse_args()
    if args.pcg:
        SETTINGS.clear()
    if args.quick:
        args.batch, args.repeat = 16, 1
    problems, dx = make_batch(args.batch, args.horizon)
    p = problems[0]
    print(f"batch: {len(problems)} MPC problems, n={p.n}, n_eq={p.n_eq}, n_in={p.n_in}, "
          f"nnz(H, A, C)=({p.H.nnz}, {p.A.nnz}, {p.C.nnz}); CPUs {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f}; settings {SETTINGS}")

    pools = {n: WorkerPool(n).start() for n in (1, 2)}
    best = interleaved({
        "seq": lambda: run_once(problems, dx),
        1: lambda: run_once(problems, dx, pools[1]),
        2: lambda: run_once(problems, dx, pools[2]),
        "capacity": lambda: capacity(pools[2], problems, dx),
    }, args.repeat)
    for pool in pools.values():
        pool.close()
    seq = best["seq"]
    print_header()
    print_row("in-process (n_jobs=1)", seq, seq, 2)
    for n in (1, 2):
        print_row(f"pool, {n} worker(s)", best[n], seq, 2)
    print("\noverhead of the pool (best run):")
    for n in (1, 2):
        overhead_line(f"pool, {n} worker(s)", best[n], len(problems))
    speedup = seq.total / best[2].total
    alone, together = best["capacity"]
    cap = 2 * alone / together
    print(f"\nparallel capacity of this machine now: 2 processes solving with no dispatch "
          f"give {cap:.2f}x one process\n  (best rounds: {alone:.2f} s alone, {together:.2f} s "
          f"each of 2 at once); the 2-worker pool reaches {speedup:.2f}x = "
          f"{100 * speedup / cap:.0f}% of that")
    if not args.no_start_methods:
        start_methods(problems[:16], dx[:16])
    eviction(problems, dx, args.cache)
    if not args.no_ray:
        ray_figures(problems, dx, args.repeat)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
