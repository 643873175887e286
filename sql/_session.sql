-- Per-transaction settings (no table).

-- name: relax_commit_durability :exec
-- For move cleanup steps whose loss in a server crash recover() redoes from durable
-- state (see docs/devref.md, "Moves"): the commit does not wait for the WAL flush.
SET LOCAL synchronous_commit = off;
