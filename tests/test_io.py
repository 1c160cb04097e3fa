"""Tests of :mod:`sparseqp.io`: QPS / MPS reader and writer, qpbenchmark ``.mat`` reader.

All data files are in ``tests/data`` (provenance and optima in ``tests/data/README.md``).
"""
from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import sparseqp
from sparseqp.io import (QPSFormatError, read_mat, read_mps, read_problem, read_qps,
                         write_qps)
from sparseqp.problem import make_problem

DATA = Path(__file__).parent / "data"
INF = np.inf

# Optimal objective values, constant included (tests/data/README.md, copied from the shared
# data's SOURCES.md for the public files; derived by hand in the headers of the hand-written
# ones).
OPTIMA = {
    "2821.mps": -6.0,
    "2894.mps": 23.6332788823,
    "DUALC1.QPS": 6.1552508e03,
    "GENHS28.QPS": 9.2717369e-01,
    "HS21.QPS": -9.9960000e01,
    "HS35.QPS": 1.1111111e-01,
    "HS35MOD.QPS": 2.5000000e-01,
    "QAFIRO.QPS": -1.5907818e00,
    "QFORPLAN.QPS": 7.4566315e09,
    "QRECIPE.QPS": -2.6661600e02,
    "afiro.mps": -4.6475314286e02,
    "qjh.mps": -5.25,
    "qjh_qmatrix.mps": -5.25,
    "qjh_quadobj.mps": -5.25,
    "silly-names.mps": -1.0,
    "objsense_max.qps": -7.5,
    "objsense_max_free.mps": -5.0,
    "bounds.mps": -15.125,
    "ranges.mps": 47.0 / 3.0,
}
# Maros-Meszaros reference objectives, copied from the shared data's
# maros_meszaros/reference_objectives.csv (values published with the set, BPMPD 1998).
MAT_OPTIMA = {"HS21.mat": -9.9960000e01, "GENHS28.mat": 9.2717369e-01}

QPS_FILES = sorted(p.name for p in DATA.iterdir() if p.suffix.lower() in (".qps", ".mps"))


def same_problem(p, q) -> None:
    """Assert that two Problems hold exactly the same data."""
    for key in ("H", "A", "C"):
        P, Q = getattr(p, key), getattr(q, key)
        assert P.shape == Q.shape, key
        assert (P != Q).nnz == 0, key
    for key in ("g", "b", "l", "u"):
        np.testing.assert_array_equal(getattr(p, key), getattr(q, key), err_msg=key)
    assert p.constant == q.constant


def write(tmp_path, text: str, name: str = "t.mps") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def fixed_line(*fields) -> str:
    """A fixed-format line: fields at columns 2-3, 5-12, 15-22, 25-36, 40-47, 50-61."""
    starts = (1, 4, 14, 24, 39, 49)
    line = ""
    for start, f in zip(starts, fields):
        line = line.ljust(start) + f
    return line


def check_optimum(value: float, opt: float) -> None:
    assert math.isclose(value, opt, rel_tol=1e-6, abs_tol=1e-9), (value, opt)


# ----------------------------------------------------------------------------------------------
# parsing the data files
# ----------------------------------------------------------------------------------------------

def test_data_files_present():
    # every file of the shared qps folder (all under 200 KB) plus the hand-written ones
    assert len(QPS_FILES) == 20
    assert set(OPTIMA) | {"empstest.mps"} == set(QPS_FILES)


@pytest.mark.parametrize("name", QPS_FILES)
def test_parse_every_file(name):
    p = read_qps(DATA / name)
    assert p.H.shape == (p.n, p.n)
    assert (p.H != p.H.T).nnz == 0
    assert p.A.shape == (p.n_eq, p.n) and p.C.shape == (p.n_in, p.n)
    assert np.all(p.l <= p.u)
    same_problem(p, read_mps(DATA / name))
    same_problem(p, read_problem(DATA / name))


def test_hs21():
    p = read_qps(DATA / "HS21.QPS")
    assert p.name == "HS21" and p.n == 2 and p.n_eq == 0
    assert p.constant == -100.0                      # RHS OBJ.FUNC 100 -> constant -100
    np.testing.assert_array_equal(p.H.toarray(), np.diag([0.02, 2.0]))
    np.testing.assert_array_equal(p.g, [0.0, 0.0])
    np.testing.assert_array_equal(p.C.toarray(), [[10.0, -1.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(p.l, [10.0, 2.0, -50.0])   # negative LO kept
    np.testing.assert_array_equal(p.u, [INF, 50.0, 50.0])


def test_hs35_constant_and_offdiagonal():
    p = read_qps(DATA / "HS35.QPS")
    assert p.constant == 9.0                         # RHS -9 on the objective row
    np.testing.assert_array_equal(p.H.toarray(), [[4, 2, 2], [2, 4, 0], [2, 0, 2]])
    np.testing.assert_array_equal(p.g, [-8.0, -6.0, -4.0])
    q = read_qps(DATA / "HS35MOD.QPS")               # + FX bound on C------2
    np.testing.assert_array_equal(q.l[-3:], [0.0, 0.5, 0.0])
    np.testing.assert_array_equal(q.u[-3:], [INF, 0.5, INF])


def test_genhs28_free_bounds_and_equalities():
    p = read_qps(DATA / "GENHS28.QPS")
    assert (p.n, p.n_eq, p.n_in) == (10, 8, 0)       # FR on every column: no bound rows
    np.testing.assert_array_equal(p.b, np.ones(8))
    assert p.H[0, 1] == 2.0 and p.H[1, 0] == 2.0 and p.H[0, 0] == 2.0 and p.H[1, 1] == 4.0


def test_qafiro_and_afiro():
    p = read_qps(DATA / "QAFIRO.QPS")
    assert p.name == "AFIRO" and p.n == 32 and p.H.nnz == 9
    lp = read_qps(DATA / "afiro.mps")
    assert lp.n == 32 and lp.H.nnz == 0
    same_problem(make_problem(None, p.g, p.A, p.b, p.C, p.l, p.u), lp)   # same linear part


def test_qforplan_fixed_format_with_blanks_in_names():
    p = read_qps(DATA / "QFORPLAN.QPS")
    assert p.name == "FORPLAN"
    assert (p.n, p.n_eq) == (421, 90)
    same_problem(p, read_qps(DATA / "QFORPLAN.QPS", fmt="fixed"))
    with pytest.raises(QPSFormatError, match="line 5"):   # ' E  DEDO3 1R' splits in 3
        read_qps(DATA / "QFORPLAN.QPS", fmt="free")
    # the one RANGES entry: G row LTSYCT, RHS 10, R 284990
    rows = np.flatnonzero((p.l == 10.0) & (p.u == 285000.0))
    assert rows.size == 1


def test_qrecipe_empty_rhs_and_dualc1():
    p = read_qps(DATA / "QRECIPE.QPS")
    assert p.n == 180 and p.constant == 0.0
    assert np.all(p.b == 0.0)
    d = read_qps(DATA / "DUALC1.QPS")
    assert (d.n, d.n_eq) == (9, 1)
    assert d.H.nnz == 81                             # 9 + 2 * 36 entries
    assert d.n_in == 214 + 9                         # 213 G + 1 L rows, then 9 bound rows


def test_qjh_three_forms_are_the_same_problem():
    # QSECTION obj, QMATRIX (full) and QUADOBJ (triangle) of one QP
    p = read_qps(DATA / "qjh.mps")
    np.testing.assert_array_equal(p.H.toarray(), [[2, 0, -1], [0, 0.2, 0], [-1, 0, 2]])
    np.testing.assert_array_equal(p.g, [0.0, -1.0, -3.0])
    same_problem(p, read_qps(DATA / "qjh_qmatrix.mps"))
    same_problem(p, read_qps(DATA / "qjh_quadobj.mps"))


def test_2821_other_triangle():
    p = read_qps(DATA / "2821.mps")
    H = np.zeros((5, 5))
    H[np.diag_indices(5)] = [2, 4, 2, 2, 2]
    H[1, 2] = H[2, 1] = 2.0
    H[0, 1] = H[1, 0] = -2.0
    np.testing.assert_array_equal(p.H.toarray(), H)
    assert p.n_eq == 3 and p.n_in == 5


def test_2894_constant_free_bounds():
    p = read_qps(DATA / "2894.mps")
    assert p.name == "" and p.n == 5
    assert p.constant == 127.274767880806
    assert p.n_in == 15 and p.n_eq == 0              # FR bounds: no bound rows
    np.testing.assert_array_equal(p.H.toarray(), 20 * np.eye(5) + 4 * np.ones((5, 5)))


def test_empstest_highs_reading():
    p = read_qps(DATA / "empstest.mps")
    # general rows VLRES, RAI72, DEP73, DEP72, INV72 (TRS72 is the equality)
    np.testing.assert_array_equal(p.b, [5.67])
    np.testing.assert_allclose(p.l[:5], [0, -35.234, 0, -2.34, -2], rtol=0, atol=1e-14)
    np.testing.assert_allclose(p.u[:5], [2.34, -1.234, INF, 0, INF], rtol=0, atol=1e-14)
    lower = np.array([-INF, 0, 0, 8.07907, 8.07907, 0, -INF, 1.57957])
    upper = np.array([INF, INF, 1.51985, 8.07907, 8.07907, 8.07907, INF, INF])
    has = np.isfinite(lower) | np.isfinite(upper)
    np.testing.assert_array_equal(p.l[5:], lower[has])
    np.testing.assert_array_equal(p.u[5:], upper[has])
    np.testing.assert_array_equal(p.C[5:].toarray(), np.eye(8)[has])


def test_silly_names():
    p = read_qps(DATA / "silly-names.mps")
    assert p.n == 5                                  # columns OBJSENSE, RANGES, RHS included
    np.testing.assert_array_equal(p.g, -np.ones(5))
    np.testing.assert_array_equal(p.C[0].toarray(), -np.ones((1, 5)))
    assert p.l[0] == -1.0 and p.u[0] == INF


def test_objsense_max_files():
    p = read_qps(DATA / "objsense_max.qps")
    np.testing.assert_array_equal(p.H.toarray(), 2 * np.eye(2))   # negated
    np.testing.assert_array_equal(p.g, [-2.0, -4.0])
    assert p.constant == -3.0
    q = read_qps(DATA / "objsense_max_free.mps")
    np.testing.assert_array_equal(q.H.toarray(), [[2, 1], [1, 2]])
    np.testing.assert_array_equal(q.g, [-2.0, -4.0])
    assert q.constant == -1.0


def test_bounds_file():
    p = read_qps(DATA / "bounds.mps")
    # columns b, m, p, f, n, i1, z; f is free and has no bound row
    np.testing.assert_array_equal(p.l, [-INF, 0, -INF, 1, -INF, 2, -4])
    np.testing.assert_array_equal(p.u, [100, 1, 3, INF, -2, 5, -1])
    np.testing.assert_array_equal(p.C[1:].toarray(), np.eye(7)[[0, 1, 2, 4, 5, 6]])


def test_ranges_file():
    p = read_qps(DATA / "ranges.mps")
    np.testing.assert_array_equal(p.A.toarray(), np.ones((1, 5)))
    np.testing.assert_array_equal(p.b, [10.0])       # the second RHS set is ignored
    np.testing.assert_array_equal(p.l, [1, -4, 3, 2, 0])
    np.testing.assert_array_equal(p.u, [3, -1, 5, 6, INF])
    assert p.g.tolist() == [0.0] * 5                 # the free row 'junk' is dropped


# ----------------------------------------------------------------------------------------------
# semantics on small inline models
# ----------------------------------------------------------------------------------------------

ONE_COLUMN = """NAME one
ROWS
 N obj
 L c
COLUMNS
 x obj 1 c 1
RHS
 rhs c 10
BOUNDS
{bounds}
ENDATA
"""


@pytest.mark.parametrize("bounds, lo, hi", [
    ("", 0.0, INF),
    (" UP b x 4", 0.0, 4.0),
    (" UP b x 0", 0.0, 0.0),
    (" UP b x -4", -INF, -4.0),                      # negative UP alone frees the lower bound
    (" LO b x -5\n UP b x -4", -5.0, -4.0),          # ... not when the lower bound is given
    (" UP b x -4\n LO b x -5", -5.0, -4.0),
    (" MI b x\n UP b x 2", -INF, 2.0),
    (" MI b x", -INF, INF),
    (" PL b x", 0.0, INF),
    (" LO b x 1\n PL b x", 1.0, INF),
    (" FR b x", -INF, INF),
    (" FR b x\n LO b x 3", 3.0, INF),
    (" BV b x", 0.0, 1.0),
    (" LI b x 3", 3.0, INF),
    (" UI b x 7", 0.0, 7.0),
    (" UI b x -3", -INF, -3.0),
    (" FX b x 2.5", 2.5, 2.5),
    (" LO b x -1e30", -INF, INF),                    # |v| >= 1e30 is infinite
    (" UP b x 1e31", 0.0, INF),
    (" LO b x -inf\n UP b x 2", -INF, 2.0),
    (" UP b1 x 4\n UP b2 x 7", 0.0, 4.0),            # only the first bound set applies
])
def test_bound_types(tmp_path, bounds, lo, hi):
    p = read_qps(write(tmp_path, ONE_COLUMN.format(bounds=bounds)))
    assert p.l[0] == -INF and p.u[0] == 10.0
    if math.isinf(lo) and math.isinf(hi):
        assert p.n_in == 1
    else:
        assert p.n_in == 2
        assert (p.l[1], p.u[1]) == (lo, hi)
        assert p.C[1, 0] == 1.0


RANGED_ROW = """NAME r
ROWS
 N obj
 {kind} c
COLUMNS
 x obj 1 c 1
RHS
 rhs c {rhs}
RANGES
 rng c {r}
BOUNDS
 FR b x
ENDATA
"""


@pytest.mark.parametrize("kind, rhs, r, lo, hi", [
    ("E", "4", "3", 4.0, 7.0),
    ("E", "4", "-3", 1.0, 4.0),
    ("L", "4", "3", 1.0, 4.0),
    ("L", "4", "-3", 1.0, 4.0),
    ("G", "4", "3", 4.0, 7.0),
    ("G", "4", "-3", 4.0, 7.0),
    ("G", "4", "0", 4.0, 4.0),                       # stays an inequality row
    ("G", "0.1", "0.2", 0.1, 0.3),                   # exact: 0.1 + 0.2 in decimal is 0.3
    ("L", "4", "inf", -INF, 4.0),
])
def test_ranges(tmp_path, kind, rhs, r, lo, hi):
    p = read_qps(write(tmp_path, RANGED_ROW.format(kind=kind, rhs=rhs, r=r)))
    assert p.n_eq == 0 and p.n_in == 1
    assert (p.l[0], p.u[0]) == (lo, hi)


def test_zero_range_on_e_row_is_equality(tmp_path):
    p = read_qps(write(tmp_path, RANGED_ROW.format(kind="E", rhs="4", r="0")))
    assert p.n_eq == 1 and p.n_in == 0 and p.b[0] == 4.0


SENSE_MODEL = """NAME s
{sense}ROWS
 N obj
 L c
COLUMNS
 x obj 2 c 1
RHS
 rhs obj 5 c 1
BOUNDS
 FR b x
QUADOBJ
 x x -3
ENDATA
"""


@pytest.mark.parametrize("sense, sign", [
    ("", 1), ("OBJSENSE\n    MIN\n", 1), ("OBJSENSE MINIMIZE\n", 1),
    ("OBJSENSE\n    MAX\n", -1), ("OBJSENSE MAX\n", -1), ("OBJSENSE    MAXIMIZE\n", -1),
    ("OBJSENSE\n    MAXIMIZE\n", -1),
])
def test_objsense(tmp_path, sense, sign):
    p = read_qps(write(tmp_path, SENSE_MODEL.format(sense=sense)))
    assert p.H[0, 0] == sign * -3.0
    assert p.g[0] == sign * 2.0
    assert p.constant == sign * -5.0


def test_objname_picks_the_objective(tmp_path):
    text = """NAME o
OBJNAME second
ROWS
 N first
 N second
 L c
COLUMNS
 x first 1 second 2
 x c 1
RHS
 rhs first 7 second 3
ENDATA
"""
    p = read_qps(write(tmp_path, text))
    assert p.g[0] == 2.0 and p.constant == -3.0


QUAD_MODEL = """NAME q
ROWS
 N obj
COLUMNS
 x obj 0
 y obj 0
 z obj 0
{section}
{entries}
ENDATA
"""


@pytest.mark.parametrize("section, entries", [
    ("QUADOBJ", "x x 2\n x y 1\n y y 4\n y z -1\n z z 3"),                   # upper
    ("QUADOBJ", "x x 2\n y x 1\n y y 4\n z y -1\n z z 3"),                   # lower
    ("QUADOBJ", "z z 3\n z y -1\n x y 1\n y y 4\n x x 2"),                   # mixed, any order
    ("QUADOBJ", "x x 2\n x y 0.25\n y x 0.75\n y y 4\n y z -1\n z z 1\n z z 2"),  # sums
    ("QSECTION obj", "x x 2\n x y 1\n y y 4\n y z -1\n z z 3"),
    ("QSECTION", "x x 2\n x y 1\n y y 4\n y z -1\n z z 3"),
    ("QMATRIX", "x x 2\n x y 1\n y x 1\n y y 4\n y z -1\n z y -1\n z z 3"),  # full
])
def test_quadratic_sections(tmp_path, section, entries):
    text = QUAD_MODEL.format(section=section, entries=" " + entries)
    p = read_qps(write(tmp_path, text))
    np.testing.assert_array_equal(p.H.toarray(), [[2, 1, 0], [1, 4, -1], [0, -1, 3]])
    assert p.n_in == 3                                # default bounds x >= 0


def test_fixed_format_blank_names_and_blank_rhs_set(tmp_path):
    lines = ["NAME          FIXED", "ROWS", fixed_line("N", "COST"), fixed_line("L", "LIM 1"),
             fixed_line("E", "BAL 2"), "COLUMNS",
             fixed_line("", "X 1", "COST", "1.", "LIM 1", "1."),
             fixed_line("", "X 1", "BAL 2", "-1."),
             fixed_line("", "X 2", "COST", "2.", "LIM 1", "1."),
             "RHS", fixed_line("", "", "LIM 1", "4.", "BAL 2", "-.5"),
             "BOUNDS", fixed_line("UP", "", "X 1", "3."),
             "QUADOBJ", fixed_line("", "X 1", "X 2", "0.5D+00"), "ENDATA"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    p = read_qps(path)
    assert p.name == "FIXED" and p.n == 2
    np.testing.assert_array_equal(p.g, [1.0, 2.0])
    np.testing.assert_array_equal(p.A.toarray(), [[-1.0, 0.0]])
    np.testing.assert_array_equal(p.b, [-0.5])
    np.testing.assert_array_equal(p.C.toarray(), [[1, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(p.l, [-INF, 0, 0])
    np.testing.assert_array_equal(p.u, [4, 3, INF])
    np.testing.assert_array_equal(p.H.toarray(), [[0, 0.5], [0.5, 0]])
    same_problem(p, read_qps(path, fmt="fixed"))
    with pytest.raises(QPSFormatError):
        read_qps(path, fmt="free")


def test_comments_blank_lines_crlf_and_gzip(tmp_path):
    text = ONE_COLUMN.format(bounds=" UP b x 4")
    ref = read_qps(write(tmp_path, text))
    messy = "* a comment\n\n" + text.replace("COLUMNS\n", "COLUMNS\n* inside\n   \n")
    same_problem(ref, read_qps(write(tmp_path, messy.replace("\n", "\r\n"), "crlf.mps")))
    gz = tmp_path / "t.mps.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(text)
    same_problem(ref, read_qps(gz))
    same_problem(ref, read_problem(gz))


def test_read_problem_dispatch(tmp_path):
    for name in ("HS21.QPS", "HS21.mat"):
        check = read_problem(DATA / name)
        assert check.n == 2
    copy = tmp_path / "hs21.qps.gz"
    with open(DATA / "HS21.QPS", "rb") as src, gzip.open(copy, "wb") as dst:
        shutil.copyfileobj(src, dst)
    same_problem(read_problem(copy), read_qps(DATA / "HS21.QPS"))
    with pytest.raises(ValueError, match="unknown file type"):
        read_problem(tmp_path / "problem.txt")


# ----------------------------------------------------------------------------------------------
# malformed input
# ----------------------------------------------------------------------------------------------

BASE = """NAME          T
ROWS
 N  obj
 L  c1
COLUMNS
    x1        obj       1.0          c1        1.0
    x2        obj       2.0          c1        1.0
RHS
    rhs       c1        4.0
BOUNDS
 UP bnd       x1        3.0
QUADOBJ
    x1        x1        1.0
ENDATA
"""


def edit(line: int, new: str | None = None, insert: str | None = None) -> str:
    """BASE with its 1-based ``line`` replaced by ``new`` or ``insert`` put before it."""
    lines = BASE.split("\n")
    if insert is not None:
        lines.insert(line - 1, insert)
    else:
        lines[line - 1] = new
    return "\n".join(lines)


MALFORMED = [
    ("bad number", edit(6, "    x1        obj       1.0x         c1        1.0"), 6, "bad number"),
    ("nan", edit(7, "    x2        obj       nan"), 7, "bad number"),
    ("underscore", edit(9, "    rhs       c1        4_0"), 9, "bad number"),
    ("infinite coefficient", edit(7, "    x2        c1        inf"), 7, "finite"),
    ("unknown section", edit(10, insert="FOOBAR"), 10, "unknown section"),
    ("unsupported section", edit(12, "QCMATRIX   c1"), 12, "not supported"),
    ("text after section", edit(2, "ROWS extra"), 2, "unexpected text"),
    ("missing RHS set name", edit(9, "    c1        4.0"), 9, "set name"),
    ("RHS odd fields", edit(9, "    rhs       c1        4.0          obj"), 9, "set name"),
    ("unknown row in RHS", edit(9, "    rhs       c7        4.0"), 9, "unknown row"),
    ("unknown row in COLUMNS", edit(7, "    x2        c9        1.0"), 7, "unknown row"),
    ("COLUMNS odd fields", edit(7, "    x2        obj       2.0          c1"), 7,
     "one or two (row name, value) pairs"),
    ("unknown column in BOUNDS", edit(11, " UP bnd       x9        3.0"), 11, "unknown column"),
    ("unknown bound type", edit(11, " XX bnd       x1        3.0"), 11, "bound type"),
    ("semi-continuous bound", edit(11, " SC bnd       x1        3.0"), 11, "not supported"),
    ("missing bound value", edit(11, " UP bnd       x1"), 11, "needs a value"),
    ("missing bound set name", edit(11, " UP x1 3.0"), 11, "needs a value"),
    ("bad row type", edit(4, " Q  c1"), 4, "row type"),
    ("duplicate row", edit(4, " N  obj"), 4, "twice"),
    ("ROWS fields", edit(4, " L  c1  c2"), 4, "row type"),
    ("data outside section", edit(2, insert="    stray data"), 2, "outside any section"),
    ("lower above upper", edit(12, insert=" LO bnd       x1        5.0"), 12, "lower bound"),
    ("infinite equality", edit(4, " E  c1").replace("c1        4.0", "c1        1e30"), 9,
     "interval"),
    ("unknown quad column", edit(13, "    x1        x9        1.0"), 13, "unknown column"),
    ("quad fields", edit(13, "    x1        1.0"), 13, "two column names"),
    ("asymmetric QMATRIX", edit(13, "    x1        x2        1.0").replace("QUADOBJ", "QMATRIX"),
     12, "not symmetric"),
    ("QUADOBJ and QMATRIX", edit(14, insert="QMATRIX"), 14, "twice"),
    ("quadratic constraint", edit(12, "QSECTION      c1"), 12, "quadratic constraints"),
    ("bad OBJSENSE", edit(2, insert="OBJSENSE UPWARDS"), 2, "OBJSENSE"),
    ("two OBJSENSE values", edit(2, insert="OBJSENSE\n    MAX\n    MIN"), 4, "OBJSENSE"),
    ("bad marker", edit(7, insert="    M  'MARKER'  'INTBEGIN'"), 7, "marker"),
    ("missing ENDATA", BASE.replace("ENDATA\n", ""), 13, "ENDATA"),
    ("OBJNAME not an N row", edit(2, insert="OBJNAME c1"), 2, "not an N row"),
    ("OBJNAME after ROWS", edit(5, insert="OBJNAME obj"), 5, "before the ROWS"),
    ("infinite objective RHS", edit(9, "    rhs       obj       1e30"), 9, "objective"),
    ("empty range", edit(10, insert="RANGES\n    rng       c1        nan"), 11, "bad number"),
]


@pytest.mark.parametrize("what, text, line, reason", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed(tmp_path, what, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(QPSFormatError) as info:
        read_qps(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.lineno == line, str(err)
    assert f"line {line}" in str(err)
    assert str(path) in str(err)
    assert reason in str(err)


def test_free_format_error_wins_over_fixed_layout_error(tmp_path):
    # ' L  c1  c2' is a valid fixed-format row named 'c1  c2', but the file does not fit the
    # fixed columns, so the free-format error (line 4) is the one reported
    with pytest.raises(QPSFormatError, match="line 4: a ROWS line"):
        read_qps(write(tmp_path, edit(4, " L  c1  c2")))


def test_fixed_format_error_reported_when_the_file_is_fixed(tmp_path):
    lines = ["NAME", "ROWS", fixed_line("N", "COST"), fixed_line("L", "LIM 1"), "COLUMNS",
             fixed_line("", "X 1", "COST", "1.", "LIM 1", "1."),
             fixed_line("", "X 2", "COST", "2.x"), "ENDATA"]
    with pytest.raises(QPSFormatError, match="line 7: bad number '2.x'"):
        read_qps(write(tmp_path, "\n".join(lines)))


def test_base_model_is_valid(tmp_path):
    p = read_qps(write(tmp_path, BASE))
    assert p.n == 2 and p.n_in == 3


def test_empty_file(tmp_path):
    with pytest.raises(QPSFormatError, match="line 1: missing ENDATA"):
        read_qps(write(tmp_path, ""))


def test_bad_fmt_argument():
    with pytest.raises(ValueError, match="fmt"):
        read_qps(DATA / "HS21.QPS", fmt="strict")


# ----------------------------------------------------------------------------------------------
# writing: exact round trips
# ----------------------------------------------------------------------------------------------

def round_trip(p, tmp_path, name="out.qps"):
    path = tmp_path / name
    write_qps(p, path)
    q = read_qps(path)
    same_problem(p, q)
    assert q.name == p.name.replace(" ", "_")
    return path


@pytest.mark.parametrize("name", QPS_FILES)
def test_round_trip_files(tmp_path, name):
    round_trip(read_qps(DATA / name), tmp_path)


def test_round_trip_gzip(tmp_path):
    p = read_qps(DATA / "ranges.mps")
    path = round_trip(p, tmp_path, "out.qps.gz")
    with gzip.open(path, "rt") as fh:
        assert fh.readline().startswith("*")


def random_problem(seed: int, n=40, n_eq=5, n_gen=24, with_bounds=True):
    rng = np.random.default_rng(seed)
    B = sp.random(n, n, density=0.1, random_state=rng)
    H = (B @ B.T + sp.diags(rng.uniform(0.1, 1.0, n))).tocsc()
    g = rng.standard_normal(n) * np.exp(rng.standard_normal(n))
    A = sp.random(n_eq, n, density=0.2, random_state=rng, data_rvs=rng.standard_normal)
    b = rng.standard_normal(n_eq)
    Cg = sp.random(n_gen, n, density=0.2, random_state=rng, data_rvs=rng.standard_normal)
    x = rng.standard_normal(n_gen) * np.exp(3 * rng.standard_normal(n_gen))
    y = rng.standard_normal(n_gen) * np.exp(3 * rng.standard_normal(n_gen))
    lg, ug = np.minimum(x, y), np.maximum(x, y)      # opposite signs, wildly different sizes
    kind = np.arange(n_gen) % 6
    lg[kind == 1] = -INF                             # one-sided
    ug[kind == 2] = INF
    lg[kind == 3], ug[kind == 3] = -INF, INF         # free row
    ug[kind == 4] = lg[kind == 4]                    # l == u inside C
    lg[kind == 5], ug[kind == 5] = 0.0, np.abs(ug[kind == 5])
    blocks, lo, hi = [Cg], [lg], [ug]
    if with_bounds:
        cols = np.sort(rng.choice(n, size=n // 2, replace=False))
        bl = rng.standard_normal(cols.size)
        bu = bl + rng.uniform(0, 3, cols.size)
        bl[::4] = -INF                               # [-inf, u] (u may be negative)
        bu[1::4] = INF
        bu[2::8] = bl[2::8]                          # fixed
        blocks.append(sp.eye(n, format="csr")[cols])
        lo.append(bl)
        hi.append(bu)
    return make_problem(H, g, A, b, sp.vstack(blocks), np.concatenate(lo), np.concatenate(hi),
                        constant=float(rng.standard_normal()), name=f"random {seed}")


@pytest.mark.parametrize("seed", range(5))
def test_round_trip_random(tmp_path, seed):
    p = random_problem(seed)
    path = round_trip(p, tmp_path)
    text = path.read_text()
    assert "QUADOBJ" in text and "RANGES" in text and " MI BND" in text and " FX BND" in text
    round_trip(random_problem(seed, with_bounds=False), tmp_path)


def test_round_trip_inexact_float_range(tmp_path):
    # fl(l + fl(u - l)) != u and fl(u - fl(u - l)) != l here: the writer must give R exactly
    lo, hi = -7.351381895249955, 1.7618961677810085
    assert lo + (hi - lo) != hi and hi - (hi - lo) != lo
    p = make_problem(sp.eye(1), [1.0], C=[[2.0]], l=[lo], u=[hi])
    round_trip(p, tmp_path)


def test_round_trip_structures(tmp_path):
    # identity rows that are not a strictly increasing trailing block stay general rows
    C = sp.csr_matrix(np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0]]))
    p = make_problem(None, [0.0, 1.0, 0.0], C=C, l=[0, -1, -INF, 2, -INF], u=[1, INF, 4, 2, INF])
    round_trip(p, tmp_path)
    # a trailing identity block, one column without a bound, an all-zero column
    C = sp.csr_matrix(np.array([[1.0, 2, 0], [1, 0, 0], [0, 0, 1]]))
    p = make_problem(sp.diags([1.0, 0, 2]), [0.0, 0.0, 1.0], C=C, l=[-1, -INF, -3],
                     u=[1, -2, INF], constant=-2.5)
    path = round_trip(p, tmp_path)
    assert " FR BND x1" in path.read_text()
    # no constraints at all, an LP with only equalities
    round_trip(make_problem(sp.eye(3), [1.0, -1.0, 0.0]), tmp_path)
    round_trip(make_problem(None, [1.0, 2.0], A=[[1.0, 1.0]], b=[1.0]), tmp_path)


def test_round_trip_nearly_symmetric_h_uses_qmatrix(tmp_path):
    H = sp.csc_matrix(np.array([[2.0, 1.0], [1.0 + 1e-15, 3.0]]))
    p = make_problem(H, [0.0, 0.0])
    assert (p.H != p.H.T).nnz > 0                    # make_problem accepts 1e-10 asymmetry
    path = round_trip(p, tmp_path)
    assert "QMATRIX" in path.read_text()


# ----------------------------------------------------------------------------------------------
# .mat files (qpbenchmark layout)
# ----------------------------------------------------------------------------------------------

def test_read_mat_generated(tmp_path):
    P = sp.csc_matrix(np.array([[4.0, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]))
    C = np.array([[1.0, 1, 0, 0], [0, 1, -1, 0], [1, 0, 0, 1]])
    A = sp.csc_matrix(np.vstack([C, np.eye(4)]))
    lo = np.array([1.0, -2.0, -1e20, -1e20, 0.0, -9.99999999e19, 2.0])
    hi = np.array([1.0, 3.0, 1e20, 1.0000000002e20, 1e20, 5.0, 2.0])
    path = tmp_path / "gen.mat"
    scipy.io.savemat(path, {"P": P, "q": np.array([[1], [-2], [0], [3]], dtype=np.int16),
                            "r": np.array([[7]], dtype=np.uint8), "A": A,
                            "l": lo.reshape(-1, 1), "u": hi.reshape(-1, 1),
                            "n": np.array([[4]], dtype=np.uint8),
                            "m": np.array([[7]], dtype=np.uint8)})
    p = read_mat(path)
    assert p.name == "gen" and p.constant == 7.0
    np.testing.assert_array_equal(p.H.toarray(), P.toarray())
    np.testing.assert_array_equal(p.g, [1.0, -2.0, 0.0, 3.0])
    # rows with l == u (row 0 and the fixed variable x3) are equalities
    np.testing.assert_array_equal(p.A.toarray(), [[1, 1, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(p.b, [1.0, 2.0])
    # the free row 2 and the free variable x0 (bounds +-1e20) are dropped
    np.testing.assert_array_equal(p.C.toarray(), [[0, 1, -1, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_array_equal(p.l, [-2.0, 0.0, -INF])
    np.testing.assert_array_equal(p.u, [3.0, INF, 5.0])
    same_problem(p, read_problem(path))


def test_read_mat_missing_field(tmp_path):
    path = tmp_path / "bad.mat"
    scipy.io.savemat(path, {"P": sp.eye(2, format="csc"), "q": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="bad.mat.*'A'"):
        read_mat(path)


@pytest.mark.parametrize("name", ["HS21", "GENHS28"])
def test_read_mat_matches_qps(name):
    same_problem(read_mat(DATA / f"{name}.mat"), read_qps(DATA / f"{name}.QPS"))


# ----------------------------------------------------------------------------------------------
# solving (needs sparseqp.solve)
# ----------------------------------------------------------------------------------------------

def solve_value(p) -> float:
    # eps_rel: the Maros-Meszaros files have entries up to ~1e4, where an absolute 1e-9 on the
    # dual residual is below the rounding floor; the objective check below is the real test
    res = sparseqp.solve(p.H, p.g, p.A, p.b, p.C, p.l, p.u, eps_abs=1e-9, eps_rel=1e-10,
                         time_limit=60)
    assert res.success, (res.status, res.message)
    return res.fun + p.constant


# QFORPLAN (badly scaled Maros-Meszaros LP-like QP) used to stall: refining the Newton systems
# in the reduced space could not converge at mu ~ 1e-8 (see ProxALM._refined).
@pytest.mark.parametrize("name", sorted(OPTIMA))
def test_solve_files(name):
    check_optimum(solve_value(read_qps(DATA / name)), OPTIMA[name])


@pytest.mark.parametrize("name", sorted(MAT_OPTIMA))
def test_solve_mat(name):
    check_optimum(solve_value(read_mat(DATA / name)), MAT_OPTIMA[name])


def test_solve_problem_object_includes_constant():
    p = read_qps(DATA / "HS21.QPS")
    res = sparseqp.solve(p, eps_abs=1e-9)
    assert res.success
    check_optimum(res.fun, OPTIMA["HS21.QPS"])


def test_solve_after_round_trip(tmp_path):
    p = read_qps(DATA / "ranges.mps")
    path = tmp_path / "r.qps"
    write_qps(p, path)
    check_optimum(solve_value(read_problem(path)), OPTIMA["ranges.mps"])
