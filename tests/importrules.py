"""The import directions the package layout promises, as a checker the linter test runs.

The fleet server and the host's uplink must never load host runtime: a server process that
imported the reconciler, the runbook executor or the systemd adapter could be made to act on
the machine it runs on, and the host's extras would become the server's dependencies. So:

* ``nixcomply.server`` may import ``core``, ``model``, ``errors``, ``evidence`` (the
  verifier, statements, the store's formats), ``baseline`` (controls and the controls map,
  for reports), ``cli`` (the command-line frame) and the package root (``__version__``);
  never host runtime (``HOST_RUNTIME``) and never ``uplink`` (the host's side);
* ``nixcomply.uplink`` may import the same; never host runtime and never ``server``;
* ``nixcomply.sandbox`` (the demo host) never imports ``commands``: the verbs use the
  sandbox, not the other way round.

"Import" means what Python would load: every ``import``/``from`` statement at any depth (a
lazy import in a function still runs), relative imports resolved, and
``importlib.import_module("literal")``; only ``if TYPE_CHECKING:`` blocks are exempt. The
rule is transitive: the server importing ``evidence.x`` that imports ``host.y`` breaks it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PACKAGE: Final = "nixcomply"
HOST_RUNTIME: Final = ("host", "reconcile", "heal", "nixos", "checks", "sandbox", "commands")
# room -> rooms it must never reach, directly or through others
FORBIDDEN: Final = {
    "server": (*HOST_RUNTIME, "uplink"),
    "uplink": (*HOST_RUNTIME, "server"),
    # the verbs sit on top: what they print belongs to the models (CycleReport.lines), so the
    # demo never reaches back into the command line
    "sandbox": ("commands",),
}


@dataclass(frozen=True)
class Violation:
    room: str
    chain: tuple[str, ...]  # module names from the room's module to the forbidden one
    where: str  # file:line of the first import in the chain

    def __str__(self) -> str:
        return f"{self.where}: {self.room}/ reaches {self.chain[-1]} via {' -> '.join(self.chain)}"


def module_name(root: Path, path: Path) -> str:
    """``root`` is the directory that holds the ``nixcomply`` package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    exempt: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            exempt.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno  # a submodule, when it is one
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def import_graph(root: Path) -> tuple[dict[str, dict[str, int]], dict[str, Path]]:
    """Every module of the package -> the package modules it imports (with the line)."""
    files = {module_name(root, p): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for target, line in _imports(tree, name, path.name == "__init__.py"):
            if target in files and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph, files


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def violations(root: Path) -> list[Violation]:
    """What ``server/`` and ``uplink/`` reach that they must not; empty when they are absent."""
    graph, files = import_graph(root)
    found: list[Violation] = []
    reported: set[tuple[str, str]] = set()
    for room, forbidden in FORBIDDEN.items():
        starts = [m for m in graph if room_of(m) == room]
        # breadth first from the room's modules, remembering how each module was reached
        came_from: dict[str, str | None] = dict.fromkeys(starts)
        queue = list(starts)
        while queue:
            current = queue.pop(0)
            for target in graph[current]:
                if target in came_from:
                    continue
                came_from[target] = current
                if room_of(target) in forbidden:
                    chain = [target]
                    while (prev := came_from[chain[-1]]) is not None:
                        chain.append(prev)
                    chain.reverse()
                    first = chain[0]
                    line = graph[first][chain[1]]
                    where = f"{files[first].relative_to(root)}:{line}"
                    key = (first, room_of(target))
                    if key not in reported:  # one report per module and forbidden room
                        reported.add(key)
                        found.append(Violation(room, tuple(chain), where))
                    continue  # do not walk on through it
                queue.append(target)
    return found
