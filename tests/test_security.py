"""Security: SQL injection payloads are plain data, passwords never leak, and the
application role of migration 0002_roles can use the tables but not change them."""

from __future__ import annotations

import concurrent.futures
import logging
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
    """A server that checks passwords (scram) for every role but the superuser."""
    server = killable_server()
    hba = server.pgdata / "pg_hba.conf"
    hba.write_text(
        "local all postgres trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "local all all scram-sha-256\n"
    )
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
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


# --- least privilege ----------------------------------------------------------------------


def test_the_application_role_can_use_but_not_change_the_tables(fresh_topology):
    topology = fresh_topology()
    login = f"reqspec_login_{uuid.uuid4().hex[:8]}"
    run_sql(topology, API, f'CREATE ROLE "{login}" LOGIN IN ROLE reqspec_app')
    try:
        as_app = Topology.from_dsns(
            conninfo.make_conninfo(topology.api.dsn, user=login),
            {n: conninfo.make_conninfo(d.dsn, user=login) for n, d in topology.cells.items()},
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
            assert len(recover(store).adopted) == 4 and verify(store).ok
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
