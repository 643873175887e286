-- Keep spec documents inside the table row instead of in the TOAST table.
--
-- A typical document is 3-4 KB of jsonb. With the default storage (EXTENDED) PostgreSQL
-- first tries to compress it (jsonb of this shape rarely compresses: pglz gives up after
-- its first KB) and then moves it out of line, so every read of one spec was two index
-- lookups (the instance_uuid index, then the TOAST index) and three or four pages. With
-- MAIN the document stays in the row whenever the row fits in a page (documents up to
-- about 8 KB); only larger ones still go out of line, as a last resort. Reads then touch
-- one index and one heap page, which matters most when the table outgrows the caches.
--
-- Rows already stored keep their current layout until they are next written (a save, a
-- move); `VACUUM FULL request_specs` rewrites them all at once if wanted.
-- depends: 0002_roles

ALTER TABLE request_specs ALTER COLUMN spec SET STORAGE MAIN;
