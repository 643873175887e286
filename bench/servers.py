"""The PostgreSQL servers of a benchmark run: embedded (temp dirs) or an admin DSN.

``REQSPEC_BENCH_DSN`` names an admin DSN of an existing server; the benchmark then creates
(and drops at the end) its own databases there, and the "other server" of the move row is
the same server. Otherwise two embedded servers are started in a temporary directory and
deleted at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from reqspec_repo._embedded import LocalServer, create_database, drop_database

#: The same durability for every contender: they all run on these servers.
DURABILITY = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


class Server:
    """One server: an admin DSN plus the databases this run created on it."""

    def __init__(self, admin_dsn: str, label: str) -> None:
        self.admin_dsn = admin_dsn
        self.label = label
        self.created: list[str] = []
        self.suffix = uuid.uuid4().hex[:8]

    @staticmethod
    def database_name(dsn: str) -> str:
        """The database a DSN names (the inverse of :meth:`dsn`)."""
        return str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])

    def dsn(self, dbname: str) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.admin_dsn)
        info["dbname"] = dbname
        return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]

    def database(self, name: str) -> str:
        """Create a fresh database; return its DSN."""
        full = f"bench_{name}_{self.suffix}"
        create_database(self.admin_dsn, full)
        self.created.append(full)
        return self.dsn(full)

    def clone(self, template: str, name: str) -> str:
        """A new database copied from ``template`` (a DSN of this server's, no session on
        it) file by file (STRATEGY FILE_COPY, PostgreSQL 15+: seconds where reloading its
        rows takes a minute); return its DSN."""
        full = f"bench_{name}_{self.suffix}"
        source = self.database_name(template)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(full), sql.Identifier(source)))
        self.created.append(full)
        return self.dsn(full)

    def checkpoint(self) -> None:
        """CHECKPOINT now: the next writes start with no checkpoint due."""
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(b"CHECKPOINT")

    def drop(self, dsn: str) -> None:
        """Drop a database this run created (frees its disk space at once)."""
        name = self.database_name(dsn)
        drop_database(self.admin_dsn, name)
        self.created.remove(name)

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            return {
                name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
                for name in (*DURABILITY, "shared_buffers", "server_version")
            }

    def drop_all(self) -> None:
        for name in self.created:
            with contextlib.suppress(Exception):
                drop_database(self.admin_dsn, name)
        self.created.clear()


#: Memory for the API server's buffer cache in a full run: the 1,000,000-row table (about
#: 4.3 GB with its TOAST table and indexes) fits, as an operator would size it for a working
#: set of that size, so the large-table row compares lookups rather than the OS page cache
#: against shared buffers. Quick runs keep the server default.
FULL_RUN_SHARED_BUFFERS = "6GB"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def pinned(server_pids: list[int]) -> Iterator[str]:
    """Servers on the last CPU, this process on the others, for the duration.

    Without it the scheduler places each new backend next to the client or on the other
    core, and a round trip costs ~100 us or ~200 us accordingly; that placement, drawn
    anew for each contender's connection, moved the single-op ratios by +-15 % between
    runs. Pinned, every contender's round trips cross cores alike. New backends inherit
    the postmaster's affinity. Yields a description for the report.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2 or not server_pids:
        yield "not pinned (fewer than 2 CPUs)"
        return
    before, server_cpu = set(cpus), {cpus[-1]}
    for pid in server_pids:
        for target in (pid, *_children(pid)):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(target, server_cpu)
    os.sched_setaffinity(0, before - server_cpu)
    try:
        yield f"servers pinned to CPU {cpus[-1]}, benchmark client to CPU {','.join(map(str, cpus[:-1]))}"
    finally:
        os.sched_setaffinity(0, before)


@contextlib.contextmanager
def servers(shared_buffers: str | None = None, pin: bool = False) -> Iterator[tuple[Server, Server, str]]:
    """(API server, other server for the cell, description). ``shared_buffers`` and
    ``pin`` (see :func:`pinned`) apply to embedded servers only (a given server keeps its
    own configuration and placement)."""
    admin = os.environ.get("REQSPEC_BENCH_DSN")
    if admin:
        a, b = Server(admin, "given"), Server(admin, "given")
        try:
            yield a, b, "REQSPEC_BENCH_DSN (move target cell on the same server)"
        finally:
            a.drop_all()
            b.drop_all()
        return
    root = Path(tempfile.mkdtemp(prefix="reqspec-bench-"))
    os.chmod(root, 0o755)  # the server may run as an unprivileged user
    api_settings = {**DURABILITY, **({"shared_buffers": shared_buffers} if shared_buffers else {})}
    local = [LocalServer(root / "api", settings=api_settings), LocalServer(root / "cell", settings=DURABILITY)]
    try:
        for server in local:
            server.start()
        pids = [pid for pid in (server.pid for server in local) if pid is not None] if pin else []
        with pinned(pids) as placement:
            yield (
                Server(local[0].dsn(), "embedded-api"),
                Server(local[1].dsn(), "embedded-cell"),
                "two embedded PostgreSQL servers in a temp dir (API and cell on separate servers)"
                + (f"; {placement}" if pin else ""),
            )
    finally:
        for server in local:
            with contextlib.suppress(Exception):
                server.destroy()
        shutil.rmtree(root, ignore_errors=True)
