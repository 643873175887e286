"""The operation in flight on an instance, as stored in its spec's row.

A resize or a cold migration lasts from the moment the scheduler picked a destination
until the user confirms or reverts it, possibly days later and from another process.
What a revert needs (the kind of operation, the database the spec came from, the spec
as it was before the operation) is therefore not kept in memory but in the
``operation`` column of the spec's own row:

* written by the same compare-and-swap as the step that starts the operation, so the
  new constraints and the record of the old ones are stored together or not at all;
* copied by a move together with the spec (``seal_outgoing`` / ``upsert_incoming``), so
  it is always where the spec is;
* cleared by the compare-and-swap of the confirm or the revert.

The record is a small JSON object; ``restore`` is the whole spec document as it was
before the operation (with its own ``schema_version``), so a record written before a
model change is read back through the codec's upgrade steps like any stored spec.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import orjson

from .._errors import SpecDecodeError
from .._spec import codec
from .._spec.model import RequestSpec

__all__ = ["InFlightOperation", "Operation", "decode_operation", "encode_operation"]

#: Version of the record's layout (the ``format`` key).
RECORD_FORMAT: Final = 1


class Operation(enum.StrEnum):
    """The operations that schedule an existing instance again."""

    RESIZE = "resize"
    COLD_MIGRATE = "cold_migrate"
    LIVE_MIGRATE = "live_migrate"
    EVACUATE = "evacuate"
    UNSHELVE = "unshelve"


#: Operations that stay in flight until a confirm or a revert (Nova's RESIZED state: a
#: cold migration is confirmed or reverted like a resize).
CONFIRMABLE: Final = frozenset({Operation.RESIZE, Operation.COLD_MIGRATE})


@attrs.frozen(kw_only=True)
class InFlightOperation:
    """A resize or cold migration between its start and its confirm or revert.

    ``restore`` is the durable spec as stored before the operation started: a revert
    takes the flavor, NUMA topology and PCI requests back from it. ``source_database``
    is where the spec lived then: a revert moves it back there. ``reverting`` is set by
    the first write of a revert.
    """

    kind: Operation
    source_database: str
    source_host: str | None
    allow_cross_cell_move: bool
    started_at: datetime
    restore: RequestSpec
    #: A revert has begun (its first write): it is finished by running the revert again,
    #: and a confirm is refused from then on.
    reverting: bool = False

    @property
    def instance_uuid(self) -> str:
        return self.restore.instance_uuid


def encode_operation(operation: InFlightOperation) -> bytes:
    """The JSON document stored in the ``operation`` column."""
    return orjson.dumps(
        {
            "format": RECORD_FORMAT,
            "kind": operation.kind.value,
            "source_database": operation.source_database,
            "source_host": operation.source_host,
            "allow_cross_cell_move": operation.allow_cross_cell_move,
            "started_at": operation.started_at.astimezone(UTC).isoformat(),
            "reverting": operation.reverting,
            "restore": codec.to_document(operation.restore),
        }
    )


def decode_operation(raw: bytes, *, instance_uuid: str, database: str | None = None) -> InFlightOperation:
    """Read a stored record back; SpecDecodeError (path ``$operation...``) if it is not one."""

    def bad(problem: str) -> SpecDecodeError:
        return SpecDecodeError(instance_uuid, [f"operation in flight: {problem}"], database=database)

    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise bad("not a JSON object @ $operation")
    if doc.get("format") != RECORD_FORMAT:
        raise bad(f"unknown record format {doc.get('format')!r} @ $operation.format")
    try:
        kind = Operation(doc["kind"])
        source_database = doc["source_database"]
        source_host = doc["source_host"]
        allow_cross = doc["allow_cross_cell_move"]
        started_at = datetime.fromisoformat(doc["started_at"])
        reverting = doc["reverting"]
        restore_doc = doc["restore"]
    except (KeyError, ValueError, TypeError) as exc:
        raise bad(f"{type(exc).__name__}: {exc} @ $operation") from None
    if kind not in CONFIRMABLE:
        raise bad(f"{kind.value} is never in flight @ $operation.kind")
    if type(source_database) is not str or not (source_host is None or type(source_host) is str):
        raise bad("source_database / source_host must be strings @ $operation")
    if type(allow_cross) is not bool or type(reverting) is not bool:
        raise bad("allow_cross_cell_move and reverting must be booleans @ $operation")
    restore = codec.decode(restore_doc, instance_uuid=instance_uuid, database=database)
    return InFlightOperation(
        kind=kind,
        source_database=source_database,
        source_host=source_host,
        allow_cross_cell_move=allow_cross,
        started_at=started_at,
        restore=restore,
        reverting=reverting,
    )
