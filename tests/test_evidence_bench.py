"""bench/evidence.py runs (at a tiny size: the bench is not a timed test, its figures are
what `make bench` prints)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_evidence_bench_runs_and_prints_both_ratios(tmp_path: object) -> None:
    r = subprocess.run(
        [sys.executable, "bench/evidence.py", "--entries", "40", "--durable-appends", "2", "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert any("raw Ed25519 verify of 40 signatures, 1 core" in line for line in lines), r.stdout
    assert any("entries, 1 core:" in line and "x raw on 1 core" in line for line in lines), r.stdout
    assert any("cores:" in line and "x raw on" in line for line in lines if "verify, 40" in line), r.stdout
    assert "not judged below 10000 entries" in lines[-1]
