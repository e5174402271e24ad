"""What a runtime check concluded about a control (:class:`FindingStatus`) and what evidence
records for the control (:class:`ControlStatus`), with the one mapping between them.

:data:`FindingStatusName` spells the finding statuses as a ``Literal`` for the checks'
``Verdict("drift", ...)`` declarations; a test keeps it equal to the enum.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class FindingStatus(StrEnum):
    """``pass``: observed what the controls expect; ``drift``: observed something else;
    ``error``: could not observe, never a pass; ``excepted``: under an approved exception,
    nothing was run; ``skipped``: does not apply here (the message says why)."""

    PASS = "pass"  # noqa: S105 - a check status, not a password
    DRIFT = "drift"
    ERROR = "error"
    EXCEPTED = "excepted"
    SKIPPED = "skipped"

    @property
    def needs_attention(self) -> bool:
        """Drift or error: what rules heal or alert on and what makes ``nixcomply check`` exit 1."""
        return self in (FindingStatus.DRIFT, FindingStatus.ERROR)

    @property
    def control_status(self) -> ControlStatus:
        """The control status evidence records for a finding with this status."""
        return _CONTROL_STATUS[self]


FindingStatusName = Literal["pass", "drift", "error", "excepted", "skipped"]


class ControlStatus(StrEnum):
    """A control's status in an evidence statement."""

    PASS = "pass"  # noqa: S105 - a check status, not a password
    FAIL = "fail"
    EXCEPTED = "excepted"
    ATTESTED = "attested"
    UNKNOWN = "unknown"
    ERROR = "error"
    SKIPPED = "skipped"


_CONTROL_STATUS = {
    FindingStatus.PASS: ControlStatus.PASS,
    FindingStatus.DRIFT: ControlStatus.FAIL,
    FindingStatus.ERROR: ControlStatus.ERROR,
    FindingStatus.EXCEPTED: ControlStatus.EXCEPTED,
    FindingStatus.SKIPPED: ControlStatus.SKIPPED,
}


def control_status_of(finding_status: str) -> ControlStatus:
    """A finding status given as text (a finding read back from JSON) as the control status
    evidence records; anything that is not a finding status is ``unknown``."""
    try:
        return FindingStatus(finding_status).control_status
    except ValueError:
        return ControlStatus.UNKNOWN


# How a HIPAA standard or implementation specification is covered (controls-map.csv, and
# attestations in evidence): a baseline control with a runtime check, partly, or only by a
# person's signed attestation.
class Coverage(StrEnum):
    AUTOMATED = "automated"
    PARTIAL = "partial"
    ATTESTATION = "attestation"
