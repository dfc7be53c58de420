//! Rows of the catalog, as the rest of the program sees them: statuses and
//! kinds are enums, times are [`UtcTime`] values. The text forms (what the
//! database stores and the JSON shows) are the lowercase words below.

use crate::util::time::UtcTime;
use serde::Serialize;
use std::fmt;
use std::ops::Deref;

/// Declares a catalog enum with its one text form per variant.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];
            /// The stored (and JSON) form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $text),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$var),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Full (every cluster) or incremental (changed clusters over a parent).
    BackupType { Full = "full", Incremental = "incremental" }
);

text_enum!(
    /// Where a backup (a VM-level job) stands. See DESIGN.md's HTTP contract.
    BackupStatus {
        Pending = "pending",
        /// A push target waiting for an agent's data.
        Waiting = "waiting",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        /// Its process died before it committed.
        Interrupted = "interrupted",
        /// Cancelled by a user or a timeout.
        Aborted = "aborted",
    }
);

impl BackupStatus {
    /// Still owned by a job: not to be deleted or restored from.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Waiting | Self::Running)
    }
}

text_enum!(
    /// What the last verify of an image found.
    VerifyState { Ok = "ok", Corrupt = "corrupt" }
);

text_enum!(
    /// The state of one disk image of a backup.
    ImageStatus { Completed = "completed", Failed = "failed" }
);

#[derive(Debug, Clone, Serialize)]
pub struct Vm {
    pub id: i64,
    pub name: String,
    pub created_at: UtcTime,
    /// Disk sources of the last backup, by disk index.
    pub disks: Vec<String>,
    pub backup_count: i64,
    pub last_backup: Option<UtcTime>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub id: String,
    pub vm: String,
    pub backup_type: BackupType,
    pub status: BackupStatus,
    pub started_at: UtcTime,
    pub ended_at: Option<UtcTime>,
    pub bytes_total: i64,
    pub bytes_read: i64,
    pub bytes_written: i64,
    pub error: Option<String>,
    /// What the user should know about how the backup was taken (a dirty
    /// bitmap not granted, a new chain started); empty for none.
    pub notes: Vec<String>,
    /// When every disk was last verified (the oldest of their times); `None`
    /// while a disk was never verified.
    pub verified_at: Option<UtcTime>,
    /// `corrupt` when a disk's last verify failed, `ok` when every disk's
    /// passed, `None` while a disk was never verified.
    pub verify_state: Option<VerifyState>,
    pub disks: Vec<BackupDisk>,
}

impl Backup {
    /// Sets the backup's verify summary from its disks'.
    pub(super) fn summarize_verify(&mut self) {
        let states: Vec<Option<VerifyState>> = self.disks.iter().map(|d| d.verify_state).collect();
        self.verify_state = if states.contains(&Some(VerifyState::Corrupt)) {
            Some(VerifyState::Corrupt)
        } else if !states.is_empty() && states.iter().all(|s| s.is_some()) {
            Some(VerifyState::Ok)
        } else {
            None
        };
        self.verified_at =
            self.disks.iter().map(|d| d.verified_at).collect::<Option<Vec<_>>>().and_then(|t| t.into_iter().min());
    }
}

/// One disk image as the catalog records it: what it holds and where.
/// The same fields describe a committed row ([`BackupDisk`]), a row about to
/// be written ([`NewDisk`]) and the engine's report of a finished disk.
#[derive(Debug, Clone, Serialize)]
pub struct DiskImage {
    pub disk_index: i64,
    pub disk_type: BackupType,
    pub source: String,
    /// Relative to the repository.
    pub image_path: String,
    pub digest_path: String,
    pub change_id: Option<String>,
    pub virtual_size: i64,
    pub cluster_size: i64,
    pub stored_bytes: i64,
    pub changed_bytes: i64,
    pub content_digest: String,
}

/// A committed disk image: its row ids, its place in a chain and its status.
#[derive(Debug, Clone, Serialize)]
pub struct BackupDisk {
    pub id: i64,
    pub backup_id: String,
    pub chain_id: i64,
    pub parent_id: Option<i64>,
    #[serde(flatten)]
    pub image: DiskImage,
    pub status: ImageStatus,
    pub verified_at: Option<UtcTime>,
    pub verify_state: Option<VerifyState>,
    /// What the last verify found wrong.
    pub verify_error: Option<String>,
}

/// A merge recorded in the catalog: the dropped image of one disk, and the
/// merge's journal once planned (`repo::merges` runs it).
#[derive(Debug, Clone, Serialize)]
pub struct MergeIntent {
    pub id: i64,
    pub vm: String,
    pub backup_id: String,
    pub disk_index: i64,
    /// The disk's folder, relative to the repository.
    pub dir: String,
    /// File names in `dir`.
    pub image: String,
    pub digests: String,
    /// The journal's JSON (`qcow2::merge::Journal`), once planned.
    pub journal: Option<String>,
}

// Readers see a row's image fields directly (`disk.image_path`): the split
// exists to share the fields, not to make every caller spell `.image`.
impl Deref for BackupDisk {
    type Target = DiskImage;
    fn deref(&self) -> &DiskImage {
        &self.image
    }
}

/// The images of one VM disk: a full image and its incrementals.
#[derive(Debug, Clone, Serialize)]
pub struct DiskChain {
    pub id: i64,
    pub vm: String,
    pub disk_index: i64,
    pub virtual_size: i64,
    pub created_at: UtcTime,
    pub image_count: i64,
    pub total_bytes: i64,
    /// Oldest (the full image) first.
    pub images: Vec<BackupDisk>,
}

/// Where a new disk image goes: onto an existing chain, or a new one.
#[derive(Debug, Clone)]
pub enum ChainRef {
    Existing(i64),
    New,
}

/// A disk image to record when its backup commits.
#[derive(Debug, Clone)]
pub struct NewDisk {
    pub chain: ChainRef,
    pub parent_id: Option<i64>,
    pub image: DiskImage,
}

impl Deref for NewDisk {
    type Target = DiskImage;
    fn deref(&self) -> &DiskImage {
        &self.image
    }
}

text_enum!(
    /// Where a scheduler job stands (DESIGN.md: a backup's statuses plus
    /// queued and skipped).
    RunState {
        Queued = "queued",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        /// Not run: the VM's previous run was still queued or running.
        Skipped = "skipped",
        /// Its process died while it ran.
        Interrupted = "interrupted",
        /// Stopped by a user or by the daemon's shutdown.
        Aborted = "aborted",
    }
);

impl RunState {
    /// Queued or running: the job is not over.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

text_enum!(
    /// What a scheduler job does.
    JobKind { Backup = "backup", Verify = "verify" }
);

text_enum!(
    /// Why a job was queued.
    JobReason {
        /// Its schedule elapsed.
        Scheduled = "scheduled",
        /// It elapsed while the daemon was down (the policy's `repeat_missed`).
        Missed = "missed",
        /// `policy run` or `POST /policies/{name}/run`.
        Manual = "manual",
        /// An earlier attempt failed.
        Retry = "retry",
    }
);

/// One job of the history.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub policy: Option<String>,
    pub vm_name: String,
    pub kind: JobKind,
    pub reason: JobReason,
    pub state: RunState,
    pub attempt: i64,
    pub queued_at: UtcTime,
    /// A retry waits until then.
    pub not_before: UtcTime,
    pub started_at: Option<UtcTime>,
    pub ended_at: Option<UtcTime>,
    pub error: Option<String>,
    pub notes: Option<String>,
    pub backup_id: Option<String>,
    pub bytes_read: i64,
    pub bytes_written: i64,
}

/// A job to add to the queue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub policy: Option<String>,
    pub vm_name: String,
    pub kind: JobKind,
    pub reason: JobReason,
    pub attempt: i64,
    pub not_before: UtcTime,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobEnd {
    pub state: RunState,
    pub error: Option<String>,
    pub notes: Option<String>,
    pub backup_id: Option<String>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// A stored protection policy: its JSON document and what the scheduler
/// keeps beside it.
#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub name: String,
    pub spec: String,
    pub enabled: bool,
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
    pub anchor: UtcTime,
    pub verify_anchor: UtcTime,
}

/// A restore-point export over NBD, as recorded so it survives restarts.
/// Not `Serialize`: `name` is the export's only key and is shown only to
/// whoever the front end decides may see it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub id: String,
    /// The NBD export name (128 random bits, hex).
    pub name: String,
    pub backup_id: String,
    pub disk_index: i64,
    pub writable: bool,
    /// Repository-relative path of a writable export's overlay.
    pub overlay_path: Option<String>,
    pub created_at: UtcTime,
}
