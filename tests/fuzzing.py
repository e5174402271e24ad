"""Hypothesis profiles: property tests are reproducible in CI and random under ``make fuzz``.

``make test`` (and so CI) runs with the ``ci`` profile: examples come from a fixed seed per
test (``derandomize``) and no example database is read or written, so a run passes or fails
the same way every time and on every machine. ``make fuzz`` selects the ``fuzz`` profile
(``HYPOTHESIS_PROFILE=fuzz``): fresh random examples on every run, :data:`FUZZ_FACTOR`
times as many for the tests that size their runs with :func:`examples`, and the example
database kept in ``.hypothesis/`` so a failure found there is replayed first next time.
A failure prints the ``@reproduce_failure`` blob to paste into the test.
"""

from __future__ import annotations

import os
import secrets
import zlib
from typing import Final

from hypothesis import HealthCheck, settings

PROFILE_ENV: Final = "HYPOTHESIS_PROFILE"
FUZZ_FACTOR: Final = int(os.environ.get("NIXCOMPLY_FUZZ_FACTOR", "20"))

# Fixtures shared across examples are read-only here (each example copies what it changes).
_SHARED_FIXTURES: Final = [HealthCheck.function_scoped_fixture]

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=_SHARED_FIXTURES,
)
settings.register_profile(
    "fuzz", derandomize=False, print_blob=True, deadline=None, suppress_health_check=_SHARED_FIXTURES
)
PROFILE: Final = os.environ.get(PROFILE_ENV, "ci")
settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """``n`` examples in CI, :data:`FUZZ_FACTOR` times as many under ``make fuzz``."""
    return n * FUZZ_FACTOR if PROFILE == "fuzz" else n


def seed(name: str) -> int:
    """The seed of a test that draws its own random numbers (random kill times, say): fixed
    per test in CI (from its name, so two tests do not share one), fresh under ``make fuzz``,
    and ``$NIXCOMPLY_SEED`` when set, to replay a failure (the test prints its seed)."""
    given = os.environ.get("NIXCOMPLY_SEED")
    if given:
        return int(given)
    return secrets.randbelow(2**32) if PROFILE == "fuzz" else zlib.crc32(name.encode())
