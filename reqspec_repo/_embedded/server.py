"""One PostgreSQL cluster in a data directory: initdb, start, stop, kill, pause.

Layout of a :class:`LocalServer` data directory (mode 0700)::

    <data_dir>/
        pgdata/        the cluster (PGDATA), created by initdb
        password       the superuser's password (mode 0600, owner only), made at initdb
        port           the TCP port, chosen once and kept so the DSN is stable across restarts
        server.log     the server log (pg_ctl -l)
        .lock          flock()ed around start/stop/kill, so concurrent processes are safe

The server listens on 127.0.0.1:<port> and on a unix socket in a short directory under the temp
dir that only its owner can enter; both ask for the password of the superuser ``postgres``
(scram-sha-256, see :mod:`.auth`). A cluster made by an older version (trust authentication)
is secured in place at its next start. PostgreSQL refuses to run as root: when the effective
uid is 0 the cluster is owned by, and every server program runs as, an unprivileged system user
(see :mod:`.os_account`).

Linux (or any system with ``/proc``) is assumed for process inspection.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
from psycopg import sql

from .._store.queries import query
from . import auth
from .admin import create_database, drop_database
from .binaries import PG_MAJOR, bin_major, find_bin_dir
from .dirlock import dir_lock
from .errors import LocalServerError
from .os_account import ensure_traversable, server_os_user
from .ports import HOST, pick_free_port, port_is_free
from .processes import alive, children, cmdline, proc_state, send

__all__ = ["DEFAULT_SETTINGS", "LocalServer"]

_log = logging.getLogger("reqspec_repo.embedded")

#: Settings written to the server configuration; ``settings=`` passed to LocalServer override them.
DEFAULT_SETTINGS: Mapping[str, str] = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "max_prepared_transactions": "0",
    "password_encryption": "scram-sha-256",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "log_timezone": "UTC",
    "timezone": "UTC",
}

_RESERVED_SETTINGS = frozenset({"port", "listen_addresses", "unix_socket_directories"})
_INCLUDE_LINE = "include_if_exists = 'reqspec.conf'\n"


@attrs.frozen
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
        #: The superuser's password (mode 0600): how the owner connects, never printed.
        self.password_file = self.data_dir / "password"
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
                stored = pick_free_port()
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
        return pid is not None and proc_state(pid) in ("T", "t")

    def dsn(self, dbname: str = "postgres") -> str:
        """The superuser's DSN of dbname, password included (mask it before showing it)."""
        password = auth.read_password(self.password_file)
        userinfo = auth.SUPERUSER if password is None else f"{auth.SUPERUSER}:{quote(password, safe='')}"
        return f"postgresql://{userinfo}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def describe(self) -> str:
        return (
            f"embedded PostgreSQL {PG_MAJOR} at {HOST}:{self.port} (data {self.data_dir}, "
            f"password of user {auth.SUPERUSER} in {self.password_file})"
        )

    # -- lifecycle

    def start(self) -> None:
        """initdb if needed, then start the server and wait until it accepts connections."""
        with self._lock():
            if self._live_pidfile() is not None:
                if self._is_secured():
                    self._wait_ready(time.monotonic() + self.start_timeout)
                    return
                self.stop()  # started by an older version, open to every local user
            self._prepare_dirs()
            self._ensure_initdb()
            self._remove_stale_files()
            self._ensure_secured()
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
            if result.returncode != 0 and alive(info.pid):
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
        send(children(pid), signal.SIGSTOP)

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
        with dir_lock(self.data_dir / ".lock").hold():
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
        if stored is not None and not retry and port_is_free(stored):
            return stored
        port = pick_free_port()
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
        if info is None or info.pid <= 0 or not alive(info.pid):
            return None
        cmd = cmdline(info.pid)
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
        user = server_os_user()
        self.data_dir.chmod(0o700)  # only the server's user (and root) may look inside
        if user is not None:
            ensure_traversable(self.data_dir.parent, user)
            ensure_traversable(self.bin_dir.parent, user)
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
        os.chmod(self.socket_dir, 0o700)  # only the server's user (and root) may enter

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
            cmd = cmdline(pid) if pid > 0 and alive(pid) else []
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
        major = bin_major(self.bin_dir)
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
        password = auth.new_password()
        # initdb reads the password from a file the server's user owns; removed right after
        pwfile = self.data_dir / ".initdb-password"
        auth.write_secret_file(pwfile, password + "\n")
        self._give_to_server_user(pwfile)
        try:
            result = self._run(
                "initdb",
                [
                    "-D",
                    str(self.pgdata),
                    "-U",
                    auth.SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                timeout=120,
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise LocalServerError(
                f"initdb of {self.pgdata} failed (exit {result.returncode}):\n{result.stdout}"
            )
        with (self.pgdata / "postgresql.conf").open("a") as fh:
            fh.write("\n# settings managed by reqspec_repo._embedded\n" + _INCLUDE_LINE)
        self._write_hba()
        auth.write_secret_file(self.password_file, password + "\n")

    def _is_secured(self) -> bool:
        """The cluster asks every connection for the password, and we have that password."""
        return auth.read_password(self.password_file) is not None and auth.hba_is_strict(
            self.pgdata / "pg_hba.conf"
        )

    def _ensure_secured(self) -> None:
        """Secure, in place, a stopped cluster made by an older version (trust authentication):
        set a new random password (through single-user mode: no connection, no listener),
        then the password-only pg_hba.conf; the password file, written last, marks it done."""
        if self._is_secured():
            return
        password = auth.read_password(self.password_file) or auth.new_password()
        statement = sql.SQL(query("_admin", "set_role_password").sql).format(
            role=sql.Identifier(auth.SUPERUSER), verifier=sql.Literal(auth.scram_verifier(password))
        )
        result = self._run(
            "postgres",
            ["--single", "-D", str(self.pgdata), "postgres"],
            timeout=120,
            check=False,
            stdin_text=statement.as_string(None) + "\n",
        )
        if result.returncode != 0 or "ERROR" in result.stdout:
            raise LocalServerError(
                f"{self.data_dir} was made by an older reqspec with no password (any local user "
                f"could connect) and could not be secured (exit {result.returncode}); "
                f"stop its server, then move the directory away or delete it"
            )
        self._write_hba()
        auth.write_secret_file(self.password_file, password + "\n")
        _log.warning(
            "reqspec: %s was open to every local user (made by an older version); "
            "it now asks for the password kept in %s",
            self.data_dir,
            self.password_file,
        )

    def _write_hba(self) -> None:
        hba = self.pgdata / "pg_hba.conf"
        auth.write_secret_file(hba, auth.HBA_TEXT)
        self._give_to_server_user(hba)

    def _give_to_server_user(self, path: Path) -> None:
        user = server_os_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _write_conf(self, port: int) -> None:
        values = {
            **self._settings,
            "listen_addresses": HOST,
            "port": str(port),
            "unix_socket_directories": str(self.socket_dir),
        }
        text = "# written by reqspec_repo._embedded at each start; edits are lost\n" + "".join(
            f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in values.items()
        )
        path = self.pgdata / "reqspec.conf"
        path.write_text(text)
        self._give_to_server_user(path)

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
            f"PostgreSQL in {self.data_dir} failed to start on {HOST}:{self._stored_port()} "
            f"(pg_ctl exit {result.returncode}: {result.stdout.strip()}); "
            f"server log {self.log_path}, tail:\n{self.log_tail()}"
        )

    def _signal_tree(self, pid: int, sig: signal.Signals) -> None:
        if sig == signal.SIGCONT:
            send(children(pid), sig)
            send([pid], sig)
        else:
            send([pid], sig)
            send(children(pid), sig)

    def _kill_locked(self, pid: int) -> None:
        port = self._read_pidfile()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)  # freeze it: it must fork nothing new
        victims = [pid, *children(pid)]
        send(victims, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in victims):
            if time.monotonic() > deadline:
                raise LocalServerError(f"processes {victims} of {self} survived SIGKILL")
            time.sleep(0.01)
        if port is not None and port.port is not None:
            while not port_is_free(port.port) and time.monotonic() < deadline:
                time.sleep(0.02)

    def _run(
        self, tool: str, args: list[str], *, timeout: float, check: bool, stdin_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.setdefault("LC_ALL", "C")
        user = server_os_user()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as given:
            # output to a file, not a pipe: a daemonised postmaster must not hold our pipe open
            given.write(stdin_text or "")
            given.seek(0)
            as_user: dict[str, Any] = {}
            if user is not None:
                env["HOME"] = str(self.data_dir)
                as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            result = subprocess.run(
                [str(self.bin_dir / tool), *args],
                stdin=given if stdin_text is not None else subprocess.DEVNULL,
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


