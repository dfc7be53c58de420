//! Folder data blocks (§"Block Directories", §"Leaf Directories"): a
//! header, then 8-byte-aligned entries and free regions. A single-block
//! folder keeps its hash leaf and a tail at the block's end.

use super::RawEntry;
use crate::volume::fs::FsError;
use crate::volume::fs::xfs::be::{be16, be32, be64};
use crate::volume::fs::xfs::consts::*;
use crate::volume::fs::xfs::crc;

/// What a data block must look like: v5 (CRC header, owner) or v4, and
/// whether entries carry a file-type byte.
pub struct Format {
    pub v5: bool,
    pub ftype: bool,
    pub owner: u64,
    pub uuid: [u8; 16],
}

/// Parses one folder block read from byte `at`, appending its entries
/// (`.` and `..` are left out).
pub fn parse(b: &[u8], f: &Format, at: u64, out: &mut Vec<RawEntry>) -> Result<(), FsError> {
    let bad = |what: String| FsError::corrupt(at, format!("folder block of inode {}: {what}", f.owner));
    let magic = be32(b, 0);
    let (block_magic, data_magic, hdr) = if f.v5 {
        (DIR3_BLOCK_MAGIC, DIR3_DATA_MAGIC, DIR3_DATA_HDR)
    } else {
        (DIR2_BLOCK_MAGIC, DIR2_DATA_MAGIC, DIR2_DATA_HDR)
    };
    if magic != block_magic && magic != data_magic {
        return Err(bad(format!("bad magic {magic:#010x}")));
    }
    if f.v5 {
        crc::verify(b, DIR3_CRC_OFF, at, &format!("folder block of inode {}", f.owner))?;
        let owner = be64(b, 40);
        if owner != f.owner || b[24..40] != f.uuid {
            return Err(bad(format!("belongs to inode {owner}")));
        }
    }
    let end = if magic == block_magic {
        let count = be32(b, b.len() - DIR2_BLOCK_TAIL) as usize;
        count
            .checked_mul(DIR2_LEAF_ENTRY)
            .and_then(|l| (b.len() - DIR2_BLOCK_TAIL).checked_sub(l))
            .filter(|&e| e >= hdr)
            .ok_or_else(|| bad(format!("{count} leaf entries")))?
    } else {
        b.len()
    };
    let mut pos = hdr;
    while pos < end {
        if end - pos < DIR2_DATA_ALIGN {
            return Err(bad(format!("entry at {pos} past the end")));
        }
        if be16(b, pos) == DIR2_DATA_FREE_TAG {
            let len = usize::from(be16(b, pos + 2));
            if len == 0 || len % DIR2_DATA_ALIGN != 0 || pos + len > end {
                return Err(bad(format!("free region of {len} bytes at {pos}")));
            }
            pos += len;
            continue;
        }
        // inumber (8), namelen (1), name, [ftype (1)], tag (2), aligned.
        let ino = be64(b, pos);
        let namelen = usize::from(b[pos + 8]);
        let len = (8 + 1 + namelen + usize::from(f.ftype) + 2).div_ceil(DIR2_DATA_ALIGN) * DIR2_DATA_ALIGN;
        if namelen == 0 || pos + len > end {
            return Err(bad(format!("entry at {pos} past the end")));
        }
        let name = &b[pos + 9..pos + 9 + namelen];
        if name != b"." && name != b".." {
            out.push(RawEntry { name: name.to_vec(), ino });
        }
        pos += len;
    }
    Ok(())
}
