"""The runbook schema: pre-approved, declarative remediation procedures (``runbooks/*.yaml``).

A runbook is data, never code: a list of steps whose actions come from a fixed whitelist
(``Action``), whose parameters are declared with types, and whose string values may refer
to the runbook's parameters as ``${name}``. The executor validates every parameter before
any step runs. A runbook's id is also its file name (``runbooks/RB-DRIFT-001.yaml``).

Each action takes a fixed set of arguments (``ACTION_ARGS``): a step that gives an argument
the action does not know, leaves out a required one, or gives a literal of the wrong shape
fails here, at load time, with the file and line; so does a whole-value reference
(``unit: "${x}"``) to a parameter of an incompatible type (a ``string`` parameter cannot
become the directory ``clean_directory`` empties). What depends on the host — allowlists of
units, binaries and directories — is checked by :mod:`nixcomply.heal.guard` before a run.

Rollback: a rollback step may name the step it ``undoes`` (by that step's ``name``). When a
step fails, the rollback steps that undo the steps that ran are run first, in reverse order
of those steps; then the rollback steps that undo nothing (the last resort: an alert, a
cleanup), in file order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from pydantic import Field, model_validator

from nixcomply.core.yamlsource import SourceMap, load_model
from nixcomply.errors import InputError
from nixcomply.heal import programs
from nixcomply.host.systemd import InvalidUnitNameError, validate_unit_name
from nixcomply.model.base import StrictModel
from nixcomply.model.severity import Severity

RUNBOOK_ID: Final = re.compile(r"^RB-[A-Z]+-\d{3}$")
PARAM_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
PARAM_REF: Final = re.compile(r"\$\{([^}]*)\}")


class Action(StrEnum):
    """Everything a runbook step can do. Nothing else is possible."""

    RUN_COMMAND = "run_command"  # an allowlisted binary with an argv, never a shell
    RESTART_SERVICE = "restart_service"
    START_UNIT = "start_unit"
    WAIT_UNIT = "wait_unit"
    CAPTURE_STATE = "capture_state"
    CHECK_DISK_SPACE = "check_disk_space"
    TRIGGER_BACKUP = "trigger_backup"
    SYNC_GENERATION = "sync_generation"
    SEND_ALERT = "send_alert"
    VERIFY_CHECKSUMS = "verify_checksums"
    CLEAN_DIRECTORY = "clean_directory"


class ParamType(StrEnum):
    UNIT = "unit"  # a systemd unit name (grammar + allowlist)
    PATH = "path"  # a path confined to the configured allowed roots
    MOUNT = "mount"  # an existing absolute path whose filesystem is only measured (statvfs)
    STRING = "string"  # one line of printable text, bounded; typed further where it is used
    INT = "int"
    DURATION = "duration"  # seconds (90, "90s", "15m", "2h", "1d")


class OnFailure(StrEnum):
    ABORT = "abort"  # stop; outcome failed (nothing was changed yet)
    ALERT = "alert"  # stop; outcome alert (a human must look)
    SKIP = "skip"  # the runbook does not apply; outcome rejected


# Bounds of int and duration parameters that do not give their own.
INT_BOUNDS: Final = (0, 1_000_000)
DURATION_BOUNDS: Final = (0, 7 * 86400)


class ParamSpec(StrictModel):
    type: ParamType
    description: str = Field(min_length=1)
    required: bool = True
    default: str | int | None = None
    max_length: int = Field(default=256, gt=0, le=4096)
    minimum: int | None = Field(default=None, description="int/duration: smallest value (default 0)")
    maximum: int | None = Field(default=None, description="int/duration: largest value")

    @model_validator(mode="after")
    def _bounds(self) -> ParamSpec:
        if (self.minimum is not None or self.maximum is not None) and self.type not in {
            ParamType.INT,
            ParamType.DURATION,
        }:
            raise ValueError("minimum and maximum apply to int and duration parameters only")
        low, high = self.bounds()
        if low > high:
            raise ValueError(f"minimum {low} is larger than maximum {high}")
        return self

    def bounds(self) -> tuple[int, int]:
        low, high = DURATION_BOUNDS if self.type == ParamType.DURATION else INT_BOUNDS
        return (
            self.minimum if self.minimum is not None else low,
            self.maximum if self.maximum is not None else high,
        )


class ArgKind(StrEnum):
    """The shape of one action argument; :mod:`nixcomply.heal.guard` validates each kind."""

    UNIT = "unit"  # systemd grammar + allowlist
    PATH = "path"  # resolved, confined to the allowed roots
    MOUNT = "mount"  # existing absolute path, only measured
    TEXT = "text"  # one line of free text (an alert), never part of an argv
    ARGV = "argv"  # [audited program, one of its forms] (nixcomply.heal.programs)
    INT = "int"
    BOOL = "bool"
    CHOICE = "choice"


@dataclass(frozen=True)
class ArgSpec:
    kind: ArgKind
    help: str
    required: bool = False
    default: Any = None
    bounds: tuple[int, int] = INT_BOUNDS
    choices: tuple[str, ...] = ()
    strictly_inside: bool = False  # PATH: never an allowed root itself


UNIT_STATES: Final = ("active", "inactive", "failed")
PRIORITIES: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

# What each action accepts. Anything else in a step's params is an error at load time.
ACTION_ARGS: Final[Mapping[Action, Mapping[str, ArgSpec]]] = {
    Action.RUN_COMMAND: {
        "argv": ArgSpec(
            ArgKind.ARGV,
            "[program, words and options one of its forms allows] (nixcomply.heal.programs); never a shell",
            required=True,
        )
    },
    Action.RESTART_SERVICE: {"unit": ArgSpec(ArgKind.UNIT, "unit to restart", required=True)},
    Action.START_UNIT: {"unit": ArgSpec(ArgKind.UNIT, "unit to start", required=True)},
    Action.WAIT_UNIT: {
        "unit": ArgSpec(ArgKind.UNIT, "unit to watch", required=True),
        "state": ArgSpec(ArgKind.CHOICE, "ActiveState to reach", default="active", choices=UNIT_STATES),
        "stable_seconds": ArgSpec(
            ArgKind.INT, "the state must hold this long (default heal.unit_settle_seconds)", bounds=(0, 300)
        ),
    },
    Action.CAPTURE_STATE: {
        "unit": ArgSpec(ArgKind.UNIT, "unit whose state is recorded"),
        "ruleset": ArgSpec(ArgKind.BOOL, "also record `nft list ruleset` and its sha256", default=False),
        "journal_lines": ArgSpec(
            ArgKind.INT, "also record the unit's last journal lines", default=0, bounds=(0, 1000)
        ),
    },
    Action.CHECK_DISK_SPACE: {
        "path": ArgSpec(ArgKind.MOUNT, "a path on the filesystem to measure", required=True),
        "min_free_percent": ArgSpec(
            ArgKind.INT, "fail below this much free space", default=0, bounds=(0, 100)
        ),
        "min_free_bytes": ArgSpec(
            ArgKind.INT, "fail below this many free bytes", default=0, bounds=(0, 2**62)
        ),
    },
    Action.TRIGGER_BACKUP: {"unit": ArgSpec(ArgKind.UNIT, "backup unit to run to completion", required=True)},
    Action.SYNC_GENERATION: {},
    Action.SEND_ALERT: {
        "message": ArgSpec(ArgKind.TEXT, "one line for the on-call technician", required=True),
        "priority": ArgSpec(
            ArgKind.CHOICE, "syslog priority (default heal.alert.priority)", choices=PRIORITIES
        ),
    },
    Action.VERIFY_CHECKSUMS: {
        "restored": ArgSpec(ArgKind.PATH, "the restored copy", required=True),
        "reference": ArgSpec(ArgKind.PATH, "the live copy", required=True),
        "result_file": ArgSpec(ArgKind.PATH, "write the restore-test result (JSON) here"),
    },
    Action.CLEAN_DIRECTORY: {
        "path": ArgSpec(
            ArgKind.PATH,
            "directory whose entries are removed (kept itself)",
            required=True,
            strictly_inside=True,
        ),
        "older_than_days": ArgSpec(ArgKind.INT, "only files last modified longer ago", bounds=(0, 3650)),
    },
}

# Which parameter types a whole-value reference ("${p}") may feed into an argument kind.
_COMPATIBLE: Final[Mapping[ArgKind, frozenset[ParamType]]] = {
    ArgKind.UNIT: frozenset({ParamType.UNIT}),
    ArgKind.PATH: frozenset({ParamType.PATH}),
    ArgKind.MOUNT: frozenset({ParamType.PATH, ParamType.MOUNT}),
    ArgKind.INT: frozenset({ParamType.INT, ParamType.DURATION}),
    ArgKind.CHOICE: frozenset({ParamType.STRING}),
    ArgKind.BOOL: frozenset(),
    ArgKind.TEXT: frozenset(ParamType),
    ArgKind.ARGV: frozenset(),  # a list: its elements may only fill option values
}

# The largest values a runbook may give itself (a host's heal block may lower some).
MAX_STEPS: Final = 200
MAX_COOLDOWN_SECONDS: Final = 30 * 86400


class Constraints(StrictModel):
    max_retries: int = Field(default=0, ge=0, le=10)
    retry_delay_seconds: float = Field(default=5, ge=0, le=3600, allow_inf_nan=False)
    requires_maintenance_window: bool = False
    cooldown_seconds: float = Field(
        default=900,
        ge=0,
        le=MAX_COOLDOWN_SECONDS,
        allow_inf_nan=False,
        description="wait at least this long between runs",
    )


class Step(StrictModel):
    action: Action
    description: str = Field(min_length=1)
    name: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_-]*$", max_length=64, description="for rollback's undoes"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(default=60, gt=0, le=3600, allow_inf_nan=False)
    evidence_key: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    continue_on_failure: bool = False
    undoes: str | None = Field(default=None, description="rollback only: the name of the step this reverses")

    @model_validator(mode="after")
    def _arguments(self) -> Step:
        problems = static_arg_problems(self.action, self.params)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Precondition(Step):
    on_failure: OnFailure = OnFailure.ABORT


class Runbook(StrictModel):
    id: str = Field(pattern=RUNBOOK_ID.pattern)
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    severity: Severity
    description: str = Field(min_length=1)
    controls: list[str] = Field(default_factory=list, description="baseline control ids this runbook heals")
    disruptive: bool = Field(
        default=False, description="interrupts service (waits for the maintenance window)"
    )
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    constraints: Constraints = Field(default_factory=Constraints)
    preconditions: list[Precondition] = Field(default_factory=list, max_length=MAX_STEPS)
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)
    rollback: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)
    evidence_required: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Runbook:
        for name in self.params:
            if not PARAM_NAME.match(name):
                raise ValueError(f"parameter name {name!r} must be lowercase letters, digits and _")
        keys = {s.evidence_key for s in [*self.preconditions, *self.steps] if s.evidence_key}
        missing = [k for k in self.evidence_required if k not in keys]
        if missing:
            raise ValueError(f"evidence_required names keys no step records: {', '.join(missing)}")
        return self

    def semantic_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Problems between parts of the runbook, each with its location: step names that
        repeat, ``undoes`` that names no step, a whole-value ``${p}`` of an incompatible type."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: set[str] = set()
        for section in ("preconditions", "steps", "rollback"):
            for i, step in enumerate(getattr(self, section)):
                if step.name is not None:
                    if step.name in seen:
                        problems.append(((section, i, "name"), f"step name {step.name!r} is used twice"))
                    seen.add(step.name)
                if step.undoes is not None and section != "rollback":
                    problems.append(((section, i, "undoes"), "only rollback steps can undo a step"))
        step_names = {s.name for s in self.steps if s.name}
        for i, step in enumerate(self.rollback):
            if step.undoes is not None and step.undoes not in step_names:
                problems.append((("rollback", i, "undoes"), f"{step.undoes!r} names no step"))
        for section in ("preconditions", "steps", "rollback"):
            for i, step in enumerate(getattr(self, section)):
                for arg, value in step.params.items():
                    spec = ACTION_ARGS[step.action].get(arg)
                    m = PARAM_REF.fullmatch(value) if isinstance(value, str) else None
                    if spec is None or m is None or m.group(1) not in self.params:
                        continue
                    ptype = self.params[m.group(1)].type
                    if ptype not in _COMPATIBLE[spec.kind]:
                        problems.append(
                            (
                                (section, i, "params", arg),
                                f"argument {arg} of {step.action.value} takes a {spec.kind.value}, "
                                f"but parameter {m.group(1)} is a {ptype.value}",
                            )
                        )
        return problems

    def sections(self) -> list[tuple[str, Step]]:
        """Every step with its place (``steps[1]``), in the order a full run meets them."""
        out: list[tuple[str, Step]] = []
        for section in ("preconditions", "steps", "rollback"):
            out.extend((f"{section}[{i}]", step) for i, step in enumerate(getattr(self, section)))
        return out

    def referenced_params(self) -> set[str]:
        found: set[str] = set()
        for step in [*self.preconditions, *self.steps, *self.rollback]:
            found.update(_refs(step.params))
        return found


def static_arg_problems(action: Action, params: Mapping[str, Any]) -> list[str]:
    """What is wrong with a step's arguments before any parameter is known: unknown or
    missing arguments, literals of the wrong shape. Values with ``${...}`` are checked after
    substitution by the guard."""
    specs = ACTION_ARGS[action]
    problems = []
    for arg in params:
        if arg not in specs:
            known = ", ".join(sorted(specs)) or "none"
            problems.append(f"{action.value} has no argument {arg!r} (it takes: {known})")
    for arg, required in specs.items():
        if required.required and arg not in params:
            problems.append(f"{action.value} needs argument {arg!r} ({required.help})")
    for arg, value in params.items():
        spec = specs.get(arg)
        if spec is None:
            continue
        if spec.kind == ArgKind.BOOL:
            if not isinstance(value, bool):
                problems.append(f"argument {arg} must be true or false")
        elif spec.kind == ArgKind.ARGV:
            if not isinstance(value, list) or not value:
                problems.append(f"argument {arg} must be a non-empty list of strings")
            elif not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
                problems.append(f"argument {arg} must list strings only")
            else:
                problems.extend(f"argument {arg}: {p}" for p in programs.static_problems(value))
        elif spec.kind == ArgKind.INT:
            if isinstance(value, bool) or not isinstance(value, int | str):
                problems.append(f"argument {arg} must be a whole number")
            elif isinstance(value, int) and not spec.bounds[0] <= value <= spec.bounds[1]:
                problems.append(f"argument {arg} must be between {spec.bounds[0]} and {spec.bounds[1]}")
            elif isinstance(value, str) and not PARAM_REF.search(value) and not re.fullmatch(r"-?\d+", value):
                problems.append(f"argument {arg} must be a whole number")
        elif not isinstance(value, str):
            problems.append(f"argument {arg} must be a string")
        elif PARAM_REF.search(value):
            continue  # checked by the guard once the parameters are known
        elif spec.kind == ArgKind.CHOICE and value not in spec.choices:
            problems.append(f"argument {arg} must be one of {', '.join(spec.choices)}")
        elif spec.kind == ArgKind.UNIT:
            try:
                validate_unit_name(value)
            except InvalidUnitNameError as e:
                problems.append(f"argument {arg}: {e}")
        elif spec.kind in (ArgKind.PATH, ArgKind.MOUNT):
            if not value.startswith("/") or ".." in value.split("/"):
                problems.append(f"argument {arg} must be an absolute path without '..'")
            elif not value.isprintable():
                problems.append(f"argument {arg} contains a control character")
        elif spec.kind == ArgKind.TEXT and (not value.strip() or not value.isprintable()):
            problems.append(f"argument {arg} must be one line of printable text")
    if action == Action.CAPTURE_STATE and "unit" not in params and params.get("ruleset") is not True:
        problems.append("capture_state needs a unit or ruleset: true")
    return problems


def _refs(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(PARAM_REF.findall(value))
    if isinstance(value, list):
        return set().union(*(_refs(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(_refs(v) for v in value.values())) if value else set()
    return set()


def load_runbook(path: Path) -> Runbook:
    """Load and check one runbook file; ``InputError`` names file, line and field."""
    return load_runbook_source(path)[0]


def load_runbook_source(path: Path) -> tuple[Runbook, SourceMap]:
    """:func:`load_runbook`, with where each value sits (for the guard's refusals)."""
    runbook, source = load_model(Runbook, path)
    problems = [source.problem(loc, message) for loc, message in runbook.semantic_problems()]
    if runbook.id != path.stem:
        problems.append(source.problem(("id",), f"id {runbook.id!r} must match the file name {path.stem!r}"))
    for name in sorted(runbook.referenced_params() - set(runbook.params)):
        problems.append(_ref_problem(source, runbook, name))
    if problems:
        raise InputError(problems)
    return runbook, source


def _ref_problem(source: SourceMap, runbook: Runbook, name: str) -> Any:
    for section in ("preconditions", "steps", "rollback"):
        for i, step in enumerate(getattr(runbook, section)):
            if name in _refs(step.params):
                return source.problem(
                    (section, i, "params"), f"refers to ${{{name}}}, which is not a declared parameter"
                )
    return source.problem(("params",), f"undeclared parameter {name!r}")
