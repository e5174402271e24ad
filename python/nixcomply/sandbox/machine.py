"""A complete sandbox host for the demo and the integration tests: the emulated NixOS host of
:mod:`nixcomply.sandbox.emulated`, a private systemd user manager that runs its units (when this
process may start one: root, ``unshare``), evidence keys with a keyring, and a reconciler
configuration that points the ordinary reconciler at all of it.

Nothing here changes how nixcomply works: the reconciler, the health gate, the checks and the
evidence store run exactly as on a real host, only with ``root`` and the programs named in
the configuration pointing into the sandbox.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import yaml

from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.evaluate import manifest_json
from nixcomply.baseline.load import load_baseline
from nixcomply.baseline.render import render
from nixcomply.core.fsutil import atomic_write_text
from nixcomply.core.paths import default_baseline
from nixcomply.core.yamlsource import load_yaml
from nixcomply.errors import NixcomplyError
from nixcomply.evidence.provision import provision_host_keys
from nixcomply.heal.config import DEFAULT_BINARIES
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile.config import ReconcilerConfig, load_config
from nixcomply.sandbox.emulated import Sandbox
from nixcomply.sandbox.usermanager import UserManager

logger = logging.getLogger(__name__)

# Checks that look at a real operating system (sshd, kernel, firewall, block devices, audit,
# journald ...), which the sandbox host does not have: reported as skipped, never passed.
HOST_ONLY_CHECKS = frozenset(CHECK_NAMES) - {
    "generation",
    "patch_age",
    "service_health",
    "disk_usage",
    "exceptions",
    "config_value",
}

SHORT_PATH = 40  # longer sandbox paths put the user manager's sockets elsewhere


@dataclass
class SandboxHost:
    dir: Path
    sandbox: Sandbox
    manager: UserManager | None
    config_path: Path

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics" / "nixcomply.prom"

    @property
    def config(self) -> ReconcilerConfig:
        return load_config(self.config_path)

    @classmethod
    def create(
        cls,
        dir: Path,
        *,
        host: str = "clinic-01",
        systemd: bool = True,
        critical_units: Sequence[str] = ("app.service",),
        liveness: Sequence[Mapping[str, Any]] = (),
        settings: Mapping[str, Any] | None = None,
    ) -> SandboxHost:
        """Make the sandbox, start its user manager (if ``systemd`` and possible), write keys,
        keyring and ``reconciler.json``. Use as a context manager to stop the manager."""
        dir = dir.absolute()
        dir.mkdir(parents=True, exist_ok=True)
        sandbox = Sandbox.create(dir / "sandbox", host=host)
        manager = None
        if systemd:
            manager = _start_manager(dir / "systemd", sandbox)
            if manager is not None:
                sandbox = sandbox.with_user_manager(manager.runtime_dir)
        self = cls(dir=dir, sandbox=sandbox, manager=manager, config_path=dir / "reconciler.json")
        keys = self._write_keys()
        self.write_config(critical_units=critical_units, liveness=liveness, keys=keys, settings=settings)
        return self

    def _write_keys(self) -> dict[str, Path]:
        key_dir = self.dir / "keys"
        key_dir.mkdir(mode=0o700, exist_ok=True)
        keys = provision_host_keys(
            self.sandbox.host,
            signing_key=key_dir / "evidence-signing.key",
            log_key=key_dir / "evidence-log.key",
            keyring=self.state_dir / "keyring.json",
        )
        return {"signing_key": keys.signing_key, "log_key": keys.log_key}

    def write_config(
        self,
        *,
        critical_units: Sequence[str] = ("app.service",),
        liveness: Sequence[Mapping[str, Any]] = (),
        keys: Mapping[str, Path] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        previous: dict[str, Any] = (
            json.loads(self.config_path.read_text()) if self.config_path.exists() else {}
        )
        evidence = previous.get("evidence") or {k: str(v) for k, v in (keys or {}).items()}
        config: dict[str, Any] = {
            "flake": str(self.sandbox.flake_ref),
            "host": self.sandbox.host,
            "state_dir": str(self.state_dir),
            "root": str(self.sandbox.root.path),
            # the emulated activation acts only under the sandbox root: no transient unit
            "executables": {
                "nixos_rebuild": str(self.sandbox.bin_dir / "nixos-rebuild"),
                "systemd_run": None,
            },
            "environment": self.sandbox.extra_env,
            "health_gate": {
                "critical_units": list(critical_units) if self.manager else [],
                "liveness": list(liveness),
                "timeout": 30,
                "settle_seconds": 0.5,
            },
            "systemd": (
                {"enable": True, "bus_address": self.manager.bus_address}
                if self.manager
                else {"enable": False}
            ),
            "evidence": evidence,
            "metrics": {"enable": True, "path": str(self.metrics_path)},
            "checks": {"skip": sorted(HOST_ONLY_CHECKS), "disk": {"mounts": ["/"]}},
            # the sandbox's own service is the one runbooks may restart; the tools runbooks run
            # are this machine's (a NixOS host has them under /run/current-system/sw/bin)
            "heal": {
                "allowed_units": ["app.service"],
                "binaries": {name: found for name in DEFAULT_BINARIES if (found := shutil.which(name))},
            },
        }
        config.update(settings or {})
        atomic_write_text(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n", mode=0o600)
        load_config(self.config_path)  # the reconciler must accept what we wrote

    def describe(self) -> str:
        return self.sandbox.describe()

    def close(self) -> None:
        if self.manager is not None:
            self.manager.stop()
            if self.manager.root.parent == Path(tempfile.gettempdir()) and self.manager.root.name.startswith(
                "nixcomply-um-"
            ):
                shutil.rmtree(self.manager.root, ignore_errors=True)
            self.manager = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


SANDBOX_EXCEPTIONS: Final = {
    "encryption.root-on-luks": {
        "justification": "sandbox host: it has no block devices to encrypt",
        "approvedBy": "sandbox@nixcomply.invalid",
        "expires": "2099-12-31",
        "ticket": "SANDBOX-1",
    }
}


def sandbox_manifest(
    directory: Path,
    *,
    critical_services: Sequence[str] = ("app.service",),
    tools: Tools | None = None,
) -> str:
    """The manifest a sandbox generation carries: the shipped hipaa-v1 baseline with the
    sandbox's own critical services (site policy: its app, not sshd or chronyd, which it does
    not run), rendered and evaluated by the real nix, with the exceptions a sandbox needs."""

    data, _ = load_yaml(default_baseline())
    data["parameters"]["critical_services"] = list(critical_services)
    directory.mkdir(parents=True, exist_ok=True)
    baseline = directory / "hipaa-v1.yaml"
    baseline.write_text(
        "# The shipped hipaa-v1 baseline with the sandbox host's own critical services.\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    )
    loaded = load_baseline(baseline)
    module = directory / "hipaa-v1.nix"
    module.write_text(render(loaded))
    return manifest_json(module, loaded.baseline.id, exceptions=SANDBOX_EXCEPTIONS, tools=tools or Tools())


def _start_manager(directory: Path, sandbox: Sandbox) -> UserManager | None:
    if os.geteuid() != 0:
        logger.warning("not root: the sandbox runs without systemd (the health gate checks no units)")
        return None
    if len(str(directory)) > SHORT_PATH:
        # the manager's sockets live under it and a unix socket path holds at most 108 bytes
        directory.mkdir(parents=True, exist_ok=True)
        short = Path(tempfile.mkdtemp(prefix="nixcomply-um-"))
        (directory / "runtime-location").write_text(f"{short}\n")
        directory = short
    manager = UserManager(directory, unit_paths=[sandbox.user_unit_path])
    try:
        manager.start()
    except NixcomplyError as e:
        logger.warning("cannot start a private systemd user manager (%s); the sandbox runs without one", e)
        return None
    return manager
