"""nixcomply.host.notify: the sd_notify protocol, on a real datagram socket and under real systemd."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_systemd import Units, script_path, wait_gone

from nixcomply.host import notify
from nixcomply.host.systemd import JobAction, Systemd, UnitState


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    """A bound AF_UNIX datagram socket (what systemd listens on) and the env naming it."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, {"NOTIFY_SOCKET": str(path)}


def test_ready_with_status(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    assert notify.ready(status="serving", environ=env) is True
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_each_helper_sends_its_assignment(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    assert notify.watchdog(environ=env)
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notify.status("cycle 3: in sync", environ=env)
    assert sock.recv(4096) == b"STATUS=cycle 3: in sync"
    assert notify.stopping(environ=env)
    assert sock.recv(4096) == b"STOPPING=1"
    assert notify.stopping(status="bye", environ=env)
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=bye"
    assert notify.notify("RELOADING=1", "MONOTONIC_USEC=1", environ=env)
    assert sock.recv(4096) == b"RELOADING=1\nMONOTONIC_USEC=1"


def test_abstract_namespace_socket() -> None:
    name = f"nixcomply-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert notify.ready(environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_process_environment_is_the_default(
    listener: tuple[socket.socket, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, env = listener
    monkeypatch.setenv("NOTIFY_SOCKET", env["NOTIFY_SOCKET"])
    assert notify.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_status_cannot_inject_assignments(listener: tuple[socket.socket, dict[str, str]]) -> None:
    sock, env = listener
    assert notify.status("line one\nREADY=1\x00x", environ=env)
    assert sock.recv(4096) == b"STATUS=line one READY=1 x"
    assert notify.status("x" * 5000, environ=env)
    assert sock.recv(8192) == b"STATUS=" + b"x" * notify.MAX_STATUS_CHARS


@pytest.mark.parametrize("field", ["READY=1\nSTATUS=x", "READY", "=1", "A=\0"])
def test_malformed_fields_raise(field: str) -> None:
    with pytest.raises(ValueError):
        notify.notify(field, environ={"NOTIFY_SOCKET": "/nonexistent"})


def test_notify_without_fields_raises() -> None:
    with pytest.raises(ValueError):
        notify.notify(environ={})


def test_not_under_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.watchdog(environ={}) is False
    assert notify.status("x", environ={"NOTIFY_SOCKET": ""}) is False


def test_unsupported_address_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nixcomply.host.notify"):
        assert notify.ready(environ={"NOTIFY_SOCKET": "vsock:2:1234"}) is False
    assert "unsupported" in caplog.text


def test_send_failure_returns_false_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nixcomply.host.notify"):
        assert notify.watchdog(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "could not notify systemd" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "1000000"}, 1.0),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}, 2.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert notify.watchdog_interval(environ=env) == expected


# -- under the real systemd user manager --------------------------------------------------------

DAEMON = f"{sys.executable} {script_path('notify_daemon.py')}"


@pytest.mark.systemd
def test_notify_unit_is_activating_until_ready(user_systemd: Systemd, units: Units, tmp_path: Path) -> None:
    sd = user_systemd
    go = tmp_path / "go"
    name = units.service(f"{DAEMON} --ready-when {go}", Type="notify", TimeoutStartSec="30")
    job = sd.submit(name, JobAction.START)

    def waiting(state: UnitState) -> bool:
        return state.status_text == "waiting for go"

    state = sd.wait_for(name, waiting, timeout=20)
    assert (state.active_state, state.sub_state) == ("activating", "start")
    time.sleep(0.3)  # still not active without READY=1
    assert sd.unit_state(name).active_state == "activating"

    go.touch()
    assert sd.wait_job(job, timeout=20) == "done"
    state = sd.unit_state(name)
    assert (state.active_state, state.sub_state) == ("active", "running")
    assert state.status_text == "serving"


@pytest.mark.systemd
def test_watchdog_timeout_kills_and_restarts(user_systemd: Systemd, units: Units, tmp_path: Path) -> None:
    sd = user_systemd
    marker = tmp_path / "hung"
    name = units.service(
        f"{DAEMON} --hang-once {marker}",
        Type="notify",
        WatchdogSec="1",
        Restart="on-watchdog",
        RestartSec="1",
        LimitCORE="0",  # the watchdog's SIGABRT must not leave core files around
    )
    assert sd.start(name, timeout=20) == "done"
    first = sd.unit_state(name)
    assert first.is_active
    assert first.n_restarts == 0
    assert marker.exists()

    def killed_by_watchdog(state: UnitState) -> bool:
        return state.result == "watchdog"

    dead = sd.wait_for(name, killed_by_watchdog, timeout=15)
    # seen dying, or (on a loaded machine, RestartSec later) already running again
    assert dead.sub_state in ("auto-restart", "stop-watchdog", "final-sigterm", "final-watchdog") or (
        dead.sub_state == "running" and dead.n_restarts == 1
    ), (dead.sub_state, dead.n_restarts)

    def restarted(state: UnitState) -> bool:
        return state.n_restarts == 1 and state.is_active and state.main_pid is not None

    second = sd.wait_for(name, restarted, timeout=15)
    assert second.main_pid != first.main_pid
    assert first.main_pid is not None
    assert wait_gone(first.main_pid)

    # The second run keeps petting: it outlives the 1 s watchdog several times over.
    time.sleep(2.5)
    later = sd.unit_state(name)
    assert later.is_active
    assert (later.main_pid, later.n_restarts) == (second.main_pid, 1)
    assert later.status_text == "serving"


@pytest.mark.systemd
def test_sigterm_stops_cleanly_within_timeout_stop(user_systemd: Systemd, units: Units) -> None:
    sd = user_systemd
    name = units.service(DAEMON, Type="notify", WatchdogSec="5", TimeoutStopSec="5")
    assert sd.start(name, timeout=20) == "done"
    pid = sd.unit_state(name).main_pid
    assert pid is not None

    start = time.monotonic()
    assert sd.stop(name, timeout=20) == "done"
    elapsed = time.monotonic() - start
    state = sd.unit_state(name)
    assert (state.active_state, state.result) == ("inactive", "success")
    # systemd enforces the bound: a daemon still running at TimeoutStopSec is killed and the
    # unit's result is "timeout" (the next test shows it), so "success" means SIGTERM ended it
    assert state.result != "timeout", f"stop took {elapsed:.1f} s, the daemon did not honour SIGTERM"
    assert wait_gone(pid)


@pytest.mark.systemd
def test_daemon_ignoring_sigterm_is_killed_after_timeout_stop(user_systemd: Systemd, units: Units) -> None:
    """The contrast that shows the clean-stop test can fail."""
    sd = user_systemd
    name = units.service(f"{DAEMON} --ignore-sigterm", Type="notify", TimeoutStopSec="1")
    assert sd.start(name, timeout=20) == "done"
    start = time.monotonic()
    sd.stop(name, timeout=20)
    elapsed = time.monotonic() - start
    assert elapsed >= 1
    state = sd.unit_state(name)
    assert state.active_state == "failed"
    assert state.result == "timeout"
