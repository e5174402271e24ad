"""A real systemd user manager for the test session, and throwaway units in it.

``user_manager`` starts one ``systemd --user`` in a private mount namespace per session
(root needed, as in CI); ``user_systemd`` is an open :class:`Systemd` connected to it;
``units`` writes units with unique names and removes them after the test (stopped, their
failed state reset, files deleted, manager reloaded), so tests never see each other's units.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nixcomply.host.systemd import Systemd, UnitNotFoundError
from nixcomply.sandbox.usermanager import UserManager


@pytest.fixture(scope="session")
def user_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserManager]:
    """One real ``systemd --user`` for the whole session; fails (never skips) without root."""
    if os.geteuid() != 0:
        pytest.fail("the real systemd tests need root (unshare -m); CI runs them as root")
    manager = UserManager(tmp_path_factory.mktemp("um"))
    manager.start()
    try:
        yield manager
    finally:
        manager.stop()


@pytest.fixture
def user_systemd(user_manager: UserManager) -> Iterator[Systemd]:
    """An open D-Bus connection (through the user bus) to the session's user manager."""
    with user_manager.systemd() as sd:
        yield sd


class Units:
    """Writes units named ``t-<test>-<n>-<random>.<type>`` into the user manager."""

    _counter = itertools.count()

    def __init__(self, manager: UserManager, sd: Systemd, test_name: str) -> None:
        self.manager = manager
        self.sd = sd
        self.stem = re.sub(r"[^A-Za-z0-9]+", "-", test_name).strip("-")[:40]
        self.names: list[str] = []

    def name(self, suffix: str = "service") -> str:
        """A fresh unique unit name (no file written)."""
        name = f"t-{self.stem}-{next(self._counter)}-{uuid.uuid4().hex[:6]}.{suffix}"
        self.names.append(name)
        return name

    def write(self, text: str, *, suffix: str = "service", name: str | None = None) -> str:
        """Write a unit (a fresh name unless ``name`` is given), reload, return its name."""
        if name is None:
            name = self.name(suffix)
        elif name not in self.names:
            self.names.append(name)
        self.manager.write_unit(name, text)
        self.sd.daemon_reload()
        return name

    def service(self, exec_start: str, **settings: str) -> str:
        """A service unit with ``ExecStart=exec_start`` and extra ``[Service]`` settings."""
        lines = ["[Service]", f"ExecStart={exec_start}", *(f"{k}={v}" for k, v in settings.items())]
        return self.write("\n".join(lines) + "\n")

    def cleanup(self) -> None:
        # A unit the test removed itself is not found: expected. Any other error (a stop that
        # times out, a manager that went away) fails the test instead of leaking into the next.
        for name in self.names:
            with contextlib.suppress(UnitNotFoundError):
                self.sd.stop(name, timeout=30)
            with contextlib.suppress(UnitNotFoundError):
                self.sd.reset_failed(name)
            self.manager.remove_unit(name)
        if self.names:
            self.sd.daemon_reload()


@pytest.fixture
def units(
    user_manager: UserManager, user_systemd: Systemd, request: pytest.FixtureRequest
) -> Iterator[Units]:
    helper = Units(user_manager, user_systemd, request.node.name)
    try:
        yield helper
    finally:
        helper.cleanup()


def script_path(name: str) -> Path:
    """A helper script shipped with the tests (run by units)."""
    return Path(__file__).resolve().parent / "data" / "systemd" / name


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
