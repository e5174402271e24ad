"""What runbooks may touch on this host: ``HealConfig`` (the ``heal`` block of the reconciler
configuration).

A runbook names its actions; this configuration bounds what those actions can reach. Units
must match an allowlisted glob, paths must resolve inside an allowed root, ``run_command``
may only run one of the audited programs of :mod:`nixcomply.heal.programs`, in one of its
allowed forms, from the absolute path given here (never through a shell), and every output
kept for evidence is bounded. Defaults fit a NixOS host
with the hipaa-v1 baseline; a host lists what differs (its backup unit, its ACME names).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from pydantic import Field, field_validator

from nixcomply.model.base import StrictModel

SYSTEM_BIN: Final = "/run/current-system/sw/bin"
BINARY_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
# Unit-name characters plus the fnmatch wildcards.
_UNIT_GLOB: Final = re.compile(r"^[A-Za-z0-9:_.\\@*?\[\]!-]+$")

DEFAULT_UNITS: Final = (
    # the baseline's critical services (hipaa-v1 parameters.critical_services)
    "sshd.service",
    "chronyd.service",
    "auditd.service",
    # logging
    "systemd-journald.service",
    "systemd-timesyncd.service",
    # firewall (networking.nftables or the iptables-based firewall)
    "nftables.service",
    "firewall.service",
    # backups and the restore test (services.restic, services.borgbackup, nixcomply's own)
    "restic-backups-*.service",
    "borgbackup-job-*.service",
    "nixcomply-backup.service",
    "nixcomply-restore-test.service",
    # certificates (security.acme) and the services that serve them
    "acme-*.service",
    "nginx.service",
    "caddy.service",
    "httpd.service",
    # antivirus (services.clamav)
    "clamav-daemon.service",
    "clamav-freshclam.service",
)
DEFAULT_ROOTS: Final = (
    "/var/cache",
    "/var/lib/nixcomply/scratch",
    "/var/lib/nixcomply/restore-test",
    "/var/backup",
)
# Where the audited programs (nixcomply.heal.programs) live; a name listed here that has no
# audited argv builder is never run.
DEFAULT_BINARIES: Final = ("chronyc", "journalctl", "nft")


class AlertConfig(StrictModel):
    """Where ``send_alert`` goes: the journal (``systemd-cat -t TAG -p PRIORITY``, the
    message on stdin), or ``logger`` when systemd-cat cannot reach journald. With ``socket``
    set, ``logger --socket SOCKET`` only (a syslog socket of the site's choosing)."""

    tag: str = Field(default="nixcomply-alert", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    priority: Literal["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"] = "crit"
    socket: Path | None = Field(default=None, description="a syslog datagram socket instead of the journal")
    systemd_cat: str = Field(default="systemd-cat", min_length=1)
    logger: str = Field(default="logger", min_length=1)
    max_length: int = Field(default=1024, ge=64, le=8192, description="longest alert message")


class HealConfig(StrictModel):
    """Allowlists and limits of the runbook executor (see :mod:`nixcomply.heal.guard`)."""

    enable: bool = Field(
        default=True, description="run runbooks from the reconcile cycle (false: findings and alerts only)"
    )
    allowed_units: list[str] = Field(
        default_factory=lambda: list(DEFAULT_UNITS),
        description="fnmatch globs (case-sensitive) of the units runbooks may act on",
    )
    allowed_roots: list[Path] = Field(
        default_factory=lambda: [Path(p) for p in DEFAULT_ROOTS],
        description="directories under which runbook paths must resolve (clean_directory: strictly under)",
    )
    binaries: dict[str, str] = Field(
        default_factory=lambda: {name: f"{SYSTEM_BIN}/{name}" for name in DEFAULT_BINARIES},
        description="where the audited programs live: bare name -> absolute path executed",
    )
    alert: AlertConfig = Field(default_factory=AlertConfig)
    max_steps: int = Field(default=32, ge=1, le=200, description="preconditions + steps + rollback")
    max_argv: int = Field(default=32, ge=1, le=256, description="most elements of a run_command argv")
    max_arg_length: int = Field(default=1024, ge=16, le=8192, description="longest argv element")
    max_output_bytes: int = Field(
        default=16384, ge=256, le=1_048_576, description="output kept per step (the rest is cut)"
    )
    unit_settle_seconds: float = Field(
        default=2.0, ge=0, le=300, description="wait_unit: the state must hold this long"
    )
    poll_interval_seconds: float = Field(default=0.1, gt=0, le=10)

    @field_validator("allowed_units")
    @classmethod
    def _unit_globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            if not _UNIT_GLOB.match(glob) or "." not in glob:
                raise ValueError(f"{glob!r} is not a unit name or glob (like restic-backups-*.service)")
        return value

    @field_validator("allowed_roots")
    @classmethod
    def _roots(cls, value: list[Path]) -> list[Path]:
        for root in value:
            text = str(root)
            if not root.is_absolute():
                raise ValueError(f"{root}: allowed roots must be absolute")
            if ".." in PurePosixPath(text).parts:
                raise ValueError(f"{root}: must not contain '..'")
            if PurePosixPath(text) == PurePosixPath("/"):
                raise ValueError("/ cannot be an allowed root: it would confine nothing")
        return value

    @field_validator("binaries")
    @classmethod
    def _binaries(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not BINARY_NAME.match(name):
                raise ValueError(f"{name!r}: a binary's name is a bare file name (like chronyc)")
            if not path.startswith("/") or ".." in PurePosixPath(path).parts:
                raise ValueError(f"{name}: {path!r} must be an absolute path without '..'")
        return value
