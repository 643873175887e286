"""One connection pool per database of the topology, opened lazily, closed by the owner.

Every connection gets statement, lock and idle-in-transaction timeouts, so no call waits
forever on a hung server; how depends on the ``pooler`` setting: in the startup packet
(``none``, no round trip), once per connection (``session``), or in every transaction
(``transaction``, see :mod:`reqspec_repo._store.roundtrips`, with server-side prepared
statements off). Each round trip also has a client-side deadline. Driver errors are
translated into the library's typed errors with passwords masked.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg import errors as pg_errors

from .._errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailableError,
    ReadOnlyDatabaseError,
    ReqSpecError,
    SchemaError,
    first_line,
)
from .config import Database, Topology
from .connection_pool import ConnectionPool, PoolClosed, PooledConnection, PoolTimeout
from .documents import register_document_types
from .dsn import mask_text, password_of
from .queries import query
from .uuid_arrays import register_uuid_arrays

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def translate_error(database: Database, exc: BaseException) -> BaseException | None:
    """The typed library error for a driver error, naming the database with the password
    masked; None when ``exc`` should go through as it is."""
    if isinstance(exc, ReqSpecError):
        return None
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return ReadOnlyDatabaseError(database.name)
    if isinstance(exc, pg_errors.UndefinedTable):
        return SchemaError(database.name, "the reqspec tables are missing; run `reqspec migrate` first")
    if isinstance(exc, (pg_errors.QueryCanceled, pg_errors.LockNotAvailable)):
        return DatabaseUnavailableError(database.name, f"timed out ({first_line(exc)})")
    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailableError(database.name, "no connection could be had in time")
    if isinstance(exc, PoolClosed):
        return ReqSpecError("these connections are closed")
    secret = password_of(database.dsn)
    masked = mask_text(first_line(exc), [secret] if secret else []) if isinstance(exc, psycopg.Error) else ""
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return DatabaseUnavailableError(database.name, masked)
    if isinstance(exc, (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)):
        return DatabaseUnavailableError(database.name, f"transient conflict, retry ({masked})")
    if isinstance(exc, (pg_errors.DuplicatePreparedStatement, pg_errors.InvalidSqlStatementName)):
        # A transaction-mode pooler hands each transaction to another server connection.
        return ConfigError(
            f"database {database.name!r}: server-side prepared statements got mixed up ({masked}); "
            'behind a transaction-mode pooler set pooler = "transaction"'
        )
    if isinstance(exc, psycopg.Error):  # whatever else the server or the pooler says
        return DatabaseError(database.name, exc.sqlstate, masked)
    return None


@contextlib.contextmanager
def translated_errors(database: Database) -> Iterator[None]:
    """Turn psycopg errors into typed library errors naming the database, password masked."""
    try:
        yield
    except Exception as exc:
        typed = translate_error(database, exc)
        if typed is None:
            raise
        raise typed from None


class GuardedConnection(PooledConnection):
    """A pooled connection: what its pool's settings say every round trip needs.

    ``deadline_s`` bounds each round trip of a named query on the client side (the
    server's ``statement_timeout`` cannot fire when the server is hung);
    ``transaction_timeouts``, behind a transaction-mode pooler, are re-applied in each
    transaction (:mod:`reqspec_repo._store.roundtrips`). Subclassed per pool by
    :meth:`Connections.pool`.
    """

    deadline_s: ClassVar[float | None] = None
    transaction_timeouts: ClassVar[Mapping[str, str] | None] = None
    _one_row_cursor: psycopg.Cursor[tuple[Any, ...]] | None = None
    #: The last connection failure of this pool (None after a success): says *why* no
    #: connection could be had (refused, bad password, unknown host ...).
    last_connect_error: ClassVar[str | None] = None

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> GuardedConnection:
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            cls.last_connect_error = first_line(exc)
            raise
        cls.last_connect_error = None
        return conn

    def one_row_cursor(self) -> psycopg.Cursor[tuple[Any, ...]]:
        """A cursor kept with this connection for the one-row statements of the repository.

        ``conn.execute()`` builds a new cursor (adapters, transformer) every time, which
        costs ~10-15 us of CPU on a ~150 us round trip. Only one thread uses a pooled
        connection at a time, and the result it keeps until the next statement is one row.
        """
        cur = self._one_row_cursor
        if cur is None or cur.closed:
            cur = self._one_row_cursor = self.cursor()
        return cur


class Connections:
    """Owns the pools of one topology. Use as a context manager, or call ``close()``."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._pools: dict[str, ConnectionPool[GuardedConnection]] = {}
        self._ping = query("_session", "ping")
        self._lock = threading.Lock()
        self._closed = False
        self._checking: set[str] = set()
        self._opening: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"Connections(databases={self.topology.database_names!r}, open={sorted(self._pools)!r})"

    def connection_options(self) -> str:
        """The startup packet's ``options`` (pooler ``none`` only: PgBouncer refuses it)."""
        s = self.topology.settings
        return (
            f"-c statement_timeout={s.statement_timeout_ms}"
            f" -c lock_timeout={s.lock_timeout_ms}"
            f" -c idle_in_transaction_session_timeout={s.idle_in_transaction_timeout_ms}"
        )

    def timeouts(self) -> dict[str, str]:
        """The session timeouts as ``set_config`` parameters."""
        s = self.topology.settings
        return {
            "statement_timeout": str(s.statement_timeout_ms),
            "lock_timeout": str(s.lock_timeout_ms),
            "idle_in_transaction_session_timeout": str(s.idle_in_transaction_timeout_ms),
        }

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg ``connect()`` arguments for the ``pooler`` setting."""
        s = self.topology.settings
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": s.connect_timeout_s,
            "application_name": "reqspec-repo",
        }
        if s.pooler == "none":
            kwargs["options"] = self.connection_options()
        if s.pooler == "transaction":
            # Each statement may run on another server connection: a statement prepared
            # on one is unknown (or, worse, another client's) on the next.
            kwargs["prepare_threshold"] = None
        return kwargs

    def _configure(self, conn: GuardedConnection) -> None:
        register_document_types(conn)
        register_uuid_arrays(conn)
        if self.topology.settings.pooler == "session":
            # The session is this client's until it disconnects: set once, here.
            conn.execute(query("_session", "set_session_timeouts").statement, self.timeouts())

    def client_deadline_s(self) -> float | None:
        """Longest wait for one server round trip: the statement timeout plus a grace of
        ``connect_timeout_s`` (at least 1 s); None when the statement timeout is disabled."""
        s = self.topology.settings
        if s.statement_timeout_ms == 0:
            return None
        return s.statement_timeout_ms / 1000 + max(1, s.connect_timeout_s)

    def pool(self, name: str) -> ConnectionPool[GuardedConnection]:
        """The pool of database ``name``, opened on first use with its ``pool_min_size``
        connections ready (:mod:`reqspec_repo._store.connection_pool`). If they cannot
        be made, DatabaseUnavailableError says why, and the next call tries again."""
        database = self.topology.database(name)
        pool = self._pools.get(name)
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise ReqSpecError("these connections are closed")
            opening = self._opening.setdefault(name, threading.Lock())
        with opening:  # one opener per database; other databases are not held up
            pool = self._pools.get(name)
            if pool is not None:
                return pool
            s = self.topology.settings

            class PoolConnection(GuardedConnection):
                pass

            PoolConnection.deadline_s = self.client_deadline_s()
            if s.pooler == "transaction":
                PoolConnection.transaction_timeouts = self.timeouts()
            dsn, kwargs = database.dsn, self.connect_kwargs()

            def connect() -> GuardedConnection:
                conn = PoolConnection.connect(dsn, **kwargs)
                try:
                    self._configure(conn)
                except BaseException:
                    conn.close()
                    raise
                return conn

            pool = ConnectionPool(
                connect,
                name=f"reqspec-{name}",
                min_size=s.pool_min_size,
                max_size=s.pool_max_size,
                timeout_s=float(s.connect_timeout_s),
            )
            try:
                pool.open()
            except psycopg.Error:
                error = self._unavailable(database, PoolConnection)
                log.debug("could not open the pool for database %s: %s", database, error)
                raise error from None
            with self._lock:
                if self._closed:
                    pool.close()
                    raise ReqSpecError("these connections are closed")
                self._pools[name] = pool
            log.debug("opened pool for database %s", database)
        return pool

    @staticmethod
    def _unavailable(database: Database, connection_class: type[GuardedConnection]) -> DatabaseUnavailableError:
        """The pool could not be opened: the error says why (the last connection
        attempt's failure, password masked)."""
        last = connection_class.last_connect_error
        secret = password_of(database.dsn)
        why = f" (last attempt: {mask_text(last, [secret] if secret else [])})" if last else ""
        if last and "unsupported startup parameter" in last:
            why += '; behind PgBouncer set pooler = "transaction" (or "session")'
        return DatabaseUnavailableError(database.name, f"no connection could be made{why}")

    def checkout(self, database: Database) -> tuple[ConnectionPool[GuardedConnection], GuardedConnection]:
        """A connection of ``database``'s pool, errors translated; give it back with
        ``pool.putconn(conn)`` (which rolls back, or discards, a connection left
        mid-transaction)."""
        pool = self._pools.get(database.name)
        try:
            if pool is None:
                pool = self.pool(database.name)
            return pool, pool.getconn()
        except Exception as exc:
            typed = translate_error(database, exc)
            if typed is None:
                raise
            raise typed from None

    def raise_typed(self, database: Database, conn: GuardedConnection, exc: Exception) -> None:
        """Raise the typed library error for ``exc``, raised by a call on ``conn``; return
        when ``exc`` should go through as it is.

        A connection found broken (server restarted, network cut) also gets the idle
        connections of its pool tested in the background."""
        if isinstance(exc, psycopg.OperationalError) and (conn.broken or conn.closed):
            self._check_later(database.name)
        typed = translate_error(database, exc)
        if typed is not None:
            raise typed from None

    def run(self, database: Database, operation: Callable[[GuardedConnection], _T]) -> _T:
        """``operation`` on a pooled connection, errors translated: :meth:`connection` for
        the one-statement hot paths, without the generator-based context managers."""
        pool, conn = self.checkout(database)
        try:
            return operation(conn)
        except Exception as exc:
            self.raise_typed(database, conn, exc)
            raise
        finally:
            pool.putconn(conn)

    @contextlib.contextmanager
    def connection(self, name: str) -> Iterator[GuardedConnection]:
        """A pooled autocommit connection to database ``name``, errors translated."""
        database = self.topology.database(name)
        pool, conn = self.checkout(database)
        try:
            yield conn
        except Exception as exc:
            self.raise_typed(database, conn, exc)
            raise
        finally:
            pool.putconn(conn)

    def _check_later(self, name: str) -> None:
        """After a broken connection (server restarted, network cut), test the idle
        connections of that pool in the background, so stale ones are replaced before
        other callers get them."""
        with self._lock:
            pool = self._pools.get(name)
            if pool is None or name in self._checking or self._closed:
                return
            self._checking.add(name)

        def run() -> None:
            try:
                pool.check(self._probe)
            except Exception:  # the pool may be closing; nothing to do then
                log.debug("background check of pool %s failed", name, exc_info=True)
            finally:
                with self._lock:
                    self._checking.discard(name)

        threading.Thread(target=run, name=f"reqspec-check-{name}", daemon=True).start()

    def _probe(self, conn: GuardedConnection) -> None:
        """One round trip (bounded by the connection's deadline): does it still work?"""
        self._ping.exec(conn)

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
