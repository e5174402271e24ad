"""One reconciler at a time: an exclusive ``flock`` on ``<state_dir>/lock``.

The kernel drops the lock when the holder exits, however it exits (a SIGKILL included), so
there is no stale lock to clean up. The holder's pid is written into the file only to make
the message of a second process useful.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from nixcomply.errors import LockHeldError


class StateLock:
    def __init__(self, state_dir: Path, *, purpose: str = "reconcile") -> None:
        self.path = state_dir / "lock"
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeldError(
                f"another nixcomply process holds {self.path} ({holder}); only one may run at a time",
                hint="wait for it to finish (systemctl status nixcomply-reconcile) and try again",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {self.purpose}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
