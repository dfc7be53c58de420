//! An NBD export as a backup source: `nbd://HOST[:PORT]/EXPORT` or
//! `nbd+unix:///EXPORT?socket=PATH`, each with an optional `bitmap=NAME`.
//!
//! The reader is [`NbdDisk`]: its `status` comes from `base:allocation`, so
//! the pipeline never reads holes or zero runs. With a bitmap the server
//! granted, [`Changes::Extents`] lists the dirty ranges and an incremental
//! reads those alone. A bitmap the server did not grant (no such bitmap,
//! one left inconsistent by a crash, a server not told to export it) says
//! nothing about what changed: never "nothing changed", but
//! [`Changes::Unavailable`], which reads the whole disk and compares it with
//! the parent's digest map. See docs/nbd.md.

use super::{Changes, MAX_DISK_SIZE, Source, SourceError};
use crate::block::ReadAt;
use crate::nbd::{NbdDisk, NbdUri};
use std::sync::Arc;

/// A disk read over NBD.
pub struct NbdSource {
    spec: String,
    disk: Arc<NbdDisk>,
    reader: Arc<dyn ReadAt>,
    bitmap: Option<String>,
    changes: Changes,
}

impl NbdSource {
    /// Connects, checks the size and asks the bitmap (if any) for its dirty
    /// extents, so every network fault that can be seen up front fails the
    /// job before it writes anything.
    pub fn open(spec: &str) -> Result<NbdSource, SourceError> {
        let nbd = |e: crate::nbd::Error| SourceError::Nbd { spec: spec.to_string(), reason: e.to_string() };
        let uri = NbdUri::parse(spec).map_err(nbd)?;
        let disk = Arc::new(NbdDisk::open(&uri).map_err(nbd)?);
        let size = disk.size();
        if size == 0 {
            return Err(SourceError::Empty(spec.into()));
        }
        if size > MAX_DISK_SIZE {
            return Err(SourceError::TooLarge { path: spec.into(), size });
        }
        let changes = match &uri.bitmap {
            None => Changes::All,
            Some(name) if !disk.bitmap_granted() => Changes::Unavailable(format!(
                "the server did not grant dirty bitmap {name:?} (no such bitmap, inconsistent after a crash, \
                 or not exported: qemu-nbd -B {name}); compared with the parent's digests instead"
            )),
            // A bitmap that cannot be listed (more extents than the limit,
            // a reply that breaks the protocol) is as good as none.
            Some(name) => match disk.changed_extents() {
                Ok(extents) => Changes::Extents(extents),
                Err(e) => Changes::Unavailable(format!(
                    "dirty bitmap {name:?} could not be read ({e}); compared with the parent's digests instead"
                )),
            },
        };
        let reader: Arc<dyn ReadAt> = disk.clone();
        Ok(NbdSource { spec: spec.to_string(), disk, reader, bitmap: uri.bitmap, changes })
    }

    /// The connection, for its negotiated details.
    pub fn disk(&self) -> &NbdDisk {
        &self.disk
    }
}

impl Source for NbdSource {
    fn spec(&self) -> &str {
        &self.spec
    }

    fn reader(&self) -> &Arc<dyn ReadAt> {
        &self.reader
    }

    fn changes(&self) -> Changes {
        self.changes.clone()
    }

    /// The bitmap's name: what the next incremental's bitmap must continue.
    fn change_id(&self) -> Option<String> {
        self.bitmap.clone()
    }
}
