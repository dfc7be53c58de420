use super::{Alloc, Extent, ReadAt, Run, check_range, whole_run};
use std::io;
use std::sync::Arc;

/// A window `[start, start + len)` of another source: a partition of a disk.
#[derive(Clone)]
pub struct Slice {
    inner: Arc<dyn ReadAt>,
    start: u64,
    len: u64,
}

impl Slice {
    /// Fails when the window does not lie inside `inner`.
    pub fn new(inner: Arc<dyn ReadAt>, start: u64, len: u64) -> io::Result<Self> {
        match start.checked_add(len) {
            Some(end) if end <= inner.size() => Ok(Self { inner, start, len }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("window of {len} bytes at {start} exceeds the {}-byte source", inner.size()),
            )),
        }
    }
}

impl ReadAt for Slice {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.len)?;
        // OK: offset + len <= self.len and start + self.len <= inner size.
        self.inner.read_exact_at(self.start + offset, buf)
    }
    fn size(&self) -> u64 {
        self.len
    }
    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        let len = len.min(self.len.checked_sub(offset)?);
        self.inner.locate(self.start.checked_add(offset)?, len)
    }
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        let run = whole_run(offset, len, self.len, Alloc::Data)?;
        // OK: offset < self.len and start + self.len <= inner size.
        let inner = self.inner.status(self.start + offset, run.len)?;
        Ok(Run { offset, len: inner.len.min(run.len), alloc: inner.alloc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemImage;

    #[test]
    fn window_reads_and_bounds() {
        let mem: Arc<dyn ReadAt> = Arc::new(MemImage((0u8..100).collect()));
        let s = Slice::new(mem.clone(), 10, 20).unwrap();
        let mut b = [0u8; 5];
        s.read_exact_at(15, &mut b).unwrap();
        assert_eq!(b, [25, 26, 27, 28, 29]);
        assert!(s.read_exact_at(16, &mut b).is_err());
        assert!(Slice::new(mem.clone(), 90, 20).is_err());
        assert!(Slice::new(mem, u64::MAX, 2).is_err());
    }
}
