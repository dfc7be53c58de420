//! Flattening a disk (a chain, or any reader) into a raw or QCOW2 file.

use crate::block::{RawFile, ReadAt};
use crate::qcow2::{self, Chain, Writer, WriterOptions, is_zero};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

/// Bytes read per step; large enough for sequential throughput, small
/// enough that the few buffers in flight stay cheap.
const CHUNK: u64 = 4 << 20;
/// Threads reading and writing chunks of a raw export: two keep both
/// directions busy; more only add contention on small machines.
const RAW_WORKERS: usize = 2;
/// Holes are detected at this granularity in data the source reports, and
/// raw file holes are used only at this alignment (so runs stay aligned to
/// the clusters of the image written).
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

/// A source and what it knows about its holes: a chain's map of known-zero
/// runs, or a raw file's holes (SEEK_DATA / SEEK_HOLE).
pub struct Disk<'a> {
    pub reader: &'a dyn ReadAt,
    pub chain: Option<&'a Chain>,
    /// A raw source file whose holes are skipped without reading them.
    pub holes: Option<&'a File>,
    /// Export only this many bytes: a backup's disk size, which its QCOW2
    /// image rounds up to whole sectors.
    pub limit: Option<u64>,
}

impl<'a> Disk<'a> {
    pub fn chain(chain: &'a Chain) -> Self {
        Disk { reader: chain, chain: Some(chain), holes: None, limit: None }
    }

    /// The disk's size: the reader's, or less when limited.
    pub fn size(&self) -> u64 {
        let s = self.reader.size();
        self.limit.map_or(s, |l| l.min(s))
    }

    pub fn raw(file: &'a RawFile) -> Self {
        Disk { reader: file, chain: None, holes: Some(file.file()), limit: None }
    }

    /// Known zero (true) or maybe data (false) from `off`, and for how long.
    fn run(&self, off: u64, max: u64) -> io::Result<(bool, u64)> {
        let end = off.saturating_add(max).min(self.size());
        match (self.chain, self.holes) {
            (Some(c), _) => {
                let (zero, n) = c.zero_run(off, max)?;
                // A hole is skipped whole, however long: only data is read
                // in bounded steps.
                if zero && off + n < self.size() {
                    let (more_zero, more) = c.zero_run(off + n, u64::MAX)?;
                    if more_zero {
                        return Ok((true, n + more));
                    }
                }
                Ok((zero, n))
            }
            (None, Some(f)) => Ok(file_run(f, off, end)),
            (None, None) => Ok((false, end - off)),
        }
    }
    /// Calls `f(offset, bytes)` for every chunk that may hold data, in order,
    /// reading on a second thread so reading and writing overlap.
    fn for_each_data(&self, mut f: impl FnMut(u64, &[u8]) -> Result<(), Error>) -> Result<(), Error> {
        let size = self.size();
        let (tx, rx) = mpsc::sync_channel::<Result<(u64, Vec<u8>), Error>>(3);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut off = 0u64;
                while off < size {
                    let step = match self.run(off, CHUNK) {
                        Ok((true, n)) => {
                            off += n;
                            continue;
                        }
                        Ok((false, n)) => n,
                        Err(source) => {
                            let _ = tx.send(Err(Error::Read { offset: off, source }));
                            return;
                        }
                    };
                    let mut buf = back_rx.try_recv().unwrap_or_default();
                    buf.resize(step as usize, 0);
                    if let Err(source) = self.reader.read_exact_at(off, &mut buf) {
                        let _ = tx.send(Err(Error::Read { offset: off, source }));
                        return;
                    }
                    if tx.send(Ok((off, buf))).is_err() {
                        return;
                    }
                    off += step;
                }
            });
            for item in rx {
                let (off, buf) = item?;
                f(off, &buf)?;
                let _ = back_tx.send(buf);
            }
            Ok(())
        })
    }

    /// Calls `f(offset, bytes)` for every chunk that may hold data, from
    /// `workers` threads that each read and handle whole chunks, in no
    /// particular order: for sinks that write by position. Reads and writes
    /// of different chunks then overlap, as do their kernel copies.
    fn par_for_each_data(
        &self,
        workers: usize,
        f: impl Fn(u64, &[u8]) -> Result<(), Error> + Sync,
    ) -> Result<(), Error> {
        let size = self.size();
        // The next offset to plan from; holes are skipped under the lock.
        let cursor = Mutex::new(0u64);
        let stop = AtomicBool::new(false);
        let claim = || -> Result<Option<(u64, u64)>, Error> {
            let mut cur = cursor.lock().unwrap_or_else(|p| p.into_inner());
            while *cur < size && !stop.load(Ordering::Relaxed) {
                let at = *cur;
                let (zero, n) = self.run(at, CHUNK).map_err(|source| Error::Read { offset: at, source })?;
                *cur += n;
                if !zero {
                    return Ok(Some((at, n)));
                }
            }
            Ok(None)
        };
        let work = || -> Result<(), Error> {
            let mut buf = Vec::new();
            while let Some((off, n)) = claim()? {
                buf.resize(n as usize, 0);
                self.reader.read_exact_at(off, &mut buf).map_err(|source| Error::Read { offset: off, source })?;
                f(off, &buf)?;
            }
            Ok(())
        };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers.max(1))
                .map(|_| {
                    s.spawn(|| {
                        let r = work();
                        if r.is_err() {
                            stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            let mut result = Ok(());
            for h in handles {
                // A worker that panicked re-raises its panic here.
                let r = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }
}

/// Writes the disk as a raw file: holes stay holes (a sparse file).
pub fn to_raw(disk: &Disk, out: &Path) -> Result<u64, Error> {
    let werr = |source| Error::Write { path: out.display().to_string(), source };
    let file = File::create(out).map_err(werr)?;
    let written = AtomicU64::new(0);
    disk.par_for_each_data(RAW_WORKERS, |off, buf| {
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
    })?;
    file.set_len(disk.size()).map_err(werr)?;
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
    let result = disk.for_each_data(|off, buf| {
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
    });
    match result {
        Ok(()) => Ok(w.finish()?),
        Err(e) => {
            drop(w);
            let _ = qcow2::discard(out);
            Err(e)
        }
    }
}

/// A raw file's hole map: known zero (true) or data (false) from `off` (a
/// multiple of ZERO_BLOCK), and for how long, up to `end`. Hole edges are
/// rounded inwards to ZERO_BLOCK. Where the filesystem cannot tell, all is
/// data.
pub(crate) fn file_run(file: &File, off: u64, end: u64) -> (bool, u64) {
    use rustix::fs::{SeekFrom, seek};
    let align = ZERO_BLOCK as u64;
    if off >= end {
        return (true, 0);
    }
    match seek(file, SeekFrom::Data(off)) {
        // Data at `off`: it lasts until the next hole (the end of the file
        // counts as one).
        Ok(d) if d <= off => {
            let hole = seek(file, SeekFrom::Hole(off)).unwrap_or(end);
            let stop = hole.max(off + 1).next_multiple_of(align).min(end);
            (false, stop - off)
        }
        Ok(d) => {
            let stop = (d - d % align).min(end);
            if stop > off { (true, stop - off) } else { (false, align.min(end - off)) }
        }
        // No data at or after `off`.
        Err(e) if e == rustix::io::Errno::NXIO => (true, end - off),
        Err(_) => (false, end - off),
    }
}
