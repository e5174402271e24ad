"""The health gate between ``nixos-rebuild test`` and ``switch``.

A new generation becomes the boot default only if, within the gate's deadline:

* activation did not report failed units (``switch-to-configuration`` exit code 4), unless
  every unit failing now was already failing before the activation;
* every configured critical unit is active (``activating`` is waited for, through pystemd
  against the real systemd D-Bus API) **and runs the tested generation**: its loaded unit
  file resolves into the tested system (and systemd has no newer file on disk to reload),
  and when its definition differs from the one of the system the activation started from
  (the unit file or any of its drop-ins), it was (re)started after the activation began.
  An old process still answering proves nothing about the new generation: a test
  activation that was cut short after the system link moved, or that a re-run found
  already done, restarted nothing;
* no unit is failed that was not failed before the activation;
* every configured liveness command exits 0 within its own timeout.

Each check is reported with its duration; the result goes into evidence as it is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from nixcomply.checks import context as checks_context
from nixcomply.core import faults, process
from nixcomply.core.faults import FaultPoint
from nixcomply.errors import CommandError, NixcomplyError
from nixcomply.host.systemd import SystemdFactory, UnitStateLike
from nixcomply.nixos.rebuild import ActivationResult
from nixcomply.reconcile.config import HealthGate
from nixcomply.reconcile.model import GateCheck, GateResult

logger = logging.getLogger(__name__)

SYSTEM_UNITS = "etc/systemd/system"
USER_UNITS = "etc/systemd/user"


class GateSystemd(checks_context.SystemdLike, Protocol):
    """The part of :class:`nixcomply.host.systemd.Systemd` the gate uses: what the checks read of a
    unit, a unit's properties (its unit file, when it last became active), the failed units."""

    def failed_units(self) -> frozenset[str]: ...

    def properties(self, name: str, interface: str = "Unit") -> dict[str, Any]: ...


@dataclass(frozen=True)
class Activation:
    """What the gate judges: the activation's result, the system it activated, the system it
    started from (None: nothing ran before), when it began, and where units live in a
    system (``etc/systemd/system``; a user manager's ``etc/systemd/user``)."""

    result: ActivationResult
    tested: Path
    previous: Path | None
    began: datetime
    unit_dir: str = SYSTEM_UNITS


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
    activation: Activation,
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
    faults.point(FaultPoint.GATING)

    unit_checks, failed_now = _unit_checks(
        gate, activation, failed_before, systemd, deadline=deadline, sleep=sleep
    )
    checks.append(_activation_check(activation.result, failed_before, failed_now))
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


def definition(system: Path | None, unit_dir: str, unit: str) -> tuple[tuple[str, str], ...] | None:
    """What a system defines for ``unit``: its unit file and drop-ins, each as (name, the
    file it resolves to). NixOS and the sandbox link every unit file into the store, so two
    systems define a unit the same way exactly when these agree. None: no such unit file."""
    if system is None:
        return None
    base = system / unit_dir
    found: list[tuple[str, str]] = []
    main = base / unit
    if not os.path.lexists(main):
        return None
    found.append((unit, os.path.realpath(main)))
    dropins = base / f"{unit}.d"
    if dropins.is_dir():
        for entry in sorted(os.listdir(dropins)):
            found.append((f"{unit}.d/{entry}", os.path.realpath(dropins / entry)))
    return tuple(found)


def _timestamp(props: Mapping[str, Any], name: str) -> datetime | None:
    usec = props.get(name)
    if not isinstance(usec, int) or usec <= 0:
        return None
    return datetime.fromtimestamp(usec / 1_000_000, tz=UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def runs_tested(unit: str, props: Mapping[str, Any], activation: Activation) -> str | None:
    """None when ``unit`` runs the tested generation, else why not (``props``: the unit's
    ``Unit`` properties)."""
    tested = definition(activation.tested, activation.unit_dir, unit)
    if tested is None:
        return None  # not a unit the system defines (generated, transient): nothing to compare
    fragment = _text(props.get("FragmentPath"))
    if not fragment or os.path.realpath(fragment) != tested[0][1]:
        return f"its unit file {fragment or '(none)'} is not the tested system's ({tested[0][1]})"
    if props.get("NeedDaemonReload"):
        return "systemd has not loaded its current unit file (it needs a daemon-reload)"
    previous = definition(activation.previous, activation.unit_dir, unit)
    if previous == tested or unit in reloaded_units(activation.result):
        return None  # unchanged, or reloaded by the activation (NixOS's reloadIfChanged)
    entered = _timestamp(props, "ActiveEnterTimestamp")
    if entered is None or entered < activation.began:
        since = f"active since {entered:%H:%M:%S.%f} UTC" if entered else "never entered active"
        return (
            f"its definition changed, but it was not (re)started by this activation "
            f"({since}; the activation began {activation.began:%H:%M:%S.%f} UTC): "
            "an old process is still running"
        )
    return None


_RELOADING = "reloading the following units: "


def reloaded_units(result: ActivationResult) -> frozenset[str]:
    """The units switch-to-configuration says it reloaded instead of restarting them
    (``reloadIfChanged``): ``reloading the following units: a.service, b.service``."""
    found: set[str] = set()
    for line in (result.stderr + "\n" + result.stdout).splitlines():
        if line.startswith(_RELOADING):
            found.update(u.strip() for u in line.removeprefix(_RELOADING).split(",") if u.strip())
    return frozenset(found)


def _unit_checks(
    gate: HealthGate,
    activation: Activation,
    failed_before: frozenset[str] | None,
    systemd: SystemdFactory[GateSystemd] | None,
    *,
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
            states: dict[str, UnitStateLike] = {}
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
                checks.append(_unit_check(unit, states[unit], sd, activation, started))
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


def _unit_check(
    unit: str, s: UnitStateLike, sd: GateSystemd, activation: Activation, started: float
) -> GateCheck:
    detail = f"{s.active_state}/{s.sub_state}" + (
        f" ({s.result})" if s.result not in (None, "success") else ""
    )
    ok = s.active_state == "active"
    if ok:
        why = runs_tested(unit, sd.properties(unit), activation)
        if why is not None:
            ok = False
            detail += f", but it does not run the tested generation: {why}"
        else:
            detail += ", runs the tested generation"
    return GateCheck(
        name=f"unit:{unit}", ok=ok, detail=detail, duration_s=round(time.monotonic() - started, 3)
    )


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
