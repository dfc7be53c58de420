-- Notes a backup carries for its user: a dirty bitmap the server did not
-- grant (so the disk was read whole and compared by digests), a bitmap name
-- other than the parent's, a disk that changed size and started a new
-- chain. A JSON array of strings; NULL for none (rows of earlier schemas).
ALTER TABLE backups ADD COLUMN notes TEXT;
