-- Restore-point exports over NBD (instant recovery), so they come back
-- after a restart of the daemon. `name` is the NBD export name: 128 random
-- bits, the only key to the export, so it is never listed over NBD and
-- never logged. A writable export's overlay (repository-relative path)
-- holds its writes until the export is deleted. A backup cannot be deleted
-- while an export names it (the default NO ACTION foreign key); the
-- engine checks first, to say why.
CREATE TABLE exports (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    backup_id    TEXT NOT NULL REFERENCES backups(id),
    disk_index   INTEGER NOT NULL,
    writable     INTEGER NOT NULL CHECK (writable IN (0, 1)),
    overlay_path TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX exports_backup ON exports (backup_id);
