"""The health gate between ``nixos-rebuild test`` and ``switch``.

A new generation becomes the boot default only if, within the gate's deadline:

* activation did not report failed units (``switch-to-configuration`` exit code 4), unless
  every unit failing now was already failing before the activation;
* every configured critical unit is active (``activating`` is waited for, through pystemd
  against the real systemd D-Bus API);
* no unit is failed that was not failed before the activation;
* every configured liveness command exits 0 within its own timeout.

Each check is reported with its duration; the result goes into evidence as it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from nixcomply.checks import context as checks_context
from nixcomply.core import faults, process
from nixcomply.errors import CommandError, NixcomplyError
from nixcomply.host.systemd import SystemdFactory
from nixcomply.nixos.rebuild import ActivationResult
from nixcomply.reconcile.config import HealthGate
from nixcomply.reconcile.model import GateCheck, GateResult

logger = logging.getLogger(__name__)


class GateSystemd(checks_context.SystemdLike, Protocol):
    """The part of :class:`nixcomply.host.systemd.Systemd` the gate uses: what the checks read of a
    unit, and the failed units."""

    def failed_units(self) -> frozenset[str]: ...


def failed_units(factory: SystemdFactory[GateSystemd] | None) -> frozenset[str] | None:
    """The units failed right now, or None when systemd cannot be asked."""
    if factory is None:
        return None
    try:
        with factory() as sd:
            return sd.failed_units()
    except NixcomplyError as e:
        logger.warning("cannot list failed units: %s", e)
        return None


def run_gate(
    gate: HealthGate,
    *,
    activation: ActivationResult,
    failed_before: frozenset[str] | None,
    systemd: SystemdFactory[GateSystemd] | None,
    env: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> GateResult:
    start = time.monotonic()
    deadline = start + gate.timeout
    checks: list[GateCheck] = []
    if gate.settle_seconds:
        sleep(min(gate.settle_seconds, gate.timeout))
    faults.point("gating")

    unit_checks, failed_now = _unit_checks(gate, failed_before, systemd, deadline, sleep)
    checks.append(_activation_check(activation, failed_before, failed_now))
    checks.extend(unit_checks)
    for command in gate.liveness:
        checks.append(_liveness(command.name, command.argv, min(command.timeout, _left(deadline)), env))
    if time.monotonic() > deadline:
        checks.append(
            GateCheck(name="deadline", ok=False, detail=f"the gate took longer than {gate.timeout:g} s")
        )
    return GateResult(
        ok=all(c.ok for c in checks), checks=checks, duration_s=round(time.monotonic() - start, 3)
    )


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _activation_check(
    activation: ActivationResult, failed_before: frozenset[str] | None, failed_now: frozenset[str] | None
) -> GateCheck:
    if not activation.units_failed:
        return GateCheck(
            name="activation", ok=True, detail=f"{activation.action} exited 0", duration_s=activation.duration
        )
    if failed_before is not None and failed_now is not None and failed_now <= failed_before:
        return GateCheck(
            name="activation",
            ok=True,
            detail="exit 4 only for units that were already failed before: " + ", ".join(sorted(failed_now)),
            duration_s=activation.duration,
        )
    return GateCheck(
        name="activation",
        ok=False,
        detail=f"switch-to-configuration {activation.action} exited 4: units failed during activation",
        duration_s=activation.duration,
    )


def _unit_checks(
    gate: HealthGate,
    failed_before: frozenset[str] | None,
    systemd: SystemdFactory[GateSystemd] | None,
    deadline: float,
    sleep: Callable[[float], None],
) -> tuple[list[GateCheck], frozenset[str] | None]:
    if systemd is None:
        detail = "systemd is not reachable: units were not checked"
        return [GateCheck(name="systemd", ok=not gate.critical_units, detail=detail)], None
    checks: list[GateCheck] = []
    started = time.monotonic()
    try:
        with systemd() as sd:
            pending = list(gate.critical_units)
            states: dict[str, checks_context.UnitStateLike] = {}
            while True:
                for unit in pending:
                    try:
                        states[unit] = sd.unit_state(unit)
                    except NixcomplyError as e:
                        checks.append(GateCheck(name=f"unit:{unit}", ok=False, detail=str(e)))
                pending = [
                    u
                    for u in pending
                    if u in states and states[u].active_state in {"activating", "reloading"}
                ]
                if not pending or time.monotonic() >= deadline:
                    break
                sleep(0.2)
            for unit in gate.critical_units:
                if unit not in states:
                    continue
                s = states[unit]
                checks.append(
                    GateCheck(
                        name=f"unit:{unit}",
                        ok=s.active_state == "active",
                        detail=f"{s.active_state}/{s.sub_state}"
                        + (f" ({s.result})" if s.result not in (None, "success") else ""),
                        duration_s=round(time.monotonic() - started, 3),
                    )
                )
            failed_now = sd.failed_units()
    except NixcomplyError as e:
        return [GateCheck(name="systemd", ok=False, detail=f"cannot ask systemd: {e}")], None
    if failed_before is None:
        checks.append(
            GateCheck(name="failed-units", ok=not failed_now, detail=", ".join(sorted(failed_now)) or "none")
        )
    else:
        new = failed_now - failed_before
        checks.append(
            GateCheck(
                name="new-failed-units",
                ok=not new,
                detail=("newly failed: " + ", ".join(sorted(new)))
                if new
                else "no unit failed that was not failed before",
            )
        )
    return checks, failed_now


def _liveness(name: str, argv: list[str], timeout: float, env: dict[str, str] | None) -> GateCheck:
    started = time.monotonic()
    try:
        process.run(argv, timeout=timeout, extra_env=env)
    except CommandError as e:
        return GateCheck(
            name=f"liveness:{name}",
            ok=False,
            detail=str(e).splitlines()[0],
            duration_s=round(time.monotonic() - started, 3),
        )
    return GateCheck(
        name=f"liveness:{name}", ok=True, detail="exit 0", duration_s=round(time.monotonic() - started, 3)
    )
