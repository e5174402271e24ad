"""`nixcomply demo` runs the whole cycle on the sandbox host and its evidence verifies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_readme import readme_after_demo

from conftest import Cli
from nixcomply.evidence.verify import verify_path
from nixcomply.server.devdb import PrivateCluster


@pytest.fixture
def checkout(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory laid out like a checkout after `make demo` would be (`.venv` is this
    interpreter's), where the `postgres` user may enter (pytest's own are 0700), as cwd."""
    where = Path(tempfile.mkdtemp(prefix="nixcomply-checkout-"))
    where.chmod(0o755)
    (where / ".venv").symlink_to(sys.prefix)
    monkeypatch.chdir(where)
    try:
        yield where
    finally:
        shutil.rmtree(where)


def test_demo_switches_then_reverts_and_verifies(cli: Cli, checkout: Path, nix_env: dict[str, str]) -> None:
    r = cli("demo", "--dir", ".demo", "--json")
    assert r.code == 0, r.err
    out = checkout / ".demo"
    summary = json.loads(r.out)
    install, healthy, broken = summary["steps"]
    assert install["step"] == "install"
    assert (healthy["plan"], healthy["outcome"]) == ("drift", "success")
    assert (broken["plan"], broken["outcome"]) == ("drift", "reverted")
    assert any(not c["ok"] and c["name"] == "unit:app.service" for c in broken["gate"])
    # two generation changes (switch, revert) and one check-run per reconcile
    assert summary["evidence"] == {"entries": 4, "ok": True, "errors": []}
    assert "emulated" in summary["sandbox"]
    # everything stays for a look afterwards, and verifies independently of the demo
    report = verify_path(out / "host" / "state", None)
    assert not report.errors
    r = cli("status", "--config", out / "host" / "reconciler.json")
    assert r.code == 0
    assert "blocked" in r.out
    check_metrics(out / "host" / "metrics" / "nixcomply.prom")
    check_fleet(summary["fleet"], out, cli)
    check_readme_after_demo(summary["after"], checkout)


def check_readme_after_demo(printed: list[str], checkout: Path) -> None:
    """The commands the README shows after `make demo` are the ones the demo prints (with
    `.venv/bin/`, as `make demo` runs it), and each works as written, in a shell, from the
    checkout: the database started for the server's status is stopped again."""
    shown = readme_after_demo()
    assert [c.replace(".venv/bin/", "") for c in shown] == printed
    outputs = []
    for command in shown:
        r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=180, check=False)
        assert r.returncode == 0, f"{command}: {r.stdout}{r.stderr}"
        outputs.append(r.stdout)
    assert outputs[0].startswith("host       clinic-01"), outputs[0]
    assert "witness: the newest checkpoint" in outputs[1] and "witness: the newest checkpoint" in outputs[2]
    assert "3 hosts, 8 entries, 3 cosigned checkpoints" in outputs[4], outputs[4]
    assert not PrivateCluster(checkout / ".demo" / "server" / "pg").running()


def check_fleet(fleet: dict[str, Any], out: Path, cli: Any) -> None:
    """Three hosts in two sites uploaded everything, cosigned; the packet verifies with the
    witness; the demo's PostgreSQL and server are stopped."""

    assert fleet["ok"], fleet
    assert {name: (h["site"], h["witness_ok"]) for name, h in fleet["hosts"].items()} == {
        "clinic-01": ("north", True),
        "clinic-02": ("north", True),
        "clinic-03": ("south", True),
    }
    assert all(h["accepted"] == h["entries"] >= 2 for h in fleet["hosts"].values())
    assert fleet["incidents"] == 0
    assert fleet["checkpoints"] >= 3
    witness = fleet["witness_key"]
    # The auditor's copy, apart from the host: pinned (the host's own would pin nothing).
    ring = out / "auditor" / "keyring.json"
    assert (
        cli(
            "evidence", "verify", out / "host" / "state", "--keyring", out / "host" / "state" / "keyring.json"
        ).code
        == 3
    )
    r = cli("evidence", "verify", out / "host" / "state", "--witness", witness, "--keyring", ring)
    assert r.code == 0, r.out
    r = cli("evidence", "verify", fleet["packet"], "--witness", witness, "--keyring", ring)
    assert r.code == 0, r.out
    database = Path(fleet["database"])
    assert database.is_relative_to(out.resolve()), "in a tree postgres may enter, the cluster is the demo's"
    assert not PrivateCluster(database).running(), "the demo leaves no database running"


def check_metrics(path: Path) -> None:
    """The textfile parses with Prometheus' own parser and carries the last run's figures."""

    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    value = {f: {tuple(sorted(s.labels.items())): s.value for s in families[f].samples} for f in families}
    assert value["nixcomply_last_run_outcome"][(("outcome", "reverted"),)] == 1
    assert value["nixcomply_last_run_outcome"][(("outcome", "success"),)] == 0
    assert value["nixcomply_last_plan"][(("kind", "drift"),)] == 1
    assert value["nixcomply_generation"][()] == 2
    assert value["nixcomply_evidence_sequence"][()] == 3
    assert value["nixcomply_evidence_checkpoint_size"][()] == 4
    assert value["nixcomply_blocked_revisions"][()] == 1
    assert value["nixcomply_need_reboot"][()] == 0
    (info,) = families["nixcomply_info"].samples
    assert info.labels["host"] == "clinic-01"
    assert info.labels["baseline"] == "hipaa-v1"
    assert "nixcomply_drift_findings" in families
    assert "nixcomply_heals" in families  # counters are exposed as <name>_total samples
    assert "nixcomply_suppressed_flaps" in families


def test_demo_refuses_a_directory_in_use(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "something").write_text("keep me")
    r = cli("demo", "--dir", tmp_path)
    assert r.code == 2
    assert "is not empty" in r.err
    assert (tmp_path / "something").read_text() == "keep me"
