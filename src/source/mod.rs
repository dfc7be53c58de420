//! Where backups read from: a raw image or block device, or a QCOW2 image
//! (read through backchain's own reader, with its backing chain).

use crate::block::{RawFile, ReadAt};
use crate::qcow2::{self, Chain, Format, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[error("disk source {0}: only local image files and block devices are supported as sources")]
    Unsupported(String),
}

/// An open disk source.
pub struct Source {
    /// As the user named it.
    pub spec: String,
    pub reader: Arc<dyn ReadAt>,
    pub format: Format,
}

impl Source {
    pub fn size(&self) -> u64 {
        self.reader.size()
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("spec", &self.spec).field("size", &self.size()).finish()
    }
}

/// Opens a source by its spec: a path to a raw image, a block device or a
/// QCOW2 image. Every check that can fail happens here, before a backup
/// writes anything.
pub fn open(spec: &str) -> Result<Source, SourceError> {
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
    // Prove the source is readable now rather than halfway through a job.
    let mut probe = [0u8; 512];
    let n = probe.len().min(reader.size() as usize);
    reader.read_exact_at(0, &mut probe[..n]).map_err(|source| SourceError::Io { path: path.into(), source })?;
    Ok(Source { spec: spec.to_string(), reader, format })
}
