"""Moving specs between databases: an explicit two-phase copy, crash-safe and resumable.

For a batch of instances living in database S and going to database T (move id M):

0. claim   (API)  take each instance's advisory lock on a connection held for the whole
                  move, and record the intent in its location (phase 'copying');
1. copy    (T)    write the specs as hidden 'incoming' rows (idempotent upsert);
2. seal    (S)    compare-and-swap the source rows to 'outgoing' at the copied version:
                  a save that landed since the copy makes its row drop out, and it is
                  copied again (up to ``max_recopies`` times, then MoveConflictError);
3. commit  (API)  flip the locations to T (CAS on source, move id and phase) - the commit
                  point; reads through the location now go to T's committed copy;
4. cleanup (T, S, API) make the T rows live, delete the S rows, clear the intent.

Every step is one statement per database for the whole batch (chunks of
``chunk_size``), so a batch costs a bounded number of round trips, not one per spec.
A crash anywhere leaves states that :func:`reqspec_repo.recovery.recover` finishes (after
the commit point) or rolls back (before it).
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs
import psycopg

from .config import API
from .documents import as_jsonb
from .errors import (
    LocationNotFoundError,
    MoveConflictError,
    MoveError,
    MoveInProgressError,
    ReqSpecError,
    SpecNotFoundError,
)
from .failpoints import failpoint
from .locations import SpecStore
from .queries import query
from .repository import normalize_uuid

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[object, ...]]
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


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


class Mover:
    """Moves specs between the databases of a store's topology."""

    def __init__(self, store: SpecStore, *, chunk_size: int = 500, max_recopies: int = 3) -> None:
        self.store = store
        self.connections = store.repo.connections
        self.topology = store.topology
        self.chunk_size = chunk_size
        self.max_recopies = max_recopies

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
                for chunk in _chunks(group, self.chunk_size):
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
        relocated: list[str] = []
        failpoint("before_claim")
        with self.connections.connection(API) as api:
            try:
                claimed = self._claim(api, uuids, source, target, move_id, failed, relocated)
                failpoint("after_claim")
                if not claimed:
                    return [], failed, relocated
                sealed = self._copy_and_seal(claimed, source, target, move_id, failed)
                dropped = [u for u in claimed if u in failed]
                if dropped:  # their copies are gone and their sources untouched
                    self._clear(api, dropped, move_id)
                if not sealed:
                    return [], failed, relocated
                # The commit point. If the API connection broke, this raises and the
                # outcome is decided later by recover() from the location records.
                committed = self._column(
                    api.execute(
                        query("spec_locations", "flip_locations_to_target").statement,
                        {"instance_uuids": sealed, "source": source, "move_id": move_id},
                    )
                )
                failpoint("after_commit")
                lost = [u for u in sealed if u not in set(committed)]
                if lost:  # cannot happen while we hold the locks; roll those back anyway
                    self._rollback(lost, source, target, move_id)
                    for u in lost:
                        failed[u] = MoveError(u, "its location changed during the move")
                self._cleanup(api, committed, source, target, move_id)
                failpoint("after_cleanup")
                return committed, failed, relocated
            finally:
                with contextlib.suppress(psycopg.Error, ReqSpecError):
                    if not api.closed:
                        api.execute(query("spec_locations", "unlock_all").statement)

    def _claim(
        self,
        api: Conn,
        uuids: list[str],
        source: str,
        target: str,
        move_id: str,
        failed: dict[str, ReqSpecError],
        relocated: list[str],
    ) -> list[str]:
        locked = set(
            self._column(
                api.execute(query("spec_locations", "try_lock_instances").statement, {"instance_uuids": uuids})
            )
        )
        for u in uuids:
            if u not in locked:
                failed[u] = MoveInProgressError(u)
        started = set(
            self._column(
                api.execute(
                    query("spec_locations", "start_moves").statement,
                    {
                        "instance_uuids": [u for u in uuids if u in locked],
                        "move_id": move_id,
                        "target": target,
                        "source": source,
                    },
                )
            )
        )
        if locked - started:
            # We hold their locks, so this read is stable: say exactly why each did not start.
            rows = api.execute(
                query("spec_locations", "get_locations").statement,
                {"instance_uuids": sorted(locked - started)},
            ).fetchall()
            now = {str(r[0]): r for r in rows}
            for u in sorted(locked - started):
                row = now.get(u)
                if row is None:
                    failed[u] = LocationNotFoundError(u)
                elif row[3] is not None:
                    failed[u] = MoveError(u, "an earlier move of it was interrupted; run recover")
                else:
                    relocated.append(u)  # moved by someone else meanwhile
        return [u for u in uuids if u in started]

    def _copy_and_seal(
        self,
        uuids: list[str],
        source: str,
        target: str,
        move_id: str,
        failed: dict[str, ReqSpecError],
    ) -> list[str]:
        pending = list(uuids)
        sealed: list[str] = []
        with self.connections.connection(source) as src, self.connections.connection(target) as dst:
            for attempt in range(self.max_recopies + 1):
                rows = src.execute(
                    query("request_specs", "get_live_for_move").statement, {"instance_uuids": pending}
                ).fetchall()
                found = {str(r[0]) for r in rows}
                for u in pending:
                    if u not in found:
                        failed[u] = SpecNotFoundError(u, source)
                copied = set(
                    self._column(
                        dst.execute(
                            query("request_specs", "upsert_incoming").statement,
                            {
                                "instance_uuids": [str(r[0]) for r in rows],
                                "specs": [as_jsonb(r[1]) for r in rows],
                                "schema_versions": [r[2] for r in rows],
                                "versions": [r[3] for r in rows],
                                "move_id": move_id,
                            },
                        )
                    )
                )
                for u in found - copied:
                    failed[u] = MoveError(u, f"database {target!r} already holds a spec for it (run verify)")
                failpoint("after_copy")
                wanted = [r for r in rows if str(r[0]) in copied]
                now_sealed = set(
                    self._column(
                        src.execute(
                            query("request_specs", "seal_outgoing").statement,
                            {
                                "instance_uuids": [str(r[0]) for r in wanted],
                                "versions": [r[3] for r in wanted],
                                "move_id": move_id,
                            },
                        )
                    )
                )
                failpoint("after_seal")
                sealed.extend(u for u in pending if u in now_sealed)
                # Changed (or deleted) since the copy: copy again, a bounded number of times.
                pending = [u for u in pending if u in copied and u not in now_sealed]
                if not pending:
                    break
                log.info("move %s: %d spec(s) changed during copy (attempt %d)", move_id, len(pending), attempt + 1)
            for u in pending:
                failed[u] = MoveConflictError(u, f"it kept changing during {self.max_recopies + 1} copies")
            gone = [u for u in uuids if u in failed]
            if gone:
                dst.execute(
                    query("request_specs", "delete_incoming").statement,
                    {"instance_uuids": gone, "move_id": move_id},
                )
        return sealed

    def _rollback(self, uuids: list[str], source: str, target: str, move_id: str) -> None:
        params = {"instance_uuids": uuids, "move_id": move_id}
        with self.connections.connection(target) as dst:
            dst.execute(query("request_specs", "delete_incoming").statement, params)
        with self.connections.connection(source) as src:
            src.execute(query("request_specs", "unseal_outgoing").statement, params)

    def _cleanup(self, api: Conn, uuids: list[str], source: str, target: str, move_id: str) -> None:
        if not uuids:
            return
        params = {"instance_uuids": uuids, "move_id": move_id}
        # Target live first, then the source copy goes: the spec is readable throughout.
        with self.connections.connection(target) as dst:
            dst.execute(query("request_specs", "promote_incoming").statement, params)
        failpoint("after_promote")
        with self.connections.connection(source) as src:
            src.execute(query("request_specs", "delete_outgoing").statement, params)
        self._clear(api, uuids, move_id)

    def _clear(self, api: Conn, uuids: list[str], move_id: str) -> None:
        api.execute(
            query("spec_locations", "clear_moves").statement,
            {"instance_uuids": uuids, "move_id": move_id},
        )

    @staticmethod
    def _column(cur: psycopg.Cursor[tuple[object, ...]]) -> list[str]:
        return [str(r[0]) for r in cur.fetchall()]


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
