"""``make demo`` / ``reqspec demo``: one multi-instance boot through its lifecycle.

On the configured topology (or the embedded default), the demo boots three instances in
one request, schedules them into cell1, resizes one of them across to cell2 (prepare,
move, confirm), resizes another to cell2 and reverts it back to cell1, and deletes them
all. After each step it prints where each spec lives and, for the moves, what the
scheduler would see. It ends with ``verify()`` and leaves nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import attrs

from .._moving.recovery import verify
from .._nova.lifecycle import InstanceGroup, Lifecycle, PreparedMove
from .._spec.model import Flavor, ImageMeta, InstanceGroupRef, RequestSpec
from .._store.config import Topology
from .._store.locations import SpecStore
from .._store.migrate import migrate_topology
from .._store.repository import RequestSpecRepository

Out = Callable[[str], None]

BIGGER = Flavor(flavorid="m1.large", name="m1.large", memory_mb=8192, vcpus=4, root_gb=80)


def sample_spec(instance_uuid: str | None = None, *, num_instances: int = 1) -> RequestSpec:
    """A realistic spec: flavor with extra specs, image with properties, a group, hints."""
    return RequestSpec(
        instance_uuid=instance_uuid or str(uuid.uuid4()),
        project_id="demo-project",
        user_id="demo-user",
        availability_zone="az1",
        num_instances=num_instances,
        flavor=Flavor(
            flavorid="m1.small",
            name="m1.small",
            memory_mb=2048,
            vcpus=1,
            root_gb=20,
            ephemeral_gb=0,
            swap=0,
            rxtx_factor=1.0,
            vcpu_weight=None,
            is_public=True,
            extra_specs={"hw:cpu_policy": "shared", "trait:CUSTOM_DEMO": "required"},
        ),
        image=ImageMeta(
            id=str(uuid.uuid4()),
            name="debian-12",
            status="active",
            container_format="bare",
            disk_format="qcow2",
            min_ram=512,
            min_disk=2,
            properties={"hw_disk_bus": "virtio", "os_distro": "debian"},
        ),
        instance_group=InstanceGroupRef(
            uuid=str(uuid.uuid4()), name="web", policy="anti-affinity", rules={}
        ),
        scheduler_hints={"group": ("web",)},
        security_groups=("default",),
    )


def _cells(topology: Topology) -> tuple[str, str]:
    cells = sorted(topology.cells)
    if len(cells) < 2:
        from .._errors import ConfigError

        raise ConfigError(f"the demo needs two cells (configured: {', '.join(cells) or 'none'})")
    return cells[0], cells[1]


def run_demo(topology: Topology, out: Out = print) -> None:
    """Run the walk-through on ``topology``, printing to ``out``."""
    first_cell, second_cell = _cells(topology)
    out("== migrate")
    for result in migrate_topology(topology):
        out(f"   {result.database:<6} {result.masked_dsn}: {result.applied} applied")

    with RequestSpecRepository.from_topology(topology) as repo:
        store = SpecStore(repo)
        base = attrs.evolve(sample_spec(num_instances=3), force_hosts=("compute-1",))
        specs = [attrs.evolve(base, instance_uuid=str(uuid.uuid4())) for _ in range(3)]
        names = {s.instance_uuid: f"vm{i + 1}" for i, s in enumerate(specs)}
        assert base.instance_group is not None
        group = InstanceGroup(
            uuid=base.instance_group.uuid, name="web", policy="anti-affinity",
            members=tuple(names), hosts=("compute-1", "compute-2", "compute-3"),
        )
        life = Lifecycle(store, group_lookup=lambda _uuid: group)

        def where() -> None:
            locations = store.locations(names)
            for key, name in names.items():
                loc = locations.get(key)
                if loc is None:
                    out(f"   {name} {key}: deleted (no location, no spec)")
                    continue
                stored = store.get(key)
                out(
                    f"   {name} {key}: in {loc.database:<6} version {stored.version}, "
                    f"flavor {stored.spec.flavor.name}, num_instances {stored.spec.num_instances}"
                )

        def scheduler(prepared: PreparedMove) -> None:
            out(f"   scheduler sees: {prepared.describe()}")

        vm1, vm2, vm3 = (s.instance_uuid for s in specs)

        out("== 1. boot: 3 instances in one request, specs and locations in the API database")
        life.boot(specs)
        out("   (the boot forced host compute-1: that holds for this first scheduling only)")
        where()

        out(f"== 2. scheduled: the scheduler placed all three in {first_cell}; their specs move there")
        life.scheduled(names, first_cell)
        where()

        out(f"== 3. resize vm1 to {BIGGER.name} across to {second_cell}: prepare, move, confirm")
        resize = life.prepare_move(vm1, "resize", new_flavor=BIGGER, source_host="compute-1")
        scheduler(resize)
        resize = life.move_to_cell(resize, second_cell)
        out(f"   moved to {second_cell}; stored flavor still {store.get(vm1).spec.flavor.name} until confirmed")
        confirmed = life.confirm_resize(resize)
        out(f"   confirm: flavor {confirmed.spec.flavor.name} persisted in {confirmed.database}")
        where()

        out(f"== 4. resize vm2 to {second_cell}, then revert: back to {first_cell} with the old flavor")
        resize = life.prepare_move(vm2, "resize", new_flavor=BIGGER, source_host="compute-2")
        scheduler(resize)
        resize = life.move_to_cell(resize, second_cell)
        out(f"   moved to {second_cell} for the resize")
        reverted = life.revert_resize(resize)
        out(f"   revert: back in {reverted.database}, flavor {reverted.spec.flavor.name}")
        where()

        out("== 5. a later live migration of vm1 to compute-9: nothing of the resize is carried over")
        live = life.prepare_move(vm1, "live_migrate", source_host="compute-5", target_host="compute-9")
        scheduler(live)

        out("== 6. delete: every spec and location goes, wherever it lives (twice is fine)")
        for key in (vm1, vm2, vm3):
            life.delete(key)
        again = life.delete(vm1)
        out(f"   deleting vm1 again: {'deleted' if again else 'already gone, nothing to do'}")
        where()

        report = verify(store)
        state = "consistent" if report.ok else f"{len(report.problems)} problem(s)"
        out(f"== verify: {state}")
