//! Writes QCOW2 version 3 images: a full image, or an incremental image over a
//! backing file. Guest clusters may be written in any order; data clusters are
//! appended to the file as they come, and all metadata (L2 tables, L1 table,
//! refcount table and blocks, header) is laid out after them by `finish`.
//!
//! Memory: one L2 table (a cluster) per written 512 MiB of guest space at
//! 64 KiB clusters, plus 2 bytes of refcount per host cluster.

mod batch;
mod header;

use self::batch::{Batch, Flusher};
use super::consts::*;
use super::error::{Error, Result};
use super::header::{ClusterSize, Compression};
use super::l2;
use crate::block::ReadAt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Sequential data clusters are gathered into writes of up to this size.
const WRITE_BUFFER: usize = 4 << 20;
/// Slices in one vectored write (Linux's IOV_MAX).
const MAX_IOVECS: usize = 1024;
/// Gathered writes queued for the background writer beyond the one it is
/// doing: bounds the memory in flight to a few WRITE_BUFFERs.
const WRITES_QUEUED: usize = 2;
/// Refcount width written: 16 bits (refcount_order 4), QEMU's default.
const REFCOUNT_ORDER: u32 = 4;
/// QEMU sees a QCOW2 virtual size in whole 512-byte sectors, rounded down,
/// so the writer rounds it up (as `qemu-img create` does): the padding
/// reads as zeros instead of the last bytes vanishing.
const SECTOR: u64 = 512;

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub cluster: ClusterSize,
    pub compression: Option<Compression>,
    /// The backing file name, written as given: relative to the new image's
    /// folder. Its format is always recorded as `qcow2`.
    pub backing: Option<String>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        // OK to unwrap: 16 is a valid cluster_bits.
        Self { cluster: ClusterSize::from_bits(DEFAULT_CLUSTER_BITS).unwrap(), compression: None, backing: None }
    }
}

/// Counts of what a writer stored.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct WriteStats {
    pub data_clusters: u64,
    pub compressed_clusters: u64,
    pub zero_clusters: u64,
    pub file_size: u64,
}

pub struct Writer {
    file: File,
    path: PathBuf,
    opts: WriterOptions,
    /// The virtual size, a whole number of sectors.
    size: u64,
    /// The size asked for; the last cluster may be given up to here only.
    requested: u64,
    /// L2 tables by L1 index, as entries ready to store (host | flags).
    l2: Vec<Option<Box<[u64]>>>,
    /// 16-bit refcounts by host cluster.
    refcounts: Vec<u16>,
    /// Where the next host cluster is allocated.
    next_host: u64,
    /// Free bytes for compressed data: [ctail, ctail_end).
    ctail: u64,
    ctail_end: u64,
    pending: Vec<u8>,
    pending_at: u64,
    flusher: Option<Flusher>,
    backing_reader: Option<Arc<dyn ReadAt>>,
    stats: WriteStats,
}

impl Writer {
    /// Creates a new image file (it must not exist yet).
    pub fn create(path: &Path, requested: u64, opts: WriterOptions) -> Result<Self> {
        if requested > MAX_VIRTUAL_SIZE {
            return Err(Error::Unsupported(format!(
                "virtual size {requested} is above the limit of {MAX_VIRTUAL_SIZE}"
            )));
        }
        // OK: below MAX_VIRTUAL_SIZE, rounding cannot overflow.
        let size = requested.next_multiple_of(SECTOR);
        if let Some(b) = &opts.backing
            && (b.is_empty() || b.len() > MAX_BACKING_NAME as usize)
        {
            return Err(Error::Unsupported(format!("backing file name of {} bytes", b.len())));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        let cs = opts.cluster.bytes();
        let entries = cs / 8;
        let l1_size = size.div_ceil(cs).div_ceil(entries);
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(Error::Unsupported(format!(
                "virtual size {size} needs an L1 table above {MAX_L1_BYTES} bytes"
            )));
        }
        let w = Self {
            file,
            path: path.to_path_buf(),
            opts,
            size,
            requested,
            l2: (0..l1_size).map(|_| None).collect(),
            refcounts: vec![1], // cluster 0: the header
            next_host: cs,
            ctail: 0,
            ctail_end: 0,
            pending: Vec::new(),
            pending_at: 0,
            flusher: None,
            backing_reader: None,
            stats: WriteStats::default(),
        };
        // Reserve the header cluster now so the file never starts with data.
        w.file.set_len(cs).map_err(Error::io(0))?;
        Ok(w)
    }

    /// Gives the writer the parent's bytes, for writes that cover only part of
    /// a cluster the new image does not hold yet.
    pub fn set_backing_reader(&mut self, r: Arc<dyn ReadAt>) {
        self.backing_reader = Some(r);
    }

    pub fn cluster_size(&self) -> ClusterSize {
        self.opts.cluster
    }

    pub fn virtual_size(&self) -> u64 {
        self.size
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, cluster: u64) -> u64 {
        let entries = self.opts.cluster.bytes() / 8;
        match &self.l2[(cluster / entries) as usize] {
            Some(t) => t[(cluster % entries) as usize],
            None => 0,
        }
    }

    fn set_entry(&mut self, cluster: u64, e: u64) {
        let cs = self.opts.cluster.bytes();
        let entries = cs / 8;
        let t = self.l2[(cluster / entries) as usize].get_or_insert_with(|| vec![0u64; entries as usize].into());
        t[(cluster % entries) as usize] = e;
    }

    fn alloc_clusters(&mut self, n: u64) -> u64 {
        let at = self.next_host;
        self.next_host += n * self.opts.cluster.bytes();
        self.refcounts.resize((self.next_host / self.opts.cluster.bytes()) as usize, 0);
        at
    }

    fn host_write(&mut self, at: u64, data: &[u8]) -> Result<()> {
        if !self.pending.is_empty()
            && self.pending_at + self.pending.len() as u64 == at
            && self.pending.len() < WRITE_BUFFER
        {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        self.flush_pending()?;
        if data.len() >= WRITE_BUFFER {
            return self.file.write_all_at(data, at).map_err(Error::io(at));
        }
        self.pending_at = at;
        self.pending.extend_from_slice(data);
        Ok(())
    }

    /// Hands the gathered data to the background writer, so the caller
    /// goes on preparing the next clusters while the kernel copies these.
    fn flush_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.flusher.is_none() {
            let file = self.file.try_clone().map_err(Error::io(self.pending_at))?;
            self.flusher = Some(Flusher::start(file));
        }
        // OK to unwrap: set just above.
        let fl = self.flusher.as_mut().unwrap();
        let spare = fl.spare()?;
        let buf = std::mem::replace(&mut self.pending, spare);
        fl.send(self.pending_at, buf)
    }

    /// Flushes and waits until every write handed off is in the file: before
    /// the file is read, rewritten in place, or finished.
    fn settle(&mut self) -> Result<()> {
        self.flush_pending()?;
        match &mut self.flusher {
            Some(fl) => fl.wait_all(),
            None => Ok(()),
        }
    }

    fn check_cluster(&self, cluster: u64) -> Result<u64> {
        let cs = self.opts.cluster.bytes();
        let off = cluster
            .checked_mul(cs)
            .filter(|&o| o < self.size)
            .ok_or_else(|| Error::Unsupported(format!("cluster {cluster} is beyond the virtual size {}", self.size)))?;
        Ok((self.size - off).min(cs))
    }

    /// Stores the whole guest clusters `first..` from `data` (a multiple of
    /// the cluster size); see [`Writer::write_runs`].
    pub fn write_clusters(&mut self, first: u64, data: &[u8]) -> Result<()> {
        self.write_runs(&[(first, data)])
    }

    /// Stores runs of whole guest clusters: `(first, data)`, `data` a
    /// multiple of the cluster size. New, non-zero clusters of an
    /// uncompressed image are allocated one after another and written
    /// straight from `data` with one vectored write per contiguous host
    /// range: no copy into a buffer (that copy cost as much as hashing in a
    /// full backup), and one syscall for a chunk's scattered runs.
    /// Everything else goes through `write_cluster`.
    pub fn write_runs(&mut self, runs: &[(u64, &[u8])]) -> Result<()> {
        let cs = self.opts.cluster.usize();
        let mut batch = Batch::default();
        for &(first, data) in runs {
            if !data.len().is_multiple_of(cs) {
                return Err(Error::Unsupported(format!("write of {} bytes is not whole clusters", data.len())));
            }
            let n = (data.len() / cs) as u64;
            if n == 0 {
                continue;
            }
            // The last cluster must be a whole one inside the virtual size.
            let full = first.checked_add(n - 1).map(|l| self.check_cluster(l));
            if !matches!(full, Some(Ok(w)) if w == cs as u64) {
                return Err(Error::Unsupported(format!("{n} clusters from {first} pass the virtual size")));
            }
            let chunk = |k: u64| &data[(k as usize) * cs..(k as usize + 1) * cs];
            let fresh =
                |w: &Self, i: u64| w.opts.compression.is_none() && w.entry(first + i) == 0 && !is_zero(chunk(i));
            let mut i = 0u64;
            while i < n {
                if !fresh(self, i) {
                    self.write_cluster(first + i, chunk(i))?;
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < n && fresh(self, j) {
                    j += 1;
                }
                let host = self.alloc_clusters(j - i);
                let cb = self.opts.cluster.bits();
                for k in i..j {
                    let h = host + (k - i) * cs as u64;
                    self.refcounts[(h >> cb) as usize] = 1;
                    self.set_entry(first + k, h | OFLAG_COPIED);
                }
                self.stats.data_clusters += j - i;
                // Host ranges never overlap, so this may pass queued writes.
                if batch.end() != Some(host) || batch.bufs.len() == MAX_IOVECS {
                    batch.write(&self.file)?;
                    batch.at = host;
                }
                batch.push(&data[(i as usize) * cs..(j as usize) * cs]);
                i = j;
            }
        }
        batch.write(&self.file)
    }

    /// Stores guest cluster `cluster`. `data` is the whole cluster, or up to
    /// the virtual size for the last one. All-zero data stays unallocated in
    /// a full image and becomes a zero cluster in an incremental one.
    pub fn write_cluster(&mut self, cluster: u64, data: &[u8]) -> Result<()> {
        let want = self.check_cluster(cluster)?;
        // The last cluster may also end at the requested size, short of the
        // sector padding.
        let to_requested = (cluster << self.opts.cluster.bits()) + data.len() as u64 == self.requested;
        if data.len() as u64 != want && !(to_requested && (data.len() as u64) < want) {
            return Err(Error::Unsupported(format!("cluster write of {} bytes, expected {want}", data.len())));
        }
        if is_zero(data) {
            return self.write_zero_cluster(cluster);
        }
        let cs = self.opts.cluster.usize();
        let old = self.entry(cluster);
        if old & OFLAG_COMPRESSED == 0 && old & L2E_OFFSET_MASK != 0 {
            // Rewrite in place.
            let host = old & L2E_OFFSET_MASK;
            self.settle()?;
            let mut full = data.to_vec();
            full.resize(cs, 0);
            return self.file.write_all_at(&full, host).map_err(Error::io(host));
        }
        self.release(old);
        if let Some(kind) = self.opts.compression {
            let mut full = std::borrow::Cow::Borrowed(data);
            if data.len() < cs {
                let mut v = data.to_vec();
                v.resize(cs, 0);
                full = v.into();
            }
            if let Some(c) = super::compress::compress(kind, &full) {
                return self.store_compressed(cluster, &c);
            }
        }
        let host = self.alloc_clusters(1);
        self.refcounts[(host >> self.opts.cluster.bits()) as usize] = 1;
        self.host_write(host, data)?;
        if data.len() < cs {
            // Pad the last cluster so the file holds whole clusters.
            let pad = vec![0u8; cs - data.len()];
            self.host_write(host + data.len() as u64, &pad)?;
        }
        self.set_entry(cluster, host | OFLAG_COPIED);
        self.stats.data_clusters += 1;
        Ok(())
    }

    fn store_compressed(&mut self, cluster: u64, c: &[u8]) -> Result<()> {
        let cs = self.opts.cluster.bytes();
        let len = c.len() as u64;
        if self.ctail + len > self.ctail_end {
            if self.ctail_end != self.next_host || self.ctail == self.ctail_end {
                // Start on a fresh cluster.
                self.ctail = self.next_host;
                self.ctail_end = self.next_host;
            }
            let more = (self.ctail + len - self.ctail_end).div_ceil(cs);
            self.alloc_clusters(more);
            self.ctail_end = self.next_host;
        }
        let at = self.ctail;
        let cb = self.opts.cluster.bits();
        for hc in (at >> cb)..=((at + len - 1) >> cb) {
            self.refcounts[hc as usize] += 1;
        }
        self.host_write(at, c)?;
        self.ctail += len;
        self.set_entry(cluster, l2::compressed_entry(at, len, cb));
        self.stats.compressed_clusters += 1;
        Ok(())
    }

    /// Drops this image's own data for a cluster about to be replaced.
    fn release(&mut self, old: u64) {
        if old & OFLAG_COMPRESSED != 0 {
            let cb = self.opts.cluster.bits();
            // The sector-rounded length touches the same host clusters as
            // the exact one, so this undoes store_compressed's increments.
            let (host, len) = l2::compressed(old, cb);
            for hc in (host >> cb)..=((host + len - 1) >> cb) {
                if let Some(r) = self.refcounts.get_mut(hc as usize) {
                    *r = r.saturating_sub(1);
                }
            }
            self.stats.compressed_clusters -= 1;
        }
    }

    /// Marks guest cluster `cluster` as reading zeros.
    pub fn write_zero_cluster(&mut self, cluster: u64) -> Result<()> {
        let want = self.check_cluster(cluster)?;
        let old = self.entry(cluster);
        if old & OFLAG_COMPRESSED == 0 && old & L2E_OFFSET_MASK != 0 {
            let host = old & L2E_OFFSET_MASK;
            self.settle()?;
            let z = vec![0u8; want as usize];
            return self.file.write_all_at(&z, host).map_err(Error::io(host));
        }
        self.release(old);
        if self.opts.backing.is_some() {
            if old != OFLAG_ZERO {
                self.stats.zero_clusters += 1;
            }
            self.set_entry(cluster, OFLAG_ZERO);
        } else if old != 0 {
            self.set_entry(cluster, 0);
        }
        Ok(())
    }

    /// Writes `data` at guest offset `offset`, in any order. Parts of a
    /// cluster the image does not hold yet are filled from the backing reader
    /// (or zeros without one).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.checked_add(data.len() as u64).filter(|&e| e <= self.size).ok_or_else(|| {
            Error::Unsupported(format!("write of {} bytes at {offset} is past the virtual size", data.len()))
        })?;
        let cs = self.opts.cluster.bytes();
        let mut pos = offset;
        while pos < end {
            let cluster = pos / cs;
            let cstart = cluster * cs;
            let want = self.check_cluster(cluster)?;
            let n = (cstart + want).min(end) - pos;
            let src = &data[(pos - offset) as usize..(pos - offset + n) as usize];
            if pos == cstart && n == want {
                self.write_cluster(cluster, src)?;
            } else {
                let mut buf = vec![0u8; want as usize];
                self.read_own(cluster, &mut buf)?;
                let s = (pos - cstart) as usize;
                buf[s..s + n as usize].copy_from_slice(src);
                self.write_cluster(cluster, &buf)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Everything written so far is in the file and on disk (a push
    /// target's FLUSH).
    pub fn flush(&mut self) -> Result<()> {
        self.settle()?;
        self.file.sync_data().map_err(Error::io(0))
    }

    /// The content of guest cluster `cluster` as the image reads it (over
    /// its backing reader); `buf` is the cluster, or less for the last one.
    pub fn read_cluster(&mut self, cluster: u64, buf: &mut [u8]) -> Result<()> {
        let want = self.check_cluster(cluster)?;
        if buf.len() as u64 > want {
            return Err(Error::Unsupported(format!("read of {} bytes from cluster {cluster}", buf.len())));
        }
        self.read_own(cluster, buf)
    }

    /// The current content of a guest cluster as this image would read it.
    fn read_own(&mut self, cluster: u64, buf: &mut [u8]) -> Result<()> {
        let e = self.entry(cluster);
        let cb = self.opts.cluster.bits();
        self.settle()?;
        if e & OFLAG_COMPRESSED != 0 {
            let (host, len) = l2::compressed(e, cb);
            // The sector-rounded length may reach past what has been
            // written so far: the file ends where the last compressed
            // cluster does.
            let written = self.file.metadata().map_err(Error::io(host))?.len();
            let len = len.min(written.saturating_sub(host));
            let mut src = vec![0u8; len as usize];
            self.file.read_exact_at(&mut src, host).map_err(Error::io(host))?;
            let mut out = vec![0u8; self.opts.cluster.usize()];
            // OK to unwrap: compressed entries exist only with a compression.
            super::compress::decompress(self.opts.compression.unwrap(), &src, &mut out)
                .map_err(|e| Error::corrupt(host, e))?;
            buf.copy_from_slice(&out[..buf.len()]);
        } else if e & L2E_OFFSET_MASK != 0 {
            let host = e & L2E_OFFSET_MASK;
            self.file.read_exact_at(buf, host).map_err(Error::io(host))?;
        } else if e == OFLAG_ZERO {
            buf.fill(0);
        } else if let Some(r) = &self.backing_reader {
            let off = cluster << cb;
            let n = crate::block::read_at_most(&**r, off, buf).map_err(Error::io(off))?;
            buf[n..].fill(0);
        } else {
            buf.fill(0);
        }
        Ok(())
    }

    /// Lays out the metadata after the data, writes it and the header, and
    /// makes the file durable (fsync).
    pub fn finish(mut self) -> Result<WriteStats> {
        self.flush_pending()?;
        let cs = self.opts.cluster.bytes();
        let cb = self.opts.cluster.bits();
        // L2 tables.
        let mut l1 = vec![0u64; self.l2.len()];
        let tables: Vec<(usize, Box<[u64]>)> =
            self.l2.iter_mut().enumerate().filter_map(|(i, t)| t.take().map(|t| (i, t))).collect();
        for (i, t) in &tables {
            let host = self.alloc_clusters(1);
            self.refcounts[(host >> cb) as usize] = 1;
            let mut raw = Vec::with_capacity(cs as usize);
            for &e in t.iter() {
                raw.extend_from_slice(&e.to_be_bytes());
            }
            self.host_write(host, &raw)?;
            l1[*i] = host | OFLAG_COPIED;
        }
        // L1 table.
        let l1_bytes = l1.len() as u64 * 8;
        // No cluster at all for an empty L1 (a zero-length disk): QEMU would
        // count a cluster it never reads as a leak.
        let l1_clusters = l1_bytes.div_ceil(cs);
        let l1_off = self.alloc_clusters(l1_clusters);
        for c in 0..l1_clusters {
            self.refcounts[((l1_off >> cb) + c) as usize] = 1;
        }
        let mut raw = Vec::with_capacity((l1_clusters * cs) as usize);
        for e in &l1 {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw.resize((l1_clusters * cs) as usize, 0);
        self.host_write(l1_off, &raw)?;
        // Refcount table and blocks, sized to cover themselves.
        let per_block = cs * 8 / (1 << REFCOUNT_ORDER);
        let used = self.next_host / cs;
        let (mut blocks, mut table) = (0u64, 0u64);
        loop {
            let total = used + blocks + table;
            let nb = total.div_ceil(per_block);
            let nt = (nb * 8).div_ceil(cs).max(1);
            if nb == blocks && nt == table {
                break;
            }
            (blocks, table) = (nb, nt);
        }
        let rt_off = self.alloc_clusters(table);
        let rb_off = self.alloc_clusters(blocks);
        for c in (rt_off >> cb)..(self.next_host >> cb) {
            self.refcounts[c as usize] = 1;
        }
        let mut rt = vec![0u8; (table * cs) as usize];
        for b in 0..blocks {
            let off = rb_off + b * cs;
            rt[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
        }
        self.host_write(rt_off, &rt)?;
        let mut rb = vec![0u8; (blocks * cs) as usize];
        for (i, r) in self.refcounts.iter().enumerate() {
            rb[i * 2..i * 2 + 2].copy_from_slice(&r.to_be_bytes());
        }
        self.host_write(rb_off, &rb)?;
        self.settle()?;
        // Header last: until it is written the file is not a valid image.
        let header = self.header(l1.len() as u32, l1_off, rt_off, table as u32)?;
        self.file.write_all_at(&header, 0).map_err(Error::io(0))?;
        self.file.set_len(self.next_host).map_err(Error::io(self.next_host))?;
        self.file.sync_all().map_err(Error::io(0))?;
        self.stats.file_size = self.next_host;
        Ok(self.stats)
    }
}

/// Whether every byte is zero; ORs 64-byte blocks so the loop vectorizes.
pub fn is_zero(data: &[u8]) -> bool {
    let blocks = data.chunks_exact(64);
    let rest = blocks.remainder();
    for b in blocks {
        if b.iter().fold(0u8, |a, &x| a | x) != 0 {
            return false;
        }
    }
    rest.iter().all(|&x| x == 0)
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).field("size", &self.size).finish()
    }
}

/// Removes a half-written image after a failure.
pub fn discard(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
