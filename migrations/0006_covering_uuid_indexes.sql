-- The instance-uuid indexes carry what the full cross-check reads (verify(),
-- recover(full=True)): request_specs' unique index includes move_state, spec_locations'
-- primary key includes database_name and move_id. The check reads the databases one uuid
-- range at a time; with random uuids the rows of a range are spread over every heap page,
-- so without these columns each range re-read nearly the whole table, with them it is an
-- index-only scan of that range's leaf pages. Writes pay nothing new: the columns added
-- change only in statements that already change an indexed column (move_id), so CAS saves
-- stay HOT updates. The indexes are rebuilt (the tables are locked meanwhile: seconds per
-- million rows).
-- depends: 0002_roles

ALTER TABLE request_specs
    DROP CONSTRAINT request_specs_instance_uuid_key,
    ADD CONSTRAINT request_specs_instance_uuid_key UNIQUE (instance_uuid) INCLUDE (move_state);

ALTER TABLE spec_locations
    DROP CONSTRAINT spec_locations_pkey,
    ADD CONSTRAINT spec_locations_pkey PRIMARY KEY (instance_uuid) INCLUDE (database_name, move_id);
