//! The backup pipeline for one disk: reader → change detector → image sink.
//!
//! * The reader is the shared one of `block::chunks`: it walks the source by
//!   allocation state, so zero and unallocated runs are never read, and
//!   reads and hashes the rest on worker threads.
//! * The change detector decides what the new image stores. Where the
//!   source tracks its changes (a dirty bitmap), only its extents are read
//!   and the rest is kept from the parent; elsewhere every cluster's digest
//!   is compared with the parent's digest map.
//! * The image sink (`sink.rs`) writes the clusters and the new map.
//!
//! Nothing here opens a file: the source's reader is all it reads, so an
//! `nbd://` source works as a local one does.

use super::EngineError;
use super::digests::{self, Digest};
use super::sink::ImageSink;
use crate::block::Run;
use crate::block::chunks::{self, Bytes, Piece, ReadError};
use crate::source::{Changes, Source};
use std::ops::Range;

/// Bytes read from a source per step (a multiple of every cluster size).
const CHUNK: u64 = 4 << 20;
/// Threads reading and digesting a source (two cores are the norm here).
const READERS: usize = 2;

/// What the pipeline found worth telling the user.
#[derive(Debug, Default)]
pub struct Outcome {
    pub notes: Vec<String>,
    /// Bytes read from the source (holes, zero runs and what the source's
    /// changed extents leave out are never read).
    pub bytes_read: u64,
}

impl From<ReadError> for EngineError {
    fn from(e: ReadError) -> Self {
        EngineError::Read(format!("at offset {}", e.offset), e.source)
    }
}

/// Copies what changed of `source` into `sink`. `incremental`: the sink
/// has the parent's map as its base. `advance` hears of every byte of the
/// disk once, read or not.
pub fn run(
    source: &dyn Source,
    sink: &mut ImageSink,
    incremental: bool,
    advance: &mut dyn FnMut(u64),
) -> Result<Outcome, EngineError> {
    let mut outcome = Outcome::default();
    let size = source.size();
    let cs = sink.cluster_size();
    let ranges = match source.changes() {
        Changes::Extents(e) if incremental => cluster_ranges(&e, cs, size),
        Changes::Extents(_) | Changes::All => chunks::whole(size),
        Changes::Unavailable(_) if !incremental => chunks::whole(size),
        Changes::Unavailable(why) => {
            outcome.notes.push(format!("disk {}: changed extents unavailable ({why}): read whole", source.spec()));
            chunks::whole(size)
        }
    };
    // An incremental reads a mappable source (a raw file's data runs, a
    // QCOW2 image's data clusters) through its memory map: the digests
    // that find the few changed clusters are computed on the page cache
    // itself, without copying every byte into a buffer first (that copy
    // took more time than the hashing). A full backup stores every data
    // cluster and reads into buffers.
    let opts = chunks::Options { chunk: CHUNK, grain: cs, workers: READERS, map: incremental };
    let reader = source.reader();
    let bytes_read = &mut outcome.bytes_read;
    let work = |_: &Run, bytes: &[u8]| Ok::<_, EngineError>(bytes.chunks(cs as usize).map(digests::digest).collect());
    let walked = chunks::walk(&**reader, ranges, opts, work, |piece: &Piece<Vec<Digest>>| {
        let run = match piece {
            Piece::Skip(run) | Piece::Data { run, .. } => *run,
        };
        let first = run.offset / cs;
        let skipped = first - sink.next_cluster();
        if skipped > 0 {
            // Outside the source's changed extents: kept from the parent.
            sink.keep(skipped)?;
            advance(skipped * cs);
        }
        match piece {
            Piece::Skip(_) => sink.zeros(run.end().div_ceil(cs) - first)?,
            Piece::Data { bytes, done, .. } => {
                *bytes_read += run.len;
                detect(sink, bytes, done)?
            }
        }
        advance(run.len);
        Ok(())
    });
    walked.map_err(|e| match e {
        EngineError::Read(at, s) => EngineError::Read(format!("{} {at}", source.spec()), s),
        e => e,
    })?;
    let from = sink.next_cluster() * cs;
    if from < size {
        sink.keep(size.div_ceil(cs) - sink.next_cluster())?;
        advance(size - from);
    }
    Ok(outcome)
}

/// The change detector for one chunk: clusters whose digest differs from
/// the base's are stored, in runs; the others are kept.
fn detect(sink: &mut ImageSink, bytes: &Bytes, digests: &[Digest]) -> Result<(), EngineError> {
    let base = sink.base(digests.len() as u64)?;
    let cs = sink.cluster_size() as usize;
    let data = bytes.as_slice();
    let mut i = 0;
    while i < digests.len() {
        let changed = digests[i] != base[i];
        let mut j = i + 1;
        while j < digests.len() && (digests[j] != base[j]) == changed {
            j += 1;
        }
        if changed {
            sink.store(&data[i * cs..(j * cs).min(data.len())], &digests[i..j], bytes.is_mapped())?;
        } else {
            sink.keep((j - i) as u64)?;
        }
        i = j;
    }
    Ok(())
}

/// Extents widened to whole clusters, clipped to the disk, sorted and
/// merged.
fn cluster_ranges(extents: &[Range<u64>], cs: u64, size: u64) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = extents
        .iter()
        .filter(|r| r.start < r.end.min(size))
        .map(|r| r.start / cs * cs..(r.end.min(size).div_ceil(cs) * cs).min(size))
        .collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::digests::MapReader;
    use super::super::sink::SinkOut;
    use crate::block::{MemImage, ReadAt};
    use crate::qcow2::{Chain, OpenOptions, WriterOptions};
    use std::path::Path;
    use std::sync::Arc;

    const CS: usize = 64 << 10;

    struct Mem {
        reader: Arc<dyn ReadAt>,
        changes: Changes,
    }

    impl Source for Mem {
        fn spec(&self) -> &str {
            "memory"
        }
        fn reader(&self) -> &Arc<dyn ReadAt> {
            &self.reader
        }
        fn changes(&self) -> Changes {
            self.changes.clone()
        }
    }

    /// A disk of `size` bytes with distinct data in clusters `data`.
    fn disk(size: usize, data: &[usize]) -> Vec<u8> {
        let mut v = vec![0u8; size];
        for &c in data {
            let end = ((c + 1) * CS).min(size);
            v[c * CS..end].iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8 ^ c as u8 | 1);
        }
        v
    }

    fn sink(dir: &Path, name: &str, size: usize, parent: Option<&str>) -> ImageSink {
        let base = parent.map(|p| MapReader::open(&dir.join(format!("{p}.digests"))).unwrap());
        let opts = WriterOptions { backing: parent.map(|p| format!("{p}.qcow2")), ..Default::default() };
        let (image, map) = (dir.join(format!("{name}.qcow2")), dir.join(format!("{name}.digests")));
        ImageSink::create(&image, &map, size as u64, opts, base).unwrap()
    }

    /// Backs `bytes` up as `name` over `parent` and commits it.
    fn backup(dir: &Path, name: &str, bytes: &[u8], changes: Changes, parent: Option<&str>) -> SinkOut {
        let mut sink = sink(dir, name, bytes.len(), parent);
        let src = Mem { reader: Arc::new(MemImage(bytes.to_vec())), changes };
        let mut seen = 0;
        run(&src, &mut sink, parent.is_some(), &mut |n| seen += n).unwrap();
        assert_eq!(seen, bytes.len() as u64, "progress hears of every byte once");
        let out = sink.finish().unwrap();
        out.staged.commit(|_| {}).unwrap();
        out
    }

    fn chain(dir: &Path, name: &str) -> Chain {
        Chain::open(&dir.join(format!("{name}.qcow2")), &OpenOptions::default()).unwrap()
    }

    /// What the image reads, and that its map agrees with it.
    fn restored(dir: &Path, name: &str, size: usize, out: &SinkOut) -> Vec<u8> {
        let c = chain(dir, name);
        let mut map = MapReader::open(&dir.join(format!("{name}.digests"))).unwrap();
        assert_eq!(digests::check(&c, size as u64, &mut map).unwrap(), out.content_digest, "{name}");
        let mut v = vec![0u8; size];
        c.read_exact_at(0, &mut v).unwrap();
        v
    }

    #[test]
    fn digests_find_the_changes_and_trusted_extents_limit_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let size = 40 * CS + 1000;
        let a = disk(size, &[0, 1, 2, 7, 20, 40]);
        let full = backup(d, "a", &a, Changes::All, None);
        assert_eq!(full.changed_bytes, 5 * CS as u64 + 1000);
        assert_eq!(restored(d, "a", size, &full), a);
        // Cluster 1 changed, 2 became zeros, 30 is new, the short last one
        // changed.
        let mut b = a.clone();
        b[CS + 5] ^= 0xff;
        b[2 * CS..3 * CS].fill(0);
        b[30 * CS] = 9;
        b[40 * CS + 999] ^= 1;
        let inc = backup(d, "b", &b, Changes::All, Some("a"));
        assert_eq!(inc.changed_bytes, 3 * CS as u64 + 1000);
        assert_eq!(restored(d, "b", size, &inc), b);
        // A bitmap reports clusters 5..8 (7 changed) but not 20, which
        // changed too: trusted, cluster 20 is kept from the parent.
        let mut c = b.clone();
        c[7 * CS] ^= 0x55;
        c[20 * CS] ^= 0x55;
        let extents = Changes::Extents(vec![6 * CS as u64 + 1..8 * CS as u64 - 100, 5 * CS as u64..6 * CS as u64]);
        let ext = backup(d, "c", &c, extents, Some("b"));
        assert_eq!(ext.changed_bytes, CS as u64);
        let mut want = c.clone();
        want[20 * CS] ^= 0x55;
        assert_eq!(restored(d, "c", size, &ext), want);
    }

    #[test]
    fn a_push_target_writes_at_offsets_and_gets_the_map_a_read_would() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let size = 40 * CS + 1000;
        let a = disk(size, &[0, 1, 2, 7, 20, 40]);
        backup(d, "a", &a, Changes::All, None);
        let mut s = sink(d, "p", size, Some("a"));
        s.set_backing_reader(Arc::new(chain(d, "a")));
        let mut model = a.clone();
        let (write, zero) = (0u8, 1u8);
        let ops = [(write, 3 * CS + 100, 5000), (write, CS - 10, 20), (zero, 7 * CS, CS), (zero, 20 * CS + 10, 10)];
        for (op, at, len) in ops.into_iter().chain([(write, size - 5, 5)]) {
            if op == zero {
                s.zero_range(at as u64, len as u64).unwrap();
                model[at..at + len].fill(0);
            } else {
                let bytes = vec![0xEE; len];
                s.write_at(at as u64, &bytes).unwrap();
                model[at..at + len].copy_from_slice(&bytes);
            }
            s.flush().unwrap();
        }
        assert!(s.keep(1).is_err(), "in-order calls after writes at offsets");
        let out = s.finish().unwrap();
        out.staged.commit(|_| {}).unwrap();
        // Clusters 0, 1, 3, 7, 20 and the short last one were written.
        assert_eq!(out.changed_bytes, 5 * CS as u64 + 1000);
        assert_eq!(restored(d, "p", size, &out), model);
        // The same bytes read by the pipeline give the same map.
        let same = backup(d, "q", &model, Changes::All, Some("a"));
        assert_eq!(same.content_digest, out.content_digest);
    }

    #[test]
    fn unavailable_tracking_reads_everything_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let a = disk(4 * CS, &[0, 2]);
        backup(d, "a", &a, Changes::All, None);
        let mut b = a.clone();
        b[3 * CS] = 1;
        let mut s = sink(d, "b", b.len(), Some("a"));
        let src = Mem { reader: Arc::new(MemImage(b)), changes: Changes::Unavailable("bitmap gone".into()) };
        let outcome = run(&src, &mut s, true, &mut |_| {}).unwrap();
        assert!(outcome.notes.iter().any(|n| n.contains("bitmap gone")), "{:?}", outcome.notes);
        assert_eq!(s.finish().unwrap().changed_bytes, CS as u64);
    }

    #[test]
    fn extents_widen_to_clusters_and_merge() {
        let r = cluster_ranges(&[(10..20), (5000..5001), (0..3), (9000..20_000)], 4096, 10_000);
        assert_eq!(r.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(0, 10_000)]);
        let r = cluster_ranges(&[(10..20), (9000..9001)], 4096, 10_000);
        assert_eq!(r.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(), [(0, 4096), (8192, 10_000)]);
        assert!(cluster_ranges(&[(0..0), (20_000..30_000)], 4096, 10_000).is_empty());
    }
}
