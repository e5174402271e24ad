"""Turn what the reconciler saw and did into signed evidence (generation-change statements).

The subject of a generation change is the system toplevel, named by its store path and
identified by the sha256 of its NAR serialisation (``nix path-info``), so an auditor can tie
the statement to exactly the closure that ran.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Final

from nixcomply.checks.finding import Finding
from nixcomply.core.memo import IMMUTABLE, Memo
from nixcomply.errors import CommandError
from nixcomply.evidence.keys import BUNDLE_CREDENTIAL, LOG_CREDENTIAL, load_signer
from nixcomply.evidence.statement import (
    ActionRecord,
    CheckRun,
    ControlResult,
    FrameworkRefs,
    GenerationChange,
    GenerationChangeStatement,
    GenerationRecord,
    GenerationRef,
    HealthCheckResult,
    Host,
    Remediation,
    Statement,
    Subject,
)
from nixcomply.evidence.store import EvidenceStore, Recorded
from nixcomply.host.state import EvidenceHead
from nixcomply.model.outcome import ApplyOutcome, Outcome
from nixcomply.model.status import control_status_of
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.model import ApplyResult, Desired, ExternalChange, HostState, SystemInfo

logger = logging.getLogger(__name__)


ATTEMPT_ACTION: Final = "attempt"


def recorded_attempt(statement: Statement | None) -> str | None:
    """The attempt (``revision#count``) a statement nixcomply made records, if it is one."""
    if not isinstance(statement, GenerationChangeStatement) or statement.predicate.actor != "nixcomply":
        return None
    return next((a.detail for a in statement.predicate.actions if a.name == ATTEMPT_ACTION), None)


def origin_for(config: ReconcilerConfig) -> str:
    return config.evidence.origin or f"nixcomply/{config.host}"


def open_store(config: ReconcilerConfig) -> EvidenceStore:
    """The evidence store under the state directory, with keys from systemd credentials or
    the configured files; a missing key is an error before anything is changed."""
    signer = load_signer(config.evidence.signing_key, credential=BUNDLE_CREDENTIAL)
    log_signer = load_signer(config.evidence.log_key, credential=LOG_CREDENTIAL)
    return EvidenceStore.open(
        config.state_dir, signer, log_signer, origin=origin_for(config), head=EvidenceHead(config.state_dir)
    )


def host_identity(root: Path, hostname: str) -> Host:
    """machine-id from the host root (the sandbox has its own), host name as configured."""
    local = Host.local(etc=root / "etc")
    return Host(machine_id=local.machine_id, hostname=hostname)


# A store path's NAR hash never changes: asked of nix once per process.
_NAR_SHA256: dict[str, str] = {}


def nar_sha256(path: str, tools: Tools, memo: Memo | None = None) -> str | None:
    """sha256 (hex) of the store path's NAR serialisation, from ``nix path-info --json``
    (once per process; with ``memo``, once per host)."""
    known = _NAR_SHA256.get(path) or (memo.recall(f"store:nar-sha256:{path}", IMMUTABLE) if memo else None)
    if known is not None:
        _NAR_SHA256[path] = known
        return known
    digest = _nar_sha256(path, tools)
    if digest is not None:
        _NAR_SHA256[path] = digest
        if memo is not None:
            memo.memorise(f"store:nar-sha256:{path}", IMMUTABLE, digest)
    return digest


def _nar_sha256(path: str, tools: Tools) -> str | None:
    try:
        result = tools.run([tools.nix, "path-info", "--json", path], timeout=60)
        info = json.loads(result.stdout)
        entry = info[0] if isinstance(info, list) else info[path]
        nar_hash = str(entry["narHash"])
    except (CommandError, ValueError, KeyError, IndexError, TypeError) as e:
        logger.warning("cannot read the NAR hash of %s: %s", path, e)
        return None
    if nar_hash.startswith("sha256-"):
        return base64.b64decode(nar_hash.removeprefix("sha256-")).hex()
    return None


def _subject(path: str | None, tools: Tools, memo: Memo | None) -> list[Subject]:
    if path is None:
        return []
    digest = nar_sha256(path, tools, memo)
    if digest is None:
        return []
    return [Subject(name=path, digest={"sha256": digest})]


def _generation(
    info: SystemInfo | None, fallback_path: str, previous: SystemInfo | None, nar_hash: str | None
) -> GenerationRecord:
    prev = None
    if previous is not None and previous.generation is not None:
        prev = GenerationRef(number=previous.generation, store_path=previous.store_path)
    return GenerationRecord(
        number=(info.generation if info and info.generation is not None else 0),
        store_path=info.store_path if info else fallback_path,
        previous=prev,
        nixos_version=info.nixos_version if info else None,
        configuration_revision=info.configuration_revision if info else None,
        flake_nar_hash=nar_hash,
    )


def record_apply(
    store: EvidenceStore,
    *,
    host_id: Host,
    before: HostState,
    after: HostState,
    desired: Desired,
    result: ApplyResult,
    policy_digest: str | None,
    tools: Tools,
    now: datetime,
    actor: str = "nixcomply",
    note: str = "",
    attempt: str | None = None,
    memo: Memo | None = None,
) -> Recorded | None:
    """One generation-change statement for a switch, a revert, a failure or a deferral.
    ``attempt`` (``revision#count``, :attr:`nixcomply.host.state.Attempt.key`) names the
    attempt it records, so a cycle that crashed after recording is recognised."""
    outcome = result.outcome.evidence
    if outcome is None:
        return None
    subject_path = result.target_path or (after.current.store_path if after.current else None)
    info = after.profile if result.outcome == ApplyOutcome.SUCCESS else None
    if info is None and result.target_path is not None:
        info = SystemInfo(store_path=result.target_path, configuration_revision=desired.revision)
    # one action per phase that ran; the last one ran into the outcome
    phases = list(result.durations)
    actions = [
        ActionRecord(name=name, outcome=outcome if name == phases[-1] else Outcome.SUCCESS, duration_s=secs)
        for name, secs in result.durations.items()
    ]
    if attempt is not None:
        actions.append(ActionRecord(name=ATTEMPT_ACTION, outcome=outcome, detail=attempt))
    actions.append(ActionRecord(name="result", outcome=outcome, detail=(note + " " + result.detail).strip()))
    predicate = GenerationChange(
        event="generation-change",
        observed_at=now,
        host=host_id,
        actor=actor,
        outcome=outcome,
        policy_digest=policy_digest,
        actions=actions,
        generation=_generation(info, subject_path or "", before.profile, desired.nar_hash),
        flake_ref=desired.locked_url,
        health_gate=[
            HealthCheckResult(name=c.name, ok=c.ok, detail=c.detail, duration_s=c.duration_s)
            for c in (result.gate.checks if result.gate else [])
        ],
        durations=result.durations,
    )
    attachments = {"result.json": result.model_dump_json(indent=2).encode()}
    if result.gate is not None:
        attachments["health-gate.json"] = result.gate.model_dump_json(indent=2).encode()
    return store.append(predicate, subjects=_subject(subject_path, tools, memo), attachments=attachments)


def record_external(
    store: EvidenceStore,
    *,
    host_id: Host,
    before: HostState | None,
    after: HostState,
    change: ExternalChange,
    policy_digest: str | None,
    tools: Tools,
    now: datetime,
    memo: Memo | None = None,
) -> Recorded:
    """A generation change made outside nixcomply, recorded with actor ``external``."""
    path = after.current.store_path if after.current else change.after_current or ""
    predicate = GenerationChange(
        event="generation-change.external",
        observed_at=now,
        host=host_id,
        actor="external",
        outcome=Outcome.ALERT,
        policy_digest=policy_digest,
        actions=[ActionRecord(name="observed", outcome=Outcome.ALERT, detail=change.description)],
        generation=_generation(after.current, path, None, None),
    )
    attachments = {"external-change.json": change.model_dump_json(indent=2).encode()}
    return store.append(predicate, subjects=_subject(path or None, tools, memo), attachments=attachments)


def record_check_run(
    store: EvidenceStore,
    *,
    host_id: Host,
    host: HostState,
    findings: Sequence[Finding],
    decisions: Mapping[int, str] | None = None,
    policy_digest: str | None,
    tools: Tools,
    now: datetime,
    memo: Memo | None = None,
) -> Recorded:
    """One check-run statement: every control's status as observed in this cycle, with the
    raw command outputs attached (the store scrubs PHI from them before signing)."""
    decided = decisions or {}
    controls = [c for i, f in enumerate(findings) for c in _control_results(f, decided.get(i))]
    drifted = any(f.needs_attention for f in findings)
    current = host.current
    predicate = CheckRun(
        event="check-run",
        observed_at=now,
        host=host_id,
        outcome=Outcome.ALERT if drifted else Outcome.SUCCESS,
        policy_digest=policy_digest,
        controls=controls,
        generation=_generation(current, current.store_path, None, None) if current else None,
    )
    attachments = {
        "findings.json": json.dumps(
            [f.model_dump(mode="json") for f in findings], indent=2, sort_keys=True
        ).encode()
    }
    subjects = _subject(current.store_path, tools, memo) if current else []
    return store.append(predicate, subjects=subjects, attachments=attachments)


def _control_results(finding: Finding, decision: str | None = None) -> list[ControlResult]:
    note = f"; decided: {decision}" if decision else ""
    return [
        ControlResult(
            id=control_id,
            status=control_status_of(finding.status),
            expected=finding.expected,
            observed=finding.observed,
            frameworks=FrameworkRefs.model_validate(finding.frameworks),
            detail=f"{finding.check}: {finding.message}{note}",
        )
        for control_id in finding.control_ids or [f"check:{finding.check}"]
    ]


def record_alert(
    store: EvidenceStore,
    *,
    host_id: Host,
    finding: Finding,
    rule: str,
    message: str,
    sent: bool,
    policy_digest: str | None,
    now: datetime,
) -> Recorded:
    """A rule decided a person must act: the alert, whether it reached the journal, and the
    finding that caused it."""
    predicate = Remediation(
        event="remediation.alert",
        observed_at=now,
        host=host_id,
        outcome=Outcome.ALERT,
        policy_digest=policy_digest,
        controls=_control_results(finding),
        actions=[
            ActionRecord(
                name=f"alert:{rule}",
                outcome=Outcome.ALERT if sent else Outcome.FAILED,
                detail=message + ("" if sent else " (the alert could not be sent)"),
            )
        ],
        finding=f"{finding.check}: {finding.message}",
    )
    attachments = {"finding.json": finding.model_dump_json(indent=2).encode()}
    return store.append(predicate, attachments=attachments)
