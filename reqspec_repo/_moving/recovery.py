"""recover() finishes or rolls back interrupted moves; verify() checks consistency.

Both scan the location records in the API database and the request_specs rows of every
database. They then work only on instances whose lease (``move_leases``) they can
claim: a move in progress holds an unexpired lease and is left alone (reported busy); the
lease of a mover that died expires after ``move_lease_ms`` and is taken over. recover()
re-reads the state under the lease and resolves it:

* a location carrying a move id (crash after the commit point): finish - promote the
  target's incoming copy, delete the outgoing copy elsewhere, clear the move id;
* otherwise (crash before it, or no move at all): the row in the database the location
  names becomes the live one (an outgoing row is unsealed) and copies elsewhere (a
  target's incoming copy) are deleted - the move is rolled back;
* a location naming a database without the spec is re-pointed at the best copy found
  (live first, then highest version), or removed when no copy exists (``dangling``);
* rows without any location record (a create into a cell that crashed before its API
  transaction committed) are adopted when one of them is live or outgoing; incoming-only
  leftovers of a destroyed instance are deleted.

Each change to a row is conditioned on the row being as it was read (state, move id,
version), so a decision that went stale (recover() stalled past its own lease) changes
nothing. Every statement checks out its connection and gives it back before the next;
the data access is in :mod:`reqspec_repo._store.move_rows` and
:mod:`reqspec_repo._store.leases`.
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import uuid as uuid_mod
from collections import defaultdict
from collections.abc import Generator, Iterator

import attrs

from .._errors import ReadOnlyDatabaseError, ReqSpecError
from .._store.leases import LeasePurpose, Leases
from .._store.locations import Location, SpecStore
from .._store.move_rows import MoveRows, RowState
from .chunking import chunks

#: Suspects claimed per round: one lease statement, one re-read per database.
CLAIM_ROUND = 500

__all__ = [
    "Outcome", "Problem", "ProblemKind", "RecoveryReport", "RowState", "VerifyReport",
    "recover", "verify",
]


class ProblemKind(enum.StrEnum):
    ORPHAN = "orphan"  # spec rows without a location record
    DUPLICATE = "duplicate"  # live in more than one database
    HIDDEN_LEFTOVER = "hidden_leftover"  # a copy no move owns any more
    MISSING = "missing"  # the location names a database without the spec
    INTERRUPTED_MOVE = "interrupted_move"


class Outcome(enum.StrEnum):
    """What recover() did to one instance; each is a list of :class:`RecoveryReport`."""

    ROLLED_BACK = "rolled_back"
    FINISHED = "finished"
    REPAIRED = "repaired"
    DANGLING_REMOVED = "dangling_removed"
    ADOPTED = "adopted"
    BUSY = "busy"


@attrs.frozen
class Problem:
    kind: ProblemKind
    instance_uuid: str
    detail: str


@attrs.frozen
class VerifyReport:
    problems: list[Problem]
    locations: int
    rows: dict[str, int]
    busy: list[str]  # instances with a move in progress (not judged)

    @property
    def ok(self) -> bool:
        return not self.problems


@attrs.frozen
class RecoveryReport:
    rolled_back: list[str]
    finished: list[str]
    repaired: list[str]  # duplicates removed, leftovers removed, locations re-pointed
    dangling_removed: list[str]
    adopted: list[str]
    busy: list[str]

    def record(self, outcome: Outcome, instance_uuid: str) -> None:
        self.outcomes(outcome).append(instance_uuid)

    def outcomes(self, outcome: Outcome) -> list[str]:
        lists: dict[Outcome, list[str]] = {
            Outcome.ROLLED_BACK: self.rolled_back, Outcome.FINISHED: self.finished,
            Outcome.REPAIRED: self.repaired, Outcome.DANGLING_REMOVED: self.dangling_removed,
            Outcome.ADOPTED: self.adopted, Outcome.BUSY: self.busy,
        }
        return lists[outcome]

    @property
    def changed(self) -> int:
        return (
            len(self.rolled_back) + len(self.finished) + len(self.repaired)
            + len(self.dangling_removed) + len(self.adopted)
        )


ScanItem = tuple[uuid_mod.UUID, Location | None, RowState | None]


class _Scanner:
    def __init__(self, store: SpecStore) -> None:
        self.store = store
        self.rows = MoveRows(store.repo.connections)
        self.cells = sorted(store.topology.cells)

    def _api_stream(self) -> Generator[ScanItem, None, None]:
        for item in self.rows.stream_api():
            yield item.instance_uuid, item.location, item.row

    def _cell_stream(self, name: str) -> Generator[ScanItem, None, None]:
        for key, row in self.rows.stream_states(name):
            yield key, None, row

    def suspects(self) -> tuple[list[str], int, dict[str, int]]:
        """Instances with a problem, the number of locations, and rows per database.

        Every database and the location records are read in uuid order and merged, so
        memory stays bounded whatever the number of specs; only suspects are kept. The
        streams hold one connection of each database's pool (the API database's
        locations and rows come in one stream), opened in the same order every time."""
        streams = [self._api_stream()]
        streams.extend(self._cell_stream(name) for name in self.cells)
        try:
            return self._merge(streams)
        finally:
            # Give every connection back now, also when one database failed mid-scan
            # (not whenever the abandoned generators are collected).
            for stream in streams:
                with contextlib.suppress(Exception):
                    stream.close()

    def _merge(self, streams: list[Generator[ScanItem, None, None]]) -> tuple[list[str], int, dict[str, int]]:
        found: list[str] = []
        locations = 0
        counts: dict[str, int] = defaultdict(int)
        for key, group in itertools.groupby(heapq.merge(*streams, key=lambda t: t[0]), key=lambda t: t[0]):
            loc: Location | None = None
            rows: list[RowState] = []
            for _, location, row in group:
                if location is not None:
                    loc = location
                    locations += 1
                if row is not None:
                    rows.append(row)
                    counts[row.database] += 1
            if _problems_of(str(key), loc, rows):
                found.append(str(key))
        return found, locations, dict(counts)

    def rows_of(self, uuids: list[str]) -> dict[str, list[RowState]]:
        found: dict[str, list[RowState]] = defaultdict(list)
        for name in self.store.topology.database_names:
            for key, rows in self.rows.states(name, uuids).items():
                found[key].extend(rows)
        return found


def _problems_of(key: str, loc: Location | None, rows: list[RowState]) -> list[Problem]:
    if loc is None:
        return [Problem(ProblemKind.ORPHAN, key, f"spec rows in {sorted(r.database for r in rows)} but no location record")]
    problems = []
    if loc.move_id is not None:
        problems.append(
            Problem(ProblemKind.INTERRUPTED_MOVE, key, f"move {loc.move_id} from {loc.moved_from!r} committed, cleanup unfinished")
        )
    live = [r for r in rows if r.state == "live"]
    if len(live) > 1:
        problems.append(Problem(ProblemKind.DUPLICATE, key, f"live in {sorted(r.database for r in live)}"))
    hidden = [r for r in rows if r.state != "live"]
    if hidden and loc.move_id is None:
        kind = ProblemKind.INTERRUPTED_MOVE if any(r.state == "outgoing" for r in hidden) else ProblemKind.HIDDEN_LEFTOVER
        problems.append(Problem(kind, key, ", ".join(f"{r.state} row in {r.database!r}" for r in hidden)))
    if not any(r.database == loc.database for r in rows):
        problems.append(Problem(ProblemKind.MISSING, key, f"location names {loc.database!r}, which has no row"))
    elif not problems and not any(r.database == loc.database and r.state == "live" for r in rows):
        problems.append(Problem(ProblemKind.HIDDEN_LEFTOVER, key, f"the row in {loc.database!r} is not live"))
    return problems


@contextlib.contextmanager
def _claimed(store: SpecStore, uuids: list[str], purpose: LeasePurpose) -> Iterator[set[str]]:
    """Claim the leases of these instances; yields those claimed (the others are busy:
    a move or recovery holds them) and releases them at the end. No connection is held
    in between."""
    leases = Leases(store.repo.connections)
    holder = str(uuid_mod.uuid4())
    try:
        got = leases.claim(uuids, holder, purpose)
    except ReadOnlyDatabaseError:
        if purpose != LeasePurpose.VERIFY:
            raise
        # verify() on a read-only API database (a standby): judge the instances no
        # unexpired lease holds, without claiming (a move starting meanwhile may show).
        held = leases.of(uuids)
        yield {u for u in uuids if u not in held or held[u].expired}
        return
    try:
        yield got
    finally:
        with contextlib.suppress(ReqSpecError):
            leases.release(got, holder)


def verify(store: SpecStore) -> VerifyReport:
    """Consistency check across the API database and every cell; it changes no spec or
    location (it only takes and gives back leases, to judge each instance unmoving)."""
    scan = _Scanner(store)
    suspects, locations, counts = scan.suspects()
    problems: list[Problem] = []
    busy: list[str] = []
    for chunk in chunks(suspects, CLAIM_ROUND):
        with _claimed(store, chunk, LeasePurpose.VERIFY) as claimed:
            mine = [k for k in chunk if k in claimed]
            fresh_locs = store.locations(mine) if mine else {}
            fresh_rows = scan.rows_of(mine) if mine else {}
            for key in chunk:
                if key not in claimed:
                    busy.append(key)
                    continue
                problems.extend(_problems_of(key, fresh_locs.get(key), fresh_rows.get(key, [])))
    return VerifyReport(problems, locations, counts, busy)


def recover(store: SpecStore) -> RecoveryReport:
    """Finish or roll back every interrupted move whose lease is free or expired;
    idempotent, safe beside running moves (their unexpired leases are left alone)."""
    scan = _Scanner(store)
    suspects, _, _ = scan.suspects()
    report = RecoveryReport([], [], [], [], [], [])
    for chunk in chunks(suspects, CLAIM_ROUND):
        with _claimed(store, chunk, LeasePurpose.RECOVER) as claimed:
            mine = [k for k in chunk if k in claimed]
            report.busy.extend(k for k in chunk if k not in claimed)
            if not mine:
                continue
            fresh_locs = store.locations(mine)
            fresh_rows = scan.rows_of(mine)
            for key in mine:
                report.record(_resolve(scan, key, fresh_locs.get(key), fresh_rows.get(key, [])), key)
    return report


def _resolve(scan: _Scanner, key: str, loc: Location | None, rows: list[RowState]) -> Outcome:
    """Bring one claimed instance to its one live copy; returns how it was counted."""
    moves = scan.rows
    if loc is None:
        if all(r.state == "incoming" for r in rows):
            for r in rows:  # copies of a destroyed instance: nothing to adopt
                moves.delete_if_seen(key, r)
            return Outcome.REPAIRED
        best = max(rows, key=lambda r: (r.state == "live", r.version))
        if not moves.adopt(key, best.database):
            return Outcome.BUSY  # a location appeared meanwhile: judged next time
        _normalize(scan, key, Location(key, best.database, 1), rows)
        return Outcome.ADOPTED
    if loc.move_id is not None:  # committed: finish the move
        moves.promote(loc.database, [key], loc.move_id)
        for r in rows:
            if r.database != loc.database and r.move_id == loc.move_id:
                moves.drop_outgoing(r.database, [key], loc.move_id)
        moves.finish([key], loc.move_id)
        # Whatever else is left (copies from older crashes) is tidied the same way.
        fresh = scan.store.locations([key]).get(key)
        after = scan.rows_of([key]).get(key, [])
        if fresh is not None and _problems_of(key, fresh, after):
            _normalize(scan, key, fresh, after)
        return Outcome.FINISHED
    sealed_at_home = any(r.database == loc.database and r.state == "outgoing" for r in rows)
    outcome = _normalize(scan, key, loc, rows)
    return Outcome.ROLLED_BACK if sealed_at_home and outcome == Outcome.REPAIRED else outcome


def _normalize(scan: _Scanner, key: str, loc: Location, rows: list[RowState]) -> Outcome:
    """Make the row the location names the live one and delete every other copy."""
    moves = scan.rows
    home = [r for r in rows if r.database == loc.database]
    if not home:
        if not rows:
            moves.remove_location(key)
            return Outcome.DANGLING_REMOVED
        best = max(rows, key=lambda r: (r.state == "live", r.version))
        moves.repoint(key, best.database)
        home = [best]
    keep = home[0]
    if keep.state != "live":
        moves.make_live_if_seen(key, keep)
    for r in rows:
        if r.database != keep.database:
            moves.delete_if_seen(key, r)
    return Outcome.REPAIRED
