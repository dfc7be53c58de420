//! Chunks ("Chunk item"): the map from logical addresses, which every tree
//! pointer and extent uses, to byte offsets on the device. The sys chunk
//! array in the superblock maps the chunk tree; the chunk tree maps the rest.
//! Profiles read here: single (one stripe) and DUP (two copies on this
//! device, either of which may be read).

use std::collections::BTreeMap;

use crate::volume::fs::FsError;

use super::consts::*;
use super::le::{u16_at, u64_at};
use super::node::Key;

#[derive(Debug, Clone)]
pub struct Chunk {
    pub length: u64,
    /// The device offsets of the copies (one for single, two for DUP).
    pub mirrors: Vec<u64>,
}

/// Most chunks one filesystem may map (a 1 PiB volume of 1 GiB chunks).
const MAX_CHUNKS: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct ChunkMap {
    chunks: BTreeMap<u64, Result<Chunk, String>>,
}

impl ChunkMap {
    /// Adds the chunk item `b` (stored at volume byte `at`) for `logical`.
    /// Profiles we cannot read are kept with the reason, for reads to report.
    pub fn add(&mut self, logical: u64, b: &[u8], at: u64, devid: u64) -> Result<usize, FsError> {
        if b.len() < CHUNK_ITEM_SIZE {
            return Err(FsError::corrupt(at, "chunk item shorter than its header"));
        }
        let (length, ty, num_stripes) = (u64_at(b, 0), u64_at(b, 24), usize::from(u16_at(b, 44)));
        let size = CHUNK_ITEM_SIZE + num_stripes * STRIPE_SIZE;
        if num_stripes == 0 || b.len() < size || length == 0 || logical.checked_add(length).is_none() {
            return Err(FsError::corrupt(at, format!("chunk at {logical}: {num_stripes} stripes, {length} bytes")));
        }
        if self.chunks.len() >= MAX_CHUNKS {
            return Err(FsError::corrupt(at, format!("more than {MAX_CHUNKS} chunks")));
        }
        let profile = ty & BLOCK_GROUP_PROFILES;
        let stripes: Vec<(u64, u64)> = (0..num_stripes)
            .map(|i| {
                let s = &b[CHUNK_ITEM_SIZE + i * STRIPE_SIZE..];
                (u64_at(s, 0), u64_at(s, 8))
            })
            .collect();
        let chunk = if profile != 0 && profile != BLOCK_GROUP_DUP {
            Err(format!("chunk profile {profile:#x} (only single and DUP are read)"))
        } else if stripes.iter().any(|&(dev, _)| dev != devid) {
            Err("chunk stored on another device".to_string())
        } else if stripes.iter().any(|&(_, off)| off.checked_add(length).is_none()) {
            return Err(FsError::corrupt(at, format!("chunk at {logical}: stripe past 2^64")));
        } else {
            Ok(Chunk { length, mirrors: stripes.iter().map(|&(_, off)| off).collect() })
        };
        self.chunks.insert(logical, chunk);
        Ok(size)
    }

    /// Parses the superblock's sys chunk array: (key, chunk item) pairs.
    pub fn from_sys_array(array: &[u8], devid: u64) -> Result<ChunkMap, FsError> {
        let mut map = ChunkMap::default();
        let mut pos = 0;
        while pos < array.len() {
            let at = SUPERBLOCK_OFFSET + 0x32B + pos as u64;
            if array.len() - pos < KEY_SIZE {
                return Err(FsError::corrupt(at, "truncated key in the sys chunk array"));
            }
            let key = Key::parse(&array[pos..]);
            if key.ty != CHUNK_ITEM_KEY {
                return Err(FsError::corrupt(at, format!("item type {} in the sys chunk array", key.ty)));
            }
            pos += KEY_SIZE;
            pos += map.add(key.offset, &array[pos..], at, devid)?;
        }
        Ok(map)
    }

    /// The chunk holding `logical`: its copies' device offsets for `logical`
    /// and how many bytes from `logical` stay in the chunk.
    pub fn map(&self, logical: u64) -> Result<(Vec<u64>, u64), FsError> {
        let unmapped = || FsError::corrupt(0, format!("logical address {logical} is in no chunk"));
        let (&start, chunk) = self.chunks.range(..=logical).next_back().ok_or_else(unmapped)?;
        let within = logical - start;
        let chunk = chunk.as_ref().map_err(|why| FsError::Unsupported(format!("{why} at logical {start}")))?;
        if within >= chunk.length {
            return Err(unmapped());
        }
        Ok((chunk.mirrors.iter().map(|m| m + within).collect(), chunk.length - within))
    }
}
