"""A private PostgreSQL cluster in a directory, for the demo, the benchmarks and the tests:
``initdb`` and ``pg_ctl`` of Debian's PostgreSQL 15 (or ``$NIXCOMPLY_PG_BIN``), listening
only on a unix socket inside the directory (no TCP port to collide with, nothing for other
users of the machine), run as the ``postgres`` user when started by root (initdb refuses
root). Never a production database: fsync is off.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nixcomply.core import process

PG_BIN_ENV: Final = "NIXCOMPLY_PG_BIN"
DEFAULT_PG_BIN: Final = Path("/usr/lib/postgresql/15/bin")
SUPERUSER: Final = "postgres"


def pg_bin() -> Path:
    return Path(os.environ.get(PG_BIN_ENV, DEFAULT_PG_BIN))


@dataclass(frozen=True)
class PrivateCluster:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def os_user(self) -> str | None:
        return SUPERUSER if os.geteuid() == 0 else None

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={self.socket_dir}"

    def _argv(self, *argv: str) -> list[str]:
        return ["runuser", "-u", self.os_user, "--", *argv] if self.os_user else list(argv)

    def init(self) -> None:
        """Create the cluster (the directory must not hold one yet)."""
        if not (pg_bin() / "initdb").exists():
            raise FileNotFoundError(f"{pg_bin() / 'initdb'}: install PostgreSQL (apt-get install postgresql)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.os_user:
            entry = pwd.getpwnam(self.os_user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        process.run(
            self._argv(
                str(pg_bin() / "initdb"),
                "-D",
                str(self.data),
                "--auth=trust",
                "-U",
                SUPERUSER,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ),
            timeout=180,
        )
        # in the cluster's own configuration, so that a bare `pg_ctl -D DATA start` (what
        # the demo tells its reader to run) starts it exactly as start() does
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# nixcomply.server.devdb\n{self.settings()}")

    def settings(self) -> str:
        return "".join(
            f"{name} = {value}\n"
            for name, value in (
                ("listen_addresses", "''"),
                ("unix_socket_directories", f"'{self.socket_dir}'"),
                ("fsync", "off"),
                ("full_page_writes", "off"),
                ("synchronous_commit", "off"),
                ("max_connections", "200"),
            )
        )

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def start_argv(self) -> list[str]:
        return self._argv(str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start")

    def stop_argv(self, mode: str = "fast") -> list[str]:
        return self._argv(str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def start(self) -> None:
        process.run(self.start_argv(), timeout=180)

    def stop(self, mode: str = "fast") -> None:
        process.run(self.stop_argv(mode), check=False, timeout=180)

    def running(self) -> bool:
        result = process.run(
            self._argv(str(pg_bin() / "pg_ctl"), "-D", str(self.data), "status"), check=False, timeout=60
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        argv = [str(pg_bin() / "psql"), "-h", str(self.socket_dir), "-U", SUPERUSER, "-d", database]
        return process.run([*argv, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql], timeout=120).stdout
