-- Queries on spec_locations: the API database's record of where each spec lives.
-- Flipping database_name (flip_locations_to_target) is the commit point of a move.
-- Movers, recovery, verify, destroys and creates into a cell serialize per instance with
-- a lease in move_leases (sql/move_leases.sql), held in the API database.

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

-- name: flip_locations_to_target :many
-- The commit point of a move: only where the mover still holds an unexpired lease
-- (renewed here for the cleanup; the row lock taken on the lease makes a concurrent
-- takeover by recover() wait, then see the renewed lease), compare-and-swap on the
-- source location (and no move an earlier release marked on the location pending).
-- The location is written once per move: the target's copy keeps the move id until
-- the cleanup makes it live, and that is what marks the move committed (to reads and to
-- recover()); no second write of the location clears a mark.
WITH held AS (
    UPDATE move_leases
    SET expires_at = clock_timestamp() + %(lease_ms)s * interval '1 millisecond'
    WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND holder = %(move_id)s
      AND expires_at > clock_timestamp()
    RETURNING instance_uuid
)
UPDATE spec_locations AS l
SET database_name = %(target)s, version = l.version + 1, updated_at = now()
FROM held
WHERE l.instance_uuid = held.instance_uuid
  AND l.database_name = %(source)s
  AND l.move_id IS NULL
RETURNING l.instance_uuid;

-- name: clear_moves :exec
-- recover(), for a move committed by an earlier release (its location carries the move
-- id): the location forgets the move and the move's leases go, in one statement.
WITH released AS (
    DELETE FROM move_leases
    WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND holder = %(move_id)s
)
UPDATE spec_locations
SET move_id = NULL, moved_from = NULL, updated_at = now()
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND move_id = %(move_id)s;

-- name: insert_locations_releasing :exec
-- A create into a cell, after the cell rows are written: the locations appear and the
-- creator's leases go, in one statement.
WITH released AS (
    DELETE FROM move_leases
    WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND holder = %(holder)s
)
INSERT INTO spec_locations (instance_uuid, database_name)
SELECT u, %(database_name)s FROM unnest(%(instance_uuids)s::uuid[]) AS t (u);

-- name: delete_location_releasing :one
-- A destroy, after the spec rows are gone everywhere: the location and the destroyer's
-- lease go, in one statement.
WITH released AS (
    DELETE FROM move_leases
    WHERE instance_uuid = %(instance_uuid)s AND holder = %(holder)s
)
DELETE FROM spec_locations WHERE instance_uuid = %(instance_uuid)s RETURNING database_name;

-- name: adopt_location :many
-- recover(): a location for spec rows that have none; nothing when one appeared meanwhile.
INSERT INTO spec_locations (instance_uuid, database_name)
VALUES (%(instance_uuid)s, %(database_name)s)
ON CONFLICT (instance_uuid) DO NOTHING
RETURNING instance_uuid;

-- name: repoint_location :exec
-- recover(): the location named a database without the spec; point it at the one found.
UPDATE spec_locations
SET database_name = %(database_name)s, move_id = NULL, moved_from = NULL,
    version = version + 1, updated_at = now()
WHERE instance_uuid = %(instance_uuid)s;

-- name: list_locations_in_move :many
-- recover(): locations of moves (and creates) committed but not cleaned up; through the
-- partial index on move_id.
SELECT instance_uuid FROM spec_locations WHERE move_id IS NOT NULL;

-- name: range_locations :many
-- verify() / recover(full): one uuid range of the location records, one row per
-- (database, settled) with the instance uuids packed, in order, as 16-byte values. An
-- index-only scan of the range (migration 0006).
SELECT database_name AS database, move_id IS NULL AS settled, count(*) AS n,
       string_agg(uuid_send(instance_uuid), ''::bytea ORDER BY instance_uuid) AS uuids
FROM spec_locations
WHERE instance_uuid BETWEEN %(low)s::uuid AND %(high)s::uuid
GROUP BY database_name, move_id IS NULL;

-- name: estimate_locations :scalar
-- The planner's row estimate (-1 before the first ANALYZE): sizes the ranges of a scan
-- (the API database holds the locations of every database's specs).
SELECT reltuples::bigint FROM pg_class WHERE oid = 'spec_locations'::regclass;

-- name: count_locations :scalar
-- Every location record (sizes a scan when the table was never analyzed).
SELECT count(*) FROM spec_locations;
