"""Sudoku example (examples/sudoku): data generator, smoke runs of each model, and the learned-A
layer's constraint violation decreasing during training."""
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from examples.sudoku import data as sd  # noqa: E402
from examples.sudoku.layer import Pattern, qp_layer  # noqa: E402
from examples.sudoku.train import main, parse_args, train_model  # noqa: E402


@pytest.mark.parametrize("k", [2, 3])
def test_data_valid_and_consistent(k):
    train, test = sd.make_dataset(k, 6 if k == 2 else 3, 3 if k == 2 else 1, seed=1)
    N = k * k
    A = sd.sudoku_constraints(k)
    for ds in (train, test):
        for puz, sol in zip(ds.puzzles, ds.solutions):
            assert sd.is_valid_solution(sol, k)
            given = puz > 0
            assert np.array_equal(puz[given], sol[given])          # puzzle agrees with solution
            assert (~given).sum() == sd.default_blanks(k)          # blanks were removed
            assert sd.count_solutions(puz, k) == 1                 # and the solution is unique
        Y = ds.Y
        assert Y.shape == (len(ds), N ** 3)
        np.testing.assert_allclose(Y @ A.T, 1.0)                   # one-hot satisfies Sudoku rules
        np.testing.assert_array_equal(sd.decode(Y, k), ds.solutions)
        np.testing.assert_array_equal(ds.X.sum(1), (ds.puzzles > 0).sum((1, 2)))
    assert np.linalg.matrix_rank(A) == {2: 40, 3: 249}[k]
    # fixed seed -> same data
    again, _ = sd.make_dataset(k, 6 if k == 2 else 3, 3 if k == 2 else 1, seed=1)
    np.testing.assert_array_equal(again.puzzles, train.puzzles)


def test_invalid_board_detected():
    sol = sd.base_solution(2)
    assert sd.is_valid_solution(sol, 2)
    bad = sol.copy()
    bad[0, 0], bad[0, 1] = bad[0, 1], bad[0, 0]
    assert not sd.is_valid_solution(bad, 2)


@pytest.mark.parametrize("mode", ["loop", "block"])
@pytest.mark.parametrize("seed", [0, 3])      # seed 3: inconsistent constraints (closest feasible)
def test_layer_gradient_matches_finite_differences(seed, mode):
    m, n = 4, 7
    pat = Pattern.dense(m, n)
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(2, n, generator=g, dtype=torch.float64)
    a = torch.randn(pat.nnz, generator=g, dtype=torch.float64)
    b = torch.ones(m, dtype=torch.float64)
    w = [torch.randn(2, d, generator=g, dtype=torch.float64) for d in (n, m, n)]

    def f(a, b):
        outs = qp_layer(p, a, b, pat, eps=0.5, mode=mode)
        return sum((wi * o).sum() for wi, o in zip(w, outs))

    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    f(a1, b1).backward()
    h = 1e-6
    for j in range(pat.nnz):
        e = torch.zeros_like(a)
        e[j] = h
        fd = (f(a + e, b) - f(a - e, b)).item() / (2 * h)
        assert abs(fd - a1.grad[j].item()) < 1e-4 * (1 + abs(fd))
    for j in range(m):
        e = torch.zeros_like(b)
        e[j] = h
        fd = (f(a, b + e) - f(a, b - e)).item() / (2 * h)
        assert abs(fd - b1.grad[j].item()) < 1e-4 * (1 + abs(fd))


def test_block_layer_equals_loop():
    """The block-diagonal batch solve gives the per-puzzle solutions, shifts and gradients."""
    m, n, B = 5, 9, 4
    pat = Pattern.random_sparse(m, n, 2, np.random.default_rng(0))
    g = torch.Generator().manual_seed(1)
    p = torch.rand(B, n, generator=g, dtype=torch.float64)
    a = torch.rand(pat.nnz, generator=g, dtype=torch.float64)
    b = torch.rand(B, m, generator=g, dtype=torch.float64) + 0.5
    w = [torch.randn(B, d, generator=g, dtype=torch.float64) for d in (n, m, n)]
    res = {}
    for mode in ("loop", "block"):
        a1, b1, p1 = (t.clone().requires_grad_() for t in (a, b, p))
        outs = qp_layer(p1, a1, b1, pat, eps=0.3, settings=dict(eps_abs=1e-10), mode=mode)
        sum((wi * o).sum() for wi, o in zip(w, outs)).backward()
        res[mode] = [o.detach() for o in outs] + [a1.grad, b1.grad, p1.grad]
    assert res["loop"][1].abs().max() > 1e-3          # some elements are inconsistent
    for u, v in zip(res["loop"], res["block"]):
        np.testing.assert_allclose(v.numpy(), u.numpy(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model", ["feasible", "learned", "mlp"])
def test_smoke_two_epochs(model, tmp_path):
    res = main(["--size", "2", "--n-train", "8", "--n-test", "4", "--epochs", "2", "--batch-size", "4",
                "--model", model, "--out", str(tmp_path), "--no-progress", "--no-figures",
                "--eps-abs", "1e-6"])
    h = res["models"][model]
    assert len(h["train_loss"]) == 2 and np.all(np.isfinite(h["train_loss"]))
    assert all(0.0 <= e <= 1.0 for e in h["test_error"])
    if model != "mlp":
        assert all(np.isfinite(v) for v in h["test_violation_mean"])
    assert (tmp_path / "results.json").exists()


def test_learned_violation_decreases():
    args = parse_args(["--size", "2", "--n-train", "8", "--n-test", "4", "--epochs", "4", "--init", "normal",
                       "--batch-size", "8", "--lr", "0.05", "--penalty", "10", "--eps-abs", "1e-6",
                       "--no-progress", "--no-figures", "--seed", "0"])
    train, test = sd.make_dataset(2, args.n_train, args.n_test, seed=0)
    _, h = train_model("learned", train, test, args, progress=False, log=lambda *a: None)
    v0 = h["init"]["violation_mean"]
    v = h["test_violation_mean"]
    assert v0 > 0.1
    assert v[-1] < 0.5 * v0, (v0, v)


@pytest.mark.parametrize("k", [2, 3])
def test_sudoku_pattern(k):
    """--pattern sudoku: 4 nonzeros per column, all 4 N^2 rows, and the true constraint matrix
    lies on it (its values on the pattern reproduce it exactly)."""
    from examples.sudoku.models import make_model

    pat = Pattern.sudoku(k)
    S = sd.sudoku_constraints(k)
    assert pat.shape == S.shape == (4 * k ** 4, k ** 6)
    np.testing.assert_array_equal(np.diff(pat.indptr), 4)
    vals = pat.values_of(S)
    np.testing.assert_array_equal(pat.matrix(vals).toarray(), S)
    assert np.all(vals == 1.0)
    for name in ("feasible", "learned"):
        model = make_model(name, k, pattern="sudoku")
        assert model.pattern.shape == S.shape and model.pattern.nnz == 4 * k ** 6
        assert bool((model.a > 0).all())            # random positive init on the pattern
