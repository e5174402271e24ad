"""Shared fixtures: repository paths, the CLI run in-process, and the real-Nix environment."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from hypothesis import is_hypothesis_test

from nixcomply.cli import main

pytest_plugins = [
    "fuzzing",
    "boundary",
    "fixtures_checks",
    "fixtures_systemd",
    "fixtures_nix",
    "fixtures_reconcile",
    "fixtures_heal",
    "fixtures_evidence",
    "fixtures_postgres",
    "fixtures_server",
]

# Property tests are derandomized by default (profile "ci"), so `make test` passes or fails
# the same way on every run; `make fuzz` draws fresh examples (profile "fuzz"): tests/fuzzing.py.

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


# Modules whose tests change this machine's shared state (the kernel's audit rules, /run/sshd,
# loopback ports picked and then bound); tests marked `host` elsewhere count too.
HOST_STATE_MODULES: Final = frozenset({"test_checks_integration.py", "test_vm_twins.py"})
HOST_STATE_LOCK: Final = Path(tempfile.gettempdir()) / "nixcomply-tests-host-state.lock"


# Where a real host keeps nixcomply's configuration, state and keys: no test may create them
# (each test gets its own directories; a default path reached by mistake shows here).
HOST_PATHS: Final = tuple(
    Path(p)
    for p in (
        "/etc/nixcomply",
        "/etc/nixcomply-server",
        "/var/lib/nixcomply",
        "/var/lib/nixcomply-keys",
        "/var/lib/nixcomply-server-keys",
    )
)
_absent_at_start: list[Path] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # once, in the controller (pytest-xdist)
        _absent_at_start.extend(p for p in HOST_PATHS if not p.exists())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    created = [p for p in _absent_at_start if p.exists()]
    if created:
        print(f"\nthe tests created {', '.join(map(str, created))} on this machine: a default path was used")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


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
        if is_hypothesis_test(getattr(item, "obj", None)):
            item.add_marker(pytest.mark.property)


@pytest.fixture(autouse=True)
def _one_at_a_time_on_host_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """`make test` runs modules in parallel (pytest-xdist, ``--dist loadfile``); the tests that
    change the machine's shared state take one lock for their duration, so they never overlap
    with each other, in this run or in another on the same machine."""
    item = request.node
    if item.path.name not in HOST_STATE_MODULES and item.get_closest_marker("host") is None:
        yield
        return
    with HOST_STATE_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


Cli = Callable[..., CliResult]
"""The ``cli`` fixture: ``cli("evidence", "verify", path)`` (strings or paths)."""


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
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
