-- The instance uuid is the primary key of request_specs; the row id column goes.
--
-- The bigint identity `id` was used only to order a listing, and its index cost a write
-- in every statement that makes a new row version: a create, and each state flip of a
-- move (seal in the source; copy and promote in the target), where the new version of an
-- old row lands on a leaf page of its own. Listings and iteration now walk the instance
-- uuid index instead (keyset pages by uuid), which every lookup uses already. Measured on
-- two embedded PostgreSQL 18 servers moving 50,000 specs API -> cell, both schemas side by
-- side in one run (3 paired rounds each, the naive batched copy+delete on the same schema
-- as the move): the move's server CPU 5.65 -> 5.08 s and its throughput against the naive
-- move 0.53x -> 0.60x (medians); in another run 0.59x -> 0.62x.
--
-- The unique index on instance_uuid (with move_state, for verify's index-only scans) is
-- rebuilt as the primary key: a table with a primary key keeps working in a logical
-- replication publication. The table is locked meanwhile (seconds per million rows);
-- dropping the column rewrites nothing.
-- depends: 0008_lean_move_leases

ALTER TABLE request_specs DROP COLUMN id;
CREATE UNIQUE INDEX request_specs_pkey ON request_specs (instance_uuid) INCLUDE (move_state);
ALTER TABLE request_specs
    DROP CONSTRAINT request_specs_instance_uuid_key,
    ADD CONSTRAINT request_specs_pkey PRIMARY KEY USING INDEX request_specs_pkey;
