//! The header `finish` writes in the image's first cluster (QCOW2 spec,
//! "Header" and "Header extensions"): version 3, the tables' places, the
//! compression type, and for an incremental the backing file's name and
//! format.

use super::{REFCOUNT_ORDER, Writer};
use crate::qcow2::consts::*;
use crate::qcow2::error::{Error, Result};
use crate::qcow2::header::Compression;

impl Writer {
    pub(super) fn header(&self, l1_size: u32, l1_off: u64, rt_off: u64, rt_clusters: u32) -> Result<Vec<u8>> {
        let mut h = Vec::with_capacity(512);
        let zstd = self.opts.compression == Some(Compression::Zstd);
        h.extend_from_slice(&MAGIC.to_be_bytes());
        h.extend_from_slice(&3u32.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset, patched below
        h.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size, patched below
        h.extend_from_slice(&self.opts.cluster.bits().to_be_bytes());
        h.extend_from_slice(&self.size.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
        h.extend_from_slice(&l1_size.to_be_bytes());
        h.extend_from_slice(&l1_off.to_be_bytes());
        h.extend_from_slice(&rt_off.to_be_bytes());
        h.extend_from_slice(&rt_clusters.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
        h.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
        let incompat = if zstd { INCOMPAT_COMPRESSION } else { 0 };
        h.extend_from_slice(&incompat.to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes()); // compatible
        h.extend_from_slice(&0u64.to_be_bytes()); // autoclear
        h.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes());
        h.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
        h.push(if zstd { COMPRESSION_ZSTD } else { COMPRESSION_DEFLATE });
        h.resize(V3_HEADER_LEN as usize, 0);
        if let Some(name) = &self.opts.backing {
            push_ext(&mut h, EXT_BACKING_FORMAT, b"qcow2");
            push_ext(&mut h, EXT_END, b"");
            let at = h.len() as u64;
            h.extend_from_slice(name.as_bytes());
            h[8..16].copy_from_slice(&at.to_be_bytes());
            h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
        } else {
            push_ext(&mut h, EXT_END, b"");
        }
        if h.len() as u64 > self.opts.cluster.bytes() {
            return Err(Error::Unsupported("header and backing name do not fit in the first cluster".into()));
        }
        Ok(h)
    }
}

fn push_ext(h: &mut Vec<u8>, kind: u32, data: &[u8]) {
    h.extend_from_slice(&kind.to_be_bytes());
    h.extend_from_slice(&(data.len() as u32).to_be_bytes());
    h.extend_from_slice(data);
    h.resize(h.len().div_ceil(8) * 8, 0);
}
