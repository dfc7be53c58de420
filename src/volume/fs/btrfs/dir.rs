//! Directory items ("Dir item", also the layout of xattr items) and root
//! refs, which say where a subvolume is linked.

use crate::volume::fs::FsError;

use super::consts::*;
use super::le::{u16_at, u64_at};
use super::node::Key;

/// The longest name btrfs stores (BTRFS_NAME_LEN).
const MAX_NAME: usize = 255;

#[derive(Debug, Clone)]
pub struct DirItem {
    /// An inode of the same tree (INODE_ITEM) or a subvolume (ROOT_ITEM).
    pub location: Key,
    pub ty: u8,
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

/// Every entry packed in one item (xattr items with colliding name hashes
/// share an item; directory index items hold one).
pub fn parse_items(b: &[u8], at: u64) -> Result<Vec<DirItem>, FsError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let e = &b[pos..];
        let bad = |what: String| FsError::corrupt(at + pos as u64, what);
        if e.len() < DIR_ITEM_SIZE {
            return Err(bad("truncated directory item".into()));
        }
        let (data_len, name_len) = (usize::from(u16_at(e, 25)), usize::from(u16_at(e, 27)));
        let end = DIR_ITEM_SIZE + name_len + data_len;
        if end > e.len() {
            return Err(bad(format!("directory item of {name_len}+{data_len} bytes leaves its item")));
        }
        out.push(DirItem {
            location: Key::parse(e),
            ty: e[29],
            name: e[DIR_ITEM_SIZE..DIR_ITEM_SIZE + name_len].to_vec(),
            data: e[DIR_ITEM_SIZE + name_len..end].to_vec(),
        });
        pos += end;
    }
    Ok(out)
}

/// One directory index item: exactly one entry with a sane name.
pub fn parse_index(b: &[u8], at: u64) -> Result<DirItem, FsError> {
    let mut items = parse_items(b, at)?;
    if items.len() != 1 {
        return Err(FsError::corrupt(at, format!("directory index item with {} entries", items.len())));
    }
    let item = items.pop().expect("one");
    if item.name.len() > MAX_NAME {
        return Err(FsError::corrupt(at, format!("name of {} bytes", item.name.len())));
    }
    Ok(item)
}

/// A root ref ("Root ref"): the folder and name a subvolume is linked at.
pub fn parse_root_ref(b: &[u8], at: u64) -> Result<(u64, Vec<u8>), FsError> {
    let bad = || FsError::corrupt(at, "truncated root ref");
    if b.len() < 18 {
        return Err(bad());
    }
    let len = usize::from(u16_at(b, 16));
    let name = b.get(18..18 + len).ok_or_else(bad)?;
    Ok((u64_at(b, 0), name.to_vec()))
}
