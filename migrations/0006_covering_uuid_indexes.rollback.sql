-- Undo 0006_covering_uuid_indexes: the plain instance-uuid indexes again.
-- depends:

ALTER TABLE spec_locations
    DROP CONSTRAINT spec_locations_pkey,
    ADD CONSTRAINT spec_locations_pkey PRIMARY KEY (instance_uuid);

ALTER TABLE request_specs
    DROP CONSTRAINT request_specs_instance_uuid_key,
    ADD CONSTRAINT request_specs_instance_uuid_key UNIQUE (instance_uuid);
