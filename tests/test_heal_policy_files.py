"""One bad runbook or rules file costs only itself (issue 12.6).

The defect: one bad file in the runbooks or rules directory turned off all healing while the
cycle exited 0. Now it is left out and named: an error finding (into the check run's
evidence), an alert through the built-in rule, the other files heal as before, and the
cycle's exit code says something needs attention. Every alert template of the shipped rules
is expanded (12.11: an alert went out as the literal ``${finding.check}``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fixtures_reconcile import ReconcileWorld

from conftest import REPO
from nixcomply.core.memo import file_stamp
from nixcomply.errors import InputError
from nixcomply.heal.rules import Op, decide, load_rules
from nixcomply.heal.runbook import load_runbook
from nixcomply.host.state import State
from nixcomply.reconcile import respond
from nixcomply.reconcile.cycle import Reconciler
from nixcomply.reconcile.respond import POLICY_CHECK, load_policy


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of nixcomply's data directory (baseline, runbooks, rules) to spoil."""
    copy = tmp_path / "data"
    shutil.copytree(REPO / "baseline", copy / "baseline")
    shutil.copytree(REPO / "runbooks", copy / "runbooks")
    monkeypatch.setenv("NIXCOMPLY_DATA_DIR", str(copy))
    return copy


def test_a_bad_runbook_file_is_left_out_and_named(data_dir: Path) -> None:
    (data_dir / "runbooks" / "RB-DISK-001.yaml").write_text("id: RB-DISK-001\nsteps: [\n")
    policy = load_policy()
    assert "RB-DISK-001" not in policy.runbooks and "RB-SERVICE-001" in policy.runbooks
    assert len(policy.runbooks) == len(list((REPO / "runbooks").glob("RB-*.yaml"))) - 1
    (finding,) = policy.findings()
    assert finding.check == POLICY_CHECK and finding.status == "error"
    assert finding.subject == str(data_dir / "runbooks" / "RB-DISK-001.yaml")
    assert "RB-DISK-001.yaml:" in finding.message and "invalid YAML" in finding.message
    assert any(r.action.runbook == "RB-DISK-001" for r in policy.rules), "its rule still loads"
    assert "RB-DISK-001" in policy.broken


def test_a_bad_rules_file_leaves_the_built_in_alert(data_dir: Path) -> None:
    (data_dir / "runbooks" / "rules" / "default.yaml").write_text("rules:\n  - id: nope\n")
    policy = load_policy()
    assert [r.id for r in policy.rules] == ["L1-POLICY-001"]
    (finding,) = policy.findings()
    decision = decide(policy.rules, finding.model_dump(mode="json"))
    assert decision is not None and decision.alert is not None
    assert "${" not in decision.alert and "default.yaml" in decision.alert


def test_a_bad_file_costs_only_itself_in_a_cycle(fresh: ReconcileWorld, data_dir: Path) -> None:
    (data_dir / "runbooks" / "RB-DISK-001.yaml").write_text("not: [a runbook\n")
    fresh.install("good")
    config = fresh.configure("good")
    assert fresh.systemctl("stop", "app.service").returncode == 0
    report = Reconciler(config).run()
    (app,) = [f for f in report.findings if f.check == "service_health" and "app" in f.message]
    assert app.decision is not None and app.decision.startswith("RB-SERVICE-001: success"), app.decision
    (policy,) = [f for f in report.findings if f.check == POLICY_CHECK]
    assert policy.status == "error" and policy.decision is not None
    assert policy.decision.startswith("alert (L1-POLICY-001)"), policy.decision
    assert report.policy_problems and "RB-DISK-001.yaml" in report.policy_problems[0]
    assert report.exit_code == 1
    assert any(line.startswith("policy:  ignored, does not load: ") for line in report.lines())
    found = [json.loads(p.read_text()) for p in (fresh.host.state_dir / "evidence").rglob("statement.json")]
    (check_run,) = [s for s in found if s["predicateType"].endswith("/check-run/v1")]
    assert any(
        c["id"] == f"check:{POLICY_CHECK}" and c["status"] == "error"
        for c in check_run["predicate"]["controls"]
    )


def _finding_for(conditions: list[Any]) -> dict[str, Any]:
    """A finding that meets every condition of a rule (eq, in, exists, contains)."""
    finding: dict[str, Any] = {
        "check": "x",
        "status": "drift",
        "severity": "high",
        "subject": "/var",
        "message": "it drifted",
        "control_ids": ["storage.disk-capacity"],
        "runbook_params": {},
        "observed": {},
    }
    for c in conditions:
        if c.op == Op.EQ:
            finding[c.field] = c.value
        elif c.op == Op.IN:
            finding[c.field] = c.value[0]
    return finding


def test_every_shipped_alert_template_is_expanded() -> None:
    runbooks = {p.stem: load_runbook(p) for p in (REPO / "runbooks").glob("RB-*.yaml")}
    rules = load_rules([REPO / "runbooks" / "rules" / "default.yaml"], runbook_ids=frozenset(runbooks))
    alerting = [r for r in rules if r.action.alert is not None]
    assert alerting, "the shipped rules raise alerts"
    for rule in alerting:
        finding = _finding_for(rule.when)
        decision = decide([rule], finding)
        assert decision is not None and decision.alert is not None, rule.id
        assert "${" not in decision.alert, f"{rule.id}: {decision.alert}"
    error = next(r for r in alerting if r.id == "L1-ERROR-001")
    decision = decide([error], {**_finding_for(error.when), "check": "backup"})
    assert decision is not None and decision.alert == "a compliance check could not run: backup"


def test_a_rule_whose_alert_refers_to_anything_but_a_finding_field_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - id: L1-X-001\n    description: d\n    when: [{field: status, op: eq, value: error}]\n"
        "    action: {alert: 'look at ${host.name}'}\n"
    )
    with pytest.raises(
        InputError, match=r"rules.yaml:5: rules\[0\]\.action\.alert: rule L1-X-001: \$\{host.name\}"
    ):
        load_rules([rules], runbook_ids=frozenset())


def test_a_run_remembers_the_parsed_policy_until_a_file_changes(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer-driven reconciler is a new process every cycle: the parsed runbooks and rules
    are kept in the state database by (device, inode, mtime, size) instead of parsing YAML
    each time (12, performance)."""
    path = data_dir / "runbooks" / "RB-SERVICE-001.yaml"
    with State.open(tmp_path / "state") as state:
        assert load_policy(memo=state).runbooks["RB-SERVICE-001"].name.startswith("Restart")
        key = f"runbook:{path}"
        stamp = file_stamp(path)
        assert stamp is not None
        remembered = state.recall(key, stamp)
        assert remembered is not None
        # what a new process finds: its own caches empty, the memo from the last run
        monkeypatch.setattr(respond, "_RUNBOOKS", {})
        state.memorise(key, stamp, remembered.replace("Restart a critical service", "Remembered"))
        assert load_policy(memo=state).runbooks["RB-SERVICE-001"].name.startswith("Remembered")
        monkeypatch.setattr(respond, "_RUNBOOKS", {})
        with path.open("a") as f:
            f.write("# changed\n")
        assert load_policy(memo=state).runbooks["RB-SERVICE-001"].name.startswith("Restart")
