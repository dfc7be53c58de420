//! `$Secure:$SDS`, the stream holding every security descriptor of an NTFS
//! 3.x volume (NTFS docs "$Secure"). Each entry is a 20-byte header (hash,
//! security id, the entry's own offset in the stream, its length) and the
//! self-relative descriptor, 16-byte aligned, in 256 KiB blocks that each
//! have a mirror copy right after them.
//!
//! The stream is scanned once into a map of security id → entry rather than
//! walking the $SII index: it is small (a few descriptors per distinct
//! permission set), and the scan checks every entry's own offset field.

use super::NtfsFs;
use super::data::Stream;
use super::layout::*;
use super::record::Body;
use crate::volume::fs::FsError;
use std::collections::HashMap;

/// $SDS entry header fields.
const SDS_ID: usize = 4;
const SDS_OFFSET: usize = 8;
const SDS_LENGTH: usize = 16;
const SDS_HEADER: u64 = 20;
const SDS_ALIGN: u64 = 16;
/// Blocks of descriptors, each followed by its mirror.
const SDS_BLOCK: u64 = 256 * 1024;
/// Largest $SDS scanned.
pub const MAX_SDS: u64 = 64 << 20;
/// Largest security descriptor (a 64 KiB ACL plus owner and group SIDs).
pub const MAX_DESCRIPTOR: u64 = 128 * 1024;
/// Most descriptors kept in the map.
const MAX_DESCRIPTORS: usize = 1 << 20;

/// Where each security id's descriptor is in $SDS.
pub struct Index {
    sds: Stream,
    entries: HashMap<u32, (u64, u32)>,
}

impl Index {
    pub fn load(fs: &NtfsFs) -> Result<Index, FsError> {
        let (_, attrs) = fs.load_attrs(FRN_SECURE)?;
        let sds_name: Vec<u16> = "$SDS".encode_utf16().collect();
        let extents: Vec<_> = attrs
            .iter()
            .filter(|a| a.ty == AT_DATA && a.name == sds_name)
            .filter_map(|a| match &a.body {
                Body::NonResident(nr) => Some(nr.clone()),
                Body::Resident(_) => None,
            })
            .collect();
        if extents.is_empty() {
            return Err(FsError::corrupt(FRN_SECURE, "no non-resident $SDS stream"));
        }
        let sds = Stream::from_extents(extents, fs.cluster, FRN_SECURE, false)?;
        if sds.size > MAX_SDS {
            return Err(FsError::Unsupported(format!("$SDS of {} bytes (over {MAX_SDS})", sds.size)));
        }
        let mut entries = HashMap::new();
        let mut pos = 0u64;
        let mut head = [0u8; SDS_HEADER as usize];
        while pos + SDS_HEADER <= sds.size && entries.len() < MAX_DESCRIPTORS {
            sds.read(&*fs.vol, &fs.units, u64::MAX, pos, &mut head)?;
            let id = u32::from_le_bytes(head[SDS_ID..SDS_ID + 4].try_into().unwrap_or_default());
            let own = u64::from_le_bytes(head[SDS_OFFSET..SDS_OFFSET + 8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(head[SDS_LENGTH..SDS_LENGTH + 4].try_into().unwrap_or_default());
            let block_end = (pos / SDS_BLOCK + 1) * SDS_BLOCK;
            let valid = own == pos
                && u64::from(len) > SDS_HEADER
                && u64::from(len) - SDS_HEADER <= MAX_DESCRIPTOR
                && pos + u64::from(len) <= block_end.min(sds.size);
            if valid {
                entries.entry(id).or_insert((pos + SDS_HEADER, len - SDS_HEADER as u32));
                pos = (pos + u64::from(len)).div_ceil(SDS_ALIGN) * SDS_ALIGN;
            } else {
                // The rest of the block is free; skip its mirror too.
                pos = block_end + SDS_BLOCK;
            }
            if pos.is_multiple_of(SDS_BLOCK) && !(pos / SDS_BLOCK).is_multiple_of(2) {
                pos += SDS_BLOCK;
            }
        }
        Ok(Index { sds, entries })
    }

    pub fn descriptor(&self, fs: &NtfsFs, id: u32) -> Result<Option<Vec<u8>>, FsError> {
        let Some(&(at, len)) = self.entries.get(&id) else { return Ok(None) };
        let mut v = vec![0u8; len as usize];
        self.sds.read(&*fs.vol, &fs.units, u64::MAX, at, &mut v)?;
        Ok(Some(v))
    }
}
