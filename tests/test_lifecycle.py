"""The lifecycle rules, one regression test each, on separate API and cell servers.

Each test boots its own instances (fresh uuids) on one topology shared by the module,
and checks the rule both in the scheduler's view and in what is stored.
"""

from __future__ import annotations

import uuid

import attrs
import pytest
from helpers import build_topology, run_sql

from reqspec_repo._cli.demo import sample_spec
from reqspec_repo._errors import ConflictError, LocationNotFoundError
from reqspec_repo._moving.recovery import verify
from reqspec_repo._nova.lifecycle import InstanceGroup, Lifecycle, LifecycleError, Operation
from reqspec_repo._spec.model import (
    Flavor,
    ImageMeta,
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestSpec,
)
from reqspec_repo._store.config import API

BIG = Flavor(flavorid="m1.large", name="m1.large", memory_mb=8192, vcpus=4, root_gb=80)
ALL_MOVES = list(Operation)


class Groups:
    """A stand-in for the group table: the lookup reads whatever is current."""

    def __init__(self) -> None:
        self.groups: dict[str, InstanceGroup] = {}
        self.calls: list[str] = []

    def __call__(self, group_uuid: str) -> InstanceGroup | None:
        self.calls.append(group_uuid)
        return self.groups.get(group_uuid)


@pytest.fixture(scope="module")
def topology(pg_server, pg_server_b):
    topo, drop = build_topology(pg_server, pg_server_b)  # API and cells on separate servers
    yield topo
    drop()


@pytest.fixture
def groups():
    return Groups()


@pytest.fixture
def life(store, groups):
    return Lifecycle(store, group_lookup=groups)


def boot(life: Lifecycle, groups: Groups, n: int = 1, cell: str | None = "cell1", **changes) -> list[RequestSpec]:
    """A multi-create boot of ``n`` instances in one server group, scheduled into ``cell``."""
    base = sample_spec(num_instances=n)
    specs = [attrs.evolve(base, instance_uuid=str(uuid.uuid4()), **changes) for _ in range(n)]
    ref = base.instance_group
    assert ref is not None
    groups.groups[ref.uuid] = InstanceGroup(
        uuid=ref.uuid, name=ref.name, policy=ref.policy,
        members=tuple(s.instance_uuid for s in specs), hosts=("compute-1",),
    )
    stored = life.boot(specs)
    assert [s.database for s in stored] == [API] * n
    if cell:
        life.scheduled([s.instance_uuid for s in specs], cell)
    return specs


def raw_doc(topology, instance_uuid: str) -> dict:
    for name in topology.database_names:
        rows = run_sql(topology, name, "SELECT spec FROM request_specs WHERE instance_uuid = %s", [instance_uuid])
        if rows:
            return rows[0][0]
    raise AssertionError(f"no row for {instance_uuid}")


# --- boot and scheduling --------------------------------------------------------------


def test_boot_one_or_many_then_scheduled_into_a_cell(life, groups, store):
    single = sample_spec()
    groups.groups[single.instance_group.uuid] = InstanceGroup(uuid=single.instance_group.uuid)
    assert life.boot(single)[0].database == API
    assert life.where(single.instance_uuid).database == API
    many = boot(life, groups, 3, cell=None)
    assert {life.where(s.instance_uuid).database for s in many} == {API}
    result = life.scheduled([s.instance_uuid for s in many] + [single.instance_uuid], "cell1")
    assert result.ok and len(result.moved) == 4
    assert {life.where(s.instance_uuid).database for s in [*many, single]} == {"cell1"}
    assert store.get(single.instance_uuid).spec == single


# --- the rules of prepare_move ----------------------------------------------------------


def test_failed_host_in_a_migrations_retry_never_reaches_the_next_operation(life, groups, topology):
    (spec,) = boot(life, groups)
    migrate = life.prepare_move(spec.instance_uuid, "cold_migrate", source_host="compute-1")
    migrate = migrate.record_failed_host("compute-bad", "node-bad")
    assert migrate.spec.retry is not None and migrate.spec.retry.hosts == (("compute-bad", "node-bad"),)
    migrate = life.save_in_flight(migrate, availability_zone="az1")  # a save mid-operation
    assert migrate.spec.retry is not None  # still there for this operation...
    assert "retry" not in raw_doc(topology, spec.instance_uuid)  # ...but never stored
    live = life.prepare_move(spec.instance_uuid, Operation.LIVE_MIGRATE, source_host="compute-2")
    assert live.spec.retry is None
    assert "compute-bad" not in live.spec.ignore_hosts


def test_one_off_target_host_of_a_cold_migrate_is_not_reused_by_a_later_live_migrate(life, groups):
    (spec,) = boot(life, groups)
    migrate = life.prepare_move(spec.instance_uuid, "cold_migrate", target_host="compute-9", target_node="n9")
    assert migrate.spec.requested_destination is not None
    assert (migrate.spec.requested_destination.host, migrate.spec.requested_destination.node) == ("compute-9", "n9")
    life.save_in_flight(migrate)
    live = life.prepare_move(spec.instance_uuid, "live_migrate", source_host="compute-9")
    assert live.spec.requested_destination is None


def test_resize_ignoring_the_source_host_does_not_stop_a_later_evacuate_to_it(life, groups):
    (spec,) = boot(life, groups)
    resize = life.prepare_move(spec.instance_uuid, "resize", new_flavor=BIG, source_host="host-a")
    assert resize.spec.ignore_hosts == ("host-a",)
    life.confirm_resize(resize)
    evacuate = life.prepare_move(spec.instance_uuid, "evacuate", source_host="host-b", target_host="host-a")
    assert evacuate.spec.ignore_hosts == ("host-b",)
    assert evacuate.spec.requested_destination is not None and evacuate.spec.requested_destination.host == "host-a"
    # and a resize allowed on the same host ignores nothing
    same = life.prepare_move(spec.instance_uuid, "resize", new_flavor=BIG, source_host="host-a", allow_same_host=True)
    assert same.spec.ignore_hosts == ()


@pytest.mark.parametrize("operation", ALL_MOVES)
def test_forced_hosts_and_nodes_of_the_boot_do_not_pin_later_moves(life, groups, store, operation):
    (spec,) = boot(life, groups, force_hosts=("compute-forced",), force_nodes=("node-forced",))
    assert store.get(spec.instance_uuid).spec.force_hosts == ("compute-forced",)  # the boot's record
    prepared = life.prepare_move(
        spec.instance_uuid, operation, new_flavor=BIG if operation is Operation.RESIZE else None
    )
    assert prepared.spec.force_hosts == () and prepared.spec.force_nodes == ()


def test_a_save_in_the_middle_of_an_operation_keeps_its_in_memory_target_host(life, groups, store, topology):
    (spec,) = boot(life, groups)
    live = life.prepare_move(spec.instance_uuid, "live_migrate", target_host="compute-5", source_host="compute-1")
    version = live.stored_version
    live = life.save_in_flight(live, availability_zone="az9")
    assert live.stored_version == version + 1
    assert live.spec.requested_destination is not None and live.spec.requested_destination.host == "compute-5"
    assert live.spec.ignore_hosts == ("compute-1",)
    assert live.spec.availability_zone == "az9"
    stored = store.get(spec.instance_uuid)
    assert stored.spec.availability_zone == "az9" and stored.spec.requested_destination is None
    assert "requested_destination" not in raw_doc(topology, spec.instance_uuid)
    # the mid-operation save wrote the stored spec, not the scheduler's view
    assert stored.spec.num_instances == spec.num_instances


@pytest.mark.parametrize("operation", ALL_MOVES)
def test_num_instances_of_a_multi_instance_boot_does_not_leak_into_a_move(life, groups, store, operation):
    specs = boot(life, groups, 3)
    assert store.get(specs[1].instance_uuid).spec.num_instances == 3
    prepared = life.prepare_move(
        specs[1].instance_uuid, operation, new_flavor=BIG if operation is Operation.RESIZE else None
    )
    assert prepared.spec.num_instances == 1


def test_confirm_keeps_the_new_flavor_and_revert_restores_the_old_one_across_cells(life, groups, store):
    kept, reverted = boot(life, groups, 2)
    old = kept.flavor

    resize = life.prepare_move(kept.instance_uuid, "resize", new_flavor=BIG)
    assert resize.spec.flavor == BIG  # the scheduler sizes for the new flavor
    assert store.get(kept.instance_uuid).spec.flavor == old  # nothing persisted yet
    resize = life.move_to_cell(resize, "cell2")
    assert life.where(kept.instance_uuid).database == "cell2"
    confirmed = life.confirm_resize(resize)
    assert confirmed.database == "cell2" and confirmed.spec.flavor == BIG
    assert store.get(kept.instance_uuid).spec.flavor == BIG

    resize = life.prepare_move(reverted.instance_uuid, "resize", new_flavor=BIG)
    resize = life.move_to_cell(resize, "cell2")
    resize = life.save_in_flight(resize, flavor=BIG)  # even if the new flavor was persisted
    restored = life.revert_resize(resize)
    assert restored.database == "cell1" and restored.spec.flavor == old
    assert life.where(reverted.instance_uuid).database == "cell1"
    assert store.get(reverted.instance_uuid).spec.flavor == old
    assert verify(store).ok


def test_instance_group_is_read_fresh_never_from_the_stored_spec(life, groups, store, topology):
    specs = boot(life, groups, 2)
    group_uuid = specs[0].instance_group.uuid
    assert "members" not in raw_doc(topology, specs[0].instance_uuid)["instance_group"]
    # The group changed since the boot: a member left, another host, a new policy.
    groups.groups[group_uuid] = InstanceGroup(
        uuid=group_uuid, name="web", policy="soft-anti-affinity",
        members=(specs[0].instance_uuid, "11111111-2222-4333-8444-555555555555"),
        hosts=("compute-7", "compute-8"),
    )
    prepared = life.prepare_move(specs[0].instance_uuid, "live_migrate")
    assert groups.calls[-1] == group_uuid
    assert prepared.group is not None
    assert prepared.group.members == (specs[0].instance_uuid, "11111111-2222-4333-8444-555555555555")
    assert prepared.group.hosts == ("compute-7", "compute-8")
    assert prepared.spec.instance_group is not None and prepared.spec.instance_group.policy == "soft-anti-affinity"
    # Without a lookup there is no membership to use: refused, not taken from storage.
    with pytest.raises(LifecycleError, match="group_lookup"):
        Lifecycle(store).prepare_move(specs[0].instance_uuid, "live_migrate")
    # A deleted group: scheduled without it.
    del groups.groups[group_uuid]
    assert life.prepare_move(specs[0].instance_uuid, "evacuate").spec.instance_group is None


def test_original_constraints_are_kept(life, groups):
    numa = NumaTopology(cells=(NumaCell(id=0, pcpuset=frozenset({0, 1}), memory=1024, cpu_policy="dedicated"),))
    pci = (PciRequest(count=1, spec=({"vendor_id": "8086"},), alias_name="vf"),)
    (spec,) = boot(life, groups, numa_topology=numa, pci_requests=pci, scheduler_hints={"same_host": ("x",)})
    prepared = life.prepare_move(spec.instance_uuid, "cold_migrate", source_host="compute-1")
    view = prepared.spec
    assert view.numa_topology == numa and view.pci_requests == pci
    assert view.scheduler_hints == {"same_host": ("x",)}
    assert view.availability_zone == spec.availability_zone and view.image == spec.image
    assert view.limits == spec.limits and view.security_groups == spec.security_groups
    assert view.instance_group is not None and view.instance_group.policy == "anti-affinity"


def test_misuse_is_refused(life, groups):
    (spec,) = boot(life, groups)
    with pytest.raises(LifecycleError):
        life.prepare_move(spec.instance_uuid, "resize")
    with pytest.raises(LifecycleError):
        life.prepare_move(spec.instance_uuid, "live_migrate", new_flavor=BIG)
    with pytest.raises(LifecycleError):
        life.prepare_move(spec.instance_uuid, "evacuate", allow_same_host=True)
    with pytest.raises(ValueError):
        life.prepare_move(spec.instance_uuid, "teleport")
    with pytest.raises(LifecycleError):
        life.update(spec.instance_uuid, retry=None)
    live = life.prepare_move(spec.instance_uuid, "live_migrate")
    with pytest.raises(LifecycleError):
        life.confirm_resize(live)


# --- unshelve, rebuild, update, delete ---------------------------------------------------


def test_unshelve_into_another_zone_then_update_persists_it(life, groups, store):
    (spec,) = boot(life, groups)
    unshelve = life.prepare_move(spec.instance_uuid, "unshelve", availability_zone="az3", source_host="h")
    assert unshelve.spec.availability_zone == "az3" and unshelve.spec.ignore_hosts == ()
    assert store.get(spec.instance_uuid).spec.availability_zone == spec.availability_zone
    saved = life.update(spec.instance_uuid, availability_zone="az3")
    assert saved.spec.availability_zone == "az3"


def test_rebuild_and_update_are_compare_and_swap(life, groups, store):
    (spec,) = boot(life, groups)
    before = store.get(spec.instance_uuid)
    image = ImageMeta(id=str(uuid.uuid4()), name="fedora-40", min_ram=1024)
    rebuilt = life.rebuild(spec.instance_uuid, image, expected_version=before.version)
    assert rebuilt.version == before.version + 1 and store.get(spec.instance_uuid).spec.image == image
    with pytest.raises(ConflictError):  # a stale version loses
        life.update(spec.instance_uuid, expected_version=before.version, availability_zone="az5")
    assert store.get(spec.instance_uuid).spec.availability_zone == spec.availability_zone
    assert life.update(spec.instance_uuid, availability_zone="az5").version == before.version + 2


def test_delete_wherever_it_lives_and_twice_is_fine(life, groups, store):
    in_cell, in_api = boot(life, groups, 1)[0], boot(life, groups, 1, cell=None)[0]
    for spec in (in_cell, in_api):
        assert life.delete(spec.instance_uuid) is True
        assert life.delete(spec.instance_uuid) is False
        with pytest.raises(LocationNotFoundError):
            life.where(spec.instance_uuid)
    assert verify(store).ok
