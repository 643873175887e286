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
import heapq
import itertools
import uuid as uuid_mod
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import psycopg

from .._errors import ReqSpecError
from .._store.config import API
from .._store.locations import Location, SpecStore
from .._store.queries import query

Conn = psycopg.Connection[tuple[object, ...]]


@attrs.frozen
class RowState:
    database: str
    state: str  # live | incoming | outgoing
    move_id: str | None
    version: int


@attrs.frozen
class Problem:
    kind: str  # orphan | duplicate | hidden_leftover | missing | interrupted_move
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

    def _stream(self, database: str, table: str, name: str) -> Iterator[tuple[Any, ...]]:
        """All rows of one listing query through a server-side cursor (bounded memory)."""
        with self.connections.connection(database) as conn:
            conn.autocommit = False
            try:
                with conn.cursor(name=f"reqspec_scan_{uuid_mod.uuid4().hex[:12]}") as cur:
                    cur.execute(query(table, name).statement)
                    while batch := cur.fetchmany(2000):
                        yield from batch
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                    conn.autocommit = True

    def _row_stream(self, name: str) -> Iterator[tuple[Any, Location | None, RowState | None]]:
        for r in self._stream(name, "request_specs", "list_all_row_states"):
            yield r[0], None, RowState(name, str(r[1]), _opt(r[2]), int(r[3]))

    def suspects(self) -> tuple[list[str], int, dict[str, int]]:
        """Instances with a problem, the number of locations, and rows per database.

        Every database and the location records are read in uuid order and merged, so
        memory stays bounded whatever the number of specs; only suspects are kept."""
        streams: list[Iterator[tuple[Any, Location | None, RowState | None]]] = [
            (
                (r[0], Location(str(r[0]), str(r[1]), 0, _opt(r[2]), _opt(r[3])), None)
                for r in self._stream(API, "spec_locations", "list_all_locations")
            )
        ]
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
                for u, state, move_id, version in conn.execute(
                    query("request_specs", "get_row_states").statement, {"instance_uuids": uuids}
                ):
                    found[str(u)].append(RowState(name, str(state), _opt(move_id), int(version)))
        return found


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def _problems_of(key: str, loc: Location | None, rows: list[RowState]) -> list[Problem]:
    if loc is None:
        return [Problem("orphan", key, f"spec rows in {sorted(r.database for r in rows)} but no location record")]
    problems = []
    if loc.move_id is not None:
        problems.append(
            Problem("interrupted_move", key, f"move {loc.move_id} from {loc.moved_from!r} committed, cleanup unfinished")
        )
    live = [r for r in rows if r.state == "live"]
    if len(live) > 1:
        problems.append(Problem("duplicate", key, f"live in {sorted(r.database for r in live)}"))
    hidden = [r for r in rows if r.state != "live"]
    if hidden and loc.move_id is None:
        kind = "interrupted_move" if any(r.state == "outgoing" for r in hidden) else "hidden_leftover"
        problems.append(Problem(kind, key, ", ".join(f"{r.state} row in {r.database!r}" for r in hidden)))
    if not any(r.database == loc.database for r in rows):
        problems.append(Problem("missing", key, f"location names {loc.database!r}, which has no row"))
    elif not problems and not any(r.database == loc.database and r.state == "live" for r in rows):
        problems.append(Problem("hidden_leftover", key, f"the row in {loc.database!r} is not live"))
    return problems


@contextlib.contextmanager
def _locks(store: SpecStore, uuids: list[str]) -> Iterator[set[str]]:
    """Try-lock the instances on one API connection; yields those locked."""
    with store.repo.connections.connection(API) as api:
        try:
            got = {
                str(r[0])
                for r in api.execute(
                    query("spec_locations", "try_lock_instances").statement, {"instance_uuids": uuids}
                ).fetchall()
            }
            yield got
        finally:
            with contextlib.suppress(psycopg.Error, ReqSpecError):
                if not api.closed:
                    api.execute(query("spec_locations", "unlock_all").statement)


def verify(store: SpecStore) -> VerifyReport:
    """Read-only consistency check across the API database and every cell."""
    scan = _Scanner(store)
    suspects, locations, counts = scan.suspects()
    problems: list[Problem] = []
    busy: list[str] = []
    for chunk in _chunks(suspects):
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
    for chunk in _chunks(suspects):
        with _locks(store, chunk) as locked:
            mine = [k for k in chunk if k in locked]
            report.busy.extend(k for k in chunk if k not in locked)
            if not mine:
                continue
            fresh_locs = store.locations(mine)
            fresh_rows = scan.rows_of(mine)
            for key in mine:
                outcome = _resolve(store, key, fresh_locs.get(key), fresh_rows.get(key, []))
                getattr(report, outcome).append(key)
    return report


def _chunks(keys: list[str], size: int = 500) -> Iterator[list[str]]:
    # Bounded per lock round: session advisory locks use shared lock-table slots.
    for i in range(0, len(keys), size):
        yield keys[i:i + size]


def _exec(store: SpecStore, database: str, name: str, table: str, params: Mapping[str, object]) -> None:
    with store.repo.connections.connection(database) as conn:
        conn.execute(query(table, name).statement, params)


def _resolve(store: SpecStore, key: str, loc: Location | None, rows: list[RowState]) -> str:
    """Bring one locked instance to its one live copy; returns the report field to count it in."""
    if loc is None:
        if all(r.state == "incoming" for r in rows):
            for r in rows:  # copies of a destroyed instance: nothing to adopt
                _exec(store, r.database, "delete_any_row", "request_specs", {"instance_uuid": key})
            return "repaired"
        best = max(rows, key=lambda r: (r.state == "live", r.version))
        _exec(store, API, "insert_locations", "spec_locations",
              {"instance_uuids": [key], "database_name": best.database})
        _normalize(store, key, Location(key, best.database, 1), rows)
        return "adopted"
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
        return "finished"
    sealed_at_home = any(r.database == loc.database and r.state == "outgoing" for r in rows)
    outcome = _normalize(store, key, loc, rows)
    return "rolled_back" if sealed_at_home and outcome == "repaired" else outcome


def _normalize(store: SpecStore, key: str, loc: Location, rows: list[RowState]) -> str:
    """Make the row the location names the live one and delete every other copy."""
    one = {"instance_uuid": key}
    home = [r for r in rows if r.database == loc.database]
    if not home:
        if not rows:
            _exec(store, API, "delete_location", "spec_locations", one)
            return "dangling_removed"
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
    return "repaired"
