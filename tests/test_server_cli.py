"""``nixcomply-server``'s verbs on a real PostgreSQL, and ``serve`` as a real process: killed
with SIGKILL in the middle of an ingestion transaction, and with its database restarted
under it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fixtures_evidence import fill, make_keys, open_store, write_keyring
from fixtures_postgres import Cluster
from fixtures_server import Served, make_host
from sqlalchemy import create_engine, func, select
from test_server_api import enrolled, raw
from test_server_ingest import twin

from nixcomply.errors import EXIT_TEMPFAIL
from nixcomply.evidence.checkpoint import Checkpoint
from nixcomply.evidence.cosignature import Witness
from nixcomply.model.fleet import EnrollRequest, UploadRequest
from nixcomply.server import verifying
from nixcomply.server.cli import main
from nixcomply.server.config import load_config
from nixcomply.server.db.tables import entries, hosts, metadata
from nixcomply.uplink import run
from nixcomply.uplink.client import UplinkError


@pytest.fixture
def config_file(pg_url: str, witness_key: tuple[Witness, Path], tmp_path: Path) -> Path:
    _witness, key = witness_key
    path = tmp_path / "server.json"
    path.write_text(
        json.dumps(
            {"database": {"url": pg_url}, "witness": {"name": "msp.example/witness", "key_file": str(key)}}
        )
    )
    return path


@pytest.fixture
def witness_only_config(witness_key: tuple[Witness, Path], tmp_path: Path) -> Path:
    """A server.json naming only the witness: the database comes from the environment."""
    path = tmp_path / "server.json"
    path.write_text(json.dumps({"witness": {"name": "msp.example/witness", "key_file": str(witness_key[1])}}))
    return path


def server(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([*args, "--config", str(config)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_migrate_an_empty_database(
    pg_empty_url: str, witness_key: tuple[Witness, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "server.json"
    path.write_text(
        json.dumps(
            {
                "database": {"url": pg_empty_url},
                "witness": {"name": "msp.example/witness", "key_file": str(witness_key[1])},
            }
        )
    )
    assert server(path, "migrate", capsys=capsys)[:2] == (0, "schema: empty -> 0001\n")
    assert server(path, "migrate", capsys=capsys)[:2] == (0, "schema: 0001 (up to date)\n")


def test_migrations_create_exactly_the_tables_module(pg_url: str) -> None:

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_sites_invites_hosts_and_revocation(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert server(config_file, "site", "add", "north", capsys=capsys)[:2] == (0, "site north added\n")
    code, _out, err = server(config_file, "site", "add", "north", capsys=capsys)
    assert (code, err) == (2, "nixcomply-server: error: site 'north' exists\n")
    server(config_file, "site", "add", "south", capsys=capsys)
    code, out, _ = server(config_file, "site", "list", "--json", capsys=capsys)
    assert [s["site"] for s in json.loads(out)] == ["north", "south"]
    code, out, _ = server(
        config_file, "host", "invite", "--site", "north", "--host", "a", "--json", capsys=capsys
    )
    invite = json.loads(out)
    assert code == 0
    assert len(invite["token"]) >= 40
    code, _, err = server(config_file, "host", "invite", "--site", "west", "--host", "a", capsys=capsys)
    assert code == 2
    assert "no site 'west'" in err
    code, _, err = server(config_file, "host", "invite", "--site", "north", "--host", "a b", capsys=capsys)
    assert code == 2
    assert "host name 'a b'" in err
    code, _, err = server(config_file, "host", "revoke", "--site", "north", "--host", "a", capsys=capsys)
    assert (code, "no host 'a'" in err) == (2, True)
    assert server(config_file, "host", "list", capsys=capsys)[1] == "no hosts\n"


def test_witness_key_and_keygen(
    config_file: Path, witness_key: tuple[Witness, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert server(config_file, "witness", "key", capsys=capsys)[1] == witness_key[0].public.vkey + "\n"
    out = tmp_path / "new.key"
    code, printed, _ = server(
        config_file, "witness", "keygen", "--name", "w.example/x", "--out", str(out), capsys=capsys
    )
    assert code == 0
    assert printed.startswith("w.example/x+")
    assert out.stat().st_mode & 0o777 == 0o600
    code, _, err = server(
        config_file, "witness", "keygen", "--name", "w.example/x", "--out", str(out), capsys=capsys
    )
    assert code == 2
    assert "refusing to overwrite" in err


def test_witness_keygen_never_replaces_a_key_that_appears_meanwhile(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """keygen checked that --out did not exist, then renamed its new key over whatever was
    there by then: a key another keygen wrote meanwhile was lost."""
    out = tmp_path / "new" / "witness.key"
    out.parent.mkdir()
    real = verifying.generate_witness

    def racing(name: str) -> Witness:
        out.write_text("the other keygen's key\n")  # appears after any check of --out
        return real(name)

    monkeypatch.setattr(verifying, "generate_witness", racing)
    code, printed, err = server(
        config_file, "witness", "keygen", "--name", "w.example/x", "--out", str(out), capsys=capsys
    )
    assert (code, printed) == (2, ""), err
    assert f"{out} exists; refusing to overwrite a key" in err
    assert out.read_text() == "the other keygen's key\n"
    assert [p.name for p in out.parent.iterdir()] == ["witness.key"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"witness": {"name": "w"}, "surprise": 1}, "surprise: unknown field"),
        (
            {"witness": {"name": "w"}, "database": {"url": "postgresql://u:secret@db/x"}},
            "NIXCOMPLY_SERVER_DATABASE_URL",
        ),
        ({"witness": {"name": "w"}, "listen": {"port": 70000}}, "listen.port"),
        (
            {"witness": {"name": "w"}, "database": {"url": "postgresql:///x?host=/run&password=secret"}},
            "NIXCOMPLY_SERVER_DATABASE_URL",
        ),
        (
            {"witness": {"name": "w"}, "database": {"url": "postgresql:///x?sslpassword=secret"}},
            "NIXCOMPLY_SERVER_DATABASE_URL",
        ),
    ],
    ids=["unknown-field", "password", "port", "password-in-the-query", "sslpassword-in-the-query"],
)
def test_bad_configuration_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], message: str
) -> None:
    path = tmp_path / "server.json"
    path.write_text(json.dumps(config))
    code, _out, err = server(path, "status", capsys=capsys)
    assert code == 2
    assert message in err
    assert str(path) in err
    assert "secret" not in err
    assert "Traceback" not in err


def test_the_database_url_and_its_password_are_never_printed(
    tmp_path: Path,
    witness_only_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = witness_only_config
    monkeypatch.setenv(
        "NIXCOMPLY_SERVER_DATABASE_URL", f"postgresql+psycopg://nx:hunter2@/db?host={tmp_path}/nowhere"
    )
    code, out, err = server(path, "status", capsys=capsys)
    assert code == EXIT_TEMPFAIL
    assert "hunter2" not in out + err
    assert err.splitlines()[0] == "nixcomply-server: error: cannot reach the database"
    assert err.splitlines()[1].startswith("nixcomply-server: hint: check that PostgreSQL runs")


def test_status_never_shows_secrets_from_the_urls_query(
    pg_url: str,
    witness_only_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq takes password=, passfile= and sslpassword= (and user=) in the query string:
    status printed them, and serve logged them (the same description), as they were."""
    path = witness_only_config
    secrets = "&password=hunter2&passfile=/run/keys/pgpass-hunter3&sslpassword=hunter4"
    monkeypatch.setenv("NIXCOMPLY_SERVER_DATABASE_URL", pg_url + secrets)
    code, out, err = server(path, "status", "--json", capsys=capsys)
    assert code == 0, err
    shown = json.loads(out)["database"]
    assert "hunter" not in out + err
    assert shown.startswith("postgresql+psycopg:///") and "host=" in shown, shown
    config = load_config(path)
    assert config.describe_database() == shown
    # and the real connection still uses them all (the password is ignored by this cluster)
    assert config.database_url().query["sslpassword"] == "hunter4"
    monkeypatch.setenv("NIXCOMPLY_SERVER_DATABASE_URL", pg_url + "&user=hunter5")
    assert "hunter" not in config.describe_database()


def test_an_unknown_connection_parameter_is_a_usage_error_naming_it(
    tmp_path: Path,
    witness_only_config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unknown parameter in the URL's query was an internal error (exit 70) at connect."""
    path = witness_only_config
    monkeypatch.setenv(
        "NIXCOMPLY_SERVER_DATABASE_URL", f"postgresql+psycopg:///db?host={tmp_path}&PassFile=hunter2"
    )
    code, out, err = server(path, "status", capsys=capsys)
    assert code == 2, err
    assert "$NIXCOMPLY_SERVER_DATABASE_URL: 'PassFile' is not a PostgreSQL connection parameter" in err
    assert "hunter2" not in out + err


def test_status_shows_incidents_with_both_checkpoints(
    fleet: Served, config_file_for: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:

    host = enrolled(fleet, tmp_path)
    host.record(3)
    other = twin(host, tmp_path)
    host.record(1)
    host.push()
    other.record(2)
    with pytest.raises(UplinkError):
        other.push()
    path = config_file_for(fleet)
    code, out, _ = server(path, "status", capsys=capsys)
    assert code == 1
    assert "1 incident(s):" in out
    assert "FORK north/clinic-01" in out
    assert "accepted:  clinic-01.example/evidence-log | 4 |" in out
    assert "presented: clinic-01.example/evidence-log | 5 |" in out
    data = json.loads(server(path, "status", "--json", capsys=capsys)[1])
    assert data["incidents"][0]["kind"] == "fork"
    assert data["totals"]["entries"] == 4


def test_status_escapes_what_a_host_presented(
    fleet: Served, config_file_for: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An incident's presented checkpoint is the host's own text (signed by its log key):
    an extension line with a CSI (U+009B) or a bidi override was printed raw to the
    operator's terminal by status."""
    host = enrolled(fleet, tmp_path)
    host.record(3)
    host.push()
    hostile = Checkpoint(
        "clinic-01.example/evidence-log", 2, bytes(32), ("\x9b2J\x9b31mall clear", "\u202eevil")
    ).sign([host.keys.log])
    with pytest.raises(UplinkError):
        host.client.upload(UploadRequest(old_size=2, checkpoint=hostile.decode()))
    path = config_file_for(fleet)
    code, out, _ = server(path, "status", capsys=capsys)
    assert code == 1
    assert "ROLLBACK north/clinic-01" in out
    assert "\x9b" not in out and "\u202e" not in out
    assert "\\x9b2J\\x9b31mall clear | \\u202eevil" in out
    data = json.loads(server(path, "status", "--json", capsys=capsys)[1])
    assert "\u202eevil" in data["incidents"][0]["presented_checkpoint"]


def test_an_origin_that_is_not_printable_is_refused_at_enrollment(fleet: Served, tmp_path: Path) -> None:
    host = make_host(fleet, tmp_path, "clinic-01")
    request = host.enroll_request(fleet.invite("north", "clinic-01")).model_dump()
    request["origin"] = "clinic-01\x1b]0;owned\x07"
    with pytest.raises(pydantic.ValidationError, match="only printable characters"):
        EnrollRequest.model_validate(request)
    body = json.dumps(request).encode()
    headers = host.client.signed_headers("POST", "/v1/enroll", body)
    status, answer = raw(fleet, "POST", "/v1/enroll", body, headers)
    assert (status, answer["code"]) == (422, "invalid-body")
    assert "origin" in answer["message"]


@pytest.fixture
def config_file_for(tmp_path: Path) -> Any:
    def make(fleet: Served) -> Path:
        path = tmp_path / "server-fleet.json"
        path.write_text(fleet.config.model_dump_json())
        return path

    return make


# -- serve as a process ------------------------------------------------------------------------


CHILD = """
import os, signal, sys
from nixcomply.core import faults
from nixcomply.server import verifying
from nixcomply.server.cli import main
from nixcomply.server.config import load_config
point = os.environ.get("KILL_AT")
if point:
    def hook(name):
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)
    faults.HOOK = hook
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def spawn(config_file: Path) -> Iterator[Any]:
    children: list[subprocess.Popen[str]] = []

    def start(kill_at: str | None = None, port: int = 0) -> tuple[subprocess.Popen[str], str]:
        env = {**os.environ, **({"KILL_AT": kill_at} if kill_at else {})}
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                "serve",
                "--config",
                str(config_file),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert "listening on http://" in line, line + (child.stderr.read() if child.stderr else "")
        return child, line.rsplit(" ", 1)[1].strip()

    yield start
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            child.wait(timeout=30)


def _host(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    keys = make_keys()
    with open_store(root, keys) as store:
        fill(store, 6)
    write_keyring(root, keys)
    return root


def _invite(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    server(config, "site", "add", "north", capsys=capsys)
    code, out, _ = server(
        config, "host", "invite", "--site", "north", "--host", "clinic-01", "--json", capsys=capsys
    )
    assert code == 0
    token: str = json.loads(out)["token"]
    return token


def test_server_killed_mid_transaction_loses_nothing(
    spawn: Any, config_file: Path, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _invite(config_file, capsys)
    child, url = spawn(kill_at="ingest.stored")
    root = _host(tmp_path)
    run.enroll(
        root,
        server=url,
        token=token,
        hostname="clinic-01",
        machine_id="ab" * 16,
        origin="clinic-01.example/evidence-log",
    )
    report = run.upload(root)
    assert report.outcome == "failed"
    assert child.wait(timeout=30) == -signal.SIGKILL
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(entries)).scalar_one() == 0
            assert conn.execute(select(hosts.c.accepted_size)).scalar_one() == 0
        port = int(url.rsplit(":", 1)[1])
        spawn(port=port)
        report = run.upload(root, force=True)
        assert (report.outcome, report.sent, report.accepted_size) == ("uploaded", 6, 6)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(entries)).scalar_one() == 6
    finally:
        engine.dispose()


def test_database_restarted_under_a_running_server(
    spawn: Any, config_file: Path, pg_cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = _invite(config_file, capsys)
    _child, url = spawn()
    root = _host(tmp_path)
    run.enroll(
        root,
        server=url,
        token=token,
        hostname="clinic-01",
        machine_id="ab" * 16,
        origin="clinic-01.example/evidence-log",
    )
    pg_cluster.stop("fast")
    try:
        report = run.upload(root)
        assert (report.outcome, report.code) == ("failed", "unavailable")
    finally:
        pg_cluster.start()
    deadline = time.monotonic() + 60
    while True:
        report = run.upload(root, force=True)
        if report.outcome == "uploaded" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (report.outcome, report.accepted_size) == ("uploaded", 6)


def test_status_names_the_database_without_its_credentials(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = json.loads(config_file.read_text())["database"]["url"]
    monkeypatch.setenv("NIXCOMPLY_SERVER_DATABASE_URL", url.replace("postgres@", "postgres:s3cret@"))
    code, out, err = server(config_file, "status", capsys=capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("database postgresql+psycopg:///"), first
    assert "s3cret" not in out + err
    assert "postgres@" not in first
