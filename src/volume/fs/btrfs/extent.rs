//! File extent items ("File extent item"): where each range of a file's
//! bytes lives. Inline extents carry their (maybe compressed) bytes in the
//! leaf; regular extents point at a range of a disk extent (compressed
//! extents are expanded whole, then cut); prealloc extents and ranges no
//! item covers (holes, with or without the no-holes feature) read as zeros.

use crate::volume::fs::FsError;

use super::consts::*;
use super::le::u64_at;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// The item's bytes, still compressed when `compression != 0`.
    Inline {
        compression: u8,
        ram_bytes: u64,
        bytes: Vec<u8>,
    },
    /// `disk_bytenr == 0` is a hole.
    Regular {
        compression: u8,
        disk_bytenr: u64,
        disk_num_bytes: u64,
        offset: u64,
        ram_bytes: u64,
    },
    Zeros,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileExtent {
    /// The file offset of the first byte.
    pub start: u64,
    pub len: u64,
    pub data: Data,
}

impl FileExtent {
    pub fn parse(start: u64, b: &[u8], at: u64) -> Result<FileExtent, FsError> {
        let bad = |what: String| FsError::corrupt(at, format!("file extent at file offset {start}: {what}"));
        if b.len() < FILE_EXTENT_INLINE_HEADER || start > MAX_FILE_SIZE {
            return Err(bad(format!("{} bytes", b.len())));
        }
        let (ram_bytes, compression, ty) = (u64_at(b, 8), b[16], b[20]);
        if b[17] != 0 || b[18] != 0 || b[19] != 0 {
            return Err(FsError::Unsupported(format!("encrypted or encoded file extent at byte {at}")));
        }
        if compression > COMPRESS_ZSTD {
            return Err(FsError::Unsupported(format!("compression type {compression} at byte {at}")));
        }
        let (len, data) = match ty {
            EXTENT_INLINE => {
                let bytes = b[FILE_EXTENT_INLINE_HEADER..].to_vec();
                if compression == COMPRESS_NONE && ram_bytes != bytes.len() as u64 {
                    return Err(bad(format!("inline extent of {} bytes claims {ram_bytes}", bytes.len())));
                }
                // An inline extent never holds more than a sector.
                if ram_bytes > u64::from(MAX_SECTORSIZE) {
                    return Err(bad(format!("inline extent of {ram_bytes} bytes")));
                }
                (ram_bytes, Data::Inline { compression, ram_bytes, bytes })
            }
            EXTENT_REGULAR | EXTENT_PREALLOC => {
                if b.len() < FILE_EXTENT_REGULAR_SIZE {
                    return Err(bad(format!("{} bytes", b.len())));
                }
                let (disk_bytenr, disk_num_bytes) = (u64_at(b, 21), u64_at(b, 29));
                let (offset, num_bytes) = (u64_at(b, 37), u64_at(b, 45));
                if start.checked_add(num_bytes).is_none_or(|end| end > MAX_FILE_SIZE) {
                    return Err(bad(format!("{num_bytes} bytes pass btrfs's largest file")));
                }
                if compression != COMPRESS_NONE && (ram_bytes > MAX_COMPRESSED || disk_num_bytes > MAX_COMPRESSED) {
                    return Err(bad(format!("compressed extent of {disk_num_bytes} → {ram_bytes} bytes")));
                }
                let fits = offset.checked_add(num_bytes).is_some_and(|end| {
                    if compression == COMPRESS_NONE { end <= disk_num_bytes } else { end <= ram_bytes }
                });
                if disk_bytenr != 0 && (!fits || disk_bytenr.checked_add(disk_num_bytes).is_none()) {
                    return Err(bad(format!("range {offset}+{num_bytes} leaves its disk extent")));
                }
                let data = if ty == EXTENT_PREALLOC || disk_bytenr == 0 {
                    Data::Zeros
                } else {
                    Data::Regular { compression, disk_bytenr, disk_num_bytes, offset, ram_bytes }
                };
                (num_bytes, data)
            }
            other => return Err(bad(format!("type {other}"))),
        };
        Ok(FileExtent { start, len, data })
    }
}

/// A file's extents in file order, without overlaps.
#[derive(Debug, Default)]
pub struct ExtentMap {
    pub extents: Vec<FileExtent>,
}

impl ExtentMap {
    /// Appends the next item; extents must not overlap the previous one.
    pub fn push(&mut self, e: FileExtent, at: u64) -> Result<(), FsError> {
        if let Some(prev) = self.extents.last()
            && prev.start + prev.len > e.start
        {
            return Err(FsError::corrupt(at, format!("file extent at {} overlaps the previous one", e.start)));
        }
        if e.len > 0 {
            self.extents.push(e);
        }
        Ok(())
    }

    /// The extent holding `pos`, or where the hole at `pos` ends.
    pub fn find(&self, pos: u64) -> Result<&FileExtent, u64> {
        let i = self.extents.partition_point(|e| e.start + e.len <= pos);
        match self.extents.get(i) {
            Some(e) if e.start <= pos => Ok(e),
            Some(e) => Err(e.start),
            None => Err(u64::MAX),
        }
    }
}
