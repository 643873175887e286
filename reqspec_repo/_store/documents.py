"""How spec documents cross the wire: already-encoded JSON bytes in, raw JSON bytes out.

The codec does the JSON work with orjson exactly once per document; psycopg's own JSON
adaptation (json.dumps / json.loads) is bypassed on both sides.
"""

from __future__ import annotations

from typing import Any

from psycopg import adapt
from psycopg.abc import AdaptContext
from psycopg.types.json import Jsonb


def _identity(data: Any) -> Any:
    return data


def as_jsonb(document: bytes) -> Jsonb:
    """Wrap encoded document bytes as a jsonb parameter without re-serializing."""
    return Jsonb(document, dumps=_identity)


class RawJsonbLoader(adapt.Loader):
    """Load jsonb (text format) as the raw bytes, for the codec to parse."""

    def load(self, data: Any) -> bytes:
        return bytes(data)


def register_document_types(context: AdaptContext) -> None:
    """Make jsonb columns load as raw bytes on this connection (or cursor)."""
    context.adapters.register_loader("jsonb", RawJsonbLoader)
