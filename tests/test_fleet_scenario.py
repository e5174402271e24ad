"""The twin of checks/fleet-upload.nix that runs here: ``nixcomply-server serve`` as a real
process on a real PostgreSQL, two hosts in two sites enrolled with tokens from the server's
own verbs, their evidence uploaded with ``nixcomply upload`` and cosigned; the server dies
in the middle of an upload (between two batches, inside the second one's transaction) and
comes back at the same address: nothing is lost, nothing is stored twice, in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_evidence import Keys, fill, make_keys, open_store, write_keyring
from sqlalchemy import create_engine, select

from nixcomply.evidence.cosignature import WitnessPublicKey, check_newest
from nixcomply.evidence.log import read_leaves
from nixcomply.evidence.verify import verify_path
from nixcomply.server.cli import main as server_main
from nixcomply.server.db.tables import entries, hosts, sites

CHILD = """
import os, signal, sys
from nixcomply.core import faults
from nixcomply.server.cli import main
point, after = os.environ.get("KILL_AT"), int(os.environ.get("KILL_AFTER", "0"))
if point:
    seen = [0]
    def hook(name):
        if name == point:
            seen[0] += 1
            if seen[0] > after:
                os.kill(os.getpid(), signal.SIGKILL)
    faults.HOOK = hook
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def server_config(pg_url: str, tmp_path: Path) -> Path:
    key = tmp_path / "witness.key"
    assert server_main(["witness", "keygen", "--name", "msp.example/witness", "--out", str(key)]) == 0
    path = tmp_path / "server.json"
    path.write_text(
        json.dumps(
            {"database": {"url": pg_url}, "witness": {"name": "msp.example/witness", "key_file": str(key)}}
        )
    )
    return path


@pytest.fixture
def serve(server_config: Path) -> Iterator[Any]:
    children: list[subprocess.Popen[str]] = []

    def start(port: int = 0, **env: str) -> tuple[subprocess.Popen[str], str]:
        argv = [sys.executable, "-c", CHILD, "serve", "--config", str(server_config), "--port", str(port)]
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env}
        )
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert "listening on http://" in line, line
        return child, line.rsplit(" ", 1)[1].strip()

    yield start
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=30)


def operator(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert server_main([*args, "--config", str(config)]) == 0
    return capsys.readouterr().out


def make_host(tmp_path: Path, name: str, server: str) -> tuple[Path, Keys]:
    root = tmp_path / name / "state"
    keys = make_keys()
    with open_store(root, keys) as store:
        fill(store, 4)
    write_keyring(root, keys)
    config = tmp_path / name / "reconciler.json"
    config.write_text(
        json.dumps(
            {
                "flake": "git+file:///srv/fleet",
                "host": name,
                "state_dir": str(root),
                "evidence": {"origin": "clinic-01.example/evidence-log"},
                "upload": {"server": server, "max_batch_entries": 5},
            }
        )
    )
    return config, keys


def test_two_sites_enroll_upload_and_survive_a_server_killed_mid_upload(
    serve: Any, server_config: Path, tmp_path: Path, cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # the fourth upload request (its transaction written, not committed) kills the server
    child, url = serve(KILL_AT="ingest.stored", KILL_AFTER="3")
    port = int(url.rsplit(":", 1)[1])
    operator(server_config, "site", "add", "north", capsys=capsys)
    operator(server_config, "site", "add", "south", capsys=capsys)
    witness = WitnessPublicKey.from_vkey(operator(server_config, "witness", "key", capsys=capsys).strip())
    configs: dict[str, Path] = {}
    keys: dict[str, Keys] = {}
    for name, site in (("clinic-01", "north"), ("clinic-02", "south")):
        token = json.loads(
            operator(server_config, "host", "invite", "--site", site, "--host", name, "--json", capsys=capsys)
        )["token"]
        configs[name], keys[name] = make_host(tmp_path, name, url)
        r = cli("enroll", "--config", configs[name], "--token", token)
        assert r.code == 0, r.err
        r = cli("upload", "--config", configs[name])
        assert r.code == 0, r.err
    # clinic-01 runs more cycles, then uploads 12 entries in three requests; the server dies
    # inside the second
    root = tmp_path / "clinic-01" / "state"
    with open_store(root, keys["clinic-01"]) as store:
        fill(store, 12)
    r = cli("upload", "--config", configs["clinic-01"], "--json")
    assert r.code == 1, r.out
    assert child.wait(timeout=30) == -signal.SIGKILL
    engine = create_engine(json.loads(server_config.read_text())["database"]["url"])
    try:
        assert accepted(engine) == {"clinic-01": 9, "clinic-02": 4}
        serve(port=port)
        r = cli("upload", "--config", configs["clinic-01"], "--force", "--json")
        assert r.code == 0, r.err
        assert json.loads(r.out)["accepted_size"] == 16
        assert accepted(engine) == {"clinic-01": 16, "clinic-02": 4}
        with engine.connect() as conn:
            rows = conn.execute(
                select(entries.c.seq, entries.c.leaf)
                .join(hosts, hosts.c.id == entries.c.host_id)
                .where(hosts.c.hostname == "clinic-01")
                .order_by(entries.c.seq)
            ).all()
            assert [r.seq for r in rows] == list(range(16))
            assert [bytes(r.leaf) for r in rows] == read_leaves(root)
            assert dict(conn.execute(select(hosts.c.hostname, sites.c.name).join(sites)).all()) == {
                "clinic-01": "north",
                "clinic-02": "south",
            }
    finally:
        engine.dispose()
    for name in configs:
        state = tmp_path / name / "state"
        report = verify_path(state, None)
        assert not report.errors, [str(e) for e in report.errors]
        assert check_newest(state, witness, report.checkpoint_size) is None
    status = json.loads(operator(server_config, "status", "--json", capsys=capsys))
    assert status["incidents"] == []
    assert status["totals"]["entries"] == 20


def accepted(engine: Any) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(hosts.c.hostname, hosts.c.accepted_size)).all())
