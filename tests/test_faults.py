"""Faults of a real server: restart and SIGKILL during traffic, a hung (SIGSTOPped) server,
and a read-only database. Calls fail fast with typed errors, the pools heal by themselves,
and no acknowledged write is lost."""

from __future__ import annotations

import threading
import time
import uuid

import attrs
import pytest
from helpers import build_topology, run_sql

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import DatabaseUnavailableError, ReadOnlyDatabaseError
from reqspec_repo._store.config import API, Settings
from reqspec_repo._store.context import api_context, cell_context
from reqspec_repo._store.repository import RequestSpecRepository

FAST = Settings(statement_timeout_ms=1000, lock_timeout_ms=500, connect_timeout_s=1, pool_max_size=4)


def new_spec():
    return attrs.evolve(sample_spec(), instance_uuid=str(uuid.uuid4()))


def eventually(call, *, within: float = 20.0):
    """Retry ``call`` while it raises DatabaseUnavailableError; the last error propagates."""
    deadline = time.monotonic() + within
    while True:
        try:
            return call()
        except DatabaseUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_until(condition, what: str, *, within: float = 30.0) -> None:
    """Wait for ``condition()`` to hold (polled); the deadline only turns a hang into a
    failure naming ``what``."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {within} s"
        time.sleep(0.02)


def outcome_within(call, seconds: float) -> BaseException | None:
    """Run ``call`` in a thread; fail the test (instead of hanging it) if it is still
    running after ``seconds``. Returns what it raised (None if it returned)."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"call still waiting after {seconds} s"
    return result[0]


class Traffic:
    """Writer threads doing create + get + save; records what was acknowledged."""

    def __init__(self, repo: RequestSpecRepository, threads: int = 3) -> None:
        self.repo = repo
        self.acked: dict[str, int] = {}  # uuid -> acknowledged version
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        ctx = api_context()
        while not self.stop.is_set():
            spec = new_spec()
            try:
                stored = self.repo.create(ctx, spec)
                with self.lock:
                    self.acked[spec.instance_uuid] = stored.version
                saved = self.repo.save(
                    ctx, attrs.evolve(spec, availability_zone="az-2"), expected_version=stored.version
                )
                with self.lock:
                    self.acked[spec.instance_uuid] = saved.version
            except Exception as exc:  # noqa: BLE001 - every failure is checked below
                with self.lock:
                    self.errors.append(exc)
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a traffic thread hangs"


def check_after_outage(repo, topology, traffic: Traffic, outage, *, must_notice: bool = True) -> None:
    with traffic:
        wait_until(lambda: len(traffic.acked) >= 20, "traffic before the outage")
        before = len(traffic.acked)
        outage()
        # the pool heals by itself: the same repository works again
        eventually(lambda: repo.count(api_context()))
        healed_at = len(traffic.acked)
        wait_until(lambda: len(traffic.acked) > healed_at + 10, "traffic to resume after the outage")
    assert before >= 20
    if must_notice:
        assert traffic.errors, "the outage went unnoticed: nothing in flight failed"
    for exc in traffic.errors:
        assert isinstance(exc, DatabaseUnavailableError), repr(exc)
        assert exc.retryable is True and exc.database == API
        assert "\n" not in str(exc)
    # every acknowledged write is there, at (at least) its acknowledged version
    rows = dict(
        run_sql(
            topology, API, "SELECT instance_uuid::text, version FROM request_specs WHERE instance_uuid = ANY(%s::uuid[])",
            [list(traffic.acked)],
        )
    )
    lost = {u: v for u, v in traffic.acked.items() if rows.get(u, 0) < v}
    assert not lost, f"{len(lost)} acknowledged write(s) lost"
    # and they read back through the healed repository
    batch = repo.get_many(api_context(), list(traffic.acked))
    assert not batch.missing and not batch.errors


@pytest.mark.both_paths  # directly and through PgBouncer
def test_server_restart_then_crash_during_traffic(disposable_server, via):
    """Fast-shutdown restart, then SIGKILL + start, each under concurrent writers, with the
    same repository object throughout."""
    server = disposable_server()
    topology, _ = build_topology(server, settings=FAST, via=via)
    with RequestSpecRepository.from_topology(topology) as repo:
        # Behind PgBouncer a fast restart can fall between two transactions of every
        # client: the pooler reconnects and nobody sees it (a crash is always seen, below).
        check_after_outage(repo, topology, Traffic(repo), server.restart, must_notice=via is None)

        def crash() -> None:
            server.kill()
            # while it is down, a call fails fast, typed, naming the database
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailableError) as err:
                repo.get(cell_context("cell1"), str(uuid.uuid4()))
            assert time.monotonic() - started < 4
            assert err.value.retryable and err.value.database == "cell1"
            server.start()

        check_after_outage(repo, topology, Traffic(repo), crash)


@pytest.mark.both_paths  # directly and through PgBouncer
def test_a_hung_server_is_cut_by_the_client_side_deadline(disposable_server, via):
    server = disposable_server()
    topology, _ = build_topology(server, settings=FAST, via=via)
    bound = 1.0 + 1 + 2.0  # statement timeout + grace + scheduling slack
    with RequestSpecRepository.from_topology(topology) as repo:
        spec = new_spec()
        repo.create(api_context(), spec)  # the pool holds an open connection now
        server.pause()
        try:
            # an already-open connection, mid-query: the server never answers
            error = outcome_within(lambda: repo.get(api_context(), spec.instance_uuid), bound)
            assert isinstance(error, DatabaseUnavailableError), repr(error)
            assert "deadline" in str(error) and error.retryable
            # no open connection left: new connections are bounded by connect_timeout
            errors: list[BaseException | None] = []

            attempted = [new_spec() for _ in range(3)]

            def calls() -> None:
                callers = [
                    threading.Thread(target=lambda s=s: errors.append(outcome_within(
                        lambda: repo.create(api_context(), s), bound + 3)))
                    for s in attempted
                ]
                for t in callers:
                    t.start()
                for t in callers:
                    t.join()

            assert outcome_within(calls, bound + 5) is None
            assert len(errors) == 3 and all(isinstance(e, DatabaseUnavailableError) for e in errors), errors
        finally:
            server.resume()
        # after resume the same repository works again
        assert eventually(lambda: repo.get(api_context(), spec.instance_uuid)).spec == spec

        # a unit of work mid-transaction, and an iteration between two fetches
        specs = [new_spec() for _ in range(5)]
        repo.create_many(api_context(), specs)

        in_transaction = [new_spec(), new_spec()]

        def transaction() -> None:
            with repo.unit_of_work(api_context()) as uow:
                uow.create(in_transaction[0])
                server.pause()
                uow.create(in_transaction[1])
                uow.commit()

        assert isinstance(outcome_within(transaction, 6), DatabaseUnavailableError)
        server.resume()
        # The transaction left nothing. A create cut by the deadline has an unknown
        # outcome: directly, its connection could not even be opened; behind PgBouncer
        # (alive, its server connections open) the statement may already sit in the
        # paused server's socket buffer and land on resume, as after any lost answer.
        assert not any(eventually(lambda s=s: repo.exists(api_context(), s.instance_uuid)) for s in in_transaction)
        landed = sum(repo.exists(api_context(), s.instance_uuid) for s in attempted)
        if via is None:
            assert landed == 0
        assert eventually(lambda: repo.count(api_context())) == 6 + landed  # the first spec + 5

        def iteration() -> None:
            for _ in repo.iterate(api_context(), batch_size=2):
                server.pause()

        assert isinstance(outcome_within(iteration, 6), DatabaseUnavailableError)
        server.resume()
        assert len(eventually(lambda: list(repo.iterate(api_context())))) == 6 + landed


def test_a_read_only_database_refuses_every_write_and_keeps_its_state(fresh_topology):
    topology = fresh_topology()
    kept = new_spec()
    with RequestSpecRepository.from_topology(topology) as repo:
        stored = repo.create(cell_context("cell2"), kept)
    dbname = run_sql(topology, "cell2", "SELECT current_database()")[0][0]
    run_sql(topology, "cell2", f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    before = run_sql(topology, "cell2", "SELECT instance_uuid, spec::text, version FROM request_specs ORDER BY instance_uuid")
    ctx = cell_context("cell2")
    with RequestSpecRepository.from_topology(topology) as repo:
        attempts = {
            "create": lambda: repo.create(ctx, new_spec()),
            "create_many": lambda: repo.create_many(ctx, [new_spec(), new_spec()]),
            "save": lambda: repo.save(ctx, attrs.evolve(kept, availability_zone="x"), expected_version=stored.version),
            "destroy": lambda: repo.destroy(ctx, kept.instance_uuid),
            "destroy missing": lambda: repo.destroy(ctx, str(uuid.uuid4()), missing_ok=True),
        }
        for what, attempt in attempts.items():
            with pytest.raises(ReadOnlyDatabaseError) as err:
                attempt()
            assert err.value.database == "cell2", what
            assert "read-only" in str(err.value)
        with pytest.raises(ReadOnlyDatabaseError):
            with repo.unit_of_work(ctx) as uow:
                uow.create(new_spec())
                uow.commit()
        # reads still work, and nothing changed
        assert repo.get(ctx, kept.instance_uuid).spec == kept
    after = run_sql(topology, "cell2", "SELECT instance_uuid, spec::text, version FROM request_specs ORDER BY instance_uuid")
    assert after == before
