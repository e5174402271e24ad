"""Rate limits (``nixcomply.server.ratelimit``): a flooding client address or host is
answered 429 with ``Retry-After``, over real HTTP, before anything is written; the buckets
themselves on a clock the test moves."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures_evidence import fill, make_keys, open_store, write_keyring
from fixtures_server import Served, make_host, serve, server_config
from sqlalchemy import create_engine, func, select
from test_server_api import enrolled, refused

from nixcomply.evidence.cosignature import Witness
from nixcomply.model.fleet import ErrorCode
from nixcomply.server.config import Bucket, RateLimits
from nixcomply.server.db.tables import entries
from nixcomply.server.ratelimit import TokenBuckets
from nixcomply.uplink import run
from nixcomply.uplink.outbox import batches

# A bucket that never refills within a test: exactly `burst` requests pass.
NEVER = 1e-6


@pytest.fixture
def limited(pg_url: str, witness_key: tuple[Witness, Path]) -> Iterator[Any]:
    """``limited(client=(per_second, burst), host=(...))``: a server with those limits."""
    witness, path = witness_key
    engine = create_engine(pg_url, pool_pre_ping=True)
    started: list[Served] = []

    def start(client: tuple[float, int] = (1000, 1000), host: tuple[float, int] = (1000, 1000)) -> Served:
        config = server_config(
            pg_url,
            path,
            rate_limit={
                "client": {"per_second": client[0], "burst": client[1]},
                "host": {"per_second": host[0], "burst": host[1]},
            },
        )
        served = serve(config, engine, witness)
        started.append(served)
        return served

    try:
        yield start
    finally:
        for s in started:
            s.stop()
        engine.dispose()


def get(served: Served, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        assert response.getheader("content-type", "").startswith("application/json"), data[:200]
        return response.status, json.loads(data), response
    finally:
        conn.close()


def test_buckets_allow_a_burst_then_the_rate() -> None:
    now = [100.0]
    buckets = TokenBuckets(2, 3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]
    assert buckets.take("a") == 1  # empty: the next token in half a second, said as 1 s
    assert buckets.take("b") is None  # another identity has its own bucket
    now[0] += 0.5
    assert buckets.take("a") is None
    assert buckets.take("a") == 1
    now[0] += 60  # refills only up to the burst
    assert [buckets.take("a") for _ in range(4)] == [None, None, None, 1]
    slow = TokenBuckets(0.1, 1, clock=lambda: now[0])
    assert slow.take("x") is None
    assert slow.take("x") == 10


def test_the_table_of_buckets_is_bounded() -> None:
    buckets = TokenBuckets(NEVER, 1, clock=lambda: 0.0, max_identities=3)
    for name in "abcd":
        assert buckets.take(name) is None
    assert buckets.take("d") is not None
    assert buckets.take("a") is None  # forgotten: starts afresh (never stricter than the limit)


def test_an_unauthenticated_flood_gets_429_with_retry_after(
    limited: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nixcomply.server.audit")
    served = limited(client=(NEVER, 5))
    token = served.invite("north", "clinic-01")
    statuses = [get(served, "/v1/nothing")[0] for _ in range(5)]
    assert statuses == [404] * 5
    status, answer, response = get(served, "/v1/nothing")
    assert (status, answer["code"]) == (429, "rate-limited")
    assert "too many requests from this address" in answer["message"]
    assert int(response.getheader("retry-after")) >= 1
    assert response.getheader("x-content-type-options") == "nosniff"
    # An enrollment from the flooding address is refused before it is read: the token stays good.
    host = make_host(served, tmp_path, "clinic-01")
    e = refused(lambda: host.enroll(token))
    assert (e.status, e.code, e.retry_after is not None and e.retry_after >= 1) == (
        429,
        ErrorCode.RATE_LIMITED,
        True,
    )
    again = limited()  # a fresh server process: fresh buckets, same database
    host.client = type(host.client)(again.url, host.transport, host.client.counter)
    assert host.enroll(token).hostname == "clinic-01"
    audited = [
        json.loads(r.getMessage())["status"] for r in caplog.records if r.name == "nixcomply.server.audit"
    ]
    assert audited.count(429) == 2


def test_behind_the_local_proxy_each_client_address_has_its_own_bucket(limited: Any) -> None:
    """The NixOS module puts nginx on 127.0.0.1 in front: without X-Forwarded-For every
    host of the fleet would share the proxy's one bucket."""
    served = limited(client=(NEVER, 2))
    flooder, other = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.2"}
    assert [get(served, "/v1/nothing", flooder)[0] for _ in range(3)] == [404, 404, 429]
    assert get(served, "/v1/nothing", other)[0] == 404
    assert get(served, "/v1/nothing")[0] == 404  # the proxy's own address, a third bucket


def test_a_flooding_host_gets_429_and_its_neighbours_do_not(limited: Any, tmp_path: Path) -> None:
    served = limited(host=(NEVER, 3))
    a = enrolled(served, tmp_path, "a")
    b = enrolled(served, tmp_path, "b")
    # Forged and replayed requests naming a never spend a's tokens.
    for _ in range(5):
        forged = b.client.signed_headers("GET", "/v1/log", b"")
        forged["Signature-Input"] = forged["Signature-Input"].replace(b.keyid, a.keyid)
        assert get(served, "/v1/log", forged)[1]["code"] == "bad-signature"
    captured = a.client.signed_headers("GET", "/v1/log", b"")
    assert get(served, "/v1/log", captured)[0] == 200
    for _ in range(3):
        assert get(served, "/v1/log", captured)[1]["code"] == "replayed"
    a.client.log_state()
    a.client.log_state()
    e = refused(a.client.log_state)
    assert (e.status, e.code) == (429, ErrorCode.RATE_LIMITED)
    assert e.retry_after is not None and e.retry_after >= 1
    assert "too many requests from this host" in e.error.message
    assert e.retryable
    # b, behind the same address, is served
    assert b.client.log_state().accepted_size == 0
    # a's upload over the limit writes nothing
    a.record(3)
    e = refused(lambda: a.client.upload(next(batches(a.root, 0)).request))
    assert e.code is ErrorCode.RATE_LIMITED
    with served.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(entries)).scalar_one() == 0


def test_the_uplink_waits_at_least_retry_after_and_loses_nothing(limited: Any, tmp_path: Path) -> None:
    served = limited(host=(NEVER, 1))
    root = tmp_path / "state"
    keys = make_keys()
    with open_store(root, keys) as store:
        fill(store, 4)
    write_keyring(root, keys)
    run.enroll(
        root,
        server=served.url,
        token=served.invite("north", "clinic-01"),
        hostname="clinic-01",
        machine_id="ab" * 16,
        origin="clinic-01.example/evidence-log",
    )
    now = datetime.now(UTC)
    first = run.upload(root, now=lambda: now)  # the poll takes the one token; the upload is 429
    assert (first.outcome, first.code) == ("failed", ErrorCode.RATE_LIMITED.value), first
    # Retry-After (a million seconds here) is honoured, capped at a day
    assert first.next_attempt_at == now + timedelta(days=1)
    assert run.upload(root, now=lambda: now + timedelta(hours=23)).outcome == "waiting"
    # the server back with room to spare: everything arrives, once
    port = served.port
    served.stop()
    roomy = served.config.model_copy(
        update={"rate_limit": RateLimits(host=Bucket(per_second=NEVER, burst=10))}
    )
    back = serve(roomy, served.engine, served.witness, port=port)
    try:
        report = run.upload(root, now=lambda: now + timedelta(days=1, seconds=1))
        assert (report.outcome, report.sent, report.accepted_size) == ("uploaded", 4, 4), report
    finally:
        back.stop()
