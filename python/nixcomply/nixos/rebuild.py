"""Activating a built system: ``nixos-rebuild <action> --store-path P`` and
``<system>/bin/switch-to-configuration <action>``.

``--store-path`` (nixos-rebuild-ng) activates a system that is already built and skips
evaluation and build entirely: the reconciler builds once and hands the same path to
``test`` and then ``switch``. ``switch`` and ``boot`` first point the system profile at it
(``nix-env -p /nix/var/nix/profiles/system --set P``); ``test`` does not, so a crash or a
reboot after ``test`` comes back to the old boot default.

``--no-reexec``: otherwise nixos-rebuild first builds ``config.system.build.nixos-rebuild``
from /etc/nixos or the channel and re-executes into it. With a pre-built store path that is an
unrelated evaluation and build (of a configuration that is not the approved one, possibly
none at all), so nixcomply turns it off; both flags exist in every nixos-rebuild that has
``--store-path``.

``switch-to-configuration`` exits 4 when it activated the system but some units failed
(NixOS's documented "some units failed" status) and nixos-rebuild passes that status on.
That is reported as ``units_failed=True``, because for the reconciler it is a failed health
gate on an activated system, not a failed command.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nixcomply.core import process
from nixcomply.nixos.tools import DEFAULT_TOOLS, Tools

EXIT_UNITS_FAILED: Final = 4
ACTIVATION_TIMEOUT: Final = 900.0


class RebuildAction(enum.StrEnum):
    """The activation verbs of nixos-rebuild and switch-to-configuration."""

    TEST = "test"
    SWITCH = "switch"
    BOOT = "boot"
    DRY_ACTIVATE = "dry-activate"

    @property
    def sets_profile(self) -> bool:
        """Makes the system the boot default (moves the system profile)."""
        return self in (RebuildAction.SWITCH, RebuildAction.BOOT)

    @property
    def activates(self) -> bool:
        """Changes the running system (``/run/current-system``, units)."""
        return self in (RebuildAction.TEST, RebuildAction.SWITCH)


@dataclass(frozen=True)
class ActivationResult:
    """How an activation ended. Non-zero exits other than 4 raise ``CommandError`` instead."""

    action: RebuildAction
    system: Path
    returncode: int
    units_failed: bool
    stdout: str
    stderr: str
    duration: float


def _result(action: RebuildAction, system: Path, r: process.Result) -> ActivationResult:
    return ActivationResult(
        action=action,
        system=system,
        returncode=r.returncode,
        units_failed=r.returncode == EXIT_UNITS_FAILED,
        stdout=r.stdout,
        stderr=r.stderr,
        duration=r.duration,
    )


def nixos_rebuild(
    action: RebuildAction,
    store_path: Path,
    *,
    tools: Tools = DEFAULT_TOOLS,
    timeout: float | None = ACTIVATION_TIMEOUT,
) -> ActivationResult:
    """``nixos-rebuild <action> --store-path <store_path> --no-reexec``."""
    argv: list[str | Path] = [tools.nixos_rebuild, str(action), "--store-path", store_path, "--no-reexec"]
    r = tools.run(argv, timeout=timeout, allowed_returncodes=(0, EXIT_UNITS_FAILED))
    return _result(action, store_path, r)


def switch_to_configuration(
    system: Path,
    action: RebuildAction,
    *,
    tools: Tools = DEFAULT_TOOLS,
    timeout: float | None = ACTIVATION_TIMEOUT,
) -> ActivationResult:
    """``<system>/bin/switch-to-configuration <action>``: activate without touching the profile
    (``test``), e.g. to re-activate the generation the profile still points at after a failed
    health gate.

    With ``tools.systemd_run`` set, the activation runs in a transient unit of PID 1 (as
    nixos-rebuild-ng runs it), outside the caller's hardened service and its mount
    namespace, and is not cut short if the caller dies; ``--wait --pipe`` passes the exit
    status (4: units failed) and the output through."""
    argv: list[str | Path] = [system / "bin/switch-to-configuration", str(action)]
    if tools.systemd_run is not None:
        argv = [
            tools.systemd_run,
            "-E",
            "LOCALE_ARCHIVE",
            "--collect",
            "--no-ask-password",
            "--pipe",
            "--quiet",
            "--service-type=exec",
            "--unit=nixcomply-switch-to-configuration",
            "--wait",
            *argv,
        ]
    r = tools.run(argv, timeout=timeout, allowed_returncodes=(0, EXIT_UNITS_FAILED))
    return _result(action, system, r)
