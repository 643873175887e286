"""Shared fixtures (the plugin is loaded with -p in setup.cfg): real PostgreSQL databases (API + two cells), migrated, per session.

The servers come from the project's pytest plugin (reqspec_repo.testing.pytest_plugin):
REQSPEC_TEST_DSN, else testcontainers, else an embedded server it starts itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from reqspec_repo._store.config import API, Settings, Topology
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.migrate import migrate_topology
from reqspec_repo._store.repository import RequestSpecRepository
from reqspec_repo.testing.pytest_plugin import ServerHandle

CELLS = ("cell1", "cell2")


def build_topology(
    api_server: ServerHandle,
    cell_server: ServerHandle | None = None,
    *,
    settings: Settings | None = None,
    migrate: bool = True,
) -> tuple[Topology, Callable[[], None]]:
    """Create an API database and two cell databases (cells on ``cell_server`` when given),
    migrate them, and return the topology with a function that drops them all."""
    suffix = uuid.uuid4().hex[:10]
    cell_server = cell_server or api_server
    made: list[tuple[ServerHandle, str]] = []
    api_name = f"rs_api_{suffix}"
    api_server.create_database(api_name)
    made.append((api_server, api_name))
    cells = {}
    for cell in CELLS:
        name = f"rs_{cell}_{suffix}"
        cell_server.create_database(name)
        made.append((cell_server, name))
        cells[cell] = cell_server.dsn(name)
    topology = Topology.from_dsns(api_server.dsn(api_name), cells, settings)
    if migrate:
        migrate_topology(topology)

    def drop() -> None:
        for server, name in made:
            try:
                server.drop_database(name)
            except Exception:  # a test may have killed the server; its data dir goes anyway
                pass

    return topology, drop


@pytest.fixture(scope="session")
def topology(pg_server: ServerHandle) -> Iterator[Topology]:
    """API + cell1 + cell2 on one server, migrated; shared by tests that use fresh uuids."""
    topo, drop = build_topology(pg_server)
    yield topo
    drop()


@pytest.fixture(scope="session")
def repo(topology: Topology) -> Iterator[RequestSpecRepository]:
    with RequestSpecRepository.from_topology(topology) as repository:
        yield repository


@pytest.fixture(scope="module")
def store(topology: Topology) -> Iterator[SpecStore]:
    """A location-aware store over whichever `topology` the test module uses."""
    with RequestSpecRepository.from_topology(topology) as repository:
        yield SpecStore(repository)


@pytest.fixture
def fresh_topology(pg_server: ServerHandle) -> Iterator[Callable[..., Topology]]:
    """Factory for an empty, migrated topology owned by one test."""
    drops: list[Callable[[], None]] = []

    def factory(**kwargs: Any) -> Topology:
        topo, drop = build_topology(pg_server, **kwargs)
        drops.append(drop)
        return topo

    yield factory
    for drop in drops:
        drop()


@pytest.fixture
def split_topology(pg_server: ServerHandle, pg_server_b: ServerHandle) -> Iterator[Topology]:
    """API database on one server, the cells on another server process (as in production)."""
    topo, drop = build_topology(pg_server, pg_server_b)
    yield topo
    drop()


def run_sql(topology: Topology, database: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Raw SQL against one database of a topology, for planting and inspecting rows."""
    with psycopg.connect(topology.database(database).dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []


__all__ = ["API", "CELLS", "build_topology", "run_sql"]
