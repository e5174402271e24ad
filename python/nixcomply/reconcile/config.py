"""The reconciler's configuration: one JSON file, ``/etc/nixcomply/reconciler.json``.

The NixOS module (modules/reconciler.nix) renders its options into this file; the sandbox
host writes one of its own. It is read as JSON and validated strictly with
``extra="forbid"``, so a typo in the module's freeform ``settings``, a stale option or a
value of the wrong type (``"dry_run": "yes"``) is an error that names the field, not a
setting silently ignored or guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import Field, field_validator

from nixcomply.checks.config import ChecksConfig, UnitName
from nixcomply.core.paths import DEFAULT_STATE_DIR
from nixcomply.core.yamlsource import load_json_model
from nixcomply.errors import InputError
from nixcomply.heal.config import HealConfig
from nixcomply.heal.window import MaintenanceWindow
from nixcomply.host.systemd import Systemd, SystemdFactory, connector, connector_if_installed
from nixcomply.model.base import StrictModel
from nixcomply.uplink.settings import UploadSettings

DEFAULT_CONFIG: Final = Path("/etc/nixcomply/reconciler.json")


class LivenessCommand(StrictModel):
    """A command that must exit 0 for the new generation to count as healthy."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    argv: list[str] = Field(min_length=1)
    timeout: float = Field(default=10, gt=0, le=600)


class HealthGate(StrictModel):
    critical_units: list[UnitName] = Field(
        default_factory=lambda: ["sshd.service"],
        description="units that must be active after activation (systemd's unit-name grammar)",
    )
    liveness: list[LivenessCommand] = Field(default_factory=list)
    timeout: float = Field(default=120, gt=0, le=3600, description="overall deadline of the gate")
    settle_seconds: float = Field(default=3, ge=0, le=300, description="wait before the first look")


class EvidenceConfig(StrictModel):
    signing_key: Path | None = Field(default=None, description="Ed25519 key for bundles (or a credential)")
    log_key: Path | None = Field(default=None, description="Ed25519 key for log checkpoints")
    origin: str | None = Field(default=None, description="checkpoint origin line (default: nixcomply/<host>)")


class MetricsConfig(StrictModel):
    enable: bool = False
    path: Path = Path("/var/lib/prometheus-node-exporter-text-files/nixcomply.prom")


class ReconcilerExecutables(StrictModel):
    """Programs the reconciler runs; names are looked up on PATH."""

    nix: str = "nix"
    nixos_rebuild: str = "nixos-rebuild"
    git: str = "git"
    systemd_run: str | None = Field(
        default="systemd-run", description="re-activation runs in a transient unit (None: directly)"
    )


class SystemdConfig(StrictModel):
    enable: bool = Field(default=True, description="check units through systemd (off only where none runs)")
    user_mode: bool = Field(default=False, description="talk to a user manager (sandbox) instead of PID 1")
    bus_address: str | None = None

    def connector(self, *, if_installed: bool = False) -> SystemdFactory[Systemd] | None:
        """Connections to the configured manager; None when systemd is off here (or, with
        ``if_installed``, when pystemd is not installed)."""
        if not self.enable:
            return None
        build = connector_if_installed if if_installed else connector
        return build(user_mode=self.user_mode, bus_address=self.bus_address)


class ReconcilerConfig(StrictModel):
    flake: str = Field(min_length=1, description="flake reference of the fleet, e.g. git+https://…?ref=main")
    host: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="nixosConfigurations attribute")
    approved_revision: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{40}$", description="only this revision may be applied"
    )
    state_dir: Path = DEFAULT_STATE_DIR
    root: Path = Field(default=Path("/"), description="host root (a sandbox uses a directory)")
    dry_run: bool = False
    mode: Literal["timer", "daemon"] = "timer"
    poll_interval_seconds: float = Field(default=900, ge=1, description="daemon mode: time between cycles")
    cycle_timeout_seconds: float = Field(
        default=7200, gt=0, description="daemon mode: a cycle longer than this stops petting the watchdog"
    )
    jitter_seconds: float = Field(default=60, ge=0)
    health_gate: HealthGate = Field(default_factory=HealthGate)
    maintenance_window: MaintenanceWindow | None = None
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    executables: ReconcilerExecutables = Field(default_factory=ReconcilerExecutables)
    systemd: SystemdConfig = Field(default_factory=SystemdConfig)
    checks: ChecksConfig = Field(
        default_factory=ChecksConfig, description="site specifics of the runtime checks"
    )
    heal: HealConfig = Field(
        default_factory=HealConfig, description="self-healing: allowlists and limits of runbooks"
    )
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="extra environment for nix, nixos-rebuild, git and liveness commands",
    )
    upload: UploadSettings = Field(
        default_factory=UploadSettings, description="uploads to the MSP's evidence server (nixcomply.uplink)"
    )
    build_timeout: float = Field(default=3600, gt=0, le=7 * 86400)
    activation_timeout: float = Field(default=900, gt=0, le=86400)
    min_free_bytes: int = Field(
        default=64 * 2**20,
        ge=0,
        le=2**50,
        description="an activation waits (outcome held) while the state directory has less free space",
    )

    @field_validator("flake")
    @classmethod
    def _flake(cls, value: str) -> str:
        from nixcomply.nixos.flake import FlakeRef

        FlakeRef.parse(value)  # raises ValueError saying what is wrong
        return value


def load_config(path: Path) -> ReconcilerConfig:
    """Read the reconciler configuration as strict JSON (no trailing commas, ``"yes"`` is
    not a boolean, no ``Infinity``); errors name the file, line and field (exit 2)."""
    if not path.exists():
        raise InputError.single(
            path,
            "no such file",
            hint="the NixOS module writes it (nixcomply.reconciler.enable = true); elsewhere pass --config FILE",
        )
    config, _ = load_json_model(ReconcilerConfig, path)
    return config
