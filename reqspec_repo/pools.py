"""One connection pool per database of the topology, opened lazily, closed by the owner.

Every connection gets statement, lock and idle-in-transaction timeouts (sent in the
startup packet, so they cost no round trip), so no call waits forever on a hung server.
Driver errors are translated into the library's typed errors with passwords masked.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Iterator

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from .config import Database, Topology
from .documents import register_document_types
from .dsn import mask_text, password_of
from .errors import (
    DatabaseUnavailableError,
    ReadOnlyDatabaseError,
    ReqSpecError,
    SchemaError,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def translated_errors(database: Database) -> Iterator[None]:
    """Turn psycopg errors into typed library errors naming the database, password masked."""
    try:
        yield
    except ReqSpecError:
        raise
    except pg_errors.ReadOnlySqlTransaction:
        raise ReadOnlyDatabaseError(database.name) from None
    except pg_errors.UndefinedTable:
        raise SchemaError(
            database.name, "the reqspec tables are missing; run `reqspec migrate` first"
        ) from None
    except (pg_errors.QueryCanceled, pg_errors.LockNotAvailable) as exc:
        raise DatabaseUnavailableError(database.name, f"timed out ({_first_line(exc)})") from None
    except PoolTimeout:
        raise DatabaseUnavailableError(database.name, "no connection could be had in time") from None
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        secret = password_of(database.dsn)
        message = mask_text(_first_line(exc), [secret] if secret else [])
        raise DatabaseUnavailableError(database.name, message) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Connections:
    """Owns the pools of one topology. Use as a context manager, or call ``close()``."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._pools: dict[str, ConnectionPool[psycopg.Connection[tuple[object, ...]]]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"Connections(databases={self.topology.database_names!r}, open={sorted(self._pools)!r})"

    def connection_options(self) -> str:
        s = self.topology.settings
        return (
            f"-c statement_timeout={s.statement_timeout_ms}"
            f" -c lock_timeout={s.lock_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={s.idle_in_transaction_timeout_ms}"
        )

    def pool(self, name: str) -> ConnectionPool[psycopg.Connection[tuple[object, ...]]]:
        """The pool of database ``name``, opened on first use."""
        database = self.topology.database(name)
        pool = self._pools.get(name)
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise ReqSpecError("these connections are closed")
            pool = self._pools.get(name)
            if pool is None:
                s = self.topology.settings
                pool = ConnectionPool(
                    database.dsn,
                    min_size=s.pool_min_size,
                    max_size=s.pool_max_size,
                    timeout=float(s.connect_timeout_s),
                    open=False,
                    name=f"reqspec-{name}",
                    kwargs={
                        "autocommit": True,
                        "connect_timeout": s.connect_timeout_s,
                        "options": self.connection_options(),
                        "application_name": "reqspec-repo",
                    },
                    reconnect_timeout=60.0,
                    configure=register_document_types,
                )
                pool.open(wait=False)
                self._pools[name] = pool
                log.debug("opened pool for database %s", database)
        return pool

    @contextlib.contextmanager
    def connection(self, name: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """A pooled autocommit connection to database ``name``, errors translated."""
        database = self.topology.database(name)
        with translated_errors(database):
            with self.pool(name).connection() as conn:
                yield conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
