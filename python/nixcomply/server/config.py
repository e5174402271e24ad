"""The server's configuration: one JSON (or YAML) file, ``/etc/nixcomply-server/server.json``,
validated with ``extra="forbid"``, plus the environment for secrets.

Secrets never sit in the file (the NixOS module writes it into the Nix store): the
database URL comes from ``$NIXCOMPLY_SERVER_DATABASE_URL`` when it carries a password (a
URL in the file is refused if it has one), and the witness key from systemd's
``$CREDENTIALS_DIRECTORY/nixcomply-witness-key`` or ``witness.key_file``. Neither is ever
logged: :meth:`ServerConfig.describe` shows the database only without its credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from psycopg import ProgrammingError
from psycopg.conninfo import make_conninfo
from pydantic import Field
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from nixcomply.core.yamlsource import load_model
from nixcomply.errors import InputError, UsageError
from nixcomply.model.base import StrictModel
from nixcomply.server.verifying import Witness, read_witness_key

DEFAULT_CONFIG: Final = Path("/etc/nixcomply-server/server.json")
DATABASE_URL_ENV: Final = "NIXCOMPLY_SERVER_DATABASE_URL"
WITNESS_CREDENTIAL: Final = "nixcomply-witness-key"
DATABASE_CREDENTIAL: Final = "nixcomply-server-database-url"
CREDENTIALS_ENV: Final = "CREDENTIALS_DIRECTORY"
# Connection parameters (libpq's, as SQLAlchemy passes a URL's query string on) that carry
# a secret or say where one is, or name the user: never shown, and never in the file.
SECRET_QUERY_KEYS: Final = frozenset({"password", "passfile", "sslpassword", "user"})
PASSWORD_QUERY_KEYS: Final = frozenset({"password", "passfile", "sslpassword"})


class Listen(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535, description="0: any free port (printed at start)")


class Database(StrictModel):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL without a password, e.g. postgresql+psycopg:///nixcomply?host=/run/postgresql",
    )
    pool_size: int = Field(default=10, ge=1, le=200)
    max_overflow: int = Field(default=10, ge=0, le=200)
    pool_timeout: float = Field(default=10, gt=0, le=300)


class WitnessSettings(StrictModel):
    name: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\s+]+$", description="the witness key's name"
    )
    key_file: Path | None = Field(default=None, description=f"used when ${CREDENTIALS_ENV} is not set")


class Bucket(StrictModel):
    """A token bucket: ``burst`` requests at once, ``per_second`` on average."""

    per_second: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class RateLimits(StrictModel):
    """Per-identity rate limits (``nixcomply.server.ratelimit``); over them a request is
    answered 429 with ``Retry-After``."""

    enabled: bool = True
    client: Bucket = Field(
        default_factory=lambda: Bucket(per_second=50, burst=200),
        description="every request, by client address (behind a reverse proxy: the whole fleet's rate)",
    )
    host: Bucket = Field(
        default_factory=lambda: Bucket(per_second=1, burst=60),
        description="authenticated requests, by host (a pass is a poll and a few uploads every 15 minutes)",
    )


class ServerConfig(StrictModel):
    listen: Listen = Field(default_factory=Listen)
    database: Database = Field(default_factory=Database)
    witness: WitnessSettings
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    clock_skew_seconds: int = Field(default=300, ge=1, le=3600)
    invite_ttl_hours: float = Field(default=24, gt=0, le=24 * 30)
    migrate_on_start: bool = False
    rate_limit: RateLimits = Field(default_factory=RateLimits)

    def database_url(self) -> URL:
        """From ``$NIXCOMPLY_SERVER_DATABASE_URL``, else the systemd credential
        ``nixcomply-server-database-url``, else ``database.url``."""
        where, text = f"${DATABASE_URL_ENV}", os.environ.get(DATABASE_URL_ENV)
        directory = os.environ.get(CREDENTIALS_ENV)
        if not text and directory and (Path(directory) / DATABASE_CREDENTIAL).exists():
            where = f"the credential {DATABASE_CREDENTIAL}"
            text = (Path(directory) / DATABASE_CREDENTIAL).read_text().strip()
        if not text:
            where, text = "database.url", self.database.url
        if not text:
            raise UsageError(
                "no database URL",
                hint=f"set database.url in the configuration, or ${DATABASE_URL_ENV}, or the credential {DATABASE_CREDENTIAL}",
            )
        try:
            url = make_url(text)
        except (ValueError, ArgumentError):
            raise UsageError(f"{where} is not a database URL") from None
        _check_parameters(url, where)
        return url

    def describe_database(self) -> str:
        """The database URL for logs and messages: no user name, no password (libpq also
        takes them, and a password file, from the query string: those go too)."""
        url = self.database_url()
        query = {k: v for k, v in url.query.items() if k.lower() not in SECRET_QUERY_KEYS}
        bare = URL.create(url.drivername, host=url.host, port=url.port, database=url.database, query=query)
        return bare.render_as_string(hide_password=True)

    def witness_key(self) -> Witness:
        directory = os.environ.get(CREDENTIALS_ENV)
        path = Path(directory) / WITNESS_CREDENTIAL if directory else self.witness.key_file
        if path is None:
            raise UsageError(
                "no witness key",
                hint=f"set witness.key_file or LoadCredential={WITNESS_CREDENTIAL}:... "
                "(create one with `nixcomply-server witness keygen`)",
            )
        try:
            witness = read_witness_key(path)
        except FileNotFoundError:
            raise InputError.single(path, "witness key not found") from None
        except (OSError, ValueError) as e:
            raise InputError.single(path, f"witness key: {e}") from None
        if witness.name != self.witness.name:
            raise InputError.single(
                path, f"the key is named {witness.name!r}, the configuration says {self.witness.name!r}"
            )
        return witness


def _check_parameters(url: URL, where: str) -> None:
    """Every query parameter is one libpq knows (one it does not was an internal error at
    the first connection); the message names the parameter, never its value."""
    for key in url.query:
        try:
            make_conninfo("", **{key: "x"})
        except ProgrammingError:
            raise UsageError(
                f"{where}: {key!r} is not a PostgreSQL connection parameter",
                hint="see the libpq documentation, 'Parameter Key Words' (names are case-sensitive)",
            ) from None


def load_config(path: Path) -> ServerConfig:

    if not path.exists():
        raise InputError.single(
            path,
            "server configuration not found",
            hint="the NixOS module writes it (services.nixcomply-server.enable = true); "
            "elsewhere pass --config FILE",
        )
    config, source = load_model(ServerConfig, path)
    # Checked here, not in a pydantic validator, whose error would echo the URL.
    if config.database.url is not None:
        loc = ("database", "url")
        try:
            url = make_url(config.database.url)
        except (ValueError, ArgumentError):
            raise InputError([source.problem(loc, "not a database URL")]) from None
        if url.password or PASSWORD_QUERY_KEYS & {k.lower() for k in url.query}:
            message = f"a URL with a password belongs in ${DATABASE_URL_ENV}, not in the file"
            raise InputError([source.problem(loc, message)])
    return config
