"""What the lifecycle steps hand to the caller: the scheduler's view of one operation
(:class:`PreparedMove`, :class:`PreparedRebuild`), server groups read fresh, and one-line
descriptions for logs and the demo. No I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from .._spec.model import (
    MEMPAGES_ANY,
    MEMPAGES_LARGE,
    MEMPAGES_SMALL,
    Flavor,
    InstanceGroupRef,
    NumaTopology,
    PciRequest,
    RequestSpec,
    SchedulerRetry,
)
from .._store.repository import StoredSpec
from .inflight import Operation

__all__ = [
    "GroupLookup",
    "InstanceGroup",
    "InstanceGroupLike",
    "PreparedMove",
    "PreparedRebuild",
    "describe_numa",
    "describe_pci",
    "describe_view",
]


class InstanceGroupLike(Protocol):
    """What ``group_lookup`` returns: anything with these attributes (Nova's
    ``InstanceGroup`` object fits). ``name``, ``policy`` and ``rules`` are read when present."""

    @property
    def uuid(self) -> Any: ...

    @property
    def members(self) -> Iterable[str] | None: ...

    @property
    def hosts(self) -> Iterable[str] | None: ...


#: Reads a server group as it is *now*; None when the group no longer exists.
GroupLookup = Callable[[str], InstanceGroupLike | None]


@attrs.frozen(kw_only=True)
class InstanceGroup:
    """A server group as read fresh for one operation (members and hosts included)."""

    uuid: str
    name: str | None = None
    policy: str | None = None
    rules: Mapping[str, str] = attrs.field(factory=dict)
    members: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, found: InstanceGroupLike, stored: InstanceGroupRef) -> InstanceGroup:
        """Snapshot a looked-up group; attributes it lacks come from the stored reference."""
        name = getattr(found, "name", stored.name)
        policy = getattr(found, "policy", stored.policy)
        rules = getattr(found, "rules", None)
        return cls(
            uuid=str(found.uuid),
            name=None if name is None else str(name),
            policy=None if policy is None else str(policy),
            rules={str(k): str(v) for k, v in dict(rules if rules is not None else stored.rules).items()},
            members=tuple(str(m) for m in (found.members or ())),
            hosts=tuple(str(h) for h in (found.hosts or ())),
        )

    def reference(self, stored: InstanceGroupRef | None = None) -> InstanceGroupRef:
        """The reference for the spec (no members, no hosts): the ``stored`` one (its
        record fields kept) with the name, policy and rules read now."""
        if stored is None:
            return InstanceGroupRef(uuid=self.uuid, name=self.name, policy=self.policy, rules=dict(self.rules))
        return attrs.evolve(stored, name=self.name, policy=self.policy, rules=dict(self.rules))


# --- what a step returns --------------------------------------------------------------


@attrs.frozen(kw_only=True)
class PreparedMove:
    """One scheduling operation on an existing instance.

    ``spec`` is what the scheduler must use for this operation. ``stored`` is the
    durable spec as stored now (after the repairs ``prepare_move`` persisted, and after
    ``destination_selected``); its ``version`` is what the next compare-and-swap names.
    ``repairs`` says what ``prepare_move`` changed in storage, and why. For a resize,
    ``new_flavor`` / ``new_numa_topology`` / ``new_pci_requests`` are what
    ``destination_selected`` persists. ``started`` is true once the operation is
    durable (resize and cold migration: recorded with the spec until confirm / revert).
    """

    operation: Operation
    spec: RequestSpec
    stored: StoredSpec
    source_database: str
    old_flavor: Flavor
    group: InstanceGroup | None = None
    current_host: str | None = None
    new_flavor: Flavor | None = None
    new_numa_topology: NumaTopology | None = None
    new_pci_requests: tuple[PciRequest, ...] = ()
    allow_cross_cell_move: bool = False
    repairs: tuple[str, ...] = ()
    started: bool = False

    @property
    def instance_uuid(self) -> str:
        return self.stored.instance_uuid

    @property
    def stored_version(self) -> int:
        return self.stored.version

    @property
    def database(self) -> str:
        """Where the spec lives now (after a move, the target)."""
        return self.stored.database

    def record_failed_host(self, host: str, node: str | None = None) -> PreparedMove:
        """A reschedule within this operation (in memory only; the next operation starts
        clean): a live migration adds the host to ``ignore_hosts`` (Nova's attempted
        hosts), the others to ``retry``."""
        if self.operation is Operation.LIVE_MIGRATE:
            ignore = self.spec.ignore_hosts if host in self.spec.ignore_hosts else (*self.spec.ignore_hosts, host)
            return attrs.evolve(self, spec=attrs.evolve(self.spec, ignore_hosts=ignore))
        retry = self.spec.retry or SchedulerRetry()
        retry = SchedulerRetry(
            num_attempts=retry.num_attempts + 1, hosts=(*retry.hosts, (host, node or host))
        )
        return attrs.evolve(self, spec=attrs.evolve(self.spec, retry=retry))

    def describe(self) -> str:
        """One line: what the scheduler sees for this operation."""
        return f"{self.operation.value}: {describe_view(self.spec, self.group)}"


@attrs.frozen(kw_only=True)
class PreparedRebuild:
    """A rebuild: ``stored`` holds the new image; ``spec`` is the scheduler's check that
    the current host still fits (forced to it, ``_nova_check_type`` hint), in memory
    only, or None when the image did not change (no scheduling, as in Nova)."""

    stored: StoredSpec
    spec: RequestSpec | None
    repairs: tuple[str, ...] = ()


#: Nova's page size classes (``hw:mem_page_size`` small / large / any).
_PAGE_CLASSES = {MEMPAGES_SMALL: "small", MEMPAGES_LARGE: "large", MEMPAGES_ANY: "any"}


def _cpus(values: frozenset[int]) -> str:
    return ",".join(str(v) for v in sorted(values)) or "-"


def describe_numa(topology: NumaTopology | None) -> str:
    """A short text of a NUMA topology: cells with CPUs, memory and page size."""
    if topology is None:
        return "none"
    cells = []
    for cell in topology.cells:
        cpus = f"pcpus {_cpus(cell.pcpuset)}" if cell.pcpuset else f"cpus {_cpus(cell.cpuset)}"
        threads = f" ({cell.cpu_thread_policy})" if cell.cpu_thread_policy else ""
        page = "" if cell.pagesize is None else f", pages {_PAGE_CLASSES.get(cell.pagesize, f'{cell.pagesize} KiB')}"
        cells.append(f"[{cell.id}: {cpus}{threads}, {cell.memory} MB{page}]")
    emulator = f" emulator threads {topology.emulator_threads_policy}" if topology.emulator_threads_policy else ""
    return (" ".join(cells) or "no cells") + emulator


def describe_pci(requests: Sequence[PciRequest]) -> str:
    """A short text of PCI requests: flavor aliases and Neutron ports."""
    if not requests:
        return "none"
    return ", ".join(
        f"alias {r.alias_name} x{r.count}" if r.alias_name is not None else f"port x{r.count}"
        for r in requests
    )


def describe_view(spec: RequestSpec, group: InstanceGroup | None = None) -> str:
    """What a scheduler's view asks for, on one line."""
    dest = spec.requested_destination
    parts = [
        f"flavor {spec.flavor.name}",
        f"numa {describe_numa(spec.numa_topology)}",
        f"pci {describe_pci(spec.pci_requests)}",
        f"num_instances {spec.num_instances}",
        f"zone {spec.availability_zone or '-'}",
        f"group {spec.instance_group.policy if spec.instance_group else '-'}"
        + (f" (members {len(group.members)}, hosts {list(group.hosts)})" if group else ""),
        f"destination {dest.host if dest and dest.host else '-'}",
        f"cell {dest.cell if dest and dest.cell else '-'}",
        f"ignore_hosts {list(spec.ignore_hosts)}",
        f"force_hosts {list(spec.force_hosts)}",
        f"retry {spec.retry.num_attempts if spec.retry else '-'}",
    ]
    return ", ".join(parts)
