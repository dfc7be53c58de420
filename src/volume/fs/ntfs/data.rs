//! Reading attribute values: resident bytes, run lists (holes read as
//! zeros, bytes past the initialized size too) and LZNT1-compressed streams.
//!
//! Why not the `ntfs` crate's value readers: they return compressed
//! attributes' raw on-disk bytes, hide the run list of values split over an
//! attribute list, and re-walk the run list on every seek. Here a file's
//! merged run list is built once (cached with the node) and large reads go
//! straight to the volume with one `read_exact_at` per run.
#![forbid(unsafe_code)]

use crate::util::lock;
use std::sync::{Arc, Mutex};

use super::layout::MAX_COMPRESSION_UNIT;
use super::lznt1;
use super::record::{NonResident, Run};
use crate::block::{Extent, Lru, ReadAt};
use crate::volume::fs::FsError;

/// The largest file Windows' NTFS writes: 8 PiB less 2 MiB, with 2 MiB
/// clusters (2^32 - 1 of them; Windows 10 1709 and later). A larger data
/// size is corruption, never a file to stream.
pub const MAX_FILE_SIZE: u64 = (1 << 53) - (1 << 21);

/// Decompressed compression units kept per filesystem (64 KiB each).
pub const UNIT_CACHE_ENTRIES: usize = 32;

pub type UnitCache = Mutex<Lru<(u64, u64), Arc<Vec<u8>>>>;

/// A non-resident value: its merged run list and sizes.
#[derive(Debug, Clone)]
pub struct Stream {
    pub size: u64,
    pub init_size: u64,
    pub runs: Vec<Run>,
    pub cluster: u64,
    /// Clusters per compression unit; 0 when not compressed.
    pub unit_clusters: u64,
}

/// A value's bytes: resident in the record, or in clusters.
#[derive(Debug, Clone)]
pub enum Data {
    Resident(Vec<u8>),
    Clusters(Stream),
}

impl Data {
    pub fn size(&self) -> u64 {
        match self {
            Data::Resident(v) => v.len() as u64,
            Data::Clusters(s) => s.size,
        }
    }
}

impl Stream {
    /// Builds a stream from the extents of one attribute (several when it is
    /// split over an attribute list), checking that they join up.
    /// `compressed`: the attribute's flags say LZNT1 (sparse attributes
    /// carry a compression unit too, without being compressed).
    pub fn from_extents(
        mut extents: Vec<NonResident>,
        cluster: u64,
        pos: u64,
        compressed: bool,
    ) -> Result<Stream, FsError> {
        extents.sort_by_key(|e| e.lowest_vcn);
        let first = extents.first().ok_or_else(|| FsError::corrupt(pos, "attribute without extents"))?;
        if first.lowest_vcn != 0 {
            return Err(FsError::corrupt(pos, "attribute's first extent does not start at VCN 0"));
        }
        let (size, init_size, cu) = (first.data_size, first.init_size, first.compression_unit);
        let mut runs: Vec<Run> = Vec::new();
        for e in extents {
            let next = runs.last().map_or(0, |r| r.vcn + r.len);
            if e.lowest_vcn != next {
                return Err(FsError::corrupt(pos, format!("attribute extents leave a gap at VCN {next}")));
            }
            runs.extend(e.runs);
        }
        let unit_clusters = if !compressed {
            0
        } else if cu == 0 {
            return Err(FsError::Unsupported("compressed attribute without a compression unit".into()));
        } else {
            let uc = 1u64.checked_shl(u32::from(cu)).unwrap_or(u64::MAX);
            if uc.saturating_mul(cluster) > MAX_COMPRESSION_UNIT {
                return Err(FsError::Unsupported(format!("compression unit of {uc} clusters of {cluster} bytes")));
            }
            uc
        };
        if size > MAX_FILE_SIZE {
            return Err(FsError::corrupt(
                pos,
                format!("attribute of {size} bytes, more than NTFS's largest file ({MAX_FILE_SIZE} bytes)"),
            ));
        }
        let mapped = runs.last().map_or(0, |r| r.vcn + r.len).saturating_mul(cluster);
        if init_size > size || (unit_clusters == 0 && size > mapped) {
            return Err(FsError::corrupt(pos, format!("attribute size {size} exceeds its {mapped} mapped bytes")));
        }
        Ok(Stream { size, init_size, runs, cluster, unit_clusters })
    }

    fn run_for(&self, vcn: u64) -> Option<&Run> {
        let i = self.runs.partition_point(|r| r.vcn + r.len <= vcn);
        self.runs.get(i).filter(|r| r.vcn <= vcn)
    }

    /// Copies clusters' bytes at `offset` (within the allocation) into
    /// `buf`, zeros for sparse runs; an unmapped cluster is an error.
    fn read_raw(&self, vol: &dyn ReadAt, mut offset: u64, buf: &mut [u8]) -> Result<(), FsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let vcn = offset / self.cluster;
            let run = self
                .run_for(vcn)
                .ok_or_else(|| FsError::corrupt(offset, format!("no run maps virtual cluster {vcn}")))?;
            let within = offset - run.vcn * self.cluster;
            let avail = run.len.saturating_mul(self.cluster) - within;
            let n = (buf.len() - done).min(usize::try_from(avail).unwrap_or(usize::MAX));
            let dst = &mut buf[done..done + n];
            match run.lcn {
                None => dst.fill(0),
                Some(lcn) => {
                    let at = lcn
                        .checked_mul(self.cluster)
                        .and_then(|b| b.checked_add(within))
                        .ok_or_else(|| FsError::corrupt(lcn, "cluster number overflows"))?;
                    vol.read_exact_at(at, dst)?;
                }
            }
            done += n;
            offset += n as u64;
        }
        Ok(())
    }

    /// Reads at `offset`; returns fewer bytes only at the end of the value.
    pub fn read(
        &self,
        vol: &dyn ReadAt,
        cache: &UnitCache,
        key: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, FsError> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = usize::try_from(self.size - offset).unwrap_or(usize::MAX).min(buf.len());
        let buf = &mut buf[..n];
        // Bytes past the valid data length read as zeros.
        let valid = usize::try_from(self.init_size.saturating_sub(offset)).unwrap_or(usize::MAX).min(n);
        buf[valid..].fill(0);
        if self.unit_clusters == 0 {
            self.read_raw(vol, offset, &mut buf[..valid])?;
        } else {
            self.read_compressed(vol, cache, key, offset, &mut buf[..valid])?;
        }
        Ok(n)
    }

    /// See `ReadAt::locate`: only bytes stored as they are (not
    /// compressed), below the valid data length, in an allocated run.
    fn locate(&self, vol: &dyn ReadAt, offset: u64, len: u64) -> Option<Extent> {
        if self.unit_clusters != 0 {
            return None;
        }
        let len = len.min(self.init_size.min(self.size).checked_sub(offset)?);
        let run = self.run_for(offset / self.cluster)?;
        let within = offset - run.vcn * self.cluster;
        let avail = run.len.saturating_mul(self.cluster).checked_sub(within)?;
        let at = run.lcn?.checked_mul(self.cluster)?.checked_add(within)?;
        vol.locate(at, len.min(avail))
    }

    fn read_compressed(
        &self,
        vol: &dyn ReadAt,
        cache: &UnitCache,
        key: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), FsError> {
        let unit_bytes = self.unit_clusters * self.cluster;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let unit = pos / unit_bytes;
            let within = (pos % unit_bytes) as usize;
            let n = (buf.len() - done).min(unit_bytes as usize - within);
            let dst = &mut buf[done..done + n];
            let start = unit * unit_bytes;
            match self.unit_layout(unit)? {
                UnitLayout::Sparse => dst.fill(0),
                // A unit that did not compress is stored in full.
                UnitLayout::Stored => self.read_raw(vol, start + within as u64, dst)?,
                UnitLayout::Compressed(clusters) => {
                    let cached = lock(cache).get(&(key, unit));
                    let data = match cached {
                        Some(d) => d,
                        None => {
                            let mut packed = vec![0u8; (clusters * self.cluster) as usize];
                            self.read_raw(vol, start, &mut packed)?;
                            let mut out = vec![0u8; unit_bytes as usize];
                            lznt1::decompress(&packed, &mut out).map_err(|e| {
                                FsError::corrupt(start + e.offset as u64, format!("compression unit {unit}: {e}"))
                            })?;
                            let d = Arc::new(out);
                            lock(cache).insert((key, unit), d.clone());
                            d
                        }
                    };
                    dst.copy_from_slice(&data[within..within + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// How a compression unit is stored: all clusters allocated (stored
    /// as is), none (a hole), or allocated clusters followed by sparse ones
    /// (LZNT1 data in the allocated ones).
    fn unit_layout(&self, unit: u64) -> Result<UnitLayout, FsError> {
        let first = unit * self.unit_clusters;
        let end = first + self.unit_clusters;
        let mut vcn = first;
        let mut allocated = 0u64;
        let mut seen_sparse = false;
        while vcn < end {
            let run = self.run_for(vcn).ok_or_else(|| {
                FsError::corrupt(vcn, format!("no run maps virtual cluster {vcn} of compression unit {unit}"))
            })?;
            let n = (run.vcn + run.len).min(end) - vcn;
            match run.lcn {
                Some(_) if seen_sparse => {
                    return Err(FsError::Unsupported(format!(
                        "compression unit {unit} has data clusters after a hole"
                    )));
                }
                Some(_) => allocated += n,
                None => seen_sparse = true,
            }
            vcn += n;
        }
        Ok(match allocated {
            0 => UnitLayout::Sparse,
            a if a == self.unit_clusters => UnitLayout::Stored,
            a => UnitLayout::Compressed(a),
        })
    }
}

enum UnitLayout {
    Sparse,
    Stored,
    Compressed(u64),
}

impl Data {
    pub fn read(
        &self,
        vol: &dyn ReadAt,
        cache: &UnitCache,
        key: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, FsError> {
        match self {
            Data::Resident(v) => {
                let Ok(start) = usize::try_from(offset) else { return Ok(0) };
                if start >= v.len() {
                    return Ok(0);
                }
                let n = (v.len() - start).min(buf.len());
                buf[..n].copy_from_slice(&v[start..start + n]);
                Ok(n)
            }
            Data::Clusters(s) => s.read(vol, cache, key, offset, buf),
        }
    }

    /// See `ReadAt::locate`; resident bytes live in the MFT record, copied.
    pub fn locate(&self, vol: &dyn ReadAt, offset: u64, len: u64) -> Option<Extent> {
        match self {
            Data::Resident(_) => None,
            Data::Clusters(s) => s.locate(vol, offset, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemImage;

    const CLUSTER: u64 = 512;

    fn stream(runs: Vec<Run>, size: u64, compressed: bool) -> Stream {
        let nr = NonResident { lowest_vcn: 0, compression_unit: 4, data_size: size, init_size: size, runs };
        Stream::from_extents(vec![nr], CLUSTER, 0, compressed).unwrap()
    }

    fn read_all(s: &Stream, vol: &MemImage) -> Result<Vec<u8>, FsError> {
        let cache: UnitCache = Mutex::new(Lru::new(4));
        let mut out = vec![0u8; s.size as usize];
        let n = s.read(vol, &cache, 1, 0, &mut out)?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    /// Unit 0 compressed into one cluster, unit 1 a hole, unit 2 stored.
    #[test]
    fn compressed_sparse_and_stored_units() {
        let unit = 16 * CLUSTER as usize;
        let mut vol = vec![0u8; 64 * 1024];
        // A compressed chunk of 9 literals at cluster 10.
        let chunk = [0u8, b'c', b'o', b'm', b'p', b'r', b'e', b's', b's', 0, b'!'];
        let header = ((chunk.len() as u16 + 2 - 3) | 0xb000).to_le_bytes();
        let at = 10 * CLUSTER as usize;
        vol[at..at + 2].copy_from_slice(&header);
        vol[at + 2..at + 2 + chunk.len()].copy_from_slice(&chunk);
        let stored: Vec<u8> = (0..unit).map(|i| (i % 253) as u8).collect();
        let at = 40 * CLUSTER as usize;
        vol[at..at + unit].copy_from_slice(&stored);
        let runs = vec![
            Run { vcn: 0, len: 1, lcn: Some(10) },
            Run { vcn: 1, len: 31, lcn: None },
            Run { vcn: 32, len: 16, lcn: Some(40) },
        ];
        let size = (3 * unit - 100) as u64;
        let s = stream(runs.clone(), size, true);
        let got = read_all(&s, &MemImage(vol.clone())).unwrap();
        let mut expect = vec![0u8; size as usize];
        expect[..9].copy_from_slice(b"compress!");
        expect[2 * unit..].copy_from_slice(&stored[..unit - 100]);
        assert_eq!(got, expect);

        // The same runs without the compressed flag: raw clusters, holes.
        let plain = read_all(&stream(runs.clone(), size, false), &MemImage(vol.clone())).unwrap();
        assert_eq!(&plain[..2], &header);

        // A damaged chunk is an error, not bytes.
        let mut bad = vol.clone();
        bad[10 * CLUSTER as usize + 1] = 0xbf; // chunk length past its cluster
        assert!(matches!(read_all(&s, &MemImage(bad)), Err(FsError::Corrupt { .. })));

        // Data clusters after a hole inside a unit: refused.
        let odd = vec![Run { vcn: 0, len: 1, lcn: None }, Run { vcn: 1, len: 15, lcn: Some(10) }];
        let s = stream(odd, unit as u64, true);
        assert!(matches!(read_all(&s, &MemImage(vol)), Err(FsError::Unsupported(_))));
    }

    #[test]
    fn unmapped_clusters_and_valid_length() {
        let vol = MemImage((0..16 * 1024).map(|i| (i % 256) as u8).collect());
        let runs = vec![Run { vcn: 0, len: 4, lcn: Some(2) }];
        // Bytes past the initialized size read as zeros.
        let nr = NonResident { lowest_vcn: 0, compression_unit: 0, data_size: 2000, init_size: 1000, runs };
        let s = Stream::from_extents(vec![nr], CLUSTER, 0, false).unwrap();
        let got = read_all(&s, &vol).unwrap();
        assert_eq!(&got[..1000], &vol.0[1024..2024]);
        assert!(got[1000..].iter().all(|&b| b == 0));
        // A size beyond the mapped clusters is refused up front.
        let nr = NonResident {
            lowest_vcn: 0,
            compression_unit: 0,
            data_size: 5000,
            init_size: 5000,
            runs: vec![Run { vcn: 0, len: 4, lcn: Some(2) }],
        };
        assert!(Stream::from_extents(vec![nr], CLUSTER, 0, false).is_err());
    }
}
