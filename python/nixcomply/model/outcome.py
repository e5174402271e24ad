"""How things ended: a reconcile cycle's plan and its apply step, a runbook run, and the
outcome an evidence statement records. The sets callers ask about ("did the host change?",
"did it fail?") are properties here, so no caller spells them out again.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The ``outcome`` of an evidence statement."""

    SUCCESS = "success"
    FAILED = "failed"
    REVERTED = "reverted"
    DEFERRED = "deferred"
    ALERT = "alert"
    REJECTED = "rejected"
    EXPIRED = "expired"


class PlanKind(StrEnum):
    """What a cycle decided about the generation."""

    IN_SYNC = "in-sync"
    DRIFT = "drift"
    REFUSED = "refused"
    BLOCKED = "blocked"

    @property
    def needs_attention(self) -> bool:
        """Refused or blocked: the host stays where it is and a person should look."""
        return self in (PlanKind.REFUSED, PlanKind.BLOCKED)


class ApplyOutcome(StrEnum):
    """How a cycle's generation step ended."""

    SUCCESS = "success"
    REVERTED = "reverted"
    FAILED = "failed"
    DEFERRED = "deferred"
    HELD = "held"  # what activating needs is missing (room for state and evidence): nothing activated
    DRY_RUN = "dry-run"
    NOTHING = "nothing"  # in sync, refused or blocked: no activation

    @property
    def changed_host(self) -> bool:
        """Something was activated (and kept or undone): the host is observed again and the
        change is recorded as a generation-change statement."""
        return self in (ApplyOutcome.SUCCESS, ApplyOutcome.REVERTED, ApplyOutcome.FAILED)

    @property
    def failed(self) -> bool:
        """The target did not become the running system: the revision is blocked until it
        changes or is reset, and the cycle exits 1."""
        return self in (ApplyOutcome.REVERTED, ApplyOutcome.FAILED)

    @property
    def needs_attention(self) -> bool:
        """The cycle exits 1: the target failed, or was held back for a reason a person fixes."""
        return self.failed or self is ApplyOutcome.HELD

    @property
    def evidence(self) -> Outcome | None:
        """The outcome a generation-change statement records, or None when nothing is recorded."""
        return _APPLY_EVIDENCE.get(self)


_APPLY_EVIDENCE = {
    ApplyOutcome.SUCCESS: Outcome.SUCCESS,
    ApplyOutcome.REVERTED: Outcome.REVERTED,
    ApplyOutcome.FAILED: Outcome.FAILED,
    ApplyOutcome.DEFERRED: Outcome.DEFERRED,
}


class RunOutcome(StrEnum):
    """How a runbook run ended."""

    SUCCESS = "success"
    FAILED = "failed"
    REVERTED = "reverted"
    DEFERRED = "deferred"  # decided by the caller: outside the maintenance window
    ALERT = "alert"  # a person must look
    REJECTED = "rejected"  # refused by the guard, or a precondition said it does not apply
    PLANNED = "planned"  # a dry run: nothing ran

    @property
    def ran(self) -> bool:
        """A real run (not a dry run's plan): it counts for cooldowns, flaps and metrics."""
        return self is not RunOutcome.PLANNED

    @property
    def evidence(self) -> Outcome | None:
        """The outcome a remediation statement records, or None for a dry run (never recorded)."""
        return None if self is RunOutcome.PLANNED else Outcome(self.value)
