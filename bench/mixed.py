"""The mixed concurrent workload: 70 % get, 20 % CAS save, 10 % create, from many threads
(and processes) at once, against one database.

Two contenders do the same work with a connection pool of the same size: the repository
(``RequestSpecRepository``, its own pool) and raw psycopg with a ``psycopg_pool``
``ConnectionPool`` running the repository's SQL with orjson. Every thread works on its
own specs (so a CAS save never conflicts: any error is a real one) and tracks their
versions. Inputs (specs, documents, the changed variants a save writes) are prepared
before the clock starts; each call is timed on its own.

Each contender runs in child processes of its own (``python -m bench.mixed CONTENDER DSN
THREADS POOL SEED``): a child preloads, prints ``ready``, then runs one sample for each
``run SECONDS`` line on stdin (one JSON line back each) until ``quit``. The children of
both contenders stay up for the whole row, so its samples alternate between contenders
every few seconds on warm pools: what drifts on a shared VM over a minute hits both
sides of a round alike, and each round gives one paired ratio.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import attrs
import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from psycopg_pool import ConnectionPool

from bench.workload import make_specs
from reqspec_repo._spec import codec
from reqspec_repo._spec.model import RequestSpec
from reqspec_repo._store.config import Settings, Topology
from reqspec_repo._store.context import api_context
from reqspec_repo._store.queries import query
from reqspec_repo._store.repository import RequestSpecRepository

#: Specs each thread creates before the clock starts (the ones it reads and saves).
PRELOAD = 40
#: How long a child may take beyond a sample's length before the row fails.
SAMPLE_GRACE_S = 300.0
#: Creates prepared per thread (for every sample of a row); more are prepared on the fly
#: if the samples outlast them.
PREPARED_CREATES = 1000


@dataclass
class Item:
    """One spec in both forms, with the two changed variants a save alternates between."""

    spec: RequestSpec
    doc: dict[str, Any]
    variants: tuple[tuple[RequestSpec, dict[str, Any]], tuple[RequestSpec, dict[str, Any]]]
    version: int = 1
    saves: int = 0


def _item(base: RequestSpec, base_doc: dict[str, Any], rng: random.Random) -> Item:
    key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    spec = attrs.evolve(base, instance_uuid=key)
    doc = {**base_doc, "instance_uuid": key}
    variants = tuple(
        (attrs.evolve(spec, availability_zone=az), {**doc, "availability_zone": az}) for az in ("az-x", "az-y")
    )
    return Item(spec, doc, variants)  # type: ignore[arg-type]


class Client(Protocol):
    def create(self, item: Item) -> int: ...
    def get(self, item: Item) -> object: ...
    def save(self, item: Item, variant: int) -> int: ...
    def close(self) -> None: ...


class RawPooled:
    """Raw psycopg: the repository's SQL on a ``psycopg_pool`` pool, orjson, dicts."""

    def __init__(self, dsn: str, pool_size: int) -> None:
        def configure(conn: psycopg.Connection[Any]) -> None:
            set_json_dumps(orjson.dumps, conn)
            set_json_loads(orjson.loads, conn)

        self.pool = ConnectionPool(dsn, min_size=pool_size, max_size=pool_size, open=True,
                                   kwargs={"autocommit": True}, configure=configure)
        self.pool.wait()
        self.insert = query("request_specs", "insert_spec").statement
        self.get_one = query("request_specs", "get_by_instance_uuid").statement
        self.cas = query("request_specs", "update_spec_if_version").statement
        self.version = codec.SCHEMA_VERSION

    def create(self, item: Item) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(self.insert, {"instance_uuid": item.spec.instance_uuid, "spec": Jsonb(item.doc),
                                             "schema_version": self.version}).fetchone()
        assert row is not None
        return int(row[0])

    def get(self, item: Item) -> object:
        with self.pool.connection() as conn:
            row = conn.execute(self.get_one, {"instance_uuid": item.spec.instance_uuid}).fetchone()
        assert row is not None
        return row[0], int(row[1])

    def save(self, item: Item, variant: int) -> int:
        doc = item.variants[variant][1]
        with self.pool.connection() as conn:
            row = conn.execute(self.cas, {"instance_uuid": item.spec.instance_uuid, "spec": Jsonb(doc),
                                          "schema_version": self.version,
                                          "expected_version": item.version}).fetchone()
        if row is None:
            raise RuntimeError(f"CAS save of {item.spec.instance_uuid} matched no row")
        return int(row[0])

    def close(self) -> None:
        self.pool.close()


class Repo:
    """The repository, its pool sized like raw's."""

    def __init__(self, dsn: str, pool_size: int) -> None:
        settings = Settings(pool_min_size=pool_size, pool_max_size=pool_size)
        self.repo = RequestSpecRepository.from_topology(Topology.from_dsns(dsn, {}, settings))
        self.ctx = api_context()

    def create(self, item: Item) -> int:
        return self.repo.create(self.ctx, item.spec).version

    def get(self, item: Item) -> object:
        return self.repo.get(self.ctx, item.spec.instance_uuid)

    def save(self, item: Item, variant: int) -> int:
        return self.repo.save(self.ctx, item.variants[variant][0], expected_version=item.version).version

    def close(self) -> None:
        self.repo.close()


CLIENTS: dict[str, Callable[[str, int], Client]] = {"raw": RawPooled, "repo": Repo}


@dataclass
class Outcome:
    ops: int = 0
    seconds: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def merge(self, other: Outcome) -> None:
        self.ops += other.ops
        self.errors += other.errors
        self.error_samples += other.error_samples[:5]
        self.latencies += other.latencies

    def to_json(self) -> str:
        """One line, what a child sends back for its sample (latencies in us)."""
        return json.dumps({"ops": self.ops, "seconds": self.seconds, "errors": self.errors,
                           "error_samples": self.error_samples,
                           "latencies_us": [round(x * 1e6, 1) for x in self.latencies]})

    @classmethod
    def from_json(cls, line: str) -> Outcome:
        data = json.loads(line)
        return cls(data["ops"], data["seconds"], data["errors"], data["error_samples"],
                   [x / 1e6 for x in data["latencies_us"]])


class Workload:
    """Threads sharing one client; ``prepare`` (not timed) then ``run``."""

    def __init__(self, client: Client, threads: int, seed: int) -> None:
        self.client = client
        self.threads = threads
        base = make_specs(50, seed=seed)
        self.base = [(s, codec.to_document(s)) for s in base]
        self.rngs = [random.Random(seed * 1000 + i) for i in range(threads)]
        self.own: list[list[Item]] = [[] for _ in range(threads)]
        self.creates: list[list[Item]] = [[] for _ in range(threads)]

    def _new(self, t: int) -> Item:
        rng = self.rngs[t]
        spec, doc = self.base[rng.randrange(len(self.base))]
        return _item(spec, doc, rng)

    def prepare(self) -> None:
        for t in range(self.threads):
            for _ in range(PRELOAD):
                item = self._new(t)
                item.version = self.client.create(item)
                self.own[t].append(item)
            self.creates[t] = [self._new(t) for _ in range(PREPARED_CREATES)]

    def _thread(self, t: int, start: threading.Barrier, seconds: float, out: Outcome) -> None:
        rng, own, creates, client = self.rngs[t], self.own[t], self.creates[t], self.client
        lat = out.latencies
        start.wait()
        deadline = time.perf_counter() + seconds
        while True:
            roll = rng.random()
            try:
                if roll < 0.7:
                    item = own[rng.randrange(len(own))]
                    t0 = time.perf_counter()
                    client.get(item)
                elif roll < 0.9:
                    item = own[rng.randrange(len(own))]
                    t0 = time.perf_counter()
                    item.version = client.save(item, item.saves % 2)
                    item.saves += 1
                else:
                    item = creates.pop() if creates else self._new(t)
                    t0 = time.perf_counter()
                    item.version = client.create(item)
                    own.append(item)
                t1 = time.perf_counter()
                lat.append(t1 - t0)
                out.ops += 1
            except Exception as exc:  # counted and reported: the target is zero errors
                t1 = time.perf_counter()
                out.errors += 1
                if len(out.error_samples) < 5:
                    out.error_samples.append(f"{type(exc).__name__}: {exc}")
            if t1 >= deadline:
                return

    def run(self, seconds: float, ready: Callable[[], None] | None = None) -> Outcome:
        outs = [Outcome() for _ in range(self.threads)]
        start = threading.Barrier(self.threads + 1)
        workers = [threading.Thread(target=self._thread, args=(t, start, seconds, outs[t]))
                   for t in range(self.threads)]
        for w in workers:
            w.start()
        if ready is not None:
            ready()
        start.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        total = Outcome(seconds=time.perf_counter() - t0)
        for o in outs:
            total.merge(o)
        return total


def main(argv: list[str]) -> None:
    contender, dsn, threads, pool_size, seed = argv
    client = CLIENTS[contender](dsn, int(pool_size))
    try:
        work = Workload(client, int(threads), int(seed))
        work.prepare()
        print("ready", flush=True)
        for line in sys.stdin:  # "run SECONDS", until "quit" or end of input
            command = line.split()
            if not command or command[0] != "run":
                break
            print(work.run(float(command[1])).to_json(), flush=True)
    finally:
        client.close()


class Contender:
    """The parent's handle on one contender's ``procs`` child processes (see the module)."""

    def __init__(self, name: str, dsn: str, procs: int, threads: int, pool_size: int, seed: int) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.name = name
        self.children = [
            subprocess.Popen([sys.executable, "-m", "bench.mixed", name, dsn, str(threads), str(pool_size),
                              str(seed * 10 + i)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=root, env={**os.environ, "PYTHONPATH": root})
            for i in range(procs)
        ]
        for child in self.children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                self._fail(child)

    def _fail(self, child: Any) -> None:
        self.close()
        raise RuntimeError(f"bench.mixed child ({self.name}) failed: {child.communicate()[1][-2000:]}")

    def sample(self, seconds: float) -> Outcome:
        """One sample: every child runs ``seconds`` at once; their outcomes merged."""
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(f"run {seconds}\n")
            child.stdin.flush()
        total = Outcome()
        for child in self.children:
            assert child.stdout is not None
            # One line per sample, nothing read ahead: select() sees what readline() gets.
            answered, _, _ = select.select([child.stdout], [], [], seconds + SAMPLE_GRACE_S)
            line = child.stdout.readline() if answered else ""
            if not line:
                self._fail(child)
            part = Outcome.from_json(line)
            total.merge(part)
            total.seconds = max(total.seconds, part.seconds)
        return total

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                try:
                    child.communicate("quit\n", timeout=60)
                except Exception:  # a child that does not stop: killed, the row fails anyway
                    child.kill()
                    child.wait()

    def __enter__(self) -> Contender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    main(sys.argv[1:])
