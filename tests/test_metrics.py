"""The Prometheus textfile: parses with prometheus_client, escapes labels, is written atomically."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from nixcomply.host.metrics import OUTCOMES, FindingSample, Snapshot, render, write


def snapshot(**overrides: object) -> Snapshot:
    data: dict[str, object] = {
        "host": 'odd"host\\name',
        "baseline": "hipaa-v1",
        "nixos_release": "26.05",
        "finished_at": 1795435946.5,
        "duration_s": 2.25,
        "outcome": "success",
        "plan": "drift",
        "generation": 7,
        "need_reboot": True,
        "findings": (
            FindingSample("high", "ssh", True),
            FindingSample("high", "ssh", True),
            FindingSample("low", "backup", False),
        ),
        "heals": {"success": 3, "alert": 1},
        "suppressed": 1,
        "blocked": 0,
        "evidence_seq": 41,
        "checkpoint_size": 42,
    }
    data.update(overrides)
    return Snapshot(**data)  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_render_parses_and_carries_the_figures() -> None:
    values = samples(render(snapshot()))
    assert values[("nixcomply_drift_findings", (("family", "ssh"), ("severity", "high")))] == 2
    assert values[("nixcomply_drift_findings", (("family", "backup"), ("severity", "low")))] == 0
    assert values[("nixcomply_findings", ())] == 3
    assert values[("nixcomply_heals_total", (("outcome", "success"),))] == 3
    assert values[("nixcomply_heals_total", (("outcome", "failed"),))] == 0
    assert values[("nixcomply_last_run_timestamp_seconds", ())] == 1795435946.5
    assert values[("nixcomply_need_reboot", ())] == 1
    assert sum(v for (n, _), v in values.items() if n == "nixcomply_last_run_outcome") == 1
    assert {dict(k)["outcome"] for (n, k) in values if n == "nixcomply_last_run_outcome"} == set(OUTCOMES)
    info = next(k for (n, k) in values if n == "nixcomply_info")
    assert dict(info)["host"] == 'odd"host\\name'


def test_no_evidence_and_no_findings_still_expose_every_series() -> None:
    values = samples(render(snapshot(findings=(), evidence_seq=None, checkpoint_size=None, heals={})))
    assert values[("nixcomply_evidence_sequence", ())] == -1
    assert values[("nixcomply_drift_findings", (("family", "none"), ("severity", "critical")))] == 0


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "textfiles" / "nixcomply.prom"
    write(path, snapshot())
    write(path, snapshot(outcome="reverted"))
    assert samples(path.read_text())[("nixcomply_last_run_outcome", (("outcome", "reverted"),))] == 1
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["nixcomply.prom"]
