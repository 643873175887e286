-- Undo 0009_instance_uuid_primary_key: the row id column and its primary key again (ids
-- assigned in the table's physical order), the instance uuid a unique constraint.
-- depends:

ALTER TABLE request_specs
    DROP CONSTRAINT request_specs_pkey,
    ADD CONSTRAINT request_specs_instance_uuid_key UNIQUE (instance_uuid) INCLUDE (move_state),
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
