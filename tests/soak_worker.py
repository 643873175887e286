"""One soak worker process: a random mix of operations, logging only acknowledged results."""

from __future__ import annotations

import random
import time
from typing import Any

import attrs

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import (
    ConflictError,
    LocationNotFoundError,
    MoveInProgressError,
    SpecMovingError,
    SpecNotFoundError,
)
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._store.config import Settings, Topology
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository

# The errors a correct run may meet under contention; anything else fails the soak.
EXPECTED = (
    ConflictError,
    SpecMovingError,
    MoveInProgressError,
    LocationNotFoundError,
    SpecNotFoundError,
)


def run_worker(args: tuple[int, str, dict[str, str], list[str], float, int, int, str]) -> dict[str, Any]:
    worker, api_dsn, cells, shared, seconds, max_ops, seed, pooler = args
    rng = random.Random(seed * 1000 + worker)
    topology = Topology.from_dsns(api_dsn, cells, Settings(pooler=pooler))
    targets = topology.database_names
    acks: list[tuple[str, str, int, str]] = []  # (op, uuid, version, marker)
    stats = {"ops": 0, "conflicts": 0, "moves": 0, "moved": 0, "errors": {}}
    unexpected: list[str] = []
    mine: list[str] = []
    gone: set[str] = set()  # destroyed by this worker: not picked again
    deadline = time.monotonic() + seconds
    with RequestSpecRepository.from_topology(topology) as repo:
        store = SpecStore(repo)
        seq = 0
        while time.monotonic() < deadline and stats["ops"] < max_ops:
            seq += 1
            stats["ops"] += 1
            op = rng.choices(["create", "get", "save", "destroy", "move"], [1, 4, 6, 0.15, 2])[0]
            pool = [k for k in shared + mine if k not in gone]
            key = rng.choice(pool)
            try:
                if op == "create":
                    spec = sample_spec()
                    spec = attrs.evolve(spec, availability_zone=f"w{worker}-{seq}")
                    store.create([spec], database=rng.choice(targets))
                    mine.append(spec.instance_uuid)
                    acks.append(("save", spec.instance_uuid, 1, spec.availability_zone or ""))
                elif op == "get":
                    store.get(key)
                elif op == "save":
                    stored = store.get(key)
                    marker = f"w{worker}-{seq}"
                    saved = store.save(attrs.evolve(stored.spec, availability_zone=marker), expected_version=stored.version)
                    acks.append(("save", key, saved.version, marker))
                elif op == "destroy":
                    if store.destroy(key):
                        acks.append(("destroy", key, 0, ""))
                    gone.add(key)
                else:
                    batch = rng.sample(pool, min(len(pool), rng.randint(1, 8)))
                    result = move_specs(store, batch, rng.choice(targets))
                    stats["moves"] += 1
                    stats["moved"] += len(result.moved)
                    for error in result.failed.values():
                        name = type(error).__name__
                        stats["errors"][name] = stats["errors"].get(name, 0) + 1
                        if not isinstance(error, EXPECTED):
                            unexpected.append(f"move: {name}: {error}")
            except EXPECTED as exc:
                name = type(exc).__name__
                stats["errors"][name] = stats["errors"].get(name, 0) + 1
                if isinstance(exc, ConflictError):
                    stats["conflicts"] += 1
            except Exception as exc:  # noqa: BLE001 - reported to the parent as a failure
                unexpected.append(f"{op}: {type(exc).__name__}: {exc}")
    return {"acks": acks, "stats": stats, "unexpected": unexpected}
