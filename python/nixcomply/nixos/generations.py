"""The generations of the system profile, read from its ``system-N-link`` links.

``nix-env -p /nix/var/nix/profiles/system --set P`` (what ``nixos-rebuild switch|boot``
runs) makes ``system-N-link -> P`` and points ``system`` at it. Reading the links needs no
subprocess and no lock, like nixos-rebuild-ng's ``list-generations``. The date is the link's
own modification time (``lstat``), which is when the generation was created and what
``nix-env --list-generations`` prints.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from nixcomply.nixos.root import PROFILE_NAME, Root

logger = logging.getLogger(__name__)

_LINK_RE: Final = re.compile(rf"^{re.escape(PROFILE_NAME)}-(?P<number>[0-9]+)-link$")


@dataclass(frozen=True)
class Generation:
    """One generation of the system profile."""

    number: int
    path: Path  # the system store path the generation link points to
    date: datetime  # UTC
    current: bool  # the profile points at it: the boot default


def _profile_link_name(root: Root) -> str | None:
    try:
        return os.readlink(root.system_profile)
    except FileNotFoundError:
        return None


def list_generations(root: Root) -> list[Generation]:
    """Every generation of the system profile under ``root``, oldest first; ``[]`` when the
    profile does not exist (a host never switched, or a root that is not NixOS)."""
    current_name = _profile_link_name(root)
    generations = []
    try:
        entries = list(root.profiles_dir.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        m = _LINK_RE.match(entry.name)
        if m is None:
            continue
        try:
            target = os.readlink(entry)
            mtime = entry.lstat().st_mtime
        except OSError as e:  # removed meanwhile (nix-collect-garbage -d) or not a link
            logger.debug("skipping %s: %s", entry, e)
            continue
        generations.append(
            Generation(
                number=int(m.group("number")),
                path=Path(target),
                date=datetime.fromtimestamp(mtime, UTC),
                current=entry.name == Path(current_name or "").name,
            )
        )
    return sorted(generations, key=lambda g: g.number)


def current_generation(root: Root) -> Generation | None:
    """The generation the profile points at (the boot default), if any."""
    return next((g for g in list_generations(root) if g.current), None)


def profile_target(root: Root) -> Path | None:
    """The system store path the profile resolves to, or None without a profile."""
    if _profile_link_name(root) is None:
        return None
    generation = current_generation(root)
    if generation is not None:
        return generation.path
    # a profile pointing somewhere else than a system-N-link: follow it all the way
    return Path(os.path.realpath(root.system_profile))
