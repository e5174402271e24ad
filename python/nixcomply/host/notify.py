"""The sd_notify protocol, spoken directly over ``$NOTIFY_SOCKET`` (no library).

A ``Type=notify`` service tells systemd it is ready (``READY=1``), what it is doing
(``STATUS=...``), that it is alive (``WATCHDOG=1``, at least every ``WatchdogSec``) and
that it is shutting down (``STOPPING=1``). The protocol is one datagram of
newline-separated ``KEY=VALUE`` assignments sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET``: a path, or an abstract name written with a leading ``@``
(sd_notify(3)). Outside systemd the variable is unset and every call is a cheap no-op
that returns ``False``, so the daemon runs the same way from a terminal.

Every function takes an optional ``environ`` so tests can point it at their own socket.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

logger = logging.getLogger(__name__)

NOTIFY_SOCKET: Final = "NOTIFY_SOCKET"
WATCHDOG_USEC: Final = "WATCHDOG_USEC"
WATCHDOG_PID: Final = "WATCHDOG_PID"
# systemd reads at most one page-ish datagram; a status line longer than this is cut.
MAX_STATUS_CHARS: Final = 1024


def _socket_address(value: str) -> str | bytes:
    if value.startswith("@"):
        # Linux abstract namespace: a leading NUL byte instead of the "@".
        return b"\0" + value[1:].encode()
    return value


def notify(*fields: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``fields`` (each ``KEY=VALUE``) in one datagram to ``$NOTIFY_SOCKET``.

    Returns ``True`` when the message was sent, ``False`` when not running under
    systemd (no ``$NOTIFY_SOCKET``) or when sending failed (logged as a warning: a daemon
    should not die because a status line was lost; a missed watchdog is systemd's to
    judge). Raises ``ValueError`` for a field without ``=`` or with a newline, which
    would otherwise smuggle in an assignment of its own.
    """
    if not fields:
        raise ValueError("notify() needs at least one KEY=VALUE field")
    for field in fields:
        if "=" not in field or field.startswith("="):
            raise ValueError(f"notify field {field!r} is not KEY=VALUE")
        if "\n" in field or "\0" in field:
            raise ValueError(f"notify field {field!r} contains a newline or NUL")
    env = os.environ if environ is None else environ
    address = env.get(NOTIFY_SOCKET, "")
    if not address:
        return False
    if not address.startswith(("/", "@")):
        logger.warning("ignoring unsupported %s=%s (only paths and @abstract names)", NOTIFY_SOCKET, address)
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, _socket_address(address))
    except OSError as e:
        logger.warning("could not notify systemd at %s: %s", address, e)
        return False
    return True


def ready(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd start-up is finished (a ``Type=notify`` unit becomes active)."""
    fields = ["READY=1"]
    if status is not None:
        fields.append(_status_field(status))
    return notify(*fields, environ=environ)


def status(text: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Set the unit's status line (``systemctl status``, the ``StatusText`` property).
    Newlines become spaces and long text is cut, so any message is safe to pass."""
    return notify(_status_field(text), environ=environ)


def watchdog(*, environ: Mapping[str, str] | None = None) -> bool:
    """Pet the watchdog: "still alive". Send it at least every :func:`watchdog_interval` / 2."""
    return notify("WATCHDOG=1", environ=environ)


def stopping(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd the service is shutting down on purpose."""
    fields = ["STOPPING=1"]
    if status is not None:
        fields.append(_status_field(status))
    return notify(*fields, environ=environ)


def watchdog_interval(*, environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds (``$WATCHDOG_USEC``), or ``None`` when no watchdog is
    armed for this process (unset, zero, malformed, or ``$WATCHDOG_PID`` names another
    process, as after a fork)."""
    env = os.environ if environ is None else environ
    raw = env.get(WATCHDOG_USEC, "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get(WATCHDOG_PID)
    if pid is not None and pid != str(os.getpid()):
        return None
    return usec / 1_000_000


def _status_field(text: str) -> str:
    flat = " ".join(text.replace("\0", " ").splitlines())
    return "STATUS=" + flat[:MAX_STATUS_CHARS]
