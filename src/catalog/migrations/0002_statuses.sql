-- Every BackupStatus may be stored: 'waiting' (a push target waiting for an
-- agent's data) and 'aborted' (cancelled by a user or a timeout) join the
-- statuses of schema 1. SQLite cannot change a CHECK constraint in place, so
-- the table is rebuilt (the runner turns foreign keys off around this, as
-- SQLite's "ALTER TABLE" procedure requires, and checks them before commit).
-- Rows keep their values: every schema-1 status is still valid.

CREATE TABLE backups_new (
    id             TEXT PRIMARY KEY,
    vm_id          INTEGER NOT NULL REFERENCES vms(id),
    backup_type    TEXT NOT NULL CHECK (backup_type IN ('full', 'incremental')),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'waiting', 'running', 'completed', 'failed',
                                                   'interrupted', 'aborted')),
    started_at     TEXT NOT NULL,
    ended_at       TEXT,
    bytes_total    INTEGER NOT NULL DEFAULT 0,
    bytes_read     INTEGER NOT NULL DEFAULT 0,
    bytes_written  INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    pid            INTEGER
);
INSERT INTO backups_new (id, vm_id, backup_type, status, started_at, ended_at, bytes_total, bytes_read,
                         bytes_written, error, pid)
    SELECT id, vm_id, backup_type, status, started_at, ended_at, bytes_total, bytes_read, bytes_written, error, pid
    FROM backups;
DROP TABLE backups;
ALTER TABLE backups_new RENAME TO backups;
CREATE INDEX backups_vm ON backups (vm_id, started_at);
