"""service_health, av_edr and the logging unit states against the real systemd user manager
(tests/fixtures_systemd.py), through the real adapter (nixcomply.host.systemd)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fixtures_checks import context, control, manifest
from fixtures_systemd import Units

from nixcomply.checks import av_edr, registry, service_health
from nixcomply.checks.context import CheckContext
from nixcomply.heal.actions import ActionEnv, capture_state
from nixcomply.heal.config import HealConfig
from nixcomply.host.systemd import connector_if_installed
from nixcomply.sandbox.usermanager import UserManager


def ctx_for(user_manager: UserManager, m: Any = None, root: Path = Path("/"), **extra: Any) -> CheckContext:
    factory = connector_if_installed(bus_address=user_manager.bus_address)
    assert factory is not None, "nixcomply.host.systemd and pystemd are installed"
    base = context(root, manifest=m, **extra)
    return CheckContext(
        root=base.root,
        manifest=base.manifest,
        parameters=base.parameters,
        now=base.now,
        config=base.config,
        systemd_factory=factory,
        previous_restarts=base.previous_restarts,
    )


def test_service_health_real_units(user_manager: UserManager, units: Units) -> None:
    running = units.service("/bin/sleep 300")
    stopped = units.service("/bin/sleep 300")
    units.sd.start(running)
    missing = units.name()
    m = manifest(
        {
            "services.critical-running": control(
                "service_health", {"units": [running, stopped, missing]}, remediation="RB-SERVICE-001"
            )
        }
    )
    by = {f.subject: f for f in service_health.run(ctx_for(user_manager, m), dict(m.controls))}
    assert by[running].status == "pass" and by[running].observed["main_pid"]
    assert by[stopped].status == "drift" and by[stopped].message == f"{stopped} is inactive/dead"
    assert by[stopped].recommended_runbook == "RB-SERVICE-001" and by[stopped].runbook_params == {
        "unit": stopped
    }
    assert by[missing].status in ("drift", "error")  # not-found: never a pass
    units.sd.stop(running)
    f = service_health.run(ctx_for(user_manager, m), dict(m.controls))
    assert {x.subject: x.status for x in f}[running] == "drift"


def test_service_health_a_unit_that_keeps_dying(user_manager: UserManager, units: Units) -> None:
    name = units.write(
        "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 0.05; exit 1'\n"
        "Restart=always\nRestartSec=50ms\n"
    )
    units.sd.start(name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = units.sd.unit_state(name)
        if (state.n_restarts or 0) > 4:
            break
        time.sleep(0.1)
    m = manifest({"svc": control("service_health", {"units": [name]})})
    f = service_health.run(ctx_for(user_manager, m), dict(m.controls))[0]
    assert f.status == "drift", f.message
    assert f.observed["n_restarts"] > 3
    # the same count seen at the previous look: not restarting any more (if it is active)
    seen = f.observed["n_restarts"]
    units.sd.stop(name)
    units.sd.start(name)  # a start job resets the counter: fewer than before counts from zero
    later = service_health.run(ctx_for(user_manager, m, previous_restarts={name: seen}), dict(m.controls))[0]
    assert later.observed["restarts_since_last_look"] <= later.observed["n_restarts"]


def test_av_edr_real_units(user_manager: UserManager, units: Units, tmp_path: Path) -> None:
    daemon = units.service("/bin/sleep 300")
    units.sd.start(daemon)
    timer = units.write("[Timer]\nOnCalendar=daily\n", suffix="timer")
    units.write("[Service]\nExecStart=/bin/true\n", name=timer.replace(".timer", ".service"))
    units.sd.start(timer)
    m = manifest({"malware.protection": control("av_edr", {"units": [daemon, timer]})})
    f = av_edr.run(ctx_for(user_manager, m, tmp_path), dict(m.controls))[0]
    # the units run (a timer is active/waiting), but the root has no signatures
    assert f.observed["units"][timer]["active_state"] == "active"
    assert f.status == "drift" and ("signatures" in f.message)


def test_runner_with_real_systemd(user_manager: UserManager, units: Units) -> None:
    name = units.service("/bin/sleep 300")
    units.sd.start(name)
    m = manifest({"svc": control("service_health", {"units": [name]})})
    findings = registry.run_checks(ctx_for(user_manager, m), ["service_health"])
    assert [(f.subject, f.status) for f in findings] == [(name, "pass")]


def test_a_check_and_a_heal_step_record_a_unit_the_same_way(user_manager: UserManager, units: Units) -> None:
    """One definition of a unit's state in findings and in heal evidence
    (nixcomply.host.systemd.unit_record): the same unit at the same moment reads the same."""
    name = units.service("/bin/sleep 300")
    units.sd.start(name)
    m = manifest({"svc": control("service_health", {"units": [name]})})
    finding = service_health.run(ctx_for(user_manager, m), dict(m.controls))[0]
    env = ActionEnv(config=HealConfig(allowed_units=[name]), systemd=lambda: units.sd, timeout=10)
    step = capture_state({"unit": name, "journal_lines": 0, "ruleset": False}, env)
    recorded = step.data["unit"]
    assert isinstance(recorded, dict)
    shared = ("name", "load_state", "active_state", "sub_state", "result", "n_restarts", "main_pid")
    assert {k: finding.observed[k] for k in shared} == {k: recorded[k] for k in shared}
    assert recorded["name"] == name and recorded["active_state"] == "active" and recorded["main_pid"]
    assert recorded["unit_file_state"] is not None and recorded["active_enter_timestamp"]
