"""Move leases: durable claims on instances, kept in the API database (``move_leases``).

A lease replaces the session-level advisory lock a move used to hold on one connection
for its whole length: it needs no connection to stay open (so it survives a
transaction-mode pooler and holds no pooled connection), says who holds it and until
when, and outlives a failover of the API server. A holder that dies leaves its leases
to expire after ``Settings.move_lease_ms``; only then may another claimer (recover())
take them over. Every method is one statement on one API connection, checked out and
given back inside the call.
"""

from __future__ import annotations

import enum
import os
import socket
import threading
import time
from collections.abc import Iterable
from datetime import datetime

import attrs
from psycopg.rows import class_row

from .config import API
from .pools import Connections
from .queries import query
from .uuid_arrays import UuidArray

_CLAIM = query("move_leases", "claim_leases")
_RELEASE = query("move_leases", "release_leases")
_GET = query("move_leases", "get_leases")
_LIST_EXPIRED = query("move_leases", "list_expired_leases")
_EXPIRE_ALL = query("move_leases", "expire_all_leases")
_LIST_LEASED = query("move_leases", "list_leased_instances")


class LeasePurpose(enum.StrEnum):
    """What the holder of a lease is doing (shown to operators, checked by the schema)."""

    MOVE = "move"
    RECOVER = "recover"
    VERIFY = "verify"
    DESTROY = "destroy"
    CREATE = "create"


@attrs.frozen
class Lease:
    """One held lease, as stored; ``expired`` is judged by the server's clock."""

    instance_uuid: str = attrs.field(converter=str)
    holder: str = attrs.field(converter=str)
    purpose: str
    owner: str
    taken_at: datetime
    expires_at: datetime
    expired: bool


_LEASE = class_row(Lease)


def owner_tag() -> str:
    """Who is claiming: host, process and thread (for operators reading the table)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Leases:
    """The lease records of a topology's API database."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.lease_ms = connections.topology.settings.move_lease_ms

    def claim(self, instance_uuids: Iterable[str], holder: str, purpose: LeasePurpose) -> set[str]:
        """Claim every free or expired lease of these instances for ``holder``; returns
        the instances claimed (those held by someone else, unexpired, are not)."""
        keys = sorted(set(instance_uuids))
        if not keys:
            return set()
        with self.connections.connection(API) as api:
            rows = _CLAIM.many(api, {
                "instance_uuids": UuidArray(keys), "holder": holder, "purpose": purpose.value,
                "owner": owner_tag(), "lease_ms": self.lease_ms,
            })
        return {str(r.instance_uuid) for r in rows}

    def claim_waiting(
        self, instance_uuid: str, holder: str, purpose: LeasePurpose, wait_s: float
    ) -> bool:
        """Claim one instance's lease, retrying for up to ``wait_s`` while another holder
        has it (a move in progress finishes in milliseconds); no connection is held while
        waiting. False when it was still held at the end."""
        deadline = time.monotonic() + wait_s
        pause = 0.005
        while True:
            if self.claim([instance_uuid], holder, purpose):
                return True
            if time.monotonic() + pause > deadline:
                return False
            time.sleep(pause)  # polling: a lease has no waiter queue to sleep on
            pause = min(pause * 2, 0.1)

    def release(self, instance_uuids: Iterable[str], holder: str) -> None:
        """Give back ``holder``'s leases of these instances (others' are untouched)."""
        keys = list(instance_uuids)
        if keys:
            with self.connections.connection(API) as api:
                _RELEASE.exec(api, {"instance_uuids": UuidArray(keys), "holder": holder})

    def of(self, instance_uuids: Iterable[str]) -> dict[str, Lease]:
        """The leases held on these instances (expired ones included)."""
        with self.connections.connection(API) as api:
            rows = _GET.many(api, {"instance_uuids": UuidArray(instance_uuids)}, row=_LEASE)
        return {lease.instance_uuid: lease for lease in rows}

    def leased(self) -> list[str]:
        """Every instance with a lease, held or expired: what operations have in flight
        (the table holds only those, so this costs the work in flight)."""
        with self.connections.connection(API) as api:
            return [str(r.instance_uuid) for r in _LIST_LEASED.many(api)]

    def expired(self, limit: int = 10_000) -> list[Lease]:
        """Leases whose time ran out (their holder died or stalled), in uuid order."""
        with self.connections.connection(API) as api:
            return _LIST_EXPIRED.many(api, {"limit": limit}, row=_LEASE)

    def expire_all(self) -> int:
        """End every lease now; returns how many were still running. Only for when every
        holder is known to be dead (tests simulating the passing of the lease time)."""
        with self.connections.connection(API) as api:
            return _EXPIRE_ALL.exec(api)
