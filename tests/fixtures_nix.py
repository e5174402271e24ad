"""A sandbox host built with the real nix, shared by a test module.

The module-scoped ``world`` commits five revisions and builds four of them once; tests that
change the host's state take ``host``, which starts from an empty root (no profile, nothing
running) while the flake and the store paths stay.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from nixcomply.sandbox.emulated import Sandbox

HOST = "clinic-01"

APP_UNIT = "[Unit]\nDescription=sandbox app\n[Service]\nType=exec\nExecStart=/bin/sleep 1000\n"


def manifest_json(baseline_version: int) -> str:
    """A manifest in nixcomply.model.manifest's schema (the renderer will produce real ones)."""
    return json.dumps(
        {
            "schema": 1,
            "generator": "tests/fixtures_nix.py",
            "baseline": {
                "id": "hipaa-v1",
                "version": baseline_version,
                "title": "HIPAA Security Rule baseline",
                "digest": "sha256:" + "0" * 64,
            },
            "nixos_release": "26.05",
            "parameters": {"backup_max_age_hours": 24},
            "controls": {},
            "exceptions": {},
        },
        indent=2,
        sort_keys=True,
    )


@dataclass(frozen=True)
class Revisions:
    skeleton: str  # Sandbox.create's commit: no generation
    first: str  # kernel 6.12.1, baseline v1, app.service
    second: str  # same kernel, baseline v2
    kernel: str  # kernel 6.12.2, child of second
    side: str  # child of first: not a descendant of second or kernel; main's head afterwards


@dataclass(frozen=True)
class NixWorld:
    sandbox: Sandbox
    revs: Revisions
    systems: dict[str, Path]  # "first", "second", "kernel", "side" -> built toplevel


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, nix_env: dict[str, str]) -> NixWorld:
    sandbox = Sandbox.create(tmp_path_factory.mktemp("sandbox"), host=HOST)
    skeleton = sandbox.head()
    units = {"app.service": APP_UNIT}
    first = sandbox.commit_generation(label="first", manifest_json=manifest_json(1), units=units)
    second = sandbox.commit_generation(label="second", manifest_json=manifest_json(2), units=units)
    kernel = sandbox.commit_generation(
        label="kernel update", manifest_json=manifest_json(2), units=units, kernel="6.12.2"
    )
    side = sandbox.commit_generation(label="side", manifest_json=manifest_json(3), units=units, parent=first)
    revs = Revisions(skeleton=skeleton, first=first, second=second, kernel=kernel, side=side)
    systems = {name: sandbox.build(getattr(revs, name)) for name in ("first", "second", "kernel", "side")}
    return NixWorld(sandbox, revs, systems)


@pytest.fixture
def host(world: NixWorld) -> NixWorld:
    """The shared world with an empty host root: no generation, nothing running or booted."""
    world.sandbox.reset_host()
    return world
