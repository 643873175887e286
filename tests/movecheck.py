"""The invariant every move test checks, read straight from the databases."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from helpers import run_sql

from reqspec_repo._moving.recovery import verify
from reqspec_repo._spec import codec
from reqspec_repo._spec.model import RequestSpec, without_per_operation
from reqspec_repo._store.config import Topology
from reqspec_repo._store.locations import SpecStore


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
    keys = list(expected)
    rows: dict[str, list[tuple[str, str, bytes]]] = {k: [] for k in keys}
    for name in topology.database_names:
        for key, state, spec in run_sql(
            topology, name,
            "SELECT instance_uuid::text, move_state, spec::text FROM request_specs"
            " WHERE instance_uuid = ANY(%s::uuid[])",
            [keys],
        ):
            rows[key].append((name, state, spec.encode()))
    locations = {
        key: (db, move_id)
        for key, db, move_id in run_sql(
            topology, "api",
            "SELECT instance_uuid::text, database_name, move_id FROM spec_locations"
            " WHERE instance_uuid = ANY(%s::uuid[])",
            [keys],
        )
    }
    for key, spec in expected.items():
        found = rows[key]
        assert len(found) == 1, f"{key}: rows {[(r[0], r[1]) for r in found]}"
        database, state, doc = found[0]
        assert state == "live", f"{key}: {state} in {database}"
        assert codec.decode(orjson.loads(doc), instance_uuid=key) == without_per_operation(spec)
        assert locations.get(key) == (database, None), f"{key}: location {locations.get(key)}, row in {database}"
    for key in keys[:5]:  # and the location-aware read agrees
        assert store.get(key).spec == without_per_operation(expected[key])
    report = verify(store)
    assert report.ok, report.problems
