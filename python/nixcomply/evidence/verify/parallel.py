"""Checking many bundles on all cores.

Most of verification is per bundle (:func:`~.bundle.check_bundle`: read, parse, verify the
signature) and independent of every other bundle, so it runs in worker processes, a chunk
of bundles per task. Processes, not threads: ``cryptography`` does release the GIL while it
verifies a signature, but reading files and validating the statement hold it, and on two
cores threads spent most of their time waiting for each other. The parent keeps only a few
chunks in flight and takes the results in order, so memory stays bounded by the chunks in
flight plus the compact claims, and the report does not depend on scheduling.

Workers are forked (:func:`_context`). Small logs are checked in the calling process:
starting workers costs more than it saves below :data:`PROCESS_MIN` bundles.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Final

from nixcomply.evidence.keys import PublicKey
from nixcomply.evidence.statement import Statement
from nixcomply.evidence.verify.bundle import Candidates, Checked, Claim, check_bundle
from nixcomply.evidence.verify.report import ProblemLevel

Progress = Callable[[int, int], None]

CHUNK: Final = 512
PROCESS_MIN: Final = 4 * CHUNK
IN_FLIGHT: Final = 3  # chunks per worker queued at a time

_worker: tuple[str, Candidates, bool] | None = None


def default_jobs() -> int:
    """Worker processes for verification: one per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _init(base: str, vkeys: list[str], keep_statements: bool) -> None:
    global _worker  # noqa: PLW0603 - one worker process, one configuration
    _worker = (base, Candidates(PublicKey.from_vkey(v) for v in vkeys), keep_statements)
    # Checking allocates many short-lived objects and no cycles.
    gc.disable()


# What a worker sends back per bundle: the Checked fields but the path, which the parent
# has (plain tuples pickle several times faster than objects).
Result = tuple[int | None, Claim | None, list[tuple[ProblemLevel, str]], Statement | None]


def _check_chunk(rels: Sequence[str]) -> list[Result]:
    assert _worker is not None, "worker not initialised"
    base, keys, keep = _worker
    out = []
    for rel in rels:
        c = check_bundle(base, rel, keys, keep_statement=keep)
        out.append((c.hint, c.claim, c.problems, c.statement))
    return out


def _context() -> multiprocessing.context.BaseContext:
    """``fork`` when this process runs no other thread (nothing can hold a lock the child
    would inherit, and nothing needs re-importing), else a ``forkserver`` with the
    verification modules imported once (which, like ``spawn``, needs the caller's main
    module to be importable without side effects: ``if __name__ == "__main__"``)."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["nixcomply.evidence.verify.bundle"])
    return context


def check_all(
    base: str,
    rels: Sequence[str],
    keys: Candidates,
    *,
    keep_statements: bool,
    jobs: int,
    progress: Progress | None = None,
    process_min: int = PROCESS_MIN,
    chunk_size: int = CHUNK,
) -> Iterator[Checked]:
    """Every bundle of ``rels`` checked, in the order given (on ``jobs`` worker processes
    from ``process_min`` bundles on, ``chunk_size`` bundles per task)."""
    total = len(rels)
    if jobs <= 1 or total < process_min:
        for done, rel in enumerate(rels, 1):
            yield check_bundle(base, rel, keys, keep_statement=keep_statements)
            if progress is not None and (done % 500 == 0 or done == total):
                progress(done, total)
        return
    chunks = [rels[i : i + chunk_size] for i in range(0, total, chunk_size)]
    context = _context()
    done = 0
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_init,
        initargs=(base, keys.vkeys(), keep_statements),
    ) as pool:
        queued: deque[tuple[Sequence[str], Future[list[Result]]]] = deque()
        todo = iter(chunks)
        for chunk in todo:
            queued.append((chunk, pool.submit(_check_chunk, chunk)))
            if len(queued) >= IN_FLIGHT * jobs:
                break
        while queued:
            chunk, future = queued.popleft()
            results = future.result()
            for more in todo:
                queued.append((more, pool.submit(_check_chunk, more)))
                break
            for rel, (hint, claim, problems, statement) in zip(chunk, results, strict=True):
                yield Checked(rel, hint, claim, problems, statement)
            done += len(results)
            if progress is not None:
                progress(done, total)
