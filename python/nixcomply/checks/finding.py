"""What a runtime check reports: one :class:`Finding` per control (or per observed subject).

A finding is what rules match on, what runbooks are chosen from, and what goes into
check-run evidence, so it carries everything a technician or an auditor needs without
looking anything up: the controls it judges (with their framework references merged), the
observation and the expectation, a one-line message, and the runbook that heals it with the
parameters that runbook needs.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field, field_validator, model_validator

from nixcomply.model.base import StrictModel
from nixcomply.model.severity import Severity
from nixcomply.model.status import FindingStatus

# The frameworks every baseline control cites (nixcomply.baseline.models.Frameworks).
FRAMEWORK_KEYS: Final = ("hipaa", "soc2", "cis_v8", "nist_800_53", "nist_csf")


class Finding(StrictModel):
    """One judgement of one check about one subject.

    ``status``:

    * ``pass``: observed what the controls expect;
    * ``drift``: observed something else (``drifted`` is true only here);
    * ``error``: could not observe or could not parse what was observed; never a pass;
    * ``excepted``: the control is under an approved exception; nothing was run for it;
    * ``skipped``: the check does not apply here, ``message`` says why (for example "not
      configured on this host", or disabled in the checks configuration).
    """

    check: str = Field(description="check name (nixcomply.baseline.catalog)")
    control_ids: list[str] = Field(description="manifest controls judged; empty for a check run on its own")
    severity: Severity = Field(description="most severe of the controls', or the check's own")
    status: FindingStatus
    subject: str | None = Field(
        default=None,
        description="what was observed when a check looks at several things: a unit, a mount, an exception",
    )
    observed: dict[str, Any] = Field(default_factory=dict)
    expected: dict[str, Any] = Field(default_factory=dict)
    drifted: bool
    message: str = Field(description="one line for a technician")
    recommended_runbook: str | None = Field(
        default=None, description="runbook id that heals this, or None when a human must act"
    )
    runbook_params: dict[str, str | int] = Field(default_factory=dict)
    frameworks: dict[str, list[str]] = Field(
        default_factory=lambda: {key: list[str]() for key in FRAMEWORK_KEYS},
        description="framework -> references, merged from the controls",
    )
    outputs: dict[str, str] = Field(
        default_factory=dict, description="raw command outputs by short name (evidence, after PHI scrubbing)"
    )
    duration_s: float = Field(ge=0)
    reboot_needed: bool = Field(
        default=False,
        description="drift that only the next boot heals (audit rules locked until reboot, boot "
        "parameters): no runbook can, `nixcomply status` and the metrics say a reboot is needed",
    )

    @field_validator("message")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())

    @field_validator("frameworks")
    @classmethod
    def _frameworks(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(value) - set(FRAMEWORK_KEYS)
        if unknown:
            raise ValueError(f"unknown frameworks: {', '.join(sorted(unknown))}")
        return {key: sorted(set(value.get(key, []))) for key in FRAMEWORK_KEYS}

    @model_validator(mode="after")
    def _drifted(self) -> Finding:
        if self.drifted != (self.status is FindingStatus.DRIFT):
            raise ValueError("drifted must be true exactly when status is drift")
        if self.reboot_needed and not self.drifted:
            raise ValueError("reboot_needed applies to drift only")
        return self

    @property
    def needs_attention(self) -> bool:
        """Drift or error: what rules act on and what makes ``nixcomply check`` exit 1."""
        return self.status.needs_attention

    def sort_key(self) -> tuple[str, tuple[str, ...], str]:
        return (self.check, tuple(self.control_ids), self.subject or "")
