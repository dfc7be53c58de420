//! Moving one image's clusters into its neighbour, the two ways a chain
//! shrinks:
//!
//! - **Fold** (the oldest point is dropped): every cluster the child holds is
//!   written over the parent, in place. Readers of the child and its
//!   descendants never look at the parent where the child holds a cluster,
//!   so they see the same bytes throughout; the parent itself is the
//!   dropped point, which no reader holds (its lock is taken).
//! - **Absorb** (a middle point is dropped): the dropped image's clusters are
//!   copied into its child wherever the child has none. The child is a kept
//!   point: each changed L2 table is written to a new cluster, after the
//!   data it points to is durable, and linked by one 8-byte L1 write, so a
//!   reader sees either the old table (reading through to the dropped image,
//!   which still exists) or the new one — the same bytes. Readers that opened
//!   the child earlier keep its old L1 in memory and the old tables, which
//!   are never freed or overwritten.
//!
//! Both are idempotent: a redo after a crash writes the same clusters again
//! (fold) or skips those already copied (absorb).

use super::MergeError;
use super::target::Target;
use crate::block::{RawFile, ReadAt, read_at_most};
use crate::qcow2::consts::*;
use crate::qcow2::header::Header;
use crate::qcow2::{Error, Image, Result, compress, l2};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Fold,
    Absorb,
}

/// What one step moved and gave back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Moved {
    pub data_clusters: u64,
    pub zero_clusters: u64,
    pub compressed_clusters: u64,
    /// Bytes of host clusters freed and deallocated in the target.
    pub bytes_punched: u64,
}

/// An L2 entry, decoded (standard, not extended, L2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Unallocated,
    Zero,
    Data(u64),
    Compressed { host: u64, len: u64 },
}

fn decode(e: u64, h: &Header) -> Result<Entry> {
    if e & OFLAG_COMPRESSED != 0 {
        let (host, len) = l2::compressed(e, h.cluster.bits());
        return Ok(Entry::Compressed { host, len });
    }
    if e & OFLAG_ZERO != 0 {
        if h.version < 3 {
            return Err(Error::corrupt(0, "zero flag in an L2 entry of a version 2 image"));
        }
        return Ok(Entry::Zero);
    }
    match e & L2E_OFFSET_MASK {
        0 => Ok(Entry::Unallocated),
        host if host & h.cluster.mask() != 0 => Err(Error::corrupt(host, "data cluster is not cluster aligned")),
        host => Ok(Entry::Data(host)),
    }
}

struct Source {
    image: Image,
    file: Arc<dyn ReadAt>,
}

pub(super) fn transfer(src_path: &Path, dst_path: &Path, mode: Mode) -> Result<Moved, MergeError> {
    let file: Arc<dyn ReadAt> = Arc::new(RawFile::open(src_path).map_err(|e| MergeError::io(src_path, e))?);
    let src = Source { image: Image::open(file.clone())?, file };
    super::target::check_supported(&src.image.header, src_path)?;
    let mut dst = Target::open(dst_path)?;
    check_pair(&src.image.header, &dst.header, src_path, dst_path)?;
    dst.reserve(upper_bound(&src.image)?)?;
    let mut moved = Moved::default();
    let mut buf = vec![0u8; dst.header.cluster.usize()];
    for i in 0..src.image.l1().len() {
        let Some(st) = src.image.l2_table(i as u64)? else { continue };
        let (old, mut dt) = dst.l2(i)?;
        let mut changed = false;
        for (j, &s) in st.iter().enumerate() {
            let s = decode(s, &src.image.header)?;
            let d = decode(dt[j], &dst.header)?;
            if s == Entry::Unallocated || (mode == Mode::Absorb && d != Entry::Unallocated) {
                continue;
            }
            dt[j] = place(&src, &mut dst, s, d, mode, &mut buf, &mut moved)?;
            changed = true;
        }
        if changed {
            dst.store_l2(i, old, &dt, mode == Mode::Fold)?;
        }
    }
    let counts = dst.rebuild_refcounts()?;
    moved.bytes_punched = dst.release(&counts)?;
    Ok(moved)
}

/// The target's new entry for source entry `s` (target entry `d`), its data
/// written first.
fn place(src: &Source, dst: &mut Target, s: Entry, d: Entry, mode: Mode, buf: &mut [u8], m: &mut Moved) -> Result<u64> {
    let cb = dst.header.cluster.bits();
    match s {
        Entry::Unallocated => Ok(0),
        Entry::Zero if dst.header.version >= 3 => {
            m.zero_clusters += 1;
            Ok(OFLAG_ZERO)
        }
        Entry::Zero if mode == Mode::Fold && dst.header.backing_file.is_none() => {
            // Version 2 has no zero flag; unallocated reads as zeros in an
            // image without a backing file.
            m.zero_clusters += 1;
            Ok(0)
        }
        Entry::Zero => {
            Err(Error::Unsupported("a zero cluster cannot be moved into a version 2 image with a backing file".into()))
        }
        Entry::Compressed { host, len } if src.image.header.compression == dst.header.compression => {
            let mut raw = vec![0u8; len as usize];
            let n = read_at_most(&*src.file, host, &mut raw).map_err(Error::io(host))?;
            if n == 0 {
                return Err(Error::corrupt(host, "compressed cluster lies past the end of the file"));
            }
            raw.truncate(n);
            let at = dst.place_compressed(raw.len() as u64)?;
            dst.write(at, &raw)?;
            m.compressed_clusters += 1;
            Ok(l2::compressed_entry(at, raw.len() as u64, cb))
        }
        Entry::Compressed { host, len } => {
            let mut raw = vec![0u8; len as usize];
            let n = read_at_most(&*src.file, host, &mut raw).map_err(Error::io(host))?;
            compress::decompress(src.image.header.compression, &raw[..n], buf).map_err(|e| Error::corrupt(host, e))?;
            m.data_clusters += 1;
            store_data(dst, d, mode, buf)
        }
        Entry::Data(host) => {
            let n = read_at_most(&*src.file, host, buf).map_err(Error::io(host))?;
            buf[n..].fill(0);
            m.data_clusters += 1;
            store_data(dst, d, mode, buf)
        }
    }
}

/// Writes one cluster of data: over the target's own cluster when folding
/// and it has one nobody else references, else into a new cluster.
fn store_data(dst: &mut Target, d: Entry, mode: Mode, buf: &[u8]) -> Result<u64> {
    let host = match d {
        Entry::Data(h) if mode == Mode::Fold && dst.is_exclusive(h) => h,
        _ => dst.alloc(1)?,
    };
    dst.write(host, buf)?;
    Ok(host | OFLAG_COPIED)
}

/// The two images must describe the same disk the same way.
fn check_pair(s: &Header, d: &Header, sp: &Path, dp: &Path) -> Result<(), MergeError> {
    if s.cluster != d.cluster {
        return Err(MergeError::Unsupported(format!(
            "{} and {} have different cluster sizes ({} and {})",
            sp.display(),
            dp.display(),
            s.cluster.bytes(),
            d.cluster.bytes()
        )));
    }
    if s.size != d.size || s.l1_size > d.l1_size {
        return Err(MergeError::Unsupported(format!(
            "{} ({} bytes) and {} ({} bytes) have different virtual sizes",
            sp.display(),
            s.size,
            dp.display(),
            d.size
        )));
    }
    Ok(())
}

/// Clusters the target may need at most: one per source cluster (two for a
/// compressed one that straddles), and a table per source L2 table.
fn upper_bound(src: &Image) -> Result<u64> {
    let mut n = 1u64;
    for i in 0..src.l1().len() {
        let Some(t) = src.l2_table(i as u64)? else { continue };
        n += 1 + t.iter().map(|&e| if e & OFLAG_COMPRESSED != 0 { 2 } else { u64::from(e != 0) }).sum::<u64>();
    }
    Ok(n)
}
