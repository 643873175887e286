"""Location-aware access: the API database's ``spec_locations`` says where each spec lives.

:class:`SpecStore` wraps a :class:`RequestSpecRepository`. It creates a spec together
with its location record (one transaction in the API database), reads a spec by instance
uuid alone (location first, then the right database), and deletes a spec wherever it is.
Moves between databases are in :mod:`reqspec_repo._moving.moves`.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import psycopg
from psycopg.rows import class_row

from .._errors import LocationNotFoundError, SpecNotFoundError
from .._spec import codec
from .._spec.model import RequestSpec
from .config import API
from .context import RequestContext
from .queries import query
from .repository import RequestSpecRepository, StoredSpec, normalize_uuid

Conn = psycopg.Connection[tuple[object, ...]]


@attrs.frozen
class Location:
    """Where one instance's spec lives. ``move_id`` is set from a move's commit point
    until its cleanup is done (``database`` is then already the move's target)."""

    # Converters: built from rows too (class_row), where uuids come as uuid.UUID.
    instance_uuid: str = attrs.field(converter=str)
    database: str
    version: int
    move_id: str | None = attrs.field(default=None, converter=attrs.converters.optional(str))
    moved_from: str | None = None


_LOCATION = class_row(Location)
_GET_LOCATION = query("spec_locations", "get_location")
_GET_LOCATIONS = query("spec_locations", "get_locations")
_LOCK_INSTANCE = query("spec_locations", "lock_instance_for_transaction")
_LOCK_INSTANCES = query("spec_locations", "lock_instances_for_transaction")
_INSERT_LOCATIONS = query("spec_locations", "insert_locations")
_DELETE_LOCATION = query("spec_locations", "delete_location")
_GET_COMMITTED = query("request_specs", "get_committed_by_instance_uuid")
_DELETE_ANY_ROW = query("request_specs", "delete_any_row")


def lock_instance(conn: Conn, instance_uuid: str) -> None:
    """Wait (bounded by lock_timeout) until no mover or recovery holds this instance; the
    lock lasts until the end of the caller's transaction."""
    _LOCK_INSTANCE.exec(conn, {"instance_uuid": instance_uuid})


class SpecStore:
    """Specs addressed by instance uuid alone, across the API database and the cells."""

    def __init__(self, repo: RequestSpecRepository) -> None:
        self.repo = repo
        self.topology = repo.topology

    def __repr__(self) -> str:
        return f"SpecStore({self.repo!r})"

    def create(
        self, specs: RequestSpec | Sequence[RequestSpec], *, database: str = API
    ) -> list[StoredSpec]:
        """Store new specs (one, or a sequence) and their location records, all or nothing.

        In the API database (the default, as at boot before scheduling) both go in one
        transaction. Into a cell, the API transaction holds the instances' locks and the
        location rows while the specs are written to the cell, and commits last: a crash
        in between leaves at most an unacknowledged spec row without a location, which
        ``recover()`` adopts; never a location pointing at nothing."""
        if isinstance(specs, RequestSpec):
            specs = [specs]
        uuids = [s.instance_uuid for s in specs]
        params = {"instance_uuids": uuids, "database_name": database}
        self.topology.database(database)  # unknown cell: ConfigError before any write
        with self.repo.unit_of_work(RequestContext(API)) as uow:
            _LOCK_INSTANCES.exec(uow.conn, params)
            _INSERT_LOCATIONS.exec(uow.conn, params)
            if database == API:
                stored = uow.create_many(specs)
            else:
                stored = self.repo.create_many(RequestContext(database), specs)
            uow.commit()
        return stored

    def location(self, instance_uuid: str | uuid_mod.UUID) -> Location:
        key = normalize_uuid(instance_uuid)
        with self.repo.connections.connection(API) as conn:
            found = _GET_LOCATION.one(conn, {"instance_uuid": key}, row=_LOCATION)
        if found is None:
            raise LocationNotFoundError(key)
        return found

    def locations(self, instance_uuids: Iterable[str | uuid_mod.UUID]) -> dict[str, Location]:
        keys = [normalize_uuid(u) for u in instance_uuids]
        with self.repo.connections.connection(API) as conn:
            rows = _GET_LOCATIONS.many(conn, {"instance_uuids": keys}, row=_LOCATION)
        return {loc.instance_uuid: loc for loc in rows}

    def get(self, instance_uuid: str | uuid_mod.UUID) -> StoredSpec:
        """The spec of an instance, wherever it lives. During a move the spec stays
        readable: before the commit point from the source, after it from the target."""
        loc = self.location(instance_uuid)
        database = self.topology.database(loc.database)
        with self.repo.connections.connection(database.name) as conn:
            row: Any = _GET_COMMITTED.one(
                conn, {"instance_uuid": loc.instance_uuid, "committed_move_id": loc.move_id}
            )
        if row is None:
            raise SpecNotFoundError(loc.instance_uuid, database.name)
        spec = codec.decode(row.spec, instance_uuid=loc.instance_uuid, database=database.name)
        return StoredSpec(spec, row.version, database.name)

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
            if _GET_LOCATION.one(uow.conn, {"instance_uuid": key}) is None:
                uow.commit()
                return False
            for name in self.topology.database_names:
                # Every database, since a move interrupted before its commit point leaves
                # a hidden copy whose database the location does not name. Spec rows
                # first: a crash here leaves a location without a spec, which verify()
                # reports and recover() removes; never an orphan spec.
                with self.repo.connections.connection(name) as conn:
                    _DELETE_ANY_ROW.exec(conn, {"instance_uuid": key})
            _DELETE_LOCATION.one(uow.conn, {"instance_uuid": key})
            uow.commit()
        return True
