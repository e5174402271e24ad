"""Observe the host: running, booted and next-boot systems, and what changed since last time.

Everything is read under the configured :class:`~nixcomply.nixos.root.Root`, so the sandbox
host and a real host go through the same code. Reading is cheap: links, one
``nixos-version --json`` per distinct system, and the manifest file.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from nixcomply.core.memo import IMMUTABLE, Memo
from nixcomply.errors import CommandError, InputError
from nixcomply.host.state import Observation
from nixcomply.model.manifest import read_manifest
from nixcomply.nixos import generations, system
from nixcomply.nixos.root import Root
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile.model import (
    ExternalChange,
    ExternalKind,
    HostState,
    ProfileGeneration,
    SystemInfo,
)

logger = logging.getLogger(__name__)

STORE_DIR: Final = Path("/nix/store")


# What a store path's nixos-version says never changes: asked once per process (a daemon's
# cycles, or the observations of one cycle), never for a path outside the store.
_STORE_SYSTEMS: dict[Path, SystemInfo] = {}


def _info(
    path: Path, number: int | None, tools: Tools, cache: dict[Path, SystemInfo], memo: Memo | None
) -> SystemInfo:
    if (
        path not in cache
        and path not in _STORE_SYSTEMS
        and memo is not None
        and path.is_relative_to(STORE_DIR)
    ):
        remembered = memo.recall(f"store:nixos-version:{path}", IMMUTABLE)
        if remembered is not None:
            with contextlib.suppress(ValueError):
                _STORE_SYSTEMS[path] = SystemInfo.model_validate_json(remembered)
    if path not in cache and path in _STORE_SYSTEMS:
        cache[path] = _STORE_SYSTEMS[path]
    if path in cache:
        found = cache[path]
        return found if number is None else found.model_copy(update={"generation": number})
    try:
        version = system.nixos_version(path, tools=tools)
        info = SystemInfo(
            store_path=str(path),
            generation=number,
            nixos_version=version.nixos_version,
            configuration_revision=version.configuration_revision,
            nixpkgs_revision=version.nixpkgs_revision,
        )
    except (CommandError, InputError, OSError) as e:
        # a system without nixos-version (or a broken one) is still a system we can name
        logger.warning("cannot read nixos-version of %s: %s", path, e)
        info = SystemInfo(store_path=str(path), generation=number)
    else:
        if path.is_relative_to(STORE_DIR):
            _STORE_SYSTEMS[path] = info.model_copy(update={"generation": None})
            if memo is not None:
                memo.memorise(
                    f"store:nixos-version:{path}", IMMUTABLE, _STORE_SYSTEMS[path].model_dump_json()
                )
    cache[path] = info
    return info


def observe(root: Root, *, tools: Tools, hostname: str | None = None, memo: Memo | None = None) -> HostState:
    """Read the host's state; nothing here changes anything (``memo`` remembers what an
    immutable store path's ``nixos-version`` says, for the next run)."""
    cache: dict[Path, SystemInfo] = {}
    gens = generations.list_generations(root)
    by_path = {g.path: g.number for g in gens}
    current_gen = next((g for g in gens if g.current), None)

    current_path = system.current_system(root)
    booted_path = system.booted_system(root)
    current = _info(current_path, by_path.get(current_path), tools, cache, memo) if current_path else None
    booted = _info(booted_path, by_path.get(booted_path), tools, cache, memo) if booted_path else None
    profile = _info(current_gen.path, current_gen.number, tools, cache, memo) if current_gen else None

    manifest_baseline = None
    if current_path is not None:
        try:
            manifest = read_manifest(current_path)
        except InputError as e:
            logger.warning("the running system's manifest is unreadable: %s", e)
            manifest = None
        if manifest is not None:
            manifest_baseline = f"{manifest.baseline.id} version {manifest.baseline.version}"

    reboot = system.need_reboot(root)
    return HostState(
        observed_at=datetime.now(UTC),
        hostname=hostname or socket.gethostname(),
        current=current,
        booted=booted,
        profile=profile,
        generations=[
            ProfileGeneration(number=g.number, store_path=str(g.path), date=g.date, current=g.current)
            for g in gens
        ],
        manifest_baseline=manifest_baseline,
        need_reboot=list(reboot.changed),
    )


def observation_of(host: HostState) -> Observation:
    """What the state database remembers of this look at the host."""
    return Observation(
        current=host.current.store_path if host.current else None,
        booted=host.booted.store_path if host.booted else None,
        profile_generation=host.profile.generation if host.profile else None,
        revision=host.running_revision,
        at=host.observed_at,
    )


def external_change(
    before: Observation | None, host: HostState, *, explained_paths: frozenset[str] = frozenset()
) -> ExternalChange | None:
    """The change since ``before`` that nixcomply did not make, if any.

    ``explained_paths`` are systems nixcomply itself was activating when it was interrupted
    (an attempt still in progress): finding one of them running is not someone else's doing.
    """
    if before is None:
        return None
    now = observation_of(host)
    kinds: list[ExternalKind] = []
    if now.booted != before.booted and before.booted is not None:
        kinds.append(ExternalKind.REBOOT)
    if now.profile_generation != before.profile_generation:
        older = (
            now.profile_generation is not None
            and before.profile_generation is not None
            and now.profile_generation < before.profile_generation
        )
        kinds.append(ExternalKind.ROLLBACK if older else ExternalKind.SWITCH)
    elif now.current != before.current and now.current not in explained_paths:
        kinds.append(ExternalKind.ACTIVATION)
    if not kinds:
        return None
    if (
        now.current in explained_paths
        and ExternalKind.REBOOT not in kinds
        and set(kinds) <= {ExternalKind.SWITCH}
    ):
        return None  # our own interrupted switch completed the profile move
    parts = []
    if ExternalKind.REBOOT in kinds:
        parts.append(f"the host booted {now.booted} (was {before.booted})")
    if ExternalKind.ROLLBACK in kinds:
        parts.append(f"the system profile was rolled back to generation {now.profile_generation}")
    if ExternalKind.SWITCH in kinds:
        parts.append(
            f"the system profile moved from generation {before.profile_generation} to {now.profile_generation}"
        )
    if ExternalKind.ACTIVATION in kinds:
        parts.append(f"{now.current} was activated without moving the profile")
    return ExternalChange(
        kinds=kinds,
        before_current=before.current,
        after_current=now.current,
        before_profile_generation=before.profile_generation,
        after_profile_generation=now.profile_generation,
        before_booted=before.booted,
        after_booted=now.booted,
        description="; ".join(parts) + " (not by nixcomply)",
    )
