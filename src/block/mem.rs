use super::{ReadAt, check_range};
use std::io;

/// Bytes in memory: fuzz targets and unit tests read images from here.
#[derive(Debug, Clone, Default)]
pub struct MemImage(pub Vec<u8>);

impl ReadAt for MemImage {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.0.len() as u64)?;
        // OK to cast: check_range proved offset + len <= self.0.len().
        let start = offset as usize;
        buf.copy_from_slice(&self.0[start..start + buf.len()]);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
}
