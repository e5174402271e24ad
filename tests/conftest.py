"""Shared fixtures: repository paths, the CLI run in-process, and the real-Nix environment."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from nixcomply.cli import main

pytest_plugins = [
    "fixtures_systemd",
    "fixtures_nix",
    "fixtures_reconcile",
    "fixtures_heal",
    "fixtures_evidence",
    "fixtures_postgres",
    "fixtures_server",
]

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the real components they need, from the fixtures they use (or their
    module), so the Nix build sandbox (no nix store, no systemd, not root, none of the host's
    tools) can deselect them: `-m "not nix and not systemd and not host and not lint and not postgres"`."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "nix_env" in names:
            item.add_marker(pytest.mark.nix)
        if "user_manager" in names:
            item.add_marker(pytest.mark.systemd)
        if item.path.name == "test_linters.py":
            item.add_marker(pytest.mark.lint)
        if "pg_cluster" in names:
            item.add_marker(pytest.mark.postgres)
        if item.path.name == "test_checks_integration.py":
            item.add_marker(pytest.mark.host)


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
