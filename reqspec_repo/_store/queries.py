"""Named SQL queries, loaded once at import from ``sql/*.sql``, and the one way to run them.

Each query starts with an aiosql/sqlc style header ``-- name: verb_noun :cardinality``;
the cardinality decides what running it gives back, and only the call of that
cardinality is allowed (a mismatch fails loudly at first use):

* ``:one`` -> :meth:`Query.one`: one record or None;
* ``:many`` -> :meth:`Query.many` (a list) or :meth:`Query.stream` (a server-side cursor);
* ``:scalar`` -> :meth:`Query.scalar`: the first column of the one row;
* ``:exec`` -> :meth:`Query.exec`: the number of rows affected;
* ``:copy`` -> :meth:`Query.copy`: a ``COPY ... FROM STDIN`` to write rows into.

Records are named and typed through psycopg row factories: ``namedtuple_row`` by
default, ``class_row(SomeAttrsClass)`` where a caller wants its own type. A 40-line loader is used instead of aiosql because the repository drives
psycopg directly (pipelines, COPY, server-side cursors, binary rows), which aiosql's
execution layer would hide; only the "SQL lives in files" convention is borrowed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar, overload

import attrs
import psycopg
from psycopg.rows import RowFactory, namedtuple_row, tuple_row

from .resources import sql_dir
from .roundtrips import (
    apply_timeouts,
    bounded,
    bounded_block,
    execute,
    in_transaction,
    timeouts_of,
)

Cardinality = Literal["one", "many", "scalar", "exec", "copy"]
Params: TypeAlias = Mapping[str, object] | None
#: A connection, or a cursor kept by the caller (the repository's hot paths reuse one).
Executor: TypeAlias = "psycopg.Connection[Any] | psycopg.Cursor[Any]"
R = TypeVar("R")
#: libpq 17 added chunked fetching (``Cursor.stream(size=...)``); older ones fetch whole.
_CHUNKED_ROWS = psycopg.pq.version() >= 170000

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*:(one|many|scalar|exec|copy)\s*$")


class _Records:
    """The named record type of one statement's rows, made from its first result and kept.

    psycopg's ``namedtuple_row`` reads and decodes every column name of every result
    again (about 3 us a statement, a tenth of a repository get); a named query's columns
    are fixed by its text (no ``SELECT *`` in ``sql/``), so one record type serves every
    execution. The column count is checked on each use all the same."""

    __slots__ = ("_kept",)

    def __init__(self) -> None:
        self._kept: tuple[int, Any] = (-1, None)  # (column count, record maker): one atomic swap

    def make(self, cur: psycopg.Cursor[Any], values: tuple[Any, ...]) -> Any:
        """``values`` (a tuple row ``cur`` just fetched) as a named record."""
        count, maker = self._kept
        if count != len(values):
            maker = namedtuple_row(cur)  # right after this statement ran: its own columns
            self._kept = (len(values), maker)
        return maker(values)


@attrs.frozen
class Query:
    name: str
    cardinality: Cardinality
    sql: str
    # psycopg takes bytes as a trusted statement; the text never mixes with values.
    statement: bytes = attrs.field(init=False)
    _records: _Records = attrs.field(init=False, factory=_Records, eq=False, repr=False)

    @statement.default
    def _encode(self) -> bytes:
        return self.sql.encode("utf-8")

    def _expect(self, cardinality: Cardinality) -> None:
        if self.cardinality != cardinality:
            raise TypeError(
                f"query {self.name!r} is :{self.cardinality}; it cannot be run as :{cardinality}"
            )

    def _cursor(self, executor: Executor, row: RowFactory[Any]) -> psycopg.Cursor[Any]:
        if isinstance(executor, psycopg.Cursor):
            if executor.row_factory is not row:  # a kept cursor: set only when it changes
                executor.row_factory = row
            return executor
        return executor.cursor(row_factory=row)

    @overload
    def one(self, executor: Executor, params: Params = None, *, row: None = None) -> Any: ...
    @overload
    def one(self, executor: Executor, params: Params = None, *, row: RowFactory[R]) -> R | None: ...
    def one(self, executor: Executor, params: Params = None, *, row: RowFactory[Any] | None = None) -> Any:
        """The one row of a ``:one`` query, or None: a named record (a namedtuple), or
        what the row factory ``row`` makes."""
        self._expect("one")
        if row is not None:
            cur = self._cursor(executor, row)
            execute(cur, self.statement, params)
            return cur.fetchone()
        # The hot path (every single get, create and save): tuples from psycopg's C
        # code, named here by the record type kept for this statement.
        cur = self._cursor(executor, tuple_row)
        execute(cur, self.statement, params)
        values = cur.fetchone()
        return None if values is None else self._records.make(cur, values)

    @overload
    def many(self, executor: Executor, params: Params = None) -> list[Any]: ...
    @overload
    def many(self, executor: Executor, params: Params = None, *, row: RowFactory[R]) -> list[R]: ...
    def many(self, executor: Executor, params: Params = None, *, row: RowFactory[Any] = namedtuple_row) -> list[Any]:
        """Every row of a ``:many`` query."""
        self._expect("many")
        cur = self._cursor(executor, row)
        execute(cur, self.statement, params)
        return cur.fetchall()

    def each(
        self,
        cur: psycopg.Cursor[Any],
        params: Params = None,
        *,
        row: RowFactory[Any] = namedtuple_row,
        chunk: int = 200,
    ) -> Iterator[Any]:
        """The rows of a ``:many`` query as they arrive, ``chunk`` rows at a time (libpq 17
        chunked mode: the caller works on the first rows while the server sends the rest);
        with an older libpq, the whole result is fetched first."""
        self._expect("many")
        cur = self._cursor(cur, row)
        conn = cur.connection
        # One statement: the server's statement_timeout bounds all of it, so one
        # client-side deadline does too.
        with in_transaction(conn), bounded_block(conn):
            if _CHUNKED_ROWS:
                yield from cur.stream(self.statement, params, size=chunk)
            else:
                cur.execute(self.statement, params)
                yield from cur.fetchall()

    def stream(
        self,
        conn: psycopg.Connection[Any],
        params: Params = None,
        *,
        row: RowFactory[Any] = namedtuple_row,
        batch: int = 2000,
    ) -> Iterator[Any]:
        """The rows of a ``:many`` query through a server-side cursor, ``batch`` at a time:
        bounded memory whatever the table's size. Needs a transaction (the cursor lives in
        it); one is opened if the connection is in autocommit."""
        self._expect("many")
        with conn.transaction(), conn.cursor(name=f"reqspec_iter_{self.name}", row_factory=row) as cur:
            if timeouts_of(conn) is not None:
                bounded(conn, lambda: apply_timeouts(conn))
            bounded(conn, lambda: cur.execute(self.statement, params))
            while rows := bounded(conn, lambda: cur.fetchmany(batch)):  # one FETCH each
                yield from rows

    def scalar(self, executor: Executor, params: Params = None) -> Any:
        """The first column of the one row of a ``:scalar`` query (None without a row)."""
        self._expect("scalar")
        cur = self._cursor(executor, tuple_row)
        execute(cur, self.statement, params)
        found = cur.fetchone()
        return None if found is None else found[0]

    def run(self, executor: Executor, params: Params = None) -> Any:
        """Run the query as its cardinality says (``:one`` a record or None, ``:many`` a
        list of records, ``:scalar`` a value, ``:exec`` a row count), for callers that run
        queries by name and need no static type."""
        if self.cardinality == "copy":
            raise TypeError(f"query {self.name!r} is :copy; use Query.copy()")
        method: dict[str, Callable[[Executor, Params], Any]] = {
            "one": self.one, "many": self.many, "scalar": self.scalar, "exec": self.exec
        }
        return method[self.cardinality](executor, params)

    @contextlib.contextmanager
    def copy(self, cur: psycopg.Cursor[Any]) -> Iterator[psycopg.Copy]:
        """The COPY of a ``:copy`` query on ``cur``, to use as a context manager (one
        statement, under one client-side deadline)."""
        self._expect("copy")
        conn = cur.connection
        with in_transaction(conn), bounded_block(conn), cur.copy(self.statement) as copy:
            yield copy

    def exec(self, executor: Executor, params: Params = None) -> int:
        """Run an ``:exec`` query; the number of rows it affected."""
        self._expect("exec")
        cur = self._cursor(executor, tuple_row)
        execute(cur, self.statement, params)
        return cur.rowcount


def parse_queries(text: str, source: str) -> dict[str, Query]:
    """Split one .sql file into its named queries."""
    found: dict[str, Query] = {}
    name: str | None = None
    card: str = "exec"
    body: list[str] = []

    def flush() -> None:
        if name is None:
            return
        sql = "\n".join(line for line in body if not line.lstrip().startswith("--")).strip()
        if not sql:
            raise ValueError(f"{source}: query {name!r} has no SQL")
        found[name] = Query(name, card, sql.rstrip(";").strip())  # type: ignore[arg-type]

    for line in text.splitlines():
        header = _HEADER.match(line.strip())
        if header:
            flush()
            name, card = header.group(1), header.group(2)
            if name in found:
                raise ValueError(f"{source}: query {name!r} is defined twice")
            body = []
        elif name is not None:
            body.append(line)
    flush()
    return found


def load_queries(folder: Path) -> dict[str, dict[str, Query]]:
    """All queries of a folder, keyed by file stem (one file per table) then name."""
    return {
        path.stem: parse_queries(path.read_text(encoding="utf-8"), path.name)
        for path in sorted(folder.glob("*.sql"))
    }


QUERIES: dict[str, dict[str, Query]] = load_queries(sql_dir())


def query(table: str, name: str) -> Query:
    """One named query of one table's file; a typo fails loudly at first use."""
    return QUERIES[table][name]
