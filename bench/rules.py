"""Rule evaluation throughput: the built-in rules deciding 10,000 findings.

Printed as findings per second, and as a ratio against producing the findings' dicts
(`Finding.model_dump`, which the cycle does for each finding anyway) measured in the same run. There is no target: the figures are printed, not judged. A run
fails when no finding gets a decision (the rules or the findings are broken), at any size
(`--findings 200` is the test suite's smoke run).

    python bench/rules.py [--findings N]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.load import known_runbook_ids
from nixcomply.checks.finding import Finding
from nixcomply.core.paths import runbooks_dir
from nixcomply.heal.rules import decide, load_rules
from nixcomply.model.severity import Severity
from nixcomply.model.status import FindingStatus

N = 10_000
SEVERITIES: list[Severity] = list(Severity)


def findings(rng: random.Random, n: int) -> list[Finding]:
    checks = sorted(CHECK_NAMES)
    out = []
    for i in range(n):
        status = rng.choice(
            [
                FindingStatus.PASS,
                FindingStatus.DRIFT,
                FindingStatus.DRIFT,
                FindingStatus.ERROR,
                FindingStatus.SKIPPED,
            ]
        )
        out.append(
            Finding(
                check=rng.choice(checks),
                control_ids=[f"area.control-{i % 50}"],
                severity=rng.choice(SEVERITIES),
                status=status,
                subject=f"unit-{i % 7}.service",
                observed={"active_state": rng.choice(["active", "inactive", "failed"]), "n_restarts": i % 5},
                expected={"active_state": "active"},
                drifted=status is FindingStatus.DRIFT,
                message=f"finding {i}",
                runbook_params={"unit": f"unit-{i % 7}.service"},
                duration_s=0.001,
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--findings", type=int, default=N)
    n = parser.parse_args().findings
    rules = load_rules((runbooks_dir() / "rules").glob("*.yaml"), runbook_ids=known_runbook_ids())
    sample = findings(random.Random(7), n)
    start = time.perf_counter()
    dumped = [f.model_dump(mode="json") for f in sample]
    dump_s = time.perf_counter() - start
    start = time.perf_counter()
    decided = sum(decide(rules, d) is not None for d in dumped)
    decide_s = time.perf_counter() - start
    print(f"rules: {len(rules)}, findings: {n}, decided: {decided}")
    print(f"model_dump of {n} findings:  {dump_s * 1000:8.1f} ms (reference)")
    print(
        f"rule decisions for {n}:       {decide_s * 1000:8.1f} ms  {n / decide_s:,.0f} findings/s  ratio {decide_s / dump_s:.2f}x"
    )
    if not decided:
        print("no finding got a decision: the rules or the findings are broken", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
