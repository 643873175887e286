"""The lifecycle rules, one regression test each (named for the Nova behaviour or bug it
follows), on separate API and cell servers.

Each test boots its own instances (fresh uuids) on one topology shared by the module,
and checks the rule both in the scheduler's view and in what is stored.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid

import attrs
import pytest
from helpers import build_topology, run_sql
from movecheck import expire_leases

from reqspec_repo._cli.demo import (
    NFV_LARGE,
    NFV_MEDIUM,
    NUMA_LARGE,
    NUMA_MEDIUM,
    child_env,
    pinned_guest,
    qat_request,
    sample_spec,
    start_resize_in_child,
)
from reqspec_repo._errors import ConflictError, LocationNotFoundError, ReqSpecError, SpecDecodeError
from reqspec_repo._moving.recovery import recover, verify
from reqspec_repo._nova.lifecycle import (
    ConstraintsRequiredError,
    CrossCellMoveError,
    InstanceGroup,
    Lifecycle,
    LifecycleError,
    NoOperationInFlightError,
    Operation,
    OperationInFlightError,
    RebuildNumaConflictError,
    UnhealedFieldError,
)
from reqspec_repo._spec.model import (
    Flavor,
    ImageMeta,
    NetworkMetadata,
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestedNetwork,
    RequestSpec,
)
from reqspec_repo._store.config import API
from reqspec_repo._store.locations import SpecStore
from reqspec_repo._store.repository import RequestSpecRepository, StoredSpec
from reqspec_repo.testing.failpoints import FailpointHit, armed

BIG = Flavor(flavorid="m1.large", name="m1.large", memory_mb=8192, vcpus=4, root_gb=80,
             extra_specs={"hw:cpu_policy": "shared"})
ALL_MOVES = list(Operation)
HOST = "compute-1"


class Groups:
    """A stand-in for the group table: the lookup reads whatever is current."""

    def __init__(self) -> None:
        self.groups: dict[str, InstanceGroup] = {}
        self.calls: list[str] = []

    def __call__(self, group_uuid: str) -> InstanceGroup | None:
        self.calls.append(group_uuid)
        return self.groups.get(group_uuid)


@pytest.fixture(scope="module")
def lifecycle_topology(pg_server, pg_server_b):
    topo, drop = build_topology(pg_server, pg_server_b)  # API and cells on separate servers
    yield topo
    drop()


@pytest.fixture(scope="module")
def lifecycle_store(lifecycle_topology):
    with RequestSpecRepository.from_topology(lifecycle_topology) as repo:
        yield SpecStore(repo)


@pytest.fixture
def groups():
    return Groups()


@pytest.fixture
def life(lifecycle_store, groups):
    return Lifecycle(lifecycle_store, group_lookup=groups)


def boot(life: Lifecycle, groups: Groups, n: int = 1, cell: str | None = "cell1", **changes) -> list[RequestSpec]:
    """A multi-create boot of ``n`` instances in one server group, scheduled into ``cell``."""
    base = sample_spec(num_instances=n)
    specs = [attrs.evolve(base, instance_uuid=str(uuid.uuid4()), **changes) for _ in range(n)]
    ref = base.instance_group
    assert ref is not None
    groups.groups[ref.uuid] = InstanceGroup(
        uuid=ref.uuid, name=ref.name, policy=ref.policy,
        members=tuple(s.instance_uuid for s in specs), hosts=(HOST,),
    )
    stored = life.boot(specs)
    assert [s.database for s in stored] == [API] * n
    if cell:
        life.scheduled([s.instance_uuid for s in specs], cell)
    return specs


def boot_pinned(life: Lifecycle, cell: str = "cell1") -> RequestSpec:
    spec = pinned_guest()
    life.boot(spec)
    life.scheduled(spec.instance_uuid, cell)
    return spec


def resize_pinned(life: Lifecycle, spec: RequestSpec, **kwargs):
    return life.prepare_move(
        spec.instance_uuid, "resize", current_host=HOST, new_flavor=NFV_LARGE,
        new_numa_topology=NUMA_LARGE, new_pci_requests=(qat_request(2, spec.instance_uuid),), **kwargs,
    )


def raw_row(lifecycle_topology, instance_uuid: str) -> tuple[str, dict, dict | None]:
    """(database, spec document, operation document) read straight from the databases."""
    found = []
    for name in lifecycle_topology.database_names:
        for spec, operation in run_sql(
            lifecycle_topology, name, "SELECT spec, operation FROM request_specs WHERE instance_uuid = %s", [instance_uuid]
        ):
            found.append((name, spec, operation))
    assert len(found) == 1, found
    return found[0]


def move_args(operation: Operation) -> dict:
    if operation is Operation.RESIZE:
        return {"new_flavor": BIG, "current_host": HOST}
    if operation is Operation.UNSHELVE:
        return {}
    return {"current_host": HOST}


# --- boot and scheduling --------------------------------------------------------------


def test_boot_one_or_many_then_scheduled_into_a_cell(life, groups, lifecycle_store):
    single = sample_spec()
    groups.groups[single.instance_group.uuid] = InstanceGroup(uuid=single.instance_group.uuid)
    assert life.boot(single)[0].database == API
    assert life.where(single.instance_uuid).database == API
    many = boot(life, groups, 3, cell=None)
    assert {life.where(s.instance_uuid).database for s in many} == {API}
    result = life.scheduled([s.instance_uuid for s in many] + [single.instance_uuid], "cell1")
    assert result.ok and len(result.moved) == 4
    assert {life.where(s.instance_uuid).database for s in [*many, single]} == {"cell1"}
    assert lifecycle_store.get(single.instance_uuid).spec == single


def test_an_instance_not_yet_scheduled_into_a_cell_cannot_be_moved(life, groups, lifecycle_store):
    (spec,) = boot(life, groups, cell=None)
    with pytest.raises(LifecycleError, match="not been scheduled"):
        life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST)
    assert lifecycle_store.get(spec.instance_uuid).version == 1


# --- per-operation fields never outlive their operation --------------------------------


def test_failed_host_in_a_migrations_retry_never_reaches_the_next_operation(life, groups, lifecycle_topology):
    (spec,) = boot(life, groups)
    migrate = life.prepare_move(spec.instance_uuid, "cold_migrate", current_host=HOST)
    migrate = migrate.record_failed_host("compute-bad", "node-bad")
    assert migrate.spec.retry is not None and migrate.spec.retry.hosts == (("compute-bad", "node-bad"),)
    migrate = life.save_in_flight(migrate, availability_zone="az1")  # a save mid-operation
    assert migrate.spec.retry is not None  # still there for this operation...
    assert "retry" not in raw_row(lifecycle_topology, spec.instance_uuid)[1]  # ...but never stored
    live = life.prepare_move(spec.instance_uuid, Operation.LIVE_MIGRATE, current_host="compute-2")
    assert live.spec.retry is None
    assert "compute-bad" not in live.spec.ignore_hosts
    # a live migration's reschedule adds to its ignored hosts (Nova's attempted hosts)
    assert live.record_failed_host("compute-3").spec.ignore_hosts == ("compute-2", "compute-3")


def test_one_off_target_host_of_a_cold_migrate_is_not_reused_by_a_later_live_migrate(life, groups):
    (spec,) = boot(life, groups)
    migrate = life.prepare_move(spec.instance_uuid, "cold_migrate", current_host=HOST,
                                target_host="compute-9", target_node="n9")
    dest = migrate.spec.requested_destination
    assert dest is not None and (dest.host, dest.node) == ("compute-9", "n9")
    life.save_in_flight(migrate)
    live = life.prepare_move(spec.instance_uuid, "live_migrate", current_host="compute-9")
    assert live.spec.requested_destination is not None and live.spec.requested_destination.host is None


def test_resize_ignoring_the_source_host_does_not_stop_a_later_evacuate_to_it(life, groups):
    (spec,) = boot(life, groups)
    resize = life.prepare_move(spec.instance_uuid, "resize", new_flavor=BIG, current_host="host-a")
    assert resize.spec.ignore_hosts == ("host-a",)
    life.confirm_resize(life.destination_selected(resize))
    evacuate = life.prepare_move(spec.instance_uuid, "evacuate", current_host="host-b", target_host="host-a")
    assert evacuate.spec.ignore_hosts == ("host-b",)
    assert evacuate.spec.requested_destination is not None and evacuate.spec.requested_destination.host == "host-a"
    # and a resize allowed on the same host ignores nothing
    bigger = attrs.evolve(BIG, flavorid="m1.xlarge", name="m1.xlarge", memory_mb=16384)
    same = life.prepare_move(spec.instance_uuid, "resize", new_flavor=bigger, current_host="host-a",
                             allow_same_host=True)
    assert same.spec.ignore_hosts == ()


@pytest.mark.parametrize("operation", ALL_MOVES)
def test_forced_hosts_and_nodes_of_the_boot_do_not_pin_later_moves_reset_forced_destinations(
    life, groups, lifecycle_store, operation
):
    (spec,) = boot(life, groups, force_hosts=("compute-forced",), force_nodes=("node-forced",))
    prepared = life.prepare_move(spec.instance_uuid, operation, **move_args(operation))
    assert prepared.spec.force_hosts == () and prepared.spec.force_nodes == ()
    # Nova's reset_forced_destinations is never persisted: the boot's record stays
    assert lifecycle_store.get(spec.instance_uuid).spec.force_hosts == ("compute-forced",)


def test_a_save_in_the_middle_of_an_operation_keeps_its_in_memory_target_host(life, groups, lifecycle_store, lifecycle_topology):
    (spec,) = boot(life, groups)
    live = life.prepare_move(spec.instance_uuid, "live_migrate", target_host="compute-5", current_host=HOST)
    version = live.stored_version
    live = life.save_in_flight(live, availability_zone="az9")
    assert live.stored_version == version + 1
    assert live.spec.requested_destination is not None and live.spec.requested_destination.host == "compute-5"
    assert live.spec.ignore_hosts == (HOST,)
    assert live.spec.availability_zone == "az9"
    stored = lifecycle_store.get(spec.instance_uuid)
    assert stored.spec.availability_zone == "az9" and stored.spec.requested_destination is None
    assert "requested_destination" not in raw_row(lifecycle_topology, spec.instance_uuid)[1]
    assert stored.spec.num_instances == spec.num_instances  # the stored spec, not the view


@pytest.mark.parametrize("operation", ALL_MOVES)
def test_num_instances_of_a_multi_instance_boot_does_not_leak_into_a_move(life, groups, lifecycle_store, operation):
    specs = boot(life, groups, 3)
    assert lifecycle_store.get(specs[1].instance_uuid).spec.num_instances == 3
    prepared = life.prepare_move(specs[1].instance_uuid, operation, **move_args(operation))
    assert prepared.spec.num_instances == 1


def test_instance_group_is_read_fresh_never_from_the_stored_spec(life, groups, lifecycle_store, lifecycle_topology):
    specs = boot(life, groups, 2)
    group_uuid = specs[0].instance_group.uuid
    assert "members" not in raw_row(lifecycle_topology, specs[0].instance_uuid)[1]["instance_group"]
    groups.groups[group_uuid] = InstanceGroup(
        uuid=group_uuid, name="web", policy="soft-anti-affinity",
        members=(specs[0].instance_uuid, "11111111-2222-4333-8444-555555555555"),
        hosts=("compute-7", "compute-8"),
    )
    prepared = life.prepare_move(specs[0].instance_uuid, "live_migrate", current_host=HOST)
    assert groups.calls[-1] == group_uuid
    assert prepared.group is not None
    assert prepared.group.members == (specs[0].instance_uuid, "11111111-2222-4333-8444-555555555555")
    assert prepared.group.hosts == ("compute-7", "compute-8")
    assert prepared.spec.instance_group is not None and prepared.spec.instance_group.policy == "soft-anti-affinity"
    with pytest.raises(LifecycleError, match="group_lookup"):
        Lifecycle(lifecycle_store).prepare_move(specs[0].instance_uuid, "live_migrate", current_host=HOST)


def test_deleted_server_group_and_its_group_hint_disappear_from_view_and_storage_LP1890244(
    life, groups, lifecycle_store, lifecycle_topology
):
    (spec,) = boot(life, groups, scheduler_hints={"group": ("web",), "same_host": ("x",)})
    del groups.groups[spec.instance_group.uuid]
    prepared = life.prepare_move(spec.instance_uuid, "evacuate", current_host=HOST)
    assert prepared.spec.instance_group is None
    assert prepared.spec.scheduler_hints == {"same_host": ("x",)}
    assert any("LP #1890244" in r for r in prepared.repairs)
    stored = lifecycle_store.get(spec.instance_uuid)
    assert stored.spec.instance_group is None and stored.spec.scheduler_hints == {"same_host": ("x",)}
    assert stored.version == prepared.stored_version == 2
    doc = raw_row(lifecycle_topology, spec.instance_uuid)[1]
    assert doc["instance_group"] is None and "group" not in doc["scheduler_hints"]


def test_original_constraints_are_kept_by_a_cold_migration(life, groups):
    numa = NumaTopology(cells=(NumaCell(id=0, pcpuset=frozenset({0, 1}), memory=1024, cpu_policy="dedicated"),))
    pci = (PciRequest(count=1, spec=({"vendor_id": "8086"},), alias_name="vf"),)
    (spec,) = boot(life, groups, numa_topology=numa, pci_requests=pci, scheduler_hints={"same_host": ("x",)})
    view = life.prepare_move(spec.instance_uuid, "cold_migrate", current_host=HOST).spec
    assert view.numa_topology == numa and view.pci_requests == pci and view.flavor == spec.flavor
    assert view.scheduler_hints == {"same_host": ("x",)}
    assert view.availability_zone == spec.availability_zone and view.image == spec.image
    assert view.limits == spec.limits and view.security_groups == spec.security_groups
    assert view.instance_group is not None and view.instance_group.policy == "anti-affinity"


def test_network_information_reaches_the_scheduler_but_never_storage_ensure_network_information(
    life, groups, lifecycle_topology
):
    (spec,) = boot(life, groups)
    metadata = NetworkMetadata(physnets=frozenset({"physnet1"}), tunneled=True)
    networks = (RequestedNetwork(network_id=str(uuid.uuid4()), port_id=str(uuid.uuid4())),)
    prepared = life.prepare_move(spec.instance_uuid, "evacuate", current_host=HOST,
                                 network_metadata=metadata, requested_networks=networks)
    assert prepared.spec.network_metadata == metadata and prepared.spec.requested_networks == networks
    life.save_in_flight(prepared, availability_zone="az2")
    doc = raw_row(lifecycle_topology, spec.instance_uuid)[1]
    assert "network_metadata" not in doc and "requested_networks" not in doc


# --- resize: flavor, NUMA and PCI together ----------------------------------------------


def test_resize_takes_numa_and_pci_of_the_new_flavor_and_keeps_port_requests_LP1805767_LP1983753_LP1941005(
    life, lifecycle_store
):
    spec = boot_pinned(life)
    port = spec.pci_requests[1]
    resize = resize_pinned(life, spec)
    # the scheduler sizes for the new flavor, its NUMA topology and its PCI aliases...
    assert resize.spec.flavor == NFV_LARGE and resize.spec.numa_topology == NUMA_LARGE
    qat2 = qat_request(2, spec.instance_uuid)
    assert resize.spec.pci_requests == (qat2, port)  # ...the SR-IOV port request stays
    assert lifecycle_store.get(spec.instance_uuid).spec.flavor == NFV_MEDIUM  # nothing persisted before selection
    started = life.destination_selected(resize)
    stored = lifecycle_store.get(spec.instance_uuid).spec
    assert (stored.flavor, stored.numa_topology, stored.pci_requests) == (NFV_LARGE, NUMA_LARGE, (qat2, port))
    assert started.stored_version == resize.stored_version + 1  # one compare-and-swap


def test_resize_to_a_flavor_changing_numa_or_pci_inputs_without_them_is_refused(life, lifecycle_store):
    spec = boot_pinned(life)
    with pytest.raises(ConstraintsRequiredError, match="new_numa_topology") as err:
        life.prepare_move(spec.instance_uuid, "resize", current_host=HOST, new_flavor=NFV_LARGE,
                          new_pci_requests=(qat_request(2, spec.instance_uuid),))
    assert err.value.instance_uuid == spec.instance_uuid and "hw:mem_page_size" in str(err.value)
    with pytest.raises(ConstraintsRequiredError, match="new_pci_requests.*pci_passthrough:alias"):
        life.prepare_move(spec.instance_uuid, "resize", current_host=HOST, new_flavor=NFV_LARGE,
                          new_numa_topology=NUMA_LARGE)
    with pytest.raises(LifecycleError, match="Neutron port"):
        life.prepare_move(spec.instance_uuid, "resize", current_host=HOST, new_flavor=NFV_LARGE,
                          new_numa_topology=NUMA_LARGE, new_pci_requests=(spec.pci_requests[1],))
    # a flavor that changes none of their inputs keeps them
    same = attrs.evolve(NFV_MEDIUM, flavorid="nfv.medium.2", name="nfv.medium.2", root_gb=40)
    kept = life.prepare_move(spec.instance_uuid, "resize", current_host=HOST, new_flavor=same)
    assert kept.spec.numa_topology == NUMA_MEDIUM and kept.spec.pci_requests == spec.pci_requests
    assert lifecycle_store.get(spec.instance_uuid).version == 1


def test_confirm_keeps_new_flavor_numa_and_pci_in_the_target_cell(life, lifecycle_store, lifecycle_topology):
    spec = boot_pinned(life)
    started = life.destination_selected(resize_pinned(life, spec, allow_cross_cell_move=True), cell="cell2")
    assert life.where(spec.instance_uuid).database == "cell2" and started.database == "cell2"
    database, _, operation = raw_row(lifecycle_topology, spec.instance_uuid)
    assert database == "cell2" and operation["kind"] == "resize" and operation["source_database"] == "cell1"
    confirmed = life.confirm_resize(spec.instance_uuid)
    assert confirmed.database == "cell2"
    assert (confirmed.spec.flavor, confirmed.spec.numa_topology) == (NFV_LARGE, NUMA_LARGE)
    assert raw_row(lifecycle_topology, spec.instance_uuid)[2] is None and life.in_flight(spec.instance_uuid) is None
    with pytest.raises(NoOperationInFlightError):
        life.confirm_resize(spec.instance_uuid)
    assert verify(lifecycle_store).ok


def test_revert_restores_flavor_numa_topology_and_pci_requests_and_the_cell_LP1785339(life, lifecycle_store, lifecycle_topology):
    spec = boot_pinned(life)
    started = life.destination_selected(resize_pinned(life, spec, allow_cross_cell_move=True), cell="cell2")
    life.save_in_flight(started, security_groups=("default", "nfv"))  # a durable change meanwhile
    reverted = life.revert_resize(spec.instance_uuid)
    assert reverted.database == "cell1" and life.where(spec.instance_uuid).database == "cell1"
    restored = lifecycle_store.get(spec.instance_uuid).spec
    assert (restored.flavor, restored.numa_topology, restored.pci_requests) == (
        NFV_MEDIUM, NUMA_MEDIUM, spec.pci_requests
    )
    assert restored.security_groups == ("default", "nfv")  # only the resized constraints go back
    assert raw_row(lifecycle_topology, spec.instance_uuid)[2] is None
    with pytest.raises(NoOperationInFlightError):
        life.revert_resize(spec.instance_uuid)
    assert verify(lifecycle_store).ok


def test_a_cold_migration_is_confirmed_or_reverted_like_a_resize(life, groups):
    kept, reverted = boot(life, groups, 2)
    for spec in (kept, reverted):
        life.destination_selected(
            life.prepare_move(spec.instance_uuid, "cold_migrate", current_host=HOST, allow_cross_cell_move=True),
            cell="cell2",
        )
    assert life.confirm_resize(kept.instance_uuid).database == "cell2"
    back = life.revert_resize(reverted.instance_uuid)
    assert back.database == "cell1" and back.spec.flavor == reverted.flavor


def test_a_damaged_operation_record_is_a_typed_error_naming_the_instance(life, lifecycle_store, lifecycle_topology):
    spec = boot_pinned(life)
    life.destination_selected(resize_pinned(life, spec))
    run_sql(lifecycle_topology, "cell1", """UPDATE request_specs SET operation = '{"format": 99}' WHERE instance_uuid = %s""",
            [spec.instance_uuid])
    with pytest.raises(SpecDecodeError, match="unknown record format 99") as err:
        life.revert_resize(spec.instance_uuid)
    assert err.value.instance_uuid == spec.instance_uuid
    assert lifecycle_store.get(spec.instance_uuid).spec.flavor == NFV_LARGE  # nothing changed


def test_a_confirm_racing_a_revert_ends_the_resize_exactly_once(life, lifecycle_store):
    # Nova serializes them through the instance's task state; here the record does: the
    # revert's first write marks it, after which a confirm is refused. Whatever the
    # interleaving, exactly one of the two ends the resize and the state is its outcome.
    for _round in range(4):
        spec = boot_pinned(life)
        key = spec.instance_uuid
        life.destination_selected(resize_pinned(life, spec, allow_cross_cell_move=True), cell="cell2")
        barrier = threading.Barrier(2)
        outcomes: dict[str, object] = {}

        def run(name, step, key=key, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                outcomes[name] = step(key)
            except ReqSpecError as exc:
                outcomes[name] = exc

        threads = [threading.Thread(target=run, args=(name, step))
                   for name, step in (("confirm", life.confirm_resize), ("revert", life.revert_resize))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [name for name, result in outcomes.items() if isinstance(result, StoredSpec)]
        assert len(winners) == 1, outcomes
        stored = lifecycle_store.get(key)
        if winners == ["confirm"]:
            assert (stored.database, stored.spec.numa_topology) == ("cell2", NUMA_LARGE)
        else:
            assert (stored.database, stored.spec.numa_topology) == ("cell1", NUMA_MEDIUM)
        assert life.in_flight(key) is None
    assert verify(lifecycle_store).ok


def test_a_begun_revert_refuses_a_confirm_and_is_finished_by_running_it_again(life, lifecycle_store, lifecycle_topology):
    spec = boot_pinned(life)
    life.destination_selected(resize_pinned(life, spec, allow_cross_cell_move=True), cell="cell2")
    with armed("after_claim"), pytest.raises(FailpointHit):  # the revert dies moving back
        life.revert_resize(spec.instance_uuid)
    expire_leases(lifecycle_store)  # the dead mover's leases run out
    recover(lifecycle_store)
    assert life.in_flight(spec.instance_uuid).reverting
    with pytest.raises(OperationInFlightError, match="being reverted"):
        life.confirm_resize(spec.instance_uuid)
    assert life.revert_resize(spec.instance_uuid).spec == spec
    assert life.where(spec.instance_uuid).database == "cell1" and verify(lifecycle_store).ok


def test_an_operation_in_flight_blocks_another_move_until_confirm_or_revert(life, lifecycle_store):
    spec = boot_pinned(life)
    life.destination_selected(resize_pinned(life, spec))
    with pytest.raises(OperationInFlightError) as err:
        life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST)
    assert err.value.in_flight.kind is Operation.RESIZE and err.value.in_flight.restore.flavor == NFV_MEDIUM
    life.confirm_resize(spec.instance_uuid)
    assert life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST).spec.flavor == NFV_LARGE


def test_the_record_moves_with_the_spec_through_an_interrupted_move_and_recover(life, lifecycle_store):
    spec = boot_pinned(life)
    resize = resize_pinned(life, spec, allow_cross_cell_move=True)
    with armed("after_commit"), pytest.raises(FailpointHit):  # the mover dies after the commit point
        life.destination_selected(resize, cell="cell2")
    expire_leases(lifecycle_store)  # the dead mover's leases run out
    recover(lifecycle_store)
    assert life.where(spec.instance_uuid).database == "cell2"
    assert life.in_flight(spec.instance_uuid) is not None
    assert life.revert_resize(spec.instance_uuid).spec.numa_topology == NUMA_MEDIUM
    assert life.where(spec.instance_uuid).database == "cell1" and verify(lifecycle_store).ok


@pytest.mark.parametrize("end", ["revert", "confirm"])
def test_resize_started_by_a_killed_process_is_ended_by_another_by_instance_uuid_alone(lifecycle_topology, end):
    # The first process boots a pinned guest, starts its cross-cell resize and is SIGKILLed
    # once the resize is durable; this process (a second one) ends it.
    proc, key = start_resize_in_child(lifecycle_topology, "cell1", "cell2")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    with RequestSpecRepository.from_topology(lifecycle_topology) as repo:
        lifecycle_store = SpecStore(repo)
        life = Lifecycle(lifecycle_store)
        assert life.where(key).database == "cell2"
        if end == "revert":
            done = life.revert_resize(key)
            expected = (NFV_MEDIUM, NUMA_MEDIUM, pinned_guest(key).pci_requests, "cell1")
        else:
            done = life.confirm_resize(key)
            port = pinned_guest(key).pci_requests[1]
            expected = (NFV_LARGE, NUMA_LARGE, (qat_request(2, key), port), "cell2")
        spec = lifecycle_store.get(key).spec
        assert (spec.flavor, spec.numa_topology, spec.pci_requests, done.database) == expected
        assert life.where(key).database == expected[3] and life.in_flight(key) is None
        assert without_volatile(spec) == without_volatile(attrs.evolve(
            pinned_guest(key), flavor=expected[0], numa_topology=expected[1], pci_requests=expected[2]
        ))
        assert verify(lifecycle_store).ok
        life.delete(key)


@pytest.mark.parametrize("point, cell_after_recover", [("after_seal", "cell1"), ("after_commit", "cell2")])
def test_resize_process_killed_inside_its_cross_cell_move_is_reverted_by_another_after_recover(
    life, lifecycle_store, lifecycle_topology, point, cell_after_recover
):
    # The record is written before the move starts; the process dies inside the move
    # (before / after its commit point). recover() rolls the move back or finishes it,
    # the record going with the spec either way, and a revert from here restores all.
    spec = boot_pinned(life)
    env = {**child_env(lifecycle_topology), "REQSPEC_FAILPOINTS": f"{point}=kill"}
    proc = subprocess.run(
        [sys.executable, "-m", "reqspec_repo._cli.demo", "resize", spec.instance_uuid, "cell2"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    expire_leases(lifecycle_store)  # the killed process's leases run out
    recover(lifecycle_store)
    assert life.where(spec.instance_uuid).database == cell_after_recover
    assert life.in_flight(spec.instance_uuid) is not None
    reverted = life.revert_resize(spec.instance_uuid)
    assert reverted.database == "cell1" and reverted.spec == spec
    assert verify(lifecycle_store).ok


def without_volatile(spec: RequestSpec) -> RequestSpec:
    return attrs.evolve(spec, image=None)  # the child's image id is random


# --- the cell rules ---------------------------------------------------------------------


@pytest.mark.parametrize("operation", [Operation.LIVE_MIGRATE, Operation.EVACUATE, Operation.UNSHELVE])
def test_live_migration_evacuation_and_unshelve_stay_in_their_cell_restrict_request_spec_to_cell(
    life, groups, lifecycle_store, operation
):
    (spec,) = boot(life, groups)
    prepared = life.prepare_move(spec.instance_uuid, operation, **move_args(operation))
    assert prepared.spec.requested_destination is not None
    assert prepared.spec.requested_destination.cell == "cell1"
    version = lifecycle_store.get(spec.instance_uuid).version
    with pytest.raises(CrossCellMoveError):
        life.destination_selected(prepared, cell="cell2")
    with pytest.raises(CrossCellMoveError):
        life.move_to_cell(prepared, "cell2")
    with pytest.raises(CrossCellMoveError):
        life.prepare_move(spec.instance_uuid, operation, target_cell="cell2", **move_args(operation))
    assert life.where(spec.instance_uuid).database == "cell1"  # nothing moved...
    assert lifecycle_store.get(spec.instance_uuid).version == version  # ...nothing written
    assert life.destination_selected(prepared).database == "cell1"


@pytest.mark.parametrize("operation", [Operation.RESIZE, Operation.COLD_MIGRATE])
def test_resize_and_cold_migration_cross_cells_only_with_allow_cross_cell_move(life, groups, lifecycle_store, operation):
    (spec,) = boot(life, groups)
    restricted = life.prepare_move(spec.instance_uuid, operation, **move_args(operation))
    assert restricted.spec.requested_destination.cell == "cell1"  # MigrationTask restricts to the cell
    with pytest.raises(CrossCellMoveError, match="allow_cross_cell_move"):
        life.destination_selected(restricted, cell="cell2")
    assert life.where(spec.instance_uuid).database == "cell1" and life.in_flight(spec.instance_uuid) is None
    assert restricted.spec.requested_destination.allow_cross_cell_move is False
    allowed = life.prepare_move(spec.instance_uuid, operation, allow_cross_cell_move=True, **move_args(operation))
    assert allowed.spec.requested_destination.cell == "cell1"  # preferred, not required
    assert allowed.spec.requested_destination.allow_cross_cell_move is True  # in Destination, as Nova
    targeted = life.prepare_move(spec.instance_uuid, operation, allow_cross_cell_move=True,
                                 target_host="compute-9", **move_args(operation))
    assert targeted.spec.requested_destination.cell is None  # a targeted host may be anywhere
    with pytest.raises(LifecycleError, match="destination_selected first"):
        life.move_to_cell(allowed, "cell2")
    assert life.destination_selected(allowed, cell="cell2").database == "cell2"
    assert life.where(spec.instance_uuid).database == "cell2"


# --- hosts, zones, hints ----------------------------------------------------------------


@pytest.mark.parametrize("operation", [Operation.LIVE_MIGRATE, Operation.EVACUATE])
def test_evacuation_and_live_migration_need_and_always_exclude_the_current_host(life, groups, operation):
    (spec,) = boot(life, groups)
    with pytest.raises(LifecycleError, match="current_host"):
        life.prepare_move(spec.instance_uuid, operation)
    with pytest.raises(LifecycleError, match="never"):
        life.prepare_move(spec.instance_uuid, operation, current_host=HOST, allow_same_host=True)
    with pytest.raises(LifecycleError, match="never goes back"):
        life.prepare_move(spec.instance_uuid, operation, current_host=HOST, target_host=HOST)
    assert life.prepare_move(spec.instance_uuid, operation, current_host=HOST).spec.ignore_hosts == (HOST,)
    targeted = life.prepare_move(spec.instance_uuid, operation, current_host=HOST, target_host="compute-4")
    assert targeted.spec.ignore_hosts == (HOST,)


def test_unshelve_keeps_changes_or_unpins_the_zone_saved_before_scheduling_microversion_2_91(life, groups, lifecycle_store):
    (spec,) = boot(life, groups)
    kept = life.prepare_move(spec.instance_uuid, "unshelve")
    assert kept.spec.availability_zone == "az1" and kept.repairs == ()
    assert lifecycle_store.get(spec.instance_uuid).version == 1  # nothing to save
    moved = life.prepare_move(spec.instance_uuid, "unshelve", availability_zone="az3", target_host="compute-3")
    assert moved.spec.availability_zone == "az3" and moved.spec.ignore_hosts == ()
    assert moved.spec.requested_destination.host == "compute-3"
    assert lifecycle_store.get(spec.instance_uuid).spec.availability_zone == "az3"  # saved before scheduling
    unpinned = life.prepare_move(spec.instance_uuid, "unshelve", availability_zone=None)
    assert unpinned.spec.availability_zone is None
    assert lifecycle_store.get(spec.instance_uuid).spec.availability_zone is None
    with pytest.raises(LifecycleError, match="no current host"):
        life.prepare_move(spec.instance_uuid, "unshelve", current_host=HOST)


def test_internal_nova_hints_are_never_persisted(life, groups, lifecycle_store, lifecycle_topology):
    with pytest.raises(LifecycleError, match="_nova_check_type"):
        life.boot(attrs.evolve(sample_spec(), scheduler_hints={"_nova_check_type": ("rebuild",)}))
    (spec,) = boot(life, groups)
    with pytest.raises(LifecycleError, match="_nova_check_type"):
        life.update(spec.instance_uuid, scheduler_hints={"_nova_check_type": ("rebuild",)})
    # a legacy row that carries one (written before this library): removed before a move
    run_sql(lifecycle_topology, "cell1",
            """UPDATE request_specs SET spec = jsonb_set(spec, '{scheduler_hints,_nova_check_type}', '["rebuild"]')
               WHERE instance_uuid = %s""", [spec.instance_uuid])
    prepared = life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST)
    assert "_nova_check_type" not in prepared.spec.scheduler_hints
    assert "_nova_check_type" not in raw_row(lifecycle_topology, spec.instance_uuid)[1]["scheduler_hints"]
    assert any("_nova_check_type" in r for r in prepared.repairs)


def test_unknown_project_user_and_is_bfv_are_healed_from_the_caller_and_persisted_ensure_project_and_user_id_LP1469179(
    life, groups, lifecycle_store, lifecycle_topology
):
    (spec,) = boot(life, groups)
    # a row as Nova's Newton online migration / a pre-Rocky spec left it: values unknown
    run_sql(lifecycle_topology, "cell1",
            """UPDATE request_specs SET spec = spec || '{"project_id": null, "user_id": null, "is_bfv": null}'
               WHERE instance_uuid = %s""", [spec.instance_uuid])
    assert lifecycle_store.get(spec.instance_uuid).spec.project_id is None
    with pytest.raises(UnhealedFieldError) as err:  # never scheduled with them unknown
        life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST, project_id="p1", user_id="u1")
    assert err.value.field == "is_bfv" and err.value.instance_uuid == spec.instance_uuid
    assert lifecycle_store.get(spec.instance_uuid).version == 1  # nothing written
    healed = life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST,
                               project_id="p1", user_id="u1", is_bfv=True)
    assert (healed.spec.project_id, healed.spec.user_id, healed.spec.is_bfv) == ("p1", "u1", True)
    stored = lifecycle_store.get(spec.instance_uuid)
    assert (stored.spec.project_id, stored.spec.user_id, stored.spec.is_bfv) == ("p1", "u1", True)
    assert len([r for r in healed.repairs if "healed" in r]) == 3
    # known values are kept: the caller's only fill what is unknown (as Nova does)
    again = life.prepare_move(spec.instance_uuid, "evacuate", current_host=HOST, project_id="other", is_bfv=False)
    assert (again.spec.project_id, again.spec.is_bfv) == ("p1", True) and again.repairs == ()
    assert lifecycle_store.get(spec.instance_uuid).version == 2


# --- rebuild ----------------------------------------------------------------------------


def test_rebuild_persists_the_image_never_the_forced_host_nor_the_nova_check_type_hint(life, groups, lifecycle_store, lifecycle_topology):
    (spec,) = boot(life, groups)
    before = lifecycle_store.get(spec.instance_uuid)
    image = ImageMeta(id=str(uuid.uuid4()), name="fedora-40", min_ram=1024)
    rebuild = life.rebuild(spec.instance_uuid, image, current_host=HOST, current_node="node-1",
                           expected_version=before.version)
    assert rebuild.stored.version == before.version + 1 and lifecycle_store.get(spec.instance_uuid).spec.image == image
    assert rebuild.spec is not None
    assert rebuild.spec.force_hosts == (HOST,) and rebuild.spec.force_nodes == ("node-1",)
    assert rebuild.spec.scheduler_hints["_nova_check_type"] == ("rebuild",)
    assert rebuild.spec.requested_destination.cell == "cell1"
    doc = raw_row(lifecycle_topology, spec.instance_uuid)[1]
    assert doc["force_hosts"] == [] and "_nova_check_type" not in doc["scheduler_hints"]
    # the same image again: rebuilt in place, nothing written, no scheduling
    again = life.rebuild(spec.instance_uuid, image, current_host=HOST)
    assert again.spec is None and again.stored.version == rebuild.stored.version


def test_rebuild_with_an_image_that_changes_numa_constraints_is_refused_validate_numa_rebuild(life, lifecycle_store):
    spec = boot_pinned(life)
    numa_image = ImageMeta(id=str(uuid.uuid4()), name="rt", properties={"hw_numa_nodes": "2"})
    with pytest.raises(ConstraintsRequiredError, match="hw_numa_nodes"):
        life.rebuild(spec.instance_uuid, numa_image, current_host=HOST)
    with pytest.raises(RebuildNumaConflictError):
        life.rebuild(spec.instance_uuid, numa_image, current_host=HOST, numa_topology=NUMA_LARGE)
    assert lifecycle_store.get(spec.instance_uuid).spec.image == spec.image and lifecycle_store.get(spec.instance_uuid).version == 1
    # an image whose NUMA constraints come out the same is accepted
    same = life.rebuild(spec.instance_uuid, numa_image, current_host=HOST, numa_topology=NUMA_MEDIUM)
    assert same.stored.spec.image == numa_image


# --- misuse, update, delete -------------------------------------------------------------


def test_misuse_is_refused(life, groups):
    (spec,) = boot(life, groups)
    with pytest.raises(LifecycleError):
        life.prepare_move(spec.instance_uuid, "resize", current_host=HOST)
    with pytest.raises(LifecycleError, match="own flavor"):  # CannotResizeToSameFlavor
        life.prepare_move(spec.instance_uuid, "resize", current_host=HOST, new_flavor=spec.flavor)
    with pytest.raises(LifecycleError):
        life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST, new_flavor=BIG)
    with pytest.raises(LifecycleError):
        life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST, allow_cross_cell_move=True)
    with pytest.raises(LifecycleError, match="unknown operation 'teleport'"):
        life.prepare_move(spec.instance_uuid, "teleport")
    with pytest.raises(LifecycleError):
        life.update(spec.instance_uuid, retry=None)
    with pytest.raises(NoOperationInFlightError):
        life.confirm_resize(spec.instance_uuid)
    live = life.prepare_move(spec.instance_uuid, "live_migrate", current_host=HOST)
    with pytest.raises(NoOperationInFlightError):
        life.revert_resize(live)


def test_update_is_compare_and_swap(life, groups, lifecycle_store):
    (spec,) = boot(life, groups)
    before = lifecycle_store.get(spec.instance_uuid)
    with pytest.raises(ConflictError):  # a stale version loses
        life.update(spec.instance_uuid, expected_version=before.version - 1, availability_zone="az5")
    assert lifecycle_store.get(spec.instance_uuid).spec.availability_zone == spec.availability_zone
    assert life.update(spec.instance_uuid, availability_zone="az5").version == before.version + 1


def test_delete_wherever_it_lives_and_twice_is_fine(life, groups, lifecycle_store):
    in_cell, in_api = boot(life, groups, 1)[0], boot(life, groups, 1, cell=None)[0]
    resized = boot_pinned(life)
    life.destination_selected(resize_pinned(life, resized, allow_cross_cell_move=True), cell="cell2")
    for spec in (in_cell, in_api, resized):
        assert life.delete(spec.instance_uuid) is True
        assert life.delete(spec.instance_uuid) is False
        with pytest.raises(LocationNotFoundError):
            life.where(spec.instance_uuid)
    assert verify(lifecycle_store).ok
