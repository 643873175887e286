"""The ``pooler`` setting against a real PgBouncer: what each mode needs, and typed errors
whatever the pooler does."""

from __future__ import annotations

import threading

import pytest
from helpers import build_topology
from movecheck import assert_invariant

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import DatabaseUnavailableError
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._moving.recovery import recover, verify
from reqspec_repo._store.config import API, Settings
from reqspec_repo._store.context import api_context
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository
from reqspec_repo.testing.pgbouncer import PgBouncer, find_pgbouncer


def through(bouncer: PgBouncer, topology, settings: Settings):
    """The same databases, reached through ``bouncer``."""
    def name_of(dsn: str) -> str:
        return dsn.rsplit("/", 1)[1]
    cells = {cell: bouncer.dsn(name_of(db.dsn)) for cell, db in topology.cells.items()}
    return type(topology).from_dsns(bouncer.dsn(name_of(topology.api.dsn)), cells, settings)


@pytest.fixture
def direct_topology(pg_server):
    topology, drop = build_topology(pg_server)
    yield topology
    drop()


def test_startup_options_through_pgbouncer_are_a_typed_error_naming_the_setting(pg_server, direct_topology, pgbouncers):
    bouncer = pgbouncers.front(pg_server)
    topology = through(bouncer, direct_topology, Settings(pooler="none", connect_timeout_s=2))
    with RequestSpecRepository.from_topology(topology) as repo:
        with pytest.raises(DatabaseUnavailableError) as err:
            repo.count(api_context())
    assert "unsupported startup parameter" in str(err.value) and 'pooler = "transaction"' in str(err.value)
    assert err.value.retryable and err.value.database == API


def test_session_mode_sets_the_timeouts_once_per_connection_and_moves_work(pg_server, direct_topology, pgbouncers):
    bouncer = pgbouncers.front(pg_server, pool_mode="session")
    settings = Settings(pooler="session", statement_timeout_ms=4321, pool_max_size=2)
    topology = through(bouncer, direct_topology, settings)
    with RequestSpecRepository.from_topology(topology) as repo:
        with repo.connections.connection("cell1") as conn:
            assert conn.execute(b"SHOW statement_timeout").fetchone()[0] == "4321ms"
        store = SpecStore(repo)
        specs = {s.instance_uuid: s for s in (sample_spec() for _ in range(6))}
        store.create(list(specs.values()))
        assert move_specs(store, specs, "cell1").ok
        assert recover(store).changed == 0 and verify(store).ok
        assert_invariant(store, specs)


def test_transaction_mode_many_threads_few_server_connections_no_prepared_statement_clash(
    pg_server, direct_topology, pgbouncers
):
    """The failure of the issue: with prepared statements, the 6th run of one statement
    prepares it on one server connection and finds it (or not) on another."""
    bouncer = pgbouncers.front(pg_server)
    topology = through(bouncer, direct_topology, Settings(pooler="transaction", pool_max_size=6))
    with RequestSpecRepository.from_topology(topology) as repo:
        with repo.connections.connection(API) as conn:
            assert conn.prepare_threshold is None
        store = SpecStore(repo)
        specs = [sample_spec() for _ in range(12)]
        store.create(specs)
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                for _ in range(10):
                    for s in specs:
                        assert store.get(s.instance_uuid).spec.instance_uuid == s.instance_uuid
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                errors.append(exc)

        readers = [threading.Thread(target=reader) for _ in range(6)]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        assert errors == []


def test_pgbouncer_going_away_is_a_typed_error_and_the_pool_heals(pg_server, direct_topology):
    if find_pgbouncer() is None:
        pytest.skip("pgbouncer is not installed; install it with: apt-get install -y pgbouncer")
    with PgBouncer(pg_server.dsn("postgres")) as bouncer:
        settings = Settings(pooler="transaction", connect_timeout_s=1, statement_timeout_ms=1000)
        topology = through(bouncer, direct_topology, settings)
        with RequestSpecRepository.from_topology(topology) as repo:
            spec = sample_spec()
            repo.create(api_context(), spec)
            port = bouncer.port
            bouncer.stop()
            with pytest.raises(DatabaseUnavailableError) as err:
                repo.get(api_context(), spec.instance_uuid)
            assert err.value.retryable and err.value.database == API
            restarted = PgBouncer(pg_server.dsn("postgres"))
            restarted._password = bouncer._password  # the same credentials, as after a restart
            restarted.start(port=port)
            try:
                for _ in range(50):  # the pool replaces its broken connections
                    try:
                        assert repo.get(api_context(), spec.instance_uuid).spec == spec
                        break
                    except DatabaseUnavailableError:
                        threading.Event().wait(0.1)
                else:
                    pytest.fail("the pool did not heal after PgBouncer came back")
            finally:
                restarted.stop()


def test_without_pgbouncer_the_run_says_so_with_the_install_command(monkeypatch):
    from reqspec_repo.testing import pgbouncer

    monkeypatch.setattr(pgbouncer, "find_pgbouncer", lambda: None)
    line = pgbouncer.summary_line()
    assert line is not None and "NOT installed" in line and "apt-get install -y pgbouncer" in line
    assert "apt-get install -y pgbouncer" in pgbouncer.report_header_line()
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y pgbouncer"):
        pgbouncer.PgBouncers().front(object())
