"""Moves between databases on separate PostgreSQL servers: protocol, failpoints, races,
recover() and verify()."""

from __future__ import annotations

import threading
import uuid

import attrs
import psycopg
import pytest
from conftest import run_sql
from movecheck import assert_invariant, expire_leases, rows_everywhere

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import (
    LocationNotFoundError,
    MoveInProgressError,
    SpecMovingError,
)
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._moving.recovery import recover, verify
from reqspec_repo._store.config import API
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository
from reqspec_repo.testing.failpoints import MOVE_FAILPOINTS, FailpointHit, armed

pytestmark = pytest.mark.both_paths  # directly and through PgBouncer


@pytest.fixture
def store(split_topology):
    with RequestSpecRepository.from_topology(split_topology) as repo:
        yield SpecStore(repo)


def boot(store, n=3):
    specs = [sample_spec(num_instances=n) for _ in range(n)]
    store.create(specs)
    return {s.instance_uuid: s for s in specs}


def test_api_and_cells_are_on_separate_servers(split_topology):
    api_port = psycopg.conninfo.conninfo_to_dict(split_topology.api.dsn).get("port")
    cell_port = psycopg.conninfo.conninfo_to_dict(split_topology.cells["cell1"].dsn).get("port")
    pids = {
        name: run_sql(split_topology, name, "SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        for name in (API, "cell1")
    }
    assert pids[API] != pids["cell1"] or api_port != cell_port


def test_move_api_to_cell1_to_cell2(store):
    specs = boot(store, 3)
    keys = list(specs)
    result = move_specs(store, keys, "cell1")
    assert result.ok and sorted(result.moved) == sorted(keys)
    assert {store.location(k).database for k in keys} == {"cell1"}
    assert_invariant(store, specs)
    result = move_specs(store, keys, "cell2")
    assert result.ok
    assert {store.location(k).database for k in keys} == {"cell2"}
    assert_invariant(store, specs)
    # The version travels with the spec, so a holder of it can keep saving.
    stored = store.get(keys[0])
    saved = store.save(attrs.evolve(stored.spec, availability_zone="az7"), expected_version=stored.version)
    assert saved.database == "cell2" and saved.version == stored.version + 1


def test_moving_to_where_it_is_is_a_no_op(store):
    specs = boot(store, 2)
    result = move_specs(store, specs, API)
    assert result.ok and sorted(result.moved) == sorted(specs)
    assert_invariant(store, specs)


def test_batch_move_uses_a_bounded_number_of_round_trips(store, monkeypatch):
    small = boot(store, 5)
    large = boot(store, 150)
    calls = []
    original = psycopg.Connection.execute

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    move_specs(store, small, "cell1")
    small_calls = len(calls)
    calls.clear()
    result = move_specs(store, large, "cell1")
    large_calls = len(calls)
    monkeypatch.undo()
    assert result.ok and len(result.moved) == 150
    assert large_calls == small_calls <= 12
    assert_invariant(store, {**small, **large})


@pytest.mark.parametrize("point", MOVE_FAILPOINTS)
def test_interrupted_move_is_recovered_at_every_step(store, point):
    specs = boot(store, 4)
    keys = list(specs)
    # An acknowledged write before the move: recover must keep this version.
    stored = store.get(keys[0])
    specs[keys[0]] = attrs.evolve(stored.spec, availability_zone="az-acked")
    store.save(specs[keys[0]], expected_version=stored.version)

    with armed(point), pytest.raises(FailpointHit):
        move_specs(store, keys, "cell1")
    # Mid-move, every spec is still readable through its location.
    for key in keys:
        assert store.get(key).spec.instance_uuid == key
    expire_leases(store)  # the crashed mover's leases run out
    report = recover(store)
    assert not report.busy
    assert_invariant(store, specs)
    again = recover(store)  # idempotent
    assert again.changed == 0
    # And the specs can move on afterwards.
    assert move_specs(store, keys, "cell2").ok
    assert_invariant(store, specs)


def test_recover_after_commit_finishes_the_move(store):
    specs = boot(store, 2)
    with armed("after_commit"), pytest.raises(FailpointHit):
        move_specs(store, specs, "cell2")
    expire_leases(store)
    report = recover(store)
    assert sorted(report.finished) == sorted(specs)
    assert {store.location(k).database for k in specs} == {"cell2"}


def test_recover_before_commit_rolls_the_move_back(store):
    specs = boot(store, 2)
    with armed("after_seal"), pytest.raises(FailpointHit):
        move_specs(store, specs, "cell2")
    key = next(iter(specs))
    stored = store.get(key)
    with pytest.raises(SpecMovingError):  # sealed: writes wait for the move or recovery
        store.save(stored.spec, expected_version=stored.version)
    expire_leases(store)
    report = recover(store)
    assert sorted(report.rolled_back) == sorted(specs)
    assert {store.location(k).database for k in specs} == {API}
    store.save(stored.spec, expected_version=stored.version)  # writable again


def test_a_save_racing_with_the_move_is_never_lost(store):
    specs = boot(store, 3)
    key = next(iter(specs))
    outcome = {}

    def save_just_before_the_seal():
        stored = store.get(key)
        specs[key] = attrs.evolve(stored.spec, availability_zone="acked-before-seal")
        store.save(specs[key], expected_version=stored.version)

    def save_during_the_copy():
        stored = store.get(key)
        try:
            store.save(attrs.evolve(stored.spec, availability_zone="refused"), expected_version=stored.version)
        except SpecMovingError as exc:  # typed and retryable: the caller retries after the move
            outcome["error"] = exc

    with armed("after_claim", save_just_before_the_seal), armed("after_copy", save_during_the_copy):
        result = move_specs(store, specs, "cell1")
    assert result.ok
    assert outcome["error"].retryable and outcome["error"].instance_uuid == key
    # The acknowledged save travelled with the move; the refused one was never acknowledged.
    assert store.get(key).spec.availability_zone == "acked-before-seal"
    assert_invariant(store, specs)
    stored = store.get(key)  # and the retry succeeds where the spec now lives
    specs[key] = attrs.evolve(stored.spec, availability_zone="retried")
    assert store.save(specs[key], expected_version=stored.version).database == "cell1"
    assert_invariant(store, specs)


def test_two_racing_movers_exactly_one_wins(store):
    specs = boot(store, 1)
    key = next(iter(specs))
    barrier = threading.Barrier(2)
    results = {}

    def mover(target):
        barrier.wait()
        results[target] = move_specs(store, [key], target)

    with armed("after_claim", "sleep:0.5"):
        threads = [threading.Thread(target=mover, args=(t,)) for t in ("cell1", "cell2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    winners = [t for t, r in results.items() if r.ok]
    losers = [r for r in results.values() if not r.ok]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0].failed[key], MoveInProgressError)
    assert store.location(key).database == winners[0]
    assert_invariant(store, specs)


def test_move_racing_with_destroy(store):
    specs = boot(store, 2)
    key = next(iter(specs))
    outcome = {}

    def destroy_midway():
        t = threading.Thread(target=lambda: outcome.setdefault("destroyed", store.destroy(key)))
        t.start()
        outcome["thread"] = t

    with armed("after_copy", destroy_midway):
        result = move_specs(store, specs, "cell1")
    outcome["thread"].join()
    # destroy waited for the move's lock, then deleted the spec where the move put it.
    assert result.ok and outcome["destroyed"] is True
    assert rows_everywhere(store.topology, key) == []
    with pytest.raises(LocationNotFoundError):
        store.location(key)
    del specs[key]
    assert_invariant(store, specs)
    # A move of a destroyed instance is reported, not an error of the whole batch.
    again = move_specs(store, [key, *specs], "cell2")
    assert isinstance(again.failed[key], LocationNotFoundError) and len(again.moved) == 1


def test_verify_finds_each_planted_inconsistency_and_recover_repairs_them(store):
    specs = boot(store, 5)
    orphan, duplicate, leftover, missing, interrupted = list(specs)
    topo = store.topology
    move_specs(store, [duplicate, leftover], "cell1")

    def copy_row(key, src, dst, state="live", move_id=None):
        [(doc, version)] = run_sql(topo, src, "SELECT spec::text, version FROM request_specs WHERE instance_uuid=%s", [key])
        run_sql(
            topo, dst,
            "INSERT INTO request_specs (instance_uuid, spec, schema_version, version, move_state, move_id)"
            " VALUES (%s, %s::jsonb, 2, %s, %s, %s)",
            [key, doc, version, state, move_id],
        )

    run_sql(topo, API, "DELETE FROM spec_locations WHERE instance_uuid=%s", [orphan])
    copy_row(duplicate, "cell1", "cell2")
    copy_row(leftover, "cell1", "cell2", "incoming", str(uuid.uuid4()))
    copy_row(missing, API, "cell2")
    run_sql(topo, API, "DELETE FROM request_specs WHERE instance_uuid=%s", [missing])
    # A move of `interrupted` stopped after seal and copy, before its commit point.
    move_id = str(uuid.uuid4())
    copy_row(interrupted, API, "cell2", "incoming", move_id)
    run_sql(topo, API, "UPDATE request_specs SET move_state='outgoing', move_id=%s WHERE instance_uuid=%s",
            [move_id, interrupted])
    dangling = str(uuid.uuid4())
    run_sql(topo, API, "INSERT INTO spec_locations (instance_uuid, database_name) VALUES (%s, 'cell1')", [dangling])

    found = {(p.kind, p.instance_uuid) for p in verify(store).problems}
    assert found >= {
        ("orphan", orphan), ("duplicate", duplicate), ("hidden_leftover", leftover),
        ("missing", missing), ("interrupted_move", interrupted), ("missing", dangling),
    }
    # Planted corruption, not interrupted work: only the full cross-check sees it.
    report = recover(store, full=True)
    assert report.adopted == [orphan] and report.dangling_removed == [dangling]
    assert_invariant(store, specs)
    assert verify(store).ok


def test_recover_leaves_a_move_in_progress_alone(store):
    specs = boot(store, 2)
    seen = {}

    def recover_midway():
        seen["report"] = recover(store)
        seen["verify"] = verify(store)

    with armed("after_seal", recover_midway):
        result = move_specs(store, specs, "cell1")
    assert result.ok
    assert sorted(seen["report"].busy) == sorted(specs) and seen["report"].changed == 0
    assert seen["verify"].ok and sorted(seen["verify"].busy) == sorted(specs)
    assert_invariant(store, specs)


def test_one_failing_spec_does_not_lose_or_duplicate_the_others(store):
    specs = boot(store, 6)
    keys = list(specs)
    blocked = keys[2]
    # cell1 already holds a (stray) live row for one instance: its copy is refused there.
    [(doc,)] = run_sql(store.topology, API, "SELECT spec::text FROM request_specs WHERE instance_uuid=%s", [blocked])
    run_sql(store.topology, "cell1",
            "INSERT INTO request_specs (instance_uuid, spec, schema_version) VALUES (%s, %s::jsonb, 2)",
            [blocked, doc])
    result = move_specs(store, keys, "cell1")
    assert list(result.failed) == [blocked] and "already holds" in str(result.failed[blocked])
    assert sorted(result.moved) == sorted(k for k in keys if k != blocked)
    assert store.location(blocked).database == API
    # The blocked one is still live in the API database (its seal was undone) ...
    assert run_sql(store.topology, API, "SELECT move_state FROM request_specs WHERE instance_uuid=%s",
                   [blocked]) == [("live",)]
    # ... and the stray copy is what verify() reports and recover() removes.
    assert {p.kind for p in verify(store).problems if p.instance_uuid == blocked} == {"duplicate"}
    assert recover(store).changed == 0  # not interrupted work: only the full check repairs it
    recover(store, full=True)
    assert_invariant(store, specs)


# --- creates into a cell and recover(): found by their lease, without a full scan --------


def test_create_into_a_cell_interrupted_before_its_locations_is_found_and_adopted(store):
    specs = {s.instance_uuid: s for s in (sample_spec() for _ in range(3))}
    with armed("create_after_rows"), pytest.raises(FailpointHit):
        store.create(list(specs.values()), database="cell1")
    # Rows in the cell, no location yet: the creator (crashed) still holds its leases.
    assert store.locations(specs) == {}
    assert all(rows_everywhere(store.topology, k)[0][:2] == ("cell1", "live") for k in specs)
    assert sorted(recover(store).busy) == sorted(specs)  # it may only be slow: hands off
    expire_leases(store)
    report = recover(store)  # in-flight only: the expired leases lead to the rows
    assert sorted(report.adopted) == sorted(specs) and not report.busy
    assert_invariant(store, specs)
    assert recover(store).changed == 0


def test_recover_with_nothing_in_flight_reads_only_what_is_in_flight(store, monkeypatch):
    boot(store, 4)
    move_specs(store, list(boot(store, 3)), "cell1")
    seen = []
    original = psycopg.Cursor.execute

    def recording(self, query, *args, **kwargs):
        seen.append(bytes(query) if isinstance(query, bytes) else str(query).encode())
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    report = recover(store)
    monkeypatch.undo()
    assert report.changed == 0 and not report.busy
    # The lease table (only what is in flight) and the partial indexes on move_id.
    reads = [q for q in seen if b"FROM" in q]
    assert reads and all(b"move_id IS NOT NULL" in q or b"FROM move_leases" in q for q in reads), reads
