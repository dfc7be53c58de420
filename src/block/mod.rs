//! Positional reads: the one trait every layer of the restore path speaks.
//!
//! Parsers never own files. They take an `Arc<dyn ReadAt>` (a raw file, a
//! QCOW2 chain, a partition window, an in-memory buffer) and read from it with
//! `read_exact_at`, which takes `&self` so that many threads can read at once.

mod cache;
mod extent;
mod file;
mod mem;
mod slice;

pub use cache::Lru;
pub use extent::{Extent, LazyMap};
pub use file::RawFile;
pub use mem::MemImage;
pub use slice::Slice;

use std::io;

/// A read-only, fixed-size byte source with positional reads.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`. Reading past [`ReadAt::size`] is an error
    /// (`UnexpectedEof`), never a short read.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// The size in bytes.
    fn size(&self) -> u64;

    /// Where the bytes from `offset` are stored verbatim in one host file:
    /// an extent of 1 to `len` bytes that starts at `offset` (it may cover
    /// less than `len`; ask again for the rest). `None`: read them instead.
    /// Only for zero-copy serving; see `extent.rs`.
    fn locate(&self, _offset: u64, _len: u64) -> Option<Extent> {
        None
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        (**self).locate(offset, len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn locate(&self, offset: u64, len: u64) -> Option<Extent> {
        (**self).locate(offset, len)
    }
}

/// Checks that `[offset, offset + len)` lies inside `size`; the error names
/// the range so that a corrupt image is easy to diagnose.
pub fn check_range(offset: u64, len: usize, size: u64) -> io::Result<()> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read of {len} bytes at offset {offset} is past the end ({size} bytes)"),
        )),
    }
}

/// Reads up to `buf.len()` bytes at `offset`, stopping at the end of the
/// source; returns how many bytes were read.
pub fn read_at_most(src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let size = src.size();
    if offset >= size {
        return Ok(0);
    }
    let n = usize::try_from(size - offset).map_or(buf.len(), |left| left.min(buf.len()));
    src.read_exact_at(offset, &mut buf[..n])?;
    Ok(n)
}
