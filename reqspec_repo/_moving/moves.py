"""Moving specs between databases: an explicit two-phase copy, crash-safe and resumable.

For a batch of instances living in database S and going to database T (move id M):

0. claim   (API)  take each instance's advisory lock on a connection held for the whole
                  move (a crash of the mover releases them);
1. seal    (S)    the source rows become 'outgoing' (readable, no longer writable) and
                  come back as raw documents, in one statement: a save committed before
                  it is copied, a save after it fails with SpecMovingError - none is lost;
2. copy    (T)    write them as hidden 'incoming' rows (idempotent upsert);
3. commit  (API)  flip the locations to T, compare-and-swap on the source location - the
                  commit point; the location keeps the move id until cleanup is done, so
                  reads through it find T's copy at once;
4. cleanup (T, S, API) make the T rows live, delete the S rows, clear the move id.

Steps 1-3 commit durably. The cleanup commits without waiting for the WAL flush: if a
server crash loses it, the durable state after step 3 tells recover() to redo it.
Every step is one statement per database for the whole chunk (``chunk_size``), so a
batch costs a bounded number of round trips, not one per spec. A crash anywhere leaves
states that :func:`reqspec_repo.recover` finishes (after the commit point) or
rolls back (before it).
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import psycopg
from psycopg.rows import class_row

from .._errors import (
    LocationNotFoundError,
    MoveError,
    MoveInProgressError,
    ReqSpecError,
    SpecNotFoundError,
)
from .._store.config import API
from .._store.documents import as_jsonb
from .._store.locations import Location, SpecStore
from .._store.queries import Query, query
from .._store.repository import normalize_uuid
from ..testing.failpoints import failpoint
from .chunking import chunks

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]
_LOCATION = class_row(Location)
_TRY_LOCK = query("spec_locations", "try_lock_instances")
_UNLOCK_ALL = query("spec_locations", "unlock_all")
_FLIP_TO_TARGET = query("spec_locations", "flip_locations_to_target")
_GET_LOCATIONS = query("spec_locations", "get_locations")
_CLEAR_MOVES = query("spec_locations", "clear_moves")
_SEAL_OUTGOING = query("request_specs", "seal_outgoing")
_UPSERT_INCOMING = query("request_specs", "upsert_incoming")
_DELETE_INCOMING = query("request_specs", "delete_incoming")
_UNSEAL_OUTGOING = query("request_specs", "unseal_outgoing")
_PROMOTE_INCOMING = query("request_specs", "promote_incoming")
_DELETE_OUTGOING = query("request_specs", "delete_outgoing")
_RELAX_DURABILITY = query("_session", "relax_commit_durability")
Progress = Callable[[int], None]


@attrs.frozen
class MoveResult:
    """What a move did: ``moved`` reached the target (or were there already), ``failed``
    maps each instance that did not move to the reason; those stayed where they were."""

    target: str
    moved: list[str]
    failed: dict[str, ReqSpecError]

    @property
    def ok(self) -> bool:
        return not self.failed


class Mover:
    """Moves specs between the databases of a store's topology."""

    def __init__(self, store: SpecStore, *, chunk_size: int = 500) -> None:
        self.store = store
        self.connections = store.repo.connections
        self.topology = store.topology
        self.chunk_size = chunk_size

    def move(
        self,
        instance_uuids: Iterable[str | uuid_mod.UUID],
        target: str,
        *,
        progress: Progress | None = None,
    ) -> MoveResult:
        """Move every given instance's spec to ``target`` (``"api"`` or a cell name)."""
        self.topology.database(target)  # unknown target: ConfigError before anything
        keys = list(dict.fromkeys(normalize_uuid(u) for u in instance_uuids))
        moved: list[str] = []
        failed: dict[str, ReqSpecError] = {}
        todo = keys
        for _round in range(3):
            # Another mover may relocate a spec between this unlocked read and our claim;
            # such specs come back as `relocated` and are grouped again by where they are.
            locations = self.store.locations(todo)
            by_source: dict[str, list[str]] = {}
            for key in todo:
                loc = locations.get(key)
                if loc is None:
                    failed[key] = LocationNotFoundError(key)
                elif loc.move_id is not None:
                    failed[key] = MoveInProgressError(key)
                elif loc.database == target:
                    moved.append(key)  # already there: nothing to do
                    if progress:
                        progress(1)
                else:
                    by_source.setdefault(loc.database, []).append(key)
            relocated: list[str] = []
            for source, group in sorted(by_source.items()):
                for chunk in chunks(group, self.chunk_size):
                    done, errors, moved_away = self._move_chunk(chunk, source, target)
                    moved.extend(done)
                    failed.update(errors)
                    relocated.extend(moved_away)
                    if progress:
                        progress(len(chunk) - len(moved_away))
            todo = relocated
            if not todo:
                break
        for key in todo:
            failed[key] = MoveInProgressError(key)
        return MoveResult(target, moved, failed)

    # -- one chunk, one source ------------------------------------------------------------

    def _move_chunk(
        self, uuids: list[str], source: str, target: str
    ) -> tuple[list[str], dict[str, ReqSpecError], list[str]]:
        """Move one chunk; returns (moved, failed, relocated-by-someone-else)."""
        move_id = str(uuid_mod.uuid4())
        failed: dict[str, ReqSpecError] = {}
        failpoint("before_claim")
        with self.connections.connection(API) as api:
            try:
                locked = _uuids(_TRY_LOCK.many(api, {"instance_uuids": uuids}))
                for u in set(uuids) - set(locked):
                    failed[u] = MoveInProgressError(u)
                failpoint("after_claim")
                sealed = self._seal_and_copy(locked, source, target, move_id, failed)
                committed: list[str] = []
                if sealed:
                    # The commit point. If the API connection broke, this raises and the
                    # outcome is decided later by recover() from the location records.
                    committed = _uuids(_FLIP_TO_TARGET.many(
                        api, {"instance_uuids": sealed, "source": source, "target": target, "move_id": move_id}
                    ))
                failpoint("after_commit")
                not_committed = [u for u in sealed if u not in set(committed)]
                if not_committed:  # the location was not (or no longer) S: undo these
                    self._rollback(not_committed, source, target, move_id)
                relocated = self._explain(api, [u for u in locked if u not in set(committed)], source, failed)
                self._cleanup(api, committed, source, target, move_id)
                failpoint("after_cleanup")
                return committed, failed, relocated
            finally:
                with contextlib.suppress(psycopg.Error, ReqSpecError):
                    if not api.closed:
                        _UNLOCK_ALL.exec(api)

    def _seal_and_copy(
        self, uuids: list[str], source: str, target: str, move_id: str, failed: dict[str, ReqSpecError]
    ) -> list[str]:
        """Steps 1 and 2; returns the instances sealed in S and copied to T."""
        if not uuids:
            return []
        with self.connections.connection(source) as src:
            rows = _SEAL_OUTGOING.many(src, {"instance_uuids": uuids, "move_id": move_id})
        failpoint("after_seal")
        if not rows:
            return []
        with self.connections.connection(target) as dst:
            copied = set(_uuids(_UPSERT_INCOMING.many(dst, {
                "instance_uuids": [r.instance_uuid for r in rows],
                "specs": [as_jsonb(r.spec) for r in rows],
                "schema_versions": [r.schema_version for r in rows],
                "versions": [r.version for r in rows],
                "move_id": move_id,
            })))
        failpoint("after_copy")
        sealed = _uuids(rows)
        refused = [u for u in sealed if u not in copied]
        if refused:
            self._rollback(refused, source, target, move_id)
            for u in refused:
                failed[u] = MoveError(u, f"database {target!r} already holds a spec for it (run verify)")
        return [u for u in sealed if u in copied]

    def _explain(
        self, api: Conn, uuids: list[str], source: str, failed: dict[str, ReqSpecError]
    ) -> list[str]:
        """Why locked instances did not move; returns those that now live elsewhere
        (moved by someone else since our unlocked read) so that move() retries them."""
        pending = [u for u in uuids if u not in failed]
        if not pending:
            return []
        now = {loc.instance_uuid: loc for loc in _GET_LOCATIONS.many(api, {"instance_uuids": pending}, row=_LOCATION)}
        relocated = []
        for u in pending:
            loc = now.get(u)
            if loc is None:
                failed[u] = LocationNotFoundError(u)
            elif loc.move_id is not None:
                failed[u] = MoveError(u, "an earlier move of it was interrupted; run recover")
            elif loc.database != source:
                relocated.append(u)
            else:
                failed[u] = SpecNotFoundError(u, source)  # located in S, but no live row there
        return relocated

    def _rollback(self, uuids: list[str], source: str, target: str, move_id: str) -> None:
        params = {"instance_uuids": uuids, "move_id": move_id}
        with self.connections.connection(target) as dst:
            _DELETE_INCOMING.exec(dst, params)
        with self.connections.connection(source) as src:
            _UNSEAL_OUTGOING.exec(src, params)

    def _cleanup(self, api: Conn, uuids: list[str], source: str, target: str, move_id: str) -> None:
        if not uuids:
            return
        params = {"instance_uuids": uuids, "move_id": move_id}
        # Target live first, then the source copy goes: the spec is readable throughout.
        with self.connections.connection(target) as dst:
            _relaxed(dst, _PROMOTE_INCOMING, params)
        failpoint("after_promote")
        with self.connections.connection(source) as src:
            _relaxed(src, _DELETE_OUTGOING, params)
        _relaxed(api, _CLEAR_MOVES, params)


def _uuids(rows: Iterable[Any]) -> list[str]:
    """The instance uuids of rows that have an ``instance_uuid`` column."""
    return [str(r.instance_uuid) for r in rows]


def _relaxed(conn: Conn, q: Query, params: Mapping[str, object]) -> None:
    """One cleanup statement in a transaction that does not wait for the WAL flush,
    pipelined into a single round trip."""
    with conn.pipeline(), conn.transaction():
        _RELAX_DURABILITY.exec(conn)
        q.run(conn, params)


def move_specs(
    store: SpecStore,
    instance_uuids: Iterable[str | uuid_mod.UUID],
    target: str,
    *,
    progress: Progress | None = None,
    chunk_size: int = 500,
) -> MoveResult:
    """Move specs to ``target``; see :class:`Mover`."""
    return Mover(store, chunk_size=chunk_size).move(instance_uuids, target, progress=progress)
