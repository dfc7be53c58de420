//! The `ext4-view` crate as gatekeeper: it loads the superblock, group
//! descriptors and journal and refuses what it does not support (e.g.
//! `inline_data`, `meta_bg`); its reason is what the listing shows.
//! Journal refusals are the exception, see `check`.

use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};

use crate::block::ReadAt;
use crate::volume::fs::FsError;

use super::superblock::SUPERBLOCK_OFFSET;

struct Reader(Arc<dyn ReadAt>);

impl Ext4Read for Reader {
    fn read(&mut self, start: u64, dst: &mut [u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(start, dst).map_err(|e| Box::new(e) as _)
    }
}

pub fn check(volume: &Arc<dyn ReadAt>) -> Result<(), FsError> {
    match Ext4::load(Box::new(Reader(volume.clone()))) {
        Ok(_) => Ok(()),
        // ext4-view replays only checksum-v3 journals; we replay the others
        // ourselves (journal.rs), so a journal it declines is no reason to
        // refuse the filesystem. Its error kinds are private: match the text.
        Err(Ext4Error::Incompatible(e)) if e.to_string().contains("journal") => Ok(()),
        Err(Ext4Error::Incompatible(e)) => Err(FsError::Unsupported(format!("ext4: {e}"))),
        Err(Ext4Error::Io(e)) => Err(FsError::Io(std::io::Error::other(e.to_string()))),
        Err(e) => Err(FsError::corrupt(SUPERBLOCK_OFFSET, format!("ext4: {e}"))),
    }
}
