"""Named SQL queries, loaded once at import from ``sql/*.sql``.

Each query starts with an aiosql/sqlc style header ``-- name: verb_noun :cardinality``;
the cardinality (``:one``, ``:many``, ``:scalar``, ``:exec``) says what the caller
fetches. A 40-line loader is used instead of aiosql because the repository drives
psycopg directly (pipelines, COPY, server-side cursors, binary rows), which aiosql's
execution layer would hide; only the "SQL lives in files" convention is borrowed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import attrs

from .._store.resources import sql_dir

Cardinality = Literal["one", "many", "scalar", "exec"]

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*:(one|many|scalar|exec)\s*$")


@attrs.frozen
class Query:
    name: str
    cardinality: Cardinality
    sql: str
    # psycopg takes bytes as a trusted statement; the text never mixes with values.
    statement: bytes = attrs.field(init=False)

    @statement.default
    def _encode(self) -> bytes:
        return self.sql.encode("utf-8")


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
