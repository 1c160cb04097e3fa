"""The ``sparseqp`` command line, run as ``python -m sparseqp`` in a subprocess."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
HS21_OPT = -99.96  # tests/data/README.md


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "sparseqp", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sparseqp: error:")
    return lines[0]


def test_demo_exits_zero():
    proc = run_cli("demo", "--nx", 4, "--nu", 2, "--horizon", 10)
    assert proc.returncode == 0, proc.stderr
    assert "status" in proc.stdout


def test_solve_prints_objective():
    proc = run_cli("solve", DATA / "HS21.QPS")
    assert proc.returncode == 0, proc.stderr
    line = next(s for s in proc.stdout.splitlines() if s.strip().startswith("objective"))
    value = float(line.split(":", 1)[1])
    assert value == pytest.approx(HS21_OPT, rel=1e-6)
    assert "SOLVED" in proc.stdout and "factorizations" in proc.stdout


@pytest.mark.parametrize("name", ["HS21.QPS", "HS21.mat"])
def test_solve_json(name):
    proc = run_cli("solve", DATA / name, "--json", "--eps-abs", "1e-9")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["status"] == "SOLVED" and rec["success"] is True
    assert rec["objective"] == pytest.approx(HS21_OPT, rel=1e-6)
    for key in ("prim_res", "dual_res", "iterations", "factorizations", "time"):
        assert key in rec


def test_solve_output_npy(tmp_path):
    out = tmp_path / "x.npy"
    proc = run_cli("solve", DATA / "GENHS28.QPS", "--output", out)
    assert proc.returncode == 0, proc.stderr
    x = np.load(out)
    assert x.shape == (10,)
    assert np.all(np.isfinite(x))


def test_solve_bad_path(tmp_path):
    line = assert_one_line_error(run_cli("solve", tmp_path / "missing.qps"))
    assert "missing.qps" in line


def test_solve_malformed_file(tmp_path):
    bad = tmp_path / "bad.qps"
    bad.write_text("NAME BAD\nROWS\n N obj\nCOLUMNS\n    x1  obj  notanumber\nENDATA\n")
    line = assert_one_line_error(run_cli("solve", bad))
    assert "bad.qps" in line


def test_solve_unknown_extension(tmp_path):
    bad = tmp_path / "problem.txt"
    bad.write_text("hello\n")
    assert_one_line_error(run_cli("solve", bad))


@pytest.mark.parametrize("option", [["--eps-abs", "-1"], ["--eps-abs", "abc"], ["--bogus"]])
def test_solve_bad_option(option):
    assert_one_line_error(run_cli("solve", DATA / "HS21.QPS", *option))


def test_bench_small_dir(tmp_path):
    for name in ("HS21.QPS", "HS35.QPS"):
        shutil.copy(DATA / name, tmp_path / name)
    proc = run_cli("bench", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "HS21.QPS" in proc.stdout and "HS35.QPS" in proc.stdout
    assert "solved 2/2" in proc.stdout and "shifted geometric mean" in proc.stdout


def test_bench_json_and_bad_file(tmp_path):
    shutil.copy(DATA / "HS21.QPS", tmp_path / "HS21.QPS")
    (tmp_path / "broken.mps").write_text("ROWS\n X obj\nENDATA\n")
    proc = run_cli("bench", tmp_path, "--json")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    status = {r["problem"]: r["status"] for r in rec["rows"] if r["solver"] == "sparseqp"}
    assert status == {"HS21.QPS": "SOLVED", "broken.mps": "read error"}
    assert rec["summary"][0]["solved"] == 1


def test_bench_missing_dir(tmp_path):
    assert_one_line_error(run_cli("bench", tmp_path / "nowhere"))
