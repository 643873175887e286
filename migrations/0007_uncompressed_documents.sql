-- Store spec documents without compressing them.
--
-- By default PostgreSQL tries pglz on every jsonb value that makes its row exceed ~2 KB,
-- then moves it out of line to the TOAST table. A spec (~3.4 KB of JSON, ~3.9 KB of
-- jsonb) is mostly uuids, names and numbers: pglz saves only ~10 %, and the attempt was
-- the largest server-side cost of a write. EXTERNAL keeps the out-of-line storage (a
-- state flip of a move still rewrites a small row pointing at the same TOAST value) and
-- skips the compression, on write and on read. Measured side by side on one embedded
-- PostgreSQL 18 server with 1,200 benchmark specs: create 368 -> 305 us, CAS save 370 ->
-- 312 us, get 138 -> 132 us, a move's seal and unseal of 250 rows unchanged (5.1 / 4.8 ms);
-- the table with its TOAST data 6.8 -> 7.2 MB. (Keeping documents in the row instead,
-- with toast_tuple_target, is as fast for single writes but doubles the cost of every
-- state flip: 9.5 ms.)
--
-- Rows already stored keep their compressed values until their next write; nothing is
-- rewritten, and the statement takes a brief lock only.
-- depends: 0006_covering_uuid_indexes

ALTER TABLE request_specs ALTER COLUMN spec SET STORAGE EXTERNAL;
