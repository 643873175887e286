"""Import of Nova request_specs rows, against fixtures produced by the real nova package
(tests/fixtures/nova/generate.py, not run here)."""

from __future__ import annotations

import copy
import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import run_sql

from reqspec_repo._moving.recovery import verify
from reqspec_repo._nova.importing import NovaImportError, convert_spec, import_file, read_rows
from reqspec_repo._store.config import API
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository

FIXTURES = Path(__file__).parent / "fixtures" / "nova"
KINDS = ("plain", "server_group", "numa", "pci", "legacy_per_operation")


def rows_of(kind: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / f"{kind}.jsonl").read_text().splitlines()]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def all_rows() -> list[dict]:
    return [r for kind in KINDS for r in rows_of(kind)]


@pytest.fixture
def store(fresh_topology):
    with RequestSpecRepository.from_topology(fresh_topology()) as repo:
        yield SpecStore(repo)


def spec_column(row: dict) -> dict:
    return json.loads(row["spec"])


def test_fixture_kinds_convert_field_by_field():
    (plain,) = rows_of("plain")
    spec = convert_spec(plain["spec"], plain["instance_uuid"])
    assert spec.instance_uuid == "6f1c2b4e-0000-4000-8000-000000000001"
    assert (spec.flavor.name, spec.flavor.vcpus, spec.flavor.memory_mb, spec.flavor.rxtx_factor) == ("m1.medium", 2, 4096, 1.5)
    assert spec.flavor.extra_specs == {"hw:cpu_policy": "shared", "trait:CUSTOM_SSD": "required"}
    assert spec.image is not None and spec.image.id == "0b6a2c4e-1111-4a3b-9c5d-7e8f90a1b2c3"
    assert spec.image.created_at == datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    assert spec.image.properties["hw_scsi_model"] == "virtio-scsi"
    assert spec.image.properties["hw_vif_multiqueue_enabled"] is True
    assert spec.limits.vcpu == 16 and spec.limits.memory_mb == 65536 and spec.limits.disk_gb is None
    assert spec.scheduler_hints["build_near_host_ip"] == ("10.0.0.1",)
    assert spec.security_groups == ("default", "web")
    assert spec.force_hosts == ("compute-7",) and spec.force_nodes == ("compute-7.example.org",)
    assert spec.availability_zone == "az1" and spec.is_bfv is False

    group_rows = rows_of("server_group")
    specs = [convert_spec(r["spec"], r["instance_uuid"]) for r in group_rows]
    assert {s.num_instances for s in specs} == {3}
    ref = specs[0].instance_group
    assert ref is not None and (ref.uuid, ref.name, ref.policy) == ("a1b2c3d4-0000-4000-8000-00000000abcd", "web", "anti-affinity")
    assert ref.rules == {"max_server_per_host": "1"}
    assert not hasattr(ref, "members")

    (numa,) = rows_of("numa")
    topo = convert_spec(numa["spec"], numa["instance_uuid"]).numa_topology
    assert topo is not None and [c.id for c in topo.cells] == [0, 1]
    assert topo.cells[1].pcpuset == frozenset({2, 3}) and topo.cells[1].cpuset == frozenset()
    assert (topo.cells[0].memory, topo.cells[0].pagesize, topo.cells[0].cpu_policy) == (2048, 2048, "dedicated")

    (pci,) = rows_of("pci")
    requests = convert_spec(pci["spec"], pci["instance_uuid"]).pci_requests
    assert [(r.alias_name, r.count) for r in requests] == [("nic-vf", 2), ("gpu", 1)]
    assert requests[0].spec == ({"vendor_id": "8086", "product_id": "1520"},)
    assert requests[0].request_id == "c0ffee00-0000-4000-8000-000000000001" and requests[0].numa_policy == "preferred"

    # per-operation fields that older releases persisted are dropped on the way in
    (legacy,) = rows_of("legacy_per_operation")
    assert spec_column(legacy)["nova_object.data"]["retry"] is not None
    spec = convert_spec(legacy["spec"], legacy["instance_uuid"])
    assert spec.retry is None and spec.ignore_hosts == () and spec.requested_destination is None


def test_import_lands_every_kind_with_locations_then_rerun_is_idempotent(store, tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", all_rows())
    report = import_file(store, path)
    assert report.ok and report.imported == 7 and report.skipped == 0
    for row in all_rows():
        assert store.location(row["instance_uuid"]).database == API
        assert store.get(row["instance_uuid"]).spec == convert_spec(row["spec"], row["instance_uuid"])
    again = import_file(store, path)
    assert again.ok and again.imported == 0 and again.skipped == 7
    assert all("already present in 'api'" in (r.reason or "") for r in again.rows)
    assert verify(store).ok


def test_import_into_a_cell_and_already_moved_specs_are_skipped(store, tmp_path):
    path = write_jsonl(tmp_path / "pci.jsonl", rows_of("pci") + rows_of("numa"))
    report = import_file(store, path, database="cell1")
    assert report.imported == 2
    assert {store.location(r["instance_uuid"]).database for r in rows_of("pci") + rows_of("numa")} == {"cell1"}
    # importing the same rows into the API database later: found where they are
    later = import_file(store, path)
    assert later.skipped == 2 and "cell1" in (later.rows[0].reason or "")


def _with(row: dict, mutate) -> dict:
    doc = copy.deepcopy(spec_column(row))
    mutate(doc)
    return {"instance_uuid": row["instance_uuid"], "spec": json.dumps(doc)}


def test_bad_rows_are_rejected_one_by_one_while_valid_ones_land(store, tmp_path):
    (plain,) = rows_of("plain")
    (numa,) = rows_of("numa")
    (pci,) = rows_of("pci")
    group = rows_of("server_group")

    def v2(doc):
        doc["nova_object.version"] = "2.0"

    def flavor_v2(doc):
        doc["nova_object.data"]["flavor"]["nova_object.version"] = "2.1"

    def vcpus_text(doc):
        doc["nova_object.data"]["flavor"]["nova_object.data"]["vcpus"] = "two"

    def hints_not_lists(doc):
        doc["nova_object.data"]["scheduler_hints"] = {"group": "x"}

    lines = [
        plain,                                                                  # 1 ok
        '{"instance_uuid": "6f1c2b4e-0000-4000-8000-0000000000aa", "spec": ',  # 2 invalid JSON line
        {"instance_uuid": numa["instance_uuid"], "spec": "{not json"},          # 3 invalid spec JSON
        _with(numa, v2),                                                        # 4 unknown version
        {"spec": pci["spec"]},                                                  # 5 missing uuid
        {"instance_uuid": group[0]["instance_uuid"], "spec": pci["spec"]},      # 6 uuid mismatch
        _with(pci, vcpus_text),                                                 # 7 wrong type
        _with(group[1], flavor_v2),                                             # 8 unknown nested version
        _with(group[2], hints_not_lists),                                       # 9 wrong type
        pci,                                                                    # 10 ok
        plain,                                                                  # 11 duplicate
    ]
    report = import_file(store, write_jsonl(tmp_path / "mixed.jsonl", lines))
    by_line = {r.line: r for r in report.rows}
    assert [by_line[n].status for n in range(1, 12)] == [
        "imported", "rejected", "rejected", "rejected", "rejected", "rejected",
        "rejected", "rejected", "rejected", "imported", "rejected",
    ]
    reasons = {n: by_line[n].reason or "" for n in range(1, 12)}
    assert "not valid JSON" in reasons[2] and "not valid JSON" in reasons[3]
    assert "unknown version: RequestSpec 2.0" in reasons[4]
    assert "instance_uuid: missing" in reasons[5]
    assert "mismatch" in reasons[6]
    assert "flavor.vcpus" in reasons[7] and "integer" in reasons[7]
    assert reasons[8].startswith("flavor: unknown version: Flavor 2.1")
    assert "scheduler_hints.group" in reasons[9]
    assert "duplicate" in reasons[11]
    assert not report.ok and report.imported == 2 and report.rejected == 9
    assert store.get(plain["instance_uuid"]).spec.flavor.name == "m1.medium"
    assert store.get(pci["instance_uuid"]).spec.pci_requests
    assert sorted(store.locations([r["instance_uuid"] for r in [plain, numa, pci, *group]])) == sorted(
        [plain["instance_uuid"], pci["instance_uuid"]]
    )


def test_dry_run_writes_nothing(store, tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", all_rows())
    report = import_file(store, path, dry_run=True)
    assert report.imported == 7 and {r.status for r in report.rows} == {"would_import"}
    for name in store.topology.database_names:
        assert run_sql(store.topology, name, "SELECT count(*) FROM request_specs") == [(0,)]
    assert run_sql(store.topology, API, "SELECT count(*) FROM spec_locations") == [(0,)]


def test_csv_input(store, tmp_path):
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["instance_uuid", "spec"])
        writer.writeheader()
        for row in rows_of("server_group"):
            writer.writerow(row)
        writer.writerow({"instance_uuid": "6f1c2b4e-0000-4000-8000-0000000000bb", "spec": "nope"})
    report = import_file(store, path)
    assert report.imported == 3 and report.rejected == 1
    assert report.rows[-1].line == 5 and "not valid JSON" in (report.rows[-1].reason or "")
    for row in rows_of("server_group"):
        assert store.get(row["instance_uuid"]).spec.num_instances == 3

    bad = tmp_path / "bad.csv"
    bad.write_text("uuid,document\nx,y\n")
    with pytest.raises(NovaImportError, match="columns"):
        list(read_rows(bad))


def test_a_spec_row_without_location_is_reported_and_the_batch_still_lands(store, tmp_path):
    from reqspec_repo._store.context import RequestContext

    (plain,) = rows_of("plain")
    (numa,) = rows_of("numa")
    # a create that crashed before its location was written (recover() would adopt it)
    store.repo.create(RequestContext(API), convert_spec(numa["spec"], numa["instance_uuid"]))
    report = import_file(store, write_jsonl(tmp_path / "two.jsonl", [plain, numa]))
    statuses = {r.instance_uuid: (r.status, r.reason or "") for r in report.rows}
    assert statuses[plain["instance_uuid"]] == ("imported", "")
    status, reason = statuses[numa["instance_uuid"]]
    assert status == "rejected" and "recover" in reason
    assert store.location(plain["instance_uuid"]).database == API
