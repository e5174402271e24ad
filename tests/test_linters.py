"""The linters are tests: "the tests pass" includes "the code is clean and strictly typed"."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from importrules import violations

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
    r = run("mypy", "--config-file", CONFIG, "--no-incremental", "python/nixcomply", "bench", "tests")
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


def test_server_and_uplink_never_reach_host_runtime() -> None:
    """See tests/importrules.py for the rule and why; passes while server/ or uplink/ is absent."""

    found = violations(REPO / "python")
    assert not found, "\n".join(map(str, found))


def test_the_import_rule_catches_bad_imports(tmp_path: Path) -> None:

    pkg = tmp_path / "nixcomply"

    def write(rel: str, text: str = "") -> None:
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    for rel in ["__init__.py", "errors.py", "model/__init__.py", "model/base.py", "host/__init__.py",
                "host/state.py", "reconcile/__init__.py", "reconcile/cycle.py", "heal/__init__.py",
                "heal/guard.py", "checks/__init__.py", "checks/registry.py", "evidence/__init__.py"]:  # fmt: skip
        write(rel)
    assert violations(tmp_path) == []  # no server/ or uplink/: nothing to check
    write("server/__init__.py")
    write("uplink/__init__.py")
    assert violations(tmp_path) == []  # empty packages
    write("server/good.py", "from nixcomply.model.base import StrictModel\nfrom nixcomply import errors\n")
    assert violations(tmp_path) == []
    write("server/direct.py", "from nixcomply.host.state import State\n")
    write("server/plain.py", "import nixcomply.reconcile.cycle\n")
    write("server/relative.py", "def f():\n    from ..heal import guard\n")
    write("server/dynamic.py", "import importlib\nimportlib.import_module('nixcomply.checks.registry')\n")
    write(
        "server/typing_only.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nixcomply.host import state\n",
    )
    write("evidence/leak.py", "from nixcomply.host import state\n")
    write("server/through.py", "from nixcomply.evidence import leak\n")
    write("uplink/client.py", "from nixcomply.server import good\n")
    found = violations(tmp_path)
    assert {(v.chain[0], v.chain[-1].split(".")[1]) for v in found} == {
        ("nixcomply.server.direct", "host"),
        ("nixcomply.server.plain", "reconcile"),
        ("nixcomply.server.relative", "heal"),
        ("nixcomply.server.dynamic", "checks"),
        ("nixcomply.server.through", "host"),
        ("nixcomply.uplink.client", "server"),
    }
    (through,) = [v for v in found if v.chain[0] == "nixcomply.server.through"]
    assert through.chain[1] == "nixcomply.evidence.leak"  # the message shows the way in
    assert str(through).startswith("nixcomply/server/through.py:1: server/ reaches")
