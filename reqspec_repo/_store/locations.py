"""Location-aware access: the API database's ``spec_locations`` says where each spec lives.

:class:`SpecStore` wraps a :class:`RequestSpecRepository`. It creates a spec together
with its location record (one transaction in the API database), reads a spec by instance
uuid alone (location first, then the right database), and deletes a spec wherever it is.
Moves between databases are in :mod:`reqspec_repo._moving.moves`.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Iterable, Sequence

import attrs
import psycopg

from .._errors import LocationNotFoundError, SpecNotFoundError
from .._spec import codec
from .._spec.model import RequestSpec
from .._store.config import API
from .._store.context import RequestContext
from .._store.queries import query
from .._store.repository import RequestSpecRepository, StoredSpec, normalize_uuid

Conn = psycopg.Connection[tuple[object, ...]]


@attrs.frozen
class Location:
    """Where one instance's spec lives. ``move_id`` is set from a move's commit point
    until its cleanup is done (``database`` is then already the move's target)."""

    instance_uuid: str
    database: str
    version: int
    move_id: str | None = None
    moved_from: str | None = None


def _location(instance_uuid: str, row: Sequence[object]) -> Location:
    db, version, move_id, moved_from = row
    return Location(
        instance_uuid,
        str(db),
        int(version),  # type: ignore[call-overload]
        str(move_id) if move_id is not None else None,
        str(moved_from) if moved_from is not None else None,
    )


def lock_instance(conn: Conn, instance_uuid: str) -> None:
    """Wait (bounded by lock_timeout) until no mover or recovery holds this instance; the
    lock lasts until the end of the caller's transaction."""
    conn.execute(
        query("spec_locations", "lock_instance_for_transaction").statement,
        {"instance_uuid": instance_uuid},
    )


class SpecStore:
    """Specs addressed by instance uuid alone, across the API database and the cells."""

    def __init__(self, repo: RequestSpecRepository) -> None:
        self.repo = repo
        self.topology = repo.topology

    def __repr__(self) -> str:
        return f"SpecStore({self.repo!r})"

    def create(
        self, specs: Sequence[RequestSpec], *, database: str = API
    ) -> list[StoredSpec]:
        """Store new specs and their location records, all or nothing.

        In the API database (the default, as at boot before scheduling) both go in one
        transaction. Into a cell, the API transaction holds the instances' locks and the
        location rows while the specs are written to the cell, and commits last: a crash
        in between leaves at most an unacknowledged spec row without a location, which
        ``recover()`` adopts; never a location pointing at nothing."""
        uuids = [s.instance_uuid for s in specs]
        params = {"instance_uuids": uuids, "database_name": database}
        self.topology.database(database)  # unknown cell: ConfigError before any write
        with self.repo.unit_of_work(RequestContext(API)) as uow:
            uow.conn.execute(
                query("spec_locations", "lock_instances_for_transaction").statement, params
            )
            uow.conn.execute(query("spec_locations", "insert_locations").statement, params)
            if database == API:
                stored = uow.create_many(specs)
            else:
                stored = self.repo.create_many(RequestContext(database), specs)
            uow.commit()
        return stored

    def location(self, instance_uuid: str | uuid_mod.UUID) -> Location:
        key = normalize_uuid(instance_uuid)
        with self.repo.connections.connection(API) as conn:
            row = conn.execute(
                query("spec_locations", "get_location").statement, {"instance_uuid": key}
            ).fetchone()
        if row is None:
            raise LocationNotFoundError(key)
        return _location(key, row)

    def locations(self, instance_uuids: Iterable[str | uuid_mod.UUID]) -> dict[str, Location]:
        keys = [normalize_uuid(u) for u in instance_uuids]
        with self.repo.connections.connection(API) as conn:
            rows = conn.execute(
                query("spec_locations", "get_locations").statement, {"instance_uuids": keys}
            ).fetchall()
        return {str(r[0]): _location(str(r[0]), r[1:]) for r in rows}

    def get(self, instance_uuid: str | uuid_mod.UUID) -> StoredSpec:
        """The spec of an instance, wherever it lives. During a move the spec stays
        readable: before the commit point from the source, after it from the target."""
        loc = self.location(instance_uuid)
        database = self.topology.database(loc.database)
        with self.repo.connections.connection(database.name) as conn:
            row = conn.execute(
                query("request_specs", "get_committed_by_instance_uuid").statement,
                {"instance_uuid": loc.instance_uuid, "committed_move_id": loc.move_id},
            ).fetchone()
        if row is None:
            raise SpecNotFoundError(loc.instance_uuid, database.name)
        spec = codec.decode(row[0], instance_uuid=loc.instance_uuid, database=database.name)
        return StoredSpec(spec, int(row[1]), database.name)

    def get_with_operation(self, instance_uuid: str | uuid_mod.UUID) -> tuple[StoredSpec, bytes | None]:
        """Like :meth:`get`, with the raw document of the operation in flight kept in the
        same row (None when there is none)."""
        loc = self.location(instance_uuid)
        database = self.topology.database(loc.database)
        with self.repo.connections.connection(database.name) as conn:
            row = conn.execute(
                query("request_specs", "get_committed_with_operation").statement,
                {"instance_uuid": loc.instance_uuid, "committed_move_id": loc.move_id},
            ).fetchone()
        if row is None:
            raise SpecNotFoundError(loc.instance_uuid, database.name)
        spec = codec.decode(row[0], instance_uuid=loc.instance_uuid, database=database.name)
        operation = None if row[2] is None else bytes(row[2])
        return StoredSpec(spec, int(row[1]), database.name), operation

    def save_with_operation(
        self, spec: RequestSpec, *, expected_version: int, operation: bytes | None
    ) -> StoredSpec:
        """Compare-and-swap of the spec and its operation in flight, wherever it lives."""
        return self.repo.save_with_operation(
            self.context_for(spec.instance_uuid), spec, expected_version=expected_version, operation=operation
        )

    def context_for(self, instance_uuid: str | uuid_mod.UUID) -> RequestContext:
        """A request context targeting the database that holds this instance's spec."""
        return RequestContext(self.location(instance_uuid).database)

    def save(self, spec: RequestSpec, *, expected_version: int) -> StoredSpec:
        """Compare-and-swap save in whichever database holds the spec."""
        return self.repo.save(self.context_for(spec.instance_uuid), spec, expected_version=expected_version)

    def destroy(self, instance_uuid: str | uuid_mod.UUID) -> bool:
        """Delete the spec and its location, wherever it lives; False if already gone.

        Takes the instance's lock first, so it waits for a move in progress to finish;
        copies left by an interrupted move are deleted too."""
        key = normalize_uuid(instance_uuid)
        with self.repo.unit_of_work(RequestContext(API)) as uow:
            lock_instance(uow.conn, key)
            row = uow.conn.execute(
                query("spec_locations", "get_location").statement, {"instance_uuid": key}
            ).fetchone()
            if row is None:
                uow.commit()
                return False
            for name in self.topology.database_names:
                # Every database, since a move interrupted before its commit point leaves
                # a hidden copy whose database the location does not name. Spec rows
                # first: a crash here leaves a location without a spec, which verify()
                # reports and recover() removes; never an orphan spec.
                with self.repo.connections.connection(name) as conn:
                    conn.execute(query("request_specs", "delete_any_row").statement, {"instance_uuid": key})
            uow.conn.execute(query("spec_locations", "delete_location").statement, {"instance_uuid": key})
            uow.commit()
        return True
