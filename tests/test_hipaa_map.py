"""The HIPAA Security Rule list (test data) and ``baseline/controls-map.csv`` against it.

The data tests read the CSV files with the standard ``csv`` module, independently of
``nixcomply.baseline.controlsmap``, so a bug in the loader cannot hide a bad row; the loader is
tested separately on deliberately broken copies of the real files.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pytest

from conftest import DATA, REPO
from nixcomply.baseline.catalog import CHECK_NAMES
from nixcomply.baseline.controlsmap import (
    MAP_COLUMNS,
    RULE_COLUMNS,
    SECTIONS,
    Kind,
    MapRow,
    RequirementLevel,
    check_against_rule,
    check_rule_structure,
    citation_key,
    citations_by_control,
    load_controls_map,
    load_rule_list,
)
from nixcomply.baseline.models import CONTROL_ID, HIPAA_CITATION
from nixcomply.errors import InputError
from nixcomply.model.status import Coverage

RULE_CSV = DATA / "hipaa-security-rule.csv"
MAP_CSV = REPO / "baseline" / "controls-map.csv"


def read_raw(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, strict=True)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def where(row: dict[str, str]) -> str:
    return f"{row.get('citation')!r} ({row.get('title')})"


def split(value: str) -> list[str]:
    return value.split(";") if value else []


# ---------------------------------------------------------------------------------------------
# The rule list: 45 CFR 164.308, 164.310, 164.312, 164.314, 164.316


@pytest.fixture(scope="module")
def rule() -> list[dict[str, str]]:
    header, rows = read_raw(RULE_CSV)
    assert tuple(header) == RULE_COLUMNS, f"{RULE_CSV}: header {header}"
    return rows


def test_rule_rows_are_well_formed(rule: list[dict[str, str]]) -> None:
    bad = []
    for row in rule:
        if None in row or any(v is None for v in row.values()):
            bad.append(f"{where(row)}: wrong number of fields")
            continue
        if not HIPAA_CITATION.match(row["citation"]):
            bad.append(f"{where(row)}: citation does not follow the rule's grammar")
        if not row["title"] or row["title"] != row["title"].strip():
            bad.append(f"{where(row)}: empty or space-padded title")
        if row["kind"] not in {"standard", "implementation specification"}:
            bad.append(f"{where(row)}: kind {row['kind']!r}")
        if row["requirement"] not in {"required", "addressable"}:
            bad.append(f"{where(row)}: requirement {row['requirement']!r}")
        if row["kind"] == "standard" and (row["requirement"] != "required" or row["parent"]):
            bad.append(f"{where(row)}: a standard is required and has no parent")
    assert not bad, "\n".join(bad)


def test_rule_has_no_duplicate_citations(rule: list[dict[str, str]]) -> None:
    twice = [c for c, n in Counter(r["citation"] for r in rule).items() if n > 1]
    assert not twice, f"listed more than once: {twice}"


def test_every_implementation_specification_has_a_standard_parent(rule: list[dict[str, str]]) -> None:
    standards = {r["citation"] for r in rule if r["kind"] == "standard"}
    orphans = [
        f"{where(r)}: parent {r['parent']!r} is not a standard in the list"
        for r in rule
        if r["kind"] == "implementation specification" and r["parent"] not in standards
    ]
    assert not orphans, "\n".join(orphans)


def test_every_section_is_present(rule: list[dict[str, str]]) -> None:
    present = {r["citation"].split("(")[0] for r in rule}
    assert present == set(SECTIONS), f"sections present: {sorted(present)}, expected {SECTIONS}"


def test_rule_structure_follows_the_regulation() -> None:
    problems = check_rule_structure(load_rule_list(RULE_CSV), RULE_CSV)
    assert not problems, "\n".join(map(str, problems))


def test_rule_counts_per_section(rule: list[dict[str, str]]) -> None:
    # Counted from the regulation's text (see the report of the hipaa-map branch); a change
    # here means a row was added or lost, which must be a deliberate edit of the regulation.
    counts = Counter(r["citation"].split("(")[0] for r in rule)
    assert counts == {"164.308": 30, "164.310": 12, "164.312": 12, "164.314": 9, "164.316": 5}
    kinds = Counter((r["kind"], r["requirement"]) for r in rule)
    assert kinds == {
        ("standard", "required"): 22,
        ("implementation specification", "required"): 24,
        ("implementation specification", "addressable"): 22,
    }
    # The three safeguard sections alone give HHS's familiar figure: 18 standards, 14 required
    # and 22 addressable implementation specifications.
    safeguards = Counter((r["kind"], r["requirement"]) for r in rule if r["citation"] < "164.313")
    assert safeguards == {
        ("standard", "required"): 18,
        ("implementation specification", "required"): 14,
        ("implementation specification", "addressable"): 22,
    }


def test_standards_without_implementation_specifications(rule: list[dict[str, str]]) -> None:
    # Where a standard has no implementation specification, the standard itself is the
    # requirement (Appendix A to Subpart C marks these "(R)").
    parents = {r["parent"] for r in rule}
    alone = {r["citation"] for r in rule if r["kind"] == "standard" and r["citation"] not in parents}
    assert alone == {
        "164.308(a)(2)",
        "164.308(a)(8)",
        "164.310(b)",
        "164.310(c)",
        "164.312(b)",
        "164.312(d)",
        "164.316(a)",
    }


# ---------------------------------------------------------------------------------------------
# The controls map


@pytest.fixture(scope="module")
def cmap() -> list[dict[str, str]]:
    header, rows = read_raw(MAP_CSV)
    assert tuple(header) == MAP_COLUMNS, f"{MAP_CSV}: header {header}"
    return rows


def test_map_has_the_rule_rows_in_order(rule: list[dict[str, str]], cmap: list[dict[str, str]]) -> None:
    bad = []
    for i, (mine, theirs) in enumerate(zip(cmap, rule, strict=False)):
        if mine["citation"] != theirs["citation"]:
            bad.append(f"row {i + 1}: map has {where(mine)}, the rule list has {where(theirs)}")
            break
        for field in ("title", "kind", "requirement"):
            if mine[field] != theirs[field]:
                bad.append(f"{where(mine)}: {field} {mine[field]!r}, the rule says {theirs[field]!r}")
    if len(cmap) != len(rule):
        bad.append(f"map has {len(cmap)} rows, the rule list {len(rule)}")
    assert not bad, "\n".join(bad)


def test_map_coverage_controls_and_checks(cmap: list[dict[str, str]]) -> None:
    bad = []
    for row in cmap:
        coverage, controls, checks = row["coverage"], split(row["controls"]), split(row["checks"])
        if coverage not in {"automated", "partial", "attestation"}:
            bad.append(f"{where(row)}: coverage {coverage!r}")
        if coverage == "automated" and (not controls or not checks):
            bad.append(f"{where(row)}: automated, but lists no control or no check")
        if coverage == "partial" and not controls:
            bad.append(f"{where(row)}: partial, but names no control that does its technical part")
        if coverage == "attestation" and checks:
            bad.append(f"{where(row)}: attestation, but lists checks {checks}")
        bad.extend(f"{where(row)}: unknown check {c!r}" for c in checks if c not in CHECK_NAMES)
        bad.extend(f"{where(row)}: malformed control id {c!r}" for c in controls if not CONTROL_ID.match(c))
        for name, values in (("controls", controls), ("checks", checks)):
            twice = [v for v, n in Counter(values).items() if n > 1]
            if twice:
                bad.append(f"{where(row)}: {name} lists {twice} twice")
        if not row["evidence"].strip():
            bad.append(f"{where(row)}: no evidence sentence")
    assert not bad, "\n".join(bad)


# Organisational safeguards: met by people and paper, never by a NixOS setting. Claiming more
# for any of them would mislead an auditor.
ORGANISATIONAL = [
    "164.308(a)(1)(i)",  # security management process (policies)
    "164.308(a)(1)(ii)(A)",  # risk analysis
    "164.308(a)(1)(ii)(B)",  # risk management
    "164.308(a)(1)(ii)(C)",  # sanction policy
    "164.308(a)(2)",  # assigned security responsibility
    "164.308(a)(3)(i)",
    "164.308(a)(3)(ii)(A)",
    "164.308(a)(3)(ii)(B)",  # workforce clearance
    "164.308(a)(4)(ii)(A)",
    "164.308(a)(4)(ii)(B)",
    "164.308(a)(5)(i)",  # training
    "164.308(a)(5)(ii)(A)",
    "164.308(a)(6)(i)",
    "164.308(a)(7)(i)",  # contingency plan
    "164.308(a)(7)(ii)(C)",
    "164.308(a)(7)(ii)(E)",
    "164.308(b)(1)",  # business associate agreements
    "164.308(b)(3)",
    "164.310(a)(1)",  # facility controls
    "164.310(a)(2)(i)",
    "164.310(a)(2)(ii)",
    "164.310(a)(2)(iii)",
    "164.310(a)(2)(iv)",
    "164.310(b)",
    "164.310(c)",
    "164.310(d)(2)(iii)",
    "164.312(a)(2)(ii)",  # emergency (break-glass) access procedure
]


def test_organisational_safeguards_are_attested(cmap: list[dict[str, str]]) -> None:
    by_citation = {r["citation"]: r for r in cmap}
    organisational = set(ORGANISATIONAL) | {c for c in by_citation if c.startswith(("164.314", "164.316"))}
    wrong = [
        f"{where(by_citation[c])}: organisational, but coverage is {by_citation[c]['coverage']!r}"
        for c in sorted(organisational, key=citation_key)
        if by_citation[c]["coverage"] != "attestation"
    ]
    assert not wrong, "\n".join(wrong)


def test_automated_rows_are_technical_safeguards(cmap: list[dict[str, str]]) -> None:
    # Only 164.312 holds mechanisms a host configuration can provide whole.
    wrong = [
        where(r) for r in cmap if r["coverage"] == "automated" and not r["citation"].startswith("164.312")
    ]
    assert not wrong, f"automated outside the technical safeguards: {wrong}"


# ---------------------------------------------------------------------------------------------
# The loader in the package


def test_load_controls_map_reads_the_real_map() -> None:
    rows = load_controls_map(MAP_CSV)
    assert len(rows) == 68
    first = rows[0]
    assert first.line == 2
    assert first.citation == "164.308(a)(1)(i)"
    assert first.kind is Kind.STANDARD
    assert first.requirement is RequirementLevel.REQUIRED
    assert first.coverage is Coverage.ATTESTATION
    assert first.needs_attestation
    logoff = next(r for r in rows if r.citation == "164.312(a)(2)(iii)")
    assert logoff.coverage is Coverage.PARTIAL  # SSH only: console and application sessions are attested
    assert logoff.controls == ("ssh.idle-timeout",)
    assert logoff.checks == ("sshd_effective",)
    assert logoff.needs_attestation
    assert check_against_rule(rows, load_rule_list(RULE_CSV), MAP_CSV) == []


def test_citations_by_control() -> None:
    by_control = citations_by_control(load_controls_map(MAP_CSV))
    assert by_control["ssh.idle-timeout"] == ("164.312(a)(2)(iii)",)
    assert by_control["encryption.root-on-luks"] == (
        "164.310(d)(1)",
        "164.310(d)(2)(i)",
        "164.310(d)(2)(ii)",
        "164.312(a)(2)(iv)",
    )
    for control, citations in by_control.items():
        assert list(citations) == sorted(citations, key=citation_key), control


def test_citation_key_orders_like_the_rule() -> None:
    ordered = ["164.308(a)(1)(i)", "164.308(a)(1)(ii)(D)", "164.308(a)(2)", "164.308(a)(10)", "164.308(b)(1)"]
    scrambled = [
        "164.308(b)(1)",
        "164.308(a)(10)",
        "164.308(a)(2)",
        "164.308(a)(1)(ii)(D)",
        "164.308(a)(1)(i)",
    ]
    assert sorted(scrambled, key=citation_key) == ordered
    assert sorted(scrambled) != ordered  # plain text order puts (10) before (2)
    assert citation_key("164.308(a)(7)(ii)(B)") < citation_key("164.308(a)(7)(ii)(E)")
    assert citation_key("164.312(a)(2)(iv)") < citation_key("164.312(a)(2)(x)")
    with pytest.raises(ValueError, match="not a Security Rule citation"):
        citation_key("164.530(c)")


def write_rows(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def map_rows() -> list[list[str]]:
    with MAP_CSV.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[1:]


def index_of(rows: list[list[str]], citation: str) -> int:
    return next(i for i, r in enumerate(rows) if r[0] == citation)


COL = {name: i for i, name in enumerate(MAP_COLUMNS)}


@pytest.mark.parametrize(
    ("citation", "column", "value", "message"),
    [
        ("164.312(b)", "coverage", "automatic", "Input should be 'automated', 'partial' or 'attestation'"),
        ("164.312(b)", "checks", "audit_status;no_such_check", "'no_such_check' is not a runtime check"),
        ("164.312(d)", "controls", "", "an automated or partial row names the baseline controls"),
        ("164.312(e)(1)", "controls", "", "(coverage is partial)"),
        ("164.312(d)", "controls", "SSH.PasswordAuth", "'SSH.PasswordAuth' is not a control id"),
        ("164.312(d)", "controls", "ssh.max-auth-tries;;ssh.banner", "empty or space-padded entry"),
        ("164.312(d)", "checks", "sshd_effective;sshd_effective", "lists 'sshd_effective' twice"),
        ("164.308(a)(2)", "checks", "sshd_effective", "an attestation row is met by a signed statement"),
        ("164.308(a)(2)", "requirement", "addressable", "a standard is always required"),
        ("164.308(a)(2)", "kind", "standard specification", "Input should be 'standard' or"),
        ("164.308(a)(2)", "citation", "164.308(a)(2)(xiv)", "is not a Security Rule citation"),
        ("164.308(a)(2)", "title", " Assigned security responsibility", "leading or trailing spaces"),
        ("164.308(a)(2)", "evidence", "", "at least 1 character"),
        ("164.308(a)(2)", "evidence", " ", "leading or trailing spaces"),
    ],
)
def test_loader_names_file_line_and_column(
    tmp_path: Path, citation: str, column: str, value: str, message: str
) -> None:
    rows = map_rows()
    i = index_of(rows, citation)
    rows[i][COL[column]] = value
    path = write_rows(tmp_path / "controls-map.csv", MAP_COLUMNS, rows)
    with pytest.raises(InputError) as e:
        load_controls_map(path)
    [problem] = e.value.problems
    assert (problem.file, problem.line, problem.field) == (path, i + 2, column), str(problem)
    assert message in problem.message
    assert str(e.value).startswith(f"{path}:{i + 2}: {column}: ")


def test_loader_refuses_an_automated_row_without_checks(tmp_path: Path) -> None:
    rows = map_rows()
    i = index_of(rows, "164.312(b)")
    rows[i][COL["coverage"]] = "automated"
    rows[i][COL["checks"]] = ""
    path = write_rows(tmp_path / "controls-map.csv", MAP_COLUMNS, rows)
    with pytest.raises(InputError, match="an automated row names the runtime checks"):
        load_controls_map(path)


def test_loader_reports_every_bad_row_at_once(tmp_path: Path) -> None:
    rows = map_rows()
    a, b = index_of(rows, "164.312(b)"), index_of(rows, "164.316(a)")
    rows[a][COL["coverage"]] = "full"
    rows[b][COL["checks"]] = "exceptions"
    path = write_rows(tmp_path / "map.csv", MAP_COLUMNS, rows)
    with pytest.raises(InputError) as e:
        load_controls_map(path)
    assert [(p.line, p.field) for p in e.value.problems] == [(a + 2, "coverage"), (b + 2, "checks")]


def test_loader_refuses_a_duplicate_row(tmp_path: Path) -> None:
    rows = map_rows()
    rows.append(list(rows[3]))
    path = write_rows(tmp_path / "map.csv", MAP_COLUMNS, rows)
    with pytest.raises(InputError) as e:
        load_controls_map(path)
    [problem] = e.value.problems
    assert (problem.line, problem.field) == (len(rows) + 1, "citation")
    assert f"{rows[3][0]} is listed twice (first on line 5)" in problem.message


def test_loader_counts_lines_of_multiline_fields(tmp_path: Path) -> None:
    rows = map_rows()
    rows[0][COL["evidence"]] = "first line\nsecond line\nthird line"
    rows[1][COL["coverage"]] = "bogus"
    path = write_rows(tmp_path / "map.csv", MAP_COLUMNS, rows)
    with pytest.raises(InputError) as e:
        load_controls_map(path)
    [problem] = e.value.problems
    assert (problem.line, problem.field) == (5, "coverage")  # header, 3 lines of row 1, then row 2


def test_loader_rejects_a_wrong_header(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "map.csv", (*MAP_COLUMNS[:-1], "proof"), map_rows())
    with pytest.raises(InputError) as e:
        load_controls_map(path)
    [problem] = e.value.problems
    assert (problem.line, problem.field) == (1, "header")
    assert "expected 'citation,title,kind,requirement,coverage,controls,checks,evidence'" in problem.message


def test_loader_rejects_short_rows_and_blank_lines(tmp_path: Path) -> None:
    text = ",".join(MAP_COLUMNS) + "\n" + "164.308(a)(2),Assigned security responsibility,standard\n\n"
    path = tmp_path / "map.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_controls_map(path)
    assert [(p.line, p.message) for p in e.value.problems] == [
        (2, f"has 3 fields, expected 8 ({','.join(MAP_COLUMNS)})"),
        (3, "blank line (remove it)"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        (",".join(MAP_COLUMNS) + '\n"164.312(b),x\n', "malformed CSV"),
    ],
)
def test_loader_rejects_malformed_csv(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        load_controls_map(path)


def test_loader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_controls_map(tmp_path / "absent.csv")


def test_rule_list_loader_checks_parents(tmp_path: Path) -> None:
    with RULE_CSV.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    rows[0][4] = "164.308(a)(2)"  # a standard with a parent
    rows[1][4] = ""  # an implementation specification without one
    path = write_rows(tmp_path / "rule.csv", RULE_COLUMNS, rows)
    with pytest.raises(InputError) as e:
        load_rule_list(path)
    assert [(p.line, p.field) for p in e.value.problems] == [(2, "parent"), (3, "parent")]


# ---------------------------------------------------------------------------------------------
# The structural checks catch what they claim to


def test_structure_check_catches_misorder_wrong_parent_and_missing_section() -> None:
    rows = load_rule_list(RULE_CSV)
    swapped = [rows[1], rows[0], *rows[2:]]
    problems = check_rule_structure(swapped, RULE_CSV)
    assert any("out of the rule's order" in p.message for p in problems)

    i = next(k for k, r in enumerate(rows) if r.citation == "164.312(c)(2)")
    moved = [*rows[:i], rows[i].model_copy(update={"parent": "164.312(a)(1)"}), *rows[i + 1 :]]
    [problem] = check_rule_structure(moved, RULE_CSV)
    assert (problem.line, problem.field) == (rows[i].line, "parent")
    assert problem.message.startswith("164.312(c)(2): parent '164.312(a)(1)' is not the standard it follows")

    renumbered = [
        r.model_copy(update={"citation": "164.312(d)(2)"}) if r.citation == "164.312(c)(2)" else r
        for r in rows
    ]
    problems = check_rule_structure(renumbered, RULE_CSV)
    assert any("not numbered under its standard 164.312(c)(1)" in p.message for p in problems)

    without = [r for r in rows if r.section != "164.316"]
    [problem] = check_rule_structure(without, RULE_CSV)
    assert problem.message == "no standard of § 164.316"


def test_against_rule_catches_missing_moved_and_changed_rows() -> None:
    rule = load_rule_list(RULE_CSV)
    cmap = load_controls_map(MAP_CSV)

    [problem] = check_against_rule(cmap[:-1], rule, MAP_CSV)
    assert problem.message == "164.316(b)(2)(iii) (Updates): missing from the map"

    swapped = [cmap[1], cmap[0], *cmap[2:]]
    [problem] = check_against_rule(swapped, rule, MAP_CSV)
    assert "out of the rule's order (expected 164.308(a)(1)(i) here)" in problem.message

    retitled = [cmap[0].model_copy(update={"title": "Security management"}), *cmap[1:]]
    [problem] = check_against_rule(retitled, rule, MAP_CSV)
    assert (problem.line, problem.field) == (2, "title")

    extra = [*cmap, cmap[0].model_copy(update={"citation": "164.308(a)(9)", "line": 70})]
    [problem] = check_against_rule(extra, rule, MAP_CSV)
    assert problem.message == "164.308(a)(9): not in the Security Rule list"


def test_map_row_model_is_usable_from_code() -> None:
    row = MapRow.model_validate(
        {
            "line": 1,
            "citation": "164.312(d)",
            "title": "Person or entity authentication",
            "kind": "standard",
            "requirement": "required",
            "coverage": "automated",
            "controls": ["ssh.password-auth-disabled"],
            "checks": "sshd_effective",
            "evidence": "check-run statements",
        }
    )
    assert row.controls == ("ssh.password-auth-disabled",)
    assert row.checks == ("sshd_effective",)
    assert row.section == "164.312"
