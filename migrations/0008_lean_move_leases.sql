-- Move leases without secondary indexes, with room for renewals on each page.
--
-- The table holds only what is in flight (a mover's chunks, a recover() run, a destroy),
-- so it stays small: every statement on it that could use the holder or expires_at index
-- also names the instances (primary key), and the two that do not (recover()'s lists of
-- expired and of all leases) scan a table of in-flight rows. Each index cost a write per
-- claim and made every renewal at a move's commit point a non-HOT update (expires_at was
-- indexed): three index writes per lease taken, three more per renewal. With no index on
-- expires_at and a fillfactor leaving half of each page free, a renewal is a HOT update on
-- the same page. Measured on an embedded PostgreSQL 18 server moving 20,000 specs: the
-- claim's server CPU 0.20 s -> 0.10 s; the commit point's 0.30 s -> 0.24-0.30 s.
-- depends: 0007_uncompressed_documents

DROP INDEX move_leases_holder_idx;
DROP INDEX move_leases_expires_at_idx;
ALTER TABLE move_leases SET (fillfactor = 50);
