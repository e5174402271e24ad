"""generation: the host runs the approved revision of the fleet flake.

The reconciler knows the approved (locked) revision and when it first saw the host differ;
it passes that as ``ctx.generation`` (:class:`~nixcomply.checks.context.GenerationStatus`).
Without it the running system is still read from ``<root>/run/current-system`` (its
``configurationRevision`` from ``nixos-version --json``), but with nothing to compare the
finding is ``skipped``.

* no ``configurationRevision``: drift (built from a dirty tree or outside the flake);
* running != approved for longer than ``parameters.generation_max_drift_hours`` (counted
  from ``approved_since``; immediately when that is unknown): drift, RB-DRIFT-001;
* booted != current system is reported (a reboot is pending), not judged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Outputs, Verdict, age_text, per_control
from nixcomply.checks.context import BOOTED_SYSTEM, CURRENT_SYSTEM, CheckContext, GenerationStatus
from nixcomply.checks.finding import Finding
from nixcomply.checks.patch_age import read_nixos_version

NAME: Final = "generation"
SPEC: Final = CheckSpec(name=NAME, severity="high", runbook="RB-DRIFT-001", expect_keys=frozenset())


def _link(path: Path) -> Path | None:
    return Path(os.path.realpath(path)) if path.is_symlink() else None


def observe(ctx: CheckContext) -> tuple[GenerationStatus, Outputs]:
    if ctx.generation is not None:
        return ctx.generation, {}
    current = _link(ctx.host_path(CURRENT_SYSTEM))
    if current is None:
        raise ValueError(f"{CURRENT_SYSTEM} does not exist under {ctx.root}: not a NixOS system")
    version, outputs = read_nixos_version(ctx)
    status = GenerationStatus(
        running_revision=version.configuration_revision,
        approved_revision=None,
        current_system=current,
        booted_system=_link(ctx.host_path(BOOTED_SYSTEM)),
    )
    return status, outputs


def judge(gen: GenerationStatus, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    limit_h = ctx.parameters.generation_max_drift_hours
    reboot = (
        gen.booted_system is not None
        and gen.current_system is not None
        and gen.booted_system != gen.current_system
    )
    observed: dict[str, Any] = {
        "running_revision": gen.running_revision,
        "approved_revision": gen.approved_revision,
        "generation": gen.generation_number,
        "current_system": str(gen.current_system) if gen.current_system else None,
        "booted_system": str(gen.booted_system) if gen.booted_system else None,
        "reboot_pending": reboot,
        "running_since": gen.running_since.isoformat() if gen.running_since else None,
    }
    expected = {"revision": gen.approved_revision, "max_drift_hours": limit_h}
    note = " (reboot pending: booted system differs)" if reboot else ""
    if gen.running_revision is None:
        message = (
            "the running system has no configurationRevision (dirty tree or not built from the fleet flake)"
        )
        return Verdict("drift", message + note, observed, expected)
    if gen.approved_revision is None:
        return Verdict(
            "skipped",
            f"running {gen.running_revision[:12]}; no approved revision known (the reconciler supplies it){note}",
            observed,
            expected,
        )
    if gen.running_revision == gen.approved_revision:
        return Verdict(
            "pass", f"running the approved revision {gen.approved_revision[:12]}{note}", observed, expected
        )
    pending = (ctx.now - gen.approved_since).total_seconds() if gen.approved_since else None
    observed["drift_seconds"] = pending
    if pending is not None and pending <= limit_h * 3600:
        message = f"approved revision {gen.approved_revision[:12]} not applied yet ({age_text(pending)}, allowed {limit_h} h){note}"
        return Verdict("pass", message, observed, expected)
    how_long = f" for {age_text(pending)}" if pending is not None else ""
    message = f"running {gen.running_revision[:12]}, approved {gen.approved_revision[:12]}{how_long}{note}"
    return Verdict("drift", message, observed, expected)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    return per_control(ctx, controls, SPEC, observe, judge)
