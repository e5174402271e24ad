"""A real PostgreSQL for the server's tests: one throwaway cluster per test session (per
xdist worker: each worker is its own session), listening on a unix socket in its own
temporary directory only (no TCP port to collide), and a fresh database per test cloned
from a migrated template (``CREATE DATABASE ... TEMPLATE``), which takes milliseconds
instead of a migration."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from sqlalchemy import create_engine

from nixcomply.server.db.migrate import upgrade
from nixcomply.server.devdb import PrivateCluster, pg_bin

TEMPLATE: Final = "nixcomply_template"
_counter = itertools.count()


Cluster = PrivateCluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    if not (pg_bin() / "initdb").exists():
        pytest.fail("PostgreSQL 15 is required (apt-get install postgresql; `make test` installs it)")
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="nixcomply-pg-")))
    try:
        cluster.init()
        cluster.start()
        _make_template(cluster)
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(cluster.root, ignore_errors=True)


def _make_template(cluster: Cluster) -> None:

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
