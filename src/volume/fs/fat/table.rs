//! The file allocation table: 12-, 16- or 28-bit entries chaining clusters
//! (FAT specification section 4 "FAT Data Structure").

use crate::block::ReadAt;
use crate::volume::fs::{FsError, FsKind};

use super::bpb::Bpb;

/// Largest FAT we keep in memory (2^26 FAT32 entries: 256 GiB volumes at
/// 4 KiB clusters).
pub const MAX_FAT_BYTES: u64 = 256 << 20;

/// A run of `len` contiguous clusters starting at `first`.
#[derive(Debug, Clone, Copy)]
pub struct ClusterRun {
    pub first: u32,
    pub len: u32,
}

pub struct Fat {
    kind: FsKind,
    bytes: Vec<u8>,
    cluster_count: u32,
    fat_offset: u64,
}

pub enum Next {
    Cluster(u32),
    End,
}

impl Fat {
    pub fn load(volume: &dyn ReadAt, bpb: &Bpb) -> Result<Fat, FsError> {
        if bpb.fat_len > MAX_FAT_BYTES {
            return Err(FsError::Unsupported(format!("a FAT of {} bytes", bpb.fat_len)));
        }
        if bpb.fat_offset.checked_add(bpb.fat_len).is_none_or(|e| e > volume.size()) {
            return Err(FsError::corrupt(bpb.fat_offset, "the FAT is past the end of the volume"));
        }
        let mut bytes = vec![0u8; bpb.fat_len as usize];
        volume.read_exact_at(bpb.fat_offset, &mut bytes)?;
        Ok(Fat { kind: bpb.kind, bytes, cluster_count: bpb.cluster_count, fat_offset: bpb.fat_offset })
    }

    fn raw(&self, c: u32) -> u32 {
        let c = c as usize;
        let b = &self.bytes;
        // Entries up to cluster_count + 1 are in range (checked by `Bpb`).
        match self.kind {
            FsKind::Fat12 => {
                // Two 12-bit entries share three bytes.
                let o = c + c / 2;
                let v = u32::from(u16::from_le_bytes([b[o], b[o + 1]]));
                if c % 2 == 1 { v >> 4 } else { v & 0xFFF }
            }
            FsKind::Fat16 => u32::from(u16::from_le_bytes([b[c * 2], b[c * 2 + 1]])),
            _ => u32::from_le_bytes([b[c * 4], b[c * 4 + 1], b[c * 4 + 2], b[c * 4 + 3]]) & 0x0FFF_FFFF,
        }
    }

    pub fn is_valid_cluster(&self, c: u32) -> bool {
        c >= 2 && c - 2 < self.cluster_count
    }

    /// The entry after cluster `c`.
    pub fn next(&self, c: u32) -> Result<Next, FsError> {
        let v = self.raw(c);
        // End-of-chain markers: 0xFF8.., bad cluster 0xFF7.. (section 4).
        let eoc = match self.kind {
            FsKind::Fat12 => 0xFF8,
            FsKind::Fat16 => 0xFFF8,
            _ => 0x0FFF_FFF8,
        };
        if v >= eoc {
            Ok(Next::End)
        } else if self.is_valid_cluster(v) {
            Ok(Next::Cluster(v))
        } else {
            Err(FsError::corrupt(self.fat_offset, format!("cluster {c} links to invalid cluster {v:#x}")))
        }
    }

    /// The runs of the chain starting at `first`. A chain longer than the
    /// cluster count loops.
    pub fn chain(&self, first: u32) -> Result<Vec<ClusterRun>, FsError> {
        if !self.is_valid_cluster(first) {
            return Err(FsError::corrupt(self.fat_offset, format!("chain starts at invalid cluster {first:#x}")));
        }
        let mut runs: Vec<ClusterRun> = Vec::new();
        let mut c = first;
        let mut count = 0u32;
        loop {
            count += 1;
            if count > self.cluster_count {
                return Err(FsError::corrupt(self.fat_offset, format!("cluster chain from {first} loops")));
            }
            match runs.last_mut() {
                Some(r) if r.first + r.len == c => r.len += 1,
                _ => runs.push(ClusterRun { first: c, len: 1 }),
            }
            match self.next(c)? {
                Next::Cluster(n) => c = n,
                Next::End => return Ok(runs),
            }
        }
    }

    pub fn free_clusters(&self) -> u64 {
        (2..self.cluster_count + 2).filter(|&c| self.raw(c) == 0).count() as u64
    }
}
