//! The per-cluster digest map kept beside each backup image
//! (`<backup-id>.digests`): what lets an incremental find changed clusters
//! without reading the parent chain, and what `verify` checks images against.
//!
//! Version 2 is sparse: it lists only the clusters that hold something
//! other than zeros, so a thin 1 TiB disk with 1 GiB of data has a map of
//! about 400 KiB (24 bytes per 64 KiB of data), where version 1 spent
//! 16 bytes on every cluster of the virtual size (256 MiB for 1 TiB, and
//! the time to write, read and hash it). Layout (little endian):
//!   0  magic "BCDIGST2"        8 bytes
//!   8  cluster size            u32
//!  12  reserved (0)            u32
//!  16  virtual size            u64
//!  24  cluster count           u64
//!  32  entries, 24 bytes each, cluster indices strictly ascending:
//!      cluster index u64, then the first 16 bytes of the BLAKE3 of the
//!      cluster's bytes. A cluster not listed reads as zeros.
//!  end BLAKE3 of everything before it (32 bytes), so a damaged map is never
//!      trusted.
//!
//! Version 1 ("BCDIGST1", written before), still read: the same header,
//! then one 16-byte digest per cluster (all zeros for an all-zero cluster),
//! then the same trailer.
//!
//! The content digest (a backup disk's `content_digest` and change id) is
//! the BLAKE3 of the map's body as its version lays it out: every digest in
//! version 1, the entries in version 2. [`Content`] computes it from the
//! non-zero clusters alone, for either version.

use crate::block::ReadAt;
use crate::block::chunks::{self, Piece, ReadError};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

const MAGIC_V1: &[u8; 8] = b"BCDIGST1";
const MAGIC_V2: &[u8; 8] = b"BCDIGST2";
const HEADER: usize = 32;
const TRAILER: usize = 32;
pub const DIGEST_LEN: usize = 16;
/// One version 2 entry: cluster index and digest.
const ENTRY: usize = 8 + DIGEST_LEN;
/// The digest recorded for an all-zero cluster.
pub const ZERO: [u8; DIGEST_LEN] = [0; DIGEST_LEN];

pub type Digest = [u8; DIGEST_LEN];

/// The digest of one cluster's bytes.
pub fn digest(data: &[u8]) -> Digest {
    if crate::qcow2::is_zero(data) {
        return ZERO;
    }
    let h = blake3::hash(data);
    let mut d = [0u8; DIGEST_LEN];
    d.copy_from_slice(&h.as_bytes()[..DIGEST_LEN]);
    d
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("digest map {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("digest map {path} is damaged: {what}")]
    Corrupt { path: String, what: String },
    #[error("content of guest cluster at offset {offset} differs from its digest")]
    Mismatch { offset: u64 },
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// The map's layout version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One digest per cluster.
    Dense,
    /// Non-zero clusters only.
    Sparse,
}

/// The content digest of a disk, fed with its non-zero clusters in order.
pub struct Content {
    version: Version,
    hasher: blake3::Hasher,
    /// The first cluster not yet fed (dense: zeros are hashed up to here).
    next: u64,
}

impl Content {
    pub fn new(version: Version) -> Self {
        Content { version, hasher: blake3::Hasher::new(), next: 0 }
    }

    /// Cluster `index` (above every index before) has digest `d` (not ZERO).
    pub fn add(&mut self, index: u64, d: &Digest) {
        match self.version {
            Version::Dense => {
                self.zeros_to(index);
                self.hasher.update(d);
            }
            Version::Sparse => {
                self.hasher.update(&index.to_le_bytes());
                self.hasher.update(d);
            }
        }
        self.next = index + 1;
    }

    fn zeros_to(&mut self, index: u64) {
        const BATCH: usize = 4096;
        let zeros = [0u8; BATCH * DIGEST_LEN];
        while self.next < index {
            let n = (index - self.next).min(BATCH as u64);
            self.hasher.update(&zeros[..n as usize * DIGEST_LEN]);
            self.next += n;
        }
    }

    /// The hex digest of a disk of `clusters` clusters.
    pub fn finish(mut self, clusters: u64) -> String {
        if self.version == Version::Dense {
            self.zeros_to(clusters);
        }
        self.hasher.finalize().to_hex().to_string()
    }
}

/// Writes a version 2 map, entry by entry.
pub struct MapWriter {
    out: BufWriter<File>,
    whole: blake3::Hasher,
    content: Content,
    path: String,
    clusters: u64,
    /// The next index an entry may have.
    next: u64,
}

impl MapWriter {
    pub fn create(path: &Path, cluster_size: u32, virtual_size: u64) -> Result<Self, DigestError> {
        let p = path.display().to_string();
        let err = |source| DigestError::Io { path: p.clone(), source };
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(err)?;
        let clusters = virtual_size.div_ceil(u64::from(cluster_size.max(1)));
        let h = header(MAGIC_V2, cluster_size, virtual_size, clusters);
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&h).map_err(err)?;
        let mut whole = blake3::Hasher::new();
        whole.update(&h);
        Ok(Self { out, whole, content: Content::new(Version::Sparse), path: p, clusters, next: 0 })
    }

    /// Records cluster `index`'s digest. Indices must ascend; a ZERO
    /// digest is not listed (it costs nothing).
    pub fn push(&mut self, index: u64, d: &Digest) -> Result<(), DigestError> {
        if index < self.next || index >= self.clusters {
            return Err(DigestError::Corrupt {
                path: self.path.clone(),
                what: format!(
                    "digest for cluster {index} out of order (next {}, {} clusters)",
                    self.next, self.clusters
                ),
            });
        }
        self.next = index + 1;
        if *d == ZERO {
            return Ok(());
        }
        let mut e = [0u8; ENTRY];
        e[..8].copy_from_slice(&index.to_le_bytes());
        e[8..].copy_from_slice(d);
        self.whole.update(&e);
        self.content.add(index, d);
        self.out.write_all(&e).map_err(|source| DigestError::Io { path: self.path.clone(), source })
    }

    /// Writes the trailer and makes the file durable; returns the content
    /// digest.
    pub fn finish(mut self) -> Result<String, DigestError> {
        let err = |source| DigestError::Io { path: self.path.clone(), source };
        let trailer = self.whole.finalize();
        self.out.write_all(trailer.as_bytes()).map_err(err)?;
        let file =
            self.out.into_inner().map_err(|e| DigestError::Io { path: self.path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(|source| DigestError::Io { path: self.path.clone(), source })?;
        Ok(self.content.finish(self.clusters))
    }
}

fn header(magic: &[u8; 8], cluster_size: u32, virtual_size: u64, clusters: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER);
    h.extend_from_slice(magic);
    h.extend_from_slice(&cluster_size.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&virtual_size.to_le_bytes());
    h.extend_from_slice(&clusters.to_le_bytes());
    h
}

/// Reads a map of either version as its non-zero entries, in order, after
/// checking it whole.
pub struct MapReader {
    input: BufReader<File>,
    path: String,
    pub version: Version,
    pub cluster_size: u32,
    pub virtual_size: u64,
    /// Clusters of the disk.
    pub count: u64,
    /// Dense: the next cluster to read. Sparse: entries left.
    left: u64,
    next_dense: u64,
    /// The entry read ahead, if any.
    peeked: Option<(u64, Digest)>,
    /// The index the next entry must exceed (sparse order check).
    last: Option<u64>,
}

impl MapReader {
    /// Opens a map and verifies its trailer before anything trusts it.
    pub fn open(path: &Path) -> Result<Self, DigestError> {
        let p = path.display().to_string();
        let err = |source| DigestError::Io { path: p.clone(), source };
        let corrupt = |what: String| DigestError::Corrupt { path: p.clone(), what };
        let mut file = File::open(path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        let mut h = [0u8; HEADER];
        file.read_exact(&mut h).map_err(|_| corrupt("shorter than its header".into()))?;
        let version = match &h[..8] {
            m if m == MAGIC_V1 => Version::Dense,
            m if m == MAGIC_V2 => Version::Sparse,
            _ => return Err(corrupt("bad magic".into())),
        };
        // OK to unwrap: fixed-size slices of the header.
        let cluster_size = u32::from_le_bytes(h[8..12].try_into().unwrap());
        let virtual_size = u64::from_le_bytes(h[16..24].try_into().unwrap());
        let count = u64::from_le_bytes(h[24..32].try_into().unwrap());
        if cluster_size == 0 || virtual_size.div_ceil(cluster_size as u64) != count {
            return Err(corrupt(format!("{count} clusters of {cluster_size} bytes for {virtual_size} bytes")));
        }
        let body =
            len.checked_sub((HEADER + TRAILER) as u64).ok_or_else(|| corrupt("shorter than its trailer".into()))?;
        let left = match version {
            Version::Dense if count.checked_mul(DIGEST_LEN as u64) == Some(body) => count,
            Version::Sparse if body % ENTRY as u64 == 0 && body / ENTRY as u64 <= count => body / ENTRY as u64,
            _ => return Err(corrupt(format!("{len} bytes long for {count} clusters"))),
        };
        let mut hasher = blake3::Hasher::new();
        hasher.update(&h);
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut todo = body;
        let mut buf = vec![0u8; 1 << 20];
        while todo > 0 {
            let n = todo.min(buf.len() as u64) as usize;
            reader.read_exact(&mut buf[..n]).map_err(err)?;
            hasher.update(&buf[..n]);
            todo -= n as u64;
        }
        let mut trailer = [0u8; TRAILER];
        reader.read_exact(&mut trailer).map_err(err)?;
        if hasher.finalize().as_bytes() != &trailer {
            return Err(corrupt("checksum mismatch".into()));
        }
        let mut file = reader.into_inner();
        file.seek(io::SeekFrom::Start(HEADER as u64)).map_err(err)?;
        Ok(Self {
            input: BufReader::with_capacity(1 << 20, file),
            path: p,
            version,
            cluster_size,
            virtual_size,
            count,
            left,
            next_dense: 0,
            peeked: None,
            last: None,
        })
    }

    fn io(&self, source: io::Error) -> DigestError {
        DigestError::Io { path: self.path.clone(), source }
    }

    /// The next listed (non-zero) entry from the file.
    fn read_entry(&mut self) -> Result<Option<(u64, Digest)>, DigestError> {
        let mut d = ZERO;
        match self.version {
            Version::Dense => {
                while self.next_dense < self.count {
                    self.input.read_exact(&mut d).map_err(|e| self.io(e))?;
                    self.next_dense += 1;
                    if d != ZERO {
                        return Ok(Some((self.next_dense - 1, d)));
                    }
                }
                Ok(None)
            }
            Version::Sparse => {
                if self.left == 0 {
                    return Ok(None);
                }
                let mut i = [0u8; 8];
                self.input.read_exact(&mut i).map_err(|e| self.io(e))?;
                self.input.read_exact(&mut d).map_err(|e| self.io(e))?;
                self.left -= 1;
                let index = u64::from_le_bytes(i);
                if index >= self.count || self.last.is_some_and(|l| index <= l) || d == ZERO {
                    return Err(DigestError::Corrupt {
                        path: self.path.clone(),
                        what: format!("entry for cluster {index} is out of order, out of range or zero"),
                    });
                }
                self.last = Some(index);
                Ok(Some((index, d)))
            }
        }
    }

    /// The next listed entry, without taking it.
    pub fn peek(&mut self) -> Result<Option<(u64, Digest)>, DigestError> {
        if self.peeked.is_none() {
            self.peeked = self.read_entry()?;
        }
        Ok(self.peeked)
    }

    /// Takes the next listed entry if its cluster is below `end`.
    pub fn next_below(&mut self, end: u64) -> Result<Option<(u64, Digest)>, DigestError> {
        match self.peek()? {
            Some((i, d)) if i < end => {
                self.peeked = None;
                Ok(Some((i, d)))
            }
            _ => Ok(None),
        }
    }
}

/// Reads the first `size` bytes of `reader` (zero and unallocated runs
/// are not read) and checks every cluster against `map`; returns the
/// content digest, computed as the map's version defines it.
pub fn check(reader: &dyn ReadAt, size: u64, map: &mut MapReader) -> Result<String, DigestError> {
    let cs = u64::from(map.cluster_size);
    let mut content = Content::new(map.version);
    let opts = chunks::Options { chunk: 4 << 20, grain: cs, workers: 2, map: false, gap: chunks::GAP };
    let work = |_: &crate::block::Run, bytes: &[u8]| Ok(bytes.chunks(cs as usize).map(digest).collect::<Vec<_>>());
    chunks::walk(reader, chunks::whole(size), opts, work, |piece: &Piece<Vec<Digest>>| match piece {
        Piece::Skip(run) => match map.next_below(run.end().div_ceil(cs))? {
            Some((i, _)) => Err(DigestError::Mismatch { offset: i * cs }),
            None => Ok(()),
        },
        Piece::Data { run, done, .. } => {
            let first = run.offset / cs;
            for (i, d) in (first..).zip(done) {
                let want = match map.next_below(i + 1)? {
                    Some((j, w)) if j == i => w,
                    Some((j, _)) => return Err(DigestError::Mismatch { offset: j * cs }),
                    None => ZERO,
                };
                if *d != want {
                    return Err(DigestError::Mismatch { offset: i * cs });
                }
                if *d != ZERO {
                    content.add(i, d);
                }
            }
            Ok(())
        }
    })?;
    if let Some((i, _)) = map.next_below(u64::MAX)? {
        return Err(DigestError::Mismatch { offset: i * cs });
    }
    Ok(content.finish(map.count))
}

/// Fuzzing entry: `data` as a map file, checked and read to its end.
/// Errors are fine; a panic or an unbounded allocation is a bug.
#[doc(hidden)]
pub fn fuzz_entry(data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!("backchain-fuzz-{}-{}.digests", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let path = std::env::temp_dir().join(name);
    if std::fs::write(&path, data).is_ok()
        && let Ok(mut m) = MapReader::open(&path)
    {
        while let Ok(Some(_)) = m.next_below(u64::MAX) {}
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense_v1(p: &Path, cluster: u32, size: u64, ds: &[Digest]) {
        let mut bytes = header(MAGIC_V1, cluster, size, ds.len() as u64);
        ds.iter().for_each(|d| bytes.extend_from_slice(d));
        let t = blake3::hash(&bytes);
        bytes.extend_from_slice(t.as_bytes());
        std::fs::write(p, bytes).unwrap();
    }

    fn entries(r: &mut MapReader) -> Vec<(u64, Digest)> {
        let mut out = Vec::new();
        while let Some(e) = r.next_below(u64::MAX).unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn sparse_round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.digests");
        let mut w = MapWriter::create(&p, 4096, 10_000).unwrap();
        let ds = [digest(&[1u8; 4096]), digest(&[0u8; 4096]), digest(&[2u8; 1808])];
        for (i, d) in ds.iter().enumerate() {
            w.push(i as u64, d).unwrap();
        }
        assert!(w.push(1, &ds[0]).is_err(), "out of order");
        let content = w.finish().unwrap();
        assert_eq!(ds[1], ZERO);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), (HEADER + 2 * ENTRY + TRAILER) as u64, "zeros cost nothing");
        let mut r = MapReader::open(&p).unwrap();
        assert_eq!((r.count, r.version), (3, Version::Sparse));
        assert_eq!(entries(&mut r), vec![(0, ds[0]), (2, ds[2])]);
        let mut c = Content::new(Version::Sparse);
        c.add(0, &ds[0]);
        c.add(2, &ds[2]);
        assert_eq!(content, c.finish(3));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(MapReader::open(&p), Err(DigestError::Corrupt { .. })));
        // Entries out of order are damage too, even under a valid checksum.
        let mut bytes = header(MAGIC_V2, 4096, 10_000, 3);
        for i in [2u64, 1] {
            bytes.extend_from_slice(&i.to_le_bytes());
            bytes.extend_from_slice(&ds[0]);
        }
        let t = blake3::hash(&bytes);
        bytes.extend_from_slice(t.as_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let mut r = MapReader::open(&p).unwrap();
        assert!(r.next_below(u64::MAX).unwrap().is_some());
        assert!(matches!(r.next_below(u64::MAX), Err(DigestError::Corrupt { .. })));
        fuzz_entry(&bytes);
    }

    #[test]
    fn version_1_maps_still_read_with_their_content_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.digests");
        let ds = [ZERO, digest(&[7u8; 512]), ZERO, ZERO, digest(&[9u8; 100])];
        dense_v1(&p, 512, 4 * 512 + 100, &ds);
        let mut r = MapReader::open(&p).unwrap();
        assert_eq!((r.count, r.version), (5, Version::Dense));
        assert_eq!(entries(&mut r), vec![(1, ds[1]), (4, ds[4])]);
        // The content digest version 1 always had: BLAKE3 over every digest.
        let mut h = blake3::Hasher::new();
        ds.iter().for_each(|d| {
            h.update(d);
        });
        let mut c = Content::new(Version::Dense);
        c.add(1, &ds[1]);
        c.add(4, &ds[4]);
        assert_eq!(c.finish(5), h.finalize().to_hex().to_string());
        let mut c = Content::new(Version::Dense);
        c.add(1, &ds[1]);
        assert_ne!(c.finish(5), h.finalize().to_hex().to_string());
    }
}
