-- Request specs: the same table in the API database and in every cell database.
-- A spec is live in exactly one database at a time; during a move it also exists
-- as an 'incoming' copy in the target (invisible to reads) and the source copy is
-- 'outgoing' (readable, but sealed against writes).
-- depends:

CREATE TABLE request_specs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_uuid  uuid        NOT NULL,
    spec           jsonb       NOT NULL,
    schema_version integer     NOT NULL CHECK (schema_version > 0),
    version        bigint      NOT NULL DEFAULT 1 CHECK (version > 0),
    move_state     text        NOT NULL DEFAULT 'live'
                   CHECK (move_state IN ('live', 'incoming', 'outgoing')),
    move_id        uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT request_specs_instance_uuid_key UNIQUE (instance_uuid),
    CONSTRAINT request_specs_move_id_matches_state CHECK ((move_state = 'live') = (move_id IS NULL))
);

CREATE INDEX request_specs_in_move_idx ON request_specs (move_id) WHERE move_id IS NOT NULL;

-- Where each instance's spec lives. Only the API database's copy of this table is
-- used; flipping database_name is the commit point of a move. The table exists in
-- cell databases too because one migration set serves every database.
CREATE TABLE spec_locations (
    instance_uuid uuid        PRIMARY KEY,
    database_name text        NOT NULL CHECK (length(database_name) > 0),
    version       bigint      NOT NULL DEFAULT 1 CHECK (version > 0),
    -- Set by a move's commit point (database_name is then already the target) until
    -- its cleanup is done: the move, and the database the spec came from.
    move_id       uuid,
    moved_from    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT spec_locations_move_fields_together CHECK ((move_id IS NULL) = (moved_from IS NULL))
);

CREATE INDEX spec_locations_in_move_idx ON spec_locations (move_id) WHERE move_id IS NOT NULL;
