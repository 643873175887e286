"""Helpers shared by the test modules (fixtures live in conftest.py and the plugin)."""

from __future__ import annotations

from typing import Any

import attrs
import psycopg

from reqspec_repo import API, RequestSpec, Topology
from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._spec import codec
from reqspec_repo.testing.topology import CELLS, build_topology


def run_sql(topology: Topology, database: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Raw SQL against one database of a topology, for planting and inspecting rows."""
    with psycopg.connect(topology.database(database).dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []


def spec_of_size(size: int) -> RequestSpec:
    """A spec whose encoded document is exactly ``size`` bytes."""
    spec = attrs.evolve(sample_spec(), scheduler_hints={"blob": ("",)})
    base = len(codec.encode(spec, max_bytes=1 << 30))
    spec = attrs.evolve(spec, scheduler_hints={"blob": ("x" * (size - base),)})
    assert len(codec.encode(spec, max_bytes=1 << 30)) == size
    return spec


__all__ = ["API", "CELLS", "build_topology", "run_sql", "spec_of_size"]
