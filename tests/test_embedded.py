"""Tests of the embedded PostgreSQL launcher (reqspec_repo._embedded)."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg_errors

from reqspec_repo._embedded import (
    EmbeddedTopology,
    LocalServer,
    LocalServerError,
    embedded_default,
    embedded_default_server,
    stop_embedded_default,
)

REPO = Path(__file__).resolve().parents[1]

MakeServer = Callable[..., LocalServer]


def _scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def _execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for statement in statements:
            conn.execute(statement)


def _postgres_pids(server: LocalServer) -> list[int]:
    """Pids of processes whose command line names this server's data directory."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if str(server.pgdata).encode() in cmd:
                pids.append(int(entry.name))
    return pids


def test_start_stop_restart_keeps_data(killable_server: MakeServer) -> None:
    server = killable_server()
    assert server.is_running()
    port, dsn = server.port, server.dsn()
    password = server.password_file.read_text().strip()
    assert dsn == f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    _execute(dsn, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('kept')")

    server.stop()
    assert not server.is_running()
    assert server.pid is None
    server.stop()  # idempotent

    server.start()
    assert server.port == port, "the port is persisted: the DSN is stable across restarts"
    assert _scalar(dsn, "SELECT v FROM t") == "kept"

    old_pid = server.pid
    server.restart()
    assert server.pid != old_pid
    assert server.dsn() == dsn
    assert _scalar(dsn, "SELECT v FROM t") == "kept"


def test_start_on_running_server_is_a_noop(killable_server: MakeServer) -> None:
    server = killable_server()
    pid = server.pid
    server.start()
    assert server.pid == pid
    other = LocalServer(server.data_dir)  # another handle on the same directory agrees
    assert other.is_running()
    other.start()
    assert other.pid == pid
    assert other.port == server.port


def test_default_settings(killable_server: MakeServer) -> None:
    server = killable_server()
    dsn = server.dsn()
    assert _scalar(dsn, "SHOW fsync") == "on"
    assert _scalar(dsn, "SHOW synchronous_commit") == "on"
    assert _scalar(dsn, "SHOW max_connections") == "200"
    assert _scalar(dsn, "SHOW shared_buffers") == "128MB"
    assert _scalar(dsn, "SHOW max_prepared_transactions") == "0"
    assert _scalar(dsn, "SHOW server_encoding") == "UTF8"
    assert _scalar(dsn, "SHOW listen_addresses") == "127.0.0.1"
    assert server.log_path.is_relative_to(server.data_dir)
    assert "ready to accept connections" in server.log_path.read_text()


def test_settings_override(killable_server: MakeServer) -> None:
    server = killable_server({"max_prepared_transactions": "10", "application_name": "it's"})
    assert _scalar(server.dsn(), "SHOW max_prepared_transactions") == "10"
    assert _scalar(server.dsn(), "SHOW application_name") == "it's"
    with pytest.raises(ValueError, match="port"):
        LocalServer(server.data_dir, settings={"port": "1"})


def test_kill_then_restart_recovers_committed_data(killable_server: MakeServer) -> None:
    server = killable_server()
    dsn = server.dsn()
    _execute(dsn, "CREATE TABLE t (v text)", "INSERT INTO t VALUES ('committed')")
    pending = psycopg.connect(dsn)
    pending.execute("INSERT INTO t VALUES ('uncommitted')")
    port = server.port

    server.kill()
    assert not server.is_running()
    assert server.pid is None
    assert _postgres_pids(server) == [], "the postmaster's children are gone too"
    with pytest.raises(psycopg.OperationalError):
        pending.commit()
    pending.close()
    server.kill()  # no-op on a dead server

    server.start()
    assert server.port == port
    assert _scalar(dsn, "SELECT string_agg(v, ',') FROM t") == "committed"
    assert "database system was interrupted" in server.log_tail(100) or "crash" in server.log_tail(100)


def test_pause_and_resume(killable_server: MakeServer) -> None:
    server = killable_server()
    dsn = server.dsn()
    with psycopg.connect(dsn, autocommit=True) as conn:
        server.pause()
        assert server.is_paused()
        assert server.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)
        server.resume()
        assert not server.is_paused()
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert _scalar(dsn, "SELECT 2") == 2


def test_stop_a_paused_server(killable_server: MakeServer) -> None:
    server = killable_server()
    server.pause()
    server.stop()
    assert not server.is_running()
    assert _postgres_pids(server) == []


def test_create_and_drop_database(killable_server: MakeServer) -> None:
    server = killable_server()
    server.create_database("Mixed-Case db")
    db_dsn = server.dsn("Mixed-Case db")
    assert _scalar(db_dsn, "SELECT current_database()") == "Mixed-Case db"
    with pytest.raises(pg_errors.DuplicateDatabase):
        server.create_database("Mixed-Case db")
    server.create_database("Mixed-Case db", exist_ok=True)

    with psycopg.connect(db_dsn) as open_session:  # DROP ... WITH (FORCE) ends it
        server.drop_database("Mixed-Case db")
        with pytest.raises(psycopg.OperationalError):
            open_session.execute("SELECT 1")
    assert _scalar(server.dsn(), "SELECT count(*) FROM pg_database WHERE datname = 'Mixed-Case db'") == 0
    server.drop_database("Mixed-Case db")  # missing_ok by default
    with pytest.raises(pg_errors.InvalidCatalogName):
        server.drop_database("Mixed-Case db", missing_ok=False)


def test_two_servers_at_once(killable_server: MakeServer) -> None:
    a, b = killable_server(), killable_server()
    assert a.port != b.port
    assert a.pid != b.pid
    _execute(a.dsn(), "CREATE TABLE only_a (x int)")
    assert _scalar(a.dsn(), "SELECT to_regclass('only_a') IS NOT NULL") is True
    assert _scalar(b.dsn(), "SELECT to_regclass('only_a') IS NOT NULL") is False
    a.kill()
    assert _scalar(b.dsn(), "SELECT 1") == 1, "killing one leaves the other alone"


def test_concurrent_starts_from_several_processes(killable_server: MakeServer) -> None:
    server = killable_server(start=False)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from reqspec_repo._embedded import LocalServer
        s = LocalServer(Path(sys.argv[1]))
        s.start()
        print(s.pid, s.port)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(server.data_dir)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1, outputs
    assert outputs == {f"{server.pid} {server.port}"}


def test_failed_start_reports_the_log_tail(killable_server: MakeServer) -> None:
    server = killable_server({"shared_buffers": "not-a-size"}, start=False)
    with pytest.raises(LocalServerError) as info:
        server.start()
    assert "shared_buffers" in str(info.value)
    assert str(server.log_path) in str(info.value)
    assert not server.is_running()
    assert _postgres_pids(server) == []


def test_pid_reused_or_stale_pidfile_is_ignored(killable_server: MakeServer) -> None:
    server = killable_server()
    server.kill()
    # a stale postmaster.pid naming a live, unrelated process (pid reuse) must not block start
    (server.pgdata / "postmaster.pid").write_text(f"{os.getpid()}\n{server.pgdata}\n0\n{server.port}\n\n\n\n")
    assert not server.is_running()
    server.start()
    assert server.is_running()
    assert server.pid != os.getpid()


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the tests run as root")
def test_starting_as_root_runs_postgres_unprivileged(killable_server: MakeServer) -> None:
    assert os.geteuid() == 0
    server = killable_server()
    pid = server.pid
    assert pid is not None
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0
    assert server.pgdata.stat().st_uid == uid
    assert pwd.getpwuid(uid).pw_name in {"reqspec-pg", "pgserver", os.environ.get("REQSPEC_PG_OS_USER")}
    assert _scalar(server.dsn(), "SELECT current_user") == "postgres"


def test_embedded_default_is_idempotent_and_persistent(tmp_path: Path) -> None:
    try:
        first = embedded_default(tmp_path)
        assert isinstance(first, EmbeddedTopology)
        assert set(first.cells) == {"cell1", "cell2"}
        assert first.api_dsn.endswith("/reqspec_api")
        assert first.cells["cell1"].endswith("/reqspec_cell1")
        assert first.cells["cell2"].endswith("/reqspec_cell2")
        assert (tmp_path / ".reqspec" / "pg" / "pgdata" / "PG_VERSION").exists()
        _execute(first.api_dsn, "CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (42)")
        pid = embedded_default_server(tmp_path).pid

        second = embedded_default(tmp_path)
        assert second == first
        assert embedded_default_server(tmp_path).pid == pid, "the running server is reused"
        assert _scalar(second.api_dsn, "SELECT v FROM kept") == 42
        for dsn in second.cells.values():
            assert _scalar(dsn, "SELECT 1") == 1

        stop_embedded_default(tmp_path)
        assert not embedded_default_server(tmp_path).is_running()
        third = embedded_default(tmp_path)
        assert third == first, "same DSNs after a restart"
        assert _scalar(third.api_dsn, "SELECT v FROM kept") == 42
    finally:
        stop_embedded_default(tmp_path)
    assert not embedded_default_server(tmp_path).is_running()


def test_embedded_default_uses_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        topology = embedded_default()
        assert _scalar(topology.cells["cell2"], "SELECT current_database()") == "reqspec_cell2"
        assert embedded_default_server(tmp_path).is_running()
    finally:
        stop_embedded_default()
    assert not embedded_default_server(tmp_path).is_running()


def test_a_busy_port_is_replaced_unless_explicit(killable_server: MakeServer) -> None:
    server = killable_server()
    old_port = server.port
    server.stop()
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        server.start()  # the persisted port is taken by someone else: a new one is chosen
        assert server.port != old_port
        assert _scalar(server.dsn(), "SELECT 1") == 1
        server.stop()

        pinned = LocalServer(server.data_dir, port=old_port)
        with pytest.raises(LocalServerError, match="log tail|tail:"):
            pinned.start()
        assert not pinned.is_running()
    finally:
        squatter.close()


# --- authentication (issue: every local user was let in as superuser) ------------------


def _connect_fails(**params: object) -> str:
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(connect_timeout=10, user="postgres", dbname="postgres", **params).close()
    return str(err.value)


def test_every_connection_needs_the_password(killable_server: MakeServer) -> None:
    server = killable_server()
    password = server.password_file.read_text().strip()
    assert len(password) >= 40
    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
    assert server.password_file.stat().st_uid == os.geteuid()
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(server.socket_dir.stat().st_mode) == 0o700
    assert _scalar(server.dsn(), "SELECT current_user") == "postgres"
    assert _scalar(server.dsn(), "SHOW password_encryption") == "scram-sha-256"
    assert _scalar(server.dsn(), "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres'")
    for host in ("127.0.0.1", str(server.socket_dir)):
        assert "no password supplied" in _connect_fails(host=host, port=server.port)
        assert "password authentication failed" in _connect_fails(host=host, port=server.port, password="postgres")
        assert _scalar(f"host={host} port={server.port} user=postgres dbname=postgres password={password}", "SELECT 1") == 1
    # nothing listens beyond the loopback address
    assert _scalar(server.dsn(), "SHOW listen_addresses") == "127.0.0.1"
    rules = _scalar(server.dsn(), "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules")
    assert rules == "scram-sha-256"
    for text in (repr(server), server.describe(), server.log_path.read_text()):
        assert password not in text
    assert str(server.password_file) in server.describe()


def _make_it_look_old(server: LocalServer) -> None:
    """What an older version left: trust authentication, no password file."""
    (server.pgdata / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    server.password_file.unlink()


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_a_cluster_of_an_older_version_is_secured_in_place(
    killable_server: MakeServer, running: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server = killable_server()
    _execute(server.dsn(), "CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (42)")
    old_password = server.password_file.read_text().strip()
    if not running:
        server.stop()
    _make_it_look_old(server)
    if running:
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGHUP)  # reload: the running server is now open
        _wait_for(lambda: _open_to_anyone(server))
    server.start()
    assert server.is_running()
    assert not _open_to_anyone(server)
    password = server.password_file.read_text().strip()
    assert password != old_password, "a new random password"
    assert _scalar(server.dsn(), "SELECT v FROM kept") == 42, "data kept"
    assert any("now asks for the password" in r.getMessage() for r in caplog.records)
    assert all(password not in r.getMessage() for r in caplog.records)
    assert password not in server.log_path.read_text()


def _open_to_anyone(server: LocalServer) -> bool:
    try:
        psycopg.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", connect_timeout=5).close()
    except psycopg.OperationalError:
        return False
    return True


def _wait_for(condition: Callable[[], bool]) -> None:
    # a reload is asynchronous and signals nothing we could wait on: poll, bounded
    for _ in range(200):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in 10 s")


def test_an_older_cluster_that_cannot_be_secured_is_refused(killable_server: MakeServer) -> None:
    server = killable_server()
    server.stop()
    _make_it_look_old(server)
    with (server.pgdata / "postgresql.auto.conf").open("a") as fh:
        fh.write("shared_buffers = 'not-a-size'\n")  # even single-user mode cannot start
    with pytest.raises(LocalServerError) as err:
        server.start()
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "older reqspec" in message and "move the directory away" in message
    assert not server.is_running()
    assert _postgres_pids(server) == []


def test_the_embedded_default_of_an_older_version_is_secured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reqspec_repo._cli.main import main as cli_main

    monkeypatch.chdir(tmp_path)
    try:
        first = embedded_default(tmp_path)
        _execute(first.api_dsn, "CREATE TABLE kept (v int)", "INSERT INTO kept VALUES (42)")
        server = embedded_default_server(tmp_path)
        _make_it_look_old(server)  # while it runs, as an older version left it
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGHUP)
        _wait_for(lambda: _open_to_anyone(server))
        (tmp_path / ".reqspec").chmod(0o755)
        assert cli_main(["server", "status"]) == 0
        assert "older version, with no password" in capsys.readouterr().out

        second = embedded_default(tmp_path)
        assert not _open_to_anyone(server)
        assert _scalar(second.api_dsn, "SELECT v FROM kept") == 42
        assert not (tmp_path / ".reqspec").stat().st_mode & 0o007
        assert cli_main(["server", "status"]) == 0
        out = capsys.readouterr().out
        assert "password: in .reqspec/pg/password" in out
        assert server.password_file.read_text().strip() not in out
    finally:
        stop_embedded_default(tmp_path)
