"""Child process of the benchmark: iterate every spec of one database through the
repository and report the peak resident set size (``resource.getrusage`` ru_maxrss).

Usage: ``python -m bench.rss DSN`` prints ``count=<n> baseline_kb=<kb> peak_kb=<kb>``.
"""

from __future__ import annotations

import resource
import sys

from reqspec_repo.config import Topology
from reqspec_repo.context import api_context
from reqspec_repo.repository import RequestSpecRepository


def main(dsn: str) -> None:
    with RequestSpecRepository.from_topology(Topology.from_dsns(dsn, {})) as repo:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        count = 0
        for _ in repo.iterate(api_context()):
            count += 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"count={count} baseline_kb={baseline} peak_kb={peak}")


if __name__ == "__main__":
    main(sys.argv[1])
