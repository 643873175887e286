-- Queries on spec_locations: the API database's record of where each spec lives.
-- Flipping database_name (flip_locations_to_target) is the commit point of a move.
-- Movers, recovery and deletes serialize per instance with an advisory lock keyed by
-- (class 1919250291, hashtext(instance uuid)), held on the API database.

-- name: insert_locations :exec
INSERT INTO spec_locations (instance_uuid, database_name)
SELECT u, %(database_name)s FROM unnest(%(instance_uuids)s::uuid[]) AS t (u);

-- name: get_location :one
SELECT instance_uuid, database_name AS database, version, move_id, moved_from
FROM spec_locations
WHERE instance_uuid = %(instance_uuid)s;

-- name: get_locations :many
SELECT instance_uuid, database_name AS database, version, move_id, moved_from
FROM spec_locations
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]);

-- name: delete_location :one
DELETE FROM spec_locations WHERE instance_uuid = %(instance_uuid)s RETURNING database_name;

-- name: try_lock_instances :many
-- Session-level locks: held by the mover's API connection for the whole move, so a
-- crash of the mover (or of its connection) releases them.
SELECT u AS instance_uuid
FROM unnest(%(instance_uuids)s::uuid[]) AS t (u)
WHERE pg_try_advisory_lock(1919250291, hashtext(u::text));

-- name: lock_instance_for_transaction :exec
-- Waits (bounded by lock_timeout) for any mover or recovery of this instance.
SELECT pg_advisory_xact_lock(1919250291, hashtext(%(instance_uuid)s::uuid::text));

-- name: lock_instances_for_transaction :exec
SELECT pg_advisory_xact_lock(1919250291, hashtext(u::text))
FROM unnest(%(instance_uuids)s::uuid[]) AS t (u);

-- name: unlock_all :exec
SELECT pg_advisory_unlock_all();

-- name: flip_locations_to_target :many
-- The commit point of a move: compare-and-swap on the source location (and no other
-- move pending); marks the move as committed until its cleanup is done.
UPDATE spec_locations
SET database_name = %(target)s, move_id = %(move_id)s, moved_from = %(source)s,
    version = version + 1, updated_at = now()
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[])
  AND database_name = %(source)s
  AND move_id IS NULL
RETURNING instance_uuid;

-- name: clear_moves :exec
UPDATE spec_locations
SET move_id = NULL, moved_from = NULL, updated_at = now()
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_id = %(move_id)s;

-- name: repoint_location :exec
-- recover(): the location named a database without the spec; point it at the one found.
UPDATE spec_locations
SET database_name = %(database_name)s, move_id = NULL, moved_from = NULL,
    version = version + 1, updated_at = now()
WHERE instance_uuid = %(instance_uuid)s;

-- name: list_all_locations :many
-- Streamed in uuid order by verify()/recover(), merged with every database's rows.
SELECT instance_uuid, database_name AS database, version, move_id, moved_from
FROM spec_locations ORDER BY instance_uuid;
