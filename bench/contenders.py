"""The three contenders doing the same work: raw psycopg, SQLAlchemy ORM, the repository.

Raw psycopg runs the repository's own SQL (from ``sql/request_specs.sql``) with orjson and
returns dicts. The ORM stores the document as JSON text in a Text column (its own table).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from sqlalchemy import BigInteger, Integer, String, Text, create_engine, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from reqspec_repo._spec import codec
from reqspec_repo._store.queries import query


def _q(name: str) -> bytes:
    return query("request_specs", name).statement


# --- raw psycopg --------------------------------------------------------------------------


class Raw:
    """One autocommit connection, the repository's SQL, orjson both ways, dicts."""

    def __init__(self, dsn: str, *, prepare_threshold: int | None = 5) -> None:
        # prepare_threshold=None behind a transaction-mode pooler (as the library does).
        self.conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=prepare_threshold)
        set_json_dumps(orjson.dumps, self.conn)
        set_json_loads(orjson.loads, self.conn)
        self.insert = _q("insert_spec")
        self.get_one = _q("get_by_instance_uuid")
        self.get_many_sql = _q("get_many_by_instance_uuids")
        self.cas = _q("update_spec_if_version")

    def close(self) -> None:
        self.conn.close()

    def create(self, doc: dict[str, Any]) -> int:
        row = self.conn.execute(
            self.insert,
            {"instance_uuid": doc["instance_uuid"], "spec": Jsonb(doc), "schema_version": codec.SCHEMA_VERSION},
        ).fetchone()
        assert row is not None
        return int(row[0])

    def get(self, instance_uuid: str) -> tuple[dict[str, Any], int]:
        row = self.conn.execute(self.get_one, {"instance_uuid": instance_uuid}).fetchone()
        assert row is not None
        return row[0], int(row[1])

    def save(self, doc: dict[str, Any], expected_version: int) -> int:
        row = self.conn.execute(
            self.cas,
            {"instance_uuid": doc["instance_uuid"], "spec": Jsonb(doc),
             "schema_version": codec.SCHEMA_VERSION, "expected_version": expected_version},
        ).fetchone()
        assert row is not None
        return int(row[0])

    def copy_create(self, docs: Sequence[dict[str, Any]]) -> None:
        """Binary COPY straight into request_specs (one statement: all rows or none)."""
        with self.conn.cursor() as cur:
            with cur.copy(b"COPY request_specs (instance_uuid, spec, schema_version) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["uuid", "jsonb", "int4"])
                version = codec.SCHEMA_VERSION
                for doc in docs:
                    cp.write_row((uuid.UUID(doc["instance_uuid"]), Jsonb(doc), version))

    def get_many(self, uuids: Sequence[str]) -> list[tuple[Any, ...]]:
        return self.conn.execute(self.get_many_sql, {"instance_uuids": list(uuids)}).fetchall()


# --- SQLAlchemy ORM ---------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class OrmSpec(Base):
    __tablename__ = "orm_request_specs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), unique=True, nullable=False)
    spec: Mapped[str] = mapped_column(Text, nullable=False)
    schema_version: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)


class Orm:
    """SQLAlchemy 2 ORM, psycopg 3 driver, documents as JSON text."""

    def __init__(self, dsn: str) -> None:
        self.engine = create_engine(
            "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), pool_size=2
        )
        Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def create(self, doc: dict[str, Any]) -> int:
        with Session(self.engine) as session:
            row = OrmSpec(instance_uuid=doc["instance_uuid"], spec=orjson.dumps(doc).decode(),
                          schema_version=codec.SCHEMA_VERSION, version=1)
            session.add(row)
            session.commit()
            return 1

    def get(self, instance_uuid: str) -> Any:
        with Session(self.engine) as session:
            row = session.scalars(select(OrmSpec).where(OrmSpec.instance_uuid == instance_uuid)).one()
            return codec.decode(row.spec, instance_uuid=instance_uuid), row.version

    def save(self, doc: dict[str, Any], expected_version: int) -> int:
        with Session(self.engine) as session:
            new = session.execute(
                update(OrmSpec)
                .where(OrmSpec.instance_uuid == doc["instance_uuid"], OrmSpec.version == expected_version)
                .values(spec=orjson.dumps(doc).decode(), version=OrmSpec.version + 1)
                .returning(OrmSpec.version)
            ).scalar_one()
            session.commit()
            return int(new)

    def create_many(self, docs: Sequence[dict[str, Any]]) -> None:
        with Session(self.engine) as session:
            session.add_all([
                OrmSpec(instance_uuid=d["instance_uuid"], spec=orjson.dumps(d).decode(),
                        schema_version=codec.SCHEMA_VERSION, version=1)
                for d in docs
            ])
            session.commit()

    def get_many(self, uuids: Sequence[str]) -> list[Any]:
        with Session(self.engine) as session:
            rows = session.scalars(select(OrmSpec).where(OrmSpec.instance_uuid.in_(list(uuids)))).all()
            return [codec.decode(r.spec, instance_uuid=r.instance_uuid) for r in rows]
