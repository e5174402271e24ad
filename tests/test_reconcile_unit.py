"""Pure parts of the reconciler: classifying outside changes, and the gate's reading of exit 4."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from nixcomply.host.state import Observation
from nixcomply.nixos.rebuild import ActivationResult, RebuildAction
from nixcomply.reconcile.gate import _activation_check
from nixcomply.reconcile.model import ExternalKind, HostState, SystemInfo
from nixcomply.reconcile.observe import external_change

A, B, C = (f"/nix/store/{c * 32}-nixos-system-h" for c in "abc")
NOW = datetime(2026, 11, 23, tzinfo=UTC)


def host(current: str, booted: str, profile: str, generation: int) -> HostState:
    return HostState(
        observed_at=NOW,
        hostname="h",
        current=SystemInfo(store_path=current),
        booted=SystemInfo(store_path=booted),
        profile=SystemInfo(store_path=profile, generation=generation),
    )


def before(current: str, booted: str, generation: int) -> Observation:
    return Observation(current=current, booted=booted, profile_generation=generation, revision=None, at=NOW)


def test_nothing_changed() -> None:
    assert external_change(before(A, A, 1), host(A, A, A, 1)) is None
    assert external_change(None, host(A, A, A, 1)) is None


def test_manual_switch_rollback_activation_reboot() -> None:
    switch = external_change(before(A, A, 1), host(B, A, B, 2))
    assert switch is not None
    assert switch.kinds == [ExternalKind.SWITCH]
    rollback = external_change(before(B, A, 2), host(A, A, A, 1))
    assert rollback is not None
    assert rollback.kinds == [ExternalKind.ROLLBACK]
    assert "rolled back to generation 1" in rollback.description
    activation = external_change(before(A, A, 1), host(C, A, A, 1))
    assert activation is not None
    assert activation.kinds == [ExternalKind.ACTIVATION]
    reboot = external_change(before(B, A, 2), host(B, B, B, 2))
    assert reboot is not None
    assert reboot.kinds == [ExternalKind.REBOOT]


def test_own_interrupted_work_is_not_external() -> None:
    assert external_change(before(A, A, 1), host(B, A, A, 1), explained_paths=frozenset({B})) is None
    assert external_change(before(A, A, 1), host(B, A, B, 2), explained_paths=frozenset({B})) is None
    # but a reboot is never ours
    reboot = external_change(before(A, A, 1), host(B, B, B, 2), explained_paths=frozenset({B}))
    assert reboot is not None
    assert ExternalKind.REBOOT in reboot.kinds


def activation(units_failed: bool) -> ActivationResult:
    return ActivationResult(RebuildAction.TEST, Path(B), 4 if units_failed else 0, units_failed, "", "", 1.0)


def test_exit_4_fails_the_gate_unless_only_old_failures_remain() -> None:
    assert _activation_check(activation(False), frozenset(), frozenset()).ok
    assert not _activation_check(activation(True), frozenset(), frozenset({"app.service"})).ok
    assert not _activation_check(activation(True), None, None).ok
    old = _activation_check(activation(True), frozenset({"old.service"}), frozenset({"old.service"}))
    assert old.ok
    assert "already failed before" in old.detail
