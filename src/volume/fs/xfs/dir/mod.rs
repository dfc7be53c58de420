//! Folders (§"Directories"). Short-form folders live in the inode; every
//! other form (block, leaf, node, btree) keeps its entries in data blocks
//! below 32 GiB of the folder's address space, with hash indexes above it.
//! Listing reads the data blocks in order; lookups use a name index built
//! from that listing, so the leaf and node hash blocks are never needed.

pub mod data;
pub mod shortform;

/// One entry as stored: its name and inode number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub ino: u64,
}
