"""The runbook schema: pre-approved, declarative remediation procedures (``runbooks/*.yaml``).

A runbook is data, never code: a list of steps whose actions come from a fixed whitelist
(``Action``), whose parameters are declared with types, and whose string values may refer
to the runbook's parameters as ``${name}``. The executor validates every parameter before
any step runs. A runbook's id is also its file name (``runbooks/RB-DRIFT-001.yaml``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nixcomply.errors import InputError
from nixcomply.yamlsource import SourceMap, load_model

RUNBOOK_ID: Final = re.compile(r"^RB-[A-Z]+-\d{3}$")
PARAM_NAME: Final = re.compile(r"^[a-z][a-z0-9_]*$")
PARAM_REF: Final = re.compile(r"\$\{([^}]*)\}")

_Strict = ConfigDict(extra="forbid", frozen=True, defer_build=True)


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
    STRING = "string"  # no shell metacharacters, bounded length
    INT = "int"
    DURATION = "duration"  # seconds


class OnFailure(StrEnum):
    ABORT = "abort"  # stop; outcome failed (nothing was changed yet)
    ALERT = "alert"  # stop; outcome alert (a human must look)
    SKIP = "skip"  # the runbook does not apply; outcome rejected


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class ParamSpec(BaseModel):
    model_config = _Strict

    type: ParamType
    description: str = Field(min_length=1)
    required: bool = True
    default: str | int | None = None
    max_length: int = Field(default=256, gt=0, le=4096)


class Constraints(BaseModel):
    model_config = _Strict

    max_retries: int = Field(default=0, ge=0, le=10)
    retry_delay_seconds: float = Field(default=5, ge=0, le=3600)
    requires_maintenance_window: bool = False
    cooldown_seconds: float = Field(default=900, ge=0, description="wait at least this long between runs")


class Step(BaseModel):
    model_config = _Strict

    action: Action
    description: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(default=60, gt=0, le=3600)
    evidence_key: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    continue_on_failure: bool = False


class Precondition(Step):
    on_failure: OnFailure = OnFailure.ABORT


class Runbook(BaseModel):
    model_config = _Strict

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
    preconditions: list[Precondition] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)
    rollback: list[Step] = Field(default_factory=list)
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

    def referenced_params(self) -> set[str]:
        found: set[str] = set()
        for step in [*self.preconditions, *self.steps, *self.rollback]:
            found.update(_refs(step.params))
        return found


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
    runbook, source = load_model(Runbook, path)
    problems = []
    if runbook.id != path.stem:
        problems.append(source.problem(("id",), f"id {runbook.id!r} must match the file name {path.stem!r}"))
    for name in sorted(runbook.referenced_params() - set(runbook.params)):
        problems.append(_ref_problem(source, runbook, name))
    if problems:
        raise InputError(problems)
    return runbook


def _ref_problem(source: SourceMap, runbook: Runbook, name: str) -> Any:
    for section in ("preconditions", "steps", "rollback"):
        for i, step in enumerate(getattr(runbook, section)):
            if name in _refs(step.params):
                return source.problem(
                    (section, i, "params"), f"refers to ${{{name}}}, which is not a declared parameter"
                )
    return source.problem(("params",), f"undeclared parameter {name!r}")
