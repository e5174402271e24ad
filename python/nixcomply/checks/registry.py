"""The registry of runtime checks and the runner that runs them concurrently.

Every name of :data:`nixcomply.baseline.catalog.CHECK_NAMES` has exactly one module here
(asserted at import). :func:`run_checks` runs the checks in worker threads, each with its
own deadline counted from its start. A check that raises or misses its deadline becomes
``error`` findings for its controls at once; the run does not wait for it (its thread is a
daemon and is abandoned; the commands it started have their own timeouts). The result is
sorted by check, control ids and subject, so two runs over the same host compare line by
line.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Final

from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.checks import (
    accounts,
    audit_rules,
    audit_status,
    auditd_config,
    av_edr,
    backup,
    config_value,
    coredump,
    disk_usage,
    encryption,
    exceptions,
    file_content,
    firewall,
    generation,
    journald_config,
    kernel_cmdline,
    kernel_modules,
    log_continuity,
    mounts,
    nix_config,
    patch_age,
    restore_test,
    service_health,
    sshd_effective,
    sudo_config,
    sysctl,
    time_sync,
)
from nixcomply.checks.base import CheckSpec, Controls, error_findings, skipped_findings
from nixcomply.checks.context import CheckContext
from nixcomply.checks.finding import Finding
from nixcomply.errors import UsageError
from nixcomply.model.manifest import ManifestControl

logger = logging.getLogger(__name__)

RunFunction = Callable[[CheckContext, Controls], list[Finding]]


@dataclass(frozen=True)
class Check:
    """A registered check: its identity and its ``run(ctx, controls)``."""

    spec: CheckSpec
    run: RunFunction

    @property
    def name(self) -> str:
        return self.spec.name


def _from_module(module: ModuleType) -> Check:
    spec: CheckSpec = module.SPEC
    run: RunFunction = module.run
    return Check(spec, run)


_MODULES: Final = (
    accounts,
    audit_rules,
    audit_status,
    auditd_config,
    av_edr,
    backup,
    config_value,
    coredump,
    disk_usage,
    encryption,
    exceptions,
    file_content,
    firewall,
    generation,
    journald_config,
    kernel_cmdline,
    kernel_modules,
    log_continuity,
    mounts,
    nix_config,
    patch_age,
    restore_test,
    service_health,
    sshd_effective,
    sudo_config,
    sysctl,
    time_sync,
)
REGISTRY: Final[Mapping[str, Check]] = {c.name: c for c in map(_from_module, _MODULES)}
if set(REGISTRY) != CHECK_NAMES:  # pragma: no cover - a developer error, caught by the first import
    raise AssertionError(f"registry and catalog differ: {sorted(set(REGISTRY) ^ CHECK_NAMES)}")


def controls_for(ctx: CheckContext, name: str) -> dict[str, ManifestControl]:
    """The manifest's controls whose ``verify.check`` is ``name``."""
    if ctx.manifest is None:
        return {}
    return {cid: c for cid, c in ctx.manifest.controls.items() if c.verify.check == name}


def select(names: Iterable[str] | None) -> list[str]:
    """Check names to run, validated; all of them when ``names`` is None."""
    if names is None:
        return sorted(REGISTRY)
    chosen = sorted(set(names))
    unknown = [n for n in chosen if n not in REGISTRY]
    if unknown:
        raise UsageError(
            f"unknown check(s): {', '.join(unknown)}", hint=f"known checks: {', '.join(sorted(REGISTRY))}"
        )
    return chosen


def run_check(ctx: CheckContext, name: str) -> list[Finding]:
    """One check, in this thread, with its failures turned into error findings."""
    check = REGISTRY[name]
    controls = controls_for(ctx, name)
    if name in ctx.config.skip:
        return skipped_findings(check.spec, ctx, controls, f"{name} is disabled on this host (checks.skip)")
    start = time.monotonic()
    try:
        findings = check.run(ctx, controls)
    except Exception as e:  # a failing check must become findings, never a crash or a pass
        logger.debug("check %s raised", name, exc_info=True)
        return error_findings(check.spec, ctx, controls, f"internal error in {name}: {type(e).__name__}: {e}")
    logger.debug("check %s: %d finding(s) in %.3f s", name, len(findings), time.monotonic() - start)
    return findings


def _ordered(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: f.sort_key())


def run_checks(
    ctx: CheckContext,
    names: Iterable[str] | None = None,
    *,
    timeout_per_check: float | None = None,
    max_workers: int | None = None,
) -> list[Finding]:
    """Run checks concurrently; every check yields findings (errors included), in order.

    ``timeout_per_check`` overrides the configured deadlines (``checks.timeouts``);
    ``max_workers`` the configured concurrency.
    """
    chosen = select(names)
    workers = max(1, max_workers if max_workers is not None else ctx.config.max_workers)
    done: queue.Queue[tuple[str, list[Finding]]] = queue.Queue()
    pending = list(chosen)
    running: dict[str, float] = {}  # name -> deadline (monotonic)
    results: dict[str, list[Finding]] = {}

    def deadline_of(name: str) -> float:
        limit = timeout_per_check if timeout_per_check is not None else ctx.config.timeouts.for_check(name)
        return time.monotonic() + limit

    def work(name: str) -> None:
        done.put((name, run_check(ctx, name)))

    while pending or running:
        while pending and len(running) < workers:
            name = pending.pop(0)
            running[name] = deadline_of(name)
            threading.Thread(target=work, args=(name,), name=f"check-{name}", daemon=True).start()
        wait = max(0.0, min(running.values()) - time.monotonic())
        try:
            name, findings = done.get(timeout=wait)
        except queue.Empty:
            pass
        else:
            if name in running:  # a late answer of an abandoned check is dropped
                del running[name]
                results[name] = findings
            continue
        now = time.monotonic()
        for name, deadline in list(running.items()):
            if now >= deadline:
                del running[name]
                spec = REGISTRY[name].spec
                limit = (
                    timeout_per_check
                    if timeout_per_check is not None
                    else ctx.config.timeouts.for_check(name)
                )
                logger.warning("check %s did not finish within %g s; reported as an error", name, limit)
                results[name] = error_findings(
                    spec, ctx, controls_for(ctx, name), f"{name} did not finish within {limit:g} s"
                )
    return _ordered(f for name in chosen for f in results[name])
