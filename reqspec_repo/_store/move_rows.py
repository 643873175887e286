"""The rows a move or recover() works on: ``request_specs`` rows in motion in any
database, and the API database's location records at and after a move's commit point.

Each method is one statement (one round trip) on one pooled connection, checked out and
given back inside the call, so the protocol in :mod:`reqspec_repo._moving` never holds a
connection while it waits for another.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import psycopg

from .config import API
from .documents import as_jsonb
from .pools import Connections
from .queries import Query, query
from .roundtrips import apply_timeouts, bounded_block
from .uuid_arrays import UuidArray

_SEAL_OUTGOING = query("request_specs", "seal_outgoing")
_COPY_INCOMING_IN = query("request_specs", "copy_incoming_in")
_UPSERT_INCOMING = query("request_specs", "upsert_incoming")
_DELETE_INCOMING = query("request_specs", "delete_incoming")
_UNSEAL_OUTGOING = query("request_specs", "unseal_outgoing")
_PROMOTE_INCOMING = query("request_specs", "promote_incoming")
_DELETE_OUTGOING = query("request_specs", "delete_outgoing")
_GET_ROW_STATES = query("request_specs", "get_row_states")
_ROWS_IN_MOVE = query("request_specs", "list_rows_in_move")
_RANGE_ROW_STATES = query("request_specs", "range_row_states")
_ESTIMATE_ROWS = query("request_specs", "estimate_rows")
_COUNT_ALL_ROWS = query("request_specs", "count_all_rows")
_SET_LIVE_IF_SEEN = query("request_specs", "set_row_live_if_seen")
_DELETE_IF_SEEN = query("request_specs", "delete_row_if_seen")
_DELETE_ANY_ROW = query("request_specs", "delete_any_row")
_RELAX_DURABILITY = query("_session", "relax_commit_durability")

_FLIP_TO_TARGET = query("spec_locations", "flip_locations_to_target")
_CLEAR_MOVES = query("spec_locations", "clear_moves")
_RELEASE_LEASES = query("move_leases", "release_leases")
_ADOPT_LOCATION = query("spec_locations", "adopt_location")
_REPOINT_LOCATION = query("spec_locations", "repoint_location")
_DELETE_LOCATION = query("spec_locations", "delete_location")
_LOCATIONS_IN_MOVE = query("spec_locations", "list_locations_in_move")
_RANGE_LOCATIONS = query("spec_locations", "range_locations")
_ESTIMATE_LOCATIONS = query("spec_locations", "estimate_locations")
_COUNT_LOCATIONS = query("spec_locations", "count_locations")


#: The request_specs columns a move carries from the source row to the target's copy
#: (``seal_outgoing`` returns them, ``copy_incoming_in`` and ``upsert_incoming`` write
#: them, :class:`SealedRow` holds them), and those each database keeps for itself. A
#: column added to the table must join one of the two: tests/test_moves.py checks the
#: table against them.
MOVED_COLUMNS = ("instance_uuid", "spec", "schema_version", "version", "operation")
LOCAL_COLUMNS = ("move_state", "move_id", "created_at", "updated_at")


@attrs.frozen
class SealedRow:
    """A source row sealed by a move: what the target's copy is made of."""

    instance_uuid: str = attrs.field(converter=str)
    spec: bytes
    schema_version: int
    version: int
    operation: bytes | None = None  # the operation in flight (rarely any) moves with the spec


@attrs.frozen
class RowState:
    """One ``request_specs`` row of an instance in one database, any state."""

    database: str
    state: str  # live | incoming | outgoing
    move_id: str | None
    version: int


@attrs.frozen
class PackedRows:
    """The rows of one uuid range of one database in one move state: ``n`` instance uuids
    packed as 16-byte values into ``uuids`` (one value per row, no object per row)."""

    state: str
    n: int
    uuids: bytes


@attrs.frozen
class PackedLocations:
    """The location records of one uuid range naming one database, with (``settled``) or
    without a move id: ``n`` instance uuids packed as 16-byte values."""

    database: str
    settled: bool
    n: int
    uuids: bytes


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _uuids(rows: Iterable[Any]) -> list[str]:
    return [str(r.instance_uuid) for r in rows]


class MoveRows:
    """Moves' and recover()'s statements, by database name."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.lease_ms = connections.topology.settings.move_lease_ms

    # -- request_specs rows in motion (any database) --------------------------------------

    def seal(self, database: str, instance_uuids: Sequence[str], move_id: str) -> list[SealedRow]:
        """Step 1: the live rows become 'outgoing' and come back to be copied."""
        with self.connections.connection(database) as conn:
            rows = _SEAL_OUTGOING.many(conn, {"instance_uuids": UuidArray(instance_uuids), "move_id": move_id})
        return [SealedRow(r.instance_uuid, r.spec, r.schema_version, r.version, r.operation) for r in rows]

    def copy_in(self, database: str, rows: Sequence[SealedRow], move_id: str) -> set[str]:
        """Step 2: hidden 'incoming' copies; returns the instances copied (one holding a
        live row there already is not)."""
        with self.connections.connection(database) as conn:
            try:
                _copy_incoming(conn, rows, move_id)
                return {r.instance_uuid for r in rows}
            except psycopg.errors.UniqueViolation:
                pass  # one of them has a row here already: nothing was written; row by row
            copied = _UPSERT_INCOMING.many(conn, {
                "instance_uuids": UuidArray(r.instance_uuid for r in rows),
                "specs": [as_jsonb(r.spec) for r in rows],
                "schema_versions": [r.schema_version for r in rows],
                "versions": [r.version for r in rows],
                "operations": [None if r.operation is None else as_jsonb(r.operation) for r in rows],
                "move_id": move_id,
            })
        return set(_uuids(copied))

    def undo_copy(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Roll back step 2: this move's incoming copies go."""
        self._exec(database, _DELETE_INCOMING, {"instance_uuids": UuidArray(instance_uuids), "move_id": move_id})

    def unseal(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Roll back step 1: this move's outgoing rows take writes again."""
        self._exec(database, _UNSEAL_OUTGOING, {"instance_uuids": UuidArray(instance_uuids), "move_id": move_id})

    def promote(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Cleanup: this move's incoming copies become live (no WAL flush wait)."""
        self._relaxed(database, _PROMOTE_INCOMING, {"instance_uuids": UuidArray(instance_uuids), "move_id": move_id})

    def drop_outgoing(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Cleanup: this move's outgoing rows go (no WAL flush wait)."""
        self._relaxed(database, _DELETE_OUTGOING, {"instance_uuids": UuidArray(instance_uuids), "move_id": move_id})

    def states(self, database: str, instance_uuids: Sequence[str]) -> dict[str, list[RowState]]:
        """Every row of these instances in one database, any state."""
        found: dict[str, list[RowState]] = {}
        with self.connections.connection(database) as conn:
            for r in _GET_ROW_STATES.many(conn, {"instance_uuids": UuidArray(instance_uuids)}):
                found.setdefault(str(r.instance_uuid), []).append(
                    RowState(database, r.move_state, _opt(r.move_id), r.version)
                )
        return found

    def rows_in_move(self, database: str) -> list[str]:
        """Instances with a row carrying a move id here (through the partial index)."""
        with self.connections.connection(database) as conn:
            return _uuids(_ROWS_IN_MOVE.many(conn))

    def range_states(self, database: str, low: str, high: str) -> list[PackedRows]:
        """The rows of one inclusive uuid range, packed per move state."""
        with self.connections.connection(database) as conn:
            rows = _RANGE_ROW_STATES.many(conn, {"low": low, "high": high})
        return [PackedRows(r.move_state, r.n, bytes(r.uuids)) for r in rows]

    def estimate_rows(self, database: str) -> int:
        """About how many rows the table holds (the planner's estimate; counted when the
        table was never analyzed)."""
        with self.connections.connection(database) as conn:
            estimate = int(_ESTIMATE_ROWS.scalar(conn) or 0)
            if estimate < 0:
                estimate = int(_COUNT_ALL_ROWS.scalar(conn) or 0)
        return estimate

    def make_live_if_seen(self, instance_uuid: str, row: RowState) -> None:
        """recover(): the row becomes the live copy, if still as seen."""
        self._exec(row.database, _SET_LIVE_IF_SEEN, _seen(instance_uuid, row))

    def delete_if_seen(self, instance_uuid: str, row: RowState) -> None:
        """recover(): a leftover copy goes, if still as seen."""
        self._exec(row.database, _DELETE_IF_SEEN, _seen(instance_uuid, row))

    def delete_any(self, database: str, instance_uuid: str) -> None:
        """A destroy: the instance's row in one database goes, whatever its state."""
        self._exec(database, _DELETE_ANY_ROW, {"instance_uuid": instance_uuid})

    # -- location records (API database) --------------------------------------------------

    def commit(self, instance_uuids: Sequence[str], source: str, target: str, move_id: str) -> list[str]:
        """Step 3, the commit point: flip the locations from ``source`` to ``target``,
        only where the mover still holds an unexpired lease (renewed for the cleanup);
        returns the instances committed. The target's copies, still carrying the move
        id, are from then on the committed ones."""
        with self.connections.connection(API) as api:
            return _uuids(_FLIP_TO_TARGET.many(api, {
                "instance_uuids": UuidArray(instance_uuids), "source": source, "target": target,
                "move_id": move_id, "lease_ms": self.lease_ms,
            }))

    def finish(self, instance_uuids: Sequence[str], move_id: str) -> None:
        """recover(), for a move an earlier release committed by marking its locations:
        the locations forget the move, its leases go."""
        self._relaxed(API, _CLEAR_MOVES, {"instance_uuids": UuidArray(instance_uuids), "move_id": move_id})

    def drop_outgoing_and_release(self, source: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """The last cleanup step: :meth:`drop_outgoing` in ``source``, then the move's
        leases go; in one transaction when ``source`` is the API database (both
        statements run there: one round trip and one commit fewer)."""
        params = {"instance_uuids": UuidArray(instance_uuids), "move_id": move_id, "holder": move_id}
        if source == API:
            self._relaxed(API, _DELETE_OUTGOING, params, _RELEASE_LEASES)
        else:
            self._relaxed(source, _DELETE_OUTGOING, params)
            self._relaxed(API, _RELEASE_LEASES, params)

    def adopt(self, instance_uuid: str, database: str) -> bool:
        """recover(): a location for rows that had none; False if one appeared meanwhile."""
        with self.connections.connection(API) as api:
            return bool(_ADOPT_LOCATION.many(api, {"instance_uuid": instance_uuid, "database_name": database}))

    def repoint(self, instance_uuid: str, database: str) -> None:
        """recover(): the location names ``database``, which holds the best copy."""
        self._exec(API, _REPOINT_LOCATION, {"instance_uuid": instance_uuid, "database_name": database})

    def remove_location(self, instance_uuid: str) -> None:
        """recover(): a location naming no copy anywhere goes."""
        with self.connections.connection(API) as api:
            _DELETE_LOCATION.one(api, {"instance_uuid": instance_uuid})

    def locations_in_move(self) -> list[str]:
        """Instances whose location carries a move id (through the partial index)."""
        with self.connections.connection(API) as api:
            return _uuids(_LOCATIONS_IN_MOVE.many(api))

    def estimate_locations(self) -> int:
        """About how many location records the API database holds."""
        with self.connections.connection(API) as api:
            estimate = int(_ESTIMATE_LOCATIONS.scalar(api) or 0)
            if estimate < 0:
                estimate = int(_COUNT_LOCATIONS.scalar(api) or 0)
        return estimate

    def range_locations(self, low: str, high: str) -> list[PackedLocations]:
        """The location records of one inclusive uuid range, packed per (database,
        settled)."""
        with self.connections.connection(API) as api:
            rows = _RANGE_LOCATIONS.many(api, {"low": low, "high": high})
        return [PackedLocations(r.database, r.settled, r.n, bytes(r.uuids)) for r in rows]

    # -- helpers --------------------------------------------------------------------------

    def _exec(self, database: str, q: Query, params: Mapping[str, object]) -> None:
        with self.connections.connection(database) as conn:
            q.run(conn, params)

    def _relaxed(self, database: str, q: Query, params: Mapping[str, object], *more: Query) -> None:
        """Cleanup statements (``q``, then ``more`` with the same parameters) in one
        transaction that does not wait for the WAL flush (recover() redoes it from durable
        state if a crash loses it), pipelined into one round trip."""
        with self.connections.connection(database) as conn:
            _in_relaxed_transaction(conn, (q, *more), params)


def _copy_incoming(conn: psycopg.Connection[Any], rows: Sequence[SealedRow], move_id: str) -> None:
    """The rows as this move's incoming copies, by one binary COPY (all or none)."""
    move = uuid_mod.UUID(move_id)
    with conn.cursor() as cur, _COPY_INCOMING_IN.copy(cur) as copy:
        copy.set_types(["uuid", "jsonb", "int4", "int8", "jsonb", "text", "uuid"])
        write_row = copy.write_row
        for r in rows:
            operation = None if r.operation is None else as_jsonb(r.operation)
            write_row((uuid_mod.UUID(r.instance_uuid), as_jsonb(r.spec), r.schema_version, r.version,
                       operation, "incoming", move))


def _in_relaxed_transaction(conn: psycopg.Connection[Any], queries: Sequence[Query], params: Mapping[str, object]) -> None:
    with bounded_block(conn), conn.pipeline(), conn.transaction():
        apply_timeouts(conn)  # behind a transaction-mode pooler; nothing otherwise
        _RELAX_DURABILITY.exec(conn)
        for q in queries:
            q.run(conn, params)


def _seen(instance_uuid: str, row: RowState) -> dict[str, object]:
    return {"instance_uuid": instance_uuid, "move_state": row.state, "move_id": row.move_id, "version": row.version}
