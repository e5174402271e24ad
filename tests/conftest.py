"""Shared fixtures: repository paths, the CLI run in-process, and the real-Nix environment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from nixcomply.cli import main

# Fixture modules of each area (tests/fixtures_<area>.py).
pytest_plugins = ["fixtures_evidence"]

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"

# Nix without a daemon, sandbox or binary cache: how CI and the sandbox host run it.
NIX_CONFIG = "\n".join(
    [
        "experimental-features = nix-command flakes",
        "sandbox = false",
        "substituters =",
        "build-users-group =",
    ]
)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> object:
    """Run ``nixcomply ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str | os.PathLike[str]) -> CliResult:
        argv: Sequence[str] = [os.fspath(a) for a in args]
        try:
            code = main(argv)
        except SystemExit as e:  # argparse usage errors
            code = int(e.code) if isinstance(e.code, int) else 2
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def nix_env() -> dict[str, str]:
    """Environment for running the real nix; fails (never skips) when nix is missing."""
    if shutil.which("nix") is None:
        pytest.fail("the real nix is required (apt-get install nix-bin; `make test` installs it)")
    env = dict(os.environ)
    env["NIX_CONFIG"] = NIX_CONFIG
    return env
