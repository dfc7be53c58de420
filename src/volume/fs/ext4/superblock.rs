//! The ext2/3/4 superblock and block group descriptors (kernel documentation
//! "ext4 Data Structures and Algorithms", sections 4.1 Super Block and
//! 4.4 Block Group Descriptors).

use crate::block::ReadAt;
use crate::volume::fs::{FsError, FsKind};

/// Byte offset of the superblock in the volume (section 4.1).
pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
pub const MAGIC: u16 = 0xEF53;

// Feature flags (section 4.1, s_feature_compat / incompat / ro_compat).
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
pub const INCOMPAT_FILETYPE: u32 = 0x2;
pub const INCOMPAT_EXTENTS: u32 = 0x40;
pub const INCOMPAT_64BIT: u32 = 0x80;
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
/// Incompat features this reader understands; anything else is refused
/// (ext4-view refuses first, with its own reason, for most of them).
pub const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE
    | 0x4 // RECOVER: journal not replayed, see docs/filesystems-ext4-fat.md
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_FLEX_BG
    | 0x400 // EA_INODE: only extended attributes, which are not read
    | 0x2000 // CSUM_SEED
    | 0x4000 // LARGEDIR
    | 0x20000; // CASEFOLD: names are still stored as written
/// ro_compat features that only ext4 creates (huge_file, gdt_csum,
/// dir_nlink, extra_isize, metadata_csum).
pub const RO_COMPAT_EXT4_ONLY: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400;

/// Block sizes from 1 KiB to 64 KiB (s_log_block_size 0..=6).
pub const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Old revision-0 filesystems have fixed 128-byte inodes.
pub const GOOD_OLD_INODE_SIZE: u16 = 128;
/// Largest number of block groups we load descriptors for (4 Mi groups:
/// 512 TiB at 4 KiB blocks, 256 MiB of descriptors at most).
pub const MAX_GROUPS: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub free_inodes: u32,
    pub first_data_block: u32,
    pub block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub label: [u8; 16],
    pub desc_size: u16,
    /// The journal's inode (0: none or external).
    pub journal_inode: u32,
    /// The high word of the block count as stored, even without the 64bit
    /// feature (ext4-view counts it regardless; see check_group_count).
    pub stored_blocks_hi: u32,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl Superblock {
    /// Reads the superblock; `Ok(None)` when the magic is absent.
    pub fn read(volume: &dyn ReadAt) -> Result<Option<Self>, FsError> {
        if volume.size() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Ok(None);
        }
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        volume.read_exact_at(SUPERBLOCK_OFFSET, &mut b)?;
        if u16_at(&b, 0x38) != MAGIC {
            return Ok(None);
        }
        let corrupt = |off: usize, what: &str| FsError::corrupt(SUPERBLOCK_OFFSET + off as u64, what);
        let log = u32_at(&b, 0x18);
        if log > MAX_LOG_BLOCK_SIZE {
            return Err(corrupt(0x18, format!("block size exponent {log}").as_str()));
        }
        let block_size = 1024u32 << log;
        let feature_incompat = u32_at(&b, 0x60);
        let is64 = feature_incompat & INCOMPAT_64BIT != 0;
        let blocks_hi = if is64 { u64::from(u32_at(&b, 0x150)) } else { 0 };
        let free_hi = if is64 { u64::from(u32_at(&b, 0x158)) } else { 0 };
        let rev = u32_at(&b, 0x4C);
        let inode_size = if rev == 0 { GOOD_OLD_INODE_SIZE } else { u16_at(&b, 0x58) };
        if inode_size < GOOD_OLD_INODE_SIZE || !inode_size.is_power_of_two() || u32::from(inode_size) > block_size {
            return Err(corrupt(0x58, &format!("inode size {inode_size}")));
        }
        let desc_size = if is64 { u16_at(&b, 0xFE) } else { 32 };
        if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            return Err(corrupt(0xFE, &format!("group descriptor size {desc_size}")));
        }
        let sb = Superblock {
            inodes_count: u32_at(&b, 0x0),
            blocks_count: u64::from(u32_at(&b, 0x4)) | blocks_hi << 32,
            free_blocks: u64::from(u32_at(&b, 0xC)) | free_hi << 32,
            free_inodes: u32_at(&b, 0x10),
            first_data_block: u32_at(&b, 0x14),
            block_size,
            blocks_per_group: u32_at(&b, 0x20),
            inodes_per_group: u32_at(&b, 0x28),
            inode_size,
            feature_compat: u32_at(&b, 0x5C),
            feature_incompat,
            feature_ro_compat: u32_at(&b, 0x64),
            // OK to unwrap: the slice is exactly 16 bytes.
            label: b[0x78..0x88].try_into().unwrap(),
            desc_size,
            stored_blocks_hi: u32_at(&b, 0x150),
            journal_inode: if u32_at(&b, 0x5C) & COMPAT_HAS_JOURNAL != 0 { u32_at(&b, 0xE0) } else { 0 },
        };
        // Every block's byte offset must fit in 64 bits.
        if sb.blocks_count.checked_mul(u64::from(block_size)).is_none() {
            return Err(corrupt(0x4, &format!("{} blocks", sb.blocks_count)));
        }
        if sb.blocks_per_group == 0 || sb.inodes_per_group == 0 {
            return Err(corrupt(0x20, "zero blocks or inodes per group"));
        }
        if sb.inodes_per_group.checked_mul(u32::from(inode_size)).is_none() {
            return Err(corrupt(0x28, "inodes per group overflow"));
        }
        let unknown = feature_incompat & !INCOMPAT_SUPPORTED;
        if unknown != 0 {
            return Err(FsError::Unsupported(format!("ext4 incompatible features {unknown:#x}")));
        }
        Ok(Some(sb))
    }

    /// Refuses a group count the volume cannot hold: the group descriptor
    /// table must fit in the volume. This runs before anything (ext4-view
    /// included) sizes a buffer by the group count, so a forged superblock
    /// cannot make the image decide a huge allocation.
    pub fn check_group_count(&self, volume_size: u64) -> Result<(), FsError> {
        // ext4-view reads the high word of the block count whatever the
        // features say: bound the larger of the two readings.
        let raw = (u64::from(self.stored_blocks_hi) << 32) | (self.blocks_count & 0xffff_ffff);
        let raw_groups =
            raw.saturating_sub(u64::from(self.first_data_block)).div_ceil(u64::from(self.blocks_per_group));
        let groups = self.group_count().max(raw_groups);
        let table = groups.saturating_mul(u64::from(self.desc_size.max(32)));
        if groups == 0 || groups > MAX_GROUPS || table > volume_size {
            return Err(FsError::corrupt(
                SUPERBLOCK_OFFSET + 0x4,
                format!("{groups} block groups do not fit in a {volume_size}-byte volume"),
            ));
        }
        Ok(())
    }

    pub fn group_count(&self) -> u64 {
        let data = self.blocks_count.saturating_sub(u64::from(self.first_data_block));
        data.div_ceil(u64::from(self.blocks_per_group))
    }

    pub fn kind(&self) -> FsKind {
        let ext4_incompat = INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG;
        if self.feature_incompat & ext4_incompat != 0 || self.feature_ro_compat & RO_COMPAT_EXT4_ONLY != 0 {
            FsKind::Ext4
        } else if self.feature_compat & COMPAT_HAS_JOURNAL != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        }
    }

    pub fn label(&self) -> Option<String> {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(self.label.len());
        let s = String::from_utf8_lossy(&self.label[..end]).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// The inode table's first block of every group.
    pub fn read_inode_tables(&self, volume: &dyn ReadAt) -> Result<Vec<u64>, FsError> {
        let groups = self.group_count();
        if groups == 0 || groups > MAX_GROUPS {
            return Err(FsError::corrupt(SUPERBLOCK_OFFSET + 4, format!("{groups} block groups")));
        }
        // Descriptors start in the block after the superblock's block.
        let start = (u64::from(self.first_data_block) + 1) * u64::from(self.block_size);
        let ds = usize::from(self.desc_size);
        let len = groups as usize * ds;
        let end = start.checked_add(len as u64).filter(|&e| e <= volume.size());
        if end.is_none() {
            return Err(FsError::corrupt(start, "group descriptors past the end of the volume"));
        }
        let mut b = vec![0u8; len];
        volume.read_exact_at(start, &mut b)?;
        let mut tables = Vec::with_capacity(groups as usize);
        for d in b.chunks_exact(ds) {
            let lo = u64::from(u32_at(d, 0x8));
            let hi = if ds >= 64 { u64::from(u32_at(d, 0x28)) } else { 0 };
            tables.push(lo | hi << 32);
        }
        Ok(tables)
    }
}
