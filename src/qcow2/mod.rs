//! QCOW2: read any image and its backing chain; write full and incremental
//! images. Format reference: docs/formats.md and QEMU's qcow2.txt.

#![forbid(unsafe_code)]

mod chain;
mod compress;
pub mod consts;
mod error;
mod header;
mod image;
mod info;
mod l2;
mod writer;

pub use chain::{Chain, Format, Layer, OpenOptions};
pub use error::{Error, Result};
pub use header::{ClusterSize, Compression, Header};
pub use image::Image;
pub use info::{ChainInfo, LayerInfo, info};
pub use l2::Mapping;
pub use writer::{WriteStats, Writer, WriterOptions, discard, is_zero};

use crate::block::{RawFile, ReadAt};
use std::path::Path;
use std::sync::Arc;

/// Opens a disk image of either format: a QCOW2 chain when the file starts
/// with the QCOW2 magic, else the raw bytes of the file or block device.
pub fn open_disk(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn ReadAt>> {
    if detect(path)? == Format::Qcow2 {
        Ok(Arc::new(Chain::open(path, opts)?))
    } else {
        let f = RawFile::open(path).map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        Ok(Arc::new(f))
    }
}

/// The format of the image at `path`, by its magic.
pub fn detect(path: &Path) -> Result<Format> {
    let f = RawFile::open(path).map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
    let mut m = [0u8; 4];
    if f.size() >= 4 {
        f.read_exact_at(0, &mut m).map_err(Error::io(0))?;
        if u32::from_be_bytes(m) == consts::MAGIC {
            return Ok(Format::Qcow2);
        }
    }
    Ok(Format::Raw)
}
