//! LVM2: physical volumes found on partitions and whole disks, their
//! volume groups assembled across the disks of one backup, and logical
//! volumes served as [`ReadAt`] windows over their segment maps — all in
//! userspace, with no device-mapper.
//!
//! The stages, one module each, with a type between each pair:
//! * `label` — the PV label in the first four sectors: the PV UUID and where
//!   the data and metadata areas lie ([`Label`]);
//! * `mda` — a metadata area: its header and the circular text buffer,
//!   every CRC checked ([`MetadataCopy`]);
//! * `text` — the LVM2 text format, parsed with named limits ([`text::Section`]);
//! * `metadata` — the VG, its PVs, LVs and segments out of the text ([`VgMeta`]);
//! * `vg` — PVs matched to VGs by UUID, the newest valid metadata chosen ([`Vg`]);
//! * `lv` — linear and striped LVs as a [`ReadAt`] ([`LvReader`]); every
//!   other segment type is listed with the reason it cannot be read.
//!
//! VGs are identified by UUID, never by name. Disks are identified by
//! their index in the backup, which callers pass in.
#![forbid(unsafe_code)]

mod consts;
mod label;
mod lv;
mod mda;
mod metadata;
pub mod text;
mod vg;

use std::io;

use crate::block::ReadAt;

pub use consts::{MAX_DEPTH, MAX_ITEMS, MAX_LVS, MAX_PVS, MAX_SEGMENTS, MAX_STRIPES, MAX_TEXT_LEN};
pub use label::{Label, read_label};
pub use lv::LvReader;
pub use mda::{MetadataCopy, read_metadata};
pub use metadata::{LvMeta, PvMeta, SegKind, SegMeta, VgMeta};
pub use vg::{Lv, LvData, PvFound, Scan, Vg, describe_pv, scan, scan_pv};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LvmError {
    #[error("corrupt LVM2 {what} (at byte {offset})")]
    Corrupt { offset: u64, what: String },
    #[error("unsupported LVM2 {what} (at byte {offset})")]
    Unsupported { offset: u64, what: String },
    #[error("cannot read LVM2 data at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl LvmError {
    pub(crate) fn corrupt(offset: u64, what: impl Into<String>) -> Self {
        LvmError::Corrupt { offset, what: what.into() }
    }
    pub(crate) fn unsupported(offset: u64, what: impl Into<String>) -> Self {
        LvmError::Unsupported { offset, what: what.into() }
    }
}

/// Reads exactly `buf.len()` bytes at `offset`, naming the offset on failure.
fn read(src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<(), LvmError> {
    src.read_exact_at(offset, buf).map_err(|source| LvmError::Io { offset, source })
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// LVM2's CRC of `data` from `state` (see `consts::INITIAL_CRC`).
fn crc(state: u32, data: &[u8]) -> u32 {
    crate::volume::table::crc32_update(state, data)
}

/// A UUID as LVM2 stores it, without the hyphens the text format adds.
fn uuid_key(s: &str) -> String {
    s.chars().filter(|&c| c != '-').collect()
}

/// A UUID key in the hyphenated 6-4-4-4-4-4-6 form LVM2's tools print.
pub fn uuid_text(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 6);
    for (i, c) in key.chars().enumerate() {
        if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// Fuzz entry point for the metadata text parser and the VG model: parse
/// `data` as metadata text; errors are fine, panics and hangs are not.
pub fn fuzz_metadata(data: &[u8]) {
    if let Ok(root) = text::parse(data) {
        let _ = metadata::VgMeta::from_text(&root);
    }
}

/// Fuzz entry point for a whole PV: label, metadata areas and text, then
/// every readable LV read at its start and end.
pub fn fuzz_pv(data: &[u8]) {
    let disk: std::sync::Arc<dyn ReadAt> = std::sync::Arc::new(crate::block::MemImage(data.to_vec()));
    let s = scan(&[(0, disk)]);
    for vg in &s.vgs {
        for lv in &vg.lvs {
            if let LvData::Readable(r) = &lv.data {
                let mut b = [0u8; 512];
                let n = r.size().min(512) as usize;
                let _ = r.read_exact_at(0, &mut b[..n]);
                let _ = r.status(0, r.size().max(1));
                let _ = r.read_exact_at(r.size().saturating_sub(n as u64), &mut b[..n]);
            }
        }
    }
}
