"""A small typed adapter over the systemd manager's D-Bus API (through pystemd).

This is the only module that imports pystemd, and only inside :meth:`Systemd.open`, so
``import nixcomply.host.systemd`` works without it (unit-name validation is needed by the
runbook validator on any machine). It talks to the real manager: the system manager on a
host, or a user manager (tests and the sandbox demo start one with
:class:`nixcomply.sandbox.usermanager.UserManager` and connect with ``bus_address=``).

Why pystemd's low-level ``dbuslib`` and not its ``Manager``/``Unit`` objects: those
introspect every object (one extra call and an XML parse per unit) and give untyped
attributes; waiting for a job needs signal matching, which only ``dbuslib`` offers. The
calls here are the ones ``systemctl`` makes: ``LoadUnit`` (which loads a unit that is not
in memory, where ``GetUnit`` would fail), ``Properties.GetAll``, ``StartUnit`` and friends
followed by the ``JobRemoved`` signal that carries the job's result.

One :class:`Systemd` is one bus connection and is not thread-safe: code that checks units
concurrently opens one per thread.
"""

from __future__ import annotations

import enum
import functools
import importlib.machinery
import importlib.util
import logging
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeAlias, TypeVar, assert_never

from nixcomply.errors import EXIT_USAGE, NixcomplyError, UsageError

logger = logging.getLogger(__name__)

DEFAULT_JOB_TIMEOUT: Final = 90.0

_DEST: Final = b"org.freedesktop.systemd1"
_PATH: Final = b"/org/freedesktop/systemd1"
_MANAGER: Final = b"org.freedesktop.systemd1.Manager"
_PROPERTIES: Final = b"org.freedesktop.DBus.Properties"

# systemd's unit types (src/basic/unit-def.c).
UNIT_TYPES: Final = frozenset(
    {"service", "socket", "target", "device", "mount", "automount", "swap", "timer", "path", "slice", "scope"}
)
# Types whose own interface has a Result property (why the unit last stopped or failed).
_TYPES_WITH_RESULT: Final = {
    "service": "Service",
    "socket": "Socket",
    "mount": "Mount",
    "swap": "Swap",
    "timer": "Timer",
    "path": "Path",
    "automount": "Automount",
}
UNIT_NAME_MAX: Final = 255
# systemd's VALID_CHARS plus "@" for the instance part (src/basic/unit-name.c).
_NAME_CHARS: Final = r"A-Za-z0-9:_.\\"
_UNIT_NAME_RE: Final = re.compile(
    rf"(?P<prefix>[{_NAME_CHARS}-]+)(?:@(?P<instance>[{_NAME_CHARS}@-]*))?\.(?P<type>[a-z]+)"
)
_JOB_MODES: Final = frozenset({"replace", "fail", "ignore-dependencies", "ignore-requirements"})
# Results of finished jobs that systemd keeps for us until someone waits for them.
_MAX_REMEMBERED_JOBS: Final = 4096


class SystemdError(NixcomplyError):
    """Raised when the manager refuses or fails a request (access denied, a D-Bus error).
    Carries the unit name when there is one. Exit code 1."""

    def __init__(self, message: str, *, unit: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.unit = unit


class SystemdUnavailableError(SystemdError):
    """Raised when systemd cannot be reached at all: pystemd is not installed, the bus
    cannot be opened, or a user manager cannot be started. Exit code 2 (a setup problem)."""

    exit_code = EXIT_USAGE


class UnitNotFoundError(SystemdError):
    """Raised when the manager has no unit file (and no running unit) of that name. Exit code 2."""

    exit_code = EXIT_USAGE


class SystemdTimeoutError(SystemdError):
    """Raised when a job or a :meth:`Systemd.wait_for` condition does not finish in time.
    ``last_state`` is what the unit looked like at the deadline, when known."""

    def __init__(self, message: str, *, unit: str | None = None, last_state: UnitState | None = None) -> None:
        super().__init__(message, unit=unit)
        self.last_state = last_state


class InvalidUnitNameError(UsageError, ValueError):
    """Raised by :func:`validate_unit_name` before anything reaches D-Bus. Also a
    ``ValueError`` so pydantic validators turn it into a validation problem."""

    def __init__(self, message: str, *, unit: str) -> None:
        super().__init__(message)
        self.unit = unit


def validate_unit_name(name: str, *, allow_template: bool = False) -> str:
    """Return ``name`` if it is a valid systemd unit name, else raise :class:`InvalidUnitNameError`.

    The grammar is systemd's own: at most 255 characters, ASCII letters, digits and
    ``:-_.\\`` (plus ``@`` to separate an instance), a known type suffix. A template
    (``foo@.service``) cannot be started or queried, so it is refused unless asked for.
    A guardrail for runbooks: a name with spaces, newlines, ``/`` or shell syntax never
    reaches the manager.
    """
    if not isinstance(name, str):
        raise InvalidUnitNameError(f"invalid unit name {name!r}: not a string", unit=str(name))
    shown = repr(name if len(name) <= 80 else name[:80] + "...")

    def bad(why: str) -> InvalidUnitNameError:
        return InvalidUnitNameError(f"invalid unit name {shown}: {why}", unit=name)

    if not name:
        raise bad("empty")
    if len(name) > UNIT_NAME_MAX:
        raise bad(f"longer than {UNIT_NAME_MAX} characters ({len(name)})")
    if any(c.isspace() or not c.isprintable() for c in name):
        raise bad("contains whitespace or control characters")
    if "/" in name:
        raise bad("contains '/' (a path, not a unit name)")
    if "." not in name:
        raise bad(f"no type suffix (one of {', '.join(sorted('.' + t for t in UNIT_TYPES))})")
    suffix = name.rsplit(".", 1)[1]
    if suffix not in UNIT_TYPES:
        raise bad(
            f"unknown type suffix '.{suffix}' (one of {', '.join(sorted('.' + t for t in UNIT_TYPES))})"
        )
    match = _UNIT_NAME_RE.fullmatch(name)
    if match is None:
        if name.startswith("@"):
            raise bad("empty name before '@'")
        raise bad("only ASCII letters, digits and ':-_.\\@' are allowed")
    if match["instance"] == "" and not allow_template:
        raise bad("a template (no instance after '@') cannot be started or queried")
    return name


class UnitStateLike(Protocol):
    """What a unit's state is read for (findings, heal evidence, the health gate);
    :class:`UnitState` is one, and so are the checks' test doubles."""

    @property
    def name(self) -> str: ...
    @property
    def load_state(self) -> str: ...
    @property
    def active_state(self) -> str: ...
    @property
    def sub_state(self) -> str: ...
    @property
    def result(self) -> str | None: ...
    @property
    def n_restarts(self) -> int | None: ...
    @property
    def main_pid(self) -> int | None: ...


def describe_unit(state: UnitStateLike) -> str:
    """``active/running``, ``failed/failed (exit-code)``, ``not-found, inactive/dead``: one
    unit's state for messages."""
    text = f"{state.active_state}/{state.sub_state}"
    if state.load_state != "loaded":
        text = f"{state.load_state}, {text}"
    if state.result not in (None, "success"):
        text += f" ({state.result})"
    return text


def unit_record(state: UnitStateLike) -> dict[str, Any]:
    """One unit's state as findings and evidence keep it (the one definition: a check's
    ``observed`` and a heal step's data say the same thing the same way). A full
    :class:`UnitState` adds when it last became active, its unit-file state and its status
    text."""
    record: dict[str, Any] = {
        "name": state.name,
        "load_state": state.load_state,
        "active_state": state.active_state,
        "sub_state": state.sub_state,
        "result": state.result,
        "n_restarts": state.n_restarts,
        "main_pid": state.main_pid,
    }
    if isinstance(state, UnitState):
        entered = state.active_enter_timestamp
        record["active_enter_timestamp"] = entered.isoformat() if entered else None
        record["unit_file_state"] = state.unit_file_state
        record["status_text"] = state.status_text
    return record


@dataclass(frozen=True)
class UnitState:
    """One unit as the manager sees it at one moment.

    ``result``, ``n_restarts``, ``main_pid`` and ``status_text`` are ``None`` for unit
    types that do not have them (``result`` exists for services, sockets, mounts, swaps,
    timers, paths and automounts; the others only for services). ``main_pid`` is ``None``
    when no main process runs.
    """

    name: str
    load_state: str
    active_state: str
    sub_state: str
    result: str | None
    n_restarts: int | None
    main_pid: int | None
    active_enter_timestamp: datetime | None
    unit_file_state: str
    status_text: str | None

    @property
    def is_active(self) -> bool:
        """What ``systemctl is-active`` counts as active."""
        return self.active_state in ("active", "reloading", "refreshing")

    @property
    def is_failed(self) -> bool:
        return self.active_state == "failed"

    def describe(self) -> str:
        """:func:`describe_unit` of this state, for messages."""
        return describe_unit(self)


@dataclass(frozen=True)
class ListedUnit:
    """One row of ``ListUnits``: cheaper than a :class:`UnitState`, without result or pid."""

    name: str
    description: str
    load_state: str
    active_state: str
    sub_state: str


class JobAction(enum.StrEnum):
    """What a job does to a unit, and the manager method that queues it."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"
    RELOAD_OR_RESTART = "reload-or-restart"

    @property
    def method(self) -> bytes:
        match self:
            case JobAction.START:
                return b"StartUnit"
            case JobAction.STOP:
                return b"StopUnit"
            case JobAction.RESTART:
                return b"RestartUnit"
            case JobAction.RELOAD_OR_RESTART:
                return b"ReloadOrRestartUnit"
            case _:
                assert_never(self)


@dataclass(frozen=True)
class Job:
    """A job the manager accepted; :meth:`Systemd.wait_job` waits for its result."""

    unit: str
    action: JobAction
    path: bytes


UnitPredicate = Callable[[UnitState], bool]
_C = TypeVar("_C")
# How code that needs systemd gets it: a factory that returns a new, unopened connection
# per call (one connection is not thread-safe; the checks run in parallel). The parameter
# is what the caller uses of it: SystemdFactory[Systemd] for runbook actions, a protocol
# (checks.context.SystemdLike, reconcile.gate.GateSystemd) where tests pass fakes.
SystemdFactory: TypeAlias = Callable[[], AbstractContextManager[_C]]


def connector(*, user_mode: bool = False, bus_address: str | None = None) -> Callable[[], Systemd]:
    """The factory of :class:`Systemd` connections to the manager named (the system
    manager, this process's user manager, or an explicit bus). Connecting needs pystemd;
    without it each connection fails with :class:`SystemdUnavailableError`."""

    def connect() -> Systemd:
        return Systemd(user_mode=user_mode, bus_address=bus_address)

    return connect


def connector_if_installed(
    *, user_mode: bool = False, bus_address: str | None = None
) -> SystemdFactory[Systemd] | None:
    """:func:`connector`, or None when pystemd is not installed (the runtime checks that
    need systemd then report errors instead of each failing to connect)."""

    if importlib.util.find_spec("pystemd") is None:
        return None
    return connector(user_mode=user_mode, bus_address=bus_address)


class Systemd:
    """A connection to a systemd manager.

    ``Systemd()`` is the system manager (a real host); ``Systemd(user_mode=True)`` is the
    user manager that ``$DBUS_SESSION_BUS_ADDRESS`` / ``$XDG_RUNTIME_DIR`` of *this*
    process point at; ``Systemd(bus_address="unix:path=...")`` is an explicit bus, which
    is how tests reach the user manager they started without touching ``os.environ``
    (``peer_to_peer=True`` for a manager's private socket, ``.../systemd/private``).
    Use as a context manager, or call :meth:`open` and :meth:`close`.
    """

    def __init__(
        self, *, user_mode: bool = False, bus_address: str | None = None, peer_to_peer: bool = False
    ) -> None:
        if bus_address is not None and user_mode:
            raise ValueError("give user_mode or bus_address, not both")
        self.user_mode = user_mode
        self.bus_address = bus_address
        self.peer_to_peer = peer_to_peer
        self._bus: Any = None
        self._errors: Any = None
        self._job_results: OrderedDict[bytes, str] = OrderedDict()
        self._on_job_removed: Callable[..., None] | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def where(self) -> str:
        """Which manager this is, for messages."""
        if self.bus_address is not None:
            return f"the systemd manager at {self.bus_address}"
        return "the systemd user manager" if self.user_mode else "the systemd system manager"

    def open(self) -> None:
        """Connect, and subscribe to job signals so :meth:`wait_job` learns job results."""
        if self._bus is not None:
            return
        try:
            # pystemd is optional (extra `systemd`): imported only when a connection opens
            _low_level_pystemd()
            from pystemd import dbusexc  # noqa: PLC0415
            from pystemd.dbuslib import DBus, DBusAddress  # noqa: PLC0415
        except ImportError as e:
            raise SystemdUnavailableError(
                f"pystemd is not available ({e})",
                hint="install nixcomply with the systemd extra: pip install 'nixcomply[systemd]'",
            ) from None
        self._errors = dbusexc
        if self.bus_address is not None:
            bus = DBusAddress(self.bus_address.encode(), self.peer_to_peer)
        else:
            bus = DBus(user_mode=self.user_mode)
        try:
            bus.open()
        except dbusexc.DBusBaseError as e:
            raise SystemdUnavailableError(
                f"cannot connect to {self.where}: {_dbus_message(e)}",
                hint="is systemd running here? (tests start a user manager; see nixcomply.sandbox.usermanager)",
            ) from None
        self._bus = bus

        results = self._job_results

        # pystemd keeps only a raw pointer to the callback: self._on_job_removed keeps it
        # alive as long as the bus. It must be a plain function (pystemd sets an attribute
        # on it) and must not raise (exceptions cannot cross the C callback).
        def on_job_removed(msg: Any, error: Any = None, userdata: Any = None) -> None:
            try:
                msg.process_reply(False)
                _job_id, path, _unit, result = msg.body
                results[bytes(path)] = _text(result)
                while len(results) > _MAX_REMEMBERED_JOBS:
                    results.popitem(last=False)
            except Exception:  # pragma: no cover - a malformed signal is ignored
                logger.debug("ignoring a malformed JobRemoved signal", exc_info=True)

        self._on_job_removed = on_job_removed
        try:
            bus.match_signal(_DEST, _PATH, _MANAGER, b"JobRemoved", on_job_removed)
            self._call(_PATH, _MANAGER, b"Subscribe", b"", [])
        except dbusexc.DBusBaseError as e:
            self.close()
            raise SystemdUnavailableError(f"cannot subscribe to {self.where}: {_dbus_message(e)}") from None
        except BaseException:
            self.close()
            raise
        logger.debug("connected to %s", self.where)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
            self._bus = None

    # -- reading -------------------------------------------------------------------------

    def unit_state(self, name: str) -> UnitState:
        """The state of unit ``name`` (loading it if it is not in memory).

        Raises :class:`UnitNotFoundError` when there is no such unit, and
        :class:`InvalidUnitNameError` before any call when the name is malformed.
        """
        unit_path = self._load(name)
        props = self._get_all(unit_path, "Unit", name)
        load_state = _text(props.get(b"LoadState", b""))
        active_state = _text(props.get(b"ActiveState", b""))
        # A unit whose file was removed while it ran is still there: report it, not "not found".
        if load_state == "not-found" and active_state in ("inactive", ""):
            raise UnitNotFoundError(f"unit {name} not found on {self.where}", unit=name)
        unit_type = name.rsplit(".", 1)[1]
        result: str | None = None
        n_restarts: int | None = None
        main_pid: int | None = None
        status_text: str | None = None
        if unit_type in _TYPES_WITH_RESULT:
            typed = self._get_all(unit_path, _TYPES_WITH_RESULT[unit_type], name)
            result = _text(typed[b"Result"]) if b"Result" in typed else None
            if unit_type == "service":
                n_restarts = int(typed.get(b"NRestarts", 0))
                main_pid = int(typed.get(b"MainPID", 0)) or None
                status_text = _text(typed.get(b"StatusText", b""))
        return UnitState(
            name=name,
            load_state=load_state,
            active_state=active_state,
            sub_state=_text(props.get(b"SubState", b"")),
            result=result,
            n_restarts=n_restarts,
            main_pid=main_pid,
            active_enter_timestamp=_timestamp(props.get(b"ActiveEnterTimestamp", 0)),
            unit_file_state=_text(props.get(b"UnitFileState", b"")),
            status_text=status_text,
        )

    def properties(self, name: str, interface: str = "Unit") -> dict[str, Any]:
        """Every property of one interface of a unit (``Unit``, ``Service``, ``Timer``...),
        as pystemd decodes them (strings come back as ``bytes``). For checks that need more
        than :class:`UnitState`."""
        unit_path = self._load(name)
        return {_text(k): v for k, v in self._get_all(unit_path, interface, name).items()}

    def failed_units(self) -> frozenset[str]:
        """Names of the units in the ``failed`` state right now."""
        rows = self._call(_PATH, _MANAGER, b"ListUnitsFiltered", b"as", [[b"failed"]])
        return frozenset(_text(row[0]) for row in rows)

    def list_units(
        self, patterns: Sequence[str] = (), *, states: Sequence[str] = ()
    ) -> tuple[ListedUnit, ...]:
        """Units in memory whose name matches one of the glob ``patterns`` (all when empty) and
        whose state is one of ``states`` (active, sub or load state; all when empty)."""
        rows = self._call(
            _PATH,
            _MANAGER,
            b"ListUnitsByPatterns",
            b"asas",
            [[s.encode() for s in states], [p.encode() for p in patterns]],
        )
        return tuple(
            ListedUnit(
                name=_text(r[0]),
                description=_text(r[1]),
                load_state=_text(r[2]),
                active_state=_text(r[3]),
                sub_state=_text(r[4]),
            )
            for r in rows
        )

    def wait_for(
        self,
        name: str,
        target: str | UnitPredicate,
        *,
        timeout: float,
        interval: float = 0.05,
    ) -> UnitState:
        """Poll ``name`` until its ``ActiveState`` equals ``target`` (or ``target(state)`` is
        true) and return that state; raise :class:`SystemdTimeoutError` (with the last
        state) when ``timeout`` seconds pass first."""
        predicate: UnitPredicate
        if isinstance(target, str):
            predicate = functools.partial(_has_active_state, target)
            what = f"ActiveState={target}"
        else:
            predicate = target
            what = getattr(target, "__name__", "the condition")
        deadline = time.monotonic() + timeout
        while True:
            state = self.unit_state(name)
            if predicate(state):
                return state
            if time.monotonic() >= deadline:
                raise SystemdTimeoutError(
                    f"unit {name} did not reach {what} within {timeout:g} s (it is {state.describe()})",
                    unit=name,
                    last_state=state,
                )
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    # -- jobs ----------------------------------------------------------------------------

    def submit(self, name: str, action: JobAction, *, mode: str = "replace") -> Job:
        """Queue a job and return at once (a ``Type=notify`` start stays queued until the
        service sends READY=1); :meth:`wait_job` waits for it."""
        validate_unit_name(name)
        if mode not in _JOB_MODES:
            raise ValueError(f"job mode {mode!r} is not one of {sorted(_JOB_MODES)}")
        path = self._call(_PATH, _MANAGER, action.method, b"ss", [name.encode(), mode.encode()], unit=name)
        job = Job(unit=name, action=action, path=bytes(path))
        logger.debug("%s %s: job %s", action, name, job.path.decode())
        return job

    def wait_job(self, job: Job, *, timeout: float = DEFAULT_JOB_TIMEOUT) -> str:
        """Wait until the manager removes ``job`` and return its result: ``done``,
        ``failed``, ``timeout``, ``canceled``, ``dependency``, ``skipped``... (the
        ``JobRemoved`` result). "done" means the job ran, not that the unit stays up: a
        ``Type=simple`` service whose program exits at once starts "done" and then fails."""
        bus = self._connected()
        deadline = time.monotonic() + timeout
        while job.path not in self._job_results:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SystemdTimeoutError(
                    f"{job.action} job of {job.unit} did not finish within {timeout:g} s",
                    unit=job.unit,
                )
            try:
                msg = bus.process()
                if job.path in self._job_results:
                    break
                if msg.is_empty():
                    # Wakes for any message; at most 100 ms so a missed wake-up costs little.
                    bus.wait(int(min(remaining, 0.1) * 1_000_000))
            except self._errors.DBusBaseError as e:
                raise SystemdError(
                    f"lost {self.where} while waiting for {job.unit}: {_dbus_message(e)}", unit=job.unit
                ) from None
        result = self._job_results.pop(job.path)
        logger.debug("%s %s: %s", job.action, job.unit, result)
        return result

    def start(self, name: str, *, timeout: float = DEFAULT_JOB_TIMEOUT, mode: str = "replace") -> str:
        """Start ``name`` and wait for the job; returns the job result (see :meth:`wait_job`)."""
        return self.wait_job(self.submit(name, JobAction.START, mode=mode), timeout=timeout)

    def stop(self, name: str, *, timeout: float = DEFAULT_JOB_TIMEOUT, mode: str = "replace") -> str:
        return self.wait_job(self.submit(name, JobAction.STOP, mode=mode), timeout=timeout)

    def restart(self, name: str, *, timeout: float = DEFAULT_JOB_TIMEOUT, mode: str = "replace") -> str:
        return self.wait_job(self.submit(name, JobAction.RESTART, mode=mode), timeout=timeout)

    def reload_or_restart(
        self, name: str, *, timeout: float = DEFAULT_JOB_TIMEOUT, mode: str = "replace"
    ) -> str:
        return self.wait_job(self.submit(name, JobAction.RELOAD_OR_RESTART, mode=mode), timeout=timeout)

    # -- manager -------------------------------------------------------------------------

    def daemon_reload(self) -> None:
        """Re-read unit files; returns when the manager has finished reloading."""
        self._call(_PATH, _MANAGER, b"Reload", b"", [])

    def reset_failed(self, name: str | None = None) -> None:
        """Forget the failed state (and start-limit counter) of ``name``, or of every unit."""
        if name is None:
            self._call(_PATH, _MANAGER, b"ResetFailed", b"", [])
        else:
            validate_unit_name(name)
            self._call(_PATH, _MANAGER, b"ResetFailedUnit", b"s", [name.encode()], unit=name)

    # -- plumbing ------------------------------------------------------------------------

    def _connected(self) -> Any:
        if self._bus is None:
            raise RuntimeError("Systemd is not open; use it as a context manager or call open()")
        return self._bus

    def _load(self, name: str) -> bytes:
        validate_unit_name(name)
        return bytes(self._call(_PATH, _MANAGER, b"LoadUnit", b"s", [name.encode()], unit=name))

    def _get_all(self, unit_path: bytes, interface: str, name: str) -> dict[bytes, Any]:
        full = b"org.freedesktop.systemd1." + interface.encode()
        props = self._call(unit_path, _PROPERTIES, b"GetAll", b"s", [full], unit=name)
        return dict(props) if props else {}

    def _call(
        self,
        path: bytes,
        interface: bytes,
        method: bytes,
        signature: bytes,
        args: Iterable[Any],
        *,
        unit: str | None = None,
    ) -> Any:
        from pystemd.dbuslib import apply_signature  # noqa: PLC0415 - optional, see open()

        bus = self._connected()
        call_args = apply_signature(signature, list(args)) if signature else []
        try:
            return bus.call_method(_DEST, path, interface, method, call_args).body
        except self._errors.DBusNoSuchUnitError as e:
            raise UnitNotFoundError(
                f"unit {unit} not found on {self.where}: {_dbus_message(e)}", unit=unit
            ) from None
        except self._errors.DBusAccessDeniedError as e:
            raise SystemdError(
                f"{self.where} refused {method.decode()}{f' of {unit}' if unit else ''}: {_dbus_message(e)}",
                unit=unit,
                hint="managing system units needs root",
            ) from None
        except self._errors.DBusBaseError as e:
            raise SystemdError(
                f"{method.decode()}{f' of {unit}' if unit else ''} failed on {self.where}: {_dbus_message(e)}",
                unit=unit,
            ) from None


def _low_level_pystemd() -> None:
    """Make ``import pystemd.dbuslib`` load only pystemd's D-Bus layer. pystemd's package
    ``__init__`` also imports its high-level ``systemd1``/``machine1`` objects and with them
    lxml, ~4 MB of a cycle's memory that nixcomply never uses (it calls the manager through
    ``dbuslib`` alone, see the module docstring). The package's directory is registered as
    a bare package, so its submodules import as usual; an application that imported pystemd
    itself keeps its own."""
    if "pystemd" in sys.modules:
        return
    spec = importlib.util.find_spec("pystemd")
    if spec is None or spec.submodule_search_locations is None:
        return  # not installed: the import that follows says so
    package = importlib.util.module_from_spec(
        importlib.machinery.ModuleSpec("pystemd", None, is_package=True)
    )
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["pystemd"] = package


def _has_active_state(wanted: str, state: UnitState) -> bool:
    return state.active_state == wanted


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _timestamp(usec: Any) -> datetime | None:
    """systemd timestamps are microseconds since the epoch; 0 means never."""
    value = int(usec or 0)
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC) if value else None


def _dbus_message(error: BaseException) -> str:
    message = getattr(error, "err_message", None)
    if isinstance(message, tuple | list) and message:
        message = message[-1]
    if message:
        return _text(message)
    return str(error)
