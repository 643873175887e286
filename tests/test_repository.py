"""The repository against a real PostgreSQL: routing by context, CRUD, CAS, batches,
decode errors, upgrades, iteration."""

from __future__ import annotations

import threading
import uuid

import attrs
import orjson
import psycopg
import pytest
from helpers import run_sql
from hypothesis import HealthCheck, given, settings
from strategies import request_specs

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import (
    BatchError,
    ConflictError,
    DocumentTooLargeError,
    SpecDecodeError,
    SpecExistsError,
    SpecNotFoundError,
    SpecValidationError,
)
from reqspec_repo._spec import codec
from reqspec_repo._spec.model import (
    Destination,
    InstanceGroupRef,
    SchedulerRetry,
    without_per_operation,
)
from reqspec_repo._store import queries as queries_module
from reqspec_repo._store import roundtrips
from reqspec_repo._store.config import API, Settings
from reqspec_repo._store.context import api_context, cell_context
from reqspec_repo._store.repository import STREAM_CHUNK_ROWS, RequestSpecRepository
from reqspec_repo._store.uuid_arrays import UuidArray

pytestmark = pytest.mark.both_paths  # directly and through PgBouncer
SET_TIMEOUTS = queries_module.query("_session", "set_transaction_timeouts").statement


def stored_doc(topology, database, instance_uuid):
    rows = run_sql(
        topology, database, "SELECT spec::text FROM request_specs WHERE instance_uuid = %s", [instance_uuid]
    )
    return orjson.loads(rows[0][0]) if rows else None


def with_per_operation(spec):
    return attrs.evolve(
        spec,
        retry=SchedulerRetry(num_attempts=2, hosts=(("failed-host", "failed-node"),)),
        ignore_hosts=("source-host",),
        requested_destination=Destination(host="target-host", node=None, cell="cell2", aggregates=()),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=request_specs())
def test_round_trip_through_the_database(repo, spec):
    ctx = api_context()
    spec = attrs.evolve(spec, instance_uuid=str(uuid.uuid4()))  # hypothesis repeats uuids
    repo.create(ctx, spec)
    loaded = repo.get(ctx, spec.instance_uuid)
    assert loaded.spec == without_per_operation(spec)
    assert loaded.version == 1
    assert loaded.database == API


def test_context_chooses_the_database(repo, topology):
    spec = sample_spec()
    repo.create(cell_context("cell1"), spec)
    assert repo.get(cell_context("cell1"), spec.instance_uuid).database == "cell1"
    with pytest.raises(SpecNotFoundError) as err:
        repo.get(api_context(), spec.instance_uuid)
    assert spec.instance_uuid in str(err.value) and "'api'" in str(err.value)
    assert not repo.exists(cell_context("cell2"), spec.instance_uuid)
    # The row really is in cell1's database and nowhere else.
    assert stored_doc(topology, "cell1", spec.instance_uuid) is not None
    assert stored_doc(topology, API, spec.instance_uuid) is None
    assert stored_doc(topology, "cell2", spec.instance_uuid) is None


def test_create_twice_fails_clearly_and_keeps_the_first(repo):
    ctx = api_context()
    first = sample_spec()
    repo.create(ctx, first)
    second = attrs.evolve(first, project_id="someone-else")
    with pytest.raises(SpecExistsError) as err:
        repo.create(ctx, second)
    assert first.instance_uuid in str(err.value)
    assert repo.get(ctx, first.instance_uuid).spec.project_id == first.project_id


def test_per_operation_fields_are_not_stored_but_kept_in_memory(repo, topology):
    ctx = api_context()
    spec = with_per_operation(sample_spec())
    repo.create(ctx, spec)
    doc = stored_doc(topology, API, spec.instance_uuid)
    for name in ("retry", "ignore_hosts", "requested_destination", "requested_resources",
                 "network_metadata", "requested_networks", "request_level_params"):
        assert name not in doc
    # The caller keeps using them after create and after save.
    assert spec.retry is not None and spec.ignore_hosts == ("source-host",)
    stored = repo.get(ctx, spec.instance_uuid)
    assert stored.spec.retry is None and stored.spec.ignore_hosts == ()
    assert stored.spec.requested_destination is None
    changed = attrs.evolve(spec, availability_zone="az9")
    repo.save(ctx, changed, expected_version=stored.version)
    assert changed.requested_destination is not None and changed.requested_destination.host == "target-host"
    doc = stored_doc(topology, API, spec.instance_uuid)
    assert doc["availability_zone"] == "az9"
    assert "requested_destination" not in doc and "retry" not in doc


def test_instance_group_is_stored_as_a_reference_without_members(repo, topology):
    group = InstanceGroupRef.from_group(
        str(uuid.uuid4()), "web", "anti-affinity", {"max_server_per_host": "1"},
        members=[str(uuid.uuid4()) for _ in range(5)], hosts=["h1", "h2"],
    )
    spec = attrs.evolve(sample_spec(), instance_group=group)
    repo.create(api_context(), spec)
    doc = stored_doc(topology, API, spec.instance_uuid)
    assert set(doc["instance_group"]) == {
        "uuid", "name", "policy", "rules",  # and the group's own record, as Nova keeps it:
        "id", "user_id", "project_id", "created_at", "updated_at", "deleted_at", "deleted",
    }
    assert "members" not in orjson.dumps(doc).decode() and "h1" not in orjson.dumps(doc).decode()


def test_compare_and_swap_save_and_conflict(repo):
    ctx = api_context()
    spec = sample_spec()
    v1 = repo.create(ctx, spec)
    v2 = repo.save(ctx, attrs.evolve(spec, availability_zone="az2"), expected_version=v1.version)
    assert v2.version == 2
    with pytest.raises(ConflictError) as err:
        repo.save(ctx, attrs.evolve(spec, availability_zone="stale"), expected_version=1)
    assert (err.value.expected_version, err.value.actual_version) == (1, 2)
    assert repo.get(ctx, spec.instance_uuid).spec.availability_zone == "az2"


def test_concurrent_saves_exactly_one_wins(repo):
    ctx = api_context()
    spec = sample_spec()
    repo.create(ctx, spec)
    writers = 8
    barrier = threading.Barrier(writers)
    results: dict[int, object] = {}

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = repo.save(ctx, attrs.evolve(spec, availability_zone=f"az-{i}"), expected_version=1)
        except ConflictError as exc:
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if not isinstance(r, ConflictError)]
    losers = [r for r in results.values() if isinstance(r, ConflictError)]
    assert len(winners) == 1 and len(losers) == writers - 1
    assert all(e.expected_version == 1 and e.actual_version == 2 for e in losers)
    assert repo.get(ctx, spec.instance_uuid).spec.availability_zone == f"az-{winners[0]}"


def test_save_of_a_missing_spec_is_a_conflict_with_no_actual_version(repo):
    with pytest.raises(ConflictError) as err:
        repo.save(api_context(), sample_spec(), expected_version=1)
    assert err.value.actual_version is None


def test_destroy_and_exists(repo):
    ctx = cell_context("cell2")
    spec = sample_spec()
    repo.create(ctx, spec)
    assert repo.exists(ctx, spec.instance_uuid)
    assert repo.destroy(ctx, spec.instance_uuid) is True
    assert not repo.exists(ctx, spec.instance_uuid)
    with pytest.raises(SpecNotFoundError):
        repo.destroy(ctx, spec.instance_uuid)
    assert repo.destroy(ctx, spec.instance_uuid, missing_ok=True) is False


def test_bad_uuid_argument_is_a_typed_error(repo):
    with pytest.raises(SpecValidationError) as err:
        repo.get(api_context(), "not-a-uuid")
    assert "instance_uuid" in str(err.value)


def test_get_many_in_one_round_trip(repo, monkeypatch):
    ctx = api_context()
    specs = [sample_spec() for _ in range(50)]
    repo.create_many(ctx, specs)
    absent = str(uuid.uuid4())
    calls = []
    for method in ("execute", "stream"):  # every statement goes through one of these
        original = getattr(psycopg.Cursor, method)

        def counting(self, *args, _original=original, **kwargs):
            calls.append(args[0])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, method, counting)
    batch = repo.get_many(ctx, [s.instance_uuid for s in specs] + [absent])
    # Behind a transaction-mode pooler the session timeouts are set first, in the same
    # transaction (pooler = "transaction"): one data statement either way.
    assert len([c for c in calls if c != SET_TIMEOUTS]) == 1
    assert set(batch.found) == {s.instance_uuid for s in specs}
    assert batch.missing == [absent] and batch.errors == {}
    assert batch.found[specs[7].instance_uuid].spec == specs[7]


def test_create_many_is_one_statement_and_all_or_nothing(repo, monkeypatch):
    ctx = cell_context("cell1")
    existing = sample_spec()
    repo.create(ctx, existing)
    specs = [sample_spec(num_instances=100) for _ in range(100)]
    with pytest.raises(BatchError) as err:
        repo.create_many(ctx, specs[:60] + [existing] + specs[60:])
    assert existing.instance_uuid in str(err.value)
    assert repo.get_many(ctx, [s.instance_uuid for s in specs]).found == {}

    # One statement: a single execute, or a single COPY.
    calls = []
    original = psycopg.Connection.execute
    original_copy = psycopg.Cursor.copy
    monkeypatch.setattr(
        psycopg.Connection, "execute", lambda self, *a, **k: calls.append(a[0]) or original(self, *a, **k)
    )
    monkeypatch.setattr(
        psycopg.Cursor, "copy", lambda self, *a, **k: calls.append(a[0]) or original_copy(self, *a, **k)
    )
    stored = repo.create_many(ctx, specs)
    assert len([c for c in calls if c != SET_TIMEOUTS]) == 1 and [s.version for s in stored] == [1] * 100
    monkeypatch.undo()
    assert len(repo.get_many(ctx, [s.instance_uuid for s in specs]).found) == 100


def test_create_many_with_one_invalid_spec_writes_none_and_names_it(fresh_topology):
    topo = fresh_topology(settings=Settings(max_document_bytes=4096))
    with RequestSpecRepository.from_topology(topo) as repo:
        specs = [sample_spec() for _ in range(5)]
        huge = attrs.evolve(sample_spec(), scheduler_hints={"blob": ("x" * 10_000,)})
        with pytest.raises(BatchError) as err:
            repo.create_many(api_context(), specs + [huge])
        assert huge.instance_uuid in err.value.failures
        assert isinstance(err.value.failures[huge.instance_uuid], DocumentTooLargeError)
        assert repo.count(api_context()) == 0


def test_create_many_names_every_failure_of_a_batch_aborted_while_it_streamed(fresh_topology):
    # The batch is encoded while its COPY streams: rows before the first bad spec were
    # already sent when it is met. The COPY is aborted (nothing lands) and the specs after
    # it are still checked, so every failure is named, not only the first.
    topo = fresh_topology(settings=Settings(max_document_bytes=4096))
    with RequestSpecRepository.from_topology(topo) as repo:
        specs = [sample_spec() for _ in range(400)]
        huge = attrs.evolve(sample_spec(), scheduler_hints={"blob": ("x" * 10_000,)})
        batch = [*specs[:300], huge, *specs[300:], specs[10], "not a spec"]
        with pytest.raises(BatchError) as err:
            repo.create_many(api_context(), batch)
        failures = err.value.failures
        assert set(failures) == {huge.instance_uuid, specs[10].instance_uuid, f"item {len(batch) - 1}"}
        assert isinstance(failures[huge.instance_uuid], DocumentTooLargeError)
        assert isinstance(failures[specs[10].instance_uuid], SpecExistsError)
        assert repo.count(api_context()) == 0
        # ... and the connection it used is fine for the next batch.
        assert len(repo.create_many(api_context(), specs)) == 400
        assert repo.count(api_context()) == 400


def plant(topology, database, instance_uuid, doc: bytes, schema_version=codec.SCHEMA_VERSION):
    run_sql(
        topology, database,
        "INSERT INTO request_specs (instance_uuid, spec, schema_version) VALUES (%s, %s::jsonb, %s)",
        [instance_uuid, doc.decode(), schema_version],
    )


def test_decode_errors_name_uuid_and_path(repo, topology):
    spec = sample_spec()
    doc = orjson.loads(codec.encode(spec))
    doc["flavor"]["vcpus"] = "many"
    plant(topology, API, spec.instance_uuid, orjson.dumps(doc))
    with pytest.raises(SpecDecodeError) as err:
        repo.get(api_context(), spec.instance_uuid)
    message = str(err.value)
    assert spec.instance_uuid in message and "flavor.vcpus" in message and "'api'" in message


def test_unknown_key_and_newer_version_are_decode_errors(repo, topology):
    spec = sample_spec()
    doc = orjson.loads(codec.encode(spec))
    doc["flavor"]["surprise"] = 1
    plant(topology, API, spec.instance_uuid, orjson.dumps(doc))
    with pytest.raises(SpecDecodeError, match="surprise"):
        repo.get(api_context(), spec.instance_uuid)

    newer = sample_spec()
    doc = orjson.loads(codec.encode(newer))
    doc["schema_version"] = codec.SCHEMA_VERSION + 1
    plant(topology, API, newer.instance_uuid, orjson.dumps(doc))
    with pytest.raises(SpecDecodeError) as err:
        repo.get(api_context(), newer.instance_uuid)
    assert newer.instance_uuid in str(err.value)


def test_older_schema_document_loads_through_the_upgrade_step(repo, topology):
    spec = attrs.evolve(sample_spec(), scheduler_hints={"group": ("web",), "same_host": ("abc",)})
    doc = orjson.loads(codec.encode(spec))
    doc["schema_version"] = 1
    doc["scheduler_hints"] = {"group": "web", "same_host": ["abc"]}  # v1: plain strings allowed
    del doc["is_bfv"]
    plant(topology, API, spec.instance_uuid, orjson.dumps(doc), schema_version=1)
    loaded = repo.get(api_context(), spec.instance_uuid)
    assert loaded.spec == spec


def test_stored_v2_row_loads_as_v3_with_unknown_user_and_is_rewritten_as_v3_on_save(repo, topology):
    spec = attrs.evolve(sample_spec(), user_id="")
    doc = orjson.loads(codec.encode(spec))
    # a version-2 document: none of the keys added for Nova fidelity
    v2_top = {"instance_uuid", "project_id", "user_id", "availability_zone", "num_instances", "flavor", "image",
              "numa_topology", "pci_requests", "force_hosts", "force_nodes", "limits", "instance_group",
              "scheduler_hints", "security_groups", "is_bfv"}
    doc = {k: v for k, v in doc.items() if k in v2_top} | {"schema_version": 2}
    for key in ("id", "disabled", "projects", "description", "created_at", "updated_at", "deleted_at", "deleted"):
        doc["flavor"].pop(key)
    plant(topology, API, spec.instance_uuid, orjson.dumps(doc), schema_version=2)
    loaded = repo.get(api_context(), spec.instance_uuid)
    assert loaded.spec == attrs.evolve(spec, user_id=None)
    repo.save(api_context(), loaded.spec, expected_version=loaded.version)
    ((version, stored_version),) = run_sql(
        topology, API, "SELECT schema_version, (spec->>'schema_version')::int FROM request_specs WHERE instance_uuid = %s",
        [spec.instance_uuid],
    )
    assert version == stored_version == codec.SCHEMA_VERSION == 3


def test_batch_read_and_iteration_report_a_corrupt_row_and_return_the_others(fresh_topology):
    topo = fresh_topology()
    with RequestSpecRepository.from_topology(topo) as repo:
        ctx = cell_context("cell2")
        good = [sample_spec() for _ in range(3)]
        repo.create_many(ctx, good)
        bad_uuid = str(uuid.uuid4())
        plant(topo, "cell2", bad_uuid, b'{"schema_version": 2, "flavor": 7}')
        batch = repo.get_many(ctx, [s.instance_uuid for s in good] + [bad_uuid])
        assert set(batch.found) == {s.instance_uuid for s in good}
        assert list(batch.errors) == [bad_uuid] and bad_uuid in str(batch.errors[bad_uuid])
        reported = []
        seen = [s.instance_uuid for s in repo.iterate(ctx, on_error=reported.append)]
        assert seen == sorted(s.instance_uuid for s in good)  # instance uuid order
        assert [e.instance_uuid for e in reported] == [bad_uuid]
        with pytest.raises(SpecDecodeError):
            list(repo.iterate(ctx, on_error=None))


def test_iterate_uses_a_server_side_cursor_in_batches(fresh_topology):
    topo = fresh_topology()
    with RequestSpecRepository.from_topology(topo) as repo:
        ctx = api_context()
        specs = [sample_spec() for _ in range(1200)]
        for i in range(0, 1200, 400):
            repo.create_many(ctx, specs[i:i + 400])
        it = repo.iterate(ctx, batch_size=100)
        first = next(it)
        # While iterating, our session fetches from a named (server-side) cursor in batches.
        activity = run_sql(
            topo, API, "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
        )
        assert any(q.startswith('FETCH FORWARD 100 FROM "reqspec_iter_') for (q,) in activity)
        rest = list(it)
        assert [first.instance_uuid] + [s.instance_uuid for s in rest] == sorted(s.instance_uuid for s in specs)


def test_connections_carry_statement_and_lock_timeouts(fresh_topology):
    topo = fresh_topology(settings=Settings(statement_timeout_ms=1234, lock_timeout_ms=567))
    with RequestSpecRepository.from_topology(topo) as repo:
        with repo.connections.connection("cell1") as conn:
            # What a named query's statement sees, in its own transaction: behind a
            # transaction-mode pooler the timeouts are set in that transaction.
            cur = conn.cursor()
            roundtrips.execute(cur, b"SHOW statement_timeout", None)
            assert cur.fetchone()[0] == "1234ms"
            roundtrips.execute(cur, b"SHOW lock_timeout", None)
            assert cur.fetchone()[0] == "567ms"


def test_a_caller_working_alone_keeps_one_pooled_connection(fresh_topology):
    # The pool opens with its min_size connections ready: a first caller that queued
    # for a still-connecting pool (psycopg_pool, as used before) added a second
    # connection, handed out in turn with the first for good (a cold server process
    # every other round trip).
    topo = fresh_topology(settings=Settings(pool_min_size=1, pool_max_size=10))
    with RequestSpecRepository.from_topology(topo) as repo:
        ctx = cell_context("cell1")
        for _ in range(20):
            spec = sample_spec()
            repo.create(ctx, spec)
            repo.get(ctx, spec.instance_uuid)
        stats = repo.connections.pool("cell1").stats()
        assert stats["size"] == 1, stats
        assert stats["waiting"] == 0, stats


def test_json_numbers_in_image_properties_survive_jsonb(repo):
    # jsonb prints large numerics without an exponent; the model keeps floats below 2**53
    # so that what comes back equals what went in.
    spec = sample_spec()
    props = {"big_float": 4.710988417791943e15, "tiny": 1e-300, "int": 2**62, "neg": -3.5}
    spec = attrs.evolve(spec, image=attrs.evolve(spec.image, properties=props))
    repo.create(api_context(), spec)
    assert repo.get(api_context(), spec.instance_uuid).spec.image.properties == props
    with pytest.raises(SpecValidationError, match="image.properties"):
        attrs.evolve(spec.image, properties={"huge": 1e300})


def test_unit_of_work_commits_explicitly_and_rolls_back_by_default(repo):
    ctx = cell_context("cell1")
    kept, dropped = sample_spec(), sample_spec()
    with repo.unit_of_work(ctx) as uow:
        uow.create(dropped)
    assert not repo.exists(ctx, dropped.instance_uuid)  # no commit(): rolled back
    existing = sample_spec()
    repo.create(ctx, existing)
    with repo.unit_of_work(ctx) as uow:
        uow.create(kept)
        with pytest.raises(BatchError) as err:  # refused under a savepoint ...
            uow.create_many([sample_spec(), existing])
        assert list(err.value.failures) == [existing.instance_uuid]
        uow.commit()  # ... so the rest of the transaction still commits
    assert repo.exists(ctx, kept.instance_uuid)


def test_the_kept_cursor_never_hands_back_a_previous_row(topology):
    """One-row statements reuse one cursor per pooled connection; with a single pooled
    connection every call below runs on the same cursor, right after a different result."""
    single = attrs.evolve(topology, settings=attrs.evolve(topology.settings, pool_min_size=1, pool_max_size=1))
    ctx = api_context()
    with RequestSpecRepository.from_topology(single) as repository:
        spec = sample_spec()
        stored = repository.create(ctx, spec)
        missing = str(uuid.uuid4())
        assert repository.get(ctx, spec.instance_uuid).spec == spec
        with pytest.raises(SpecNotFoundError):
            repository.get(ctx, missing)  # no row: not the spec read just before
        with pytest.raises(SpecExistsError):
            repository.create(ctx, spec)  # a failed statement on the kept cursor ...
        assert repository.get(ctx, spec.instance_uuid).version == stored.version  # ... which still works
        assert repository.exists(ctx, spec.instance_uuid) and not repository.exists(ctx, missing)
        saved = repository.save(ctx, attrs.evolve(spec, availability_zone="az9"), expected_version=stored.version)
        with pytest.raises(ConflictError) as err:
            repository.save(ctx, spec, expected_version=stored.version)
        assert err.value.actual_version == saved.version
        assert repository.destroy(ctx, spec.instance_uuid)
        assert not repository.destroy(ctx, spec.instance_uuid, missing_ok=True)
        with repository.connections.connection(API) as conn:
            assert conn.one_row_cursor() is conn.one_row_cursor()


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "libpq-before-17"])
def test_a_batch_read_longer_than_one_streamed_chunk(fresh_topology, monkeypatch, chunked):
    """get_many streams its result in chunks of STREAM_CHUNK_ROWS (fetches it whole with a
    libpq older than 17); corrupt rows in any chunk are reported and every other spec of
    every chunk comes back."""
    if chunked and psycopg.pq.version() < 170000:
        pytest.skip(f"libpq {psycopg.pq.version()} has no chunked rows (they need libpq 17)")
    monkeypatch.setattr(queries_module, "_CHUNKED_ROWS", chunked)
    topo = fresh_topology()
    n = 2 * STREAM_CHUNK_ROWS + 50
    ctx = cell_context("cell1")
    with RequestSpecRepository.from_topology(topo) as repository:
        specs = [sample_spec() for _ in range(n)]
        repository.create_many(ctx, specs)
        bad = [str(uuid.uuid4()) for _ in range(3)]
        for key in bad:
            plant(topo, "cell1", key, b'{"schema_version": 2, "flavor": 7}')
        wanted = [s.instance_uuid for s in specs] + bad + [str(uuid.uuid4())]
        batch = repository.get_many(ctx, wanted)
        assert len(batch.found) == n and sorted(batch.errors) == sorted(bad) and len(batch.missing) == 1
        assert all(batch.found[s.instance_uuid].spec == s for s in specs)
        assert repository.get(ctx, specs[-1].instance_uuid).spec == specs[-1]  # connection still usable


def test_spec_store_create_takes_one_spec_or_many(store):
    one = sample_spec()
    [stored] = store.create(one)
    assert stored.spec == one and store.location(one.instance_uuid).database == API
    many = [sample_spec(), sample_spec()]
    assert [s.spec for s in store.create(many)] == many
    assert [store.get(s.instance_uuid).spec for s in many] == many


def test_instance_uuid_lists_go_as_one_binary_uuid_array(repo):
    """Statements naming many instances get them as one binary uuid[] (no text array for
    the server to parse); the empty list works, and a value that is not a canonical uuid
    is a typed error naming it before anything is sent."""
    keys = [str(uuid.uuid4()) for _ in range(5)]
    with repo.connections.connection(API) as conn:
        cur = conn.execute(b"SELECT %s::uuid[], pg_typeof(%s)::text", [UuidArray(keys), UuidArray(keys)])
        echoed, sent_as = cur.fetchone()
        assert [str(u) for u in echoed] == keys
        assert sent_as == "uuid[]"
        assert conn.execute(b"SELECT cardinality(%s::uuid[])", [UuidArray([])]).fetchone()[0] == 0
        for bad in ("not-a-uuid", keys[0][:-1], keys[0] + "0", "g" * 32, keys[0][:-2] + " 0"):
            with pytest.raises(SpecValidationError, match="instance_uuid") as err:
                conn.execute(b"SELECT %s::uuid[]", [UuidArray([keys[1], bad])])
            assert "not a canonical uuid" in str(err.value)
    located = [str(uuid.uuid4()) for _ in range(3)]
    repo.create_many(api_context(), [attrs.evolve(sample_spec(), instance_uuid=k) for k in located])
    batch = repo.get_many(api_context(), [*located, keys[0]])
    assert sorted(batch.found) == sorted(located)
