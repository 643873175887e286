"""Soak: several worker processes, a random mix of create/get/CAS save/destroy/move on an
overlapping set of instances, API and cells on separate servers. The model of the expected
state is built from acknowledged results only. The short form runs in `make test`; the
long one is `make soak` (REQSPEC_SOAK_SECONDS, default 300)."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest
from helpers import run_sql
from soak_worker import run_worker

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._moving.recovery import verify
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository


def soak(topology, *, workers: int, seconds: float, max_ops: int, shared_count: int = 40) -> dict:
    seed = int(os.environ.get("REQSPEC_TEST_SEED", time.time()))
    with RequestSpecRepository.from_topology(topology) as repo:
        store = SpecStore(repo)
        initial = [sample_spec() for _ in range(shared_count)]
        store.create(initial)
    shared = [s.instance_uuid for s in initial]
    acks: list[tuple[str, str, int, str]] = [("save", s.instance_uuid, 1, s.availability_zone or "") for s in initial]
    cells = {name: db.dsn for name, db in topology.cells.items()}
    args = [(w, topology.api.dsn, cells, shared, seconds, max_ops, seed) for w in range(workers)]
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.map(run_worker, args)
    duration = time.monotonic() - started
    unexpected = [u for r in results for u in r["unexpected"]]
    assert unexpected == [], unexpected[:10]
    for r in results:
        acks.extend(tuple(a) for a in r["acks"])  # type: ignore[misc]
    totals: dict = {"ops": 0, "conflicts": 0, "moves": 0, "moved": 0, "errors": {}}
    for r in results:
        for k in ("ops", "conflicts", "moves", "moved"):
            totals[k] += r["stats"][k]
        for name, n in r["stats"]["errors"].items():
            totals["errors"][name] = totals["errors"].get(name, 0) + n

    destroyed = {key for op, key, _, _ in acks if op == "destroy"}
    latest: dict[str, tuple[int, str]] = {}
    for op, key, version, marker in acks:
        if op == "save" and version >= latest.get(key, (0, ""))[0]:
            latest[key] = (version, marker)
    keys = sorted(latest)
    rows: dict[str, list[tuple[str, str]]] = {k: [] for k in keys}
    for name in topology.database_names:
        for key, state in run_sql(
            topology, name,
            "SELECT instance_uuid::text, move_state FROM request_specs WHERE instance_uuid = ANY(%s::uuid[])",
            [keys],
        ):
            rows[key].append((name, state))
    with RequestSpecRepository.from_topology(topology) as repo:
        store = SpecStore(repo)
        locations = store.locations(keys)
        for key in keys:
            if key in destroyed:
                assert rows[key] == [] and key not in locations, f"destroyed {key} still has {rows[key]}"
                continue
            assert len(rows[key]) == 1 and rows[key][0][1] == "live", f"{key}: {rows[key]}"
            assert locations[key].database == rows[key][0][0]
            stored = store.get(key)
            version, marker = latest[key]
            # Every acknowledged write is visible: the newest one is what is stored.
            assert (stored.version, stored.spec.availability_zone) == (version, marker), key
        report = verify(store)
        assert report.ok, report.problems[:10]
    totals.update(duration_s=round(duration, 1), instances=len(keys), destroyed=len(destroyed),
                  acknowledged_writes=len(acks), seed=seed)
    print(f"soak figures: {totals}")
    return totals


def test_soak_short(split_topology):
    figures = soak(split_topology, workers=3, seconds=10, max_ops=1500, shared_count=20)
    assert figures["ops"] > 100 and figures["moved"] > 0
    assert sum(figures["errors"].values()) > 0  # contention really happened, and was typed


@pytest.mark.soak
def test_soak_long(split_topology):
    seconds = float(os.environ.get("REQSPEC_SOAK_SECONDS", "300"))
    figures = soak(split_topology, workers=6, seconds=seconds, max_ops=10**9, shared_count=200)
    assert figures["moved"] > 0
