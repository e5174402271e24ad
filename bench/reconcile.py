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

Prints the figures and ratios; exits 1 when a target is missed.
"""

from __future__ import annotations

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
    import sys
    from pathlib import Path
    from nixcomply.reconcile.config import load_config
    from nixcomply.reconcile.cycle import Reconciler
    report = Reconciler(load_config(Path(sys.argv[1]))).run()
    assert report.result.outcome.value == sys.argv[2], report.result
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


def timed(argv: list[str], *, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def median(argv: list[str], runs: int, *, env: dict[str, str] | None = None) -> float:
    return statistics.median(timed(argv, env=env) for _ in range(runs))


def main() -> int:
    failures = []
    with (
        tempfile.TemporaryDirectory(prefix="nixcomply-bench-") as tmp,
        SandboxHost.create(Path(tmp) / "h") as host,
    ):
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
        subprocess.run(reconcile, check=True, capture_output=True)  # the first run remembers what it can
        process = median(reconcile, RUNS)
        in_process = statistics.median(
            float(
                subprocess.run(
                    [sys.executable, "-c", IN_PROCESS, str(host.config_path)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()[-1]
            )
            for _ in range(RUNS)
        )
        if any(line.startswith("build") for line in log.read_text().splitlines()):
            failures.append("a no-op cycle called nix build")
        metadata = median(
            ["nix", "flake", "metadata", "--json", "--refresh", s.flake_ref_at(first).url], RUNS, env=s.env
        )
        bare = median([sys.executable, "-c", "pass"], 15)
        print(
            f"no-op cycle, in-process:       {in_process * 1000:8.1f} ms  {in_process / metadata:5.2f}x "
            f"`nix flake metadata` ({metadata * 1000:.1f} ms)  target < {IN_PROCESS_TARGET_MS:.0f} ms"
        )
        print(
            f"no-op cycle, whole process:    {process * 1000:8.1f} ms  {process / bare:5.2f}x "
            f"a bare interpreter ({bare * 1000:.1f} ms)  target < {PROCESS_TARGET_MS:.0f} ms"
        )
        if in_process * 1000 >= IN_PROCESS_TARGET_MS:
            failures.append(f"in-process no-op cycle {in_process * 1000:.0f} ms")
        if process * 1000 >= PROCESS_TARGET_MS:
            failures.append(f"whole-process no-op cycle {process * 1000:.0f} ms")

        host.write_config(settings={"flake": str(s.flake_ref_at(second)), "executables": executables})
        out = subprocess.run(
            [sys.executable, "-c", CYCLE, str(host.config_path), "success"],
            check=True,
            capture_output=True,
            text=True,
        )
        rss = float(out.stdout.strip().splitlines()[-1])
        bare_rss = float(
            subprocess.run(
                [sys.executable, "-c", PEAK + "print(peak_mb())"], check=True, capture_output=True, text=True
            ).stdout
        )
        print(
            f"peak memory of a full cycle:   {rss:8.1f} MB  {rss / bare_rss:5.2f}x "
            f"a bare interpreter ({bare_rss:.1f} MB)  target < {RSS_TARGET_MB:.0f} MB"
        )
        if rss >= RSS_TARGET_MB:
            failures.append(f"peak memory {rss:.1f} MB")

    bare = median([sys.executable, "-c", "pass"], 15)
    version = median([sys.executable, "-m", "nixcomply", "--version"], 15)
    print(
        f"nixcomply --version:           {version * 1000:8.1f} ms  {version / bare:5.2f}x "
        f"a bare interpreter ({bare * 1000:.1f} ms)  target < {VERSION_TARGET_RATIO:g}x"
    )
    if version / bare >= VERSION_TARGET_RATIO:
        failures.append(f"--version {version / bare:.2f}x a bare interpreter")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
