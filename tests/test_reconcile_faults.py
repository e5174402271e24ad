"""Fault injection: the reconciler is SIGKILLed after each step of an apply; the next run
converges (the host runs and boots the target), the evidence verifies, and exactly one
signed record of the switch exists: nothing lost, nothing recorded twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest
from fixtures_reconcile import ReconcileWorld

from nixcomply.host.state import State
from nixcomply.model.outcome import PlanKind
from nixcomply.nixos import generations, system
from nixcomply.reconcile.cycle import Reconciler

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from nixcomply.core import faults
    from nixcomply.cli import main

    def die(name):
        if name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)

    faults.HOOK = die
    sys.exit(main(["reconcile", "--config", sys.argv[2]]))
    """
)


def predicates(world: ReconcileWorld) -> list[dict[str, object]]:
    """The generation-change predicates, oldest first (check-run entries are left out)."""
    found = [json.loads(p.read_text()) for p in (world.host.state_dir / "evidence").rglob("statement.json")]
    changes = [s["predicate"] for s in found if s["predicateType"].endswith("/generation-change/v1")]
    return sorted(changes, key=lambda p: p["chain"]["seq"])


@pytest.mark.parametrize("step", ["built", "tested", "gating", "gated", "switched", "recorded"])
def test_killed_after_each_step_converges_with_evidence_intact(fresh: ReconcileWorld, step: str) -> None:
    fresh.install("good")
    config = fresh.configure("newer")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(fresh.host.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, f"the child should die at {step}: {child.stderr}"
    root = fresh.sandbox.root
    # whatever the step, the boot default is the old generation until the switch
    if step in {"built", "tested", "gating", "gated"}:
        assert generations.profile_target(root) == fresh.systems["good"]

    report = Reconciler(config).run()
    assert report.external is None, report.external
    assert system.current_system(root) == fresh.systems["newer"]
    assert generations.profile_target(root) == fresh.systems["newer"]
    assert fresh.verify() >= 1

    switches = [p for p in predicates(fresh) if p["outcome"] == "success"]
    assert len(switches) == 1, f"exactly one record of the switch after a kill at {step}: {switches}"
    assert switches[0]["generation"]["store_path"] == str(fresh.systems["newer"])  # type: ignore[index]
    with State.open(fresh.host.state_dir) as state:
        assert state.in_progress() == []
        attempt = state.attempt(fresh.revs["newer"])
        assert attempt is not None
        assert attempt.outcome == "success"

    settled = Reconciler(config).run()
    assert settled.plan is not None
    assert settled.plan.kind == PlanKind.IN_SYNC
    assert len(predicates(fresh)) == len(switches)


@pytest.mark.parametrize("step", ["tested", "gated", "reverted", "recorded"])
def test_killed_around_a_revert_still_ends_reverted_and_recorded_once(
    fresh: ReconcileWorld, step: str
) -> None:
    fresh.install("newer")
    config = fresh.configure("broken")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(fresh.host.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    root = fresh.sandbox.root
    assert generations.profile_target(root) == fresh.systems["newer"], "the boot default never moves"

    report = Reconciler(config).run()
    assert report.external is None
    assert system.current_system(root) == fresh.systems["newer"]
    assert generations.profile_target(root) == fresh.systems["newer"]
    reverts = [p for p in predicates(fresh) if p["outcome"] == "reverted"]
    assert len(reverts) == 1, f"exactly one record of the revert after a kill at {step}"
    assert fresh.verify() >= len(predicates(fresh))
    with State.open(fresh.host.state_dir) as state:
        attempt = state.attempt(fresh.revs["broken"])
        assert attempt is not None
        assert attempt.blocked
    assert Reconciler(config).run().plan.kind == PlanKind.BLOCKED  # type: ignore[union-attr]
