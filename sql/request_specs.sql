-- Queries on request_specs (present in the API database and every cell database).
-- Reads never see 'incoming' rows (a move's copy that is not committed yet);
-- writes only touch 'live' rows ('outgoing' ones are sealed by a move).

-- name: insert_spec :one
-- A unique violation (the instance already has a spec here) aborts the statement.
INSERT INTO request_specs (instance_uuid, spec, schema_version)
VALUES (%(instance_uuid)s, %(spec)s, %(schema_version)s)
RETURNING version;

-- name: copy_specs_in :copy
-- Batch create by binary COPY (rows: uuid, jsonb, int4). One statement, so all rows land
-- or, on any duplicate, none; the fastest way in (multi-row inserts, no parameter arrays).
COPY request_specs (instance_uuid, spec, schema_version) FROM STDIN (FORMAT BINARY);

-- name: list_existing_instance_uuids :many
-- Which of these instances already have a row here (any state); explains a refused batch.
SELECT instance_uuid
FROM request_specs
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]);

-- name: get_by_instance_uuid :one
SELECT spec, version
FROM request_specs
WHERE instance_uuid = %(instance_uuid)s AND move_state <> 'incoming';

-- name: get_many_by_instance_uuids :many
SELECT instance_uuid, spec, version
FROM request_specs
WHERE instance_uuid = ANY(%(instance_uuids)b::uuid[]) AND move_state <> 'incoming';

-- name: get_state_by_instance_uuid :one
-- Any state: used to explain why a write matched no row.
SELECT version, move_state
FROM request_specs
WHERE instance_uuid = %(instance_uuid)s;

-- name: update_spec_if_version :one
-- Compare-and-swap: only the holder of the current version may write.
UPDATE request_specs
SET spec = %(spec)s,
    schema_version = %(schema_version)s,
    version = version + 1,
    updated_at = now()
WHERE instance_uuid = %(instance_uuid)s
  AND version = %(expected_version)s
  AND move_state = 'live'
RETURNING version;

-- name: delete_spec :one
DELETE FROM request_specs
WHERE instance_uuid = %(instance_uuid)s AND move_state = 'live'
RETURNING version;

-- name: exists_spec :scalar
SELECT EXISTS (
    SELECT 1 FROM request_specs
    WHERE instance_uuid = %(instance_uuid)s AND move_state <> 'incoming'
);

-- name: count_specs :scalar
SELECT count(*) FROM request_specs WHERE move_state <> 'incoming';

-- name: list_specs :many
-- Server-side cursor over the whole table, in insertion order.
SELECT instance_uuid, spec, version
FROM request_specs
WHERE move_state <> 'incoming'
ORDER BY id;

-- name: list_specs_page :many
-- Keyset paging for the CLI: rows after a given id.
SELECT id, instance_uuid, spec, version, move_state, updated_at
FROM request_specs
WHERE id > %(after_id)s AND move_state <> 'incoming'
ORDER BY id
LIMIT %(limit)s;

-- ---- moves between databases (see docs/devref.md, "Moves") -------------------------

-- name: seal_outgoing :many
-- Step 1 (seal): the source rows stop taking writes (a save now gets SpecMovingError)
-- and come back, as raw documents, to be copied. A save that committed before this
-- statement is in what it returns, so no acknowledged write is left behind.
UPDATE request_specs
SET move_state = 'outgoing', move_id = %(move_id)s, updated_at = now()
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_state = 'live'
RETURNING instance_uuid, spec, schema_version, version;

-- name: upsert_incoming :many
-- Step 2 (copy): hidden rows in the target. Re-running it overwrites only this kind of
-- row, never a live one; returns the uuids copied. Arrays go in binary format.
INSERT INTO request_specs (instance_uuid, spec, schema_version, version, move_state, move_id)
SELECT u, s, sv, v, 'incoming', %(move_id)s
FROM unnest(%(instance_uuids)b::uuid[], %(specs)b::jsonb[], %(schema_versions)b::int[],
            %(versions)b::bigint[]) AS t (u, s, sv, v)
ON CONFLICT (instance_uuid) DO UPDATE
SET spec = EXCLUDED.spec, schema_version = EXCLUDED.schema_version, version = EXCLUDED.version,
    move_id = EXCLUDED.move_id, updated_at = now()
WHERE request_specs.move_state = 'incoming'
RETURNING instance_uuid;

-- name: promote_incoming :many
-- Step 4a (cleanup): the committed copy becomes live.
UPDATE request_specs
SET move_state = 'live', move_id = NULL, updated_at = now()
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_id = %(move_id)s
  AND move_state = 'incoming'
RETURNING instance_uuid;

-- name: delete_outgoing :exec
-- Step 4b (cleanup): the source copy goes.
DELETE FROM request_specs
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_id = %(move_id)s
  AND move_state = 'outgoing';

-- name: delete_incoming :exec
-- Roll back: the uncommitted copy goes.
DELETE FROM request_specs
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_id = %(move_id)s
  AND move_state = 'incoming';

-- name: unseal_outgoing :exec
-- Roll back: the source row takes writes again.
UPDATE request_specs
SET move_state = 'live', move_id = NULL, updated_at = now()
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_id = %(move_id)s
  AND move_state = 'outgoing';

-- name: get_committed_by_instance_uuid :one
-- A read through the location record: the live row, or the copy whose move is committed.
SELECT spec, version
FROM request_specs
WHERE instance_uuid = %(instance_uuid)s
  AND (move_state <> 'incoming' OR move_id = %(committed_move_id)s);

-- name: get_row_states :many
-- recover()/verify(): every row of these instances, any state.
SELECT instance_uuid, move_state, move_id, version
FROM request_specs
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]);

-- name: list_all_row_states :many
-- Streamed in uuid order by verify()/recover(), merged with the location records.
SELECT instance_uuid, move_state, move_id, version FROM request_specs ORDER BY instance_uuid;

-- name: set_row_live :exec
-- recover(): make one row the live copy whatever its move state.
UPDATE request_specs
SET move_state = 'live', move_id = NULL, updated_at = now()
WHERE instance_uuid = %(instance_uuid)s;

-- name: delete_any_row :exec
-- recover(): drop a leftover copy (any state) in a database the location does not name.
DELETE FROM request_specs WHERE instance_uuid = %(instance_uuid)s;
