//! Positional reads: the one trait every layer of the restore path speaks.
//!
//! Parsers never own files. They take an `Arc<dyn ReadAt>` (a raw file, a
//! QCOW2 chain, a partition window, an in-memory buffer) and read from it with
//! `read_exact_at`, which takes `&self` so that many threads can read at once.

mod cache;
pub mod chunks;
mod extent;
mod file;
mod mem;
mod shared;
mod slice;

pub use cache::Lru;
pub use extent::{Extent, LazyMap};
pub use file::RawFile;
pub use mem::MemImage;
pub use shared::open_shared;
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

    /// The allocation state of the bytes from `offset`: one run of 1 to
    /// `len` bytes (clipped to the size) that all share one [`Alloc`]; ask
    /// again from its end for the rest. The default says "data" for the
    /// whole range, which is always safe: callers may only skip reading
    /// what a source reports as `Zero` or `Unallocated`. `len == 0` or an
    /// offset at or past the end is an error.
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        whole_run(offset, len, self.size(), Alloc::Data)
    }
}

/// How a run of bytes is stored (see [`ReadAt::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alloc {
    /// Stored: must be read.
    Data,
    /// Known to read as zeros, and recorded as such (a QCOW2 zero cluster,
    /// an NBD extent flagged ZERO but not HOLE). Over a backing chain it
    /// hides what lies below.
    Zero,
    /// Stored nowhere: reads as zeros here, and in a layered image would
    /// show what lies below (a hole of a sparse file, a cluster no layer of
    /// a chain allocates, an NBD HOLE).
    Unallocated,
}

/// One run of [`ReadAt::status`]: `len` bytes from `offset`, all `alloc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub offset: u64,
    pub len: u64,
    pub alloc: Alloc,
}

impl Run {
    /// The first byte after the run.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// `[offset, offset + len)` clipped to `size` as one run of `alloc`; the
/// error for an empty or out-of-range request every `status` shares.
pub fn whole_run(offset: u64, len: u64, size: u64, alloc: Alloc) -> io::Result<Run> {
    if len == 0 || offset >= size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("status of {len} bytes at offset {offset} of a {size}-byte source"),
        ));
    }
    Ok(Run { offset, len: len.min(size - offset), alloc })
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
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        (**self).status(offset, len)
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
    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        (**self).status(offset, len)
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
