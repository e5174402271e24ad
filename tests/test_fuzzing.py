"""The hypothesis profiles: CI is derandomized by default, and `make fuzz` really runs the
property tests with the fuzz profile."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from fuzzing import PROFILE
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
