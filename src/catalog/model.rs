//! Rows of the catalog, as the rest of the program sees them: statuses and
//! kinds are enums, times are [`UtcTime`] values. The text forms (what the
//! database stores and the JSON shows) are the lowercase words below.

use crate::util::time::UtcTime;
use serde::Serialize;
use std::fmt;

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
    pub disks: Vec<BackupDisk>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupDisk {
    pub id: i64,
    pub backup_id: String,
    pub disk_index: i64,
    pub chain_id: i64,
    pub parent_id: Option<i64>,
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
    pub status: ImageStatus,
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
    pub disk_index: i64,
    pub chain: ChainRef,
    pub parent_id: Option<i64>,
    pub disk_type: BackupType,
    pub source: String,
    pub image_path: String,
    pub digest_path: String,
    pub change_id: Option<String>,
    pub virtual_size: i64,
    pub cluster_size: i64,
    pub stored_bytes: i64,
    pub changed_bytes: i64,
    pub content_digest: String,
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
