"""The SIGKILL campaign: the reconciler is killed at every named fault point, and at random
moments, over a healthy and a broken revision. Every trial must end converged (the healthy
revision running and the boot default; the broken one reverted and blocked), with the
evidence log verifying, exactly one record per activation (no attempt recorded twice, every
test activation the sandbox logged has a record), no change of its own recorded as someone
else's, and never a "success" for a generation whose critical unit fails.

``make test`` runs every fault point over the revisions that reach it and a few seeded
random kills; ``make campaign`` runs many more random kills (``NIXCOMPLY_CAMPAIGN_TRIALS``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from typing import Any, Final

import pytest
from fixtures_reconcile import ReconcileWorld, locked_audit_checks

from nixcomply.core.faults import CYCLE_POINTS, HEAL_POINTS, FaultPoint
from nixcomply.host.state import AttemptOutcome, State
from nixcomply.model.outcome import PlanKind
from nixcomply.nixos import generations, system
from nixcomply.reconcile.cycle import Reconciler
from nixcomply.reconcile.respond import HEAL_RUNNING

HEALTHY: Final = "newer"
BROKEN: Final = "broken"
# The fault points and the revisions whose cycle passes them.
POINTS: Final[dict[FaultPoint, tuple[str, ...]]] = {
    FaultPoint.SETTLING: (HEALTHY, BROKEN),
    FaultPoint.SETTLED: (HEALTHY, BROKEN),
    FaultPoint.BUILT: (HEALTHY, BROKEN),
    FaultPoint.TESTED: (HEALTHY, BROKEN),
    FaultPoint.GATING: (HEALTHY, BROKEN),
    FaultPoint.GATED: (HEALTHY, BROKEN),
    FaultPoint.SWITCHED: (HEALTHY,),
    FaultPoint.REVERTED: (BROKEN,),
    FaultPoint.RECORDED: (HEALTHY, BROKEN),
    FaultPoint.CLOSED: (HEALTHY, BROKEN),
    FaultPoint.CHECKED: (HEALTHY, BROKEN),
}
# make test: every fault point once, over the revision whose failure there matters most;
# make campaign (NIXCOMPLY_CAMPAIGN=1): every point over every revision that reaches it.
REPRESENTATIVE: Final[dict[FaultPoint, str]] = {
    FaultPoint.SETTLING: BROKEN,
    FaultPoint.SETTLED: HEALTHY,
    FaultPoint.BUILT: HEALTHY,
    FaultPoint.TESTED: BROKEN,
    FaultPoint.GATING: BROKEN,
    FaultPoint.GATED: HEALTHY,
    FaultPoint.SWITCHED: HEALTHY,
    FaultPoint.REVERTED: BROKEN,
    FaultPoint.RECORDED: HEALTHY,
    FaultPoint.CLOSED: HEALTHY,
    FaultPoint.CHECKED: BROKEN,
}
FULL: Final = os.environ.get("NIXCOMPLY_CAMPAIGN") == "1"
TRIALS: Final = int(os.environ.get("NIXCOMPLY_CAMPAIGN_TRIALS", "40" if FULL else "3"))
LONGEST_CYCLE: Final = 3.0  # seconds; random kills land anywhere in a cycle this long

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from nixcomply.core import faults
    from nixcomply.cli import main

    def die(name):
        if name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    if sys.argv[1]:
        faults.HOOK = die
    sys.exit(main(["reconcile", "--config", sys.argv[2]]))
    """
)


def reconcile_child(world: ReconcileWorld, point: str = "") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, point, str(world.host.config_path)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def killed_at(world: ReconcileWorld, point: FaultPoint) -> None:
    child = reconcile_child(world, point)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, f"the child should die at {point}: {err.decode()}"


def statements(world: ReconcileWorld) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in (world.host.state_dir / "evidence").rglob("statement.json")]
    return sorted(found, key=lambda s: s["predicate"]["chain"]["seq"])


def generation_changes(world: ReconcileWorld) -> list[dict[str, Any]]:
    return [
        s["predicate"] for s in statements(world) if str(s["predicateType"]).endswith("/generation-change/v1")
    ]


def logged_test_activations(world: ReconcileWorld) -> list[str]:
    """The systems the sandbox test-activated while they were not its boot default."""
    log = world.sandbox.root.path / "activations.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [
        system
        for action, system, boot in (line.split() for line in lines)
        if action == "test" and system != boot
    ]


def converge(world: ReconcileWorld, target: str, *, cycles: int = 5) -> None:
    config = world.configure(target)
    for _ in range(cycles):
        report = Reconciler(config).run()
        with State.open(world.host.state_dir) as state:
            settled = state.in_progress() == []
        if settled and report.plan is not None and report.plan.kind in (PlanKind.IN_SYNC, PlanKind.BLOCKED):
            return
    pytest.fail(f"no convergence towards {target} within {cycles} cycles: {report.plan}")


def check_converged(world: ReconcileWorld, target: str, what: str) -> None:
    root = world.sandbox.root
    expected = world.systems[target if target == HEALTHY else "good"]
    assert system.current_system(root) == expected, what
    assert generations.profile_target(root) == expected, what
    with State.open(world.host.state_dir) as state:
        assert state.in_progress() == [], what
        attempt = state.attempt(world.revs[target])
        assert attempt is not None, what
        wanted = AttemptOutcome.SUCCESS if target == HEALTHY else AttemptOutcome.REVERTED
        assert attempt.outcome == wanted, f"{what}: {attempt}"

    assert world.verify() == len(statements(world)), what
    changes = generation_changes(world)
    assert not [c for c in changes if c["event"] != "generation-change"], (
        f"{what}: own change taken as external"
    )
    broken = str(world.systems[BROKEN])
    assert not [
        c for c in changes if c["outcome"] == "success" and c["generation"]["store_path"] == broken
    ], f"{what}: a generation whose critical unit fails was recorded as a success"
    keys = [next(a["detail"] for a in c["actions"] if a["name"] == "attempt") for c in changes]
    assert len(keys) == len(set(keys)), f"{what}: an attempt recorded twice: {keys}"
    target_path = str(world.systems[target])
    records = [c for c in changes if c["generation"]["store_path"] == target_path]
    activations = [s for s in logged_test_activations(world) if s == target_path]
    assert len(records) >= len(activations) >= 1, (
        f"{what}: {len(activations)} test activations of the target, {len(records)} records"
    )


CASES = (
    [(point, target) for point, targets in POINTS.items() for target in targets]
    if FULL
    else list(REPRESENTATIVE.items())
)


def test_every_fault_point_is_in_the_campaign() -> None:
    assert set(POINTS) == set(REPRESENTATIVE) == CYCLE_POINTS
    assert CYCLE_POINTS | HEAL_POINTS | {FaultPoint.INGEST_STORED} == set(FaultPoint)
    assert all(target in POINTS[point] for point, target in REPRESENTATIVE.items())


@pytest.mark.parametrize(("point", "target"), CASES, ids=[f"{p.value}-{t}" for p, t in CASES])
def test_killed_at_a_fault_point_converges(fresh: ReconcileWorld, point: FaultPoint, target: str) -> None:
    fresh.install("good")
    fresh.configure(target)
    if point in (FaultPoint.SETTLING, FaultPoint.SETTLED):
        killed_at(fresh, FaultPoint.TESTED)  # an interrupted attempt for the next run to settle
    killed_at(fresh, point)
    converge(fresh, target)
    check_converged(fresh, target, f"killed at {point}")


@pytest.mark.parametrize("seed", range(TRIALS))
def test_killed_at_a_random_moment_converges(fresh: ReconcileWorld, seed: int) -> None:
    """The whole process group is killed (the reconciler and whatever it runs: nix,
    nixos-rebuild, switch-to-configuration, systemctl), at a moment drawn from a seeded
    generator, so a failure replays."""
    rng = random.Random(seed)
    target = rng.choice((HEALTHY, BROKEN))
    delay = rng.uniform(0.05, LONGEST_CYCLE)
    fresh.install("good")
    fresh.configure(target)
    child = reconcile_child(fresh)
    try:
        child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert child.stderr is not None
    child.stderr.close()
    converge(fresh, target)
    check_converged(fresh, target, f"seed {seed}: {target}, killed after {delay:.3f} s")


def test_every_heal_fault_point_is_in_the_campaign() -> None:
    assert {FaultPoint.HEALED, FaultPoint.ALERTED} == HEAL_POINTS


def test_killed_while_healing_the_run_is_recorded_by_the_next_cycle(fresh: ReconcileWorld) -> None:
    """A runbook that acted and was killed before its remediation was recorded: the host
    changed and the evidence never said so (the next cycle found the service running and
    nothing to heal). Now the next cycle records the run as failed, what it did unknown,
    and counts it against the runbook."""
    fresh.install("good")
    config = fresh.configure("good")
    assert fresh.systemctl("stop", "app.service").returncode == 0
    killed_at(fresh, FaultPoint.HEALED)
    assert fresh.systemctl("is-active", "app.service").stdout.strip() == "active", "the runbook acted"
    report = Reconciler(config).run()
    assert report.exit_code == 0, report.lines()
    rem = [s["predicate"] for s in statements(fresh) if str(s["predicateType"]).endswith("/remediation/v1")]
    assert [(r["runbook"], r["outcome"]) for r in rem] == [("RB-SERVICE-001", "failed")], rem
    assert "interrupted" in rem[0]["finding"] and "app.service" in rem[0]["finding"], rem[0]["finding"]
    assert fresh.verify() == len(statements(fresh))
    with State.open(fresh.host.state_dir) as state:
        assert state.value(HEAL_RUNNING) is None
        assert (
            state.successful_heals_since("service_health", "RB-SERVICE-001", datetime.min.replace(tzinfo=UTC))
            == 0
        )
    Reconciler(config).run()
    assert len([s for s in statements(fresh) if str(s["predicateType"]).endswith("/remediation/v1")]) == 1


@pytest.mark.parametrize("noted", [{"runbook": "RB-SERVICE-001"}, "garbage", [1, 2]])
def test_an_unreadable_note_of_a_run_under_way_is_dropped_not_a_crash(
    fresh: ReconcileWorld, noted: Any
) -> None:
    fresh.install("good")
    config = fresh.configure("good")
    with State.open(fresh.host.state_dir) as state:
        state.set_value(HEAL_RUNNING, noted)
    assert Reconciler(config).run().exit_code == 0
    with State.open(fresh.host.state_dir) as state:
        assert state.value(HEAL_RUNNING) is None


def test_killed_between_an_alert_and_its_cooldown_the_alert_is_recorded(fresh: ReconcileWorld) -> None:
    """An alert was sent and its cooldown written, then the reconciler was killed before
    the alert was recorded: the cooldown kept the next cycles from sending (and recording)
    it again, so the evidence never said a person had been alerted. Now the record comes
    first: killed between the two, the next cycle alerts and records once more."""
    fresh.install("good")
    checks = locked_audit_checks(fresh)
    config = fresh.configure("good", checks=checks)
    killed_at(fresh, FaultPoint.ALERTED)
    Reconciler(config).run()
    alerts = [
        a["name"]
        for s in statements(fresh)
        if s["predicate"].get("event") == "remediation.alert"
        for a in s["predicate"]["actions"]
    ]
    assert "alert:L1-AUDIT-003" in alerts, alerts
    assert fresh.verify() == len(statements(fresh))
