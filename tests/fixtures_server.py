"""The fleet server for tests: ``nixcomply-server``'s app on a real PostgreSQL database,
served by uvicorn over real HTTP on 127.0.0.1 (port 0, in a thread the fixture stops), and
hosts with real evidence stores that enroll and upload through the real uplink client."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fixtures_evidence import Keys, fill, make_keys, open_store
from sqlalchemy import Engine, create_engine

from nixcomply.evidence.cosignature import Witness, WitnessPublicKey, generate_witness
from nixcomply.evidence.statement import Host
from nixcomply.model import httpsig
from nixcomply.model.fleet import EnrollRequest, EnrollResponse, UploadResponse, b64encode
from nixcomply.server.app import create_app
from nixcomply.server.config import ServerConfig
from nixcomply.server.invites import invite, site_named
from nixcomply.server.serving import Running, in_thread
from nixcomply.uplink.client import Client
from nixcomply.uplink.outbox import batches, store_cosignature

WITNESS_NAME = "msp.example/witness"


def counter() -> Callable[[], int]:
    """A strictly increasing request counter, as the uplink keeps one."""
    last = [0]

    def next_value() -> int:
        last[0] = max(last[0] + 1, time.time_ns() // 1000)
        return last[0]

    return next_value


@dataclass
class Served:
    url: str
    config: ServerConfig
    engine: Engine
    witness: Witness
    running: Running
    clock_offset: list[float] = field(default_factory=lambda: [0.0])

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        self.running.stop()

    def invite(self, site: str, host: str, *, ttl: timedelta = timedelta(hours=1)) -> str:
        with self.engine.begin() as conn:
            token, _expires = invite(conn, site_named(conn, site), host, ttl=ttl, actor="test")
        return token


def serve(config: ServerConfig, engine: Engine, witness: Witness, *, port: int = 0) -> Served:
    """Serve on 127.0.0.1 (``port`` 0: any free one; a port given again brings a stopped
    server back at the same address)."""
    offset = [0.0]
    app = create_app(config, engine, witness, clock=lambda: datetime.now(UTC) + timedelta(seconds=offset[0]))
    running = in_thread(app, port=port)
    return Served(running.url, config, engine, witness, running, offset)


def server_config(pg_url: str, key_file: Path, **extra: Any) -> ServerConfig:
    return ServerConfig.model_validate(
        {"database": {"url": pg_url}, "witness": {"name": WITNESS_NAME, "key_file": str(key_file)}, **extra}
    )


@pytest.fixture
def witness_key(tmp_path: Path) -> tuple[Witness, Path]:
    witness = generate_witness(WITNESS_NAME)
    path = tmp_path / "witness.key"
    path.write_text(witness.private_text())
    path.chmod(0o600)
    return witness, path


@pytest.fixture
def fleet(pg_url: str, witness_key: tuple[Witness, Path]) -> Iterator[Served]:
    witness, path = witness_key
    config = server_config(pg_url, path, max_body_bytes=1024 * 1024)
    engine = create_engine(pg_url, pool_pre_ping=True)
    served = serve(config, engine, witness)
    try:
        yield served
    finally:
        served.stop()
        engine.dispose()


_machine = itertools.count(1)


@dataclass
class FleetHost:
    """A host with a real evidence store, its transport key and an uplink client."""

    name: str
    root: Path
    keys: Keys
    transport: Ed25519PrivateKey
    client: Client
    machine_id: str
    witness: WitnessPublicKey

    @property
    def keyid(self) -> str:
        return httpsig.key_id(self.transport.public_key())

    def record(self, n: int) -> None:
        with open_store(self.root, self.keys) as store:
            fill(store, n)

    def enroll_request(self, token: str) -> EnrollRequest:
        keyring = json.loads(self.keys.keyring.to_bytes())
        return EnrollRequest(
            token=token,
            hostname=self.name,
            machine_id=self.machine_id,
            origin="clinic-01.example/evidence-log",
            transport_key=b64encode(self.transport.public_key().public_bytes_raw()),
            keyring=keyring,
        )

    def enroll(self, token: str) -> EnrollResponse:
        return self.client.enroll(self.enroll_request(token))

    def push(self) -> list[UploadResponse]:
        """Upload the outbox from the server's accepted size; keep the cosignatures."""
        state = self.client.log_state()
        out = []
        for batch in batches(self.root, state.accepted_size, max_entries=7):
            response = self.client.upload(batch.request)
            store_cosignature(
                self.root,
                response.accepted_size,
                response.checkpoint.encode(),
                response.cosignature,
                witness=self.witness,
            )
            out.append(response)
        return out


def make_host(served: Served, tmp_path: Path, name: str) -> FleetHost:
    transport = Ed25519PrivateKey.generate()
    root = tmp_path / name
    root.mkdir()
    host = Host(machine_id=f"{next(_machine):032x}", hostname=name)
    return FleetHost(
        name,
        root,
        make_keys(),
        transport,
        Client(served.url, transport, counter()),
        host.machine_id,
        served.witness.public,
    )
