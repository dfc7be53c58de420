//! Backup jobs: full and incremental backups of multi-disk VMs into QCOW2
//! chains, atomic commit, crash recovery and verification.

pub mod backup;
pub mod digests;
pub mod pipeline;
pub mod repo;
pub mod sink;
pub mod verify;

pub use backup::{BackupRequest, BackupResult, Requested};
pub use repo::Repo;

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
