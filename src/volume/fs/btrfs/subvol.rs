//! Subvolumes ("Root item"): every FS tree the root tree lists, numbered in
//! id order so node ids stay deterministic, and the links that make them
//! folders of their parents (root refs, checked the way the kernel does: a
//! copied link in a snapshot of the parent shows an empty folder).

use std::ops::ControlFlow;

use crate::volume::fs::{FsError, NodeId};

use super::consts::*;
use super::le::u64_at;
use super::node::Key;
use super::tree::{Root, Trees};

/// Most subvolumes (and snapshots) one filesystem may hold: the slot is 16
/// bits of a node id.
pub const MAX_SUBVOLUMES: usize = 1 << 16;
/// Bits of a node id that carry the inode number; the slot sits above.
const INO_BITS: u32 = 32;
/// The inode number of the empty folder shown for a subvolume link that
/// does not resolve (BTRFS_EMPTY_SUBVOL_DIR_OBJECTID).
pub const EMPTY_SUBVOL_DIR: u64 = 2;

#[derive(Debug, Clone, Copy)]
pub struct Subvol {
    pub id: u64,
    pub root: Root,
    /// The inode number of its top folder (256).
    pub root_dirid: u64,
}

/// Every live subvolume the root tree lists, the top level (5) first.
pub fn list(trees: &Trees, root_tree: Root) -> Result<Vec<Subvol>, FsError> {
    let mut subvols: Vec<Subvol> = Vec::new();
    let (min, max) =
        (Key::new(FS_TREE_OBJECTID, ROOT_ITEM_KEY, 0), Key::new(LAST_FREE_OBJECTID, ROOT_ITEM_KEY, u64::MAX));
    trees.walk(root_tree, min, max, &mut |key, data, at| {
        let is_fs_tree = key.objectid == FS_TREE_OBJECTID || key.objectid >= FIRST_FREE_OBJECTID;
        if key.ty != ROOT_ITEM_KEY || !is_fs_tree {
            return Ok(ControlFlow::Continue(()));
        }
        let Some(sv) = parse_root_item(key.objectid, data, at)? else {
            return Ok(ControlFlow::Continue(()));
        };
        if subvols.last().is_some_and(|last| last.id == sv.id) {
            subvols.pop();
        }
        if subvols.len() >= MAX_SUBVOLUMES {
            return Err(FsError::Unsupported(format!("more than {MAX_SUBVOLUMES} subvolumes")));
        }
        subvols.push(sv);
        Ok(ControlFlow::Continue(()))
    })?;
    if subvols.first().is_none_or(|s| s.id != FS_TREE_OBJECTID) {
        return Err(FsError::corrupt(0, "the root tree has no top-level subvolume (tree 5)"));
    }
    Ok(subvols)
}

/// A root item's tree root; `None` for a subvolume being deleted.
pub fn parse_root_item(id: u64, b: &[u8], at: u64) -> Result<Option<Subvol>, FsError> {
    if b.len() < ROOT_ITEM_MIN_SIZE {
        return Err(FsError::corrupt(at, format!("root item of tree {id} has {} bytes", b.len())));
    }
    let refs = u32::from_le_bytes(b[216..220].try_into().expect("4 bytes"));
    if refs == 0 {
        return Ok(None);
    }
    let level = b[238];
    if level >= MAX_LEVEL {
        return Err(FsError::corrupt(at + 238, format!("tree {id} at level {level}")));
    }
    Ok(Some(Subvol { id, root: Root { bytenr: u64_at(b, 176), level }, root_dirid: u64_at(b, 168) }))
}

/// The node id of inode `ino` of the subvolume in `slot`.
pub fn node_id(slot: usize, ino: u64, at: u64) -> Result<NodeId, FsError> {
    if ino >> INO_BITS != 0 {
        return Err(FsError::Unsupported(format!("inode number {ino} (at byte {at}) above 2^{INO_BITS}")));
    }
    Ok((slot as u64) << INO_BITS | ino)
}

/// The (slot, inode number) of a node id.
pub fn split(node: NodeId) -> (usize, u64) {
    ((node >> INO_BITS) as usize, node & ((1 << INO_BITS) - 1))
}

/// Whether subvolume `child` is linked as `name` in folder `dirid` of
/// subvolume `parent`, as its root ref says.
pub fn linked_at(
    trees: &Trees,
    root_tree: Root,
    parent: u64,
    child: u64,
    dirid: u64,
    name: &[u8],
) -> Result<bool, FsError> {
    let Some((data, at)) = trees.get(root_tree, Key::new(parent, ROOT_REF_KEY, child))? else {
        return Ok(false);
    };
    let (ref_dir, ref_name) = super::dir::parse_root_ref(&data, at)?;
    Ok(ref_dir == dirid && ref_name == name)
}
