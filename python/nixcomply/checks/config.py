"""Site specifics the runtime checks need: ``ChecksConfig`` (the ``checks`` block of the
reconciler configuration).

The baseline says *what* must hold (a backup at most 24 h old); this says *where to look* on
one host (which backup tool, which repository, which units run the antivirus). Every field
has a default that fits a NixOS host with the hipaa-v1 baseline, so a host only sets what
differs. Host paths are absolute paths as seen on the host; the checks resolve them under
the context's root (a sandbox uses a temporary root with the same configuration).
Runbook parameters (units, scratch directories) are passed to runbooks unresolved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.host.systemd import validate_unit_name
from nixcomply.model.base import StrictModel

_MATCH_KEYS: Final = frozenset({"user", "host", "addr", "laddr", "lport", "rdomain"})


def _absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"{value} must be an absolute host path")
    if ".." in value.parts:
        raise ValueError(f"{value} must not contain '..'")
    return value


# systemd's unit-name grammar (the one definition, nixcomply.host.systemd) and absolute host
# paths without '..', checked where each value is declared
UnitName = Annotated[str, AfterValidator(validate_unit_name)]
HostPath = Annotated[Path, AfterValidator(_absolute)]


class BackupConfig(StrictModel):
    """Where the newest backup is learnt from.

    ``restic``: ``restic -r REPOSITORY --password-file FILE snapshots --json --latest 1``;
    ``borg``: ``borg list --json --last 1 REPOSITORY`` (passphrase through
    ``BORG_PASSCOMMAND=cat FILE``); ``timestamp``: a file the backup job writes when it
    succeeds, holding an ISO 8601 time with a zone (``date -Is``) or Unix seconds
    (``date +%s``).
    """

    kind: Literal["restic", "borg", "timestamp"] = "timestamp"
    repository: str | None = Field(default=None, description="restic/borg repository (path or URL)")
    password_file: HostPath | None = Field(default=None, description="restic password / borg passphrase file")
    environment_file: HostPath | None = Field(
        default=None, description="KEY=VALUE lines for the tool (object-store credentials)"
    )
    timestamp_file: HostPath = Path("/var/lib/nixcomply/backup/last-success")
    unit: UnitName = Field(default="nixcomply-backup.service", description="RB-BACKUP-001's unit")
    timeout: float = Field(default=120, gt=0, le=3600, description="for restic/borg (remote repositories)")

    @model_validator(mode="after")
    def _repository(self) -> BackupConfig:
        if self.kind in ("restic", "borg") and not self.repository:
            raise ValueError(f"kind {self.kind} needs a repository")
        if self.kind == "restic" and self.password_file is None:
            raise ValueError("kind restic needs a password_file")
        return self


class RestoreTestConfig(StrictModel):
    """The result file RB-RESTORE-001 writes (nixcomply.checks.restore_test.RestoreTestResult)
    and the parameters that runbook needs."""

    result_file: HostPath = Path("/var/lib/nixcomply/restore-test/result.json")
    unit: UnitName = Field(default="nixcomply-restore-test.service", description="restores the sample")
    scratch: HostPath = Path("/var/lib/nixcomply/restore-test/scratch")
    sample: HostPath = Path("/var/lib/nixcomply/restore-test/sample")


class AntivirusConfig(StrictModel):
    """The antivirus/EDR daemon (ClamAV on NixOS: services.clamav.daemon and .updater)."""

    units: list[UnitName] = Field(
        default_factory=lambda: ["clamav-daemon.service", "clamav-freshclam.service"],
        description="units that must be active; empty: no antivirus on this host (skipped)",
    )
    signature_dir: HostPath = Path("/var/lib/clamav")
    signature_globs: list[str] = Field(default_factory=lambda: ["*.cvd", "*.cld"], min_length=1)
    update_unit: UnitName = Field(default="clamav-freshclam.service", description="refreshes signatures")


class DiskConfig(StrictModel):
    mounts: list[HostPath] = Field(
        default_factory=lambda: [Path("/"), Path("/nix"), Path("/var")],
        min_length=1,
        description="paths whose filesystems are measured (expect.mounts overrides)",
    )


class LoggingConfig(StrictModel):
    units: list[UnitName] = Field(
        default_factory=lambda: ["systemd-journald.service", "auditd.service"], min_length=1
    )
    canary_tag: str = Field(default="nixcomply-canary", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    writer: Literal["systemd-cat", "logger"] = "systemd-cat"
    read_attempts: int = Field(default=10, ge=1, le=100)
    read_interval_seconds: float = Field(default=0.2, gt=0, le=10)


class FirewallConfig(StrictModel):
    backend: Literal["nftables", "iptables"] = "nftables"
    unit: UnitName | None = Field(
        default=None, description="unit that loads the ruleset (default nftables.service / firewall.service)"
    )

    @property
    def effective_unit(self) -> str:
        if self.unit is not None:
            return self.unit
        return "nftables.service" if self.backend == "nftables" else "firewall.service"


class TimeConfig(StrictModel):
    source: Literal["chrony", "timesyncd"] = "chrony"
    unit: UnitName | None = Field(
        default=None, description="default chronyd.service / systemd-timesyncd.service"
    )
    chronyc_host: str | None = Field(
        default=None, description="chronyc -h: a socket path or address (default: chronyc's own)"
    )
    chronyc_port: int | None = Field(default=None, gt=0, lt=65536, description="chronyc -p")

    @property
    def effective_unit(self) -> str:
        if self.unit is not None:
            return self.unit
        return "chronyd.service" if self.source == "chrony" else "systemd-timesyncd.service"


class SshdConfig(StrictModel):
    binary: str = Field(default="sshd", description="sshd program (NixOS: on PATH from the system)")
    config_file: HostPath = Path("/etc/ssh/sshd_config")
    connection: dict[str, str] = Field(
        default_factory=dict,
        description="sshd -T -C spec (user, host, addr, laddr, lport, rdomain) to evaluate Match blocks",
    )

    @field_validator("connection")
    @classmethod
    def _connection(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if key not in _MATCH_KEYS:
                raise ValueError(f"{key!r} is not an sshd -C key (one of {', '.join(sorted(_MATCH_KEYS))})")
            if not item or any(c in item for c in ", \n="):
                raise ValueError(f"{key}: {item!r} must be one word without ',' or '='")
        return value


class EncryptionConfig(StrictModel):
    root_mount: HostPath = Path("/")
    data_mounts: list[HostPath] = Field(
        default_factory=list, description="mounts holding ePHI that must be on LUKS (expect data_on_luks)"
    )


class ServicesConfig(StrictModel):
    max_restarts: int = Field(
        default=3, ge=0, description="more restarts than this since the last look is drift"
    )


class Executables(StrictModel):
    """Programs the checks run; names are looked up on PATH (the NixOS module sets it)."""

    nft: str = "nft"
    iptables_save: str = "iptables-save"
    auditctl: str = "auditctl"
    chronyc: str = "chronyc"
    timedatectl: str = "timedatectl"
    lsblk: str = "lsblk"
    cryptsetup: str = "cryptsetup"
    restic: str = "restic"
    borg: str = "borg"
    journalctl: str = "journalctl"
    systemd_cat: str = "systemd-cat"
    logger: str = "logger"
    systemd_analyze: str = "systemd-analyze"
    nix: str = "nix"


class Timeouts(StrictModel):
    check_seconds: float = Field(default=30, gt=0, le=3600, description="a whole check, then it is an error")
    command_seconds: float = Field(default=20, gt=0, le=3600, description="one external command")
    per_check: dict[str, float] = Field(
        default_factory=lambda: {"backup": 180.0}, description="check name -> its own check timeout"
    )

    @field_validator("per_check")
    @classmethod
    def _names(cls, value: dict[str, float]) -> dict[str, float]:
        for name, seconds in value.items():
            if name not in CHECK_NAMES:
                raise ValueError(f"{name!r} is not a check name")
            if seconds <= 0:
                raise ValueError(f"{name}: timeout must be positive")
        return value

    def for_check(self, name: str) -> float:
        return self.per_check.get(name, self.check_seconds)


class ChecksConfig(StrictModel):
    """The ``checks`` block of the reconciler configuration."""

    backup: BackupConfig = Field(default_factory=BackupConfig)
    restore_test: RestoreTestConfig = Field(default_factory=RestoreTestConfig)
    antivirus: AntivirusConfig = Field(default_factory=AntivirusConfig)
    disk: DiskConfig = Field(default_factory=DiskConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    firewall: FirewallConfig = Field(default_factory=FirewallConfig)
    time: TimeConfig = Field(default_factory=TimeConfig)
    sshd: SshdConfig = Field(default_factory=SshdConfig)
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    executables: Executables = Field(default_factory=Executables)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_workers: int = Field(default=8, ge=1, le=64, description="checks run concurrently")
    skip: list[str] = Field(
        default_factory=list, description="checks not run on this host (reported as skipped, never passed)"
    )

    @field_validator("skip")
    @classmethod
    def _skip(cls, value: list[str]) -> list[str]:
        for name in value:
            if name not in CHECK_NAMES:
                raise ValueError(f"{name!r} is not a check name")
        return value
