"""Self-healing inside the reconcile cycle, with the real systemd user manager: a service
stopped by hand is found, restarted by RB-SERVICE-001 and verified; one that will not start
ends in an alert after its rollback; one that keeps dying is suppressed after three heals."""

from __future__ import annotations

import json
from typing import Any

from fixtures_checks import data
from fixtures_reconcile import ReconcileWorld, locked_audit_checks

from conftest import Cli
from nixcomply.host.state import State
from nixcomply.reconcile.cycle import Reconciler
from nixcomply.reconcile.model import CycleReport, FindingSummary


def remediations(world: ReconcileWorld) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in (world.host.state_dir / "evidence").rglob("statement.json")]
    rem = [s["predicate"] for s in found if s["predicateType"].endswith("/remediation/v1")]
    return sorted(rem, key=lambda p: p["chain"]["seq"])


def app_finding(report: CycleReport) -> FindingSummary:
    (finding,) = [f for f in report.findings if f.check == "service_health" and "app" in f.message]
    return finding


def test_stopped_service_is_restarted_verified_and_recorded(fresh: ReconcileWorld) -> None:
    fresh.install("good")
    config = fresh.configure("good")
    assert fresh.systemctl("stop", "app.service").returncode == 0
    report = Reconciler(config).run()
    finding = app_finding(report)
    assert finding.status == "drift"
    assert finding.decision is not None
    assert finding.decision.startswith("RB-SERVICE-001: success"), finding.decision
    assert fresh.systemctl("is-active", "app.service").stdout.strip() == "active"
    (remediation,) = remediations(fresh)
    assert remediation["runbook"] == "RB-SERVICE-001"
    assert remediation["outcome"] == "success"
    assert any(a["name"].startswith("restart") or "restart" in a["name"] for a in remediation["actions"])
    assert fresh.verify() == 2  # the remediation and the cycle's check-run

    calm = Reconciler(config).run()
    assert app_finding(calm).status == "pass"
    assert len(remediations(fresh)) == 1
    assert fresh.verify() == 3


def test_unit_that_will_not_start_ends_in_alert_after_rollback(fresh: ReconcileWorld) -> None:
    fresh.install("fragile")
    config = fresh.configure("fragile")
    fresh.flag.touch()
    fresh.systemctl("stop", "app.service")
    report = Reconciler(config).run()
    finding = app_finding(report)
    assert finding.decision is not None
    assert "RB-SERVICE-001: alert" in finding.decision, finding.decision
    (remediation,) = remediations(fresh)
    assert remediation["outcome"] == "alert"
    with State.open(fresh.host.state_dir) as state:
        assert state.heal_counts() == {"alert": 1}
        assert state.suppressed() == {}, "failures are not flaps"


def test_a_service_that_keeps_dying_is_suppressed_after_three_heals(fresh: ReconcileWorld, cli: Cli) -> None:
    fresh.install("good")
    config = fresh.configure("good")
    decisions = []
    for _ in range(4):
        fresh.systemctl("stop", "app.service")
        with State.open(fresh.host.state_dir) as state:
            state.clear_cooldowns()  # as if each rule's cooldown had passed between the stops
        decision = app_finding(Reconciler(config).run()).decision
        assert decision is not None
        decisions.append(decision)
    assert [d.split(":")[0] for d in decisions[:3]] == ["RB-SERVICE-001"] * 3, decisions
    assert "now suppressed" in decisions[2]
    assert "suppressed since" in decisions[3], decisions[3]
    assert fresh.systemctl("is-active", "app.service").stdout.strip() != "active", (
        "a suppressed heal does not run"
    )
    assert len(remediations(fresh)) == 3

    r = cli("status", "--config", fresh.host.config_path)
    assert "suppressed service_health:RB-SERVICE-001" in r.out
    assert cli("reset", "--config", fresh.host.config_path).code == 0
    assert (app_finding(Reconciler(config).run()).decision or "").startswith("RB-SERVICE-001: success")


def test_locked_audit_rules_alert_that_a_reboot_is_needed(fresh: ReconcileWorld, cli: Cli) -> None:
    """With security.audit.enable = "lock", missing audit rules cannot be loaded before the
    next boot: the cycle alerts (L1-AUDIT-003) instead of re-applying the generation, and
    `nixcomply status` and the metrics say a reboot is needed until the rules are loaded."""
    fresh.install("good")
    checks = locked_audit_checks(fresh)
    config = fresh.configure("good", checks=checks)
    report = Reconciler(config).run()
    (deletions,) = [f for f in report.findings if f.check == "audit_rules" and f.status == "drift"]
    assert deletions.reboot_needed
    assert deletions.decision is not None and deletions.decision.startswith(
        "alert (L1-AUDIT-003): a reboot is needed"
    )
    assert report.reboot_needed == ["audit-rules"]
    assert not remediations(fresh) or all(r["runbook"] != "RB-DRIFT-001" for r in remediations(fresh))
    status = cli("status", "--config", fresh.host.config_path)
    assert "reboot     needed: audit-rules" in status.out, status.out
    assert "nixcomply_need_reboot 1" in fresh.host.metrics_path.read_text()

    (fresh.host.dir / "auditctl-l.txt").write_text(
        data("audit_rules/hipaa-v1.txt")
    )  # the host was rebooted: the rules are loaded
    report = Reconciler(config).run()
    assert report.reboot_needed == []
    assert "reboot     not needed" in cli("status", "--config", fresh.host.config_path).out
    assert "nixcomply_need_reboot 0" in fresh.host.metrics_path.read_text()
