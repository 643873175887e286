"""The RequestSpec repository: named SQL from ``sql/request_specs.sql`` run against the
database that the request context targets.

Each method of :class:`RequestSpecRepository` is one statement on a pooled autocommit
connection (one round trip, atomic by itself). For several statements in one
transaction use :meth:`RequestSpecRepository.unit_of_work`: commit is explicit and
rollback is the default.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import tuple_row

from .._errors import (
    BatchError,
    ConflictError,
    ReqSpecError,
    SpecDecodeError,
    SpecEncodeError,
    SpecExistsError,
    SpecMovingError,
    SpecNotFoundError,
)
from .._spec import codec
from .._spec.model import RequestSpec, canonical_uuid
from .config import Database, Topology
from .context import RequestContext
from .documents import as_jsonb
from .keyset import FIRST_UUID, uuid_after
from .pools import Connections, GuardedConnection, translated_errors
from .queries import query
from .roundtrips import bounded
from .uuid_arrays import UuidArray

log = logging.getLogger(__name__)

Conn = GuardedConnection
Row = tuple[object, ...]
_T = TypeVar("_T")
DecodeErrorHandler = Callable[[SpecDecodeError], None]


@attrs.frozen
class StoredSpec:
    """A spec as stored: the version is what a compare-and-swap save must name."""

    spec: RequestSpec
    version: int
    database: str

    @property
    def instance_uuid(self) -> str:
        return self.spec.instance_uuid


@attrs.frozen
class SpecBatch:
    """The result of a batch read.

    ``found`` maps instance uuid to its spec; ``missing`` lists uuids with no live spec
    here; ``errors`` holds rows that exist but could not be decoded (reported, not
    raised, so that one corrupt row does not hide the others).
    """

    found: dict[str, StoredSpec]
    missing: list[str]
    errors: dict[str, SpecDecodeError]


#: Rows per chunk when a batch read is streamed (chunked rows mode, libpq 17 or later;
#: with an older libpq the batch is fetched whole).
STREAM_CHUNK_ROWS = 200

_INSERT_SPEC = query("request_specs", "insert_spec")
_COPY_SPECS_IN = query("request_specs", "copy_specs_in")
_LIST_EXISTING = query("request_specs", "list_existing_instance_uuids")
_GET_BY_UUID = query("request_specs", "get_by_instance_uuid")
_GET_MANY = query("request_specs", "get_many_by_instance_uuids")
_GET_STATE = query("request_specs", "get_state_by_instance_uuid")
_UPDATE_IF_VERSION = query("request_specs", "update_spec_if_version")
_UPDATE_WITH_OPERATION_IF_VERSION = query("request_specs", "update_spec_and_operation_if_version")
_DELETE_SPEC = query("request_specs", "delete_spec")
_EXISTS_SPEC = query("request_specs", "exists_spec")
_COUNT_SPECS = query("request_specs", "count_specs")
_LIST_SPECS = query("request_specs", "list_specs")
_LIST_SPECS_PAGE = query("request_specs", "list_specs_page")

def normalize_uuid(value: str | uuid_mod.UUID, field: str = "instance_uuid") -> str:
    """Canonical lower-case text form; a typed error names the bad argument."""
    return canonical_uuid(value, field)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Batch reads and writes build or keep thousands of objects, none of them cyclic: the
    cyclic GC would only rescan the growing batch (and everything else the process holds)
    again and again, so it waits until the batch is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _log_decode_error(error: SpecDecodeError) -> None:
    log.error("skipping undecodable row: %s", error)


@attrs.frozen
class ListedSpec:
    """One row of a page of :meth:`RequestSpecRepository.list_page`: the spec, or the
    error that decoding it gave (a listing shows broken rows rather than stopping)."""

    instance_uuid: str
    version: int
    state: str
    updated_at: datetime
    spec: RequestSpec | None
    error: SpecDecodeError | None


# -- one statement each, on a connection's kept cursor ----------------------------------
# Shared by SpecSession (and so UnitOfWork) and the repository's one-statement methods,
# which encode before taking a pooled connection and decode after giving it back: the
# connection is held for the round trip only.


def _insert(cur: psycopg.Cursor[Any], database: str, spec: RequestSpec, doc: bytes) -> StoredSpec:
    try:
        row = _INSERT_SPEC.one(
            cur,
            {"instance_uuid": spec.instance_uuid, "spec": as_jsonb(doc), "schema_version": codec.SCHEMA_VERSION},
        )
    except pg_errors.UniqueViolation:
        raise SpecExistsError(spec.instance_uuid, database) from None
    assert row is not None
    return StoredSpec(spec, row.version, database)


class _BatchRefused(Exception):
    """Aborts a batch's COPY (nothing lands) once one of its specs cannot be stored."""


def _fetch(cur: psycopg.Cursor[Any], database: str, key: str) -> Any:
    """The (spec, version) record of a live spec; SpecNotFoundError if there is none."""
    row = _GET_BY_UUID.one(cur, {"instance_uuid": key})
    if row is None:
        raise SpecNotFoundError(key, database)
    return row


def stored_from_row(row: Any, database: str, key: str) -> StoredSpec:
    """The StoredSpec of a record with ``spec`` (the document) and ``version``."""
    return StoredSpec(codec.decode(row.spec, instance_uuid=key, database=database), row.version, database)


def _update(
    cur: psycopg.Cursor[Any], database: str, spec: RequestSpec, doc: bytes, expected_version: int
) -> StoredSpec:
    row = _UPDATE_IF_VERSION.one(
        cur,
        {
            "instance_uuid": spec.instance_uuid,
            "spec": as_jsonb(doc),
            "schema_version": codec.SCHEMA_VERSION,
            "expected_version": expected_version,
        },
    )
    if row is not None:
        return StoredSpec(spec, row.version, database)
    raise _explain_failed_write(cur, database, spec.instance_uuid, expected_version)


def _explain_failed_write(
    cur: psycopg.Cursor[Any], database: str, key: str, expected_version: int | None
) -> ReqSpecError:
    state = _GET_STATE.one(cur, {"instance_uuid": key})
    if state is None:
        if expected_version is None:
            return SpecNotFoundError(key, database)
        return ConflictError(key, database, expected_version, None)
    if state.move_state != "live":  # sealed source or not-yet-live target of a move
        return SpecMovingError(key, database)
    return ConflictError(key, database, expected_version or 0, state.version)


class SpecSession:
    """The repository operations bound to one connection of one database."""

    def __init__(self, conn: Conn, database: Database, max_document_bytes: int) -> None:
        self.conn = conn
        self.database = database
        self.max_document_bytes = max_document_bytes
        self._cursor = conn.one_row_cursor()

    def _encode(self, spec: RequestSpec) -> bytes:
        return codec.encode(spec, max_bytes=self.max_document_bytes)

    def create(self, spec: RequestSpec) -> StoredSpec:
        return _insert(self._cursor, self.database.name, spec, self._encode(spec))

    def create_many(self, specs: Sequence[RequestSpec]) -> list[StoredSpec]:
        if not specs:
            return []
        with _gc_paused():
            return self._create_many(specs)

    def _create_many(self, specs: Sequence[RequestSpec]) -> list[StoredSpec]:
        # Each spec is checked and encoded as the COPY streams, so the server stores the
        # rows already sent while the next ones are encoded (encoding everything first
        # left the server idle for that long). The first spec that cannot be stored aborts
        # the COPY, one statement, so nothing lands; the rest are still checked, so that
        # the BatchError names every failure.
        failures: dict[str, Exception] = {}
        seen: set[str] = set()

        def document(position: int, spec: RequestSpec) -> bytes | None:
            """The spec's document; None (and the reason in ``failures``) if it cannot be stored."""
            if not isinstance(spec, RequestSpec):
                failures[f"item {position}"] = SpecEncodeError(
                    None, f"expected a RequestSpec, got {type(spec).__name__}"
                )
                return None
            key = spec.instance_uuid
            if key in seen:
                failures[key] = SpecExistsError(key, "this batch")
            seen.add(key)
            try:
                doc = self._encode(spec)
            except ReqSpecError as exc:
                failures[key] = exc
                return None
            return None if key in failures else doc

        def check_from(start: int) -> None:
            for position in range(start, len(specs)):
                document(position, specs[position])

        # One binary COPY statement: atomic on its own (autocommit). In a unit of work it
        # runs under a savepoint, so that a refused batch leaves the caller's transaction
        # usable and the existing uuids can be named.
        guard = contextlib.nullcontext() if self.conn.autocommit else self.conn.transaction()
        checked = 0  # specs checked so far; those after it are checked when the COPY fails
        try:
            version = codec.SCHEMA_VERSION
            with guard, self.conn.cursor() as cur:
                with _COPY_SPECS_IN.copy(cur) as copy:
                    copy.set_types(["uuid", "jsonb", "int4"])
                    write_row = copy.write_row
                    for position, spec in enumerate(specs):
                        doc = document(position, spec)
                        checked = position + 1
                        if doc is None:
                            raise _BatchRefused
                        write_row((uuid_mod.UUID(spec.instance_uuid), as_jsonb(doc), version))
        except _BatchRefused:
            check_from(checked)
            raise BatchError(failures) from None
        except pg_errors.UniqueViolation:
            check_from(checked)
            existing: list[Any] = _LIST_EXISTING.many(self.conn, {"instance_uuids": UuidArray(seen)})
            for r in existing:
                key = str(r.instance_uuid)
                failures.setdefault(key, SpecExistsError(key, self.database.name))
            raise BatchError(failures) from None
        return [StoredSpec(s, 1, self.database.name) for s in specs]

    def get(self, instance_uuid: str | uuid_mod.UUID) -> StoredSpec:
        key = normalize_uuid(instance_uuid)
        name = self.database.name
        return stored_from_row(_fetch(self._cursor, name, key), name, key)

    def get_many(self, instance_uuids: Iterable[str | uuid_mod.UUID]) -> SpecBatch:
        keys = list(dict.fromkeys(normalize_uuid(u) for u in instance_uuids))
        found: dict[str, StoredSpec] = {}
        errors: dict[str, SpecDecodeError] = {}
        if keys:
            with _gc_paused():
                name = self.database.name
                decode = codec.decode
                with self.conn.cursor() as cur:
                    # Streamed in chunks: specs are decoded here while the server is still
                    # producing the next rows, instead of after the whole result arrived.
                    rows = _GET_MANY.each(
                        cur, {"instance_uuids": UuidArray(keys)}, row=tuple_row, chunk=STREAM_CHUNK_ROWS
                    )
                    for raw_uuid, doc, version in rows:
                        key = str(raw_uuid)
                        try:
                            spec = decode(doc, instance_uuid=key, database=name)
                        except SpecDecodeError as exc:
                            errors[key] = exc
                            continue
                        found[key] = StoredSpec(spec, int(version), name)
        missing = [k for k in keys if k not in found and k not in errors]
        return SpecBatch(found, missing, errors)

    def save(self, spec: RequestSpec, expected_version: int) -> StoredSpec:
        return _update(self._cursor, self.database.name, spec, self._encode(spec), expected_version)

    def save_with_operation(
        self, spec: RequestSpec, expected_version: int, operation: bytes | None
    ) -> StoredSpec:
        """Compare-and-swap of the spec together with its operation in flight (an opaque
        JSON document kept in the same row, moved with it; None clears it)."""
        doc = self._encode(spec)
        row = _UPDATE_WITH_OPERATION_IF_VERSION.one(
            self._cursor,
            {
                "instance_uuid": spec.instance_uuid,
                "spec": as_jsonb(doc),
                "schema_version": codec.SCHEMA_VERSION,
                "operation": None if operation is None else as_jsonb(operation),
                "expected_version": expected_version,
            },
        )
        if row is not None:
            return StoredSpec(spec, row.version, self.database.name)
        raise _explain_failed_write(self._cursor, self.database.name, spec.instance_uuid, expected_version)

    def destroy(self, instance_uuid: str | uuid_mod.UUID, *, missing_ok: bool = False) -> bool:
        key = normalize_uuid(instance_uuid)
        row = _DELETE_SPEC.one(self._cursor, {"instance_uuid": key})
        if row is not None:
            return True
        error = _explain_failed_write(self._cursor, self.database.name, key, None)
        if missing_ok and isinstance(error, SpecNotFoundError):
            return False
        raise error

    def exists(self, instance_uuid: str | uuid_mod.UUID) -> bool:
        return bool(_EXISTS_SPEC.scalar(self._cursor, {"instance_uuid": normalize_uuid(instance_uuid)}))

    def count(self) -> int:
        return int(_COUNT_SPECS.scalar(self._cursor) or 0)


class UnitOfWork(SpecSession):
    """Several operations in one transaction on one database. ``commit()`` is explicit;
    leaving the block without it rolls everything back."""

    def __init__(self, conn: Conn, database: Database, max_document_bytes: int) -> None:
        super().__init__(conn, database, max_document_bytes)
        self.committed = False

    def commit(self) -> None:
        bounded(self.conn, self.conn.commit)
        self.committed = True

    def rollback(self) -> None:
        self.conn.rollback()


class RequestSpecRepository:
    """Save and load RequestSpecs in whichever database the request context targets."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.topology: Topology = connections.topology

    @classmethod
    def from_topology(cls, topology: Topology) -> RequestSpecRepository:
        return cls(Connections(topology))

    def close(self) -> None:
        self.connections.close()

    def __enter__(self) -> RequestSpecRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RequestSpecRepository({self.connections!r})"

    @contextlib.contextmanager
    def session(self, context: RequestContext) -> Iterator[SpecSession]:
        """A one-statement-at-a-time session on the context's database (autocommit)."""
        database = self.topology.database(context.database)
        with self.connections.connection(database.name) as conn:
            yield SpecSession(conn, database, self.topology.settings.max_document_bytes)

    def _run(self, context: RequestContext, operation: Callable[[SpecSession], _T]) -> _T:
        # session() without the generator-based context managers: these are hot paths.
        database = self.topology.database(context.database)
        limit = self.topology.settings.max_document_bytes
        return self.connections.run(database, lambda conn: operation(SpecSession(conn, database, limit)))

    @contextlib.contextmanager
    def unit_of_work(self, context: RequestContext) -> Iterator[UnitOfWork]:
        """One transaction on the context's database; call ``commit()`` to keep it."""
        database = self.topology.database(context.database)
        with self.connections.connection(database.name) as conn:
            conn.autocommit = False
            uow = UnitOfWork(conn, database, self.topology.settings.max_document_bytes)
            try:
                with translated_errors(database):
                    yield uow
            finally:
                with contextlib.suppress(psycopg.Error):
                    if not uow.committed:
                        conn.rollback()
                    conn.autocommit = True

    def list_page(
        self, context: RequestContext, *, after: str | uuid_mod.UUID | None = None, limit: int = 100
    ) -> list[ListedSpec]:
        """Up to ``limit`` specs of one database in instance uuid order, after the instance
        ``after`` (from the first without it): keyset paging, pass the last
        ``instance_uuid`` of a page to get the next one."""
        database = self.topology.database(context.database)
        start = FIRST_UUID if after is None else uuid_after(normalize_uuid(after, "after"))
        if start is None:
            return []  # nothing follows the highest uuid
        with self.connections.connection(database.name) as conn:
            rows = _LIST_SPECS_PAGE.many(conn, {"start": start, "limit": limit})
        listed = []
        for r in rows:
            key = str(r.instance_uuid)
            spec: RequestSpec | None = None
            error: SpecDecodeError | None = None
            try:
                spec = codec.decode(r.spec, instance_uuid=key, database=database.name)
            except SpecDecodeError as exc:
                error = exc
            listed.append(ListedSpec(key, r.version, r.move_state, r.updated_at, spec, error))
        return listed

    # -- one-statement operations -------------------------------------------------------

    def _encode(self, spec: RequestSpec) -> bytes:
        return codec.encode(spec, max_bytes=self.topology.settings.max_document_bytes)

    def create(self, context: RequestContext, spec: RequestSpec) -> StoredSpec:
        """Store a new spec; SpecExistsError if the instance already has one there."""
        database = self.topology.database(context.database)
        doc = self._encode(spec)  # before taking a connection: it is held for the round trip only
        name = database.name
        return self.connections.run(database, lambda conn: _insert(conn.one_row_cursor(), name, spec, doc))

    def create_many(self, context: RequestContext, specs: Sequence[RequestSpec]) -> list[StoredSpec]:
        """Store many new specs in one round trip: all of them, or none (BatchError)."""
        return self._run(context, lambda s: s.create_many(specs))

    def get(self, context: RequestContext, instance_uuid: str | uuid_mod.UUID) -> StoredSpec:
        """The live spec of an instance; SpecNotFoundError if there is none there."""
        key = normalize_uuid(instance_uuid)
        database = self.topology.database(context.database)
        name = database.name
        row = self.connections.run(database, lambda conn: _fetch(conn.one_row_cursor(), name, key))
        return stored_from_row(row, name, key)

    def get_many(
        self, context: RequestContext, instance_uuids: Iterable[str | uuid_mod.UUID]
    ) -> SpecBatch:
        """Many specs in one round trip; corrupt rows are reported in ``errors``."""
        return self._run(context, lambda s: s.get_many(instance_uuids))

    def save(self, context: RequestContext, spec: RequestSpec, *, expected_version: int) -> StoredSpec:
        """Compare-and-swap: write only if the stored version is ``expected_version``."""
        database = self.topology.database(context.database)
        doc = self._encode(spec)  # before taking a connection: it is held for the round trip only
        name = database.name
        return self.connections.run(
            database, lambda conn: _update(conn.one_row_cursor(), name, spec, doc, expected_version)
        )

    def save_with_operation(
        self, context: RequestContext, spec: RequestSpec, *, expected_version: int, operation: bytes | None
    ) -> StoredSpec:
        """Compare-and-swap of the spec and its operation in flight (None clears it)."""
        return self._run(context, lambda s: s.save_with_operation(spec, expected_version, operation))

    def destroy(
        self, context: RequestContext, instance_uuid: str | uuid_mod.UUID, *, missing_ok: bool = False
    ) -> bool:
        """Delete the live spec; True if one was deleted."""
        return self._run(context, lambda s: s.destroy(instance_uuid, missing_ok=missing_ok))

    def exists(self, context: RequestContext, instance_uuid: str | uuid_mod.UUID) -> bool:
        return self._run(context, lambda s: s.exists(instance_uuid))

    def count(self, context: RequestContext) -> int:
        return self._run(context, lambda s: s.count())

    def iterate(
        self,
        context: RequestContext,
        *,
        batch_size: int = 500,
        on_error: DecodeErrorHandler | None = _log_decode_error,
    ) -> Iterator[StoredSpec]:
        """Every live spec of one database in instance uuid order, fetched ``batch_size``
        rows at a time through a server-side cursor, so memory stays bounded whatever the
        table size. A row that cannot be decoded is passed to ``on_error`` (logged by
        default) and skipped; with ``on_error=None`` it raises instead."""
        database = self.topology.database(context.database)
        with self.connections.connection(database.name) as conn, translated_errors(database):
            row: Any
            for row in _LIST_SPECS.stream(conn, batch=batch_size):
                key = str(row.instance_uuid)
                try:
                    spec = codec.decode(row.spec, instance_uuid=key, database=database.name)
                except SpecDecodeError as exc:
                    if on_error is None:
                        raise
                    on_error(exc)
                    continue
                yield StoredSpec(spec, row.version, database.name)
