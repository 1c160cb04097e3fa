"""Print a Markdown table from a results.json written by train.py:
``python -m examples.sudoku.summarize runs/sudoku4x4/results.json``."""
import json
import sys

import numpy as np


def table(path):
    res = json.load(open(path))
    c = res["config"]
    lines = [f"{c['size'] ** 2}x{c['size'] ** 2}, {c['n_train']} train / {c['n_test']} test puzzles, "
             f"{c['epochs']} epochs, batch {c['batch_size']}, lr {c['lr']}, penalty {c['penalty']}",
             "",
             "| model | params | test error (init -> final) | best test error | test cell error | "
             "test violation mean / max | final train error | s / epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for name, h in res["models"].items():
        errs = [e for e in h["test_error"] if e is not None]
        vm = [v for v in h["test_violation_mean"] if v is not None]
        vx = [v for v in h["test_violation_max"] if v is not None]
        viol = f"{vm[-1]:.1e} / {vx[-1]:.1e}" if vm else "n/a"
        lines.append(f"| {name} | {h['n_params']} | {h['init']['error']:.2f} -> {errs[-1]:.2f} | {min(errs):.2f} "
                     f"| {[e for e in h['test_cell_error'] if e is not None][-1]:.3f} | {viol} | "
                     f"{h['final_train'].get('error', float('nan')):.2f} | {np.mean(h['epoch_time']):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(table(p))
        print()
