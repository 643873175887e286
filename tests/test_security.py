"""Security: SQL injection payloads are plain data, passwords never leak, and the
application role of migration 0002_roles can use the tables but not change them."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pwd
import subprocess
import traceback
import uuid

import attrs
import psycopg
import pytest
from helpers import API, build_topology, run_sql
from psycopg import conninfo
from psycopg import errors as pg_errors
from psycopg import sql as pg_sql

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._cli.main import main as cli_main
from reqspec_repo._embedded import (
    LocalServer,
    embedded_default,
    embedded_default_server,
    find_bin_dir,
    stop_embedded_default,
)
from reqspec_repo._errors import (
    ConfigError,
    DatabaseUnavailableError,
    ReqSpecError,
    SpecValidationError,
)
from reqspec_repo._moving.moves import move_specs
from reqspec_repo._moving.recovery import recover, verify
from reqspec_repo._spec.model import InstanceGroupRef
from reqspec_repo._store import migrate
from reqspec_repo._store.config import Settings, Topology
from reqspec_repo._store.context import RequestContext, api_context, cell_context
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.pools import Connections
from reqspec_repo._store.repository import RequestSpecRepository

PAYLOADS = [
    "'; DROP TABLE request_specs; --",
    "x' OR '1'='1",
    '"; DELETE FROM request_specs; --',
    "$$; TRUNCATE request_specs; $$",
    "$tag$ SELECT pg_sleep(10) $tag$",
    "Robert'); DROP TABLE spec_locations;--",
    "%(instance_uuid)s %s {} %%",
    "\\'; SELECT 1; --",
    "1; COPY request_specs TO PROGRAM 'touch /tmp/pwned'",
    "E'\\x27' || chr(39)",
    "ü’\u2028\U0001f600",
]


def spec_with(payload: str):
    spec = sample_spec()
    assert spec.image is not None
    return attrs.evolve(
        spec,
        project_id=payload,
        user_id=payload,
        availability_zone=payload,
        flavor=attrs.evolve(
            spec.flavor, name=payload, flavorid=payload, extra_specs={payload: payload, "k": payload}
        ),
        image=attrs.evolve(spec.image, name=payload, properties={payload: payload}),
        force_hosts=(payload,),
        force_nodes=(payload,),
        security_groups=(payload,),
        scheduler_hints={payload: (payload,)},
        instance_group=InstanceGroupRef(uuid=str(uuid.uuid4()), name=payload, policy=payload, rules={payload: payload}),
    )


def tables(topology, database):
    return run_sql(topology, database, "SELECT schemaname, tablename FROM pg_tables ORDER BY 1, 2")


def test_injection_payloads_in_every_string_field_are_stored_verbatim(repo, topology):
    ctx = cell_context("cell1")
    before = tables(topology, "cell1")
    for payload in PAYLOADS:
        spec = spec_with(payload)
        stored = repo.create(ctx, spec)
        assert repo.get(ctx, spec.instance_uuid).spec == spec
        # the raw row holds the payload as data
        row = run_sql(
            topology, "cell1",
            "SELECT spec->>'project_id', spec->'flavor'->'extra_specs'->>%s, spec->'scheduler_hints'->%s->>0 "
            "FROM request_specs WHERE instance_uuid = %s",
            [payload, payload, spec.instance_uuid],
        )
        assert row == [(payload, payload, payload)]
        changed = attrs.evolve(spec, availability_zone=payload + payload)
        repo.save(ctx, changed, expected_version=stored.version)
        assert repo.get_many(ctx, [spec.instance_uuid]).found[spec.instance_uuid].spec == changed
        assert repo.destroy(ctx, spec.instance_uuid)
    assert tables(topology, "cell1") == before
    assert run_sql(topology, "cell1", "SELECT to_regclass('request_specs') IS NOT NULL")[0][0]


def test_injection_payloads_as_uuids_and_cell_names_are_refused(repo, topology):
    count = repo.count(api_context())
    for payload in PAYLOADS:
        for call in (
            lambda p=payload: repo.get(api_context(), p),
            lambda p=payload: repo.exists(api_context(), p),
            lambda p=payload: repo.destroy(api_context(), p),
            lambda p=payload: repo.get_many(api_context(), [str(uuid.uuid4()), p]),
        ):
            with pytest.raises(SpecValidationError, match="not a uuid"):
                call()
        with pytest.raises(SpecValidationError):
            attrs.evolve(sample_spec(), instance_uuid=payload)
        with pytest.raises(ConfigError):
            repo.get(RequestContext(payload), str(uuid.uuid4()))
        with pytest.raises(ConfigError):
            repo.create(cell_context("cell1").target_cell(payload), sample_spec())
        with pytest.raises(ConfigError, match="invalid cell name"):
            Topology.from_dsns("dbname=a", {payload: "dbname=b"})
    assert repo.count(api_context()) == count
    assert run_sql(topology, API, "SELECT to_regclass('request_specs') IS NOT NULL")[0][0]


# --- passwords ----------------------------------------------------------------------------

PASSWORD = "Pw-0f-the-4pp-r0le"
WRONG = "Wr0ng-pw-guess"
ROLE = "reqspec_pw_user"


@pytest.fixture
def password_server(killable_server):
    """A server (scram for every role, as every server the harness starts) with a second
    superuser whose password the test knows."""
    server = killable_server()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(pg_sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            pg_sql.Identifier(ROLE), pg_sql.Literal(PASSWORD)))
    return server


def dsns_for(server, dbname: str, password: str, *, port: int | None = None) -> str:
    return (
        f"postgresql://{ROLE}:{password}@127.0.0.1:{port or server.port}/{dbname}"
        "?application_name=pwtest"
    )


def no_secret(text: str) -> None:
    assert PASSWORD not in text and WRONG not in text, text


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_password_in_logs_errors_reprs_or_cli_output(password_server, caplog, capsys, monkeypatch, tmp_path):
    server = password_server
    topology, _ = build_topology(server, migrate=False)
    dbname = conninfo.conninfo_to_dict(topology.api.dsn)["dbname"]
    # the password is enforced: the right one works, the wrong one does not
    with psycopg.connect(dsns_for(server, str(dbname), PASSWORD)) as conn:
        conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(dsns_for(server, str(dbname), WRONG))

    caplog.set_level(logging.DEBUG)
    fast = Settings(connect_timeout_s=1)
    failing = {
        "wrong password": Topology.from_dsns(
            dsns_for(server, str(dbname), WRONG), {"cell1": f"host=127.0.0.1 port={server.port} "
                                                   f"user={ROLE} password='{WRONG}' dbname={dbname}"}, fast),
        "closed port": Topology.from_dsns(
            dsns_for(server, str(dbname), PASSWORD, port=closed_port()),
            {"cell1": f"host=127.0.0.1 port={closed_port()} user={ROLE} password={PASSWORD} dbname=x"}, fast),
    }
    texts: list[str] = []
    for why, topo in failing.items():
        texts += [repr(topo), str(topo), repr(topo.api), repr(topo.cells), repr(Connections(topo))]
        with RequestSpecRepository.from_topology(topo) as repo:
            texts.append(repr(repo))
            for ctx in (api_context(), cell_context("cell1")):
                with pytest.raises(DatabaseUnavailableError) as err:
                    repo.create(ctx, sample_spec())
                texts += [str(err.value), repr(err.value), "".join(traceback.format_exception(err.value))]
                if why == "wrong password":
                    assert "password authentication failed" in str(err.value)
            texts.append(repr(repo))
        for database in topo.all_databases():
            with pytest.raises(ReqSpecError) as err:
                migrate.migrate_database(database)
            texts += [str(err.value), "".join(traceback.format_exception(err.value))]
        # the CLI, with debug logs and tracebacks on
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("REQSPEC_API_DSN", topo.api.dsn)
        monkeypatch.setenv("REQSPEC_CELL_CELL1_DSN", topo.cells["cell1"].dsn)
        monkeypatch.setenv("REQSPEC_CONNECT_TIMEOUT_S", "1")
        for argv in (["migrate"], ["list"], ["--debug", "show", str(uuid.uuid4()), "--database", "cell1"]):
            assert cli_main(argv) == 2
            out, err_text = capsys.readouterr()
            texts += [out, err_text]
            if "--debug" not in argv:
                assert len(err_text.strip().splitlines()) == 1, err_text
    texts.append(caplog.text)
    texts += [repr(r.args) for r in caplog.records]
    assert caplog.records, "expected some debug/warning logs of the failing run"
    for text in texts:
        no_secret(text)


# --- the servers we start: only their owner gets in -----------------------------------

# Run as another OS user (with the psql of the embedded server's binaries): tries the server
# without the password (TCP, and the socket of an embedded server), with a guess, reads the
# password file, then connects with the password given to it (proving that what failed
# before failed on authentication).
def probe_as(user: str, server) -> dict[str, str]:
    account = pwd.getpwnam(user)
    psql = str(find_bin_dir() / "psql")
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", "PGCONNECT_TIMEOUT": "5"}
    password = str(conninfo.conninfo_to_dict(server.dsn())["password"])

    def run(argv: list[str], **env: str) -> str:
        result = subprocess.run(
            argv, user=account.pw_uid, group=account.pw_gid, extra_groups=[], cwd="/",
            env={**base_env, **env}, capture_output=True, text=True, timeout=60,
        )
        return "connected" if result.returncode == 0 else " ".join(result.stderr.split())

    def attempt(host: str, **env: str) -> str:
        return run([psql, "-X", "-w", "-h", host, "-p", str(server.port), "-U", "postgres", "-d", "postgres",
                    "-c", "SELECT 1"], **env)

    found = {
        "tcp": attempt("127.0.0.1"),
        "tcp_guess": attempt("127.0.0.1", PGPASSWORD="postgres"),
        "tcp_with_password": attempt("127.0.0.1", PGPASSWORD=password),
    }
    if isinstance(server, LocalServer):  # a container's socket and password stay inside it
        found["socket"] = attempt(str(server.socket_dir))
        found["password_file"] = run(["cat", str(server.password_file)])
    return found


def assert_only_the_owner_gets_in(server, user: str) -> None:
    found = probe_as(user, server)
    assert found["tcp_with_password"] == "connected", found  # the probe itself works
    assert "no password supplied" in found["tcp"], found
    assert "password authentication failed" in found["tcp_guess"], found
    if isinstance(server, LocalServer):
        assert "Permission denied" in found["password_file"], found
        if user == "nobody":
            assert "Permission denied" in found["socket"], found  # cannot even enter the directory
        else:  # the server's own account can reach its socket, and is asked for the password there
            assert "no password supplied" in found["socket"], found
    # the owner, with the DSN the library built, gets in
    with psycopg.connect(server.dsn(), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)


def _other_users(server) -> list[str]:
    users = ["nobody"]
    if isinstance(server, LocalServer):
        server_user = pwd.getpwuid(os.stat(server.pgdata).st_uid).pw_name
        if server_user not in users and server_user != "root":
            users.append(server_user)
    return users


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another OS user needs root")


@needs_root
def test_another_os_user_cannot_connect_to_a_harness_server(killable_server, pg_server_b, disposable_server):
    # an embedded server, the second server of the run, and one of the run's kind (container)
    servers = [killable_server(), pg_server_b.local_server or pg_server_b.container, disposable_server()]
    for server in servers:
        for user in _other_users(server):
            assert_only_the_owner_gets_in(server, user)


@needs_root
def test_another_os_user_cannot_connect_to_the_embedded_default(tmp_path):
    try:
        topology = embedded_default(tmp_path)
        server = embedded_default_server(tmp_path)
        folder = tmp_path / ".reqspec"
        assert (folder.stat().st_mode & 0o777) in (0o700, 0o710)
        assert not folder.stat().st_mode & 0o007, "no access at all for other users"
        for user in _other_users(server):
            assert_only_the_owner_gets_in(server, user)
        with psycopg.connect(topology.api_dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("reqspec_api",)
    finally:
        stop_embedded_default(tmp_path)


def test_the_embedded_default_password_is_never_shown(tmp_path, monkeypatch, capsys, caplog):
    for name in [k for k in os.environ if k.startswith("REQSPEC_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    try:
        topology = embedded_default(tmp_path)
        server = embedded_default_server(tmp_path)
        password = server.password_file.read_text().strip()
        assert password in topology.api_dsn, "the DSN carries it, for the owner's connections"
        texts += [repr(topology), str(topology), repr(server), server.describe()]
        for argv in (["server", "status"], ["--debug", "list"], ["--debug", "show", str(uuid.uuid4())],
                     ["verify"], ["server", "stop"], ["server", "status"]):
            cli_main(argv)
            out, err = capsys.readouterr()
            texts += [out, err]
            if argv == ["server", "status"]:
                assert "running" in out or "stopped" in out
                assert str(server.password_file.relative_to(tmp_path)) in out, "names the password file"
        texts += [caplog.text, server.log_path.read_text()]
        for text in texts:
            assert password not in text, text
    finally:
        stop_embedded_default(tmp_path)


# --- least privilege ----------------------------------------------------------------------


def test_the_application_role_can_use_but_not_change_the_tables(fresh_topology):
    topology = fresh_topology()
    login = f"reqspec_login_{uuid.uuid4().hex[:8]}"
    secret = uuid.uuid4().hex  # every server the harness starts asks each role for its password
    run_sql(topology, API, pg_sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE reqspec_app").format(
        pg_sql.Identifier(login), pg_sql.Literal(secret)).as_string(None))
    try:
        as_app = Topology.from_dsns(
            conninfo.make_conninfo(topology.api.dsn, user=login, password=secret),
            {n: conninfo.make_conninfo(d.dsn, user=login, password=secret) for n, d in topology.cells.items()},
        )
        with RequestSpecRepository.from_topology(as_app) as repo:
            for ctx in (api_context(), cell_context("cell2")):
                spec = sample_spec()
                stored = repo.create(ctx, spec)
                repo.create_many(ctx, [sample_spec(), sample_spec()])
                assert repo.get(ctx, spec.instance_uuid).spec == spec
                repo.save(ctx, attrs.evolve(spec, availability_zone="az9"), expected_version=stored.version)
                assert len(list(repo.iterate(ctx))) == 3
                assert repo.destroy(ctx, spec.instance_uuid)
            # The whole location-aware path works with the same rights: create with
            # locations, a move (advisory locks, relaxed-durability cleanup), verify, recover.
            store = SpecStore(repo)
            booted = [sample_spec() for _ in range(3)]
            store.create(booted)
            assert move_specs(store, [s.instance_uuid for s in booted], "cell1").ok
            # The four specs written above through the plain repository have no location:
            # verify() calls them orphans and recover() adopts them.
            assert {p.kind for p in verify(store).problems} == {"orphan"}
            assert len(recover(store, full=True).adopted) == 4 and verify(store).ok
            assert store.destroy(booted[0].instance_uuid)
        forbidden = [
            "ALTER TABLE request_specs ADD COLUMN evil int",
            "DROP TABLE request_specs",
            "DROP TABLE spec_locations",
            "TRUNCATE request_specs",
            "CREATE TABLE evil (x int)",
            "ALTER TABLE spec_locations OWNER TO CURRENT_USER",
            "CREATE INDEX evil ON request_specs (spec)",
            "CREATE SCHEMA evil",
        ]
        for database in (API, "cell1"):
            with psycopg.connect(as_app.database(database).dsn, autocommit=True) as conn:
                for statement in forbidden:
                    with pytest.raises(pg_errors.InsufficientPrivilege):
                        conn.execute(statement.encode())
                        pytest.fail(f"{login} could run {statement!r} in {database}")
        assert run_sql(topology, "cell2", "SELECT count(*) FROM request_specs") == [(2,)]
        assert run_sql(topology, "cell1", "SELECT count(*) FROM request_specs") == [(2,)]
    finally:
        run_sql(topology, API, f'DROP ROLE IF EXISTS "{login}"')


def test_role_migration_is_idempotent_concurrent_and_rolls_back_per_database(pg_server):
    # several databases of one server migrated at once: the shared roles are created once
    topologies, drops = [], []
    for _ in range(2):
        topo, drop = build_topology(pg_server, migrate=False)
        topologies.append(topo)
        drops.append(drop)
    try:
        databases = [d for t in topologies for d in t.all_databases()]
        with concurrent.futures.ThreadPoolExecutor(len(databases)) as pool:
            results = list(pool.map(migrate.migrate_database, databases))
        assert all(r.applied == r.total for r in results)
        for database in databases:
            migrate.check_schema(database)
            assert migrate.migrate_database(database).applied == 0  # a second run: nothing to do
        # rolling back one database revokes its grants only; the roles and the others stay
        victim, other = topologies[0].database("cell1"), topologies[0].api
        migrate.rollback_database(victim)
        assert run_sql(
            topologies[0], API,
            "SELECT count(*) FROM pg_roles WHERE rolname IN ('reqspec_app', 'reqspec_migrator')",
        ) == [(2,)]
        assert run_sql(
            topologies[0], API,
            "SELECT has_table_privilege('reqspec_app', 'request_specs', 'INSERT'), "
            "pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'request_specs'",
        ) == [(True, "reqspec_migrator")]
        assert migrate.migrate_database(victim).applied == migrate.migrate_database(other).total
        with RequestSpecRepository.from_topology(topologies[0]) as repo:
            repo.create(cell_context("cell1"), sample_spec())
    finally:
        for drop in drops:
            drop()
