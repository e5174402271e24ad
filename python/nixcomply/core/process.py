"""The only gateway to external commands.

Every command nixcomply runs goes through :func:`run`: an argv list (never a shell), a
timeout, output captured as text, the argv logged at debug level, and failures raised as
:class:`~nixcomply.errors.CommandError` subclasses that carry the command and its stderr.
Tests mock this one function (with ``autospec=True``) and assert the exact argv.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from nixcomply.errors import CommandError, CommandNotFoundError, CommandTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 600.0

# What to install when a program is missing (Debian package names; on NixOS these come
# with the system or with the nixcomply package).
_PACKAGE_HINTS = {
    "nix": "nix-bin",
    "nix-env": "nix-bin",
    "nix-store": "nix-bin",
    "nix-instantiate": "nix-bin",
    "git": "git",
    "sshd": "openssh-server",
    "systemctl": "systemd",
    "unshare": "util-linux",
    "journalctl": "systemd",
}


@dataclass(frozen=True)
class Result:
    """What a finished command left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def parsed(self, parse: Callable[[str], T]) -> T:
        """``parse(stdout)``; output the parser rejects (``ValueError``) is reported as a
        failure of this command, with its argv and stderr, like a non-zero exit."""
        try:
            return parse(self.stdout)
        except ValueError as e:
            raise CommandError(
                self.argv, returncode=self.returncode, stdout=self.stdout, stderr=self.stderr, reason=str(e)
            ) from None


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    allowed_returncodes: Sequence[int] = (0,),
) -> Result:
    """Run ``argv`` and return its :class:`Result`.

    ``check=True`` raises :class:`CommandError` unless the exit status is in
    ``allowed_returncodes``. ``env`` replaces the environment; ``extra_env`` adds to it.
    A missing program raises :class:`CommandNotFoundError`; a timeout kills the command
    and raises :class:`CommandTimeoutError`, whatever ``check`` says.
    """
    args = tuple(os.fspath(a) for a in argv)
    if not args:
        raise ValueError("empty argv")
    full_env: dict[str, str] | None = None
    if env is not None or extra_env is not None:
        full_env = dict(os.environ if env is None else env)
        full_env.update(extra_env or {})
    logger.debug("$ %s", shlex.join(args))
    start = time.monotonic()
    try:
        completed = subprocess.run(
            args,
            check=False,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except OSError as e:
        raise _not_started(args, e) from None
    except subprocess.TimeoutExpired as e:
        raise CommandTimeoutError(
            args,
            returncode=None,
            stdout=_text(e.stdout),
            stderr=_text(e.stderr),
            reason=f"timed out after {timeout:g} s and was killed",
        ) from None
    result = Result(
        argv=args,
        returncode=completed.returncode,
        stdout=completed.stdout,
        stderr=completed.stderr,
        duration=time.monotonic() - start,
    )
    logger.debug("exit %d after %.3f s: %s", result.returncode, result.duration, args[0])
    if check and result.returncode not in allowed_returncodes:
        raise CommandError(args, returncode=result.returncode, stdout=result.stdout, stderr=result.stderr)
    return result


def _not_started(args: tuple[str, ...], e: OSError) -> CommandError:
    """The error for a program that could not be started (missing, not executable)."""
    if isinstance(e, FileNotFoundError):
        package = _PACKAGE_HINTS.get(Path(args[0]).name)
        return CommandNotFoundError(
            args,
            returncode=None,
            reason="could not be started: program not found",
            hint=f"install {package}" if package else "check PATH",
        )
    return CommandError(args, returncode=None, reason=f"could not be started: {e.strerror}")


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")


# A background process started by :func:`spawn`; callers signal, poll and wait on it.
Child = subprocess.Popen[bytes]


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_file: Path | None = None,
) -> Child:
    """Start ``argv`` in the background and return it without waiting.

    For long-lived helpers (a systemd user manager for tests and the sandbox host) that
    :func:`run` cannot express. ``env`` replaces the environment entirely, so nothing of
    the caller's (``NOTIFY_SOCKET``, ``DBUS_SESSION_BUS_ADDRESS``) leaks in by accident.
    stdin is ``/dev/null``; stdout and stderr are appended to ``log_file`` (or discarded).
    The caller owns the child: it must terminate it and ``wait()`` for it.
    """
    args = tuple(os.fspath(a) for a in argv)
    if not args:
        raise ValueError("empty argv")
    logger.debug("$ %s &", shlex.join(args))
    try:
        if log_file is None:
            return subprocess.Popen(
                args,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with log_file.open("ab") as log:
            return subprocess.Popen(
                args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
    except OSError as e:
        raise _not_started(args, e) from None


def terminate(child: Child, *, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to a :func:`spawn` child and wait up to ``timeout`` seconds for it to
    exit; then SIGKILL it and reap it. Returns ``True`` when it exited on its own."""
    if child.poll() is not None:
        return True
    child.send_signal(sig)
    try:
        child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        return False
    return True
