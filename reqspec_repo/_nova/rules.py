"""Nova 34's rules for the lifecycle steps, as pure functions (no I/O): which inputs a
move needs, what Nova repairs in a stored spec before scheduling, when a resize must be
given the NUMA topology and PCI requests of its new flavor, and which cell an operation
may go to. :mod:`reqspec_repo._nova.lifecycle` applies them around the store."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from .._spec.model import (
    PER_OPERATION_FIELDS,
    Flavor,
    NumaTopology,
    PciRequest,
    RequestSpec,
    durable_fields,
    heal_unknown,
)
from .inflight import CONFIRMABLE, Operation
from .lifecycle_errors import ConstraintsRequiredError, LifecycleError, UnhealedFieldError

__all__ = [
    "ALWAYS_LEAVE_HOST",
    "DURABLE",
    "INTERNAL_HINT_PREFIX",
    "NUMA_EXTRA_SPECS",
    "NUMA_IMAGE_PROPERTIES",
    "PCI_EXTRA_SPECS",
    "UNSET",
    "VIEW_OWNED",
    "Unset",
    "cell_rule",
    "changed_keys",
    "check_durable_changes",
    "check_known",
    "check_move_arguments",
    "check_no_internal_hints",
    "internal_hints",
    "relevant",
    "repair",
    "resize_constraints",
]


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


#: "Not given": keep what is stored (``availability_zone=None`` on the other hand unpins).
UNSET: Final = Unset.UNSET

#: Operations that never go back to the host the instance is on (Nova's live migration
#: task and evacuation put ``instance.host`` into ``ignore_hosts`` unconditionally).
ALWAYS_LEAVE_HOST: Final = frozenset({Operation.LIVE_MIGRATE, Operation.EVACUATE})

#: Fields of the scheduler's view that the operation itself decides; a save in the
#: middle of the operation does not change them in the view.
VIEW_OWNED: Final = frozenset({"num_instances", "force_hosts", "force_nodes", "instance_group"})
DURABLE: Final = frozenset(durable_fields())

#: Hints that only Nova's own code sets for one request (``_nova_check_type`` of a
#: rebuild): never persisted.
INTERNAL_HINT_PREFIX: Final = "_nova"

#: Flavor extra specs that feed Nova's ``hardware.numa_get_constraints``.
NUMA_EXTRA_SPECS: Final = (
    "hw:numa_", "hw:cpu_policy", "hw:cpu_thread_policy", "hw:cpu_realtime", "hw:cpu_dedicated_mask",
    "hw:emulator_threads_policy", "hw:mem_page_size", "hw:pmem", "hw:locked_memory",
    "resources:PCPU", "resources:VCPU", "trait:HW_CPU_HYPERTHREADING",
)
#: Image properties that feed it.
NUMA_IMAGE_PROPERTIES: Final = (
    "hw_numa_", "hw_cpu_policy", "hw_cpu_thread_policy", "hw_cpu_realtime", "hw_mem_page_size",
    "hw_locked_memory", "hw_pmem", "trait:HW_CPU_HYPERTHREADING",
)
#: Flavor extra specs that feed Nova's ``pci_request.get_pci_requests_from_flavor``.
PCI_EXTRA_SPECS: Final = ("pci_passthrough:alias", "hw:pci_numa_affinity_policy")


def internal_hints(hints: Mapping[str, object]) -> list[str]:
    return sorted(k for k in hints if k.startswith(INTERNAL_HINT_PREFIX))


def check_no_internal_hints(instance_uuid: str, hints: Mapping[str, object]) -> None:
    internal = internal_hints(hints)
    if internal:
        raise LifecycleError(
            f"instance {instance_uuid}: scheduler_hints[{internal[0]!r}] is Nova's internal, "
            "per-request hint and is never persisted"
        )


def check_durable_changes(instance_uuid: str, changes: Mapping[str, object]) -> None:
    per_op = sorted(set(changes) & set(PER_OPERATION_FIELDS))
    if per_op:
        raise LifecycleError(f"{', '.join(per_op)} belong to one operation and are never persisted")
    if "instance_uuid" in changes:
        raise LifecycleError("the instance uuid of a spec cannot change")
    unknown = sorted(set(changes) - DURABLE)
    if unknown:
        raise LifecycleError(f"unknown RequestSpec field(s): {', '.join(unknown)}")
    hints = changes.get("scheduler_hints")
    if isinstance(hints, Mapping):
        check_no_internal_hints(instance_uuid, hints)


def relevant(mapping: Mapping[str, object], prefixes: tuple[str, ...]) -> dict[str, object]:
    return {k: v for k, v in mapping.items() if k.startswith(prefixes)}


def changed_keys(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def repair(
    spec: RequestSpec,
    group_deleted: bool,
    *,
    project_id: str | None,
    user_id: str | None,
    is_bfv: bool | None,
) -> tuple[RequestSpec, list[str]]:
    """Nova's repairs before scheduling: what changes in the durable spec, and notes."""
    changes: dict[str, Any] = {}
    notes: list[str] = []
    hints = dict(spec.scheduler_hints)
    if group_deleted and spec.instance_group is not None:
        changes["instance_group"] = None
        notes.append(f"server group {spec.instance_group.uuid} was deleted: reference removed")
        if hints.pop("group", None) is not None:
            notes.append("its 'group' scheduler hint removed (LP #1890244)")
    for key in internal_hints(hints):
        del hints[key]
        notes.append(f"internal scheduler hint {key!r} removed (Nova never persists it)")
    if hints != dict(spec.scheduler_hints):
        changes["scheduler_hints"] = hints
    repaired = attrs.evolve(spec, **changes) if changes else spec
    # ensure_project_and_user_id / heal_reqspec_is_bfv: fill what is unknown only.
    healed = heal_unknown(repaired, project_id=project_id, user_id=user_id, is_bfv=is_bfv)
    for field in ("project_id", "user_id", "is_bfv"):
        if getattr(healed, field) != getattr(repaired, field):
            notes.append(f"{field} healed to {getattr(healed, field)!r} from the caller")
    return healed, notes


def check_known(spec: RequestSpec) -> None:
    """Refuse to schedule with a field Nova heals still unknown."""
    hints = {
        "project_id": "pass project_id= (Nova's ensure_project_and_user_id takes the instance's)",
        "user_id": "pass user_id= (Nova's ensure_project_and_user_id takes the instance's)",
        "is_bfv": "pass is_bfv= (Nova's heal_reqspec_is_bfv asks the block device mappings)",
    }
    for field, hint in hints.items():
        if getattr(spec, field) is None:
            raise UnhealedFieldError(spec.instance_uuid, field, hint)


def check_move_arguments(
    op: Operation,
    *,
    current_host: str | None,
    new_flavor: Flavor | None,
    new_numa_topology: object,
    new_pci_requests: object,
    target_host: str | None,
    target_node: str | None,
    allow_cross_cell_move: bool,
    allow_same_host: bool,
    availability_zone: object,
) -> None:
    """Refuse the argument combinations Nova never makes for ``op``."""
    if op is Operation.RESIZE and new_flavor is None:
        raise LifecycleError("a resize needs new_flavor")
    if op is not Operation.RESIZE and (
        new_flavor is not None or new_numa_topology is not UNSET or new_pci_requests is not UNSET
    ):
        raise LifecycleError(f"{op.value} does not change the flavor or its constraints; use a resize")
    if op is Operation.UNSHELVE:
        if current_host is not None:
            raise LifecycleError("an unshelve (of a shelved-offloaded instance) has no current host")
    elif not current_host:
        raise LifecycleError(f"a {op.value} needs current_host (the host the instance is on)")
    if target_node is not None and target_host is None:
        raise LifecycleError("target_node needs target_host")
    if op in ALWAYS_LEAVE_HOST and target_host is not None and target_host == current_host:
        raise LifecycleError(f"a {op.value} never goes back to the host it leaves ({current_host})")
    if allow_same_host and op not in CONFIRMABLE:
        raise LifecycleError(f"{op.value} never stays on the same host")
    if allow_cross_cell_move and op not in CONFIRMABLE:
        raise LifecycleError(f"a {op.value} never leaves the instance's cell")
    if availability_zone is not UNSET and op is not Operation.UNSHELVE:
        raise LifecycleError("only an unshelve may choose another availability zone")


def resize_constraints(
    stored: RequestSpec,
    new_flavor: Flavor,
    new_numa: NumaTopology | None | Unset,
    new_pci: Sequence[PciRequest] | Unset,
) -> tuple[NumaTopology | None, tuple[PciRequest, ...]]:
    """The NUMA topology and PCI requests for the new flavor (LP #1805767, #1983753,
    #1941005): the caller's, required when the new flavor changes their inputs;
    Neutron port requests are always kept from the stored spec."""
    old = stored.flavor
    key = stored.instance_uuid
    if new_flavor.flavorid == old.flavorid:
        raise LifecycleError(  # Nova's CannotResizeToSameFlavor
            f"instance {key}: a resize to its own flavor {old.flavorid!r}; use a cold migration"
        )
    if isinstance(new_numa, Unset):
        changed = changed_keys(
            relevant(old.extra_specs, NUMA_EXTRA_SPECS), relevant(new_flavor.extra_specs, NUMA_EXTRA_SPECS)
        )
        if stored.numa_topology is not None:
            changed += [f for f in ("vcpus", "memory_mb") if getattr(old, f) != getattr(new_flavor, f)]
        if changed:
            raise ConstraintsRequiredError(
                key, "new_numa_topology",
                f"the new flavor {new_flavor.name} changes {', '.join(changed)}; pass the topology "
                "Nova's hardware.numa_get_constraints gives for it (None for none)",
            )
        numa = stored.numa_topology
    else:
        numa = new_numa
    ports = tuple(r for r in stored.pci_requests if r.alias_name is None)
    if isinstance(new_pci, Unset):
        changed = changed_keys(
            relevant(old.extra_specs, PCI_EXTRA_SPECS), relevant(new_flavor.extra_specs, PCI_EXTRA_SPECS)
        )
        if changed:
            raise ConstraintsRequiredError(
                key, "new_pci_requests",
                f"the new flavor {new_flavor.name} changes {', '.join(changed)}; pass the requests "
                "Nova's get_pci_requests_from_flavor gives for it (() for none)",
            )
        return numa, stored.pci_requests
    given = tuple(new_pci)
    if any(not isinstance(r, PciRequest) or r.alias_name is None for r in given):
        raise LifecycleError(
            f"instance {key}: new_pci_requests are the new flavor's alias requests (alias_name set); "
            "Neutron port requests cannot change in a resize and are kept"
        )
    return numa, given + ports


def cell_rule(op: Operation) -> str:
    """Why ``op`` may not leave its cell (for the error message)."""
    if op in CONFIRMABLE:
        return "cross-cell resize and cold migration need allow_cross_cell_move"
    return f"Nova restricts a {op.value} to the instance's current cell"
