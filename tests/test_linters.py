"""The linters are tests: "the tests pass" includes "the code is clean and strictly typed"."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

CONFIG = str(REPO / "python" / "pyproject.toml")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_ruff_check() -> None:
    r = run("ruff", "check", "--config", CONFIG, "--no-cache", "python", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format() -> None:
    r = run(
        "ruff", "format", "--config", CONFIG, "--no-cache", "--check", "--diff", "python", "tests", "bench"
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict() -> None:
    r = run("mypy", "--config-file", CONFIG, "--no-incremental", "python/nixcomply", "bench")
    assert r.returncode == 0, r.stdout + r.stderr
