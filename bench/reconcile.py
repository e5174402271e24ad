"""The reconciler's costs on the sandbox host, each printed as a ratio to a reference measured
in the same run (issue 12's targets).

- a no-op cycle (target = running revision), in-process and warm: target under 100 ms; the
  reference is ``nix flake metadata``, the one command a no-op cycle must run (it never
  calls ``nix build``: checked with a logging wrapper);
- the same cycle as a whole process (`nixcomply reconcile`: interpreter, imports, a cold
  cycle): target under 400 ms; reference a bare interpreter started the same way;
- ``nixcomply --version``: target within 2x a bare interpreter started the same way;
- peak memory of a full cycle (build, test, gate, switch, evidence) in its own process:
  target under 50 MB; reference a bare interpreter's. Peak memory is the process's
  ``VmHWM``: ``ru_maxrss`` is no use here, a child inherits its parent's figure at fork.

Every process is started as an installed nixcomply starts: with its modules' bytecode
cached (a Nix store install ships it). A ``PYTHONDONTWRITEBYTECODE`` in the caller's
environment would make each process compile every module it imports from source (~200 ms
of a whole-process cycle on the project's VMs), so the children run without it, writing
and reading their bytecode in a temporary ``PYTHONPYCACHEPREFIX`` (warmed by the first run
of each, which is not counted). The full cycle runs through ``nixcomply reconcile``'s own
entry point (``nixcomply.cli.entry``), as the systemd service does.

Prints the figures and ratios; exits 1 when a target is missed or a cycle went wrong (a
no-op cycle that builds, a cycle with the wrong outcome). The targets are judged only from
the default number of runs (`--runs 1` is the test suite's smoke run: it fails only when a
cycle goes wrong).

    python bench/reconcile.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from nixcomply.sandbox.machine import SandboxHost

RUNS = 5
IN_PROCESS_TARGET_MS = 100.0
PROCESS_TARGET_MS = 400.0
VERSION_TARGET_RATIO = 2.0
RSS_TARGET_MB = 50.0

UNIT = "[Service]\nType=exec\nExecStart=/bin/sleep 86400\n"

PEAK = textwrap.dedent(
    """
    def peak_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    """
)

CYCLE = PEAK + textwrap.dedent(
    """
    import contextlib, io, sys
    from nixcomply.cli import entry
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        entry(["reconcile", "--config", sys.argv[1]])
    outcomes = [line for line in out.getvalue().splitlines() if line.startswith("outcome:")]
    assert outcomes and outcomes[0].split()[1] == sys.argv[2] + ":", out.getvalue()
    print(peak_mb())
    """
)

IN_PROCESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nixcomply.reconcile.config import load_config
    from nixcomply.reconcile.cycle import Reconciler
    config = load_config(Path(sys.argv[1]))
    Reconciler(config).run()
    start = time.perf_counter()
    report = Reconciler(config).run()
    assert report.plan is not None and report.plan.kind.value == "in-sync", report.plan
    print(time.perf_counter() - start)
    """
)


# The children's environment: bytecode cached, as installed (see the module docstring).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(argv: list[str], *, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env or CHILD_ENV)
    return time.perf_counter() - start


def median(argv: list[str], runs: int, *, env: dict[str, str] | None = None) -> float:
    timed(argv, env=env)  # bytecode written, caches warm: not counted
    return statistics.median(timed(argv, env=env) for _ in range(runs))


def output(argv: list[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=CHILD_ENV).stdout


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=RUNS, help=f"runs of each measured cycle (judged from {RUNS})"
    )
    runs = parser.parse_args().runs
    starts = 3 * runs  # interpreter starts are cheap: more of them for a steady median
    failures = []  # a cycle went wrong: fails at any size
    missed = []  # a target missed: judged from RUNS runs
    with (
        tempfile.TemporaryDirectory(prefix="nixcomply-bench-") as tmp,
        SandboxHost.create(Path(tmp) / "h") as host,
    ):
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        s = host.sandbox
        first = s.commit_generation(label="first", units={"app.service": UNIT})
        second = s.commit_generation(label="second", units={"app.service": UNIT.replace("86400", "86401")})
        s.install(first)
        log = Path(tmp) / "nix.log"
        wrapper = Path(tmp) / "nix"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec nix "$@"\n')
        wrapper.chmod(0o755)
        executables = {
            "nix": str(wrapper),
            "nixos_rebuild": str(s.bin_dir / "nixos-rebuild"),
            "systemd_run": None,
        }

        host.write_config(settings={"flake": str(s.flake_ref_at(first)), "executables": executables})
        reconcile = [sys.executable, "-m", "nixcomply", "reconcile", "--config", str(host.config_path)]
        timed(reconcile)  # the first run remembers what it can
        process = median(reconcile, runs)
        in_process = statistics.median(
            float(output([sys.executable, "-c", IN_PROCESS, str(host.config_path)]).split()[-1])
            for _ in range(runs)
        )
        if any(line.startswith("build") for line in log.read_text().splitlines()):
            failures.append("a no-op cycle called nix build")
        metadata = median(
            ["nix", "flake", "metadata", "--json", "--refresh", s.flake_ref_at(first).url], runs, env=s.env
        )
        bare = median([sys.executable, "-c", "pass"], starts)
        print(
            f"no-op cycle, in-process:       {in_process * 1000:8.1f} ms  {in_process / metadata:5.2f}x "
            f"`nix flake metadata` ({metadata * 1000:.1f} ms)  target < {IN_PROCESS_TARGET_MS:.0f} ms"
        )
        print(
            f"no-op cycle, whole process:    {process * 1000:8.1f} ms  {process / bare:5.2f}x "
            f"a bare interpreter ({bare * 1000:.1f} ms)  target < {PROCESS_TARGET_MS:.0f} ms"
        )
        if in_process * 1000 >= IN_PROCESS_TARGET_MS:
            missed.append(f"in-process no-op cycle {in_process * 1000:.0f} ms")
        if process * 1000 >= PROCESS_TARGET_MS:
            missed.append(f"whole-process no-op cycle {process * 1000:.0f} ms")

        host.write_config(settings={"flake": str(s.flake_ref_at(second)), "executables": executables})
        rss = float(output([sys.executable, "-c", CYCLE, str(host.config_path), "success"]).splitlines()[-1])
        bare_rss = float(output([sys.executable, "-c", PEAK + "print(peak_mb())"]))
        print(
            f"peak memory of a full cycle:   {rss:8.1f} MB  {rss / bare_rss:5.2f}x "
            f"a bare interpreter ({bare_rss:.1f} MB)  target < {RSS_TARGET_MB:.0f} MB"
        )
        if rss >= RSS_TARGET_MB:
            missed.append(f"peak memory {rss:.1f} MB")

        bare = median([sys.executable, "-c", "pass"], starts)
        version = median([sys.executable, "-m", "nixcomply", "--version"], starts)
    print(
        f"nixcomply --version:           {version * 1000:8.1f} ms  {version / bare:5.2f}x "
        f"a bare interpreter ({bare * 1000:.1f} ms)  target < {VERSION_TARGET_RATIO:g}x"
    )
    if version / bare >= VERSION_TARGET_RATIO:
        missed.append(f"--version {version / bare:.2f}x a bare interpreter")
    for failure in failures:
        print(f"WRONG: {failure}")
    if runs < RUNS:
        print(f"not judged below {RUNS} runs")
        return 1 if failures else 0
    for miss in missed:
        print(f"MISSED: {miss}")
    return 1 if failures or missed else 0


if __name__ == "__main__":
    sys.exit(main())
