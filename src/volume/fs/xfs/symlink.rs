//! Remote symlinks (§"Symbolic Links"): the target in data blocks, each
//! with a header carrying its CRC and owner on v5. Inline targets are the
//! inode's fork and need no parsing.

use super::be::{be32, be64};
use super::consts::*;
use super::crc;
use crate::volume::fs::FsError;

/// Appends the target bytes one symlink block holds. `block` was read at
/// byte `at`; `want` is how many bytes of the target are still missing.
pub fn block_bytes(
    block: &[u8],
    v5: bool,
    owner: u64,
    uuid: &[u8; 16],
    at: u64,
    want: usize,
    out: &mut Vec<u8>,
) -> Result<(), FsError> {
    if !v5 {
        out.extend_from_slice(&block[..want.min(block.len())]);
        return Ok(());
    }
    let what = format!("symlink block of inode {owner}");
    if be32(block, 0) != SYMLINK_MAGIC {
        return Err(FsError::corrupt(at, format!("{what}: bad magic")));
    }
    crc::verify(block, SYMLINK_CRC_OFF, at, &what)?;
    let stored_owner = be64(block, 32);
    if stored_owner != owner || block[16..32] != uuid[..] {
        return Err(FsError::corrupt(at, format!("{what}: belongs to inode {stored_owner}")));
    }
    let (offset, bytes) = (be32(block, 4) as usize, be32(block, 8) as usize);
    if offset != out.len() || bytes > want || SYMLINK_HDR + bytes > block.len() {
        return Err(FsError::corrupt(at, format!("{what}: {bytes} bytes at {offset}")));
    }
    out.extend_from_slice(&block[SYMLINK_HDR..SYMLINK_HDR + bytes]);
    Ok(())
}
