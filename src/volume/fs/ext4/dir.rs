//! Linear directory entries (ext4 documentation section 4.4.1, "Linear
//! (Classic) Directories"). Hashed (htree) folders keep their entries in the
//! same leaf format; their index blocks look like one empty entry spanning
//! the block (section 4.4.2), so a linear scan of every block lists an htree
//! folder completely and in on-disk order.

use crate::volume::fs::FsError;

const DIRENT_HEADER_LEN: usize = 8;

pub struct RawEntry {
    pub inode: u32,
    pub name: Vec<u8>,
}

/// Appends the live entries of one folder block (skipping `.`, `..`, deleted
/// entries and checksum tails). `at` is the block's byte offset, for errors.
pub fn parse_block(block: &[u8], at: u64, out: &mut Vec<RawEntry>) -> Result<(), FsError> {
    let mut pos = 0usize;
    while pos + DIRENT_HEADER_LEN <= block.len() {
        let inode = u32::from_le_bytes([block[pos], block[pos + 1], block[pos + 2], block[pos + 3]]);
        let rec_len = usize::from(u16::from_le_bytes([block[pos + 4], block[pos + 5]]));
        let name_len = usize::from(block[pos + 6]);
        if rec_len < DIRENT_HEADER_LEN || rec_len % 4 != 0 || pos + rec_len > block.len() {
            // rec_len 0 with a 64 KiB block encodes the whole block; every
            // other malformed length stops the scan of this block.
            if rec_len == 0 && block.len() == 65536 && pos == 0 {
                return Ok(());
            }
            return Err(FsError::corrupt(at + pos as u64, format!("directory entry length {rec_len}")));
        }
        if inode != 0 {
            if DIRENT_HEADER_LEN + name_len > rec_len || name_len == 0 {
                return Err(FsError::corrupt(at + pos as u64, format!("directory name length {name_len}")));
            }
            let name = &block[pos + DIRENT_HEADER_LEN..pos + DIRENT_HEADER_LEN + name_len];
            if name != b"." && name != b".." {
                out.push(RawEntry { inode, name: name.to_vec() });
            }
        }
        pos += rec_len;
    }
    Ok(())
}
