//! The FAT boot sector and BIOS parameter block (Microsoft "FAT: General
//! Overview of On-Disk Format" 1.03, section 3 "Boot Sector and BPB" and
//! section 3.5 "FAT Type Determination").

use crate::block::ReadAt;
use crate::volume::fs::{FsError, FsKind};

/// Boot sector signature at bytes 510..512 (section 3.1).
const SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Fewer clusters than this is FAT12, fewer than `FAT16_MAX_CLUSTERS` FAT16
/// (section 3.5).
const FAT12_MAX_CLUSTERS: u32 = 4085;
const FAT16_MAX_CLUSTERS: u32 = 65525;
/// FAT32 cluster numbers have 28 bits.
const FAT32_MAX_CLUSTERS: u32 = 0x0FFF_FFF5;
/// Boot sectors of other filesystems that share the BPB layout.
const FOREIGN_OEM: [&[u8; 8]; 2] = [b"NTFS    ", b"EXFAT   "];
/// The label mkfs writes when there is none.
pub const NO_NAME: &[u8; 11] = b"NO NAME    ";

#[derive(Debug, Clone)]
pub struct Bpb {
    pub kind: FsKind,
    pub cluster_size: u32,
    /// Byte offset and length of the first FAT.
    pub fat_offset: u64,
    pub fat_len: u64,
    /// FAT12/16 fixed root folder: byte offset and length.
    pub root_offset: u64,
    pub root_len: u64,
    /// FAT32 root folder cluster.
    pub root_cluster: u32,
    /// Byte offset of cluster 2.
    pub data_offset: u64,
    pub cluster_count: u32,
    pub label: [u8; 11],
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl Bpb {
    /// Parses the boot sector; `Ok(None)` when it is not a FAT boot sector.
    pub fn read(volume: &dyn ReadAt) -> Result<Option<Bpb>, FsError> {
        if volume.size() < 512 {
            return Ok(None);
        }
        let mut b = [0u8; 512];
        volume.read_exact_at(0, &mut b)?;
        // A jump instruction, the signature and a plausible BPB identify FAT;
        // anything implausible is "not FAT" rather than corrupt, since other
        // boot sectors share this layout.
        if !(b[0] == 0xEB || b[0] == 0xE9) || b[510..512] != SIGNATURE || FOREIGN_OEM.iter().any(|o| b[3..11] == o[..])
        {
            return Ok(None);
        }
        let bps = u16_at(&b, 0x0B);
        let spc = b[0x0D];
        let reserved = u16_at(&b, 0x0E);
        let fats = b[0x10];
        let root_entries = u16_at(&b, 0x11);
        let tot16 = u16_at(&b, 0x13);
        let fat16_size = u16_at(&b, 0x16);
        let tot32 = u32_at(&b, 0x20);
        let fat32_size = u32_at(&b, 0x24);
        if !matches!(bps, 512 | 1024 | 2048 | 4096) || spc == 0 || !spc.is_power_of_two() || reserved == 0 || fats == 0
        {
            return Ok(None);
        }
        let is32 = fat16_size == 0 && root_entries == 0;
        let fat_sectors = if is32 { fat32_size } else { u32::from(fat16_size) };
        let total = if tot16 != 0 { u32::from(tot16) } else { tot32 };
        if fat_sectors == 0 || total == 0 {
            return Ok(None);
        }
        let bps64 = u64::from(bps);
        let root_sectors = (u64::from(root_entries) * 32).div_ceil(bps64);
        let meta = u64::from(reserved) + u64::from(fats) * u64::from(fat_sectors) + root_sectors;
        let data_sectors = u64::from(total)
            .checked_sub(meta)
            .ok_or_else(|| FsError::corrupt(0x13, format!("{total} sectors leave no room for data")))?;
        let clusters = data_sectors / u64::from(spc);
        let kind = if is32 {
            FsKind::Fat32
        } else if clusters < u64::from(FAT12_MAX_CLUSTERS) {
            FsKind::Fat12
        } else {
            FsKind::Fat16
        };
        let max = match kind {
            FsKind::Fat12 => FAT12_MAX_CLUSTERS,
            FsKind::Fat16 => FAT16_MAX_CLUSTERS,
            _ => FAT32_MAX_CLUSTERS,
        };
        let cluster_count = u32::try_from(clusters)
            .ok()
            .filter(|&c| c > 0 && c <= max)
            .ok_or_else(|| FsError::corrupt(0x0D, format!("{clusters} clusters is not valid for {}", kind.name())))?;
        // Bytes of FAT entries needed for clusters 0..cluster_count+2.
        let n = u64::from(cluster_count) + 2;
        let needed = match kind {
            FsKind::Fat12 => (n * 3).div_ceil(2),
            FsKind::Fat16 => n * 2,
            _ => n * 4,
        };
        let fat_len = u64::from(fat_sectors) * bps64;
        if needed > fat_len {
            return Err(FsError::corrupt(0x16, format!("FAT of {fat_len} bytes is too small for {n} clusters")));
        }
        let label_at = if is32 { 0x47 } else { 0x2B };
        let mut label = [0u8; 11];
        label.copy_from_slice(&b[label_at..label_at + 11]);
        let root_cluster = if is32 { u32_at(&b, 0x2C) } else { 0 };
        if is32 && !(2..cluster_count + 2).contains(&root_cluster) {
            return Err(FsError::corrupt(0x2C, format!("root cluster {root_cluster}")));
        }
        let fat_offset = u64::from(reserved) * bps64;
        let root_offset = fat_offset + u64::from(fats) * fat_len;
        Ok(Some(Bpb {
            kind,
            cluster_size: u32::from(bps) * u32::from(spc),
            fat_offset,
            fat_len: needed,
            root_offset,
            root_len: u64::from(root_entries) * 32,
            root_cluster,
            data_offset: root_offset + root_sectors * bps64,
            cluster_count,
            label,
        }))
    }

    /// Byte offset of a data cluster (2-based numbering, section 3.5).
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * u64::from(self.cluster_size)
    }
}
