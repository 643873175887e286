-- The operation in flight on an instance (a resize or cold migration between its start
-- and its confirm or revert), stored in the spec's own row: written by the same
-- compare-and-swap as the step that starts it, copied by a move together with the spec,
-- so that any process can confirm or revert it by instance uuid alone. NULL when no
-- operation is in flight. The document is written and read by reqspec_repo._nova.
-- depends: 0002_roles

ALTER TABLE request_specs ADD COLUMN operation jsonb;
