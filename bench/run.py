"""``python -m bench [--quick]``: the side-by-side benchmark and its targets.

Every contender runs on the same server(s) with the same durability settings; rounds are
interleaved (raw, ORM, repository, raw, ...) so that background noise hits all alike.
Each row reports the median and the interquartile range (p25-p75) of its samples.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import thread_time
from typing import Any

import attrs
import psycopg

from bench import msgspec_model
from bench.contenders import Orm, Raw
from bench.mixed import Contender
from bench.plot import plot_rows
from bench.seeding import copy_locations, copy_specs
from bench.servers import FULL_RUN_SHARED_BUFFERS, Server, servers
from bench.workload import make_specs
from reqspec_repo._spec import codec
from reqspec_repo._spec.model import RequestSpec
from reqspec_repo._store.config import API, Settings, Topology
from reqspec_repo._store.context import api_context, cell_context
from reqspec_repo._store.documents import as_jsonb, register_document_types
from reqspec_repo._store.migrate import migrate_topology
from reqspec_repo._store.repository import RequestSpecRepository

ROWS = (
    "single create",
    "single get -> RequestSpec",
    "single CAS save",
    "batch create",
    "batch get",
    "codec encode",
    "codec decode",
    "get latency 1k vs large table",
    "iterate peak RSS",
    "batch move API -> cell (other server)",
    "mixed 70/20/10 get/save/create, 16 threads",
    "mixed 70/20/10 get/save/create, 4 processes x 8 threads",
    "whole-database move API -> cell",
    "recover, nothing in flight",
    "recover, interrupted moves",
    "verify throughput",
    "direct vs PgBouncer (tx mode): single",
    "move claim: lease vs advisory lock (previous)",
)


@dataclass(frozen=True)
class Sizes:
    single_ops: int  # per contender per round
    single_rounds: int
    batch: int
    batch_rounds: int
    codec_specs: int
    codec_rounds: int
    small_table: int
    big_table: int
    latency_samples: int
    move: int
    move_rounds: int
    mixed_seconds: float
    mixed_rounds: int
    whole_move: int
    interrupted: int  # interrupted moves planted for the recover row
    recover_rounds: int
    verify_rounds: int
    whole_move_rounds: int


QUICK = Sizes(10, 6, 1000, 3, 500, 5, 1000, 5000, 200, 200, 2, 1.0, 2, 2000, 100, 2, 1, 1)
FULL = Sizes(28, 48, 10_000, 5, 2000, 15, 1000, 1_000_000, 2000, 1000, 3, 3.0, 15, 100_000, 1000, 5, 2, 3)
#: Connections per pool (per process) of both contenders in the mixed rows.
MIXED_POOL = 8


@dataclass
class Row:
    name: str
    unit: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    #: Client CPU time (this thread, user + system) per sample, where measured.
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, contender: str, value: float, cpu: float | None = None) -> None:
        self.samples.setdefault(contender, []).append(value)
        if cpu is not None:
            self.cpu.setdefault(contender, []).append(cpu)

    def median(self, contender: str) -> float:
        return statistics.median(self.samples[contender])


@dataclass
class Target:
    text: str
    measured: float | None
    limit: float
    kind: str  # "<=", ">=" or "<"
    detail: str = ""
    unit: str = "x"  # how the measured figure reads: "x" (a ratio), "MB", "s", "rows/s", "errors"

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        if self.kind == "<=":
            return self.measured <= self.limit
        if self.kind == ">=":
            return self.measured >= self.limit
        return self.measured < self.limit


def _q(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _fmt(value: float, unit: str) -> str:
    if unit == "us":
        return f"{value * 1e6:,.1f} us"
    if unit == "specs/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit in ("ops/s", "rows/s"):
        return f"{value:,.0f}/s"
    if unit == "s":
        return f"{value:,.3f} s"
    return f"{value:.3g} {unit}"


CONTENDERS = ("raw", "orm", "repo")
#: The single operations also run raw twice (an A/A pair: the row's noise floor).
SINGLE_CONTENDERS = ("raw", "raw again", "orm", "repo")
MIXED_CONTENDERS = ("raw", "repo")


def _ordered(names: Sequence[str], round_no: int) -> list[str]:
    """The contenders' order in round ``round_no``: all permutations in turn, so that each
    runs after each other one equally often. (A rotation would not do: it keeps raw ->
    ORM -> repo -> raw cyclic, and the repository would always follow the ORM's block.)"""
    orders = list(itertools.permutations(names))
    return list(orders[round_no % len(orders)])


def _rekey(specs: Sequence[RequestSpec], rng: random.Random) -> list[RequestSpec]:
    return [attrs.evolve(s, instance_uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4))) for s in specs]


def _doc(spec: RequestSpec) -> dict[str, Any]:
    return codec.to_document(spec)


class Bench:
    def __init__(self, sizes: Sizes, quick: bool, out: Callable[[str], None]) -> None:
        self.sizes = sizes
        self.quick = quick
        self.out = out
        # Started now, while this process is small: ru_maxrss is inherited across fork/exec.
        self.rss_child: subprocess.Popen[str] | None = _rss_child()
        self.mover_children: list[subprocess.Popen[str] | None] = [
            _rss_child() for _ in range(sizes.whole_move_rounds)
        ]
        self.rng = random.Random(7)
        self.base = make_specs(500)
        self.rows: list[Row] = []
        self.targets: list[Target] = []
        self.pending: list[str] = []

    # -- helpers

    def place_children(self) -> None:
        """Give the children started before the servers were pinned this process's CPUs:
        otherwise the whole-move row's mover (a child) could run on the servers' CPU while
        the naive move (this process) cannot (3-4 % slower in a side-by-side check)."""
        if not hasattr(os, "sched_setaffinity"):
            return
        cpus = os.sched_getaffinity(0)
        for child in (self.rss_child, *self.mover_children):
            if child is not None and child.poll() is None:
                os.sched_setaffinity(child.pid, cpus)

    def log(self, text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    def fresh(self, n: int) -> list[RequestSpec]:
        picks = [self.base[self.rng.randrange(len(self.base))] for _ in range(n)]
        return _rekey(picks, self.rng)

    # -- single operations

    @staticmethod
    def _time_block(row: Row, name: str, call: Callable[[RequestSpec, dict[str, Any]], object],
                    items: Sequence[tuple[RequestSpec, dict[str, Any]]]) -> None:
        """One contender's block of single calls, each timed (wall and client CPU)."""
        gc.collect()  # each block starts clean: no contender pays for another's garbage
        for spec, doc in items:
            c0, t0 = thread_time(), time.perf_counter()
            call(spec, doc)
            row.add(name, time.perf_counter() - t0, thread_time() - c0)

    def singles(self, raw: Raw, raw_again: Raw, orm: Orm, repo: RequestSpecRepository) -> None:
        """The single operations. ``raw_again`` is raw once more on a database of its own:
        an A/A pair whose ratio is the noise floor of the row (no target)."""
        s = self.sizes
        ctx = api_context()
        create, get, save = Row(ROWS[0], "us"), Row(ROWS[1], "us"), Row(ROWS[2], "us")
        # The same work per contender: raw and the ORM take the document, the repo the spec.
        calls: dict[str, dict[str, Callable[[RequestSpec, dict[str, Any]], object]]] = {
            "create": {"raw": lambda sp, d: raw.create(d), "raw again": lambda sp, d: raw_again.create(d),
                       "orm": lambda sp, d: orm.create(d), "repo": lambda sp, d: repo.create(ctx, sp)},
            "get": {"raw": lambda sp, d: raw.get(sp.instance_uuid), "raw again": lambda sp, d: raw_again.get(sp.instance_uuid),
                    "orm": lambda sp, d: orm.get(sp.instance_uuid), "repo": lambda sp, d: repo.get(ctx, sp.instance_uuid)},
            "save": {"raw": lambda sp, d: raw.save(d, 1), "raw again": lambda sp, d: raw_again.save(d, 1),
                     "orm": lambda sp, d: orm.save(d, 1), "repo": lambda sp, d: repo.save(ctx, sp, expected_version=1)},
        }
        contenders = SINGLE_CONTENDERS
        made: dict[str, list[tuple[RequestSpec, dict[str, Any]]]] = {name: [] for name in contenders}
        for r in range(s.single_rounds):
            for name in _ordered(contenders, r):
                fresh = [(x, _doc(x)) for x in self.fresh(s.single_ops)]
                self._time_block(create, name, calls["create"][name], fresh)
                made[name] += fresh
        for r in range(s.single_rounds):
            for name in _ordered(contenders, r):
                chunk = made[name][r * s.single_ops:(r + 1) * s.single_ops]
                self._time_block(get, name, calls["get"][name], chunk)
        for r in range(s.single_rounds):
            for name in _ordered(contenders, r):
                chunk = made[name][r * s.single_ops:(r + 1) * s.single_ops]
                changed = [(attrs.evolve(sp, availability_zone="az-moved"), {**d, "availability_zone": "az-moved"})
                           for sp, d in chunk]
                self._time_block(save, name, calls["save"][name], changed)
        for row in (create, get, save):
            row.note = "client CPU per call, median: " + ", ".join(
                f"{name} {statistics.median(v) * 1e6:,.0f} us" for name, v in row.cpu.items()
            ) + f"; A/A noise floor (raw again / raw): {row.median('raw again') / row.median('raw'):.2f}x"
        self.rows += [create, get, save]
        for row, vs_raw, vs_orm in ((create, 1.10, 2.2), (get, 1.30, 3.0), (save, 1.10, 2.5)):
            self.targets.append(Target(f"{row.name}: repo <= {vs_raw:.2f}x raw", row.median("repo") / row.median("raw"), vs_raw, "<="))
            self.targets.append(Target(f"{row.name}: repo >= {vs_orm:g}x faster than ORM", row.median("orm") / row.median("repo"), vs_orm, ">="))

    # -- batches

    def batches(self, raw: Raw, orm: Orm, repo: RequestSpecRepository, api: Server) -> None:
        """Each batch create starts right after a CHECKPOINT: a 10,000-spec batch writes
        ~40 MB of WAL, and a checkpoint (or its full-page writes) falling into one
        contender's sample and not another's made the samples bimodal (8,700/s or
        13,000-15,000/s for the same contender in one run).

        The create target is the median of the rounds' paired ratios (repo / raw in the
        same round): the server's speed can shift for good in the middle of the row
        (~25,000/s to ~15,500/s for every contender from one round on, the server's
        system CPU time tripled; no autovacuum, no memory pressure), and a ratio of
        medians taken across such a shift compared one contender's fast rounds with the
        other's slow ones (0.58x-0.71x in four runs of ~20, paired ratios ~1.0x)."""
        s = self.sizes
        ctx = api_context()
        create, get = Row(f"{ROWS[3]} {s.batch:,}", "specs/s"), Row(f"{ROWS[4]} {s.batch:,}", "specs/s")
        create.note = "raw = binary COPY; repo = create_many"
        get.note = "raw = '= ANY(...)' fetch to dicts; repo = get_many -> RequestSpecs"
        keys: dict[str, list[str]] = {"raw": [], "orm": [], "repo": []}
        for r in range(s.batch_rounds):
            for name in _ordered(CONTENDERS, r):
                specs = self.fresh(s.batch)
                docs = [_doc(x) for x in specs] if name != "repo" else []
                api.checkpoint()
                gc.collect()
                t0 = time.perf_counter()
                if name == "raw":
                    raw.copy_create(docs)
                elif name == "orm":
                    orm.create_many(docs)
                else:
                    repo.create_many(ctx, specs)
                create.add(name, s.batch / (time.perf_counter() - t0))
                keys[name] += [x.instance_uuid for x in specs]
            self.log(f"batch create round {r + 1} of {s.batch_rounds} done")
        for r in range(s.batch_rounds):
            for name in _ordered(CONTENDERS, r):
                want = self.rng.sample(keys[name], s.batch)
                gc.collect()
                t0 = time.perf_counter()
                if name == "raw":
                    n = len(raw.get_many(want))
                elif name == "orm":
                    n = len(orm.get_many(want))
                else:
                    n = len(repo.get_many(ctx, want).found)
                get.add(name, s.batch / (time.perf_counter() - t0))
                assert n == s.batch, (name, n)
        self.rows += [create, get]
        paired = [a / b for a, b in zip(create.samples["repo"], create.samples["raw"], strict=True)]
        create.note += f"; repo/raw per round: {', '.join(f'{x:.2f}' for x in paired)}"
        self.targets.append(Target(f"batch create {s.batch:,}: repo >= 0.80x raw binary COPY throughput,"
                                   f" median of {len(paired)} paired rounds", statistics.median(paired), 0.80, ">="))
        self.targets.append(Target(f"batch get {s.batch:,}: repo >= 1.0x raw ANY() dict fetch throughput",
                                   get.median("repo") / get.median("raw"), 1.0, ">="))

    # -- codec

    def codec_rows(self) -> None:
        s = self.sizes
        specs = make_specs(s.codec_specs, seed=99)
        docs = [codec.encode(x) for x in specs]
        mirrors = [msgspec_model.mirror(x) for x in specs]
        for d in docs[:20]:
            msgspec_model.DECODER.decode(d)
        enc, dec = Row(ROWS[5], "us"), Row(ROWS[6], "us")
        m_enc, m_dec = msgspec_model.ENCODER.encode, msgspec_model.DECODER.decode
        r_enc, r_dec = codec.encode, codec.decode
        for _ in range(s.codec_rounds):
            for name, fn, items, row in (
                ("msgspec", m_enc, mirrors, enc), ("reqspec", r_enc, specs, enc),
                ("msgspec", m_dec, docs, dec), ("reqspec", r_dec, docs, dec),
            ):
                t0 = time.perf_counter()
                for item in items:
                    fn(item)
                row.add(name, (time.perf_counter() - t0) / len(items))
        self.rows += [enc, dec]
        self.targets.append(Target("codec encode: reqspec <= 3x msgspec", enc.median("reqspec") / enc.median("msgspec"), 3.0, "<="))
        self.targets.append(Target("codec decode: reqspec <= 4x msgspec", dec.median("reqspec") / dec.median("msgspec"), 4.0, "<="))

    # -- large table

    def load_by_copy(self, dsn: str, count: int) -> list[str]:
        """COPY ``count`` rows (templates re-keyed by text substitution); return the uuids."""
        return copy_specs(dsn, self.base, count, seed=count)

    def warm(self, conn: psycopg.Connection[Any]) -> str:
        """Read the table, its TOAST table and its uuid index into shared buffers, through
        the connection that will then be measured.

        COPY and VACUUM go through small ring buffers, so right after the load the table
        is only in the OS page cache; bitmap heap scans read every page through the
        buffer cache proper (no ring). It has to be the measured connection's own server
        process: each process maps a shared buffer's memory page only when it first
        touches it, and at 1M rows those first touches (minor page faults, 4 KB pages)
        cost more than the lookup itself (EXPLAIN ANALYZE: 70-170 us for 4 buffer hits
        in a fresh process, 15 us once mapped). The scan runs in 64 uuid ranges so that
        no statement comes near the statement timeout. Returns what is cached.
        """
        for setting in (b"enable_seqscan", b"enable_indexscan", b"enable_indexonlyscan"):
            conn.execute(b"SET " + setting + b" = off")
        bounds = [str(uuid.UUID(int=i << 122)) for i in range(64)] + ["ffffffff-ffff-ffff-ffff-ffffffffffff"]
        for low, high in zip(bounds, bounds[1:], strict=False):
            conn.execute(b"SELECT count(*) FROM request_specs WHERE instance_uuid >= %s AND instance_uuid <= %s"
                         b" AND length(spec::text) > 0", (low, high))
        for setting in (b"enable_seqscan", b"enable_indexscan", b"enable_indexonlyscan"):
            conn.execute(b"RESET " + setting)
        row = conn.execute(
            b"SELECT pg_size_pretty(pg_total_relation_size('request_specs')), current_setting('shared_buffers')"
        ).fetchone()
        assert row is not None
        return f"table with indexes {row[0]}, shared_buffers {row[1]}"

    def large_table(self, api: Server) -> tuple[str, list[str]]:
        s = self.sizes
        small_dsn, big_dsn = api.database("small"), api.database("big")
        # One connection per database, so that the warmed connection is the measured one.
        topo = Topology.from_dsns(small_dsn, {"big": big_dsn}, Settings(pool_min_size=1, pool_max_size=1))
        migrate_topology(topo)
        t0 = time.perf_counter()
        small_keys = self.load_by_copy(small_dsn, s.small_table)
        big_keys = self.load_by_copy(big_dsn, s.big_table)
        self.log(f"loaded {s.small_table:,} + {s.big_table:,} rows by COPY in {time.perf_counter() - t0:.1f} s")
        row = Row(f"{ROWS[7]} ({s.big_table:,})", "us")
        with RequestSpecRepository.from_topology(topo) as repo:
            for name in (API, "big"):
                with repo.connections.connection(name) as conn:
                    cached = self.warm(conn)
            self.log(f"warmed both tables into shared buffers ({cached})")
            row.note = f"repo.get p50 on random uuids; warmed through the measured connection: {cached}"
            for ctx, keys, name in ((api_context(), small_keys, f"{s.small_table:,} rows"), (cell_context("big"), big_keys, f"{s.big_table:,} rows")):
                for key in keys[:50]:
                    repo.get(ctx, key)  # warm the pool
                row.samples[name] = []
            contexts = ((api_context(), small_keys, f"{s.small_table:,} rows"), (cell_context("big"), big_keys, f"{s.big_table:,} rows"))
            for _ in range(s.latency_samples // 50):
                for ctx, keys, name in contexts:
                    for key in self.rng.sample(keys, 50):
                        t0 = time.perf_counter()
                        repo.get(ctx, key)
                        row.add(name, time.perf_counter() - t0)
        self.rows.append(row)
        small, big = row.samples.values()
        self.targets.append(Target(f"get p50 at {s.big_table:,} rows <= 1.2x p50 at {s.small_table:,}",
                                   statistics.median(big) / statistics.median(small), 1.2, "<="))
        return big_dsn, big_keys

    def iterate_rss(self, dsn: str) -> None:
        s = self.sizes
        t0 = time.perf_counter()
        assert self.rss_child is not None and self.rss_child.stdin is not None
        stdout, stderr = self.rss_child.communicate(json.dumps(["iterate", dsn]) + "\n", timeout=3600)
        if self.rss_child.returncode != 0:
            raise RuntimeError(f"bench.rss failed: {stderr[-2000:]}")
        elapsed = time.perf_counter() - t0
        fields = dict(part.split("=") for part in stdout.split())
        count, peak, baseline = int(fields["count"]), int(fields["peak_kb"]) / 1024, int(fields["baseline_kb"]) / 1024
        hwm = int(fields["hwm_kb"]) / 1024
        row = Row(f"{ROWS[8]} ({count:,} specs)", "MB")
        row.add("repo.iterate", peak)
        row.note = (f"ru_maxrss before iterating {baseline:.1f} MB, VmHWM {hwm:.1f} MB;"
                    f" {count / elapsed:,.0f} specs/s")
        self.rows.append(row)
        assert count == s.big_table, count
        self.targets.append(Target(f"iterate {count:,} specs: peak RSS < 150 MB", peak, 150.0, "<", unit="MB"))

    # -- move

    def move_row(self, api: Server, cell: Server) -> None:
        s = self.sizes
        name = f"{ROWS[9]} {s.move:,}"
        try:
            import reqspec_repo as moves  # the public API: move_specs, SpecStore
            from reqspec_repo import SpecStore
        except ImportError as exc:
            moves = None  # type: ignore[assignment]
            self.pending.append(f"{name}: pending (moves API not available: {exc})")
        api_dsn, cell_dsn = api.database("move_api"), cell.database("move_cell")
        topo = Topology.from_dsns(api_dsn, {"cell1": cell_dsn})
        migrate_topology(topo)
        row = Row(name, "specs/s")
        row.note = "naive = batched copy + delete, not crash-safe"
        with RequestSpecRepository.from_topology(topo) as repo:
            store = SpecStore(repo) if moves is not None else None
            for _ in range(s.move_rounds):
                specs = self.fresh(s.move)
                repo.create_many(api_context(), specs)
                t0 = time.perf_counter()
                naive_move(api_dsn, cell_dsn, [x.instance_uuid for x in specs])
                row.add("naive raw", s.move / (time.perf_counter() - t0))
                if store is not None and moves is not None:
                    specs = self.fresh(s.move)
                    try:
                        store.create(specs)
                        t0 = time.perf_counter()
                        result = moves.move_specs(store, [x.instance_uuid for x in specs], "cell1")
                        elapsed = time.perf_counter() - t0
                        if getattr(result, "failed", None):
                            raise RuntimeError(f"{len(result.failed)} specs failed to move")
                        row.add("repo moves", s.move / elapsed)
                    except Exception as exc:  # the API is being written: report, don't crash
                        self.pending.append(f"{name}: pending (moves API error: {type(exc).__name__}: {exc})")
                        store = None
        self.rows.append(row)
        if "repo moves" in row.samples:
            self.targets.append(Target(f"batch move {s.move:,} crash-safe >= 0.5x naive raw",
                                       row.median("repo moves") / row.median("naive raw"), 0.5, ">="))
        else:
            self.targets.append(Target(f"batch move {s.move:,} crash-safe >= 0.5x naive raw", None, 0.5, ">=",
                                       "pending (moves API not available)"))


    # -- concurrency

    def mixed(self, api: Server) -> None:
        """70 % get, 20 % CAS save, 10 % create from many threads (and processes), the
        repository against raw psycopg with a psycopg_pool pool of the same size.

        Both contenders' child processes stay up for the row (warm pools, preloaded
        specs) and take turns: each round runs one short sample of each, in alternating
        order, and gives one paired ratio; the throughput target is the median of those
        ratios (what drifts over the row, on a shared VM, hits both sides of a round)."""
        s = self.sizes
        dsns = {name: api.database(f"mixed_{name}") for name in MIXED_CONTENDERS}
        for dsn in dsns.values():
            migrate_topology(Topology.from_dsns(dsn, {}))
        for r_index, (title, procs, threads) in enumerate(((ROWS[10], 1, 16), (ROWS[11], 4, 8))):
            thr, lat = Row(f"{title}: throughput", "ops/s"), Row(f"{title}: latency", "us")
            errors = dict.fromkeys(MIXED_CONTENDERS, 0)
            samples: list[str] = []
            ratios: list[float] = []
            with contextlib.ExitStack() as stack:
                children = {
                    name: stack.enter_context(Contender(name, dsns[name], procs, threads, MIXED_POOL,
                                                        seed=1 + 100 * r_index + 50 * i))
                    for i, name in enumerate(MIXED_CONTENDERS)
                }
                self.log(f"{title}: {procs} x {threads} threads per contender ready")
                for r in range(s.mixed_rounds):
                    got: dict[str, float] = {}
                    for name in _ordered(MIXED_CONTENDERS, r):
                        out = children[name].sample(s.mixed_seconds)
                        got[name] = out.throughput
                        thr.add(name, out.throughput)
                        lat.samples.setdefault(name, []).extend(out.latencies)
                        errors[name] += out.errors
                        samples += [f"{name}: {e}" for e in out.error_samples]
                    ratios.append(got["repo"] / got["raw"])
            self.log(f"{title}: {s.mixed_rounds} rounds done")
            p99 = {name: _q(lat.samples[name], 0.99) for name in MIXED_CONTENDERS}
            thr.note = (f"{procs} process{'es' if procs > 1 else ''} x {threads} threads, pool of {MIXED_POOL} connections per process"
                        f" for both; {s.mixed_rounds} rounds of one {s.mixed_seconds:g} s sample each, warm;"
                        f" repo/raw per round: {', '.join(f'{x:.2f}' for x in ratios)}")
            lat.note = ("p99: " + ", ".join(f"{n} {v * 1e6:,.0f} us" for n, v in p99.items())
                        + "; errors: " + ", ".join(f"{n} {v}" for n, v in errors.items())
                        + (f"; first: {samples[0]}" if samples else ""))
            self.rows += [thr, lat]
            short = f"mixed {procs}x{threads}"
            self.targets.append(Target(f"{short}: repo throughput >= 0.9x raw (psycopg_pool), median of {len(ratios)} paired rounds",
                                       statistics.median(ratios), 0.9, ">="))
            self.targets.append(Target(f"{short}: repo p99 latency <= 1.5x raw's",
                                       p99["repo"] / p99["raw"], 1.5, "<="))
            self.targets.append(Target(f"{short}: zero errors (both contenders)",
                                       float(sum(errors.values())), 0, "<=", unit="errors"))

    # -- scale

    def _child(self, child: subprocess.Popen[str] | None, command: list[str]) -> dict[str, str]:
        assert child is not None and child.stdin is not None
        stdout, stderr = child.communicate(json.dumps(command) + "\n", timeout=7200)
        if child.returncode != 0:
            raise RuntimeError(f"bench.rss failed: {stderr[-2000:]}")
        return dict(part.split("=") for part in stdout.split())

    def whole_move(self, api: Server, cell: Server) -> None:
        """Every spec of an API database to a cell on the other server: the naive batched
        copy+delete against move_database in a child process (its peak RSS).

        Each round copies both sources from one loaded template database and runs the
        two contenders in alternating order, after one unmeasured move that warms the
        servers' WAL; the target is the median of the rounds' paired ratios (one sample
        each moved between 0.54x and 0.63x from run to run)."""
        s = self.sizes
        n = s.whole_move
        row = Row(f"{ROWS[12]} {n:,}", "specs/s")
        template = api.database("whole_template")
        migrate_topology(Topology.from_dsns(template, {}))
        copy_locations(template, copy_specs(template, self.base, n, seed=n + 2), API)
        self.log(f"loaded {n:,} specs (and their locations) for the whole-database move")

        def sources(tag: str) -> tuple[str, str]:
            """A migrated pair: a copy of the template (API) and an empty cell."""
            src, dst = api.clone(template, tag), cell.database(f"{tag}_cell")
            migrate_topology(Topology.from_dsns(src, {"cell1": dst}))
            return src, dst

        # Not measured: the first move on fresh servers creates their WAL segment files (the
        # cell server starts with one; each new one is 16 MB written as zeros). Whoever ran
        # first in round 1 paid for that: 0.69x-0.76x in round 1 against 0.49x-0.57x after.
        src, dst = sources("whole_warmup")
        naive_move_all(src, dst)
        api.drop(src)
        cell.drop(dst)
        ratios: list[float] = []
        peaks: list[tuple[float, float]] = []
        for r in range(s.whole_move_rounds):
            got: dict[str, float] = {}
            for name in _ordered(("naive raw", "repo streamed"), r):
                tag = f"whole_{r}_{'naive' if name == 'naive raw' else 'repo'}"
                src, dst = sources(tag)
                gc.collect()
                if name == "naive raw":
                    t0 = time.perf_counter()
                    naive_move_all(src, dst)
                    got[name] = n / (time.perf_counter() - t0)
                else:
                    fields = self._child(self.mover_children[r], ["move", src, dst])
                    moved, failed, seconds = int(fields["count"]), int(fields["failed"]), float(fields["seconds"])
                    if moved != n or failed:
                        raise RuntimeError(f"move_database moved {moved} of {n}, {failed} failed")
                    got[name] = n / seconds
                    peaks.append((int(fields["peak_kb"]) / 1024, int(fields["hwm_kb"]) / 1024))
                row.add(name, got[name])
                api.drop(src)
                cell.drop(dst)
            ratios.append(got["repo streamed"] / got["naive raw"])
            self.log(f"whole-database move round {r + 1} of {s.whole_move_rounds} done")
        peak, hwm = max(peaks)
        row.note = (f"repo = move_database (chunks of 500, 3 workers) in a child process per round: peak RSS {peak:.1f} MB"
                    f" (VmHWM {hwm:.1f} MB); naive reads every uuid, then per 500: read, COPY, delete"
                    f" (one connection, not crash-safe); repo/naive per round: {', '.join(f'{x:.2f}' for x in ratios)}")
        self.rows.append(row)
        self.targets.append(Target(f"whole-database move {n:,}: repo >= 0.6x naive batched copy+delete,"
                                   f" median of {len(ratios)} paired rounds", statistics.median(ratios), 0.6, ">="))
        self.targets.append(Target(f"whole-database move {n:,}: mover peak RSS < 150 MB", peak, 150.0, "<",
                                   unit="MB"))

    def recover_rows(self, cell: Server, big_dsn: str, big_keys: list[str]) -> None:
        """recover() with nothing in flight and with interrupted moves, and verify(), over
        the large table (every spec given a location in its API database)."""
        from reqspec_repo._moving.moves import move_specs
        from reqspec_repo._moving.recovery import recover, verify
        from reqspec_repo._store.leases import Leases
        from reqspec_repo._store.locations import SpecStore
        from reqspec_repo.testing.failpoints import FailpointHit, armed

        s = self.sizes
        count = len(big_keys)
        topo = Topology.from_dsns(big_dsn, {"cell1": cell.database("scale_cell")})
        migrate_topology(topo)
        t0 = time.perf_counter()
        copy_locations(big_dsn, big_keys, API)
        self.log(f"{count:,} locations loaded by COPY in {time.perf_counter() - t0:.1f} s")
        idle = Row(f"{ROWS[13]} ({count:,} specs)", "s")
        busy = Row(f"{ROWS[14]}: {s.interrupted:,} ({count:,} specs)", "s")
        ver = Row(f"{ROWS[15]} ({count:,} specs)", "rows/s")
        half = s.interrupted // 2
        spare = iter(reversed(big_keys))
        with RequestSpecRepository.from_topology(topo) as repo:
            store = SpecStore(repo)
            for _ in range(s.recover_rounds):
                t0 = time.perf_counter()
                report = recover(store)
                idle.add("repo", time.perf_counter() - t0)
                assert report.changed == 0, report
            for _ in range(s.recover_rounds):
                # Real interrupted moves: half stopped before their commit point (rolled
                # back), half after it (finished).
                for point in ("after_copy", "after_commit"):
                    keys = [next(spare) for _ in range(half)]
                    with armed(point), contextlib.suppress(FailpointHit):
                        move_specs(store, keys, "cell1", chunk_size=half)
                Leases(repo.connections).expire_all()  # the "crashed" movers' leases ran out
                t0 = time.perf_counter()
                report = recover(store)
                busy.add("repo", time.perf_counter() - t0)
                assert (len(report.rolled_back), len(report.finished)) == (half, half), report.changed
            for _ in range(s.verify_rounds):
                t0 = time.perf_counter()
                checked = verify(store)
                elapsed = time.perf_counter() - t0
                assert checked.ok, checked.problems[:5]
                ver.add("repo", (checked.locations + sum(checked.rows.values())) / elapsed)
        idle.note = "recover() over the location records and every database; nothing to do"
        busy.note = f"{half:,} moves stopped after the copy (rolled back) + {half:,} after the commit (finished)"
        ver.note = "location records + spec rows of every database read per second of verify()"
        self.rows += [idle, busy, ver]
        self.targets.append(Target(f"recover at {count:,} specs, nothing in flight < 1 s", idle.median("repo"),
                                   1.0, "<", unit="s"))
        self.targets.append(Target(f"recover at {count:,} specs, {s.interrupted:,} interrupted moves < 3 s",
                                   busy.median("repo"), 3.0, "<", unit="s"))
        self.targets.append(Target(f"verify at {count:,} specs >= 200,000 rows/s", ver.median("repo"),
                                   200_000, ">=", unit="rows/s"))
    # -- behind a connection pooler

    def pooler_rows(self, api: Server) -> None:
        """The single operations directly and through a real PgBouncer (transaction mode),
        side by side in interleaved blocks: raw psycopg shows the pooler's own cost, the
        repository adds its per-transaction timeouts (pipelined, same round trip)."""
        from reqspec_repo.testing.pgbouncer import INSTALL_HINT, PgBouncer, find_pgbouncer

        if find_pgbouncer() is None:
            self.pending.append(f"{ROWS[16]} pending (pgbouncer not installed: {INSTALL_HINT})")
            return
        s = self.sizes
        direct_dsn = api.database("pooled")
        migrate_topology(Topology.from_dsns(direct_dsn, {}))
        dbname = psycopg.conninfo.conninfo_to_dict(direct_dsn)["dbname"]
        with PgBouncer(api.admin_dsn) as bouncer:
            pooled_dsn = bouncer.dsn(str(dbname))
            direct_topo = Topology.from_dsns(direct_dsn, {})
            pooled_topo = Topology.from_dsns(pooled_dsn, {}, Settings(pooler="transaction"))
            raws = {"raw direct": Raw(direct_dsn), "raw pgbouncer": Raw(pooled_dsn, prepare_threshold=None)}
            ctx = api_context()
            try:
                with RequestSpecRepository.from_topology(direct_topo) as direct, \
                        RequestSpecRepository.from_topology(pooled_topo) as pooled:
                    repos = {"repo direct": direct, "repo pgbouncer": pooled}
                    names = (*raws, *repos)
                    rows = {op: Row(f"{ROWS[16]} {op}", "us") for op in ("create", "get", "CAS save")}

                    def call(name: str, op: str) -> Callable[[RequestSpec, dict[str, Any]], object]:
                        if name in raws:
                            raw = raws[name]
                            return {"create": lambda sp, d: raw.create(d), "get": lambda sp, d: raw.get(sp.instance_uuid),
                                    "CAS save": lambda sp, d: raw.save(d, 1)}[op]
                        repo = repos[name]
                        return {"create": lambda sp, d: repo.create(ctx, sp),
                                "get": lambda sp, d: repo.get(ctx, sp.instance_uuid),
                                "CAS save": lambda sp, d: repo.save(ctx, sp, expected_version=1)}[op]

                    made: dict[str, list[tuple[RequestSpec, dict[str, Any]]]] = {n: [] for n in names}
                    for r in range(s.single_rounds):
                        for name in _ordered(names, r):
                            fresh = [(x, _doc(x)) for x in self.fresh(s.single_ops)]
                            self._time_block(rows["create"], name, call(name, "create"), fresh)
                            made[name] += fresh
                    for op in ("get", "CAS save"):
                        for r in range(s.single_rounds):
                            for name in _ordered(names, r):
                                chunk = made[name][r * s.single_ops:(r + 1) * s.single_ops]
                                if op == "CAS save":
                                    chunk = [(attrs.evolve(sp, availability_zone="az-p"), {**d, "availability_zone": "az-p"})
                                             for sp, d in chunk]
                                self._time_block(rows[op], name, call(name, op), chunk)
            finally:
                for raw in raws.values():
                    raw.close()
        for row in rows.values():
            row.note = "pooler cost = raw pgbouncer - raw direct; timeouts per transaction = repo pgbouncer - raw pgbouncer"
        self.rows += list(rows.values())

    def lease_claim_row(self, api: Server) -> None:
        """What the lease costs a move: claiming and releasing the leases of one chunk,
        against the previous protocol's claim (session advisory locks, try-lock + unlock
        all), on the same API database."""
        from reqspec_repo._store.leases import LeasePurpose, Leases

        s = self.sizes
        dsn = api.database("leases")
        topo = Topology.from_dsns(dsn, {})
        migrate_topology(topo)
        row = Row(f"{ROWS[17]} {s.move:,}", "us")
        row.note = "per chunk; the move row above includes the lease (claim, check at commit, release)"
        previous_lock = (b"SELECT u FROM unnest(%(u)s::uuid[]) AS t (u)"
                         b" WHERE pg_try_advisory_lock(1919250291, hashtext(u::text))")
        previous_unlock = b"SELECT pg_advisory_unlock_all()"
        with RequestSpecRepository.from_topology(topo) as repo, psycopg.connect(dsn, autocommit=True) as conn:
            leases = Leases(repo.connections)
            for r in range(s.move_rounds * 5):
                uuids = [x.instance_uuid for x in self.fresh(s.move)]
                for name in _ordered(("advisory lock (previous)", "lease"), r):
                    t0 = time.perf_counter()
                    if name == "lease":
                        holder = str(uuid.uuid4())
                        leases.claim(uuids, holder, LeasePurpose.MOVE)
                        leases.release(uuids, holder)
                    else:
                        conn.execute(previous_lock, {"u": uuids}).fetchall()
                        conn.execute(previous_unlock)
                    row.add(name, time.perf_counter() - t0)
        self.rows.append(row)

    # -- report

    def report(self, header: list[str]) -> None:
        out = self.out
        for line in header:
            out(line)
        out("")
        out(f"| {'row':<48} | {'contender':<14} | {'median':>14} | {'spread p25-p75':>27} | {'n':>5} |")
        out(f"|{'-' * 50}|{'-' * 16}|{'-' * 16}|{'-' * 29}|{'-' * 7}|")
        for row in self.rows:
            for contender, values in row.samples.items():
                spread = f"{_fmt(_q(values, 0.25), row.unit)} - {_fmt(_q(values, 0.75), row.unit)}"
                out(f"| {row.name:<48} | {contender:<14} | {_fmt(statistics.median(values), row.unit):>14} | {spread:>27} | {len(values):>5} |")
            if row.note:
                out(f"| {'  (' + row.note + ')':<48} | {'':<14} | {'':>14} | {'':>27} | {'':>5} |")
        for line in self.pending:
            out(line)
        out("")
        out("Stable figures (client CPU per call, repo / raw: what the repository adds, not moved by"
            " server or scheduler noise):")
        for row in self.rows[:3]:
            if "repo" in row.cpu and "raw" in row.cpu:
                ratio = statistics.median(row.cpu["repo"]) / statistics.median(row.cpu["raw"])
                out(f"  {row.name}: {ratio:.2f}x")
        out("Noise floor (the same raw code on two databases, wall median, raw again / raw; a repo / raw"
            " ratio within this distance of its limit is within noise):")
        for row in self.rows[:3]:
            if "raw again" in row.samples and "raw" in row.samples:
                out(f"  {row.name}: {row.median('raw again') / row.median('raw'):.2f}x")
        out("")
        enforced = not self.quick
        out("Targets" + ("" if enforced else " (--quick: small sizes, targets NOT enforced)") + ":")
        for t in self.targets:
            if t.measured is None:
                verdict, figure = "pending", t.detail
            else:
                verdict = "met" if t.met else "not met"
                # Two decimals, or three where two would read as the limit itself.
                digits = 3 if round(t.measured, 2) == t.limit else 2
                figure = {
                    "MB": f"{t.measured:.1f} MB", "s": f"{t.measured:.3f} s", "rows/s": f"{t.measured:,.0f} rows/s",
                    "errors": f"{t.measured:.0f} errors",
                }.get(t.unit, f"{t.measured:.{digits}f}x")
            out(f"  [{verdict:>7}] {t.text}: measured {figure}")


def naive_move_all(source_dsn: str, target_dsn: str) -> None:
    """The naive whole-database move: every uuid read at once, then :func:`naive_move`."""
    with psycopg.connect(source_dsn, autocommit=True) as src:
        uuids = [r[0] for r in src.execute(b"SELECT instance_uuid FROM request_specs").fetchall()]
    naive_move(source_dsn, target_dsn, uuids)


def _rss_child() -> subprocess.Popen[str]:
    """A ``bench.rss`` child, started while this process is still small (ru_maxrss is
    inherited across fork/exec); it waits for its command on stdin."""
    return subprocess.Popen(
        [sys.executable, "-m", "bench.rss"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def naive_move(source_dsn: str, target_dsn: str, uuids: list[str], chunk: int = 500) -> None:
    """The naive raw move: per chunk, read, COPY into the target, delete from the source.
    Three autocommit statements: a crash between them loses or duplicates specs."""
    with psycopg.connect(source_dsn, autocommit=True) as src, psycopg.connect(target_dsn, autocommit=True) as dst:
        register_document_types(src)
        for i in range(0, len(uuids), chunk):
            part = uuids[i:i + chunk]
            rows = src.execute(
                b"SELECT instance_uuid, spec, schema_version, version FROM request_specs"
                b" WHERE instance_uuid = ANY(%s::uuid[]) AND move_state = 'live'", [part]
            ).fetchall()
            with dst.cursor() as cur:
                with cur.copy(b"COPY request_specs (instance_uuid, spec, schema_version, version) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["uuid", "jsonb", "int4", "int8"])
                    for u, doc, sv, v in rows:
                        cp.write_row((u, as_jsonb(doc), sv, v))
            src.execute(b"DELETE FROM request_specs WHERE instance_uuid = ANY(%s::uuid[])", [part])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats (a smoke run); targets not enforced")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out",
                        help="folder for the text report and its plot (default: bench/out)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    bench = Bench(sizes, args.quick, out)
    with servers(None if args.quick else FULL_RUN_SHARED_BUFFERS, pin=True) as (api, cell, where):
        bench.place_children()
        settings = api.settings()
        cell_settings = cell.settings()
        header = [
            f"reqspec_repo benchmark ({'quick' if args.quick else 'full'}) {datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
            f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {platform.system()}",
            f"servers: {where}; PostgreSQL {settings['server_version']}",
            f"durability (every contender): fsync={settings['fsync']} synchronous_commit={settings['synchronous_commit']}"
            f" full_page_writes={settings['full_page_writes']} shared_buffers={settings['shared_buffers']}"
            f" (cell server: fsync={cell_settings['fsync']} synchronous_commit={cell_settings['synchronous_commit']})",
            f"workload: seed-fixed specs, mean document {statistics.mean(len(codec.encode(x)) for x in bench.base):,.0f} bytes",
        ]
        for line in header:
            bench.log(line)
        dsns = {name: api.database(name.replace(" ", "_")) for name in ("raw", "raw again", "orm", "repo")}
        topo = Topology.from_dsns(dsns["repo"], {})
        migrate_topology(topo)
        migrate_topology(Topology.from_dsns(dsns["raw"], {}))
        migrate_topology(Topology.from_dsns(dsns["raw again"], {}))
        raw, raw_again, orm = Raw(dsns["raw"]), Raw(dsns["raw again"]), Orm(dsns["orm"])
        try:
            with RequestSpecRepository.from_topology(topo) as repo:
                for spec in bench.fresh(5):  # warm-up: pools, prepared plans
                    raw.create(_doc(spec))
                    raw_again.create(_doc(attrs.evolve(spec, instance_uuid=str(uuid.uuid4()))))
                    orm.create(_doc(attrs.evolve(spec, instance_uuid=str(uuid.uuid4()))))
                    repo.create(api_context(), attrs.evolve(spec, instance_uuid=str(uuid.uuid4())))
                bench.log("single operations")
                bench.singles(raw, raw_again, orm, repo)
                bench.log("batches")
                bench.batches(raw, orm, repo, api)
        finally:
            raw.close()
            raw_again.close()
            orm.close()
        bench.log("mixed concurrent workload")
        bench.mixed(api)
        bench.log("codec")
        bench.codec_rows()
        bench.log("large table")
        big, big_keys = bench.large_table(api)
        bench.log("iterate")
        bench.iterate_rss(big)
        bench.log("move")
        bench.move_row(api, cell)
        bench.log("whole-database move")
        bench.whole_move(api, cell)
        bench.log("recover and verify at scale")
        bench.recover_rows(cell, big, big_keys)
        bench.log("lease claim")
        bench.lease_claim_row(api)
        bench.log("through PgBouncer")
        bench.pooler_rows(api)
        header.append(f"total run time {time.perf_counter() - started:.0f} s")
        bench.report(header)
    kind = "quick" if args.quick else "full"
    text, picture = args.out / f"bench-{kind}.txt", args.out / f"bench-{kind}.png"
    args.out.mkdir(parents=True, exist_ok=True)
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot_rows(bench.rows, picture, header[0])
    print(f"\nreport written to {text}, plot to {picture}", file=sys.stderr)

