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
import re
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import attrs
import psycopg
from psycopg import errors as pg_errors

from .._errors import (
    BatchError,
    ConflictError,
    ReqSpecError,
    SpecDecodeError,
    SpecEncodeError,
    SpecExistsError,
    SpecMovingError,
    SpecNotFoundError,
    SpecValidationError,
)
from .._spec import codec
from .._spec.model import RequestSpec
from .._store.config import Database, Topology
from .._store.context import RequestContext
from .._store.documents import as_jsonb
from .._store.pools import Connections, GuardedConnection, translated_errors
from .._store.queries import query

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
_CHUNKED_ROWS = psycopg.pq.version() >= 170000

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalize_uuid(value: str | uuid_mod.UUID, field: str = "instance_uuid") -> str:
    """Canonical lower-case text form; a typed error names the bad argument."""
    if value.__class__ is str and _CANONICAL_UUID.fullmatch(value):
        return value  # the common case, without building a UUID
    if isinstance(value, uuid_mod.UUID):
        return str(value)
    try:
        return str(uuid_mod.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise SpecValidationError(field, f"{value!r} is not a uuid") from None


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


class SpecSession:
    """The repository operations bound to one connection of one database."""

    def __init__(self, conn: Conn, database: Database, max_document_bytes: int) -> None:
        self.conn = conn
        self.database = database
        self.max_document_bytes = max_document_bytes
        self._cursor = conn.one_row_cursor()

    def _one(self, statement: bytes, params: dict[str, object] | None = None) -> Row | None:
        """Run a statement that returns at most one row, on the connection's kept cursor."""
        cur = self._cursor
        cur.execute(statement, params)
        return cur.fetchone()

    def _encode(self, spec: RequestSpec) -> bytes:
        return codec.encode(spec, max_bytes=self.max_document_bytes)

    def _decode(self, doc: object, instance_uuid: str) -> RequestSpec:
        return codec.decode(doc, instance_uuid=instance_uuid, database=self.database.name)  # type: ignore[arg-type]

    def create(self, spec: RequestSpec) -> StoredSpec:
        doc = self._encode(spec)
        q = query("request_specs", "insert_spec")
        try:
            row = self._one(
                q.statement,
                {
                    "instance_uuid": spec.instance_uuid,
                    "spec": as_jsonb(doc),
                    "schema_version": codec.SCHEMA_VERSION,
                },
            )
        except pg_errors.UniqueViolation:
            raise SpecExistsError(spec.instance_uuid, self.database.name) from None
        assert row is not None
        return StoredSpec(spec, int(row[0]), self.database.name)  # type: ignore[call-overload]

    def create_many(self, specs: Sequence[RequestSpec]) -> list[StoredSpec]:
        if not specs:
            return []
        with _gc_paused():
            return self._create_many(specs)

    def _create_many(self, specs: Sequence[RequestSpec]) -> list[StoredSpec]:
        docs: list[bytes] = []  # bytes, not wrappers: nothing here for the GC to track
        failures: dict[str, Exception] = {}
        seen: set[str] = set()
        for position, spec in enumerate(specs):
            if not isinstance(spec, RequestSpec):
                failures[f"item {position}"] = SpecEncodeError(
                    None, f"expected a RequestSpec, got {type(spec).__name__}"
                )
                continue
            if spec.instance_uuid in seen:
                failures[spec.instance_uuid] = SpecExistsError(spec.instance_uuid, "this batch")
            seen.add(spec.instance_uuid)
            try:
                docs.append(self._encode(spec))
            except ReqSpecError as exc:
                failures[spec.instance_uuid] = exc
        if failures:
            raise BatchError(failures)
        uuids = [s.instance_uuid for s in specs]
        # One binary COPY statement: atomic on its own (autocommit). In a unit of work it
        # runs under a savepoint, so that a refused batch leaves the caller's transaction
        # usable and the existing uuids can be named.
        guard = contextlib.nullcontext() if self.conn.autocommit else self.conn.transaction()
        try:
            version = codec.SCHEMA_VERSION
            with guard, self.conn.cursor() as cur:
                with cur.copy(query("request_specs", "copy_specs_in").statement) as copy:
                    copy.set_types(["uuid", "jsonb", "int4"])
                    write_row = copy.write_row
                    for key, doc in zip(uuids, docs, strict=True):
                        write_row((uuid_mod.UUID(key), as_jsonb(doc), version))
        except pg_errors.UniqueViolation:
            existing = self.conn.execute(
                query("request_specs", "list_existing_instance_uuids").statement,
                {"instance_uuids": uuids},
            ).fetchall()
            raise BatchError(
                {str(r[0]): SpecExistsError(str(r[0]), self.database.name) for r in existing}
            ) from None
        return [StoredSpec(s, 1, self.database.name) for s in specs]

    def get(self, instance_uuid: str | uuid_mod.UUID) -> StoredSpec:
        key = normalize_uuid(instance_uuid)
        row = self._one(query("request_specs", "get_by_instance_uuid").statement, {"instance_uuid": key})
        if row is None:
            raise SpecNotFoundError(key, self.database.name)
        return StoredSpec(self._decode(row[0], key), int(row[1]), self.database.name)  # type: ignore[call-overload]

    def get_many(self, instance_uuids: Iterable[str | uuid_mod.UUID]) -> SpecBatch:
        keys = list(dict.fromkeys(normalize_uuid(u) for u in instance_uuids))
        found: dict[str, StoredSpec] = {}
        errors: dict[str, SpecDecodeError] = {}
        if keys:
            with _gc_paused():
                name = self.database.name
                decode = codec.decode
                statement = query("request_specs", "get_many_by_instance_uuids").statement
                params = {"instance_uuids": keys}
                with self.conn.cursor() as cur:
                    # Streamed in chunks: specs are decoded here while the server is still
                    # producing the next rows, instead of after the whole result arrived.
                    rows: Iterable[tuple[Any, ...]] = (
                        cur.stream(statement, params, size=STREAM_CHUNK_ROWS)
                        if _CHUNKED_ROWS
                        else cur.execute(statement, params).fetchall()
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
        doc = self._encode(spec)
        row = self._one(
            query("request_specs", "update_spec_if_version").statement,
            {
                "instance_uuid": spec.instance_uuid,
                "spec": as_jsonb(doc),
                "schema_version": codec.SCHEMA_VERSION,
                "expected_version": expected_version,
            },
        )
        if row is not None:
            return StoredSpec(spec, int(row[0]), self.database.name)  # type: ignore[call-overload]
        raise self._explain_failed_write(spec.instance_uuid, expected_version)

    def save_with_operation(
        self, spec: RequestSpec, expected_version: int, operation: bytes | None
    ) -> StoredSpec:
        """Compare-and-swap of the spec together with its operation in flight (an opaque
        JSON document kept in the same row, moved with it; None clears it)."""
        doc = self._encode(spec)
        row = self._one(
            query("request_specs", "update_spec_and_operation_if_version").statement,
            {
                "instance_uuid": spec.instance_uuid,
                "spec": as_jsonb(doc),
                "schema_version": codec.SCHEMA_VERSION,
                "operation": None if operation is None else as_jsonb(operation),
                "expected_version": expected_version,
            },
        )
        if row is not None:
            return StoredSpec(spec, int(row[0]), self.database.name)  # type: ignore[call-overload]
        raise self._explain_failed_write(spec.instance_uuid, expected_version)

    def _explain_failed_write(self, key: str, expected_version: int | None) -> ReqSpecError:
        state = self._one(
            query("request_specs", "get_state_by_instance_uuid").statement, {"instance_uuid": key}
        )
        if state is None:
            if expected_version is None:
                return SpecNotFoundError(key, self.database.name)
            return ConflictError(key, self.database.name, expected_version, None)
        if state[1] != "live":  # sealed source or not-yet-live target of a move
            return SpecMovingError(key, self.database.name)
        return ConflictError(key, self.database.name, expected_version or 0, int(state[0]))  # type: ignore[call-overload]

    def destroy(self, instance_uuid: str | uuid_mod.UUID, *, missing_ok: bool = False) -> bool:
        key = normalize_uuid(instance_uuid)
        row = self._one(query("request_specs", "delete_spec").statement, {"instance_uuid": key})
        if row is not None:
            return True
        error = self._explain_failed_write(key, None)
        if missing_ok and isinstance(error, SpecNotFoundError):
            return False
        raise error

    def exists(self, instance_uuid: str | uuid_mod.UUID) -> bool:
        row = self._one(
            query("request_specs", "exists_spec").statement,
            {"instance_uuid": normalize_uuid(instance_uuid)},
        )
        return bool(row and row[0])

    def count(self) -> int:
        row = self._one(query("request_specs", "count_specs").statement)
        return int(row[0]) if row else 0  # type: ignore[call-overload]


class UnitOfWork(SpecSession):
    """Several operations in one transaction on one database. ``commit()`` is explicit;
    leaving the block without it rolls everything back."""

    def __init__(self, conn: Conn, database: Database, max_document_bytes: int) -> None:
        super().__init__(conn, database, max_document_bytes)
        self.committed = False

    def commit(self) -> None:
        self.conn.commit()
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

    # -- one-statement operations -------------------------------------------------------

    def create(self, context: RequestContext, spec: RequestSpec) -> StoredSpec:
        """Store a new spec; SpecExistsError if the instance already has one there."""
        return self._run(context, lambda s: s.create(spec))

    def create_many(self, context: RequestContext, specs: Sequence[RequestSpec]) -> list[StoredSpec]:
        """Store many new specs in one round trip: all of them, or none (BatchError)."""
        return self._run(context, lambda s: s.create_many(specs))

    def get(self, context: RequestContext, instance_uuid: str | uuid_mod.UUID) -> StoredSpec:
        """The live spec of an instance; SpecNotFoundError if there is none there."""
        return self._run(context, lambda s: s.get(instance_uuid))

    def get_many(
        self, context: RequestContext, instance_uuids: Iterable[str | uuid_mod.UUID]
    ) -> SpecBatch:
        """Many specs in one round trip; corrupt rows are reported in ``errors``."""
        return self._run(context, lambda s: s.get_many(instance_uuids))

    def save(self, context: RequestContext, spec: RequestSpec, *, expected_version: int) -> StoredSpec:
        """Compare-and-swap: write only if the stored version is ``expected_version``."""
        return self._run(context, lambda s: s.save(spec, expected_version))

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
        """Every live spec of one database, fetched ``batch_size`` rows at a time through a
        server-side cursor, so memory stays bounded whatever the table size. A row that
        cannot be decoded is passed to ``on_error`` (logged by default) and skipped; with
        ``on_error=None`` it raises instead."""
        database = self.topology.database(context.database)
        with self.connections.connection(database.name) as conn:
            conn.autocommit = False
            try:
                with translated_errors(database):
                    with conn.cursor(name=f"reqspec_iter_{uuid_mod.uuid4().hex[:12]}") as cur:
                        cur.itersize = batch_size
                        cur.execute(query("request_specs", "list_specs").statement)
                        while rows := cur.fetchmany(batch_size):
                            for raw_uuid, doc, version in rows:
                                key = str(raw_uuid)
                                try:
                                    spec = codec.decode(doc, instance_uuid=key, database=database.name)
                                except SpecDecodeError as exc:
                                    if on_error is None:
                                        raise
                                    on_error(exc)
                                    continue
                                yield StoredSpec(spec, int(version), database.name)
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                    conn.autocommit = True
