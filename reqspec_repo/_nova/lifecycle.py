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
rule it follows; each rule has a regression test in ``tests/test_lifecycle.py``. The
rules themselves are pure functions in :mod:`.rules`; what a step returns is in
:mod:`.prepared`, its errors in :mod:`.lifecycle_errors`, the durable record of an
operation in flight in :mod:`.inflight`.
"""
from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from .._errors import ConflictError
from .._moving.moves import MoveResult, move_specs
from .._spec.model import (
    Destination,
    Flavor,
    ImageMeta,
    NetworkMetadata,
    NumaTopology,
    PciRequest,
    RequestedNetwork,
    RequestSpec,
    without_per_operation,
)
from .._store.config import API
from .._store.locations import Location, SpecStore
from .._store.repository import StoredSpec, normalize_uuid
from .inflight import CONFIRMABLE, InFlightOperation, Operation, decode_operation, encode_operation
from .lifecycle_errors import (
    ConstraintsRequiredError,
    CrossCellMoveError,
    LifecycleError,
    MoveFailedError,
    NoOperationInFlightError,
    OperationInFlightError,
    RebuildNumaConflictError,
    UnhealedFieldError,
)
from .prepared import (
    GroupLookup,
    InstanceGroup,
    InstanceGroupLike,
    PreparedMove,
    PreparedRebuild,
    describe_numa,
    describe_pci,
    describe_view,
)
from .rules import (
    ALWAYS_LEAVE_HOST,
    NUMA_IMAGE_PROPERTIES,
    UNSET,
    VIEW_OWNED,
    Unset,
    cell_rule,
    changed_keys,
    check_durable_changes,
    check_known,
    check_move_arguments,
    check_no_internal_hints,
    relevant,
    repair,
    resize_constraints,
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
    "describe_numa",
    "describe_pci",
    "describe_view",
]


def _uuid_list(instance_uuids: str | uuid_mod.UUID | Iterable[str | uuid_mod.UUID]) -> list[str]:
    if isinstance(instance_uuids, (str, uuid_mod.UUID)):
        return [normalize_uuid(instance_uuids)]
    return [normalize_uuid(u) for u in instance_uuids]


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
                check_no_internal_hints(spec.instance_uuid, spec.scheduler_hints)
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
            repaired, notes = repair(durable, deleted, **heal)
            if change is not None:
                repaired, more = change(repaired)
                notes += more
            if schedules():
                check_known(repaired)
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
        new_numa_topology: NumaTopology | None | Unset = UNSET,
        new_pci_requests: Sequence[PciRequest] | Unset = UNSET,
        target_host: str | None = None,
        target_node: str | None = None,
        target_cell: str | None = None,
        allow_cross_cell_move: bool = False,
        allow_same_host: bool = False,
        availability_zone: str | None | Unset = UNSET,
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
        check_move_arguments(
            op, current_host=current_host, new_flavor=new_flavor, new_numa_topology=new_numa_topology,
            new_pci_requests=new_pci_requests, target_host=target_host, target_node=target_node,
            allow_cross_cell_move=allow_cross_cell_move, allow_same_host=allow_same_host,
            availability_zone=availability_zone,
        )

        def unshelve_zone(spec: RequestSpec) -> tuple[RequestSpec, list[str]]:
            if isinstance(availability_zone, Unset) or availability_zone == spec.availability_zone:
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
            numa, pci = resize_constraints(durable, new_flavor, new_numa_topology, new_pci_requests)

        if target_cell is not None and target_cell != cell and not (
            op in CONFIRMABLE and allow_cross_cell_move
        ):
            raise CrossCellMoveError(key, op, cell, target_cell, cell_rule(op))
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
            op in ALWAYS_LEAVE_HOST or (op in CONFIRMABLE and not allow_same_host)
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
            instance_group=group.reference(durable.instance_group) if group else None,
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




    def _check_cell(self, prepared: PreparedMove, target: str) -> None:
        if target == prepared.database:
            return
        op = prepared.operation
        if op in CONFIRMABLE and prepared.allow_cross_cell_move:
            self.store.topology.database(target)  # unknown cell: ConfigError, nothing written
            return
        raise CrossCellMoveError(prepared.instance_uuid, op, prepared.database, target, cell_rule(op))

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
        check_durable_changes(prepared.instance_uuid, changes)
        durable = attrs.evolve(prepared.stored.spec, **changes)
        saved = self.store.save(durable, expected_version=prepared.stored_version)
        owned = set(VIEW_OWNED)
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
        re-read and retried on a lost race). The spec stays where it is. Refused
        (OperationInFlightError) once a revert has begun."""
        key = self._key(target)
        for attempt in range(self.max_cas_retries + 1):
            stored, operation = self._read(key)
            if operation is None:
                raise NoOperationInFlightError(key, "confirm_resize")
            if operation.reverting:
                raise OperationInFlightError(key, operation)
            try:
                return self.store.save_with_operation(stored.spec, expected_version=stored.version, operation=None)
            except ConflictError:
                if attempt >= self.max_cas_retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def revert_resize(self, target: str | uuid_mod.UUID | PreparedMove) -> StoredSpec:
        """Revert the resize or cold migration in flight, by instance uuid alone (or the
        PreparedMove), in three steps: mark the record ``reverting`` (compare-and-swap;
        from then on a confirm is refused), move the spec back to the database it came
        from (with its record), and one compare-and-swap that restores the old flavor,
        NUMA topology and PCI requests (LP #1785339) and clears the record. Safe to run
        again after a crash at any point, from any process: the record stays with the
        spec until that last write."""
        key = self._key(target)
        lost: ConflictError | None = None
        for _attempt in range(self.max_cas_retries + 3):  # two more: the mark and the move back
            stored, operation = self._read(key)
            if operation is None:
                raise NoOperationInFlightError(key, "revert_resize")
            try:
                if not operation.reverting:
                    marked = attrs.evolve(operation, reverting=True)
                    self.store.save_with_operation(
                        stored.spec, expected_version=stored.version, operation=encode_operation(marked)
                    )
                    continue
                if stored.database != operation.source_database:
                    result = move_specs(self.store, [key], operation.source_database)
                    if not result.ok:
                        raise MoveFailedError(result)
                    continue
                old = operation.restore
                restored = attrs.evolve(
                    stored.spec, flavor=old.flavor, numa_topology=old.numa_topology, pci_requests=old.pci_requests
                )
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
        numa_topology: NumaTopology | None | Unset = UNSET,
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
            old_props = relevant(spec.image.properties if spec.image else {}, NUMA_IMAGE_PROPERTIES)
            new_props = relevant(image.properties, NUMA_IMAGE_PROPERTIES)
            if isinstance(numa_topology, Unset):
                changed = changed_keys(old_props, new_props)
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
            instance_group=group.reference(durable.instance_group) if group else None,
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
        check_durable_changes(key, changes)
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
