"""Shared fixtures (the plugin is loaded with -p in setup.cfg; it also gives `fresh_topology`
and `split_topology`): real PostgreSQL databases (API + two cells), migrated, per session.

The servers come from the project's pytest plugin (reqspec_repo.testing.pytest_plugin):
REQSPEC_TEST_DSN, else testcontainers, else an embedded server it starts itself.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import build_topology

from reqspec_repo import RequestSpecRepository, SpecStore, Topology
from reqspec_repo.testing.pytest_plugin import ServerHandle


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
