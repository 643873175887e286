"""Real crashes during moves: SIGKILL of a separate mover process, and SIGKILL of the
source or target PostgreSQL server; then recover() and the invariant."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import build_topology
from movecheck import assert_invariant, expire_leases, recover_once_reachable

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import DatabaseUnavailableError
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._moving.recovery import recover
from reqspec_repo._store.config import API
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository
from reqspec_repo.testing.failpoints import MOVE_FAILPOINTS, armed

pytestmark = pytest.mark.both_paths  # directly and through PgBouncer


def open_store(topology):
    return SpecStore(RequestSpecRepository.from_topology(topology))


def mover_env(topology, failpoints=""):
    env = dict(os.environ)
    env.pop("REQSPEC_CONFIG", None)
    env["REQSPEC_API_DSN"] = topology.api.dsn
    for name, db in topology.cells.items():
        env[f"REQSPEC_CELL_{name.upper()}_DSN"] = db.dsn
    env["REQSPEC_FAILPOINTS"] = failpoints
    env["REQSPEC_POOLER"] = topology.settings.pooler
    return env


def test_sigkill_of_a_mover_process_at_random_moments(split_topology):
    seed = int(os.environ.get("REQSPEC_TEST_SEED", time.time()))
    rng = random.Random(seed)
    print(f"seed {seed}")
    store = open_store(split_topology)
    try:
        specs = {s.instance_uuid: s for s in (sample_spec() for _ in range(240))}
        store.create(list(specs.values()))
        # Slow each chunk down a little so that most kills land inside a move.
        env = mover_env(split_topology, "after_copy=sleep:0.08,after_seal=sleep:0.08,after_commit=sleep:0.08")
        route = [(API, "cell1"), ("cell1", "cell2"), ("cell2", API)]
        kills = runs = 0
        while kills < 8 and runs < 20:  # until 8 movers were really killed mid-run
            source, target = route[runs % len(route)]
            runs += 1
            proc = subprocess.Popen(
                [sys.executable, "-m", "reqspec_repo._cli.main", "move", "--from", source, "--to", target,
                 "--chunk-size", "30"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            # A random moment on purpose (no event to wait for): the kill must land anywhere
            # in the protocol; the loop counts only the kills that hit a running mover.
            time.sleep(rng.uniform(0.4, 1.8))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate(timeout=60)
            expire_leases(store)  # the killed mover's leases run out
            recover(store)
            assert_invariant(store, specs)
        print(f"{kills} of {runs} movers killed mid-run")
        assert kills == 8
    finally:
        store.repo.close()


@pytest.fixture
def cells_on_killable_server(pg_server, disposable_server, via):
    """API database on the shared server, both cells on a server the test may kill."""
    cell_server = disposable_server()
    topology, drop = build_topology(pg_server, cell_server, via=via)
    yield topology, cell_server
    if not cell_server.is_running():
        cell_server.start()
    drop()


# Killed before the copy, the move cannot commit and is rolled back (the source was
# already sealed); killed after the copy, the commit (API) still succeeds and recover()
# finishes it.
@pytest.mark.parametrize(
    "point, outcome, home",
    [("after_claim", "rolled_back", API), ("after_copy", "finished", "cell1"), ("after_commit", "finished", "cell1")],
)
def test_target_server_killed_mid_move(cells_on_killable_server, point, outcome, home):
    topology, cell_server = cells_on_killable_server
    store = open_store(topology)
    specs = {s.instance_uuid: s for s in (sample_spec() for _ in range(20))}
    store.create(list(specs.values()))
    with armed(point, cell_server.kill), pytest.raises(DatabaseUnavailableError):
        move_specs(store, specs, "cell1")
    store.repo.close()
    cell_server.start()
    fresh = open_store(topology)
    try:
        report = recover_once_reachable(fresh)
        assert sorted(getattr(report, outcome)) == sorted(specs)
        assert {fresh.location(k).database for k in specs} == {home}
        assert_invariant(fresh, specs)
    finally:
        fresh.repo.close()


# Killed before the seal, nothing changed; killed after it, the copy, the commit (target
# and API) still succeed, the cleanup of the source fails, and recover() finishes it.
@pytest.mark.parametrize("point, outcome", [("after_claim", None), ("after_seal", "finished")])
def test_source_server_killed_mid_move(cells_on_killable_server, point, outcome):
    topology, cell_server = cells_on_killable_server
    store = open_store(topology)
    specs = {s.instance_uuid: s for s in (sample_spec() for _ in range(20))}
    store.create(list(specs.values()), database="cell1")
    with armed(point, cell_server.kill), pytest.raises(DatabaseUnavailableError):
        move_specs(store, specs, API)
    store.repo.close()
    cell_server.start()
    fresh = open_store(topology)
    try:
        report = recover_once_reachable(fresh)
        if outcome is None:
            assert report.changed == 0
        else:
            assert sorted(getattr(report, outcome)) == sorted(specs)
        assert_invariant(fresh, specs)
        assert move_specs(fresh, specs, "cell2").ok  # and the specs move on afterwards
        assert_invariant(fresh, specs)
    finally:
        fresh.repo.close()


def move_through_a_restart(topology, server, point, source, target):
    """Move specs from ``source`` to ``target``, restarting ``server`` at ``point``; then,
    whatever the mover saw, recover() leaves every spec live in exactly one database."""
    store = open_store(topology)
    try:
        specs = {s.instance_uuid: s for s in (sample_spec() for _ in range(12))}
        store.create(list(specs.values()), database=source)
        outcome = {}
        with armed(point, server.restart):
            try:
                outcome["result"] = move_specs(store, specs, target)
            except DatabaseUnavailableError as exc:  # the mover saw the failover
                outcome["error"] = exc
    finally:
        store.repo.close()
    fresh = open_store(topology)
    try:
        expire_leases(fresh)  # a mover that saw an error may not have given them back
        recover_once_reachable(fresh)
        assert_invariant(fresh, specs)
        assert move_specs(fresh, specs, source).ok  # and they move on afterwards
        assert_invariant(fresh, specs)
    finally:
        fresh.repo.close()


@pytest.mark.parametrize("point", MOVE_FAILPOINTS)
def test_api_server_restarted_between_two_steps_of_a_move(pg_server, disposable_server, via, point):
    """The API database (the leases, the commit point) fails over mid-move, with the API
    database as the source, then as the target."""
    api_server = disposable_server()
    topology, drop = build_topology(api_server, pg_server, via=via)
    try:
        move_through_a_restart(topology, api_server, point, API, "cell1")
        move_through_a_restart(topology, api_server, point, "cell2", API)
    finally:
        drop()


@pytest.mark.parametrize("point", MOVE_FAILPOINTS)
def test_cell_server_restarted_between_two_steps_of_a_move(cells_on_killable_server, point):
    """A cell's server fails over mid-move, as the target, then as the source."""
    topology, cell_server = cells_on_killable_server
    move_through_a_restart(topology, cell_server, point, API, "cell1")
    move_through_a_restart(topology, cell_server, point, "cell2", API)
