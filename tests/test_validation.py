"""Bad input: every documented error is raised, with a message naming the culprit argument."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import sparseqp
from sparseqp.problem import make_problem
from sparseqp.status import Status


@pytest.fixture
def data():
    """A small valid problem as a dict of keyword arguments (fresh copies per test)."""
    rng = np.random.default_rng(0)
    n, m, p = 4, 2, 3
    M = rng.standard_normal((n, n))
    H = sp.csc_matrix(M @ M.T + np.eye(n))
    A = sp.csc_matrix(rng.standard_normal((m, n)))
    C = sp.csc_matrix(rng.standard_normal((p, n)))
    xf = rng.standard_normal(n)
    return dict(H=H, g=rng.standard_normal(n), A=A, b=A @ xf, C=C,
                l=C @ xf - 1.0, u=C @ xf + 1.0)


def _solve(d, **settings):
    return sparseqp.solve(d["H"], d["g"], d["A"], d["b"], d["C"], d["l"], d["u"], **settings)


def test_valid_data_solves(data):
    r = _solve(data)
    assert r.status == Status.SOLVED


# ----------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg,bad,match", [
    ("H", lambda d: sp.csc_matrix(np.eye(5)), r"\bH\b"),
    ("H", lambda d: sp.csc_matrix(np.ones((4, 3))), r"\bH\b.*square|square.*\bH\b"),
    ("H", lambda d: np.ones((4, 5)), r"\bH\b.*square|square.*\bH\b"),
    ("H", lambda d: np.ones(4), r"\bH\b"),
    ("g", lambda d: np.ones(5), r"\b(g|H)\b"),
    ("g", lambda d: np.ones((4, 2)), r"\bg\b"),
    ("A", lambda d: sp.csc_matrix(np.ones((2, 5))), r"\bA\b"),
    ("A", lambda d: np.ones(4), r"\bA\b"),
    ("b", lambda d: np.ones(3), r"\bb\b"),
    ("b", lambda d: np.ones((2, 2)), r"\bb\b"),
    ("C", lambda d: sp.csc_matrix(np.ones((3, 3))), r"\bC\b"),
    ("l", lambda d: np.zeros(2), r"\bl\b"),
    ("u", lambda d: np.zeros(4), r"\bu\b"),
])
def test_wrong_shapes(data, arg, bad, match):
    data[arg] = bad(data)
    with pytest.raises(ValueError, match=match):
        _solve(data)


def test_wrong_shapes_warm_start(data):
    with pytest.raises(ValueError, match=r"\bx0\b"):
        _solve(data, x0=np.zeros(5))
    with pytest.raises(ValueError, match=r"\by0\b"):
        _solve(data, y0=np.zeros(3))
    with pytest.raises(ValueError, match=r"\bz0\b"):
        _solve(data, z0=np.zeros(1))


def test_nan_warm_start(data):
    with pytest.raises(ValueError, match=r"\bx0\b"):
        _solve(data, x0=np.full(4, np.nan))


# ----------------------------------------------------------------------------------------------
# NaN / inf
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("arg", ["H", "g", "A", "b", "C"])
def test_nan_inf_in_data(data, arg, value):
    v = data[arg]
    if sp.issparse(v):
        v = v.copy()
        v.data[0] = value
        if arg == "H":  # keep it symmetric so that the NaN/inf is the only error
            v = v.tolil()
            v[0, 0] = value
            v = v.tocsc()
    else:
        v = v.copy()
        v[0] = value
    data[arg] = v
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        _solve(data)


@pytest.mark.parametrize("arg", ["l", "u"])
def test_nan_in_bounds(data, arg):
    data[arg] = data[arg].copy()
    data[arg][1] = np.nan
    with pytest.raises(ValueError, match=rf"\b{arg}\b"):
        _solve(data)


def test_wrong_infinite_bounds(data):
    d = dict(data)
    d["l"] = d["l"].copy()
    d["l"][0] = np.inf
    with pytest.raises(ValueError, match=r"\bl\b"):
        _solve(d)
    d = dict(data)
    d["u"] = d["u"].copy()
    d["u"][0] = -np.inf
    with pytest.raises(ValueError, match=r"\bu\b"):
        _solve(d)


def test_infinite_bounds_are_fine(data):
    data["l"] = np.full(3, -np.inf)
    data["u"] = np.full(3, np.inf)
    assert _solve(data).status == Status.SOLVED


def test_l_greater_than_u(data):
    data["l"] = data["u"] + 0.5
    with pytest.raises(ValueError, match=r"l\s*>\s*u"):
        _solve(data)


# ----------------------------------------------------------------------------------------------
# H symmetry / dtype
# ----------------------------------------------------------------------------------------------
def test_nonsymmetric_H(data):
    H = data["H"].toarray()
    H[0, 1] += 1.0
    data["H"] = sp.csc_matrix(H)
    with pytest.raises(ValueError, match=r"\bH\b.*symmetric"):
        _solve(data)


def test_upper_triangular_H_rejected_as_nonsymmetric(data):
    data["H"] = sp.triu(data["H"], format="csc")
    with pytest.raises(ValueError, match=r"\bH\b.*symmetric"):
        _solve(data)


@pytest.mark.parametrize("arg,bad,exc", [
    ("H", lambda d: d["H"].toarray().astype(complex), TypeError),
    ("H", lambda d: sp.csc_matrix(d["H"].toarray().astype(complex)), TypeError),
    ("H", lambda d: np.full((4, 4), "a"), TypeError),
    ("g", lambda d: ["a", "b", "c", "d"], TypeError),
    ("g", lambda d: np.array([1, 2, 3, 4], dtype=object) * 1j, TypeError),
    ("A", lambda d: np.array([["1", "2", "3", "4"], ["1", "2", "3", "4"]]), TypeError),
    ("b", lambda d: np.array(["x", "y"]), TypeError),
    ("C", lambda d: sp.csc_matrix(d["C"].toarray().astype(np.complex128)), TypeError),
    ("l", lambda d: ["x"] * 3, TypeError),
    ("u", lambda d: np.array([None, None, None]), TypeError),
    ("g", lambda d: [[1.0, 2.0], [3.0]], (TypeError, ValueError)),
])
def test_non_numeric(data, arg, bad, exc):
    data[arg] = bad(data)
    with pytest.raises(exc, match=rf"\b{arg}\b"):
        _solve(data)


def test_integer_and_bool_data_accepted(data):
    r = sparseqp.solve(np.eye(3, dtype=int), np.array([1, -2, 3]), C=np.eye(3, dtype=bool),
                       l=[-1, -1, -1], u=[1, 1, 1])
    assert r.status == Status.SOLVED
    np.testing.assert_allclose(r.x, [-1.0, 1.0, -1.0], atol=1e-8)


# ----------------------------------------------------------------------------------------------
# missing partners
# ----------------------------------------------------------------------------------------------
def test_missing_partners(data):
    H, g, A, b, C, l, u = (data[k] for k in "H g A b C l u".split())
    with pytest.raises(ValueError, match=r"\bb\b"):
        sparseqp.solve(H, g, A, None, C, l, u)
    with pytest.raises(ValueError, match=r"\b(A|b)\b"):
        sparseqp.solve(H, g, None, b, C, l, u)
    with pytest.raises(ValueError, match=r"\b(C|l|u)\b"):
        sparseqp.solve(H, g, A, b, None, l, u)
    with pytest.raises(ValueError, match=r"\b(l|u)\b"):
        sparseqp.solve(H, g, A, b, C, None, None)


def test_one_sided_bounds(data):
    H, g, A, b, C, l, u = (data[k] for k in "H g A b C l u".split())
    r1 = sparseqp.solve(H, g, A, b, C, None, u)
    r2 = sparseqp.solve(H, g, A, b, C, np.full(3, -np.inf), u)
    assert r1.status == r2.status == Status.SOLVED
    np.testing.assert_allclose(r1.x, r2.x, atol=1e-10)
    r3 = sparseqp.solve(H, g, A, b, C, l, None)
    assert r3.status == Status.SOLVED


# ----------------------------------------------------------------------------------------------
# settings
# ----------------------------------------------------------------------------------------------
def test_unknown_setting(data):
    with pytest.raises(ValueError, match="eps_absolute"):
        _solve(data, eps_absolute=1e-6)
    with pytest.raises(ValueError, match="maxiter"):
        sparseqp.Solver(*(data[k] for k in "H g A b C l u".split()), maxiter=3)


@pytest.mark.parametrize("name,value,exc", [
    ("eps_abs", -1.0, ValueError),
    ("eps_abs", float("nan"), (TypeError, ValueError)),
    ("eps_rel", -1e-3, ValueError),
    ("eps_gap_rel", -1e-9, ValueError),
    ("eps_gap_rel", float("inf"), ValueError),
    ("max_iter", 0, ValueError),
    ("max_iter", 2.5, ValueError),
    ("max_iter_in", 0, ValueError),
    ("time_limit", -1.0, ValueError),
    ("time_limit", 0.0, ValueError),
    ("infeasible", "ignore", ValueError),
    ("rho", 0.0, ValueError),
    ("mu_update_factor", 1.5, ValueError),
    ("ruiz_iter", -1, ValueError),
    ("eps_abs", "small", TypeError),
    ("active_set_polish", "no", TypeError),
    ("check_duality_gap", None, TypeError),
])
def test_bad_setting_values(data, name, value, exc):
    with pytest.raises(exc, match=name):
        _solve(data, **{name: value})


def test_settings_with_problem_argument(data):
    P = make_problem(*(data[k] for k in "H g A b C l u".split()))
    with pytest.raises(ValueError, match="not_a_setting"):
        sparseqp.solve(P, not_a_setting=1)
    r = sparseqp.solve(P, eps_abs=1e-6, max_iter=500)
    assert r.status == Status.SOLVED


def test_problem_plus_data_arguments_rejected(data):
    P = make_problem(*(data[k] for k in "H g A b C l u".split()))
    with pytest.raises((TypeError, ValueError)):
        sparseqp.solve(P, data["g"])


# ----------------------------------------------------------------------------------------------
# Solver.update
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def solver(data):
    S = sparseqp.Solver(*(data[k] for k in "H g A b C l u".split()))
    S.solve()
    return S


def _sparse_solver():
    H = sp.diags([2.0, 3.0, 4.0, 5.0], format="csc")
    A = sp.csc_matrix(np.array([[1.0, 0.0, 1.0, 0.0]]))
    C = sp.csc_matrix(np.array([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]]))
    g = np.array([1.0, -1.0, 0.5, 2.0])
    S = sparseqp.Solver(H, g, A, [1.0], C, [-1.0, -1.0], [1.0, 1.0])
    assert S.solve().status == Status.SOLVED
    return S, (H, g, A, C)


def test_update_different_pattern_raises():
    S, (H, g, A, C) = _sparse_solver()
    A2 = A.toarray()
    A2[0, 1] = 1.0  # an entry outside the pattern
    with pytest.raises(ValueError, match=r"\bA\b"):
        S.update(A=sp.csc_matrix(A2))
    H2 = H.toarray()
    H2[0, 1] = H2[1, 0] = 0.5
    with pytest.raises(ValueError, match=r"\bH\b"):
        S.update(H=sp.csc_matrix(H2))
    C2 = C.toarray()
    C2[0, 0] = 3.0
    with pytest.raises(ValueError, match=r"\bC\b"):
        S.update(C=C2)
    # the solver still works and is unchanged
    r = S.solve()
    assert r.status == Status.SOLVED
    r0 = sparseqp.solve(H, g, A, [1.0], C, [-1.0, -1.0], [1.0, 1.0])
    np.testing.assert_allclose(r.x, r0.x, atol=1e-8)


def test_update_subset_of_pattern_is_allowed():
    """Entries of the old pattern missing from the new matrix are zeros (documented)."""
    S, (H, g, A, C) = _sparse_solver()
    C2 = C.toarray()
    C2[1, 3] = 0.0
    S.update(C=sp.csc_matrix(C2))
    r = S.solve()
    r0 = sparseqp.solve(H, g, A, [1.0], C2, [-1.0, -1.0], [1.0, 1.0])
    assert r.status == r0.status == Status.SOLVED
    np.testing.assert_allclose(r.x, r0.x, atol=1e-8)


def test_update_wrong_shape_raises():
    S, (H, g, A, C) = _sparse_solver()
    with pytest.raises(ValueError, match=r"\bA\b"):
        S.update(A=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"\bH\b"):
        S.update(H=sp.eye(5))


def test_update_wrong_values_raise(data, solver):
    with pytest.raises(ValueError, match=r"\bg\b"):
        solver.update(g=np.ones(5))
    with pytest.raises(ValueError, match=r"\bb\b"):
        solver.update(b=[np.nan, 0.0])
    with pytest.raises(ValueError, match=r"l\s*>\s*u|\bl\b|\bu\b"):
        solver.update(l=data["u"] + 1.0)
    with pytest.raises(ValueError, match=r"\bH\b.*symmetric"):
        H = data["H"].copy().tolil()
        H[0, 1] = H[0, 1] + 1.0
        solver.update(H=H.tocsc())
    # the solver is still usable after rejected updates, and unchanged
    r = solver.solve()
    assert r.status == Status.SOLVED
    r0 = _solve(data)
    np.testing.assert_allclose(r.x, r0.x, atol=1e-8)


def test_update_l_u_consistency_checked_against_current(data, solver):
    """Updating u alone below the current l is an error."""
    with pytest.raises(ValueError, match=r"l\s*>\s*u|\bu\b"):
        solver.update(u=data["l"] - 1.0)
