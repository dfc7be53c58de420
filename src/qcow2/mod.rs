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
pub mod merge;
mod overlay;
mod writer;

pub use chain::{Chain, Format, Layer, OpenOptions};
pub use error::{Error, Result};
pub use header::{ClusterSize, Compression, Header};
pub use image::Image;
pub use info::{ChainInfo, LayerInfo, info};
pub use l2::Mapping;
pub use overlay::Overlay;
pub use writer::{WriteStats, Writer, WriterOptions, discard, is_zero};

use crate::block::{RawFile, ReadAt};
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Opens a disk image of either format: a QCOW2 chain when the file starts
/// with the QCOW2 magic, else the raw bytes of the file or block device.
pub fn open_disk(path: &Path, opts: &OpenOptions) -> Result<Arc<dyn ReadAt>> {
    if detect(path)? == Format::Qcow2 { Ok(Arc::new(Chain::open(path, opts)?)) } else { Ok(open_file(path)?) }
}

/// The format of the image at `path`, by its magic.
pub fn detect(path: &Path) -> Result<Format> {
    probe(&*open_file(path)?)
}

/// QCOW2 when the magic says so, raw otherwise (also a backing file whose
/// parent names no format).
fn probe(file: &dyn ReadAt) -> Result<Format> {
    let mut m = [0u8; 4];
    if file.size() >= 4 {
        file.read_exact_at(0, &mut m).map_err(Error::io(0))?;
        if u32::from_be_bytes(m) == consts::MAGIC {
            return Ok(Format::Qcow2);
        }
    }
    Ok(Format::Raw)
}

/// Opens an image file or block device for reading. Anything else is
/// refused before `open`: a FIFO named as a backing file would block the
/// open forever, a directory or socket cannot hold an image.
fn open_file(path: &Path) -> Result<Arc<RawFile>> {
    use std::os::unix::fs::FileTypeExt;
    let open_err = |source| Error::Open { path: path.to_path_buf(), source };
    let t = std::fs::metadata(path).map_err(open_err)?.file_type();
    if !(t.is_file() || t.is_block_device()) {
        let what = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file or block device");
        return Err(open_err(what));
    }
    crate::block::open_shared(path).map_err(open_err)
}
