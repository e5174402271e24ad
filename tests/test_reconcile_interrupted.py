"""An interrupted test activation is never finished by switching (issue 12.2).

The defect: after a SIGKILL during ``nixos-rebuild test`` of a revision whose service fails,
the next cycle saw "active but not the boot default", re-ran ``test`` (which restarted
nothing, since ``/run/current-system`` already pointed at the new system), the old
generation's process still answered the health gate, and the boot default moved to the
broken system, signed "success".

Reproduced on the sandbox host with the real systemd user manager: the emulated
switch-to-configuration holds after the system link moved and before any unit restarted
(``NIXCOMPLY_SANDBOX_HOLD``), the whole reconciler process group is SIGKILLed there, and the
next cycle runs normally. Two fixes, each tested on its own: the next cycle re-activates the
boot default first (recorded ``reverted``, interrupted) and plans afresh; and the gate
fails a critical unit that does not run the tested generation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fixtures_reconcile import ReconcileWorld

from nixcomply.host.state import AttemptOutcome, State
from nixcomply.model.outcome import ApplyOutcome, PlanKind
from nixcomply.nixos import generations, system
from nixcomply.nixos.rebuild import ActivationResult, RebuildAction
from nixcomply.reconcile import gate
from nixcomply.reconcile.config import HealthGate
from nixcomply.reconcile.cycle import Reconciler

CHILD = "import sys; from nixcomply.cli import main; sys.exit(main(['reconcile', '--config', sys.argv[1]]))"


def generation_changes(world: ReconcileWorld) -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in (world.host.state_dir / "evidence").rglob("statement.json")]
    changes = [s["predicate"] for s in found if s["predicateType"].endswith("/generation-change/v1")]
    return sorted(changes, key=lambda p: p["chain"]["seq"])


def main_pid(world: ReconcileWorld, unit: str = "app.service") -> str:
    return world.systemctl("show", "-p", "MainPID", "--value", unit).stdout.strip()


def kill_mid_test(world: ReconcileWorld, target: str, tmp_path: Path) -> None:
    """Run a reconcile towards ``target`` in its own process group and SIGKILL the whole
    group while ``nixos-rebuild test`` holds right after moving the system link."""
    hold = tmp_path / "held"
    env = {**world.sandbox.extra_env, "NIXCOMPLY_SANDBOX_HOLD": str(hold)}
    world.configure(target, environment=env)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(world.host.config_path)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not hold.exists():
            assert child.poll() is None, f"the reconcile ended before the hold: {child.communicate()[1]!r}"
            assert time.monotonic() < deadline, "the activation never reached the hold"
            time.sleep(0.02)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stderr is not None
        child.stderr.close()


def test_a_killed_test_activation_of_a_broken_revision_is_undone_not_switched(
    fresh: ReconcileWorld, tmp_path: Path
) -> None:
    fresh.install("good")
    old_pid = main_pid(fresh)
    kill_mid_test(fresh, "broken", tmp_path)
    root = fresh.sandbox.root
    assert system.current_system(root) == fresh.systems["broken"], "the kill came after the link moved"
    assert generations.profile_target(root) == fresh.systems["good"]
    assert main_pid(fresh) == old_pid, "and before app.service was restarted: the old process still runs"

    report = Reconciler(fresh.configure("broken")).run()
    assert system.current_system(root) == fresh.systems["good"]
    assert generations.profile_target(root) == fresh.systems["good"], "the boot default never moved"
    assert report.result.outcome == ApplyOutcome.REVERTED, report.result.detail
    changes = generation_changes(fresh)
    assert not [c for c in changes if c["outcome"] == "success"], "a broken generation was signed success"
    interrupted, gated = changes
    assert interrupted["outcome"] == "reverted" and interrupted["actor"] == "nixcomply"
    result = interrupted["actions"][-1]["detail"]
    assert "(recovered)" in result and "interrupted during testing, before its health gate passed" in result
    assert "re-activated the boot default" in result
    assert gated["outcome"] == "reverted" and "health gate failed" in gated["actions"][-1]["detail"]
    attempts = [next(a["detail"] for a in c["actions"] if a["name"] == "attempt") for c in changes]
    assert attempts == [f"{fresh.revs['broken']}#1", f"{fresh.revs['broken']}#2"], "one record per activation"
    with State.open(fresh.host.state_dir) as state:
        attempt = state.attempt(fresh.revs["broken"])
        assert attempt is not None and attempt.outcome == AttemptOutcome.REVERTED and attempt.blocked
        assert state.in_progress() == []
    assert fresh.verify() >= 2
    again = Reconciler(fresh.configure("broken")).run()
    assert again.plan is not None and again.plan.kind == PlanKind.BLOCKED


def test_a_killed_test_activation_of_a_healthy_revision_is_undone_then_switched(
    fresh: ReconcileWorld, tmp_path: Path
) -> None:
    """The undo costs a restart, never the revision: interrupted is not blocked."""
    fresh.install("good")
    kill_mid_test(fresh, "newer", tmp_path)
    report = Reconciler(fresh.configure("newer")).run()
    assert report.result.outcome == ApplyOutcome.SUCCESS, report.result.detail
    root = fresh.sandbox.root
    assert system.current_system(root) == generations.profile_target(root) == fresh.systems["newer"]
    outcomes = [c["outcome"] for c in generation_changes(fresh)]
    assert outcomes == ["reverted", "success"]
    assert "/bin/sleep 1001" in fresh.systemctl("show", "-p", "ExecStart", "app.service").stdout


def _activation(tested: Path, previous: Path, began: datetime) -> gate.Activation:
    result = ActivationResult(RebuildAction.TEST, tested, 0, False, "", "", 0.1)
    return gate.Activation(result, tested, previous, began, gate.USER_UNITS)


def test_the_gate_fails_a_critical_unit_still_running_the_old_generation(fresh: ReconcileWorld) -> None:
    """What a re-run `test` leaves when the link had already moved: the unit file is the new
    one (after a daemon-reload), the process is the old one."""
    fresh.install("good")
    root = fresh.sandbox.root
    began = datetime.now(UTC)
    link = root.current_system
    tmp = link.with_name(".current-system.test")
    tmp.symlink_to(fresh.systems["newer"])
    tmp.replace(link)
    assert fresh.systemctl("daemon-reload").returncode == 0
    systemd = fresh.host.config.systemd.connector()
    assert systemd is not None
    config = HealthGate(critical_units=["app.service"], timeout=10, settle_seconds=0)

    result = gate.run_gate(
        config,
        activation=_activation(fresh.systems["newer"], fresh.systems["good"], began),
        failed_before=frozenset(),
        systemd=systemd,
    )
    assert not result.ok
    (unit,) = [c for c in result.checks if c.name == "unit:app.service"]
    assert not unit.ok
    assert unit.detail.startswith("active/running, but it does not run the tested generation"), unit.detail
    assert "its definition changed, but it was not (re)started by this activation" in unit.detail

    # the same unit restarted after the activation began runs the tested generation
    assert fresh.systemctl("restart", "app.service").returncode == 0
    result = gate.run_gate(
        config,
        activation=_activation(fresh.systems["newer"], fresh.systems["good"], began),
        failed_before=frozenset(),
        systemd=systemd,
    )
    (unit,) = [c for c in result.checks if c.name == "unit:app.service"]
    assert unit.ok and unit.detail == "active/running, runs the tested generation", unit.detail
    assert result.ok


def test_the_gate_fails_a_unit_whose_file_is_not_the_tested_systems(fresh: ReconcileWorld) -> None:
    """The unit file systemd loaded resolves into another system than the one tested (no
    daemon-reload after the link moved, or a unit from elsewhere)."""
    fresh.install("good")
    systemd = fresh.host.config.systemd.connector()
    assert systemd is not None
    result = gate.run_gate(
        HealthGate(critical_units=["app.service"], timeout=10, settle_seconds=0),
        activation=_activation(fresh.systems["newer"], fresh.systems["good"], datetime.now(UTC)),
        failed_before=frozenset(),
        systemd=systemd,
    )
    (unit,) = [c for c in result.checks if c.name == "unit:app.service"]
    assert not unit.ok and "is not the tested system's" in unit.detail, unit.detail
