"""Pausing Python's cyclic garbage collector around work that allocates many objects and
makes no reference cycles worth collecting on the way (an upload's envelopes, statements
and rows).

The collector runs whenever allocations outnumber deallocations by a threshold, and each
full collection walks every tracked object of the process: in a server that holds its
framework, its schemas and its database layer, ingesting one batch of 500 envelopes set it
off often enough to cost about a quarter of the server's CPU (bench/fleet.py). Pausing it
changes no result, only when cyclic garbage is freed: reference counting frees everything
else at once, and the collector catches up when the last pause ends.

Pauses nest and may overlap across threads: the collector is enabled again when the last
one ends, if it was enabled when the first began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

_LOCK: Final = threading.Lock()
_state = {"depth": 0, "was_enabled": False}


@contextmanager
def paused() -> Iterator[None]:
    with _LOCK:
        if _state["depth"] == 0:
            _state["was_enabled"] = gc.isenabled()
            gc.disable()
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0 and _state["was_enabled"]:
                gc.enable()


def freeze_startup() -> None:
    """Move everything allocated so far (modules, classes, schemas, configuration) out of
    the collector's sight: a long-running process's full collections then walk only what
    it allocated since (``gc.freeze``; nothing is freed that would otherwise be)."""
    gc.collect()
    gc.freeze()
