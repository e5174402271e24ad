"""The executor against the real systemd user manager: heal, fail, roll back, retry, dry run.

Units are real (``units`` fixture), alerts go through the real ``logger`` to a real socket,
files are real; only ``sleep`` between retries is recorded instead of slept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixtures_heal import CountingFactory, HealWorld, write_evidence_keys
from fixtures_systemd import Units

from conftest import DATA, REPO
from nixcomply.evidence.keys import read_private_key
from nixcomply.evidence.statement import Host
from nixcomply.evidence.store import EvidenceStore
from nixcomply.evidence.verify import verify_path
from nixcomply.heal.executor import RunbookRun, execute
from nixcomply.heal.remediation import record_remediation
from nixcomply.heal.runbook import Runbook, load_runbook
from nixcomply.heal.sync import SyncResult
from nixcomply.host.systemd import Systemd
from nixcomply.model.outcome import RunOutcome
from nixcomply.sandbox.usermanager import UserManager

SERVICE = load_runbook(REPO / "runbooks" / "RB-SERVICE-001.yaml")
RESTORE = load_runbook(REPO / "runbooks" / "RB-RESTORE-001.yaml")
BACKUP = load_runbook(REPO / "runbooks" / "RB-BACKUP-001.yaml")
DRIFT = load_runbook(REPO / "runbooks" / "RB-DRIFT-001.yaml")


def stopped_service(units: Units, sd: Systemd, exec_start: str = "/bin/sleep 1000", **settings: str) -> str:
    """A unit that ran and was stopped by hand: the drift RB-SERVICE-001 heals."""
    unit = units.service(exec_start, **settings)
    assert sd.start(unit) == "done"
    assert sd.stop(unit) == "done"
    assert sd.unit_state(unit).active_state == "inactive"
    return unit


def active(sd: Systemd, unit: str) -> Any:
    return lambda: sd.unit_state(unit).is_active


def test_a_stopped_unit_is_restarted_and_verified(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    unit = stopped_service(units, user_systemd)
    run = execute(
        SERVICE, {"unit": unit}, heal.context(user_manager.systemd), verify=active(user_systemd, unit)
    )

    assert run.outcome == RunOutcome.SUCCESS, run.reason
    assert user_systemd.unit_state(unit).active_state == "active"
    assert [s.outcome for s in run.steps] == ["success", "success"]
    assert run.rollback == [] and heal.alerts.messages() == []
    assert run.verification is not None and run.verification.ran and run.verification.ok
    before, job, after = (
        run.evidence["state_before"],
        run.evidence["restart_job"],
        run.evidence["state_after"],
    )
    assert isinstance(before, dict) and isinstance(job, dict) and isinstance(after, dict)
    assert before["unit"]["active_state"] == "inactive"  # type: ignore[index,call-overload]
    assert job["job_result"] == "done"
    assert after["state"]["active_state"] == "active"  # type: ignore[index,call-overload]
    assert "journal" in before or "journal_error" in before
    assert run.missing_evidence == []

    keys = write_evidence_keys(heal.tmp)
    with EvidenceStore.open(
        keys.state_dir,
        read_private_key(keys.signing_key),
        read_private_key(keys.log_key),
        origin="nixcomply/t",
    ) as store:
        host = Host(machine_id="0" * 32, hostname="clinic-01")
        recorded = record_remediation(store, run, host=host, controls=SERVICE.controls)
    statement = json.loads((recorded.path / "statement.json").read_text())["predicate"]
    assert statement["outcome"] == "success" and statement["runbook"] == "RB-SERVICE-001"
    assert {c["status"] for c in statement["controls"]} == {"pass"}
    assert not verify_path(keys.state_dir, None).errors


def test_a_unit_that_cannot_start_is_rolled_back_with_an_alert(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    unit = units.service("/bin/false")  # Type=simple: the restart job is "done", then it fails
    run = execute(
        SERVICE, {"unit": unit}, heal.context(user_manager.systemd), verify=active(user_systemd, unit)
    )

    assert run.outcome == RunOutcome.ALERT, run.reason
    # whether the restart job already sees it failed or wait_unit does is a race; either fails
    assert run.steps[0].action == "restart_service" and run.steps[0].attempts == 3  # max_retries: 2
    assert any(s.outcome == "failed" for s in run.steps)
    assert heal.sleeps == [10, 10]
    assert run.verification is None, "a failed step ends the run before verification"
    assert [(r.action, r.outcome) for r in run.rollback] == [("send_alert", "success")]
    (message,) = heal.alerts.messages(wait=2)
    assert message.startswith("<10>")  # user.crit
    assert f"nixcomply-alert: RB-SERVICE-001: {unit} did not return to active after restart" in message
    assert user_systemd.unit_state(unit).is_failed


def test_retries_run_the_step_again_the_configured_number_of_times(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    counter = heal.tmp / "starts"
    unit = units.service(f"/bin/sh -c 'echo start >> {counter}; exit 3'", Type="oneshot")
    run = execute(SERVICE, {"unit": unit}, heal.context(user_manager.systemd))

    assert counter.read_text().splitlines() == ["start"] * 3, "1 try + max_retries 2"
    restart = run.steps[0]
    assert restart.action == "restart_service" and restart.outcome == "failed" and restart.attempts == 3
    assert "restart job" in restart.detail and "'failed'" in restart.detail
    assert heal.sleeps == [SERVICE.constraints.retry_delay_seconds] * 2
    assert len(run.steps) == 1, "the wait step never ran"
    assert run.outcome == RunOutcome.ALERT


def test_steps_that_succeed_while_the_drift_remains_fail(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    unit = stopped_service(units, user_systemd)
    finding = {
        "status": "drift",
        "drifted": True,
        "message": f"{unit} keeps restarting",
        "observed": {"n": 4},
    }
    checks: list[object] = []

    def verify() -> object:
        checks.append(finding)
        return finding

    run = execute(SERVICE, {"unit": unit}, heal.context(user_manager.systemd), verify=verify)

    assert [(s.outcome, s.attempts) for s in run.steps] == [("success", 3), ("success", 3)]
    assert len(checks) == 3 and heal.sleeps == [10, 10], "each attempt ends with the verification"
    assert run.outcome == RunOutcome.FAILED
    assert run.verification is not None and not run.verification.ok
    assert run.verification.observed == {"n": 4}
    assert "keeps restarting" in run.reason
    assert [r.action for r in run.rollback] == ["send_alert"]
    assert len(heal.alerts.messages(wait=2)) == 1


def test_an_attempt_that_verifies_ends_the_retries(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    unit = stopped_service(units, user_systemd)
    answers = [False, True]
    run = execute(SERVICE, {"unit": unit}, heal.context(user_manager.systemd), verify=lambda: answers.pop(0))
    assert run.outcome == RunOutcome.SUCCESS
    assert [s.attempts for s in run.steps] == [2, 2] and heal.sleeps == [10]
    assert answers == [] and run.rollback == []


def test_a_verification_that_raises_is_a_failed_verification(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    unit = stopped_service(units, user_systemd)

    def broken() -> bool:
        raise RuntimeError("the check crashed")

    run = execute(SERVICE, {"unit": unit}, heal.context(user_manager.systemd), verify=broken)
    assert run.outcome == RunOutcome.FAILED
    assert run.verification is not None and "the check crashed" in run.verification.detail


def test_a_dry_run_changes_nothing_and_says_what_it_would_do(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    unit = stopped_service(units, user_systemd)
    before = user_systemd.unit_state(unit)
    factory = CountingFactory(user_manager.systemd)
    run = execute(SERVICE, {"unit": unit}, heal.context(factory), dry_run=True, verify=lambda: False)

    assert run.outcome == RunOutcome.PLANNED and run.dry_run
    assert factory.calls == 0, "a dry run makes no systemd call at all"
    assert user_systemd.unit_state(unit) == before
    assert heal.alerts.messages() == []
    assert run.verification is None
    lines = {(s.section, s.index): (s.params, s.would) for s in run.all_steps()}
    assert lines[("preconditions", 0)] == (
        {"unit": unit, "journal_lines": 50},
        f"record the state of {unit}, its last 50 journal lines",
    )
    assert lines[("steps", 0)][1] == (
        f"restart {unit} and wait 90 s for the job; fail unless it is done and the unit not failed"
    )
    assert lines[("steps", 1)] == (
        {"unit": unit, "state": "active"},
        f"wait until {unit} is active for 0.3 s, within 60 s",
    )
    assert lines[("rollback", 0)][1] == (
        f"send to syslog socket {heal.alerts.path} (tag nixcomply-alert, priority crit): "
        f"RB-SERVICE-001: {unit} did not return to active after restart"
    )


def test_a_hostile_runbook_leaves_a_real_unit_stopped(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    unit = units.service("/bin/sleep 1000")
    factory = CountingFactory(user_manager.systemd)
    runbook = load_runbook(DATA / "runbooks" / "hostile" / "RB-HOSTILE-017.yaml")
    run = execute(runbook, {"unit": unit, "marker": str(heal.allowed / "m")}, heal.context(factory))
    assert run.outcome == RunOutcome.REJECTED
    assert "steps[1] (clean_directory), argument path" in run.reason
    assert factory.calls == 0
    state = user_systemd.unit_state(unit)
    assert state.active_state == "inactive" and state.active_enter_timestamp is None


def test_preconditions_decide_by_on_failure(heal: HealWorld, units: Units, user_manager: UserManager) -> None:
    # RB-SERVICE-001: capture_state of a unit that does not exist aborts; nothing changed
    missing = units.name()
    run = execute(SERVICE, {"unit": missing}, heal.context(user_manager.systemd))
    assert run.outcome == RunOutcome.FAILED
    assert (
        "precondition preconditions[0] (capture_state) failed" in run.reason
        and "nothing was changed" in run.reason
    )
    assert run.steps == [] and run.rollback == []

    # RB-BACKUP-001: not enough room for the spool alerts (the executor sends the alert itself)
    config = heal.config()
    ctx = heal.context(user_manager.systemd, config=config)
    spool = heal.allowed / "spool"
    spool.mkdir()
    runbook = BACKUP.model_copy(
        update={
            "preconditions": [
                BACKUP.preconditions[0].model_copy(
                    update={"params": {"path": "${spool}", "min_free_percent": 100}}
                )
            ]
        }
    )
    run = execute(runbook, {"unit": units.name(), "spool": str(spool)}, ctx)
    assert run.outcome == RunOutcome.ALERT
    assert run.alert is not None and run.alert.outcome == "success"
    (message,) = heal.alerts.messages(wait=2)
    assert "RB-BACKUP-001: precondition preconditions[0] (check_disk_space) failed" in message
    assert "less than 100% free" in message

    # on_failure: skip -> rejected (the runbook does not apply)
    skip = runbook.model_copy(
        update={"preconditions": [runbook.preconditions[0].model_copy(update={"on_failure": "skip"})]}
    )
    run = execute(skip, {"unit": units.name(), "spool": str(spool)}, ctx)
    assert run.outcome == RunOutcome.REJECTED and run.reason.startswith("does not apply")


def test_a_backup_is_triggered_and_its_result_checked(
    heal: HealWorld, units: Units, user_systemd: Systemd, user_manager: UserManager
) -> None:
    done = heal.tmp / "backup-done"
    good = units.service(f"/bin/sh -c 'sleep 0.2; touch {done}'", Type="oneshot")
    spool = heal.allowed / "spool"
    spool.mkdir()
    run = execute(BACKUP, {"unit": good, "spool": str(spool)}, heal.context(user_manager.systemd))
    assert run.outcome == RunOutcome.SUCCESS, run.reason
    assert done.exists()
    job = run.evidence["backup_job"]
    assert isinstance(job, dict) and job["state"]["result"] == "success"  # type: ignore[index,call-overload]

    # a backup that starts fine but fails after a while (Type=simple): job "done", Result=exit-code
    bad = units.service("/bin/sh -c 'sleep 0.3; exit 1'")
    run = execute(BACKUP, {"unit": bad, "spool": str(spool)}, heal.context(user_manager.systemd))
    assert run.outcome == RunOutcome.ALERT
    assert "did not succeed: Result=exit-code" in (run.steps[0].detail or "")
    assert run.steps[0].attempts == 2  # max_retries: 1


def _restore_world(heal: HealWorld, units: Units, *, corrupt: bool) -> dict[str, str]:
    sample = heal.allowed / "restore-test" / "sample"
    scratch = heal.allowed / "restore-test" / "scratch"
    (sample / "sub").mkdir(parents=True)
    scratch.mkdir()
    (sample / "a.txt").write_text("patient-free sample\n")
    (sample / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)
    (scratch / "left-over").write_text("from last time")
    damage = f"; echo corrupted > {scratch}/a.txt" if corrupt else ""
    unit = units.service(f"/bin/sh -c 'cp -a {sample}/. {scratch}/{damage}'", Type="oneshot")
    return {
        "restore_unit": unit,
        "scratch": str(scratch),
        "sample": str(sample),
        "result": str(heal.allowed / "restore-test" / "result.json"),
    }


def test_a_restore_test_restores_compares_records_and_cleans(
    heal: HealWorld, units: Units, user_manager: UserManager
) -> None:
    params = _restore_world(heal, units, corrupt=False)
    run = execute(RESTORE, params, heal.context(user_manager.systemd))
    assert run.outcome == RunOutcome.SUCCESS, run.reason
    checks = run.evidence["checksums"]
    assert isinstance(checks, dict) and checks["files_compared"] == 2 and checks["ok"] is True
    assert list(Path(params["scratch"]).iterdir()) == [], "the restored copy is removed"
    result = json.loads(Path(params["result"]).read_text())
    assert result["ok"] is True and result["files_compared"] == 2 and result["finished_at"]


def test_a_failed_restore_test_undoes_the_restore_first_then_alerts(
    heal: HealWorld, units: Units, user_manager: UserManager
) -> None:
    params = _restore_world(heal, units, corrupt=True)
    run = execute(RESTORE, params, heal.context(user_manager.systemd))
    assert run.outcome == RunOutcome.ALERT
    assert [s.action for s in run.steps] == ["clean_directory", "start_unit", "verify_checksums"]
    assert "1 differing of 2 compared" in run.steps[2].detail
    assert [(r.action, r.outcome) for r in run.rollback] == [
        ("clean_directory", "success"),
        ("send_alert", "success"),
    ], "the step undoing the restore runs before the last resort"
    assert list(Path(params["scratch"]).iterdir()) == []
    assert json.loads(Path(params["result"]).read_text())["ok"] is False
    assert "restore test failed" in heal.alerts.messages(wait=2)[0]


def test_sync_generation_calls_back_into_the_caller(heal: HealWorld) -> None:
    calls: list[float] = []

    def sync(timeout: float) -> SyncResult:
        calls.append(timeout)
        return SyncResult(ok=True, detail="switched to generation 7", data={"generation": 7})

    run = execute(DRIFT, {}, heal.context(sync_generation=sync), verify=lambda: {"status": "pass"})
    assert run.outcome == RunOutcome.SUCCESS
    assert calls == [1800]
    assert run.evidence["reconcile"] == {"ok": True, "detail": "switched to generation 7", "generation": 7}

    run = execute(DRIFT, {}, heal.context())
    assert run.outcome == RunOutcome.ALERT
    assert "no reconciler was given" in run.steps[0].detail


def test_runbook_run_round_trips_as_json(heal: HealWorld) -> None:
    run = execute(DRIFT, {}, heal.context(), dry_run=True)
    assert RunbookRun.model_validate_json(run.model_dump_json()) == run


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (True, True),
        (False, False),
        ({"status": "pass"}, True),
        ({"status": "drift"}, False),
        ({"status": "error", "message": "timeout"}, False),
        ({"drifted": False}, True),
        ({"drifted": True}, False),
    ],
)
def test_verification_results_are_judged(value: object, ok: bool, heal: HealWorld) -> None:
    sync = lambda timeout: SyncResult(ok=True, detail="ok")  # noqa: E731
    run = execute(DRIFT, {}, heal.context(sync_generation=sync), verify=lambda: value)
    assert run.verification is not None and run.verification.ok is ok
    assert run.outcome == (RunOutcome.SUCCESS if ok else RunOutcome.FAILED)


def test_an_unknown_on_failure_never_runs_the_steps_after_a_failed_precondition(heal: HealWorld) -> None:
    """A value this code does not know (a newer runbook format, a Runbook built in code past
    the schema) stops the run like ``abort``: the steps after the failed precondition never run."""
    marker = heal.marker()
    runbook = Runbook.model_validate(
        {
            "id": "RB-ONFAIL-001",
            "name": "precondition fails",
            "version": 1,
            "severity": "low",
            "description": "a precondition that cannot pass",
            "params": {"marker": {"type": "path", "description": "canary dir"}},
            "preconditions": [
                {
                    "action": "check_disk_space",
                    "description": "needs a disk that is 100% free",
                    "params": {"path": "/", "min_free_percent": 100},
                }
            ],
            "steps": [
                {"action": "clean_directory", "description": "must not run", "params": {"path": "${marker}"}}
            ],
        }
    )
    odd = runbook.preconditions[0].model_copy(update={"on_failure": "retry-forever"})
    run = execute(
        runbook.model_copy(update={"preconditions": [odd]}), {"marker": str(marker)}, heal.context()
    )
    assert run.outcome == RunOutcome.FAILED and run.steps == [], run.reason
    assert "nothing was changed" in run.reason
    assert not heal.touched(marker)
