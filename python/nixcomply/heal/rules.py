"""Deterministic rules: which finding gets which runbook (or an alert).

A rule matches findings by conditions on their fields (dot-notation reaches nested fields:
``observed.active_state``) with a fixed set of operators, an optional severity filter, and
names one action: run a runbook with parameters, or raise an alert for a human. Rules are
evaluated in order of ``priority`` then file order; the first match decides. There is no
scoring and no learning: the same findings always give the same decisions, which is what an
auditor needs to be able to reason about.

Rule files: ``runbooks/rules/*.yaml``, each ``{rules: [...]}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, assert_never

from pydantic import Field, model_validator

from nixcomply.core.yamlsource import SourceMap, load_yaml, validate
from nixcomply.errors import InputError, Problem
from nixcomply.heal.runbook import PARAM_REF
from nixcomply.model.base import StrictModel
from nixcomply.model.severity import Severity

_MISSING: Final = object()
FIELD_PATH: Final = re.compile(r"^[a-z_][a-z0-9_]*(\.[A-Za-z0-9_.-]+)*$")


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    CONTAINS = "contains"
    REGEX = "regex"
    GT = "gt"
    LT = "lt"
    IN = "in"
    NOT_IN = "not_in"
    EXISTS = "exists"


class Condition(StrictModel):
    field: str = Field(pattern=FIELD_PATH.pattern, description="finding field, dot-notation for nested ones")
    op: Op
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        if self.op in {Op.IN, Op.NOT_IN} and not isinstance(self.value, list):
            raise ValueError(f"operator {self.op.value} needs a list value")
        if self.op in {Op.GT, Op.LT} and (
            isinstance(self.value, bool) or not isinstance(self.value, int | float)
        ):
            raise ValueError(f"operator {self.op.value} needs a number")
        if self.op == Op.EXISTS and not isinstance(self.value, bool):
            raise ValueError("operator exists needs true or false")
        if self.op == Op.REGEX:
            if not isinstance(self.value, str):
                raise ValueError("operator regex needs a string")
            try:
                re.compile(self.value)
            except re.error as e:
                raise ValueError(f"invalid regular expression: {e}") from None
        return self


class RuleAction(StrictModel):
    runbook: str | None = Field(default=None, pattern=r"^RB-[A-Z]+-\d{3}$")
    params: dict[str, str] = Field(
        default_factory=dict, description="runbook parameters; ${finding.<field>} refers to the finding"
    )
    alert: str | None = Field(
        default=None,
        min_length=1,
        description="alert text instead of a runbook; ${finding.<field>} refers to the finding",
    )

    @model_validator(mode="after")
    def _one(self) -> RuleAction:
        if (self.runbook is None) == (self.alert is None):
            raise ValueError("give exactly one of runbook or alert")
        if self.alert is not None and self.params:
            raise ValueError("params only apply to a runbook")
        return self


class Rule(StrictModel):
    id: str = Field(pattern=r"^L1-[A-Z]+-\d{3}$")
    description: str = Field(min_length=1)
    when: list[Condition] = Field(min_length=1, description="all must hold")
    severity: list[Severity] | None = Field(default=None, description="only findings of these severities")
    action: RuleAction
    cooldown_seconds: float = Field(default=900, ge=0)
    priority: int = Field(default=100, description="lower runs first")


class RuleFile(StrictModel):
    rules: list[Rule]


@dataclass(frozen=True)
class Decision:
    rule: Rule
    runbook: str | None
    params: dict[str, str]
    alert: str | None

    @property
    def cooldown_key(self) -> str:
        return f"{self.rule.id}:{self.runbook or 'alert'}"


def resolve(finding: Mapping[str, Any], field: str) -> Any:
    """The value at dot-separated ``field`` of a finding, or a private MISSING marker."""
    value: Any = finding
    for part in field.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def holds(condition: Condition, finding: Mapping[str, Any]) -> bool:
    actual = resolve(finding, condition.field)
    op, expected = condition.op, condition.value
    if op == Op.EXISTS:
        return bool((actual is not _MISSING and actual is not None) == expected)
    if actual is _MISSING:
        return op in {Op.NE, Op.NOT_IN}
    match op:
        case Op.EQ:
            return bool(actual == expected)
        case Op.NE:
            return bool(actual != expected)
        case Op.IN:
            return actual in expected
        case Op.NOT_IN:
            return actual not in expected
        case Op.CONTAINS:
            if isinstance(actual, str):
                return isinstance(expected, str) and expected in actual
            if isinstance(actual, list | tuple | set | dict):
                return expected in actual
            return False
        case Op.REGEX:
            return isinstance(actual, str) and re.search(expected, actual) is not None
        case Op.GT | Op.LT:
            if isinstance(actual, bool) or not isinstance(actual, int | float):
                return False
            return bool(actual > expected) if op == Op.GT else bool(actual < expected)
        case Op.EXISTS:  # decided above, before a missing field could be compared
            return bool((actual is not None) == expected)
        case unreachable:
            assert_never(unreachable)


def matches(rule: Rule, finding: Mapping[str, Any]) -> bool:
    if rule.severity is not None and finding.get("severity") not in rule.severity:
        return False
    return all(holds(c, finding) for c in rule.when)


def _expand(template: str, finding: Mapping[str, Any]) -> str:
    def sub(m: re.Match[str]) -> str:
        ref = m.group(1)
        if not ref.startswith("finding."):
            raise ValueError(f"${{{ref}}}: only ${{finding.<field>}} can be referred to in rule params")
        value = resolve(finding, ref.removeprefix("finding."))
        return "" if value is _MISSING or value is None else str(value)

    return PARAM_REF.sub(sub, template)


def decide(rules: Sequence[Rule], finding: Mapping[str, Any]) -> Decision | None:
    """The first matching rule's action for ``finding``, with parameters filled in."""
    for rule in sorted(rules, key=lambda r: r.priority):  # sorted() is stable: file order breaks ties
        if matches(rule, finding):
            params = {k: _expand(v, finding) for k, v in rule.action.params.items()}
            alert = None if rule.action.alert is None else _expand(rule.action.alert, finding)
            return Decision(rule=rule, runbook=rule.action.runbook, params=params, alert=alert)
    return None


def load_rules(paths: Iterable[Path], *, runbook_ids: frozenset[str]) -> list[Rule]:
    """Load rule files; every problem names the file, the rule and the field (exit 2)."""
    rules: list[Rule] = []
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    for path in sorted(paths):
        data, source = load_yaml(path)
        try:
            rule_file = validate(RuleFile, data, source)
        except InputError as e:
            problems.extend(_name_rules(e.problems, data))
            continue
        for i, rule in enumerate(rule_file.rules):
            where = ("rules", i)
            if rule.id in seen:
                problems.append(
                    source.problem((*where, "id"), f"rule {rule.id} is also defined in {seen[rule.id]}")
                )
            seen.setdefault(rule.id, path)
            if rule.action.runbook is not None and rule.action.runbook not in runbook_ids:
                problems.append(
                    source.problem(
                        (*where, "action", "runbook"), f"rule {rule.id}: no runbook {rule.action.runbook}"
                    )
                )
            problems.extend(_param_problems(rule, source, where))
            rules.append(rule)
    if problems:
        raise InputError(problems)
    return rules


def _param_problems(rule: Rule, source: SourceMap, where: tuple[str | int, ...]) -> list[Problem]:
    """Every ``${...}`` of the rule's parameters and alert text must name a finding field."""
    templates: list[tuple[tuple[str | int, ...], str]] = [
        ((*where, "action", "params", name), template) for name, template in rule.action.params.items()
    ]
    if rule.action.alert is not None:
        templates.append(((*where, "action", "alert"), rule.action.alert))
    out = []
    for loc, template in templates:
        for ref in PARAM_REF.findall(template):
            if not ref.startswith("finding.") or not FIELD_PATH.match(ref.removeprefix("finding.")):
                out.append(
                    source.problem(
                        loc,
                        f"rule {rule.id}: ${{{ref}}} must refer to a finding field as ${{finding.<field>}}",
                    )
                )
    return out


def _name_rules(problems: Sequence[Problem], data: Any) -> list[Problem]:
    """Model errors locate `rules[3].when[0].op`; add the rule's id so the message names it."""
    out = []
    for p in problems:
        m = re.match(r"rules\[(\d+)\]", p.field)
        rule_id = None
        if m and isinstance(data, dict) and isinstance(data.get("rules"), list):
            entries = data["rules"]
            index = int(m.group(1))
            if index < len(entries) and isinstance(entries[index], dict):
                rule_id = entries[index].get("id")
        message = f"rule {rule_id}: {p.message}" if rule_id else p.message
        out.append(Problem(p.file, p.line, p.field, message))
    return out
