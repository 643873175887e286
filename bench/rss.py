"""Child process of the benchmark: run one job and report its peak resident set size
(``resource.getrusage`` ru_maxrss).

Usage: ``python -m bench.rss`` reads one JSON command line from stdin (DSNs have spaces):

* ``["iterate", DSN]``: iterate every spec of that database through the repository;
  prints ``count=<n> baseline_kb=<kb> peak_kb=<kb> hwm_kb=<kb>``;
* ``["move", API_DSN, CELL_DSN]``: move every spec of the API database to the cell with
  ``move_database`` (streamed); prints ``count=<moved> failed=<n> seconds=<s>`` and the
  same memory fields.

ru_maxrss survives fork and exec on Linux: a child inherits the peak of the process that
forked it. The benchmark therefore starts these children first thing, while it is still
small, and only later sends the command; ``hwm_kb`` (VmHWM of this process's own address
space) is printed as a cross-check.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from reqspec_repo._moving.moves import move_database
from reqspec_repo._store.config import API, Topology
from reqspec_repo._store.context import api_context
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def iterate(dsn: str) -> None:
    with RequestSpecRepository.from_topology(Topology.from_dsns(dsn, {})) as repo:
        baseline = _peak()
        count = 0
        for _ in repo.iterate(api_context()):
            count += 1
    print(f"count={count} baseline_kb={baseline} peak_kb={_peak()} hwm_kb={_vm_hwm_kb()}")


def move(api_dsn: str, cell_dsn: str) -> None:
    with RequestSpecRepository.from_topology(Topology.from_dsns(api_dsn, {"cell1": cell_dsn})) as repo:
        store = SpecStore(repo)
        baseline = _peak()
        t0 = time.perf_counter()
        summary = move_database(store, API, "cell1")
        seconds = time.perf_counter() - t0
    print(f"count={summary.moved} failed={len(summary.failed)} seconds={seconds:.3f} baseline_kb={baseline}"
          f" peak_kb={_peak()} hwm_kb={_vm_hwm_kb()}")


def main(command: list[str]) -> None:
    if command[0] == "move":
        move(command[1], command[2])
    else:
        iterate(command[1])


if __name__ == "__main__":
    main(json.loads(sys.stdin.readline()))
