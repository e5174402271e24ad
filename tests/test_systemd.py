"""nixcomply.host.systemd and nixcomply.sandbox.usermanager against a real systemd user manager.

Unit-name validation and the missing-pystemd path need no manager; everything else runs
real units in the session's ``systemd --user`` (tests/fixtures_systemd.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_systemd import Units, alive, script_path, wait_gone

from nixcomply.errors import EXIT_USAGE, UsageError
from nixcomply.host.systemd import (
    InvalidUnitNameError,
    JobAction,
    Systemd,
    SystemdTimeoutError,
    SystemdUnavailableError,
    UnitNotFoundError,
    UnitState,
    validate_unit_name,
)
from nixcomply.sandbox.usermanager import UserManager

SLEEP = "/bin/sleep 600"


# -- unit names (no manager needed) ---------------------------------------------------------

VALID = [
    "sshd.service",
    "nixcomply-reconcile.timer",
    "getty@tty1.service",
    "dbus-org.freedesktop.login1.service",
    "-.mount",
    "home-user.mount",
    "sys-devices-virtual-net-lo.device",
    "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
    "user@1000.service",
    "a:b_c.socket",
    "x" * 247 + ".service",
]

INVALID = [
    ("", "empty"),
    ("my service.service", "whitespace"),
    ("sshd.service\nExecStart=/bin/sh", "whitespace or control"),
    ("sshd\t.service", "whitespace"),
    ("../../etc/passwd.service", "'/'"),
    ("/etc/systemd/system/sshd.service", "'/'"),
    ("sshd", "no type suffix"),
    ("sshd.exe", "unknown type suffix '.exe'"),
    ("sshd.Service", "unknown type suffix"),
    ("sshd;reboot.service", "only ASCII letters"),
    ("$(reboot).service", "only ASCII letters"),
    ("`id`.service", "only ASCII letters"),
    ("café.service", "only ASCII letters"),
    ("getty@.service", "template"),
    ("@tty1.service", "empty name before '@'"),
    ("x" * 248 + ".service", "longer than 255"),
    ("sshd.service\0", "control"),
]


@pytest.mark.parametrize("name", VALID)
def test_valid_unit_names(name: str) -> None:
    assert validate_unit_name(name) == name


@pytest.mark.parametrize(("name", "why"), INVALID)
def test_invalid_unit_names_rejected_with_reason(name: str, why: str) -> None:
    with pytest.raises(InvalidUnitNameError) as info:
        validate_unit_name(name)
    assert why in str(info.value)
    assert info.value.unit == name
    # A usage error for the CLI (exit 2) and a ValueError for pydantic validators.
    assert isinstance(info.value, UsageError)
    assert isinstance(info.value, ValueError)
    assert info.value.exit_code == EXIT_USAGE


def test_template_allowed_on_request() -> None:
    assert validate_unit_name("getty@.service", allow_template=True) == "getty@.service"


def test_non_string_rejected() -> None:
    with pytest.raises(InvalidUnitNameError):
        validate_unit_name(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda sd: sd.unit_state("bad name.service"),
        lambda sd: sd.start("x;reboot.service"),
        lambda sd: sd.stop("../x.service"),
        lambda sd: sd.restart("x.service\n"),
        lambda sd: sd.reload_or_restart("x"),
        lambda sd: sd.wait_for("a b.service", "active", timeout=1),
        lambda sd: sd.properties("x y.service"),
        lambda sd: sd.reset_failed("x/y.service"),
        lambda sd: sd.submit("x y.service", JobAction.START),
    ],
)
def test_invalid_names_rejected_before_dbus(call: Callable[[Systemd], object]) -> None:
    # Never opened: any D-Bus call would raise RuntimeError, so InvalidUnitNameError proves
    # the name was judged first.
    sd = Systemd()
    with pytest.raises(InvalidUnitNameError):
        call(sd)
    with pytest.raises(RuntimeError, match="not open"):
        sd.unit_state("fine.service")


def test_missing_pystemd_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("pystemd", "pystemd.dbuslib", "pystemd.dbusexc"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemdUnavailableError) as info:
        Systemd().open()
    assert "pystemd is not available" in str(info.value)
    assert info.value.hint is not None
    assert "nixcomply[systemd]" in info.value.hint
    assert info.value.exit_code == EXIT_USAGE


def test_unreachable_bus_is_a_clear_error(tmp_path: Path) -> None:
    address = f"unix:path={tmp_path}/no-such-bus"
    with pytest.raises(SystemdUnavailableError, match="cannot connect to the systemd manager at"):
        Systemd(bus_address=address).open()


def test_user_manager_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemdUnavailableError, match="needs root"):
        UserManager(tmp_path).start()


def test_user_manager_refuses_too_deep_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SystemdUnavailableError, match="too deep"):
        UserManager(tmp_path / ("d" * 100)).start()


# -- the real manager -------------------------------------------------------------------------


@pytest.mark.systemd
def test_start_stop_restart_change_main_pid(user_systemd: Systemd, units: Units) -> None:
    sd = user_systemd
    # Type=exec: started means exec'd (with Type=simple a loaded machine can show the forked
    # child, still called "(sleep)", as the running main process)
    name = units.service(SLEEP, Type="exec")
    before = sd.unit_state(name)
    assert (before.load_state, before.active_state, before.sub_state) == ("loaded", "inactive", "dead")
    assert before.main_pid is None
    assert before.active_enter_timestamp is None

    assert sd.start(name, timeout=10) == "done"
    started = sd.unit_state(name)
    assert started.is_active
    assert started.sub_state == "running"
    assert started.main_pid is not None
    assert alive(started.main_pid)
    assert Path(f"/proc/{started.main_pid}/cmdline").read_bytes().split(b"\0")[0] == b"/bin/sleep"
    assert started.active_enter_timestamp is not None

    assert sd.restart(name, timeout=10) == "done"
    restarted = sd.unit_state(name)
    assert restarted.is_active
    assert restarted.main_pid not in (None, started.main_pid)
    assert wait_gone(started.main_pid), "the old main process survived the restart"
    assert restarted.active_enter_timestamp is not None
    assert restarted.active_enter_timestamp > started.active_enter_timestamp

    assert sd.stop(name, timeout=10) == "done"
    stopped = sd.unit_state(name)
    assert (stopped.active_state, stopped.sub_state, stopped.main_pid) == ("inactive", "dead", None)
    assert restarted.main_pid is not None
    assert wait_gone(restarted.main_pid)


@pytest.mark.systemd
def test_reload_or_restart_reloads_when_it_can(user_systemd: Systemd, units: Units, tmp_path: Path) -> None:
    sd = user_systemd
    marker = tmp_path / "reloaded"
    name = units.service(
        f"/bin/sh -c 'trap \"echo hup >> {marker}\" HUP; while :; do sleep 0.05; done'",
        ExecReload="/bin/kill -HUP $MAINPID",
    )
    plain = units.service(SLEEP)
    sd.start(name, timeout=10)
    sd.start(plain, timeout=10)
    pid, plain_pid = sd.unit_state(name).main_pid, sd.unit_state(plain).main_pid

    assert sd.reload_or_restart(name, timeout=10) == "done"
    assert sd.unit_state(name).main_pid == pid, "a unit with ExecReload was restarted instead"
    deadline = time.monotonic() + 5
    # `>>` creates the file before `echo` writes into it: wait for the content itself
    while not (marker.exists() and marker.read_text().endswith("\n")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "hup\n"

    assert sd.reload_or_restart(plain, timeout=10) == "done"
    assert sd.unit_state(plain).main_pid not in (None, plain_pid)


@pytest.mark.systemd
def test_failing_exec_start_ends_failed_exit_code(user_systemd: Systemd, units: Units) -> None:
    sd = user_systemd
    name = units.service("/bin/false")
    # A simple service "starts" once forked; its failure comes after the job.
    assert sd.start(name, timeout=10) == "done"
    state = sd.wait_for(name, "failed", timeout=10)
    assert (state.active_state, state.sub_state, state.result) == ("failed", "failed", "exit-code")
    assert state.is_failed
    assert not state.is_active
    assert name in sd.failed_units()

    sd.reset_failed(name)
    assert sd.unit_state(name).active_state == "inactive"
    assert name not in sd.failed_units()


@pytest.mark.systemd
def test_failing_oneshot_job_fails(user_systemd: Systemd, units: Units) -> None:
    name = units.service("/bin/sh -c 'exit 3'", Type="oneshot")
    assert user_systemd.start(name, timeout=10) == "failed"
    state = user_systemd.unit_state(name)
    assert (state.active_state, state.result) == ("failed", "exit-code")
    assert name in user_systemd.failed_units()


@pytest.mark.systemd
def test_missing_program_fails_the_start_job(user_systemd: Systemd, units: Units) -> None:
    name = units.service("/nonexistent/program", Type="exec")
    assert user_systemd.start(name, timeout=10) == "failed"
    assert user_systemd.unit_state(name).result == "exit-code"


@pytest.mark.systemd
def test_unit_that_keeps_failing_hits_the_start_limit(user_systemd: Systemd, units: Units) -> None:
    sd = user_systemd
    name = units.write(
        "[Unit]\nStartLimitBurst=3\nStartLimitIntervalSec=60\n"
        "[Service]\nExecStart=/bin/false\nRestart=on-failure\nRestartSec=50ms\n"
    )
    assert sd.start(name, timeout=10) == "done"
    state = sd.wait_for(name, "failed", timeout=10)
    assert state.n_restarts == 3  # systemd restarted it itself, then gave up
    assert state.result == "exit-code"
    # Restarting by hand is refused while the start limit holds...
    assert sd.restart(name, timeout=10) == "failed"
    assert sd.unit_state(name).is_failed
    # ...until the failure is reset; then it runs (and fails) again.
    sd.reset_failed(name)
    assert sd.restart(name, timeout=10) == "done"
    sd.stop(name, timeout=10)


@pytest.mark.systemd
def test_unknown_unit_raises_unit_not_found(user_systemd: Systemd) -> None:
    with pytest.raises(UnitNotFoundError) as info:
        user_systemd.unit_state("nixcomply-no-such-unit.service")
    assert info.value.unit == "nixcomply-no-such-unit.service"
    assert "nixcomply-no-such-unit.service not found" in str(info.value)
    with pytest.raises(UnitNotFoundError) as info:
        user_systemd.start("nixcomply-no-such-unit.service", timeout=5)
    assert info.value.unit == "nixcomply-no-such-unit.service"
    with pytest.raises(UnitNotFoundError):
        user_systemd.unit_state("nixcomply-no-such.timer")


@pytest.mark.systemd
def test_wait_for_times_out_with_last_state(user_systemd: Systemd, units: Units) -> None:
    name = units.service(SLEEP)
    start = time.monotonic()
    with pytest.raises(SystemdTimeoutError) as info:
        user_systemd.wait_for(name, "active", timeout=0.3)
    elapsed = time.monotonic() - start
    assert elapsed >= 0.3  # it waited the whole timeout (pytest's own timeout catches a hang)
    assert info.value.unit == name
    assert info.value.last_state is not None
    assert info.value.last_state.active_state == "inactive"
    assert "did not reach ActiveState=active within 0.3 s (it is inactive/dead)" in str(info.value)


@pytest.mark.systemd
def test_wait_for_predicate(user_systemd: Systemd, units: Units) -> None:
    name = units.service("/bin/sh -c 'sleep 0.3; exit 7'")
    user_systemd.start(name, timeout=10)

    def exited_with_failure(state: UnitState) -> bool:
        # ActiveState and Result come from two property reads (Unit, Service): Result can
        # already say exit-code while the ActiveState read just before still said active.
        return state.is_failed and state.result == "exit-code"

    state = user_systemd.wait_for(name, exited_with_failure, timeout=10)
    assert state.is_failed


@pytest.mark.systemd
def test_daemon_reload_and_properties(user_systemd: Systemd, units: Units) -> None:
    name = units.write("[Unit]\nDescription=first\n[Service]\nExecStart=/bin/true\n")
    assert user_systemd.properties(name)["Description"] == b"first"
    units.manager.write_unit(name, "[Unit]\nDescription=second\n[Service]\nExecStart=/bin/true\n")
    user_systemd.daemon_reload()
    assert user_systemd.properties(name)["Description"] == b"second"
    assert user_systemd.properties(name, "Service")["Type"] == b"simple"


@pytest.mark.systemd
def test_list_units_by_pattern_and_state(user_systemd: Systemd, units: Units) -> None:
    running = units.service(SLEEP)
    idle = units.service(SLEEP)
    user_systemd.start(running, timeout=10)
    user_systemd.unit_state(idle)  # loaded, inactive
    pattern = f"t-{units.stem}-*"
    listed = {u.name: u for u in user_systemd.list_units([pattern])}
    assert listed[running].active_state == "active"
    assert listed[running].sub_state == "running"
    active_only = {u.name for u in user_systemd.list_units([pattern], states=["active"])}
    assert running in active_only
    assert idle not in active_only


@pytest.mark.systemd
def test_private_socket_peer_to_peer(user_manager: UserManager, units: Units) -> None:
    """The same adapter over the manager's own socket, without the bus daemon."""
    name = units.service(SLEEP)
    with Systemd(bus_address=user_manager.private_address, peer_to_peer=True) as sd:
        assert sd.start(name, timeout=10) == "done"
        assert sd.unit_state(name).is_active
        assert sd.stop(name, timeout=10) == "done"


@pytest.mark.systemd
def test_user_mode_follows_the_environment(
    user_manager: UserManager, units: Units, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Systemd(user_mode=True)`` finds the bus through this process's environment."""
    name = units.service(SLEEP)
    for key, value in user_manager.env.items():
        monkeypatch.setenv(key, value)
    with Systemd(user_mode=True) as sd:
        assert sd.unit_state(name).load_state == "loaded"


@pytest.mark.systemd
def test_job_wait_timeout_leaves_job_waitable(user_systemd: Systemd, units: Units, tmp_path: Path) -> None:
    """A Type=notify start stays queued until READY=1; wait_job can time out and resume."""
    sd = user_systemd
    go = tmp_path / "go"
    name = units.service(
        f"{sys.executable} {script_path('notify_daemon.py')} --ready-when {go}",
        Type="notify",
        TimeoutStartSec="30",
    )
    job = sd.submit(name, JobAction.START)
    with pytest.raises(SystemdTimeoutError, match=r"start job of .* did not finish within 0\.3 s"):
        sd.wait_job(job, timeout=0.3)
    go.touch()
    assert sd.wait_job(job, timeout=20) == "done"
    assert sd.unit_state(name).is_active


@pytest.mark.systemd
def test_session_manager_is_the_one_we_started(user_manager: UserManager) -> None:
    assert user_manager.pid is not None
    assert Path(f"/proc/{user_manager.pid}/exe").resolve() == Path("/lib/systemd/systemd").resolve()
    result = user_manager.systemctl("show", "--property=Version", "--value")
    assert result.stdout.strip()


@pytest.mark.systemd
def test_second_manager_runs_beside_the_first_and_stops_cleanly(
    tmp_path_factory: pytest.TempPathFactory,
    user_systemd: Systemd,
    units: Units,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each manager has its own cgroup tree: stopping one leaves the other's units alone."""
    neighbour = units.service(SLEEP)
    user_systemd.start(neighbour, timeout=10)
    neighbour_pid = user_systemd.unit_state(neighbour).main_pid

    with UserManager(tmp_path_factory.mktemp("um2")) as um:
        um.write_unit("lifecycle.service", f"[Service]\nExecStart={SLEEP}\n")
        um.daemon_reload()
        with um.systemd() as sd:
            assert sd.start("lifecycle.service", timeout=10) == "done"
            pid = sd.unit_state("lifecycle.service").main_pid
        manager_pid = um.pid
        cgroups = [
            Path(line.split(":", 2)[2])
            for line in Path(f"/proc/{manager_pid}/cgroup").read_text().splitlines()
        ]
        caplog.set_level(logging.INFO, logger="nixcomply.sandbox.usermanager")
    # stop() says when it had to SIGKILL (no wall-clock bound: a loaded machine is slow)
    assert "ignored SIGTERM" not in caplog.text, "the manager did not stop on SIGTERM"
    assert "stopped (status 0)" in caplog.text, caplog.text
    assert pid is not None
    assert manager_pid is not None
    assert um.pid is None
    assert wait_gone(manager_pid)
    assert wait_gone(pid), "the manager left its unit running"
    assert any(p.parent.name.startswith("nixcomply-um-") for p in cgroups)

    # The session's manager, its bus and its unit are untouched.
    with Systemd(bus_address=units.manager.bus_address) as fresh:
        state = fresh.unit_state(neighbour)
    assert state.is_active
    assert state.main_pid == neighbour_pid


@pytest.mark.systemd
def test_stop_kills_what_a_stuck_manager_leaves(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A manager that does not answer SIGTERM is killed, and its units with it (by cgroup)."""
    um = UserManager(tmp_path_factory.mktemp("um3"), stop_timeout=0.5)
    um.start()
    try:
        um.write_unit("orphan.service", f"[Service]\nExecStart={SLEEP}\n")
        um.daemon_reload()
        with um.systemd() as sd:
            sd.start("orphan.service", timeout=10)
            pid = sd.unit_state("orphan.service").main_pid
        manager_pid = um.pid
        assert manager_pid is not None
        os.kill(manager_pid, signal.SIGSTOP)  # SIGTERM now waits forever
    finally:
        um.stop()
    assert pid is not None
    assert wait_gone(manager_pid)
    assert wait_gone(pid), "the unit of a killed manager survived"
