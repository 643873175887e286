"""The connection pool of one database (reqspec_repo._store.connection_pool), on a real
server: who gets which connection, waiting, what a returned connection goes through,
lifetime, idle surplus, health check and closing. Waits are on events, never sleeps."""

from __future__ import annotations

import threading

import psycopg
import pytest

from reqspec_repo._store.connection_pool import ConnectionPool, PoolClosed, PooledConnection, PoolTimeout


@pytest.fixture
def make_pool(pg_server):
    made: list[ConnectionPool[PooledConnection]] = []
    dsn = pg_server.dsn("postgres")

    def make(**kwargs) -> ConnectionPool[PooledConnection]:
        options = {"name": "test", "min_size": 1, "max_size": 2, "timeout_s": 5.0, **kwargs}
        pool = ConnectionPool(lambda: PooledConnection.connect(dsn, autocommit=True), **options)
        pool.open()
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


def backend(conn: PooledConnection) -> int:
    return conn.info.backend_pid


def test_a_lone_caller_gets_the_connection_it_gave_back_last(make_pool):
    pool = make_pool(min_size=3, max_size=3)
    assert pool.stats() == {"size": 3, "idle": 3, "waiting": 0}
    first = pool.getconn()
    pid = backend(first)
    pool.putconn(first)
    for _ in range(10):
        conn = pool.getconn()
        assert backend(conn) == pid  # last in, first out: the warm server process
        pool.putconn(conn)


def test_grows_on_demand_up_to_max_size_then_times_out(make_pool):
    pool = make_pool(min_size=1, max_size=2, timeout_s=0.2)
    a, b = pool.getconn(), pool.getconn()
    assert backend(a) != backend(b)
    assert pool.stats()["size"] == 2
    with pytest.raises(PoolTimeout, match="no connection of pool 'test' was free within 0.2 s"):
        pool.getconn()
    assert pool.stats() == {"size": 2, "idle": 0, "waiting": 0}  # the waiter left the queue
    pool.putconn(a)
    pool.putconn(b)
    assert pool.stats() == {"size": 2, "idle": 2, "waiting": 0}


def test_waiters_are_served_first_come_first_served(make_pool):
    pool = make_pool(min_size=1, max_size=1, timeout_s=30.0)
    held = pool.getconn()
    served: list[int] = []
    threads = []
    for n in range(3):
        def wait(n: int = n) -> None:
            conn = pool.getconn()
            served.append(n)
            pool.putconn(conn)

        t = threading.Thread(target=wait)
        t.start()
        threads.append(t)
        # the next waiter starts only once this one is queued
        while pool.stats()["waiting"] < n + 1:
            threading.Event().wait(0.001)
    pool.putconn(held)
    for t in threads:
        t.join(30)
    assert served == [0, 1, 2]
    assert pool.stats() == {"size": 1, "idle": 1, "waiting": 0}


def test_a_connection_given_back_in_a_transaction_is_rolled_back(make_pool, pg_server):
    pool = make_pool()
    conn = pool.getconn()
    conn.autocommit = False
    conn.execute("CREATE TEMP TABLE pool_rollback (x int)")
    pool.putconn(conn)
    again = pool.getconn()
    assert again is conn
    assert again.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE
    again.autocommit = True
    assert again.execute("SELECT to_regclass('pool_rollback')").fetchone() == (None,)
    pool.putconn(again)


def test_a_broken_connection_is_closed_and_its_place_given_to_a_waiter(make_pool, pg_server):
    pool = make_pool(min_size=1, max_size=1, timeout_s=30.0)
    broken = pool.getconn()
    got: list[PooledConnection] = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn()))
    waiter.start()
    while pool.stats()["waiting"] < 1:
        threading.Event().wait(0.001)
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend(broken)])
    with pytest.raises(psycopg.OperationalError):
        broken.execute("SELECT 1")
    pool.putconn(broken)
    waiter.join(30)
    assert broken.closed
    (fresh,) = got
    assert fresh is not broken and fresh.execute("SELECT 1").fetchone() == (1,)
    assert pool.stats() == {"size": 1, "idle": 0, "waiting": 0}
    pool.putconn(fresh)


def test_a_connection_past_its_lifetime_is_replaced(make_pool):
    pool = make_pool(min_size=0, max_size=1, max_lifetime_s=0.0)
    first = pool.getconn()
    pool.putconn(first)
    assert first.closed and pool.stats()["size"] == 0
    second = pool.getconn()
    assert second is not first and second.execute("SELECT 1").fetchone() == (1,)
    pool.putconn(second)


def test_idle_connections_over_the_minimum_are_closed(make_pool):
    pool = make_pool(min_size=1, max_size=3, max_idle_s=0.0)
    a, b, c = pool.getconn(), pool.getconn(), pool.getconn()
    for conn in (a, b, c):
        pool.putconn(conn)
    # each return closes the longest-idle one while the pool is over its minimum
    assert pool.stats() == {"size": 1, "idle": 1, "waiting": 0}
    assert a.closed and b.closed and not c.closed


def test_check_closes_the_idle_connections_that_fail(make_pool, pg_server):
    pool = make_pool(min_size=2, max_size=2)
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend(a)])
    pool.check(lambda conn: conn.execute("SELECT 1"))
    assert a.closed and not b.closed
    assert pool.stats() == {"size": 1, "idle": 1, "waiting": 0}


def test_closing_wakes_the_waiters_and_closes_what_comes_back(make_pool):
    pool = make_pool(min_size=1, max_size=1, timeout_s=30.0)
    held = pool.getconn()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.getconn()
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    while pool.stats()["waiting"] < 1:
        threading.Event().wait(0.001)
    pool.close()
    waiter.join(30)
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)
    pool.putconn(held)
    assert held.closed and pool.stats()["size"] == 0
    with pytest.raises(PoolClosed):
        pool.getconn()


def test_a_failed_connect_gives_its_place_back(pg_server):
    dsn = pg_server.dsn("postgres")
    attempts = []

    def connect() -> PooledConnection:
        attempts.append(1)
        if len(attempts) == 2:
            raise psycopg.OperationalError("refused (as the test says)")
        return PooledConnection.connect(dsn, autocommit=True)

    # max_lifetime_s 0: each connection is closed when given back, the next one opened anew
    pool = ConnectionPool(connect, name="test", min_size=0, max_size=1, timeout_s=5.0, max_lifetime_s=0.0)
    try:
        pool.open()
        pool.putconn(pool.getconn())  # attempt 1
        with pytest.raises(psycopg.OperationalError, match="refused"):
            pool.getconn()  # attempt 2 fails: its place is given back
        assert pool.stats()["size"] == 0
        conn = pool.getconn()  # attempt 3
        assert conn.execute("SELECT 1").fetchone() == (1,)
        pool.putconn(conn)
        assert len(attempts) == 3
    finally:
        pool.close()
