//! The superblock ("Superblock" in the on-disk format documentation): where
//! the chunk and root trees start, sizes, features and the sys chunk array
//! that maps the chunk tree itself.

use crate::block::ReadAt;
use crate::volume::fs::FsError;

use super::consts::*;
use super::csum::crc32c;
use super::le::{u16_at, u32_at, u64_at};

#[derive(Debug, Clone)]
pub struct Superblock {
    /// The uuid every tree node carries (metadata_uuid when that feature is on).
    pub node_fsid: [u8; 16],
    pub root: u64,
    pub root_level: u8,
    pub chunk_root: u64,
    pub chunk_root_level: u8,
    pub total_bytes: u64,
    pub bytes_used: u64,
    pub sectorsize: u32,
    pub nodesize: u32,
    /// The devid of this device (from the embedded dev item).
    pub devid: u64,
    pub label: String,
    pub sys_chunk_array: Vec<u8>,
}

impl Superblock {
    /// Reads the primary superblock: `Ok(None)` without the magic.
    pub fn read(volume: &dyn ReadAt) -> Result<Option<Superblock>, FsError> {
        let end = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64;
        if volume.size() < end {
            return Ok(None);
        }
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        volume.read_exact_at(SUPERBLOCK_OFFSET, &mut b)?;
        if &b[0x40..0x48] != MAGIC {
            return Ok(None);
        }
        Self::parse(&b).map(Some)
    }

    fn parse(b: &[u8]) -> Result<Superblock, FsError> {
        let at = |off: usize, what: &str| FsError::corrupt(SUPERBLOCK_OFFSET + off as u64, what.to_string());
        let csum_type = u16_at(b, 0xC4);
        if csum_type != CSUM_CRC32C {
            return Err(FsError::Unsupported(format!("btrfs checksum type {csum_type} (only crc32c is read)")));
        }
        if u32_at(b, 0) != crc32c(&b[CSUM_SIZE..]) {
            return Err(at(0, "superblock checksum mismatch"));
        }
        if u64_at(b, 0x30) != SUPERBLOCK_OFFSET {
            return Err(at(0x30, "superblock does not record its own position"));
        }
        let incompat = u64_at(b, 0xBC);
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FsError::Unsupported(format!("btrfs incompatible features {incompat:#x}")));
        }
        for (bit, name) in
            [(INCOMPAT_EXTENT_TREE_V2, "extent tree v2"), (INCOMPAT_RAID_STRIPE_TREE, "raid stripe tree")]
        {
            if incompat & bit != 0 {
                return Err(FsError::Unsupported(format!("btrfs feature {name}")));
            }
        }
        let num_devices = u64_at(b, 0x88);
        if num_devices != 1 {
            return Err(FsError::Unsupported(format!("btrfs spanning {num_devices} devices")));
        }
        let sectorsize = u32_at(b, 0x90);
        let nodesize = u32_at(b, 0x94);
        if !sectorsize.is_power_of_two() || !(MIN_SECTORSIZE..=MAX_SECTORSIZE).contains(&sectorsize) {
            return Err(at(0x90, &format!("sector size {sectorsize}")));
        }
        if !nodesize.is_power_of_two() || !(MIN_NODESIZE..=MAX_NODESIZE).contains(&nodesize) || nodesize < sectorsize {
            return Err(at(0x94, &format!("node size {nodesize}")));
        }
        let sys_len = u32_at(b, 0xA0) as usize;
        if sys_len > SYS_CHUNK_ARRAY_MAX {
            return Err(at(0xA0, &format!("sys chunk array of {sys_len} bytes")));
        }
        let (root_level, chunk_root_level) = (b[0xC6], b[0xC7]);
        if root_level >= MAX_LEVEL || chunk_root_level >= MAX_LEVEL {
            return Err(at(0xC6, "tree level past the deepest btrfs builds"));
        }
        let mut node_fsid = [0u8; 16];
        let from = if incompat & INCOMPAT_METADATA_UUID != 0 { 0x23B } else { 0x20 };
        node_fsid.copy_from_slice(&b[from..from + 16]);
        let label = &b[0x12B..0x12B + 256];
        let label = &label[..label.iter().position(|&c| c == 0).unwrap_or(label.len())];
        Ok(Superblock {
            node_fsid,
            root: u64_at(b, 0x50),
            root_level,
            chunk_root: u64_at(b, 0x58),
            chunk_root_level,
            total_bytes: u64_at(b, 0x70),
            bytes_used: u64_at(b, 0x78),
            sectorsize,
            nodesize,
            devid: u64_at(b, 0xC9),
            label: String::from_utf8_lossy(label).into_owned(),
            sys_chunk_array: b[0x32B..0x32B + sys_len].to_vec(),
        })
    }
}
