"""Checking bundles on worker processes gives exactly what checking them in order does:
the same claims and problems, in the same order, whichever start method is used."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from fixtures_evidence import Keys

from nixcomply.evidence.statement import KeyRole
from nixcomply.evidence.verify.bundle import Candidates, Checked
from nixcomply.evidence.verify.parallel import check_all


def rels(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.glob("evidence/*/*/*/*"))


def run(root: Path, keys: Keys, jobs: int) -> list[Checked]:
    candidates = Candidates(keys.keyring.all_keys(KeyRole.BUNDLE))
    return list(
        check_all(
            f"{root}/", rels(root), candidates, keep_statements=False, jobs=jobs, process_min=1, chunk_size=2
        )
    )


@pytest.mark.parametrize("with_thread", [False, True], ids=["fork", "forkserver"])
def test_workers_agree_with_the_serial_check(store_copy: Path, keys: Keys, with_thread: bool) -> None:
    # A tampered bundle and a stray file, so that problems travel back too.
    bundle = store_copy / rels(store_copy)[4]
    statement = bundle / "statement.json"
    statement.write_bytes(statement.read_bytes().replace(b"success", b"failure", 1))
    (bundle / "planted").write_text("x")
    shutil.rmtree(store_copy / rels(store_copy)[7] / "attachments", ignore_errors=True)
    serial = run(store_copy, keys, 1)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    if with_thread:  # another thread running: workers come from a forkserver, not fork
        other.start()
    try:
        parallel = run(store_copy, keys, 2)
    finally:
        stop.set()
        if with_thread:
            other.join()
    assert [(c.rel, c.hint, c.claim, c.problems) for c in parallel] == [
        (c.rel, c.hint, c.claim, c.problems) for c in serial
    ]
    assert any(c.problems for c in serial)
