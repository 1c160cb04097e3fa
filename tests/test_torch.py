"""Tests of the PyTorch layer :mod:`sparseqp.torch` (QPFunction, QPLayer)."""

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")

import sparseqp  # noqa: E402
from sparseqp import Status  # noqa: E402
from sparseqp.torch import (QPFunction, QPLayer, QPOptions, QPSolveError,  # noqa: E402
                            common_batch)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:proxsuite"),
]

F64 = torch.float64
NAMES = ("H", "g", "A", "b", "C", "l", "u")
# Tight tolerances for finite differences: eps_rel keeps the threshold just above the rounding
# floor of the dual residual (~1e-12 on these problems), max_iter makes a miss fail fast.
TIGHT = dict(eps_abs=1e-12, eps_rel=1e-13, max_iter=500)
TIGHT_CLOSEST = dict(eps_abs=3e-12, eps_rel=0.0, max_iter=500)
GRADCHECK = dict(eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# problems with a known solution and a strictly complementary active set
# ---------------------------------------------------------------------------------------------
def feasible_data(n=5, n_eq=2, n_in=4, seed=0, sparsity=0.0):
    """(H, g, A, b, C, l, u) as float64 numpy arrays: solution x* with one upper-active and one
    lower-active row (multipliers 1 and -0.7), the other rows inactive by a margin of 1."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    if sparsity:
        M[rng.random((n, n)) < sparsity] = 0.0
    H = M @ M.T / n + np.eye(n)
    A = rng.standard_normal((n_eq, n))
    C = rng.standard_normal((n_in, n))
    if sparsity:
        A[rng.random(A.shape) < sparsity] = 0.0
        C[rng.random(C.shape) < sparsity] = 0.0
    x = rng.standard_normal(n)
    y = rng.standard_normal(n_eq)
    z = np.zeros(n_in)
    l, u = C @ x - 1.0, C @ x + 1.0
    z[0], u[0] = 1.0, C[0] @ x
    z[1], l[1] = -0.7, C[1] @ x
    g = -(H @ x + A.T @ y + C.T @ z)
    return H, g, A, A @ x, C, l, u


def infeasible_dense_data(seed=0):
    """n = 3: four inequality rows positively spanning R^3 (perturbed tetrahedron normals) with
    negative offsets, so the constraints are inconsistent robustly under any small change of the
    data (a dense gradcheck perturbs every entry); finite l for proxsuite; one equality."""
    rng = np.random.default_rng(seed)
    n = 3
    M = rng.standard_normal((n, n))
    H = M @ M.T / n + np.eye(n)
    g = rng.standard_normal(n)
    C = (np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float)
         + 0.1 * rng.standard_normal((4, n)))
    u = -0.3 - 0.1 * rng.random(4)
    A = rng.standard_normal((1, n))
    return H, g, A, np.array([0.4]), C, np.full(4, -10.0), u


def infeasible_sparse_data(seed=0):
    """n = 5: three rows on (x0, x1) (triangle normals, negative offsets: inconsistent in that
    plane, robustly under changes of the stored entries), an inactive row and an equality on
    x1..x4, so that H, g, A, b act on the closest-feasible solution. Zeros are structural."""
    rng = np.random.default_rng(seed)
    n = 5
    M = rng.standard_normal((n, n))
    H = M @ M.T / n + np.eye(n)
    g = rng.standard_normal(n)
    a = 0.3 + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    C = np.zeros((4, n))
    C[:3, 0], C[:3, 1] = np.cos(a), np.sin(a)
    C[3, 2:] = rng.standard_normal(3)
    x = rng.standard_normal(n)
    l = np.array([-np.inf, -np.inf, -np.inf, C[3] @ x - 1.0])
    u = np.array([-0.3, -0.4, -0.2, C[3] @ x + 1.0])
    A = np.zeros((1, n))
    A[0, 1:] = rng.standard_normal(n - 1)
    return H, g, A, np.array([0.5]), C, l, u


def tensors(data, dtype=F64, grad=False):
    out = [torch.tensor(a, dtype=dtype) for a in data]
    return [t.requires_grad_() if grad else t for t in out]


def to_coo(M, duplicate=False):
    """Sparse COO tensor of a dense tensor's nonzeros (uncoalesced: first entry split in two)."""
    idx = M.nonzero().T
    vals = M[idx[0], idx[1]]
    if duplicate:
        idx = torch.cat([idx, idx[:, :1]], dim=1)
        vals = torch.cat([vals[:1] * 0.25, vals[1:], vals[:1] * 0.75])
    return idx, vals


def dense_of_coo(idx, vals, shape):
    return torch.sparse_coo_tensor(idx, vals, shape).to_dense()


def solve_core(data, **settings):
    H, g, A, b, C, l, u = [np.asarray(a, dtype=float) for a in data]
    return sparseqp.solve(sp.csc_matrix(H), g, sp.csc_matrix(A), b, sp.csc_matrix(C), l, u,
                          **settings)


def gradcheck(fn, inputs, fast_mode=False, **kw):
    return torch.autograd.gradcheck(fn, inputs, fast_mode=fast_mode, **{**GRADCHECK, **kw})


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------
def test_forward_matches_core_solver():
    data = feasible_data(seed=1)
    ref = solve_core(data, eps_abs=1e-10)
    layer = QPLayer(outputs=("x", "y", "z", "s_eq", "s_in"), eps_abs=1e-10)
    x, y, z, s_eq, s_in = layer(*tensors(data))
    np.testing.assert_allclose(x.numpy(), ref.x, atol=1e-8)
    np.testing.assert_allclose(y.numpy(), ref.y, atol=1e-7)
    np.testing.assert_allclose(z.numpy(), ref.z, atol=1e-7)
    assert not s_eq.any() and not s_in.any()
    assert layer.last_info["status"].item() == Status.SOLVED
    assert set(layer.last_info) >= {"status", "iterations", "n_factorizations", "shift_norm"}


def test_unbatched_arguments_broadcast_against_batched():
    H, g, A, b, C, l, u = tensors(feasible_data(seed=2))
    gb = torch.stack([g, 2 * g, -g])
    layer = QPLayer(eps_abs=1e-10)
    xb = layer(H, gb, A, b, C, l, u)
    assert xb.shape == (3, 5) and layer.last_info["status"].shape == (3,)
    for k in range(3):
        np.testing.assert_allclose(xb[k].numpy(), layer(H, gb[k], A, b, C, l, u).numpy(),
                                   atol=1e-8)


def test_nonsymmetric_h_enters_through_its_symmetric_part():
    H, g, A, b, C, l, u = tensors(feasible_data(seed=22))
    K = torch.randn(5, 5, dtype=F64)
    Hn = (H + K - K.T).requires_grad_()          # same symmetric part as H
    Hs = H.clone().requires_grad_()
    layer = QPLayer(eps_abs=1e-11)
    x_n = layer(Hn, g, A, b, C, l, u)
    x_s = layer(Hs, g, A, b, C, l, u)
    np.testing.assert_allclose(x_n.detach(), x_s.detach(), atol=1e-9)
    x_n.sum().backward()
    x_s.sum().backward()
    np.testing.assert_allclose(Hn.grad, Hs.grad, atol=1e-8)
    np.testing.assert_allclose(Hs.grad, Hs.grad.T, atol=1e-12)


def test_lp_and_optional_arguments():
    # H None (an LP), no equalities, only an upper bound
    g = torch.tensor([-1.0, -2.0], dtype=F64)
    C = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=F64)
    u = torch.tensor([1.0, 1.0, 0.0], dtype=F64)
    x = QPLayer(eps_abs=1e-10)(None, g, C=C, u=u)
    np.testing.assert_allclose(x.numpy(), [1.0, 1.0], atol=1e-7)


def test_infeasible_element_gives_closest_feasible_solution():
    data = infeasible_dense_data()
    ref = solve_core(data, eps_abs=1e-10)
    assert ref.status == Status.SOLVED_CLOSEST_FEASIBLE
    layer = QPLayer(outputs=("x", "s_eq", "s_in"), eps_abs=1e-10)
    x, s_eq, s_in = layer(*tensors(data))
    assert layer.last_info["status"].item() == Status.SOLVED_CLOSEST_FEASIBLE
    np.testing.assert_allclose(x.numpy(), ref.x, atol=1e-7)
    np.testing.assert_allclose(s_in.numpy(), ref.s_in, atol=1e-7)
    assert layer.last_info["shift_norm"].item() > 0.1


# ---------------------------------------------------------------------------------------------
# gradcheck: every input form
# ---------------------------------------------------------------------------------------------
def _fn(outputs=(0,), **settings):
    opts = QPOptions.make(**{**TIGHT, **settings})

    def fn(*args):
        out = QPFunction.apply(*args, opts)
        return tuple(out[k] for k in outputs)
    return fn


def test_gradcheck_dense_unbatched():
    args = tensors(feasible_data(n=4, n_eq=1, n_in=3, seed=3), grad=True)
    assert gradcheck(_fn(outputs=(0, 1, 2)), args)


def test_gradcheck_dense_batched_with_broadcast():
    H, g, A, b, C, l, u = tensors(feasible_data(n=4, n_eq=1, n_in=3, seed=4))
    g2 = torch.stack([g, g + 0.01 * torch.arange(4, dtype=F64)])
    args = [t.detach().clone().requires_grad_() for t in (H, g2, A, b, C, l, u)]
    assert gradcheck(_fn(outputs=(0, 2)), args, fast_mode=True)


def test_gradcheck_closest_feasible_dense():
    args = tensors(infeasible_dense_data(), grad=True)
    x, *_, status, _, _ = QPFunction.apply(*args, QPOptions.make(**TIGHT_CLOSEST))
    assert status.item() == Status.SOLVED_CLOSEST_FEASIBLE
    assert gradcheck(_fn(outputs=(0, 3, 4), **TIGHT_CLOSEST), args)


@pytest.mark.parametrize("duplicate", [False, True])
def test_gradcheck_coo_values(duplicate):
    H, g, A, b, C, l, u = tensors(feasible_data(n=4, n_eq=1, n_in=3, seed=5, sparsity=0.4))
    hi, hv = to_coo(H, duplicate)
    ci, cv = to_coo(C, duplicate)
    fn = _fn(outputs=(0, 2))

    def f(hv, cv, g):
        return fn(torch.sparse_coo_tensor(hi, hv, H.shape), g, A, b,
                  torch.sparse_coo_tensor(ci, cv, C.shape), l, u)
    assert gradcheck(f, (hv.requires_grad_(), cv.requires_grad_(), g.requires_grad_()))


def test_gradcheck_coo_leaf_masked():
    H, g, A, b, C, l, u = tensors(feasible_data(n=4, n_eq=1, n_in=3, seed=6, sparsity=0.4))
    Cs = C.to_sparse().coalesce().requires_grad_()
    As = A.to_sparse().coalesce().requires_grad_()
    fn = _fn()
    assert gradcheck(lambda A_, C_: fn(H, g, A_, b, C_, l, u), (As, Cs), masked=True,
                     check_undefined_grad=False)   # torch's undefined-grad probe lacks sparse ops


def test_gradcheck_csr_values_batched():
    H, g, A, b, C, l, u = tensors(feasible_data(n=4, n_eq=1, n_in=3, seed=7))
    Cb = torch.stack([C, C * 1.1])
    Cs = Cb.to_sparse_csr()
    crow, col, vals = Cs.crow_indices(), Cs.col_indices(), Cs.values()
    fn = _fn(outputs=(0,))

    def f(vals):
        return fn(H, g, A, b, torch.sparse_csr_tensor(crow, col, vals, Cb.shape), l, u)
    assert gradcheck(f, (vals.detach().clone().requires_grad_(),), fast_mode=True)


def test_gradcheck_pattern_fixed_unbatched_and_batched():
    Hd, g, Ad, b, Cd, l, u = feasible_data(n=4, n_eq=1, n_in=3, seed=8, sparsity=0.3)
    Hs, As, Cs = sp.csr_matrix(Hd), sp.csr_matrix(Ad), sp.csc_matrix(Cd)
    # warm_start=False: warm starts at this tolerance can stall in the core solver (the layer
    # then retries cold, which works but doubles the cost of the many gradcheck solves)
    layer = QPLayer(H=Hs, A=As, C=Cs, outputs=("x", "y"), warm_start=False, **TIGHT)
    hv, av, cv = (torch.tensor(M.data, dtype=F64) for M in (Hs, As, Cs))
    g_, b_, l_, u_ = (torch.tensor(v, dtype=F64) for v in (g, b, l, u))
    args = [t.clone().requires_grad_() for t in (hv, g_, av, b_, cv, l_, u_)]
    assert gradcheck(lambda *a: layer(*a), args)
    batched = [torch.stack([t, t]).detach().requires_grad_() for t in (hv, g_, av)]
    assert gradcheck(lambda H, g, A: layer(H, g, A, b_, cv, l_, u_), batched, fast_mode=True)


def test_gradcheck_pattern_fixed_closest_feasible():
    Hd, g, Ad, b, Cd, l, u = infeasible_sparse_data(seed=1)
    Hs, As, Cs = sp.coo_matrix(Hd), sp.coo_matrix(Ad), sp.coo_matrix(Cd)
    layer = QPLayer(H=Hs, A=As, C=Cs, outputs=("x", "s_eq", "s_in"), warm_start=False,
                    **TIGHT_CLOSEST)
    args = [torch.tensor(v, dtype=F64, requires_grad=True)
            for v in (Hs.data, g, As.data, b, Cs.data)]
    lt = torch.tensor(l, dtype=F64)
    ut = torch.tensor(u, dtype=F64, requires_grad=True)
    layer(*args, lt, ut)
    assert layer.last_info["status"].item() == Status.SOLVED_CLOSEST_FEASIBLE
    assert gradcheck(lambda H, g, A, b, C, u: layer(H, g, A, b, C, lt, u), [*args, ut])


# ---------------------------------------------------------------------------------------------
# the input forms agree
# ---------------------------------------------------------------------------------------------
def _outputs_and_grads(make_inputs, layer, loss_w):
    inputs = make_inputs()
    x, y, z = layer(*inputs)
    (x @ loss_w[0] + y @ loss_w[1] + z @ loss_w[2]).backward()
    return x.detach(), [None if t is None else t.grad for t in inputs]


def test_dense_sparse_and_pattern_fixed_forms_agree():
    data = feasible_data(n=6, n_eq=2, n_in=5, seed=9, sparsity=0.5)
    Hd, g, Ad, b, Cd, l, u = tensors(data)
    w = [torch.randn(6, dtype=F64), torch.randn(2, dtype=F64), torch.randn(5, dtype=F64)]
    outputs = ("x", "y", "z")

    def dense():
        return [t.clone().requires_grad_() for t in (Hd, g, Ad, b, Cd, l, u)]

    def coo():
        H, A, C = (M.to_sparse().requires_grad_() for M in (Hd, Ad, Cd))
        return [H, g.clone().requires_grad_(), A, b.clone().requires_grad_(), C,
                l.clone().requires_grad_(), u.clone().requires_grad_()]

    def csr():
        out = coo()
        for k in (0, 2, 4):
            out[k] = out[k].detach().to_sparse_csr().requires_grad_()
        return out

    pats = [sp.csr_matrix(M.numpy()) for M in (Hd, Ad, Cd)]

    def values():
        out = coo()
        for k, P in zip((0, 2, 4), pats):
            out[k] = torch.tensor(P.data, dtype=F64, requires_grad=True)
        return out

    x0, gd = _outputs_and_grads(dense, QPLayer(outputs=outputs, eps_abs=1e-11), w)
    for make, layer in ((coo, QPLayer(outputs=outputs, eps_abs=1e-11)),
                        (csr, QPLayer(outputs=outputs, eps_abs=1e-11)),
                        (values, QPLayer(*pats, outputs=outputs, eps_abs=1e-11))):
        x, grads = _outputs_and_grads(make, layer, w)
        np.testing.assert_allclose(x, x0, atol=1e-8)
        for k, (gs, gdn) in enumerate(zip(grads, gd)):
            if k in (1, 3, 5, 6):
                np.testing.assert_allclose(gs, gdn, atol=1e-6, err_msg=NAMES[k])
                continue
            M = [Hd, Ad, Cd][k // 2]
            mask = M != 0
            if make is values:
                P = pats[k // 2].tocoo()
                expect = gdn[torch.as_tensor(P.row), torch.as_tensor(P.col)]
                np.testing.assert_allclose(gs, expect, atol=1e-6, err_msg=NAMES[k])
                continue
            assert gs.layout == (torch.sparse_coo if make is coo else torch.sparse_csr)
            np.testing.assert_allclose(gs.to_dense()[mask], gdn[mask], atol=1e-6,
                                       err_msg=NAMES[k])
            assert not gs.to_dense()[~mask].any()


def test_coo_gradient_keeps_input_pattern_with_duplicates():
    H, g, A, b, C, l, u = tensors(feasible_data(n=4, n_eq=1, n_in=3, seed=10))
    ci, cv = to_coo(C, duplicate=True)
    Cs = torch.sparse_coo_tensor(ci, cv, C.shape).requires_grad_()
    Cd = C.clone().requires_grad_()
    layer = QPLayer(eps_abs=1e-11)
    layer(H, g, A, b, Cs, l, u).sum().backward()
    layer(H, g, A, b, Cd, l, u).sum().backward()
    grad = Cs.grad
    assert grad.layout == torch.sparse_coo and not grad.is_coalesced()
    assert torch.equal(grad._indices(), ci)
    np.testing.assert_allclose(grad.to_dense(), Cd.grad, atol=1e-7)
    # through the values, each duplicate's gradient is that of the summed entry
    cv2 = cv.clone().requires_grad_()
    layer(H, g, A, b, torch.sparse_coo_tensor(ci, cv2, C.shape), l, u).sum().backward()
    np.testing.assert_allclose(cv2.grad[-1], cv2.grad[0], atol=1e-9)
    np.testing.assert_allclose(cv2.grad[0], Cd.grad[ci[0, 0], ci[1, 0]], atol=1e-7)


def test_batched_coo_with_different_patterns():
    data = [feasible_data(n=4, n_eq=1, n_in=3, seed=s, sparsity=0.4) for s in (11, 12)]
    Hs = [torch.tensor(d[0], dtype=F64) for d in data]
    Cb = torch.stack([torch.tensor(d[4], dtype=F64) for d in data])
    Cs = Cb.to_sparse().requires_grad_()
    rest = [torch.stack([torch.tensor(d[k], dtype=F64) for d in data]) for k in (1, 2, 3, 5, 6)]
    g, A, b, l, u = rest
    x = QPLayer(eps_abs=1e-11)(torch.stack(Hs), g, A, b, Cs, l, u)
    x.sum().backward()
    for k in range(2):
        ref = solve_core(data[k], eps_abs=1e-11)
        np.testing.assert_allclose(x[k].detach(), ref.x, atol=1e-8)
    assert Cs.grad.layout == torch.sparse_coo
    assert torch.equal(Cs.grad._indices(), Cs._indices())


def test_agrees_with_proxsuite_qplayer():
    pytest.importorskip("proxsuite")
    qplayer = pytest.importorskip("proxsuite.torch.qplayer")
    data = feasible_data(n=5, n_eq=2, n_in=4, seed=13)
    w = torch.randn(5, dtype=F64)
    ours = tensors(data, grad=True)
    x = QPLayer(eps_abs=1e-10)(*ours)
    (x @ w).backward()
    theirs = tensors(data, grad=True)
    xp = qplayer.QPFunction(eps=1e-10, eps_backward=1e-10)(*theirs)[0][0]
    (xp @ w).backward()
    np.testing.assert_allclose(x.detach(), xp.detach(), atol=1e-6)
    for k in range(7):
        np.testing.assert_allclose(ours[k].grad, theirs[k].grad, atol=1e-4, err_msg=NAMES[k])


def test_agrees_with_proxsuite_qplayer_infeasible():
    pytest.importorskip("proxsuite")
    qplayer = pytest.importorskip("proxsuite.torch.qplayer")
    # Two copies of one row with disjoint finite ranges: the closest-feasible point is the
    # midway hyperplane whatever equal row weights a solver uses (proxsuite measures the shift
    # after its own scaling; where row scalings differ its point is not the l2-closest one, ours
    # is). A and C gradients are not compared: copies of a row are not a stable structure.
    rng = np.random.default_rng(3)
    H, g, A, b, _, _, _ = feasible_data(n=4, n_eq=1, n_in=2, seed=3)
    c, r = rng.standard_normal(4), rng.standard_normal(4)
    data = (H, g, A, b, np.vstack([c, c, r]), np.array([-10.0, 0.5, -5.0]),
            np.array([-0.5, 10.0, 5.0]))
    w = torch.randn(4, dtype=F64)
    ours = tensors(data, grad=True)
    layer = QPLayer(outputs=("x", "s_eq", "s_in"), eps_abs=1e-10)
    x, s_eq, s_in = layer(*ours)
    assert layer.last_info["status"].item() == Status.SOLVED_CLOSEST_FEASIBLE
    (x @ w).backward()
    theirs = tensors(data, grad=True)
    fn = qplayer.QPFunction(eps=1e-10, eps_backward=1e-10, structural_feasibility=False)
    xp, _, _, se_p, si_p = fn(*theirs)
    try:
        (xp[0] @ w).backward()
    except TypeError as exc:  # proxsuite 0.8's infeasible backward fails under numpy < 2
        pytest.skip(f"the oracle (proxsuite's QPLayer backward) raised: {exc}")
    np.testing.assert_allclose(x.detach(), xp[0].detach(), atol=1e-6)
    np.testing.assert_allclose(s_in.detach(), si_p[0].detach(), atol=1e-6)
    # proxsuite's backward is a regularized solve: agreement to ~1e-3
    for k in (0, 1, 3, 5, 6):
        np.testing.assert_allclose(ours[k].grad, theirs[k].grad, rtol=2e-3, atol=2e-3,
                                   err_msg=NAMES[k])


# ---------------------------------------------------------------------------------------------
# pattern-fixed layer: solver reuse, warm start, stale contexts
# ---------------------------------------------------------------------------------------------
def test_pattern_fixed_layer_reuses_solvers():
    Hd, g, Ad, b, Cd, l, u = feasible_data(n=6, n_eq=2, n_in=4, seed=14)
    pats = [sp.csc_matrix(M) for M in (Hd, Ad, Cd)]
    layer = QPLayer(*pats, eps_abs=1e-10)
    vals = [torch.tensor(P.data, dtype=F64) for P in pats]
    gt = torch.tensor(g, dtype=F64)
    rest = [torch.tensor(v, dtype=F64) for v in (b, l, u)]
    x1 = layer(vals[0], gt, vals[1], rest[0], vals[2], *rest[1:])
    assert layer.last_info["n_symbolic"].item() >= 1
    it1 = layer.last_info["iterations"].item()
    x2 = layer(vals[0], gt + 1e-6, vals[1], rest[0], vals[2], *rest[1:])
    assert layer.last_info["n_symbolic"].item() == 0      # Solver.update, no new analysis
    assert layer.last_info["iterations"].item() <= it1    # warm start
    np.testing.assert_allclose(x1, x2, atol=1e-4)


def test_layer_copies_and_pickles_without_its_solvers():
    import copy
    import pickle

    Hd, g, Ad, b, Cd, l, u = feasible_data(seed=23)
    pats = [sp.csc_matrix(M) for M in (Hd, Ad, Cd)]
    layer = QPLayer(*pats, outputs=("x", "z"), eps_abs=1e-10)
    args = [torch.tensor(P.data, dtype=F64) for P in pats]
    g_, b_, l_, u_ = (torch.tensor(v, dtype=F64) for v in (g, b, l, u))
    x, _ = layer(args[0], g_, args[1], b_, args[2], l_, u_)
    for other in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert other.options.cache is other._cache and other._cache is not layer._cache
        x2, _ = other(args[0], g_, args[1], b_, args[2], l_, u_)
        np.testing.assert_allclose(x2, x, atol=1e-9)


def test_backward_after_a_later_forward_is_still_correct():
    Hd, g, Ad, b, Cd, l, u = feasible_data(n=5, n_eq=2, n_in=4, seed=15)
    pats = [sp.csc_matrix(M) for M in (Hd, Ad, Cd)]
    layer = QPLayer(*pats, eps_abs=1e-11)
    vals = [torch.tensor(P.data, dtype=F64) for P in pats]
    g1 = torch.tensor(g, dtype=F64, requires_grad=True)
    rest = [torch.tensor(v, dtype=F64) for v in (b, l, u)]
    x1 = layer(vals[0], g1, vals[1], rest[0], vals[2], *rest[1:])
    layer(vals[0] * 2, g1.detach() * 3, vals[1], rest[0], vals[2], *rest[1:])   # updates solvers
    x1.sum().backward()
    g2 = torch.tensor(g, dtype=F64, requires_grad=True)
    fresh = QPLayer(*pats, eps_abs=1e-11)
    fresh(vals[0], g2, vals[1], rest[0], vals[2], *rest[1:]).sum().backward()
    np.testing.assert_allclose(g1.grad, g2.grad, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# training: learning a constraint matrix through infeasible early iterates
# ---------------------------------------------------------------------------------------------
def _triangle(angle, radius):
    """Rows of C = the outer normals of an equilateral triangle, u = radius (C rows sum to 0:
    with radius < 0 the set {C x <= u} is empty, robustly under small changes of C)."""
    a = angle + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
    return (torch.tensor(np.c_[np.cos(a), np.sin(a)], dtype=F64),
            torch.full((3,), float(radius), dtype=F64))


def test_training_learns_constraints():
    torch.manual_seed(0)
    H = torch.eye(2, dtype=F64)
    C_true, u_true = _triangle(0.0, 1.0)
    teacher = QPLayer(eps_abs=1e-9)

    def batch(k):
        gs = 1.5 * torch.randn(k, 2, dtype=F64)
        return gs, teacher(H, gs, C=C_true, u=u_true).detach()

    g_train, x_train = batch(16)
    g_test, x_test = batch(32)
    C0, u0 = _triangle(0.2, -0.3)           # rotated and empty: closest-feasible at first
    C = (C0 + 0.05 * torch.randn(3, 2, dtype=F64)).requires_grad_()
    u = u0.clone().requires_grad_()
    layer = QPLayer(outputs=("x", "s_in"), eps_abs=1e-9)
    opt = torch.optim.Adam([C, u], lr=0.1)
    losses, n_infeasible = [], []
    for _ in range(40):
        opt.zero_grad()
        x, s_in = layer(H, g_train, C=C, u=u)
        closest = layer.last_info["status"] == Status.SOLVED_CLOSEST_FEASIBLE
        n_infeasible.append(int(closest.sum()))
        loss = ((x - x_train) ** 2).mean() + (s_in ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert n_infeasible[0] == 16 and n_infeasible[-1] == 0
    assert losses[-1] < 0.15 * losses[0]
    x_hat = layer(H, g_test, C=C.detach(), u=u.detach())[0]
    assert (layer.last_info["status"] == Status.SOLVED).all()
    assert ((x_hat - x_test) ** 2).mean() < 0.2 * losses[0]


# ---------------------------------------------------------------------------------------------
# failures
# ---------------------------------------------------------------------------------------------
def _hard_batch():
    """Batch of 2: element 1 needs many iterations (max_iter=1 makes it fail)."""
    data = feasible_data(n=5, n_eq=2, n_in=4, seed=16)
    H, g, A, b, C, l, u = tensors(data)
    return H, torch.stack([g, g * 40]).requires_grad_(), A, b, C, l, u


def test_failed_element_warns_and_gets_zero_gradient():
    H, g, A, b, C, l, u = _hard_batch()
    layer = QPLayer(eps_abs=1e-10, max_iter=1, active_set_polish=False)
    with pytest.warns(RuntimeWarning, match="failed"):
        x = layer(H, g, A, b, C, l, u)
    status = layer.last_info["status"]
    failed = status != Status.SOLVED
    assert failed.any(), status
    assert torch.isfinite(x).all()
    with pytest.warns(RuntimeWarning, match="zero"):
        x.sum().backward()
    assert torch.isfinite(g.grad).all()
    assert not g.grad[failed].any()


def test_failed_element_raises_on_request():
    H, g, A, b, C, l, u = _hard_batch()
    layer = QPLayer(eps_abs=1e-10, max_iter=1, active_set_polish=False, on_failure="raise")
    with pytest.raises(QPSolveError, match="MAX_ITER_REACHED"):
        layer(H, g, A, b, C, l, u)


def test_infeasible_raise_mode():
    layer = QPLayer(infeasible="raise")
    with pytest.raises(QPSolveError, match="infeasible"):
        layer(*tensors(infeasible_dense_data()))


def test_closest_feasible_multiplier_cotangent_warns():
    layer = QPLayer(outputs=("x", "z"), eps_abs=1e-10)
    args = tensors(infeasible_dense_data(), grad=True)
    x, z = layer(*args)
    with pytest.warns(RuntimeWarning, match="not unique"):
        (x.sum() + z.sum()).backward()
    assert torch.isfinite(args[1].grad).all()


# ---------------------------------------------------------------------------------------------
# dtypes and devices
# ---------------------------------------------------------------------------------------------
def test_float32_round_trip():
    data = feasible_data(seed=17)
    args32 = tensors(data, dtype=torch.float32, grad=True)
    args64 = tensors(data, grad=True)
    layer = QPLayer(outputs=("x", "y"), eps_abs=1e-10)
    x32, y32 = layer(*args32)
    assert x32.dtype == torch.float32 and y32.dtype == torch.float32
    x64, _ = layer(*args64)
    x32.sum().backward()
    x64.sum().backward()
    for a32, a64 in zip(args32, args64):
        assert a32.grad.dtype == torch.float32
        np.testing.assert_allclose(a32.grad.double(), a64.grad, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x32.double().detach(), x64.detach(), rtol=1e-5, atol=1e-5)


def test_mixed_dtypes_promote():
    H, g, A, b, C, l, u = tensors(feasible_data(seed=18))
    x = QPLayer()(H.float(), g, A.float(), b, C, l.float(), u)
    assert x.dtype == F64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_round_trip():
    dev = torch.device("cuda")
    args = [t.to(dev).requires_grad_() for t in tensors(feasible_data(seed=19))]
    x = QPLayer(eps_abs=1e-10)(*args)
    assert x.device.type == "cuda"
    x.sum().backward()
    assert all(a.grad.device.type == "cuda" for a in args)
    Cs = args[4].detach().to_sparse().requires_grad_()
    QPLayer()(args[0], args[1], args[2], args[3], Cs, args[5], args[6]).sum().backward()
    assert Cs.grad.device.type == "cuda" and Cs.grad.layout == torch.sparse_coo


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def _args():
    return tensors(feasible_data(seed=20))


def test_batch_size_mismatch_names_both_arguments():
    H, g, A, b, C, l, u = _args()
    with pytest.raises(ValueError, match="g has batch size 2 but b has 3|b has 3"):
        QPLayer()(H, torch.stack([g, g]), A, torch.stack([b, b, b]), C, l, u)
    with pytest.raises(ValueError, match="batch sizes differ"):
        common_batch([("g", 2), ("H", None), ("C", 4)])


@pytest.mark.parametrize("which,bad,match", [
    (0, lambda t: t[:, :-1], "H must be square"),
    (0, lambda t: t[:-1, :-1], "H has shape"),
    (2, lambda t: t[:, :-1], "A has shape"),
    (3, lambda t: t[:-1], "b has length"),
    (4, lambda t: t[:, :-1], "C has shape"),
    (5, lambda t: t[:-1], "l has length"),
    (0, lambda t: t[None, None], "H must have shape"),
    (1, lambda t: torch.full_like(t, float("nan")), "g contains NaN"),
    (1, lambda t: torch.full_like(t, float("inf")), r"g contains \+inf"),
    (4, lambda t: t.masked_fill(t > 0, float("nan")), "C contains NaN"),
    (6, lambda t: torch.full_like(t, -float("inf")), r"u contains -inf"),
    (5, lambda t: t + 10.0, "l > u"),
    (2, lambda t: t.long(), "A must have a floating dtype"),
    (1, lambda t: t.int(), "g must have a floating dtype"),
    (0, lambda t: t.numpy(), "H must be a torch.Tensor"),
])
def test_bad_argument_is_named(which, bad, match):
    args = _args()
    args[which] = bad(args[which])
    with pytest.raises((ValueError, TypeError), match=match):
        QPLayer()(*args)


def test_nonconvex_element_is_named():
    H, g, A, b, C, l, u = _args()
    Hb = torch.stack([H, -H])
    with pytest.raises(ValueError, match="batch element 1: H is not positive semidefinite"):
        QPLayer()(Hb, g, A, b, C, l, u)


def test_missing_partners():
    H, g, A, b, C, l, u = _args()
    with pytest.raises(ValueError, match="A is given but b is None"):
        QPLayer()(H, g, A, None, C, l, u)
    with pytest.raises(ValueError, match="b is given but A is None"):
        QPLayer()(H, g, None, b, C, l, u)
    with pytest.raises(ValueError, match="neither l nor u"):
        QPLayer()(H, g, A, b, C)
    with pytest.raises(ValueError, match="g is required"):
        QPLayer()(H, None)


def test_pattern_fixed_rejects_changed_pattern():
    Hd, g, Ad, b, Cd, l, u = feasible_data(seed=21, sparsity=0.5)
    pats = [sp.csr_matrix(M) for M in (Hd, Ad, Cd)]
    layer = QPLayer(*pats)
    vals = [torch.tensor(P.data, dtype=F64, requires_grad=True) for P in pats]
    g_, b_, l_, u_ = (torch.tensor(v, dtype=F64) for v in (g, b, l, u))
    layer(vals[0], g_, vals[1], b_, vals[2], l_, u_)
    more = torch.cat([vals[2], torch.ones(1, dtype=F64)])
    with pytest.raises(ValueError, match="C: expected .* values .* pattern"):
        layer(vals[0], g_, vals[1], b_, more, l_, u_)
    with pytest.raises(TypeError, match="H: this layer was built from a fixed sparsity pattern"):
        layer(torch.tensor(Hd).to_sparse(), g_, vals[1], b_, vals[2], l_, u_)
    with pytest.raises(ValueError, match="A values are required"):
        layer(vals[0], g_, None, b_, vals[2], l_, u_)


def test_bad_options():
    with pytest.raises(ValueError, match="unknown setting"):
        QPLayer(eps=1e-3)
    with pytest.raises(ValueError, match="infeasible must be one of"):
        QPLayer(infeasible="certificate")
    with pytest.raises(ValueError, match="on_failure"):
        QPLayer(on_failure="skip")
    with pytest.raises(ValueError, match="unknown output"):
        QPLayer(outputs=("x", "lam"))
    with pytest.raises(ValueError, match="n_jobs"):
        QPLayer(n_jobs=0)
    with pytest.raises(ValueError, match="n_jobs"):
        QPLayer(n_jobs=1.5)
    with pytest.raises(TypeError, match="pattern"):
        QPLayer(H=np.eye(3))


def test_n_jobs_uses_solve_batch():
    pytest.importorskip("sparseqp.batch")
    H, g, A, b, C, l, u = _args()
    g2 = torch.stack([g, -g, 2 * g]).requires_grad_()
    g3 = g2.detach().clone().requires_grad_()
    x = QPLayer(n_jobs=2, eps_abs=1e-10)(H, g2, A, b, C, l, u)
    ref = QPLayer(eps_abs=1e-10)(H, g3, A, b, C, l, u)
    np.testing.assert_allclose(x.detach(), ref.detach(), atol=1e-7)
    x.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(g2.grad, g3.grad, atol=1e-6)
