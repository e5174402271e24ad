"""A real PostgreSQL for the server's tests: one throwaway cluster per test session (per
xdist worker), listening on a unix socket in its own temporary directory only (no TCP
port to collide), and a fresh database per test cloned from a migrated template
(``CREATE DATABASE ... TEMPLATE``), which takes milliseconds instead of a migration."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

PG_BIN: Final = Path("/usr/lib/postgresql/15/bin")
TEMPLATE: Final = "nixcomply_template"
_counter = itertools.count()


@dataclass(frozen=True)
class Cluster:
    root: Path
    data: Path
    socket_dir: Path
    user: str | None  # the OS user the server runs as (None: this process's user)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}"

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> None:
        options = (
            f"-c listen_addresses='' -k {self.socket_dir} -c fsync=off -c full_page_writes=off "
            "-c synchronous_commit=off -c max_connections=200"
        )
        self.ctl("-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self.ctl("-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster, the way a crashed server goes away."""
        pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 9)

    def psql(self, sql: str, database: str = "postgres") -> str:
        argv = [str(PG_BIN / "psql"), "-h", str(self.socket_dir), "-U", "postgres", "-d", database]
        argv += ["-v", "ON_ERROR_STOP=1", "-At", "-c", sql]
        return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def _make_cluster() -> Cluster:
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 is required (apt-get install postgresql; `make test` installs it)")
    root = Path(tempfile.mkdtemp(prefix="nixcomply-pg-"))
    user: str | None = None
    if os.geteuid() == 0:  # initdb refuses to run as root: the cluster belongs to postgres
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(root, root / "data", root / "sock", user)
    argv = [str(PG_BIN / "initdb"), "-D", str(cluster.data), "--auth=trust", "-U", "postgres", "--no-sync"]
    argv += ["-E", "UTF8", "--locale=C.UTF-8"]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
        subprocess.run(["runuser", "-u", user, "--", "mkdir", str(cluster.socket_dir)], check=True)
    else:
        cluster.socket_dir.mkdir()
    subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    cluster = _make_cluster()
    try:
        _make_template(cluster)
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(cluster.root, ignore_errors=True)


def _make_template(cluster: Cluster) -> None:
    from sqlalchemy import create_engine

    from nixcomply.server.db.migrate import upgrade

    cluster.psql(f"CREATE DATABASE {TEMPLATE}")
    engine = create_engine(cluster.url(TEMPLATE))
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh, migrated database of its own for this test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    pg_cluster.psql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield pg_cluster.url(name)
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_empty_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh database without any schema (for the migration tests)."""
    name = f"e_{os.getpid()}_{next(_counter)}"
    pg_cluster.psql(f"CREATE DATABASE {name}")
    yield pg_cluster.url(name)
    pg_cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
