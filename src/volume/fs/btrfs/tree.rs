//! Reading trees: logical addresses through the chunk map, checked blocks
//! through a cache, and range walks over keys. With DUP metadata a block
//! whose first copy fails its checks is read from the second, as the kernel
//! does.
//!
//! Walks only ever descend one level at a time, key pointers must increase
//! within a node, and a child must start with the key its parent gives it:
//! so a walk visits each block of the range at most once, whatever a hostile
//! image points where.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use crate::block::{Lru, ReadAt};
use crate::volume::fs::FsError;

use super::chunk::ChunkMap;
use super::consts::*;
use super::lock;
use super::node::{Key, Node};

/// Tree blocks kept (16 KiB each by default: 16 MiB).
const NODE_CACHE: usize = 1024;

/// Where a tree starts: its root block and that block's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub bytenr: u64,
    pub level: u8,
}

/// What a walk's visitor returns: go on, or stop.
pub type Flow = Result<ControlFlow<()>, FsError>;

pub struct Trees {
    pub volume: Arc<dyn ReadAt>,
    pub chunks: ChunkMap,
    pub nodesize: u32,
    pub fsid: [u8; 16],
    cache: Mutex<Lru<u64, Arc<Node>>>,
}

impl Trees {
    pub fn new(volume: Arc<dyn ReadAt>, chunks: ChunkMap, nodesize: u32, fsid: [u8; 16]) -> Trees {
        Trees { volume, chunks, nodesize, fsid, cache: Mutex::new(Lru::new(NODE_CACHE)) }
    }

    /// Reads `buf.len()` bytes at logical address `logical` from the first
    /// copy that `check` accepts (all copies are tried before failing).
    pub fn read_logical<T>(
        &self,
        logical: u64,
        buf: &mut [u8],
        check: impl Fn(&mut [u8], u64) -> Result<T, FsError>,
    ) -> Result<T, FsError> {
        let (mirrors, room) = self.chunks.map(logical)?;
        if room < buf.len() as u64 {
            return Err(FsError::corrupt(
                mirrors[0],
                format!("{} bytes at logical {logical} cross a chunk", buf.len()),
            ));
        }
        let mut first_err = None;
        for physical in mirrors {
            let result =
                self.volume.read_exact_at(physical, buf).map_err(FsError::from).and_then(|()| check(buf, physical));
            match result {
                Ok(v) => return Ok(v),
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        Err(first_err.expect("a chunk has at least one copy"))
    }

    /// The checked tree block at `logical`, expected at `level`.
    pub fn node(&self, logical: u64, level: u8) -> Result<Arc<Node>, FsError> {
        if let Some(n) = lock(&self.cache).get(&logical) {
            return check_level(n, logical, level);
        }
        let mut buf = vec![0u8; self.nodesize as usize];
        let node = self.read_logical(logical, &mut buf, |b, physical| {
            Node::parse(b.to_vec(), logical, physical, &self.fsid)
                .and_then(|n| check_level(Arc::new(n), logical, level))
        })?;
        lock(&self.cache).insert(logical, node.clone());
        Ok(node)
    }

    /// Calls `visit(key, data, at)` for every item with `min <= key <= max`
    /// in key order, until it returns `Break`.
    pub fn walk(
        &self,
        root: Root,
        min: Key,
        max: Key,
        visit: &mut dyn FnMut(Key, &[u8], u64) -> Flow,
    ) -> Result<(), FsError> {
        let node = self.node(root.bytenr, root.level)?;
        self.walk_node(&node, min, max, visit).map(|_| ())
    }

    fn walk_node(&self, node: &Node, min: Key, max: Key, visit: &mut dyn FnMut(Key, &[u8], u64) -> Flow) -> Flow {
        if node.level == 0 {
            // Items before `min` are skipped by binary search.
            let mut i = node.upper_bound(&min);
            if i > 0 && node.key(i - 1) == min {
                i -= 1;
            }
            while i < node.nritems {
                let key = node.key(i);
                if key > max {
                    return Ok(ControlFlow::Break(()));
                }
                let (data, at) = node.item(i)?;
                if visit(key, data, at)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
                i += 1;
            }
            return Ok(ControlFlow::Continue(()));
        }
        // The last child whose first key is <= min may hold min.
        let start = node.upper_bound(&min).saturating_sub(1);
        for i in start..node.nritems {
            let key = node.key(i);
            if key > max {
                return Ok(ControlFlow::Break(()));
            }
            if i + 1 < node.nritems && node.key(i + 1) <= key {
                return Err(FsError::corrupt(node.physical, format!("key pointers out of order at slot {i}")));
            }
            let child = self.node(node.child(i), node.level - 1)?;
            if child.nritems > 0 && child.key(0) != key {
                return Err(FsError::corrupt(child.physical, "tree block does not start with its parent's key"));
            }
            if self.walk_node(&child, min, max, visit)?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// The data of the item with exactly `key`, if any.
    pub fn get(&self, root: Root, key: Key) -> Result<Option<(Vec<u8>, u64)>, FsError> {
        let mut found = None;
        self.walk(root, key, key, &mut |_, data, at| {
            found = Some((data.to_vec(), at));
            Ok(ControlFlow::Break(()))
        })?;
        Ok(found)
    }
}

fn check_level(node: Arc<Node>, logical: u64, level: u8) -> Result<Arc<Node>, FsError> {
    if node.level != level {
        return Err(FsError::corrupt(
            node.physical,
            format!("tree block {logical} is at level {}, expected {level}", node.level),
        ));
    }
    Ok(node)
}

/// A chunk tree or root tree key range covering every item of one type.
pub fn all_of(objectid: u64, ty: u8) -> (Key, Key) {
    (Key::new(objectid, ty, 0), Key::new(objectid, ty, u64::MAX))
}

/// Reads the chunk tree's chunk items into `chunks`.
pub fn load_chunk_tree(trees: &mut Trees, root: Root, devid: u64) -> Result<(), FsError> {
    let mut items = Vec::new();
    let (min, max) =
        (Key::new(FIRST_CHUNK_TREE_OBJECTID, CHUNK_ITEM_KEY, 0), Key::new(u64::MAX, CHUNK_ITEM_KEY, u64::MAX));
    trees.walk(root, min, max, &mut |key, data, at| {
        if key.ty == CHUNK_ITEM_KEY {
            items.push((key.offset, data.to_vec(), at));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    for (logical, data, at) in items {
        trees.chunks.add(logical, &data, at, devid)?;
    }
    Ok(())
}
