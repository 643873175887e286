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
from reqspec_repo._nova.exporting import export_specs, nova_row, nova_spec
from reqspec_repo._nova.importing import NovaImportError, convert_row, convert_spec, import_file, read_rows
from reqspec_repo._spec import codec
from reqspec_repo._spec.model import MEMPAGES_ANY, MEMPAGES_LARGE, MEMPAGES_SMALL
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
def nova_store(fresh_topology):
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
    # hw:mem_page_size=large: Nova stores the class, not a size
    assert (topo.cells[0].memory, topo.cells[0].pagesize, topo.cells[0].cpu_policy) == (2048, MEMPAGES_LARGE, "dedicated")

    (pci,) = rows_of("pci")
    requests = convert_spec(pci["spec"], pci["instance_uuid"]).pci_requests
    assert [(r.alias_name, r.count) for r in requests] == [("gpu", 2), ("nic-vf", 1)]
    assert requests[0].spec == ({"vendor_id": "10de", "product_id": "1eb8", "dev_type": "type-PCI"},)
    assert requests[0].request_id == "c0ffee00-0000-4000-8000-000000000001" and requests[0].numa_policy == "preferred"
    assert requests[1].numa_policy == "required"

    # per-operation fields that older releases persisted are dropped on the way in
    (legacy,) = rows_of("legacy_per_operation")
    assert spec_column(legacy)["nova_object.data"]["retry"] is not None
    spec = convert_spec(legacy["spec"], legacy["instance_uuid"])
    assert spec.retry is None and spec.ignore_hosts == () and spec.requested_destination is None


def test_import_lands_every_kind_with_locations_then_rerun_is_idempotent(nova_store, tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", all_rows())
    report = import_file(nova_store, path)
    assert report.ok and report.imported == 7 and report.skipped == 0
    for row in all_rows():
        assert nova_store.location(row["instance_uuid"]).database == API
        assert nova_store.get(row["instance_uuid"]).spec == convert_spec(row["spec"], row["instance_uuid"])
    again = import_file(nova_store, path)
    assert again.ok and again.imported == 0 and again.skipped == 7
    assert all("already present in 'api'" in (r.reason or "") for r in again.rows)
    assert verify(nova_store).ok


def test_import_into_a_cell_and_already_moved_specs_are_skipped(nova_store, tmp_path):
    path = write_jsonl(tmp_path / "pci.jsonl", rows_of("pci") + rows_of("numa"))
    report = import_file(nova_store, path, database="cell1")
    assert report.imported == 2
    assert {nova_store.location(r["instance_uuid"]).database for r in rows_of("pci") + rows_of("numa")} == {"cell1"}
    # importing the same rows into the API database later: found where they are
    later = import_file(nova_store, path)
    assert later.skipped == 2 and "cell1" in (later.rows[0].reason or "")


def _with(row: dict, mutate) -> dict:
    doc = copy.deepcopy(spec_column(row))
    mutate(doc)
    return {"instance_uuid": row["instance_uuid"], "spec": json.dumps(doc)}


def test_bad_rows_are_rejected_one_by_one_while_valid_ones_land(nova_store, tmp_path):
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
        {"instance_uuid": group[0]["instance_uuid"], "spec": pci["spec"]},      # 6 uuid mismatch: column wins
        _with(pci, vcpus_text),                                                 # 7 wrong type
        _with(group[1], flavor_v2),                                             # 8 unknown nested version
        _with(group[2], hints_not_lists),                                       # 9 wrong type
        pci,                                                                    # 10 ok
        plain,                                                                  # 11 duplicate
    ]
    report = import_file(nova_store, write_jsonl(tmp_path / "mixed.jsonl", lines))
    by_line = {r.line: r for r in report.rows}
    assert [by_line[n].status for n in range(1, 12)] == [
        "imported", "rejected", "rejected", "rejected", "rejected", "imported",
        "rejected", "rejected", "rejected", "imported", "rejected",
    ]
    reasons = {n: by_line[n].reason or "" for n in range(1, 12)}
    assert "not valid JSON" in reasons[2] and "not valid JSON" in reasons[3]
    assert "unknown version: RequestSpec 2.0" in reasons[4]
    assert "instance_uuid: missing" in reasons[5]
    assert any("the row's column" in c for c in by_line[6].changes)
    assert "flavor.vcpus" in reasons[7] and "integer" in reasons[7]
    assert reasons[8].startswith("flavor: unknown version: Flavor 2.1")
    assert "scheduler_hints.group" in reasons[9]
    assert "duplicate" in reasons[11]
    assert not report.ok and report.imported == 3 and report.rejected == 8
    assert nova_store.get(plain["instance_uuid"]).spec.flavor.name == "m1.medium"
    assert nova_store.get(pci["instance_uuid"]).spec.pci_requests
    assert sorted(nova_store.locations([r["instance_uuid"] for r in [plain, numa, pci, *group]])) == sorted(
        [plain["instance_uuid"], pci["instance_uuid"], group[0]["instance_uuid"]]
    )


def test_dry_run_writes_nothing(nova_store, tmp_path):
    path = write_jsonl(tmp_path / "all.jsonl", all_rows())
    report = import_file(nova_store, path, dry_run=True)
    assert report.imported == 7 and {r.status for r in report.rows} == {"would_import"}
    for name in nova_store.topology.database_names:
        assert run_sql(nova_store.topology, name, "SELECT count(*) FROM request_specs") == [(0,)]
    assert run_sql(nova_store.topology, API, "SELECT count(*) FROM spec_locations") == [(0,)]


def test_csv_input(nova_store, tmp_path):
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["instance_uuid", "spec"])
        writer.writeheader()
        for row in rows_of("server_group"):
            writer.writerow(row)
        writer.writerow({"instance_uuid": "6f1c2b4e-0000-4000-8000-0000000000bb", "spec": "nope"})
    report = import_file(nova_store, path)
    assert report.imported == 3 and report.rejected == 1
    assert report.rows[-1].line == 5 and "not valid JSON" in (report.rows[-1].reason or "")
    for row in rows_of("server_group"):
        assert nova_store.get(row["instance_uuid"]).spec.num_instances == 3

    bad = tmp_path / "bad.csv"
    bad.write_text("uuid,document\nx,y\n")
    with pytest.raises(NovaImportError, match="columns"):
        list(read_rows(bad))


def test_a_spec_row_without_location_is_reported_and_the_batch_still_lands(nova_store, tmp_path):
    from reqspec_repo._store.context import RequestContext

    (plain,) = rows_of("plain")
    (numa,) = rows_of("numa")
    # a create that crashed before its location was written (recover() would adopt it)
    nova_store.repo.create(RequestContext(API), convert_spec(numa["spec"], numa["instance_uuid"]))
    report = import_file(nova_store, write_jsonl(tmp_path / "two.jsonl", [plain, numa]))
    statuses = {r.instance_uuid: (r.status, r.reason or "") for r in report.rows}
    assert statuses[plain["instance_uuid"]] == ("imported", "")
    status, reason = statuses[numa["instance_uuid"]]
    assert status == "rejected" and "recover" in reason
    assert nova_store.location(plain["instance_uuid"]).database == API


# --- Nova's rules, one test each, on rows Nova 34 built (tests/fixtures/nova/cases.jsonl) ---


def case(name: str) -> dict:
    for line in (FIXTURES / "cases.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["case"] == name:
            return row
    raise KeyError(name)


def converted(name: str):
    row = case(name)
    return convert_row(row["spec"], row["instance_uuid"])


def all_cases() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "cases.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("name", "pagesize"),
    [("pages_small", MEMPAGES_SMALL), ("pages_large", MEMPAGES_LARGE), ("pages_any", MEMPAGES_ANY),
     ("pages_2MB", 2048), ("pages_1GB", 1048576)],
)
def test_hw_mem_page_size_classes_are_kept_as_novas_mempages_sentinels(name, pagesize):
    spec, notes = converted(name)
    assert spec.numa_topology is not None
    assert [c.pagesize for c in spec.numa_topology.cells] == [pagesize]
    assert codec.decode(codec.encode(spec)) == spec


@pytest.mark.parametrize("policy", ["isolate", "require", "prefer"])
def test_hw_cpu_thread_policy_is_kept_on_every_cell(policy):
    spec, _ = converted(f"thread_{policy}")
    cells = spec.numa_topology.cells
    assert cells and all(c.cpu_thread_policy == policy and c.cpu_policy == "dedicated" for c in cells)
    assert all(c.pcpuset and not c.cpuset for c in cells)


@pytest.mark.parametrize("policy", ["isolate", "share"])
def test_hw_emulator_threads_policy_is_kept_on_the_topology(policy):
    spec, _ = converted(f"emulator_{policy}")
    assert spec.numa_topology.emulator_threads_policy == policy


def test_mixed_cpu_policy_keeps_shared_cpuset_and_dedicated_pcpuset():
    spec, _ = converted("mixed_policy")
    (cell,) = spec.numa_topology.cells
    assert cell.cpu_policy == "mixed"
    assert (cell.cpuset, cell.pcpuset) == (frozenset({0, 1}), frozenset({2, 3}))  # ^0-1 dedicated


def test_cpu_topology_extra_specs_keep_asymmetric_numa_cells_and_flavor_limits():
    spec, _ = converted("cpu_topology_extra_specs")
    cells = spec.numa_topology.cells
    assert [(sorted(c.cpuset), c.memory) for c in cells] == [([0, 1, 2, 3], 2048), ([4, 5, 6, 7], 6144)]
    assert spec.flavor.extra_specs["hw:cpu_max_sockets"] == "4"


def test_numa_fit_instance_to_host_pinning_cpu_topology_and_reserved_cpus_are_kept():
    spec, _ = converted("claimed_topology")
    (cell,) = spec.numa_topology.cells
    assert cell.cpu_pinning_raw and cell.cpuset_reserved
    assert cell.cpu_thread_policy == "prefer" and spec.numa_topology.emulator_threads_policy == "isolate"
    assert codec.decode(codec.encode(spec)) == spec


def test_sriov_port_requests_keep_requester_port_and_null_physnet_of_tunneled_network():
    spec, _ = converted("sriov_ports")
    requests = spec.pci_requests
    ports = [f"6f1c2b4e-0000-4000-8000-{n:012d}" for n in (501, 502, 503)]
    assert [r.requester_id for r in requests] == ports
    assert requests[0].spec[0]["physical_network"] == "physnet1"
    assert requests[1].spec[0]["physical_network"] is None  # vxlan: Nova writes None
    assert requests[2].numa_policy == "required"  # the port's own NUMA affinity policy
    assert codec.decode(codec.encode(spec)) == spec


def test_scheduler_limits_keep_numa_topology_limits_with_network_metadata():
    spec, _ = converted("numa_limits")
    numa = spec.limits.numa_topology
    assert (numa.cpu_allocation_ratio, numa.ram_allocation_ratio) == (16.0, 1.5)
    assert numa.network_metadata.physnets == frozenset({"physnet1", "physnet2"})
    assert numa.network_metadata.tunneled is True
    assert (spec.limits.vcpu, spec.limits.disk_gb, spec.limits.memory_mb) == (32, 500, 16384)


def test_lp1952941_pre_victoria_pinned_cells_get_pcpuset():
    row = case("pre_victoria_pinned")
    cell = json.loads(row["spec"])["nova_object.data"]["numa_topology"]["nova_object.data"]["cells"][0]
    assert cell["nova_object.version"] == "1.4" and cell["nova_object.data"]["cpuset"] == [0, 1]
    spec, notes = converted("pre_victoria_pinned")
    (converted_cell,) = spec.numa_topology.cells
    assert (converted_cell.cpuset, converted_cell.pcpuset) == (frozenset(), frozenset({0, 1}))
    assert any("pcpuset" in c and "moved from cpuset" in c for c in notes.changes)


def test_newton_online_migration_null_project_and_user_stay_unknown_until_healed():
    spec, notes = converted("null_project_user")
    assert spec.project_id is None and spec.user_id is None
    assert sum("ensure_project_and_user_id" in c for c in notes.changes) == 2
    back = codec.decode(codec.encode(spec))
    assert back.project_id is None and back.user_id is None
    assert "project_id" not in nova_spec(spec)["nova_object.data"]  # still "not set" for Nova


def test_lp1469179_spec_before_1_11_has_unknown_is_bfv():
    spec, notes = converted("before_1_11")
    assert spec.is_bfv is None  # not False: Nova heals it from the instance
    assert any(c.startswith("is_bfv: unknown") for c in notes.changes)
    assert "is_bfv" not in nova_spec(spec)["nova_object.data"]
    assert converted("null_project_user")[0].is_bfv is True


def test_spec_before_1_9_has_unknown_user_id_not_an_empty_string():
    spec, _ = converted("before_1_9")
    assert spec.user_id is None and spec.project_id == "8f2c0e1b6a7d4c3e9b5a1f0d2e4c6a8b"


def test_lp1830747_group_without_uuid_takes_it_from_the_group_hint():
    row = case("group_without_uuid")
    group = json.loads(row["spec"])["nova_object.data"]["instance_group"]["nova_object.data"]
    assert "uuid" not in group
    spec, notes = converted("group_without_uuid")
    assert spec.instance_group.uuid == "a1b2c3d4-0000-4000-8000-00000000abcd"
    assert spec.instance_group.policy == "anti-affinity"
    assert any("'group' scheduler hint" in c for c in notes.changes)


def test_group_without_uuid_or_group_hint_is_rejected_with_the_reason(nova_store, tmp_path):
    def no_hint(doc):
        doc["nova_object.data"]["scheduler_hints"] = {}

    report = import_file(nova_store, write_jsonl(tmp_path / "g.jsonl", [_with(case("group_without_uuid"), no_hint)]))
    (row,) = report.rows
    assert row.status == "rejected" and "instance_group.uuid" in row.reason and "hint" in row.reason


def test_nova_check_type_rebuild_hint_is_never_kept():
    spec, notes = converted("nova_check_type")
    assert "_nova_check_type" not in spec.scheduler_hints and spec.scheduler_hints["group"]
    assert any("_nova_check_type" in c for c in notes.changes)


def test_per_operation_fields_of_older_releases_are_dropped_and_named():
    spec, notes = converted("legacy_per_operation")
    dropped = {c.split(":")[0] for c in notes.changes if c.startswith("dropped")}
    assert {"dropped retry", "dropped ignore_hosts", "dropped requested_destination"} <= dropped
    assert spec.retry is None and spec.ignore_hosts == () and spec.requested_destination is None


def test_from_db_object_row_column_instance_uuid_wins():
    row = case("column_uuid_differs")
    assert json.loads(row["spec"])["nova_object.data"]["instance_uuid"] != row["instance_uuid"]
    spec, notes = converted("column_uuid_differs")
    assert spec.instance_uuid == row["instance_uuid"]
    assert any(c.startswith("repaired instance_uuid") for c in notes.changes)


def test_rich_private_flavor_and_image_are_kept_field_for_field():
    spec, notes = converted("rich_flavor_image")
    f, i = spec.flavor, spec.image
    assert f.is_public is False and f.projects == ("8f2c0e1b6a7d4c3e9b5a1f0d2e4c6a8b", "5d9e3c1a7b2f4e6d8c0a2b4d6f8e0a1c")
    assert (f.id, f.description, f.rxtx_factor, f.vcpu_weight) == (7, "a private flavor with traits and resources", 2.0, 10)
    assert f.extra_specs["resources1:CUSTOM_FPGA"] == "1" and f.extra_specs["trait:CUSTOM_NO_GPU"] == "forbidden"
    assert (i.visibility, i.protected, i.tags) == ("public", False, ("base",))
    assert i.properties["hw_machine_type"] == "q35" and i.properties["traits_required"] == ["CUSTOM_TRUSTED"]  # Nova's form of trait:X=required
    assert notes.changes == [] and codec.decode(codec.encode(spec)) == spec


def test_every_case_exports_to_the_same_spec_and_current_rows_export_byte_stable():
    for row in all_cases():
        spec, _ = convert_row(row["spec"], row["instance_uuid"])
        again, notes = convert_row(nova_row(spec)["spec"], spec.instance_uuid)
        assert again == spec, row["case"]
        assert notes.changes == [c for c in notes.changes if c.startswith(("is_bfv", "project_id", "user_id"))]
        assert nova_row(again) == nova_row(spec)


def test_fields_of_a_newer_nova_are_kept_verbatim_named_and_exported(nova_store, tmp_path):
    def newer(doc):
        doc["nova_object.version"] = "1.16"
        doc["nova_object.data"]["shiny_new_field"] = {"a": [1, None]}
        flavor = doc["nova_object.data"]["flavor"]
        flavor["nova_object.version"] = "1.3"
        flavor["nova_object.data"]["gpu_quota"] = 4

    row = _with(case("plain"), newer)
    report = import_file(nova_store, write_jsonl(tmp_path / "newer.jsonl", [row]))
    (result,) = report.rows
    assert result.status == "imported" and result.kept_unknown_fields
    assert report.as_dict()["with_unknown_fields"] == [row["instance_uuid"]]
    assert any("gpu_quota of Flavor 1.3" in c for c in result.changes)
    stored = nova_store.get(row["instance_uuid"]).spec
    assert stored.unknown_nova_fields == {"": {"shiny_new_field": {"a": [1, None]}}, "flavor": {"gpu_quota": 4}}
    (exported,) = export_specs(nova_store, [row["instance_uuid"]])
    data = json.loads(exported["spec"])["nova_object.data"]
    assert data["shiny_new_field"] == {"a": [1, None]} and data["flavor"]["nova_object.data"]["gpu_quota"] == 4


def test_import_report_json_names_each_change_per_row(nova_store, tmp_path):
    rows = [case("pre_victoria_pinned"), case("nova_check_type"), case("plain")]
    report = import_file(nova_store, write_jsonl(tmp_path / "r.jsonl", rows)).as_dict()
    by_uuid = {r["instance_uuid"]: r["changes"] for r in report["rows"]}
    assert any("pcpuset" in c for c in by_uuid[rows[0]["instance_uuid"]])
    assert any("_nova_check_type" in c for c in by_uuid[rows[1]["instance_uuid"]])
    assert by_uuid[rows[2]["instance_uuid"]] == []
    assert report["changed"] == 2


def test_export_nova_cli_writes_rows_of_every_database_or_the_given_ones(nova_store, tmp_path, capsys):
    from reqspec_repo._cli.main import cmd_export_nova

    rows = [case("sriov_ports"), case("claimed_topology")]
    import_file(nova_store, write_jsonl(tmp_path / "x.jsonl", rows))
    import argparse

    args = argparse.Namespace(instance_uuids=[], database=None, json=False)
    assert cmd_export_nova(args, nova_store.topology) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["instance_uuid"] for r in out) == sorted(r["instance_uuid"] for r in rows)
    for r in out:
        assert convert_spec(r["spec"], r["instance_uuid"]) == nova_store.get(r["instance_uuid"]).spec
    args = argparse.Namespace(instance_uuids=[rows[0]["instance_uuid"]], database="api", json=False)
    assert cmd_export_nova(args, nova_store.topology) == 0
    (only,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert only["instance_uuid"] == rows[0]["instance_uuid"]


def test_unknown_project_user_and_is_bfv_are_healed_from_the_instance_and_only_then():
    from reqspec_repo import heal_unknown

    spec, _ = converted("before_1_9")
    healed = heal_unknown(spec, project_id="other", user_id="u1", is_bfv=True)
    assert (healed.project_id, healed.user_id, healed.is_bfv) == (spec.project_id, "u1", True)
    assert heal_unknown(healed, user_id="u2", is_bfv=False) is healed  # known values stay
