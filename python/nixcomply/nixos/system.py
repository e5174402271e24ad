"""The running and booted system, and what a system toplevel says about itself.

``/run/current-system`` is the activated system (``switch-to-configuration test|switch``
moves it); ``/run/booted-system`` is the one the host booted. A toplevel carries
``nixos-version``, ``sw/bin/nixos-version --json`` (with ``configurationRevision`` when the
flake sets ``system.configurationRevision``), ``kernel``, ``initrd``, ``kernel-modules`` and
nixcomply's ``etc/nixcomply/manifest.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import Field, ValidationError

from nixcomply.model.base import ForeignModel
from nixcomply.model.manifest import read_manifest
from nixcomply.nixos.root import Root
from nixcomply.nixos.tools import DEFAULT_TOOLS, Tools

__all__ = [
    "BOOT_ENTRIES",
    "NixosVersion",
    "RebootNeed",
    "booted_system",
    "current_system",
    "kernel_version",
    "need_reboot",
    "nixos_version",
    "parse_nixos_version",
    "read_manifest",  # nixcomply.model.manifest.read_manifest, re-exported: the manifest inside a system
]

# What NixOS compares to decide that a reboot is needed (the autoUpgrade module's check):
# the link targets of these entries in the booted and the other system.
BOOT_ENTRIES: Final = ("kernel", "initrd", "kernel-modules")


def _resolve_link(link: Path) -> Path | None:
    if not link.is_symlink():
        return None
    return Path(os.path.realpath(link))


def current_system(root: Root) -> Path | None:
    """The store path ``/run/current-system`` resolves to, or None when it is absent."""
    return _resolve_link(root.current_system)


def booted_system(root: Root) -> Path | None:
    """The store path ``/run/booted-system`` resolves to, or None when it is absent
    (a container, or a sandbox host that never "booted")."""
    return _resolve_link(root.booted_system)


@dataclass(frozen=True)
class NixosVersion:
    """``nixos-version --json`` of a system."""

    nixos_version: str
    nixpkgs_revision: str | None
    configuration_revision: str | None  # absent when the flake did not set it (dirty tree)


class _NixosVersionJson(ForeignModel):
    # Written by nixpkgs' nixos-version; unknown keys ignored so a newer NixOS can add some.

    nixos_version: str = Field(alias="nixosVersion")
    nixpkgs_revision: str | None = Field(default=None, alias="nixpkgsRevision")
    configuration_revision: str | None = Field(default=None, alias="configurationRevision")


def parse_nixos_version(text: str) -> NixosVersion:
    try:
        raw = _NixosVersionJson.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as e:
        raise ValueError(f"unexpected `nixos-version --json` output: {e}") from None
    return NixosVersion(raw.nixos_version, raw.nixpkgs_revision, raw.configuration_revision)


def nixos_version(system: Path, *, tools: Tools = DEFAULT_TOOLS) -> NixosVersion:
    """Run ``<system>/sw/bin/nixos-version --json``: the version and revisions baked into
    that system (not the running one, unless ``system`` is the running one)."""
    result = tools.run([system / "sw/bin/nixos-version", "--json"], timeout=30)
    return result.parsed(parse_nixos_version)


def kernel_version(system: Path) -> str | None:
    """The kernel release of a system (the directory under ``kernel-modules/lib/modules``),
    as nixos-rebuild list-generations shows it; None if the system has no modules."""
    try:
        return next(iter(sorted(p.name for p in (system / "kernel-modules/lib/modules").iterdir())))
    except (OSError, StopIteration):
        return None


@dataclass(frozen=True)
class RebootNeed:
    """Whether the booted system's kernel, initrd or modules differ from another system's.

    ``booted`` is None when the host has no ``/run/booted-system``: then nothing is known and
    ``needed`` is False.
    """

    booted: Path | None
    target: Path | None
    kernel: bool
    initrd: bool
    kernel_modules: bool

    @property
    def needed(self) -> bool:
        return self.kernel or self.initrd or self.kernel_modules

    @property
    def changed(self) -> tuple[str, ...]:
        """The names of the entries that differ (``kernel``, ``initrd``, ``kernel-modules``)."""
        flags = (self.kernel, self.initrd, self.kernel_modules)
        return tuple(name for name, flag in zip(BOOT_ENTRIES, flags, strict=True) if flag)


def _entry_target(system: Path, entry: str) -> str | None:
    try:
        return os.readlink(system / entry)
    except OSError:
        return None


def need_reboot(root: Root, *, target: Path | None = None) -> RebootNeed:
    """Compare ``/run/booted-system/{kernel,initrd,kernel-modules}`` link targets with those of
    ``target`` (default: ``/run/current-system``), as NixOS does. Pass the profile's target to
    ask "will the boot default need a reboot to take effect"."""
    booted = booted_system(root)
    other = target if target is not None else current_system(root)
    if booted is None or other is None:
        return RebootNeed(booted, other, kernel=False, initrd=False, kernel_modules=False)
    differs = [_entry_target(booted, e) != _entry_target(other, e) for e in BOOT_ENTRIES]
    return RebootNeed(booted, other, kernel=differs[0], initrd=differs[1], kernel_modules=differs[2])
