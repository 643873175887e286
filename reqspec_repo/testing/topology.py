"""Migrated throwaway topologies (an API database and cells) for integration tests.

Loaded with the plugin (``-p reqspec_repo.testing.pytest_plugin``). Fixtures:

``fresh_topology`` (function)
    ``fresh_topology(settings=None, migrate=True) -> Topology``: an empty, migrated API
    database and cells ``cell1`` and ``cell2`` on ``pg_server``, dropped at teardown.
``split_topology`` (function)
    The same with the cells on a second server process (``pg_server_b``), as in production.

:func:`build_topology` does the same for fixtures of other scopes.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .._store.config import Settings, Topology
from .._store.migrate import migrate_topology

CELLS = ("cell1", "cell2")


def build_topology(
    api_server: Any,
    cell_server: Any | None = None,
    *,
    settings: Settings | None = None,
    migrate: bool = True,
    cells: tuple[str, ...] = CELLS,
) -> tuple[Topology, Callable[[], None]]:
    """Create an API database and cell databases (on ``cell_server`` when given), migrate
    them, and return the topology with a function that drops them all."""
    suffix = uuid.uuid4().hex[:10]
    cell_server = cell_server or api_server
    made: list[tuple[Any, str]] = []
    api_name = f"rs_api_{suffix}"
    api_server.create_database(api_name)
    made.append((api_server, api_name))
    dsns = {}
    for cell in cells:
        name = f"rs_{cell}_{suffix}"
        cell_server.create_database(name)
        made.append((cell_server, name))
        dsns[cell] = cell_server.dsn(name)
    topology = Topology.from_dsns(api_server.dsn(api_name), dsns, settings)
    if migrate:
        migrate_topology(topology)

    def drop() -> None:
        for server, name in made:
            # A test may have killed the server; its data directory goes anyway.
            with contextlib.suppress(Exception):
                server.drop_database(name)

    return topology, drop


@pytest.fixture
def fresh_topology(pg_server: Any) -> Iterator[Callable[..., Topology]]:
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
def split_topology(pg_server: Any, pg_server_b: Any) -> Iterator[Topology]:
    """API database on one server, the cells on another server process (as in production)."""
    topo, drop = build_topology(pg_server, pg_server_b)
    yield topo
    drop()
