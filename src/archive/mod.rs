//! Streaming archives of a tree folder: zip and tar.gz, written into any
//! `std::io::Write` as the folder is walked.
//!
//! Memory stays bounded whatever the folder holds: file bytes go through one
//! fixed buffer, folders are walked depth-first one listing at a time, and
//! nothing is collected beyond the listings on the current path.

mod pax;
mod tar_gz;
mod walk;
mod zip;

pub use tar_gz::write_tar_gz;
pub use walk::{MAX_DEPTH, shown};
pub use zip::write_zip;

use crate::tree::TreeError;

/// The entry at the archive's root that names what the archive could not
/// hold (devices in a zip, sockets, entries whose metadata was corrupt).
pub const NOTES_FILE: &str = "RESTORE-NOTES.txt";

/// Bytes of file data moved per step.
pub const BUFFER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Tree {
        path: String,
        #[source]
        source: TreeError,
    },
    #[error("{path}: the file ended at byte {at} of {size}")]
    Truncated { path: String, at: u64, size: u64 },
    #[error("{path}: folders nested deeper than {MAX_DEPTH} levels")]
    TooDeep { path: String },
    #[error("{path}: an entry with {why} cannot go into an archive")]
    UnsafeName { path: String, why: &'static str },
    #[error("archive cancelled")]
    Cancelled,
    #[error("writing the archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the zip archive: {0}")]
    Zip(#[from] ::zip::result::ZipError),
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
