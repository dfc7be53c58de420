//! The image sink: where one disk of a backup goes. It holds the QCOW2
//! writer, the new digest map and the commit protocol (`.partial` files,
//! fsync, rename, folder fsync), and needs no reader: the backup pipeline
//! feeds it clusters in order, and a push target (an NBD client writing
//! into a waiting backup) can write into it at any offset instead.
//!
//! The new map is the parent's map (the "base") with the clusters this
//! image stores replaced, so an incremental's map describes the whole disk
//! as its chain reads.

use super::EngineError;
use super::digests::{self, Digest, MapReader, MapWriter, ZERO};
use super::repo::{PARTIAL, sync_dir};
use crate::block::{Alloc, ReadAt, Run};
use crate::qcow2::{Writer, WriterOptions};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a finished sink wrote.
#[derive(Debug)]
pub struct SinkOut {
    /// Bytes of the image file.
    pub stored_bytes: u64,
    /// Guest bytes this image stores (data or zero clusters).
    pub changed_bytes: u64,
    /// The new map's content digest.
    pub content_digest: String,
    /// The durable `.partial` files and where they go on commit.
    pub staged: Staged,
}

/// Files written and fsynced under temporary names; [`Staged::commit`]
/// moves them into place.
#[derive(Debug, Clone)]
pub struct Staged {
    pub moves: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Renames every file into place and makes each rename durable (the
    /// folder's fsync). Only then may the catalog say the backup exists.
    pub fn commit(&self, mut done: impl FnMut(&Path)) -> Result<(), EngineError> {
        for (from, to) in &self.moves {
            std::fs::rename(from, to).map_err(|e| EngineError::io(from, e))?;
            done(to);
            if let Some(d) = to.parent() {
                sync_dir(d)?;
            }
        }
        Ok(())
    }
}

/// `p` with the partial suffix: where a file is written before its commit.
pub fn partial(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(PARTIAL);
    PathBuf::from(s)
}

pub struct ImageSink {
    writer: Writer,
    map: MapWriter,
    base: Option<MapReader>,
    /// Base entries read ahead by [`ImageSink::base`], ascending.
    ahead: VecDeque<(u64, Digest)>,
    cluster: u64,
    size: u64,
    clusters: u64,
    /// In order: the first cluster not yet kept, stored or zeroed.
    next: u64,
    /// At any offset: the clusters written (push targets).
    dirty: Dirty,
    changed: u64,
    scratch: Vec<u8>,
    staged: Staged,
    /// The parent chain's bytes (push targets): what unwritten clusters read.
    backing: Option<Arc<dyn ReadAt>>,
}

impl ImageSink {
    /// Starts `image` and its digest `map` (each written under its
    /// `.partial` name) for a disk of `size` bytes. An incremental names its
    /// parent in `opts.backing` and gives the parent's map as `base`.
    pub fn create(
        image: &Path,
        map: &Path,
        size: u64,
        opts: WriterOptions,
        base: Option<MapReader>,
    ) -> Result<Self, EngineError> {
        let cluster = opts.cluster.bytes();
        if let Some(b) = &base
            && (u64::from(b.cluster_size) != cluster || b.virtual_size != size)
        {
            return Err(EngineError::Repository(format!(
                "the parent's digest map (cluster {} / size {}) does not match the disk (cluster {cluster} / size {size})",
                b.cluster_size, b.virtual_size
            )));
        }
        let (image_tmp, map_tmp) = (partial(image), partial(map));
        let writer = Writer::create(&image_tmp, size, opts)?;
        let map_writer = match MapWriter::create(&map_tmp, cluster as u32, size) {
            Ok(m) => m,
            Err(e) => {
                drop(writer);
                let _ = std::fs::remove_file(&image_tmp);
                return Err(e.into());
            }
        };
        let staged = Staged { moves: vec![(image_tmp, image.to_path_buf()), (map_tmp, map.to_path_buf())] };
        Ok(Self {
            writer,
            map: map_writer,
            base,
            ahead: VecDeque::new(),
            cluster,
            size,
            clusters: size.div_ceil(cluster),
            next: 0,
            dirty: Dirty::default(),
            changed: 0,
            scratch: Vec::new(),
            staged,
            backing: None,
        })
    }

    /// The files this sink writes, for cleanup when a job fails.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.staged.moves.iter().map(|(p, _)| p.as_path())
    }

    pub fn cluster_size(&self) -> u64 {
        self.cluster
    }

    /// Gives the writer the parent chain's bytes, for writes that cover
    /// part of a cluster (push targets).
    pub fn set_backing_reader(&mut self, r: Arc<dyn ReadAt>) {
        self.backing = Some(r.clone());
        self.writer.set_backing_reader(r);
    }

    /// In order: the first cluster not yet handed over.
    pub fn next_cluster(&self) -> u64 {
        self.next
    }

    fn cluster_len(&self, c: u64) -> u64 {
        self.cluster.min(self.size - c * self.cluster)
    }

    /// Takes the next base entry below cluster `end`.
    fn take_base(&mut self, end: u64) -> Result<Option<(u64, Digest)>, EngineError> {
        if let Some(&(i, d)) = self.ahead.front() {
            if i >= end {
                return Ok(None);
            }
            self.ahead.pop_front();
            return Ok(Some((i, d)));
        }
        match &mut self.base {
            Some(b) => Ok(b.next_below(end)?),
            None => Ok(None),
        }
    }

    fn in_order(&self, n: u64) -> Result<u64, EngineError> {
        match self.next.checked_add(n) {
            Some(end) if end <= self.clusters && self.dirty.is_empty() => Ok(end),
            _ => Err(EngineError::Repository(format!(
                "image sink: {n} clusters from {} of {} (or after writes at offsets)",
                self.next, self.clusters
            ))),
        }
    }

    /// The base's digests of the next `n` clusters (ZERO where it lists
    /// none), without handing them over.
    pub fn base(&mut self, n: u64) -> Result<Vec<Digest>, EngineError> {
        let end = self.in_order(n)?;
        if let Some(b) = &mut self.base {
            while let Some(e) = b.next_below(end)? {
                self.ahead.push_back(e);
            }
        }
        let mut out = vec![ZERO; n as usize];
        for &(i, d) in self.ahead.iter().take_while(|(i, _)| *i < end) {
            out[(i - self.next) as usize] = d;
        }
        Ok(out)
    }

    /// In order: the next `n` clusters are unchanged since the parent (the
    /// map keeps the base's digests).
    pub fn keep(&mut self, n: u64) -> Result<(), EngineError> {
        let end = self.in_order(n)?;
        while let Some((i, d)) = self.take_base(end)? {
            self.map.push(i, &d)?;
        }
        self.next = end;
        Ok(())
    }

    /// In order: the next clusters read as zeros now; those the base lists
    /// with data become zero clusters, the rest cost nothing.
    pub fn zeros(&mut self, n: u64) -> Result<(), EngineError> {
        let end = self.in_order(n)?;
        while let Some((i, _)) = self.take_base(end)? {
            self.writer.write_zero_cluster(i)?;
            self.changed += self.cluster_len(i);
        }
        self.next = end;
        Ok(())
    }

    /// In order: the next clusters changed; `bytes` holds them (the last
    /// one of the disk may be short) and `digests` their digests. Bytes lent
    /// from a source's memory map (`mapped`) are copied first and hashed
    /// again, so what is stored and its digest agree even if the source
    /// changes under the map.
    pub fn store(&mut self, bytes: &[u8], digests: &[Digest], mapped: bool) -> Result<(), EngineError> {
        let end = self.in_order(digests.len() as u64)?;
        let first = self.next;
        while self.take_base(end)?.is_some() {}
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = if mapped {
            scratch.clear();
            scratch.extend_from_slice(bytes);
            let fresh: Vec<Digest> = scratch.chunks(self.cluster as usize).map(digests::digest).collect();
            self.put(first, &scratch, &fresh)
        } else {
            self.put(first, bytes, digests)
        };
        self.scratch = scratch;
        result?;
        self.next = end;
        Ok(())
    }

    /// Stores clusters from `first` and records their digests.
    fn put(&mut self, first: u64, bytes: &[u8], digests: &[Digest]) -> Result<(), EngineError> {
        self.write_run(first, bytes, digests)?;
        for (k, d) in digests.iter().enumerate() {
            self.map.push(first + k as u64, d)?;
        }
        self.changed += bytes.len() as u64;
        Ok(())
    }

    /// Writes clusters from `first`: consecutive whole data clusters as one
    /// run (written straight from `bytes`), zero ones as zero clusters, a
    /// short last one alone.
    fn write_run(&mut self, first: u64, bytes: &[u8], digests: &[Digest]) -> Result<(), EngineError> {
        let cs = self.cluster as usize;
        let mut run: Option<usize> = None;
        for (i, (c, d)) in bytes.chunks(cs).zip(digests).enumerate() {
            if c.len() == cs && *d != ZERO {
                run.get_or_insert(i);
                continue;
            }
            if let Some(start) = run.take() {
                self.writer.write_clusters(first + start as u64, &bytes[start * cs..i * cs])?;
            }
            if *d == ZERO {
                self.writer.write_zero_cluster(first + i as u64)?;
            } else {
                self.writer.write_cluster(first + i as u64, c)?;
            }
        }
        if let Some(start) = run {
            self.writer.write_clusters(first + start as u64, &bytes[start * cs..])?;
        }
        Ok(())
    }

    /// At any offset: writes `data` (a push target's WRITE).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), EngineError> {
        self.at_offsets(offset, data.len() as u64)?;
        self.writer.write_at(offset, data)?;
        Ok(())
    }

    /// At any offset: makes `len` bytes read as zeros (WRITE_ZEROES, TRIM).
    /// Whole clusters become zero clusters only where they do not read as
    /// zeros already (written before, or data in the parent): zeroing a
    /// hole costs nothing.
    pub fn zero_range(&mut self, offset: u64, len: u64) -> Result<(), EngineError> {
        let end = self.check_offsets(offset, len)?;
        let cs = self.cluster;
        let mut pos = offset;
        while pos < end {
            let c = pos / cs;
            let n = ((c + 1) * cs).min(end) - pos;
            let whole = pos == c * cs && n == self.cluster_len(c);
            if whole && !self.dirty.contains(c) && self.parent_reads_zeros(c)? {
                pos += n;
                continue;
            }
            self.dirty.insert(c, c + 1);
            if whole {
                self.writer.write_zero_cluster(c)?;
            } else {
                self.writer.write_at(pos, &vec![0u8; n as usize])?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Whether cluster `c` reads as zeros in the parent (always in a full).
    fn parent_reads_zeros(&self, c: u64) -> Result<bool, EngineError> {
        let Some(r) = &self.backing else { return Ok(true) };
        let (at, len) = (c * self.cluster, self.cluster_len(c));
        let run = r.status(at, len).map_err(|e| EngineError::Read(format!("parent at offset {at}"), e))?;
        Ok(run.alloc != Alloc::Data && run.offset == at && run.len >= len)
    }

    /// At any offset: what the disk reads now (the parent's bytes where
    /// nothing was written; zeros in a full).
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), EngineError> {
        self.check_offsets(offset, buf.len() as u64)?;
        let cs = self.cluster;
        let mut tmp = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let c = pos / cs;
            let clen = self.cluster_len(c);
            let skip = (pos - c * cs) as usize;
            let n = (clen as usize - skip).min(buf.len() - done);
            if skip == 0 && n == clen as usize {
                self.writer.read_cluster(c, &mut buf[done..done + n])?;
            } else {
                tmp.resize(clen as usize, 0);
                self.writer.read_cluster(c, &mut tmp)?;
                buf[done..done + n].copy_from_slice(&tmp[skip..skip + n]);
            }
            done += n;
        }
        Ok(())
    }

    /// At any offset: one allocation run from `offset` (at most `len`
    /// bytes): written clusters are data, the rest is as the parent reads
    /// (unallocated in a full).
    pub fn status(&self, offset: u64, len: u64) -> Result<Run, EngineError> {
        let end = offset.checked_add(len).filter(|&e| e <= self.size && len > 0).ok_or_else(|| {
            EngineError::BadRequest(format!("status of {len} bytes at {offset} past the {}-byte disk", self.size))
        })?;
        let cs = self.cluster;
        let mut c = offset / cs;
        if self.dirty.contains(c) {
            while c * cs < end && self.dirty.contains(c) {
                c += 1;
            }
            return Ok(Run { offset, len: (c * cs).min(end) - offset, alloc: Alloc::Data });
        }
        let stop = self.dirty.next_from(c).map_or(end, |d| (d * cs).min(end));
        match &self.backing {
            None => Ok(Run { offset, len: stop - offset, alloc: Alloc::Unallocated }),
            Some(r) => {
                let run =
                    r.status(offset, stop - offset).map_err(|e| EngineError::Read(format!("parent at {offset}"), e))?;
                Ok(Run { offset, len: run.len.min(stop - offset).max(1), alloc: run.alloc })
            }
        }
    }

    /// At any offset: everything written so far is in the file and durable
    /// (FLUSH). The backup exists only once committed, all the same.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        Ok(self.writer.flush()?)
    }

    fn at_offsets(&mut self, offset: u64, len: u64) -> Result<u64, EngineError> {
        let end = self.check_offsets(offset, len)?;
        if len > 0 {
            self.dirty.insert(offset / self.cluster, end.div_ceil(self.cluster));
        }
        Ok(end)
    }

    fn check_offsets(&self, offset: u64, len: u64) -> Result<u64, EngineError> {
        offset.checked_add(len).filter(|&e| e <= self.size && self.next == 0).ok_or_else(|| {
            EngineError::BadRequest(format!("{len} bytes at {offset} are past the {}-byte disk", self.size))
        })
    }

    /// Completes the image and its map (both fsynced, still under their
    /// partial names). Clusters written at offsets are read back and
    /// digested here.
    pub fn finish(mut self) -> Result<SinkOut, EngineError> {
        if !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            let mut buf = vec![0u8; self.cluster as usize];
            for c in dirty.iter() {
                self.keep(c - self.next)?;
                let n = self.cluster_len(c) as usize;
                self.writer.read_cluster(c, &mut buf[..n])?;
                while self.take_base(c + 1)?.is_some() {}
                self.map.push(c, &digests::digest(&buf[..n]))?;
                self.changed += n as u64;
                self.next = c + 1;
            }
        }
        self.keep(self.clusters - self.next)?;
        let stats = self.writer.finish()?;
        let content_digest = self.map.finish()?;
        Ok(SinkOut { stored_bytes: stats.file_size, changed_bytes: self.changed, content_digest, staged: self.staged })
    }
}

/// Clusters written at offsets: a bitmap in pages of 4096 clusters, made
/// only where writes land, so memory follows what was written.
#[derive(Default)]
struct Dirty {
    pages: BTreeMap<u64, Box<[u64; 64]>>,
}

impl Dirty {
    const PAGE: u64 = 4096;

    fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    fn insert(&mut self, from: u64, to: u64) {
        for c in from..to {
            let page = self.pages.entry(c / Self::PAGE).or_insert_with(|| Box::new([0; 64]));
            let bit = c % Self::PAGE;
            page[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    fn contains(&self, c: u64) -> bool {
        let bit = c % Self::PAGE;
        self.pages.get(&(c / Self::PAGE)).is_some_and(|w| w[(bit / 64) as usize] >> (bit % 64) & 1 != 0)
    }

    /// The first dirty cluster at or after `c`.
    fn next_from(&self, c: u64) -> Option<u64> {
        for (&p, words) in self.pages.range(c / Self::PAGE..) {
            let from = if p == c / Self::PAGE { c % Self::PAGE } else { 0 };
            for w in (from / 64) as usize..64 {
                let mut bits = words[w];
                if w == (from / 64) as usize {
                    bits &= u64::MAX << (from % 64);
                }
                if bits != 0 {
                    return Some(p * Self::PAGE + w as u64 * 64 + u64::from(bits.trailing_zeros()));
                }
            }
        }
        None
    }

    /// The dirty clusters, ascending.
    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages.iter().flat_map(|(&p, words)| {
            words.iter().enumerate().flat_map(move |(w, &bits)| {
                (0..64u64).filter(move |b| bits >> b & 1 != 0).map(move |b| p * Self::PAGE + w as u64 * 64 + b)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Dirty;

    #[test]
    fn dirty_clusters_are_found_from_any_cluster() {
        let mut d = Dirty::default();
        assert_eq!(d.next_from(0), None);
        d.insert(5, 7);
        d.insert(70, 71);
        d.insert(3 * Dirty::PAGE + 63, 3 * Dirty::PAGE + 65);
        assert!(d.contains(5) && d.contains(6) && !d.contains(7) && !d.contains(4));
        assert_eq!(d.next_from(0), Some(5));
        assert_eq!(d.next_from(6), Some(6));
        assert_eq!(d.next_from(7), Some(70));
        assert_eq!(d.next_from(71), Some(3 * Dirty::PAGE + 63));
        assert_eq!(d.next_from(3 * Dirty::PAGE + 64), Some(3 * Dirty::PAGE + 64));
        assert_eq!(d.next_from(3 * Dirty::PAGE + 65), None);
        assert_eq!(d.iter().count(), 5);
    }
}
