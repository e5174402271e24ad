"""The uplink wired into the host: a real sandbox host (real nix, a real systemd user
manager) reconciles, and the cycle uploads its evidence to the real server; `nixcomply
status` and the metrics show the upload lag; a dead server never fails a cycle."""

from __future__ import annotations

import json
from typing import Any

from fixtures_reconcile import ReconcileWorld
from fixtures_server import Served
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from nixcomply.model.outcome import ApplyOutcome
from nixcomply.reconcile.record import origin_for
from nixcomply.server.db.tables import hosts
from nixcomply.uplink import run


def metric(world: ReconcileWorld, name: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(world.host.metrics_path.read_text())}
    (sample,) = families[name].samples
    return float(sample.value)


def enroll(world: ReconcileWorld, fleet: Served) -> None:
    config = world.host.config
    run.enroll(
        config.state_dir,
        server=fleet.url,
        token=fleet.invite("north", config.host),
        hostname=config.host,
        machine_id="cd" * 16,
        origin=origin_for(config),
    )


def server_size(fleet: Served) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(select(hosts.c.accepted_size)).scalar_one())


def test_each_cycle_uploads_its_evidence(fresh: ReconcileWorld, fleet: Served, cli: Any) -> None:
    fresh.install("good")
    enroll(fresh, fleet)
    report = fresh.reconcile("newer", upload={"server": fleet.url})
    assert report.result.outcome == ApplyOutcome.SUCCESS, report.result.detail
    local = fresh.verify()
    assert local >= 2
    assert server_size(fleet) == local, "the cycle's evidence is on the server"
    cosigned = fresh.host.state_dir / "log" / "cosignatures" / f"{local:012d}"
    assert cosigned.exists()
    assert metric(fresh, "nixcomply_upload_lag_entries") == 0
    r = cli("status", "--config", fresh.host.config_path)
    assert r.code == 0, r.err
    assert f"upload     north/clinic-01 at {fleet.url}: up to date ({local} entries held)" in r.out
    status = json.loads(cli("status", "--config", fresh.host.config_path, "--json").out)
    assert status["upload"]["lag_entries"] == 0
    assert status["upload"]["accepted_size"] == local


def test_a_dead_server_never_fails_a_cycle_and_the_lag_shows(
    fresh: ReconcileWorld, fleet: Served, cli: Any
) -> None:
    fresh.install("good")
    enroll(fresh, fleet)
    url = fleet.url
    fleet.stop()
    report = fresh.reconcile("newer", upload={"server": url, "timeout_seconds": 5})
    assert report.result.outcome == ApplyOutcome.SUCCESS, report.result.detail
    local = fresh.verify()
    assert metric(fresh, "nixcomply_upload_lag_entries") == local
    assert metric(fresh, "nixcomply_upload_failures") == 1
    assert metric(fresh, "nixcomply_upload_lag_seconds") > 0
    r = cli("status", "--config", fresh.host.config_path)
    assert f"{local} entries behind" in r.out
    assert "1 failed attempt(s), next attempt" in r.out
    # while backing off, the next cycle does not even try
    again = fresh.reconcile("newer", upload={"server": url, "timeout_seconds": 5})
    assert again.result.outcome == ApplyOutcome.NOTHING
    assert metric(fresh, "nixcomply_upload_failures") == 1
