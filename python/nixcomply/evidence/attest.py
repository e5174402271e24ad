"""Attestations: a person records, signed, that an organisational control is met.

Many HIPAA safeguards are organisational (a risk analysis, workforce training, a business
associate agreement); no runtime check can observe them. ``controls-map.csv`` marks them
``attestation``, and ``nixcomply evidence attest`` records the statement of the person
responsible, with a link to the evidence (the policy, the training records) and an expiry
after which ``verify`` warns that it must be renewed — the way InSpec attestations work.

CONTROL is either a citation of ``baseline/controls-map.csv`` (``164.308(a)(5)(i)``) or a
baseline control id (``ssh.password-auth-disabled``): a citation is attested as is; a
control id carries the HIPAA citations whose rows list it and, from the baseline, its
references in every framework. The map is read by ``nixcomply.baseline.controlsmap``.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pydantic

from nixcomply.errors import UsageError
from nixcomply.evidence.statement import Attestation, ControlResult, FrameworkRefs, Host
from nixcomply.evidence.store import EvidenceStore, Recorded
from nixcomply.model.outcome import Outcome
from nixcomply.model.status import ControlStatus, Coverage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControlRef:
    """What an attestation is about, resolved from the controls map (and baseline)."""

    key: str
    title: str
    coverage: Coverage | None
    frameworks: FrameworkRefs


def default_controls_map() -> Path | None:
    """``controls-map.csv`` of nixcomply's data directory (checkout or package), if any."""
    from nixcomply.core.paths import baseline_dir

    candidate = baseline_dir() / "controls-map.csv"
    return candidate if candidate.is_file() else None


def default_baseline() -> Path | None:
    from nixcomply.core import paths

    candidate = paths.default_baseline()
    return candidate if candidate.is_file() else None


def find_control(control: str, controls_map: Path, baseline: Path | None = None) -> ControlRef:
    """Resolve CONTROL (a citation or a baseline control id); UsageError if unknown."""
    from nixcomply.baseline.controlsmap import citations_by_control, load_controls_map

    rows = load_controls_map(controls_map)
    for row in rows:
        if row.citation == control:
            if row.coverage is Coverage.AUTOMATED:
                logger.warning("%s is covered by automated checks; the attestation adds to them", control)
            return ControlRef(control, row.title, row.coverage, FrameworkRefs(hipaa=[control]))
    citations = list(citations_by_control(rows).get(control, ()))
    refs = FrameworkRefs(hipaa=citations)
    title = ""
    found = bool(citations)
    if baseline is not None:
        from nixcomply.baseline.models import Baseline
        from nixcomply.core.yamlsource import load_model

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
