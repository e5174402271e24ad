"""The rules engine: operators (property tests), dot-notation, decisions, validation errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from conftest import REPO
from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.load import known_runbook_ids
from nixcomply.errors import InputError
from nixcomply.heal.rules import Condition, Op, Rule, decide, holds, load_rules, resolve

RUNBOOKS = frozenset({"RB-SERVICE-001", "RB-DRIFT-001"})

scalars = st.one_of(
    st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False), st.text(max_size=8), st.booleans()
)
numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False))


def cond(field: str, op: str, value: Any = None) -> Condition:
    return Condition.model_validate({"field": field, "op": op, "value": value})


@given(scalars, scalars)
def test_eq_and_ne_are_complements(actual: Any, expected: Any) -> None:
    finding = {"observed": {"x": actual}}
    assert holds(cond("observed.x", "eq", expected), finding) != holds(
        cond("observed.x", "ne", expected), finding
    )


@given(scalars, st.lists(scalars, max_size=5))
def test_in_and_not_in_are_complements(actual: Any, values: list[Any]) -> None:
    finding = {"v": actual}
    assert holds(cond("v", "in", values), finding) == (actual in values)
    assert holds(cond("v", "not_in", values), finding) == (actual not in values)


@given(numbers, numbers)
def test_gt_lt_agree_with_python(actual: float, bound: float) -> None:
    finding = {"n": actual}
    assert holds(cond("n", "gt", bound), finding) == (actual > bound)
    assert holds(cond("n", "lt", bound), finding) == (actual < bound)


@given(st.text(max_size=10), st.text(max_size=4))
def test_contains_and_regex_on_strings(actual: str, part: str) -> None:
    finding = {"message": actual}
    assert holds(cond("message", "contains", part), finding) == (part in actual)
    assert holds(cond("message", "regex", re.escape(part)), finding) == (part in actual)


@given(st.one_of(st.none(), scalars))
def test_exists(value: Any) -> None:
    assert holds(cond("a.b", "exists", True), {"a": {"b": value}}) == (value is not None)
    assert holds(cond("a.b", "exists", False), {"a": {"b": value}}) == (value is None)
    assert holds(cond("a.b", "exists", False), {"a": {}})


def test_missing_fields_never_match_positive_operators() -> None:
    finding: dict[str, Any] = {"observed": {}}
    for op, value in [("eq", 1), ("contains", "x"), ("regex", "."), ("gt", 0), ("lt", 0), ("in", [1])]:
        assert not holds(cond("observed.nope", op, value), finding), op
    assert holds(cond("observed.nope", "ne", 1), finding)
    assert holds(cond("observed.nope", "not_in", [1]), finding)


def test_numbers_never_compare_with_strings_or_bools() -> None:
    assert not holds(cond("n", "gt", 1), {"n": "5"})
    assert not holds(cond("n", "gt", 0), {"n": True})


def test_dot_notation_reaches_lists() -> None:
    assert resolve({"control_ids": ["a", "b"]}, "control_ids.1") == "b"
    assert holds(cond("control_ids", "contains", "b"), {"control_ids": ["a", "b"]})


def rule(**data: Any) -> Rule:
    base: dict[str, Any] = {
        "id": "L1-SERVICE-001",
        "description": "restart a stopped critical unit",
        "when": [
            {"field": "check", "op": "eq", "value": "service_health"},
            {"field": "status", "op": "eq", "value": "drift"},
        ],
        "action": {"runbook": "RB-SERVICE-001", "params": {"unit": "${finding.runbook_params.unit}"}},
    }
    base.update(data)
    return Rule.model_validate(base)


def test_decide_fills_params_from_the_finding() -> None:
    finding = {
        "check": "service_health",
        "status": "drift",
        "severity": "high",
        "runbook_params": {"unit": "chronyd.service"},
    }
    decision = decide([rule()], finding)
    assert decision is not None
    assert decision.runbook == "RB-SERVICE-001"
    assert decision.params == {"unit": "chronyd.service"}


def test_priority_then_file_order_decides() -> None:
    alert = rule(id="L1-SERVICE-002", action={"alert": "page a human"}, priority=5)
    finding = {"check": "service_health", "status": "drift", "severity": "high"}
    decision = decide([rule(), alert], finding)
    assert decision is not None
    assert decision.alert == "page a human"
    same = rule(id="L1-SERVICE-003", action={"alert": "second"})
    first = decide([rule(), same], finding)
    assert first is not None
    assert first.runbook == "RB-SERVICE-001"


def test_severity_filter() -> None:
    r = rule(severity=["critical"])
    assert decide([r], {"check": "service_health", "status": "drift", "severity": "high"}) is None


WRITE = """\
rules:
  - id: L1-SERVICE-001
    description: restart
    when:
      - {field: check, op: eq, value: service_health}
    action: {runbook: RB-SERVICE-001}
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_ok(tmp_path: Path) -> None:
    (loaded,) = load_rules([write(tmp_path, WRITE)], runbook_ids=RUNBOOKS)
    assert loaded.id == "L1-SERVICE-001"


@pytest.mark.parametrize(
    ("change", "line", "field", "words"),
    [
        (("op: eq", "op: equals"), 5, "rules[0].when[0].op", "rule L1-SERVICE-001: Input should be"),
        (("RB-SERVICE-001", "RB-SERVICE-999"), 6, "rules[0].action.runbook", "no runbook RB-SERVICE-999"),
        (
            ("value: service_health", "value: [a]}\n      - {field: x, op: gt, value: high"),
            6,
            "rules[0].when[1]",
            "needs a number",
        ),
        (
            ("{runbook: RB-SERVICE-001}", "{runbook: RB-SERVICE-001, alert: hi}"),
            6,
            "rules[0].action",
            "exactly one of runbook or alert",
        ),
        (
            ("description: restart", "descripton: restart"),
            3,
            "rules[0].descripton",
            "did you mean 'description'",
        ),
        (
            ("{runbook: RB-SERVICE-001}", "{runbook: RB-SERVICE-001, params: {unit: '${unit}'}}"),
            6,
            "rules[0].action.params.unit",
            "${finding.<field>}",
        ),
        (("value: service_health", "value: '(['"), 5, "rules[0].when[0]", "invalid regular expression"),
    ],
)
def test_load_errors_name_file_rule_and_field(
    tmp_path: Path, change: tuple[str, str], line: int, field: str, words: str
) -> None:
    text = WRITE.replace(*change)
    if "invalid regular" in words:
        text = text.replace("op: eq", "op: regex")
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_rules([path], runbook_ids=RUNBOOKS)
    (problem,) = info.value.problems
    assert problem.file == path
    assert problem.field == field, str(problem)
    assert problem.line == line, str(problem)
    assert words in problem.message, str(problem)


def test_duplicate_rule_ids_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, WRITE, "a.yaml")
    b = write(tmp_path, WRITE, "b.yaml")
    with pytest.raises(InputError, match="also defined in"):
        load_rules([a, b], runbook_ids=RUNBOOKS)


def test_exists_needs_bool_and_in_needs_list() -> None:

    with pytest.raises(ValidationError, match="true or false"):
        cond("x", "exists", "yes")
    with pytest.raises(ValidationError, match="list value"):
        cond("x", "in", "abc")
    assert Op("not_in") is Op.NOT_IN


def test_built_in_rules_cover_every_check() -> None:

    rules = load_rules((REPO / "runbooks" / "rules").glob("*.yaml"), runbook_ids=known_runbook_ids())
    for check in sorted(CHECK_NAMES):
        finding = {
            "check": check,
            "status": "drift",
            "severity": "high",
            "runbook_params": {"unit": "x.service"},
        }
        decision = decide(rules, finding)
        assert decision is not None, f"no built-in rule handles drift of {check}"
        errored = decide(rules, {**finding, "status": "error"})
        assert errored is not None
        assert errored.alert is not None, f"an erroring {check} must alert, never pass"
    assert decide(rules, {"check": "sshd_effective", "status": "pass", "severity": "high"}) is None
