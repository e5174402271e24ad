"""Cold start of `nixcomply --version` against a bare interpreter start, measured in the same run.

Target (DESIGN.md): under 150 ms. Prints the median of each and the ratio; the target is
judged only from the default number of runs (`--runs 2` is the test suite's smoke run: it
fails only when a start fails).

    python bench/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

RUNS = 15
TARGET_MS = 150.0


def median_ms(argv: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=RUNS, help=f"starts of each (judged from {RUNS})")
    runs = parser.parse_args().runs
    bare = median_ms([sys.executable, "-c", "pass"], runs)
    version = median_ms([sys.executable, "-m", "nixcomply", "--version"], runs)
    print(f"python -c pass:          {bare:7.1f} ms (reference)")
    print(
        f"nixcomply --version:     {version:7.1f} ms  ratio {version / bare:.2f}x  target < {TARGET_MS:.0f} ms"
    )
    if runs < RUNS:
        print(f"not judged below {RUNS} runs")
        return 0
    return 0 if version < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
