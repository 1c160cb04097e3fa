"""Train the Sudoku models (feasible-by-construction QP layer, learned-A QP layer, MLP).

Run from the repository root::

    python -m examples.sudoku.train --size 2 --epochs 20 --model all --out runs/sudoku4
    python examples/sudoku/train.py --quick

Writes ``results.json`` (config, per-epoch history per model) and figures (test error, test
constraint violation, time per epoch) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

if __package__ in (None, ""):          # run as a script: make `examples.sudoku` importable
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    __package__ = "examples.sudoku"

from .data import decode, make_dataset  # noqa: E402
from .models import make_model, n_params  # noqa: E402

try:
    from tqdm.auto import tqdm
except ImportError:                     # pragma: no cover
    def tqdm(it=None, **kw):
        return it

MODELS = ("feasible", "learned", "mlp")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2, choices=(2, 3), help="box size: 2 -> 4x4, 3 -> 9x9")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--n-blanks", type=int, default=None, help="blanks per puzzle (default 8 for 4x4, 40 for 9x9)")
    ap.add_argument("--model", default="all", choices=("all",) + MODELS)
    ap.add_argument("--out", default="runs/sudoku")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (4x4, 40/20 puzzles, 2 epochs)")
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--lr", type=float, default=None, help="Adam step (default 1e-2 QP layers, 1e-2 MLP)")
    ap.add_argument("--lr-model", action="append", default=[], metavar="NAME=LR",
                    help="per-model Adam step, e.g. --lr-model mlp=0.001 (overrides --lr)")
    ap.add_argument("--penalty", type=float, default=1.0, help="weight of the shift penalty in the learned-A loss")
    ap.add_argument("--penalty-type", default="norm", choices=("norm", "sq"),
                    help="norm: penalty*(|s_eq| + |s_in|) (exact penalty, drives s to 0); sq: penalty*(|s_eq|^2 + |s_in|^2)")
    ap.add_argument("--eps", type=float, default=0.1, help="the eps of 1/2 eps|x|^2 in the layer")
    ap.add_argument("--m", type=int, default=None, help="rows of A (default: rank of the Sudoku matrix)")
    ap.add_argument("--per-col", type=int, default=None,
                    help="nonzeros per column of a sparse random A pattern (default: dense for 4x4, 4 for 9x9)")
    ap.add_argument("--pattern", default="random", choices=("random", "sudoku"),
                    help="sparsity pattern of A: random (--per-col nonzeros per column; dense if --per-col "
                         "is not given for 4x4) or sudoku (the pattern of the true Sudoku constraint matrix, "
                         "4 N^2 rows, 4 nonzeros per column; values learned)")
    ap.add_argument("--learned-mode", default="loop", choices=("loop", "block"),
                    help="learned-A model: one closest-feasible solve per puzzle (loop) or one "
                         "block-diagonal solve per batch (block)")
    ap.add_argument("--fixed-b", action="store_true", help="learned-A model: keep b = 1 (paper) instead of learning b")
    ap.add_argument("--b-init", default="ones", choices=("ones", "center"),
                    help="learned-A model: initial b = 1 (paper) or A0 x for the uniform board x = 1/N")
    ap.add_argument("--init", default="uniform", choices=("uniform", "normal"),
                    help="init of A: U[0, c] scaled so A x = 1 at x = 1/N (OptNet-like), or N(0, 1/row nnz)")
    ap.add_argument("--eps-abs", type=float, default=1e-8, help="solver tolerance")
    ap.add_argument("--n-jobs", type=int, default=1, help=">1: solve the batch on a sparseqp process pool")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="per model: stop after the epoch during which this many minutes of process CPU time "
                         "(training + evaluation) have been used (CPU, not wall: a paused process is not cut short)")
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.n_train, args.n_test, args.epochs = 2, 40, 20, 2
    if args.per_col is None and args.size == 3:
        args.per_col = 4
    return args


def loss_fn(out, y, penalty, kind="norm"):
    loss = ((out["x"] - y) ** 2).sum(1).mean()
    if out["s_eq"] is not None and penalty:
        if kind == "sq":
            pen = (out["s_eq"] ** 2).sum(1) + (out["s_in"] ** 2).sum(1)
        else:   # vector_norm has gradient 0 at s = 0 (a feasible solve)
            pen = (torch.linalg.vector_norm(out["s_eq"], dim=1)
                   + torch.linalg.vector_norm(out["s_in"], dim=1))
        loss = loss + penalty * pen.mean()
    return loss


def violation(out):
    """|s| per puzzle (both shifts), or None for models without constraints."""
    if out["s_eq"] is None:
        return None
    return torch.sqrt((out["s_eq"] ** 2).sum(1) + (out["s_in"] ** 2).sum(1)).detach().numpy()


@torch.no_grad()
def evaluate(model, data, batch_size, k):
    X = torch.as_tensor(data.X)
    wrong, viols, cell_err = 0, [], 0.0
    for i in range(0, len(data), batch_size):
        out = model(X[i:i + batch_size])
        pred = decode(out["x"].numpy(), k)
        sol = data.solutions[i:i + batch_size]
        wrong += int((pred != sol).any(axis=(1, 2)).sum())
        cell_err += float((pred != sol).mean(axis=(1, 2)).sum())
        v = violation(out)
        if v is not None:
            viols.append(v)
    res = {"error": wrong / len(data), "cell_error": cell_err / len(data)}
    if viols:
        v = np.concatenate(viols)
        res.update(violation_mean=float(v.mean()), violation_max=float(v.max()))
    return res


def train_model(name, train, test, args, progress=True, log=print):
    k = args.size
    kw = dict(m=args.m, eps=args.eps, per_col=args.per_col, seed=args.seed, n_jobs=args.n_jobs,
              init=args.init, pattern=args.pattern,
              settings=dict(eps_abs=args.eps_abs, infeasible="closest"))
    if name == "learned":
        kw["learn_b"] = not args.fixed_b
        kw["b_init"] = args.b_init
        kw["mode"] = args.learned_mode
    model = make_model(name, k, **kw)
    lr = args.lr if args.lr is not None else 1e-2
    for item in args.lr_model:
        key, _, val = item.partition("=")
        if key == name:
            lr = float(val)
    hist_lr = lr
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    X, Y = torch.as_tensor(train.X), torch.as_tensor(train.Y)
    rng = np.random.default_rng(args.seed)
    hist = {"epoch": [], "train_loss": [], "train_violation": [], "epoch_time": [], "eval_time": [],
            "test_error": [], "test_cell_error": [], "test_violation_mean": [], "test_violation_max": [],
            "train_error": [], "epoch_cpu_time": []}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ev = evaluate(model, test, args.batch_size, k)
    hist["init"] = ev
    log(f"[{name}] params={n_params(model)} init test error={ev['error']:.3f} "
        f"violation={ev.get('violation_mean', float('nan')):.2e} ({time.perf_counter() - t0:.1f}s)")
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = rng.permutation(len(train))
        t0, c0 = time.perf_counter(), time.process_time()
        losses, viols = [], []
        bar = tqdm(range(0, len(train), args.batch_size), desc=f"{name} ep {epoch}", leave=False,
                   disable=not progress)
        for i in bar:
            idx = perm[i:i + args.batch_size]
            out = model(X[idx])
            loss = loss_fn(out, Y[idx], args.penalty if name == "learned" else 0.0, args.penalty_type)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            v = violation(out)
            if v is not None:
                viols.append(v.mean())
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3g}")
        epoch_time = time.perf_counter() - t0
        hist["epoch_cpu_time"].append(time.process_time() - c0)
        hist["epoch"].append(epoch)
        hist["train_loss"].append(float(np.mean(losses)))
        hist["train_violation"].append(float(np.mean(viols)) if viols else None)
        hist["epoch_time"].append(epoch_time)
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            t1 = time.perf_counter()
            ev = evaluate(model, test, args.batch_size, k)
            hist["eval_time"].append(time.perf_counter() - t1)
            hist["test_error"].append(ev["error"])
            hist["test_cell_error"].append(ev["cell_error"])
            hist["test_violation_mean"].append(ev.get("violation_mean"))
            hist["test_violation_max"].append(ev.get("violation_max"))
            log(f"[{name}] epoch {epoch}: loss={hist['train_loss'][-1]:.4g} test error={ev['error']:.3f} "
                f"cell error={ev['cell_error']:.3f} violation mean/max="
                f"{ev.get('violation_mean', float('nan')):.2e}/{ev.get('violation_max', float('nan')):.2e} "
                f"epoch {epoch_time:.1f}s (cpu {hist['epoch_cpu_time'][-1]:.1f}s)")
        else:
            for key in ("eval_time", "test_error", "test_cell_error", "test_violation_mean", "test_violation_max"):
                hist[key].append(None)
        if args.max_minutes is not None and time.process_time() - cpu0 > 60 * args.max_minutes:
            if epoch < args.epochs and hist["test_error"][-1] is None:
                ev = evaluate(model, test, args.batch_size, k)
                hist["test_error"][-1], hist["test_cell_error"][-1] = ev["error"], ev["cell_error"]
                hist["test_violation_mean"][-1] = ev.get("violation_mean")
                hist["test_violation_max"][-1] = ev.get("violation_max")
            log(f"[{name}] time budget of {args.max_minutes} min reached after epoch {epoch}")
            break
    ev = evaluate(model, train, args.batch_size, k) if len(train) <= 2000 else {}
    hist["final_train"] = ev
    hist["n_params"] = n_params(model)
    hist["lr"] = hist_lr
    return model, hist


def make_figures(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, h in results["models"].items():
        ep = [e for e, v in zip(h["epoch"], h["test_error"]) if v is not None]
        axes[0].plot([0] + ep, [h["init"]["error"]] + [v for v in h["test_error"] if v is not None],
                     marker="o", label=f"{name} (boards)")
        axes[0].plot([0] + ep, [h["init"]["cell_error"]] + [v for v in h["test_cell_error"] if v is not None],
                     ls=":", color=axes[0].lines[-1].get_color(), label=f"{name} (cells)")
        if h["init"].get("violation_mean") is not None:
            vm = [v for v in h["test_violation_mean"] if v is not None]
            axes[1].semilogy([0] + ep, np.maximum([h["init"]["violation_mean"]] + vm, 1e-16),
                             marker="o", label=f"{name} (mean)")
            vx = [v for v in h["test_violation_max"] if v is not None]
            axes[1].semilogy([0] + ep, np.maximum([h["init"]["violation_max"]] + vx, 1e-16),
                             ls="--", color=axes[1].lines[-1].get_color(), label=f"{name} (max)")
        color = axes[0].lines[-1].get_color()
        if h.get("epoch_cpu_time"):
            axes[2].plot(h["epoch"], h["epoch_cpu_time"], marker="o", color=color, label=f"{name} (CPU)")
        axes[2].plot(h["epoch"], h["epoch_time"], ls="--", alpha=0.6, color=color, label=f"{name} (wall)")
    axes[0].set(xlabel="epoch", ylabel="test error: boards with a wrong cell / cells", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="epoch", ylabel="test violation |s| (0 drawn at 1e-16)")
    axes[1].axhline(1e-6, color="gray", lw=0.8, ls=":")
    axes[2].set(xlabel="epoch", ylabel="training time per epoch [s]", yscale="log")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    size = results["config"]["size"] ** 2
    fig.suptitle(f"Sudoku {size}x{size}: n_train={results['config']['n_train']}, "
                 f"n_test={results['config']['n_test']}"
                 + (", A on the Sudoku pattern" if results["config"].get("pattern") == "sudoku" else ""))
    fig.tight_layout()
    path = os.path.join(out, "sudoku.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    train, test = make_dataset(args.size, args.n_train, args.n_test, seed=args.seed,
                               n_blanks=args.n_blanks)
    print(f"data: {len(train)} train / {len(test)} test {args.size ** 2}x{args.size ** 2} puzzles, "
          f"{(train.puzzles == 0).sum((1, 2)).mean():.1f} blanks on average "
          f"({time.perf_counter() - t0:.1f}s)")
    names = MODELS if args.model == "all" else (args.model,)
    results = {"config": vars(args), "models": {}}
    for name in names:
        _, hist = train_model(name, train, test, args, progress=not args.no_progress)
        results["models"][name] = hist
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    if not args.no_figures:
        print("figure:", make_figures(results, args.out))
    print("results:", os.path.join(args.out, "results.json"))
    return results


if __name__ == "__main__":
    main()
