"""Bad input: corrupt rows planted in the table, oversized documents, invalid batches and
configuration mistakes (library and CLI). Every failure is a typed, one-line error naming
the instance or database, with no password in it."""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import orjson
import psycopg
import pytest
from helpers import build_topology, run_sql, spec_of_size
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import conninfo
from psycopg import sql as pg_sql
from strategies import durable_request_specs, json_paths, json_values, texts

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._cli.main import main as cli_main
from reqspec_repo._errors import (
    BatchError,
    ConfigError,
    DatabaseUnavailableError,
    DocumentTooLargeError,
    SchemaError,
    SpecDecodeError,
    SpecEncodeError,
    SpecExistsError,
)
from reqspec_repo._spec import codec
from reqspec_repo._store import migrate
from reqspec_repo._store.config import API, Settings, Topology
from reqspec_repo._store.context import api_context, cell_context
from reqspec_repo._store.repository import RequestSpecRepository, StoredSpec

PASSWORD = "Sup3r-s3cret-pw"


@pytest.fixture(scope="module")
def fuzz_topology(pg_server):
    topology, drop = build_topology(pg_server)
    yield topology
    drop()


@pytest.fixture(scope="module")
def fuzz_repo(fuzz_topology):
    with RequestSpecRepository.from_topology(fuzz_topology) as repository:
        yield repository


def plant_text(topology, database: str, instance_uuid: str, text: str) -> None:
    run_sql(
        topology, database,
        "INSERT INTO request_specs (instance_uuid, spec, schema_version) VALUES (%s, %s::jsonb, 2)",
        [instance_uuid, text],
    )


# --- corrupt documents ------------------------------------------------------------------

RAW = "\x01RAW\x01"
RAW_TOKEN = orjson.dumps(RAW)


def nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


# JSON texts PostgreSQL stores but a Python decoder may choke on.
raw_fragments = st.one_of(
    json_values().map(lambda v: orjson.dumps(v).decode()),
    st.sampled_from(
        [
            "1e400", "-1e-400", "123456789012345678901234567890", "18446744073709551616",
            "9223372036854775808", "-9223372036854775809", "1.0", "0.1", "-0", "true", "null",
            '""', "[]", "{}", '"\\ud83d\\ude00"', '"' + "x" * 70_000 + '"',
        ]
    ),
    st.builds(nested, st.sampled_from([100, 1025, 10_000]), st.sampled_from(["array", "object"])),
)


def at(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def corrupt_documents(draw: st.DrawFn, instance_uuid: str) -> str:
    """A JSON text: a valid spec document with one defect, or garbage."""
    spec = attrs.evolve(draw(durable_request_specs()), instance_uuid=instance_uuid)
    doc = orjson.loads(codec.encode(spec, max_bytes=1 << 30))
    how = draw(st.sampled_from(["replace", "delete", "extra", "truncate", "whole", "text", "fine"]))
    if how == "whole":
        return draw(raw_fragments)
    if how == "text":  # a cut-off document stored as a JSON string
        text = orjson.dumps(doc).decode()
        return orjson.dumps(text[: draw(st.integers(0, len(text) - 1))]).decode()
    if how == "truncate":
        keys = list(doc)
        return orjson.dumps({k: doc[k] for k in keys[: draw(st.integers(0, len(keys) - 1))]}).decode()
    if how == "fine":
        return orjson.dumps(doc).decode()
    path = draw(st.sampled_from(json_paths(doc)[1:]))
    parent, last = at(doc, path[:-1]), path[-1]
    if how == "delete":
        del parent[last]
        return orjson.dumps(doc).decode()
    if how == "extra":
        target = at(doc, path) if isinstance(at(doc, path), dict) else doc
        target[draw(texts(8)) or "surprise"] = draw(json_values())
        return orjson.dumps(doc).decode()
    parent[last] = RAW
    return orjson.dumps(doc).decode().replace(RAW_TOKEN.decode(), draw(raw_fragments), 1)


def check_decode_error(exc: SpecDecodeError, instance_uuid: str, database: str) -> None:
    assert exc.instance_uuid == instance_uuid and exc.database == database
    assert instance_uuid in str(exc) and repr(database) in str(exc)
    assert exc.problems
    for problem in exc.problems:
        # each problem names its field path ($ = the document), or says the JSON is bad
        assert " @ $" in problem or problem.startswith("invalid JSON"), problem


@settings(
    max_examples=120, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_corrupt_rows_give_only_decode_errors_naming_uuid_and_path(fuzz_repo, fuzz_topology, data):
    key = str(uuid.uuid4())
    text = data.draw(corrupt_documents(key), label="document")
    plant_text(fuzz_topology, API, key, text)
    ctx = api_context()
    try:
        stored = fuzz_repo.get(ctx, key)
    except SpecDecodeError as exc:
        check_decode_error(exc, key, API)
        decoded = False
    else:
        assert isinstance(stored, StoredSpec) and stored.instance_uuid == key
        decoded = True
    other = str(uuid.uuid4())
    batch = fuzz_repo.get_many(ctx, [key, other])
    assert batch.missing == [other]
    if decoded:
        assert list(batch.found) == [key] and not batch.errors
    else:
        assert list(batch.errors) == [key] and not batch.found
        check_decode_error(batch.errors[key], key, API)


def test_iteration_reports_every_corrupt_row_and_yields_the_rest(fuzz_repo, fuzz_topology):
    ctx = cell_context("cell1")
    good = [sample_spec() for _ in range(3)]
    fuzz_repo.create_many(ctx, good)
    corpus = [
        nested(10_000, "array"), nested(10_000, "object"), nested(1025, "array"),
        '{"schema_version": 2, "image": {"properties": {"p": ' + nested(5000, "object") + "}}}",
        '"' + "y" * 3_000_000 + '"', '{"schema_version": 1e400}', "123456789012345678901234567890",
        '{"schema_version": 2, "flavor": "m1.small"}', "null", "[]", '{"schema_version": "2"}',
        orjson.dumps({**orjson.loads(codec.encode(sample_spec())), "num_instances": 1e400}).decode(),
    ]
    bad = []
    for text in corpus:
        bad.append(str(uuid.uuid4()))
        plant_text(fuzz_topology, "cell1", bad[-1], text)
    reported: list[SpecDecodeError] = []
    seen = [s.instance_uuid for s in fuzz_repo.iterate(ctx, batch_size=4, on_error=reported.append)]
    assert seen == sorted(s.instance_uuid for s in good)  # instance uuid order
    assert [e.instance_uuid for e in reported] == sorted(bad)
    for exc in reported:
        check_decode_error(exc, exc.instance_uuid or "", "cell1")
    with pytest.raises(SpecDecodeError):
        list(fuzz_repo.iterate(ctx, on_error=None))
    # PostgreSQL itself refuses deeper documents, so they cannot be planted at all
    with pytest.raises(Exception, match="stack depth"):
        plant_text(fuzz_topology, "cell1", str(uuid.uuid4()), nested(200_000, "array"))


# --- document size ----------------------------------------------------------------------


def test_the_default_maximum_document_size_is_enforced_before_writing(repo, topology):
    limit = Settings().max_document_bytes
    assert limit == 1 << 20
    ctx = cell_context("cell2")
    at_limit = repo.create(ctx, spec_of_size(limit))
    over = spec_of_size(limit + 1)
    with pytest.raises(DocumentTooLargeError) as err:
        repo.create(ctx, over)
    assert err.value.size == limit + 1 and err.value.limit == limit
    assert over.instance_uuid in str(err.value)
    over_existing = attrs.evolve(over, instance_uuid=at_limit.instance_uuid)
    with pytest.raises(DocumentTooLargeError):
        repo.save(ctx, over_existing, expected_version=at_limit.version)
    with pytest.raises(BatchError) as batch_err:
        repo.create_many(ctx, [sample_spec(), spec_of_size(limit + 1)])
    assert len(batch_err.value.failures) == 1
    with pytest.raises(DocumentTooLargeError):
        with repo.unit_of_work(ctx) as uow:
            uow.create(sample_spec())
            uow.create(over)
            uow.commit()
    # nothing of it was written: one row, still at version 1
    rows = run_sql(
        topology, "cell2",
        "SELECT version, octet_length(spec::text) > 0 FROM request_specs WHERE instance_uuid = ANY(%s::uuid[])",
        [[at_limit.instance_uuid, over.instance_uuid]],
    )
    assert rows == [(1, True)]


def test_a_smaller_configured_maximum_is_enforced(fresh_topology):
    topology = fresh_topology(settings=Settings(max_document_bytes=2000))
    with RequestSpecRepository.from_topology(topology) as repo:
        with pytest.raises(DocumentTooLargeError, match="over the maximum of 2000 bytes"):
            repo.create(api_context(), spec_of_size(2001))
        repo.create(api_context(), spec_of_size(2000))
        assert repo.count(api_context()) == 1


# --- batches ----------------------------------------------------------------------------


def test_a_batch_with_any_bad_item_writes_none_and_names_each(fresh_topology):
    topology = fresh_topology()
    ctx = cell_context("cell1")
    with RequestSpecRepository.from_topology(topology) as repo:
        existing = repo.create(ctx, sample_spec()).spec
        fine = [sample_spec() for _ in range(3)]
        nul = attrs.evolve(sample_spec(), availability_zone="a\x00b")  # jsonb cannot store U+0000
        dup = sample_spec()
        cases = {
            nul.instance_uuid: ([*fine, nul], SpecEncodeError),
            dup.instance_uuid: ([*fine, dup, dup], SpecExistsError),
            existing.instance_uuid: ([*fine, existing], SpecExistsError),
        }
        for bad_uuid, (batch, error_type) in cases.items():
            with pytest.raises(BatchError) as err:
                repo.create_many(ctx, batch)
            assert list(err.value.failures) == [bad_uuid]
            assert isinstance(err.value.failures[bad_uuid], error_type)
            assert bad_uuid in str(err.value) and "nothing written" in str(err.value)
        # a non-spec in the batch is a typed error too, not an AttributeError
        with pytest.raises(BatchError) as err:
            repo.create_many(ctx, [*fine, {"instance_uuid": "x"}])
        assert all(isinstance(e, SpecEncodeError) for e in err.value.failures.values())
        assert repo.count(ctx) == 1


# --- configuration mistakes -------------------------------------------------------------


def with_password(dsn: str, password: str = PASSWORD) -> str:
    return conninfo.make_conninfo(dsn, password=password)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line_without_password(text: str) -> str:
    text = text.strip()
    assert "\n" not in text, text
    assert PASSWORD not in text
    assert "Traceback" not in text
    return text


def test_unknown_cell_and_malformed_dsn_are_config_errors(repo):
    with pytest.raises(ConfigError) as err:
        repo.get(cell_context("cell9"), str(uuid.uuid4()))
    assert "unknown cell 'cell9'" in one_line_without_password(str(err.value))
    assert "cell1, cell2" in str(err.value)
    for bad in (f"host=db password={PASSWORD} dbname", f"postgresql://u:{PASSWORD}@db:5432/x?bogus_option=1"):
        with pytest.raises(ConfigError) as err:
            Topology.from_dsns("dbname=api", {"cell1": bad})
        assert "'cell1'" in one_line_without_password(str(err.value))
        assert "malformed DSN" in str(err.value)


def test_an_unreachable_server_is_reported_fast_with_the_cause():
    dsn = f"postgresql://reqspec:{PASSWORD}@127.0.0.1:{closed_port()}/nova"
    topology = Topology.from_dsns(dsn, {"cell1": dsn}, Settings(connect_timeout_s=1))
    with RequestSpecRepository.from_topology(topology) as repo:
        with pytest.raises(DatabaseUnavailableError) as err:
            repo.get(cell_context("cell1"), str(uuid.uuid4()))
    message = one_line_without_password(str(err.value))
    assert "'cell1'" in message and "refused" in message.lower()
    assert err.value.retryable


@pytest.fixture
def unmigrated(pg_server):
    """Unmigrated databases, reached as a role whose password is PASSWORD (the servers the
    harness starts check passwords: the DSNs must carry the right one)."""
    topology, drop = build_topology(pg_server, migrate=False)
    role = f"reqspec_bad_input_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(pg_sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            pg_sql.Identifier(role), pg_sql.Literal(PASSWORD)))
    try:
        yield Topology.from_dsns(
            with_password(conninfo.make_conninfo(topology.api.dsn, user=role)),
            {n: with_password(conninfo.make_conninfo(d.dsn, user=role)) for n, d in topology.cells.items()},
        )
    finally:
        drop()
        with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
            conn.execute(pg_sql.SQL("DROP ROLE IF EXISTS {}").format(pg_sql.Identifier(role)))


def test_a_database_never_migrated_says_to_run_migrate(unmigrated):
    with RequestSpecRepository.from_topology(unmigrated) as repo:
        with pytest.raises(SchemaError) as err:
            repo.get(cell_context("cell2"), str(uuid.uuid4()))
    assert "'cell2'" in one_line_without_password(str(err.value)) and "migrate" in str(err.value)
    with pytest.raises(SchemaError) as err:
        migrate.check_schema(unmigrated.database("cell2"))
    assert "run `reqspec migrate`" in one_line_without_password(str(err.value))


def test_a_schema_newer_than_the_code_is_refused(unmigrated):
    api = unmigrated.api
    migrate.migrate_database(api)
    migrate.check_schema(api)  # fully migrated: fine
    run_sql(
        unmigrated, API,
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) "
        "VALUES ('f' || md5('x'), '9999_from_the_future', now())",
    )
    for action in (migrate.check_schema, migrate.migrate_database):
        with pytest.raises(SchemaError) as err:
            action(api)
        message = one_line_without_password(str(err.value))
        assert "'api'" in message and "newer than this code" in message and "9999_from_the_future" in message


def run_cli(monkeypatch, tmp_path, capsys, argv, env):
    monkeypatch.chdir(tmp_path)  # no reqspec.toml, no embedded server dir
    import os

    for key in list(os.environ):
        if key.startswith("REQSPEC_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_configuration_errors_are_one_line_exit_2(monkeypatch, tmp_path, capsys, unmigrated):
    api_dsn = unmigrated.api.dsn
    unreachable = f"postgresql://reqspec:{PASSWORD}@127.0.0.1:{closed_port()}/nova"
    cases = [
        (["show", str(uuid.uuid4()), "--database", "cell9"], {"REQSPEC_API_DSN": api_dsn}, "unknown cell 'cell9'"),
        (["list"], {"REQSPEC_API_DSN": f"host=db password={PASSWORD} dbname"}, "malformed DSN"),
        (["list", "--database", "cell1"],
         {"REQSPEC_API_DSN": api_dsn, "REQSPEC_CELL_CELL1_DSN": unreachable, "REQSPEC_CONNECT_TIMEOUT_S": "1"},
         "'cell1' is unavailable"),
        (["show", str(uuid.uuid4())], {"REQSPEC_API_DSN": api_dsn}, "run `reqspec migrate` first"),
        (["show", "not-a-uuid"], {"REQSPEC_API_DSN": api_dsn}, "not a uuid"),
    ]
    for argv, env, expected in cases:
        code, out, err = run_cli(monkeypatch, tmp_path, capsys, argv, env)
        assert code == 2, (argv, out, err)
        line = one_line_without_password(err)
        assert line.startswith("reqspec: error:") and expected in line, line
        assert PASSWORD not in out
    # a schema newer than the code: migrate refuses, naming the database
    migrate.migrate_database(unmigrated.api)
    run_sql(
        unmigrated, API,
        "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) VALUES ('h', '9999_future', now())",
    )
    code, out, err = run_cli(monkeypatch, tmp_path, capsys, ["migrate"], {"REQSPEC_API_DSN": api_dsn})
    assert code == 2
    line = one_line_without_password(err)
    assert "'api'" in line and "newer than this code" in line
    assert PASSWORD not in out
