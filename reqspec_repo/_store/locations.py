"""Location-aware access: the API database's ``spec_locations`` says where each spec lives.

:class:`SpecStore` wraps a :class:`RequestSpecRepository`. It creates a spec together
with its location record (one transaction in the API database), reads a spec by instance
uuid alone (location first, then the right database), and deletes a spec wherever it is.
Moves between databases are in :mod:`reqspec_repo._moving.moves`.
"""

from __future__ import annotations

import contextlib
import uuid as uuid_mod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row

from .._errors import (
    BatchError,
    LocationNotFoundError,
    MoveInProgressError,
    ReqSpecError,
    SpecExistsError,
    SpecNotFoundError,
)
from .._spec.model import RequestSpec
from ..testing.failpoints import failpoint
from .config import API
from .context import RequestContext
from .keyset import FIRST_UUID, uuid_after
from .leases import LeasePurpose, Leases
from .queries import Query, query
from .repository import RequestSpecRepository, StoredSpec, normalize_uuid, stored_from_row
from .uuid_arrays import UuidArray

Conn = psycopg.Connection[tuple[object, ...]]


@attrs.frozen
class Location:
    """Where one instance's spec lives. ``move_id`` and ``moved_from`` are only set on a
    location a move of an earlier release committed and did not clean up (such a move
    marked its location; a move now marks its copy in the target, see
    :mod:`reqspec_repo._moving.moves`): ``database`` is then already the move's target."""

    # Converters: built from rows too (class_row), where uuids come as uuid.UUID.
    instance_uuid: str = attrs.field(converter=str)
    database: str
    version: int
    move_id: str | None = attrs.field(default=None, converter=attrs.converters.optional(str))
    moved_from: str | None = None


_LOCATION = class_row(Location)
_GET_LOCATION = query("spec_locations", "get_location")
_GET_LOCATIONS = query("spec_locations", "get_locations")
_INSERT_LOCATIONS = query("spec_locations", "insert_locations")
_INSERT_LOCATIONS_RELEASING = query("spec_locations", "insert_locations_releasing")
_DELETE_LOCATION_RELEASING = query("spec_locations", "delete_location_releasing")
_GET_COMMITTED = query("request_specs", "get_committed_by_instance_uuid")
_GET_COMMITTED_WITH_OPERATION = query("request_specs", "get_committed_with_operation")
_DELETE_ANY_ROW = query("request_specs", "delete_any_row")
_UUIDS_FROM = query("request_specs", "list_instance_uuids_from")
_COUNT_SPECS = query("request_specs", "count_specs")


class _LocationsExist(Exception):
    """Some of the instances being created already have a location record."""


def _insert_locations(conn: Conn, q: Query, params: dict[str, object]) -> None:
    try:
        q.exec(conn, params)
    except pg_errors.UniqueViolation:
        raise _LocationsExist() from None


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
        transaction. Into a cell, no connection is held while another is awaited: the
        instances' leases are claimed (API), the specs written to the cell, then the
        locations written and the leases released in one API statement. A crash in
        between leaves at most an unacknowledged spec row without a location, which
        ``recover()`` adopts once the lease expired; never a location pointing at nothing."""
        if isinstance(specs, RequestSpec):
            specs = [specs]
        uuids = [s.instance_uuid for s in specs]
        self.topology.database(database)  # unknown cell: ConfigError before any write
        if database == API:
            try:
                with self.repo.unit_of_work(RequestContext(API)) as uow:
                    _insert_locations(uow.conn, _INSERT_LOCATIONS, {"instance_uuids": UuidArray(uuids), "database_name": API})
                    stored = uow.create_many(specs)
                    uow.commit()
            except _LocationsExist:
                raise self._already_located(uuids) from None
            return stored
        leases = Leases(self.repo.connections)
        holder = str(uuid_mod.uuid4())
        claimed = leases.claim(uuids, holder, LeasePurpose.CREATE)
        try:
            busy = [u for u in uuids if u not in claimed]
            if busy:  # recover() is adopting an earlier copy of these instances
                raise BatchError({u: MoveInProgressError(u) for u in busy})
            stored = self.repo.create_many(RequestContext(database), specs)
            failpoint("create_after_rows")
            try:
                with self.repo.connections.connection(API) as api:
                    _insert_locations(api, _INSERT_LOCATIONS_RELEASING, {
                        "instance_uuids": UuidArray(uuids), "database_name": database, "holder": holder,
                    })
            except _LocationsExist:
                # Already located elsewhere: the rows just written are nobody's; they go.
                for key in uuids:
                    with self.repo.connections.connection(database) as conn:
                        _DELETE_ANY_ROW.exec(conn, {"instance_uuid": key})
                raise self._already_located(uuids) from None
        except Exception:
            # An ordinary failure: the leases go back at once. A crash (or a failpoint
            # standing for one) keeps them, so that recover() finds the rows by their
            # lease once it expired, without a full scan.
            with contextlib.suppress(ReqSpecError):
                leases.release(claimed, holder)
            raise
        return stored

    def _already_located(self, uuids: list[str]) -> BatchError:
        located = self.locations(uuids)
        return BatchError({k: SpecExistsError(k, loc.database) for k, loc in located.items()})

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
            rows = _GET_LOCATIONS.many(conn, {"instance_uuids": UuidArray(keys)}, row=_LOCATION)
        return {loc.instance_uuid: loc for loc in rows}

    def instance_uuid_pages(self, database: str, *, page_size: int = 5000) -> Iterator[list[str]]:
        """The instance uuids stored in ``database`` (any state but a move's hidden copy),
        in uuid order, ``page_size`` at a time: one short keyset query per page, nothing
        decoded, no connection held between pages, so a caller may move each page away
        before asking for the next. Rows written meanwhile below the last page are not seen."""
        name = self.topology.database(database).name
        start: str | None = FIRST_UUID
        while start is not None:
            with self.repo.connections.connection(name) as conn:
                rows = _UUIDS_FROM.many(conn, {"start": start, "limit": page_size})
            if not rows:
                return
            page = [str(r.instance_uuid) for r in rows]
            yield page
            if len(page) < page_size:
                return
            start = uuid_after(page[-1])

    def count_in(self, database: str) -> int:
        """Specs stored in ``database`` (readable ones: live or sealed by a move)."""
        name = self.topology.database(database).name
        with self.repo.connections.connection(name) as conn:
            return int(_COUNT_SPECS.scalar(conn) or 0)

    def _read_committed(self, query: Query, instance_uuid: str | uuid_mod.UUID) -> tuple[Any, str, str]:
        """The committed row of an instance where its location says it lives: (the row,
        the database's name, the canonical uuid); SpecNotFoundError without one.

        A move can commit and clean up between the two reads (the location read, then
        the row gone from the database it named): when the row is missing and the
        location has changed since, the read follows it once."""
        loc = self.location(instance_uuid)
        row, name = self._row_where(query, loc)
        if row is None:
            now = self.locations([loc.instance_uuid]).get(loc.instance_uuid)
            if now is not None and now.database != loc.database:
                loc = now
                row, name = self._row_where(query, loc)
        if row is None:
            raise SpecNotFoundError(loc.instance_uuid, name)
        return row, name, loc.instance_uuid

    def _row_where(self, query: Query, loc: Location) -> tuple[Any, str]:
        """The instance's row (any state) in the database ``loc`` names, or None; and
        that database's name."""
        database = self.topology.database(loc.database)
        with self.repo.connections.connection(database.name) as conn:
            return query.one(conn, {"instance_uuid": loc.instance_uuid}), database.name

    def get(self, instance_uuid: str | uuid_mod.UUID) -> StoredSpec:
        """The spec of an instance, wherever it lives. During a move the spec stays
        readable: before the commit point from the source, after it from the target."""
        return stored_from_row(*self._read_committed(_GET_COMMITTED, instance_uuid))

    def get_with_operation(self, instance_uuid: str | uuid_mod.UUID) -> tuple[StoredSpec, bytes | None]:
        """Like :meth:`get`, with the raw document of the operation in flight kept in the
        same row (None when there is none)."""
        row, name, key = self._read_committed(_GET_COMMITTED_WITH_OPERATION, instance_uuid)
        operation = None if row.operation is None else bytes(row.operation)
        return stored_from_row(row, name, key), operation

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

        Claims the instance's lease first, so it waits (up to ``lock_timeout_ms``, then
        MoveInProgressError) for a move in progress to finish; copies left by an
        interrupted move are deleted too. One connection at a time."""
        key = normalize_uuid(instance_uuid)
        leases = Leases(self.repo.connections)
        holder = str(uuid_mod.uuid4())
        wait_s = self.topology.settings.lock_timeout_ms / 1000
        if not leases.claim_waiting(key, holder, LeasePurpose.DESTROY, wait_s):
            raise MoveInProgressError(key)
        try:
            if key not in self.locations([key]):
                leases.release([key], holder)
                return False
            for name in self.topology.database_names:
                # Every database, since a move interrupted before its commit point leaves
                # a hidden copy whose database the location does not name. Spec rows
                # first: a crash here leaves a location without a spec, which verify()
                # reports and recover() removes; never an orphan spec.
                with self.repo.connections.connection(name) as conn:
                    _DELETE_ANY_ROW.exec(conn, {"instance_uuid": key})
            with self.repo.connections.connection(API) as api:
                _DELETE_LOCATION_RELEASING.one(api, {"instance_uuid": key, "holder": holder})
        except Exception:
            with contextlib.suppress(ReqSpecError):
                leases.release([key], holder)
            raise
        return True
