//! The per-cluster digest map kept beside each backup image
//! (`<backup-id>.digests`): what lets an incremental find changed clusters
//! without reading the parent chain, and what `verify` checks images against.
//!
//! Layout (little endian):
//!   0  magic "BCDIGST1"        8 bytes
//!   8  cluster size            u32
//!  12  reserved (0)            u32
//!  16  virtual size            u64
//!  24  cluster count           u64
//!  32  count × 16-byte digests (first 16 bytes of BLAKE3 of the cluster's
//!      bytes; all zeros for an all-zero cluster)
//!  end BLAKE3 of everything before it (32 bytes), so a damaged map is never
//!      trusted.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"BCDIGST1";
const HEADER: usize = 32;
pub const DIGEST_LEN: usize = 16;
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
}

pub struct MapWriter {
    out: BufWriter<File>,
    whole: blake3::Hasher,
    content: blake3::Hasher,
    path: String,
    count: u64,
    expected: u64,
}

impl MapWriter {
    pub fn create(path: &Path, cluster_size: u32, virtual_size: u64) -> Result<Self, DigestError> {
        let p = path.display().to_string();
        let err = |source| DigestError::Io { path: p.clone(), source };
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(err)?;
        let expected = virtual_size.div_ceil(cluster_size as u64);
        let mut h = Vec::with_capacity(HEADER);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&cluster_size.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&virtual_size.to_le_bytes());
        h.extend_from_slice(&expected.to_le_bytes());
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&h).map_err(err)?;
        let mut whole = blake3::Hasher::new();
        whole.update(&h);
        Ok(Self { out, whole, content: blake3::Hasher::new(), path: p, count: 0, expected })
    }

    pub fn push(&mut self, d: &Digest) -> Result<(), DigestError> {
        self.count += 1;
        self.whole.update(d);
        self.content.update(d);
        self.out.write_all(d).map_err(|source| DigestError::Io { path: self.path.clone(), source })
    }

    /// Writes the trailer and makes the file durable; returns the content
    /// digest (BLAKE3 over the cluster digests, hex).
    pub fn finish(mut self) -> Result<String, DigestError> {
        let err = |source| DigestError::Io { path: self.path.clone(), source };
        if self.count != self.expected {
            return Err(DigestError::Corrupt {
                path: self.path.clone(),
                what: format!("{} digests written for {} clusters", self.count, self.expected),
            });
        }
        let trailer = self.whole.finalize();
        self.out.write_all(trailer.as_bytes()).map_err(err)?;
        let file =
            self.out.into_inner().map_err(|e| DigestError::Io { path: self.path.clone(), source: e.into_error() })?;
        file.sync_all().map_err(|source| DigestError::Io { path: self.path.clone(), source })?;
        Ok(self.content.finalize().to_hex().to_string())
    }
}

/// Streams a map's digests in order, after checking it whole.
pub struct MapReader {
    input: BufReader<File>,
    path: String,
    pub cluster_size: u32,
    pub virtual_size: u64,
    pub count: u64,
    read: u64,
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
        if &h[..8] != MAGIC {
            return Err(corrupt("bad magic".into()));
        }
        // OK to unwrap: fixed-size slices of the header.
        let cluster_size = u32::from_le_bytes(h[8..12].try_into().unwrap());
        let virtual_size = u64::from_le_bytes(h[16..24].try_into().unwrap());
        let count = u64::from_le_bytes(h[24..32].try_into().unwrap());
        if cluster_size == 0 || virtual_size.div_ceil(cluster_size as u64) != count {
            return Err(corrupt(format!("{count} clusters of {cluster_size} bytes for {virtual_size} bytes")));
        }
        let want = count.checked_mul(DIGEST_LEN as u64).and_then(|n| n.checked_add(HEADER as u64 + 32));
        if want != Some(len) {
            return Err(corrupt(format!("{len} bytes long for {count} clusters")));
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&h);
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut left = count * DIGEST_LEN as u64;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            reader.read_exact(&mut buf[..n]).map_err(err)?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        let mut trailer = [0u8; 32];
        reader.read_exact(&mut trailer).map_err(err)?;
        if hasher.finalize().as_bytes() != &trailer {
            return Err(corrupt("checksum mismatch".into()));
        }
        let mut file = reader.into_inner();
        use std::io::Seek;
        file.seek(io::SeekFrom::Start(HEADER as u64)).map_err(err)?;
        Ok(Self { input: BufReader::with_capacity(1 << 20, file), path: p, cluster_size, virtual_size, count, read: 0 })
    }

    /// The next cluster's digest.
    pub fn next_digest(&mut self) -> Result<Digest, DigestError> {
        if self.read >= self.count {
            return Err(DigestError::Corrupt { path: self.path.clone(), what: "read past the last digest".into() });
        }
        let mut d = ZERO;
        self.input.read_exact(&mut d).map_err(|source| DigestError::Io { path: self.path.clone(), source })?;
        self.read += 1;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.digests");
        let mut w = MapWriter::create(&p, 4096, 10_000).unwrap();
        let ds = [digest(&[1u8; 4096]), digest(&[0u8; 4096]), digest(&[2u8; 1808])];
        for d in &ds {
            w.push(d).unwrap();
        }
        let content = w.finish().unwrap();
        assert_eq!(ds[1], ZERO);
        let mut r = MapReader::open(&p).unwrap();
        assert_eq!(r.count, 3);
        for d in &ds {
            assert_eq!(&r.next_digest().unwrap(), d);
        }
        assert!(r.next_digest().is_err());
        let mut h = blake3::Hasher::new();
        ds.iter().for_each(|d| {
            h.update(d);
        });
        assert_eq!(content, h.finalize().to_hex().to_string());
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(MapReader::open(&p), Err(DigestError::Corrupt { .. })));
    }
}
