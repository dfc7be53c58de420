//! One QCOW2 image (a layer of a chain): its header, L1 table and a cache of
//! L2 tables, answering "what does guest offset X map to in this image".

use super::consts::*;
use super::error::{Error, Result};
use super::header::Header;
use super::l2::{self, Mapping};
use crate::block::{Lru, ReadAt};
use std::sync::{Arc, Mutex};

/// L2 tables kept per image: enough for sequential reads to never reload and
/// for random reads over a few GiB; bounded by bytes, not only count.
const L2_CACHE_BYTES: u64 = 4 << 20;

pub struct Image {
    pub header: Header,
    file: Arc<dyn ReadAt>,
    l1: Vec<u64>,
    l2_cache: Mutex<Lru<u64, Arc<[u64]>>>,
}

impl Image {
    pub fn open(file: Arc<dyn ReadAt>) -> Result<Self> {
        let header = Header::read(&*file)?;
        // OK: Header::read checked l1_size * 8 <= MAX_L1_BYTES and that the
        // table lies inside the file.
        let mut raw = vec![0u8; header.l1_size as usize * 8];
        file.read_exact_at(header.l1_table_offset, &mut raw).map_err(Error::io(header.l1_table_offset))?;
        let l1: Vec<u64> = raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect();
        let tables = (L2_CACHE_BYTES / header.cluster.bytes()).max(2) as usize;
        Ok(Self { header, file, l1, l2_cache: Mutex::new(Lru::new(tables)) })
    }

    /// Caps this image's L2 cache at `bytes` (at least two tables): a deep
    /// chain shares one memory budget among its layers.
    pub fn limit_l2_cache(&self, bytes: u64) {
        let tables = (bytes.min(L2_CACHE_BYTES) / self.header.cluster.bytes()).max(2) as usize;
        *crate::util::lock(&self.l2_cache) = Lru::new(tables);
    }

    pub fn file(&self) -> &Arc<dyn ReadAt> {
        &self.file
    }

    pub fn l1(&self) -> &[u64] {
        &self.l1
    }

    /// The L2 table for L1 index `i`, or `None` when it is unallocated.
    pub fn l2_table(&self, i: u64) -> Result<Option<Arc<[u64]>>> {
        // OK to index: callers pass i < l1.len().
        let l2_off = self.l1[i as usize] & L1E_OFFSET_MASK;
        if l2_off == 0 {
            return Ok(None);
        }
        if let Some(t) = crate::util::lock(&self.l2_cache).get(&i) {
            return Ok(Some(t));
        }
        let cs = self.header.cluster.bytes();
        if l2_off & self.header.cluster.mask() != 0 {
            return Err(Error::corrupt(
                l2_off,
                format!("L2 table offset {l2_off:#x} (L1 entry {i}) is not cluster aligned"),
            ));
        }
        match l2_off.checked_add(cs) {
            Some(end) if end <= self.file.size() => {}
            _ => {
                return Err(Error::corrupt(
                    l2_off,
                    format!(
                        "L2 table at {l2_off:#x} (L1 entry {i}) lies past the end of the file ({} bytes)",
                        self.file.size()
                    ),
                ));
            }
        }
        let mut raw = vec![0u8; self.header.cluster.usize()];
        self.file.read_exact_at(l2_off, &mut raw).map_err(Error::io(l2_off))?;
        // OK to unwrap: chunks_exact(8) yields 8-byte slices.
        let t: Arc<[u64]> = raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect();
        crate::util::lock(&self.l2_cache).insert(i, t.clone());
        Ok(Some(t))
    }

    /// What guest offset `off` maps to, and for how many bytes from `off`
    /// that answer holds (at least 1, at most to the end of the cluster).
    /// `off` must be below the virtual size.
    pub fn map(&self, off: u64) -> Result<(Mapping, u64)> {
        let h = &self.header;
        let cb = h.cluster.bits();
        let cluster = off >> cb;
        let in_cluster = off & h.cluster.mask();
        let to_end = h.cluster.bytes() - in_cluster;
        let entries = h.l2_entries();
        let l1_index = cluster / entries;
        if l1_index >= self.l1.len() as u64 {
            return Err(Error::corrupt(h.l1_table_offset, format!("guest offset {off} is beyond the L1 table")));
        }
        let Some(table) = self.l2_table(l1_index)? else {
            return Ok((Mapping::Unallocated, to_end));
        };
        let idx = (cluster % entries) as usize;
        let ext = h.extended_l2();
        let entry = if ext { table[idx * 2] } else { table[idx] };
        // The compressed bit comes first: in a compressed descriptor, bit 0
        // is part of the offset, not the zero flag.
        if entry & OFLAG_COMPRESSED != 0 {
            let (host, len) = l2::compressed(entry, cb);
            return Ok((Mapping::Compressed { host, len }, to_end));
        }
        let host = entry & L2E_OFFSET_MASK;
        if !ext {
            if entry & OFLAG_ZERO != 0 {
                if h.version < 3 {
                    // Reserved in version 2; QEMU treats it as corruption
                    // too, so neither data nor zeros would be the truth.
                    return Err(Error::corrupt(off, "zero flag in an L2 entry of a version 2 image"));
                }
                return Ok((Mapping::Zero, to_end));
            }
            if host == 0 {
                return Ok((Mapping::Unallocated, to_end));
            }
            self.check_data(host, off)?;
            return Ok((Mapping::Data(host + in_cluster), to_end));
        }
        let bitmap = table[idx * 2 + 1];
        let sc_size = h.cluster.bytes() / SUBCLUSTERS as u64;
        let sc = (in_cluster / sc_size) as u32;
        let alloc = bitmap >> sc & 1 != 0;
        let zero = bitmap >> (32 + sc) & 1 != 0;
        let sc_end = (sc as u64 + 1) * sc_size - in_cluster;
        match (alloc, zero) {
            (true, true) => Err(Error::corrupt(off, "subcluster is both allocated and zero")),
            (false, true) => Ok((Mapping::Zero, sc_end)),
            (false, false) => Ok((Mapping::Unallocated, sc_end)),
            (true, false) => {
                if host == 0 {
                    return Err(Error::corrupt(off, "allocated subcluster in a cluster without host offset"));
                }
                self.check_data(host, off)?;
                Ok((Mapping::Data(host + in_cluster), sc_end))
            }
        }
    }

    fn check_data(&self, host: u64, guest: u64) -> Result<()> {
        if host & self.header.cluster.mask() != 0 {
            return Err(Error::corrupt(host, format!("data cluster for guest offset {guest} is not cluster aligned")));
        }
        if host >= self.file.size() {
            return Err(Error::corrupt(
                host,
                format!(
                    "data cluster for guest offset {guest} lies past the end of the file ({} bytes)",
                    self.file.size()
                ),
            ));
        }
        Ok(())
    }
}
