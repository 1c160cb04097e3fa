"""Print a Markdown table from a results.json written by train.py:
``python -m examples.sudoku.summarize examples/sudoku/runs/*/results.json``."""
import json
import sys

import numpy as np


def table(path):
    res = json.load(open(path))
    c = res["config"]
    lines = [f"{c['size'] ** 2}x{c['size'] ** 2}, {c['n_train']} train / {c['n_test']} test puzzles, "
             f"batch {c['batch_size']}, eps {c['eps']}, A pattern {c.get('pattern', 'random')}, "
             f"init {c.get('init', 'normal')}, "
             f"learned b init {c.get('b_init', 'ones')}, penalty {c['penalty']} "
             f"({c.get('penalty_type', 'sq')})",
             "",
             "| model | params | lr | epochs | test error (init -> final) | best test error | "
             "test cell error | test violation mean / max | final train error | s / epoch (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, h in res["models"].items():
        errs = [e for e in h["test_error"] if e is not None]
        vm = [v for v in h["test_violation_mean"] if v is not None]
        vx = [v for v in h["test_violation_max"] if v is not None]
        viol = f"{vm[-1]:.1e} / {vx[-1]:.1e}" if vm else "n/a"
        tpe = (f"{np.median(h['epoch_cpu_time']):.1f} CPU" if h.get("epoch_cpu_time")
               else f"{np.median(h['epoch_time']):.1f} wall")
        cell = [e for e in h["test_cell_error"] if e is not None][-1]
        lines.append(f"| {name} | {h['n_params']} | {h.get('lr', c['lr'])} | {len(h['epoch'])} | "
                     f"{h['init']['error']:.3f} -> {errs[-1]:.3f} | {min(errs):.3f} | {cell:.3f} | {viol} | "
                     f"{h['final_train'].get('error', float('nan')):.3f} | {tpe} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(table(p))
        print()
