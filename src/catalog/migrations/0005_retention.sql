-- Retention (issue 15): merge intents, verify results, corruption marks.
--
-- A merge that drops a restore point's image records its intent here, in
-- the same transaction that removes the point's rows, before any file is
-- touched; its journal (the qcow2 merge's steps and progress, JSON) is
-- written here after every step, and the row goes when the merge is done.
-- Any open of the repository finishes the merges it finds (docs/merge.md).
CREATE TABLE merges (
    id          INTEGER PRIMARY KEY,
    vm_id       INTEGER NOT NULL REFERENCES vms(id),
    -- The dropped backup (its row is gone already).
    backup_id   TEXT NOT NULL,
    disk_index  INTEGER NOT NULL,
    -- The disk's folder, relative to the repository, and the dropped image's
    -- and digest map's file names in it.
    dir         TEXT NOT NULL,
    image       TEXT NOT NULL,
    digests     TEXT NOT NULL,
    -- The merge journal, once planned (NULL: not planned yet).
    journal     TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX merges_vm ON merges (vm_id, id);

-- The last verify of each disk image: when, and what it found (NULL: never
-- verified). A corrupt image is never extended by an incremental.
ALTER TABLE backup_disks ADD COLUMN verified_at TEXT;
ALTER TABLE backup_disks ADD COLUMN verify_state TEXT CHECK (verify_state IN ('ok', 'corrupt'));
ALTER TABLE backup_disks ADD COLUMN verify_error TEXT;
