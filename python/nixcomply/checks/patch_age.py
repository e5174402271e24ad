"""patch_age: the running nixpkgs is at most ``parameters.critical_patch_max_age_days`` old.

A NixOS version string carries the date of the nixpkgs commit it was built from:
``26.05.20260819.b18a4b9`` is release 26.05 at the commit of 2026-08-19. It is read from
``<root>/run/current-system/sw/bin/nixos-version --json`` (``nixosVersion``). Security fixes
reach a host only through a newer nixpkgs, so an old date means unpatched packages. The fix
is a flake lock update by the MSP, not something a runbook can do: no runbook by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, per_control, run_command
from nixcomply.checks.context import CURRENT_SYSTEM, CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.nixos.system import NixosVersion

NAME: Final = "patch_age"
SPEC: Final = CheckSpec(name=NAME, severity="high", runbook=None, expect_keys=frozenset())
_VERSION: Final = re.compile(r"^(\d{2}\.\d{2})(?:pre-git|pre)?\.?(\d{8})\.([0-9a-f]{7,40})(?:\s.*)?$")


def parse_nixos_version_json(text: str) -> NixosVersion:
    if not text.strip():
        raise ValueError("nixos-version --json printed nothing")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"nixos-version --json output is not JSON: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nixosVersion"), str):
        raise ValueError("nixos-version --json output has no nixosVersion")
    nixpkgs = data.get("nixpkgsRevision")
    configuration = data.get("configurationRevision")
    return NixosVersion(
        data["nixosVersion"],
        nixpkgs if isinstance(nixpkgs, str) else None,
        configuration if isinstance(configuration, str) else None,
    )


def nixpkgs_date(version: str) -> date:
    """``26.05.20260819.b18a4b9`` -> 2026-08-19."""
    match = _VERSION.match(version)
    if match is None:
        raise ValueError(
            f"NixOS version {version!r} carries no nixpkgs date (expected like 26.05.20260819.b18a4b9)"
        )
    stamp = match.group(2)
    try:
        return date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:]))
    except ValueError:
        raise ValueError(f"NixOS version {version!r}: {stamp} is not a date") from None


def nixos_version_argv(ctx: CheckContext) -> list[str]:
    return [str(ctx.host_path(CURRENT_SYSTEM / "sw/bin/nixos-version")), "--json"]


def read_nixos_version(ctx: CheckContext) -> tuple[NixosVersion, Outputs]:
    result = run_command(ctx, nixos_version_argv(ctx))
    return parse_nixos_version_json(result.stdout), {"nixos_version": result.stdout}


def judge(version: NixosVersion, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    built = nixpkgs_date(version.nixos_version)
    age = (ctx.now.date() - built).days
    limit = ctx.parameters.critical_patch_max_age_days
    observed = {
        "nixos_version": version.nixos_version,
        "nixpkgs_revision": version.nixpkgs_revision,
        "nixpkgs_date": built.isoformat(),
        "age_days": age,
    }
    expected = {"max_age_days": limit}
    if age > limit:
        message = f"running nixpkgs is {age} d old ({version.nixos_version}, limit {limit} d): update the flake lock"
        return Verdict("drift", message, observed, expected)
    return Verdict("pass", f"running nixpkgs is {age} d old ({version.nixos_version})", observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, read_nixos_version, judge)
