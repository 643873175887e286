"""Shared fixtures (the plugin is loaded with -p in setup.cfg): real PostgreSQL databases (API + two cells), migrated, per session.

The servers come from the project's pytest plugin (reqspec_repo.testing.pytest_plugin):
REQSPEC_TEST_DSN, else testcontainers, else an embedded server it starts itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import psycopg
import pytest

from reqspec_repo._store.config import API, Settings, Topology
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.migrate import migrate_topology
from reqspec_repo._store.repository import RequestSpecRepository
from reqspec_repo.testing.pytest_plugin import ServerHandle

CELLS = ("cell1", "cell2")
#: How the library reaches PostgreSQL. Modules marked ``both_paths`` run every test both
#: ways; the others directly.
CONNECTION_PATHS = ("direct", "pgbouncer")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "connection_path" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_paths"):
        metafunc.parametrize("connection_path", CONNECTION_PATHS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def connection_path(request: pytest.FixtureRequest) -> str:
    """``direct``, or ``pgbouncer`` (through a real PgBouncer in transaction mode)."""
    return str(getattr(request, "param", "direct"))


@pytest.fixture(scope="session")
def via(connection_path: str, pgbouncers: Any) -> Callable[[Any], Any] | None:
    """For build_topology: the PgBouncer in front of a server, or None (direct)."""
    if connection_path == "direct":
        return None
    return pgbouncers.front


def build_topology(
    api_server: ServerHandle,
    cell_server: ServerHandle | None = None,
    *,
    settings: Settings | None = None,
    migrate: bool = True,
    via: Callable[[Any], Any] | None = None,
) -> tuple[Topology, Callable[[], None]]:
    """Create an API database and two cell databases (cells on ``cell_server`` when given),
    migrate them, and return the topology with a function that drops them all. With
    ``via`` (server -> PgBouncer), the topology reaches every database through that
    server's PgBouncer, with ``pooler = "transaction"`` (migrations still go direct)."""
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
    if via is not None:
        pooled = {cell: via(cell_server).dsn(f"rs_{cell}_{suffix}") for cell in CELLS}
        topology = Topology.from_dsns(
            via(api_server).dsn(api_name), pooled, attrs.evolve(topology.settings, pooler="transaction")
        )

    def drop() -> None:
        for server, name in made:
            try:
                server.drop_database(name)
            except Exception:  # a test may have killed the server; its data dir goes anyway
                pass

    return topology, drop


@pytest.fixture(scope="session")
def topology(pg_server: ServerHandle, via: Any) -> Iterator[Topology]:
    """API + cell1 + cell2 on one server, migrated; shared by tests that use fresh uuids."""
    topo, drop = build_topology(pg_server, via=via)
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
def fresh_topology(pg_server: ServerHandle, via: Any) -> Iterator[Callable[..., Topology]]:
    """Factory for an empty, migrated topology owned by one test."""
    drops: list[Callable[[], None]] = []

    def factory(**kwargs: Any) -> Topology:
        kwargs.setdefault("via", via)
        topo, drop = build_topology(pg_server, **kwargs)
        drops.append(drop)
        return topo

    yield factory
    for drop in drops:
        drop()


@pytest.fixture
def split_topology(pg_server: ServerHandle, pg_server_b: ServerHandle, via: Any) -> Iterator[Topology]:
    """API database on one server, the cells on another server process (as in production)."""
    topo, drop = build_topology(pg_server, pg_server_b, via=via)
    yield topo
    drop()


def run_sql(topology: Topology, database: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Raw SQL against one database of a topology, for planting and inspecting rows."""
    with psycopg.connect(topology.database(database).dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []


__all__ = ["API", "CELLS", "build_topology", "run_sql"]
