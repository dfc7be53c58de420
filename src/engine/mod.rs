//! Backup jobs: full and incremental backups of multi-disk VMs into QCOW2
//! chains, atomic commit, crash recovery and verification.

pub mod backup;
pub mod delete;
pub mod digests;
pub mod jobs;
pub mod pipeline;
pub mod prune;
pub mod push;
pub mod retention;
pub mod sink;
pub mod verify;

pub use delete::{delete_backup, delete_point};
pub use jobs::{Job, JobState, Jobs};

/// The repository moved to `crate::repo`; this path stays for code written
/// against `engine::repo` (the backup pipeline).
pub(crate) use crate::repo;
pub use crate::repo::Repo;
use crate::repo::RepoError;
pub use backup::{BackupRequest, BackupResult, Requested};

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NoParent(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    NotFound(String),
    #[error("repository problem: {0}")]
    Repository(String),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("reading disk source {0}: {1}")]
    Read(String, #[source] std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Qcow2(#[from] crate::qcow2::Error),
    #[error(transparent)]
    Digest(#[from] digests::DigestError),
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// A restore point that cannot be used (missing, not completed, …).
    #[error(transparent)]
    RestorePoint(RepoError),
}

impl From<RepoError> for EngineError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::BadName(m) => EngineError::BadRequest(m),
            RepoError::Io { path, source } => EngineError::Io { path, source },
            RepoError::Catalog(c) => EngineError::Catalog(c),
            RepoError::NoBackup(_) => EngineError::NotFound(e.to_string()),
            RepoError::Merging(_) => EngineError::Busy(e.to_string()),
            other => EngineError::RestorePoint(other),
        }
    }
}

impl EngineError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        EngineError::Io { path: path.display().to_string(), source }
    }
}

/// Receives a job's progress (a terminal bar, the server's job table, or
/// nothing).
pub trait Progress: Sync {
    fn start(&self, _total: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

impl From<crate::catalog::BackupStatus> for retention::Outcome {
    /// The catalog's typed status, as retention sees it (the same mapping as
    /// `Outcome::from_status` on the stored word).
    fn from(s: crate::catalog::BackupStatus) -> Self {
        retention::Outcome::from_status(s.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::retention::Outcome;
    use crate::catalog::BackupStatus;

    #[test]
    fn every_status_has_its_retention_outcome() {
        for &s in BackupStatus::ALL {
            let want = match s {
                BackupStatus::Completed => Outcome::Completed,
                BackupStatus::Failed | BackupStatus::Interrupted | BackupStatus::Aborted => Outcome::Unfinished,
                BackupStatus::Pending | BackupStatus::Waiting | BackupStatus::Running => Outcome::InProgress,
            };
            assert_eq!(Outcome::from(s), want, "{s}");
        }
    }
}
