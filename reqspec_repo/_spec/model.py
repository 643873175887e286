"""The RequestSpec model: immutable attrs classes mirroring Nova's RequestSpec 1.15
(Nova 34.0.0) and every object it persists, field for field (see docs/devref.md).

Every class is frozen (``attrs.frozen``: slots, no attribute assignment). Sequences are
tuples and sets are frozensets. Mappings (``extra_specs``, ``scheduler_hints``, image
``properties``...) are plain ``dict`` objects for speed: they are typed as read-only
``Mapping`` and callers must not mutate them after building a spec.

Values are validated when an object is built (including by the codec while decoding and
by :func:`attrs.evolve`); a violation raises :class:`~reqspec_repo.SpecValidationError`
whose ``field`` names the field path, e.g. ``"flavor.vcpus"`` or ``"pci_requests[].count"``
(``[]`` stands for "an element of").

The durable fields of :class:`RequestSpec` are persisted by :mod:`reqspec_repo._spec.codec`. The
per-operation fields (:data:`PER_OPERATION_FIELDS`) are only carried in memory for one
scheduling operation and are never persisted; :func:`without_per_operation` resets them.
"""

from __future__ import annotations

import uuid as _uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final, TypeAlias

import attrs

from .rules import INT_MAX, INT_MIN, MAX_JSON_DEPTH, Kind, canonical_uuid, rule

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_JSON_DEPTH",
    "PER_OPERATION_FIELDS",
    "Destination",
    "Flavor",
    "ImageMeta",
    "InstanceGroupRef",
    "JsonValue",
    "Limits",
    "MEMPAGES_ANY",
    "MEMPAGES_LARGE",
    "MEMPAGES_SMALL",
    "NumaLimits",
    "UNKNOWN",
    "VirtCpuTopology",
    "NetworkMetadata",
    "NumaCell",
    "NumaTopology",
    "PciRequest",
    "RequestGroup",
    "RequestLevelParams",
    "RequestSpec",
    "RequestedNetwork",
    "SchedulerRetry",
    "canonical_uuid",
    "durable_fields",
    "heal_unknown",
    "without_per_operation",
]

#: A JSON value as stored in image properties. Arrays are lists (not tuples) so that a
#: decoded document compares equal to what was encoded.
JsonValue: TypeAlias = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


# --- Nova's sentinel values -------------------------------------------------------------

#: ``NumaCell.pagesize`` for ``hw:mem_page_size=small`` (nova/virt/hardware.py MEMPAGES_SMALL).
MEMPAGES_SMALL: Final = -1
#: ``NumaCell.pagesize`` for ``hw:mem_page_size=large`` (MEMPAGES_LARGE).
MEMPAGES_LARGE: Final = -2
#: ``NumaCell.pagesize`` for ``hw:mem_page_size=any`` (MEMPAGES_ANY).
MEMPAGES_ANY: Final = -3
#: ``RequestSpec.is_bfv`` / ``project_id`` / ``user_id`` not known (rows older than the
#: RequestSpec version that added them, until healed from the instance).
UNKNOWN: Final = None


def _opt(kind: Kind, path: str, **kw: Any) -> dict[str, Any]:
    """attrs.field arguments of a nullable field (``default=None`` stays visible to mypy)."""
    return rule(kind, path, optional=True, **kw)


# --- durable parts ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Flavor:
    """The flavor the instance was (or is to be) built with (Nova Flavor 1.2)."""

    flavorid: str = attrs.field(**rule("str", "flavor.flavorid"))
    name: str | None = attrs.field(**rule("str", "flavor.name", optional=True))
    memory_mb: int = attrs.field(**rule("int", "flavor.memory_mb", minimum=1))
    vcpus: int = attrs.field(**rule("int", "flavor.vcpus", minimum=1))
    root_gb: int = attrs.field(default=0, **rule("int", "flavor.root_gb"))
    ephemeral_gb: int = attrs.field(default=0, **rule("int", "flavor.ephemeral_gb"))
    swap: int = attrs.field(default=0, **rule("int", "flavor.swap"))
    rxtx_factor: float | None = attrs.field(
        default=1.0, **rule("float", "flavor.rxtx_factor", optional=True)
    )
    vcpu_weight: int | None = attrs.field(default=None, **_opt("int", "flavor.vcpu_weight"))
    is_public: bool = attrs.field(default=True, **rule("bool", "flavor.is_public"))
    extra_specs: Mapping[str, str] = attrs.field(
        factory=dict, **rule("strmap", "flavor.extra_specs")
    )
    #: Nova's database id of the flavor (None: not known).
    id: int | None = attrs.field(default=None, **_opt("int", "flavor.id"))
    disabled: bool = attrs.field(default=False, **rule("bool", "flavor.disabled"))
    #: Projects that may use a private flavor.
    projects: tuple[str, ...] = attrs.field(default=(), **rule("strtuple", "flavor.projects"))
    description: str | None = attrs.field(default=None, **_opt("str", "flavor.description"))
    created_at: datetime | None = attrs.field(default=None, **_opt("datetime", "flavor.created_at"))
    updated_at: datetime | None = attrs.field(default=None, **_opt("datetime", "flavor.updated_at"))
    deleted_at: datetime | None = attrs.field(default=None, **_opt("datetime", "flavor.deleted_at"))
    deleted: bool = attrs.field(default=False, **rule("bool", "flavor.deleted"))


@attrs.frozen(kw_only=True)
class ImageMeta:
    """Image metadata (Nova ImageMeta 1.8); ``properties`` holds the ImageMetaProps
    fields as an open mapping of JSON values. None means "not set"."""

    id: str | None = attrs.field(default=None, **_opt("uuid", "image.id"))
    name: str | None = attrs.field(default=None, **_opt("str", "image.name"))
    status: str | None = attrs.field(default=None, **_opt("str", "image.status"))
    checksum: str | None = attrs.field(default=None, **_opt("str", "image.checksum"))
    owner: str | None = attrs.field(default=None, **_opt("str", "image.owner"))
    size: int | None = attrs.field(default=None, **_opt("int", "image.size"))
    virtual_size: int | None = attrs.field(default=None, **_opt("int", "image.virtual_size"))
    container_format: str | None = attrs.field(default=None, **_opt("str", "image.container_format"))
    disk_format: str | None = attrs.field(default=None, **_opt("str", "image.disk_format"))
    min_ram: int = attrs.field(default=0, **rule("int", "image.min_ram"))
    min_disk: int = attrs.field(default=0, **rule("int", "image.min_disk"))
    created_at: datetime | None = attrs.field(default=None, **_opt("datetime", "image.created_at"))
    updated_at: datetime | None = attrs.field(default=None, **_opt("datetime", "image.updated_at"))
    properties: Mapping[str, JsonValue] = attrs.field(
        factory=dict, **rule("jsonmap", "image.properties")
    )
    visibility: str | None = attrs.field(default=None, **_opt("str", "image.visibility"))
    protected: bool | None = attrs.field(default=None, **_opt("bool", "image.protected"))
    tags: tuple[str, ...] | None = attrs.field(default=None, **_opt("strtuple", "image.tags"))
    direct_url: str | None = attrs.field(default=None, **_opt("str", "image.direct_url"))


@attrs.frozen(kw_only=True)
class VirtCpuTopology:
    """A guest CPU topology (Nova VirtCPUTopology 1.0)."""

    sockets: int | None = attrs.field(default=1, **rule("int", "cpu_topology.sockets", optional=True, minimum=1))
    cores: int | None = attrs.field(default=1, **rule("int", "cpu_topology.cores", optional=True, minimum=1))
    threads: int | None = attrs.field(default=1, **rule("int", "cpu_topology.threads", optional=True, minimum=1))


@attrs.frozen(kw_only=True)
class NumaCell:
    """One guest NUMA cell (Nova InstanceNUMACell 1.6).

    ``pagesize`` is a page size in KiB or one of :data:`MEMPAGES_SMALL`,
    :data:`MEMPAGES_LARGE`, :data:`MEMPAGES_ANY`. Dedicated (pinned) CPUs are in
    ``pcpuset``, shared ones in ``cpuset``.
    """

    id: int = attrs.field(**rule("int", "numa_topology.cells[].id"))
    cpuset: frozenset[int] = attrs.field(
        factory=frozenset, **rule("intset", "numa_topology.cells[].cpuset")
    )
    pcpuset: frozenset[int] = attrs.field(
        factory=frozenset, **rule("intset", "numa_topology.cells[].pcpuset")
    )
    memory: int = attrs.field(**rule("int", "numa_topology.cells[].memory"))
    pagesize: int | None = attrs.field(
        default=None, **_opt("int", "numa_topology.cells[].pagesize", minimum=MEMPAGES_ANY)
    )
    cpu_policy: str | None = attrs.field(default=None, **_opt("str", "numa_topology.cells[].cpu_policy"))
    cpu_thread_policy: str | None = attrs.field(
        default=None, **_opt("str", "numa_topology.cells[].cpu_thread_policy")
    )
    #: Host CPUs reserved for emulator threads (``hw:emulator_threads_policy=isolate``).
    cpuset_reserved: frozenset[int] | None = attrs.field(
        default=None, **_opt("intset", "numa_topology.cells[].cpuset_reserved")
    )
    cpu_topology: VirtCpuTopology | None = attrs.field(
        default=None, **_opt("obj", "numa_topology.cells[].cpu_topology", of=VirtCpuTopology)
    )
    #: Guest CPU -> host CPU (Nova's ``cpu_pinning_raw``; keys are CPU numbers as text).
    cpu_pinning_raw: Mapping[str, int] | None = attrs.field(
        default=None, **_opt("intmap", "numa_topology.cells[].cpu_pinning_raw")
    )


@attrs.frozen(kw_only=True)
class NumaTopology:
    """The requested guest NUMA topology (Nova InstanceNUMATopology 1.3)."""

    cells: tuple[NumaCell, ...] = attrs.field(
        default=(), **rule("objs", "numa_topology.cells", of=NumaCell)
    )
    emulator_threads_policy: str | None = attrs.field(
        default=None, **_opt("str", "numa_topology.emulator_threads_policy")
    )
    #: Nova's database id of the topology (None: not set).
    id: int | None = attrs.field(default=None, **_opt("int", "numa_topology.id"))
    instance_uuid: str | None = attrs.field(default=None, **_opt("uuid", "numa_topology.instance_uuid"))


@attrs.frozen(kw_only=True)
class PciRequest:
    """A request for PCI devices (Nova InstancePCIRequest 1.4).

    ``spec`` is a tuple of matchers mapping strings to strings or None (Nova writes
    ``physical_network: None`` for a port on a tunneled network). ``requester_id`` is the
    Neutron port of an SR-IOV request.
    """

    count: int = attrs.field(**rule("int", "pci_requests[].count", minimum=1))
    spec: tuple[Mapping[str, str | None], ...] = attrs.field(
        default=(), **rule("maptuple", "pci_requests[].spec")
    )
    alias_name: str | None = attrs.field(default=None, **_opt("str", "pci_requests[].alias_name"))
    request_id: str | None = attrs.field(default=None, **_opt("uuid", "pci_requests[].request_id"))
    numa_policy: str | None = attrs.field(default=None, **_opt("str", "pci_requests[].numa_policy"))
    requester_id: str | None = attrs.field(default=None, **_opt("str", "pci_requests[].requester_id"))
    is_new: bool = attrs.field(default=False, **rule("bool", "pci_requests[].is_new"))


@attrs.frozen(kw_only=True)
class NetworkMetadata:
    """Physical networks and tunnelling needed by the requested networks."""

    physnets: frozenset[str] = attrs.field(
        factory=frozenset, **rule("strset", "network_metadata.physnets")
    )
    tunneled: bool = attrs.field(default=False, **rule("bool", "network_metadata.tunneled"))


@attrs.frozen(kw_only=True)
class NumaLimits:
    """NUMA limits of the chosen host (Nova NUMATopologyLimits 1.1)."""

    cpu_allocation_ratio: float = attrs.field(
        **rule("float", "limits.numa_topology.cpu_allocation_ratio")
    )
    ram_allocation_ratio: float = attrs.field(
        **rule("float", "limits.numa_topology.ram_allocation_ratio")
    )
    network_metadata: NetworkMetadata | None = attrs.field(
        default=None, **_opt("obj", "limits.numa_topology.network_metadata", of=NetworkMetadata)
    )


@attrs.frozen(kw_only=True)
class Limits:
    """Resource limits (Nova SchedulerLimits 1.0); None means unlimited."""

    vcpu: int | None = attrs.field(default=None, **_opt("int", "limits.vcpu"))
    disk_gb: int | None = attrs.field(default=None, **_opt("int", "limits.disk_gb"))
    memory_mb: int | None = attrs.field(default=None, **_opt("int", "limits.memory_mb"))
    numa_topology: NumaLimits | None = attrs.field(
        default=None, **_opt("obj", "limits.numa_topology", of=NumaLimits)
    )


@attrs.frozen(kw_only=True)
class InstanceGroupRef:
    """A *reference* to a server group (Nova InstanceGroup 1.11): never its members or
    hosts, which Nova itself does not persist in a spec.

    Build it from a full group with :meth:`from_group`, which drops members and hosts.
    """

    uuid: str = attrs.field(**rule("uuid", "instance_group.uuid"))
    name: str | None = attrs.field(default=None, **_opt("str", "instance_group.name"))
    policy: str | None = attrs.field(default=None, **_opt("str", "instance_group.policy"))
    rules: Mapping[str, str] = attrs.field(
        factory=dict, **rule("strmap", "instance_group.rules")
    )
    id: int | None = attrs.field(default=None, **_opt("int", "instance_group.id"))
    user_id: str | None = attrs.field(default=None, **_opt("str", "instance_group.user_id"))
    project_id: str | None = attrs.field(default=None, **_opt("str", "instance_group.project_id"))
    created_at: datetime | None = attrs.field(default=None, **_opt("datetime", "instance_group.created_at"))
    updated_at: datetime | None = attrs.field(default=None, **_opt("datetime", "instance_group.updated_at"))
    deleted_at: datetime | None = attrs.field(default=None, **_opt("datetime", "instance_group.deleted_at"))
    deleted: bool = attrs.field(default=False, **rule("bool", "instance_group.deleted"))

    @classmethod
    def from_group(
        cls,
        uuid: str | _uuid.UUID,
        name: str | None = None,
        policy: str | None = None,
        rules: Mapping[str, str] | None = None,
        *,
        members: Iterable[str] | None = None,
        hosts: Iterable[str] | None = None,
    ) -> InstanceGroupRef:
        """Reference a full group; ``members`` and ``hosts`` are accepted and dropped."""
        del members, hosts  # deliberately not persisted
        return cls(
            uuid=canonical_uuid(uuid, "instance_group.uuid"), name=name, policy=policy,
            rules=dict(rules or {}),
        )


# --- per-operation parts (never persisted) --------------------------------------------------


@attrs.frozen(kw_only=True)
class SchedulerRetry:
    """Retry bookkeeping of one scheduling operation."""

    num_attempts: int = attrs.field(default=0, **rule("int", "retry.num_attempts"))
    #: (host, node) pairs already tried.
    hosts: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class Destination:
    """A destination requested for one operation (Nova Destination 1.4), e.g. a targeted
    live migration, or a cross-cell resize allowed by policy."""

    host: str | None = attrs.field(default=None, **_opt("str", "requested_destination.host"))
    node: str | None = attrs.field(default=None, **_opt("str", "requested_destination.node"))
    cell: str | None = attrs.field(default=None, **_opt("str", "requested_destination.cell"))
    aggregates: tuple[str, ...] = attrs.field(
        default=(), **rule("strtuple", "requested_destination.aggregates")
    )
    allow_cross_cell_move: bool = attrs.field(
        default=False, **rule("bool", "requested_destination.allow_cross_cell_move")
    )
    forbidden_aggregates: frozenset[str] = attrs.field(
        factory=frozenset, **rule("strset", "requested_destination.forbidden_aggregates")
    )


@attrs.frozen(kw_only=True)
class RequestGroup:
    """A placement request group (one element of ``requested_resources``)."""

    requester_id: str | None = None
    use_same_provider: bool = True
    resources: Mapping[str, int] = attrs.field(factory=dict)
    required_traits: frozenset[str] = attrs.field(
        factory=frozenset, **rule("strset", "requested_resources[].required_traits")
    )
    forbidden_traits: frozenset[str] = attrs.field(
        factory=frozenset, **rule("strset", "requested_resources[].forbidden_traits")
    )
    in_tree: str | None = None
    aggregates: tuple[tuple[str, ...], ...] = ()
    forbidden_aggregates: frozenset[str] = attrs.field(
        factory=frozenset, **rule("strset", "requested_resources[].forbidden_aggregates")
    )
    provider_uuids: tuple[str, ...] = attrs.field(
        default=(), **rule("strtuple", "requested_resources[].provider_uuids")
    )


@attrs.frozen(kw_only=True)
class RequestedNetwork:
    """One requested network / port (Nova NetworkRequest 1.3)."""

    network_id: str | None = None
    address: str | None = None
    port_id: str | None = None
    tag: str | None = None
    pci_request_id: str | None = None
    arq_uuid: str | None = None
    device_profile: str | None = None


@attrs.frozen(kw_only=True)
class RequestLevelParams:
    """Placement parameters that apply to the whole request."""

    root_required: frozenset[str] = attrs.field(
        factory=frozenset, **rule("strset", "request_level_params.root_required")
    )
    root_forbidden: frozenset[str] = attrs.field(
        factory=frozenset, **rule("strset", "request_level_params.root_forbidden")
    )
    same_subtree: tuple[tuple[str, ...], ...] = ()


# --- the spec -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RequestSpec:
    """The scheduling request of one instance (durable part plus per-operation part).

    ``project_id``, ``user_id`` and ``is_bfv`` are None ("unknown", :data:`UNKNOWN`) for
    rows older than the Nova version that started storing them, until healed from the
    instance (as Nova's ``ensure_project_and_user_id`` and its is_bfv heal do).
    ``unknown_nova_fields`` keeps, verbatim, the fields of newer Nova object versions that
    this model does not know, keyed by the object's path (``""`` for the spec itself,
    ``"flavor"``, ``"numa_topology.cells[0]"``...); they are written back on export.
    """

    # durable
    instance_uuid: str = attrs.field(**rule("uuid", "instance_uuid"))
    project_id: str | None = attrs.field(**rule("str", "project_id", optional=True))
    user_id: str | None = attrs.field(**rule("str", "user_id", optional=True))
    availability_zone: str | None = attrs.field(default=None, **_opt("str", "availability_zone"))
    num_instances: int = attrs.field(default=1, **rule("int", "num_instances", minimum=1))
    flavor: Flavor = attrs.field(**rule("obj", "flavor", of=Flavor))
    image: ImageMeta | None = attrs.field(default=None, **_opt("obj", "image", of=ImageMeta))
    numa_topology: NumaTopology | None = attrs.field(
        default=None, **_opt("obj", "numa_topology", of=NumaTopology)
    )
    pci_requests: tuple[PciRequest, ...] = attrs.field(
        default=(), **rule("objs", "pci_requests", of=PciRequest)
    )
    force_hosts: tuple[str, ...] = attrs.field(default=(), **rule("strtuple", "force_hosts"))
    force_nodes: tuple[str, ...] = attrs.field(default=(), **rule("strtuple", "force_nodes"))
    limits: Limits = attrs.field(factory=Limits, **rule("obj", "limits", of=Limits))
    instance_group: InstanceGroupRef | None = attrs.field(
        default=None, **_opt("obj", "instance_group", of=InstanceGroupRef)
    )
    scheduler_hints: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, **rule("hints", "scheduler_hints")
    )
    #: Security group names, or uuids (Nova keeps a uuid-like entry in the uuid field).
    security_groups: tuple[str, ...] = attrs.field(
        default=(), **rule("strtuple", "security_groups")
    )
    is_bfv: bool | None = attrs.field(default=False, **rule("bool", "is_bfv", optional=True))
    unknown_nova_fields: Mapping[str, JsonValue] = attrs.field(
        factory=dict, **rule("jsonmap", "unknown_nova_fields")
    )

    # per-operation (never persisted; see PER_OPERATION_FIELDS)
    retry: SchedulerRetry | None = None
    ignore_hosts: tuple[str, ...] = attrs.field(default=(), **rule("strtuple", "ignore_hosts"))
    requested_destination: Destination | None = None
    requested_resources: tuple[RequestGroup, ...] = ()
    network_metadata: NetworkMetadata | None = None
    requested_networks: tuple[RequestedNetwork, ...] = ()
    request_level_params: RequestLevelParams | None = None


#: Names of the RequestSpec fields that live only for one operation and are never persisted.
PER_OPERATION_FIELDS: Final[tuple[str, ...]] = (
    "retry",
    "ignore_hosts",
    "requested_destination",
    "requested_resources",
    "network_metadata",
    "requested_networks",
    "request_level_params",
)

_PER_OPERATION_DEFAULTS: Final[dict[str, Any]] = {
    a.name: a.default for a in attrs.fields(RequestSpec) if a.name in PER_OPERATION_FIELDS
}
assert set(_PER_OPERATION_DEFAULTS) == set(PER_OPERATION_FIELDS)


def without_per_operation(spec: RequestSpec) -> RequestSpec:
    """Return ``spec`` with every per-operation field reset to its empty default.

    This is exactly what survives a round trip through the codec.
    """
    if all(getattr(spec, name) == default for name, default in _PER_OPERATION_DEFAULTS.items()):
        return spec
    return attrs.evolve(spec, **_PER_OPERATION_DEFAULTS)


def durable_fields() -> tuple[str, ...]:
    """Names of the RequestSpec fields that are persisted, in declaration order."""
    return tuple(a.name for a in attrs.fields(RequestSpec) if a.name not in PER_OPERATION_FIELDS)


def heal_unknown(
    spec: RequestSpec,
    *,
    project_id: str | None = None,
    user_id: str | None = None,
    is_bfv: bool | None = None,
) -> RequestSpec:
    """Fill the fields an old row left unknown (None) from the instance, as Nova's
    ``ensure_project_and_user_id`` and its is_bfv heal do; known values are never changed.
    Returns ``spec`` itself when nothing was unknown or nothing was given."""
    changes: dict[str, Any] = {}
    if spec.project_id is None and project_id is not None:
        changes["project_id"] = project_id
    if spec.user_id is None and user_id is not None:
        changes["user_id"] = user_id
    if spec.is_bfv is None and is_bfv is not None:
        changes["is_bfv"] = is_bfv
    return attrs.evolve(spec, **changes) if changes else spec
