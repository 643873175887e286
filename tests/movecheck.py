"""The invariant every move test checks, read straight from the databases."""

from __future__ import annotations

from typing import Mapping

import orjson
from conftest import run_sql

from reqspec_repo import codec
from reqspec_repo.config import Topology
from reqspec_repo.locations import SpecStore
from reqspec_repo.model import RequestSpec, without_per_operation
from reqspec_repo.recovery import verify


def rows_everywhere(topology: Topology, instance_uuid: str) -> list[tuple[str, str, bytes]]:
    found = []
    for name in topology.database_names:
        for state, spec in run_sql(
            topology, name,
            "SELECT move_state, spec::text FROM request_specs WHERE instance_uuid = %s",
            [instance_uuid],
        ):
            found.append((name, state, spec.encode()))
    return found


def assert_invariant(store: SpecStore, expected: Mapping[str, RequestSpec]) -> None:
    """Every spec live in exactly one database, equal to the last acknowledged write, with
    its location pointing at it and no move in progress; verify() finds nothing."""
    topology = store.topology
    for key, spec in expected.items():
        rows = rows_everywhere(topology, key)
        assert len(rows) == 1, f"{key}: rows {[(r[0], r[1]) for r in rows]}"
        database, state, doc = rows[0]
        assert state == "live", f"{key}: {state} in {database}"
        assert codec.decode(orjson.loads(doc), instance_uuid=key) == without_per_operation(spec)
        loc = run_sql(
            topology, "api",
            "SELECT database_name, move_id FROM spec_locations WHERE instance_uuid = %s", [key],
        )
        assert loc == [(database, None)], f"{key}: location {loc}, row in {database}"
        assert store.get(key).spec == without_per_operation(spec)
    report = verify(store)
    assert report.ok, report.problems
