"""Child process of the benchmark: iterate every spec of one database through the
repository and report the peak resident set size (``resource.getrusage`` ru_maxrss).

Usage: ``python -m bench.rss`` reads the DSN from stdin and prints
``count=<n> baseline_kb=<kb> peak_kb=<kb> hwm_kb=<kb>``.

ru_maxrss survives fork and exec on Linux: a child inherits the peak of the process that
forked it. The benchmark therefore starts this child first thing, while it is still small,
and only later sends the DSN; ``hwm_kb`` (VmHWM of this process's own address space) is
printed as a cross-check.
"""

from __future__ import annotations

import resource
import sys

from reqspec_repo._store.config import Topology
from reqspec_repo._store.context import api_context
from reqspec_repo._store.repository import RequestSpecRepository


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def main(dsn: str) -> None:
    with RequestSpecRepository.from_topology(Topology.from_dsns(dsn, {})) as repo:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        count = 0
        for _ in repo.iterate(api_context()):
            count += 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"count={count} baseline_kb={baseline} peak_kb={peak} hwm_kb={_vm_hwm_kb()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.readline().strip())
