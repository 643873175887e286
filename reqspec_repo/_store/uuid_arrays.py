"""Lists of instance uuids as query parameters: one binary ``uuid[]`` value.

A move's statements each name its chunk's instances (``= ANY(%(instance_uuids)s::uuid[])``).
psycopg dumps a list of strings element by element (a quoting check per string) as a
text array, which the server parses again (``array_in``, then ``uuid_in`` per element):
both sides paid for it on every statement. :class:`UuidArray` is dumped in one pass into
PostgreSQL's binary array format instead, which the server copies without parsing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from psycopg import adapt, pq
from psycopg.abc import AdaptContext

from .._errors import SpecValidationError
from .._spec.rules import canonical_uuid

_UUID_OID = 2950
_UUID_ARRAY_OID = 2951
_ELEMENT_LENGTH = "00000010"  # each element: its length (16) as a big-endian int32, in hex


class UuidArray:
    """Canonical instance uuid strings (``normalize_uuid``'s form), sent as one ``uuid[]``."""

    __slots__ = ("uuids",)

    def __init__(self, uuids: Iterable[str]) -> None:
        self.uuids = list(uuids)

    def __len__(self) -> int:
        return len(self.uuids)

    def __repr__(self) -> str:
        return f"UuidArray({self.uuids!r})"


class UuidArrayBinaryDumper(adapt.Dumper):
    format = pq.Format.BINARY
    oid = _UUID_ARRAY_OID

    def dump(self, obj: UuidArray) -> bytes:
        uuids = obj.uuids
        digits = "".join([_ELEMENT_LENGTH + u.replace("-", "") for u in uuids])
        try:
            body = bytes.fromhex(digits) if len(digits) == 40 * len(uuids) else None
        except ValueError:
            body = None
        # (fromhex skips whitespace, hence the length check.) A bad value is a caller's bug:
        # uuids are canonicalised where they come in.
        if body is None or len(body) != 20 * len(uuids):
            raise SpecValidationError("instance_uuid", f"not a canonical uuid: {_first_bad(uuids)!r}")
        if not uuids:
            return struct.pack(">iiI", 0, 0, _UUID_OID)  # no dimensions: the empty array
        # ndim, has-nulls, element type, then the one dimension's length and lower bound
        return struct.pack(">iiIii", 1, 0, _UUID_OID, len(uuids), 1) + body


def _first_bad(uuids: list[str]) -> str:
    """The first value not in :func:`canonical_uuid`'s form (the project's one uuid rule)."""
    for u in uuids:
        try:
            if canonical_uuid(u) == u:
                continue
        except SpecValidationError:
            pass
        return u
    return "?"


def register_uuid_arrays(context: AdaptContext) -> None:
    """Dump :class:`UuidArray` parameters in binary on this connection."""
    context.adapters.register_dumper(UuidArray, UuidArrayBinaryDumper)
