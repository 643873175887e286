-- Undo 0008_lean_move_leases: the holder and expires_at indexes again, full pages.
-- depends:

ALTER TABLE move_leases RESET (fillfactor);
CREATE INDEX move_leases_holder_idx ON move_leases (holder);
CREATE INDEX move_leases_expires_at_idx ON move_leases (expires_at);
