"""The runnable examples, in quick mode, in a subprocess."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_mpc_sensitivity_quick(tmp_path):
    pytest.importorskip("matplotlib")
    fig = tmp_path / "fig.png"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "mpc_sensitivity.py"),
                           "--quick", "--out", str(fig)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert fig.is_file() and fig.stat().st_size > 0
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lqr = re.search(r"LQR check max \|du0/dx0 \+ K_0\| = (\S+)", proc.stdout)
    assert lqr is not None, proc.stdout
    assert float(lqr.group(1)) < 1e-6
    sat = re.search(r"max \|gain row\| of\s+saturated inputs = (\S+);", proc.stdout)
    assert sat is not None, proc.stdout
    assert float(sat.group(1)) < 1e-6
