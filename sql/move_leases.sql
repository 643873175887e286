-- Queries on move_leases: durable claims on instances, held in the API database by a
-- move, recover(), verify(), a destroy or a create into a cell (migration 0004). Times
-- are the server's clock (clock_timestamp()), never a client's.

-- name: claim_leases :many
-- Take each free or expired lease, in one statement: a lease held and unexpired is left
-- alone (its instance is not returned). Ordered, so two claimers never deadlock.
INSERT INTO move_leases AS l (instance_uuid, holder, purpose, owner, expires_at)
SELECT u, %(holder)s, %(purpose)s, %(owner)s,
       clock_timestamp() + %(lease_ms)s * interval '1 millisecond'
FROM unnest(%(instance_uuids)s::uuid[]) AS t (u)
ORDER BY u
ON CONFLICT (instance_uuid) DO UPDATE
SET holder = EXCLUDED.holder, purpose = EXCLUDED.purpose, owner = EXCLUDED.owner,
    taken_at = now(), expires_at = EXCLUDED.expires_at
WHERE l.expires_at <= clock_timestamp()
RETURNING instance_uuid;

-- name: release_leases :exec
-- Only the holder's own leases go: one taken over after expiry stays with its new holder.
DELETE FROM move_leases
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]) AND holder = %(holder)s;

-- name: get_leases :many
SELECT instance_uuid, holder, purpose, owner, taken_at, expires_at,
       expires_at <= clock_timestamp() AS expired
FROM move_leases
WHERE instance_uuid = ANY(%(instance_uuids)s::uuid[]);

-- name: list_expired_leases :many
-- Leases whose holder died or stalled: what recover() may take over.
SELECT instance_uuid, holder, purpose, owner, taken_at, expires_at, true AS expired
FROM move_leases
WHERE expires_at <= clock_timestamp()
ORDER BY instance_uuid
LIMIT %(limit)s;

-- name: expire_all_leases :exec
-- Operators and tests: end every lease now, as if their time had run out. Only for when
-- every holder is known to be dead (a killed mover process, a test's simulated crash).
UPDATE move_leases SET expires_at = clock_timestamp() WHERE expires_at > clock_timestamp();
