-- Undo 0007_uncompressed_documents: compressed documents again (rows written meanwhile
-- stay uncompressed until their next write).
-- depends:

ALTER TABLE request_specs ALTER COLUMN spec SET STORAGE EXTENDED;
