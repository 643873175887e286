"""``make demo`` / ``reqspec demo``: instances through their lifecycle, as Nova does it.

On the configured topology (or the embedded default) the demo:

1. boots three instances in one request and schedules them into the first cell;
2. resizes one across to the second cell and confirms it;
3. resizes a pinned, huge-page, SR-IOV guest across cells and reverts it: its NUMA
   topology and PCI requests follow the new flavor, then come back;
4. starts the same cross-cell resize in a *separate process*, kills that process
   (SIGKILL) once the resize is durable, and reverts it from this process by instance
   uuid alone;
5. shows the cell rule (a live migration may not leave its cell), then deletes
   everything and ends with ``verify()``.

After each step it prints where each spec lives and what the scheduler would see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable

import attrs

from .._moving.recovery import verify
from .._nova.lifecycle import (
    CrossCellMoveError,
    InstanceGroup,
    Lifecycle,
    PreparedMove,
    describe_numa,
    describe_pci,
)
from .._spec.model import (
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    NumaCell,
    NumaTopology,
    PciRequest,
    RequestSpec,
)
from .._store.config import Topology, load_topology
from .._store.locations import SpecStore
from .._store.migrate import migrate_topology
from .._store.repository import RequestSpecRepository

Out = Callable[[str], None]

BIGGER = Flavor(
    flavorid="m1.large", name="m1.large", memory_mb=8192, vcpus=4, root_gb=80,
    extra_specs={"hw:cpu_policy": "shared"},
)

#: What the child process prints once its resize is durable.
READY = "READY"


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


# --- a pinned, huge-page, SR-IOV guest ------------------------------------------------
# The NUMA topologies and PCI requests below are what Nova 34's
# hardware.numa_get_constraints and pci_request.get_pci_requests_from_flavor give for
# these flavors (checked against nova==34.0.0, with [pci] alias = {"name": "qat",
# "vendor_id": "8086", "product_id": "37c9"}; Nova draws the alias requests' request_id
# at random, here it is derived from the instance); the port request is the one Nova's
# Neutron code builds for an SR-IOV port (vnic_type direct) on physnet1.

_QAT = {"vendor_id": "8086", "product_id": "37c9"}

NFV_MEDIUM = Flavor(
    flavorid="nfv.medium", name="nfv.medium", memory_mb=4096, vcpus=4, root_gb=20,
    extra_specs={
        "hw:cpu_policy": "dedicated", "hw:cpu_thread_policy": "isolate",
        "hw:emulator_threads_policy": "isolate", "hw:mem_page_size": "2048", "pci_passthrough:alias": "qat:1",
    },
)
NFV_LARGE = Flavor(
    flavorid="nfv.large", name="nfv.large", memory_mb=8192, vcpus=8, root_gb=40,
    extra_specs={
        "hw:cpu_policy": "dedicated", "hw:cpu_thread_policy": "isolate",
        "hw:emulator_threads_policy": "isolate", "hw:mem_page_size": "1048576", "hw:numa_nodes": "2",
        "pci_passthrough:alias": "qat:2",
    },
)


def _pinned_cell(cell_id: int, cpus: range, pagesize: int) -> NumaCell:
    return NumaCell(
        id=cell_id, pcpuset=frozenset(cpus), memory=4096, pagesize=pagesize,
        cpu_policy="dedicated", cpu_thread_policy="isolate",
    )


NUMA_MEDIUM = NumaTopology(cells=(_pinned_cell(0, range(4), 2048),), emulator_threads_policy="isolate")
NUMA_LARGE = NumaTopology(
    cells=(_pinned_cell(0, range(4), 1048576), _pinned_cell(1, range(4, 8), 1048576)),
    emulator_threads_policy="isolate",
)


def qat_request(count: int, instance_uuid: str) -> PciRequest:
    """The flavor-alias request of ``pci_passthrough:alias = qat:<count>``."""
    request_id = str(uuid.uuid5(uuid.UUID(instance_uuid), f"qat:{count}"))
    return PciRequest(count=count, spec=(_QAT,), alias_name="qat", request_id=request_id, numa_policy="legacy")


def sriov_port_request(instance_uuid: str) -> PciRequest:
    """The request of an SR-IOV port (no alias: it comes from Neutron; a resize keeps it)."""
    port_id = str(uuid.uuid5(uuid.UUID(instance_uuid), "port"))
    return PciRequest(
        count=1, spec=({"physical_network": "physnet1", "remote_managed": "False"},), alias_name=None,
        request_id=str(uuid.uuid5(uuid.UUID(port_id), "request")), requester_id=port_id,
    )


def pinned_guest(instance_uuid: str | None = None) -> RequestSpec:
    """A guest with dedicated CPUs, 2 MB pages, one QAT function and one SR-IOV port."""
    key = instance_uuid or str(uuid.uuid4())
    return RequestSpec(
        instance_uuid=key,
        project_id="nfv-project",
        user_id="nfv-user",
        availability_zone="az1",
        flavor=NFV_MEDIUM,
        image=ImageMeta(id=str(uuid.uuid4()), name="vrouter-7", properties={"hw_vif_multiqueue_enabled": True}),
        numa_topology=NUMA_MEDIUM,
        pci_requests=(qat_request(1, key), sriov_port_request(key)),
        security_groups=("default",),
    )


def start_pinned_resize(life: Lifecycle, spec: RequestSpec, source_cell: str, target_cell: str) -> PreparedMove:
    """Boot ``spec`` into ``source_cell``, then resize it across to ``target_cell``."""
    life.boot(spec)
    life.scheduled(spec.instance_uuid, source_cell)
    return resize_pinned_guest(life, spec.instance_uuid, target_cell)


def resize_pinned_guest(life: Lifecycle, instance_uuid: str, target_cell: str) -> PreparedMove:
    """Resize a booted :func:`pinned_guest` to nfv.large across to ``target_cell``:
    prepared, destination selected (durable), moved."""
    resize = life.prepare_move(
        instance_uuid, "resize", current_host="compute-1", new_flavor=NFV_LARGE,
        new_numa_topology=NUMA_LARGE, new_pci_requests=(qat_request(2, instance_uuid),),
        allow_cross_cell_move=True,
    )
    return life.destination_selected(resize, cell=target_cell)


def child_env(topology: Topology) -> dict[str, str]:
    """The environment that gives a child process this topology (never printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REQSPEC_")}
    env["REQSPEC_CONFIG"] = os.devnull  # not a file: the environment alone says it
    env["REQSPEC_API_DSN"] = topology.api.dsn
    for name, db in topology.cells.items():
        env[f"REQSPEC_CELL_{name.upper()}_DSN"] = db.dsn
    for field in attrs.fields(type(topology.settings)):
        env[f"REQSPEC_{field.name.upper()}"] = str(getattr(topology.settings, field.name))
    return env


def _child_main(argv: list[str]) -> int:
    """``python -m reqspec_repo._cli.demo start-resize SOURCE TARGET``: boot a pinned guest
    into SOURCE and start its resize across to TARGET (``resize UUID TARGET``: the resize
    of one already booted), print READY and its uuid, and wait to be killed."""
    if len(argv) != 3 or argv[0] not in ("start-resize", "resize"):
        print("usage: python -m reqspec_repo._cli.demo start-resize SOURCE_CELL TARGET_CELL\n"
              "       python -m reqspec_repo._cli.demo resize UUID TARGET_CELL", file=sys.stderr)
        return 2
    with RequestSpecRepository.from_topology(load_topology()) as repo:
        life = Lifecycle(SpecStore(repo))
        if argv[0] == "start-resize":
            resized = start_pinned_resize(life, pinned_guest(), argv[1], argv[2])
        else:
            resized = resize_pinned_guest(life, argv[1], argv[2])
        print(f"{READY} {resized.instance_uuid}", flush=True)
        sys.stdin.read()  # until killed (or the parent closes our stdin)
    return 0


def start_resize_in_child(topology: Topology, source_cell: str, target_cell: str) -> tuple[subprocess.Popen[str], str]:
    """Run :func:`_child_main` in a new process; returns it once the resize is durable."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reqspec_repo._cli.demo", "start-resize", source_cell, target_cell],
        env=child_env(topology), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != READY:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the resizing process did not start its resize (exit {proc.poll()})")
    return proc, line[1]


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
                in_flight = life.in_flight(key)
                out(
                    f"   {name} {key}: in {loc.database:<6} version {stored.version}, "
                    f"flavor {stored.spec.flavor.name}, num_instances {stored.spec.num_instances}"
                    + (f", {in_flight.kind.value} in flight from {in_flight.source_database}" if in_flight else "")
                )

        def constraints(key: str) -> None:
            stored = store.get(key)
            out(f"   stored in {stored.database}: flavor {stored.spec.flavor.name}, "
                f"numa {describe_numa(stored.spec.numa_topology)}")
            out(f"   {' ' * (10 + len(stored.database))}pci {describe_pci(stored.spec.pci_requests)}")

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

        out(f"== 3. resize vm1 to {BIGGER.name} across to {second_cell} (allow_cross_cell_move), then confirm")
        resize = life.prepare_move(
            vm1, "resize", current_host="compute-1", new_flavor=BIGGER, allow_cross_cell_move=True
        )
        scheduler(resize)
        out(f"   prepared: stored flavor still {store.get(vm1).spec.flavor.name} until a destination is selected")
        resize = life.destination_selected(resize, cell=second_cell)
        out(f"   destination selected in {second_cell}: new flavor and the resize's record stored together, spec moved")
        where()
        confirmed = life.confirm_resize(vm1)
        out(f"   confirm: flavor {confirmed.spec.flavor.name} kept in {confirmed.database}, record cleared")
        where()

        out(f"== 4. a pinned, huge-page, SR-IOV guest: resize to {NFV_LARGE.name} across to {second_cell}, then revert")
        guest = pinned_guest()
        resize = start_pinned_resize(life, guest, first_cell, second_cell)
        scheduler(resize)
        out("   after the destination was selected (NUMA and PCI follow the new flavor; the SR-IOV port stays):")
        constraints(guest.instance_uuid)
        reverted = life.revert_resize(guest.instance_uuid)
        out(f"   revert: back in {reverted.database} with the old flavor, NUMA topology and PCI requests:")
        constraints(guest.instance_uuid)
        life.delete(guest.instance_uuid)

        out("== 5. the same resize started by another process, which is killed (SIGKILL) once it is durable")
        proc, killed_uuid = start_resize_in_child(topology, first_cell, second_cell)
        out(f"   process {proc.pid} started the resize of {killed_uuid}:")
        constraints(killed_uuid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out(f"   process {proc.pid} killed (exit {proc.returncode}); this process reverts by instance uuid alone")
        in_flight = life.in_flight(killed_uuid)
        assert in_flight is not None
        out(f"   record found with the spec: {in_flight.kind.value} from {in_flight.source_database}, "
            f"started {in_flight.started_at:%H:%M:%S}, old flavor {in_flight.restore.flavor.name}")
        reverted = life.revert_resize(killed_uuid)
        out(f"   revert by a second process: back in {reverted.database}:")
        constraints(killed_uuid)
        life.delete(killed_uuid)

        out(f"== 6. a live migration of vm2 stays in {first_cell}: nothing of the resizes is carried over")
        live = life.prepare_move(vm2, "live_migrate", current_host="compute-2", target_host="compute-9")
        scheduler(live)
        try:
            life.destination_selected(live, cell=second_cell)
        except CrossCellMoveError as exc:
            out(f"   a destination in {second_cell} is refused, nothing moved: {exc}")

        out("== 7. delete: every spec and location goes, wherever it lives (twice is fine)")
        for key in (vm1, vm2, vm3):
            life.delete(key)
        again = life.delete(vm1)
        out(f"   deleting vm1 again: {'deleted' if again else 'already gone, nothing to do'}")
        where()

        report = verify(store)
        state = "consistent" if report.ok else f"{len(report.problems)} problem(s)"
        out(f"== verify: {state}")


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
