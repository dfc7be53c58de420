-- The catalog: VMs, backup jobs, per-disk images and chains.
-- Times are RFC 3339 UTC text; sizes are bytes.

CREATE TABLE vms (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- The disk sources a VM was last backed up from, by disk index.
CREATE TABLE vm_disks (
    vm_id       INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
    disk_index  INTEGER NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (vm_id, disk_index)
);

-- One VM-level backup job.
CREATE TABLE backups (
    id             TEXT PRIMARY KEY,
    vm_id          INTEGER NOT NULL REFERENCES vms(id),
    backup_type    TEXT NOT NULL CHECK (backup_type IN ('full', 'incremental')),
    status         TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'interrupted')),
    started_at     TEXT NOT NULL,
    ended_at       TEXT,
    bytes_total    INTEGER NOT NULL DEFAULT 0,
    bytes_read     INTEGER NOT NULL DEFAULT 0,
    bytes_written  INTEGER NOT NULL DEFAULT 0,
    error          TEXT,
    -- The process running the job, to tell a live job from an interrupted one.
    pid            INTEGER
);
CREATE INDEX backups_vm ON backups (vm_id, started_at);

-- One chain per VM disk and virtual size: a full image and its incrementals.
CREATE TABLE chains (
    id              INTEGER PRIMARY KEY,
    vm_id           INTEGER NOT NULL REFERENCES vms(id),
    disk_index      INTEGER NOT NULL,
    virtual_size    INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    first_disk_id   INTEGER,
    latest_disk_id  INTEGER,
    image_count     INTEGER NOT NULL DEFAULT 0,
    total_bytes     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX chains_vm ON chains (vm_id, disk_index);

-- One image of one disk of one backup.
CREATE TABLE backup_disks (
    id              INTEGER PRIMARY KEY,
    backup_id       TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
    disk_index      INTEGER NOT NULL,
    chain_id        INTEGER NOT NULL REFERENCES chains(id),
    -- The image this one is an incremental of; a parent cannot be deleted
    -- while a child exists.
    parent_id       INTEGER REFERENCES backup_disks(id) ON DELETE RESTRICT,
    disk_type       TEXT NOT NULL CHECK (disk_type IN ('full', 'incremental')),
    source          TEXT NOT NULL,
    image_path      TEXT NOT NULL UNIQUE,
    digest_path     TEXT NOT NULL,
    change_id       TEXT,
    virtual_size    INTEGER NOT NULL,
    cluster_size    INTEGER NOT NULL,
    stored_bytes    INTEGER NOT NULL,
    changed_bytes   INTEGER NOT NULL,
    content_digest  TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('completed', 'failed')),
    UNIQUE (backup_id, disk_index)
);
CREATE INDEX backup_disks_parent ON backup_disks (parent_id);
