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

import math
import re
import uuid as _uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

import attrs

from .._errors import SpecValidationError

__all__ = [
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
_FLOAT_EXACT_LIMIT = float(2**53)

JsonValue: TypeAlias = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]

#: Largest integer accepted anywhere (PostgreSQL bigint / orjson signed 64-bit range).
INT_MAX: Final = (1 << 63) - 1
INT_MIN: Final = -(1 << 63)
#: Deepest nesting accepted inside an image property value.
MAX_JSON_DEPTH: Final = 64

_Validator: TypeAlias = Callable[[Any, Any, Any], None]

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


def _tname(value: object) -> str:
    return type(value).__name__


# --- validators ---------------------------------------------------------------------------
# Each factory takes the field path used in SpecValidationError. Type checks use exact
# classes (``type(v) is int``) so that bools are not taken for integers.


def _int(path: str, *, minimum: int = 0, optional: bool = False) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not int:
            if value is None and optional:
                return
            raise SpecValidationError(path, f"must be an integer, got {_tname(value)}")
        if value < minimum:
            raise SpecValidationError(path, f"must be >= {minimum}, got {value}")
        if value > INT_MAX:
            raise SpecValidationError(path, f"must be <= {INT_MAX}, got {value}")

    return check


def _str(path: str, *, optional: bool = False) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not str and not (optional and value is None):
            raise SpecValidationError(path, f"must be a string, got {_tname(value)}")

    return check


def _bool(path: str) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not bool:
            raise SpecValidationError(path, f"must be a bool, got {_tname(value)}")

    return check


def _instance(path: str, cls: type, *, optional: bool = False) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, cls) and not (optional and value is None):
            raise SpecValidationError(path, f"must be a {cls.__name__}, got {_tname(value)}")

    return check


def _str_tuple(path: str) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not tuple:
            raise SpecValidationError(path, f"must be a tuple of strings, got {_tname(value)}")
        for item in value:
            if type(item) is not str:
                raise SpecValidationError(path, f"must contain only strings, got {_tname(item)}")

    return check


def _instance_tuple(path: str, cls: type) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not tuple:
            raise SpecValidationError(path, f"must be a tuple, got {_tname(value)}")
        for item in value:
            if not isinstance(item, cls):
                raise SpecValidationError(
                    path, f"must contain only {cls.__name__} objects, got {_tname(item)}"
                )

    return check


def _check_str_map(path: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise SpecValidationError(path, f"must be a mapping, got {_tname(value)}")
    for key, item in value.items():
        if type(key) is not str or type(item) is not str:
            raise SpecValidationError(path, f"must map strings to strings, got {key!r}: {item!r}")


def _str_map(path: str) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        _check_str_map(path, value)

    return check


def _int_set(path: str) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not frozenset:
            raise SpecValidationError(path, f"must be a frozenset of integers, got {_tname(value)}")
        for item in value:
            if type(item) is not int or not 0 <= item <= INT_MAX:
                raise SpecValidationError(path, f"must contain non-negative integers, got {item!r}")

    return check


def _str_set(path: str) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not frozenset or any(type(i) is not str for i in value):
            raise SpecValidationError(path, "must be a frozenset of strings")

    return check


def _float(path: str, *, minimum: float = 0.0) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if type(value) is not float and type(value) is not int:
            raise SpecValidationError(path, f"must be a number, got {_tname(value)}")
        if not math.isfinite(value) or value < minimum:
            raise SpecValidationError(path, f"must be a finite number >= {minimum}, got {value}")

    return check


def _json_problem(value: object, where: str, depth: int) -> str | None:
    """Describe why ``value`` is not a storable JSON value, or return None if it is."""
    cls = type(value)
    if cls is str or cls is bool or value is None:
        return None
    if isinstance(value, int) and cls is int:
        return None if INT_MIN <= value <= INT_MAX else f"{where}: integer out of 64-bit range"
    if isinstance(value, float) and cls is float:
        if not math.isfinite(value):
            return f"{where}: non-finite float"
        # jsonb stores numbers as numeric and prints large ones without an exponent; past
        # 2**53 such a float would come back as a different (or unparseable) integer.
        if abs(value) >= _FLOAT_EXACT_LIMIT:
            return f"{where}: float {value!r} is too large to store exactly (use a string)"
        return None
    if depth >= MAX_JSON_DEPTH:
        return f"{where}: nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, list) and cls is list:
        for i, item in enumerate(value):
            problem = _json_problem(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, dict) and cls is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{where}: object key {key!r} is not a string"
            problem = _json_problem(item, f"{where}[{key!r}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{where}: {cls.__name__} is not a JSON value (use str, int, float, bool, None, list, dict)"


def _json_map(path: str) -> _Validator:
    def check(_inst: object, _attr: object, value: object) -> None:
        if not isinstance(value, Mapping):
            raise SpecValidationError(path, f"must be a mapping, got {_tname(value)}")
        for key, item in value.items():
            if type(key) is not str:
                raise SpecValidationError(path, f"keys must be strings, got {key!r}")
            problem = _json_problem(item, f"[{key!r}]", 1)
            if problem:
                raise SpecValidationError(path, problem)

    return check


# --- converters (named functions so that mypy's attrs plugin can type __init__) -------------


def _canonical_uuid(path: str, value: object) -> str:
    if type(value) is str and _CANONICAL_UUID.match(value):
        return value
    if isinstance(value, _uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise SpecValidationError(path, f"must be a UUID string, got {_tname(value)}")
    try:
        return str(_uuid.UUID(value))
    except ValueError:
        raise SpecValidationError(path, f"{value!r} is not a uuid") from None


def canonical_uuid(value: str | _uuid.UUID, field: str = "uuid") -> str:
    """Return ``value`` as a canonical lowercase UUID string, or raise SpecValidationError."""
    return _canonical_uuid(field, value)


def _conv_instance_uuid(value: str | _uuid.UUID) -> str:
    return _canonical_uuid("instance_uuid", value)


def _conv_image_id(value: str | _uuid.UUID | None) -> str | None:
    return None if value is None else _canonical_uuid("image.id", value)


def _conv_pci_request_id(value: str | _uuid.UUID | None) -> str | None:
    return None if value is None else _canonical_uuid("pci_requests[].request_id", value)


def _conv_group_uuid(value: str | _uuid.UUID) -> str:
    return _canonical_uuid("instance_group.uuid", value)


def _conv_float(value: float) -> float:
    # ints become floats so that a decoded document re-encodes byte for byte
    return float(value) if type(value) is int else value


def _aware_utc(path: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise SpecValidationError(path, f"must be a datetime or None, got {_tname(value)}")
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise SpecValidationError(path, "must be timezone-aware")
    return value.astimezone(UTC)


def _conv_created_at(value: datetime | None) -> datetime | None:
    return _aware_utc("image.created_at", value)


def _conv_updated_at(value: datetime | None) -> datetime | None:
    return _aware_utc("image.updated_at", value)


# --- durable parts ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Flavor:
    """The flavor the instance was (or is to be) built with."""

    flavorid: str = attrs.field(validator=_str("flavor.flavorid"))
    name: str = attrs.field(validator=_str("flavor.name"))
    memory_mb: int = attrs.field(validator=_int("flavor.memory_mb", minimum=1))
    vcpus: int = attrs.field(validator=_int("flavor.vcpus", minimum=1))
    root_gb: int = attrs.field(default=0, validator=_int("flavor.root_gb"))
    ephemeral_gb: int = attrs.field(default=0, validator=_int("flavor.ephemeral_gb"))
    swap: int = attrs.field(default=0, validator=_int("flavor.swap"))
    rxtx_factor: float = attrs.field(
        default=1.0, converter=_conv_float, validator=_float("flavor.rxtx_factor")
    )
    vcpu_weight: int | None = attrs.field(
        default=None, validator=_int("flavor.vcpu_weight", optional=True)
    )
    is_public: bool = attrs.field(default=True, validator=_bool("flavor.is_public"))
    extra_specs: Mapping[str, str] = attrs.field(
        factory=dict, validator=_str_map("flavor.extra_specs")
    )


@attrs.frozen(kw_only=True)
class ImageMeta:
    """Image metadata; ``properties`` is an open mapping of JSON values."""

    id: str | None = attrs.field(default=None, converter=_conv_image_id)
    name: str | None = attrs.field(default=None, validator=_str("image.name", optional=True))
    status: str | None = attrs.field(default=None, validator=_str("image.status", optional=True))
    checksum: str | None = attrs.field(
        default=None, validator=_str("image.checksum", optional=True)
    )
    owner: str | None = attrs.field(default=None, validator=_str("image.owner", optional=True))
    size: int | None = attrs.field(default=None, validator=_int("image.size", optional=True))
    virtual_size: int | None = attrs.field(
        default=None, validator=_int("image.virtual_size", optional=True)
    )
    container_format: str | None = attrs.field(
        default=None, validator=_str("image.container_format", optional=True)
    )
    disk_format: str | None = attrs.field(
        default=None, validator=_str("image.disk_format", optional=True)
    )
    min_ram: int = attrs.field(default=0, validator=_int("image.min_ram"))
    min_disk: int = attrs.field(default=0, validator=_int("image.min_disk"))
    created_at: datetime | None = attrs.field(default=None, converter=_conv_created_at)
    updated_at: datetime | None = attrs.field(default=None, converter=_conv_updated_at)
    properties: Mapping[str, JsonValue] = attrs.field(
        factory=dict, validator=_json_map("image.properties")
    )


@attrs.frozen(kw_only=True)
class NumaCell:
    """One guest NUMA cell."""

    id: int = attrs.field(validator=_int("numa_topology.cells[].id"))
    cpuset: frozenset[int] = attrs.field(
        factory=frozenset, validator=_int_set("numa_topology.cells[].cpuset")
    )
    pcpuset: frozenset[int] = attrs.field(
        factory=frozenset, validator=_int_set("numa_topology.cells[].pcpuset")
    )
    memory: int = attrs.field(validator=_int("numa_topology.cells[].memory"))
    pagesize: int | None = attrs.field(
        default=None, validator=_int("numa_topology.cells[].pagesize", optional=True)
    )
    cpu_policy: str | None = attrs.field(
        default=None, validator=_str("numa_topology.cells[].cpu_policy", optional=True)
    )


@attrs.frozen(kw_only=True)
class NumaTopology:
    """The requested guest NUMA topology."""

    cells: tuple[NumaCell, ...] = attrs.field(
        default=(), validator=_instance_tuple("numa_topology.cells", NumaCell)
    )


def _check_pci_spec(_inst: object, _attr: object, value: object) -> None:
    if type(value) is not tuple:
        raise SpecValidationError("pci_requests[].spec", f"must be a tuple, got {_tname(value)}")
    for item in value:
        _check_str_map("pci_requests[].spec", item)


@attrs.frozen(kw_only=True)
class PciRequest:
    """A request for PCI devices (``spec`` is a tuple of str->str matchers)."""

    count: int = attrs.field(validator=_int("pci_requests[].count", minimum=1))
    spec: tuple[Mapping[str, str], ...] = attrs.field(default=(), validator=_check_pci_spec)
    alias_name: str | None = attrs.field(
        default=None, validator=_str("pci_requests[].alias_name", optional=True)
    )
    request_id: str | None = attrs.field(default=None, converter=_conv_pci_request_id)
    numa_policy: str | None = attrs.field(
        default=None, validator=_str("pci_requests[].numa_policy", optional=True)
    )


@attrs.frozen(kw_only=True)
class Limits:
    """Resource limits; None means unlimited."""

    vcpu: int | None = attrs.field(default=None, validator=_int("limits.vcpu", optional=True))
    disk_gb: int | None = attrs.field(
        default=None, validator=_int("limits.disk_gb", optional=True)
    )
    memory_mb: int | None = attrs.field(
        default=None, validator=_int("limits.memory_mb", optional=True)
    )


@attrs.frozen(kw_only=True)
class InstanceGroupRef:
    """A *reference* to a server group: never its members or hosts.

    Build it from a full group with :meth:`from_group`, which drops members and hosts.
    """

    uuid: str = attrs.field(converter=_conv_group_uuid)
    name: str | None = attrs.field(
        default=None, validator=_str("instance_group.name", optional=True)
    )
    policy: str | None = attrs.field(
        default=None, validator=_str("instance_group.policy", optional=True)
    )
    rules: Mapping[str, str] = attrs.field(
        factory=dict, validator=_str_map("instance_group.rules")
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
        return cls(uuid=uuid, name=name, policy=policy, rules=dict(rules or {}))


# --- per-operation parts (never persisted) --------------------------------------------------


@attrs.frozen(kw_only=True)
class SchedulerRetry:
    """Retry bookkeeping of one scheduling operation."""

    num_attempts: int = attrs.field(default=0, validator=_int("retry.num_attempts"))
    #: (host, node) pairs already tried.
    hosts: tuple[tuple[str, str], ...] = ()


@attrs.frozen(kw_only=True)
class Destination:
    """A destination requested for one operation (e.g. a targeted live migration)."""

    host: str | None = attrs.field(
        default=None, validator=_str("requested_destination.host", optional=True)
    )
    node: str | None = attrs.field(
        default=None, validator=_str("requested_destination.node", optional=True)
    )
    cell: str | None = attrs.field(
        default=None, validator=_str("requested_destination.cell", optional=True)
    )
    aggregates: tuple[str, ...] = attrs.field(
        default=(), validator=_str_tuple("requested_destination.aggregates")
    )


@attrs.frozen(kw_only=True)
class RequestGroup:
    """A placement request group (one element of ``requested_resources``)."""

    requester_id: str | None = None
    use_same_provider: bool = True
    resources: Mapping[str, int] = attrs.field(factory=dict)
    required_traits: frozenset[str] = attrs.field(
        factory=frozenset, validator=_str_set("requested_resources[].required_traits")
    )
    forbidden_traits: frozenset[str] = attrs.field(
        factory=frozenset, validator=_str_set("requested_resources[].forbidden_traits")
    )
    in_tree: str | None = None


@attrs.frozen(kw_only=True)
class NetworkMetadata:
    """Physical networks and tunnelling needed by the requested networks."""

    physnets: tuple[str, ...] = attrs.field(
        default=(), validator=_str_tuple("network_metadata.physnets")
    )
    tunneled: bool = attrs.field(default=False, validator=_bool("network_metadata.tunneled"))


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
        factory=frozenset, validator=_str_set("request_level_params.root_required")
    )
    root_forbidden: frozenset[str] = attrs.field(
        factory=frozenset, validator=_str_set("request_level_params.root_forbidden")
    )
    same_subtree: tuple[tuple[str, ...], ...] = ()


# --- the spec -----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RequestSpec:
    """The scheduling request of one instance (durable part plus per-operation part)."""

    # durable
    instance_uuid: str = attrs.field(converter=_conv_instance_uuid)
    project_id: str = attrs.field(validator=_str("project_id"))
    user_id: str = attrs.field(validator=_str("user_id"))
    availability_zone: str | None = attrs.field(
        default=None, validator=_str("availability_zone", optional=True)
    )
    num_instances: int = attrs.field(default=1, validator=_int("num_instances", minimum=1))
    flavor: Flavor = attrs.field(validator=_instance("flavor", Flavor))
    image: ImageMeta | None = attrs.field(
        default=None, validator=_instance("image", ImageMeta, optional=True)
    )
    numa_topology: NumaTopology | None = attrs.field(
        default=None, validator=_instance("numa_topology", NumaTopology, optional=True)
    )
    pci_requests: tuple[PciRequest, ...] = attrs.field(
        default=(), validator=_instance_tuple("pci_requests", PciRequest)
    )
    force_hosts: tuple[str, ...] = attrs.field(default=(), validator=_str_tuple("force_hosts"))
    force_nodes: tuple[str, ...] = attrs.field(default=(), validator=_str_tuple("force_nodes"))
    limits: Limits = attrs.field(factory=Limits, validator=_instance("limits", Limits))
    instance_group: InstanceGroupRef | None = attrs.field(
        default=None, validator=_instance("instance_group", InstanceGroupRef, optional=True)
    )
    scheduler_hints: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    security_groups: tuple[str, ...] = attrs.field(
        default=(), validator=_str_tuple("security_groups")
    )
    is_bfv: bool = attrs.field(default=False, validator=_bool("is_bfv"))

    # per-operation (never persisted; see PER_OPERATION_FIELDS)
    retry: SchedulerRetry | None = None
    ignore_hosts: tuple[str, ...] = attrs.field(default=(), validator=_str_tuple("ignore_hosts"))
    requested_destination: Destination | None = None
    requested_resources: tuple[RequestGroup, ...] = ()
    network_metadata: NetworkMetadata | None = None
    requested_networks: tuple[RequestedNetwork, ...] = ()
    request_level_params: RequestLevelParams | None = None

    @scheduler_hints.validator
    def _check_hints(self, _attr: object, value: object) -> None:
        if not isinstance(value, Mapping):
            raise SpecValidationError("scheduler_hints", f"must be a mapping, got {_tname(value)}")
        for key, hint in value.items():
            if type(key) is not str:
                raise SpecValidationError("scheduler_hints", f"keys must be strings, got {key!r}")
            if type(hint) is not tuple or any(type(h) is not str for h in hint):
                raise SpecValidationError(
                    "scheduler_hints", f"value of {key!r} must be a tuple of strings"
                )


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
