"""PostgreSQL servers in Docker containers (testcontainers), for the test harness.

The container runs initdb and the server itself (a short shell script as its entrypoint, as
the ``postgres`` user): any image with PostgreSQL's programs and a ``postgres`` account works,
the official ``postgres`` images as well as a plain Debian image built with
``mmdebstrap --include=postgresql-15`` (see ``.ci/test-containers``); the official image's
entrypoint is not used. Like every server the harness starts, it asks for a random password
(scram-sha-256) and is reached on 127.0.0.1 only: the container shares the host's network and
listens on 127.0.0.1 (``REQSPEC_TEST_CONTAINER_NETWORK=host``, the default), or listens inside
its own network with its port published on 127.0.0.1 only (``=loopback``, for engines without
host networking).

Containers are named ``reqspec-pgtest-<host>-<pid>-<n>``: the harness removes its own at the
end (also on failure, SIGTERM or Ctrl-C, without the Ryuk reaper), and removes at the next run
those whose pytest process was killed outright.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import itertools
import os
import re
import socket
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import psycopg

from .._embedded.admin import create_database, drop_database
from .._embedded.auth import SUPERUSER, new_password
from .._embedded.ports import HOST, pick_free_port
from .._embedded.processes import alive as process_alive
from .._embedded.server import DEFAULT_SETTINGS
from .._store.dsn import mask_text
from .._store.queries import query

__all__ = [
    "DEFAULT_IMAGE",
    "ENV_IMAGE",
    "ENV_NETWORK",
    "ContainerServer",
    "ContainerServerError",
    "docker_answers",
    "leftover_containers",
    "sweep_orphans",
]

ENV_IMAGE = "REQSPEC_TEST_IMAGE"
ENV_NETWORK = "REQSPEC_TEST_CONTAINER_NETWORK"
DEFAULT_IMAGE = "postgres:17"
_NAME_PREFIX = "reqspec-pgtest-"
_HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_NAME_RE = re.compile(rf"^{_NAME_PREFIX}(?P<host>[0-9a-f]{{8}})-(?P<pid>\d+)-\d+$")
_counter = itertools.count(1)

# The entrypoint: initdb once (the password read from the environment into a 0600 file that
# is removed right after), a password-only pg_hba.conf, then the server as PID 1 ("$@" are
# its -c settings). Kept data survives `docker kill` + `docker start`.
_ENTRYPOINT = r"""
set -eu
PGDATA=/tmp/reqspec-pgdata
BIN=
for d in /usr/lib/postgresql/*/bin /usr/local/bin /usr/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then BIN=$d; break; fi
done
if [ -z "$BIN" ]; then echo "reqspec: no initdb/postgres in this image" >&2; exit 64; fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    umask 077
    rm -rf "$PGDATA"
    printf '%s\n' "$REQSPEC_PG_PASSWORD" > /tmp/reqspec-pwfile
    "$BIN/initdb" -D "$PGDATA" -U postgres --pwfile=/tmp/reqspec-pwfile \
        --auth=scram-sha-256 --encoding=UTF8 --locale=C --no-instructions
    rm -f /tmp/reqspec-pwfile
    printf '%s\n' 'local all all scram-sha-256' 'host all all all scram-sha-256' \
        > "$PGDATA/pg_hba.conf"
fi
unset REQSPEC_PG_PASSWORD
exec "$BIN/postgres" -D "$PGDATA" "$@"
"""

_PING = query("_admin", "ping")


class ContainerServerError(RuntimeError):
    """A container server could not be started or reached (the message never holds its password)."""


def _docker() -> Any:
    return importlib.import_module("docker")


def docker_answers() -> tuple[bool, str]:
    """Whether a Docker engine answers (DOCKER_HOST or the default socket), and why not."""
    try:
        client = _docker().from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return False, f"no Docker engine ({type(exc).__name__})"
    try:
        importlib.import_module("testcontainers.core.container")
    except ImportError:
        return False, "Docker engine answers, but testcontainers is not installed"
    return True, "Docker engine answers"


def _our_containers(client: Any) -> list[tuple[Any, int]]:
    """(container, owner pid) of every container this host's harness runs made."""
    found = []
    for container in client.containers.list(all=True, filters={"name": _NAME_PREFIX}):
        match = _NAME_RE.match(container.name)
        if match and match.group("host") == _HOST_TAG:
            found.append((container, int(match.group("pid"))))
    return found




def sweep_orphans() -> int:
    """Remove containers left by harness runs of this host whose process is gone; how many."""
    client = _docker().from_env(timeout=30)
    removed = 0
    try:
        for container, owner in _our_containers(client):
            if owner != os.getpid() and not process_alive(owner):
                with contextlib.suppress(Exception):
                    container.remove(force=True, v=True)
                    removed += 1
    finally:
        client.close()
    return removed


def leftover_containers(owner_pid: int) -> list[str]:
    """Names of the containers still there that the harness run of owner_pid made."""
    client = _docker().from_env(timeout=30)
    try:
        return [c.name for c, pid in _our_containers(client) if pid == owner_pid]
    finally:
        client.close()


class ContainerServer:
    """A PostgreSQL server in a container of ``image``, reachable on 127.0.0.1 only.

    Offers what the tests use of an embedded server: start, stop, kill (SIGKILL of the whole
    container), pause/resume (cgroup freezer), restart, is_running, dsn, create/drop database.
    Its data stays in the container until destroy().
    """

    def __init__(
        self,
        image: str,
        *,
        settings: Mapping[str, str] | None = None,
        network: str | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.image = image
        self.network = (network or os.environ.get(ENV_NETWORK) or "host").strip().lower()
        if self.network not in ("host", "loopback"):
            raise ContainerServerError(f"{ENV_NETWORK}={self.network!r}: expected host or loopback")
        self._settings = {**DEFAULT_SETTINGS, **(settings or {})}
        self._settings.pop("password_encryption", None)  # the image's default (scram) applies
        self._password = new_password()
        self.name = f"{_NAME_PREFIX}{_HOST_TAG}-{os.getpid()}-{next(_counter)}"
        self.start_timeout = start_timeout
        self._port: int | None = None
        self._container: Any = None  # testcontainers DockerContainer

    def __repr__(self) -> str:
        return f"ContainerServer({self.name!r}, image={self.image!r})"

    # -- what the tests see

    @property
    def port(self) -> int:
        if self._port is None:
            raise ContainerServerError(f"{self} has not been started")
        return self._port

    def dsn(self, dbname: str = "postgres") -> str:
        """The superuser's DSN of dbname, password included (mask it before showing it)."""
        return (
            f"postgresql://{SUPERUSER}:{quote(self._password, safe='')}@{HOST}:{self.port}/"
            f"{quote(dbname, safe='')}"
        )

    def describe(self) -> str:
        return f"container {self.name} of image {self.image} at {HOST}:{self._port} ({self.network} network)"

    def create_database(self, name: str, *, exist_ok: bool = False) -> None:
        create_database(self.dsn(), name, exist_ok=exist_ok)

    def drop_database(self, name: str, *, missing_ok: bool = True) -> None:
        drop_database(self.dsn(), name, missing_ok=missing_ok)

    # -- lifecycle

    def _status(self) -> str | None:
        if self._container is None or self._container._container is None:
            return None
        wrapped = self._container.get_wrapped_container()
        try:
            wrapped.reload()
        except Exception:
            return None
        return str(wrapped.status)

    def is_running(self) -> bool:
        return self._status() in ("running", "paused")

    def is_paused(self) -> bool:
        return self._status() == "paused"

    def start(self) -> None:
        """Create and start the container (or start it again after stop/kill); wait until the
        server accepts the owner's connections."""
        status = self._status()
        if status in ("running", "paused"):
            self.resume()
            self._wait_ready()
            return
        if status is not None:  # stopped or killed: same container, same data, same port
            self._container.get_wrapped_container().start()
            self._wait_ready()
            return
        for attempt in range(4):
            self._create_and_start()
            try:
                self._wait_ready()
                return
            except ContainerServerError as exc:
                logs = self._logs()
                self.destroy()
                if self.network == "host" and "could not bind" in logs and attempt < 3:
                    continue  # another process took the free port first: pick another one
                raise ContainerServerError(f"{exc}; container log tail:\n{logs}") from None

    def _create_and_start(self) -> None:
        container_class = importlib.import_module("testcontainers.core.container").DockerContainer
        args: list[str] = []
        # the socket stays inside the container (Debian's default directory is not there)
        settings = {**self._settings, "unix_socket_directories": "/tmp"}
        if self.network == "host":
            self._port = pick_free_port()
            settings.update(listen_addresses=HOST, port=str(self._port))
        else:
            settings.update(listen_addresses="*", port="5432")
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        container = (
            container_class(self.image)
            .with_name(self.name)
            .with_env("REQSPEC_PG_PASSWORD", self._password)
            .with_command(args)
            .with_kwargs(
                entrypoint=["/bin/sh", "-c", _ENTRYPOINT, "reqspec-pg"],
                user="postgres",
                shm_size="256m",
                stop_signal="SIGINT",  # fast shutdown, as pg_ctl stop -m fast
                **({"network_mode": "host"} if self.network == "host" else {}),
            )
        )
        if self.network == "loopback":
            container.with_bind_ports(5432, (HOST, None))
        self._container = container
        container.start()
        if self.network == "loopback":
            self._port = int(container.get_exposed_port(5432))

    def _wait_ready(self) -> None:
        # the server reports nothing we could wait on across restarts: poll, bounded
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            status = self._status()
            if status not in ("running", "created", "restarting"):
                raise ContainerServerError(f"{self} exited while starting (status {status})")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=3) as conn:
                    _PING.scalar(conn)
                return
            except psycopg.Error as exc:
                last = mask_text(str(exc).strip().splitlines()[-1] if str(exc).strip() else "", [self._password])
            time.sleep(0.2)
        raise ContainerServerError(f"{self} not ready after {self.start_timeout:.0f} s ({last})")

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster); the container and its data stay."""
        if self.is_running():
            self.resume()
            self._container.get_wrapped_container().stop(timeout=30)

    def kill(self) -> None:
        """SIGKILL every process of the container (a crash); its data stays."""
        if self.is_running():
            wrapped = self._container.get_wrapped_container()
            if self.is_paused():
                wrapped.unpause()
            wrapped.kill()
            wrapped.wait(timeout=30)

    def pause(self) -> None:
        if not self.is_running():
            raise ContainerServerError(f"cannot pause {self}: not running")
        if not self.is_paused():
            self._container.get_wrapped_container().pause()

    def resume(self) -> None:
        if self.is_paused():
            self._container.get_wrapped_container().unpause()

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Remove the container and its data (no-op when already gone)."""
        container, self._container = self._container, None
        if container is not None and container._container is not None:
            with contextlib.suppress(Exception):
                container.get_wrapped_container().remove(force=True, v=True)
            with contextlib.suppress(Exception):
                container.get_docker_client().client.close()

    def _logs(self) -> str:
        with contextlib.suppress(Exception):
            out, err = self._container.get_logs()
            text = (out + err).decode(errors="replace")
            return mask_text("\n".join(text.splitlines()[-30:]), [self._password])
        return ""
