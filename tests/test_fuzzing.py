"""The hypothesis profiles: CI is derandomized by default, and `make fuzz` really runs the
property tests with the fuzz profile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zlib

import pytest
from fuzzing import PROFILE, seed
from hypothesis import settings

from conftest import REPO


def test_ci_profile_is_the_default_and_derandomized() -> None:
    if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci":
        assert PROFILE == "ci"
        current = settings.default
        assert current is not None
        assert current.derandomize
        assert current.database is None


def test_make_fuzz_runs_the_property_tests_with_the_fuzz_profile() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nfuzz:", 1)[1].split("\n\n", 1)[0]
    assert "HYPOTHESIS_PROFILE=fuzz" in recipe
    assert re.search(r"\$\(PYTEST\) .*tests -m property", recipe)
    # One file of property tests under the fuzz profile, at the CI size, as `make fuzz` would.
    env = {**os.environ, "HYPOTHESIS_PROFILE": "fuzz", "NIXCOMPLY_FUZZ_FACTOR": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "python/pyproject.toml", "--rootdir=.", "-q", "-m", "property",
         "-p", "no:cacheprovider", "tests/test_evidence_crypto.py"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    # every property test of the file ran (it has more than one since the envelope fast path)
    assert re.search(r"\b[1-9]\d* passed, \d+ deselected\b", r.stdout), r.stdout


def test_tests_that_draw_their_own_random_numbers_are_reproducible_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NIXCOMPLY_SEED", raising=False)
    if PROFILE == "ci":
        assert seed("evidence-crash") == seed("evidence-crash") == zlib.crc32(b"evidence-crash")
        assert seed("evidence-crash") != seed("another test")
    monkeypatch.setenv("NIXCOMPLY_SEED", "1234")
    assert seed("evidence-crash") == 1234


def test_the_crash_test_is_seeded_and_runs_under_make_fuzz() -> None:
    source = (REPO / "tests" / "test_evidence_crash.py").read_text()
    assert "time.time_ns()" not in source  # no seed from the clock
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", "python/pyproject.toml", "--rootdir=.", "-q", "--collect-only",
         "-m", "property", "-p", "no:cacheprovider", "tests/test_evidence_crash.py"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test_sigkill_at_random_points_loses_nothing_acknowledged" in r.stdout
