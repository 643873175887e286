"""The typed errors of the lifecycle steps (all ``LifecycleError`` but ``MoveFailedError``)."""

from __future__ import annotations

from .._errors import ReqSpecError, summarize
from .._moving.moves import MoveResult
from .inflight import InFlightOperation, Operation

__all__ = [
    "ConstraintsRequiredError",
    "CrossCellMoveError",
    "LifecycleError",
    "MoveFailedError",
    "NoOperationInFlightError",
    "OperationInFlightError",
    "RebuildNumaConflictError",
    "UnhealedFieldError",
]


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
    """A resize or cold migration of the instance awaits its confirm or revert (or is
    being reverted: only ``revert_resize`` finishes it then)."""

    def __init__(self, instance_uuid: str, in_flight: InFlightOperation) -> None:
        self.instance_uuid = instance_uuid
        self.in_flight = in_flight
        awaits = "is being reverted (run revert_resize to finish)" if in_flight.reverting else (
            "awaits confirm_resize or revert_resize"
        )
        super().__init__(
            f"instance {instance_uuid}: a {in_flight.kind.value} started at "
            f"{in_flight.started_at.isoformat()} {awaits}"
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
        super().__init__(
            f"{len(result.failed)} spec(s) not moved to {result.target!r}: {summarize(result.failed)}"
        )
