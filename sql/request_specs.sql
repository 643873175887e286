-- Queries on request_specs (present in the API database and every cell database).
-- Reads never see 'incoming' rows (a move's copy that is not committed yet);
-- writes only touch 'live' rows ('outgoing' ones are sealed by a move).

-- name: insert_spec :one
-- A unique violation (the instance already has a spec here) aborts the statement.
INSERT INTO request_specs (instance_uuid, spec, schema_version)
VALUES (%(instance_uuid)s, %(spec)s, %(schema_version)s)
RETURNING version;

-- name: insert_specs_from_arrays :exec
-- One statement for a whole batch: all rows land, or (on any duplicate) none.
INSERT INTO request_specs (instance_uuid, spec, schema_version)
SELECT u, s, v
FROM unnest(%(instance_uuids)s::uuid[], %(specs)s::jsonb[], %(schema_versions)s::int[]) AS t (u, s, v);

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
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_state <> 'incoming';

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
