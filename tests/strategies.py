"""Hypothesis strategies building valid RequestSpecs (shared by the codec and DB tests).

Strings avoid U+0000 and lone surrogates (neither can be stored in PostgreSQL jsonb).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from reqspec_repo._spec.model import (
    INT_MAX,
    INT_MIN,
    MEMPAGES_ANY,
    MEMPAGES_LARGE,
    MEMPAGES_SMALL,
    Destination,
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    JsonValue,
    Limits,
    NetworkMetadata,
    NumaCell,
    NumaLimits,
    NumaTopology,
    PciRequest,
    RequestedNetwork,
    RequestGroup,
    RequestLevelParams,
    RequestSpec,
    SchedulerRetry,
    VirtCpuTopology,
)

__all__ = [
    "json_paths",
    "durable_request_specs",
    "flavors",
    "images",
    "instance_uuids",
    "json_values",
    "request_specs",
    "texts",
]

_chars = st.characters(codec="utf-8", exclude_characters="\x00")


def texts(max_size: int = 16) -> st.SearchStrategy[str]:
    return st.text(_chars, max_size=max_size)


def names() -> st.SearchStrategy[str]:
    """Short identifiers, mostly ASCII."""
    return st.one_of(st.from_regex(r"[a-z][a-z0-9_.:-]{0,12}", fullmatch=True), texts(8))


def instance_uuids() -> st.SearchStrategy[str]:
    """Canonical (lowercase, hyphenated) UUID strings."""
    return st.uuids().map(str)


def _sizes(minimum: int = 0) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(minimum, 1 << 20), st.integers(minimum, INT_MAX))


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def json_values() -> st.SearchStrategy[JsonValue]:
    scalars: st.SearchStrategy[JsonValue] = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(INT_MIN, INT_MAX),
        # jsonb keeps floats exact only below 2**53 (the model refuses larger ones)
        st.floats(-(2.0**53) + 1, 2.0**53 - 1, allow_nan=False, allow_infinity=False),
        texts(),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(8), inner, max_size=3),
        max_leaves=8,
    )


_str_maps = st.dictionaries(names(), texts(), max_size=4)

_tzs = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
_datetimes = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=_tzs)


def flavors() -> st.SearchStrategy[Flavor]:
    return st.builds(
        Flavor,
        flavorid=names(),
        name=_opt(texts()),
        memory_mb=_sizes(1),
        vcpus=st.integers(1, 1024),
        root_gb=_sizes(),
        ephemeral_gb=_sizes(),
        swap=_sizes(),
        rxtx_factor=_opt(st.floats(0, 1e6, allow_nan=False) | st.integers(0, 100)),
        vcpu_weight=_opt(st.integers(0, 1 << 16)),
        is_public=st.booleans(),
        extra_specs=_str_maps,
        id=_opt(st.integers(0, 1 << 31)),
        disabled=st.booleans(),
        projects=st.lists(names(), max_size=2).map(tuple),
        description=_opt(texts()),
        created_at=_opt(_datetimes),
        updated_at=_opt(_datetimes),
        deleted_at=_opt(_datetimes),
        deleted=st.booleans(),
    )


def images() -> st.SearchStrategy[ImageMeta]:
    return st.builds(
        ImageMeta,
        id=_opt(st.uuids()),
        name=_opt(texts()),
        status=_opt(st.sampled_from(["active", "queued", "deleted"])),
        checksum=_opt(st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
        owner=_opt(names()),
        size=_opt(_sizes()),
        virtual_size=_opt(_sizes()),
        container_format=_opt(st.sampled_from(["bare", "ovf", "docker"])),
        disk_format=_opt(st.sampled_from(["raw", "qcow2", "iso"])),
        min_ram=_sizes(),
        min_disk=_sizes(),
        created_at=_opt(_datetimes),
        updated_at=_opt(_datetimes),
        properties=st.dictionaries(names(), json_values(), max_size=5),
        visibility=_opt(st.sampled_from(["public", "private", "shared", "community"])),
        protected=_opt(st.booleans()),
        tags=_opt(st.lists(names(), max_size=2).map(tuple)),
        direct_url=_opt(texts()),
    )


_cpusets = st.frozensets(st.integers(0, 1023), max_size=8)

numa_topologies = st.builds(
    NumaTopology,
    cells=st.lists(
        st.builds(
            NumaCell,
            id=st.integers(0, 64),
            cpuset=_cpusets,
            pcpuset=_cpusets,
            memory=_sizes(),
            pagesize=_opt(st.sampled_from([MEMPAGES_SMALL, MEMPAGES_LARGE, MEMPAGES_ANY, 4, 2048, 1048576])),
            cpu_policy=_opt(st.sampled_from(["shared", "dedicated", "mixed"])),
            cpu_thread_policy=_opt(st.sampled_from(["prefer", "isolate", "require"])),
            cpuset_reserved=_opt(_cpusets),
            cpu_topology=_opt(st.builds(
                VirtCpuTopology, sockets=_opt(st.integers(1, 8)), cores=_opt(st.integers(1, 8)),
                threads=_opt(st.integers(1, 2)),
            )),
            cpu_pinning_raw=_opt(st.dictionaries(st.integers(0, 64).map(str), st.integers(0, 1023), max_size=3)),
        ),
        max_size=3,
    ).map(tuple),
    emulator_threads_policy=_opt(st.sampled_from(["share", "isolate"])),
    id=_opt(st.integers(0, 1 << 31)),
    instance_uuid=_opt(instance_uuids()),
)

pci_requests = st.builds(
    PciRequest,
    count=st.integers(1, 8),
    spec=st.lists(st.dictionaries(names(), _opt(texts()), max_size=4), max_size=2).map(tuple),
    alias_name=_opt(names()),
    request_id=_opt(st.uuids()),
    numa_policy=_opt(st.sampled_from(["legacy", "preferred", "required", "socket"])),
    requester_id=_opt(st.uuids().map(str)),
    is_new=st.booleans(),
)

_network_metadata = st.builds(NetworkMetadata, physnets=st.frozensets(names(), max_size=3), tunneled=st.booleans())

limits = st.builds(
    Limits, vcpu=_opt(_sizes()), disk_gb=_opt(_sizes()), memory_mb=_opt(_sizes()),
    numa_topology=_opt(st.builds(
        NumaLimits, cpu_allocation_ratio=st.floats(0, 64, allow_nan=False),
        ram_allocation_ratio=st.floats(0, 64, allow_nan=False) | st.integers(0, 4),
        network_metadata=_opt(_network_metadata),
    )),
)

instance_groups = st.builds(
    InstanceGroupRef.from_group,
    uuid=instance_uuids(),
    name=_opt(names()),
    policy=_opt(st.sampled_from(["affinity", "anti-affinity", "soft-affinity"])),
    rules=_str_maps,
    members=st.lists(instance_uuids(), max_size=2),
    hosts=st.lists(names(), max_size=2),
)
instance_groups = instance_groups | st.builds(
    InstanceGroupRef, uuid=instance_uuids(), name=_opt(names()), policy=_opt(names()), rules=_str_maps,
    id=_opt(st.integers(0, 1 << 31)), user_id=_opt(names()), project_id=_opt(names()),
    created_at=_opt(_datetimes), updated_at=_opt(_datetimes), deleted_at=_opt(_datetimes), deleted=st.booleans(),
)

_str_tuples = st.lists(names(), max_size=3).map(tuple)
_frozen_strs = st.frozensets(names(), max_size=3)

per_operation_values: dict[str, st.SearchStrategy[Any]] = {
    "retry": _opt(
        st.builds(
            SchedulerRetry,
            num_attempts=st.integers(0, 10),
            hosts=st.lists(st.tuples(names(), names()), max_size=2).map(tuple),
        )
    ),
    "ignore_hosts": _str_tuples,
    "requested_destination": _opt(
        st.builds(
            Destination, host=_opt(names()), node=_opt(names()), cell=_opt(names()), aggregates=_str_tuples,
            allow_cross_cell_move=st.booleans(), forbidden_aggregates=_frozen_strs,
        )
    ),
    "requested_resources": st.lists(
        st.builds(
            RequestGroup,
            requester_id=_opt(names()),
            use_same_provider=st.booleans(),
            resources=st.dictionaries(names(), st.integers(1, 64), max_size=3),
            required_traits=_frozen_strs,
            forbidden_traits=_frozen_strs,
            in_tree=_opt(st.uuids().map(str)),
        ),
        max_size=2,
    ).map(tuple),
    "network_metadata": _opt(_network_metadata),
    "requested_networks": st.lists(
        st.builds(
            RequestedNetwork,
            network_id=_opt(st.uuids().map(str)),
            address=_opt(names()),
            port_id=_opt(st.uuids().map(str)),
            tag=_opt(names()),
        ),
        max_size=2,
    ).map(tuple),
    "request_level_params": _opt(
        st.builds(
            RequestLevelParams,
            root_required=_frozen_strs,
            root_forbidden=_frozen_strs,
            same_subtree=st.lists(_str_tuples, max_size=2).map(tuple),
        )
    ),
}


def request_specs(
    *,
    instance_uuid: st.SearchStrategy[str] | None = None,
    per_operation: bool = True,
) -> st.SearchStrategy[RequestSpec]:
    """Valid RequestSpecs over the whole model.

    ``per_operation=False`` leaves the per-operation fields at their defaults, so the spec
    equals its decoded round trip.
    """
    extra = per_operation_values if per_operation else {}
    return st.builds(
        RequestSpec,
        instance_uuid=instance_uuid if instance_uuid is not None else instance_uuids(),
        project_id=_opt(names()),
        user_id=_opt(names()),
        availability_zone=_opt(names()),
        num_instances=st.integers(1, 100),
        flavor=flavors(),
        image=_opt(images()),
        numa_topology=_opt(numa_topologies),
        pci_requests=st.lists(pci_requests, max_size=2).map(tuple),
        force_hosts=_str_tuples,
        force_nodes=_str_tuples,
        limits=limits,
        instance_group=_opt(instance_groups),
        scheduler_hints=st.dictionaries(names(), _str_tuples, max_size=3),
        security_groups=_str_tuples,
        is_bfv=_opt(st.booleans()),
        unknown_nova_fields=st.dictionaries(
            st.sampled_from(["", "flavor", "numa_topology.cells[0]"]),
            st.dictionaries(names(), json_values(), min_size=1, max_size=2), max_size=2,
        ),
        **extra,
    )


def durable_request_specs(
    *, instance_uuid: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[RequestSpec]:
    """RequestSpecs whose per-operation fields are empty (they round-trip exactly)."""
    return request_specs(instance_uuid=instance_uuid, per_operation=False)


def json_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value (the root ``()`` included), for mutation tests."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += json_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += json_paths(item, (*prefix, index))
    return found
