"""baseline/controls-map.csv and baseline/hipaa-v1.yaml say the same thing: the controls a
row lists are exactly the controls that cite that row, and the checks it lists are exactly
those controls' runtime checks. Auditors read both files; they must never disagree."""

from __future__ import annotations

from nixcomply.baseline.controlsmap import MapRow
from nixcomply.baseline.models import Baseline
from nixcomply.model.status import Coverage


def test_every_control_cites_a_real_row(controls_map: list[MapRow], baseline: Baseline) -> None:
    citations = {r.citation for r in controls_map}
    for control in baseline.controls:
        for citation in control.frameworks.hipaa:
            assert citation in citations, (
                f"{control.id} cites {citation}, which is not a row of controls-map.csv"
            )


def test_every_referenced_control_exists(controls_map: list[MapRow], baseline: Baseline) -> None:
    ids = {c.id for c in baseline.controls}
    for row in controls_map:
        for control_id in row.controls:
            assert control_id in ids, f"line {row.line} ({row.citation}) lists unknown control {control_id}"


def test_rows_list_exactly_the_controls_that_cite_them(
    controls_map: list[MapRow], baseline: Baseline
) -> None:
    for row in controls_map:
        citing = {c.id for c in baseline.controls if row.citation in c.frameworks.hipaa}
        assert set(row.controls) == citing, (
            f"line {row.line} ({row.citation}): CSV lists {sorted(row.controls)}, "
            f"the baseline's controls citing it are {sorted(citing)}"
        )


def test_rows_list_exactly_their_controls_checks(controls_map: list[MapRow], baseline: Baseline) -> None:
    checks = {c.id: c.verify.check for c in baseline.controls}
    for row in controls_map:
        expected = set() if row.coverage == Coverage.ATTESTATION else {checks[c] for c in row.controls}
        assert set(row.checks) == expected, f"line {row.line} ({row.citation}): checks {sorted(row.checks)}"


def test_every_control_is_on_the_map(controls_map: list[MapRow], baseline: Baseline) -> None:
    mapped = {c for r in controls_map for c in r.controls}
    assert mapped == {c.id for c in baseline.controls}
