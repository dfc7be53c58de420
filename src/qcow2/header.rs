//! The QCOW2 header and its extensions ("Header" and "Header extensions" in
//! the specification).

use super::consts::*;
use super::error::{Error, Result};
use crate::block::ReadAt;

/// Compression used for compressed clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Deflate,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Deflate => "deflate",
            Compression::Zstd => "zstd",
        }
    }
}

/// A validated cluster size: a power of two from 512 B to 2 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSize {
    bits: u32,
}

impl ClusterSize {
    pub fn from_bits(bits: u32) -> Result<Self> {
        if (MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
            Ok(Self { bits })
        } else {
            Err(Error::corrupt(20, format!("cluster_bits {bits} is outside 9..=21")))
        }
    }

    pub fn from_bytes(bytes: u64) -> Option<Self> {
        if bytes.is_power_of_two() { Self::from_bits(bytes.trailing_zeros()).ok() } else { None }
    }

    pub fn bits(self) -> u32 {
        self.bits
    }

    pub fn bytes(self) -> u64 {
        1 << self.bits
    }

    /// The same as [`Self::bytes`], as a buffer length (at most 2 MiB).
    pub fn usize(self) -> usize {
        1 << self.bits
    }

    pub fn mask(self) -> u64 {
        self.bytes() - 1
    }
}

/// The parsed, validated header of one image.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub cluster: ClusterSize,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub compatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    pub has_bitmaps_ext: bool,
    /// Names from the feature name table: (type, bit, name).
    pub feature_names: Vec<(u8, u8, String)>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    // OK to unwrap: callers index inside a buffer whose length they checked.
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    // OK to unwrap: as above.
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

impl Header {
    /// Reads and validates the header at offset 0 of `file`.
    pub fn read(file: &dyn ReadAt) -> Result<Self> {
        let file_size = file.size();
        if file_size < V2_HEADER_LEN as u64 {
            if file_size >= 4 {
                let mut m = [0u8; 4];
                file.read_exact_at(0, &mut m).map_err(Error::io(0))?;
                if u32::from_be_bytes(m) != MAGIC {
                    return Err(Error::NotQcow2);
                }
            }
            return Err(Error::corrupt(0, format!("file of {file_size} bytes is too short for a header")));
        }
        let mut fixed = [0u8; V3_HEADER_LEN as usize];
        let n = (file_size.min(V3_HEADER_LEN as u64)) as usize;
        file.read_exact_at(0, &mut fixed[..n]).map_err(Error::io(0))?;
        if be32(&fixed, 0) != MAGIC {
            return Err(Error::NotQcow2);
        }
        let version = be32(&fixed, 4);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!("QCOW2 version {version}")));
        }
        let cluster = ClusterSize::from_bits(be32(&fixed, 20))?;
        let crypt = be32(&fixed, 32);
        if crypt != 0 {
            let kind = match crypt {
                1 => "AES",
                2 => "LUKS",
                _ => "unknown",
            };
            return Err(Error::Unsupported(format!("encrypted image ({kind} encryption, method {crypt})")));
        }
        let mut h = Header {
            version,
            backing_file: None,
            backing_format: None,
            cluster,
            size: be64(&fixed, 24),
            l1_size: be32(&fixed, 36),
            l1_table_offset: be64(&fixed, 40),
            refcount_table_offset: be64(&fixed, 48),
            refcount_table_clusters: be32(&fixed, 56),
            nb_snapshots: be32(&fixed, 60),
            incompatible: 0,
            compatible: 0,
            autoclear: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression: Compression::Deflate,
            has_bitmaps_ext: false,
            feature_names: Vec::new(),
        };
        if version == 3 {
            if n < V3_MIN_HEADER_LEN as usize {
                return Err(Error::corrupt(0, "file too short for a version 3 header"));
            }
            h.incompatible = be64(&fixed, 72);
            h.compatible = be64(&fixed, 80);
            h.autoclear = be64(&fixed, 88);
            h.refcount_order = be32(&fixed, 96);
            h.header_length = be32(&fixed, 100);
            if h.header_length < V3_MIN_HEADER_LEN || h.header_length as u64 > cluster.bytes() {
                return Err(Error::corrupt(100, format!("header_length {} is invalid", h.header_length)));
            }
            if h.header_length > V3_MIN_HEADER_LEN {
                if n <= V3_MIN_HEADER_LEN as usize {
                    return Err(Error::corrupt(104, "header is truncated"));
                }
                h.compression = match fixed[104] {
                    COMPRESSION_DEFLATE => Compression::Deflate,
                    COMPRESSION_ZSTD => Compression::Zstd,
                    other => {
                        return Err(Error::Unsupported(format!("compression type {other}")));
                    }
                };
            }
            if h.compression != Compression::Deflate && h.incompatible & INCOMPAT_COMPRESSION == 0 {
                return Err(Error::corrupt(104, "compression type set without its incompatible feature bit"));
            }
        }
        if h.refcount_order > MAX_REFCOUNT_ORDER {
            return Err(Error::corrupt(96, format!("refcount_order {} is above 6", h.refcount_order)));
        }
        if h.size > MAX_VIRTUAL_SIZE {
            return Err(Error::Unsupported(format!(
                "virtual size {} is above the limit of {MAX_VIRTUAL_SIZE}",
                h.size
            )));
        }
        h.read_extensions(file)?;
        let unknown = h.incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            let names: Vec<String> = (0..64u8)
                .filter(|b| unknown & (1 << b) != 0)
                .map(|b| match h.feature_name(0, b) {
                    Some(n) => format!("bit {b} ({n})"),
                    None => format!("bit {b}"),
                })
                .collect();
            return Err(Error::Unsupported(format!("unknown incompatible feature {}", names.join(", "))));
        }
        if h.incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::Unsupported("external data file".into()));
        }
        h.read_backing_name(file)?;
        h.check_l1(file_size)?;
        Ok(h)
    }

    fn read_extensions(&mut self, file: &dyn ReadAt) -> Result<()> {
        let start = if self.version == 2 { V2_HEADER_LEN } else { self.header_length } as u64;
        // Extensions live in the first cluster, and end with type 0.
        let end = self.cluster.bytes().min(file.size());
        if start >= end {
            return Ok(());
        }
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(start, &mut buf).map_err(Error::io(start))?;
        let mut at = 0usize;
        while at + 8 <= buf.len() {
            let kind = be32(&buf, at);
            let len = be32(&buf, at + 4) as usize;
            let data_at = at + 8;
            if kind == EXT_END {
                break;
            }
            let Some(data) = buf.get(data_at..data_at.saturating_add(len)) else {
                return Err(Error::corrupt(
                    start + at as u64,
                    format!("header extension {kind:#x} overruns the first cluster"),
                ));
            };
            match kind {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(String::from_utf8_lossy(data).into_owned());
                }
                EXT_FEATURE_TABLE => {
                    for e in data.chunks_exact(48) {
                        let name = e[2..].split(|&c| c == 0).next().unwrap_or(&[]);
                        self.feature_names.push((e[0], e[1], String::from_utf8_lossy(name).into_owned()));
                    }
                }
                EXT_BITMAPS => self.has_bitmaps_ext = true,
                EXT_ENCRYPTION => {
                    return Err(Error::Unsupported("encrypted image (full disk encryption header)".into()));
                }
                EXT_DATA_FILE => {
                    return Err(Error::Unsupported("external data file".into()));
                }
                _ => {}
            }
            // Extension data is padded to a multiple of 8 bytes.
            at = data_at + len.div_ceil(8) * 8;
        }
        Ok(())
    }

    fn read_backing_name(&mut self, file: &dyn ReadAt) -> Result<()> {
        let off = {
            let mut b = [0u8; 12];
            file.read_exact_at(8, &mut b).map_err(Error::io(8))?;
            (be64(&b, 0), be32(&b, 8))
        };
        let (offset, len) = off;
        if offset == 0 {
            return Ok(());
        }
        if len == 0 {
            return Ok(());
        }
        if len > MAX_BACKING_NAME {
            return Err(Error::corrupt(16, format!("backing file name of {len} bytes (limit {MAX_BACKING_NAME})")));
        }
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.cluster.bytes() && end <= file.size() => {}
            _ => return Err(Error::corrupt(8, "backing file name lies outside the first cluster")),
        }
        let mut name = vec![0u8; len as usize];
        file.read_exact_at(offset, &mut name).map_err(Error::io(offset))?;
        let name = String::from_utf8(name).map_err(|_| Error::corrupt(offset, "backing file name is not UTF-8"))?;
        self.backing_file = Some(name);
        Ok(())
    }

    /// Entries per L2 table: 8-byte entries, or 16 with extended L2.
    pub fn l2_entries(&self) -> u64 {
        self.cluster.bytes() / if self.extended_l2() { 16 } else { 8 }
    }

    pub fn extended_l2(&self) -> bool {
        self.incompatible & INCOMPAT_EXTL2 != 0
    }

    fn check_l1(&self, file_size: u64) -> Result<()> {
        let clusters = self.size.div_ceil(self.cluster.bytes());
        let needed = clusters.div_ceil(self.l2_entries());
        if (self.l1_size as u64) < needed {
            return Err(Error::corrupt(
                36,
                format!("L1 table of {} entries cannot map {} bytes", self.l1_size, self.size),
            ));
        }
        let bytes = self.l1_size as u64 * 8;
        if bytes > MAX_L1_BYTES {
            return Err(Error::Unsupported(format!("L1 table of {bytes} bytes is above the limit of {MAX_L1_BYTES}")));
        }
        if self.l1_size > 0 {
            if self.l1_table_offset & self.cluster.mask() != 0 {
                return Err(Error::corrupt(
                    40,
                    format!("L1 table offset {:#x} is not cluster aligned", self.l1_table_offset),
                ));
            }
            match self.l1_table_offset.checked_add(bytes) {
                Some(end) if end <= file_size => {}
                _ => {
                    return Err(Error::corrupt(
                        40,
                        format!(
                            "L1 table at {:#x} ({bytes} bytes) lies past the end of the file ({file_size} bytes)",
                            self.l1_table_offset
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The name of feature `bit` of `kind` (0 incompatible, 1 compatible,
    /// 2 autoclear) from the image's feature name table.
    pub fn feature_name(&self, kind: u8, bit: u8) -> Option<&str> {
        self.feature_names.iter().find(|(k, b, _)| *k == kind && *b == bit).map(|(_, _, n)| n.as_str())
    }

    /// Human-readable names of the features in use.
    pub fn features(&self) -> Vec<String> {
        let mut f = Vec::new();
        let named = [
            (self.incompatible & INCOMPAT_DIRTY != 0, "dirty"),
            (self.incompatible & INCOMPAT_CORRUPT != 0, "corrupt"),
            (self.incompatible & INCOMPAT_COMPRESSION != 0, "compression-type"),
            (self.extended_l2(), "extended-l2"),
            (self.compatible & COMPAT_LAZY_REFCOUNTS != 0, "lazy-refcounts"),
            (self.autoclear & AUTOCLEAR_BITMAPS != 0 || self.has_bitmaps_ext, "bitmaps"),
            (self.nb_snapshots > 0, "internal-snapshots"),
        ];
        for (on, name) in named {
            if on {
                f.push(name.to_string());
            }
        }
        f
    }
}
