"""A real PgBouncer in front of a test server: started as a subprocess on a free port.

:class:`PgBouncer` runs the ``pgbouncer`` program (the Debian package ``pgbouncer``) in
the given pool mode (``transaction`` by default) in front of one PostgreSQL server, so
tests can run the library through it exactly as operators deploy it.

Authentication: clients log in to PgBouncer with SCRAM, using the password of the
server's DSN when it has one (PgBouncer then logs in to the server with the same
plaintext password from its ``auth_file``, SCRAM or trust, whatever the server asks) or a
random one generated here. PgBouncer itself is never open without a password. The
config and auth file live in a 0700 directory of the process's user.

PgBouncer refuses to run as root: when the tests run as root it runs as the same
unprivileged OS user as the embedded PostgreSQL servers (``REQSPEC_PG_OS_USER``,
default ``reqspec-pg``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from psycopg import conninfo

from .._embedded.processes import alive as process_alive

PGBOUNCER = "pgbouncer"
_TEMP_PREFIX = "reqspec-pgbouncer-"
_OWNER_FILE = "owner.pid"
INSTALL_HINT = "apt-get install -y pgbouncer"
_OS_USERS = ("reqspec-pg", "pgserver", "nobody")


class PgBouncerError(RuntimeError):
    """PgBouncer could not be started (or is not installed)."""


def find_pgbouncer() -> str | None:
    """The path of the ``pgbouncer`` program, or None when it is not installed."""
    return shutil.which(PGBOUNCER) or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).is_file()), None
    )


def _os_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("REQSPEC_PG_OS_USER")
    for name in ((wanted,) if wanted else ()) + _OS_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PgBouncerError("running as root and no unprivileged user to run pgbouncer as (set REQSPEC_PG_OS_USER)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_params(dsn: str) -> dict[str, Any]:
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        return {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 5432,
            "user": unquote(parts.username or "postgres"),
            "password": unquote(parts.password) if parts.password else None,
        }
    params = conninfo.conninfo_to_dict(dsn)
    return {
        "host": params.get("host", "127.0.0.1"),
        "port": int(str(params.get("port") or 5432)),
        "user": params.get("user", "postgres"),
        "password": params.get("password"),
    }


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """One pgbouncer process in front of the server of ``server_dsn``."""

    def __init__(self, server_dsn: str, *, pool_mode: str = "transaction", pool_size: int = 20) -> None:
        binary = find_pgbouncer()
        if binary is None:
            raise PgBouncerError(f"pgbouncer is not installed (install it with: {INSTALL_HINT})")
        self.binary = binary
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        server = _server_params(server_dsn)
        self.server_host: str = server["host"]
        self.server_port: int = server["port"]
        self.user: str = server["user"]
        self._password: str = server["password"] or secrets.token_urlsafe(18)
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"PgBouncer(port={self.port}, mode={self.pool_mode}, server=127.0.0.1:{self.server_port})"

    def dsn(self, dbname: str) -> str:
        """A DSN of database ``dbname`` through this PgBouncer."""
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self._password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(dbname, safe='')}"
        )

    def start(self, timeout: float = 20.0, *, port: int | None = None) -> None:
        """Start it on ``port`` (a free one by default)."""
        user = _os_user()
        base = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
        self._dir = base
        self.port = port or _free_port()
        (base / _OWNER_FILE).write_text(f"{os.getpid()}\n")  # for the sweep of orphans
        (base / "userlist.txt").write_text(f"{_quoted(self.user)} {_quoted(self._password)}\n")
        (base / "pgbouncer.ini").write_text("\n".join([
            "[databases]",
            f"* = host={self.server_host} port={self.server_port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = scram-sha-256",
            "auth_file = " + str(base / "userlist.txt"),
            f"pool_mode = {self.pool_mode}",
            f"default_pool_size = {self.pool_size}",
            "max_client_conn = 1000",
            "server_login_retry = 1",
            "server_connect_timeout = 5",
            "ignore_startup_parameters = extra_float_digits",
            "logfile = " + str(base / "pgbouncer.log"),
            "pidfile = " + str(base / "pgbouncer.pid"),
            "",
        ]))
        for path in (base, base / "userlist.txt", base / "pgbouncer.ini"):
            if user is not None:
                os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
        as_user: dict[str, Any] = {}
        if user is not None:
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            _traversable(base)
        self._proc = subprocess.Popen(
            [self.binary, str(base / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            cwd=base, start_new_session=True, **as_user,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PgBouncerError(f"pgbouncer exited with {self._proc.returncode}: {self.log_tail()}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise PgBouncerError(f"pgbouncer did not listen on port {self.port} within {timeout:g} s")

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join((self._dir / "pgbouncer.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _traversable(path: Path) -> None:
    """Let the unprivileged user reach its own directory inside the temp dir."""
    for part in path.parents:
        with contextlib.suppress(OSError):
            mode = part.stat().st_mode
            if not mode & 0o001:
                part.chmod(mode | 0o001)


# --- pytest: fixtures and report lines (registered by reqspec_repo.testing.pytest_plugin) --


def sweep_orphans() -> None:
    """Stop the PgBouncers whose owning process is gone (a test run killed with SIGKILL
    cannot stop its own), and delete their directories."""
    for base in Path(tempfile.gettempdir()).glob(_TEMP_PREFIX + "*"):
        try:
            owner = int((base / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or process_alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((base / "pgbouncer.pid").read_text().strip()), signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)




class PgBouncers:
    """One PgBouncer per server, started on first use, stopped at the end of the session."""

    def __init__(self) -> None:
        self._running: dict[str, PgBouncer] = {}
        sweep_orphans()

    def front(self, server: Any, *, pool_mode: str = "transaction") -> PgBouncer:
        """The PgBouncer in front of ``server`` (anything with ``dsn(dbname)``: a
        ServerHandle or a LocalServer); the test is skipped, with the install command,
        when pgbouncer is not installed (and the run's summary says so)."""
        import pytest

        if find_pgbouncer() is None:
            pytest.skip(f"pgbouncer is not installed; install it with: {INSTALL_HINT}")
        admin = server.dsn("postgres")
        key = f"{admin}|{pool_mode}"
        bouncer = self._running.get(key)
        if bouncer is None:
            bouncer = PgBouncer(admin, pool_mode=pool_mode)
            bouncer.start()
            self._running[key] = bouncer
        return bouncer

    def stop_all(self) -> None:
        for bouncer in self._running.values():
            with contextlib.suppress(Exception):
                bouncer.stop()
        self._running.clear()


def report_header_line() -> str:
    path = find_pgbouncer()
    if path is None:
        return f"reqspec pgbouncer: NOT installed, tests through PgBouncer are skipped (install: {INSTALL_HINT})"
    return f"reqspec pgbouncer: {path} (tests through it run in transaction mode)"


def summary_line() -> str | None:
    """The line ``make test`` ends with when PgBouncer is missing (never a silent skip)."""
    if find_pgbouncer() is not None:
        return None
    return (
        "reqspec: pgbouncer is NOT installed, so every test through PgBouncer was skipped; "
        f"install it with: {INSTALL_HINT}"
    )
