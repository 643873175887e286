"""Many callers on small pools: no operation holds a pooled connection while it waits for
another from the same pool, so 4 x pool_max_size threads doing destroy, boot into a cell,
moves out of and into the API database, verify and recover at once all finish, with no
DatabaseUnavailableError, directly and through PgBouncer."""

from __future__ import annotations

import threading
import time

import attrs
import pytest
from movecheck import assert_invariant

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import MoveInProgressError
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._moving.recovery import recover, verify
from reqspec_repo._store.config import API
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository

pytestmark = pytest.mark.both_paths  # directly and through PgBouncer

ROUNDS = 3
OPERATIONS = ("destroy", "boot_into_cell", "move_out_of_api", "move_into_api", "verify", "recover")


@pytest.mark.parametrize("pool_max_size", [2, 1])
def test_four_times_the_pool_in_threads_all_finish(split_topology, pool_max_size):
    settings = attrs.evolve(split_topology.settings, pool_min_size=1, pool_max_size=pool_max_size)
    topology = attrs.evolve(split_topology, settings=settings)
    threads_n = 4 * pool_max_size
    with RequestSpecRepository.from_topology(topology) as repo:
        store = SpecStore(repo)
        # Per thread and round: specs in the API database (to move out and to destroy)
        # and in cell2 (to move into the API database).
        plan: dict[tuple[int, int], dict[str, list[str]]] = {}
        expected = {}
        for t in range(threads_n):
            for r in range(ROUNDS):
                in_api = [sample_spec() for _ in range(4)]
                in_cell = [sample_spec() for _ in range(4)]
                store.create(in_api)
                store.create(in_cell, database="cell2")
                expected.update({s.instance_uuid: s for s in in_api + in_cell})
                plan[t, r] = {
                    "move_out": [s.instance_uuid for s in in_api[:3]],
                    "destroy": [in_api[3].instance_uuid],
                    "move_in": [s.instance_uuid for s in in_cell],
                }
        booted: dict[str, object] = {}
        errors: list[BaseException] = []
        busy: list[str] = []
        done = []
        start = threading.Barrier(threads_n)

        def worker(t: int) -> None:
            start.wait()
            for r in range(ROUNDS):
                mine = plan[t, r]
                for i in range(len(OPERATIONS)):
                    op = OPERATIONS[(t + i) % len(OPERATIONS)]
                    try:
                        if op == "destroy":
                            for key in mine["destroy"]:
                                assert store.destroy(key) is True
                                expected.pop(key)
                        elif op == "boot_into_cell":
                            spec = sample_spec()
                            store.create(spec, database="cell1")
                            booted[spec.instance_uuid] = spec
                        elif op in ("move_out_of_api", "move_into_api"):
                            keys, target = (mine["move_out"], "cell1") if op == "move_out_of_api" else (mine["move_in"], API)
                            result = move_specs(store, keys, target)
                            # verify/recover of other threads may hold a lease a moment:
                            # a typed, retryable refusal, retried once it is free.
                            for _ in range(50):
                                if result.ok:
                                    break
                                assert all(isinstance(e, MoveInProgressError) for e in result.failed.values()), result.failed
                                busy.extend(result.failed)
                                time.sleep(0.01)
                                result = move_specs(store, list(result.failed), target)
                            assert result.ok, result.failed
                        elif op == "verify":
                            verify(store)
                        else:
                            recover(store)
                    except BaseException as exc:  # noqa: BLE001 - handed to the test
                        errors.append(exc)
            done.append(t)

        started = time.monotonic()
        workers = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(300)
        elapsed = time.monotonic() - started
        assert errors == []
        assert sorted(done) == list(range(threads_n))
        expected.update(booted)  # type: ignore[arg-type]
        report = verify(store)
        assert report.ok and report.busy == [], report.problems
        assert_invariant(store, expected)
        print(
            f"concurrency figures: pool_max_size={pool_max_size} threads={threads_n} "
            f"operations={threads_n * ROUNDS * len(OPERATIONS)} elapsed_s={elapsed:.2f} "
            f"move_retries_on_busy={len(busy)}"
        )
