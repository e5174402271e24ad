"""What a reconcile run may remember from the last one instead of computing it again.

A timer-driven reconciler is a new process every cycle. Some of what it works out is the same
every time: what an immutable store path says (its ``nixos-version``, its NAR hash), and the
parsed form of a file that did not change (the runbooks and rules, the shipped baseline's
parameters). A :class:`Memo` keeps such values, each under a key and a *stamp*: a value is
returned only for the stamp it was stored with, so a file that changed (another inode, size
or modification time) is parsed again. :class:`nixcomply.host.state.State` is the memo of a
reconcile run; code that runs without a state database passes none and computes as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, Protocol

# Stamp of a fact about a store path: it never changes.
IMMUTABLE: Final = "immutable"


class Memo(Protocol):
    def recall(self, key: str, stamp: str) -> str | None:
        """The value stored under ``key`` with ``stamp``, or None."""
        ...

    def memorise(self, key: str, stamp: str, value: str) -> None:
        """Store ``value`` under ``key`` for ``stamp`` (replacing any other stamp's)."""
        ...


def file_stamp(path: Path) -> str | None:
    """The stamp of a file's current content: device, inode, modification time, size; None
    when it cannot be read (then nothing is remembered for it)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
