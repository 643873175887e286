-- Undo 0002_roles in this database only: the roles are shared by the other databases of
-- the server and are not dropped. Ownership goes back to the user running the rollback.
-- depends:

REVOKE ALL ON SEQUENCE request_specs_id_seq FROM reqspec_app;
REVOKE ALL ON request_specs, spec_locations FROM reqspec_app;
ALTER TABLE request_specs OWNER TO CURRENT_USER;
ALTER TABLE spec_locations OWNER TO CURRENT_USER;
REVOKE ALL ON SCHEMA public FROM reqspec_app;
REVOKE ALL ON SCHEMA public FROM reqspec_migrator;
