"""A real systemd user manager in a private mount namespace, for tests and the sandbox demo.

``systemd --user`` manages real units (start, stop, restart, Type=notify, watchdogs)
without being PID 1. Three things make it work on a machine not booted with systemd,
or inside a VM or container: a private mount namespace (``unshare -m --propagation
private``) with a tmpfs on ``/run/systemd`` holding the ``/run/systemd/system`` marker
that says "booted with systemd" (invisible to the rest of the machine), a runtime
directory of its own (``$XDG_RUNTIME_DIR``), and a cgroup subtree of its own (see
:class:`_CgroupTree`: without it two managers kill each other's units). It needs root.

Never run ``systemd --system`` this way: its tmpfiles setup would clean the machine's /tmp.

The manager's environment is built from scratch (PATH, HOME under the manager's own
directory, XDG_RUNTIME_DIR, SYSTEMD_UNIT_PATH), so nothing of the caller's environment
(``NOTIFY_SOCKET``, a session bus, units in root's home) leaks in. Its unit search path
is ``<root>/units`` followed by systemd's built-in user directories (the trailing ``:``),
which provide the targets it needs and ``dbus.socket``, the user bus that
:attr:`UserManager.bus_address` names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

from nixcomply.core import process
from nixcomply.core.fsutil import atomic_write_text, ensure_dir
from nixcomply.host.systemd import SystemdUnavailableError, connector, validate_unit_name

if TYPE_CHECKING:
    from nixcomply.host.systemd import Systemd

logger = logging.getLogger(__name__)

SYSTEMD_BINARY: Final = Path("/lib/systemd/systemd")
DEFAULT_START_TIMEOUT: Final = 30.0
DEFAULT_STOP_TIMEOUT: Final = 15.0
# sun_path is 108 bytes with the NUL; the manager's sockets live under the runtime directory.
_MAX_SOCKET_PATH: Final = 100
_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Runs inside the new mount namespace as: sh -c SCRIPT SYSTEMD LEVEL LOG [CGROUP.PROCS...].
# The user manager logs to the kernel log when it has no journal: inside this namespace
# the log file is bind-mounted over /dev/kmsg (it would reopen /dev/console whatever its
# stderr is, and /dev/console must be a terminal). Writing its own pid into fresh cgroups
# first gives each manager a cgroup tree of its own. exec keeps the pid: the spawned child
# is systemd itself, so SIGTERM reaches it directly.
_NAMESPACE_SCRIPT: Final = (
    'set -e; bin=$0; level=$1; log=$2; shift 2; for procs; do echo $$ > "$procs"; done; '
    "mkdir -p /run/systemd; mount -t tmpfs -o mode=0755 tmpfs /run/systemd; mkdir /run/systemd/system; "
    'mount --bind "$log" /dev/kmsg; exec "$bin" --user --log-level="$level" --log-target=kmsg'
)


class _CgroupTree:
    """The cgroup subtree a user manager runs in, one per manager.

    A user manager treats the cgroup it starts in as its own (minus a trailing
    ``init.scope``) and creates ``app.slice/<unit>`` below it, in every hierarchy. Two
    managers started in the same cgroup would share those directories: stopping one kills
    the other's units (its bus daemon first). So each manager starts in
    ``<parent>/nixcomply-um-<id>/init.scope`` of the hierarchies systemd tracks processes
    in (the unified one and the named ``systemd`` one), like ``user@.service`` on a host.
    After the manager exits, anything left in the subtree is killed and the directories
    are removed, in every hierarchy.
    """

    _TRACKING: Final = ("", "name=systemd")

    def __init__(self) -> None:
        self.name = f"nixcomply-um-{uuid.uuid4().hex[:12]}"
        self.roots: list[Path] = []
        self.procs: list[Path] = []

    def create(self) -> None:
        """Make the directories; on a machine where that fails, warn and go without."""
        try:
            mounts = _cgroup_mounts()
            own = _own_cgroups()
            base_path = own.get("", own.get("name=systemd"))
            if base_path is None:
                raise OSError("not in a unified or systemd cgroup hierarchy")
            base = PurePosixPath(base_path).parent.relative_to("/")
            self.roots = [mount / base / self.name for mount in mounts.values()]
            for key in self._TRACKING:
                if key in mounts:
                    scope = mounts[key] / base / self.name / "init.scope"
                    scope.mkdir(parents=True)
                    self.procs.append(scope / "cgroup.procs")
        except (OSError, ValueError) as e:
            logger.warning("no cgroup of its own for the user manager (%s); never run two at once", e)
            self.remove()
            self.procs = []

    def remove(self) -> None:
        """Kill whatever is left in the subtree and remove its directories."""
        for root in self.roots:
            if not root.is_dir():
                continue
            leftovers = _cgroup_pids(root)
            if leftovers:
                logger.warning("killing %d process(es) the user manager left in %s", len(leftovers), root)
                for pid in leftovers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while _cgroup_pids(root) and time.monotonic() < deadline:
                    time.sleep(0.02)
            # Deepest first: a cgroup is removed with rmdir once it has no children.
            for directory, _dirs, _files in sorted(os.walk(root), key=lambda w: -len(w[0])):
                try:
                    os.rmdir(directory)
                except OSError as e:
                    logger.debug("could not remove cgroup %s: %s", directory, e)


# Mount options of a v1 cgroup hierarchy that are not controllers.
_CGROUP_OPTIONS: Final = frozenset({"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode"})


def _cgroup_mounts() -> dict[str, Path]:
    """Where each cgroup hierarchy is mounted, keyed like the middle field of
    /proc/self/cgroup: "" for the unified one, "name=systemd", "cpu,cpuacct"..."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = right.split()
        if len(fields) < 3 or fields[0] not in ("cgroup", "cgroup2"):
            continue
        if fields[0] == "cgroup2":
            key = ""
        else:
            options = fields[2].split(",")
            key = ",".join(
                o for o in options if o not in _CGROUP_OPTIONS and ("=" not in o or o.startswith("name="))
            )
        mounts.setdefault(key, Path(left.split()[4]))
    return mounts


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path in each hierarchy, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        own[controllers] = path
    return own


def _cgroup_pids(root: Path) -> list[int]:
    pids: list[int] = []
    for directory, _dirs, files in os.walk(root):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError, ValueError):
                pids.extend(int(p) for p in (Path(directory) / "cgroup.procs").read_text().split())
    return pids


class UserManager:
    """``systemd --user`` rooted at ``root`` (a directory this object owns).

    Layout: ``root/units`` (unit files, :meth:`write_unit`), ``root/runtime``
    (``$XDG_RUNTIME_DIR``, mode 0700), ``root/home`` (``$HOME``), ``root/manager.log``
    (what systemd printed). Connect with ``Systemd(bus_address=um.bus_address)`` or
    :meth:`systemd`; run ``systemctl --user`` with :meth:`systemctl`.
    """

    def __init__(
        self,
        root: Path,
        *,
        systemd_binary: Path = SYSTEMD_BINARY,
        log_level: str = "notice",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        unit_paths: Sequence[Path] = (),
    ) -> None:
        self.root = root.resolve()
        # searched before unit_dir: the sandbox host points one at its running system's units
        self.unit_paths = tuple(unit_paths)
        self.unit_dir = self.root / "units"
        self.runtime_dir = self.root / "runtime"
        self.home = self.root / "home"
        self.log_file = self.root / "manager.log"
        self.systemd_binary = systemd_binary
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._child: process.Child | None = None
        self._cgroups: _CgroupTree | None = None

    # -- addresses and environment -------------------------------------------------------

    @property
    def bus_address(self) -> str:
        """The user bus (dbus-daemon, socket-activated by the manager), like a session's."""
        return f"unix:path={self.runtime_dir / 'bus'}"

    @property
    def private_address(self) -> str:
        """The manager's own peer-to-peer socket (what ``systemctl --user`` uses); connect
        with ``Systemd(bus_address=..., peer_to_peer=True)``. Needs no dbus-daemon."""
        return f"unix:path={self.runtime_dir / 'systemd' / 'private'}"

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs to reach this manager (``systemctl --user``,
        ``Systemd(user_mode=True)``): add it to that process's environment."""
        return {"XDG_RUNTIME_DIR": str(self.runtime_dir), "DBUS_SESSION_BUS_ADDRESS": self.bus_address}

    @property
    def pid(self) -> int | None:
        """The manager's pid while it runs."""
        return self._child.pid if self._child is not None and self._child.poll() is None else None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the manager and return once it answers on its bus."""
        if self._child is not None:
            raise RuntimeError("this user manager is already started")
        if os.geteuid() != 0:
            raise SystemdUnavailableError(
                "starting a systemd user manager in a private mount namespace needs root (unshare -m)",
                hint="run as root (CI does), or use a host's own systemd",
            )
        if not self.systemd_binary.exists():
            raise SystemdUnavailableError(
                f"{self.systemd_binary} not found", hint="install systemd (apt-get install systemd)"
            )
        longest = self.runtime_dir / "systemd" / "private"
        if len(str(longest)) > _MAX_SOCKET_PATH:
            raise SystemdUnavailableError(
                f"{self.root} is too deep for the manager's sockets (a unix socket path has at most "
                f"{_MAX_SOCKET_PATH} bytes)",
                hint="use a shorter directory",
            )
        ensure_dir(self.unit_dir)
        ensure_dir(self.home, mode=0o700)
        ensure_dir(self.runtime_dir, mode=0o700)
        self.runtime_dir.chmod(0o700)  # systemd refuses a runtime directory others can read
        env = {
            "PATH": _PATH,
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            # The trailing ":" appends systemd's built-in user unit directories.
            "SYSTEMD_UNIT_PATH": ":".join(str(p) for p in (*self.unit_paths, self.unit_dir)) + ":",
        }
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _NAMESPACE_SCRIPT,
            str(self.systemd_binary),
            self.log_level,
            str(self.log_file),
        ]
        self.log_file.touch()
        self._cgroups = _CgroupTree()
        self._cgroups.create()
        argv.extend(str(p) for p in self._cgroups.procs)
        started = time.monotonic()
        self._child = process.spawn(argv, env=env, cwd=self.root, log_file=self.log_file)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info(
            "systemd user manager %d ready in %.2f s under %s",
            self._child.pid,
            time.monotonic() - started,
            self.root,
        )

    def _wait_ready(self) -> None:
        # Not is-system-running: without a full boot it says "offline"/"degraded".
        # The bus socket appears once dbus.socket listens.
        deadline = time.monotonic() + self.start_timeout
        bus_socket = self.runtime_dir / "bus"
        child = self._child
        assert child is not None
        while True:
            if child.poll() is not None:
                raise SystemdUnavailableError(
                    f"systemd user manager exited with status {child.returncode} during start-up"
                    f"{self._log_tail()}"
                )
            result = self.systemctl("show", "--property=Version", "--value", check=False, timeout=5)
            if result.ok and result.stdout.strip() and bus_socket.is_socket():
                return
            if time.monotonic() > deadline:
                raise SystemdUnavailableError(
                    f"systemd user manager not ready after {self.start_timeout:g} s{self._log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (the manager stops its units and exits), SIGKILL after ``stop_timeout``."""
        child, self._child = self._child, None
        cgroups, self._cgroups = self._cgroups, None
        if child is None:
            return
        if not process.terminate(child, timeout=self.stop_timeout):
            logger.warning(
                "systemd user manager %d ignored SIGTERM for %g s and was killed; its cgroup goes next",
                child.pid,
                self.stop_timeout,
            )
        if cgroups is not None:
            cgroups.remove()
        logger.info("systemd user manager %d stopped (status %s)", child.pid, child.returncode)

    # -- units -----------------------------------------------------------------------------

    def write_unit(self, name: str, text: str) -> Path:
        """Write ``units/<name>`` (validated name); call :meth:`daemon_reload` to load a change."""
        validate_unit_name(name, allow_template=True)
        path = self.unit_dir / name
        atomic_write_text(path, text, durable=False)
        return path

    def remove_unit(self, name: str) -> None:
        validate_unit_name(name, allow_template=True)
        (self.unit_dir / name).unlink(missing_ok=True)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 30.0) -> process.Result:
        """``systemctl --user ARGS`` against this manager."""
        return process.run(
            ["systemctl", "--user", *args],
            check=check,
            timeout=timeout,
            env={"PATH": _PATH, "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", **self.env},
        )

    def daemon_reload(self) -> None:
        """Make the manager re-read unit files (returns when it has)."""
        self.systemctl("daemon-reload")

    def systemd(self) -> Systemd:
        """A :class:`~nixcomply.host.systemd.Systemd` connected to this manager (not yet opened)."""
        return self.connector()()

    def connector(self) -> Callable[[], Systemd]:
        """Connections to this manager, for whatever takes a systemd factory."""

        return connector(bus_address=self.bus_address)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return (":\n  " + "\n  ".join(tail)) if tail else ""
