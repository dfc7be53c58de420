//! What `backchain info` reports about an image and its chain.

use super::chain::{Chain, Format};
use super::error::Result;
use super::header::Header;
use super::l2::Mapping;
use crate::block::ReadAt;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Serialize)]
pub struct LayerInfo {
    pub path: Option<PathBuf>,
    pub format: Format,
    pub virtual_size: u64,
    pub file_size: u64,
    pub cluster_size: Option<u64>,
    pub version: Option<u32>,
    /// Guest bytes this layer itself stores (data, not zero clusters).
    pub allocated_bytes: u64,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub compression_type: Option<&'static str>,
    pub refcount_bits: Option<u32>,
    pub snapshots: Option<u32>,
    pub features: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ChainInfo {
    pub virtual_size: u64,
    pub depth: usize,
    pub layers: Vec<LayerInfo>,
}

/// Describes every layer of `chain`; walks each QCOW2 layer's L2 tables to
/// count its allocated bytes.
pub fn info(chain: &Chain) -> Result<ChainInfo> {
    let mut layers = Vec::new();
    for layer in chain.layers() {
        let file_size = layer.file().size();
        let li = match layer.image() {
            Some(img) => {
                let h: &Header = &img.header;
                LayerInfo {
                    path: layer.path.clone(),
                    format: Format::Qcow2,
                    virtual_size: h.size,
                    file_size,
                    cluster_size: Some(h.cluster.bytes()),
                    version: Some(h.version),
                    allocated_bytes: allocated(img)?,
                    backing_file: h.backing_file.clone(),
                    backing_format: h.backing_format.clone(),
                    compression_type: Some(h.compression.name()),
                    refcount_bits: Some(1 << h.refcount_order),
                    snapshots: Some(h.nb_snapshots),
                    features: h.features(),
                }
            }
            None => LayerInfo {
                path: layer.path.clone(),
                format: Format::Raw,
                virtual_size: layer.virtual_size(),
                file_size,
                cluster_size: None,
                version: None,
                allocated_bytes: file_size,
                backing_file: None,
                backing_format: None,
                compression_type: None,
                refcount_bits: None,
                snapshots: None,
                features: Vec::new(),
            },
        };
        layers.push(li);
    }
    Ok(ChainInfo { virtual_size: chain.virtual_size(), depth: layers.len(), layers })
}

fn allocated(img: &super::Image) -> Result<u64> {
    let h = &img.header;
    let cs = h.cluster.bytes();
    let entries = h.l2_entries();
    let mut total = 0u64;
    for i in 0..img.l1().len() as u64 {
        if img.l2_table(i)?.is_none() {
            continue;
        }
        let first = i * entries;
        for c in first..first + entries {
            let mut off = c * cs;
            let end = ((c + 1) * cs).min(h.size);
            while off < end {
                let (m, len) = img.map(off)?;
                let len = len.min(end - off);
                if matches!(m, Mapping::Data(_) | Mapping::Compressed { .. }) {
                    total += len;
                }
                off += len;
            }
        }
    }
    Ok(total)
}
