"""Cold start of `nixcomply --version` against a bare interpreter start, measured in the same run.

Target (DESIGN.md): under 150 ms. Prints the median of each and the ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 15
TARGET_MS = 150.0


def median_ms(argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    bare = median_ms([sys.executable, "-c", "pass"])
    version = median_ms([sys.executable, "-m", "nixcomply", "--version"])
    print(f"python -c pass:          {bare:7.1f} ms (reference)")
    print(
        f"nixcomply --version:     {version:7.1f} ms  ratio {version / bare:.2f}x  target < {TARGET_MS:.0f} ms"
    )
    return 0 if version < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
