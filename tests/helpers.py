"""Helpers shared by the test modules (fixtures live in conftest.py and the plugin)."""

from __future__ import annotations

from typing import Any

import psycopg

from reqspec_repo import API, Topology
from reqspec_repo.testing.topology import CELLS, build_topology


def run_sql(topology: Topology, database: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Raw SQL against one database of a topology, for planting and inspecting rows."""
    with psycopg.connect(topology.database(database).dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode(), params)
        return cur.fetchall() if cur.description else []


__all__ = ["API", "CELLS", "build_topology", "run_sql"]
