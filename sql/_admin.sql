-- Server administration for the embedded server and the test harness (no table).
-- {database} is an identifier, composed with psycopg.sql.Identifier, never a value.

-- name: exists_database :scalar
SELECT 1 FROM pg_database WHERE datname = %(name)s;

-- name: create_database :exec
CREATE DATABASE {database};

-- name: drop_database_if_exists :exec
DROP DATABASE IF EXISTS {database} WITH (FORCE);

-- name: drop_database :exec
DROP DATABASE {database} WITH (FORCE);

-- name: show_server_version :scalar
SHOW server_version;

-- The superuser's password, given as its SCRAM verifier (never the secret itself), run in
-- single-user mode when an older cluster is secured; {role} and {verifier} are composed.
-- name: set_role_password :exec
ALTER ROLE {role} PASSWORD {verifier};

-- A server answers queries (readiness probe of a starting server).
-- name: ping :scalar
SELECT 1;
