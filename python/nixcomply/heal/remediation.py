"""A runbook run as signed evidence: one remediation statement per run.

The statement says which runbook ran for which finding, every step with its outcome,
command, exit status and duration, the verification, and the controls the finding judged
with their framework references. Captured outputs (journal lines, command output, the
ruleset) and the full :class:`~nixcomply.heal.executor.RunbookRun` travel as attachments;
the evidence store scrubs PHI from all of it before signing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel

from nixcomply.evidence.statement import (
    FRAMEWORKS,
    ActionRecord,
    ControlResult,
    FrameworkRefs,
    GenerationRecord,
    Host,
    Remediation,
    Subject,
)
from nixcomply.evidence.store import EvidenceStore, Recorded
from nixcomply.heal.executor import RunbookRun, StepResult
from nixcomply.model.outcome import Outcome
from nixcomply.model.status import ControlStatus, control_status_of

EVENT: Final = "remediation.runbook"
_IDENTIFIER: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()/:@+-]{0,199}$")
_ATTACHMENT: Final = re.compile(r"[^A-Za-z0-9._-]+")


def record_remediation(
    store: EvidenceStore,
    run: RunbookRun,
    *,
    host: Host,
    finding: Mapping[str, Any] | BaseModel | None = None,
    controls: Sequence[str] = (),
    actor: str = "nixcomply",
    policy_digest: str | None = None,
    generation: GenerationRecord | None = None,
    subjects: Sequence[Subject] = (),
) -> Recorded:
    """Append one remediation statement for ``run``.

    ``finding`` (a checks ``Finding`` or a mapping of its fields) supplies the controls,
    their framework references, expected and observed values; without one, ``controls``
    (the runbook's own) are listed. A dry run is never recorded.
    """
    outcome = run.outcome.evidence
    if run.dry_run or outcome is None:
        raise ValueError("a dry run changes nothing and is never recorded as evidence")
    data = _as_mapping(finding)
    predicate = Remediation(
        event=EVENT,
        observed_at=run.finished_at,
        host=host,
        actor=actor,
        outcome=outcome,
        policy_digest=policy_digest,
        controls=_controls(run, data, controls),
        actions=_actions(run),
        runbook=run.runbook,
        finding=_summary(run, data),
        generation=generation,
    )
    return store.append(predicate, subjects=subjects, attachments=_attachments(run, data))


def _as_mapping(finding: Mapping[str, Any] | BaseModel | None) -> Mapping[str, Any]:
    if finding is None:
        return {}
    if isinstance(finding, BaseModel):
        dumped: dict[str, Any] = finding.model_dump(mode="json")
        return dumped
    return finding


def _summary(run: RunbookRun, finding: Mapping[str, Any]) -> str:
    head = f"{run.runbook} v{run.version} ({run.outcome.value}): {run.reason}"
    if not finding:
        return head
    subject = f" [{finding['subject']}]" if finding.get("subject") else ""
    return f"{head}. Finding: {finding.get('check', '?')}{subject} {finding.get('status', '?')}: {finding.get('message', '')}".strip()


def _controls(run: RunbookRun, finding: Mapping[str, Any], fallback: Sequence[str]) -> list[ControlResult]:
    ids = [str(c) for c in finding.get("control_ids") or fallback if _IDENTIFIER.match(str(c))]
    verification = run.verification
    if verification is not None and verification.ran:
        status = ControlStatus.PASS if verification.ok else ControlStatus.FAIL
        observed = verification.observed if verification.observed is not None else finding.get("observed")
    else:
        status = control_status_of(str(finding.get("status")))
        observed = finding.get("observed")
    refs = finding.get("frameworks") or {}
    frameworks = FrameworkRefs(
        **{
            fw: sorted({str(r) for r in refs.get(fw, []) if _IDENTIFIER.match(str(r))})
            for fw in FRAMEWORKS
            if isinstance(refs, Mapping)
        }
    )
    return [
        ControlResult(
            id=cid,
            status=status,
            expected=finding.get("expected"),
            observed=observed,
            frameworks=frameworks,
            detail=str(finding.get("message", "")),
        )
        for cid in ids
    ]


def _action(step: StepResult) -> ActionRecord:
    what = step.error or step.detail
    return ActionRecord(
        name=f"{step.section}.{step.index}.{step.action.value}",
        outcome=Outcome.SUCCESS if step.ok else Outcome.FAILED,
        detail=f"{step.description}: {what}" if what else step.description,
        command=step.command,
        exit_code=step.exit_code,
        started_at=step.started_at,
        duration_s=step.duration_s,
    )


def _actions(run: RunbookRun) -> list[ActionRecord]:
    actions = [_action(s) for s in run.all_steps()]
    if run.refusals:
        actions.insert(
            0, ActionRecord(name="guard", outcome=Outcome.REJECTED, detail="; ".join(run.refusals))
        )
    v = run.verification
    if v is not None and v.ran:
        actions.append(
            ActionRecord(
                name="verification", outcome=Outcome.SUCCESS if v.ok else Outcome.FAILED, detail=v.detail
            )
        )
    return actions


def _attachments(run: RunbookRun, finding: Mapping[str, Any]) -> dict[str, bytes]:
    files = {"runbook-run.json": run.model_dump_json(indent=2).encode()}
    for step in run.all_steps():
        if step.output:
            files[f"{step.section}-{step.index}-{step.action.value}.txt"] = step.output.encode()
    outputs = finding.get("outputs") or {}
    if isinstance(outputs, Mapping):
        for name, text in outputs.items():
            safe = _ATTACHMENT.sub("-", str(name)).strip("-.")[:100] or "output"
            files[f"finding-{safe}.txt"] = str(text).encode()
    return files
