//! File bytes: plain extents read sector-aligned and checked against the
//! checksum tree ("Extent csum item": one crc32c per sector of a disk
//! extent, keyed by its logical address), compressed extents read whole,
//! checked, expanded and cached.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::volume::fs::FsError;

use super::consts::*;
use super::csum::crc32c;
use super::extent::{Data, FileExtent};
use super::le::u32_at;
use super::node::Key;
use super::{BtrfsFs, compress, lock};

/// Most bytes read and checked in one go.
const MAX_VERIFY_READ: u64 = 1 << 20;

impl BtrfsFs {
    fn ss(&self) -> u64 {
        u64::from(self.sb.sectorsize)
    }

    /// The stored crc32c of each of `n` sectors from logical `start`
    /// (`None`: no checksum recorded, as for nodatasum files).
    fn csums(&self, start: u64, n: usize) -> Result<Vec<Option<u32>>, FsError> {
        let mut out = vec![None; n];
        let Some(root) = self.csum_root else { return Ok(out) };
        let ss = self.ss();
        let end = start + n as u64 * ss;
        // One item covers at most a leaf's worth of checksums.
        let span = u64::from(self.sb.nodesize) / 4 * ss;
        let min = Key::new(EXTENT_CSUM_OBJECTID, EXTENT_CSUM_KEY, start.saturating_sub(span));
        let max = Key::new(EXTENT_CSUM_OBJECTID, EXTENT_CSUM_KEY, end - 1);
        self.trees.walk(root, min, max, &mut |key, data, _| {
            for (i, c) in data.chunks_exact(4).enumerate() {
                let Some(sector) = key.offset.checked_add(i as u64 * ss) else { break };
                if sector >= end {
                    break;
                }
                if sector >= start && (sector - start).is_multiple_of(ss) {
                    out[((sector - start) / ss) as usize] = Some(u32_at(c, 0));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Fills `out` from logical address `logical`, checking every whole
    /// sector it touches against its checksum unless `verify` is off.
    pub(super) fn read_disk(&self, logical: u64, out: &mut [u8], verify: bool) -> Result<(), FsError> {
        let ss = self.ss();
        let mut done = 0usize;
        while done < out.len() {
            let pos = logical + done as u64;
            let (_, room) = self.trees.chunks.map(pos)?;
            if !verify || self.csum_root.is_none() {
                let n = (room.min((out.len() - done) as u64)) as usize;
                self.trees.read_logical(pos, &mut out[done..done + n], |_, _| Ok(()))?;
                done += n;
                continue;
            }
            let first = pos / ss * ss;
            let want_end = (logical + out.len() as u64).div_ceil(ss).saturating_mul(ss);
            let last = want_end.min(first.saturating_add(MAX_VERIFY_READ)).min(pos + room);
            if last <= first || !(last - first).is_multiple_of(ss) {
                return Err(FsError::corrupt(0, format!("extent at logical {pos} is not sector-aligned")));
            }
            let sums = self.csums(first, ((last - first) / ss) as usize)?;
            let mut buf = vec![0u8; (last - first) as usize];
            self.trees.read_logical(first, &mut buf, |b, physical| check_sectors(b, &sums, ss, first, physical))?;
            let skip = (pos - first) as usize;
            let n = (buf.len() - skip).min(out.len() - done);
            out[done..done + n].copy_from_slice(&buf[skip..skip + n]);
            done += n;
        }
        Ok(())
    }

    /// The whole expanded content of a compressed disk extent.
    fn expanded(
        &self,
        compression: u8,
        disk_bytenr: u64,
        disk_len: u64,
        ram: u64,
        verify: bool,
    ) -> Result<Arc<Vec<u8>>, FsError> {
        if let Some(e) = lock(&self.expanded).get(&disk_bytenr) {
            return Ok(e);
        }
        let mut raw = vec![0u8; disk_len as usize];
        self.read_disk(disk_bytenr, &mut raw, verify)?;
        let out = compress::decompress(compression, &raw, ram as usize, self.ss() as usize)
            .map_err(|why| FsError::corrupt(0, format!("compressed extent at logical {disk_bytenr}: {why}")))?;
        let out = Arc::new(out);
        lock(&self.expanded).insert(disk_bytenr, out.clone());
        Ok(out)
    }

    /// Fills `out` with the file bytes of extent `e` from file offset `pos`.
    pub(super) fn read_extent(&self, e: &FileExtent, pos: u64, out: &mut [u8], verify: bool) -> Result<(), FsError> {
        let within = pos - e.start;
        match &e.data {
            Data::Zeros => out.fill(0),
            Data::Inline { compression, ram_bytes, bytes } => {
                let plain = if *compression == COMPRESS_NONE {
                    bytes.clone()
                } else {
                    compress::decompress(*compression, bytes, *ram_bytes as usize, self.ss() as usize)
                        .map_err(|why| FsError::corrupt(0, format!("inline extent: {why}")))?
                };
                copy_or_zero(&plain, within, out);
            }
            Data::Regular { compression: COMPRESS_NONE, disk_bytenr, offset, .. } => {
                self.read_disk(disk_bytenr + offset + within, out, verify)?;
            }
            Data::Regular { compression, disk_bytenr, disk_num_bytes, offset, ram_bytes } => {
                let plain = self.expanded(*compression, *disk_bytenr, *disk_num_bytes, *ram_bytes, verify)?;
                copy_or_zero(&plain, offset + within, out);
            }
        }
        Ok(())
    }
}

/// Copies from `src` at `from`; what `src` does not hold reads as zeros.
fn copy_or_zero(src: &[u8], from: u64, out: &mut [u8]) {
    out.fill(0);
    if let Ok(from) = usize::try_from(from)
        && from < src.len()
    {
        let n = (src.len() - from).min(out.len());
        out[..n].copy_from_slice(&src[from..from + n]);
    }
}

fn check_sectors(b: &mut [u8], sums: &[Option<u32>], ss: u64, first: u64, physical: u64) -> Result<(), FsError> {
    for (i, (sector, want)) in b.chunks(ss as usize).zip(sums).enumerate() {
        if let Some(want) = want
            && crc32c(sector) != *want
        {
            return Err(FsError::corrupt(
                physical + i as u64 * ss,
                format!("data checksum mismatch in the sector at logical {}", first + i as u64 * ss),
            ));
        }
    }
    Ok(())
}
