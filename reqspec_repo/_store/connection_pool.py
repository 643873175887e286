"""The connection pool of one database: a stack of idle connections under one lock.

Why not psycopg_pool: its ``getconn`` + ``putconn`` cost ~8 us of client CPU per call
right after a round trip (three log calls, stats, a check hook, a reset hook and a dozen
Python frames), measured side by side against this pool's ~2.5 us; that was a tenth of a
repository ``get``. What this pool keeps of it:

* a size between ``min_size`` (opened up front, so that a first caller does not queue)
  and ``max_size``, grown on demand by the caller that needs the connection (no
  background threads: a caller that cannot connect gets the reason at once, and the
  next call tries again, which is how the pool heals after a server restart);
* waiting callers are served first come, first served: a returned connection is handed
  to the oldest waiter, never taken by a caller that came later;
* a returned connection left in a transaction is rolled back, one left mid-statement or
  broken is closed (and its place given to a waiter, who connects anew);
* connections are replaced after ``max_lifetime_s``, and idle ones beyond ``min_size``
  closed after ``max_idle_s``, as psycopg_pool does with the same defaults;
* :meth:`ConnectionPool.check` tests the idle connections (after one was found broken).

The idle connections are a stack (last returned, first given): a caller working alone
keeps one warm server process rather than going round all of them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Generic, TypeVar

import psycopg
from psycopg import pq

log = logging.getLogger(__name__)

# libpq gives plain ints: compared by value.
_IDLE = int(pq.TransactionStatus.IDLE)
_IN_TRANSACTION = (int(pq.TransactionStatus.INTRANS), int(pq.TransactionStatus.INERROR))

#: psycopg_pool's defaults: replace a connection after an hour, close surplus idle ones
#: after ten minutes.
MAX_LIFETIME_S = 3600.0
MAX_IDLE_S = 600.0


class PoolTimeout(Exception):
    """No connection became free within the pool's timeout."""


class PoolClosed(Exception):
    """The pool is closed."""


class PooledConnection(psycopg.Connection[tuple[object, ...]]):
    """What the pool keeps with each of its connections."""

    _pool_expires_at: float = 0.0  # monotonic clock; past it, closed when returned
    _pool_idle_since: float = 0.0


C = TypeVar("C", bound=PooledConnection)


class _Waiter(Generic[C]):
    """A caller waiting for a connection: released with one (``conn``), with the right
    to open a new one (``place``), or with neither when the pool closes."""

    __slots__ = ("conn", "place", "ready")

    def __init__(self) -> None:
        self.conn: C | None = None
        self.place = False
        self.ready = threading.Lock()
        self.ready.acquire()


class ConnectionPool(Generic[C]):
    """``min_size`` to ``max_size`` connections made by ``connect``; see the module."""

    def __init__(
        self,
        connect: Callable[[], C],
        *,
        name: str,
        min_size: int,
        max_size: int,
        timeout_s: float,
        max_lifetime_s: float = MAX_LIFETIME_S,
        max_idle_s: float = MAX_IDLE_S,
    ) -> None:
        self.name = name
        self.min_size = min_size
        self.max_size = max_size
        self.timeout_s = timeout_s
        self.max_lifetime_s = max_lifetime_s
        self.max_idle_s = max_idle_s
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: list[C] = []
        self._waiting: deque[_Waiter[C]] = deque()
        self._size = 0  # connections open, or being opened, by this pool
        self._closed = False

    def __repr__(self) -> str:
        return f"<ConnectionPool {self.name!r} size={self._size} idle={len(self._idle)} waiting={len(self._waiting)}>"

    # -- opening and closing

    def open(self) -> None:
        """Make the ``min_size`` connections now; on failure close what was made and raise
        the connection error."""
        made: list[C] = []
        try:
            for _ in range(self.min_size):
                made.append(self._new_connection())
        except BaseException:
            for conn in made:
                conn.close()
            self._closed = True
            raise
        with self._lock:
            self._size += len(made)
            self._idle.extend(made)

    def close(self) -> None:
        """Close the idle connections; the ones in use are closed when given back, and
        waiting callers get PoolClosed."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            waiting, self._waiting = self._waiting, deque()
            self._size -= len(idle)
        for waiter in waiting:
            waiter.ready.release()  # conn None on a closed pool: PoolClosed
        for conn in idle:
            conn.close()

    def stats(self) -> dict[str, int]:
        """``size`` (open or opening), ``idle`` and ``waiting``, at this instant."""
        with self._lock:
            return {"size": self._size, "idle": len(self._idle), "waiting": len(self._waiting)}

    # -- lending

    def getconn(self) -> C:
        """An idle connection, else a new one if there is room, else the first one given
        back within ``timeout_s`` (PoolTimeout). A failed connect raises its error."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is closed")
            if self._size < self.max_size:
                self._size += 1
                waiter = None
            else:
                waiter = _Waiter[C]()
                self._waiting.append(waiter)
        if waiter is not None:
            conn = self._wait(waiter)
            if conn is not None:
                return conn
        return self._grow()

    def _wait(self, waiter: _Waiter[C]) -> C | None:
        """The connection handed to ``waiter``; None if it was given a place to open one."""
        try:
            served = waiter.ready.acquire(timeout=self.timeout_s)
        except BaseException:  # interrupted (KeyboardInterrupt ...): give back what came
            if not self._leave(waiter):
                if waiter.conn is not None:
                    self.putconn(waiter.conn)
                elif waiter.place:
                    self._release_place()
            raise
        if not served and self._leave(waiter):
            raise PoolTimeout(f"no connection of pool {self.name!r} was free within {self.timeout_s:g} s")
        # Served (maybe just as the wait timed out): take what it was given.
        if waiter.conn is None and not waiter.place:
            raise PoolClosed(f"pool {self.name!r} is closed")
        return waiter.conn

    def _leave(self, waiter: _Waiter[C]) -> bool:
        """Take ``waiter`` out of the queue; False if it was served meanwhile."""
        with self._lock:
            try:
                self._waiting.remove(waiter)
            except ValueError:
                return False
            return True

    def _grow(self) -> C:
        """Open a connection in the place reserved for it (``_size`` counts it already)."""
        try:
            return self._new_connection()
        except BaseException:
            self._release_place()
            raise

    def _new_connection(self) -> C:
        conn = self._connect()
        conn._pool_expires_at = monotonic() + self.max_lifetime_s * (1.0 - 0.05 * random.random())
        return conn

    def putconn(self, conn: C) -> None:
        """Give a connection back: to the oldest waiter, else to the idle stack. One left
        in a transaction is rolled back; one broken, busy or past its lifetime is closed."""
        status = conn.pgconn.transaction_status
        if status != _IDLE and not self._reset(conn, status):
            self._discard(conn)
            return
        now = monotonic()
        if now > conn._pool_expires_at:
            log.debug("pool %s: replacing a connection past its lifetime", self.name)
            self._discard(conn)
            return
        conn._pool_idle_since = now
        surplus = None
        with self._lock:
            if self._closed:
                self._size -= 1
            elif self._waiting:
                waiter = self._waiting.popleft()
                waiter.conn = conn
                waiter.ready.release()
                return
            else:
                idle = self._idle
                idle.append(conn)
                # The bottom of the stack is the longest idle: closed past max_idle_s
                # while the pool is over its minimum.
                if self._size > self.min_size and now - idle[0]._pool_idle_since > self.max_idle_s:
                    surplus = idle.pop(0)
                    self._size -= 1
                else:
                    return
        (surplus or conn).close()

    def _reset(self, conn: C, status: int) -> bool:
        """Roll back a connection given back in a transaction; False if it must go."""
        if status not in _IN_TRANSACTION:
            return False  # broken (UNKNOWN) or mid-statement (ACTIVE)
        log.warning("pool %s: rolling back a connection given back inside a transaction", self.name)
        try:
            conn.rollback()
        except psycopg.Error:
            return False
        return conn.pgconn.transaction_status == _IDLE

    def _discard(self, conn: C) -> None:
        try:
            conn.close()
        finally:
            self._release_place()

    def _release_place(self) -> None:
        """A connection of the pool is gone: its place goes to the oldest waiter (who
        opens a new one), else the pool shrinks."""
        with self._lock:
            if self._waiting and not self._closed:
                waiter = self._waiting.popleft()
                waiter.place = True
                waiter.ready.release()
                return
            self._size -= 1

    # -- health

    def check(self, probe: Callable[[C], object]) -> None:
        """Run ``probe`` on each idle connection (taken out meanwhile): the ones it fails
        on are closed, the others given back."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            try:
                probe(conn)
            except psycopg.Error:
                log.debug("pool %s: an idle connection failed its check; closed", self.name)
                self._discard(conn)
                continue
            self.putconn(conn)
