"""recover() finishes or rolls back interrupted moves; verify() checks consistency.

Both scan the location records in the API database and the request_specs rows of every
database. recover() then works only on instances whose advisory lock it can take (so a
move in progress is left alone), re-reads their state under the lock, and resolves it:

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
"""

from __future__ import annotations

import contextlib
import enum
import heapq
import itertools
import uuid as uuid_mod
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

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
_LIST_ALL_LOCATIONS = query("spec_locations", "list_all_locations")
_LIST_ALL_ROW_STATES = query("request_specs", "list_all_row_states")
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

    def _row_stream(self, name: str) -> Iterator[tuple[Any, Location | None, RowState | None]]:
        """All rows of one database in uuid order, through a server-side cursor."""
        with self.connections.connection(name) as conn:
            for r in _LIST_ALL_ROW_STATES.stream(conn):
                yield r.instance_uuid, None, RowState(name, r.move_state, _opt(r.move_id), r.version)

    def _location_stream(self) -> Iterator[tuple[Any, Location | None, RowState | None]]:
        with self.connections.connection(API) as conn:
            for loc in _LIST_ALL_LOCATIONS.stream(conn, row=_LOCATION):
                yield uuid_mod.UUID(loc.instance_uuid), loc, None

    def suspects(self) -> tuple[list[str], int, dict[str, int]]:
        """Instances with a problem, the number of locations, and rows per database.

        Every database and the location records are read in uuid order and merged, so
        memory stays bounded whatever the number of specs; only suspects are kept."""
        streams = [self._location_stream()]
        streams.extend(self._row_stream(name) for name in self.names)
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
        for name in self.names:
            with self.connections.connection(name) as conn:
                for r in _GET_ROW_STATES.many(conn, {"instance_uuids": uuids}):
                    found[str(r.instance_uuid)].append(RowState(name, r.move_state, _opt(r.move_id), r.version))
        return found


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


def recover(store: SpecStore) -> RecoveryReport:
    """Finish or roll back every interrupted move; idempotent, safe beside running moves."""
    scan = _Scanner(store)
    suspects, _, _ = scan.suspects()
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
            for r in rows:  # copies of a destroyed instance: nothing to adopt
                _exec(store, r.database, "delete_any_row", "request_specs", {"instance_uuid": key})
            return Outcome.REPAIRED
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
