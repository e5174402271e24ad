"""Crash test: a process appending evidence is killed with SIGKILL at random moments, many
times. Every state left behind verifies as intact or "interrupted" (never as tampered),
and after recovery the store verifies and holds every acknowledged entry.

The kill times come from a seed that is fixed in ``make test`` and fresh under ``make fuzz``
(which also kills more often); a failure names its seed, ``NIXCOMPLY_SEED`` replays it."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_evidence import Keys, open_store, write_key_files, write_keyring
from fuzzing import PROFILE, seed

from nixcomply.evidence.verify import verify

REPO = Path(__file__).resolve().parent.parent
APPENDER = REPO / "tests" / "evidence_appender.py"
KILLS = 25 if PROFILE != "fuzz" else 100


@pytest.mark.property
def test_sigkill_at_random_points_loses_nothing_acknowledged(tmp_path: Path, keys: Keys) -> None:
    chosen = seed("evidence-crash")
    rng = random.Random(chosen)
    bundle_key, log_key = write_key_files(tmp_path, keys)
    root = tmp_path / "store"
    root.mkdir()
    write_keyring(root, keys)
    acknowledged: dict[int, str] = {}
    for kill in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(APPENDER), str(root), str(bundle_key), str(log_key), "100000", f"k{kill}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", f"seed {chosen}"
        # Let one append be acknowledged first, so that every kill lands among appends even
        # on a loaded machine (the kills before any append are the step-by-step test's).
        first = child.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.06))
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        out = first + out
        assert child.returncode == -signal.SIGKILL
        # The last piece is "" or a line the kill cut short: not an acknowledgement.
        for line in out.split("\n")[:-1]:
            seq, bundle_id = line.split()
            acknowledged[int(seq)] = bundle_id
        state = verify(root, keys.keyring, jobs=1)
        assert state.exit_code in (0, 3), f"seed {chosen}, kill {kill}: {state.lines()}"

    with open_store(root, keys):  # recovery finishes or undoes the interrupted append
        pass
    report = verify(root, keys.keyring)
    assert report.exit_code == 0, f"seed {chosen}: {report.lines()}"
    present = {int(p.name.split("-")[1]): p.name for p in root.glob("evidence/*/*/*/*")}
    missing = {s: b for s, b in acknowledged.items() if present.get(s) != b}
    assert not missing, f"seed {chosen}: acknowledged entries lost: {missing}"
    assert acknowledged, f"seed {chosen}: no append was ever acknowledged"
    assert report.entries >= max(acknowledged) + 1
