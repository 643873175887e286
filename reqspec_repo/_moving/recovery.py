"""recover() finishes or rolls back interrupted moves; verify() checks consistency.

recover() looks only at what is in flight, so it costs the work interrupted, not the
size of the databases: every operation that can be interrupted leaves a durable mark
until it is done - its leases (``move_leases``: moves, creates into a cell, destroys,
recover() itself), the move id on the rows it sealed or copied (and, from an earlier
release, on the locations it committed) - and those are read through small indexes (the
lease table's key, the partial indexes on move_id). verify() and ``recover(full=True)`` cross-check
every location record against the rows of every database, range by range.

Both then work only on instances whose lease they can claim: a move in progress holds
an unexpired lease and is left alone (reported busy); the lease of a mover that died
expires after ``move_lease_ms`` and is taken over. recover() re-reads the state under
the lease and resolves it:

* a move committed, cleanup unfinished (crash after the commit point: the location
  names the database holding the move's incoming copy, or, from an earlier release,
  carries the move id): finish - promote that copy, delete the move's outgoing copy
  elsewhere (and clear the location's move id);
* otherwise (crash before it, or no move at all): the row in the database the location
  names becomes the live one (an outgoing row is unsealed) and copies elsewhere (a
  target's incoming copy) are deleted - the move is rolled back;
* a location naming a database without the spec is re-pointed at the best copy found
  (live first, then highest version), or removed when no copy exists (``dangling``);
* rows without any location record (a create into a cell that crashed before its
  locations were written: found by its expired lease) are adopted when one of them is
  live or outgoing; incoming-only leftovers of a destroyed instance are deleted.

Each change to a row is conditioned on the row being as it was read (state, move id,
version), so a decision that went stale (recover() stalled past its own lease) changes
nothing. Every statement checks out its connection and gives it back before the next;
the data access is in :mod:`reqspec_repo._store.move_rows` and
:mod:`reqspec_repo._store.leases`.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import uuid as uuid_mod
from collections import defaultdict
from collections.abc import Callable, Iterator

import attrs

from .._errors import DatabaseUnavailableError, ReadOnlyDatabaseError, ReqSpecError
from .._store.leases import LeasePurpose, Leases
from .._store.locations import Location, SpecStore
from .._store.move_rows import MoveRows, RowState
from .chunking import chunks

#: Suspects claimed per round: one lease statement, one re-read per database.
CLAIM_ROUND = 500
#: Rows per range of the full cross-check: its memory bound (16 bytes a row per
#: database, a few times over for the sets).
RANGE_ROWS = 50_000

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


class _Scanner:
    def __init__(self, store: SpecStore) -> None:
        self.store = store
        self.rows = MoveRows(store.repo.connections)
        self.leases = Leases(store.repo.connections)
        self.names = store.topology.database_names

    def in_flight(self) -> list[str]:
        """Instances an operation left in flight: those with a lease (held or expired),
        a location carrying a move id (committed, cleanup unfinished) or a row carrying
        one in any database (a sealed source, a hidden copy). Each read goes through a
        small index, so the cost is what is in flight, one connection at a time."""
        found: dict[str, None] = dict.fromkeys(_read(self.leases.leased))
        found.update(dict.fromkeys(_read(self.rows.locations_in_move)))
        for name in self.names:
            found.update(dict.fromkeys(_read(functools.partial(self.rows.rows_in_move, name))))
        return sorted(found)

    def suspects(self) -> tuple[list[str], int, dict[str, int]]:
        """The full cross-check: instances with a problem, the number of locations, and
        rows per database.

        The uuid space is cut into ranges of about ``RANGE_ROWS`` rows of the largest
        table (the locations, or one database's specs); per range every database gives its uuids per move state and the API
        database its locations per (database, settled), packed as 16-byte values, and set
        arithmetic finds the instances that are not live in exactly the one database their
        settled location names. Memory is bounded by one range and only suspects are
        kept; one connection at a time."""
        found: list[str] = []
        locations = 0
        counts: dict[str, int] = dict.fromkeys(self.names, 0)
        for low, high in self._ranges():
            located = {(p.database, p.settled): p.uuids for p in self.rows.range_locations(low, high)}
            rows = {name: {p.state: p.uuids for p in self.rows.range_states(name, low, high)} for name in self.names}
            locations += sum(len(u) // 16 for u in located.values())
            for name, states in rows.items():
                counts[name] += sum(len(u) // 16 for u in states.values())
            if _clean(located, rows):
                continue  # the common case: decided by comparing bytes, nothing unpacked
            unpacked_rows = {name: {state: _unpack(u) for state, u in states.items()} for name, states in rows.items()}
            unpacked_locs = {key: _unpack(u) for key, u in located.items()}
            found.extend(str(uuid_mod.UUID(bytes=b)) for b in sorted(_range_suspects(unpacked_locs, unpacked_rows)))
        return found, locations, counts

    def _ranges(self) -> list[tuple[str, str]]:
        """Consecutive inclusive uuid ranges covering the whole uuid space."""
        largest = max([self.rows.estimate_locations(), *(self.rows.estimate_rows(name) for name in self.names)])
        n = 1
        while n * RANGE_ROWS < largest and n < 1 << 16:
            n *= 2
        step = (1 << 128) // n
        lows = [i * step for i in range(n)]
        highs = [*lows[1:], 1 << 128]
        return [(str(uuid_mod.UUID(int=lo)), str(uuid_mod.UUID(int=hi - 1))) for lo, hi in zip(lows, highs, strict=True)]

    def rows_of(self, uuids: list[str]) -> dict[str, list[RowState]]:
        found: dict[str, list[RowState]] = defaultdict(list)
        for name in self.store.topology.database_names:
            for key, rows in self.rows.states(name, uuids).items():
                found[key].extend(rows)
        return found


def _read(query: Callable[[], list[str]]) -> list[str]:
    """A read-only query, asked again once if its connection turned out broken: recover()
    runs right after an incident, when pooled connections (ours, or a PgBouncer's server
    connections) to a restarted server are stale; the failed one is discarded, and a read
    is safe to repeat."""
    try:
        return query()
    except DatabaseUnavailableError:
        return query()


def _clean(located: dict[tuple[str, bool], bytes], rows: dict[str, dict[str, bytes]]) -> bool:
    """True when every instance of the range is live in exactly the database its settled
    location names: no location carries a move id, no row is hidden or sealed, and per
    database the (ordered, packed) uuids of its locations equal those of its live rows."""
    if any(not settled or database not in rows for database, settled in located):
        return False
    if any(state != "live" for states in rows.values() for state in states):
        return False
    return all(located.get((name, True), b"") == states.get("live", b"") for name, states in rows.items())


def _unpack(packed: bytes | None) -> set[bytes]:
    """16-byte uuid values packed end to end -> a set of them."""
    if not packed:
        return set()
    data = bytes(packed)
    return {data[i:i + 16] for i in range(0, len(data), 16)}


def _range_suspects(located: dict[tuple[str, bool], set[bytes]], rows: dict[str, dict[str, set[bytes]]]) -> set[bytes]:
    """Every uuid of one range that is not live in exactly the one database its settled
    location names (a location without a move id, a live row there, no copy elsewhere)."""
    seen: set[bytes] = set()
    elsewhere: set[bytes] = set()  # in more than one database
    for states in rows.values():
        here = set().union(*states.values())
        elsewhere |= seen & here
        seen |= here
    clean: set[bytes] = set()
    everything = set(seen)
    for (database, settled), uuids in located.items():
        everything |= uuids
        if settled:
            clean |= uuids & rows.get(database, {}).get("live", set())
    return everything - (clean - elsewhere)


def _committed_move(loc: Location, rows: list[RowState]) -> str | None:
    """The move id of a move committed and not cleaned up. A move copies into a database
    the location does not name and seals the row in the one it names; only its commit
    point flips the location from the sealed row to the copy. So the move committed when
    the location names the database holding its incoming copy, or its sealed (outgoing)
    row is in a database the location does not name (the copy already made live). A
    move of an earlier release marked the location itself."""
    if loc.move_id is not None:
        return loc.move_id
    home = [r for r in rows if r.database == loc.database]
    if len(home) == 1 and home[0].state == "incoming" and home[0].move_id is not None:
        return home[0].move_id
    if len(home) == 1 and home[0].state == "live":
        sealed_elsewhere = {
            r.move_id for r in rows if r.database != loc.database and r.state == "outgoing" and r.move_id is not None
        }
        if len(sealed_elsewhere) == 1:
            return sealed_elsewhere.pop()
    return None


def committed_move_described(loc: Location, rows: list[RowState]) -> str | None:
    """``move M into 'T' committed`` (``from 'S'`` for a move an earlier release marked
    on the location) for a move committed with its cleanup unfinished, else None; what
    verify() reports and ``reqspec show`` prints."""
    committed = _committed_move(loc, rows)
    if committed is None:
        return None
    origin = f"from {loc.moved_from!r}" if loc.move_id is not None else f"into {loc.database!r}"
    return f"move {committed} {origin} committed"


def _problems_of(key: str, loc: Location | None, rows: list[RowState]) -> list[Problem]:
    if loc is None:
        return [Problem(ProblemKind.ORPHAN, key, f"spec rows in {sorted(r.database for r in rows)} but no location record")]
    problems = []
    committed = committed_move_described(loc, rows)
    if committed is not None:
        problems.append(Problem(ProblemKind.INTERRUPTED_MOVE, key, f"{committed}, cleanup unfinished"))
    live = [r for r in rows if r.state == "live"]
    if len(live) > 1:
        problems.append(Problem(ProblemKind.DUPLICATE, key, f"live in {sorted(r.database for r in live)}"))
    hidden = [r for r in rows if r.state != "live"]
    if hidden and committed is None:
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


def recover(store: SpecStore, *, full: bool = False) -> RecoveryReport:
    """Finish or roll back every interrupted move (and create into a cell, and destroy)
    whose lease is free or expired; idempotent, safe beside running moves (their
    unexpired leases are left alone).

    By default only what is in flight is looked at (see the module's docstring), so it
    costs the work interrupted, not the size of the databases. ``full=True`` first runs
    the full cross-check of :func:`verify` and also repairs what no interrupted operation
    explains (specs written without a location record, duplicates, locations naming
    nothing)."""
    scan = _Scanner(store)
    suspects = scan.suspects()[0] if full else scan.in_flight()
    report = RecoveryReport([], [], [], [], [], [])
    for chunk in chunks(suspects, CLAIM_ROUND):
        with _claimed(store, chunk, LeasePurpose.RECOVER) as claimed:
            mine = [k for k in chunk if k in claimed]
            report.busy.extend(k for k in chunk if k not in claimed)
            if not mine:
                continue
            _resolve_chunk(scan, report, mine, store.locations(mine), scan.rows_of(mine))
    return report


def _resolve_chunk(
    scan: _Scanner, report: RecoveryReport, keys: list[str], locs: dict[str, Location],
    rows_of: dict[str, list[RowState]],
) -> None:
    """Resolve one claimed chunk. The two shapes an interrupted move leaves behind are
    handled a statement per database and move id for the whole chunk, as the mover does
    (so 1,000 interrupted moves cost a few dozen round trips, not thousands); anything
    else goes instance by instance through :func:`_resolve`."""
    finishing: dict[str, list[str]] = {}
    rolling: list[str] = []
    for key in keys:
        loc, rows = locs.get(key), rows_of.get(key, [])
        if (loc is None and not rows) or not _problems_of(key, loc, rows):
            continue  # e.g. a lease left by a crash before the first write: nothing to undo
        committed = None if loc is None else _committed_move(loc, rows)
        if committed is not None:
            finishing.setdefault(committed, []).append(key)
        elif loc is not None and _plain_rollback(loc, rows):
            rolling.append(key)
        else:
            report.record(_resolve(scan, key, loc, rows), key)
    if finishing:
        _finish_moves(scan, report, finishing, locs, rows_of)
    if rolling:
        _roll_back_moves(scan, report, rolling, locs, rows_of)


def _plain_rollback(loc: Location, rows: list[RowState]) -> bool:
    """A move stopped before its commit point: one row where the location says (live, or
    sealed by a move), and elsewhere only that or another move's hidden copies."""
    home = [r for r in rows if r.database == loc.database]
    return (
        len(home) == 1 and home[0].state in ("live", "outgoing")
        and all(r.state == "incoming" and r.move_id is not None for r in rows if r.database != loc.database)
    )


def _finish_moves(
    scan: _Scanner, report: RecoveryReport, finishing: dict[str, list[str]], locs: dict[str, Location],
    rows_of: dict[str, list[RowState]],
) -> None:
    """Moves committed, cleanup unfinished: what :func:`_resolve` does for one, per move
    id and database for all (every statement is scoped to the move id, so a copy of an
    older or newer move is never touched)."""
    moves = scan.rows
    done: list[str] = []
    for move_id, keys in finishing.items():
        homes: dict[str, list[str]] = {}
        elsewhere: dict[str, list[str]] = {}
        for key in keys:
            homes.setdefault(locs[key].database, []).append(key)
            for r in rows_of.get(key, []):
                if r.database != locs[key].database and r.move_id == move_id:
                    elsewhere.setdefault(r.database, []).append(key)
        for database, group in homes.items():
            moves.promote(database, group, move_id)
        for database, group in elsewhere.items():
            moves.drop_outgoing(database, group, move_id)
        marked = [key for key in keys if locs[key].move_id is not None]
        if marked:  # the mark a move of an earlier release left on its locations
            moves.finish(marked, move_id)
        done.extend(keys)
    # Whatever else is left (copies from older crashes) is tidied one by one.
    fresh, after = scan.store.locations(done), scan.rows_of(done)
    for key in done:
        loc = fresh.get(key)
        if loc is not None and _problems_of(key, loc, after.get(key, [])):
            _normalize(scan, key, loc, after.get(key, []))
        report.record(Outcome.FINISHED, key)


def _roll_back_moves(
    scan: _Scanner, report: RecoveryReport, keys: list[str], locs: dict[str, Location],
    rows_of: dict[str, list[RowState]],
) -> None:
    """Moves stopped before their commit point (see :func:`_plain_rollback`): the hidden
    copies go and the sealed home rows take writes again, per database and move id."""
    moves = scan.rows
    copies: dict[tuple[str, str], list[str]] = {}
    sealed: dict[tuple[str, str], list[str]] = {}
    for key in keys:
        for r in rows_of[key]:
            if r.database != locs[key].database and r.move_id is not None:
                copies.setdefault((r.database, r.move_id), []).append(key)
            elif r.database == locs[key].database and r.state == "outgoing" and r.move_id is not None:
                sealed.setdefault((r.database, r.move_id), []).append(key)
    for (database, move_id), group in copies.items():
        moves.undo_copy(database, group, move_id)
    for (database, move_id), group in sealed.items():
        moves.unseal(database, group, move_id)
    was_sealed = {k for group in sealed.values() for k in group}
    for key in keys:
        report.record(Outcome.ROLLED_BACK if key in was_sealed else Outcome.REPAIRED, key)


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
    committed = _committed_move(loc, rows)
    if committed is not None:  # committed: finish the move
        moves.promote(loc.database, [key], committed)
        for r in rows:
            if r.database != loc.database and r.move_id == committed:
                moves.drop_outgoing(r.database, [key], committed)
        if loc.move_id is not None:  # marked by a move of an earlier release
            moves.finish([key], committed)
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
