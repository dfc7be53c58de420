//! Rows of the catalog, as the rest of the program sees them.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Vm {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    /// Disk sources of the last backup, by disk index.
    pub disks: Vec<String>,
    pub backup_count: i64,
    pub last_backup: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Incremental,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "incremental" => Some(Self::Incremental),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub id: String,
    pub vm: String,
    pub backup_type: String,
    pub status: String,
    pub started_at: String,
    pub ended_at: Option<String>,
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
    pub disk_type: String,
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
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chain {
    pub id: i64,
    pub vm: String,
    pub disk_index: i64,
    pub virtual_size: i64,
    pub created_at: String,
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
