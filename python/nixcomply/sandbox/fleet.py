"""The fleet part of ``nixcomply demo``: the MSP's evidence server and three sandbox hosts in
two sites.

1. a private PostgreSQL cluster in ``<demo>/server/pg`` (a unix socket only, no system
   service), the schema migrated, a witness key, and ``nixcomply-server`` on 127.0.0.1
   (in a thread of the demo);
2. two sites, an enrollment token per host (as ``nixcomply-server host invite`` makes them);
3. the demo's first host enrolls and uploads what it recorded; two more sandbox hosts
   install a generation, enroll, and reconcile to a second one, each cycle uploading its
   evidence;
4. on every host ``evidence verify --witness`` passes (the newest checkpoint carries the
   server's cosignature), and so does a packet exported from the first;
5. the server's view: hosts, entries, cosigned checkpoints, incidents (none).

Everything stops at the end (the cluster too). What an auditor would hold is left in
``<demo>/auditor/``: the packet, and the keyring and witness key as they would have them
from the clinic and the MSP; :func:`after_demo` gives the commands to look again.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypedDict

from sqlalchemy import create_engine

from nixcomply.core import process
from nixcomply.core.fsutil import atomic_write
from nixcomply.evidence.cosignature import WitnessPublicKey, check_newest, generate_witness
from nixcomply.evidence.export import export_packet
from nixcomply.evidence.keyring import load_keyring
from nixcomply.evidence.statement import Host
from nixcomply.evidence.verify import verify_path
from nixcomply.reconcile.cycle import Reconciler
from nixcomply.reconcile.record import origin_for
from nixcomply.sandbox.machine import SandboxHost
from nixcomply.server.app import create_app
from nixcomply.server.config import ServerConfig
from nixcomply.server.db import queries
from nixcomply.server.db.migrate import upgrade
from nixcomply.server.devdb import PrivateCluster
from nixcomply.server.invites import invite, site_named
from nixcomply.server.serving import in_thread
from nixcomply.uplink.run import enroll, upload

SITES: Final = {"clinic-01": "north", "clinic-02": "north", "clinic-03": "south"}
AUDITOR: Final = "auditor"
PACKET: Final = "packet-clinic-01.zip"
WITNESS: Final = "evidence.msp.demo/witness"
APP: Final = "app.service"
Say = Callable[[str], None]


class FleetHostJson(TypedDict):
    """One host of the demo's fleet: its site, its log's size, what the server holds, and
    whether its newest checkpoint carries the witness's cosignature (else ``problem``)."""

    site: str
    entries: int
    accepted: int
    witness_ok: bool
    problem: str | None


class FleetJson(TypedDict):
    """``fleet`` in ``nixcomply demo --json``."""

    server: str
    url: str
    witness_key: str
    hosts: dict[str, FleetHostJson]
    packet: str | None
    packet_ok: bool
    incidents: int
    checkpoints: int
    database: str | None
    ok: bool


@dataclass
class FleetHostResult:
    site: str
    entries: int
    accepted: int
    witness_ok: bool
    problem: str | None = None


@dataclass
class FleetResult:
    server_dir: Path
    url: str = ""
    witness_key: str = ""
    hosts: dict[str, FleetHostResult] = field(default_factory=dict)
    packet: Path | None = None
    packet_ok: bool = False
    incidents: int = 0
    checkpoints: int = 0
    database_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return (
            len(self.hosts) == len(SITES)
            and all(h.witness_ok and h.accepted == h.entries for h in self.hosts.values())
            and self.packet_ok
            and self.incidents == 0
        )

    def as_json(self) -> FleetJson:
        return {
            "server": str(self.server_dir),
            "url": self.url,
            "witness_key": self.witness_key,
            "hosts": {
                name: {
                    "site": h.site,
                    "entries": h.entries,
                    "accepted": h.accepted,
                    "witness_ok": h.witness_ok,
                    "problem": h.problem,
                }
                for name, h in self.hosts.items()
            },
            "packet": str(self.packet) if self.packet else None,
            "packet_ok": self.packet_ok,
            "incidents": self.incidents,
            "checkpoints": self.checkpoints,
            "database": str(self.database_dir) if self.database_dir else None,
            "ok": self.ok,
        }


def _reachable_by_postgres(path: Path) -> bool:
    """Whether the cluster's OS user can reach ``path`` (a home directory is often 0700)."""

    user = PrivateCluster(path).os_user
    if user is None:
        return True
    return process.run(["runuser", "-u", user, "--", "test", "-x", str(path)], check=False).returncode == 0


@contextlib.contextmanager
def demo_server(directory: Path, result: FleetResult) -> Iterator[Any]:
    """The cluster, the schema, the witness key and the server; all stopped on exit."""

    directory.mkdir(parents=True, exist_ok=True)
    pg = directory / "pg"
    if not _reachable_by_postgres(directory):
        # the cluster belongs to postgres, which cannot enter this tree: keep it in /tmp
        pg.symlink_to(tempfile.mkdtemp(prefix="nixcomply-demo-pg-"))
        Path(pg.readlink()).chmod(0o755)
    cluster = PrivateCluster(pg.resolve())  # postgres follows no link through a tree it cannot enter
    result.database_dir = cluster.root
    cluster.init()
    cluster.start()
    engine = None
    running = None
    try:
        cluster.psql("CREATE DATABASE nixcomply")
        witness = generate_witness(WITNESS)
        key = directory / "witness.key"
        atomic_write(key, witness.private_text().encode(), mode=0o600)
        atomic_write(directory / "witness.vkey", (witness.public.vkey + "\n").encode())
        config_data = {
            "database": {"url": cluster.url("nixcomply")},
            "witness": {"name": WITNESS, "key_file": str(key)},
        }
        (directory / "server.json").write_text(json.dumps(config_data, indent=2) + "\n")
        config = ServerConfig.model_validate(config_data)
        engine = create_engine(config.database_url())
        upgrade(engine)
        running = in_thread(create_app(config, engine, witness))
        result.url = running.url
        result.witness_key = witness.public.vkey
        yield engine
    finally:
        if running is not None:
            running.stop()
        if engine is not None:
            engine.dispose()
        cluster.stop()


def _invite(engine: Any, site: str, host: str) -> str:

    with engine.begin() as conn:
        token, _expires = invite(conn, site_named(conn, site), host, ttl=timedelta(hours=1), actor="demo")
    return token


def _enroll(host: SandboxHost, url: str, token: str) -> None:

    config = host.config
    enroll(
        config.state_dir,
        server=url,
        token=token,
        hostname=config.host,
        machine_id=Host.local(etc=config.root / "etc").machine_id,
        origin=origin_for(config),
    )


def _reconcile(host: SandboxHost, revision: str, url: str) -> None:
    host.write_config(
        critical_units=[APP],
        settings={"flake": str(host.sandbox.flake_ref_at(revision)), "upload": {"server": url}},
    )
    Reconciler(host.config).run()


def run_fleet(
    dir: Path,
    first: SandboxHost,
    *,
    manifest: str,
    version: str,
    unit: Callable[[str, str], str],
    say: Say,
) -> FleetResult:

    result = FleetResult(server_dir=dir / "server")
    say("6. the fleet: a private PostgreSQL and the MSP's evidence server on 127.0.0.1")
    with demo_server(result.server_dir, result) as engine, contextlib.ExitStack() as stack:
        say(
            f"   {result.url}, witness {result.witness_key.split('+')[0]}, database in {result.server_dir / 'pg'}"
        )
        tokens = {name: _invite(engine, site, name) for name, site in SITES.items()}
        say("   sites north (clinic-01, clinic-02) and south (clinic-03): one enrollment token per host")
        hosts = {"clinic-01": first}
        _enroll(first, result.url, tokens["clinic-01"])
        upload(first.state_dir, server=result.url)
        for name in ("clinic-02", "clinic-03"):
            host = stack.enter_context(
                SandboxHost.create(dir / "fleet" / name, host=name, critical_units=[APP])
            )
            hosts[name] = host
            sandbox = host.sandbox
            one = sandbox.commit_generation(
                label=f"{name}: generation 1",
                manifest_json=manifest,
                nixos_version=version,
                units={APP: unit("/bin/sleep 86400", f"{name}'s app")},
            )
            sandbox.install(one)
            _enroll(host, result.url, tokens[name])
            two = sandbox.commit_generation(
                label=f"{name}: generation 2",
                manifest_json=manifest,
                nixos_version=version,
                units={APP: unit("/bin/sleep 86401", f"{name}'s app, updated")},
            )
            _reconcile(host, two, result.url)  # the cycle uploads its own evidence
        say("7. every host enrolled and uploaded; verify --witness on each host")
        witness = WitnessPublicKey.from_vkey(result.witness_key)
        with engine.connect() as conn:
            held = {h.hostname: h.accepted_size for h in queries.list_hosts(conn, queries.Scope.msp())}
        for name, host in hosts.items():
            report = verify_path(host.state_dir, None)
            problem = next((str(e) for e in report.errors), None) or check_newest(
                host.state_dir, witness, report.checkpoint_size
            )
            result.hosts[name] = FleetHostResult(
                SITES[name], report.entries, held.get(name, 0), problem is None, problem
            )
            say(
                f"   {SITES[name]}/{name}: {report.entries} entries, the server holds {held.get(name, 0)}, "
                + ("newest checkpoint cosigned by the witness" if problem is None else f"FAILED: {problem}")
            )
        auditor = dir / AUDITOR
        auditor.mkdir()
        # what an auditor holds: the keyring from the clinic, the witness key from the MSP
        # (each through a channel of its own), and the packet
        shutil.copyfile(first.state_dir / "keyring.json", auditor / "keyring.json")
        shutil.copyfile(result.server_dir / "witness.vkey", auditor / "witness.vkey")
        result.packet = auditor / PACKET
        today = datetime.now(UTC).date()
        export_packet(
            first.state_dir,
            load_keyring(first.state_dir / "keyring.json"),
            result.packet,
            start=date(2000, 1, 1),
            end=today,
            witness_key=result.witness_key,
        )
        packet_report = verify_path(result.packet, None)
        packet_problem = next((str(e) for e in packet_report.errors), None) or check_newest(
            result.packet, witness, packet_report.checkpoint_size
        )
        result.packet_ok = packet_problem is None
        say(
            f"8. exported {result.packet.name}: "
            + (
                "verifies, with the witness's cosignature"
                if result.packet_ok
                else f"FAILED: {packet_problem}"
            )
        )
        with engine.connect() as conn:
            result.incidents = len(queries.list_incidents(conn, queries.Scope.msp()))
            result.checkpoints = queries.counts(conn, queries.Scope.msp())["checkpoints"]
        say(
            f"   the server: {len(held)} hosts, {result.checkpoints} cosigned checkpoints, {result.incidents} incidents"
        )
    return result


def after_demo(dir: Path, result: FleetResult, bin: str = "") -> list[str]:
    """The commands to look at the demo again, as a shell runs them from where the demo
    ran (``bin``: how the reader runs nixcomply, ``.venv/bin/`` after ``make demo``). The
    README's quick start shows them for ``make demo``; tests/test_demo.py runs them."""
    auditor = dir / AUDITOR
    pins = ["--keyring", str(auditor / "keyring.json"), "--witness", str(auditor / "witness.vkey")]
    cluster = PrivateCluster(_in_tree(result.database_dir, dir / "server" / "pg"))
    return [
        shlex.join([f"{bin}nixcomply", "status", "--config", str(dir / "host" / "reconciler.json")]),
        shlex.join([f"{bin}nixcomply", "evidence", "verify", str(dir / "host" / "state"), *pins]),
        shlex.join([f"{bin}nixcomply", "evidence", "verify", str(auditor / PACKET), *pins]),
        shlex.join(cluster.start_argv()),
        shlex.join([f"{bin}nixcomply-server", "status", "--config", str(dir / "server" / "server.json")]),
        shlex.join(cluster.stop_argv()),
    ]


def _in_tree(database: Path | None, link: Path) -> Path:
    """The cluster by the demo's own path when it lives there, else (a tree its OS user
    cannot enter) where it really is."""
    if database is None or not link.is_symlink():
        return link
    return database
