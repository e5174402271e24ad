"""av_edr: the antivirus/EDR daemon runs and its signatures are fresh.

Units come from a control's ``expect.units`` or ``checks.antivirus.units`` (ClamAV's daemon
and updater by default); an empty list means this host has no antivirus configured
(``skipped``, never a pass). Signature age is the age of the newest file matching
``checks.antivirus.signature_globs`` in ``signature_dir``, against
``parameters.av_signature_max_age_days``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from nixcomply.checks.base import (
    CheckSpec,
    Controls,
    Outputs,
    Verdict,
    age_text,
    expect_str_list,
    per_control,
    unit_active,
    unit_name,
    unit_states,
)
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.host.systemd import describe_unit, unit_record

NAME: Final = "av_edr"
SPEC: Final = CheckSpec(
    name=NAME, severity="high", runbook="RB-SERVICE-001", expect_keys=frozenset({"units"})
)


@dataclass(frozen=True)
class AvObservation:
    units: dict[str, dict[str, Any] | str]  # unit -> state, or the error reading it
    inactive: dict[str, str]  # unit -> why
    newest_signature: str | None
    newest_mtime: datetime | None


def _units_for(ctx: CheckContext, expect: Mapping[str, Any]) -> list[str]:
    units = expect_str_list(expect, "units")
    return [unit_name(u) for u in (units if units is not None else ctx.config.antivirus.units)]


def run(ctx: CheckContext, controls: Controls) -> list[Finding]:
    wanted: set[str] = set(ctx.config.antivirus.units)
    for control in controls.values():
        with contextlib.suppress(ValueError):  # a malformed expect is reported by judge
            wanted.update(_units_for(ctx, control.verify.expect))

    def observe(ctx: CheckContext) -> tuple[AvObservation, Outputs]:
        states = unit_states(ctx, sorted(wanted)) if wanted else {}
        units: dict[str, dict[str, Any] | str] = {}
        inactive: dict[str, str] = {}
        for name, state in states.items():
            if isinstance(state, BaseException):
                units[name] = inactive[name] = f"cannot be read: {state}"
            else:
                units[name] = unit_record(state)
                if not unit_active(state):
                    inactive[name] = describe_unit(state)
        cfg = ctx.config.antivirus
        directory = ctx.host_path(cfg.signature_dir)
        newest: tuple[float, str] | None = None
        if directory.is_dir():
            for pattern in cfg.signature_globs:
                for path in directory.glob(pattern):
                    mtime = path.stat().st_mtime
                    if newest is None or mtime > newest[0]:
                        newest = (mtime, path.name)
        stamp = datetime.fromtimestamp(newest[0], UTC) if newest else None
        return AvObservation(units, inactive, newest[1] if newest else None, stamp), {}

    return per_control(ctx, controls, SPEC, observe, judge)


def judge(obs: AvObservation, expect: Mapping[str, Any], ctx: CheckContext) -> Verdict:
    units = _units_for(ctx, expect)
    if not units:
        return Verdict(
            "skipped", "no antivirus/EDR configured on this host (checks.antivirus.units is empty)"
        )
    limit = ctx.parameters.av_signature_max_age_days
    age = (ctx.now - obs.newest_mtime).total_seconds() if obs.newest_mtime else None
    observed = {
        "units": {u: obs.units.get(u) for u in units},
        "newest_signature": obs.newest_signature,
        "signature_age_days": None if age is None else round(age / 86400, 2),
    }
    expected = {"units_active": units, "max_signature_age_days": limit}
    down = [u for u in units if u in obs.inactive]
    if down:
        detail = ", ".join(f"{u} is {obs.inactive[u]}" for u in down)
        return Verdict("drift", f"antivirus not running: {detail}", observed, expected, {"unit": down[0]})
    update = {"unit": ctx.config.antivirus.update_unit}
    signature_dir = ctx.config.antivirus.signature_dir
    if age is None:
        return Verdict("drift", f"no antivirus signatures in {signature_dir}", observed, expected, update)
    if age > limit * 86400:
        message = (
            f"antivirus signatures are {age_text(age)} old (limit {limit} d, newest {obs.newest_signature})"
        )
        return Verdict("drift", message, observed, expected, update)
    return Verdict("pass", f"{', '.join(units)} active; signatures {age_text(age)} old", observed, expected)
