"""Runbook runs become signed remediation statements that an offline verifier accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_heal import HealWorld, write_evidence_keys
from pydantic import BaseModel

from conftest import DATA
from nixcomply.evidence.keys import read_private_key
from nixcomply.evidence.statement import Host
from nixcomply.evidence.store import EvidenceStore
from nixcomply.evidence.verify import verify_path
from nixcomply.heal.executor import RunbookRun, execute
from nixcomply.heal.remediation import record_remediation
from nixcomply.heal.runbook import load_runbook
from nixcomply.model.outcome import RunOutcome

HOST = Host(machine_id="0123456789abcdef0123456789abcdef", hostname="clinic-01")
BENIGN = load_runbook(DATA / "runbooks" / "RB-BENIGN-001.yaml")


def _store(tmp: Path) -> EvidenceStore:
    keys = write_evidence_keys(tmp)
    return EvidenceStore.open(
        keys.state_dir,
        read_private_key(keys.signing_key),
        read_private_key(keys.log_key),
        origin="nixcomply/clinic-01",
        durable=False,
    )


FINDING = {
    "check": "disk_usage",
    "control_ids": ["storage.disk-capacity"],
    "severity": "medium",
    "status": "drift",
    "subject": "/var",
    "observed": {"used_percent": 93.1},
    "expected": {"max_percent": 85},
    "drifted": True,
    "message": "/var is 93.1% full (limit 85%)",
    "recommended_runbook": "RB-DISK-001",
    "runbook_params": {"path": "/var"},
    "frameworks": {
        "hipaa": ["164.308(a)(7)(ii)(B)"],
        "soc2": ["A1.1"],
        "cis_v8": [],
        "nist_800_53": ["SC-5"],
        "nist_csf": [],
    },
    "outputs": {"df": "Filesystem 1K-blocks Used\n/dev/vda1 100 93 MRN: 884213\n"},
}


def test_a_run_is_recorded_with_steps_controls_and_scrubbed_outputs(heal: HealWorld) -> None:
    scratch = heal.allowed / "scratch"
    scratch.mkdir()
    (scratch / "old").write_text("x")
    params = {"marker": str(heal.marker()), "scratch": str(scratch)}
    run = execute(
        BENIGN, params, heal.context(), verify=lambda: {"status": "pass", "observed": {"used_percent": 40.0}}
    )
    assert run.outcome == RunOutcome.SUCCESS

    with _store(heal.tmp) as store:
        recorded = record_remediation(store, run, host=HOST, finding=FINDING, actor="alice")
    statement = json.loads((recorded.path / "statement.json").read_text())
    p = statement["predicate"]
    assert statement["predicateType"] == "https://nixcomply.dev/evidence/remediation/v1"
    assert (p["event"], p["runbook"], p["outcome"], p["actor"]) == (
        "remediation.runbook",
        "RB-BENIGN-001",
        "success",
        "alice",
    )
    assert p["finding"].startswith("RB-BENIGN-001 v1 (success): ")
    assert "Finding: disk_usage [/var] drift: /var is 93.1% full" in p["finding"]
    (control,) = p["controls"]
    assert control["id"] == "storage.disk-capacity" and control["status"] == "pass"
    assert control["observed"] == {"used_percent": 40.0} and control["expected"] == {"max_percent": 85}
    assert control["frameworks"]["hipaa"] == ["164.308(a)(7)(ii)(B)"] and control["frameworks"][
        "nist_800_53"
    ] == ["SC-5"]
    names = [a["name"] for a in p["actions"]]
    assert names == [
        "steps.0.clean_directory",
        "steps.1.run_command",
        "steps.2.clean_directory",
        "steps.3.check_disk_space",
        "verification",
    ]
    listed = p["actions"][1]
    assert listed["command"] == ["/usr/sbin/nft", "list", "ruleset"] and listed["exit_code"] == 0
    assert listed["outcome"] == "success" and listed["duration_s"] >= 0 and listed["started_at"]

    attachments = {f.name: f.read_text() for f in (recorded.path / "attachments").iterdir()}
    assert set(attachments) == {"runbook-run.json", "finding-df.txt"}
    assert "884213" not in attachments["finding-df.txt"] and "[MRN-REDACTED-" in attachments["finding-df.txt"]
    assert recorded.redactions.get("mrn") == 1
    assert RunbookRun.model_validate_json(attachments["runbook-run.json"]).outcome == RunOutcome.SUCCESS

    report = verify_path(recorded.path.parents[4], None)
    assert not report.errors and report.entries == 1


def test_failed_and_refused_runs_are_recorded_too(heal: HealWorld) -> None:
    runbook = load_runbook(DATA / "runbooks" / "hostile" / "RB-HOSTILE-014.yaml")
    refused = execute(runbook, {"marker": str(heal.marker())}, heal.context())
    scratch = heal.allowed / "scratch"
    scratch.mkdir()
    failed = execute(
        BENIGN,
        {"marker": str(heal.marker()), "scratch": str(scratch)},
        heal.context(),
        verify=lambda: False,
    )
    assert (refused.outcome, failed.outcome) == (RunOutcome.REJECTED, RunOutcome.FAILED)

    class Finding(BaseModel):  # the shape of nixcomply.checks.finding.Finding, as far as used
        check: str = "disk_usage"
        control_ids: list[str] = ["storage.disk-capacity"]
        status: str = "drift"
        message: str = "full"

    with _store(heal.tmp) as store:
        first = record_remediation(store, refused, host=HOST, controls=["storage.disk-capacity"])
        second = record_remediation(store, failed, host=HOST, finding=Finding())
    p = json.loads((first.path / "statement.json").read_text())["predicate"]
    assert p["outcome"] == "rejected" and p["actions"][0]["name"] == "guard"
    assert "sshd.service is not on the allowlist" in p["actions"][0]["detail"]
    assert p["controls"][0]["status"] == "unknown"
    p = json.loads((second.path / "statement.json").read_text())["predicate"]
    assert p["outcome"] == "failed" and p["controls"][0]["status"] == "fail"
    assert [a["name"] for a in p["actions"]][-2:] == ["rollback.0.send_alert", "verification"]
    assert second.seq == first.seq + 1


def test_a_dry_run_is_never_recorded(heal: HealWorld) -> None:
    run = execute(
        BENIGN,
        {"marker": str(heal.allowed / "m"), "scratch": str(heal.allowed / "s")},
        heal.context(),
        dry_run=True,
    )
    with _store(heal.tmp) as store, pytest.raises(ValueError, match="never recorded"):
        record_remediation(store, run, host=HOST)
