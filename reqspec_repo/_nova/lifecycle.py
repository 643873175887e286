"""The instance lifecycle on top of the store, with Nova 34's rules for every step.

A layer over :class:`~reqspec_repo.SpecStore` (where a spec lives) and
:func:`~reqspec_repo.move_specs` (moving it between databases). Each step of an
instance's life is one method of :class:`Lifecycle`:

========================  ===========================================================
``boot``                  store the spec(s) and their location records in the API
                          database before scheduling (one transaction)
``scheduled``             the scheduler placed the instance(s): move their specs into
                          the cell
``prepare_move``          resize / cold migrate / live migrate / evacuate / unshelve:
                          heal and repair the stored spec (persisted), and build the
                          spec the scheduler must use for *this* operation
``destination_selected``  the scheduler picked a host: a resize persists its new
                          flavor, NUMA topology and PCI requests together with the
                          durable record of the operation (one compare-and-swap); the
                          spec moves to the destination's cell if the operation may
                          cross cells
``move_to_cell``          the same move on its own, under the same cell rule
``in_flight``             the resize / cold migration awaiting confirm or revert, read
                          from the spec's row
``confirm_resize``        end a resize / cold migration, keeping the new constraints;
                          by instance uuid alone, from any process
``revert_resize``         end it the other way: back to the source database with the
                          old flavor, NUMA topology and PCI requests
``rebuild``               persist a new image (refused if it changes the NUMA
                          constraints) and build the scheduler's rebuild check
``save_in_flight``        persist a durable change in the middle of an operation
``update``                persist other durable changes (compare-and-swap)
``delete``                remove the spec and its location wherever it lives
========================  ===========================================================

``docs/lifecycle.md`` says for every step what is read and written where and which Nova
rule it follows; each rule has a regression test in ``tests/test_lifecycle.py``.
"""

from __future__ import annotations

import enum
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import attrs

from .._errors import ConflictError, ReqSpecError
from .._moving.moves import MoveResult, move_specs
from .._spec.model import (
    PER_OPERATION_FIELDS,
    Destination,
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    NetworkMetadata,
    NumaTopology,
    PciRequest,
    RequestedNetwork,
    RequestSpec,
    SchedulerRetry,
    durable_fields,
    without_per_operation,
)
from .._store.config import API
from .._store.locations import Location, SpecStore
from .._store.repository import StoredSpec, normalize_uuid
from .inflight import (
    CONFIRMABLE,
    InFlightOperation,
    Operation,
    decode_operation,
    encode_operation,
)

__all__ = [
    "UNSET",
    "ConstraintsRequiredError",
    "CrossCellMoveError",
    "GroupLookup",
    "InFlightOperation",
    "InstanceGroup",
    "InstanceGroupLike",
    "Lifecycle",
    "LifecycleError",
    "MoveFailedError",
    "NoOperationInFlightError",
    "Operation",
    "OperationInFlightError",
    "PreparedMove",
    "PreparedRebuild",
    "RebuildNumaConflictError",
    "UnhealedFieldError",
]


class _Unset(enum.Enum):
    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


#: "Not given": keep what is stored (``availability_zone=None`` on the other hand unpins).
UNSET: Final = _Unset.UNSET

#: Operations that never go back to the host the instance is on (Nova's live migration
#: task and evacuation put ``instance.host`` into ``ignore_hosts`` unconditionally).
_ALWAYS_LEAVE_HOST: Final = frozenset({Operation.LIVE_MIGRATE, Operation.EVACUATE})
#: Operations Nova restricts to the instance's current cell (``_restrict_request_spec_to_cell``
#: and the live migration task's own restriction).
_IN_CELL_ONLY: Final = frozenset({Operation.LIVE_MIGRATE, Operation.EVACUATE, Operation.UNSHELVE})

#: Fields of the scheduler's view that the operation itself decides; a save in the
#: middle of the operation does not change them in the view.
_VIEW_OWNED: Final = frozenset({"num_instances", "force_hosts", "force_nodes", "instance_group"})
_DURABLE: Final = frozenset(durable_fields())

#: Hints that only Nova's own code sets for one request (``_nova_check_type`` of a
#: rebuild): never persisted.
_INTERNAL_HINT_PREFIX: Final = "_nova"

#: Flavor extra specs that feed Nova's ``hardware.numa_get_constraints``.
_NUMA_EXTRA_SPECS: Final = (
    "hw:numa_", "hw:cpu_policy", "hw:cpu_thread_policy", "hw:cpu_realtime", "hw:cpu_dedicated_mask",
    "hw:emulator_threads_policy", "hw:mem_page_size", "hw:pmem", "hw:locked_memory",
    "resources:PCPU", "resources:VCPU", "trait:HW_CPU_HYPERTHREADING",
)
#: Image properties that feed it.
_NUMA_IMAGE_PROPERTIES: Final = (
    "hw_numa_", "hw_cpu_policy", "hw_cpu_thread_policy", "hw_cpu_realtime", "hw_mem_page_size",
    "hw_locked_memory", "hw_pmem", "trait:HW_CPU_HYPERTHREADING",
)
#: Flavor extra specs that feed Nova's ``pci_request.get_pci_requests_from_flavor``.
_PCI_EXTRA_SPECS: Final = ("pci_passthrough:alias", "hw:pci_numa_affinity_policy")


# --- errors ---------------------------------------------------------------------------


class LifecycleError(ReqSpecError, ValueError):
    """A lifecycle step was called wrongly (e.g. a resize without a new flavor)."""


class CrossCellMoveError(LifecycleError):
    """The operation may not leave the instance's cell; nothing was written or moved."""

    def __init__(self, instance_uuid: str, operation: Operation, source: str, target: str, why: str) -> None:
        self.instance_uuid = instance_uuid
        self.operation = operation
        self.source = source
        self.target = target
        super().__init__(
            f"instance {instance_uuid}: a {operation.value} cannot move from {source!r} to {target!r}: {why}"
        )


class OperationInFlightError(LifecycleError):
    """A resize or cold migration of the instance awaits its confirm or revert."""

    def __init__(self, instance_uuid: str, in_flight: InFlightOperation) -> None:
        self.instance_uuid = instance_uuid
        self.in_flight = in_flight
        super().__init__(
            f"instance {instance_uuid}: a {in_flight.kind.value} started at "
            f"{in_flight.started_at.isoformat()} awaits confirm_resize or revert_resize"
        )


class NoOperationInFlightError(LifecycleError):
    """confirm or revert of an instance with no resize or cold migration in flight."""

    def __init__(self, instance_uuid: str, step: str) -> None:
        self.instance_uuid = instance_uuid
        super().__init__(f"instance {instance_uuid}: {step} but no resize or cold migration is in flight")


class ConstraintsRequiredError(LifecycleError):
    """A step changes what a constraint is computed from, and the caller did not give the
    constraint computed for the new inputs (this library does not re-implement Nova's
    ``hardware`` or ``pci_request`` modules)."""

    def __init__(self, instance_uuid: str, field: str, message: str) -> None:
        self.instance_uuid = instance_uuid
        self.field = field
        super().__init__(f"instance {instance_uuid}: {field} required: {message}")


class RebuildNumaConflictError(LifecycleError):
    """Nova's ImageNUMATopologyRebuildConflict: the new image changes the NUMA constraints."""

    def __init__(self, instance_uuid: str, image_id: str | None) -> None:
        self.instance_uuid = instance_uuid
        self.image_id = image_id
        super().__init__(
            f"instance {instance_uuid}: rebuilding with image {image_id} would change its NUMA "
            "constraints; a rebuild keeps the resources it has (resize or rebuild with another image)"
        )


class UnhealedFieldError(LifecycleError):
    """A field Nova heals before scheduling is still unknown (not stored, not given)."""

    def __init__(self, instance_uuid: str, field: str, hint: str) -> None:
        self.instance_uuid = instance_uuid
        self.field = field
        super().__init__(f"instance {instance_uuid}: {field} is unknown; {hint}")


class MoveFailedError(ReqSpecError):
    """Some specs could not be moved; ``result.failed`` says which and why. The specs
    that did not move stayed where they were; those in ``result.moved`` did move."""

    def __init__(self, result: MoveResult) -> None:
        self.result = result
        first = ", ".join(f"{k}: {v}" for k, v in list(result.failed.items())[:3])
        more = f" (and {len(result.failed) - 3} more)" if len(result.failed) > 3 else ""
        super().__init__(f"{len(result.failed)} spec(s) not moved to {result.target!r}: {first}{more}")


# --- server groups --------------------------------------------------------------------


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

    def reference(self) -> InstanceGroupRef:
        """The reference kept in the spec (no members, no hosts)."""
        return InstanceGroupRef(uuid=self.uuid, name=self.name, policy=self.policy, rules=dict(self.rules))


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
        page = f", pages {cell.pagesize}" if cell.pagesize is not None else ""
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


# --- helpers --------------------------------------------------------------------------


def _uuid_list(instance_uuids: str | uuid_mod.UUID | Iterable[str | uuid_mod.UUID]) -> list[str]:
    if isinstance(instance_uuids, (str, uuid_mod.UUID)):
        return [normalize_uuid(instance_uuids)]
    return [normalize_uuid(u) for u in instance_uuids]


def _internal_hints(hints: Mapping[str, object]) -> list[str]:
    return sorted(k for k in hints if k.startswith(_INTERNAL_HINT_PREFIX))


def _check_no_internal_hints(instance_uuid: str, hints: Mapping[str, object]) -> None:
    internal = _internal_hints(hints)
    if internal:
        raise LifecycleError(
            f"instance {instance_uuid}: scheduler_hints[{internal[0]!r}] is Nova's internal, "
            "per-request hint and is never persisted"
        )


def _check_durable_changes(instance_uuid: str, changes: Mapping[str, object]) -> None:
    per_op = sorted(set(changes) & set(PER_OPERATION_FIELDS))
    if per_op:
        raise LifecycleError(f"{', '.join(per_op)} belong to one operation and are never persisted")
    if "instance_uuid" in changes:
        raise LifecycleError("the instance uuid of a spec cannot change")
    unknown = sorted(set(changes) - _DURABLE)
    if unknown:
        raise LifecycleError(f"unknown RequestSpec field(s): {', '.join(unknown)}")
    hints = changes.get("scheduler_hints")
    if isinstance(hints, Mapping):
        _check_no_internal_hints(instance_uuid, hints)


def _relevant(mapping: Mapping[str, object], prefixes: tuple[str, ...]) -> dict[str, object]:
    return {k: v for k, v in mapping.items() if k.startswith(prefixes)}


def _changed_keys(old: Mapping[str, object], new: Mapping[str, object]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class Lifecycle:
    """The lifecycle steps of instances whose specs live in ``store``.

    ``group_lookup`` (optional here, or per call) reads a server group as it is now; it
    is required to prepare a move of an instance in a group. ``max_cas_retries`` bounds
    the read-modify-write retries of steps that re-read on a lost compare-and-swap.
    """

    def __init__(
        self, store: SpecStore, *, group_lookup: GroupLookup | None = None, max_cas_retries: int = 3
    ) -> None:
        self.store = store
        self.group_lookup = group_lookup
        self.max_cas_retries = max_cas_retries

    def __repr__(self) -> str:
        return f"Lifecycle({self.store!r})"

    # -- boot and scheduling ------------------------------------------------------------

    def boot(
        self, specs: RequestSpec | Sequence[RequestSpec], *, database: str = API
    ) -> list[StoredSpec]:
        """Persist new spec(s) and their location records before scheduling.

        All in one API-database transaction: every spec of a multi-create request is
        stored, or none (SpecExistsError / BatchError). Per-operation fields are not
        persisted; a Nova-internal ``_nova*`` hint is refused (LifecycleError)."""
        batch = [specs] if isinstance(specs, RequestSpec) else list(specs)
        if not batch:
            return []
        for spec in batch:
            if isinstance(spec, RequestSpec):
                _check_no_internal_hints(spec.instance_uuid, spec.scheduler_hints)
        return self.store.create(batch, database=database)

    def scheduled(
        self, instance_uuids: str | uuid_mod.UUID | Iterable[str | uuid_mod.UUID], cell: str
    ) -> MoveResult:
        """The instances were placed in ``cell``: move their specs there (crash-safe,
        one batch). Raises MoveFailedError when any of them did not move."""
        result = move_specs(self.store, _uuid_list(instance_uuids), cell)
        if not result.ok:
            raise MoveFailedError(result)
        return result

    def where(self, instance_uuid: str | uuid_mod.UUID) -> Location:
        """The location record: which database holds the spec."""
        return self.store.location(instance_uuid)

    def in_flight(self, instance_uuid: str | uuid_mod.UUID) -> InFlightOperation | None:
        """The resize or cold migration awaiting confirm / revert, read from the spec's row."""
        _stored, operation = self._read(instance_uuid)
        return operation

    # -- reading and repairing -----------------------------------------------------------

    def _read(self, instance_uuid: str | uuid_mod.UUID) -> tuple[StoredSpec, InFlightOperation | None]:
        stored, raw = self.store.get_with_operation(instance_uuid)
        if raw is None:
            return stored, None
        return stored, decode_operation(raw, instance_uuid=stored.instance_uuid, database=stored.database)

    def _fresh_group(
        self, spec: RequestSpec, group_lookup: GroupLookup | None
    ) -> tuple[InstanceGroup | None, bool]:
        """The group as it is now, and whether a referenced group was deleted."""
        ref = spec.instance_group
        if ref is None:
            return None, False
        lookup = group_lookup or self.group_lookup
        if lookup is None:
            raise LifecycleError(
                f"instance {spec.instance_uuid} is in server group {ref.uuid}: pass group_lookup "
                "(members and hosts are read fresh, never from the stored spec)"
            )
        found = lookup(ref.uuid)
        if found is None:
            return None, True
        return InstanceGroup.of(found, ref), False

    @staticmethod
    def _repaired(
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
        for key in _internal_hints(hints):
            del hints[key]
            notes.append(f"internal scheduler hint {key!r} removed (Nova never persists it)")
        if hints != dict(spec.scheduler_hints):
            changes["scheduler_hints"] = hints
        # ensure_project_and_user_id / heal_reqspec_is_bfv: fill what is unknown only.
        healed = {"project_id": project_id, "user_id": user_id, "is_bfv": is_bfv}
        for field, given in healed.items():
            if getattr(spec, field) is None and given is not None:
                changes[field] = given
                notes.append(f"{field} healed to {given!r} from the caller")
        return (attrs.evolve(spec, **changes) if changes else spec), notes

    @staticmethod
    def _check_known(spec: RequestSpec) -> None:
        hints = {
            "project_id": "pass project_id= (Nova's ensure_project_and_user_id takes the instance's)",
            "user_id": "pass user_id= (Nova's ensure_project_and_user_id takes the instance's)",
            "is_bfv": "pass is_bfv= (Nova's heal_reqspec_is_bfv asks the block device mappings)",
        }
        for field, hint in hints.items():
            if getattr(spec, field) is None:
                raise UnhealedFieldError(spec.instance_uuid, field, hint)

    def _load_repair_persist(
        self,
        instance_uuid: str | uuid_mod.UUID,
        group_lookup: GroupLookup | None,
        heal: Mapping[str, Any],
        change: Callable[[RequestSpec], tuple[RequestSpec, list[str]]] | None = None,
        expected_version: int | None = None,
        schedules: Callable[[], bool] = lambda: True,
    ) -> tuple[StoredSpec, InstanceGroup | None, list[str]]:
        """Read the spec (refusing while an operation is in flight, or while the spec is
        still in the API database), apply the repairs and ``change``, refuse if a healed
        field is still unknown when the step ``schedules``, and persist what changed with
        one compare-and-swap (re-read and retried on a lost race unless
        ``expected_version`` is given)."""
        attempts = 1 if expected_version is not None else self.max_cas_retries + 1
        for attempt in range(attempts):
            stored, operation = self._read(instance_uuid)
            if operation is not None:
                raise OperationInFlightError(stored.instance_uuid, operation)
            if stored.database == API:
                raise LifecycleError(
                    f"instance {stored.instance_uuid} has not been scheduled into a cell yet: nothing to move"
                )
            durable = without_per_operation(stored.spec)
            group, deleted = self._fresh_group(durable, group_lookup)
            repaired, notes = self._repaired(durable, deleted, **heal)
            if change is not None:
                repaired, more = change(repaired)
                notes += more
            if schedules():
                self._check_known(repaired)
            version = stored.version if expected_version is None else expected_version
            if repaired == stored.spec and version == stored.version:
                return attrs.evolve(stored, spec=durable), group, notes
            try:
                saved = self.store.save(repaired, expected_version=version)
            except ConflictError:
                if attempt + 1 >= attempts:
                    raise
                continue
            return saved, group, notes
        raise AssertionError("unreachable")  # pragma: no cover

    # -- moves of an existing instance ---------------------------------------------------

    def prepare_move(
        self,
        instance_uuid: str | uuid_mod.UUID,
        operation: Operation | str,
        *,
        current_host: str | None = None,
        new_flavor: Flavor | None = None,
        new_numa_topology: NumaTopology | None | _Unset = UNSET,
        new_pci_requests: Sequence[PciRequest] | _Unset = UNSET,
        target_host: str | None = None,
        target_node: str | None = None,
        target_cell: str | None = None,
        allow_cross_cell_move: bool = False,
        allow_same_host: bool = False,
        availability_zone: str | None | _Unset = UNSET,
        project_id: str | None = None,
        user_id: str | None = None,
        is_bfv: bool | None = None,
        network_metadata: NetworkMetadata | None = None,
        requested_networks: Sequence[RequestedNetwork] = (),
        group_lookup: GroupLookup | None = None,
    ) -> PreparedMove:
        """Repair the stored spec as Nova does before scheduling, persist the repairs,
        and build the spec the scheduler must use for ``operation``.

        * ``current_host``: the host the instance is on; required for every move but an
          unshelve. Live migration and evacuation always exclude it; resize and cold
          migration unless ``allow_same_host``.
        * ``new_flavor``, ``new_numa_topology``, ``new_pci_requests`` (resize only): the
          new flavor and the constraints the caller computed for it with Nova's
          ``hardware.numa_get_constraints`` and ``get_pci_requests_from_flavor`` (the
          flavor-alias requests; Neutron port requests are kept from the stored spec).
          Required when the new flavor changes what they are computed from.
        * ``target_host`` / ``target_node`` / ``target_cell``: a destination asked for
          this operation only.
        * ``allow_cross_cell_move`` (resize and cold migration): Nova's policy decision
          that this move may leave the cell; the others never may.
        * ``availability_zone`` (unshelve only): a zone to move to, or None to unpin;
          persisted now, as Nova saves it before scheduling. Not given: kept.
        * ``project_id`` / ``user_id`` / ``is_bfv``: the instance's values, used to heal
          unknown stored ones (persisted); scheduling with them unknown is refused.
        * ``network_metadata`` / ``requested_networks``: what Nova's
          ``ensure_network_information`` derives from the instance's network info cache;
          in the scheduler's view for this operation only (never persisted).
        """
        try:
            op = Operation(operation)
        except ValueError:
            known = ", ".join(o.value for o in Operation)
            raise LifecycleError(f"unknown operation {operation!r} (one of: {known})") from None
        key = normalize_uuid(instance_uuid)
        self._check_move_arguments(
            op, current_host=current_host, new_flavor=new_flavor, new_numa_topology=new_numa_topology,
            new_pci_requests=new_pci_requests, target_host=target_host, target_node=target_node,
            allow_cross_cell_move=allow_cross_cell_move, allow_same_host=allow_same_host,
            availability_zone=availability_zone,
        )

        def unshelve_zone(spec: RequestSpec) -> tuple[RequestSpec, list[str]]:
            if isinstance(availability_zone, _Unset) or availability_zone == spec.availability_zone:
                return spec, []
            what = "unpinned" if availability_zone is None else f"set to {availability_zone!r}"
            note = f"availability_zone {what} before scheduling (unshelve, microversion 2.91)"
            return attrs.evolve(spec, availability_zone=availability_zone), [note]

        stored, group, repairs = self._load_repair_persist(
            key, group_lookup, {"project_id": project_id, "user_id": user_id, "is_bfv": is_bfv},
            change=unshelve_zone if op is Operation.UNSHELVE else None,
        )
        cell = stored.database
        durable = stored.spec

        flavor, numa, pci = durable.flavor, durable.numa_topology, durable.pci_requests
        if op is Operation.RESIZE:
            assert new_flavor is not None
            flavor = new_flavor
            numa, pci = self._resize_constraints(durable, new_flavor, new_numa_topology, new_pci_requests)

        if target_cell is not None and target_cell != cell and not (
            op in CONFIRMABLE and allow_cross_cell_move
        ):
            raise CrossCellMoveError(key, op, cell, target_cell, self._cell_rule(op))
        if op in CONFIRMABLE:
            # Nova's MigrationTask: restricted to the current cell unless cross-cell moves
            # are allowed; then the current cell is preferred, or unset for a targeted move.
            targeted = target_host is not None
            if target_cell is not None:
                dest_cell: str | None = target_cell
            elif allow_cross_cell_move and targeted:
                dest_cell = None
            else:
                dest_cell = cell
        else:
            dest_cell = cell  # _restrict_request_spec_to_cell
        destination = Destination(
            host=target_host, node=target_node, cell=dest_cell,
            allow_cross_cell_move=allow_cross_cell_move and op in CONFIRMABLE,
        )

        ignore: tuple[str, ...] = ()
        if current_host is not None and (
            op in _ALWAYS_LEAVE_HOST or (op in CONFIRMABLE and not allow_same_host)
        ):
            ignore = (current_host,)

        view = attrs.evolve(
            durable,
            flavor=flavor,
            numa_topology=numa,
            pci_requests=pci,
            num_instances=1,
            force_hosts=(),
            force_nodes=(),
            instance_group=group.reference() if group else None,
            ignore_hosts=ignore,
            requested_destination=destination,
            retry=None,
            network_metadata=network_metadata,
            requested_networks=tuple(requested_networks),
        )
        return PreparedMove(
            operation=op,
            spec=view,
            stored=stored,
            source_database=cell,
            old_flavor=durable.flavor,
            group=group,
            current_host=current_host,
            new_flavor=new_flavor,
            new_numa_topology=numa if op is Operation.RESIZE else None,
            new_pci_requests=pci if op is Operation.RESIZE else (),
            allow_cross_cell_move=allow_cross_cell_move,
            repairs=tuple(repairs),
        )

    @staticmethod
    def _check_move_arguments(
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
        if op in _ALWAYS_LEAVE_HOST and target_host is not None and target_host == current_host:
            raise LifecycleError(f"a {op.value} never goes back to the host it leaves ({current_host})")
        if allow_same_host and op not in CONFIRMABLE:
            raise LifecycleError(f"{op.value} never stays on the same host")
        if allow_cross_cell_move and op not in CONFIRMABLE:
            raise LifecycleError(f"a {op.value} never leaves the instance's cell")
        if availability_zone is not UNSET and op is not Operation.UNSHELVE:
            raise LifecycleError("only an unshelve may choose another availability zone")

    @staticmethod
    def _resize_constraints(
        stored: RequestSpec,
        new_flavor: Flavor,
        new_numa: NumaTopology | None | _Unset,
        new_pci: Sequence[PciRequest] | _Unset,
    ) -> tuple[NumaTopology | None, tuple[PciRequest, ...]]:
        """The NUMA topology and PCI requests for the new flavor (LP #1805767, #1983753,
        #1941005): the caller's, required when the new flavor changes their inputs;
        Neutron port requests are always kept from the stored spec."""
        old = stored.flavor
        key = stored.instance_uuid
        if isinstance(new_numa, _Unset):
            changed = _changed_keys(
                _relevant(old.extra_specs, _NUMA_EXTRA_SPECS), _relevant(new_flavor.extra_specs, _NUMA_EXTRA_SPECS)
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
        if isinstance(new_pci, _Unset):
            changed = _changed_keys(
                _relevant(old.extra_specs, _PCI_EXTRA_SPECS), _relevant(new_flavor.extra_specs, _PCI_EXTRA_SPECS)
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

    @staticmethod
    def _cell_rule(op: Operation) -> str:
        if op in CONFIRMABLE:
            return "cross-cell resize and cold migration need allow_cross_cell_move"
        return f"Nova restricts a {op.value} to the instance's current cell"

    def _check_cell(self, prepared: PreparedMove, target: str) -> None:
        if target == prepared.database:
            return
        op = prepared.operation
        if op in CONFIRMABLE and prepared.allow_cross_cell_move:
            self.store.topology.database(target)  # unknown cell: ConfigError, nothing written
            return
        raise CrossCellMoveError(prepared.instance_uuid, op, prepared.database, target, self._cell_rule(op))

    def destination_selected(self, prepared: PreparedMove, *, cell: str | None = None) -> PreparedMove:
        """The scheduler picked a destination (in ``cell``; default: the current one).

        A resize or cold migration becomes durable now: one compare-and-swap (at
        ``prepared.stored_version``) writes the new flavor, NUMA topology and PCI
        requests of a resize together with the record of the operation (kind, source
        database, the spec before it), as Nova's conductor saves the spec right after
        ``select_destinations``. Then, if ``cell`` is another cell, the spec moves there
        (only a resize or cold migration with ``allow_cross_cell_move``; anything else
        is a CrossCellMoveError and nothing is written or moved). The other operations
        persist nothing here."""
        target = cell or prepared.database
        self._check_cell(prepared, target)
        if prepared.operation in CONFIRMABLE:
            if prepared.started:
                raise LifecycleError(f"instance {prepared.instance_uuid}: the {prepared.operation.value} already started")
            before = prepared.stored.spec
            after = before
            if prepared.operation is Operation.RESIZE:
                assert prepared.new_flavor is not None
                after = attrs.evolve(
                    before,
                    flavor=prepared.new_flavor,
                    numa_topology=prepared.new_numa_topology,
                    pci_requests=prepared.new_pci_requests,
                )
            record = InFlightOperation(
                kind=prepared.operation,
                source_database=prepared.database,
                source_host=prepared.current_host,
                allow_cross_cell_move=prepared.allow_cross_cell_move,
                started_at=datetime.now(UTC),
                restore=before,
            )
            saved = self.store.save_with_operation(
                after, expected_version=prepared.stored_version, operation=encode_operation(record)
            )
            prepared = attrs.evolve(prepared, stored=saved, started=True)
        if target != prepared.database:
            prepared = self._move(prepared, target)
        return prepared

    def move_to_cell(self, prepared: PreparedMove, cell: str) -> PreparedMove:
        """Move the spec to ``cell`` under the operation's cell rule (see
        :meth:`destination_selected`, which does this too). A resize or cold migration
        must be started first: its record must be durable before the spec leaves."""
        self._check_cell(prepared, cell)
        if cell == prepared.database:
            return prepared
        if not prepared.started:
            raise LifecycleError(
                f"instance {prepared.instance_uuid}: call destination_selected first (the "
                f"{prepared.operation.value} must be durable before the spec leaves its cell)"
            )
        return self._move(prepared, cell)

    def _move(self, prepared: PreparedMove, cell: str) -> PreparedMove:
        result = move_specs(self.store, [prepared.instance_uuid], cell)
        if not result.ok:
            raise MoveFailedError(result)
        return attrs.evolve(prepared, stored=attrs.evolve(prepared.stored, database=cell))

    def save_in_flight(self, prepared: PreparedMove, **changes: Any) -> PreparedMove:
        """Persist durable ``changes`` in the middle of an operation (compare-and-swap at
        ``prepared.stored_version``) and return the operation with its in-memory fields
        (destination, ignore_hosts, retry, new flavor...) intact and the new version.

        Only the stored spec plus ``changes`` is written, never the scheduler's view;
        the record of an operation in flight stays as it is."""
        _check_durable_changes(prepared.instance_uuid, changes)
        durable = attrs.evolve(prepared.stored.spec, **changes)
        saved = self.store.save(durable, expected_version=prepared.stored_version)
        owned = set(_VIEW_OWNED)
        if prepared.operation is Operation.RESIZE:
            owned |= {"flavor", "numa_topology", "pci_requests"}
        if prepared.operation is Operation.UNSHELVE:
            owned.add("availability_zone")
        view = attrs.evolve(prepared.spec, **{k: v for k, v in changes.items() if k not in owned})
        return attrs.evolve(prepared, spec=view, stored=saved)

    # -- the end of a resize or cold migration -------------------------------------------

    @staticmethod
    def _key(target: str | uuid_mod.UUID | PreparedMove) -> str:
        return target.instance_uuid if isinstance(target, PreparedMove) else normalize_uuid(target)

    def confirm_resize(self, target: str | uuid_mod.UUID | PreparedMove) -> StoredSpec:
        """Confirm the resize or cold migration in flight, by instance uuid alone (or the
        PreparedMove): the new constraints stay, the record goes (one compare-and-swap,
        re-read and retried on a lost race). The spec stays where it is."""
        key = self._key(target)
        for attempt in range(self.max_cas_retries + 1):
            stored, operation = self._read(key)
            if operation is None:
                raise NoOperationInFlightError(key, "confirm_resize")
            try:
                return self.store.save_with_operation(stored.spec, expected_version=stored.version, operation=None)
            except ConflictError:
                if attempt >= self.max_cas_retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def revert_resize(self, target: str | uuid_mod.UUID | PreparedMove) -> StoredSpec:
        """Revert the resize or cold migration in flight, by instance uuid alone (or the
        PreparedMove): the spec moves back to the database it came from (with its
        record), then one compare-and-swap restores the old flavor, NUMA topology and
        PCI requests (LP #1785339) and clears the record. Safe to run again after a
        crash at any point: the record stays with the spec until that last write."""
        key = self._key(target)
        lost: ConflictError | None = None
        for _attempt in range(self.max_cas_retries + 2):  # one more: the move back
            stored, operation = self._read(key)
            if operation is None:
                raise NoOperationInFlightError(key, "revert_resize")
            if stored.database != operation.source_database:
                result = move_specs(self.store, [key], operation.source_database)
                if not result.ok:
                    raise MoveFailedError(result)
                continue
            old = operation.restore
            restored = attrs.evolve(
                stored.spec, flavor=old.flavor, numa_topology=old.numa_topology, pci_requests=old.pci_requests
            )
            try:
                return self.store.save_with_operation(restored, expected_version=stored.version, operation=None)
            except ConflictError as exc:
                lost = exc
        if lost is not None:
            raise lost
        raise LifecycleError(f"instance {key}: its spec keeps moving away from the revert's source database")

    # -- rebuild and other durable changes -----------------------------------------------

    def rebuild(
        self,
        instance_uuid: str | uuid_mod.UUID,
        image: ImageMeta,
        *,
        current_host: str,
        current_node: str | None = None,
        numa_topology: NumaTopology | None | _Unset = UNSET,
        expected_version: int | None = None,
        project_id: str | None = None,
        user_id: str | None = None,
        is_bfv: bool | None = None,
        group_lookup: GroupLookup | None = None,
    ) -> PreparedRebuild:
        """Rebuild with ``image`` on ``current_host``, as Nova's API and conductor do.

        A new image is persisted (compare-and-swap, with the repairs of a move) unless
        it would change the NUMA constraints (RebuildNumaConflictError, Nova's
        ``_validate_numa_rebuild``): ``numa_topology`` is what the caller computed for the
        flavor and the new image; without it, a new image whose NUMA-related properties
        differ is refused (ConstraintsRequiredError). The scheduler's check is returned
        in memory only: forced to the current host and node, with the internal
        ``_nova_check_type`` hint - neither is ever persisted."""
        if not current_host:
            raise LifecycleError("a rebuild needs current_host")
        image_changed = False

        def check_and_set(spec: RequestSpec) -> tuple[RequestSpec, list[str]]:
            nonlocal image_changed
            old = spec.image
            # Nova compares image references: the same image id is no new image.
            image_changed = not (old == image or (old is not None and old.id is not None and old.id == image.id))
            if not image_changed:
                return spec, []
            old_props = _relevant(spec.image.properties if spec.image else {}, _NUMA_IMAGE_PROPERTIES)
            new_props = _relevant(image.properties, _NUMA_IMAGE_PROPERTIES)
            if isinstance(numa_topology, _Unset):
                changed = _changed_keys(old_props, new_props)
                if changed:
                    raise ConstraintsRequiredError(
                        spec.instance_uuid, "numa_topology",
                        f"the new image changes {', '.join(changed)}; pass the topology Nova's "
                        "hardware.numa_get_constraints gives for the flavor and the new image",
                    )
            elif numa_topology != spec.numa_topology:
                raise RebuildNumaConflictError(spec.instance_uuid, image.id)
            return attrs.evolve(spec, image=image), []

        stored, group, repairs = self._load_repair_persist(
            instance_uuid, group_lookup, {"project_id": project_id, "user_id": user_id, "is_bfv": is_bfv},
            change=check_and_set, expected_version=expected_version, schedules=lambda: image_changed,
        )
        if not image_changed:  # rebuilt in place, without the scheduler
            return PreparedRebuild(stored=stored, spec=None, repairs=tuple(repairs))
        durable = stored.spec
        view = attrs.evolve(
            durable,
            num_instances=1,
            scheduler_hints={**durable.scheduler_hints, "_nova_check_type": ("rebuild",)},
            force_hosts=(current_host,),
            force_nodes=(current_node or current_host,),
            instance_group=group.reference() if group else None,
            requested_destination=Destination(cell=stored.database),
        )
        return PreparedRebuild(stored=stored, spec=view, repairs=tuple(repairs))

    def update(
        self, instance_uuid: str | uuid_mod.UUID, *, expected_version: int | None = None, **changes: Any
    ) -> StoredSpec:
        """Persist durable ``changes``.

        With ``expected_version`` it is one compare-and-swap: ConflictError if the stored
        spec changed since. Without, it reads the current version and retries a lost
        compare-and-swap up to ``max_cas_retries`` times (the changes are absolute
        values, so re-applying them is safe)."""
        key = normalize_uuid(instance_uuid)
        _check_durable_changes(key, changes)
        attempts = 1 if expected_version is not None else self.max_cas_retries + 1
        for attempt in range(attempts):
            current = self.store.get(key)
            spec = attrs.evolve(without_per_operation(current.spec), **changes)
            version = current.version if expected_version is None else expected_version
            try:
                return self.store.save(spec, expected_version=version)
            except ConflictError:
                if attempt + 1 >= attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, instance_uuid: str | uuid_mod.UUID) -> bool:
        """Remove the spec and its location wherever they are (with any operation in
        flight); False if already gone."""
        return self.store.destroy(instance_uuid)
