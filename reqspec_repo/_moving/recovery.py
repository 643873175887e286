"""recover() finishes or rolls back interrupted moves; verify() checks consistency.

recover() looks at what is in flight: every operation that can be interrupted (a move's
seal, copy and commit, a create into a cell) marks what it touches with its move id
until it is done, and those marks are found through the partial indexes on move_id, so
recover() costs the work in flight, not the size of the databases. verify() and
``recover(full=True)`` cross-check every location record against the rows of every
database, range by range. recover() then works only on instances whose advisory lock it
can take (so a move in progress is left alone), re-reads their state under the lock,
and resolves it:

* a location carrying a move id (crash after the commit point): finish - promote the
  target's incoming copy, delete the outgoing copy elsewhere, clear the move id;
* otherwise (crash before it, or no move at all): the row in the database the location
  names becomes the live one (an outgoing row is unsealed) and copies elsewhere (a
  target's incoming copy) are deleted - the move is rolled back;
* a location naming a database without the spec is re-pointed at the best copy found
  (live first, then highest version), or removed when no copy exists (``dangling``);
* rows without any location record: hidden (incoming) rows are a create into a cell
  (or a move of a destroyed instance) that never reached its commit point, and are
  deleted; live or outgoing ones (written without a location, found by the full check)
  are adopted.
"""

from __future__ import annotations

import contextlib
import enum
import uuid as uuid_mod
from collections import defaultdict
from collections.abc import Iterator, Mapping

import attrs
import psycopg
from psycopg.rows import class_row

from .._errors import ReqSpecError
from .._store.config import API
from .._store.locations import Location, SpecStore
from .._store.queries import query
from .chunking import chunks

Conn = psycopg.Connection[tuple[object, ...]]
#: Suspects locked per round: session advisory locks use shared lock-table slots.
LOCK_ROUND = 500
_LOCATION = class_row(Location)
_LOCATIONS_IN_MOVE = query("spec_locations", "list_locations_in_move")
_ROWS_IN_MOVE = query("request_specs", "list_rows_in_move")
_RANGE_LOCATIONS = query("spec_locations", "range_locations")
_RANGE_ROW_STATES = query("request_specs", "range_row_states")
_ESTIMATE_ROWS = query("request_specs", "estimate_rows")
_COUNT_ALL = query("request_specs", "count_all_rows")
#: Rows per range of the full cross-check (its memory bound, about 16 bytes a row per
#: database, times a few for the sets).
RANGE_ROWS = 50_000
_GET_ROW_STATES = query("request_specs", "get_row_states")
_TRY_LOCK = query("spec_locations", "try_lock_instances")
_UNLOCK_ALL = query("spec_locations", "unlock_all")


@attrs.frozen
class RowState:
    database: str
    state: str  # live | incoming | outgoing
    move_id: str | None
    version: int


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
        self.connections = store.repo.connections
        self.names = store.topology.database_names

    def in_flight(self) -> list[str]:
        """Instances an operation left in flight: locations carrying a move id (a move or
        create committed, cleanup unfinished) and rows carrying one in any database (sealed
        sources, hidden copies, creates into a cell before their commit point). Read
        through the partial indexes on move_id: the cost is what is in flight."""
        found: dict[str, None] = {}
        with self.connections.connection(API) as conn:
            found.update((str(r.instance_uuid), None) for r in _LOCATIONS_IN_MOVE.many(conn))
        for name in self.names:
            with self.connections.connection(name) as conn:
                found.update((str(r.instance_uuid), None) for r in _ROWS_IN_MOVE.many(conn))
        return sorted(found)

    def suspects(self) -> tuple[list[str], int, dict[str, int]]:
        """The full cross-check: instances with a problem, the number of locations, and
        rows per database.

        The uuid space is cut into ranges sized from the largest table (about
        ``RANGE_ROWS`` rows each); per range, every database returns its uuids per move
        state and the API database its locations per (database, settled), packed as
        16-byte values, and plain set arithmetic finds the instances that are not live in
        exactly the one database their settled location names. Memory is bounded by one
        range; only suspects are kept."""
        ranges = self._ranges()
        found: list[str] = []
        locations = 0
        counts: dict[str, int] = dict.fromkeys(self.names, 0)
        for low, high in ranges:
            params = {"low": low, "high": high}
            located: dict[tuple[str, bool], set[bytes]] = {}
            with self.connections.connection(API) as conn:
                for r in _RANGE_LOCATIONS.many(conn, params):
                    located[(r.database, r.settled)] = _unpack(r.uuids)
                    locations += r.n
            rows: dict[str, dict[str, set[bytes]]] = {}
            for name in self.names:
                with self.connections.connection(name) as conn:
                    for r in _RANGE_ROW_STATES.many(conn, params):
                        rows.setdefault(name, {})[r.move_state] = _unpack(r.uuids)
                        counts[name] += r.n
            found.extend(str(uuid_mod.UUID(bytes=b)) for b in sorted(_range_suspects(located, rows)))
        return found, locations, counts

    def _ranges(self) -> list[tuple[str, str]]:
        """Consecutive inclusive uuid ranges covering the whole uuid space."""
        largest = 0
        for name in self.names:
            with self.connections.connection(name) as conn:
                estimate = int(_ESTIMATE_ROWS.scalar(conn) or 0)
                if estimate < 0:  # never analyzed: count once
                    estimate = int(_COUNT_ALL.scalar(conn) or 0)
            largest = max(largest, estimate)
        n = 1
        while n * RANGE_ROWS < largest and n < 1 << 16:
            n *= 2
        step = (1 << 128) // n
        lows = [i * step for i in range(n)]
        highs = [*lows[1:], 1 << 128]
        return [(str(uuid_mod.UUID(int=lo)), str(uuid_mod.UUID(int=hi - 1))) for lo, hi in zip(lows, highs, strict=True)]

    def rows_of(self, uuids: list[str]) -> dict[str, list[RowState]]:
        found: dict[str, list[RowState]] = defaultdict(list)
        for name in self.names:
            with self.connections.connection(name) as conn:
                for r in _GET_ROW_STATES.many(conn, {"instance_uuids": uuids}):
                    found[str(r.instance_uuid)].append(RowState(name, r.move_state, _opt(r.move_id), r.version))
        return found


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


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


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
def _locks(store: SpecStore, uuids: list[str]) -> Iterator[set[str]]:
    """Try-lock the instances on one API connection; yields those locked."""
    with store.repo.connections.connection(API) as api:
        try:
            got = {str(r.instance_uuid) for r in _TRY_LOCK.many(api, {"instance_uuids": uuids})}
            yield got
        finally:
            with contextlib.suppress(psycopg.Error, ReqSpecError):
                if not api.closed:
                    _UNLOCK_ALL.exec(api)


def verify(store: SpecStore) -> VerifyReport:
    """Read-only consistency check across the API database and every cell."""
    scan = _Scanner(store)
    suspects, locations, counts = scan.suspects()
    problems: list[Problem] = []
    busy: list[str] = []
    for chunk in chunks(suspects, LOCK_ROUND):
        with _locks(store, chunk) as locked:
            fresh_locs = store.locations(chunk)
            fresh_rows = scan.rows_of(chunk)
            for key in chunk:
                if key not in locked:
                    busy.append(key)
                    continue
                problems.extend(_problems_of(key, fresh_locs.get(key), fresh_rows.get(key, [])))
    return VerifyReport(problems, locations, counts, busy)


def recover(store: SpecStore, *, full: bool = False) -> RecoveryReport:
    """Finish or roll back every interrupted move (and create into a cell); idempotent,
    safe beside running moves.

    By default only what is in flight is looked at (the move ids in the location records
    and in every database, through their partial indexes), so it costs what was
    interrupted, not the size of the databases. ``full=True`` first runs the full
    cross-check of :func:`verify` and also repairs what no interrupted operation explains
    (specs written without a location record, duplicates, locations naming nothing)."""
    scan = _Scanner(store)
    suspects = scan.suspects()[0] if full else scan.in_flight()
    report = RecoveryReport([], [], [], [], [], [])
    for chunk in chunks(suspects, LOCK_ROUND):
        with _locks(store, chunk) as locked:
            mine = [k for k in chunk if k in locked]
            report.busy.extend(k for k in chunk if k not in locked)
            if not mine:
                continue
            fresh_locs = store.locations(mine)
            fresh_rows = scan.rows_of(mine)
            for key in mine:
                report.record(_resolve(store, key, fresh_locs.get(key), fresh_rows.get(key, [])), key)
    return report


def _exec(store: SpecStore, database: str, name: str, table: str, params: Mapping[str, object]) -> None:
    with store.repo.connections.connection(database) as conn:
        query(table, name).run(conn, params)


def _resolve(store: SpecStore, key: str, loc: Location | None, rows: list[RowState]) -> Outcome:
    """Bring one locked instance to its one live copy; returns the report field to count it in."""
    if loc is None:
        if all(r.state == "incoming" for r in rows):
            # A create into a cell (or a move of a since destroyed instance) that never
            # reached its commit point: nothing was acknowledged, nothing to adopt.
            for r in rows:
                _exec(store, r.database, "delete_any_row", "request_specs", {"instance_uuid": key})
            return Outcome.ROLLED_BACK
        best = max(rows, key=lambda r: (r.state == "live", r.version))
        _exec(store, API, "insert_locations", "spec_locations",
              {"instance_uuids": [key], "database_name": best.database})
        _normalize(store, key, Location(key, best.database, 1), rows)
        return Outcome.ADOPTED
    if loc.move_id is not None:  # committed: finish the move
        batch = {"instance_uuids": [key], "move_id": loc.move_id}
        _exec(store, loc.database, "promote_incoming", "request_specs", batch)
        for r in rows:
            if r.database != loc.database and r.move_id == loc.move_id:
                _exec(store, r.database, "delete_outgoing", "request_specs", batch)
        _exec(store, API, "clear_moves", "spec_locations", batch)
        # Whatever else is left (copies from older crashes) is tidied the same way.
        fresh = store.locations([key]).get(key)
        after = _Scanner(store).rows_of([key]).get(key, [])
        if fresh is not None and _problems_of(key, fresh, after):
            _normalize(store, key, fresh, after)
        return Outcome.FINISHED
    sealed_at_home = any(r.database == loc.database and r.state == "outgoing" for r in rows)
    outcome = _normalize(store, key, loc, rows)
    return Outcome.ROLLED_BACK if sealed_at_home and outcome == Outcome.REPAIRED else outcome


def _normalize(store: SpecStore, key: str, loc: Location, rows: list[RowState]) -> Outcome:
    """Make the row the location names the live one and delete every other copy."""
    one = {"instance_uuid": key}
    home = [r for r in rows if r.database == loc.database]
    if not home:
        if not rows:
            _exec(store, API, "delete_location", "spec_locations", one)
            return Outcome.DANGLING_REMOVED
        best = max(rows, key=lambda r: (r.state == "live", r.version))
        _exec(store, API, "repoint_location", "spec_locations",
              {"instance_uuid": key, "database_name": best.database})
        home = [best]
    keep = home[0]
    if keep.state != "live":
        _exec(store, keep.database, "set_row_live", "request_specs", one)
    for r in rows:
        if r.database != keep.database:
            _exec(store, r.database, "delete_any_row", "request_specs", one)
    return Outcome.REPAIRED
