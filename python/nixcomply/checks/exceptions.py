"""exceptions: approved exceptions and attestations that expired or expire soon.

Expiry cannot be checked when NixOS evaluates a configuration (evaluation is pure), so the
manifest records each exception with its date and this check judges it at runtime:

* expired (the expiry day has passed): drift, severity high, no runbook: a human must renew
  the exception (with a new approval) or remove it so the control is enforced again;
* expiring within ``parameters.exception_warn_days``: drift, severity low, no runbook;
* otherwise pass.

One finding per exception (``subject`` ``exception:<control id>``) and per attestation
(``attestation:<id>``), tied to the excepted control and to the controls that ask for this
check. No exception and no attestation: a single pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any, Final

from nixcomply.checks.base import CheckSpec, Controls, Verdict, make_finding, targets
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.model.manifest import ManifestControl

NAME: Final = "exceptions"
SPEC: Final = CheckSpec(name=NAME, severity="high", runbook=None, expect_keys=frozenset())


def judge_expiry(kind: str, ident: str, expires: date, today: date, warn_days: int) -> Verdict:
    left = (expires - today).days
    observed: dict[str, Any] = {"expires": expires.isoformat(), "days_left": left}
    expected = {"expires_after": today.isoformat(), "warn_days": warn_days}
    subject = f"{kind}:{ident}"
    if left < 0:
        message = f"{kind} for {ident} expired on {expires.isoformat()} ({-left} d ago): renew it with a new approval or remove it"
        return Verdict("drift", message, observed, expected, severity="high", runbook=None, subject=subject)
    if left <= warn_days:
        message = f"{kind} for {ident} expires on {expires.isoformat()} (in {left} d)"
        return Verdict("drift", message, observed, expected, severity="low", runbook=None, subject=subject)
    return Verdict(
        "pass", f"{kind} for {ident} valid until {expires.isoformat()}", observed, expected, subject=subject
    )


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    findings, todo = targets(ctx, SPEC, controls)
    if not todo:
        return findings
    own: list[tuple[str, ManifestControl]] = [item for target in todo for item in target.controls]
    today = ctx.now.date()
    warn = ctx.parameters.exception_warn_days
    manifest_controls = ctx.manifest.controls if ctx.manifest else {}

    def tied(ids: Sequence[str]) -> list[tuple[str, ManifestControl]]:
        extra = [(cid, manifest_controls[cid]) for cid in ids if cid in manifest_controls]
        return sorted(dict([*own, *extra]).items())

    exceptions = ctx.manifest.exceptions if ctx.manifest else {}
    for cid in sorted(exceptions):
        exception = exceptions[cid]
        verdict = judge_expiry("exception", cid, exception.expires, today, warn)
        observed = {**verdict.observed, "ticket": exception.ticket, "approved_by": exception.approved_by}
        findings.append(make_finding(SPEC, tied([cid]), replace(verdict, observed=observed)))
    for attestation in sorted(ctx.attestations, key=lambda a: a.id):
        verdict = judge_expiry("attestation", attestation.id, attestation.expires, today, warn)
        observed = {**verdict.observed, "title": attestation.title}
        findings.append(
            make_finding(SPEC, tied(attestation.control_ids), replace(verdict, observed=observed))
        )
    if not exceptions and not ctx.attestations:
        findings.append(make_finding(SPEC, own, Verdict("pass", "no exceptions or attestations to expire")))
    return findings
