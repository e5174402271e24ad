"""The result of a check pass as ``nixcomply check --json`` prints it (:class:`CheckReport`),
and the terminal table.

The JSON is stable: fields are only ever added. ``findings`` are
:class:`~nixcomply.checks.finding.Finding` objects in the runner's deterministic order;
``summary`` counts them by status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Literal

from pydantic import ConfigDict, Field

from nixcomply.checks.finding import Finding
from nixcomply.model.base import StrictModel
from nixcomply.model.manifest import Manifest
from nixcomply.model.status import FindingStatus

REPORT_SCHEMA: Final = 1
FRAMEWORK_SHORT: Final = (
    ("hipaa", "HIPAA"),
    ("soc2", "SOC2"),
    ("cis_v8", "CIS"),
    ("nist_800_53", "800-53"),
    ("nist_csf", "CSF"),
)


class ReportBaseline(StrictModel):
    id: str
    version: int
    digest: str


class CheckReport(StrictModel):
    """``nixcomply check --json``."""

    model_config = ConfigDict(populate_by_name=True)

    schema_version: Literal[1] = Field(default=1, alias="schema")
    generated_at: datetime
    root: str = Field(description="the host root the checks looked at")
    baseline: ReportBaseline | None = Field(
        description="the running generation's baseline, if it has a manifest"
    )
    checks: list[str] = Field(description="check names that ran")
    summary: dict[str, int] = Field(description="status -> number of findings (every status present)")
    failed: bool = Field(description="something drifted or errored (exit status 1)")
    findings: list[Finding]

    @classmethod
    def build(
        cls,
        findings: Sequence[Finding],
        *,
        generated_at: datetime,
        root: str,
        manifest: Manifest | None,
        checks: Sequence[str],
    ) -> CheckReport:
        counts = Counter(f.status for f in findings)
        baseline = None
        if manifest is not None:
            b = manifest.baseline
            baseline = ReportBaseline(id=b.id, version=b.version, digest=b.digest)
        return cls(
            generated_at=generated_at,
            root=root,
            baseline=baseline,
            checks=list(checks),
            summary={status.value: counts.get(status, 0) for status in FindingStatus},
            failed=any(f.needs_attention for f in findings),
            findings=list(findings),
        )


def framework_refs(finding: Finding) -> str:
    parts = []
    for key, label in FRAMEWORK_SHORT:
        refs = finding.frameworks.get(key, [])
        if refs:
            parts.append(f"{label} {','.join(refs)}")
    return " · ".join(parts) or "-"


def render_table(report: CheckReport, *, color: bool = False) -> str:
    """The terminal view: one row per finding (status, control, check, framework refs), the
    message under it, and a summary line."""
    colors = {"pass": "32", "drift": "31", "error": "35", "excepted": "33", "skipped": "2"}
    rows = []
    for f in report.findings:
        control = ",".join(f.control_ids) or f"({f.check})"
        if f.subject:
            control += f" [{f.subject}]"
        rows.append((f.status, control, f.check, framework_refs(f), f.message))
    width_c = max([len("CONTROL"), *(len(r[1]) for r in rows)])
    width_k = max([len("CHECK"), *(len(r[2]) for r in rows)])
    lines = [f"{'STATUS':<9} {'CONTROL':<{width_c}} {'CHECK':<{width_k}} FRAMEWORKS"]
    for status, control, check, refs, message in rows:
        shown = f"{status:<9}"
        if color:
            shown = f"\033[{colors[status]}m{shown}\033[0m"
        lines.append(f"{shown} {control:<{width_c}} {check:<{width_k}} {refs}")
        lines.append(f"{'':<9} {message}")
    summary = ", ".join(f"{n} {s}" for s, n in report.summary.items() if n)
    lines.append(f"{len(report.findings)} finding(s) from {len(report.checks)} check(s): {summary or 'none'}")
    return "\n".join(lines) + "\n"
