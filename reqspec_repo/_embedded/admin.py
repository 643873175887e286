"""Creating and dropping databases through an admin DSN (server or container alike)."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from .._store.queries import query


def _admin(name: str, database: str) -> sql.Composed:
    """A named admin statement from sql/_admin.sql with the database name as an identifier."""
    return sql.SQL(query("_admin", name).sql).format(database=sql.Identifier(database))


def create_database(admin_dsn: str, name: str, *, exist_ok: bool = False) -> None:
    """CREATE DATABASE name on the server of admin_dsn (connect_timeout 10 s)."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        if exist_ok:
            row = conn.execute(query("_admin", "exists_database").statement, {"name": name}).fetchone()
            if row is not None:
                return
        try:
            conn.execute(_admin("create_database", name))
        except (pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            if not exist_ok:
                raise


def drop_database(admin_dsn: str, name: str, *, missing_ok: bool = True) -> None:
    """DROP DATABASE name WITH (FORCE): open sessions on it are terminated."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(_admin("drop_database_if_exists" if missing_ok else "drop_database", name))
