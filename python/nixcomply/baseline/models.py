"""The baseline as data: pydantic models of ``baseline/<id>.yaml`` (``extra="forbid"``).

A baseline is a list of controls plus one ``parameters`` block. A control is the unit that
renders into the NixOS module, is verified at runtime, can be excepted, and appears in
evidence. Option paths in ``nixos`` state *intent* in the canonical (newest) spelling; the
renderer maps them to the option names of the NixOS release it targets
(``nixcomply.baseline.releases``).
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from nixcomply.baseline.nixattr import parse_attr_path
from nixcomply.model.base import StrictModel
from nixcomply.model.severity import Severity

# Citations in each framework's own form.
HIPAA_CITATION: Final = re.compile(
    r"^164\.3(?:08|10|12|14|16)\([a-z]\)(?:\(\d{1,2}\)(?:\((?:i|ii|iii|iv|v|vi|vii|viii|ix|x)\)(?:\([A-Z]\))?)?)?$"
)
SOC2_CRITERION: Final = re.compile(r"^(?:CC[1-9]\.\d{1,2}|A1\.[1-3]|C1\.[12]|PI1\.[1-5]|P[1-8]\.\d)$")
CIS_V8_SAFEGUARD: Final = re.compile(r"^(?:[1-9]|1[0-8])\.\d{1,2}$")
NIST_800_53_CONTROL: Final = re.compile(r"^[A-Z]{2}-\d{1,2}(?:\(\d{1,2}\))?$")
NIST_CSF_SUBCATEGORY: Final = re.compile(r"^(?:GV|ID|PR|DE|RS|RC)\.[A-Z]{2}-\d{2}$")
CONTROL_ID: Final = re.compile(r"^[a-z][a-z0-9]*(?:\.[a-z0-9][a-z0-9-]*)+$")
RUNBOOK_ID: Final = re.compile(r"^RB-[A-Z]+-\d{3}$")


NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


def _check_all(values: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    for value in values:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not a {what}")
    if len(set(values)) != len(values):
        raise ValueError("lists the same reference twice")
    return values


class Frameworks(StrictModel):
    """References of one control into each framework; every framework must be cited."""

    hipaa: list[str] = Field(min_length=1, description="45 CFR citation, e.g. 164.312(a)(2)(iv)")
    soc2: list[str] = Field(min_length=1, description="2017 Trust Services Criteria, e.g. CC6.1")
    cis_v8: list[str] = Field(min_length=1, description="CIS Controls v8 safeguard, e.g. 4.1")
    nist_800_53: list[str] = Field(min_length=1, description="NIST SP 800-53 rev. 5 control, e.g. AC-17(2)")
    nist_csf: list[str] = Field(min_length=1, description="NIST CSF 2.0 subcategory, e.g. PR.AA-05")

    @field_validator("hipaa")
    @classmethod
    def _hipaa(cls, v: list[str]) -> list[str]:
        return _check_all(v, HIPAA_CITATION, "HIPAA Security Rule citation like 164.312(a)(2)(iv)")

    @field_validator("soc2")
    @classmethod
    def _soc2(cls, v: list[str]) -> list[str]:
        return _check_all(v, SOC2_CRITERION, "SOC 2 criterion like CC6.1")

    @field_validator("cis_v8")
    @classmethod
    def _cis(cls, v: list[str]) -> list[str]:
        return _check_all(v, CIS_V8_SAFEGUARD, "CIS Controls v8 safeguard like 4.1")

    @field_validator("nist_800_53")
    @classmethod
    def _nist(cls, v: list[str]) -> list[str]:
        return _check_all(v, NIST_800_53_CONTROL, "NIST SP 800-53 control like AC-17(2)")

    @field_validator("nist_csf")
    @classmethod
    def _csf(cls, v: list[str]) -> list[str]:
        return _check_all(v, NIST_CSF_SUBCATEGORY, "NIST CSF 2.0 subcategory like PR.AA-05")


class Verify(StrictModel):
    """The runtime observation that shows the control is in effect on a running host."""

    check: NonEmptyStr = Field(description="name of a runtime check (nixcomply check --list)")
    expect: dict[str, Any] = Field(default_factory=dict, description="what the check must observe")


class AssertionKind(StrEnum):
    """Evaluation-time assertions a control can require (rendered from templates)."""

    ROOT_ON_LUKS = "root-on-luks"


class Requirement(StrictModel):
    """An assertion the NixOS evaluation must satisfy while the control is active."""

    assertion: AssertionKind
    message: NonEmptyStr


# Nix integers are signed 64-bit: a larger number cannot be rendered for evaluation.
NIX_INT_MIN: Final = -(2**63)
NIX_INT_MAX: Final = 2**63 - 1
NixInt = Annotated[int, Field(ge=NIX_INT_MIN, le=NIX_INT_MAX)]


def _nix_value(value: Any) -> Any:
    """Refuse what Nix cannot hold: integers beyond 64 bits, NaN and infinities (in lists and
    attribute sets too)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, int) and not NIX_INT_MIN <= v <= NIX_INT_MAX:
            raise ValueError(f"{v} does not fit in a Nix integer (signed 64-bit)")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{v} is not a number Nix can hold")
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return value


# JSON-compatible values a NixOS option can be given from YAML.
NixValue = Annotated[bool | int | float | str | list[Any] | dict[str, Any] | None, AfterValidator(_nix_value)]


def _attr_path(value: str) -> str:
    parse_attr_path(value)  # raises ValueError naming the path and the position
    return value


# A NixOS option path; as a dict key its errors are located at that key's own line.
NixAttrPath = Annotated[str, AfterValidator(_attr_path)]


class Control(StrictModel):
    id: str = Field(description="stable id, dotted: area.what, e.g. ssh.password-auth-disabled")
    title: NonEmptyStr
    severity: Severity
    rationale: NonEmptyStr
    frameworks: Frameworks
    framework_notes: str | None = Field(
        default=None, description="where a framework reference fits only indirectly, why it is cited"
    )
    nixos: dict[NixAttrPath, NixValue] = Field(
        default_factory=dict, description="NixOS option path (canonical spelling) -> value"
    )
    requires: list[Requirement] = Field(default_factory=list)
    unless: str | None = Field(
        default=None,
        description="boolean parameter that makes the control not applicable when true (e.g. router)",
    )
    verify: Verify
    remediation: str = Field(description="runbook id, e.g. RB-DRIFT-001")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CONTROL_ID.match(v):
            raise ValueError(f"{v!r} is not a control id (lowercase dotted, like ssh.password-auth-disabled)")
        return v

    @field_validator("remediation")
    @classmethod
    def _runbook(cls, v: str) -> str:
        if not RUNBOOK_ID.match(v):
            raise ValueError(f"{v!r} is not a runbook id (like RB-DRIFT-001)")
        return v


class Parameters(StrictModel):
    """Site policy knobs the runtime checks and the reconciler read from the manifest."""

    backup_max_age_hours: NixInt = Field(gt=0, description="newest backup may be at most this old")
    restore_test_max_age_days: NixInt = Field(gt=0, description="last successful restore test")
    time_max_drift_seconds: float = Field(gt=0, allow_inf_nan=False, description="allowed clock offset")
    critical_patch_max_age_days: NixInt = Field(gt=0, description="running nixpkgs revision age")
    critical_services: list[NonEmptyStr] = Field(
        min_length=1, description="systemd units that must be active"
    )
    disk_usage_max_percent: int = Field(default=85, gt=0, le=100)
    exception_warn_days: NixInt = Field(
        default=14, ge=0, description="warn this long before an exception expires"
    )
    generation_max_drift_hours: NixInt = Field(
        default=24, gt=0, description="how long a host may run other than the approved revision"
    )
    av_signature_max_age_days: NixInt = Field(default=7, gt=0)
    router: bool = Field(
        default=False, description="the host forwards packets between networks (controls with unless: router)"
    )


class Baseline(StrictModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]*-v\d+$", description="baseline id, e.g. hipaa-v1")
    title: NonEmptyStr
    version: NixInt = Field(ge=1, description="bumped on every change of a control's meaning")
    nixos_release: str = Field(pattern=r"^\d{2}\.(05|11)$", description="release the option names target")
    description: str = ""
    parameters: Parameters
    controls: list[Control] = Field(min_length=1)

    @model_validator(mode="after")
    def _unless_names_a_flag(self) -> Baseline:
        flags = {name for name, f in Parameters.model_fields.items() if f.annotation is bool}
        for c in self.controls:
            if c.unless is not None and c.unless not in flags:
                raise ValueError(
                    f"control {c.id}: unless names {c.unless!r}, expected a boolean parameter "
                    f"({', '.join(sorted(flags))})"
                )
        return self

    def control(self, control_id: str) -> Control:
        for c in self.controls:
            if c.id == control_id:
                return c
        raise KeyError(control_id)
