"""msgspec Struct mirrors of the durable model: the fastest-known reference codec.

The structs hold the same fields with the same JSON names, so they read and write the
same documents as :mod:`reqspec_repo._spec.codec` (without its validation rules).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from reqspec_repo._spec.model import (
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    Limits,
    NumaTopology,
    RequestSpec,
)


class MFlavor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    flavorid: str
    name: str | None
    memory_mb: int
    vcpus: int
    root_gb: int = 0
    ephemeral_gb: int = 0
    swap: int = 0
    rxtx_factor: float | None = 1.0
    vcpu_weight: int | None = None
    is_public: bool = True
    extra_specs: dict[str, str] = {}
    id: int | None = None
    disabled: bool = False
    projects: tuple[str, ...] = ()
    description: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    deleted: bool = False


class MImageMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str | None = None
    name: str | None = None
    status: str | None = None
    checksum: str | None = None
    owner: str | None = None
    size: int | None = None
    virtual_size: int | None = None
    container_format: str | None = None
    disk_format: str | None = None
    min_ram: int = 0
    min_disk: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    properties: dict[str, Any] = {}
    visibility: str | None = None
    protected: bool | None = None
    tags: tuple[str, ...] | None = None
    direct_url: str | None = None


class MVirtCpuTopology(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sockets: int | None = 1
    cores: int | None = 1
    threads: int | None = 1


class MNumaCell(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    memory: int
    cpuset: frozenset[int] = frozenset()
    pcpuset: frozenset[int] = frozenset()
    pagesize: int | None = None
    cpu_policy: str | None = None
    cpu_thread_policy: str | None = None
    cpuset_reserved: frozenset[int] | None = None
    cpu_topology: MVirtCpuTopology | None = None
    cpu_pinning_raw: dict[str, int] | None = None


class MNumaTopology(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cells: tuple[MNumaCell, ...] = ()
    emulator_threads_policy: str | None = None
    id: int | None = None
    instance_uuid: str | None = None


class MPciRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    count: int
    spec: tuple[dict[str, str | None], ...] = ()
    alias_name: str | None = None
    request_id: str | None = None
    numa_policy: str | None = None
    requester_id: str | None = None
    is_new: bool = False


class MNetworkMetadata(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    physnets: frozenset[str] = frozenset()
    tunneled: bool = False


class MNumaLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    network_metadata: MNetworkMetadata | None = None


class MLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    vcpu: int | None = None
    disk_gb: int | None = None
    memory_mb: int | None = None
    numa_topology: MNumaLimits | None = None


class MInstanceGroupRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    uuid: str
    name: str | None = None
    policy: str | None = None
    rules: dict[str, str] = {}
    id: int | None = None
    user_id: str | None = None
    project_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    deleted: bool = False


class MRequestSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    instance_uuid: str
    project_id: str | None
    user_id: str | None
    flavor: MFlavor
    availability_zone: str | None = None
    num_instances: int = 1
    image: MImageMeta | None = None
    numa_topology: MNumaTopology | None = None
    pci_requests: tuple[MPciRequest, ...] = ()
    force_hosts: tuple[str, ...] = ()
    force_nodes: tuple[str, ...] = ()
    limits: MLimits = msgspec.field(default_factory=MLimits)
    instance_group: MInstanceGroupRef | None = None
    scheduler_hints: dict[str, tuple[str, ...]] = {}
    security_groups: tuple[str, ...] = ()
    is_bfv: bool | None = False
    unknown_nova_fields: dict[str, Any] = {}
    schema_version: int = 3


ENCODER = msgspec.json.Encoder()
DECODER = msgspec.json.Decoder(MRequestSpec)


def _fields(obj: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


def mirror(spec: RequestSpec) -> MRequestSpec:
    """The msgspec twin of a model spec (built once, outside any timed loop)."""
    f: Flavor = spec.flavor
    img: ImageMeta | None = spec.image
    numa: NumaTopology | None = spec.numa_topology
    grp: InstanceGroupRef | None = spec.instance_group
    lim: Limits = spec.limits
    return MRequestSpec(
        instance_uuid=spec.instance_uuid, project_id=spec.project_id, user_id=spec.user_id,
        availability_zone=spec.availability_zone, num_instances=spec.num_instances,
        flavor=MFlavor(**_fields(f, MFlavor.__struct_fields__) | {"extra_specs": dict(f.extra_specs)}),  # type: ignore[arg-type]
        image=None if img is None else MImageMeta(
            **_fields(img, MImageMeta.__struct_fields__) | {"properties": dict(img.properties)}
        ),
        numa_topology=None if numa is None else MNumaTopology(
            cells=tuple(
                MNumaCell(**_fields(c, MNumaCell.__struct_fields__) | {
                    "cpu_topology": None if c.cpu_topology is None else MVirtCpuTopology(
                        **_fields(c.cpu_topology, MVirtCpuTopology.__struct_fields__)
                    ),
                    "cpu_pinning_raw": None if c.cpu_pinning_raw is None else dict(c.cpu_pinning_raw),
                })
                for c in numa.cells
            ),
            emulator_threads_policy=numa.emulator_threads_policy, id=numa.id,
            instance_uuid=numa.instance_uuid,
        ),
        pci_requests=tuple(
            MPciRequest(**_fields(p, MPciRequest.__struct_fields__)) for p in spec.pci_requests  # type: ignore[arg-type]
        ),
        force_hosts=spec.force_hosts, force_nodes=spec.force_nodes,
        limits=MLimits(
            vcpu=lim.vcpu, disk_gb=lim.disk_gb, memory_mb=lim.memory_mb,
            numa_topology=None if lim.numa_topology is None else MNumaLimits(
                cpu_allocation_ratio=lim.numa_topology.cpu_allocation_ratio,
                ram_allocation_ratio=lim.numa_topology.ram_allocation_ratio,
                network_metadata=None if lim.numa_topology.network_metadata is None else MNetworkMetadata(
                    physnets=lim.numa_topology.network_metadata.physnets,
                    tunneled=lim.numa_topology.network_metadata.tunneled,
                ),
            ),
        ),
        instance_group=None if grp is None else MInstanceGroupRef(
            **_fields(grp, MInstanceGroupRef.__struct_fields__) | {"rules": dict(grp.rules)}
        ),
        scheduler_hints=dict(spec.scheduler_hints), security_groups=spec.security_groups,
        is_bfv=spec.is_bfv, unknown_nova_fields=dict(spec.unknown_nova_fields),
    )


__all__ = ["DECODER", "ENCODER", "MRequestSpec", "check", "mirror"]


def check(spec: RequestSpec) -> None:
    """Sanity check: msgspec reads a reqspec document without complaint."""
    from reqspec_repo._spec import codec

    DECODER.decode(codec.encode(spec))

