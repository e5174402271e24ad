"""The runtime part of a cycle: the drift checks on the running host, after the generation step.

The checks see the reconciler's view of the generation (running vs approved revision, since
when) and the firewall ruleset hash recorded when the running generation was activated, so a
rule loaded by hand shows up as drift. Restart counts are remembered between cycles so a unit
that keeps dying is noticed even when it is up at the moment of looking.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from nixcomply.checks import firewall
from nixcomply.checks.context import CheckContext, GenerationStatus, SystemdLike
from nixcomply.checks.finding import Finding
from nixcomply.checks.registry import run_checks
from nixcomply.errors import HostIOError, NixcomplyError
from nixcomply.host.state import State
from nixcomply.host.systemd import SystemdFactory
from nixcomply.reconcile.config import ReconcilerConfig
from nixcomply.reconcile.model import Desired, FindingSummary, HostState

logger = logging.getLogger(__name__)

RESTARTS_KEY = "restarts"


def _ruleset_key(store_path: str) -> str:
    return f"ruleset:{store_path}"


def generation_status(host: HostState, desired: Desired | None, state: State) -> GenerationStatus:
    current = host.current.store_path if host.current else None
    since = next((g.date for g in host.generations if current is not None and g.store_path == current), None)
    ruleset = state.value(_ruleset_key(current)) if current else None
    return GenerationStatus(
        running_revision=host.running_revision,
        approved_revision=(desired.approved_revision or desired.revision) if desired else None,
        running_since=since,
        approved_since=desired.last_modified if desired else None,
        current_system=Path(current) if current else None,
        booted_system=Path(host.booted.store_path) if host.booted else None,
        generation_number=host.profile.generation if host.profile else None,
        firewall_ruleset_hash=ruleset if isinstance(ruleset, str) else None,
    )


def context(
    config: ReconcilerConfig,
    host: HostState,
    desired: Desired | None,
    state: State,
    *,
    systemd: SystemdFactory[SystemdLike] | None,
    now: datetime,
) -> CheckContext:
    restarts = state.value(RESTARTS_KEY)
    return CheckContext.for_host(
        config.root,
        config=config.checks,
        systemd_factory=systemd,
        generation=generation_status(host, desired, state),
        previous_restarts=restarts if isinstance(restarts, dict) else {},
        now=now,
        memo=state,
    )


def record_ruleset(ctx: CheckContext, host: HostState, state: State, *, force: bool = False) -> None:
    """Remember the firewall ruleset the running generation installed (right after it was
    activated, or the first time nixcomply sees it) for the firewall check to compare."""
    if host.current is None or "firewall" in ctx.config.skip:
        return
    key = _ruleset_key(host.current.store_path)
    if not force and state.value(key) is not None:
        return
    try:
        ruleset, _ = firewall.observe_ruleset(ctx)
    except (NixcomplyError, ValueError, OSError) as e:
        logger.warning("cannot record the firewall ruleset of %s: %s", host.current.store_path, e)
        return
    state.set_value(key, ruleset.ruleset_hash)


def check(ctx: CheckContext, state: State, names: Sequence[str] | None = None) -> list[Finding]:
    findings = run_checks(ctx, names)
    restarts: dict[str, Any] = dict(ctx.previous_restarts)
    for f in findings:
        n = f.observed.get("n_restarts")
        if f.check == "service_health" and f.subject and isinstance(n, int):
            restarts[f.subject] = n
    try:
        state.set_value(RESTARTS_KEY, restarts)
    except HostIOError as e:  # a full disk: the findings still go to the heals (one may free it)
        logger.warning("not remembering the services' restart counts: %s", e)
    return findings


def summary(f: Finding, decision: str | None = None) -> FindingSummary:
    return FindingSummary(
        check=f.check,
        control_ids=list(f.control_ids),
        severity=f.severity,
        status=f.status,
        drifted=f.drifted,
        message=f.message,
        decision=decision,
        reboot_needed=f.reboot_needed,
    )
