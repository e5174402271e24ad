"""nixcomply.model: the wire vocabulary shared by host, uplink and server."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from nixcomply.model.base import ForeignModel, StrictModel
from nixcomply.model.outcome import ApplyOutcome, Outcome, PlanKind, RunOutcome
from nixcomply.model.severity import Severity, SeverityName
from nixcomply.model.status import ControlStatus, FindingStatus, FindingStatusName, control_status_of


class Strict(StrictModel):
    name: str


class Foreign(ForeignModel):
    name: str


def test_strict_model_refuses_unknown_fields_and_is_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Strict.model_validate({"name": "a", "nmae": "b"})
    s = Strict(name="a")
    with pytest.raises(ValidationError, match="frozen"):
        s.name = "b"  # type: ignore[misc]


def test_foreign_model_ignores_fields_a_newer_tool_adds() -> None:
    assert Foreign.model_validate({"name": "a", "added-later": 1}) == Foreign(name="a")


def test_literal_spellings_are_the_enums() -> None:
    assert get_args(SeverityName) == tuple(s.value for s in Severity)
    assert get_args(FindingStatusName) == tuple(s.value for s in FindingStatus)


def test_severity_rank_orders_low_to_critical() -> None:
    assert [s.rank for s in Severity] == [3, 2, 1, 0]
    assert max([Severity.LOW, Severity.CRITICAL, Severity.MEDIUM], key=lambda s: s.rank) is Severity.CRITICAL


def test_finding_status_attention_and_evidence_status() -> None:
    assert {s for s in FindingStatus if s.needs_attention} == {FindingStatus.DRIFT, FindingStatus.ERROR}
    assert FindingStatus.DRIFT.control_status is ControlStatus.FAIL
    assert {s.control_status for s in FindingStatus} <= set(ControlStatus)
    assert control_status_of("pass") is ControlStatus.PASS
    assert control_status_of("garbled") is ControlStatus.UNKNOWN


def test_apply_outcome_sets() -> None:
    changed = {o for o in ApplyOutcome if o.changed_host}
    assert changed == {ApplyOutcome.SUCCESS, ApplyOutcome.REVERTED, ApplyOutcome.FAILED}
    assert {o for o in ApplyOutcome if o.failed} == {ApplyOutcome.REVERTED, ApplyOutcome.FAILED}
    assert {o: o.evidence for o in ApplyOutcome if o.evidence is not None} == {
        ApplyOutcome.SUCCESS: Outcome.SUCCESS,
        ApplyOutcome.REVERTED: Outcome.REVERTED,
        ApplyOutcome.FAILED: Outcome.FAILED,
        ApplyOutcome.DEFERRED: Outcome.DEFERRED,
    }
    assert {k for k in PlanKind if k.needs_attention} == {PlanKind.REFUSED, PlanKind.BLOCKED}


def test_run_outcome_evidence() -> None:
    assert RunOutcome.PLANNED.evidence is None
    assert not RunOutcome.PLANNED.ran
    assert all(o.evidence == Outcome(o.value) for o in RunOutcome if o.ran)
