"""Moving specs between databases: an explicit two-phase copy, crash-safe and resumable.

For a batch of instances living in database S and going to database T (move id M):

0. claim   (API)  take each instance's lease (``move_leases``, holder M, for
                  ``move_lease_ms``): durable, held by no connection, so it survives a
                  transaction-mode pooler and a failover; a mover that dies leaves it to
                  expire, and recover() takes over expired leases only;
1. seal    (S)    the source rows become 'outgoing' (readable, no longer writable) and
                  come back as raw documents, in one statement: a save committed before
                  it is copied, a save after it fails with SpecMovingError - none is lost;
2. copy    (T)    write them as hidden 'incoming' rows (idempotent upsert);
3. commit  (API)  flip the locations to T where M still holds an unexpired lease
                  (renewing it), compare-and-swap on the source location - the commit
                  point; a mover whose lease ran out cannot commit. The location is
                  written once: from now on it names T, and T's copy, still 'incoming'
                  with the move id, is the committed one (a copy is only ever made into
                  a database the location does not name), so reads through the
                  location find it and recover() knows to finish the move;
4. cleanup (T, S, API) make the T rows live, delete the S rows, release the leases;
                  when S is the API database, the last two run in one transaction.

Steps 1-3 commit durably. The cleanup commits without waiting for the WAL flush: if a
server crash loses it, the durable state after step 3 tells recover() to redo it.
Every step is one statement (the merged cleanup two, in one transaction) on one pooled
connection, checked out for that step only: a mover never holds a connection while it
waits for another. A crash anywhere leaves states that :func:`reqspec_repo.recover`
finishes (after the commit point) or rolls back (before it) once the leases expired.
The data access is in :mod:`reqspec_repo._store.move_rows` and
:mod:`reqspec_repo._store.leases`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid as uuid_mod
from collections.abc import Callable, Iterable, Sequence

import attrs

from .._errors import (
    LeaseExpiredError,
    LocationNotFoundError,
    MoveError,
    MoveInProgressError,
    ReqSpecError,
    SpecNotFoundError,
)
from .._store.leases import LeasePurpose, Leases
from .._store.locations import SpecStore
from .._store.move_rows import MoveRows
from .._store.repository import normalize_uuid
from ..testing.failpoints import failpoint
from .chunking import chunks

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@attrs.frozen
class MoveSummary:
    """What a streamed move of many pages did: how many specs reached the target (or were
    there already) and, for each that did not, why; those stayed where they were. Moved
    uuids are counted, not kept, so memory does not grow with the number of specs."""

    source: str | None
    target: str
    moved: int
    failed: dict[str, ReqSpecError]

    @property
    def ok(self) -> bool:
        return not self.failed


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
        self.topology = store.topology
        self.leases = Leases(store.repo.connections)
        self.rows = MoveRows(store.repo.connections)
        self.chunk_size = chunk_size

    def move(
        self,
        instance_uuids: Iterable[str | uuid_mod.UUID],
        target: str,
        *,
        progress: Progress | None = None,
        source: str | None = None,
    ) -> MoveResult:
        """Move every given instance's spec to ``target`` (``"api"`` or a cell name).

        With ``source``, only specs located there move; one located elsewhere is reported
        (its row in ``source`` is a stray copy that verify() reports)."""
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
                elif source is not None and loc.database != source:
                    failed[key] = MoveError(key, f"stored in {source!r} but located in {loc.database!r} (run verify)")
                    if progress:
                        progress(1)
                elif loc.database == target:
                    moved.append(key)  # already there: nothing to do
                    if progress:
                        progress(1)
                else:
                    by_source.setdefault(loc.database, []).append(key)
            relocated: list[str] = []
            # `home`, not `source`: the parameter must survive into the next round.
            for home, group in sorted(by_source.items()):
                for chunk in chunks(group, self.chunk_size):
                    done, errors, moved_away = self._move_chunk(chunk, home, target)
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

    def move_pages(
        self,
        pages: Iterable[Sequence[str]],
        target: str,
        *,
        progress: Progress | None = None,
        source: str | None = None,
        workers: int = 1,
    ) -> MoveSummary:
        """Move the specs of each page in turn (each page in chunks of ``chunk_size``);
        memory is bounded by ``workers`` pages whatever the number of pages. With several
        workers, pages move concurrently (each chunk is its own move with its own leases,
        so they do not interfere): the source, the target and the API database each work
        while the others wait for their WAL flush. ``source`` as in :meth:`move`."""
        self.topology.database(target)
        if workers < 1:
            raise ValueError("workers must be at least 1")
        lock = threading.Lock()
        feed = iter(pages)
        moved = 0
        failed: dict[str, ReqSpecError] = {}
        errors: list[BaseException] = []

        def counted(n: int) -> None:
            if progress is not None:
                with lock:
                    progress(n)

        def work() -> None:
            nonlocal moved
            while True:
                with lock:
                    if errors:
                        return
                    page = next(feed, None)
                if page is None:
                    return
                try:
                    result = self.move(page, target, progress=counted, source=source)
                except BaseException as exc:  # handed to the caller's thread below
                    with lock:
                        errors.append(exc)
                    return
                with lock:
                    moved += len(result.moved)
                    failed.update(result.failed)

        if workers == 1:
            work()
        else:
            threads = [threading.Thread(target=work, name=f"reqspec-mover-{i}") for i in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        return MoveSummary(source, target, moved, failed)

    # -- one chunk, one source ------------------------------------------------------------

    def _move_chunk(
        self, uuids: list[str], source: str, target: str
    ) -> tuple[list[str], dict[str, ReqSpecError], list[str]]:
        """Move one chunk; returns (moved, failed, relocated-by-someone-else)."""
        move_id = str(uuid_mod.uuid4())
        failed: dict[str, ReqSpecError] = {}
        failpoint("before_claim")
        claimed = self.leases.claim(uuids, move_id, LeasePurpose.MOVE)
        mine = [u for u in uuids if u in claimed]
        for u in uuids:
            if u not in claimed:
                failed[u] = MoveInProgressError(u)
        failpoint("after_claim")
        try:
            sealed = self._seal_and_copy(mine, source, target, move_id, failed)
            committed: list[str] = []
            if sealed:
                # The commit point. If the API connection broke, this raises and the
                # outcome is decided later by recover() from the location records.
                committed = self.rows.commit(sealed, source, target, move_id)
            failpoint("after_commit")
            done = set(committed)
            not_committed = [u for u in sealed if u not in done]
            if not_committed:  # lease lost, or the location was not (or no longer) S: undo
                self._rollback(not_committed, source, target, move_id)
            relocated = self._explain([u for u in mine if u not in done], source, set(sealed), failed)
            self._cleanup(committed, source, target, move_id)
            self.leases.release([u for u in mine if u not in done], move_id)
            failpoint("after_cleanup")
            return committed, failed, relocated
        except Exception:
            # An ordinary failure (a server down, a timeout): the leases go back at once,
            # so recover() need not wait for them to expire. A crash keeps them.
            with contextlib.suppress(ReqSpecError):
                self.leases.release(mine, move_id)
            raise

    def _seal_and_copy(
        self, uuids: list[str], source: str, target: str, move_id: str, failed: dict[str, ReqSpecError]
    ) -> list[str]:
        """Steps 1 and 2; returns the instances sealed in S and copied to T."""
        if not uuids:
            return []
        rows = self.rows.seal(source, uuids, move_id)
        failpoint("after_seal")
        if not rows:
            return []
        copied = self.rows.copy_in(target, rows, move_id)
        failpoint("after_copy")
        sealed = [r.instance_uuid for r in rows]
        refused = [u for u in sealed if u not in copied]
        if refused:
            self._rollback(refused, source, target, move_id)
            for u in refused:
                failed[u] = MoveError(u, f"database {target!r} already holds a spec for it (run verify)")
        return [u for u in sealed if u in copied]

    def _explain(
        self, uuids: list[str], source: str, sealed: set[str], failed: dict[str, ReqSpecError]
    ) -> list[str]:
        """Why claimed instances did not move; returns those that now live elsewhere
        (moved by someone else since our unlocked read) so that move() retries them."""
        pending = [u for u in uuids if u not in failed]
        if not pending:
            return []
        now = self.store.locations(pending)
        unsealed = [u for u in pending if u not in sealed and u in now and now[u].database == source]
        # Located in S but not sealed: no live row there. A row in another state is a
        # copy an interrupted move left (its committed, not yet live copy, say).
        left_in_flight = set(self.rows.states(source, unsealed)) if unsealed else set()
        relocated = []
        for u in pending:
            loc = now.get(u)
            if loc is None:
                failed[u] = LocationNotFoundError(u)
            elif loc.move_id is not None or u in left_in_flight:
                failed[u] = MoveError(u, "an earlier move of it was interrupted; run recover")
            elif loc.database != source:
                relocated.append(u)
            elif u in sealed:
                # Sealed, copied, location still S: only the lease check of the commit
                # point can have refused it.
                failed[u] = LeaseExpiredError(u)
            else:
                failed[u] = SpecNotFoundError(u, source)
        return relocated

    def _rollback(self, uuids: list[str], source: str, target: str, move_id: str) -> None:
        self.rows.undo_copy(target, uuids, move_id)
        self.rows.unseal(source, uuids, move_id)

    def _cleanup(self, uuids: list[str], source: str, target: str, move_id: str) -> None:
        if not uuids:
            return
        # Target live first, then the source copy goes: the spec is readable throughout.
        self.rows.promote(target, uuids, move_id)
        failpoint("after_promote")
        self.rows.drop_outgoing_and_release(source, uuids, move_id)


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


def move_database(
    store: SpecStore,
    source: str,
    target: str,
    *,
    progress: Progress | None = None,
    chunk_size: int = 500,
    page_size: int = 5000,
    workers: int = 3,
) -> MoveSummary:
    """Move every spec stored in ``source`` to ``target``: uuids are read in keyset pages
    (nothing decoded, so a spec that cannot be decoded moves like any other: a move copies
    documents) and each page is moved chunk by chunk, ``workers`` pages at a time. Specs
    that cannot move (a move in progress, no location record, located elsewhere) are in
    ``failed``."""
    store.topology.database(source)
    pages = store.instance_uuid_pages(source, page_size=page_size)
    mover = Mover(store, chunk_size=chunk_size)
    return mover.move_pages(pages, target, progress=progress, source=source, workers=workers)
