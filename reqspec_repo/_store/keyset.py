"""Keyset walks over instance uuids, a page at a time.

Each page starts *at* an inclusive lower bound (``instance_uuid >= start``): the first at
the nil uuid, each next one at the successor of the previous page's last uuid. An
exclusive bound needs a value below every uuid to start from, and there is none: the nil
uuid is a valid instance uuid, and a walk starting "after" it would skip that spec.
"""

from __future__ import annotations

import uuid as uuid_mod

#: The lowest uuid: where every walk starts.
FIRST_UUID = "00000000-0000-0000-0000-000000000000"
_LAST = (1 << 128) - 1


def uuid_after(instance_uuid: str) -> str | None:
    """Where the page after one ending at ``instance_uuid`` starts; None after the
    highest uuid (nothing can follow it)."""
    value = uuid_mod.UUID(instance_uuid).int
    return None if value == _LAST else str(uuid_mod.UUID(int=value + 1))
