"""Evaluate a rendered baseline module with the real Nix evaluator, without nixpkgs.

The rendered module is a function of ``config``, ``lib`` and ``options``; ``nix/definitions.nix``
calls it with a stand-in ``lib`` (``mkIf``/``mkMerge`` in nixpkgs' own representation) and a
small ``config``, and lists the definitions in effect. The sandbox host takes its manifest
from here, so the manifest a sandbox generation carries is the one the real module produces;
the tests use it to compare what the module sets with the YAML.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Final

from nixcomply.baseline.nixattr import nix_value
from nixcomply.nixos.tools import DEFAULT_TOOLS, Tools

MANIFEST_OPTION: Final = ["environment", "etc", "nixcomply/manifest.json", "text"]


def definitions_file() -> Path:
    return Path(str(resources.files("nixcomply.baseline").joinpath("nix/definitions.nix")))


def definitions(
    module: Path,
    baseline_id: str,
    scenarios: dict[str, dict[str, Any]],
    *,
    tools: Tools = DEFAULT_TOOLS,
    **args: Any,
) -> dict[str, list[dict[str, Any]]]:
    """For each scenario (control id -> exception), the definitions the module makes."""
    argv: list[str] = [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        str(definitions_file()),
        "--arg",
        "module",
        str(module.absolute()),
        "--argstr",
        "baseline",
        baseline_id,
        "--arg",
        "scenarios",
        nix_value(scenarios),
    ]
    for name, value in args.items():
        argv += ["--arg", name, nix_value(value)]
    result = tools.run(argv, timeout=120)
    data: dict[str, list[dict[str, Any]]] = json.loads(result.stdout)
    return data


def manifest_json(
    module: Path,
    baseline_id: str,
    *,
    exceptions: dict[str, dict[str, str]] | None = None,
    options: dict[str, Any] | None = None,
    tools: Tools = DEFAULT_TOOLS,
) -> str:
    """The ``/etc/nixcomply/manifest.json`` text the module writes for these exceptions."""
    result = definitions(module, baseline_id, {"host": exceptions or {}}, tools=tools, options=options or {})
    for d in result["host"]:
        if d["path"] == MANIFEST_OPTION:
            return str(d["value"])
    raise ValueError(f"{module} does not write /etc/nixcomply/manifest.json for baseline {baseline_id}")
