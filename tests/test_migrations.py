"""Migrations on real databases: idempotent, reversible, safe when run concurrently, and the
`reqspec migrate` report."""

from __future__ import annotations

import threading

import pytest
from helpers import run_sql, spec_of_size

from reqspec_repo import RequestSpecRepository, cell_context
from reqspec_repo._cli import main as cli
from reqspec_repo._store.migrate import migrate_database, migrate_topology, rollback_database, schema_status
from reqspec_repo._store.resources import migrations_dir

N_MIGRATIONS = len([p for p in migrations_dir().glob("*.sql") if not p.name.endswith(".rollback.sql")])


def tables(topology, database):
    return {
        r[0]
        for r in run_sql(
            topology, database, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }


def test_apply_twice_is_a_no_op_and_every_database_gets_the_same_schema(fresh_topology):
    topo = fresh_topology(migrate=False)
    first = migrate_topology(topo)
    assert [r.database for r in first] == ["api", "cell1", "cell2"]
    assert all(r.applied == r.total >= 1 for r in first)
    second = migrate_topology(topo)
    assert all(r.applied == 0 for r in second)
    for name in topo.database_names:
        assert {"request_specs", "spec_locations"} <= tables(topo, name)


def test_rollback_files_undo_every_migration(fresh_topology):
    topo = fresh_topology()
    db = topo.database("cell1")
    applied = len(schema_status(db).applied)
    assert rollback_database(db) == applied >= 1
    assert not {"request_specs", "spec_locations"} & tables(topo, "cell1")
    assert schema_status(db).applied == []
    assert migrate_database(db).applied >= 1
    assert "request_specs" in tables(topo, "cell1")


def test_concurrent_migrate_runs_are_safe(fresh_topology):
    topo = fresh_topology(migrate=False)
    db = topo.database("api")
    results, errors = [], []
    barrier = threading.Barrier(4)

    def run():
        barrier.wait()
        try:
            results.append(migrate_database(db))
        except Exception as exc:  # noqa: BLE001 - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.applied for r in results) == results[0].total  # each migration applied once
    assert schema_status(db).pending == []


def test_cli_migrate_prints_one_line_per_database_with_masked_dsn(fresh_topology, monkeypatch, capsys):
    topo = fresh_topology(migrate=False)
    monkeypatch.setenv("REQSPEC_CONFIG", "/nonexistent/reqspec.toml")
    monkeypatch.setenv("REQSPEC_API_DSN", topo.api.dsn)
    for name, db in topo.cells.items():
        monkeypatch.setenv(f"REQSPEC_CELL_{name.upper()}_DSN", db.dsn)
    assert cli.main(["migrate"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("api") and f"applied {N_MIGRATIONS} " in lines[0]


def test_cli_migrate_names_the_failing_database_and_exits_non_zero(fresh_topology, monkeypatch, capsys):
    topo = fresh_topology(migrate=False)
    monkeypatch.setenv("REQSPEC_CONFIG", "/nonexistent/reqspec.toml")
    monkeypatch.setenv("REQSPEC_API_DSN", topo.api.dsn)
    monkeypatch.setenv("REQSPEC_CELL_CELL1_DSN", topo.cells["cell1"].dsn)
    monkeypatch.setenv(
        "REQSPEC_CELL_BROKEN_DSN", "postgresql://app:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"
    )
    code = cli.main(["migrate"])
    out = capsys.readouterr()
    assert code == 2
    assert "'broken'" in out.err and "s3cret-pw" not in out.err + out.out
    assert len(out.err.strip().splitlines()) == 1
    assert f"applied {N_MIGRATIONS} " in out.out  # the databases before it were migrated and reported


@pytest.mark.parametrize("dsn", ["not a dsn ===", "postgresql://user:pw@host:notaport/db"])
def test_malformed_dsn_is_a_config_error_naming_the_database(dsn):
    from reqspec_repo._errors import ConfigError
    from reqspec_repo._store.config import Topology

    with pytest.raises(ConfigError) as err:
        Topology.from_dsns("postgresql://h/api", {"cell9": dsn})
    assert "cell9" in str(err.value) and ":pw@" not in str(err.value)


def test_spec_documents_are_stored_uncompressed_and_read_back_whole(fresh_topology):
    # 0007_uncompressed_documents: pglz gains ~10 % on a real spec and was the largest
    # server-side cost of a write. Even a document that would compress to almost nothing
    # (6,000 bytes, mostly one letter) is stored as it is, and reads back equal.
    topo = fresh_topology()
    spec = spec_of_size(6_000)
    with RequestSpecRepository.from_topology(topo) as repo:
        repo.create(cell_context("cell1"), spec)
        assert repo.get(cell_context("cell1"), spec.instance_uuid).spec == spec
    [(stored, compression)] = run_sql(
        topo, "cell1", "SELECT pg_column_size(spec), pg_column_compression(spec) FROM request_specs"
    )
    assert stored >= 6_000 and compression is None


def test_move_leases_keep_only_their_primary_key_and_room_for_renewals(fresh_topology):
    # 0008_lean_move_leases: each extra index cost a write per claim and made the renewal
    # at a move's commit point a non-HOT update (expires_at was indexed); the table holds
    # only what is in flight, so recover()'s lists scan it. Half-free pages keep renewals
    # on their page.
    topo = fresh_topology()
    indexes = run_sql(topo, "api", "SELECT indexname FROM pg_indexes WHERE tablename = 'move_leases'")
    assert indexes == [("move_leases_pkey",)]
    [(options,)] = run_sql(topo, "api", "SELECT reloptions FROM pg_class WHERE oid = 'move_leases'::regclass")
    assert options == ["fillfactor=50"]


def test_request_specs_are_keyed_by_instance_uuid_and_0009_keeps_every_row(fresh_topology):
    # 0009_instance_uuid_primary_key: the row id's index cost a write per new row version
    # (a create, each state flip of a move); the instance uuid index, which verify reads
    # index-only, becomes the primary key. Rows stored before it survive it and its rollback.
    from reqspec_repo._store.migrate import _backend, _migrations

    topo = fresh_topology(migrate=False)
    db = topo.database("cell1")
    with _backend(db) as backend, backend.lock():
        backend.apply_migrations(backend.to_apply(_migrations().filter(lambda m: m.id < "0009")))
    specs = [spec_of_size(2_000 + i) for i in range(3)]
    with RequestSpecRepository.from_topology(topo) as repo:
        repo.create_many(cell_context("cell1"), specs)  # (the pool checks the schema only when asked)
    ids_before = run_sql(topo, "cell1", "SELECT instance_uuid::text FROM request_specs ORDER BY id")
    assert migrate_database(db).applied == 1
    indexes = dict(run_sql(topo, "cell1", "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'request_specs'"))
    assert set(indexes) == {"request_specs_pkey", "request_specs_in_move_idx"}
    assert "(instance_uuid) INCLUDE (move_state)" in indexes["request_specs_pkey"]
    columns = {r[0] for r in run_sql(topo, "cell1", "SELECT column_name FROM information_schema.columns"
                                                      " WHERE table_name = 'request_specs'")}
    assert "id" not in columns
    with RequestSpecRepository.from_topology(topo) as repo:
        for spec in specs:
            assert repo.get(cell_context("cell1"), spec.instance_uuid).spec == spec
    with _backend(db) as backend, backend.lock():
        backend.rollback_migrations(backend.to_rollback(_migrations().filter(lambda m: m.id.startswith("0009"))))
    assert sorted(run_sql(topo, "cell1", "SELECT instance_uuid::text FROM request_specs ORDER BY id")) == sorted(ids_before)
    assert migrate_database(db).applied == 1
