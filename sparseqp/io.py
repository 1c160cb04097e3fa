"""Reading and writing QPs: QPS / MPS files (free and fixed format) and qpbenchmark ``.mat`` files.

Every reader returns a :class:`sparseqp.problem.Problem` for

    min 1/2 x'Hx + g'x + constant   s.t.   A x = b,   l <= C x <= u.

Mapping of an MPS model onto that form:

- ``E`` rows without a range (or with a zero range) become rows of ``A x = b``; ``L`` and ``G``
  rows and ranged ``E`` rows become rows of ``l <= C x <= u``, in the order of the ROWS section.
- The variable bounds follow as identity rows of ``C``, in column order, one for every column with
  at least one finite bound (the default bounds are ``0 <= x < +inf``).
- The first ``N`` row is the objective (unless an OBJNAME section names another one); the other
  ``N`` rows are free rows and are dropped with their entries.
- The objective constant is minus the RHS entry of the objective row.
- OBJSENSE MAX (or MAXIMIZE) negates H, g and the constant, so the Problem is always a
  minimisation.
- QUADOBJ and QSECTION give one triangle of the symmetric matrix Q (either triangle, or a mix of
  both: an entry (i, j) means Q_ij = Q_ji; the diagonal is not doubled; repeated entries add up).
  QMATRIX gives the full matrix. The objective is ``1/2 x'Qx``.
- Integer markers and the integer bound types (BV, LI, UI) are read, and the variables are kept
  continuous.
- Only the first RHS set, the first RANGES set and the first BOUNDS set are used.
- Values with magnitude >= ``1e30`` (and ``inf`` / ``-inf``) in the RHS, RANGES and BOUNDS
  sections are infinite.
- Range end points (``rhs + |R|`` and the like) are computed exactly from the decimal numbers in
  the file and rounded once, so :func:`write_qps` / :func:`read_qps` round trips are exact.

The reader tries free format first (fields separated by blanks) and falls back to the fixed
column layout (fields in columns 2-3, 5-12, 15-22, 25-36, 40-47, 50-61), which allows blanks
inside names. Errors raise :class:`QPSFormatError` naming the file and line.
"""
from __future__ import annotations

import gzip
import math
import os
import re
from decimal import (Context, Decimal, Inexact, InvalidOperation, Overflow, Underflow,
                     localcontext)
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .problem import Problem, make_problem

__all__ = [
    "QPSFormatError",
    "read_qps",
    "read_mps",
    "read_mat",
    "read_problem",
    "write_qps",
]

#: Values in RHS / RANGES / BOUNDS with at least this magnitude are infinite.
QPS_INFINITY = 1e30
#: Values in ``.mat`` bounds with at least this magnitude are infinite.
MAT_INFINITY = 1e19

_UNSUPPORTED_SECTIONS = {
    "QCMATRIX", "CSECTION", "SOS", "SETS", "INDICATORS", "USERCUTS", "LAZYCONS",
    "GENCONS", "PWLOBJ", "PWLNAM", "PWLCON", "CONES", "BRANCH", "SCENARIOS",
}
_DATA_SECTIONS = {"ROWS", "COLUMNS", "RHS", "RANGES", "BOUNDS", "QUADOBJ", "QMATRIX"}
_FIXED_SECTIONS = _DATA_SECTIONS | {"QSECTION"}
_BOUND_TYPES = {"UP", "LO", "FX", "FR", "MI", "PL", "BV", "LI", "UI"}
_BOUND_NEEDS_VALUE = {"UP", "LO", "FX", "LI", "UI"}
_SENSES = {"MIN": False, "MINIMIZE": False, "MINIMISE": False,
           "MAX": True, "MAXIMIZE": True, "MAXIMISE": True}
_ROW_E, _ROW_L, _ROW_G = 0, 1, 2
_ROW_CODES = {"E": _ROW_E, "L": _ROW_L, "G": _ROW_G}
_OBJ, _FREE = -1, -2  # row codes of the objective row and of the other N rows


class QPSFormatError(ValueError):
    """A QPS / MPS file that cannot be read.

    Attributes
    ----------
    path : str
        The file.
    lineno : int or None
        1-based line number of the offending line (None when the problem is not tied to a line).
    reason : str
        What was wrong, without the location.
    """

    def __init__(self, path, lineno, reason, line=None):
        self.path = str(path)
        self.lineno = lineno
        self.reason = reason
        where = f"{self.path}, line {lineno}" if lineno else self.path
        text = f"{where}: {reason}"
        if line is not None and line.strip():
            text += f" [line: {line.strip()!r}]"
        super().__init__(text)


class _FixedLayoutError(QPSFormatError):
    """A line that does not fit the fixed MPS columns (so the file is not fixed format)."""


# ----------------------------------------------------------------------------------------------
# reading QPS / MPS
# ----------------------------------------------------------------------------------------------

def _read_lines(path) -> list[str]:
    """The lines of a (possibly gzipped) text file, without line terminators."""
    name = os.fspath(path)
    opener = gzip.open if str(name).lower().endswith(".gz") else open
    with opener(name, "rt", encoding="latin-1", newline="") as fh:
        text = fh.read()
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _fixed_fields(line: str, section: str) -> list[str] | None:
    """Split a fixed-format data line into its fields (None if text lies outside the fields).

    Fields are columns 2-3, 5-12, 15-22, 25-36, 40-47 and 50-61 (1-based). ROWS and BOUNDS
    lines keep field 1 (the type); other sections start at field 2. Trailing empty fields are
    dropped; inner empty fields (a blank RHS set name) are kept as "".
    """
    if section == "ROWS":
        if line[0:1].strip() or line[3:4].strip() or line[12:].strip():
            return None
        return [line[1:3].strip(), line[4:12].strip()]
    if line[0:1].strip() or line[3:4].strip() or line[12:14].strip() or line[22:24].strip() \
            or line[36:39].strip() or line[47:49].strip() or line[61:].strip():
        return None
    fields = [line[1:3].strip(), line[4:12].strip(), line[14:22].strip(), line[24:36].strip(),
              line[39:47].strip(), line[49:61].strip()]
    if section == "BOUNDS":
        fields = fields[:4]
    else:
        if fields[0]:
            return None
        fields = fields[1:]
    while fields and not fields[-1]:
        fields.pop()
    return fields


class _MPSReader:
    """One pass over the lines of an MPS file (free or fixed layout) collecting triplets."""

    def __init__(self, lines: list[str], path, fixed: bool):
        self.lines = lines
        self.path = str(path)
        self.fixed = fixed
        self.lineno = 0
        self.line = ""
        self.section = None
        self.name = ""
        self.maximize = False
        self.sense_seen = False
        self.objname = None
        self.objname_seen = 0                # line of the OBJNAME value
        self.obj = None
        self.rows: dict[str, int] = {}       # name -> row index (>= 0), _OBJ or _FREE
        self.row_names: list[str] = []
        self.row_types: list[int] = []
        self.cols: dict[str, int] = {}
        self.col_names: list[str] = []
        self.ti: list[int] = []               # constraint matrix triplets
        self.tj: list[int] = []
        self.tv: list[float] = []
        self.gj: list[int] = []               # objective entries
        self.gv: list[float] = []
        self.sets = {"RHS": None, "RANGES": None, "BOUNDS": None}
        self.rhs: dict[int, tuple[float, str, int]] = {}   # row -> (value, token, line)
        self.rng: dict[int, tuple[float, str, int]] = {}
        self.obj_rhs = 0.0
        self.bounds: dict[int, list] = {}     # col -> [lower, upper, lower_given, line]
        self.qi: list[int] = []
        self.qj: list[int] = []
        self.qv: list[float] = []
        self.qkind = None                     # "triangle" or "full"
        self.qline = 0
        self.handlers = {
            "ROWS": self._row, "COLUMNS": self._column, "RHS": self._rhs_entry,
            "RANGES": self._range_entry, "BOUNDS": self._bound, "QUADOBJ": self._quad,
            "QMATRIX": self._quad, "QSECTION": self._quad, "OBJSENSE": self._sense,
            "OBJNAME": self._objname,
        }

    # -- errors and numbers ---------------------------------------------------------------------
    def fail(self, reason: str, lineno=None, error=QPSFormatError):
        if lineno is None:
            lineno, line = self.lineno, self.line
        else:
            line = self.lines[lineno - 1] if 0 < lineno <= len(self.lines) else None
        raise error(self.path, lineno, reason, line)

    def number(self, tok: str, what) -> tuple[float, str]:
        """Parse ``tok`` (also Fortran ``1.0D+02``); returns (value, normalised token).

        ``what`` (a string, or a function making it) describes the number in error messages.
        """
        if "_" not in tok:
            norm = tok
            try:
                v = float(tok)
            except ValueError:
                norm = tok.replace("D", "E").replace("d", "e")
                try:
                    v = float(norm)
                except ValueError:
                    v = None
            if v is not None and v == v:
                return v, norm
        self.fail(f"bad number {tok!r} for {what() if callable(what) else what}")

    def coefficient(self, tok: str, what) -> float:
        v = self.number(tok, what)[0]
        if not math.isfinite(v):
            self.fail(f"{what() if callable(what) else what} must be finite, got {tok!r}")
        return v

    def bound_value(self, tok: str, what) -> tuple[float, str]:
        v, tok = self.number(tok, what)
        if abs(v) >= QPS_INFINITY:
            v = math.copysign(math.inf, v)
        return v, tok

    # -- driver ---------------------------------------------------------------------------------
    def parse(self) -> "_MPSReader":
        for lineno, line in enumerate(self.lines, 1):
            if not line or line[0] == "*":
                continue
            self.lineno, self.line = lineno, line
            if line[0] in " \t":
                if not line.isspace():
                    self._data(line)
            elif self._header(line):
                return self
        last = len(self.lines) - (1 if self.lines and not self.lines[-1] else 0)
        self.lineno, self.line = max(last, 1), ""
        self.fail("missing ENDATA line at the end of the file")

    def _data(self, line: str) -> None:
        section = self.section
        if section is None:
            self.fail("data line outside any section (section names start in column 1)")
        if section == "COLUMNS" and "'MARKER'" in line:
            self._marker(line.split())
            return
        if self.fixed and section in _FIXED_SECTIONS:
            fields = _fixed_fields(line, section)
            if fields is None:
                self.fail("text outside the fixed-format fields (columns 2-3, 5-12, 15-22, "
                          "25-36, 40-47, 50-61)", error=_FixedLayoutError)
        else:
            fields = line.split()
        self.handlers[section](fields)

    def _header(self, line: str) -> bool:
        """Handle a section line; True at ENDATA."""
        tokens = line.split()
        key = tokens[0].upper()
        if key == "ENDATA":
            return True
        if key == "NAME":
            self.name = tokens[1] if len(tokens) > 1 else ""
            self.section = None
        elif key in ("OBJSENSE", "OBJSENS", "OBJNAME"):
            self.section = "OBJNAME" if key == "OBJNAME" else "OBJSENSE"
            if len(tokens) > 2:
                self.fail(f"{key} takes one value")
            if len(tokens) == 2:
                self.handlers[self.section](tokens[1:])
        elif key == "QSECTION":
            self._qsection(tokens)
        elif key in _DATA_SECTIONS:
            if len(tokens) > 1:
                self.fail(f"unexpected text after section name {key}")
            self.section = key
            if key in ("QUADOBJ", "QMATRIX"):
                self._start_quad("full" if key == "QMATRIX" else "triangle")
        elif key in _UNSUPPORTED_SECTIONS:
            self.fail(f"section {key} is not supported (only continuous QPs with linear "
                      "constraints can be read)")
        else:
            self.fail(f"unknown section {tokens[0]!r}")
        return False

    # -- sections -------------------------------------------------------------------------------
    def _sense(self, fields: list[str]) -> None:
        if self.sense_seen or len(fields) != 1 or fields[0].upper() not in _SENSES:
            self.fail("OBJSENSE takes one value: MIN, MINIMIZE, MAX or MAXIMIZE")
        self.maximize = _SENSES[fields[0].upper()]
        self.sense_seen = True

    def _objname(self, fields: list[str]) -> None:
        if self.objname_seen or len(fields) != 1:
            self.fail("OBJNAME takes one row name")
        if self.rows:
            self.fail("OBJNAME must come before the ROWS section")
        self.objname = fields[0]
        self.objname_seen = self.lineno

    def _row(self, fields: list[str]) -> None:
        if len(fields) != 2:
            self.fail("a ROWS line needs a row type (N, E, L, G) and a row name")
        kind, name = fields[0].upper(), fields[1]
        if name in self.rows:
            self.fail(f"row {name!r} is defined twice")
        if kind == "N":
            is_obj = self.obj is None and self.objname in (None, name)
            self.rows[name] = _OBJ if is_obj else _FREE
            if is_obj:
                self.obj = name
        elif kind in _ROW_CODES:
            self.rows[name] = len(self.row_types)
            self.row_types.append(_ROW_CODES[kind])
            self.row_names.append(name)
        else:
            self.fail(f"unknown row type {fields[0]!r} (expected N, E, L or G)")

    def _marker(self, tokens: list[str]) -> None:
        if len(tokens) != 3 or tokens[1] != "'MARKER'" or tokens[2] not in ("'INTORG'", "'INTEND'"):
            self.fail("bad integer marker line (expected: name 'MARKER' 'INTORG' or 'INTEND')")

    def _column(self, fields: list[str]) -> None:
        n = len(fields)
        if n != 3 and n != 5:
            self.fail("a COLUMNS line needs a column name and one or two (row name, value) "
                      f"pairs; got {n} fields")
        name = fields[0]
        j = self.cols.get(name)
        if j is None:
            j = self._new_column(name)
        rows = self.rows
        for k in (1, 3) if n == 5 else (1,):
            code = rows.get(fields[k])
            if code is None:
                self.row_code(fields[k])
            tok = fields[k + 1]
            try:                                    # fast path; the slow one reports errors
                v = float(tok)
                if v - v != 0.0 or "_" in tok:      # nan, inf, or 1_000
                    raise ValueError
            except ValueError:
                v = self.coefficient(tok, f"column {name!r}, row {fields[k]!r}")
            if v == 0.0 or code == _FREE:
                continue
            if code == _OBJ:
                self.gj.append(j)
                self.gv.append(v)
            else:
                self.ti.append(code)
                self.tj.append(j)
                self.tv.append(v)

    def _new_column(self, name: str) -> int:
        if not name:
            self.fail("missing column name")
        j = self.cols[name] = len(self.col_names)
        self.col_names.append(name)
        return j

    def row_code(self, name: str) -> int:
        code = self.rows.get(name)
        if code is None:
            self.fail(f"unknown row {name!r}")
        return code

    def col_index(self, name: str) -> int:
        j = self.cols.get(name)
        if j is None:
            self.fail(f"unknown column {name!r} (columns are declared in the COLUMNS section)")
        return j

    def _set_pairs(self, fields: list[str], section: str):
        """(set name, pairs) for RHS / RANGES lines, or None when the set is not the first."""
        if len(fields) not in (3, 5):
            self.fail(f"a {section} line needs a set name and one or two (row name, value) "
                      f"pairs; got {len(fields)} fields")
        if self.sets[section] is None:
            self.sets[section] = fields[0]
        elif fields[0] != self.sets[section]:
            return None
        return [(fields[k], fields[k + 1]) for k in range(1, len(fields), 2)]

    def _rhs_entry(self, fields: list[str]) -> None:
        pairs = self._set_pairs(fields, "RHS")
        for row, tok in pairs or ():
            code = self.row_code(row)
            v, tok = self.bound_value(tok, lambda: f"the RHS of row {row!r}")
            if code == _OBJ:
                if not math.isfinite(v):
                    self.fail("the RHS of the objective row (minus the objective constant) "
                              "must be finite")
                self.obj_rhs = v
            elif code >= 0:
                self.rhs[code] = (v, tok, self.lineno)

    def _range_entry(self, fields: list[str]) -> None:
        pairs = self._set_pairs(fields, "RANGES")
        for row, tok in pairs or ():
            code = self.row_code(row)
            v, tok = self.bound_value(tok, lambda: f"the range of row {row!r}")
            if code >= 0:
                self.rng[code] = (v, tok, self.lineno)

    def _bound(self, fields: list[str]) -> None:
        if len(fields) not in (3, 4):
            self.fail("a BOUNDS line needs a bound type, a bound set name, a column name and "
                      f"(for most types) a value; got {len(fields)} fields")
        kind = fields[0].upper()
        if kind not in _BOUND_TYPES:
            what = "is not supported" if kind == "SC" else "is unknown"
            self.fail(f"bound type {fields[0]!r} {what}")
        if kind in _BOUND_NEEDS_VALUE and len(fields) < 4:
            self.fail(f"bound type {kind} needs a value (fields: type, bound set name, column "
                      "name, value)")
        if self.sets["BOUNDS"] is None:
            self.sets["BOUNDS"] = fields[1]
        elif fields[1] != self.sets["BOUNDS"]:
            return
        j = self.col_index(fields[2])
        v = self.bound_value(fields[3], lambda: f"the {kind} bound of {fields[2]!r}")[0] \
            if kind in _BOUND_NEEDS_VALUE else None
        b = self.bounds.get(j)
        if b is None:
            b = self.bounds[j] = [0.0, math.inf, False, 0]
        _apply_bound(b, kind, v)
        b[3] = self.lineno

    def _qsection(self, tokens: list[str]) -> None:
        if len(tokens) > 2:
            self.fail("QSECTION takes at most one row name")
        if len(tokens) == 2 and tokens[1] != self.obj:
            self.fail(f"QSECTION for row {tokens[1]!r}: quadratic constraints are not "
                      "supported (only the objective row may have a QSECTION)")
        self.section = "QSECTION"
        self._start_quad("triangle")

    def _start_quad(self, kind: str) -> None:
        if self.qkind is not None and self.qkind != kind:
            self.fail("the quadratic objective is given twice, once as one triangle "
                      "(QUADOBJ / QSECTION) and once as a full matrix (QMATRIX)")
        self.qkind = kind
        self.qline = self.lineno

    def _quad(self, fields: list[str]) -> None:
        if len(fields) != 3:
            self.fail(f"a {self.section} line needs two column names and a value; got "
                      f"{len(fields)} fields")
        i = self.col_index(fields[0])
        j = self.col_index(fields[1])
        v = self.coefficient(fields[2],
                             lambda: f"the quadratic term ({fields[0]!r}, {fields[1]!r})")
        if v != 0.0:
            self.qi.append(i)
            self.qj.append(j)
            self.qv.append(v)


def _apply_bound(b: list, kind: str, v) -> None:
    """Update ``b = [lower, upper, lower_given, line]`` for one BOUNDS entry."""
    if kind in ("UP", "UI"):
        b[1] = v
        if v < 0 and not b[2]:   # MPS convention: a negative upper bound alone frees the lower
            b[0] = -math.inf
    elif kind in ("LO", "LI"):
        b[0], b[2] = v, True
    elif kind == "FX":
        b[0], b[1], b[2] = v, v, True
    elif kind == "FR":
        b[0], b[1], b[2] = -math.inf, math.inf, True
    elif kind == "MI":
        b[0], b[2] = -math.inf, True
    elif kind == "PL":
        b[1] = math.inf
    elif kind == "BV":
        b[0], b[1], b[2] = 0.0, 1.0, True


# -- from the collected data to a Problem --------------------------------------------------------

_EXACT = Context(prec=2000, traps=[Inexact, Overflow, Underflow, InvalidOperation])


def _exact_sum(a_tok: str, a: float, c_tok: str, c: float, sign: int) -> float:
    """``a + sign * |c|`` from the decimal tokens, exactly, rounded once to binary64."""
    if not (math.isfinite(a) and math.isfinite(c)):
        return a + sign * abs(c)
    try:   # Decimal is exact here unless the digits span more than 2000 places
        d = Decimal(c_tok).copy_abs()
        return float(_EXACT.add(Decimal(a_tok), d if sign > 0 else -d))
    except ArithmeticError:
        return float(Fraction(a_tok) + sign * abs(Fraction(c_tok)))


def _row_interval(kind: int, rhs, rng) -> tuple[float, float, bool]:
    """(lower, upper, is_equality) of a constraint row from its RHS and RANGES entries."""
    v, tok = (rhs[0], rhs[1]) if rhs else (0.0, "0")
    if rng is None or (kind == _ROW_E and rng[0] == 0.0):
        if kind == _ROW_E:
            return v, v, True
        return (-math.inf, v, False) if kind == _ROW_L else (v, math.inf, False)
    r, rtok = rng[0], rng[1]
    if kind == _ROW_G or (kind == _ROW_E and r > 0):
        return v, _exact_sum(tok, v, rtok, r, +1), False
    return _exact_sum(tok, v, rtok, r, -1), v, False


def _row_bounds(rd: _MPSReader):
    """Arrays (lower, upper, is_equality) of the constraint rows, checked."""
    kinds = np.asarray(rd.row_types, dtype=np.int8)
    rhs = np.zeros(kinds.size)
    if rd.rhs:
        rhs[np.fromiter(rd.rhs.keys(), dtype=np.int64, count=len(rd.rhs))] = \
            [e[0] for e in rd.rhs.values()]
    lo = np.where(kinds == _ROW_L, -np.inf, rhs)
    hi = np.where(kinds == _ROW_G, np.inf, rhs)
    eq = kinds == _ROW_E
    for i, rng in rd.rng.items():
        lo[i], hi[i], eq[i] = _row_interval(int(kinds[i]), rd.rhs.get(i), rng)
    with np.errstate(invalid="ignore"):
        bad = np.where(eq, ~np.isfinite(lo), np.isnan(lo) | np.isnan(hi) | (lo > hi)
                       | (lo == np.inf) | (hi == -np.inf))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        line = (rd.rng.get(i) or rd.rhs.get(i) or (None, None, None))[2]
        rd.fail(f"row {rd.row_names[i]!r} has an empty or infinite interval "
                f"[{lo[i]}, {hi[i]}] from its RHS / RANGES entries", line)
    return lo, hi, eq


def _column_bounds(rd: _MPSReader, n: int):
    """Arrays (lower, upper) of the variables, checked."""
    lo, hi = np.zeros(n), np.full(n, np.inf)
    for j, (lb, ub, _, line) in rd.bounds.items():
        if lb > ub or lb == math.inf or ub == -math.inf:
            rd.fail(f"column {rd.col_names[j]!r} has lower bound {lb} > upper bound {ub}", line)
        lo[j], hi[j] = lb, ub
    return lo, hi


def _quadratic(rd: _MPSReader, n: int) -> sp.csc_matrix:
    """The full symmetric H (n, n) from the QUADOBJ / QMATRIX triplets."""
    i = np.asarray(rd.qi, dtype=np.int64)
    j = np.asarray(rd.qj, dtype=np.int64)
    v = np.asarray(rd.qv, dtype=np.float64)
    if rd.qkind == "full":
        H = sp.coo_matrix((v, (i, j)), shape=(n, n)).tocsc()
        H.sum_duplicates()
        _check_qmatrix(rd, H)
        return H
    L = sp.coo_matrix((v, (np.maximum(i, j), np.minimum(i, j))), shape=(n, n)).tocsc()
    L.sum_duplicates()
    return (L + sp.tril(L, k=-1).T).tocsc()


def _check_qmatrix(rd: _MPSReader, H: sp.csc_matrix) -> None:
    D = (H - H.T).tocoo()
    D.eliminate_zeros()
    scale = max(1.0, float(np.max(np.abs(H.data)))) if H.nnz else 1.0
    big = np.flatnonzero(np.abs(D.data) > 1e-10 * scale)
    if big.size:
        a, b = int(D.row[big[0]]), int(D.col[big[0]])
        rd.fail(f"QMATRIX is not symmetric: entry ({rd.col_names[a]!r}, {rd.col_names[b]!r}) = "
                f"{H[a, b]!r} but ({rd.col_names[b]!r}, {rd.col_names[a]!r}) = {H[b, a]!r}",
                rd.qline)


def _to_problem(rd: _MPSReader) -> Problem:
    """Assemble the Problem from a finished reader."""
    if rd.objname is not None and rd.obj != rd.objname:
        rd.fail(f"OBJNAME names {rd.objname!r}, which is not an N row", rd.objname_seen)
    n, m = len(rd.col_names), len(rd.row_types)
    rlo, rhi, eq = _row_bounds(rd)
    clo, chi = _column_bounds(rd, n)
    M = sp.coo_matrix((np.asarray(rd.tv, dtype=np.float64),
                       (np.asarray(rd.ti, dtype=np.int64), np.asarray(rd.tj, dtype=np.int64))),
                      shape=(m, n)).tocsr()
    M.sum_duplicates()
    M.eliminate_zeros()
    has_bound = np.flatnonzero(np.isfinite(clo) | np.isfinite(chi))
    k = has_bound.size
    B = sp.csr_matrix((np.ones(k), (np.arange(k), has_bound)), shape=(k, n))
    ineq = np.flatnonzero(~eq)
    C = sp.vstack([M[ineq], B], format="csc")
    g = np.bincount(np.asarray(rd.gj, dtype=np.int64), weights=np.asarray(rd.gv, dtype=float),
                    minlength=n).astype(np.float64)
    H = _quadratic(rd, n)
    constant = 0.0 - rd.obj_rhs
    if rd.maximize:
        H, g, constant = -H, -g, 0.0 - constant
    try:
        return make_problem(H, g, M[np.flatnonzero(eq)], rlo[eq], C,
                            np.concatenate([rlo[ineq], clo[has_bound]]),
                            np.concatenate([rhi[ineq], chi[has_bound]]),
                            constant=constant, name=rd.name)
    except ValueError as exc:
        raise QPSFormatError(rd.path, None, str(exc)) from None


def _parse(lines: list[str], path, fixed: bool) -> Problem:
    return _to_problem(_MPSReader(lines, path, fixed).parse())


def read_qps(path, fmt: str = "auto") -> Problem:
    """Read a QP (or LP) from a QPS / MPS file.

    Parameters
    ----------
    path : str or os.PathLike
        The file; a name ending in ``.gz`` is read through gzip.
    fmt : {"auto", "free", "fixed"}
        "free": fields separated by blanks. "fixed": fields in columns 2-3, 5-12, 15-22, 25-36,
        40-47 and 50-61 (names may contain blanks). "auto" (default) tries free format and falls
        back to fixed format. If both fail, the free-format error is raised, unless the file fits
        the fixed columns and the fixed-format reading got further.

    Returns
    -------
    Problem
        With ``n`` the number of columns: H (n, n) full symmetric; g (n,); A (n_eq, n) and
        b (n_eq,) from the unranged E rows; C (n_in, n), l and u (n_in,) from the L, G and ranged
        E rows followed by one identity row per variable with a finite bound; ``constant`` minus
        the objective row's RHS; ``name`` from the NAME line. See the module docstring for the
        conventions.

    Raises
    ------
    QPSFormatError
        For a malformed file; the message names the file, the line and what was wrong.
    """
    if fmt not in ("auto", "free", "fixed"):
        raise ValueError(f"fmt must be 'auto', 'free' or 'fixed', got {fmt!r}")
    lines = _read_lines(path)
    if fmt != "auto":
        return _parse(lines, path, fmt == "fixed")
    try:
        return _parse(lines, path, False)
    except QPSFormatError as free_error:
        try:
            return _parse(lines, path, True)
        except QPSFormatError as fixed_error:
            further = (fixed_error.lineno or 0) > (free_error.lineno or 0)
            if further and not isinstance(fixed_error, _FixedLayoutError):
                raise fixed_error from None
            raise free_error from None


#: Alias of :func:`read_qps` (MPS is the same format without quadratic sections).
read_mps = read_qps


# ----------------------------------------------------------------------------------------------
# reading qpbenchmark .mat files
# ----------------------------------------------------------------------------------------------

def _mat_field(data: dict, key: str, path, required: bool = True):
    if key not in data:
        if required:
            raise ValueError(f"{path}: missing field {key!r} (expected P, q, r, A, l, u)")
        return None
    return data[key]


def _mat_bounds(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1).copy()
    v[v >= MAT_INFINITY] = np.inf
    v[v <= -MAT_INFINITY] = -np.inf
    return v


def read_mat(path) -> Problem:
    """Read a QP from a ``.mat`` file in the qpbenchmark (Maros-Meszaros) layout.

    The file holds ``P`` (n, n) full symmetric, ``q`` (n, 1), ``r`` (1, 1) objective constant
    (optional), ``A`` (m, n), ``l`` and ``u`` (m, 1), for min 1/2 x'Px + q'x + r subject to
    l <= A x <= u. Values with magnitude >= 1e19 are infinite.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Problem
        Rows of ``A`` with l == u become ``A x = b`` (in file order); the other rows, except free
        ones (both bounds infinite, dropped), become ``l <= C x <= u``. ``name`` is the file stem.

    Raises
    ------
    ValueError
        Naming the file, for missing fields or inconsistent data.
    """
    import scipy.io

    data = scipy.io.loadmat(os.fspath(path))
    q = np.asarray(_mat_field(data, "q", path), dtype=np.float64).reshape(-1)
    P = _mat_field(data, "P", path, required=False)
    r = _mat_field(data, "r", path, required=False)
    A = sp.csr_matrix(_mat_field(data, "A", path), dtype=np.float64)
    lo = _mat_bounds(_mat_field(data, "l", path))
    hi = _mat_bounds(_mat_field(data, "u", path))
    if lo.shape != (A.shape[0],) or hi.shape != (A.shape[0],):
        raise ValueError(f"{path}: l and u must have one entry per row of A ({A.shape[0]})")
    keep = np.isfinite(lo) | np.isfinite(hi)
    eq = keep & (lo == hi)
    ineq = np.flatnonzero(keep & ~eq)
    eq = np.flatnonzero(eq)
    constant = 0.0 if r is None else float(np.asarray(r, dtype=np.float64).reshape(-1)[0])
    try:
        return make_problem(None if P is None else sp.csc_matrix(P, dtype=np.float64), q,
                            A[eq], lo[eq], A[ineq], lo[ineq], hi[ineq], constant=constant,
                            name=Path(path).stem)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_problem(path) -> Problem:
    """Read a QP, choosing the reader from the file name.

    ``.qps`` and ``.mps`` (any case, optionally followed by ``.gz``) go to :func:`read_qps`,
    ``.mat`` to :func:`read_mat`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    Problem
    """
    name = os.fspath(path).lower()
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith((".qps", ".mps")):
        return read_qps(path)
    if name.endswith(".mat"):
        return read_mat(path)
    raise ValueError(f"{os.fspath(path)}: unknown file type (expected .qps, .mps, .qps.gz, "
                     ".mps.gz or .mat)")


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

def _num(v: float) -> str:
    """Shortest decimal text that reads back as exactly ``v``."""
    return repr(float(v))


def _bound_rows(C: sp.csr_matrix, l: np.ndarray, u: np.ndarray) -> int:
    """Number of trailing rows of C that can be written as variable bounds.

    Those are identity rows (one entry, equal to 1) with at least one finite bound, whose
    columns increase strictly: exactly what the reader builds from a BOUNDS section.
    """
    p = C.shape[0]
    if p == 0:
        return 0
    counts = np.diff(C.indptr)
    single = counts == 1
    first = np.minimum(C.indptr[:-1], max(C.nnz - 1, 0))
    cols = np.where(single, C.indices[first], -1) if C.nnz else np.full(p, -1)
    vals = np.where(single, C.data[first], 0.0) if C.nnz else np.zeros(p)
    ok = single & (vals == 1.0) & (np.isfinite(l) | np.isfinite(u))
    ok[:-1] &= cols[:-1] < cols[1:]
    bad = np.flatnonzero(~ok)
    # the ordering test links each row to the next one, so the suffix of bound rows is
    # everything after the last row that fails
    return p - (int(bad[-1]) + 1 if bad.size else 0)


def _range_token(base: float, other: float) -> str:
    """Text of R with ``base +- |R| == other`` exactly in the reader (see :func:`_exact_sum`)."""
    sign = 1 if other >= base else -1
    short = _num(abs(other - base))
    if not math.isfinite(other - base) or \
            _exact_sum(_num(base), base, short, float(short), sign) == other:
        return short
    with localcontext() as ctx:
        ctx.prec = 5000   # exact: the decimal expansions of two doubles span < 1500 places
        return str(abs(Decimal(float(other)) - Decimal(_num(base))))


def _row_lines(l: np.ndarray, u: np.ndarray):
    """ROWS types, RHS tokens and RANGES tokens of the general inequality rows.

    A two-sided row is written with its smaller end (in magnitude) as the RHS, so that readers
    computing ``rhs +- |R|`` in floating point lose the least accuracy.
    """
    types, rhs, ranges = [], [], []
    for i, (lo, hi) in enumerate(zip(l.tolist(), u.tolist())):
        if lo == -math.inf or (hi != math.inf and abs(hi) < abs(lo)):
            types.append("L")
            rhs.append(_num(hi))
            if lo != -math.inf:
                ranges.append((i, _range_token(hi, lo)))
        else:
            types.append("G")
            rhs.append(_num(lo))
            if hi != math.inf:
                ranges.append((i, _range_token(lo, hi)))
    return types, rhs, ranges


def _bound_lines(lo: float, hi: float, col: str) -> list[str]:
    if lo == hi:
        return [f" FX BND {col} {_num(lo)}"]
    out = []
    if lo == -math.inf:
        out.append(f" MI BND {col}" if hi != math.inf else f" FR BND {col}")
    else:
        out.append(f" LO BND {col} {_num(lo)}")
    if hi != math.inf:
        out.append(f" UP BND {col} {_num(hi)}")
    return out


def _column_section(problem: Problem, Cg: sp.csr_matrix, row_names: list[str]) -> list[str]:
    K = sp.vstack([sp.csr_matrix(problem.g.reshape(1, -1)), problem.A, Cg], format="csc")
    K.eliminate_zeros()
    K.sort_indices()
    out = ["COLUMNS"]
    indptr, rows, vals = K.indptr.tolist(), K.indices.tolist(), K.data.tolist()
    for j in range(problem.n):
        a, b = indptr[j], indptr[j + 1]
        if a == b:
            out.append(f"    x{j} obj 0.0")
        out.extend(f"    x{j} {row_names[rows[k]]} {vals[k]!r}" for k in range(a, b))
    return out


def _quadratic_section(H: sp.csc_matrix) -> list[str]:
    if H.nnz == 0:
        return []
    symmetric = (H != H.T).nnz == 0
    T = sp.tril(H, format="csc") if symmetric else H.tocsc()
    T.sort_indices()
    out = ["QUADOBJ" if symmetric else "QMATRIX"]
    indptr, rows, vals = T.indptr.tolist(), T.indices.tolist(), T.data.tolist()
    for j in range(T.shape[1]):
        out.extend(f"    x{rows[k]} x{j} {vals[k]!r}" for k in range(indptr[j], indptr[j + 1]))
    return out


def _rhs_section(problem: Problem, rhs: list[str], ranges: list) -> list[str]:
    out = ["RHS"]
    if problem.constant != 0.0:
        out.append(f"    rhs obj {_num(-problem.constant)}")
    out += [f"    rhs e{i} {_num(v)}" for i, v in enumerate(problem.b.tolist()) if v != 0.0]
    out += [f"    rhs c{i} {v}" for i, v in enumerate(rhs) if float(v) != 0.0]
    if ranges:
        out.append("RANGES")
        out += [f"    rng c{i} {r}" for i, r in ranges]
    return out


def _bounds_section(n: int, cols: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[str]:
    """BOUNDS for all n columns; ``cols`` have bounds (lo, hi), the others are free."""
    bounds = dict(zip(cols.tolist(), zip(lo.tolist(), hi.tolist())))
    out = ["BOUNDS"]
    for j in range(n):
        b_lo, b_hi = bounds.get(j, (-math.inf, math.inf))
        out += _bound_lines(b_lo, b_hi, f"x{j}")
    return out


def _qps_lines(problem: Problem) -> list[str]:
    C = sp.csr_matrix(problem.C)
    nb = _bound_rows(C, problem.l, problem.u)
    p = C.shape[0] - nb
    types, rhs, ranges = _row_lines(problem.l[:p], problem.u[:p])
    name = re.sub(r"\s+", "_", problem.name.strip())
    out = [f"* written by sparseqp.io.write_qps: n={problem.n}, equalities={problem.n_eq}, "
           f"inequality rows={p}, bounded variables={nb}",
           f"NAME {name}".rstrip(), "ROWS", " N obj"]
    out += [f" E e{i}" for i in range(problem.n_eq)]
    out += [f" {t} c{i}" for i, t in enumerate(types)]
    row_names = ["obj"] + [f"e{i}" for i in range(problem.n_eq)] + [f"c{i}" for i in range(p)]
    out += _column_section(problem, C[:p], row_names)
    out += _rhs_section(problem, rhs, ranges)
    bound_cols = C.indices[C.indptr[p:-1]] if nb else np.zeros(0, dtype=np.int64)
    out += _bounds_section(problem.n, bound_cols, problem.l[p:], problem.u[p:])
    out += _quadratic_section(problem.H)
    out.append("ENDATA")
    return out


def write_qps(problem: Problem, path) -> None:
    """Write a Problem as a free-format QPS file.

    Columns are named ``x0 .. x{n-1}``, the objective row ``obj``, the equality rows ``e0 ..``
    and the inequality rows ``c0 ..``. H is written as its lower triangle in QUADOBJ (or in full
    in QMATRIX when it is not exactly symmetric). The trailing rows of C that are identity rows
    with strictly increasing columns (and at least one finite bound) are written as BOUNDS;
    every other row of C becomes an L row (l = -inf, including free rows, written with RHS
    ``inf``), a G row (u = inf) or, when both ends are finite, an L or G row with a RANGES entry
    (range 0 when l == u; the RHS is the end of smaller magnitude). Numbers are
    written so that :func:`read_qps` gives back exactly the same H, g, A, b, C, l, u and
    constant (values with magnitude >= 1e30 excepted: the reader takes them as infinite).

    Parameters
    ----------
    problem : Problem
        With H (n, n), g (n,), A (n_eq, n), b (n_eq,), C (n_in, n), l and u (n_in,).
    path : str or os.PathLike
        Output file; a name ending in ``.gz`` is gzip-compressed.
    """
    text = "\n".join(_qps_lines(problem)) + "\n"
    name = os.fspath(path)
    opener = gzip.open if str(name).lower().endswith(".gz") else open
    with opener(name, "wt", encoding="latin-1", newline="\n") as fh:
        fh.write(text)
