"""Whole-database moves: uuids read in keyset pages, nothing decoded, every spec moved or
reported (library entry point and ``reqspec move --from``)."""

from __future__ import annotations

import json
import uuid

import pytest
from helpers import run_sql
from movecheck import assert_invariant

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._cli.main import main
from reqspec_repo._errors import LocationNotFoundError, MoveError, SpecDecodeError
from reqspec_repo._moving.moves import move_database
from reqspec_repo._store.config import API
from reqspec_repo._store.context import RequestContext
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository

UNDECODABLE = '{"instance_uuid": "not a spec", "flavor": 7}'


@pytest.fixture
def streaming_store(split_topology):
    with RequestSpecRepository.from_topology(split_topology) as repo:
        yield SpecStore(repo)


def booted_in(streaming_store: SpecStore, database: str, n: int) -> dict[str, object]:
    specs = [sample_spec() for _ in range(n)]
    streaming_store.create(specs, database=database)
    return {s.instance_uuid: s for s in specs}


def spoil(streaming_store: SpecStore, database: str, key: str) -> None:
    """Make one stored document undecodable (as a bad import or a manual edit could)."""
    run_sql(streaming_store.topology, database, "UPDATE request_specs SET spec = %s::jsonb WHERE instance_uuid = %s",
            [UNDECODABLE, key])
    with pytest.raises(SpecDecodeError):
        streaming_store.repo.get(RequestContext(database), key)


def test_keyset_pages_cover_every_row_once_in_uuid_order(streaming_store):
    specs = booted_in(streaming_store, "cell1", 11)
    pages = list(streaming_store.instance_uuid_pages("cell1", page_size=4))
    assert [len(p) for p in pages] == [4, 4, 3]
    flat = [u for p in pages for u in p]
    assert flat == sorted(specs) and streaming_store.count_in("cell1") == 11


def test_keyset_walks_include_the_lowest_and_highest_uuids(streaming_store):
    # A walk that started "after" the nil uuid skipped that spec: a whole-database move
    # left it behind without a word, and a listing never showed it.
    import attrs

    edges = ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]
    others = booted_in(streaming_store, API, 3)
    streaming_store.create([attrs.evolve(sample_spec(), instance_uuid=k) for k in edges])
    pages = list(streaming_store.instance_uuid_pages(API, page_size=2))
    assert [u for p in pages for u in p] == sorted([*edges, *others])
    listed, after = [], None
    while True:
        page = streaming_store.repo.list_page(RequestContext(API), after=after, limit=2)
        listed += [row.instance_uuid for row in page]
        if len(page) < 2:
            break
        after = page[-1].instance_uuid
    assert listed == sorted([*edges, *others])
    assert streaming_store.repo.list_page(RequestContext(API), after=edges[1]) == []
    summary = move_database(streaming_store, API, "cell1", page_size=2, chunk_size=2)
    assert summary.ok and summary.moved == 5
    assert {streaming_store.location(k).database for k in [*edges, *others]} == {"cell1"}
    assert streaming_store.count_in(API) == 0


def test_streamed_move_carries_undecodable_specs_and_reports_what_cannot_move(streaming_store):
    specs = booted_in(streaming_store, "cell1", 9)
    keys = sorted(specs)
    bad = keys[4]
    spoil(streaming_store, "cell1", bad)
    # A spec row in cell1 without a location record, and one whose location names cell2.
    orphan = sample_spec()
    streaming_store.repo.create(RequestContext("cell1"), orphan)
    elsewhere = sample_spec()
    streaming_store.create(elsewhere, database="cell2")
    stray = run_sql(streaming_store.topology, "cell2", "SELECT spec::text FROM request_specs WHERE instance_uuid = %s",
                    [elsewhere.instance_uuid])[0][0]
    run_sql(streaming_store.topology, "cell1",
            "INSERT INTO request_specs (instance_uuid, spec, schema_version) VALUES (%s, %s::jsonb, 2)",
            [elsewhere.instance_uuid, stray])

    ticks: list[int] = []
    summary = move_database(streaming_store, "cell1", "cell2", chunk_size=2, page_size=3, progress=ticks.append)

    assert summary.moved == 9 and sum(ticks) >= 9
    assert set(summary.failed) == {orphan.instance_uuid, elsewhere.instance_uuid}
    assert isinstance(summary.failed[orphan.instance_uuid], LocationNotFoundError)
    assert isinstance(summary.failed[elsewhere.instance_uuid], MoveError)
    # The undecodable document moved byte for byte, and its location followed it.
    [(doc, state)] = run_sql(streaming_store.topology, "cell2", "SELECT spec::text, move_state FROM request_specs"
                             " WHERE instance_uuid = %s", [bad])
    assert json.loads(doc) == json.loads(UNDECODABLE) and state == "live"
    assert run_sql(streaming_store.topology, "cell1", "SELECT count(*) FROM request_specs WHERE instance_uuid = %s",
                   [bad]) == [(0,)]
    assert streaming_store.location(bad).database == "cell2"
    del specs[bad]
    assert {streaming_store.location(k).database for k in specs} == {"cell2"}
    for key in keys[:3]:
        assert streaming_store.get(key).database == "cell2"


def test_move_from_on_the_command_line_exits_1_when_a_spec_stays(streaming_store, monkeypatch, tmp_path, capsys):
    topology = streaming_store.topology
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REQSPEC_CONFIG", raising=False)
    monkeypatch.setenv("REQSPEC_API_DSN", topology.api.dsn)
    for name, db in topology.cells.items():
        monkeypatch.setenv(f"REQSPEC_CELL_{name.upper()}_DSN", db.dsn)
    specs = booted_in(streaming_store, API, 5)
    spoil(streaming_store, API, next(iter(specs)))

    code = main(["move", "--from", API, "--to", "cell1", "--chunk-size", "2", "--json"])
    out, _ = capsys.readouterr()
    summary = json.loads(out)
    assert code == 0 and summary["moved"] == 5 and summary["failed"] == {}
    assert summary["source"] == API and summary["target"] == "cell1" and summary["seconds"] >= 0

    orphan = sample_spec()
    streaming_store.repo.create(RequestContext("cell1"), orphan)
    code = main(["move", "--from", "cell1", "--to", "cell2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "moved 5 spec(s) from 'cell1' to 'cell2', 1 failed" in out
    assert orphan.instance_uuid in err
    assert main(["move", "--from", "cell1", "--to", "cell2", str(uuid.uuid4())]) == 2


def test_streamed_move_keeps_the_invariant_for_decodable_specs(streaming_store):
    specs = booted_in(streaming_store, API, 7)
    summary = move_database(streaming_store, API, "cell1", chunk_size=3, page_size=2)
    assert summary.ok and summary.moved == 7
    assert_invariant(streaming_store, specs)
