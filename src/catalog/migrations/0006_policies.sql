-- Protection policies and the job history of the scheduler (docs/schedule.md).

-- One protection policy. `spec` is its JSON document as the API takes it
-- (VMs and disk sources, schedule, retention, retries, webhook, …), checked
-- by `schedule::policy` before it is stored; the columns beside it are what
-- the catalog itself must query or enforce.
CREATE TABLE policies (
    name           TEXT PRIMARY KEY,
    spec           TEXT NOT NULL,
    enabled        INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    -- The scheduler's anchor: when the last run was triggered, or when the
    -- policy was created or (re-)enabled. Runs are due once the schedule
    -- elapses after it (src/schedule/due.rs).
    anchor         TEXT NOT NULL,
    verify_anchor  TEXT NOT NULL
);

-- A VM belongs to at most one policy: two policies backing up one VM would
-- race for its chain and prune each other's points.
CREATE TABLE policy_vms (
    vm_name  TEXT PRIMARY KEY,
    policy   TEXT NOT NULL REFERENCES policies(name) ON DELETE CASCADE
);

-- One run of one VM of a policy (or a manual run), from queued to its end.
-- No foreign key to policies: the history outlives a deleted policy.
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    policy         TEXT,
    vm_name        TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('backup', 'verify')),
    reason         TEXT NOT NULL CHECK (reason IN ('scheduled', 'missed', 'manual', 'retry')),
    state          TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed', 'skipped',
                                                  'interrupted', 'aborted')),
    attempt        INTEGER NOT NULL DEFAULT 1,
    queued_at      TEXT NOT NULL,
    -- A retry waits until then (the scheduler's clock).
    not_before     TEXT NOT NULL,
    started_at     TEXT,
    ended_at       TEXT,
    error          TEXT,
    -- What else happened: the prune after the backup, notes of the engine.
    notes          TEXT,
    backup_id      TEXT,
    bytes_read     INTEGER NOT NULL DEFAULT 0,
    bytes_written  INTEGER NOT NULL DEFAULT 0,
    -- The process running the job, to tell a live job from an interrupted one.
    pid            INTEGER
);
CREATE INDEX jobs_state ON jobs (state, not_before);
CREATE INDEX jobs_vm ON jobs (vm_name, id);
CREATE INDEX jobs_policy ON jobs (policy, id);
