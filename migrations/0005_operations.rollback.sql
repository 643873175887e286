-- Undo 0005_operations: operations in flight are forgotten (confirm or revert them first).
-- depends:

ALTER TABLE request_specs DROP COLUMN IF EXISTS operation;
