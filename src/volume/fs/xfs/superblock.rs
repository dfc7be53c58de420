//! The primary superblock (§"Superblocks"): geometry, version, features.

use super::be::{be16, be32, be64};
use super::consts::*;
use super::crc;
use crate::block::ReadAt;
use crate::volume::fs::FsError;

/// Smallest and largest block sizes XFS allows (512 B .. 64 KiB).
const MIN_BLOCK_LOG: u8 = 9;
const MAX_BLOCK_LOG: u8 = 16;
/// Inodes are 256 B .. 2 KiB (v4 allows 256 too; v1 inodes are gone).
const MIN_INODE_LOG: u8 = 8;
const MAX_INODE_LOG: u8 = 11;
/// A folder block is at most 64 KiB.
const MAX_DIRBLOCK: u32 = 64 << 10;
/// Most allocation groups we accept (mkfs caps them far lower).
const MAX_AGCOUNT: u32 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Superblock {
    pub block_size: u32,
    pub block_log: u8,
    pub dblocks: u64,
    pub ag_blocks: u32,
    pub ag_count: u32,
    pub ag_blk_log: u8,
    pub inode_size: u16,
    pub inode_log: u8,
    pub inop_blog: u8,
    pub sect_size: u16,
    pub dir_block_size: u32,
    pub root_ino: u64,
    pub log_start: u64,
    pub log_blocks: u32,
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
    pub v5: bool,
    pub ftype: bool,
    pub incompat: u32,
    /// The UUID v5 metadata blocks carry (sb_meta_uuid when set apart).
    pub meta_uuid: [u8; 16],
    pub label: [u8; 12],
}

impl Superblock {
    /// Reads the superblock at byte 0: `Ok(None)` without the XFS magic.
    pub fn read(volume: &dyn ReadAt) -> Result<Option<Superblock>, FsError> {
        if volume.size() < 512 {
            return Ok(None);
        }
        let mut b = vec![0u8; 512];
        volume.read_exact_at(0, &mut b)?;
        if be32(&b, 0) != SB_MAGIC {
            return Ok(None);
        }
        let sect_size = be16(&b, 0x66);
        if !(512..=32768).contains(&sect_size) || !sect_size.is_power_of_two() {
            return Err(FsError::corrupt(0x66, format!("XFS sector size {sect_size}")));
        }
        if usize::from(sect_size) > b.len() {
            if volume.size() < u64::from(sect_size) {
                return Err(FsError::corrupt(0, "XFS volume shorter than one sector"));
            }
            b = vec![0u8; usize::from(sect_size)];
            volume.read_exact_at(0, &mut b)?;
        }
        Superblock::parse(&b).map(Some)
    }

    fn parse(b: &[u8]) -> Result<Superblock, FsError> {
        let version = be16(b, 0x64);
        let v5 = match version & SB_VERSION_NUMBITS {
            SB_VERSION_5 => true,
            SB_VERSION_4 => false,
            v => return Err(FsError::Unsupported(format!("XFS superblock version {v} (only 4 and 5 are read)"))),
        };
        if v5 {
            crc::verify(b, SB_CRC_OFF, 0, "XFS superblock")?;
        } else if version & SB_VERSION_DIRV2BIT == 0 {
            return Err(FsError::Unsupported("XFS with version 1 folders".into()));
        }
        if version & SB_VERSION_BORGBIT != 0 {
            // Case-insensitive names change how lookups must compare.
            return Err(FsError::Unsupported("XFS with ASCII case-insensitive names".into()));
        }
        let features2 = if version & SB_VERSION_MOREBITSBIT != 0 { be32(b, 0xC8) } else { 0 };
        let incompat = if v5 { be32(b, 0xD8) } else { 0 };
        if incompat & !INCOMPAT_KNOWN != 0 {
            return Err(FsError::Unsupported(format!("XFS incompatible features {:#x}", incompat & !INCOMPAT_KNOWN)));
        }
        let block_log = b[0x78];
        let block_size = be32(b, 4);
        if !(MIN_BLOCK_LOG..=MAX_BLOCK_LOG).contains(&block_log) || block_size != 1 << block_log {
            return Err(FsError::corrupt(4, format!("XFS block size {block_size} (log {block_log})")));
        }
        let inode_log = b[0x7A];
        let inode_size = be16(b, 0x68);
        if !(MIN_INODE_LOG..=MAX_INODE_LOG).contains(&inode_log)
            || u32::from(inode_size) != 1 << inode_log
            || inode_log > block_log
            || b[0x7B] != block_log - inode_log
        {
            return Err(FsError::corrupt(0x68, format!("XFS inode size {inode_size} in {block_size}-byte blocks")));
        }
        let dir_blk_log = b[0xC0];
        let dir_block_size = 1u32.checked_shl(u32::from(block_log) + u32::from(dir_blk_log)).unwrap_or(u32::MAX);
        if dir_block_size > MAX_DIRBLOCK {
            return Err(FsError::corrupt(0xC0, format!("XFS folder block log {dir_blk_log}")));
        }
        let ag_blocks = be32(b, 0x54);
        let ag_count = be32(b, 0x58);
        let ag_blk_log = b[0x7C];
        let dblocks = be64(b, 0x08);
        let agb_ok = ag_blocks >= 2 && ag_blk_log < 32 && u64::from(ag_blocks) <= 1 << ag_blk_log && {
            ag_blk_log == 0 || u64::from(ag_blocks) > 1 << (ag_blk_log - 1)
        };
        let count_ok = (1..=MAX_AGCOUNT).contains(&ag_count) && {
            let full = u64::from(ag_count - 1) * u64::from(ag_blocks);
            dblocks > full && dblocks <= full + u64::from(ag_blocks)
        };
        if !agb_ok || !count_ok {
            return Err(FsError::corrupt(
                0x54,
                format!("XFS geometry: {ag_count} groups of {ag_blocks} blocks (log {ag_blk_log}), {dblocks} blocks"),
            ));
        }
        let mut meta_uuid = [0u8; 16];
        let at = if v5 && incompat & INCOMPAT_META_UUID != 0 { 0xF8 } else { 0x20 };
        meta_uuid.copy_from_slice(&b[at..at + 16]);
        let mut label = [0u8; 12];
        label.copy_from_slice(&b[0x6C..0x78]);
        Ok(Superblock {
            block_size,
            block_log,
            dblocks,
            ag_blocks,
            ag_count,
            ag_blk_log,
            inode_size,
            inode_log,
            inop_blog: block_log - inode_log,
            sect_size: be16(b, 0x66),
            dir_block_size,
            root_ino: be64(b, 0x38),
            log_start: be64(b, 0x30),
            log_blocks: be32(b, 0x60),
            icount: be64(b, 0x80),
            ifree: be64(b, 0x88),
            fdblocks: be64(b, 0x90),
            v5,
            ftype: if v5 { incompat & INCOMPAT_FTYPE != 0 } else { features2 & SB_FEATURES2_FTYPE != 0 },
            incompat,
            meta_uuid,
            label,
        })
    }

    pub fn label(&self) -> Option<String> {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(self.label.len());
        let s = String::from_utf8_lossy(&self.label[..end]).trim().to_string();
        (!s.is_empty()).then_some(s)
    }

    /// Byte offset of filesystem block `fsb` (AG number in the high bits,
    /// as bmbt records and pointers store it), checked against the volume.
    pub fn fsb_to_byte(&self, fsb: u64) -> Option<u64> {
        let agno = fsb >> self.ag_blk_log;
        let agbno = fsb & ((1u64 << self.ag_blk_log) - 1);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return None;
        }
        let block = agno * u64::from(self.ag_blocks) + agbno;
        (block < self.dblocks).then(|| block << self.block_log)
    }

    /// Byte offset of inode `ino`, checked against the geometry.
    pub fn ino_to_byte(&self, ino: u64) -> Option<u64> {
        let agino_bits = u32::from(self.ag_blk_log) + u32::from(self.inop_blog);
        let agno = ino.checked_shr(agino_bits).unwrap_or(0);
        let agino = ino & ((1u64 << agino_bits) - 1);
        let fsb = (agno << self.ag_blk_log) | (agino >> self.inop_blog);
        let within = (agino & ((1u64 << self.inop_blog) - 1)) << self.inode_log;
        if agno >= u64::from(self.ag_count) {
            return None;
        }
        self.fsb_to_byte(fsb).map(|b| b + within)
    }

    /// XFS's largest file: 2^54 - 1 blocks, capped at 2^63 - 1 bytes.
    pub fn max_file_size(&self) -> u64 {
        MAX_FILEOFF
            .checked_shl(u32::from(self.block_log))
            .filter(|v| v >> self.block_log == MAX_FILEOFF)
            .map_or(i64::MAX as u64, |v| v.min(i64::MAX as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_file() {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(&SB_MAGIC.to_be_bytes());
        assert!(Superblock::parse(&b).is_err());
        let sb = |log: u8| Superblock {
            block_size: 1 << log,
            block_log: log,
            dblocks: 1,
            ag_blocks: 1,
            ag_count: 1,
            ag_blk_log: 1,
            inode_size: 512,
            inode_log: 9,
            inop_blog: log - 9,
            sect_size: 512,
            dir_block_size: 1 << log,
            root_ino: 128,
            log_start: 0,
            log_blocks: 0,
            icount: 0,
            ifree: 0,
            fdblocks: 0,
            v5: true,
            ftype: true,
            incompat: 0,
            meta_uuid: [0; 16],
            label: [0; 12],
        };
        assert_eq!(sb(12).max_file_size(), i64::MAX as u64);
        assert_eq!(sb(9).max_file_size(), MAX_FILEOFF << 9);
    }
}
