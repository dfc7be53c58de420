//! Folder indexes ($I30): the B-tree of $FILE_NAME keys in $INDEX_ROOT and
//! the "INDX" blocks of $INDEX_ALLOCATION.
//!
//! Own code rather than the `ntfs` crate's index iterator: that iterator
//! follows subnode pointers without remembering where it has been, so a
//! corrupt index whose subnode points back at an ancestor makes it loop and
//! grow without bound. Here every block is visited at most once and depth,
//! block count and entry count are bounded.
#![forbid(unsafe_code)]

use std::collections::HashSet;

use super::data::{Stream, UnitCache};
use super::layout::*;
use super::record::{Le, apply_fixups};
use crate::block::ReadAt;
use crate::volume::fs::FsError;

/// Deepest B-tree accepted (real trees are a handful of levels deep).
pub const MAX_INDEX_DEPTH: usize = 32;
/// Most index blocks read for one folder listing.
pub const MAX_INDEX_BLOCKS: usize = 1 << 20;
/// Most entries in one folder.
pub const MAX_DIR_ENTRIES: usize = 4_000_000;
/// Largest index block size accepted.
pub const MAX_INDEX_BLOCK_SIZE: u32 = 64 * 1024;

/// A folder's index: the root node (from the record) and the allocation.
#[derive(Debug, Clone)]
pub struct Index {
    pub root: Vec<u8>,
    pub root_pos: u64,
    pub alloc: Option<Stream>,
}

/// One entry of a folder index, before name filtering.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub frn: u64,
    pub namespace: u8,
    pub name: Vec<u16>,
}

struct Walk<'a> {
    vol: &'a dyn ReadAt,
    cache: &'a UnitCache,
    alloc: Option<&'a Stream>,
    block_size: usize,
    vcn_shift: u64,
    visited: HashSet<u64>,
    out: Vec<IndexEntry>,
}

impl Index {
    /// All entries of the index, in collation order.
    pub fn entries(&self, vol: &dyn ReadAt, cache: &UnitCache) -> Result<Vec<IndexEntry>, FsError> {
        let le = Le { buf: &self.root, base: self.root_pos };
        let block_size = le.u32(IR_BLOCK_SIZE, "index block size")?;
        if !block_size.is_power_of_two() || !(512..=MAX_INDEX_BLOCK_SIZE).contains(&block_size) {
            return Err(FsError::corrupt(self.root_pos, format!("index block size {block_size}")));
        }
        let cluster = self.alloc.as_ref().map_or(512, |a| a.cluster);
        // Subnode VCNs count clusters, or 512-byte units when blocks are
        // smaller than a cluster.
        let vcn_shift = if u64::from(block_size) >= cluster { cluster } else { 512 };
        let mut w = Walk {
            vol,
            cache,
            alloc: self.alloc.as_ref(),
            block_size: block_size as usize,
            vcn_shift,
            visited: HashSet::new(),
            out: Vec::new(),
        };
        w.node(&self.root, IR_NODE_HEADER, self.root_pos, 0)?;
        Ok(w.out)
    }
}

impl Walk<'_> {
    /// Walks the node whose header is at `header` in `buf` (`pos`: the
    /// volume offset of `buf`, for errors).
    fn node(&mut self, buf: &[u8], header: usize, pos: u64, depth: usize) -> Result<(), FsError> {
        if depth > MAX_INDEX_DEPTH {
            return Err(FsError::corrupt(pos, "index deeper than any real folder"));
        }
        let le = Le { buf, base: pos };
        let first = header + le.u32(header + NH_ENTRIES_OFFSET, "index entries offset")? as usize;
        let end = header + le.u32(header + NH_ENTRIES_SIZE, "index entries size")? as usize;
        if first < header + NH_LEN || end > buf.len() || first > end {
            return Err(FsError::corrupt(pos + header as u64, "index node bounds"));
        }
        let mut off = first;
        loop {
            if off + IE_KEY > end {
                return Err(FsError::corrupt(pos + off as u64, "index node without a last entry"));
            }
            let len = usize::from(le.u16(off + IE_LENGTH, "index entry length")?);
            let key_len = usize::from(le.u16(off + IE_KEY_LENGTH, "index key length")?);
            let flags = le.u16(off + IE_FLAGS, "index entry flags")?;
            if len < IE_KEY || off + len > end || IE_KEY + key_len > len {
                return Err(FsError::corrupt(pos + off as u64, format!("index entry length {len}")));
            }
            if flags & IE_FLAG_SUBNODE != 0 {
                if len < IE_KEY + key_len + 8 {
                    return Err(FsError::corrupt(pos + off as u64, "index entry too short for a subnode"));
                }
                let vcn = le.u64(off + len - 8, "subnode VCN")?;
                self.block(vcn, depth + 1)?;
            }
            if flags & IE_FLAG_LAST != 0 {
                return Ok(());
            }
            let frn = le.u64(off + IE_FILE_REFERENCE, "file reference")? & FRN_MASK;
            let key = Le { buf: le.slice(off + IE_KEY, key_len, "index key")?, base: pos + (off + IE_KEY) as u64 };
            let name_len = usize::from(key.u8(FN_NAME_LENGTH, "file name length")?);
            let namespace = key.u8(FN_NAMESPACE, "file name namespace")?;
            let name = key
                .slice(FN_NAME, name_len * 2, "file name")?
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            if self.out.len() >= MAX_DIR_ENTRIES {
                return Err(FsError::Unsupported(format!("folder with more than {MAX_DIR_ENTRIES} entries")));
            }
            self.out.push(IndexEntry { frn, namespace, name });
            off += len;
        }
    }

    fn block(&mut self, vcn: u64, depth: usize) -> Result<(), FsError> {
        let alloc = self.alloc.ok_or_else(|| FsError::corrupt(vcn, "subnode without an index allocation"))?;
        if !self.visited.insert(vcn) {
            return Err(FsError::corrupt(vcn, "index subnode visited twice (cycle)"));
        }
        if self.visited.len() > MAX_INDEX_BLOCKS {
            return Err(FsError::Unsupported(format!("folder index with more than {MAX_INDEX_BLOCKS} blocks")));
        }
        let offset = vcn
            .checked_mul(self.vcn_shift)
            .filter(|o| o.checked_add(self.block_size as u64).is_some_and(|e| e <= alloc.size))
            .ok_or_else(|| FsError::corrupt(vcn, format!("index subnode VCN {vcn} outside the allocation")))?;
        let mut buf = vec![0u8; self.block_size];
        let n = alloc.read(self.vol, self.cache, u64::MAX, offset, &mut buf)?;
        if n != buf.len() {
            return Err(FsError::corrupt(offset, "short index block"));
        }
        apply_fixups(&mut buf, INDX_MAGIC, offset)?;
        let le = Le { buf: &buf, base: offset };
        if le.u64(INDX_VCN, "index block VCN")? != vcn {
            return Err(FsError::corrupt(offset, format!("index block at VCN {vcn} names another VCN")));
        }
        self.node(&buf, INDX_HEADER, offset, depth)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::block::{Lru, MemImage};
    use crate::volume::fs::ntfs::record::Run;

    /// A node header plus one "last" entry pointing at subnode VCN 0.
    fn node_with_subnode(header_at: usize, buf: &mut [u8]) {
        let entries = header_at + 0x10;
        buf[header_at..header_at + 4].copy_from_slice(&0x10u32.to_le_bytes());
        buf[header_at + 4..header_at + 8].copy_from_slice(&(0x10u32 + 24).to_le_bytes());
        buf[header_at + 8..header_at + 12].copy_from_slice(&(0x10u32 + 24).to_le_bytes());
        buf[entries + IE_LENGTH..entries + IE_LENGTH + 2].copy_from_slice(&24u16.to_le_bytes());
        let flags = IE_FLAG_SUBNODE | IE_FLAG_LAST;
        buf[entries + IE_FLAGS..entries + IE_FLAGS + 2].copy_from_slice(&flags.to_le_bytes());
        buf[entries + 16..entries + 24].copy_from_slice(&0u64.to_le_bytes());
    }

    /// An index block whose only entry points back at itself: the walk
    /// must stop with an error instead of looping.
    #[test]
    fn subnode_cycle_is_detected() {
        let mut root = vec![0u8; 0x10 + 0x10 + 24];
        root[IR_BLOCK_SIZE..IR_BLOCK_SIZE + 4].copy_from_slice(&512u32.to_le_bytes());
        node_with_subnode(IR_NODE_HEADER, &mut root);

        let mut block = vec![0u8; 512];
        block[..4].copy_from_slice(INDX_MAGIC);
        block[4..6].copy_from_slice(&0x28u16.to_le_bytes()); // update sequence offset
        block[6..8].copy_from_slice(&2u16.to_le_bytes()); // usn + one stride
        block[0x28..0x2a].copy_from_slice(&[1, 0]);
        node_with_subnode(INDX_HEADER, &mut block);
        block[510..512].copy_from_slice(&[1, 0]);
        let mut vol = vec![0u8; 1024];
        vol[512..].copy_from_slice(&block);

        let alloc = Stream {
            size: 512,
            init_size: 512,
            runs: vec![Run { vcn: 0, len: 1, lcn: Some(1) }],
            cluster: 512,
            unit_clusters: 0,
        };
        let index = Index { root, root_pos: 0, alloc: Some(alloc) };
        let cache = Mutex::new(Lru::new(1));
        match index.entries(&MemImage(vol), &cache) {
            Err(FsError::Corrupt { what, .. }) => assert!(what.contains("cycle"), "{what}"),
            other => panic!("expected a cycle error, got {other:?}"),
        }
    }
}
