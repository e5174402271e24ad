"""Decide: in sync, generation drift, refused, or blocked.

The decision is cheap when nothing changed: the locked revision of the target flake is
compared with the running ``configurationRevision`` and with the toplevel recorded for that
revision, so a no-op cycle runs ``nix flake metadata`` and never ``nix build``. Only drift
builds, once, and the store path it yields is the one that is tested and switched.

Unsafe moves are refused, not made: a dirty tree, a revision other than the approved one,
a target that is not a descendant of the running revision (when the flake's git history is
at hand), and a revision that already failed its health gate (until it changes or an
operator runs ``nixcomply reset``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nixcomply.errors import CommandError
from nixcomply.host.state import State
from nixcomply.model.outcome import PlanKind
from nixcomply.nixos import build, git
from nixcomply.nixos.flake import FlakeMetadata, FlakeRef, flake_metadata
from nixcomply.nixos.tools import Tools
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.model import Desired, HostState, Plan

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockedTarget:
    """The desired state together with the metadata it came from (for building it)."""

    desired: Desired
    metadata: FlakeMetadata
    ref: FlakeRef


def desired_state(config: ReconcilerConfig, *, tools: Tools, refresh: bool = True) -> LockedTarget:
    ref = FlakeRef.parse(config.flake)
    md = flake_metadata(ref, refresh=refresh, tools=tools)
    desired = Desired(
        flake=config.flake,
        host=config.host,
        locked_url=md.locked_url,
        revision=md.revision,
        nar_hash=md.nar_hash,
        last_modified=md.last_modified,
        dirty=md.dirty,
        approved_revision=config.approved_revision,
    )
    return LockedTarget(desired=desired, metadata=md, ref=ref)


def _short(rev: str | None) -> str:
    return rev[:12] if rev else "unknown"


def decide(
    host: HostState,
    target: LockedTarget,
    state: State,
    config: ReconcilerConfig,
    *,
    tools: Tools,
    build_target: bool = True,
) -> Plan:
    """The plan for this cycle. ``build_target=False`` stops short of building on drift."""
    desired = target.desired
    current_rev = host.running_revision
    current_path = host.current.store_path if host.current else None

    def plan(kind: PlanKind, reason: str, **extra: object) -> Plan:
        return Plan.model_validate(
            {
                "kind": kind,
                "reason": reason,
                "current_revision": current_rev,
                "target_revision": desired.revision,
                "current_path": current_path,
                **extra,
            }
        )

    if desired.dirty or desired.revision is None:
        return plan(
            PlanKind.REFUSED,
            f"the flake {desired.flake} has uncommitted changes (no locked revision): only committed, "
            "reviewed revisions are applied",
        )
    if desired.approved_revision is not None and desired.revision != desired.approved_revision:
        return plan(
            PlanKind.REFUSED,
            f"revision {_short(desired.revision)} is not the approved revision {_short(desired.approved_revision)}",
        )

    recorded = state.toplevel_for(desired.revision)
    if (
        current_rev == desired.revision
        and not host.activation_pending
        and current_path is not None
        and recorded in (None, current_path)
    ):
        if recorded is None:
            state.remember_toplevel(desired.revision, current_path)
        return plan(PlanKind.IN_SYNC, f"running revision {_short(current_rev)}, the target; nothing to do")

    attempt = state.attempt(desired.revision)
    if attempt is not None and attempt.blocked:
        return plan(
            PlanKind.BLOCKED,
            f"revision {_short(desired.revision)} was {attempt.outcome} on {attempt.updated_at:%Y-%m-%d %H:%M} UTC "
            f"({attempt.detail or 'no detail'}); it is not retried until the flake moves to another "
            "revision or an operator runs `nixcomply reset`",
        )

    if current_rev is not None and current_rev != desired.revision:
        history = git.history_dir(target.ref)
        if history is not None:
            ancestor = git.is_ancestor(history, current_rev, desired.revision, tools=tools)
            if ancestor is False:
                return plan(
                    PlanKind.REFUSED,
                    f"target {_short(desired.revision)} is not a descendant of the running revision "
                    f"{_short(current_rev)}: refusing to move the host backwards or sideways",
                )
            if ancestor is None:
                logger.info(
                    "cannot tell whether %s descends from %s; going ahead", desired.revision, current_rev
                )

    if host.activation_pending and current_rev == desired.revision:
        reason = (
            f"revision {_short(desired.revision)} is active but not the boot default (an interrupted or manual "
            "test activation): test, gate and switch it"
        )
    else:
        reason = f"generation drift: running {_short(current_rev)}, target {_short(desired.revision)}"
    if not build_target:
        return plan(PlanKind.DRIFT, reason)

    target_path = build.build_toplevel(
        target.metadata.locked_ref, config.host, tools=tools, timeout=config.build_timeout
    )
    state.remember_toplevel(desired.revision, str(target_path))
    diff = None
    if current_path is not None and str(target_path) != current_path:
        try:
            diff = build.diff_closures(Path(current_path), target_path, tools=tools)
        except CommandError as e:
            diff = f"(closure difference unavailable: {e})"
    return plan(PlanKind.DRIFT, reason, target_path=str(target_path), closure_diff=diff, built=True)
