"""The reconciler's costs on the sandbox host, measured in one run.

- a no-op cycle (target = running revision) against `nix build` of the same toplevel, which
  the no-op must not need: the target is that it never calls `nix build` (checked). The
  sandbox's toplevel is a tiny derivation that evaluates in tens of milliseconds, so on the
  sandbox the ratio says little; a NixOS toplevel takes seconds to minutes to evaluate, which
  is what a no-op cycle saves on a real host. The cycle is timed both as a whole process
  (interpreter start and imports included) and in-process;
- peak RSS of the reconciler process during a full cycle (build, test, gate, switch,
  evidence), target under 60 MB;
- cold start of `nixcomply --version`, target under 150 ms.

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
RSS_TARGET_MB = 60.0
START_TARGET_MS = 150.0

UNIT = "[Service]\nType=exec\nExecStart=/bin/sleep 86400\n"

CYCLE = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from nixcomply.reconcile.config import load_config
    from nixcomply.reconcile.cycle import Reconciler
    report = Reconciler(load_config(Path(sys.argv[1]))).run()
    assert report.result.outcome.value == sys.argv[2], report.result
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
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
        noop = statistics.median(timed(reconcile) for _ in range(RUNS))
        noop_in_process = statistics.median(
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
        installable = f"{s.flake_ref_at(first).url}#nixosConfigurations.{s.host}.config.system.build.toplevel"
        build = statistics.median(
            timed(["nix", "build", "--json", "--no-link", installable], env=s.env) for _ in range(RUNS)
        )
        print(f"no-op reconcile cycle:         {noop * 1000:8.1f} ms (whole process; no nix build: checked)")
        print(f"  of which the cycle itself:   {noop_in_process * 1000:8.1f} ms (in-process, warm)")
        print(f"nix build of the same system:  {build * 1000:8.1f} ms (already built, evaluation only)")
        print(
            f"  ratio cycle / build:         {noop_in_process / build:8.2f}x (sandbox toplevel: a tiny derivation)"
        )

        host.write_config(settings={"flake": str(s.flake_ref_at(second)), "executables": executables})
        out = subprocess.run(
            [sys.executable, "-c", CYCLE, str(host.config_path), "success"],
            check=True,
            capture_output=True,
            text=True,
        )
        rss_mb = int(out.stdout.strip().splitlines()[-1]) / 1024
        print(f"peak RSS of a full cycle:      {rss_mb:8.1f} MB (target < {RSS_TARGET_MB:.0f} MB)")
        if rss_mb >= RSS_TARGET_MB:
            failures.append(f"peak RSS {rss_mb:.1f} MB")

    bare = statistics.median(timed([sys.executable, "-c", "pass"]) for _ in range(15))
    version = statistics.median(timed([sys.executable, "-m", "nixcomply", "--version"]) for _ in range(15))
    print(
        f"nixcomply --version:           {version * 1000:8.1f} ms ({version / bare:.2f}x a bare interpreter)"
    )
    if version * 1000 >= START_TARGET_MS:
        failures.append(f"cold start {version * 1000:.0f} ms")
    for failure in failures:
        print(f"MISSED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
