"""Verbs of the reconciler: ``plan``, ``reconcile`` (``apply``), ``status``, ``reset``.

Exit codes: ``plan`` 0 when in sync, 1 when it would act or refuses; ``reconcile`` 0 when the
host ends in sync (switched, nothing to do, dry run, deferred to the window), 1 when a target
was reverted, failed, refused or blocked; 2 for bad configuration; 75 when another
reconciler holds the lock.
"""

from __future__ import annotations

import argparse
import json
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypedDict

from nixcomply.cli import add_verb
from nixcomply.commands import config_option
from nixcomply.errors import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:
    from nixcomply.reconcile.config import ReconcilerConfig


class PlanJson(TypedDict):
    """``plan --json``: what the host runs (``nixcomply.reconcile.model.HostState``), the
    target the flake locks to (``Desired``) and the decision (``Plan``), each as
    its model dumps to JSON. ``reconcile --json`` prints a ``CycleReport``, ``status --json``
    a ``Status``."""

    host: dict[str, Any]
    desired: dict[str, Any]
    plan: dict[str, Any]


class Verb(StrEnum):
    """The reconciler's verbs.

    What each may do is decided where it is done, not by flags here: the state lock is taken
    around each operation that writes the state (``Reconciler.plan`` and ``run`` take it per
    cycle, so a daemon holds it only while a cycle runs; ``reset`` takes it itself), and a
    systemd connection is made only by the steps that need one (``plan`` builds its
    ``Reconciler`` without). The ``activates``/``writes_state`` flags that once stood here
    were read by nothing.
    """

    PLAN = "plan"
    RECONCILE = "reconcile"
    DAEMON = "daemon"
    STATUS = "status"
    RESET = "reset"


def load(args: argparse.Namespace) -> ReconcilerConfig:
    from nixcomply.reconcile.config import DEFAULT_CONFIG, load_config

    return load_config(args.config or DEFAULT_CONFIG)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    plan = add_verb(subparsers, Verb.PLAN, cmd_plan, help="say what reconciling would do, without doing it")
    config_option(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.add_argument(
        "--no-build",
        action="store_true",
        help="on drift, do not build the target (no store path or closure diff)",
    )

    rec = add_verb(
        subparsers,
        Verb.RECONCILE,
        cmd_reconcile,
        aliases=["apply"],
        help="bring the host to the approved generation: build, test, health gate, switch or revert",
    )
    config_option(rec)
    rec.add_argument("--dry-run", action="store_true", help="do everything but activate")
    rec.add_argument("--json", action="store_true", help="machine-readable output")

    daemon = add_verb(
        subparsers,
        Verb.DAEMON,
        cmd_daemon,
        help="reconcile periodically as a systemd Type=notify service (READY, WATCHDOG, STATUS)",
    )
    config_option(daemon)

    status = add_verb(subparsers, Verb.STATUS, cmd_status, help="one screen on the host for a technician")
    config_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    reset = add_verb(
        subparsers,
        Verb.RESET,
        cmd_reset,
        help="let a reverted revision be tried again and clear flap suppressions and cooldowns",
    )
    config_option(reset)
    reset.add_argument("--revision", metavar="REV", help="clear only this revision's attempts")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def cmd_plan(args: argparse.Namespace) -> int:
    from nixcomply.model.outcome import PlanKind
    from nixcomply.reconcile.cycle import Reconciler

    report = Reconciler(load(args), use_systemd=False).plan(build=not args.no_build)
    if args.json:
        planned: PlanJson = {
            "host": report.host.model_dump(mode="json"),
            "desired": report.target.desired.model_dump(mode="json"),
            "plan": report.plan.model_dump(mode="json"),
        }
        _print_json(planned)
    else:
        p = report.plan
        print(f"{p.kind.value}: {p.reason}")
        if p.kind == PlanKind.DRIFT:
            print(f"  from {p.current_path or '(nothing running)'}")
            print(f"  to   {p.target_path or '(not built: --no-build)'}")
            if p.closure_diff:
                print("  closure difference:")
                for line in p.closure_diff.splitlines():
                    print(f"    {line}")
    return EXIT_OK if report.plan.kind == PlanKind.IN_SYNC else EXIT_FAILURE


def cmd_reconcile(args: argparse.Namespace) -> int:
    from nixcomply.reconcile.cycle import Reconciler

    report = Reconciler(load(args)).run(dry_run=args.dry_run)
    if args.json:
        _print_json(report.model_dump(mode="json"))
    else:
        print("\n".join(report.lines()))
    return report.exit_code


def cmd_daemon(args: argparse.Namespace) -> int:
    from nixcomply.reconcile.config import DEFAULT_CONFIG
    from nixcomply.reconcile.daemon import run

    return run(args.config or DEFAULT_CONFIG)


def cmd_status(args: argparse.Namespace) -> int:
    from nixcomply.reconcile.status import collect

    status = collect(load(args))
    if args.json:
        _print_json(status.model_dump(mode="json"))
    else:
        print("\n".join(status.lines()))
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    from nixcomply.core.lock import StateLock
    from nixcomply.host.state import State

    config = load(args)
    with StateLock(config.state_dir, purpose="reset"), State.open(config.state_dir) as state:
        attempts = state.clear_attempts(args.revision)
        suppressed = state.clear_suppressed() if args.revision is None else 0
        cooldowns = state.clear_cooldowns() if args.revision is None else 0
    print(
        f"cleared {attempts} blocked attempt(s), {suppressed} flap suppression(s), {cooldowns} cooldown(s)",
        file=sys.stderr,
    )
    return EXIT_OK
