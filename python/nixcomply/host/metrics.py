"""Prometheus metrics as a textfile for node-exporter's textfile collector.

Written atomically after every run (the collector may read at any moment), in the text
exposition format 0.0.4. Every series a dashboard or alert needs is present on every write,
with zero where nothing happened, so absent series never hide a problem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from nixcomply import __version__
from nixcomply.core.fsutil import atomic_write_text
from nixcomply.model.outcome import ApplyOutcome, PlanKind, RunOutcome
from nixcomply.model.severity import Severity

# Label values, derived from the enums so a new member is a new series, never a missing one.
# "error": the cycle raised before its apply step ended.
OUTCOMES: Final[tuple[str, ...]] = (*(o.value for o in ApplyOutcome), "error")
PLAN_KINDS: Final[tuple[str, ...]] = tuple(k.value for k in PlanKind)
SEVERITIES: Final[tuple[str, ...]] = tuple(s.value for s in Severity)
HEAL_OUTCOMES: Final[tuple[str, ...]] = tuple(o.value for o in RunOutcome if o.ran)


@dataclass(frozen=True)
class FindingSample:
    severity: str
    family: str  # the control family: the first part of a control id (ssh, audit, backup ...)
    drifted: bool


@dataclass(frozen=True)
class Snapshot:
    host: str
    baseline: str | None
    nixos_release: str | None
    finished_at: float  # unix time
    duration_s: float
    outcome: str
    plan: str | None
    generation: int | None
    need_reboot: bool
    findings: tuple[FindingSample, ...] = ()
    heals: Mapping[str, int] = field(default_factory=dict)
    suppressed: int = 0
    blocked: int = 0
    evidence_seq: int | None = None
    checkpoint_size: int | None = None
    # the uplink to the MSP's server (None: not enrolled)
    upload_lag_entries: int | None = None
    upload_lag_seconds: float | None = None
    upload_failures: int | None = None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, help: str, samples: Iterable[tuple[Mapping[str, str], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            text = (
                repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
            )
            self.lines.append(f"{name}{_labels(labels)} {text}")


def render(s: Snapshot) -> str:
    w = _Writer()
    w.metric(
        "nixcomply_info",
        "gauge",
        "nixcomply version, host and the baseline the running system enforces",
        [
            (
                {
                    "version": __version__,
                    "host": s.host,
                    "baseline": s.baseline or "",
                    "nixos_release": s.nixos_release or "",
                },
                1,
            )
        ],
    )
    w.metric(
        "nixcomply_last_run_timestamp_seconds", "gauge", "when the last run finished", [({}, s.finished_at)]
    )
    w.metric(
        "nixcomply_last_run_duration_seconds", "gauge", "how long the last run took", [({}, s.duration_s)]
    )
    w.metric(
        "nixcomply_last_run_outcome",
        "gauge",
        "outcome of the last run (1 for the outcome it had)",
        [({"outcome": o}, int(o == s.outcome)) for o in OUTCOMES],
    )
    w.metric(
        "nixcomply_last_plan",
        "gauge",
        "decision of the last run (1 for the decision it made)",
        [({"kind": k}, int(k == s.plan)) for k in PLAN_KINDS],
    )
    w.metric(
        "nixcomply_generation",
        "gauge",
        "the system profile's generation (next boot)",
        [({}, s.generation or 0)],
    )
    w.metric(
        "nixcomply_need_reboot",
        "gauge",
        "1 when kernel, initrd or modules differ from the booted ones",
        [({}, int(s.need_reboot))],
    )
    drift = Counter((f.severity, f.family) for f in s.findings if f.drifted)
    families = sorted({f.family for f in s.findings})
    w.metric(
        "nixcomply_drift_findings",
        "gauge",
        "findings that drifted in the last run, by severity and control family",
        [({"severity": sev, "family": fam}, drift[(sev, fam)]) for sev in SEVERITIES for fam in families]
        or [({"severity": sev, "family": "none"}, 0) for sev in SEVERITIES],
    )
    w.metric("nixcomply_findings", "gauge", "findings evaluated in the last run", [({}, len(s.findings))])
    w.metric(
        "nixcomply_heals_total",
        "counter",
        "runbook runs since the state was created, by outcome",
        [({"outcome": o}, s.heals.get(o, 0)) for o in HEAL_OUTCOMES],
    )
    w.metric(
        "nixcomply_suppressed_flaps",
        "gauge",
        "check:runbook pairs suppressed for flapping",
        [({}, s.suppressed)],
    )
    w.metric(
        "nixcomply_blocked_revisions", "gauge", "revisions not retried after a revert", [({}, s.blocked)]
    )
    w.metric(
        "nixcomply_evidence_sequence",
        "gauge",
        "sequence number of the newest evidence entry (-1: none)",
        [({}, -1 if s.evidence_seq is None else s.evidence_seq)],
    )
    w.metric(
        "nixcomply_evidence_checkpoint_size",
        "gauge",
        "tree size of the newest signed checkpoint",
        [({}, s.checkpoint_size or 0)],
    )
    if s.upload_lag_entries is not None:
        w.metric(
            "nixcomply_upload_lag_entries",
            "gauge",
            "evidence entries the MSP's server does not hold yet",
            [({}, s.upload_lag_entries)],
        )
        w.metric(
            "nixcomply_upload_lag_seconds",
            "gauge",
            "age of the oldest entry the server does not hold yet (0: none)",
            [({}, s.upload_lag_seconds or 0.0)],
        )
        w.metric(
            "nixcomply_upload_failures",
            "gauge",
            "consecutive failed upload attempts",
            [({}, s.upload_failures or 0)],
        )
    return "\n".join(w.lines) + "\n"


def write(path: Path, snapshot: Snapshot) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render(snapshot), mode=0o644)
