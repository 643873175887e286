"""The RequestSpec model: immutable attrs classes mirroring Nova's RequestSpec 1.15.

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

from .rules import INT_MAX, INT_MIN, MAX_JSON_DEPTH, canonical_uuid, rule

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
    "without_per_operation",
]

#: A JSON value as stored in image properties. Arrays are lists (not tuples) so that a
#: decoded document compares equal to what was encoded.
JsonValue: TypeAlias = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]


# --- durable parts ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Flavor:
    """The flavor the instance was (or is to be) built with."""

    flavorid: str = attrs.field(**rule("str", "flavor.flavorid"))
    name: str = attrs.field(**rule("str", "flavor.name"))
    memory_mb: int = attrs.field(**rule("int", "flavor.memory_mb", minimum=1))
    vcpus: int = attrs.field(**rule("int", "flavor.vcpus", minimum=1))
    root_gb: int = attrs.field(default=0, **rule("int", "flavor.root_gb"))
    ephemeral_gb: int = attrs.field(default=0, **rule("int", "flavor.ephemeral_gb"))
    swap: int = attrs.field(default=0, **rule("int", "flavor.swap"))
    rxtx_factor: float = attrs.field(
        default=1.0, **rule("float", "flavor.rxtx_factor")
    )
    vcpu_weight: int | None = attrs.field(
        default=None, **rule("int", "flavor.vcpu_weight", optional=True)
    )
    is_public: bool = attrs.field(default=True, **rule("bool", "flavor.is_public"))
    extra_specs: Mapping[str, str] = attrs.field(
        factory=dict, **rule("strmap", "flavor.extra_specs")
    )


@attrs.frozen(kw_only=True)
class ImageMeta:
    """Image metadata; ``properties`` is an open mapping of JSON values."""

    id: str | None = attrs.field(default=None, **rule("uuid", "image.id", optional=True))
    name: str | None = attrs.field(default=None, **rule("str", "image.name", optional=True))
    status: str | None = attrs.field(default=None, **rule("str", "image.status", optional=True))
    checksum: str | None = attrs.field(
        default=None, **rule("str", "image.checksum", optional=True)
    )
    owner: str | None = attrs.field(default=None, **rule("str", "image.owner", optional=True))
    size: int | None = attrs.field(default=None, **rule("int", "image.size", optional=True))
    virtual_size: int | None = attrs.field(
        default=None, **rule("int", "image.virtual_size", optional=True)
    )
    container_format: str | None = attrs.field(
        default=None, **rule("str", "image.container_format", optional=True)
    )
    disk_format: str | None = attrs.field(
        default=None, **rule("str", "image.disk_format", optional=True)
    )
    min_ram: int = attrs.field(default=0, **rule("int", "image.min_ram"))
    min_disk: int = attrs.field(default=0, **rule("int", "image.min_disk"))
    created_at: datetime | None = attrs.field(default=None, **rule("datetime", "image.created_at", optional=True))
    updated_at: datetime | None = attrs.field(default=None, **rule("datetime", "image.updated_at", optional=True))
    properties: Mapping[str, JsonValue] = attrs.field(
        factory=dict, **rule("jsonmap", "image.properties")
    )


@attrs.frozen(kw_only=True)
class NumaCell:
    """One guest NUMA cell."""

    id: int = attrs.field(**rule("int", "numa_topology.cells[].id"))
    cpuset: frozenset[int] = attrs.field(
        factory=frozenset, **rule("intset", "numa_topology.cells[].cpuset")
    )
    pcpuset: frozenset[int] = attrs.field(
        factory=frozenset, **rule("intset", "numa_topology.cells[].pcpuset")
    )
    memory: int = attrs.field(**rule("int", "numa_topology.cells[].memory"))
    pagesize: int | None = attrs.field(
        default=None, **rule("int", "numa_topology.cells[].pagesize", optional=True)
    )
    cpu_policy: str | None = attrs.field(
        default=None, **rule("str", "numa_topology.cells[].cpu_policy", optional=True)
    )


@attrs.frozen(kw_only=True)
class NumaTopology:
    """The requested guest NUMA topology."""

    cells: tuple[NumaCell, ...] = attrs.field(
        default=(), **rule("objs", "numa_topology.cells", of=NumaCell)
    )


@attrs.frozen(kw_only=True)
class PciRequest:
    """A request for PCI devices (``spec`` is a tuple of str->str matchers)."""

    count: int = attrs.field(**rule("int", "pci_requests[].count", minimum=1))
    spec: tuple[Mapping[str, str], ...] = attrs.field(default=(), **rule("maptuple", "pci_requests[].spec"))
    alias_name: str | None = attrs.field(
        default=None, **rule("str", "pci_requests[].alias_name", optional=True)
    )
    request_id: str | None = attrs.field(default=None, **rule("uuid", "pci_requests[].request_id", optional=True))
    numa_policy: str | None = attrs.field(
        default=None, **rule("str", "pci_requests[].numa_policy", optional=True)
    )


@attrs.frozen(kw_only=True)
class Limits:
    """Resource limits; None means unlimited."""

    vcpu: int | None = attrs.field(default=None, **rule("int", "limits.vcpu", optional=True))
    disk_gb: int | None = attrs.field(
        default=None, **rule("int", "limits.disk_gb", optional=True)
    )
    memory_mb: int | None = attrs.field(
        default=None, **rule("int", "limits.memory_mb", optional=True)
    )


@attrs.frozen(kw_only=True)
class InstanceGroupRef:
    """A *reference* to a server group: never its members or hosts.

    Build it from a full group with :meth:`from_group`, which drops members and hosts.
    """

    uuid: str = attrs.field(**rule("uuid", "instance_group.uuid"))
    name: str | None = attrs.field(
        default=None, **rule("str", "instance_group.name", optional=True)
    )
    policy: str | None = attrs.field(
        default=None, **rule("str", "instance_group.policy", optional=True)
    )
    rules: Mapping[str, str] = attrs.field(
        factory=dict, **rule("strmap", "instance_group.rules")
    )

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
        return cls(uuid=canonical_uuid(uuid, "instance_group.uuid"), name=name, policy=policy, rules=dict(rules or {}))


# --- per-operation parts (never persisted) --------------------------------------------------


@attrs.frozen(kw_only=True)
class SchedulerRetry:
    """Retry bookkeeping of one scheduling operation."""

    num_attempts: int = attrs.field(default=0, **rule("int", "retry.num_attempts"))
    #: (host, node) pairs already tried.
    hosts: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class Destination:
    """A destination requested for one operation (e.g. a targeted live migration)."""

    host: str | None = attrs.field(
        default=None, **rule("str", "requested_destination.host", optional=True)
    )
    node: str | None = attrs.field(
        default=None, **rule("str", "requested_destination.node", optional=True)
    )
    cell: str | None = attrs.field(
        default=None, **rule("str", "requested_destination.cell", optional=True)
    )
    aggregates: tuple[str, ...] = attrs.field(
        default=(), **rule("strtuple", "requested_destination.aggregates")
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


@attrs.frozen(kw_only=True)
class NetworkMetadata:
    """Physical networks and tunnelling needed by the requested networks."""

    physnets: tuple[str, ...] = attrs.field(
        default=(), **rule("strtuple", "network_metadata.physnets")
    )
    tunneled: bool = attrs.field(default=False, **rule("bool", "network_metadata.tunneled"))


@attrs.frozen(kw_only=True)
class RequestedNetwork:
    """One requested network / port."""

    network_id: str | None = None
    address: str | None = None
    port_id: str | None = None
    tag: str | None = None


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
    """The scheduling request of one instance (durable part plus per-operation part)."""

    # durable
    instance_uuid: str = attrs.field(**rule("uuid", "instance_uuid"))
    project_id: str = attrs.field(**rule("str", "project_id"))
    user_id: str = attrs.field(**rule("str", "user_id"))
    availability_zone: str | None = attrs.field(
        default=None, **rule("str", "availability_zone", optional=True)
    )
    num_instances: int = attrs.field(default=1, **rule("int", "num_instances", minimum=1))
    flavor: Flavor = attrs.field(**rule("obj", "flavor", of=Flavor))
    image: ImageMeta | None = attrs.field(
        default=None, **rule("obj", "image", of=ImageMeta, optional=True)
    )
    numa_topology: NumaTopology | None = attrs.field(
        default=None, **rule("obj", "numa_topology", of=NumaTopology, optional=True)
    )
    pci_requests: tuple[PciRequest, ...] = attrs.field(
        default=(), **rule("objs", "pci_requests", of=PciRequest)
    )
    force_hosts: tuple[str, ...] = attrs.field(default=(), **rule("strtuple", "force_hosts"))
    force_nodes: tuple[str, ...] = attrs.field(default=(), **rule("strtuple", "force_nodes"))
    limits: Limits = attrs.field(factory=Limits, **rule("obj", "limits", of=Limits))
    instance_group: InstanceGroupRef | None = attrs.field(
        default=None, **rule("obj", "instance_group", of=InstanceGroupRef, optional=True)
    )
    scheduler_hints: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, **rule("hints", "scheduler_hints")
    )
    security_groups: tuple[str, ...] = attrs.field(
        default=(), **rule("strtuple", "security_groups")
    )
    is_bfv: bool = attrs.field(default=False, **rule("bool", "is_bfv"))

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
