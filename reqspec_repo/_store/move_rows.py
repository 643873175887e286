"""The rows a move or recover() works on: ``request_specs`` rows in motion in any
database, and the API database's location records at and after a move's commit point.

Each method is one statement (one round trip) on one pooled connection, checked out and
given back inside the call, so the protocol in :mod:`reqspec_repo._moving` never holds a
connection while it waits for another.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import psycopg

from .config import API
from .documents import as_jsonb
from .locations import Location
from .pools import Connections
from .queries import Query, query
from .roundtrips import apply_timeouts, bounded_block

_SEAL_OUTGOING = query("request_specs", "seal_outgoing")
_UPSERT_INCOMING = query("request_specs", "upsert_incoming")
_DELETE_INCOMING = query("request_specs", "delete_incoming")
_UNSEAL_OUTGOING = query("request_specs", "unseal_outgoing")
_PROMOTE_INCOMING = query("request_specs", "promote_incoming")
_DELETE_OUTGOING = query("request_specs", "delete_outgoing")
_GET_ROW_STATES = query("request_specs", "get_row_states")
_LIST_ALL_ROW_STATES = query("request_specs", "list_all_row_states")
_SET_LIVE_IF_SEEN = query("request_specs", "set_row_live_if_seen")
_DELETE_IF_SEEN = query("request_specs", "delete_row_if_seen")
_DELETE_ANY_ROW = query("request_specs", "delete_any_row")
_RELAX_DURABILITY = query("_session", "relax_commit_durability")

_FLIP_TO_TARGET = query("spec_locations", "flip_locations_to_target")
_CLEAR_MOVES = query("spec_locations", "clear_moves")
_ADOPT_LOCATION = query("spec_locations", "adopt_location")
_REPOINT_LOCATION = query("spec_locations", "repoint_location")
_DELETE_LOCATION = query("spec_locations", "delete_location")
_LIST_ALL_LOCATIONS_AND_ROWS = query("spec_locations", "list_all_locations_and_rows")


#: The request_specs columns a move carries from the source row to the target's copy
#: (``seal_outgoing`` returns them, ``upsert_incoming`` writes them, :class:`SealedRow`
#: holds them), and those each database keeps for itself. A column added to the table
#: must join one of the two: tests/test_moves.py checks the table against them.
MOVED_COLUMNS = ("instance_uuid", "spec", "schema_version", "version", "operation")
LOCAL_COLUMNS = ("id", "move_state", "move_id", "created_at", "updated_at")


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
class ApiScanRow:
    """One instance of the API database's scan: its location record and its own row
    there, either of which may be missing."""

    instance_uuid: uuid_mod.UUID
    location: Location | None
    row: RowState | None


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
            rows = _SEAL_OUTGOING.many(conn, {"instance_uuids": list(instance_uuids), "move_id": move_id})
        return [SealedRow(r.instance_uuid, r.spec, r.schema_version, r.version, r.operation) for r in rows]

    def copy_in(self, database: str, rows: Sequence[SealedRow], move_id: str) -> set[str]:
        """Step 2: hidden 'incoming' copies; returns the instances copied (one holding a
        live row there already is not)."""
        with self.connections.connection(database) as conn:
            copied = _UPSERT_INCOMING.many(conn, {
                "instance_uuids": [r.instance_uuid for r in rows],
                "specs": [as_jsonb(r.spec) for r in rows],
                "schema_versions": [r.schema_version for r in rows],
                "versions": [r.version for r in rows],
                "operations": [None if r.operation is None else as_jsonb(r.operation) for r in rows],
                "move_id": move_id,
            })
        return set(_uuids(copied))

    def undo_copy(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Roll back step 2: this move's incoming copies go."""
        self._exec(database, _DELETE_INCOMING, {"instance_uuids": list(instance_uuids), "move_id": move_id})

    def unseal(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Roll back step 1: this move's outgoing rows take writes again."""
        self._exec(database, _UNSEAL_OUTGOING, {"instance_uuids": list(instance_uuids), "move_id": move_id})

    def promote(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Cleanup: this move's incoming copies become live (no WAL flush wait)."""
        self._relaxed(database, _PROMOTE_INCOMING, {"instance_uuids": list(instance_uuids), "move_id": move_id})

    def drop_outgoing(self, database: str, instance_uuids: Sequence[str], move_id: str) -> None:
        """Cleanup: this move's outgoing rows go (no WAL flush wait)."""
        self._relaxed(database, _DELETE_OUTGOING, {"instance_uuids": list(instance_uuids), "move_id": move_id})

    def states(self, database: str, instance_uuids: Sequence[str]) -> dict[str, list[RowState]]:
        """Every row of these instances in one database, any state."""
        found: dict[str, list[RowState]] = {}
        with self.connections.connection(database) as conn:
            for r in _GET_ROW_STATES.many(conn, {"instance_uuids": list(instance_uuids)}):
                found.setdefault(str(r.instance_uuid), []).append(
                    RowState(database, r.move_state, _opt(r.move_id), r.version)
                )
        return found

    def stream_states(self, database: str) -> Iterator[tuple[uuid_mod.UUID, RowState]]:
        """Every row of one database in uuid order, through a server-side cursor."""
        with self.connections.connection(database) as conn:
            for r in _LIST_ALL_ROW_STATES.stream(conn):
                yield r.instance_uuid, RowState(database, r.move_state, _opt(r.move_id), r.version)

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
        returns the instances committed."""
        with self.connections.connection(API) as api:
            return _uuids(_FLIP_TO_TARGET.many(api, {
                "instance_uuids": list(instance_uuids), "source": source, "target": target,
                "move_id": move_id, "lease_ms": self.lease_ms,
            }))

    def finish(self, instance_uuids: Sequence[str], move_id: str) -> None:
        """Last cleanup step: the locations forget the move, its leases go."""
        self._relaxed(API, _CLEAR_MOVES, {"instance_uuids": list(instance_uuids), "move_id": move_id})

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

    def stream_api(self) -> Iterator[ApiScanRow]:
        """The API database's locations and its own rows, one uuid-ordered stream on one
        connection (a scan of both at once would hold two connections of one pool)."""
        with self.connections.connection(API) as api:
            for r in _LIST_ALL_LOCATIONS_AND_ROWS.stream(api):
                location = None
                if r.database is not None:
                    location = Location(r.instance_uuid, r.database, r.version, r.move_id, r.moved_from)
                row = None
                if r.move_state is not None:
                    row = RowState(API, r.move_state, _opt(r.row_move_id), r.row_version)
                yield ApiScanRow(r.instance_uuid, location, row)

    # -- helpers --------------------------------------------------------------------------

    def _exec(self, database: str, q: Query, params: Mapping[str, object]) -> None:
        with self.connections.connection(database) as conn:
            q.run(conn, params)

    def _relaxed(self, database: str, q: Query, params: Mapping[str, object]) -> None:
        """One cleanup statement in a transaction that does not wait for the WAL flush
        (recover() redoes it from durable state if a crash loses it), pipelined into one
        round trip."""
        with self.connections.connection(database) as conn:
            _in_relaxed_transaction(conn, q, params)


def _in_relaxed_transaction(conn: psycopg.Connection[Any], q: Query, params: Mapping[str, object]) -> None:
    with bounded_block(conn), conn.pipeline(), conn.transaction():
        apply_timeouts(conn)  # behind a transaction-mode pooler; nothing otherwise
        _RELAX_DURABILITY.exec(conn)
        q.run(conn, params)


def _seen(instance_uuid: str, row: RowState) -> dict[str, object]:
    return {"instance_uuid": instance_uuid, "move_state": row.state, "move_id": row.move_id, "version": row.version}
