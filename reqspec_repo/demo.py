"""``make demo`` / ``reqspec demo``: the main job, end to end, on real databases."""

from __future__ import annotations

import uuid
from typing import Callable

from .context import api_context
from .migrate import migrate_topology
from .model import Flavor, ImageMeta, InstanceGroupRef, RequestSpec
from .repository import RequestSpecRepository
from .config import Topology

Out = Callable[[str], None]


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


def run_demo(topology: Topology, out: Out = print) -> None:
    out("== migrate")
    for result in migrate_topology(topology):
        out(f"   {result.database:<6} {result.masked_dsn}: {result.applied} applied")
    with RequestSpecRepository.from_topology(topology) as repo:
        ctx = api_context()
        spec = sample_spec()
        out(f"== boot: save the spec of instance {spec.instance_uuid} in the API database")
        stored = repo.create(ctx, spec)
        out(f"   saved, version {stored.version}")
        loaded = repo.get(ctx, spec.instance_uuid)
        out(
            f"   read back from {loaded.database!r}: flavor {loaded.spec.flavor.name}, "
            f"zone {loaded.spec.availability_zone}, group policy "
            f"{loaded.spec.instance_group.policy if loaded.spec.instance_group else '-'}"
        )
        out(f"   round trip equal: {loaded.spec == spec}")
        updated = repo.save(
            ctx, _with_zone(loaded.spec, "az2"), expected_version=loaded.version
        )
        out(f"   compare-and-swap save: zone az2, now version {updated.version}")
        for cell in sorted(topology.cells):
            out(f"   cell {cell}: {repo.count(ctx.target_cell(cell))} spec(s)")


def _with_zone(spec: RequestSpec, zone: str) -> RequestSpec:
    import attrs

    return attrs.evolve(spec, availability_zone=zone)
