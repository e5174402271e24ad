"""A sandbox host for reconciler tests: the real nix, a real systemd user manager running the
host's units, evidence keys, and generations whose manifest comes from the real rendered
hipaa-v1 module evaluated by the real nix.

Revisions (module-scoped, built once):
  good     app.service runs
  newer    app.service runs with another command line (child of good)
  broken   app.service exits at once: the health gate must fail (child of newer)
  side     child of good: not a descendant of newer
  fragile  app.service fails to start while the world's flag file exists
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures_checks import CHECKDATA, data

from nixcomply.evidence.verify import verify_path
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.cycle import Reconciler
from nixcomply.reconcile.model import CycleReport
from nixcomply.sandbox.emulated import Sandbox
from nixcomply.sandbox.machine import HOST_ONLY_CHECKS, SandboxHost, sandbox_manifest

HOST = "clinic-01"


# built "today" from nixpkgs' point of view, so the patch-age check passes unless a test says otherwise
def today_version() -> str:
    """A NixOS version whose nixpkgs date is today (the patch_age check passes on it)."""
    return f"26.05.{datetime.now(UTC):%Y%m%d}.0123456"


def app_unit(command: str) -> str:
    return f"[Unit]\nDescription=the clinic's application\n[Service]\nType=exec\nExecStart={command}\n"


@dataclass
class ReconcileWorld:
    host: SandboxHost
    revs: dict[str, str]
    systems: dict[str, Path]
    manifest: str
    flag: Path

    @property
    def sandbox(self) -> Sandbox:
        return self.host.sandbox

    def configure(self, target: str, **settings: Any) -> ReconcilerConfig:
        """Point the reconciler at revision ``target`` (a name in revs, or a flake ref)."""
        flake = str(self.sandbox.flake_ref_at(self.revs[target])) if target in self.revs else target
        self.host.write_config(settings={"flake": flake, **settings})
        return self.host.config

    def reconcile(self, target: str, *, dry_run: bool = False, **settings: Any) -> CycleReport:
        return Reconciler(self.configure(target, **settings)).run(dry_run=dry_run)

    def install(self, name: str) -> None:
        self.sandbox.install(self.revs[name])

    def verify(self) -> int:
        report = verify_path(self.host.state_dir, None)
        assert not report.errors, [str(e) for e in report.errors]
        return int(report.entries)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.host.manager is not None
        return subprocess.run(
            ["systemctl", "--user", *args],
            env={**self.host.manager.env},
            capture_output=True,
            text=True,
            check=False,
        )


def rendered_manifest(tmp: Path, nix_env: dict[str, str]) -> str:
    return sandbox_manifest(
        tmp / "baseline", critical_services=["app.service"], tools=Tools(extra_env=nix_env)
    )


@pytest.fixture(scope="module")
def reconcile_world(
    tmp_path_factory: pytest.TempPathFactory, nix_env: dict[str, str]
) -> Iterator[ReconcileWorld]:
    base = tmp_path_factory.mktemp("reconcile")
    manifest = rendered_manifest(base, nix_env)
    today = today_version()
    with SandboxHost.create(base / "host", host=HOST) as host:
        assert host.manager is not None, "CI runs as root: the sandbox gets a real systemd user manager"
        s = host.sandbox
        revs: dict[str, str] = {}
        revs["good"] = s.commit_generation(
            label="good",
            manifest_json=manifest,
            nixos_version=today,
            units={"app.service": app_unit("/bin/sleep 1000")},
        )
        revs["newer"] = s.commit_generation(
            label="newer",
            manifest_json=manifest,
            nixos_version=today,
            units={"app.service": app_unit("/bin/sleep 1001")},
        )
        revs["broken"] = s.commit_generation(
            label="broken",
            manifest_json=manifest,
            nixos_version=today,
            units={"app.service": app_unit("/bin/false")},
        )
        revs["side"] = s.commit_generation(
            label="side",
            manifest_json=manifest,
            nixos_version=today,
            units={"app.service": app_unit("/bin/sleep 1002")},
            parent=revs["good"],
        )
        # the app refuses to start while the world's flag file exists (a unit that fails to start)
        flag = base / "app-broken"
        revs["fragile"] = s.commit_generation(
            label="fragile",
            manifest_json=manifest,
            nixos_version=today,
            units={"app.service": app_unit(f"/bin/sh -c 'test -e {flag} && exit 1; exec /bin/sleep 1003'")},
        )
        systems = {name: s.build(rev) for name, rev in revs.items()}
        yield ReconcileWorld(host, revs, systems, manifest, flag)


@pytest.fixture
def fresh(reconcile_world: ReconcileWorld) -> ReconcileWorld:
    """The shared world with an empty host and empty state (keys and keyring kept)."""
    # systemctl exits 5 for a unit that is not loaded (the previous test left none): expected;
    # anything else means the user manager is in trouble, and every later test would be wrong
    for args in (("stop", "app.service"), ("reset-failed",)):
        r = reconcile_world.systemctl(*args)
        assert r.returncode in (0, 5), f"cleanup: systemctl {' '.join(args)}: {r.stderr}"
    reconcile_world.sandbox.reset_host()
    state = reconcile_world.host.state_dir
    for child in state.iterdir():
        if child.name != "keyring.json":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    reconcile_world.host.write_config(settings={"flake": str(reconcile_world.sandbox.flake_ref)})
    return reconcile_world


def locked_audit_checks(world: ReconcileWorld) -> dict[str, Any]:
    """Checks settings for a host whose audit rules are locked (``auditctl -s`` says
    enabled 2) and miss the deletion rules (``auditctl -l`` prints the host directory's
    auditctl-l.txt): drift that only a reboot can heal. Only the audit_rules check runs,
    against an auditctl stand-in written into the world."""
    printed = world.host.dir / "auditctl-l.txt"
    rules = data("audit_rules/hipaa-v1.txt").splitlines()
    printed.write_text("".join(line + "\n" for line in rules if "key=delete" not in line))
    auditctl = world.host.dir / "auditctl"
    auditctl.write_text(
        "#!/bin/sh\n"
        f'case "$1" in -l) cat {printed} ;; -s) cat {CHECKDATA / "audit_status/locked.txt"} ;; *) exit 2 ;; esac\n'
    )
    auditctl.chmod(0o755)
    return {
        "skip": sorted(HOST_ONLY_CHECKS - {"audit_rules"}),
        "disk": {"mounts": ["/"]},
        "executables": {"auditctl": str(auditctl)},
    }
