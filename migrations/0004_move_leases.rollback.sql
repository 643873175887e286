-- Undo 0004_move_leases. Leases held at that moment are dropped with the table: roll
-- back only with no move, recover() or destroy running.
-- depends:

DROP TABLE move_leases;
