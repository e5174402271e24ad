"""``nixcomply-server``: serve, migrate, and the operator's verbs (sites, host invites and
revocation, the witness key, status). Every verb reads ``--config`` (and the environment
for secrets, ``nixcomply.server.config``); errors are one line and an exit code, as for
``nixcomply`` (``nixcomply.errors``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypedDict

from nixcomply import __version__
from nixcomply.cli import COMMON, add_group, add_verb, run
from nixcomply.core import gcpause
from nixcomply.core.display import shown
from nixcomply.errors import EXIT_OK, EXIT_TEMPFAIL, HELP_EXIT_STATUS, NixcomplyError, UsageError
from nixcomply.server.config import DEFAULT_CONFIG, ServerConfig, load_config

if TYPE_CHECKING:
    from nixcomply.server.db.queries import HostListing

logger = logging.getLogger(__name__)
Handler = Callable[[argparse.Namespace], int]
ACTOR_ENV: Final = "SUDO_USER"


def _config(args: argparse.Namespace) -> ServerConfig:
    config: Path = args.config
    return load_config(config)


def _actor() -> str:
    import pwd

    return os.environ.get(ACTOR_ENV) or pwd.getpwuid(os.getuid()).pw_name


def _engine(config: ServerConfig) -> Any:
    from nixcomply.server.db.engine import make_engine

    return make_engine(config)


# -- the --json outputs (stable: fields are added, never renamed or removed) ----------------------
# Times are ISO 8601 in UTC (`2026-12-01T11:16:09.123456+00:00`), null when it never happened.


class SiteJson(TypedDict):
    """``site add --json`` (``created_at`` null) and each item of ``site list --json``."""

    site: str
    created_at: str | None


class InviteJson(TypedDict):
    """``host invite --json``: the single-use token and when it expires."""

    site: str
    host: str
    token: str
    expires_at: str


class RevokedJson(TypedDict):
    """``host revoke --json``."""

    site: str
    host: str
    revoked: bool


class HostJson(TypedDict):
    """Each item of ``host list --json`` and of ``status --json``'s ``hosts``: the entries the
    server holds and open incidents."""

    site: str
    hostname: str
    accepted_size: int
    enrolled_at: str
    last_seen_at: str | None
    last_upload_at: str | None
    revoked_at: str | None
    incidents: int


class IncidentJson(TypedDict):
    """A fork or rollback the server refused, with both checkpoints (signed notes)."""

    site: str
    host: str
    kind: str
    message: str
    count: int
    first_seen_at: str
    last_seen_at: str
    accepted_checkpoint: str | None
    presented_checkpoint: str


class StatusJson(TypedDict):
    """``status --json``. ``database`` names no user or password; ``totals`` counts
    ``entries``, ``statements`` and cosigned ``checkpoints``."""

    database: str
    schema: str | None
    schema_current: bool
    hosts: list[HostJson]
    totals: dict[str, int]
    incidents: list[IncidentJson]


def _iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def _iso(t: datetime | None) -> str | None:
    return None if t is None else _iso_utc(t)


def _host_json(h: HostListing) -> HostJson:
    return {
        "site": h.site,
        "hostname": h.hostname,
        "accepted_size": h.accepted_size,
        "enrolled_at": _iso_utc(h.enrolled_at),
        "last_seen_at": _iso(h.last_seen_at),
        "last_upload_at": _iso(h.last_upload_at),
        "revoked_at": _iso(h.revoked_at),
        "incidents": h.incidents,
    }


def _print(args: argparse.Namespace, data: object, lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for line in lines:
            print(line)


# -- verbs ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from nixcomply.server.app import create_app
    from nixcomply.server.db.migrate import current, head, upgrade
    from nixcomply.server.serving import bind, make_server

    config = _config(args)
    witness = config.witness_key()
    engine = _engine(config)
    if config.migrate_on_start or args.migrate:
        upgrade(engine)
    elif current(engine) != head():
        raise UsageError(
            f"the database schema is at {current(engine) or 'nothing'}, this server needs {head()}",
            hint="run `nixcomply-server migrate` (or set migrate_on_start)",
        )
    app = create_app(config, engine, witness)
    host = args.host or config.listen.host
    port = config.listen.port if args.port is None else args.port
    sock = bind(host, port)
    logger.info("database %s", config.describe_database())
    print(f"nixcomply-server {__version__}: listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    server = make_server(app)
    gcpause.freeze_startup()  # what the server loaded stays: full collections skip it
    try:
        server.run(sockets=[sock])
    finally:
        engine.dispose()
    return EXIT_OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from nixcomply.server.db.migrate import upgrade

    config = _config(args)
    engine = _engine(config)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    print(f"schema: {before or 'empty'} -> {after}" if before != after else f"schema: {after} (up to date)")
    return EXIT_OK


def cmd_site_add(args: argparse.Namespace) -> int:
    from nixcomply.server.db import queries

    _check_name(args.name, "site")
    engine = _engine(_config(args))
    try:
        with engine.begin() as conn:
            site = queries.add_site(conn, args.name)
            if site is None:
                raise UsageError(f"site {args.name!r} exists")
            queries.audit(conn, actor=_actor(), action="site.added", scope=queries.Scope.site(site.id))
    finally:
        engine.dispose()
    added: SiteJson = {"site": site.name, "created_at": _iso(site.created_at)}
    _print(args, added, [f"site {site.name} added"])
    return EXIT_OK


def cmd_site_list(args: argparse.Namespace) -> int:
    from nixcomply.server.db import queries

    engine = _engine(_config(args))
    try:
        with engine.connect() as conn:
            found = queries.list_sites(conn, queries.Scope.msp())
    finally:
        engine.dispose()
    rows: list[SiteJson] = [{"site": s.name, "created_at": _iso(s.created_at)} for s in found]
    _print(args, rows, [s.name for s in found])
    return EXIT_OK


def _check_name(name: str, what: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", name):
        raise UsageError(f"{what} name {name!r}: use letters, digits, '.', '_' and '-' (at most 63)")


def _site(conn: Any, name: str) -> Any:
    from nixcomply.server.db import queries

    site = queries.site_by_name(conn, name)
    if site is None:
        raise UsageError(f"no site {name!r}", hint="see `nixcomply-server site list`")
    return site


def cmd_host_invite(args: argparse.Namespace) -> int:
    from nixcomply.server.db import queries
    from nixcomply.server.invites import invite

    _check_name(args.host, "host")
    config = _config(args)
    ttl = timedelta(hours=args.ttl_hours if args.ttl_hours is not None else config.invite_ttl_hours)
    engine = _engine(config)
    try:
        with engine.begin() as conn:
            site = _site(conn, args.site)
            if queries.host_by_name(conn, queries.Scope.site(site.id), args.host) is not None:
                raise UsageError(f"host {args.host!r} is already enrolled in site {args.site!r}")
            token, expires = invite(conn, site, args.host, ttl=ttl, actor=_actor())
    finally:
        engine.dispose()
    invited: InviteJson = {
        "site": args.site,
        "host": args.host,
        "token": token,
        "expires_at": _iso_utc(expires),
    }
    _print(
        args,
        invited,
        [
            token,
            f"single use, for host {args.host} of site {args.site}, valid until {expires:%Y-%m-%d %H:%M} UTC",
        ],
    )
    return EXIT_OK


def cmd_host_list(args: argparse.Namespace) -> int:
    from nixcomply.server.db import queries

    engine = _engine(_config(args))
    try:
        with engine.connect() as conn:
            scope = queries.Scope.site(_site(conn, args.site).id) if args.site else queries.Scope.msp()
            found = queries.list_hosts(conn, scope)
    finally:
        engine.dispose()
    lines = [
        f"{h.site}/{h.hostname}: {h.accepted_size} entries, last upload {_when(h.last_upload_at)}"
        + (f", REVOKED {_when(h.revoked_at)}" if h.revoked_at else "")
        + (f", {h.incidents} incident(s)" if h.incidents else "")
        for h in found
    ]
    _print(args, [_host_json(h) for h in found], lines or ["no hosts"])
    return EXIT_OK


def cmd_host_revoke(args: argparse.Namespace) -> int:
    from nixcomply.server.db import queries

    engine = _engine(_config(args))
    try:
        with engine.begin() as conn:
            scope = queries.Scope.site(_site(conn, args.site).id)
            host = queries.host_by_name(conn, scope, args.host)
            if host is None:
                raise UsageError(f"no host {args.host!r} in site {args.site!r}")
            if not queries.revoke_host(conn, host.scope, datetime.now(UTC)):
                raise UsageError(f"host {args.host!r} is already revoked")
            queries.audit(conn, actor=_actor(), action="host.revoked", scope=host.scope)
    finally:
        engine.dispose()
    revoked: RevokedJson = {"site": args.site, "host": args.host, "revoked": True}
    _print(args, revoked, [f"host {args.site}/{args.host} revoked"])
    return EXIT_OK


def cmd_witness_key(args: argparse.Namespace) -> int:
    witness = _config(args).witness_key()
    print(witness.public.vkey)
    return EXIT_OK


def cmd_witness_keygen(args: argparse.Namespace) -> int:
    from nixcomply.server.verifying import generate_witness, write_key_pair

    out = Path(args.out)
    try:
        witness = generate_witness(args.name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    # Never over an existing file, not even one that appears while the key is written.
    write_key_pair(out, witness.private_text(), witness.public.vkey)
    print(witness.public.vkey)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from nixcomply.server.db import queries
    from nixcomply.server.db.migrate import current, head

    config = _config(args)
    engine = _engine(config)
    try:
        schema = current(engine)
        with engine.connect() as conn:
            scope = queries.Scope.msp()
            hosts = queries.list_hosts(conn, scope)
            incidents = queries.list_incidents(conn, scope)
            totals = queries.counts(conn, scope)
    finally:
        engine.dispose()
    data: StatusJson = {
        "database": config.describe_database(),
        "schema": schema,
        "schema_current": schema == head(),
        "hosts": [_host_json(h) for h in hosts],
        "totals": totals,
        "incidents": [
            {
                "site": i.site,
                "host": i.hostname,
                "kind": i.kind,
                "message": i.message,
                "count": i.count,
                "first_seen_at": _iso_utc(i.first_seen_at),
                "last_seen_at": _iso_utc(i.last_seen_at),
                "accepted_checkpoint": i.accepted_checkpoint.decode() if i.accepted_checkpoint else None,
                "presented_checkpoint": i.presented_checkpoint.decode("utf-8", "replace"),
            }
            for i in incidents
        ],
    }
    lines = [
        f"database {data['database']}, schema {schema}"
        + ("" if data["schema_current"] else f" (needs {head()})"),
        f"{len(hosts)} hosts, {totals['entries']} entries, {totals['checkpoints']} cosigned checkpoints",
    ]
    lines += [
        f"  {h.site}/{h.hostname}: {h.accepted_size} entries, last upload {_when(h.last_upload_at)}"
        + (" (revoked)" if h.revoked_at else "")
        + (f", {h.incidents} incident(s)" if h.incidents else "")
        for h in hosts
    ]
    lines.append(f"{len(incidents)} incident(s)" + (":" if incidents else ""))
    for i in incidents:
        lines.append(
            f"  {i.kind.upper()} {i.site}/{i.hostname} (x{i.count}, last {_when(i.last_seen_at)}): {i.message}"
        )
        accepted = i.accepted_checkpoint.decode().split("\n\n")[0] if i.accepted_checkpoint else "(none)"
        presented = i.presented_checkpoint.decode("utf-8", "replace").split("\n\n")[0]
        lines.append("    accepted:  " + accepted.replace("\n", " | "))
        lines.append("    presented: " + presented.replace("\n", " | "))
    # What a host presented (its checkpoint's lines, messages quoting them) is its own text.
    _print(args, data, [shown(line) for line in lines])
    return EXIT_OK if not incidents else 1


def _when(t: datetime | None) -> str:
    return "never" if t is None else f"{t.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


# -- parser --------------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """``nixcomply``'s common options (``--debug``, ``-v``) and ``--config``, on every verb."""
    common = argparse.ArgumentParser(add_help=False, parents=[COMMON])
    common.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help=f"the server's configuration (default: {DEFAULT_CONFIG})",
    )
    return common


def _json_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="nixcomply-server",
        description="The MSP's evidence server for nixcomply hosts.",
        epilog=HELP_EXIT_STATUS,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"nixcomply-server {__version__}")
    verbs = parser.add_subparsers(title="commands", metavar="COMMAND")

    def verb(sub: Any, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        return add_verb(sub, name, handler, help=help, common=common)

    serve = verb(verbs, "serve", cmd_serve, "serve the API (uvicorn)")
    serve.add_argument("--host", metavar="ADDRESS", help="address to listen on (default: listen.host)")
    serve.add_argument(
        "--port", type=int, metavar="PORT", help="port (0: any free one; default: listen.port)"
    )
    serve.add_argument("--migrate", action="store_true", help="migrate the schema first")
    verb(verbs, "migrate", cmd_migrate, "bring the database schema up to date")
    sites = add_group(verbs, "site", help="sites (clinics): add, list", common=common)
    _json_option(verb(sites, "add", cmd_site_add, "add a site")).add_argument("name", metavar="NAME")
    _json_option(verb(sites, "list", cmd_site_list, "list the sites"))
    hosts = add_group(verbs, "host", help="hosts: invite, list, revoke", common=common)
    invite = verb(hosts, "invite", cmd_host_invite, "print a single-use enrollment token for a host")
    invite.add_argument("--site", required=True, help="the site the host belongs to")
    invite.add_argument("--host", required=True, help="the host's name (its hostname)")
    invite.add_argument(
        "--ttl-hours", type=float, metavar="HOURS", help="validity (default: invite_ttl_hours, 24)"
    )
    _json_option(invite)
    listing = verb(hosts, "list", cmd_host_list, "list hosts and their upload state")
    listing.add_argument("--site", help="only this site's hosts")
    _json_option(listing)
    revoke = verb(hosts, "revoke", cmd_host_revoke, "revoke a host: its requests are refused from now on")
    revoke.add_argument("--site", required=True, help="the site the host belongs to")
    revoke.add_argument("--host", required=True, help="the host's name")
    _json_option(revoke)
    witness = add_group(verbs, "witness", help="the witness key that cosigns checkpoints", common=common)
    verb(witness, "key", cmd_witness_key, "print the witness verifier key (give it to auditors and hosts)")
    keygen = verb(witness, "keygen", cmd_witness_keygen, "create a witness key file (mode 0600) and FILE.pub")
    keygen.add_argument("--name", required=True, help="the witness name, e.g. msp.example/witness")
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="private key file to write")
    status = verb(
        verbs, "status", cmd_status, "hosts, totals and incidents (exit 1 when there are incidents)"
    )
    _json_option(status)
    return parser


def _translate(e: Exception) -> NixcomplyError | None:
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(e, OperationalError | InterfaceError):
        # never the URL or the driver's message: it may carry the user name
        return DatabaseUnavailable(
            "cannot reach the database",
            hint="check that PostgreSQL runs and that this user may connect "
            "(to the local database: `sudo -u nixcomply-server nixcomply-server ...`)",
        )
    return None


class DatabaseUnavailable(NixcomplyError):
    """Raised when the database cannot be reached (down, a wrong socket or host, refused
    credentials). Exit code 75, as for anything else to try again later; the message names
    no host, user or password."""

    exit_code = EXIT_TEMPFAIL


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), argv, prog="nixcomply-server", translate=_translate, quiet_internal=True)
