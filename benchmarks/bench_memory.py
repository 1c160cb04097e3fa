"""Peak memory of a sparseqp solve (and its backward) against the size of the LDL' factor.

Each problem runs in a fresh child process (``spawn``), so that nothing from earlier problems is
counted. The problem is generated first; then the peak resident set size is reset (Linux:
``/proc/self/clear_refs``), and the growth of the peak above the RSS at that point is measured
over ``sparseqp.solve`` and then over ``result.vjp``. The reference size is that of the LDL'
factor, nnz(L) entries at 8 bytes of value + 8 of row index (QDLDL's 64-bit integers), and of
the problem data (nnz of H, A, C at 8 + 4 bytes).

    python benchmarks/bench_memory.py                      # the six classes at n = 20,000
    python benchmarks/bench_memory.py --sizes 5000 --classes mpc random

Columns: ``fw MB`` / ``bw MB`` peak growth during the forward / backward; ``L MB`` 16 nnz(L)
bytes; ``fw/L`` the ratio that the forward-solver issue asks to be a small multiple; ``data MB``
the problem's own matrices.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sparseqp.problems import PROBLEM_CLASSES  # noqa: E402


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> int:
    """Reset VmHWM to the current RSS; returns that RSS (kB)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS")


def _child(cls: str, n: int, seed: int, eps: float, queue) -> None:
    import gc

    import numpy as np

    import sparseqp

    p = PROBLEM_CLASSES[cls](n, seed)
    data_mb = 12 * (p.H.nnz + p.A.nnz + p.C.nnz) / 2**20
    gc.collect()
    base = _reset_peak()
    r = sparseqp.solve(p.H, p.g, p.A, p.b, p.C, p.l, p.u, eps_abs=eps, eps_rel=0)
    fw_mb = (_status_kb("VmHWM") - base) / 1024
    bw_mb = float("nan")
    if r.success:
        v = np.random.default_rng(seed).standard_normal(p.n)
        base_bw = _reset_peak()
        r.vjp(dx=v)
        bw_mb = (_status_kb("VmHWM") - base_bw) / 1024
    # after the measurements: factors() copies L
    L = r._solver._kkt.solver.factors()[0]
    queue.put(dict(cls=cls, n=p.n, status=r.status.name, fact=int(r.n_factorizations),
                   nnz_L=int(L.nnz), L_mb=16 * L.nnz / 2**20, fw_mb=fw_mb, bw_mb=bw_mb,
                   data_mb=data_mb))


def measure(cls: str, n: int, seed: int, eps: float) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(cls, n, seed, eps, queue))
    proc.start()
    try:
        return queue.get(timeout=600)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", nargs="+", default=list(PROBLEM_CLASSES),
                    choices=list(PROBLEM_CLASSES))
    ap.add_argument("--sizes", type=int, nargs="+", default=[20000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eps-abs", type=float, default=1e-6)
    args = ap.parse_args(argv)
    if not os.path.exists("/proc/self/clear_refs"):
        sys.exit("needs Linux /proc/self/clear_refs to reset the peak RSS")
    head = "{:<10} {:>7} {:<9} {:>5} {:>10} {:>8} {:>8} {:>8} {:>6} {:>8}"
    print(head.format("class", "n", "status", "fact", "nnz(L)", "L MB", "fw MB", "bw MB",
                      "fw/L", "data MB"))
    for n in args.sizes:
        for cls in args.classes:
            m = measure(cls, n, args.seed, args.eps_abs)
            print(head.format(cls, m["n"], m["status"][:9], m["fact"], m["nnz_L"],
                              f"{m['L_mb']:.1f}", f"{m['fw_mb']:.1f}", f"{m['bw_mb']:.1f}",
                              f"{m['fw_mb'] / m['L_mb']:.2f}", f"{m['data_mb']:.1f}"),
                  flush=True)


if __name__ == "__main__":
    main()
