//! Where backups read from: a raw image or block device, or a QCOW2 image
//! (read through backchain's own reader, with its backing chain); or an
//! NBD export (`nbd.rs`), with a QEMU dirty bitmap for incrementals.
//!
//! A [`Source`] is what the backup pipeline needs and nothing more: a name,
//! a reader and what it knows of its own changes since the parent backup.
//! The pipeline never reopens a source by its name, so a source need not
//! be a file at all.

pub mod confine;
pub mod nbd;

pub use nbd::NbdSource;

use crate::block::{RawFile, ReadAt};
use crate::qcow2::{self, Chain, Format, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest disk backchain backs up: 64 TiB, the largest virtual disk
/// of the common hypervisors (VHDX's limit; VMware's is 62 TB). Bounds the
/// work and memory any one source can demand (the image writer's tables,
/// a walk of its allocation map), whatever its header claims.
pub const MAX_DISK_SIZE: u64 = 64 << 40;

/// What a source knows about the extents that changed since the parent
/// backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// No tracking: anything may have changed (plain files and devices).
    /// The pipeline compares digests with the parent's map.
    All,
    /// Only these byte ranges may have changed (a dirty bitmap); the
    /// pipeline reads them alone and keeps the rest from the parent.
    Extents(Vec<Range<u64>>),
    /// Tracking exists but cannot be used this time, and why (a bitmap
    /// that is missing or inconsistent): read as for `All`, with a note.
    Unavailable(String),
}

/// A disk to back up.
pub trait Source: Send + Sync {
    /// The source as the user named it.
    fn spec(&self) -> &str;

    /// Its bytes.
    fn reader(&self) -> &Arc<dyn ReadAt>;

    /// The virtual size in bytes.
    fn size(&self) -> u64 {
        self.reader().size()
    }

    /// The extents that may have changed since the parent backup.
    fn changes(&self) -> Changes;

    /// The name of the source's own change tracking (an NBD source's dirty
    /// bitmap), recorded as the disk's change id; `None` where there is
    /// none (the image's content digest is recorded instead).
    fn change_id(&self) -> Option<String> {
        None
    }
}

impl std::fmt::Debug for dyn Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("spec", &self.spec()).field("size", &self.size()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("disk source {0}: no such file or device")]
    NotFound(PathBuf),
    #[error("disk source {0} is a directory, not a disk image or block device")]
    IsDirectory(PathBuf),
    #[error("disk source {0} is empty (size 0): nothing to back up")]
    Empty(PathBuf),
    #[error("disk source {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("disk source {path}: {source}")]
    Qcow2 {
        path: PathBuf,
        #[source]
        source: qcow2::Error,
    },
    #[error("disk source {0}: only local image files, block devices and nbd:// or nbd+unix:// URIs are supported")]
    Unsupported(String),
    /// The NBD error as text: its chain may hold a socket's EPIPE, which
    /// must not pass for a closed stdout (see `nbd::disk::io_error`).
    #[error("disk source {spec}: {reason}")]
    Nbd { spec: String, reason: String },
    #[error("disk source {path}: virtual size {size} bytes is above the limit of {MAX_DISK_SIZE} bytes (64 TiB)")]
    TooLarge { path: PathBuf, size: u64 },
}

/// A local raw image, block device or QCOW2 chain.
pub struct FileSource {
    /// As the user named it.
    spec: String,
    reader: Arc<dyn ReadAt>,
    pub format: Format,
}

impl Source for FileSource {
    fn spec(&self) -> &str {
        &self.spec
    }
    fn reader(&self) -> &Arc<dyn ReadAt> {
        &self.reader
    }
    /// A file keeps no record of its changes.
    fn changes(&self) -> Changes {
        Changes::All
    }
}

/// Opens a source by its spec: a path to a raw image, a block device or a
/// QCOW2 image, or an NBD URI. Every check that can fail happens here,
/// before a backup writes anything.
pub fn open(spec: &str) -> Result<Box<dyn Source>, SourceError> {
    if crate::nbd::uri::is_nbd_uri(spec) {
        return Ok(Box::new(NbdSource::open(spec)?));
    }
    if spec.contains("://") {
        return Err(SourceError::Unsupported(spec.to_string()));
    }
    let path = Path::new(spec);
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SourceError::NotFound(path.into())),
        Err(source) => return Err(SourceError::Io { path: path.into(), source }),
    };
    if meta.is_dir() {
        return Err(SourceError::IsDirectory(path.into()));
    }
    let format = qcow2::detect(path).map_err(|source| match source {
        qcow2::Error::Open { source, .. } => SourceError::Io { path: path.into(), source },
        source => SourceError::Qcow2 { path: path.into(), source },
    })?;
    let reader: Arc<dyn ReadAt> = match format {
        Format::Qcow2 => Arc::new(
            Chain::open(path, &OpenOptions::default())
                .map_err(|source| SourceError::Qcow2 { path: path.into(), source })?,
        ),
        Format::Raw => Arc::new(RawFile::open(path).map_err(|source| SourceError::Io { path: path.into(), source })?),
    };
    if reader.size() == 0 {
        return Err(SourceError::Empty(path.into()));
    }
    if reader.size() > MAX_DISK_SIZE {
        return Err(SourceError::TooLarge { path: path.into(), size: reader.size() });
    }
    // Prove the source is readable now rather than halfway through a job.
    let mut probe = [0u8; 512];
    let n = probe.len().min(reader.size() as usize);
    reader.read_exact_at(0, &mut probe[..n]).map_err(|source| SourceError::Io { path: path.into(), source })?;
    Ok(Box::new(FileSource { spec: spec.to_string(), reader, format }))
}
