//! What the server serves: the [`Export`] trait, read-only exports over any
//! [`ReadAt`] (a restore point's QCOW2 chain, a raw image), a writable
//! in-memory export, and the table of exports by name.

use crate::block::{Alloc, ReadAt, Run, check_range, whole_run};
use crate::nbd::option::BlockSize;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, RwLock};

/// A disk the server exports. Calls are blocking (they may read files);
/// the server runs them off its async threads.
pub trait Export: Send + Sync {
    fn size(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// As [`ReadAt::status`]: one run from `offset`.
    fn status(&self, offset: u64, len: u64) -> io::Result<Run>;
    fn block_size(&self) -> BlockSize {
        BlockSize::DEFAULT
    }
    /// The write side; `None` makes the export read-only.
    fn writer(&self) -> Option<&dyn Writable> {
        None
    }
}

/// The write side of an export (the push target implements it over the
/// image sink; [`MemExport`] in memory).
pub trait Writable: Send + Sync {
    /// `fua`: durable before returning.
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> io::Result<()>;
    /// Zeros `len` bytes; `punch` allows a hole instead (no NO_HOLE flag).
    fn write_zeroes(&self, offset: u64, len: u64, punch: bool, fua: bool) -> io::Result<()>;
    /// The bytes may read as anything afterwards (NBD_CMD_TRIM).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    /// Whether zeroing is cheap: FAST_ZERO requests fail with ENOTSUP if not.
    fn fast_zero(&self) -> bool {
        true
    }
}

/// A read-only export of any positional reader.
pub struct ReadOnly<R: ReadAt>(pub R);

impl<R: ReadAt> Export for ReadOnly<R> {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(offset, buf)
    }
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        self.0.status(offset, len)
    }
}

/// A writable export held in memory, with allocation tracked per 4 KiB
/// block (never written, or trimmed: a hole). For tests and demos.
pub struct MemExport {
    state: RwLock<(Vec<u8>, Vec<bool>)>,
}

const MEM_BLOCK: u64 = 4096;

impl MemExport {
    pub fn new(size: usize) -> Self {
        let blocks = (size as u64).div_ceil(MEM_BLOCK) as usize;
        MemExport { state: RwLock::new((vec![0; size], vec![false; blocks])) }
    }

    /// A copy of the bytes.
    pub fn bytes(&self) -> Vec<u8> {
        crate::util::read(&self.state).0.clone()
    }

    fn set(&self, offset: u64, len: u64, data: Option<&[u8]>, allocated: bool) -> io::Result<()> {
        let mut st = crate::util::write(&self.state);
        let (bytes, alloc) = &mut *st;
        check_range(offset, len as usize, bytes.len() as u64)?;
        let r = offset as usize..(offset + len) as usize;
        match data {
            Some(d) => bytes[r].copy_from_slice(d),
            None => bytes[r].fill(0),
        }
        // Only whole blocks become holes; any write allocates its blocks.
        let (first, last) = (offset / MEM_BLOCK, (offset + len).div_ceil(MEM_BLOCK));
        for b in first..last {
            let whole = b * MEM_BLOCK >= offset && (b + 1) * MEM_BLOCK <= offset + len;
            if allocated || whole {
                alloc[b as usize] = allocated;
            }
        }
        Ok(())
    }
}

impl Export for MemExport {
    fn size(&self) -> u64 {
        crate::util::read(&self.state).0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = crate::util::read(&self.state);
        check_range(offset, buf.len(), st.0.len() as u64)?;
        buf.copy_from_slice(&st.0[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        let st = crate::util::read(&self.state);
        let run = whole_run(offset, len, st.0.len() as u64, Alloc::Data)?;
        let state = |b: u64| st.1[(b / MEM_BLOCK) as usize];
        let first = state(offset);
        let mut end = (offset / MEM_BLOCK + 1) * MEM_BLOCK;
        while end < run.end() && state(end) == first {
            end += MEM_BLOCK;
        }
        let alloc = if first { Alloc::Data } else { Alloc::Unallocated };
        Ok(Run { offset, len: end.min(run.end()) - offset, alloc })
    }
    fn writer(&self) -> Option<&dyn Writable> {
        Some(self)
    }
}

impl Writable for MemExport {
    fn write_at(&self, offset: u64, data: &[u8], _fua: bool) -> io::Result<()> {
        self.set(offset, data.len() as u64, Some(data), true)
    }
    fn write_zeroes(&self, offset: u64, len: u64, punch: bool, _fua: bool) -> io::Result<()> {
        self.set(offset, len, None, !punch)
    }
    fn trim(&self, offset: u64, len: u64, _fua: bool) -> io::Result<()> {
        self.set(offset, len, None, false)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Exports by name, shared by the listener and whoever adds and removes
/// them (the CLI, the daemon's HTTP API). Names are secrets: never listed.
#[derive(Clone, Default)]
pub struct ExportTable {
    inner: Arc<RwLock<HashMap<String, Arc<dyn Export>>>>,
}

impl ExportTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, name: &str, export: Arc<dyn Export>) {
        crate::util::write(&self.inner).insert(name.to_string(), export);
    }

    /// Removes an export; connections to it get EIO from then on.
    pub fn remove(&self, name: &str) -> bool {
        crate::util::write(&self.inner).remove(name).is_some()
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Export>> {
        crate::util::read(&self.inner).get(name).cloned()
    }

    /// Whether `name` still names this very export.
    pub fn holds(&self, name: &str, export: &Arc<dyn Export>) -> bool {
        self.get(name).is_some_and(|e| Arc::ptr_eq(&e, export))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_export_tracks_holes_per_block() {
        let m = MemExport::new(5 * 4096);
        assert_eq!(m.status(0, 5 * 4096).unwrap().alloc, Alloc::Unallocated);
        m.write_at(4096 + 10, b"abc", false).unwrap();
        let r = m.status(0, 5 * 4096).unwrap();
        assert_eq!((r.len, r.alloc), (4096, Alloc::Unallocated));
        let r = m.status(4096, 4 * 4096).unwrap();
        assert_eq!((r.len, r.alloc), (4096, Alloc::Data));
        // Zeros with NO_HOLE stay allocated; trims of part of a block do not free it.
        m.write_zeroes(2 * 4096, 4096, false, false).unwrap();
        m.trim(4096, 100, false).unwrap();
        let r = m.status(4096, 4 * 4096).unwrap();
        assert_eq!((r.len, r.alloc), (2 * 4096, Alloc::Data));
        m.trim(0, 5 * 4096, false).unwrap();
        assert_eq!(m.status(0, 5 * 4096).unwrap().len, 5 * 4096);
        assert!(m.bytes().iter().all(|&b| b == 0));
    }
}
