"""The code is formatted and linted as pyproject.toml's [tool.ruff] says (``make format`` applies it)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_and_format():
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert fmt.returncode == 0, "run `make format`:\n" + fmt.stdout[-3000:]
