"""Apply the yoyo migrations in ``migrations/`` to the API database and every cell.

One migration set serves every database. yoyo's lock table makes concurrent runs safe:
a second runner waits for the first and then finds nothing left to apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
from psycopg import conninfo
from yoyo import read_migrations
from yoyo.backends import DatabaseBackend, get_backend_class
from yoyo.connections import DatabaseURI

from .._errors import ReqSpecError, SchemaError, first_line
from .config import Database, Topology
from .dsn import mask_text, password_of
from .queries import query
from .resources import migrations_dir

log = logging.getLogger(__name__)

MIGRATION_TABLE = "_yoyo_migration"
LOCK_TIMEOUT_S = 60


@attrs.frozen
class MigrationResult:
    database: str
    masked_dsn: str
    applied: int
    total: int


@attrs.frozen
class SchemaStatus:
    database: str
    applied: list[str]
    pending: list[str]
    unknown: list[str]  # applied there, unknown to this code: the schema is newer


class MigrationError(ReqSpecError):
    def __init__(self, database: Database, message: str) -> None:
        self.database = database.name
        super().__init__(f"migrating database {database.name!r} ({database.masked_dsn}) failed: {message}")


def _backend(database: Database) -> DatabaseBackend:
    """A yoyo backend (psycopg 3) built from the DSN without going through a URI string,
    so any DSN form (URI or key=value, unix socket hosts, odd passwords) works."""
    params: dict[str, Any] = dict(conninfo.conninfo_to_dict(database.dsn))
    uri = DatabaseURI(
        scheme="postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        hostname=None,
        port=None,
        database=params.pop("dbname", None),
        args={k: str(v) for k, v in params.items()},  # host, port, sslmode ... as kwargs
    )
    backend: DatabaseBackend = get_backend_class(uri.scheme)(uri, MIGRATION_TABLE)
    backend.init_database()
    return backend


def _migrations() -> Any:
    return read_migrations(str(migrations_dir()))


def _guarded(database: Database, action: Callable[[], Any]) -> Any:
    secret = password_of(database.dsn)
    try:
        return action()
    except ReqSpecError:
        raise
    except Exception as exc:  # any driver/yoyo error: one line, password masked
        raise MigrationError(database, mask_text(first_line(exc), [secret] if secret else [])) from None


def schema_status(database: Database) -> SchemaStatus:
    """Which migrations are applied, pending, or unknown (from newer code) in a database."""

    def run() -> SchemaStatus:
        migrations = _migrations()
        known = {m.id for m in migrations}
        with _backend(database) as backend:
            applied_ids = _applied_ids(backend)
        return SchemaStatus(
            database.name,
            [m.id for m in migrations if m.id in applied_ids],
            [m.id for m in migrations if m.id not in applied_ids],
            sorted(applied_ids - known),
        )

    result: SchemaStatus = _guarded(database, run)
    return result


def _applied_ids(backend: DatabaseBackend) -> set[str]:
    if MIGRATION_TABLE not in backend.list_tables():
        return set()
    cursor = backend.execute(query("_yoyo_migration", "list_applied_migration_ids").sql)
    return {row[0] for row in cursor.fetchall()}


def check_schema(database: Database) -> None:
    """Raise SchemaError unless the database is fully migrated and not newer than the code."""
    status = schema_status(database)
    if status.unknown:
        raise SchemaError(
            database.name,
            f"schema is newer than this code (unknown migrations: {', '.join(status.unknown)}); "
            "upgrade reqspec-repo",
        )
    if status.pending:
        raise SchemaError(
            database.name,
            f"{len(status.pending)} migration(s) not applied; run `reqspec migrate`",
        )


def migrate_database(database: Database) -> MigrationResult:
    """Apply every pending migration to one database (a no-op when up to date)."""

    def run() -> MigrationResult:
        migrations = _migrations()
        for attempt in range(3):
            try:
                with _backend(database) as backend:
                    with backend.lock(timeout=LOCK_TIMEOUT_S):
                        unknown = _applied_ids(backend) - {m.id for m in migrations}
                        if unknown:
                            raise SchemaError(
                                database.name,
                                "schema is newer than this code (unknown migrations: "
                                f"{', '.join(sorted(unknown))}); refusing to migrate",
                            )
                        pending = backend.to_apply(migrations)
                        backend.apply_migrations(pending)
                        return MigrationResult(
                            database.name, database.masked_dsn, len(pending), len(migrations)
                        )
            except SchemaError:
                raise
            except Exception:
                # Two first-ever runs can race creating yoyo's own tables; the loser retries.
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    result: MigrationResult = _guarded(database, run)
    return result


def rollback_database(database: Database) -> int:
    """Roll back every applied migration of one database (for tests and disaster drills)."""

    def run() -> int:
        migrations = _migrations()
        with _backend(database) as backend:
            with backend.lock(timeout=LOCK_TIMEOUT_S):
                to_rollback = backend.to_rollback(migrations)
                backend.rollback_migrations(to_rollback)
                return len(to_rollback)

    count: int = _guarded(database, run)
    return count


def migrate_topology(
    topology: Topology, on_result: Callable[[MigrationResult], None] | None = None
) -> list[MigrationResult]:
    """Migrate the API database, then each cell; stops at the first failing database."""
    results = []
    for database in topology.all_databases():
        result = migrate_database(database)
        log.info("migrated %s: %d applied", database, result.applied)
        if on_result:
            on_result(result)
        results.append(result)
    return results
