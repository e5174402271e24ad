"""What the reconciler observed, wanted, decided and did, as models.

These are the shapes of ``nixcomply plan --json`` and ``nixcomply reconcile --json`` and they
go into evidence unchanged, so a technician, a script and an auditor read the same facts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import Field

from nixcomply.errors import EXIT_FAILURE, EXIT_OK
from nixcomply.model.base import StrictModel
from nixcomply.model.outcome import ApplyOutcome, PlanKind
from nixcomply.model.severity import Severity
from nixcomply.model.status import FindingStatus

if TYPE_CHECKING:
    from nixcomply.host.metrics import FindingSample


class SystemInfo(StrictModel):
    """One system toplevel as the host knows it."""

    store_path: str
    generation: int | None = Field(default=None, description="profile generation number, when it is one")
    nixos_version: str | None = None
    configuration_revision: str | None = None
    nixpkgs_revision: str | None = None


class ProfileGeneration(StrictModel):
    number: int
    store_path: str
    date: datetime
    current: bool


class HostState(StrictModel):
    """The running host: what is active, what boots, what the profile holds."""

    observed_at: datetime
    hostname: str
    current: SystemInfo | None = Field(description="/run/current-system: what runs now")
    booted: SystemInfo | None = Field(description="/run/booted-system: what the host booted")
    profile: SystemInfo | None = Field(description="the system profile's generation: what boots next")
    generations: list[ProfileGeneration] = Field(default_factory=list)
    manifest_baseline: str | None = Field(
        default=None, description="baseline id and version the running system carries"
    )
    need_reboot: list[str] = Field(
        default_factory=list, description="kernel, initrd, kernel-modules that differ"
    )

    @property
    def running_revision(self) -> str | None:
        return self.current.configuration_revision if self.current else None

    @property
    def activation_pending(self) -> bool:
        """Something was activated (``test``) that the boot default does not hold."""
        if self.current is None or self.profile is None:
            return False
        return self.current.store_path != self.profile.store_path


class Desired(StrictModel):
    """What the host should run: the locked target flake and the approval policy."""

    flake: str
    host: str
    locked_url: str
    revision: str | None
    nar_hash: str | None
    last_modified: datetime | None
    dirty: bool
    approved_revision: str | None = None


class ExternalKind(StrEnum):
    SWITCH = "switch"  # the profile moved: nixos-rebuild switch/boot by hand
    ROLLBACK = "rollback"  # the profile moved back to an older generation
    ACTIVATION = "activation"  # a different system was activated without moving the profile
    REBOOT = "reboot"  # the host booted a different system


class ExternalChange(StrictModel):
    """A generation change nixcomply did not make, noticed on a later cycle."""

    kinds: list[ExternalKind]
    before_current: str | None
    after_current: str | None
    before_profile_generation: int | None
    after_profile_generation: int | None
    before_booted: str | None
    after_booted: str | None
    description: str


class Plan(StrictModel):
    """The decision: stay, move (and from where to where), or refuse (and why)."""

    kind: PlanKind
    reason: str
    current_revision: str | None
    target_revision: str | None
    current_path: str | None
    target_path: str | None = Field(default=None, description="known once built (drift only)")
    closure_diff: str | None = None
    built: bool = Field(default=False, description="whether deciding needed nix build")


class GateCheck(StrictModel):
    name: str
    ok: bool
    detail: str = ""
    duration_s: float = 0.0


class GateResult(StrictModel):
    ok: bool
    checks: list[GateCheck]
    duration_s: float


class ApplyResult(StrictModel):
    outcome: ApplyOutcome
    detail: str
    attempt: str | None = Field(default=None, description="revision#count of the attempt, when one was made")
    target_path: str | None = None
    gate: GateResult | None = None
    durations: dict[str, float] = Field(default_factory=dict)
    generation_before: int | None = None
    generation_after: int | None = None


class FindingSummary(StrictModel):
    """One runtime finding as the cycle reports it (the full finding is in evidence)."""

    check: str
    control_ids: list[str]
    severity: Severity
    status: FindingStatus
    drifted: bool
    message: str
    decision: str | None = Field(default=None, description="runbook run, alert, suppressed, deferred ...")
    reboot_needed: bool = Field(default=False, description="drift that only the next boot heals")

    @property
    def family(self) -> str:
        return self.control_ids[0].split(".", 1)[0] if self.control_ids else self.check


def reboot_reasons(findings: Iterable[FindingSummary]) -> list[str]:
    """The checks (as ``audit-rules``) whose drift waits for the next boot."""
    return sorted({f.check.replace("_", "-") for f in findings if f.reboot_needed})


class CycleReport(StrictModel):
    """One reconcile cycle, end to end (``nixcomply reconcile --json``)."""

    started_at: datetime
    finished_at: datetime
    dry_run: bool
    host: HostState
    desired: Desired | None
    external: ExternalChange | None
    plan: Plan | None
    result: ApplyResult
    evidence_seqs: list[int] = Field(default_factory=list)
    findings: list[FindingSummary] = Field(default_factory=list)
    policy_problems: list[str] = Field(
        default_factory=list, description="runbook and rules files that did not load (each is ignored)"
    )
    error: str | None = None

    @property
    def reboot_needed(self) -> list[str]:
        """Why the host needs a reboot: a kernel, initrd or modules the booted system does not
        run, and the checks whose drift only a boot heals (``audit-rules`` locked until
        reboot, ``kernel-cmdline``)."""
        return [*self.host.need_reboot, *reboot_reasons(self.findings)]

    @property
    def finding_samples(self) -> list[FindingSample]:
        from nixcomply.host.metrics import FindingSample

        return [FindingSample(f.severity, f.family, f.drifted) for f in self.findings]

    @property
    def exit_code(self) -> int:
        """1 when the target was reverted, failed, held back, refused or blocked, or a runbook
        or rules file did not load; else 0 (in sync, switched, deferred, dry run)."""
        if self.result.outcome.needs_attention:
            return EXIT_FAILURE
        if self.plan is not None and self.plan.kind.needs_attention:
            return EXIT_FAILURE
        if self.policy_problems:
            return EXIT_FAILURE  # healing runs without the files that did not load
        return EXIT_OK

    def lines(self) -> list[str]:
        """The cycle for a technician: what was noticed, planned, done, found and recorded."""
        lines = []
        if self.external is not None:
            lines.append(f"noticed: {self.external.description}")
        if self.plan is not None:
            lines.append(f"plan:    {self.plan.kind.value}: {self.plan.reason}")
        r = self.result
        lines.append(f"outcome: {r.outcome.value}: {r.detail}")
        if r.gate is not None:
            for c in r.gate.checks:
                lines.append(f"  gate {'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        if self.findings:
            counts: dict[str, int] = {}
            for f in self.findings:
                counts[f.status] = counts.get(f.status, 0) + 1
            lines.append("checks:  " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
            for f in self.findings:
                if f.status.needs_attention:
                    decided = f" -> {f.decision}" if f.decision else ""
                    lines.append(f"  {f.status:<5} {f.check}: {f.message}{decided}")
        for problem in self.policy_problems:
            lines.append(f"policy:  ignored, does not load: {problem}")
        if self.reboot_needed:
            lines.append(f"reboot needed for: {', '.join(self.reboot_needed)}")
        if self.evidence_seqs:
            lines.append(f"evidence: entries {', '.join(str(s) for s in self.evidence_seqs)}")
        return lines
