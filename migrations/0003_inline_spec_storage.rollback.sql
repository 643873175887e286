-- Undo 0003_inline_spec_storage: documents written from now on may go out of line again.
-- depends:

ALTER TABLE request_specs ALTER COLUMN spec SET STORAGE EXTENDED;
