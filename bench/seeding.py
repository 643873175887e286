"""Loading many specs fast for the large-table and scale rows: binary COPY of template
documents re-keyed by text substitution (no encoding per row), optionally with their
location records in an API database."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence

import psycopg

from reqspec_repo._spec import codec
from reqspec_repo._spec.model import RequestSpec
from reqspec_repo._store.documents import as_jsonb

_COPY_SPECS = b"COPY request_specs (instance_uuid, spec, schema_version) FROM STDIN (FORMAT BINARY)"
_COPY_LOCATIONS = b"COPY spec_locations (instance_uuid, database_name) FROM STDIN (FORMAT BINARY)"


def copy_specs(dsn: str, base: Sequence[RequestSpec], count: int, seed: int) -> list[str]:
    """COPY ``count`` specs into ``dsn``'s request_specs, vacuumed, analyzed and
    checkpointed (no checkpoint of the load during the measurements); their uuids."""
    templates = [codec.encode(x) for x in base]
    rng = random.Random(seed)
    keys: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(_COPY_SPECS) as cp:
            cp.set_types(["uuid", "jsonb", "int4"])
            for i in range(count):
                src = base[i % len(base)]
                new = uuid.UUID(int=rng.getrandbits(128), version=4)
                text = str(new)
                doc = templates[i % len(templates)].replace(src.instance_uuid.encode(), text.encode(), 1)
                cp.write_row((new, as_jsonb(doc), codec.SCHEMA_VERSION))
                keys.append(text)
        conn.execute(b"VACUUM ANALYZE request_specs")
        conn.execute(b"CHECKPOINT")
    return keys


def copy_locations(api_dsn: str, keys: Sequence[str], database_name: str) -> None:
    """COPY location records naming ``database_name`` for ``keys`` into the API database."""
    with psycopg.connect(api_dsn, autocommit=True) as conn:
        with conn.cursor() as cur, cur.copy(_COPY_LOCATIONS) as cp:
            cp.set_types(["uuid", "text"])
            for key in keys:
                cp.write_row((uuid.UUID(key), database_name))
        conn.execute(b"VACUUM ANALYZE spec_locations")
        conn.execute(b"CHECKPOINT")
