"""The fleet server over real HTTP on a real PostgreSQL: enrollment, the idle poll, uploads
re-verified and stored, cosignatures, replay and impersonation, revocation, bad input."""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures_server import FleetHost, Served, counter, make_host
from sqlalchemy import event, func, select, text

from nixcomply.evidence.checkpoint import parse_note
from nixcomply.evidence.cosignature import parse_cosignatures, verify_cosignature
from nixcomply.model.fleet import ErrorCode, UploadRequest
from nixcomply.server.db import queries
from nixcomply.server.db.tables import attachments, entries, hosts, statements
from nixcomply.uplink.client import Client, UplinkError
from nixcomply.uplink.outbox import batches


def enrolled(fleet: Served, tmp_path: Path, name: str = "clinic-01", site: str = "north") -> FleetHost:
    host = make_host(fleet, tmp_path, name)
    response = host.enroll(fleet.invite(site, name))
    assert response.hostname == name
    assert response.site == site
    assert response.witness_key == fleet.witness.public.vkey
    return host


def refused(call: Callable[[], object]) -> UplinkError:
    with pytest.raises(UplinkError) as e:
        call()
    return e.value


def table_count(fleet: Served, table: Any) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_enroll_poll_upload_and_cosign(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    state = host.client.log_state()
    assert state.accepted_size == 0
    assert state.checkpoint is None
    host.record(10)
    responses = host.push()
    assert [r.accepted_size for r in responses] == [7, 10]
    assert sum(r.stored for r in responses) == 10
    # every checkpoint is cosigned by the witness, and the host kept each cosignature
    for r in responses:
        cos = parse_cosignatures(r.cosignature)
        verify_cosignature(parse_note(r.checkpoint.encode()).text, cos, fleet.witness.public)
        assert (host.root / "log" / "cosignatures" / f"{r.accepted_size:012d}").read_text() == r.cosignature
    state = host.client.log_state()
    assert state.accepted_size == 10
    assert state.cosignature == responses[-1].cosignature
    assert table_count(fleet, entries) == 10
    assert table_count(fleet, statements) == 10
    # attachments are stored byte for byte
    with fleet.engine.connect() as conn:
        row = conn.execute(select(hosts.c.id, hosts.c.site_id)).one()
        scope = queries.Scope.host(row.site_id, row.id)
        assert (
            queries.attachment(conn, scope, 0, "switch.log")
            == b"activating the configuration...\nsetting up /etc...\n"
        )
        env0 = queries.envelope(conn, scope, 0)
    stored0 = next((host.root / "evidence").rglob("*-00000000-*"))
    assert env0 == (stored0 / "envelope.dsse.json").read_bytes()
    # nothing more to send: the idle poll says so
    assert host.push() == []


def test_statements_are_queryable(fleet: Served, tmp_path: Path) -> None:
    a = enrolled(fleet, tmp_path, "a", "north")
    b = enrolled(fleet, tmp_path, "b", "south")
    a.record(8)
    b.record(4)
    a.push()
    b.push()
    with fleet.engine.connect() as conn:
        north = queries.Scope.site(queries.site_by_name(conn, "north").id)  # type: ignore[union-attr]
        everything = queries.find_statements(conn, queries.Scope.msp())
        assert len(everything) == 12
        assert len(queries.find_statements(conn, north)) == 8
        runs = queries.find_statements(
            conn, north, predicate_type="https://nixcomply.dev/evidence/check-run/v1"
        )
        assert [s.seq for s in runs] == [1, 5]
        attested = queries.find_statements(
            conn, queries.Scope.msp(), control="164.308(a)(5)(i)", status="attested"
        )
        assert len(attested) == 3  # seq 3 and 7 of a, 3 of b
        passing = queries.find_statements(conn, north, control="ssh.password-auth-disabled", status="pass")
        assert {s.seq for s in passing} == {0, 1, 2, 4, 5, 6}
        assert {s.seq for s in queries.find_statements(conn, north, control="audit.auditd-enabled")} == {1, 5}
        assert len(queries.find_statements(conn, queries.Scope.msp(), status="attested")) == 3
        assert queries.find_statements(conn, north, status="fail") == []
        later = queries.find_statements(conn, north, since=everything[0].observed_at + timedelta(hours=4))
        assert {s.seq for s in later} == {4, 5, 6, 7}
        assert {s.outcome for s in everything} == {"success"}


def test_the_same_upload_twice_is_accepted_once(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(5)
    batch = next(batches(host.root, 0))
    first = host.client.upload(batch.request)
    again = host.client.upload(batch.request)
    assert (first.stored, first.duplicates) == (5, 0)
    assert (again.stored, again.duplicates) == (0, 5)
    assert again.cosignature == first.cosignature
    assert table_count(fleet, entries) == 5


def test_an_upload_from_a_stale_size_is_told_the_accepted_size(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(3)
    host.push()
    host.record(2)
    stale = list(batches(host.root, 0))[-1].request  # entries 0..4 from old size 0
    assert stale.old_size == 0
    e = refused(lambda: host.client.upload(stale))
    assert e.code is ErrorCode.SIZE_MISMATCH
    assert e.error.detail == {"accepted_size": 3}
    assert [r.accepted_size for r in host.push()] == [5]


def test_a_captured_request_cannot_be_replayed(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    headers = host.client.signed_headers("GET", "/v1/log", b"")
    status, body = raw(fleet, "GET", "/v1/log", b"", headers)
    assert status == 200
    status, body = raw(fleet, "GET", "/v1/log", b"", headers)
    assert (status, body["code"]) == (401, "replayed")


def test_a_host_cannot_replay_or_forge_another_hosts_request(fleet: Served, tmp_path: Path) -> None:
    a = enrolled(fleet, tmp_path, "a")
    b = enrolled(fleet, tmp_path, "b")
    a.record(3)
    request = next(batches(a.root, 0)).request
    body = request.model_dump_json().encode()
    # b captured a's signed upload and sends it: a's counter, used once
    captured = a.client.signed_headers("POST", "/v1/log/entries", body)
    assert raw(fleet, "POST", "/v1/log/entries", body, captured)[0] == 200
    status, answer = raw(fleet, "POST", "/v1/log/entries", body, captured)
    assert (status, answer["code"]) == (401, "replayed")
    # b signs a's entries with its own key: they land in b's log, where a's keys do not verify
    e = refused(lambda: b.client.upload(request))
    assert e.code is ErrorCode.BAD_ENTRY
    assert "no valid signature by a bundle key" in e.error.message
    # b puts a's keyid on its own signature: the signature does not verify
    forged = b.client.signed_headers("POST", "/v1/log/entries", body)
    forged["Signature-Input"] = forged["Signature-Input"].replace(b.keyid, a.keyid)
    status, answer = raw(fleet, "POST", "/v1/log/entries", body, forged)
    assert (status, answer["code"]) == (401, "bad-signature")
    with fleet.engine.connect() as conn:
        sizes = dict(conn.execute(select(hosts.c.hostname, hosts.c.accepted_size)).all())
    assert sizes == {"a": 3, "b": 0}


def test_a_revoked_host_is_refused(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    with fleet.engine.begin() as conn:
        row = conn.execute(select(hosts.c.id, hosts.c.site_id)).one()
        assert queries.revoke_host(conn, queries.Scope.host(row.site_id, row.id), datetime.now(UTC))
    host.record(2)
    e = refused(host.client.log_state)
    assert (e.status, e.code) == (403, ErrorCode.REVOKED)
    e = refused(lambda: host.client.upload(next(batches(host.root, 0)).request))
    assert e.code is ErrorCode.REVOKED
    assert table_count(fleet, entries) == 0


def test_enrollment_tokens_are_single_use_and_bound_to_the_host(fleet: Served, tmp_path: Path) -> None:
    token = fleet.invite("north", "a")
    a = make_host(fleet, tmp_path, "a")
    other = make_host(fleet, tmp_path, "b")
    e = refused(lambda: other.enroll(token))  # a token for host a
    assert e.code is ErrorCode.INVALID_TOKEN
    a.enroll(token)
    again = make_host(fleet, tmp_path, "a2")
    again.name = "a"
    e = refused(lambda: again.enroll(token))
    assert e.code is ErrorCode.INVALID_TOKEN
    expired = fleet.invite("north", "c", ttl=timedelta(seconds=-1))
    c = make_host(fleet, tmp_path, "c")
    assert refused(lambda: c.enroll(expired)).code is ErrorCode.INVALID_TOKEN
    # an unknown key is not a host
    stranger = Client(fleet.url, other.transport, counter())
    assert refused(stranger.log_state).code is ErrorCode.UNKNOWN_KEY


def test_enrollment_must_be_signed_by_the_key_it_registers(fleet: Served, tmp_path: Path) -> None:
    a = make_host(fleet, tmp_path, "a")
    b = make_host(fleet, tmp_path, "b")
    token = fleet.invite("north", "a")
    body = a.enroll_request(token).model_dump_json().encode()
    headers = b.client.signed_headers("POST", "/v1/enroll", body)
    status, answer = raw(fleet, "POST", "/v1/enroll", body, headers)
    assert (status, answer["code"]) == (401, "bad-signature")
    a.enroll(token)  # the token was not burnt by the refused attempt


# -- bad input: a clear JSON 4xx, never a 500, nothing written -----------------------------------


def raw(fleet: Served, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", int(fleet.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        assert response.getheader("x-content-type-options") == "nosniff"
        assert response.getheader("content-type", "").startswith("application/json"), data[:200]
        return response.status, json.loads(data)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "case",
    [
        (b"{not json", "application/json", 400, "malformed-body"),
        (b'{"old_size": 0, "checkpoint": "x", "surprise": 1}', "application/json", 422, "invalid-body"),
        (b'{"old_size": -1, "checkpoint": "x"}', "application/json", 422, "invalid-body"),
        (
            b'{"old_size": 0, "checkpoint": "x", "entries": [{"seq": 0, "envelope": "%%%"}]}',
            "application/json",
            422,
            "invalid-body",
        ),
        (b"[]", "application/json", 422, "invalid-body"),
        (b'{"old_size": 0, "checkpoint": "not a note"}', "application/json", 422, "bad-checkpoint"),
        (b"old_size=0", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
        (b"{}", "text/plain", 415, "unsupported-media-type"),
        (b"x" * (1024 * 1024 + 1), "application/json", 413, "too-large"),
        (
            b'{"old_size": 0, "checkpoint": "x", "entries": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
            "application/json",
            400,
            "malformed-body",
        ),
        (
            b'{"old_size": 0, "checkpoint": "x", "entries": [{"seq": 0, "envelope": "", "attachments": '
            + b'{"a": ' * 100_000
            + b'""'
            + b"}" * 100_000
            + b"}]}",
            "application/json",
            400,
            "malformed-body",
        ),
        (
            b'{"old_size": 1' + b"0" * 5000 + b', "checkpoint": "x"}',
            "application/json",
            400,
            "malformed-body",
        ),
        (b'{"old_size": 0, "checkpoint": "x", "old_size": 1}', "application/json", 400, "malformed-body"),
        (b'{"old_size": 0, "checkpoint": "\\ud800"}', "application/json", 422, "invalid-body"),
        (b'{"old_size": NaN, "checkpoint": "x"}', "application/json", 400, "malformed-body"),
    ],
    ids=[
        "malformed",
        "unknown-field",
        "negative",
        "bad-base64",
        "array",
        "bad-note",
        "form",
        "text",
        "oversize",
        "deep-array",
        "deep-object",
        "huge-number",
        "duplicate-key",
        "lone-surrogate",
        "nan",
    ],
)
def test_bad_uploads_get_a_clear_json_4xx_and_write_nothing(
    fleet: Served, tmp_path: Path, case: tuple[bytes, str, int, str]
) -> None:
    body, content_type, status, code = case
    host = enrolled(fleet, tmp_path)
    headers = host.client.signed_headers("POST", "/v1/log/entries", body)
    headers["Content-Type"] = content_type
    got_status, answer = raw(fleet, "POST", "/v1/log/entries", body, headers)
    assert (got_status, answer["code"]) == (status, code), answer
    assert answer["message"]
    assert table_count(fleet, entries) == 0


def test_an_oversize_body_without_content_length_is_refused(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    body = b"[" + b"0," * (600 * 1024) + b"0]"
    headers = host.client.signed_headers("POST", "/v1/log/entries", body)
    conn = http.client.HTTPConnection("127.0.0.1", int(fleet.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.putrequest("POST", "/v1/log/entries", skip_host=True, skip_accept_encoding=True)
        for k, v in {**headers, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        for i in range(0, len(body), 65536):
            chunk = body[i : i + 65536]
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["code"] == "too-large"
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/v1/nothing", 404, "not-found"), ("DELETE", "/v1/log", 405, "method-not-allowed")],
)
def test_unknown_routes_and_methods_are_json(
    fleet: Served, method: str, path: str, status: int, code: str
) -> None:
    got, answer = raw(fleet, method, path, b"", {})
    assert (got, answer["code"]) == (status, code)


@pytest.mark.parametrize(
    ("mangle", "code"),
    [
        (lambda h: {k: v for k, v in h.items() if k != "Signature"}, "unauthenticated"),
        (lambda h: {**h, "Signature": "nixcomply=:AAAA:"}, "bad-signature"),
        (lambda h: {**h, "Content-Digest": "sha-256=:" + "A" * 43 + "=:"}, "bad-digest"),
        (
            lambda h: {**h, "Signature-Input": h["Signature-Input"].replace("nixcomply=", "x=")},
            "bad-signature",
        ),
    ],
    ids=["unsigned", "garbage-signature", "wrong-digest", "wrong-label"],
)
def test_unauthenticated_requests_are_401(fleet: Served, tmp_path: Path, mangle: Any, code: str) -> None:
    host = enrolled(fleet, tmp_path)
    headers = mangle(host.client.signed_headers("GET", "/v1/log", b""))
    got, answer = raw(fleet, "GET", "/v1/log", b"", headers)
    assert (got, answer["code"]) == (401, code)


def test_a_request_from_a_skewed_clock_is_refused(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    fleet.clock_offset[0] = 3600
    assert refused(host.client.log_state).code is ErrorCode.STALE_SIGNATURE
    fleet.clock_offset[0] = 0
    assert host.client.log_state().accepted_size == 0


def test_the_idle_poll_is_one_indexed_statement(fleet: Served, tmp_path: Path) -> None:

    host = enrolled(fleet, tmp_path)
    host.client.log_state()  # warm the key cache
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(fleet.engine, "before_cursor_execute", record)
    try:
        host.client.log_state()
    finally:
        event.remove(fleet.engine, "before_cursor_execute", record)
    assert len(seen) == 1, seen
    assert seen[0].startswith("UPDATE hosts SET counter=")
    with fleet.engine.connect() as conn:
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                text(
                    "EXPLAIN UPDATE hosts SET counter = 1 WHERE keyid = 'x' AND counter < 1 AND revoked_at IS NULL"
                )
            )
        )
    assert "Index Scan using uq_hosts_keyid" in plan, plan


def test_upload_request_model_rejects_gaps(fleet: Served, tmp_path: Path) -> None:
    host = enrolled(fleet, tmp_path)
    host.record(3)
    request = next(batches(host.root, 0)).request
    gap = UploadRequest(
        old_size=0, entries=[request.entries[0], request.entries[2]], checkpoint=request.checkpoint, proof=[]
    )
    e = refused(lambda: host.client.upload(gap))
    assert e.code is ErrorCode.BAD_ENTRY
    assert table_count(fleet, entries) == 0
    assert table_count(fleet, attachments) == 0


def test_every_request_is_audited_and_enrollment_recorded(
    fleet: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:

    caplog.set_level(logging.INFO, logger="nixcomply.server.audit")
    host = enrolled(fleet, tmp_path)
    host.client.log_state()
    raw(fleet, "GET", "/v1/nothing", b"", {})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "nixcomply.server.audit"]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("POST", "/v1/enroll", 200),
        ("GET", "/v1/log", 200),
        ("GET", "/v1/nothing", 404),
    ]
    assert lines[1]["host"] is not None and lines[1]["host"].endswith("/clinic-01")
    assert all("token" not in json.dumps(x) for x in lines)
    with fleet.engine.connect() as conn:
        actions = [a for _, _, a, _ in queries.audit_entries(conn, queries.Scope.msp())]
    assert actions == ["host.invited", "host.enrolled"]


def test_a_value_the_database_cannot_store_is_a_4xx_and_burns_nothing(fleet: Served, tmp_path: Path) -> None:
    """A NUL character in the keyring (a key's reason) made PostgreSQL refuse the JSON: the
    enrollment was a 500, and a host's signed rotation reason would have been one at every
    retry."""
    host = make_host(fleet, tmp_path, "clinic-01")
    token = fleet.invite("north", "clinic-01")
    request = host.enroll_request(token).model_dump()
    request["keyring"]["keys"][0]["reason"] = "a\u0000b"
    body = json.dumps(request).encode()
    status, answer = raw(
        fleet, "POST", "/v1/enroll", body, host.client.signed_headers("POST", "/v1/enroll", body)
    )
    assert (status, answer["code"]) == (422, "invalid-body"), answer
    assert "cannot store" in answer["message"]
    assert host.enroll(token).hostname == "clinic-01"  # the token was not burnt


def test_a_bug_is_a_json_500_with_the_security_headers_and_audited(
    fleet: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The catch-all answer came from outside every middleware: no security headers, and the
    audit line said status 0."""
    caplog.set_level(logging.INFO, logger="nixcomply.server.audit")
    host = enrolled(fleet, tmp_path)
    host.record(1)

    def broken(*_args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr("nixcomply.server.api.log.ingest", broken)
    request = next(batches(host.root, 0)).request
    body = request.model_dump_json().encode()
    status, answer = raw(
        fleet, "POST", "/v1/log/entries", body, host.client.signed_headers("POST", "/v1/log/entries", body)
    )
    assert (status, answer) == (500, {"code": "internal", "message": "internal error; nothing was written"})
    audited = [json.loads(r.getMessage()) for r in caplog.records if r.name == "nixcomply.server.audit"]
    assert audited[-1]["status"] == 500
    assert table_count(fleet, entries) == 0
