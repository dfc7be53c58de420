//! Tree nodes ("Tree node", "Leaf node", "Internal node"): a header, then
//! either key pointers (internal) or items whose data grows from the end of
//! the block (leaf). Every block is checked before it is used: checksum,
//! filesystem uuid, its own address, level and item bounds.

use crate::volume::fs::FsError;

use super::consts::*;
use super::csum::crc32c;
use super::le::{u32_at, u64_at};

/// A disk key: the sort order of every btrfs tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub objectid: u64,
    pub ty: u8,
    pub offset: u64,
}

impl Key {
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Key {
        Key { objectid, ty, offset }
    }

    pub fn parse(b: &[u8]) -> Key {
        Key { objectid: u64_at(b, 0), ty: b[8], offset: u64_at(b, 9) }
    }
}

/// One checked tree block.
#[derive(Debug)]
pub struct Node {
    bytes: Vec<u8>,
    /// Where the block was read from, for error messages.
    pub physical: u64,
    pub level: u8,
    pub nritems: usize,
}

impl Node {
    /// Checks the block read from `physical` for logical address `logical`.
    pub fn parse(bytes: Vec<u8>, logical: u64, physical: u64, fsid: &[u8; 16]) -> Result<Node, FsError> {
        let bad = |what: String| FsError::corrupt(physical, format!("tree block {logical}: {what}"));
        if u32_at(&bytes, 0) != crc32c(&bytes[CSUM_SIZE..]) {
            return Err(bad("checksum mismatch".into()));
        }
        if &bytes[0x20..0x30] != fsid {
            return Err(bad("belongs to another filesystem".into()));
        }
        if u64_at(&bytes, 0x30) != logical {
            return Err(bad(format!("records address {}", u64_at(&bytes, 0x30))));
        }
        let level = bytes[0x64];
        if level >= MAX_LEVEL {
            return Err(bad(format!("level {level}")));
        }
        let nritems = u32_at(&bytes, 0x60) as usize;
        let each = if level == 0 { ITEM_SIZE } else { KEY_PTR_SIZE };
        let fits = nritems.checked_mul(each).and_then(|n| n.checked_add(HEADER_SIZE)).is_some_and(|n| n <= bytes.len());
        if !fits || (level > 0 && nritems == 0) {
            return Err(bad(format!("{nritems} items at level {level}")));
        }
        Ok(Node { bytes, physical, level, nritems })
    }

    fn slot(&self, i: usize) -> &[u8] {
        let each = if self.level == 0 { ITEM_SIZE } else { KEY_PTR_SIZE };
        &self.bytes[HEADER_SIZE + i * each..HEADER_SIZE + (i + 1) * each]
    }

    pub fn key(&self, i: usize) -> Key {
        Key::parse(self.slot(i))
    }

    /// The child block of key pointer `i` (internal nodes).
    pub fn child(&self, i: usize) -> u64 {
        u64_at(self.slot(i), KEY_SIZE)
    }

    /// The data of item `i` (leaves) and its byte offset in the volume.
    pub fn item(&self, i: usize) -> Result<(&[u8], u64), FsError> {
        let s = self.slot(i);
        let (off, size) = (u32_at(s, KEY_SIZE) as usize, u32_at(s, KEY_SIZE + 4) as usize);
        let start = HEADER_SIZE + off;
        match start.checked_add(size) {
            Some(end) if end <= self.bytes.len() => Ok((&self.bytes[start..end], self.physical + start as u64)),
            _ => Err(FsError::corrupt(
                self.physical + (HEADER_SIZE + i * ITEM_SIZE) as u64,
                format!("item {i} of {size} bytes at {off} leaves its block"),
            )),
        }
    }

    /// The first slot whose key is greater than `key` (binary search).
    pub fn upper_bound(&self, key: &Key) -> usize {
        let (mut lo, mut hi) = (0, self.nritems);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.key(mid) <= *key { lo = mid + 1 } else { hi = mid }
        }
        lo
    }
}
