"""The errors nixcomply raises on purpose.

Every error a user can cause derives from :class:`NixcomplyError`. ``cli.main`` prints
its message (and hint) on one line and exits with its ``exit_code``; a traceback is
shown only with ``--debug``. Anything else that escapes is a bug in nixcomply and is
reported as an internal error.

Exit codes, shared by every verb (the constants below are the one table; nothing else
spells a number):

* 0 (``EXIT_OK``): success;
* 1 (``EXIT_FAILURE``): the job ran and found something wrong (tampered evidence, failed or
  reverted reconcile, a failed external command, drift found by ``check``);
* 2 (``EXIT_USAGE``): bad usage or bad input (a malformed file, a missing file, a wrong
  argument);
* 3 (``EXIT_WARNINGS``): success with warnings (for example an attestation that expired);
* 70 (``EXIT_INTERNAL``, sysexits' EX_SOFTWARE): an internal error, a bug in nixcomply;
* 74 (``EXIT_IO``, EX_IOERR): the machine refused what nixcomply needed of it: a full disk,
  a read-only filesystem, a missing directory, a directory where a file belongs, no
  permission. Nothing is wrong with the input; the message names the path;
* 75 (``EXIT_TEMPFAIL``, EX_TEMPFAIL): temporarily unavailable (another reconciler holds
  the lock, the evidence server's database cannot be reached); retry later;
* 130 (``EXIT_INTERRUPTED``, 128 + SIGINT): interrupted by Ctrl-C;
* 141 (``EXIT_PIPE``, 128 + SIGPIPE): the reader of the output went away
  (``nixcomply ... | head``); nothing is printed about it, as other Unix tools do.
"""

from __future__ import annotations

import errno
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Final, NamedTuple

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_WARNINGS: Final = 3
EXIT_INTERNAL: Final = 70
EXIT_IO: Final = 74
EXIT_TEMPFAIL: Final = 75
EXIT_INTERRUPTED: Final = 130
EXIT_PIPE: Final = 141

# The table above in one line, for the end of `nixcomply --help` and `nixcomply-server --help`.
HELP_EXIT_STATUS: Final = (
    f"exit status: {EXIT_OK} success, {EXIT_FAILURE} something was found wrong, {EXIT_USAGE} bad usage "
    f"or input (the message names it), {EXIT_WARNINGS} success with warnings, {EXIT_INTERNAL} a bug "
    f"(run again with --debug), {EXIT_IO} the machine refused (disk, filesystem, a path), "
    f"{EXIT_TEMPFAIL} try again later, {EXIT_INTERRUPTED} interrupted, {EXIT_PIPE} the output was "
    "closed; the README's exit codes say more"
)


class NixcomplyError(Exception):
    """Base of every deliberate error. Raised nowhere directly; use a subclass."""

    exit_code: ClassVar[int] = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(NixcomplyError):
    """Raised when command-line arguments are well formed but wrong (a flag combination,
    an unknown id). Reported with exit code 2."""

    exit_code = EXIT_USAGE


class Problem(NamedTuple):
    """One thing wrong with an input file: where (file, line, field) and what was expected.
    (A named tuple, not a dataclass: this module loads with every command, and dataclasses
    costs ``nixcomply --version`` a third of its start.)"""

    file: Path | None
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return f"{where}{field}{self.message}"


class InputError(NixcomplyError):
    """Raised when a file the user gave (baseline, runbook, rule, keyring, config) cannot be
    read or does not validate. Carries every problem found, each naming file, line and field.
    Reported with exit code 2; nothing is written before the input is known to be good."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Sequence[Problem], *, hint: str | None = None) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            message = str(self.problems[0])
        else:
            lines = [f"{len(self.problems)} problems:"]
            lines.extend(f"  {p}" for p in self.problems)
            message = "\n".join(lines)
        super().__init__(message, hint=hint)

    @classmethod
    def single(
        cls,
        file: Path | None,
        message: str,
        *,
        line: int | None = None,
        field: str = "",
        hint: str | None = None,
    ) -> InputError:
        return cls([Problem(file=file, line=line, field=field, message=message)], hint=hint)


class CommandError(NixcomplyError):
    """Raised by ``nixcomply.core.process`` when an external command exits non-zero, cannot be
    started, or times out. Carries the argv, the exit status and the captured stderr so the
    report says exactly what ran and what it said."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        returncode: int | None,
        stdout: str = "",
        stderr: str = "",
        reason: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        what = reason or f"exited with status {returncode}"
        tail = stderr.strip().splitlines()[-5:]
        detail = ("\n  " + "\n  ".join(tail)) if tail else ""
        super().__init__(f"command {_show_argv(self.argv)} {what}{detail}", hint=hint)


class CommandNotFoundError(CommandError):
    """Raised when the program of an argv is not on PATH (or not executable). Usually a missing
    dependency; the hint names the package."""

    exit_code = EXIT_USAGE


class CommandTimeoutError(CommandError):
    """Raised when an external command runs longer than its timeout; it has been killed."""


class VerificationError(NixcomplyError):
    """Raised when evidence or a health gate does not verify: a bad signature, a broken chain,
    a Merkle root that does not match. Exit code 1; the message names the first bad item."""


class HostIOError(NixcomplyError):
    """Raised when the machine refuses an operation nixcomply needs (a full disk, a read-only
    filesystem, a missing or wrong kind of path, no permission), or would soon: too little
    free space to record what an activation does. Exit code 74; the message names the path
    and what the system said. :func:`from_os_error` builds one from an ``OSError``."""

    exit_code = EXIT_IO

    @classmethod
    def from_os_error(cls, e: OSError, doing: str | None = None, *, path: Path | None = None) -> HostIOError:
        what = e.strerror or (os.strerror(e.errno) if e.errno else type(e).__name__)
        name = e.filename if e.filename is not None else path
        where = f"{name}: " if name is not None else ""
        hint = _IO_HINTS.get(e.errno or 0)
        return cls(f"{where}{doing + ': ' if doing else ''}{what}", hint=hint)


class LockHeldError(NixcomplyError):
    """Raised when another nixcomply process holds the state directory's lock. Exit code 75
    (try again later); the message names the lock file and the holder's pid when known."""

    exit_code = EXIT_TEMPFAIL


# errno -> what to do about it
_IO_HINTS: Final = {
    errno.ENOSPC: "free space on that filesystem (or move the state directory) and run again",
    errno.EDQUOT: "the disk quota is exhausted; free space and run again",
    errno.EROFS: "the filesystem is mounted read-only; nixcomply needs to write there",
    errno.EISDIR: "give a file name, not a directory",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.ENOENT: "create the directory first, or give another path",
    errno.EACCES: "run as a user that may write there (the reconciler runs as root)",
}


def _show_argv(argv: Sequence[str]) -> str:

    return "'" + shlex.join(argv) + "'"
