"""Where a host keeps what nixcomply reads: every host path resolved under one root.

A real host has the root ``/``. Tests and the sandbox host use a temporary directory laid
out the same way (``nix/var/nix/profiles/system``, ``run/current-system``, ...), so the code
that reads a host never spells an absolute host path itself.

Only the host's own paths move under the root. Store paths (``/nix/store/...``, the targets
of the profile and ``run/`` links) are the machine's store and stay absolute: the sandbox
uses the real store with profiles under a temporary root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

PROFILE_NAME: Final = "system"


@dataclass(frozen=True)
class Root:
    """The directory that stands for ``/`` on the host being observed."""

    path: Path = Path("/")

    def resolve(self, host_path: str | PurePosixPath) -> Path:
        """The path on this machine of the host path ``host_path`` (absolute, like ``/run/x``)."""
        relative = PurePosixPath(host_path)
        if relative.is_absolute():
            relative = relative.relative_to("/")
        return self.path.joinpath(relative)

    @property
    def profiles_dir(self) -> Path:
        return self.resolve("/nix/var/nix/profiles")

    @property
    def system_profile(self) -> Path:
        """``/nix/var/nix/profiles/system``: the link to the boot default generation."""
        return self.profiles_dir / PROFILE_NAME

    def generation_link(self, number: int) -> Path:
        """``/nix/var/nix/profiles/system-N-link``."""
        return self.profiles_dir / f"{PROFILE_NAME}-{number}-link"

    @property
    def current_system(self) -> Path:
        """``/run/current-system``: the activated system (moved by ``test`` and ``switch``)."""
        return self.resolve("/run/current-system")

    @property
    def booted_system(self) -> Path:
        """``/run/booted-system``: the system the host booted (moved only by a boot)."""
        return self.resolve("/run/booted-system")
