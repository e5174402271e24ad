"""Helpers for the runtime-check tests: manifests, contexts, a fake systemd adapter, command
results, and the real tools the integration tests need."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, REPO
from nixcomply.baseline.controlsmap import MapRow, load_controls_map
from nixcomply.baseline.load import load_baseline
from nixcomply.baseline.models import Baseline, Parameters
from nixcomply.checks.config import ChecksConfig
from nixcomply.checks.context import FALLBACK_PARAMETERS, CheckContext, GenerationStatus, SystemdLike
from nixcomply.model.manifest import Manifest

CHECKDATA = DATA / "checks"
NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)

FRAMEWORKS = {
    "hipaa": ["164.312(d)"],
    "soc2": ["CC6.1"],
    "cis_v8": ["6.3"],
    "nist_800_53": ["IA-2"],
    "nist_csf": ["PR.AA-03"],
}

# Debian packages the integration tests run (the CI installs them).
TOOLS = {
    "sshd": "openssh-server",
    "nft": "nftables",
    "iptables-save": "iptables",
    "auditctl": "auditd",
    "chronyd": "chrony",
    "chronyc": "chrony",
    "lsblk": "util-linux",
    "cryptsetup": "cryptsetup-bin",
    "restic": "restic",
    "borg": "borgbackup",
    "visudo": "sudo",
    "modprobe": "kmod",
    "journalctl": "systemd",
    "systemd-analyze": "systemd",
    "unshare": "util-linux",
}


def data(path: str) -> str:
    return (CHECKDATA / path).read_text(encoding="utf-8")


def require(tool: str) -> str:
    """The path of a real tool; fails (never skips) when it is missing."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        pytest.fail(f"{tool} is required for this integration test (apt-get install {TOOLS.get(tool, tool)})")
    return found


def control(
    check: str,
    expect: Mapping[str, Any] | None = None,
    *,
    severity: str = "high",
    status: str = "enforced",
    remediation: str = "RB-DRIFT-001",
    settings: Mapping[str, Any] | None = None,
    frameworks: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    return {
        "title": f"a control checked by {check}",
        "severity": severity,
        "frameworks": dict(frameworks or FRAMEWORKS),
        "verify": {"check": check, "expect": dict(expect or {})},
        "remediation": remediation,
        "settings": dict(settings or {}),
        "status": status,
    }


def manifest(
    controls: Mapping[str, dict[str, Any]],
    *,
    parameters: Mapping[str, Any] | None = None,
    exceptions: Mapping[str, dict[str, Any]] | None = None,
) -> Manifest:
    return Manifest.model_validate(
        {
            "schema": 1,
            "generator": "nixcomply test",
            "baseline": {"id": "test-v1", "version": 1, "title": "Test", "digest": "sha256:" + "0" * 64},
            "nixos_release": "26.05",
            "parameters": dict(parameters or FALLBACK_PARAMETERS.model_dump()),
            "controls": dict(controls),
            "exceptions": dict(exceptions or {}),
        }
    )


def context(
    root: Path = Path("/"),
    *,
    manifest: Manifest | None = None,
    config: ChecksConfig | dict[str, Any] | None = None,
    parameters: Parameters | None = None,
    systemd: SystemdLike | None = None,
    generation: GenerationStatus | None = None,
    now: datetime = NOW,
    **extra: Any,
) -> CheckContext:
    if isinstance(config, dict):
        config = ChecksConfig.model_validate(config)
    if parameters is None:
        parameters = (
            Parameters.model_validate(manifest.parameters) if manifest is not None else FALLBACK_PARAMETERS
        )
    factory = None
    if systemd is not None:

        @contextmanager
        def connect() -> Iterator[SystemdLike]:
            yield systemd

        factory = connect
    return CheckContext(
        root=root,
        manifest=manifest,
        parameters=parameters,
        now=now,
        config=config or ChecksConfig(),
        systemd_factory=factory,
        generation=generation,
        **extra,
    )


@dataclass(frozen=True)
class FakeUnit:
    """Implements nixcomply.host.systemd.UnitStateLike."""

    name: str
    load_state: str = "loaded"
    active_state: str = "active"
    sub_state: str = "running"
    result: str | None = "success"
    n_restarts: int | None = 0
    main_pid: int | None = 1234


@dataclass
class FakeSystemd:
    """A hand-written implementation of nixcomply.checks.context.SystemdLike; the real
    adapter (nixcomply.host.systemd) is tested against a real user manager on its own branch."""

    units: dict[str, FakeUnit] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def unit_state(self, name: str) -> FakeUnit:
        self.asked.append(name)
        if name not in self.units:
            raise LookupError(f"unit {name} not found")
        return self.units[name]


# -- the shipped baseline and controls map, loaded once for every test that reads them ----------


@pytest.fixture(scope="session")
def baseline() -> Baseline:
    """baseline/hipaa-v1.yaml (read only: a test that changes a control copies it first)."""
    return load_baseline(REPO / "baseline" / "hipaa-v1.yaml").baseline


@pytest.fixture(scope="session")
def controls_map() -> list[MapRow]:
    """baseline/controls-map.csv, row by row (read only)."""
    return load_controls_map(REPO / "baseline" / "controls-map.csv")
