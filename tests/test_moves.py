"""Moves between databases on separate PostgreSQL servers: protocol, failpoints, races,
recover() and verify()."""

from __future__ import annotations

import threading
import uuid

import attrs
import psycopg
import pytest
from helpers import run_sql
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
def split_store(split_topology):
    with RequestSpecRepository.from_topology(split_topology) as repo:
        yield SpecStore(repo)


def boot(split_store, n=3):
    specs = [sample_spec(num_instances=n) for _ in range(n)]
    split_store.create(specs)
    return {s.instance_uuid: s for s in specs}


def test_api_and_cells_are_on_separate_servers(split_topology):
    api_port = psycopg.conninfo.conninfo_to_dict(split_topology.api.dsn).get("port")
    cell_port = psycopg.conninfo.conninfo_to_dict(split_topology.cells["cell1"].dsn).get("port")
    pids = {
        name: run_sql(split_topology, name, "SELECT setting FROM pg_settings WHERE name = 'data_directory'")
        for name in (API, "cell1")
    }
    assert pids[API] != pids["cell1"] or api_port != cell_port


def test_move_api_to_cell1_to_cell2(split_store):
    specs = boot(split_store, 3)
    keys = list(specs)
    result = move_specs(split_store, keys, "cell1")
    assert result.ok and sorted(result.moved) == sorted(keys)
    assert {split_store.location(k).database for k in keys} == {"cell1"}
    assert_invariant(split_store, specs)
    result = move_specs(split_store, keys, "cell2")
    assert result.ok
    assert {split_store.location(k).database for k in keys} == {"cell2"}
    assert_invariant(split_store, specs)
    # The version travels with the spec, so a holder of it can keep saving.
    stored = split_store.get(keys[0])
    saved = split_store.save(attrs.evolve(stored.spec, availability_zone="az7"), expected_version=stored.version)
    assert saved.database == "cell2" and saved.version == stored.version + 1


def test_moving_to_where_it_is_is_a_no_op(split_store):
    specs = boot(split_store, 2)
    result = move_specs(split_store, specs, API)
    assert result.ok and sorted(result.moved) == sorted(specs)
    assert_invariant(split_store, specs)


def test_batch_move_uses_a_bounded_number_of_round_trips(split_store, monkeypatch):
    small = boot(split_store, 5)
    large = boot(split_store, 150)
    calls = []
    original = psycopg.Connection.execute

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counting)
    move_specs(split_store, small, "cell1")
    small_calls = len(calls)
    calls.clear()
    result = move_specs(split_store, large, "cell1")
    large_calls = len(calls)
    monkeypatch.undo()
    assert result.ok and len(result.moved) == 150
    assert large_calls == small_calls <= 12
    assert_invariant(split_store, {**small, **large})


@pytest.mark.parametrize("point", MOVE_FAILPOINTS)
def test_interrupted_move_is_recovered_at_every_step(split_store, point):
    specs = boot(split_store, 4)
    keys = list(specs)
    # An acknowledged write before the move: recover must keep this version.
    stored = split_store.get(keys[0])
    specs[keys[0]] = attrs.evolve(stored.spec, availability_zone="az-acked")
    split_store.save(specs[keys[0]], expected_version=stored.version)

    with armed(point), pytest.raises(FailpointHit):
        move_specs(split_store, keys, "cell1")
    # Mid-move, every spec is still readable through its location.
    for key in keys:
        assert split_store.get(key).spec.instance_uuid == key
    expire_leases(split_store)  # the crashed mover's leases run out
    report = recover(split_store)
    assert not report.busy
    assert_invariant(split_store, specs)
    again = recover(split_store)  # idempotent
    assert again.changed == 0
    # And the specs can move on afterwards.
    assert move_specs(split_store, keys, "cell2").ok
    assert_invariant(split_store, specs)


def test_recover_after_commit_finishes_the_move(split_store):
    specs = boot(split_store, 2)
    with armed("after_commit"), pytest.raises(FailpointHit):
        move_specs(split_store, specs, "cell2")
    expire_leases(split_store)
    report = recover(split_store)
    assert sorted(report.finished) == sorted(specs)
    assert {split_store.location(k).database for k in specs} == {"cell2"}


def test_recover_before_commit_rolls_the_move_back(split_store):
    specs = boot(split_store, 2)
    with armed("after_seal"), pytest.raises(FailpointHit):
        move_specs(split_store, specs, "cell2")
    key = next(iter(specs))
    stored = split_store.get(key)
    with pytest.raises(SpecMovingError):  # sealed: writes wait for the move or recovery
        split_store.save(stored.spec, expected_version=stored.version)
    expire_leases(split_store)
    report = recover(split_store)
    assert sorted(report.rolled_back) == sorted(specs)
    assert {split_store.location(k).database for k in specs} == {API}
    split_store.save(stored.spec, expected_version=stored.version)  # writable again


def test_a_committed_move_is_marked_on_its_copy_and_its_location_written_once(split_store):
    specs = boot(split_store, 2)
    topo = split_store.topology
    with armed("after_commit"), pytest.raises(FailpointHit):
        move_specs(split_store, specs, "cell2")
    for key in specs:
        # The commit point flipped the location, one write, no mark left on it ...
        assert run_sql(topo, API, "SELECT database_name, move_id, version FROM spec_locations"
                       " WHERE instance_uuid=%s", [key]) == [("cell2", None, 2)]
        # ... the move's rows carry it: the copy where the location points, the sealed row
        # it came from ...
        assert sorted(r[:2] for r in rows_everywhere(topo, key)) == [(API, "outgoing"), ("cell2", "incoming")]
        # ... and a read through the location takes the committed copy.
        assert split_store.get(key).database == "cell2"
    expire_leases(split_store)  # the crashed mover's leases run out
    problems = [p for p in verify(split_store).problems if p.kind == "interrupted_move"]
    assert sorted(p.instance_uuid for p in problems) == sorted(specs)
    assert all("into 'cell2' committed, cleanup unfinished" in p.detail for p in problems)
    # Moving it on before recover() is refused and changes nothing.
    refused = move_specs(split_store, specs, "cell1")
    assert sorted(refused.failed) == sorted(specs)
    assert all("run recover" in str(e) for e in refused.failed.values())
    report = recover(split_store)
    assert sorted(report.finished) == sorted(specs)
    assert_invariant(split_store, specs)


def test_recover_finishes_a_move_an_earlier_release_marked_on_its_location(split_store):
    """Before the location was written once per move, the commit point also put the move
    id on the location (the cleanup cleared it); a database upgraded with such a move
    interrupted after its commit point still has it finished."""
    specs = boot(split_store, 2)
    keys = list(specs)
    topo = split_store.topology
    with armed("after_copy"), pytest.raises(FailpointHit):
        move_specs(split_store, keys, "cell1")
    [(move_id,)] = run_sql(topo, "cell1", "SELECT DISTINCT move_id::text FROM request_specs"
                           " WHERE instance_uuid = ANY(%s::uuid[])", [keys])
    run_sql(topo, API, "UPDATE spec_locations SET database_name = 'cell1', move_id = %s, moved_from = 'api',"
            " version = version + 1 WHERE instance_uuid = ANY(%s::uuid[])", [move_id, keys])
    expire_leases(split_store)
    details = [p.detail for p in verify(split_store).problems if p.kind == "interrupted_move"]
    assert sorted(details) == [f"move {move_id} from 'api' committed, cleanup unfinished"] * 2
    assert split_store.get(keys[0]).database == "cell1"
    report = recover(split_store)
    assert sorted(report.finished) == sorted(keys)
    assert_invariant(split_store, specs)


def test_a_read_whose_location_went_stale_follows_the_move(split_store, monkeypatch):
    key = next(iter(boot(split_store, 1)))
    stale = split_store.location(key)  # read just before a move ...
    assert move_specs(split_store, [key], "cell1").ok  # ... which commits and cleans up
    monkeypatch.setattr(SpecStore, "location", lambda self, instance_uuid: stale)
    assert split_store.get(key).database == "cell1"  # the row is gone from the API database


def test_a_save_racing_with_the_move_is_never_lost(split_store):
    specs = boot(split_store, 3)
    key = next(iter(specs))
    outcome = {}

    def save_just_before_the_seal():
        stored = split_store.get(key)
        specs[key] = attrs.evolve(stored.spec, availability_zone="acked-before-seal")
        split_store.save(specs[key], expected_version=stored.version)

    def save_during_the_copy():
        stored = split_store.get(key)
        try:
            split_store.save(attrs.evolve(stored.spec, availability_zone="refused"), expected_version=stored.version)
        except SpecMovingError as exc:  # typed and retryable: the caller retries after the move
            outcome["error"] = exc

    with armed("after_claim", save_just_before_the_seal), armed("after_copy", save_during_the_copy):
        result = move_specs(split_store, specs, "cell1")
    assert result.ok
    assert outcome["error"].retryable and outcome["error"].instance_uuid == key
    # The acknowledged save travelled with the move; the refused one was never acknowledged.
    assert split_store.get(key).spec.availability_zone == "acked-before-seal"
    assert_invariant(split_store, specs)
    stored = split_store.get(key)  # and the retry succeeds where the spec now lives
    specs[key] = attrs.evolve(stored.spec, availability_zone="retried")
    assert split_store.save(specs[key], expected_version=stored.version).database == "cell1"
    assert_invariant(split_store, specs)


def test_two_racing_movers_exactly_one_wins(split_store):
    specs = boot(split_store, 1)
    key = next(iter(specs))
    barrier = threading.Barrier(2)
    results = {}

    def mover(target):
        barrier.wait()
        results[target] = move_specs(split_store, [key], target)

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
    assert split_store.location(key).database == winners[0]
    assert_invariant(split_store, specs)


def test_move_racing_with_destroy(split_store):
    specs = boot(split_store, 2)
    key = next(iter(specs))
    outcome = {}

    def destroy_midway():
        t = threading.Thread(target=lambda: outcome.setdefault("destroyed", split_store.destroy(key)))
        t.start()
        outcome["thread"] = t

    with armed("after_copy", destroy_midway):
        result = move_specs(split_store, specs, "cell1")
    outcome["thread"].join()
    # destroy waited for the move's lock, then deleted the spec where the move put it.
    assert result.ok and outcome["destroyed"] is True
    assert rows_everywhere(split_store.topology, key) == []
    with pytest.raises(LocationNotFoundError):
        split_store.location(key)
    del specs[key]
    assert_invariant(split_store, specs)
    # A move of a destroyed instance is reported, not an error of the whole batch.
    again = move_specs(split_store, [key, *specs], "cell2")
    assert isinstance(again.failed[key], LocationNotFoundError) and len(again.moved) == 1


def test_verify_finds_each_planted_inconsistency_and_recover_repairs_them(split_store):
    specs = boot(split_store, 5)
    orphan, duplicate, leftover, missing, interrupted = list(specs)
    topo = split_store.topology
    move_specs(split_store, [duplicate, leftover], "cell1")

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

    found = {(p.kind, p.instance_uuid) for p in verify(split_store).problems}
    assert found >= {
        ("orphan", orphan), ("duplicate", duplicate), ("hidden_leftover", leftover),
        ("missing", missing), ("interrupted_move", interrupted), ("missing", dangling),
    }
    # Planted corruption, not interrupted work: only the full cross-check sees it.
    report = recover(split_store, full=True)
    assert report.adopted == [orphan] and report.dangling_removed == [dangling]
    assert_invariant(split_store, specs)
    assert verify(split_store).ok


def test_recover_leaves_a_move_in_progress_alone(split_store):
    specs = boot(split_store, 2)
    seen = {}

    def recover_midway():
        seen["report"] = recover(split_store)
        seen["verify"] = verify(split_store)

    with armed("after_seal", recover_midway):
        result = move_specs(split_store, specs, "cell1")
    assert result.ok
    assert sorted(seen["report"].busy) == sorted(specs) and seen["report"].changed == 0
    assert seen["verify"].ok and sorted(seen["verify"].busy) == sorted(specs)
    assert_invariant(split_store, specs)


def test_one_failing_spec_does_not_lose_or_duplicate_the_others(split_store):
    specs = boot(split_store, 6)
    keys = list(specs)
    blocked = keys[2]
    # cell1 already holds a (stray) live row for one instance: its copy is refused there.
    [(doc,)] = run_sql(split_store.topology, API, "SELECT spec::text FROM request_specs WHERE instance_uuid=%s", [blocked])
    run_sql(split_store.topology, "cell1",
            "INSERT INTO request_specs (instance_uuid, spec, schema_version) VALUES (%s, %s::jsonb, 2)",
            [blocked, doc])
    result = move_specs(split_store, keys, "cell1")
    assert list(result.failed) == [blocked] and "already holds" in str(result.failed[blocked])
    assert sorted(result.moved) == sorted(k for k in keys if k != blocked)
    assert split_store.location(blocked).database == API
    # The blocked one is still live in the API database (its seal was undone) ...
    assert run_sql(split_store.topology, API, "SELECT move_state FROM request_specs WHERE instance_uuid=%s",
                   [blocked]) == [("live",)]
    # ... and the stray copy is what verify() reports and recover() removes.
    assert {p.kind for p in verify(split_store).problems if p.instance_uuid == blocked} == {"duplicate"}
    assert recover(split_store).changed == 0  # not interrupted work: only the full check repairs it
    recover(split_store, full=True)
    assert_invariant(split_store, specs)


# --- creates into a cell and recover(): found by their lease, without a full scan --------


def test_create_into_a_cell_interrupted_before_its_locations_is_found_and_adopted(split_store):
    specs = {s.instance_uuid: s for s in (sample_spec() for _ in range(3))}
    with armed("create_after_rows"), pytest.raises(FailpointHit):
        split_store.create(list(specs.values()), database="cell1")
    # Rows in the cell, no location yet: the creator (crashed) still holds its leases.
    assert split_store.locations(specs) == {}
    assert all(rows_everywhere(split_store.topology, k)[0][:2] == ("cell1", "live") for k in specs)
    assert sorted(recover(split_store).busy) == sorted(specs)  # it may only be slow: hands off
    expire_leases(split_store)
    report = recover(split_store)  # in-flight only: the expired leases lead to the rows
    assert sorted(report.adopted) == sorted(specs) and not report.busy
    assert_invariant(split_store, specs)
    assert recover(split_store).changed == 0


def test_recover_with_nothing_in_flight_reads_only_what_is_in_flight(split_store, monkeypatch):
    boot(split_store, 4)
    move_specs(split_store, list(boot(split_store, 3)), "cell1")
    seen = []
    original = psycopg.Cursor.execute

    def recording(self, query, *args, **kwargs):
        seen.append(bytes(query) if isinstance(query, bytes) else str(query).encode())
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    report = recover(split_store)
    monkeypatch.undo()
    assert report.changed == 0 and not report.busy
    # The lease table (only what is in flight) and the partial indexes on move_id.
    reads = [q for q in seen if b"FROM" in q]
    assert reads and all(b"move_id IS NOT NULL" in q or b"FROM move_leases" in q for q in reads), reads


def test_a_move_carries_every_column_of_request_specs(split_store):
    """A column added to request_specs must move with the spec (or be declared local to
    each database): the table's columns are exactly the two lists, and the move's SQL
    returns and writes every moved one."""
    from reqspec_repo._store.move_rows import LOCAL_COLUMNS, MOVED_COLUMNS
    from reqspec_repo._store.queries import query

    columns = {name for (name,) in run_sql(
        split_store.topology, API,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'request_specs'",
    )}
    assert columns == set(MOVED_COLUMNS) | set(LOCAL_COLUMNS)
    seal, copy = query("request_specs", "seal_outgoing").sql, query("request_specs", "upsert_incoming").sql
    returning = seal.split("RETURNING", 1)[1]
    inserted = copy.split("(", 1)[1].split(")", 1)[0]
    for column in MOVED_COLUMNS:
        assert column in returning and column in inserted, column
