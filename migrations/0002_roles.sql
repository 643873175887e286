-- Least privilege: an application role and a migration role.
--
-- reqspec_app (NOLOGIN group role): SELECT/INSERT/UPDATE/DELETE on the reqspec tables and
-- USAGE on their identity sequences; nothing else (no DDL, no TRUNCATE). Application login
-- roles are made members of it:  CREATE ROLE nova LOGIN PASSWORD '...' IN ROLE reqspec_app;
--
-- reqspec_migrator (NOLOGIN group role): owns the reqspec tables, so schema changes are
-- done as (a member of) it. The user running the migrations must be a superuser or a
-- member of reqspec_migrator.
--
-- Roles are cluster-wide and several databases (API, cells) may share one server, so the
-- roles are created only when missing (a DBA may also create them beforehand, and then no
-- CREATEROLE privilege is needed here). Grants are per database; the rollback revokes
-- them in this database only and never drops the shared roles.
--
-- Tables added by later migrations need their own GRANTs to reqspec_app.
-- depends: 0001_request_specs

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'reqspec_app') THEN
        BEGIN
            CREATE ROLE reqspec_app NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by the migration of another database
        END;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'reqspec_migrator') THEN
        BEGIN
            CREATE ROLE reqspec_migrator NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- Nobody but the owner creates objects in the schema (the default since PostgreSQL 15).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO reqspec_migrator;
GRANT USAGE ON SCHEMA public TO reqspec_app;

ALTER TABLE request_specs OWNER TO reqspec_migrator;
ALTER TABLE spec_locations OWNER TO reqspec_migrator;

GRANT SELECT, INSERT, UPDATE, DELETE ON request_specs, spec_locations TO reqspec_app;
GRANT USAGE ON SEQUENCE request_specs_id_seq TO reqspec_app;
