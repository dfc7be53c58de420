//! Flattening a disk (a chain, or any reader) into a raw or QCOW2 file.

use crate::block::chunks::{self, Piece};
use crate::block::{RawFile, ReadAt, Run};
use crate::qcow2::{self, Chain, Writer, WriterOptions, is_zero};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes read per step; large enough for sequential throughput, small
/// enough that the few buffers in flight stay cheap.
const CHUNK: u64 = 4 << 20;
/// Threads reading and writing chunks of a raw export: two keep both
/// directions busy; more only add contention on small machines.
const RAW_WORKERS: usize = 2;
/// Zero blocks in the data a source reports are left out of a raw export
/// at this granularity, and its holes are skipped only at this alignment.
const ZERO_BLOCK: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the source at offset {offset}: {source}")]
    Read { offset: u64, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error(transparent)]
    Qcow2(#[from] qcow2::Error),
}

/// A disk to flatten: any reader, whose zero and unallocated runs
/// ([`ReadAt::status`]) are skipped without reading them.
pub struct Disk<'a> {
    pub reader: &'a dyn ReadAt,
    /// Export only this many bytes: a backup's disk size, which its QCOW2
    /// image rounds up to whole sectors.
    pub limit: Option<u64>,
}

impl<'a> Disk<'a> {
    pub fn new(reader: &'a dyn ReadAt) -> Self {
        Disk { reader, limit: None }
    }

    pub fn chain(chain: &'a Chain) -> Self {
        Self::new(chain)
    }

    pub fn raw(file: &'a RawFile) -> Self {
        Self::new(file)
    }

    /// The disk's size: the reader's, or less when limited.
    pub fn size(&self) -> u64 {
        let s = self.reader.size();
        self.limit.map_or(s, |l| l.min(s))
    }

    /// Walks the disk with the shared reader pipeline (`block::chunks`).
    fn walk<T: Send>(
        &self,
        grain: u64,
        workers: usize,
        work: impl Fn(&Run, &[u8]) -> Result<T, Error> + Sync,
        consume: impl FnMut(&Piece<T>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let opts = chunks::Options { chunk: CHUNK, grain, workers, map: false, gap: chunks::GAP };
        chunks::walk(self.reader, chunks::whole(self.size()), opts, work, consume)
    }
}

impl From<chunks::ReadError> for Error {
    fn from(e: chunks::ReadError) -> Self {
        Error::Read { offset: e.offset, source: e.source }
    }
}

/// Writes the disk as a raw file: holes stay holes (a sparse file).
pub fn to_raw(disk: &Disk, out: &Path) -> Result<u64, Error> {
    let werr = |source| Error::Write { path: out.display().to_string(), source };
    let file = File::create(out).map_err(werr)?;
    let written = AtomicU64::new(0);
    // The workers write their chunks by position themselves: reads and
    // writes of different chunks overlap, as do their kernel copies.
    let work = |run: &Run, buf: &[u8]| {
        let off = run.offset;
        // One write per run of non-zero blocks: fewer, larger syscalls.
        let mut run: Option<usize> = None;
        let flush = |from: usize, to: usize| -> Result<(), Error> {
            file.write_all_at(&buf[from..to], off + from as u64).map_err(werr)?;
            written.fetch_add((to - from) as u64, Ordering::Relaxed);
            Ok(())
        };
        for (i, block) in buf.chunks(ZERO_BLOCK).enumerate() {
            let at = i * ZERO_BLOCK;
            match (is_zero(block), run) {
                (false, None) => run = Some(at),
                (true, Some(from)) => {
                    flush(from, at)?;
                    run = None;
                }
                _ => {}
            }
        }
        if let Some(from) = run {
            flush(from, buf.len())?;
        }
        Ok(())
    };
    disk.walk(ZERO_BLOCK as u64, RAW_WORKERS, work, |_| Ok(()))?;
    // A block device (restoring onto a disk) has its size already.
    if file.metadata().map_err(werr)?.is_file() {
        file.set_len(disk.size()).map_err(werr)?;
    }
    file.sync_all().map_err(werr)?;
    Ok(written.into_inner())
}

/// Writes the disk as a new, self-contained QCOW2 image.
pub fn to_qcow2(disk: &Disk, out: &Path, opts: WriterOptions) -> Result<qcow2::WriteStats, Error> {
    let cs = opts.cluster.bytes();
    let size = disk.size();
    if out.exists() {
        std::fs::remove_file(out).map_err(|source| Error::Write { path: out.display().to_string(), source })?;
    }
    let mut w = Writer::create(out, size, opts)?;
    let result = disk.walk(
        cs,
        1,
        |_, _| Ok(()),
        |piece| {
            let Piece::Data { run, bytes, .. } = piece else { return Ok(()) };
            let (off, buf) = (run.offset, bytes.as_slice());
            // Chunks start on cluster boundaries (CHUNK and the chain's runs are
            // cluster multiples) except for a source whose cluster size is
            // smaller than ours; write_at handles both.
            if off % cs == 0 {
                let whole = buf.len() - buf.len() % cs as usize;
                w.write_clusters(off / cs, &buf[..whole])?;
                let (at, tail) = (off + whole as u64, &buf[whole..]);
                if at + tail.len() as u64 == size && !tail.is_empty() {
                    w.write_cluster(at / cs, tail)?;
                } else if !tail.is_empty() {
                    w.write_at(at, tail)?;
                }
            } else {
                w.write_at(off, buf)?;
            }
            Ok(())
        },
    );
    match result {
        Ok(()) => Ok(w.finish()?),
        Err(e) => {
            drop(w);
            let _ = qcow2::discard(out);
            Err(e)
        }
    }
}
