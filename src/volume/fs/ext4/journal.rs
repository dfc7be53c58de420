//! Journal replay in memory (ext4 documentation section 3.6 "Journal
//! (jbd2)"). A crash-consistent image of a running VM usually has committed
//! transactions that were never checkpointed; the newest committed copy of
//! each logged block overrides the block on disk. Nothing is written: the
//! volume is wrapped in a view that redirects reads of logged blocks.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::block::{Extent, ReadAt};
use crate::volume::fs::FsError;

use super::blockmap::{BlockMap, Ctx};
use super::inode::Inode;

// Block header (section 3.6.3), all journal fields big-endian.
const JBD2_MAGIC: u32 = 0xC03B_3998;
const BLOCK_DESCRIPTOR: u32 = 1;
const BLOCK_COMMIT: u32 = 2;
const BLOCK_SUPERBLOCK_V1: u32 = 3;
const BLOCK_SUPERBLOCK_V2: u32 = 4;
const BLOCK_REVOKE: u32 = 5;
const HEADER_LEN: usize = 12;
// Journal superblock s_feature_incompat (section 3.6.4).
const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_KNOWN: u32 = INCOMPAT_REVOKE | INCOMPAT_64BIT | 0x4 | INCOMPAT_CSUM_V2 | INCOMPAT_CSUM_V3;
// Descriptor tag flags (section 3.6.5).
const FLAG_ESCAPE: u32 = 0x1;
const FLAG_SAME_UUID: u32 = 0x2;
const FLAG_LAST_TAG: u32 = 0x8;
const UUID_LEN: usize = 16;
/// Checksummed descriptor and revoke blocks end in a 4-byte tail.
const TAIL_LEN: usize = 4;
/// Largest journal we scan, in blocks (mke2fs makes at most 1 GiB journals:
/// 2^18 blocks of 4 KiB).
pub const MAX_JOURNAL_BLOCKS: u64 = 1 << 20;

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Filesystem block → (byte offset of its newest copy in the journal,
/// whether the copy's first 4 bytes were escaped).
pub type Remap = BTreeMap<u64, (u64, bool)>;

struct Log<'a> {
    volume: &'a dyn ReadAt,
    map: BlockMap,
    bs: u64,
}

impl Log<'_> {
    /// Byte offset in the volume of journal block `j`.
    fn offset(&self, j: u64) -> Result<u64, FsError> {
        match self.map.find(j) {
            Some(r) if r.logical <= j => match r.physical {
                Some(p) => Ok((p + j - r.logical) * self.bs),
                None => Err(FsError::corrupt(0, format!("journal block {j} is unwritten"))),
            },
            _ => Err(FsError::corrupt(0, format!("journal block {j} is not mapped"))),
        }
    }

    fn read(&self, j: u64) -> Result<Vec<u8>, FsError> {
        let mut b = vec![0u8; self.bs as usize];
        self.volume.read_exact_at(self.offset(j)?, &mut b)?;
        Ok(b)
    }
}

/// Scans the journal of inode `journal` and returns the blocks to remap
/// (empty when the journal is clean).
pub fn replay(volume: &dyn ReadAt, ctx: &Ctx<'_>, journal: &Inode) -> Result<Remap, FsError> {
    let bs = u64::from(ctx.block_size);
    let log = Log { volume, map: BlockMap::load(ctx, journal)?, bs };
    let sb = log.read(0)?;
    let corrupt = |what: String| FsError::corrupt(log.offset(0).unwrap_or(0), what);
    let kind = be32(&sb, 4);
    if be32(&sb, 0) != JBD2_MAGIC || !(kind == BLOCK_SUPERBLOCK_V1 || kind == BLOCK_SUPERBLOCK_V2) {
        return Err(corrupt("bad journal superblock".into()));
    }
    if u64::from(be32(&sb, 0xC)) != bs {
        return Err(corrupt(format!("journal block size {}", be32(&sb, 0xC))));
    }
    let maxlen = u64::from(be32(&sb, 0x10));
    let first = u64::from(be32(&sb, 0x14));
    let mut seq = be32(&sb, 0x18);
    let start = u64::from(be32(&sb, 0x1C));
    if start == 0 {
        return Ok(Remap::new());
    }
    if maxlen > MAX_JOURNAL_BLOCKS || first == 0 || first >= maxlen || start < first || start >= maxlen {
        return Err(corrupt(format!("journal geometry: first {first}, start {start}, length {maxlen}")));
    }
    let incompat = if kind == BLOCK_SUPERBLOCK_V2 { be32(&sb, 0x28) } else { 0 };
    if incompat & !INCOMPAT_KNOWN != 0 {
        return Err(FsError::Unsupported(format!("journal features {incompat:#x}")));
    }
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let csum3 = incompat & INCOMPAT_CSUM_V3 != 0;
    let csum2 = incompat & INCOMPAT_CSUM_V2 != 0;
    let tag_len = if csum3 {
        16
    } else {
        let base = if csum2 { 14 } else { 12 };
        if is64 { base } else { base - 4 }
    };
    let tail = if csum2 || csum3 { TAIL_LEN } else { 0 };
    let next = |j: u64| if j + 1 >= maxlen { first } else { j + 1 };

    // Pass 1: the committed transactions, each a list of (fs block,
    // journal block, escaped) plus its revoked blocks.
    let mut writes: Vec<(u32, u64, u64, bool)> = Vec::new();
    let mut pending: Vec<(u64, u64, bool)> = Vec::new();
    let mut revoked: HashMap<u64, u32> = HashMap::new();
    let mut pending_revokes: Vec<u64> = Vec::new();
    let mut j = start;
    // Every step consumes at least one journal block; a full lap ends it.
    let mut budget = maxlen;
    loop {
        if budget == 0 {
            break;
        }
        budget -= 1;
        let b = log.read(j)?;
        if be32(&b, 0) != JBD2_MAGIC || be32(&b, 8) != seq {
            break;
        }
        match be32(&b, 4) {
            BLOCK_DESCRIPTOR => {
                let mut pos = HEADER_LEN;
                let end = b.len() - tail;
                let mut data = next(j);
                while pos + tag_len <= end {
                    let lo = u64::from(be32(&b, pos));
                    let (flags, hi) = if csum3 {
                        (be32(&b, pos + 4), u64::from(be32(&b, pos + 8)))
                    } else {
                        (
                            u32::from(u16::from_be_bytes([b[pos + 6], b[pos + 7]])),
                            if is64 { u64::from(be32(&b, pos + 8)) } else { 0 },
                        )
                    };
                    let block = lo | if is64 { hi << 32 } else { 0 };
                    pending.push((block, data, flags & FLAG_ESCAPE != 0));
                    data = next(data);
                    budget = budget.saturating_sub(1);
                    pos += tag_len;
                    if flags & FLAG_SAME_UUID == 0 {
                        pos += UUID_LEN;
                    }
                    if flags & FLAG_LAST_TAG != 0 {
                        break;
                    }
                }
                j = data;
                continue;
            }
            BLOCK_REVOKE => {
                let count = (be32(&b, HEADER_LEN) as usize).min(b.len() - tail);
                let rec = if is64 { 8 } else { 4 };
                let mut pos = HEADER_LEN + 4;
                while pos + rec <= count {
                    let block = if is64 {
                        u64::from(be32(&b, pos)) << 32 | u64::from(be32(&b, pos + 4))
                    } else {
                        u64::from(be32(&b, pos))
                    };
                    pending_revokes.push(block);
                    pos += rec;
                }
            }
            BLOCK_COMMIT => {
                writes.extend(pending.drain(..).map(|(b, d, e)| (seq, b, d, e)));
                for r in pending_revokes.drain(..) {
                    let s = revoked.entry(r).or_insert(seq);
                    *s = (*s).max(seq);
                }
                seq = seq.wrapping_add(1);
            }
            _ => break,
        }
        j = next(j);
    }

    // Pass 2: the newest committed copy of every block not revoked by its
    // own or a later transaction.
    let mut remap = Remap::new();
    for (s, block, data, escaped) in writes {
        if revoked.get(&block).is_some_and(|&r| r >= s) {
            continue;
        }
        if block == 0 || block >= ctx.blocks_count {
            return Err(FsError::corrupt(log.offset(data)?, format!("journal logs block {block}")));
        }
        remap.insert(block, (log.offset(data)?, escaped));
    }
    Ok(remap)
}

/// The volume as it is after journal recovery.
pub struct Recovered {
    pub inner: Arc<dyn ReadAt>,
    pub remap: Remap,
    pub block_size: u64,
}

impl ReadAt for Recovered {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let bs = self.block_size;
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read past 2^64"))?;
        if buf.is_empty() || self.remap.range(offset / bs..end.div_ceil(bs)).next().is_none() {
            return self.inner.read_exact_at(offset, buf);
        }
        let mut pos = offset;
        while pos < end {
            let block = pos / bs;
            let within = pos % bs;
            let n = (bs - within).min(end - pos) as usize;
            let dst = &mut buf[(pos - offset) as usize..(pos - offset) as usize + n];
            match self.remap.get(&block) {
                Some(&(at, escaped)) => {
                    self.inner.read_exact_at(at + within, dst)?;
                    // An escaped copy had its leading magic zeroed.
                    if escaped && within < 4 {
                        let magic = JBD2_MAGIC.to_be_bytes();
                        for (k, d) in dst.iter_mut().enumerate().take(4 - within as usize) {
                            *d = magic[within as usize + k];
                        }
                    }
                }
                None => self.inner.read_exact_at(pos, dst)?,
            }
            pos += n as u64;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }
    /// Stops before the first block the journal replaced: those bytes come
    /// from the log, not from where the volume keeps them.
    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        let bs = self.block_size;
        let first = offset / bs;
        let len = match self.remap.range(first..).next() {
            Some((&b, _)) if b == first => return None,
            Some((&b, _)) => len.min(b.checked_mul(bs)?.checked_sub(offset)?),
            None => len,
        };
        self.inner.locate(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::RawFile;
    use std::io::Write;

    /// Bytes of a block the journal replaced are never lent from where the
    /// volume keeps the stale copy.
    #[test]
    fn locate_stops_at_replayed_blocks() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        let mut remap = Remap::new();
        remap.insert(2, (6144, false));
        let r = Recovered { inner: Arc::new(RawFile::from_file(f).unwrap()), remap, block_size: 1024 };
        assert_eq!(r.locate(0, 5000).map(|e| e.len()), Some(2048));
        assert_eq!(r.locate(1000, 5000).map(|e| e.len()), Some(1048));
        assert!(r.locate(2048, 10).is_none());
        assert!(r.locate(3000, 10).is_none());
        assert_eq!(r.locate(3072, 100).map(|e| e.len()), Some(100));
    }
}
