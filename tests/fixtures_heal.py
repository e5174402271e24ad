"""Fixtures for the runbook executor: allowed roots in a temporary directory, a real syslog
datagram socket that receives alerts (``logger --socket``), and a HealConfig/ExecutionContext
that point at them and at the session's systemd user manager.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nixcomply.evidence.provision import provision_host_keys
from nixcomply.heal.config import AlertConfig, HealConfig
from nixcomply.heal.executor import ExecutionContext
from nixcomply.host.systemd import Systemd

TEST_UNITS = ["t-*.service"]
# Real programs of this machine that the tests' runbooks may run (the audited ones; a test
# that needs a program to fail or print points one of these names at /bin/false or echo).
TEST_BINARIES = {"journalctl": "/usr/bin/journalctl", "nft": "/usr/sbin/nft", "chronyc": "/usr/bin/chronyc"}


class AlertSink:
    """A syslog datagram socket; ``messages()`` returns what arrived (``<10>... tag: text``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []

    def messages(self, *, wait: float = 0.0) -> list[str]:
        self.sock.settimeout(wait if wait else 0.001)
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                self.received.append(self.sock.recv(65536).decode("utf-8", "replace"))
                self.sock.settimeout(0.05)
        return list(self.received)

    def close(self) -> None:
        self.sock.close()


@dataclass
class HealWorld:
    """``allowed`` is the one allowed root; ``outside`` a directory no runbook may touch."""

    tmp: Path
    allowed: Path
    outside: Path
    alerts: AlertSink
    sleeps: list[float] = field(default_factory=list)

    def marker(self) -> Path:
        """A directory in the allowed root whose canary file the corpus's first step removes:
        the canary still there proves that step never ran."""
        marker = self.allowed / "marker"
        marker.mkdir(exist_ok=True)
        (marker / "canary").write_text("removed only if the first step ran\n")
        return marker

    @staticmethod
    def touched(marker: Path) -> bool:
        return not (marker / "canary").exists()

    def config(self, **overrides: Any) -> HealConfig:
        settings: dict[str, Any] = {
            "allowed_units": TEST_UNITS,
            "allowed_roots": [self.allowed],
            "binaries": TEST_BINARIES,
            "alert": AlertConfig(socket=self.alerts.path),
            "unit_settle_seconds": 0.3,
            "poll_interval_seconds": 0.02,
        }
        settings.update(overrides)
        return HealConfig(**settings)

    def context(self, systemd: Any = None, **overrides: Any) -> ExecutionContext:
        settings: dict[str, Any] = {
            "config": self.config(),
            "systemd": systemd,
            "user_mode": True,
            "sleep": self.sleeps.append,
        }
        settings.update(overrides)
        return ExecutionContext(**settings)


@pytest.fixture
def heal(tmp_path: Path) -> Iterator[HealWorld]:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    sink = AlertSink(tmp_path / "alert.sock")
    try:
        yield HealWorld(tmp=tmp_path, allowed=allowed, outside=outside, alerts=sink)
    finally:
        sink.close()


class CountingFactory:
    """A systemd factory that counts connections: a dry run and a refused run make none."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self) -> Systemd:
        self.calls += 1
        sd: Systemd = self.inner()
        return sd


@dataclass(frozen=True)
class EvidenceKeys:
    state_dir: Path
    signing_key: Path
    log_key: Path


def write_evidence_keys(directory: Path, host: str = "clinic-01") -> EvidenceKeys:
    """Real Ed25519 keys and the keyring an offline verifier pins (as the sandbox host does)."""

    keys = EvidenceKeys(
        directory / "state", directory / "keys" / "signing.key", directory / "keys" / "log.key"
    )
    provision_host_keys(
        host,
        signing_key=keys.signing_key,
        log_key=keys.log_key,
        keyring=keys.state_dir / "keyring.json",
        durable=False,
    )
    return keys
