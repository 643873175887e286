-- Queries on yoyo's own bookkeeping table (present once `reqspec migrate` has run).

-- name: list_applied_migration_ids :many
SELECT migration_id FROM _yoyo_migration;
