"""Named points where a crash test may kill the process (inert in normal use).

The reconciler passes each point of an apply (``built``, ``tested``, ``gating``,
``switched``, ``recorded``); a test running nixcomply in a child process sets :data:`HOOK`
to SIGKILL itself at one of them, then checks that the next run converges and that the
evidence log verifies with nothing acknowledged lost. Nothing reads the environment here:
only code that imports this module and sets the hook can trigger it.
"""

from __future__ import annotations

from collections.abc import Callable

HOOK: Callable[[str], None] | None = None


def point(name: str) -> None:
    if HOOK is not None:
        HOOK(name)
