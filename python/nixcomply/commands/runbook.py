"""Verbs for runbooks: ``runbook validate``, ``runbook list``, ``runbook run``.

``runbook run`` is a technician's manual heal. It validates everything first (a refusal
exits 2 before any step ran), runs the steps, and records a remediation statement with the
invoking user as actor when the configuration names evidence keys. ``--dry-run`` says what
each step would do with the resolved parameters and executes and records nothing.

Exit codes: 0 success (or a dry run), 1 the run failed, was reverted, raised an alert or
did not apply, 2 bad usage, a bad runbook file or refused parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, assert_never

from nixcomply.cli import add_group, add_verb
from nixcomply.commands import config_option
from nixcomply.errors import EXIT_FAILURE, EXIT_OK, InputError, Problem, UsageError

if TYPE_CHECKING:
    from nixcomply.heal.config import HealConfig
    from nixcomply.heal.executor import RunbookRun, StepOutcome
    from nixcomply.heal.runbook import Runbook
    from nixcomply.host.systemd import Systemd, SystemdFactory
    from nixcomply.reconcile.config import ReconcilerConfig


class RunbookJson(TypedDict):
    """Each item of ``runbook list --json`` (stable: fields are added, never renamed or
    removed). ``params`` holds each parameter's declaration as the runbook file states it
    (``nixcomply.heal.runbook.Param``)."""

    id: str
    version: int
    name: str
    severity: str
    disruptive: bool
    controls: list[str]
    params: dict[str, dict[str, Any]]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(subparsers, "runbook", help="validate, list and run remediation runbooks")

    validate = add_verb(
        group,
        "validate",
        cmd_validate,
        help="validate runbook files (errors name file:line)",
        description=(
            "Validate runbook files: the schema, and everything the guard would refuse before a\n"
            "run whatever parameters it is given (the allowed programs and their options, the\n"
            "step count, literal units and paths against the host's allowlists)."
        ),
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    config_option(validate, if_present=True)

    listing = add_verb(group, "list", cmd_list, help="list the runbooks")
    _dir_arg(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    run = add_verb(
        group,
        "run",
        cmd_run,
        help="run a runbook now (a technician's manual heal)",
        description=(
            "Run a runbook by id (from the runbooks directory) or file. Every parameter and\n"
            "step is checked against the host's allowlists (the reconciler configuration's\n"
            "heal block) before anything runs. With evidence keys configured, the run is\n"
            "recorded with you as the actor; --dry-run executes and records nothing."
        ),
    )
    run.add_argument("runbook", metavar="ID|FILE", help="RB-SERVICE-001, or a runbook file")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a runbook parameter")
    run.add_argument("--dry-run", action="store_true", help="say what would run; execute nothing")
    config_option(run, if_present=True)
    _dir_arg(run)
    run.add_argument("--json", action="store_true", help="print the run as JSON")


def _dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, default=None, help="runbooks directory (default: the shipped one)"
    )


def _runbooks_dir(given: Path | None) -> Path:
    from nixcomply.core.paths import runbooks_dir

    return given if given is not None else runbooks_dir()


# -- validate / list -------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from nixcomply.heal import guard
    from nixcomply.heal.runbook import load_runbook_source

    config, heal = load_heal_config(args.config)
    # without a host's configuration, what exists on this machine is not judged
    root = config.root if config is not None else None
    problems: list[Problem] = []
    for path in args.files:
        try:
            runbook, source = load_runbook_source(path)
            guard.check_static(runbook, heal, root=root, source=source)
        except InputError as e:
            problems.extend(e.problems)
            continue
        steps = len(runbook.preconditions) + len(runbook.steps) + len(runbook.rollback)
        print(f"ok: {path}: {runbook.id} v{runbook.version}, {steps} steps")
    if problems:
        raise InputError(problems)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from nixcomply.heal.runbook import load_runbook

    directory = _runbooks_dir(args.dir)
    paths = sorted(directory.glob("RB-*.yaml"))
    if not paths:
        raise UsageError(f"no runbooks (RB-*.yaml) in {directory}")
    runbooks: list[Runbook] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            runbooks.append(load_runbook(path))
        except InputError as e:
            problems.extend(e.problems)
    if args.json:
        rows: list[RunbookJson] = [
            {
                "id": r.id,
                "version": r.version,
                "name": r.name,
                "severity": r.severity.value,
                "disruptive": r.disruptive,
                "controls": r.controls,
                "params": {k: v.model_dump(mode="json") for k, v in r.params.items()},
            }
            for r in runbooks
        ]
        print(json.dumps(rows, indent=2))
    else:
        for r in runbooks:
            flags = " [disruptive]" if r.disruptive else ""
            params = ", ".join(
                f"{k}{'' if v.required and v.default is None else '?'}" for k, v in r.params.items()
            )
            print(
                f"{r.id:<16} v{r.version:<3} {r.severity.value:<9}{r.name}{flags}"
                + (f"  ({params})" if params else "")
            )
    if problems:
        raise InputError(problems)
    return EXIT_OK


# -- run -------------------------------------------------------------------------------------


def _load_runbook(ref: str, directory: Path) -> Runbook:
    from nixcomply.heal.runbook import RUNBOOK_ID, load_runbook

    if RUNBOOK_ID.match(ref) and "/" not in ref:
        path = directory / f"{ref}.yaml"
        if not path.exists():
            raise UsageError(f"no runbook {ref} in {directory} (known: {_known(directory)})")
        return load_runbook(path)
    if not Path(ref).exists() and ref.startswith("RB-"):
        raise UsageError(
            f"{ref}: neither a runbook id (RB-AREA-NNN) of {directory} nor a file",
            hint=f"known: {_known(directory)}",
        )
    return load_runbook(Path(ref))


def _known(directory: Path) -> str:
    return ", ".join(sorted(p.stem for p in directory.glob("RB-*.yaml"))) or "none"


def parse_params(items: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise UsageError(
                f"--param {item!r}: expected NAME=VALUE (NAME in lowercase letters, digits and _)"
            )
        if name in params:
            raise UsageError(f"--param {name} is given twice")
        params[name] = value
    return params


def load_heal_config(path: Path | None) -> tuple[ReconcilerConfig | None, HealConfig]:
    """The reconciler configuration (when there is one) and its ``heal`` block."""
    from nixcomply.heal.config import HealConfig
    from nixcomply.reconcile.config import DEFAULT_CONFIG, load_config

    if path is None:
        if not DEFAULT_CONFIG.exists():
            return None, HealConfig()
        path = DEFAULT_CONFIG
    config = load_config(path)
    return config, config.heal


def _keys_configured(config: ReconcilerConfig) -> bool:
    from nixcomply.evidence.keys import CREDENTIALS_ENV

    return bool(os.environ.get(CREDENTIALS_ENV)) or (
        config.evidence.signing_key is not None and config.evidence.log_key is not None
    )


def cmd_run(args: argparse.Namespace) -> int:
    import contextlib

    from nixcomply.heal import guard
    from nixcomply.heal.executor import ExecutionContext, execute
    from nixcomply.model.outcome import RunOutcome

    runbook = _load_runbook(args.runbook, _runbooks_dir(args.dir))
    params = parse_params(args.param)
    config, heal = load_heal_config(args.config)
    root = config.root if config is not None else Path("/")
    guard.check(runbook, params, heal, root=root)  # GuardError (exit 2) before anything runs

    with contextlib.ExitStack() as stack:
        store = None
        if not args.dry_run and config is not None and _keys_configured(config):
            from nixcomply.reconcile.record import open_store

            store = stack.enter_context(open_store(config))  # a bad key stops us before any change
        elif not args.dry_run:
            print(
                "nixcomply: warning: no evidence keys configured: this run is not recorded", file=sys.stderr
            )
        ctx = ExecutionContext(
            config=heal,
            systemd=_systemd(config),
            sync_generation=_sync(config) if config is not None else None,
            root=root,
            user_mode=config.systemd.user_mode if config is not None else False,
        )
        run = execute(runbook, params, ctx, dry_run=args.dry_run)
        recorded = None
        if store is not None and config is not None:
            from nixcomply.core.actor import invoking_user
            from nixcomply.heal.remediation import record_remediation
            from nixcomply.reconcile.record import host_identity

            recorded = record_remediation(
                store,
                run,
                host=host_identity(config.root, config.host),
                controls=runbook.controls,
                actor=invoking_user(),
            )
    if args.json:
        print(run.model_dump_json(indent=2))
    else:
        for line in describe_run(run):
            print(line)
        if recorded is not None:
            print(f"evidence: entry {recorded.seq} ({recorded.path})")
    return EXIT_OK if run.outcome in {RunOutcome.SUCCESS, RunOutcome.PLANNED} else EXIT_FAILURE


def _systemd(config: ReconcilerConfig | None) -> SystemdFactory[Systemd] | None:
    from nixcomply.host.systemd import connector

    return connector() if config is None else config.systemd.connector()


def _sync(config: ReconcilerConfig) -> Any:
    """RB-DRIFT-001's callback: one reconcile cycle, as ``nixcomply reconcile`` runs it."""
    from nixcomply.heal.sync import SyncResult

    def sync(timeout: float) -> SyncResult:
        from nixcomply.reconcile.cycle import Reconciler

        report = Reconciler(config).run()
        return SyncResult(
            ok=report.exit_code == EXIT_OK,
            detail=f"reconcile: {report.result.outcome.value}: {report.result.detail}",
            data={"outcome": report.result.outcome.value, "evidence_seqs": list(report.evidence_seqs)},
        )

    return sync


def _mark(outcome: StepOutcome) -> str:
    from nixcomply.heal.executor import StepOutcome

    match outcome:
        case StepOutcome.SUCCESS:
            return "ok  "
        case StepOutcome.FAILED:
            return "FAIL"
        case StepOutcome.PLANNED:
            return "plan"
        case _:
            assert_never(outcome)


def describe_run(run: RunbookRun) -> list[str]:
    lines = [f"{run.runbook} v{run.version}: {run.name}"]
    if run.params:
        lines.append("parameters: " + ", ".join(f"{k}={v}" for k, v in run.params.items()))
    for step in run.all_steps():
        mark = _mark(step.outcome)
        head = f"  {mark} {step.section}[{step.index}] {step.action.value}"
        if step.would is not None:
            lines.append(f"{head}: {step.description}")
            lines.append(f"         would {step.would}")
            continue
        tries = f"{step.attempts} attempts, " if step.attempts > 1 else ""
        lines.append(f"{head} ({tries}{step.duration_s:.2f} s): {step.error or step.detail}")
    if run.verification is not None and run.verification.ran:
        lines.append(f"  {'ok  ' if run.verification.ok else 'FAIL'} verification: {run.verification.detail}")
    for refusal in run.refusals:
        lines.append(f"  refused: {refusal}")
    lines.append(f"outcome: {run.outcome.value}: {run.reason}")
    return lines
