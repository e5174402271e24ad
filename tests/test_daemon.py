"""Daemon mode under the real systemd user manager: READY, a watchdog petted every cycle,
a clean stop on SIGTERM, and a restart by systemd when a cycle hangs past its budget."""

from __future__ import annotations

import stat
import sys
import time
from pathlib import Path

from fixtures_reconcile import ReconcileWorld

from nixcomply.host.state import State
from nixcomply.host.systemd import Systemd

UNIT = "nixcomply-reconcile-test.service"


def daemon_unit(config: Path, *, watchdog: int, extra: str = "") -> str:
    return (
        "[Unit]\nDescription=nixcomply reconciler (daemon mode, test)\n"
        "[Service]\nType=notify\nNotifyAccess=main\n"
        f"ExecStart={sys.executable} -m nixcomply daemon --config {config}\n"
        f"WatchdogSec={watchdog}\nTimeoutStopSec=20\n{extra}"
    )


def runs(world: ReconcileWorld) -> int:
    with State.open(world.host.state_dir) as state:
        last = state.last_run()
        return 0 if last is None else last.id


def start(world: ReconcileWorld, text: str) -> Systemd:
    manager = world.host.manager
    assert manager is not None
    manager.write_unit(UNIT, text)
    manager.daemon_reload()
    sd = manager.systemd()
    sd.open()
    return sd


def test_daemon_is_ready_pets_the_watchdog_and_stops_cleanly(fresh: ReconcileWorld) -> None:
    fresh.install("good")
    fresh.configure("good", poll_interval_seconds=1, jitter_seconds=0)
    sd = start(fresh, daemon_unit(fresh.host.config_path, watchdog=3))
    try:
        assert sd.start(UNIT, timeout=30) == "done"  # Type=notify: only once READY=1 arrived
        state = sd.unit_state(UNIT)
        assert (state.active_state, state.sub_state) == ("active", "running")
        deadline = time.monotonic() + 30
        while runs(fresh) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert runs(fresh) >= 3, "cycles keep running"
        # three cycles spanning more than one WatchdogSec: the watchdog was petted, not tripped
        time.sleep(3.5)
        state = sd.unit_state(UNIT)
        assert state.active_state == "active"
        assert state.n_restarts == 0
        # STATUS= says what the daemon does: "reconciling" during a cycle, the last outcome between
        deadline = time.monotonic() + 20
        while "last run" not in (state.status_text or "") and time.monotonic() < deadline:
            time.sleep(0.1)
            state = sd.unit_state(UNIT)
        assert state.status_text is not None
        assert "last run" in state.status_text
        assert "in-sync" in state.status_text

        assert sd.stop(UNIT, timeout=30) == "done"
        stopped = sd.unit_state(UNIT)
        # systemd bounds the stop: past TimeoutStopSec it kills, and the result is "timeout"
        assert (stopped.active_state, stopped.result) == ("inactive", "success"), "SIGTERM ends the daemon"
    finally:
        sd.stop(UNIT, timeout=30)
        sd.close()


def test_hung_cycle_stops_the_watchdog_and_systemd_restarts_it(fresh: ReconcileWorld, tmp_path: Path) -> None:
    fresh.install("good")
    hang = tmp_path / "nix"
    hang.write_text("#!/bin/sh\nexec sleep 1000\n")
    hang.chmod(hang.stat().st_mode | stat.S_IEXEC)
    fresh.configure(
        "good",
        executables={
            "nix": str(hang),
            "nixos_rebuild": str(fresh.sandbox.bin_dir / "nixos-rebuild"),
            "systemd_run": None,
        },
        cycle_timeout_seconds=1,
    )
    sd = start(
        fresh, daemon_unit(fresh.host.config_path, watchdog=2, extra="Restart=on-watchdog\nRestartSec=1\n")
    )
    try:
        assert sd.start(UNIT, timeout=30) == "done"
        deadline = time.monotonic() + 30
        restarts = 0
        while time.monotonic() < deadline:
            restarts = sd.unit_state(UNIT).n_restarts or 0
            if restarts >= 1:
                break
            time.sleep(0.2)
        assert restarts >= 1, "a cycle hung past its budget must trip the watchdog"
    finally:
        sd.stop(UNIT, timeout=30)
        sd.close()
