"""``nixcomply runbook validate | list | run`` through the CLI, in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixtures_heal import TEST_BINARIES, EvidenceKeys, HealWorld, write_evidence_keys

from conftest import DATA, REPO
from nixcomply.evidence.verify import verify_path
from nixcomply.heal.executor import RunbookRun
from nixcomply.reconcile.config import DEFAULT_CONFIG

RUNBOOKS = sorted(p.stem for p in (REPO / "runbooks").glob("RB-*.yaml"))
BENIGN = DATA / "runbooks" / "RB-BENIGN-001.yaml"


def write_config(heal: HealWorld, keys: EvidenceKeys | None = None, **heal_settings: Any) -> Path:
    config: dict[str, Any] = {
        "flake": "path:/nonexistent/fleet",
        "host": "clinic-01",
        "state_dir": str(keys.state_dir if keys else heal.tmp / "state"),
        "systemd": {"enable": False},
        "heal": {
            "allowed_units": ["t-*.service"],
            "allowed_roots": [str(heal.allowed)],
            "binaries": TEST_BINARIES,
            "alert": {"socket": str(heal.alerts.path)},
            **heal_settings,
        },
    }
    if keys is not None:
        config["evidence"] = {"signing_key": str(keys.signing_key), "log_key": str(keys.log_key)}
    path = heal.tmp / "reconciler.json"
    path.write_text(json.dumps(config))
    return path


def test_validate_accepts_the_shipped_runbooks(cli: Any) -> None:
    r = cli("runbook", "validate", *sorted((REPO / "runbooks").glob("RB-*.yaml")))
    assert r.code == 0, r.err
    assert len(r.out.splitlines()) == len(RUNBOOKS) and all(
        line.startswith("ok: ") for line in r.out.splitlines()
    )


def test_validate_reports_every_bad_file_with_its_line(cli: Any) -> None:
    hostile = DATA / "runbooks" / "hostile"
    r = cli("runbook", "validate", BENIGN, hostile / "RB-HOSTILE-001.yaml", hostile / "RB-HOSTILE-010.yaml")
    assert r.code == 2
    assert "ok: " in r.out and "RB-BENIGN-001" in r.out
    assert f"{hostile / 'RB-HOSTILE-001.yaml'}:13: steps[1].action" in r.err
    assert f"{hostile / 'RB-HOSTILE-010.yaml'}:15: steps[1].params: refers to ${{nobody}}" in r.err
    assert "Traceback" not in r.err


def test_list_shows_every_runbook(cli: Any) -> None:
    r = cli("runbook", "list")
    assert r.code == 0
    assert [line.split()[0] for line in r.out.splitlines()] == RUNBOOKS
    assert "disruptive" in next(line for line in r.out.splitlines() if line.startswith("RB-DRIFT-001"))
    rows = json.loads(cli("runbook", "list", "--json").out)
    assert [row["id"] for row in rows] == RUNBOOKS
    assert rows[RUNBOOKS.index("RB-SERVICE-001")]["params"]["unit"]["type"] == "unit"


def test_a_dry_run_lists_each_step_with_resolved_params(cli: Any, heal: HealWorld) -> None:
    config = write_config(heal)
    r = cli(
        "runbook", "run", "RB-SERVICE-001", "--dry-run", "--param", "unit=t-web.service", "--config", config
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "RB-SERVICE-001 v1: Restart a critical service that is not running"
    assert lines[1] == "parameters: unit=t-web.service"
    assert (
        "  plan preconditions[0] capture_state: Record the unit's state and recent journal before anything changes"
        in lines
    )
    assert "         would record the state of t-web.service, its last 50 journal lines" in lines
    assert (
        "         would restart t-web.service and wait 90 s for the job; fail unless it is done and the unit not failed"
        in lines
    )
    assert lines[-1] == "outcome: planned: dry run: nothing was executed"
    assert "warning" not in r.err

    r = cli(
        "runbook",
        "run",
        "RB-SERVICE-001",
        "--dry-run",
        "--param",
        "unit=t-web.service",
        "--config",
        config,
        "--json",
    )
    run = RunbookRun.model_validate_json(r.out)
    assert run.dry_run and [s.params for s in run.steps] == [
        {"unit": "t-web.service"},
        {"unit": "t-web.service", "state": "active"},
    ]


def test_a_dry_run_with_the_default_configuration(cli: Any) -> None:

    if DEFAULT_CONFIG.exists():
        pytest.fail(f"{DEFAULT_CONFIG} exists on this machine; the test needs the built-in defaults")
    r = cli("runbook", "run", "RB-DRIFT-001", "--dry-run")
    assert r.code == 0, r.err
    assert "would re-apply the approved generation through the reconciler within 1800 s" in r.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "unit=t-a;reboot.service"], "runbook RB-SERVICE-001, parameter unit (used by"),
        (["--param", "unit=t-a.service\nExecStart=/bin/sh"], "contains whitespace or control characters"),
        (["--param", "unit=sshd.service"], "sshd.service is not on the allowlist"),
        (["--param", "unit=t-a.service", "--param", "extra=1"], "parameter extra: is not a parameter"),
        ([], "parameter unit (used by preconditions[0] (capture_state)"),
        (["--param", "unit"], "--param 'unit': expected NAME=VALUE"),
        (["--param", "unit=a.service", "--param", "unit=b.service"], "--param unit is given twice"),
    ],
)
def test_bad_parameters_exit_2_without_a_traceback(
    args: list[str], message: str, cli: Any, heal: HealWorld
) -> None:
    r = cli("runbook", "run", "RB-SERVICE-001", *args, "--config", write_config(heal))
    assert r.code == 2, r.out
    assert r.err.startswith("nixcomply: error: ") and message in r.err, r.err
    assert "Traceback" not in r.err and r.out == ""


def test_a_hostile_runbook_file_is_refused_and_its_first_step_never_runs(cli: Any, heal: HealWorld) -> None:
    marker = heal.marker()
    for name in ("RB-HOSTILE-002", "RB-HOSTILE-016", "RB-HOSTILE-001", "RB-HOSTILE-018", "RB-HOSTILE-014"):
        r = cli(
            "runbook", "run", DATA / "runbooks" / "hostile" / f"{name}.yaml", "--param", f"marker={marker}",
            "--config", write_config(heal),
        )  # fmt: skip
        assert r.code == 2 and "Traceback" not in r.err
        assert not heal.touched(marker)
    r = cli("runbook", "run", "RB-NOPE-001")
    assert r.code == 2 and "no runbook RB-NOPE-001 in" in r.err


def test_a_manual_run_is_recorded_with_the_technician_as_actor(
    cli: Any, heal: HealWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = write_evidence_keys(heal.tmp)
    config = write_config(heal, keys)
    scratch = heal.allowed / "scratch"
    scratch.mkdir()
    (scratch / "junk").write_text("x")
    marker = heal.marker()
    params = ["--param", f"marker={marker}", "--param", f"scratch={scratch}"]
    monkeypatch.setenv("SUDO_USER", "alice")

    r = cli("runbook", "run", BENIGN, *params, "--config", config, "--dry-run")
    assert r.code == 0 and not (keys.state_dir / "evidence").exists(), "a dry run records nothing"
    assert (scratch / "junk").exists()

    r = cli("runbook", "run", BENIGN, *params, "--config", config)
    assert r.code == 0, r.err
    assert "outcome: success" in r.out and "evidence: entry 0 (" in r.out
    assert not (scratch / "junk").exists() and heal.touched(marker)
    (statement,) = keys.state_dir.glob("evidence/*/*/*/*/statement.json")
    predicate = json.loads(statement.read_text())["predicate"]
    assert predicate["actor"] == "alice" and predicate["runbook"] == "RB-BENIGN-001"
    assert predicate["controls"][0]["id"] == "storage.disk-capacity"
    report = verify_path(keys.state_dir, None)
    assert not report.errors and report.entries == 1


def test_a_failing_run_exits_1_and_without_keys_says_it_is_not_recorded(cli: Any, heal: HealWorld) -> None:
    failing = heal.tmp / "RB-FAIL-001.yaml"
    failing.write_text(
        "id: RB-FAIL-001\nname: fails\nversion: 1\nseverity: low\ndescription: fails\n"
        "steps:\n  - {action: run_command, description: fail, params: {argv: [nft, list, ruleset]}}\n"
        "rollback:\n  - {action: send_alert, description: tell, params: {message: it failed}}\n"
    )
    config = write_config(heal, binaries={"nft": "/bin/false"})  # the program fails
    r = cli("runbook", "run", failing, "--config", config)
    assert r.code == 1, r.err
    assert "nixcomply: warning: no evidence keys configured: this run is not recorded" in r.err
    assert "  FAIL steps[0] run_command (" in r.out and "false exited with status 1" in r.out
    assert "  ok   rollback[0] send_alert (" in r.out
    assert r.out.splitlines()[-1].startswith("outcome: alert: step steps[0] (run_command) failed")
    assert heal.alerts.messages(wait=2)[0].endswith("nixcomply-alert: it failed")


def test_a_bad_heal_block_is_located(cli: Any, heal: HealWorld) -> None:
    config = write_config(heal, allowed_roots=["relative/dir"])
    r = cli("runbook", "run", "RB-DRIFT-001", "--dry-run", "--config", config)
    assert r.code == 2
    assert f"{config}:1: heal.allowed_roots" in r.err and "must be absolute" in r.err
