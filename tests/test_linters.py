"""The linters are tests: "the tests pass" includes "the code is clean and strictly typed"."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

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


# Shell scripts nixcomply ships or runs: the sandbox's emulated programs (written into every
# sandbox host) and the CI entry point. Fragments without a shebang say their shell in a
# `# shellcheck shell=sh` directive.
SHELL_SCRIPTS = [
    ".ci/run",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "python/nixcomply/sandbox/data").glob("*.sh")),
]


def test_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is required (apt-get install shellcheck; `make test` installs it)")
    assert "python/nixcomply/sandbox/data/switch-to-configuration.sh" in SHELL_SCRIPTS
    r = subprocess.run(
        ["shellcheck", "--norc", "--severity=style", *SHELL_SCRIPTS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
