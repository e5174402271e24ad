"""Which programs :mod:`nixcomply.nixos` runs, and the environment they run in.

A real host uses the defaults: ``nix``, ``nixos-rebuild`` and ``git`` from PATH, the
inherited environment. The sandbox host (:mod:`nixcomply.sandbox.emulated`) names its emulated
``nixos-rebuild`` and adds ``NIX_CONFIG`` and ``NIXCOMPLY_SANDBOX_ROOT``; nothing else in
the calling code changes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from nixcomply.core import process


@dataclass(frozen=True)
class Tools:
    """Program names (or absolute paths) and environment additions for Nix/NixOS commands."""

    nix: str = "nix"
    nixos_rebuild: str = "nixos-rebuild"
    git: str = "git"
    # Activation outside the caller's own sandbox, as nixos-rebuild-ng does it: a transient
    # unit of PID 1 (None: run switch-to-configuration directly, e.g. on the sandbox host).
    systemd_run: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        check: bool = True,
        timeout: float | None = process.DEFAULT_TIMEOUT,
        cwd: Path | None = None,
        allowed_returncodes: Sequence[int] = (0,),
    ) -> process.Result:
        """Run ``argv`` through the subprocess gateway with this value's environment."""
        return process.run(
            argv,
            check=check,
            timeout=timeout,
            extra_env=dict(self.extra_env) if self.extra_env else None,
            cwd=cwd,
            allowed_returncodes=allowed_returncodes,
        )


DEFAULT_TOOLS: Final = Tools()
