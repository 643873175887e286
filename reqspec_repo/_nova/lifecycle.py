"""The instance lifecycle on top of the store: boot, scheduling, moves, rebuild, delete.

A thin layer over :class:`~reqspec_repo.SpecStore` (where a spec lives) and
:func:`~reqspec_repo.move_specs` (moving it between databases). Each step of an
instance's life is one method of :class:`Lifecycle`:

=================  ===================================================================
``boot``           store the spec(s) and their location records in the API database,
                   before scheduling: one transaction, one instance or a whole
                   multi-create request
``scheduled``      the scheduler placed the instance(s): move their specs into the cell
``prepare_move``   resize / cold migrate / live migrate / evacuate / unshelve: the spec
                   the scheduler must see for *this* operation (:class:`PreparedMove`)
``save_in_flight`` persist a durable change in the middle of an operation without
                   losing the operation's in-memory fields
``move_to_cell``   the operation crosses cells: the spec follows the instance
``confirm_resize`` persist the new flavor (compare-and-swap)
``revert_resize``  keep (or restore) the old flavor; move the spec back if it crossed
                   cells
``rebuild``        persist a new image (compare-and-swap)
``update``         persist other durable changes, e.g. the zone chosen by an unshelve
``delete``         remove the spec and its location wherever it lives; idempotent
=================  ===================================================================

The rules that :meth:`Lifecycle.prepare_move` enforces (each has a regression test in
``tests/test_lifecycle.py``):

* the *constraints* of the original request are kept: server group policy, scheduler
  hints, availability zone, image, NUMA topology, PCI requests, limits;
* everything that belongs to one operation starts empty: no ``retry``, no
  ``ignore_hosts``, no ``requested_destination`` from an earlier operation, and no
  ``force_hosts`` / ``force_nodes`` - forcing a host is a boot-time request only;
* ``num_instances`` is 1: a move is about one instance, whatever the boot asked for;
* a target host given for this operation becomes ``requested_destination``, for this
  operation only; for a resize (or cold migrate) that must not land on the same host,
  the source host goes into ``ignore_hosts``, for this operation only;
* the server group's members and hosts are read fresh through a caller-supplied
  ``group_lookup``; they are never taken from (nor written to) the stored spec.

Per-operation fields are never persisted (the codec drops them), so none of them can
reach the next operation through the database; :class:`PreparedMove` keeps them in
memory for the one operation that owns them.
"""

from __future__ import annotations

import enum
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from .._errors import ConflictError, ReqSpecError
from .._moving.moves import MoveResult, move_specs
from .._spec.model import (
    PER_OPERATION_FIELDS,
    Destination,
    Flavor,
    ImageMeta,
    InstanceGroupRef,
    RequestSpec,
    SchedulerRetry,
    durable_fields,
    without_per_operation,
)
from .._store.config import API
from .._store.locations import Location, SpecStore
from .._store.repository import StoredSpec, normalize_uuid

__all__ = [
    "GroupLookup",
    "InstanceGroup",
    "InstanceGroupLike",
    "Lifecycle",
    "LifecycleError",
    "MoveFailedError",
    "Operation",
    "PreparedMove",
]


class Operation(enum.StrEnum):
    """The operations that schedule an existing instance again."""

    RESIZE = "resize"
    COLD_MIGRATE = "cold_migrate"
    LIVE_MIGRATE = "live_migrate"
    EVACUATE = "evacuate"
    UNSHELVE = "unshelve"


#: Operations that never pick the host the instance is leaving (a resize or a cold
#: migrate may, when the caller allows the same host).
_LEAVES_SOURCE = frozenset(
    {Operation.RESIZE, Operation.COLD_MIGRATE, Operation.LIVE_MIGRATE, Operation.EVACUATE}
)
_SAME_HOST_ALLOWED = frozenset({Operation.RESIZE, Operation.COLD_MIGRATE})

#: Fields of the scheduler's view that the operation itself decides; a save in the
#: middle of the operation does not change them in the view.
_VIEW_OWNED = frozenset({"num_instances", "force_hosts", "force_nodes", "instance_group"})

_DURABLE = frozenset(durable_fields())


class LifecycleError(ReqSpecError, ValueError):
    """A lifecycle step was called wrongly (e.g. a resize without a new flavor)."""


class MoveFailedError(ReqSpecError):
    """Some specs could not be moved; ``result.failed`` says which and why. The specs
    that did not move stayed where they were; those in ``result.moved`` did move."""

    def __init__(self, result: MoveResult) -> None:
        self.result = result
        first = ", ".join(f"{k}: {v}" for k, v in list(result.failed.items())[:3])
        more = f" (and {len(result.failed) - 3} more)" if len(result.failed) > 3 else ""
        super().__init__(f"{len(result.failed)} spec(s) not moved to {result.target!r}: {first}{more}")


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


@attrs.frozen(kw_only=True)
class PreparedMove:
    """One scheduling operation on an existing instance.

    ``spec`` is what the scheduler must use for this operation (per-operation fields
    filled in for it, ``num_instances`` 1, no forced hosts, the new flavor of a resize).
    ``stored`` is the durable spec as stored when the operation was prepared; its
    ``version`` (:attr:`stored_version`) is what the next compare-and-swap write names.
    ``group`` is the server group read fresh (members and hosts) for the scheduler's
    affinity filters, or None. ``old_flavor`` is the flavor stored when the operation
    was prepared (what a reverted resize goes back to).
    """

    operation: Operation
    spec: RequestSpec
    stored: StoredSpec
    source_database: str
    old_flavor: Flavor
    group: InstanceGroup | None = None
    source_host: str | None = None
    new_flavor: Flavor | None = None

    @property
    def instance_uuid(self) -> str:
        return self.stored.instance_uuid

    @property
    def stored_version(self) -> int:
        return self.stored.version

    @property
    def database(self) -> str:
        """Where the spec lives now (after :meth:`Lifecycle.move_to_cell`, the target)."""
        return self.stored.database

    def record_failed_host(self, host: str, node: str | None = None) -> PreparedMove:
        """A reschedule within this operation: remember the failed host in ``retry`` (in
        memory only; the next operation starts with no retry)."""
        retry = self.spec.retry or SchedulerRetry()
        retry = SchedulerRetry(
            num_attempts=retry.num_attempts + 1, hosts=(*retry.hosts, (host, node or host))
        )
        return attrs.evolve(self, spec=attrs.evolve(self.spec, retry=retry))

    def describe(self) -> str:
        """One line: what the scheduler sees for this operation."""
        s = self.spec
        dest = s.requested_destination
        parts = [
            f"{self.operation.value}: flavor {s.flavor.name}",
            f"num_instances {s.num_instances}",
            f"zone {s.availability_zone or '-'}",
            f"group {s.instance_group.policy if s.instance_group else '-'}"
            + (f" (members {len(self.group.members)}, hosts {list(self.group.hosts)})" if self.group else ""),
            f"destination {dest.host if dest and dest.host else '-'}",
            f"ignore_hosts {list(s.ignore_hosts)}",
            f"force_hosts {list(s.force_hosts)}",
            f"retry {s.retry.num_attempts if s.retry else '-'}",
        ]
        return ", ".join(parts)


def _uuid_list(instance_uuids: str | uuid_mod.UUID | Iterable[str | uuid_mod.UUID]) -> list[str]:
    if isinstance(instance_uuids, (str, uuid_mod.UUID)):
        return [normalize_uuid(instance_uuids)]
    return [normalize_uuid(u) for u in instance_uuids]


def _check_durable_changes(changes: Mapping[str, object]) -> None:
    per_op = sorted(set(changes) & set(PER_OPERATION_FIELDS))
    if per_op:
        raise LifecycleError(f"{', '.join(per_op)} belong to one operation and are never persisted")
    if "instance_uuid" in changes:
        raise LifecycleError("the instance uuid of a spec cannot change")
    unknown = sorted(set(changes) - _DURABLE)
    if unknown:
        raise LifecycleError(f"unknown RequestSpec field(s): {', '.join(unknown)}")


class Lifecycle:
    """The lifecycle steps of instances whose specs live in ``store``.

    ``group_lookup`` (optional here, or per call of :meth:`prepare_move`) reads a server
    group as it is now; it is required to prepare a move of an instance in a group.
    ``max_cas_retries`` bounds the read-modify-write retries of :meth:`update` and
    :meth:`rebuild` when no ``expected_version`` is given.
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
        stored, or none (SpecExistsError / BatchError). Per-operation fields of the given
        specs (e.g. the forced hosts' in-memory companions) are not persisted."""
        batch = [specs] if isinstance(specs, RequestSpec) else list(specs)
        if not batch:
            return []
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

    # -- moves of an existing instance ---------------------------------------------------

    def prepare_move(
        self,
        instance_uuid: str | uuid_mod.UUID,
        operation: Operation | str,
        *,
        new_flavor: Flavor | None = None,
        target_host: str | None = None,
        target_node: str | None = None,
        target_cell: str | None = None,
        source_host: str | None = None,
        allow_same_host: bool = False,
        availability_zone: str | None = None,
        group_lookup: GroupLookup | None = None,
    ) -> PreparedMove:
        """Load the stored spec and build the one the scheduler must use for ``operation``.

        * ``new_flavor``: required for a resize, refused otherwise;
        * ``target_host`` / ``target_node`` / ``target_cell``: a destination asked for this
          operation only (``requested_destination``);
        * ``source_host``: the host the instance leaves. Live migrate and evacuate never
          go back to it; resize and cold migrate do not either unless
          ``allow_same_host`` (the ``ignore_hosts`` of this operation only);
        * ``availability_zone``: unshelve into another zone (persist it afterwards with
          :meth:`update` once the unshelve succeeded);
        * ``group_lookup``: overrides the one given to the constructor.
        """
        op = Operation(operation)
        if op is Operation.RESIZE and new_flavor is None:
            raise LifecycleError("a resize needs new_flavor")
        if op is not Operation.RESIZE and new_flavor is not None:
            raise LifecycleError(f"{op.value} does not change the flavor; use a resize")
        if target_node is not None and target_host is None:
            raise LifecycleError("target_node needs target_host")
        if allow_same_host and op not in _SAME_HOST_ALLOWED:
            raise LifecycleError(f"{op.value} never stays on the same host")
        if availability_zone is not None and op is not Operation.UNSHELVE:
            raise LifecycleError("only an unshelve may choose another availability zone")

        stored = self.store.get(instance_uuid)
        durable = without_per_operation(stored.spec)
        group = self._fresh_group(durable, group_lookup)

        ignore: tuple[str, ...] = ()
        if source_host and op in _LEAVES_SOURCE and not (allow_same_host and op in _SAME_HOST_ALLOWED):
            ignore = (source_host,)
        destination = None
        if target_host is not None or target_cell is not None:
            destination = Destination(host=target_host, node=target_node, cell=target_cell)

        view = attrs.evolve(
            durable,
            flavor=new_flavor if new_flavor is not None else durable.flavor,
            num_instances=1,
            force_hosts=(),
            force_nodes=(),
            instance_group=group.reference() if group else None,
            availability_zone=availability_zone if availability_zone is not None else durable.availability_zone,
            ignore_hosts=ignore,
            requested_destination=destination,
            retry=None,
        )
        return PreparedMove(
            operation=op,
            spec=view,
            stored=attrs.evolve(stored, spec=durable),
            source_database=stored.database,
            old_flavor=durable.flavor,
            group=group,
            source_host=source_host,
            new_flavor=new_flavor,
        )

    def _fresh_group(
        self, spec: RequestSpec, group_lookup: GroupLookup | None
    ) -> InstanceGroup | None:
        ref = spec.instance_group
        if ref is None:
            return None
        lookup = group_lookup or self.group_lookup
        if lookup is None:
            raise LifecycleError(
                f"instance {spec.instance_uuid} is in server group {ref.uuid}: pass group_lookup "
                "(members and hosts are read fresh, never from the stored spec)"
            )
        found = lookup(ref.uuid)
        if found is None:  # the group was deleted since: schedule without it
            return None
        return InstanceGroup.of(found, ref)

    def save_in_flight(self, prepared: PreparedMove, **changes: Any) -> PreparedMove:
        """Persist durable ``changes`` in the middle of an operation (compare-and-swap at
        ``prepared.stored_version``) and return the operation with its in-memory fields
        (destination, ignore_hosts, retry, new flavor...) intact and the new version.

        Only the stored spec plus ``changes`` is written, never the scheduler's view."""
        _check_durable_changes(changes)
        durable = attrs.evolve(prepared.stored.spec, **changes)
        saved = self.store.save(durable, expected_version=prepared.stored_version)
        owned = set(_VIEW_OWNED)
        if prepared.operation is Operation.RESIZE:
            owned.add("flavor")
        if prepared.operation is Operation.UNSHELVE:
            owned.add("availability_zone")
        view = attrs.evolve(prepared.spec, **{k: v for k, v in changes.items() if k not in owned})
        return attrs.evolve(prepared, spec=view, stored=saved)

    def move_to_cell(self, prepared: PreparedMove, cell: str) -> PreparedMove:
        """The operation's destination is in ``cell``: move the spec there (the stored
        version travels with it). Raises MoveFailedError if it did not move."""
        result = move_specs(self.store, [prepared.instance_uuid], cell)
        if not result.ok:
            raise MoveFailedError(result)
        return attrs.evolve(prepared, stored=attrs.evolve(prepared.stored, database=cell))

    def confirm_resize(self, prepared: PreparedMove) -> StoredSpec:
        """Persist the new flavor (compare-and-swap at ``prepared.stored_version``; a write
        since then is a ConflictError). The spec stays where it is (the target cell)."""
        if prepared.operation is not Operation.RESIZE or prepared.new_flavor is None:
            raise LifecycleError(f"confirm_resize of a {prepared.operation.value}")
        spec = attrs.evolve(prepared.stored.spec, flavor=prepared.new_flavor)
        return self.store.save(spec, expected_version=prepared.stored_version)

    def revert_resize(self, prepared: PreparedMove) -> StoredSpec:
        """Undo a resize: the spec goes back to the database it was prepared in (if the
        resize crossed cells) and keeps - or gets back - the old flavor."""
        if prepared.operation is not Operation.RESIZE:
            raise LifecycleError(f"revert_resize of a {prepared.operation.value}")
        if self.store.location(prepared.instance_uuid).database != prepared.source_database:
            result = move_specs(self.store, [prepared.instance_uuid], prepared.source_database)
            if not result.ok:
                raise MoveFailedError(result)
        current = self.store.get(prepared.instance_uuid)
        if current.spec.flavor == prepared.old_flavor:
            return current
        restored = attrs.evolve(current.spec, flavor=prepared.old_flavor)
        return self.store.save(restored, expected_version=current.version)

    # -- other durable changes -----------------------------------------------------------

    def rebuild(
        self, instance_uuid: str | uuid_mod.UUID, image: ImageMeta, *, expected_version: int | None = None
    ) -> StoredSpec:
        """Persist the new image of a rebuild (compare-and-swap, see :meth:`update`)."""
        return self.update(instance_uuid, expected_version=expected_version, image=image)

    def update(
        self, instance_uuid: str | uuid_mod.UUID, *, expected_version: int | None = None, **changes: Any
    ) -> StoredSpec:
        """Persist durable ``changes`` (e.g. ``availability_zone`` after an unshelve).

        With ``expected_version`` it is one compare-and-swap: ConflictError if the stored
        spec changed since. Without, it reads the current version and retries a lost
        compare-and-swap up to ``max_cas_retries`` times (the changes are absolute
        values, so re-applying them is safe)."""
        _check_durable_changes(changes)
        attempts = 1 if expected_version is not None else self.max_cas_retries + 1
        for attempt in range(attempts):
            current = self.store.get(instance_uuid)
            spec = attrs.evolve(without_per_operation(current.spec), **changes)
            version = current.version if expected_version is None else expected_version
            try:
                return self.store.save(spec, expected_version=version)
            except ConflictError:
                if attempt + 1 >= attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, instance_uuid: str | uuid_mod.UUID) -> bool:
        """Remove the spec and its location wherever they are; False if already gone."""
        return self.store.destroy(instance_uuid)
