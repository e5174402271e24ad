"""Every bench/*.py runs at a tiny size, so a bench cannot rot between `make bench` runs.

The benches are not timed tests: at these sizes each prints its figures and says they are
not judged (the targets are judged from the default sizes, which `make bench` runs); a run
still fails when the bench itself breaks (an exception, a wrong result: a check pass with
drift, a no-op cycle that builds, envelopes the server did not store). Each test checks the
figure lines the bench promises, and a new bench without a tiny run here fails the suite.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

# bench name -> (arguments of its tiny run, lines its output must contain: (substring, ...) each)
BENCHES: dict[str, tuple[list[str], list[tuple[str, ...]]]] = {
    "evidence": (
        ["--entries", "40", "--durable-appends", "2"],
        [
            ("raw Ed25519 verify of 40 signatures, 1 core",),
            ("verify, 40 entries, 1 core:", "x raw on 1 core"),
            ("verify, 40 entries,", "cores:", "x raw on"),
            ("not judged below 10000 entries",),
        ],
    ),
    "checks": (
        ["--runs", "1"],
        [("checks: 23 controls",), ("one worker:", "(reference)"), ("workers (default):", "ratio"), ("not judged below 5 runs",)],
    ),
    "rules": (
        ["--findings", "200"],
        [("findings: 200, decided:",), ("model_dump of 200 findings", "(reference)"), ("rule decisions for 200", "findings/s", "ratio")],
    ),
    "startup": (
        ["--runs", "2"],
        [("python -c pass:", "(reference)"), ("nixcomply --version:", "ratio"), ("not judged below 15 runs",)],
    ),
    "reconcile": (
        ["--runs", "1"],
        [
            ("no-op cycle, in-process:", "x `nix flake metadata`"),
            ("no-op cycle, whole process:", "x a bare interpreter"),
            ("peak memory of a full cycle:", "x a bare interpreter"),
            ("nixcomply --version:", "x a bare interpreter"),
            ("not judged below 5 runs",),
        ],
    ),
    "fleet": (
        ["--entries", "20", "--hosts", "3", "--cycles", "1", "--threads", "2", "--stats-wait", "0"],
        [
            ("raw Ed25519 verify:", "envelopes/s"),
            ("verified ingestion:", "envelopes/s"),
            ("ratio:", "x raw verification", "not judged below 3000 entries"),
            ("full cycles:", "hosts at one cycle per 15 min"),
            ("idle polls:", "hosts at one poll per 15 min"),
            ("idle poll: 3 polls", "sequential scans", "not judged"),
            ("Index Scan using",),
        ],
    ),
}  # fmt: skip


def test_every_bench_has_a_tiny_run() -> None:
    benches = {p.stem for p in (REPO / "bench").glob("*.py")}
    assert benches == set(BENCHES), f"give each bench a tiny run in BENCHES: {sorted(benches ^ set(BENCHES))}"


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_runs_at_a_tiny_size_and_prints_its_figures(name: str, tmp_path: Path) -> None:
    args, promised = BENCHES[name]
    if name == "evidence":
        args = [*args, "--dir", str(tmp_path)]
    r = subprocess.run(
        [sys.executable, f"bench/{name}.py", *args],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for parts in promised:
        assert any(all(p in line for p in parts) for line in lines), (parts, r.stdout)
