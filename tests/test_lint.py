"""The code passes ruff with the repository's ruff.toml (ruff is in the `test` extra)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Every place that holds Python (modules, scripts, notebooks); test_every_python_file_is_linted keeps it complete.
PATHS = ["keras_avloc", "tests", "benchmarks", "tools", "notebooks", "setup.py"]


def _ruff(*args):
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.fail("ruff is not installed; it is in the test extra: pip install -e '.[test]'")
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_ruff_check_passes():
    result = _ruff("check", "--no-cache", "--output-format", "concise", *PATHS)
    assert result.returncode == 0, f"ruff check failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"


def test_every_python_file_is_linted():
    def files(*paths):
        result = _ruff("check", "--no-cache", "--show-files", *paths)
        assert result.returncode == 0, result.stderr
        return {line.strip() for line in result.stdout.splitlines() if line.strip().endswith((".py", ".pyi", ".ipynb"))}

    everything, linted = files("."), files(*PATHS)
    assert everything - linted == set(), f"Python outside the linted paths; add it to PATHS: {everything - linted}"
