"""The fleet's import directions: ``server/`` and ``uplink/`` never import host runtime
(the reconciler, healer, checks, NixOS adapters, sandbox, host state and commands), and
neither imports the other; both may use the shared model, infrastructure and evidence."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "python" / "nixcomply"
HOST_RUNTIME = (
    "nixcomply.config",
    "nixcomply.state",
    "nixcomply.daemon",
    "nixcomply.notify",
    "nixcomply.metrics",
    "nixcomply.systemd",
    "nixcomply.reconcile",
    "nixcomply.heal",
    "nixcomply.nixos",
    "nixcomply.checks",
    "nixcomply.sandbox",
    "nixcomply.sandboxhost",
    "nixcomply.usermanager",
    "nixcomply.demo",
    "nixcomply.commands",
    "nixcomply.cli",
    "nixcomply.host",
    "nixcomply.baseline",
)
FORBIDDEN = {
    "server": (*HOST_RUNTIME, "nixcomply.uplink"),
    "uplink": (*HOST_RUNTIME, "nixcomply.server"),
}


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_fleet_rooms_do_not_import_host_runtime(room: str) -> None:
    bad = []
    files = sorted((PACKAGE / room).rglob("*.py"))
    assert files
    for path in files:
        for line, name in imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[room]):
                bad.append(f"{path.relative_to(REPO)}:{line}: imports {name}")
    assert not bad, "\n".join(bad)


def test_the_server_reaches_the_evidence_package_through_one_adapter() -> None:
    users = sorted(
        str(p.relative_to(PACKAGE))
        for p in (PACKAGE / "server").rglob("*.py")
        if any(n.startswith("nixcomply.evidence") for _, n in imports(p))
    )
    assert users == ["server/verifying.py"]
