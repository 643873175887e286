"""What every server round trip of a named query gets: a client-side deadline, and (behind
a transaction-mode pooler) the session timeouts, re-applied in its own transaction.

The deadline. ``statement_timeout`` is enforced by the server, so it cannot fire when the
server is hung (stopped, frozen VM, black-holed network while the kernel still ACKs). A
round trip on a connection that carries a ``deadline_s`` is therefore watched by one
daemon thread: past the deadline it shuts the connection's socket down (``socket.
shutdown`` on the descriptor psycopg exposes, ``Connection.fileno()``), which makes the
waiting libpq call fail at once; the connection is then closed (never reused) and the
caller gets an OperationalError saying so (translated to DatabaseUnavailableError). Only
public psycopg API is used: no override of psycopg's internal wait loop.

The timeouts. A transaction-mode pooler hands each transaction to any server
connection, so settings sent at connect time (the startup packet's ``options``) would
apply to someone else's session, or be refused. A connection that carries
``transaction_timeouts`` runs each statement pipelined behind ``set_config(..., true)``
(local to the transaction) and a Sync: one round trip, one transaction - the implicit
transaction of the extended protocol when in autocommit, the caller's otherwise.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from time import monotonic as _monotonic
from typing import Any, TypeVar

import psycopg
from psycopg import pq

_T = TypeVar("_T")
#: How often the watchdog looks at the round trips in flight: the precision of a deadline.
TICK_S = 0.1


#: One round trip being watched: (connection, deadline on the monotonic clock). A tuple
#: made per arming, so that a connection re-armed for its next round trip is a new key.
Watch = tuple[psycopg.Connection[Any], float]


class Watchdog:
    """One daemon thread cutting the connections whose round trip outlived its deadline.

    Arming is a dict insert, disarming a dict pop (atomic under the GIL, no lock on the
    hot path); whichever of the caller and the thread pops a watch first owns it, so a
    caller whose pop finds nothing knows its round trip was cut. The thread, started on
    first use, looks at what is in flight every ``TICK_S``."""

    def __init__(self) -> None:
        self.active: dict[Watch, None] = {}
        self.started = False
        self._start_lock = threading.Lock()
        # A forked child has no watchdog thread: it starts its own on first use.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self.active = {}
        self.started = False
        self._start_lock = threading.Lock()

    def arm(self, conn: psycopg.Connection[Any], seconds: float) -> Watch:
        watch = (conn, _monotonic() + seconds)
        self.active[watch] = None
        if not self.started:
            self.start()
        return watch

    def disarm(self, watch: Watch) -> bool:
        """Stop watching; True if the deadline had passed and the connection was cut."""
        try:
            del self.active[watch]
        except KeyError:
            return True
        return False

    def start(self) -> None:
        with self._start_lock:
            if not self.started:
                threading.Thread(target=self._run, name="reqspec-deadlines", daemon=True).start()
                self.started = True

    def _run(self) -> None:
        while True:
            active = self.active
            now = _monotonic()
            for watch in list(active):
                if watch[1] <= now:
                    try:
                        del active[watch]
                    except KeyError:
                        continue  # disarmed meanwhile: the round trip ended in time
                    _cut(watch[0])
            time.sleep(TICK_S)


def _cut(conn: psycopg.Connection[Any]) -> None:
    """Make the blocked libpq call on ``conn`` fail now: shut its socket down (a dup of
    the descriptor, so libpq's own stays valid until the connection is closed)."""
    try:
        fd = os.dup(conn.fileno())
    except (OSError, psycopg.Error):
        return  # already closed
    try:
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


WATCHDOG = Watchdog()


def deadline_error(seconds: float) -> psycopg.OperationalError:
    return psycopg.OperationalError(
        f"no answer from the server within {seconds:g} s (client-side deadline); connection closed"
    )


def _settle(watch: Watch, conn: psycopg.Connection[Any]) -> bool:
    """Stop watching a round trip; True if the watchdog had cut it, and then the
    connection is closed (its socket is shut: never hand it out again)."""
    if WATCHDOG.disarm(watch):
        conn.close()
        return True
    return False


@contextlib.contextmanager
def bounded_block(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """The block (one round trip, a COPY, a pipeline, one streamed statement) under the
    connection's client-side deadline, if it has one."""
    seconds: float | None = getattr(conn, "deadline_s", None)
    if seconds is None:
        yield
        return
    watch = WATCHDOG.arm(conn, seconds)
    try:
        yield
    except psycopg.Error:
        if _settle(watch, conn):
            raise deadline_error(seconds) from None
        raise
    except BaseException:
        _settle(watch, conn)
        raise
    _settle(watch, conn)  # answered, but maybe too late: then the socket is shut already


def bounded(conn: psycopg.Connection[Any], call: Callable[[], _T]) -> _T:
    """``call()`` (one round trip on ``conn``) under the connection's client-side
    deadline, if it has one."""
    with bounded_block(conn):
        return call()


_SET_TIMEOUTS: bytes | None = None


def timeouts_of(conn: psycopg.Connection[Any]) -> Mapping[str, str] | None:
    """The timeouts a transaction-mode pooled connection re-applies per transaction."""
    return getattr(conn, "transaction_timeouts", None)


def apply_timeouts(conn: psycopg.Connection[Any]) -> None:
    """In a transaction the caller opened (or a pipeline it runs): set the timeouts for
    it, when the connection is behind a transaction-mode pooler."""
    timeouts = timeouts_of(conn)
    if timeouts is not None:
        conn.execute(_set_timeouts(), timeouts)


def _set_timeouts() -> bytes:
    global _SET_TIMEOUTS
    if _SET_TIMEOUTS is None:
        from .queries import query  # queries.py imports this module

        _SET_TIMEOUTS = query("_session", "set_transaction_timeouts").statement
    return _SET_TIMEOUTS


def execute(cur: psycopg.Cursor[Any], statement: bytes, params: Mapping[str, object] | None) -> None:
    """Run one statement on ``cur``: bounded by the deadline, behind the per-transaction
    timeouts where the pooler needs them (pipelined: still one round trip)."""
    conn = cur.connection
    timeouts = getattr(conn, "transaction_timeouts", None)
    if timeouts is not None and conn.pgconn.pipeline_status == pq.PipelineStatus.OFF:
        def pipelined() -> None:
            with conn.pipeline() as pipeline:
                conn.execute(_set_timeouts(), timeouts)
                cur.execute(statement, params)
                pipeline.sync()

        bounded(conn, pipelined)
        return
    # The hot path (one statement, no pooler): bounded() inlined, no closure.
    seconds: float | None = getattr(conn, "deadline_s", None)
    if seconds is None:
        cur.execute(statement, params)
        return
    watch = WATCHDOG.arm(conn, seconds)
    try:
        cur.execute(statement, params)
    except BaseException as exc:
        if _settle(watch, conn) and isinstance(exc, psycopg.Error):
            raise deadline_error(seconds) from None
        raise
    _settle(watch, conn)  # answered, but maybe too late: then the socket is shut already


@contextlib.contextmanager
def in_transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """For a statement that cannot be pipelined (COPY, a streamed result): behind a
    transaction-mode pooler, run it in a transaction (a savepoint inside the caller's)
    whose first statement sets the timeouts; otherwise as it is."""
    if timeouts_of(conn) is None:
        yield
        return
    with conn.transaction():
        bounded(conn, lambda: apply_timeouts(conn))
        yield
