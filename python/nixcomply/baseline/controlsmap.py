"""``baseline/controls-map.csv``: every HIPAA Security Rule requirement and how it is met.

The map has one row per standard and per implementation specification of 45 CFR §164.308,
§164.310, §164.312, §164.314 and §164.316, in the rule's order and citation form, and says
for each how a client meets it:

* ``automated``: baseline controls that NixOS enforces and runtime checks verify provide the
  whole technical mechanism the row asks for on every managed host;
* ``partial``: baseline controls provide part of it, and people or process do the rest;
* ``attestation``: an organisational safeguard, met by a signed statement of a named person
  with an evidence link and an expiry.

Evidence packaging and ``nixcomply evidence attest`` read it to know which rows need a
person's signature (:attr:`MapRow.needs_attestation`). The same module reads the plain list
of the rule's citations kept as test data, so the map can be checked against the regulation.

Both files are plain RFC 4180 CSV with a header line. Every problem is reported as an
:class:`~nixcomply.errors.InputError` naming file, line and column.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import pydantic
from pydantic import BaseModel, Field, StringConstraints, ValidationInfo, field_validator

from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.models import CONTROL_ID, HIPAA_CITATION
from nixcomply.core.yamlsource import SourceMap, problems_from_validation, read_text
from nixcomply.errors import InputError, Problem
from nixcomply.model.base import StrictModel
from nixcomply.model.status import Coverage

RULE_COLUMNS: Final = ("citation", "title", "kind", "requirement", "parent")
MAP_COLUMNS: Final = (
    "citation",
    "title",
    "kind",
    "requirement",
    "coverage",
    "controls",
    "checks",
    "evidence",
)
LIST_SEPARATOR: Final = ";"

# The sections of the Security Rule that hold standards and implementation specifications.
SECTIONS: Final = ("164.308", "164.310", "164.312", "164.314", "164.316")

NonEmptyCell = Annotated[str, StringConstraints(min_length=1)]
R = TypeVar("R", bound=BaseModel)


class Kind(StrEnum):
    STANDARD = "standard"
    IMPLEMENTATION_SPECIFICATION = "implementation specification"


class RequirementLevel(StrEnum):
    """What the rule calls each implementation specification; a standard is always required."""

    REQUIRED = "required"
    ADDRESSABLE = "addressable"


class _Citation(StrictModel):
    """The columns the rule list and the map share."""

    line: int = Field(ge=1, description="line of the row in its file (1 is the header)")
    citation: str = Field(description="45 CFR citation in the rule's own form, e.g. 164.312(a)(2)(iv)")
    title: NonEmptyCell
    kind: Kind
    requirement: RequirementLevel

    @field_validator("citation")
    @classmethod
    def _citation(cls, v: str) -> str:
        if not HIPAA_CITATION.match(v):
            raise ValueError(f"{v!r} is not a Security Rule citation like 164.312(a)(2)(iv)")
        return v

    @field_validator("title")
    @classmethod
    def _title(cls, v: str) -> str:
        if v != v.strip():
            raise ValueError("has leading or trailing spaces")
        return v

    @field_validator("requirement")
    @classmethod
    def _standards_are_required(cls, v: RequirementLevel, info: ValidationInfo) -> RequirementLevel:
        if info.data.get("kind") is Kind.STANDARD and v is not RequirementLevel.REQUIRED:
            raise ValueError(
                "a standard is always required; only implementation specifications are addressable"
            )
        return v

    @property
    def section(self) -> str:
        """``164.312`` for ``164.312(a)(2)(iv)``."""
        return self.citation.split("(", 1)[0]


class RuleRow(_Citation):
    """One standard or implementation specification of the Security Rule (the test-data list)."""

    parent: str = Field(description="the standard's citation for an implementation specification")

    @field_validator("parent")
    @classmethod
    def _parent(cls, v: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind is Kind.STANDARD and v:
            raise ValueError("a standard has no parent; leave it empty")
        if kind is Kind.IMPLEMENTATION_SPECIFICATION:
            if not v:
                raise ValueError("an implementation specification names its standard's citation")
            if not HIPAA_CITATION.match(v):
                raise ValueError(f"{v!r} is not a Security Rule citation like 164.312(a)(1)")
        return v


def _check_items(
    items: tuple[str, ...], pattern: re.Pattern[str] | None, names: frozenset[str] | None
) -> None:
    seen: set[str] = set()
    for item in items:
        if not item or item != item.strip():
            raise ValueError(f"empty or space-padded entry in {LIST_SEPARATOR!r}-separated list")
        if pattern is not None and not pattern.match(item):
            raise ValueError(
                f"{item!r} is not a control id (lowercase dotted, like ssh.password-auth-disabled)"
            )
        if names is not None and item not in names:
            raise ValueError(f"{item!r} is not a runtime check (see nixcomply.baseline.catalog)")
        if item in seen:
            raise ValueError(f"lists {item!r} twice")
        seen.add(item)


class MapRow(_Citation):
    """One row of ``baseline/controls-map.csv``."""

    coverage: Coverage
    controls: tuple[str, ...] = Field(description="baseline control ids that support the row")
    checks: tuple[str, ...] = Field(description="runtime checks whose statements are the row's evidence")
    evidence: NonEmptyCell = Field(description="what an auditor receives for the row")

    @field_validator("controls", "checks", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            return tuple(v.split(LIST_SEPARATOR)) if v else ()
        return v

    @field_validator("controls")
    @classmethod
    def _controls(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        _check_items(v, CONTROL_ID, None)
        coverage = info.data.get("coverage")
        if coverage in (Coverage.AUTOMATED, Coverage.PARTIAL) and not v:
            raise ValueError(
                f"an automated or partial row names the baseline controls that implement it (coverage is {coverage})"
            )
        return v

    @field_validator("checks")
    @classmethod
    def _checks(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        _check_items(v, None, CHECK_NAMES)
        coverage = info.data.get("coverage")
        if coverage is Coverage.AUTOMATED and not v:
            raise ValueError("an automated row names the runtime checks that verify it")
        if coverage is Coverage.ATTESTATION and v:
            raise ValueError("an attestation row is met by a signed statement, not by runtime checks")
        return v

    @field_validator("evidence")
    @classmethod
    def _evidence(cls, v: str) -> str:
        if v != v.strip():
            raise ValueError("has leading or trailing spaces")
        return v

    @property
    def needs_attestation(self) -> bool:
        """Whether a named person must sign for this row: the whole of an attestation row,
        the people-and-process part of a partial one."""
        return self.coverage is not Coverage.AUTOMATED


def load_rule_list(path: Path) -> list[RuleRow]:
    """Read the list of the Security Rule's standards and implementation specifications."""
    return _load(path, RULE_COLUMNS, RuleRow)


def load_controls_map(path: Path) -> list[MapRow]:
    """Read ``controls-map.csv``; raise :class:`InputError` naming file, line and column of
    every malformed row (unknown coverage, unknown check, malformed control id, ...)."""
    return _load(path, MAP_COLUMNS, MapRow)


def citations_by_control(rows: Sequence[MapRow]) -> dict[str, tuple[str, ...]]:
    """Control id -> the citations of the rows that name it, in the map's order. This is what
    each control's ``frameworks.hipaa`` in the baseline should list."""
    out: dict[str, list[str]] = {}
    for row in rows:
        for control in row.controls:
            out.setdefault(control, []).append(row.citation)
    return {control: tuple(citations) for control, citations in out.items()}


def citation_key(citation: str) -> tuple[int, ...]:
    """Sort key in the rule's own order: section, then each paragraph level ((a), (1), (ii), (A)).
    Raises ``ValueError`` for a malformed citation."""
    if not HIPAA_CITATION.match(citation):
        raise ValueError(f"{citation!r} is not a Security Rule citation")
    section, _, rest = citation.partition("(")
    key = [int(section.replace(".", ""))]
    for level, part in enumerate(rest.rstrip(")").split(")(")):
        if level in {0, 3}:  # (a) lower-case letter, (A) upper-case letter
            key.append(ord(part))
        elif level == 1:
            key.append(int(part))
        else:
            key.append(_ROMAN[part])
    return tuple(key)


_ROMAN: Final = {r: i for i, r in enumerate(("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x"), 1)}


def _standard_stem(citation: str) -> str:
    """``164.308(a)(1)`` for the standard ``164.308(a)(1)(i)``; ``164.310(a)`` for ``164.310(a)(1)``.
    Its implementation specifications are numbered under this stem."""
    return citation[: citation.rindex("(")]


def check_rule_structure(rows: Sequence[RuleRow], file: Path | None) -> list[Problem]:
    """Problems with the rule list as a whole: rows out of the rule's order, an implementation
    specification whose parent is not the standard it follows or is not numbered under it, a
    section with no standard."""
    problems: list[Problem] = []

    def bad(row: RuleRow, field: str, message: str) -> None:
        problems.append(Problem(file, row.line, field, f"{row.citation}: {message}"))

    standard: RuleRow | None = None
    previous: RuleRow | None = None
    for row in rows:
        if previous is not None and citation_key(row.citation) <= citation_key(previous.citation):
            bad(row, "citation", f"out of the rule's order (comes after {previous.citation})")
        previous = row
        if row.kind is Kind.STANDARD:
            standard = row
            continue
        if standard is None or row.parent != standard.citation:
            expected = standard.citation if standard else "a standard before it"
            bad(row, "parent", f"parent {row.parent!r} is not the standard it follows ({expected})")
        elif not row.citation.startswith(_standard_stem(standard.citation) + "("):
            bad(row, "citation", f"is not numbered under its standard {standard.citation}")
    for section in SECTIONS:
        if not any(r.section == section and r.kind is Kind.STANDARD for r in rows):
            problems.append(Problem(file, None, "citation", f"no standard of § {section}"))
    return problems


def check_against_rule(
    map_rows: Sequence[MapRow], rule_rows: Sequence[RuleRow], file: Path | None
) -> list[Problem]:
    """Problems where the map differs from the rule list: a missing, extra or moved row, or a
    title, kind or requirement that is not the rule's."""
    problems: list[Problem] = []
    rule_by_citation = {r.citation: r for r in rule_rows}
    map_citations = {r.citation for r in map_rows}
    for row in map_rows:
        rule = rule_by_citation.get(row.citation)
        if rule is None:
            problems.append(
                Problem(file, row.line, "citation", f"{row.citation}: not in the Security Rule list")
            )
            continue
        for field in ("title", "kind", "requirement"):
            mine, theirs = getattr(row, field), getattr(rule, field)
            if mine != theirs:
                problems.append(
                    Problem(
                        file, row.line, field, f"{row.citation}: {str(mine)!r}, the rule says {str(theirs)!r}"
                    )
                )
    problems.extend(
        Problem(file, None, "citation", f"{rule.citation} ({rule.title}): missing from the map")
        for rule in rule_rows
        if rule.citation not in map_citations
    )
    common_map = [r for r in map_rows if r.citation in rule_by_citation]
    common_rule = [r for r in rule_rows if r.citation in map_citations]
    for mine, theirs in zip(common_map, common_rule, strict=False):
        if mine.citation != theirs.citation:
            problems.append(
                Problem(
                    file,
                    mine.line,
                    "citation",
                    f"{mine.citation}: out of the rule's order (expected {theirs.citation} here)",
                )
            )
            break  # one misplaced row shifts every later one; report the first
    return problems


def _records(text: str, file: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(first line, column -> value) per record, after checking the header and field counts."""
    lines = text.splitlines(keepends=True)
    reader = csv.reader(lines, strict=True)
    problems: list[Problem] = []
    out: list[tuple[int, dict[str, str]]] = []
    try:
        header = next(reader, None)
        if header is None:
            raise InputError.single(file, "empty file; expected a header line", line=1, field="header")
        if tuple(header) != tuple(columns):
            raise InputError.single(
                file,
                f"header is {','.join(header)!r}, expected {','.join(columns)!r}",
                line=1,
                field="header",
            )
        start = reader.line_num + 1
        for fields in reader:
            if not fields:
                problems.append(Problem(file, start, "", "blank line (remove it)"))
            elif len(fields) != len(columns):
                problems.append(
                    Problem(
                        file,
                        start,
                        "",
                        f"has {len(fields)} fields, expected {len(columns)} ({','.join(columns)})",
                    )
                )
            else:
                out.append((start, dict(zip(columns, fields, strict=True))))
            start = reader.line_num + 1
    except csv.Error as e:
        problems.append(Problem(file, reader.line_num, "", f"malformed CSV: {e}"))
    if problems:
        raise InputError(problems)
    return out


def _load(path: Path, columns: Sequence[str], model: type[R]) -> list[R]:
    text = read_text(path)
    problems: list[Problem] = []
    rows: list[R] = []
    first_line: dict[str, int] = {}
    for line, record in _records(text, path, columns):
        source = SourceMap(file=path, lines={(): line})
        try:
            row = model.model_validate({"line": line, **record})
        except pydantic.ValidationError as e:
            problems.extend(problems_from_validation(e, source))
            continue
        citation = record["citation"]
        if citation in first_line:
            problems.append(
                Problem(
                    path,
                    line,
                    "citation",
                    f"{citation} is listed twice (first on line {first_line[citation]})",
                )
            )
            continue
        first_line[citation] = line
        rows.append(row)
    if problems:
        raise InputError(problems)
    return rows
