"""Shared fixtures (the plugin is loaded with -p in setup.cfg; it also gives `fresh_topology`
and `split_topology`): real PostgreSQL databases (API + two cells), migrated, per session.

The servers come from the project's pytest plugin (reqspec_repo.testing.pytest_plugin):
REQSPEC_TEST_DSN, else testcontainers, else an embedded server it starts itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import build_topology
from hypothesis import HealthCheck, settings

from reqspec_repo import RequestSpecRepository, SpecStore, Topology
from reqspec_repo.testing.pytest_plugin import ServerHandle

# The CPU is shared and its speed varies: no per-example deadline for property tests and no
# "generation is slow" health check (both are timed assertions in disguise). Each test's
# @settings only sets what it needs beyond this.
settings.register_profile("reqspec", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("reqspec")


@pytest.fixture(scope="session")
def topology(pg_server: ServerHandle, via: Any) -> Iterator[Topology]:
    """API + cell1 + cell2 on one server, migrated; shared by tests that use fresh uuids
    (through PgBouncer too, in modules marked ``both_paths``)."""
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
