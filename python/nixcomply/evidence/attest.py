"""Attestations: a person records, signed, that an organisational control is met.

Many HIPAA safeguards are organisational (a risk analysis, workforce training, a business
associate agreement); no runtime check can observe them. ``controls-map.csv`` marks them
``attestation``, and ``nixcomply evidence attest`` records the statement of the person
responsible, with a link to the evidence (the policy, the training records) and an expiry
after which ``verify`` warns that it must be renewed — the way InSpec attestations work.

CONTROL is either a citation of ``baseline/controls-map.csv`` (``164.308(a)(5)(i)``) or a
baseline control id (``ssh.password-auth-disabled``): a citation is attested as is; a
control id carries the HIPAA citations whose row lists it and, given the baseline file,
its references in every framework.

The CSV is read here with the csv module (columns ``citation, title, kind, requirement,
coverage, controls, checks, evidence``; ``controls`` separated by ``;``); when
``nixcomply.baseline.controlsmap`` lands it can take over the parsing.
"""

from __future__ import annotations

import csv
import difflib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final, cast

import pydantic

from nixcomply.errors import InputError, Problem, UsageError
from nixcomply.evidence.statement import (
    Attestation,
    ControlResult,
    ControlStatus,
    Coverage,
    FrameworkRefs,
    Host,
    Outcome,
)
from nixcomply.evidence.store import EvidenceStore, Recorded

logger = logging.getLogger(__name__)

CSV_COLUMNS: Final = (
    "citation",
    "title",
    "kind",
    "requirement",
    "coverage",
    "controls",
    "checks",
    "evidence",
)
COVERAGES: Final = ("automated", "partial", "attestation")


@dataclass(frozen=True)
class MapRow:
    line: int
    citation: str
    title: str
    coverage: Coverage
    controls: tuple[str, ...]


@dataclass(frozen=True)
class ControlRef:
    """What an attestation is about, resolved from the controls map (and baseline)."""

    key: str
    title: str
    coverage: Coverage | None
    frameworks: FrameworkRefs


def default_controls_map() -> Path | None:
    """``baseline/controls-map.csv`` of the source tree nixcomply runs from, if any."""
    import nixcomply

    candidate = Path(nixcomply.__file__).resolve().parents[2] / "baseline" / "controls-map.csv"
    return candidate if candidate.is_file() else None


def read_controls_map(path: Path) -> list[MapRow]:
    from nixcomply.yamlsource import read_text

    text = read_text(path)
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError.single(path, f"missing column(s): {', '.join(missing)}", line=1)
    rows = []
    problems = []
    for row in reader:
        line = reader.line_num
        citation = (row.get("citation") or "").strip()
        coverage = (row.get("coverage") or "").strip()
        if not citation:
            problems.append(Problem(path, line, "citation", "empty"))
            continue
        if coverage not in COVERAGES:
            problems.append(
                Problem(path, line, "coverage", f"{coverage!r} is not one of {', '.join(COVERAGES)}")
            )
            continue
        controls = tuple(c.strip() for c in (row.get("controls") or "").split(";") if c.strip())
        kind = cast(Coverage, coverage)
        rows.append(MapRow(line, citation, (row.get("title") or "").strip(), kind, controls))
    if problems:
        raise InputError(problems)
    return rows


def find_control(control: str, controls_map: Path, baseline: Path | None = None) -> ControlRef:
    """Resolve CONTROL (a citation or a baseline control id); UsageError if unknown."""
    rows = read_controls_map(controls_map)
    for row in rows:
        if row.citation == control:
            if row.coverage == "automated":
                logger.warning("%s is covered by automated checks; the attestation adds to them", control)
            return ControlRef(control, row.title, row.coverage, FrameworkRefs(hipaa=[control]))
    citations = [row.citation for row in rows if control in row.controls]
    refs = FrameworkRefs(hipaa=citations)
    title = ""
    found = bool(citations)
    if baseline is not None:
        from nixcomply.baseline.models import Baseline
        from nixcomply.yamlsource import load_model

        model, _source = load_model(Baseline, baseline)
        try:
            c = model.control(control)
        except KeyError:
            pass
        else:
            found = True
            title = c.title
            fw = c.frameworks
            refs = FrameworkRefs(
                hipaa=sorted(set(fw.hipaa) | set(citations)),
                soc2=fw.soc2,
                cis_v8=fw.cis_v8,
                nist_800_53=fw.nist_800_53,
                nist_csf=fw.nist_csf,
            )
    if not found:
        known = [row.citation for row in rows] + sorted({c for row in rows for c in row.controls})
        close = difflib.get_close_matches(control, known, n=3)
        raise UsageError(
            f"{control!r} is neither a citation of {controls_map} nor a control it lists",
            hint=f"did you mean {' or '.join(close)}?" if close else "citations look like 164.308(a)(5)(i)",
        )
    return ControlRef(control, title, None, refs)


def attest(
    store: EvidenceStore,
    ref: ControlRef,
    *,
    by: str,
    evidence_url: str,
    expires: date,
    statement: str,
    host: Host,
    today: date | None = None,
) -> Recorded:
    """Record a signed attestation of ``ref`` by ``by``."""
    now = datetime.now(UTC)
    if expires <= (today or now.date()):
        raise UsageError(f"--expires {expires} is not in the future")
    if not statement.strip():
        raise UsageError("--statement is empty")
    try:
        predicate = Attestation(
            event="attestation.recorded",
            observed_at=now,
            host=host,
            actor=by,
            outcome=Outcome.SUCCESS,
            control=ref.key,
            title=ref.title,
            coverage=ref.coverage,
            attested_by=by,
            evidence_url=evidence_url,
            expires=expires,
            statement=statement,
            controls=[ControlResult(id=ref.key, status=ControlStatus.ATTESTED, frameworks=ref.frameworks)],
        )
    except pydantic.ValidationError as e:
        err = e.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"{field}: {err['msg']}") from None
    return store.append(predicate, attachments={"attestation.txt": (statement.strip() + "\n").encode()})
