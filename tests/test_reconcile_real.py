"""The reconciler end to end on the sandbox host: real nix builds and profiles, a real systemd
user manager running the generation's units, signed evidence verified afterwards."""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures_reconcile import ReconcileWorld

from conftest import Cli
from nixcomply.host.state import State, read_evidence_head
from nixcomply.model.outcome import ApplyOutcome, PlanKind
from nixcomply.nixos import generations, system
from nixcomply.nixos.rebuild import RebuildAction, nixos_rebuild
from nixcomply.reconcile.cycle import Reconciler
from nixcomply.reconcile.model import ExternalKind


def running(world: ReconcileWorld) -> tuple[Path | None, Path | None]:
    root = world.sandbox.root
    return system.current_system(root), generations.profile_target(root)


def statements(world: ReconcileWorld) -> list[dict[str, Any]]:
    """Every statement in the evidence store, oldest first."""
    found = [json.loads(p.read_text()) for p in (world.host.state_dir / "evidence").rglob("statement.json")]
    return sorted(found, key=lambda s: s["predicate"]["chain"]["seq"])


def entries(world: ReconcileWorld) -> list[dict[str, Any]]:
    """The generation-change predicates (switches, reverts, outside changes), oldest first."""
    return [s["predicate"] for s in statements(world) if s["predicateType"].endswith("/generation-change/v1")]


def verified(world: ReconcileWorld) -> int:
    """Verify the whole store; every statement on disk is an entry of the verified log."""
    n = world.verify()
    assert n == len(statements(world))
    return n


def nix_logger(world: ReconcileWorld, tmp_path: Path) -> tuple[str, Path]:
    """A `nix` that logs its arguments, then runs the real one."""
    log = tmp_path / "nix-calls.log"
    wrapper = tmp_path / "nix"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec nix "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper), log


def test_noop_cycle_decides_in_sync_without_building(fresh: ReconcileWorld, tmp_path: Path) -> None:
    fresh.install("good")
    nix, log = nix_logger(fresh, tmp_path)
    for _ in range(2):
        report = fresh.reconcile(
            "good",
            executables={
                "nix": nix,
                "nixos_rebuild": str(fresh.sandbox.bin_dir / "nixos-rebuild"),
                "systemd_run": None,
            },
        )
        assert report.plan is not None
        assert report.plan.kind == PlanKind.IN_SYNC, report.plan.reason
        assert report.result.outcome == ApplyOutcome.NOTHING
        assert entries(fresh) == []
    calls = log.read_text().splitlines()
    assert any(c.startswith("flake metadata") for c in calls), calls
    assert not any(c.startswith("build") for c in calls), f"a no-op cycle must not build: {calls}"


def test_drift_is_tested_gated_switched_and_signed(fresh: ReconcileWorld) -> None:
    fresh.install("good")
    pid_before = fresh.systemctl("show", "-p", "MainPID", "--value", "app.service").stdout.strip()
    report = fresh.reconcile("newer")
    assert report.plan is not None
    assert report.plan.kind == PlanKind.DRIFT
    assert report.plan.target_path == str(fresh.systems["newer"])
    assert report.result.outcome == ApplyOutcome.SUCCESS, report.result.detail
    assert report.result.gate is not None
    assert {c.name for c in report.result.gate.checks} >= {
        "activation",
        "unit:app.service",
        "new-failed-units",
    }
    assert running(fresh) == (fresh.systems["newer"], fresh.systems["newer"])
    assert report.result.generation_after == 2
    pid_after = fresh.systemctl("show", "-p", "MainPID", "--value", "app.service").stdout.strip()
    assert pid_after not in {"0", pid_before}, "the new generation's unit really runs"

    (predicate,) = entries(fresh)
    assert predicate["outcome"] == "success"
    assert predicate["actor"] == "nixcomply"
    assert predicate["generation"]["store_path"] == str(fresh.systems["newer"])
    assert predicate["generation"]["previous"]["number"] == 1
    assert predicate["generation"]["configuration_revision"] == fresh.revs["newer"]
    assert [c["name"] for c in predicate["health_gate"]][:1] == ["activation"]
    assert predicate["policy_digest"].startswith("sha256:")
    verified(fresh)

    again = fresh.reconcile("newer")
    assert again.plan is not None
    assert again.plan.kind == PlanKind.IN_SYNC
    assert len(entries(fresh)) == 1, "an in-sync cycle records no generation change"
    verified(fresh)


def test_failed_health_gate_reverts_and_blocks_until_reset(fresh: ReconcileWorld, cli: Cli) -> None:
    fresh.install("newer")
    report = fresh.reconcile("broken")
    assert report.result.outcome == ApplyOutcome.REVERTED, report.result.detail
    assert "health gate failed" in report.result.detail
    assert report.result.gate is not None
    failed = [c.name for c in report.result.gate.checks if not c.ok]
    assert "unit:app.service" in failed
    # the boot default never moved, and the last good generation runs again
    assert running(fresh) == (fresh.systems["newer"], fresh.systems["newer"])
    assert fresh.systemctl("is-active", "app.service").stdout.strip() == "active"
    (predicate,) = entries(fresh)
    assert predicate["outcome"] == "reverted"
    verified(fresh)

    blocked = fresh.reconcile("broken")
    assert blocked.plan is not None
    assert blocked.plan.kind == PlanKind.BLOCKED
    assert "nixcomply reset" in blocked.plan.reason
    assert blocked.result.outcome == ApplyOutcome.NOTHING
    assert len(entries(fresh)) == 1, "a blocked revision is not activated again"
    verified(fresh)

    r = cli("reset", "--config", fresh.host.config_path)
    assert r.code == 0, r.err
    assert "cleared 1 blocked attempt" in r.err
    retried = fresh.reconcile("broken")
    assert retried.result.outcome == ApplyOutcome.REVERTED
    with State.open(fresh.host.state_dir) as state:
        attempt = state.attempt(fresh.revs["broken"])
        assert attempt is not None
        assert attempt.count == 1  # reset removed the first attempt
    assert [p["outcome"] for p in entries(fresh)] == ["reverted", "reverted"]
    verified(fresh)


def test_failing_liveness_command_reverts(fresh: ReconcileWorld) -> None:
    fresh.install("good")
    liveness = [{"name": "portal", "argv": ["sh", "-c", "echo portal down >&2; exit 7"], "timeout": 5}]
    report = fresh.reconcile(
        "newer",
        health_gate={
            "critical_units": ["app.service"],
            "liveness": liveness,
            "timeout": 30,
            "settle_seconds": 0,
        },
    )
    assert report.result.outcome == ApplyOutcome.REVERTED
    assert report.result.gate is not None
    (check,) = [c for c in report.result.gate.checks if c.name == "liveness:portal"]
    assert not check.ok
    assert "exited with status 7" in check.detail
    assert running(fresh) == (fresh.systems["good"], fresh.systems["good"])


def test_unsafe_targets_are_refused_without_building(fresh: ReconcileWorld, tmp_path: Path) -> None:
    fresh.install("newer")
    nix, log = nix_logger(fresh, tmp_path)
    executables = {
        "nix": nix,
        "nixos_rebuild": str(fresh.sandbox.bin_dir / "nixos-rebuild"),
        "systemd_run": None,
    }

    side = fresh.reconcile("side", executables=executables)
    assert side.plan is not None
    assert side.plan.kind == PlanKind.REFUSED
    assert "not a descendant" in side.plan.reason

    pinned = fresh.reconcile("newer", executables=executables, approved_revision=fresh.revs["good"])
    assert pinned.plan is not None
    assert pinned.plan.kind == PlanKind.REFUSED
    assert f"is not the approved revision {fresh.revs['good'][:12]}" in pinned.plan.reason

    fresh.sandbox.make_dirty()
    try:
        dirty = fresh.reconcile(str(fresh.sandbox.flake_ref), executables=executables)
    finally:
        fresh.sandbox.discard_changes()
    assert dirty.plan is not None
    assert dirty.plan.kind == PlanKind.REFUSED
    assert "uncommitted changes" in dirty.plan.reason
    assert not any(c.startswith("build") for c in log.read_text().splitlines())
    assert running(fresh) == (fresh.systems["newer"], fresh.systems["newer"])
    assert entries(fresh) == []


def test_change_made_by_hand_is_recorded_then_judged(fresh: ReconcileWorld) -> None:
    fresh.install("good")
    assert fresh.reconcile("newer").result.outcome == ApplyOutcome.SUCCESS
    # someone switches back by hand, outside nixcomply
    nixos_rebuild(RebuildAction.SWITCH, fresh.systems["good"], tools=fresh.sandbox.tools)
    report = fresh.reconcile("newer")
    assert report.external is not None
    assert report.external.kinds == [ExternalKind.SWITCH]
    assert "not by nixcomply" in report.external.description
    assert report.result.outcome == ApplyOutcome.SUCCESS  # judged as drift and corrected
    assert running(fresh) == (fresh.systems["newer"], fresh.systems["newer"])
    preds = entries(fresh)
    assert [p["actor"] for p in preds] == ["nixcomply", "external", "nixcomply"]
    assert preds[1]["outcome"] == "alert"
    verified(fresh)


def test_dry_run_builds_but_activates_nothing(fresh: ReconcileWorld) -> None:
    fresh.install("good")
    report = fresh.reconcile("newer", dry_run=True)
    assert report.result.outcome == ApplyOutcome.DRY_RUN
    assert report.plan is not None
    assert report.plan.target_path == str(fresh.systems["newer"])
    assert running(fresh) == (fresh.systems["good"], fresh.systems["good"])
    assert not (fresh.host.state_dir / "evidence").exists() or entries(fresh) == []


def test_outside_the_maintenance_window_is_deferred(fresh: ReconcileWorld) -> None:

    fresh.install("good")
    soon = datetime.now().astimezone() + timedelta(hours=2)
    later = soon + timedelta(hours=1)
    window = {"start": soon.strftime("%H:%M"), "end": later.strftime("%H:%M")}
    report = fresh.reconcile("newer", maintenance_window=window)
    assert report.result.outcome == ApplyOutcome.DEFERRED
    assert "maintenance window" in report.result.detail
    assert running(fresh) == (fresh.systems["good"], fresh.systems["good"])


def test_cli_plan_status_and_reconcile(fresh: ReconcileWorld, cli: Cli) -> None:
    fresh.install("good")
    fresh.configure("newer")
    config = fresh.host.config_path
    r = cli("plan", "--config", config, "--json")
    assert r.code == 1, r.err
    plan = json.loads(r.out)
    assert plan["plan"]["kind"] == "drift"
    assert plan["plan"]["target_path"] == str(fresh.systems["newer"])
    assert plan["host"]["current"]["configuration_revision"] == fresh.revs["good"]

    r = cli("reconcile", "--config", config)
    assert r.code == 0, r.err
    assert "outcome: success" in r.out
    assert "gate ok   unit:app.service" in r.out

    r = cli("apply", "--config", config, "--json")
    assert r.code == 0
    assert json.loads(r.out)["plan"]["kind"] == "in-sync"

    r = cli("status", "--config", config)
    assert r.code == 0, r.err
    assert f"revision {fresh.revs['newer'][:12]}" in r.out
    assert "last run" in r.out
    # plan --json recorded nothing; reconcile: a switch and a check-run; apply: a check-run
    assert "evidence   last entry 2, checkpoint size 3" in r.out
    pin = fresh.host.state_dir / "log/checkpoints/000000000003"
    assert f"pin next time: {pin}" in r.out
    status = json.loads(cli("status", "--config", config, "--json").out)
    assert status["evidence_seq"] == 2
    assert status["pin_checkpoint"] == str(pin)
    # The state database keeps the head of the log the reconciler appended to (9.3).

    head = read_evidence_head(fresh.host.state_dir)
    assert head is not None
    assert head.size == 3
    assert status["last_outcome"] == "nothing"


def test_bad_config_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "reconciler.json"
    bad.write_text(
        json.dumps(
            {"flake": "not a flake ref at all", "host": "h", "health_gate": {"critical_units": ["sshd"]}}
        )
    )
    r = cli("plan", "--config", bad)
    assert r.code == 2
    assert "Traceback" not in r.err
    assert "flake" in r.err
    assert "health_gate.critical_units" in r.err
    r = cli("reconcile", "--config", tmp_path / "missing.json")
    assert r.code == 2
    assert "missing.json: no such file" in r.err


@pytest.mark.parametrize(
    ("unit", "why"),
    [
        ("app@.service", "a template (no instance after '@') cannot be started"),
        ("a" * 250 + ".service", "longer than 255 characters"),
        ("sshd.service\n", "contains whitespace or control characters"),
    ],
)
def test_a_critical_unit_systemd_would_refuse_is_refused_when_the_config_loads(
    cli: Cli, tmp_path: Path, unit: str, why: str
) -> None:
    """The reconciler's configuration had a grammar of its own: it took templates, names
    longer than systemd's 255 and a trailing newline, which the health gate's systemd calls
    then refused in the middle of an activation."""
    bad = tmp_path / "reconciler.json"
    bad.write_text(
        json.dumps(
            {"flake": "git+file:///f", "host": "h", "health_gate": {"critical_units": ["sshd.service", unit]}}
        )
    )
    r = cli("plan", "--config", bad)
    assert r.code == 2, r.err
    assert "Traceback" not in r.err
    assert "health_gate.critical_units" in r.err and why in r.err, r.err


def test_missing_evidence_key_stops_before_anything_changes(fresh: ReconcileWorld, cli: Cli) -> None:
    fresh.install("good")
    config = json.loads(fresh.host.config_path.read_text())
    config["evidence"]["signing_key"] = str(fresh.host.dir / "keys" / "nope.key")
    config["flake"] = str(fresh.sandbox.flake_ref_at(fresh.revs["newer"]))
    path = fresh.host.dir / "bad-key.json"
    path.write_text(json.dumps(config))
    os.chmod(path, 0o600)
    r = cli("reconcile", "--config", path)
    assert r.code == 2, r.err
    assert "nope.key" in r.err
    assert running(fresh) == (fresh.systems["good"], fresh.systems["good"])
    assert Reconciler(fresh.host.config).plan(build=False).plan.kind == PlanKind.DRIFT
