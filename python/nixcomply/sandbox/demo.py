"""``nixcomply demo``: the whole cycle on the sandbox host, right after installing.

1. render the hipaa-v1 baseline into a NixOS module and evaluate its manifest with the real
   nix (one exception: the sandbox has no disks to encrypt);
2. create a sandbox host (see :mod:`nixcomply.sandbox.emulated` for what is emulated) and install a
   first generation;
3. reconcile to a second revision: built, tested, health-gated, switched, signed;
4. reconcile to a third revision whose service fails: the health gate fails and the host is
   reverted; the revision is blocked;
5. verify the evidence offline and print what happened;
6. the fleet (:mod:`nixcomply.sandbox.fleet`): a private PostgreSQL, the MSP's evidence
   server on 127.0.0.1, three sandbox hosts in two sites enrolled, their evidence uploaded
   and cosigned, ``verify --witness`` on each host and on an exported packet.

It uses the reconciler, health gate and evidence store that run on real hosts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from nixcomply.errors import UsageError
from nixcomply.evidence.verify import verify_path
from nixcomply.reconcile.cycle import Reconciler
from nixcomply.reconcile.model import CycleReport
from nixcomply.sandbox.machine import SandboxHost, sandbox_manifest

if TYPE_CHECKING:
    from nixcomply.sandbox.fleet import FleetJson

logger = logging.getLogger(__name__)

HOST = "clinic-01"
APP = "app.service"


def _unit(command: str, description: str) -> str:
    return f"[Unit]\nDescription={description}\n[Service]\nType=exec\nExecStart={command}\n"


class StepJson(TypedDict):
    """One step of the demo's host: ``install`` (outcome ``installed``), then each
    ``reconcile`` with its plan, outcome, health-gate checks and the evidence it wrote."""

    step: str
    revision: str
    plan: str | None
    outcome: str
    detail: str
    gate: list[dict[str, Any]]
    evidence_seqs: list[int]


class EvidenceJson(TypedDict):
    entries: int
    ok: bool
    errors: list[str]


class DemoJson(TypedDict):
    """``nixcomply demo --json`` (stable: fields are added, never renamed or removed).
    ``sandbox`` says what is real and what is emulated; ``after`` lists the commands to
    look again."""

    dir: str
    sandbox: str
    steps: list[StepJson]
    evidence: EvidenceJson
    fleet: FleetJson | None
    after: list[str]


@dataclass
class DemoResult:
    dir: Path
    described: str
    steps: list[StepJson] = field(default_factory=list)
    evidence_entries: int = 0
    evidence_ok: bool = False
    evidence_errors: list[str] = field(default_factory=list)
    fleet: FleetJson | None = None
    after: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.evidence_ok and (self.fleet is None or self.fleet["ok"])

    def as_json(self) -> DemoJson:
        return {
            "dir": str(self.dir),
            "sandbox": self.described,
            "steps": self.steps,
            "evidence": {
                "entries": self.evidence_entries,
                "ok": self.evidence_ok,
                "errors": self.evidence_errors,
            },
            "fleet": self.fleet,
            "after": self.after,
        }


def run_demo(dir: Path, *, say: Callable[[str], None] = print, bin: str = "") -> DemoResult:
    """Run the demo in ``dir`` (new or empty); ``bin`` is how the reader runs nixcomply
    (``.venv/bin/`` after ``make demo``), for the commands printed at the end."""
    if dir.exists() and any(dir.iterdir()):
        raise UsageError(
            f"{dir} is not empty", hint="give --dir a new directory; the demo keeps everything there"
        )
    dir.mkdir(parents=True, exist_ok=True)

    say("1. render the hipaa-v1 baseline and evaluate its manifest with nix")
    manifest = sandbox_manifest(dir / "baseline", critical_services=[APP])
    controls = len(json.loads(manifest)["controls"])
    say(f"   {controls} controls -> {dir / 'baseline' / 'hipaa-v1.nix'} (critical services: {APP})")

    # the sandbox's systems say they were built from today's nixpkgs (patch age is checked)
    version = f"26.05.{datetime.now(UTC):%Y%m%d}.0123456"
    with SandboxHost.create(dir / "host", host=HOST, critical_units=[APP]) as host:
        result = DemoResult(dir=dir, described=host.describe())
        sandbox = host.sandbox
        say("2. create the sandbox host and install its first generation")
        for line in host.describe().splitlines():
            say(f"   {line}")
        first = sandbox.commit_generation(
            label="generation 1: the clinic's app",
            manifest_json=manifest,
            nixos_version=version,
            units={APP: _unit("/bin/sleep 86400", "the clinic's app")},
        )
        sandbox.install(first)
        result.steps.append(
            {
                "step": "install",
                "revision": first,
                "plan": None,
                "outcome": "installed",
                "detail": "the first generation, installed as a NixOS installation would",
                "gate": [],
                "evidence_seqs": [],
            }
        )

        say("3. reconcile to revision 2 (healthy)")
        second = sandbox.commit_generation(
            label="generation 2: app update",
            manifest_json=manifest,
            nixos_version=version,
            units={APP: _unit("/bin/sleep 86401", "the clinic's app, updated")},
        )
        report = _reconcile(host, second)
        result.steps.append(_step("reconcile", second, report))
        _say_report(say, report)

        say("4. reconcile to revision 3 (its app crashes at start)")
        third = sandbox.commit_generation(
            label="generation 3: broken app",
            manifest_json=manifest,
            nixos_version=version,
            units={APP: _unit("/bin/false", "the clinic's app, broken")},
        )
        report = _reconcile(host, third)
        result.steps.append(_step("reconcile", third, report))
        _say_report(say, report)

        say("5. verify the evidence offline")
        verified = verify_path(host.state_dir, None)
        result.evidence_entries = verified.entries
        result.evidence_ok = not verified.errors
        result.evidence_errors = [str(e) for e in verified.errors]
        say(
            f"   {verified.entries} signed entries, Merkle root and checkpoints "
            + ("verify" if result.evidence_ok else "DO NOT verify: " + "; ".join(result.evidence_errors))
        )
        # the fleet part needs the `server` extra (make demo installs it); only the demo loads it
        from nixcomply.sandbox.fleet import after_demo, run_fleet  # noqa: PLC0415

        fleet = run_fleet(dir, host, manifest=manifest, version=version, unit=_unit, say=say)
        result.fleet = fleet.as_json()
        result.after = after_demo(dir, fleet, bin)
        say("")
        say(f"Everything is kept in {dir}. The host, the evidence as its auditor verifies it, and the")
        say("server (its database started for a look, and stopped again):")
        for command in result.after:
            say(f"  {command}")
    return result


def _reconcile(host: SandboxHost, revision: str) -> CycleReport:
    host.write_config(settings={"flake": str(host.sandbox.flake_ref_at(revision))})
    return Reconciler(host.config).run()


def _step(name: str, revision: str, report: CycleReport) -> StepJson:
    return {
        "step": name,
        "revision": revision,
        "plan": report.plan.kind.value if report.plan else None,
        "outcome": report.result.outcome.value,
        "detail": report.result.detail,
        "gate": [c.model_dump() for c in report.result.gate.checks] if report.result.gate else [],
        "evidence_seqs": report.evidence_seqs,
    }


def _say_report(say: Callable[[str], None], report: CycleReport) -> None:
    for line in report.lines():
        say(f"   {line}")
