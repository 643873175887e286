-- Queries on request_specs (present in the API database and every cell database).
-- Reads in one database never see 'incoming' rows (a move's copy that is not committed
-- yet), reads through the location record take the row where it points (see
-- get_committed_by_instance_uuid);
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
-- Server-side cursor over the whole table, in instance uuid order (the primary key).
SELECT instance_uuid, spec, version
FROM request_specs
WHERE move_state <> 'incoming'
ORDER BY instance_uuid;

-- name: list_specs_page :many
-- Keyset paging for the CLI: rows from a given instance uuid on (inclusive: see
-- reqspec_repo/_store/keyset.py).
SELECT instance_uuid, spec, version, move_state, updated_at
FROM request_specs
WHERE instance_uuid >= %(start)s::uuid AND move_state <> 'incoming'
ORDER BY instance_uuid
LIMIT %(limit)s;

-- name: list_instance_uuids_from :many
-- Keyset page of instance uuids (no documents, nothing decoded) for a whole-database
-- move, from a given uuid on (inclusive); rows of moves in progress are included so
-- that they are reported, not skipped.
SELECT instance_uuid
FROM request_specs
WHERE instance_uuid >= %(start)s::uuid AND move_state <> 'incoming'
ORDER BY instance_uuid
LIMIT %(limit)s;

-- ---- moves between databases (see docs/devref.md, "Moves") -------------------------

-- name: seal_outgoing :many
-- Step 1 (seal): the source rows stop taking writes (a save now gets SpecMovingError)
-- and come back, as raw documents, to be copied. A save that committed before this
-- statement is in what it returns, so no acknowledged write is left behind.
UPDATE request_specs
SET move_state = 'outgoing', move_id = %(move_id)s, updated_at = now()
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_state = 'live'
RETURNING instance_uuid, spec, schema_version, version, operation;

-- name: copy_incoming_in :copy
-- Step 2 (copy), the common case: binary COPY of the sealed rows as hidden 'incoming'
-- copies (rows: uuid, jsonb, int4, int8, jsonb, text, uuid). One statement, so every row
-- lands or none; it fails when one of them already has a row here (a re-run of the step,
-- or a live row), and then upsert_incoming copies the others row by row. COPY writes
-- its rows page by page: ~20 % less server time than the upsert for a chunk of 500.
COPY request_specs (instance_uuid, spec, schema_version, version, operation, move_state, move_id)
FROM STDIN (FORMAT BINARY);

-- name: upsert_incoming :many
-- Step 2 (copy) when copy_incoming_in was refused: hidden rows in the target. Re-running
-- it overwrites only this kind of row, never a live one; returns the uuids copied. Arrays
-- go in binary format. The operation in flight (NULL for most rows) travels with the spec.
INSERT INTO request_specs (instance_uuid, spec, schema_version, version, operation, move_state, move_id)
SELECT u, s, sv, v, op, 'incoming', %(move_id)s
FROM unnest(%(instance_uuids)b::uuid[], %(specs)b::jsonb[], %(schema_versions)b::int[],
            %(versions)b::bigint[], %(operations)b::jsonb[]) AS t (u, s, sv, v, op)
ON CONFLICT (instance_uuid) DO UPDATE
SET spec = EXCLUDED.spec, schema_version = EXCLUDED.schema_version, version = EXCLUDED.version,
    operation = EXCLUDED.operation, move_id = EXCLUDED.move_id, updated_at = now()
WHERE request_specs.move_state = 'incoming'
RETURNING instance_uuid;

-- name: promote_incoming :many
-- Step 4a (cleanup): the committed copy becomes live (and loses the move id that marked
-- its move committed).
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
-- A read through the location record, in the database it names: the row there in any
-- state. Live, sealed by a move not committed yet, or a move's copy whose commit point
-- flipped the location here (a copy is only ever made into a database the location does
-- not name, so one found where it points is committed).
SELECT spec, version
FROM request_specs
WHERE instance_uuid = %(instance_uuid)s;

-- ---- the operation in flight (see docs/lifecycle.md) ---------------------------------

-- name: get_committed_with_operation :one
-- Like get_committed_by_instance_uuid, with the operation in flight (or NULL).
SELECT spec, version, operation
FROM request_specs
WHERE instance_uuid = %(instance_uuid)s;

-- name: update_spec_and_operation_if_version :one
-- Compare-and-swap of the spec and its operation in flight together: the step that
-- starts an operation, and the confirm or revert that ends it (operation NULL).
UPDATE request_specs
SET spec = %(spec)s,
    schema_version = %(schema_version)s,
    operation = %(operation)s,
    version = version + 1,
    updated_at = now()
WHERE instance_uuid = %(instance_uuid)s
  AND version = %(expected_version)s
  AND move_state = 'live'
RETURNING version;

-- name: get_row_states :many
-- recover()/verify(): every row of these instances, any state.
SELECT instance_uuid, move_state, move_id, version
FROM request_specs
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]);

-- name: list_rows_in_move :many
-- recover(): rows some move or create left in flight (sealed, hidden copies, creates
-- before their commit point); read through the partial index on move_id, so the cost is
-- what is in flight, not the size of the table.
SELECT instance_uuid FROM request_specs WHERE move_id IS NOT NULL;

-- name: range_row_states :many
-- verify() / recover(full): one uuid range of the table, one row per move state with the
-- instance uuids packed, in order, as 16-byte values into one bytea (the caller compares
-- them with the locations' without a Python object per row). An index-only scan of the
-- range (migration 0006).
SELECT move_state, count(*) AS n, string_agg(uuid_send(instance_uuid), ''::bytea ORDER BY instance_uuid) AS uuids
FROM request_specs
WHERE instance_uuid BETWEEN %(low)s::uuid AND %(high)s::uuid
GROUP BY move_state;

-- name: estimate_rows :scalar
-- The planner's row estimate (-1 before the first ANALYZE): sizes the ranges of a scan.
SELECT reltuples::bigint FROM pg_class WHERE oid = 'request_specs'::regclass;

-- name: set_row_live_if_seen :exec
-- recover(): make one row the live copy, only if it is still as recover() saw it (a
-- stale decision, taken before a lease ran out, changes nothing).
UPDATE request_specs
SET move_state = 'live', move_id = NULL, updated_at = now()
WHERE instance_uuid = %(instance_uuid)s AND move_state = %(move_state)s
  AND move_id IS NOT DISTINCT FROM %(move_id)s::uuid AND version = %(version)s;

-- name: delete_row_if_seen :exec
-- recover(): drop a leftover copy, only if it is still as recover() saw it.
DELETE FROM request_specs
WHERE instance_uuid = %(instance_uuid)s AND move_state = %(move_state)s
  AND move_id IS NOT DISTINCT FROM %(move_id)s::uuid AND version = %(version)s;

-- name: delete_any_row :exec
-- A destroy: the spec's row here, whatever its state (a copy left by an interrupted move).
DELETE FROM request_specs WHERE instance_uuid = %(instance_uuid)s;

-- name: count_all_rows :scalar
-- Every row, any state (sizes a scan when the table was never analyzed).
SELECT count(*) FROM request_specs;
