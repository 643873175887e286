"""Move leases (migration 0004): durable claims in the API database that replace
session advisory locks; recover() leaves unexpired ones alone and takes over expired
ones; a mover whose lease ran out cannot commit."""

from __future__ import annotations

import time

import attrs
import pytest
from helpers import run_sql
from movecheck import assert_invariant, expire_leases, rows_everywhere

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import LeaseExpiredError, MoveInProgressError
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._moving.recovery import recover, verify
from reqspec_repo._store.config import API
from reqspec_repo._store.leases import LeasePurpose, Leases
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository
from reqspec_repo.testing.failpoints import FailpointHit, armed

pytestmark = pytest.mark.both_paths  # directly and through PgBouncer


@pytest.fixture
def split_store(split_topology):
    with RequestSpecRepository.from_topology(split_topology) as repo:
        yield SpecStore(repo)


def boot(store, n=3, database=API):
    specs = [sample_spec() for _ in range(n)]
    store.create(specs, database=database)
    return {s.instance_uuid: s for s in specs}


def test_a_crashed_movers_lease_is_left_alone_until_it_expires(split_store):
    specs = boot(split_store)
    with armed("after_seal"), pytest.raises(FailpointHit):
        move_specs(split_store, specs, "cell1")
    leases = Leases(split_store.repo.connections).of(specs)
    assert set(leases) == set(specs)
    assert {lease.purpose for lease in leases.values()} == {LeasePurpose.MOVE.value}
    assert not any(lease.expired for lease in leases.values()) and len({lease.holder for lease in leases.values()}) == 1
    report = recover(split_store)  # the mover may only be slow: hands off
    assert sorted(report.busy) == sorted(specs) and report.changed == 0
    assert sorted(verify(split_store).busy) == sorted(specs)
    assert expire_leases(split_store) == len(specs)
    report = recover(split_store)  # now it is taken over and rolled back
    assert sorted(report.rolled_back) == sorted(specs)
    assert Leases(split_store.repo.connections).of(specs) == {}
    assert_invariant(split_store, specs)


def test_a_mover_whose_lease_expired_cannot_commit(split_store):
    specs = boot(split_store)
    with armed("after_copy", lambda: expire_leases(split_store)):
        result = move_specs(split_store, specs, "cell1")
    assert result.moved == []
    assert {type(e) for e in result.failed.values()} == {LeaseExpiredError}
    assert all(e.retryable for e in result.failed.values())
    assert {split_store.location(k).database for k in specs} == {API}
    assert Leases(split_store.repo.connections).of(specs) == {}
    assert_invariant(split_store, specs)
    assert move_specs(split_store, specs, "cell1").ok  # and a retry moves them


def test_recover_takes_over_an_expired_lease_while_the_mover_still_runs(split_store):
    specs = boot(split_store, database="cell2")
    seen = {}

    def stall_then_lose_the_lease():
        expire_leases(split_store)
        seen["report"] = recover(split_store)  # takes over, rolls back the sealed source

    with armed("after_copy", stall_then_lose_the_lease):
        result = move_specs(split_store, specs, API)
    assert sorted(seen["report"].rolled_back) == sorted(specs)
    assert {type(e) for e in result.failed.values()} == {LeaseExpiredError}
    for key in specs:  # the mover's late copy in the target was rolled back by itself
        assert [(db, state) for db, state, _ in rows_everywhere(split_store.topology, key)] == [("cell2", "live")]
    assert_invariant(split_store, specs)


def test_a_lease_runs_out_on_the_servers_clock(split_topology):
    topology = attrs.evolve(split_topology, settings=attrs.evolve(split_topology.settings, move_lease_ms=1000))
    with RequestSpecRepository.from_topology(topology) as repo:
        store = SpecStore(repo)
        specs = boot(store)
        with armed("after_seal"), pytest.raises(FailpointHit):
            move_specs(store, specs, "cell1")
        assert sorted(recover(store).busy) == sorted(specs)
        leases = Leases(repo.connections)
        # Waits on the server's own clock (the condition, polled), not on a sleep of
        # the lease length: the lease is judged by the server's time only.
        for _ in range(100):
            if all(lease.expired for lease in leases.of(specs).values()):
                break
            time.sleep(0.05)
        assert all(lease.expired for lease in leases.of(specs).values())
        report = recover(store)
        assert report.busy == [] and sorted(report.rolled_back) == sorted(specs)
        assert move_specs(store, specs, "cell1").ok  # a new mover takes the expired leases
        assert_invariant(store, specs)


def test_destroy_waits_for_a_held_lease_and_then_reports_it(split_store):
    specs = boot(split_store, 2)
    key = next(iter(specs))
    with armed("after_claim"), pytest.raises(FailpointHit):
        move_specs(split_store, [key], "cell1")
    with pytest.raises(MoveInProgressError) as err:
        split_store.destroy(key)
    assert err.value.retryable and key in str(err.value)
    expire_leases(split_store)
    assert split_store.destroy(key) is True
    del specs[key]
    assert rows_everywhere(split_store.topology, key) == []
    assert_invariant(split_store, specs)


def test_a_create_into_a_cell_holds_a_lease_only_while_it_runs(split_store):
    specs = boot(split_store, 3, database="cell1")
    assert Leases(split_store.repo.connections).of(specs) == {}
    assert {split_store.location(k).database for k in specs} == {"cell1"}
    assert_invariant(split_store, specs)


def test_verify_on_a_read_only_api_database_reads_the_leases_instead(split_store):
    specs = boot(split_store)
    with armed("after_seal"), pytest.raises(FailpointHit):  # suspects, leases held
        move_specs(split_store, specs, "cell1")
    topology = split_store.topology
    dbname = run_sql(topology, API, "SELECT current_database()")[0][0]
    run_sql(topology, API, f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    try:
        with RequestSpecRepository.from_topology(topology) as repo:  # new connections: read-only
            report = verify(SpecStore(repo))
        assert sorted(report.busy) == sorted(specs) and report.problems == []
    finally:
        run_sql(topology, API, f'BEGIN READ WRITE; ALTER DATABASE "{dbname}" SET default_transaction_read_only = off; COMMIT')
    expire_leases(split_store)
    assert sorted(recover(split_store).rolled_back) == sorted(specs)
