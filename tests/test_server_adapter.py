"""The server reaches ``nixcomply.evidence`` through one adapter, ``server/verifying.py``, so
a change to the verifier is a change in one place. (The import directions of server/ and
uplink/ are tests/importrules.py's, run by the linter tests.)"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "python" / "nixcomply"


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_the_server_reaches_the_evidence_package_through_one_adapter() -> None:
    users = sorted(
        str(p.relative_to(PACKAGE))
        for p in (PACKAGE / "server").rglob("*.py")
        if any(n.startswith("nixcomply.evidence") for _, n in imports(p))
    )
    assert users == ["server/verifying.py"]
