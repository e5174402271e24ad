"""config_value: the running generation's manifest carries the control's NixOS settings.

Configuration evidence only: some controls (a password policy in PAM, a TLS option of a
service) have no cheap runtime observation. This check shows that the running system was
built with the control enforced and its settings in place, which NixOS keeps true until
the next switch; it does not observe the running process. Messages say so.
"""

from __future__ import annotations

from typing import Final

from nixcomply.checks.base import CheckSpec, Controls, Verdict, make_finding, targets
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding

NAME: Final = "config_value"
SPEC: Final = CheckSpec(
    name=NAME, severity="low", runbook="RB-DRIFT-001", expect_keys=frozenset(), needs_control=True
)


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    findings, todo = targets(ctx, SPEC, controls)
    for target in todo:
        for cid, control in target.controls:
            running = ctx.manifest.controls.get(cid) if ctx.manifest else None
            baseline = (
                f"{ctx.manifest.baseline.id} v{ctx.manifest.baseline.version}" if ctx.manifest else "none"
            )
            observed = {
                "status": running.status if running else None,
                "settings": dict(running.settings) if running else {},
                "baseline": baseline,
            }
            expected = {"status": "enforced", "settings": dict(control.settings)}
            if running is None or running.status != "enforced":
                verdict = Verdict(
                    "drift", f"{cid} is not enforced in the running generation", observed, expected
                )
            elif not control.settings:
                verdict = Verdict(
                    "error", f"{cid} has no NixOS settings to show as evidence", observed, expected
                )
            elif dict(running.settings) != dict(control.settings):
                verdict = Verdict(
                    "drift", f"{cid}: the running manifest's settings differ", observed, expected
                )
            else:
                names = ", ".join(sorted(control.settings))
                message = f"configuration evidence only: the running generation ({baseline}) sets {names}"
                verdict = Verdict("pass", message, observed, expected)
            findings.append(make_finding(SPEC, [(cid, control)], verdict))
    return findings
