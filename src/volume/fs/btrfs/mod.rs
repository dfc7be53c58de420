//! btrfs, read-only, single device (profiles single and DUP).
//!
//! The whole filesystem is served as `mount -o subvolid=5` shows it: the
//! top-level subvolume, with every other subvolume and snapshot as a folder
//! where it is linked. A node id is `(slot << 32) | inode`, where the slot
//! numbers subvolumes in id order, so ids are deterministic and unique
//! across subvolumes (inode numbers repeat from 256 in each). Every tree
//! block is checked (crc32c, uuid, address, level, bounds; DUP's second
//! copy when the first fails), and so is every data sector that has a
//! checksum: a bad block is an error for the folders and files under it
//! only. Everything is plain data behind mutex-guarded caches, so the
//! handle is `Send + Sync`.
#![forbid(unsafe_code)]

mod chunk;
mod compress;
mod consts;
mod csum;
mod data;
mod dir;
mod extent;
mod inode;
mod le;
mod lzo;
mod node;
mod subvol;
mod superblock;
mod tree;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use crate::block::{Lru, ReadAt};
use crate::volume::fs::{
    Attr, DirEntry, Filesystem, FsError, FsKind, FsStats, MAX_XATTR_LIST, MAX_XATTR_NAME, MAX_XATTR_VALUE, NodeId,
    NodeKind, Timestamp, Xattr,
};

use chunk::ChunkMap;
use consts::*;
use extent::{ExtentMap, FileExtent};
use inode::Inode;
use node::Key;
use subvol::{EMPTY_SUBVOL_DIR, Subvol};
use superblock::Superblock;
use tree::{Root, Trees, all_of};

/// Files whose extent lists stay cached (one per concurrently read file).
const MAP_CACHE: usize = 64;
/// Folders whose parsed listings stay cached (for lookups).
const DIR_CACHE: usize = 16;
/// Expanded compressed extents kept (128 KiB each at most).
const EXPANDED_CACHE: usize = 64;
/// Most entries one folder may list.
const MAX_DIR_ENTRIES: usize = 1 << 22;
/// Most extents one file may have (64 GiB of 32 KiB extents).
const MAX_FILE_EXTENTS: usize = 1 << 21;
/// Largest symlink target we read (Linux's PATH_MAX).
const MAX_SYMLINK_LEN: u64 = 4096;

/// A folder's entries: each name with its node, or why the entry cannot be
/// followed (kept so that a lookup by name reports it).
struct Listing {
    entries: Vec<(Vec<u8>, Result<NodeId, String>)>,
    by_name: HashMap<Vec<u8>, usize>,
}

pub struct BtrfsFs {
    trees: Trees,
    sb: Superblock,
    root_tree: Root,
    csum_root: Option<Root>,
    subvols: Vec<Subvol>,
    maps: Mutex<Lru<NodeId, Arc<ExtentMap>>>,
    dirs: Mutex<Lru<NodeId, Arc<Listing>>>,
    expanded: Mutex<Lru<u64, Arc<Vec<u8>>>>,
}

/// The opener for `fs::open`: `Ok(None)` when there is no btrfs magic.
pub fn open(volume: &Arc<dyn ReadAt>) -> Result<Option<Arc<dyn Filesystem>>, FsError> {
    Ok(BtrfsFs::open(volume.clone())?.map(|fs| Arc::new(fs) as Arc<dyn Filesystem>))
}

/// Fuzz entry point: opens a btrfs filesystem from `data` and walks it
/// (see `fs::fuzz`).
pub fn fuzz_open_walk(data: &[u8]) {
    super::fuzz::open_walk(data, open);
}

/// Fuzz entry point: expands `data[1..]` as one compressed extent; `data[0]`
/// picks the method (zlib, LZO, zstd) and the sector size (4 or 64 KiB).
pub fn fuzz_decompress(data: &[u8]) {
    let Some((&pick, extent)) = data.split_first() else { return };
    let kind = [COMPRESS_ZLIB, COMPRESS_LZO, COMPRESS_ZSTD][usize::from(pick % 3)];
    let sectorsize = if pick & 0x80 != 0 { MAX_SECTORSIZE } else { MIN_SECTORSIZE };
    let _ = compress::decompress(kind, extent, MAX_COMPRESSED as usize, sectorsize as usize);
}

use crate::util::lock;

impl BtrfsFs {
    pub fn open(volume: Arc<dyn ReadAt>) -> Result<Option<BtrfsFs>, FsError> {
        let Some(sb) = Superblock::read(&*volume)? else {
            return Ok(None);
        };
        let chunks = ChunkMap::from_sys_array(&sb.sys_chunk_array, sb.devid)?;
        let mut trees = Trees::new(volume, chunks, sb.nodesize, sb.node_fsid);
        let chunk_root = Root { bytenr: sb.chunk_root, level: sb.chunk_root_level };
        tree::load_chunk_tree(&mut trees, chunk_root, sb.devid)?;
        let root_tree = Root { bytenr: sb.root, level: sb.root_level };
        let subvols = subvol::list(&trees, root_tree)?;
        let csum_root = match trees.get(root_tree, Key::new(CSUM_TREE_OBJECTID, ROOT_ITEM_KEY, 0))? {
            Some((data, at)) => subvol::parse_root_item(CSUM_TREE_OBJECTID, &data, at)?.map(|s| s.root),
            None => None,
        };
        let fs = BtrfsFs {
            trees,
            sb,
            root_tree,
            csum_root,
            subvols,
            maps: Mutex::new(Lru::new(MAP_CACHE)),
            dirs: Mutex::new(Lru::new(DIR_CACHE)),
            expanded: Mutex::new(Lru::new(EXPANDED_CACHE)),
        };
        if fs.stat(fs.root())?.kind != NodeKind::Directory {
            return Err(FsError::corrupt(0, "the top-level subvolume's root is not a folder"));
        }
        Ok(Some(fs))
    }

    fn subvol(&self, node: NodeId) -> Result<(Subvol, usize, u64), FsError> {
        let (slot, ino) = subvol::split(node);
        let sv = *self.subvols.get(slot).ok_or(FsError::NotFound)?;
        Ok((sv, slot, ino))
    }

    fn inode(&self, node: NodeId) -> Result<Inode, FsError> {
        let (sv, _, ino) = self.subvol(node)?;
        if ino == EMPTY_SUBVOL_DIR {
            return Ok(placeholder());
        }
        let (data, at) = self.trees.get(sv.root, Key::new(ino, INODE_ITEM_KEY, 0))?.ok_or(FsError::NotFound)?;
        Inode::parse(&data, at)
    }

    /// The node a folder entry leads to: an inode of the same subvolume,
    /// or the top folder of the subvolume linked there.
    fn entry_node(&self, dir: NodeId, item: &dir::DirItem, at: u64) -> Result<NodeId, FsError> {
        let (sv, slot, dir_ino) = self.subvol(dir)?;
        match item.location.ty {
            INODE_ITEM_KEY => subvol::node_id(slot, item.location.objectid, at),
            ROOT_ITEM_KEY if item.ty == FT_DIR => {
                let child = item.location.objectid;
                let found = self.subvols.iter().position(|s| s.id == child);
                let linked = subvol::linked_at(&self.trees, self.root_tree, sv.id, child, dir_ino, &item.name)?;
                match found {
                    Some(i) if linked => subvol::node_id(i, self.subvols[i].root_dirid, at),
                    _ => subvol::node_id(slot, EMPTY_SUBVOL_DIR, at),
                }
            }
            other => Err(FsError::corrupt(at, format!("folder entry points at an item of type {other}"))),
        }
    }

    fn listing(&self, dir: NodeId) -> Result<Arc<Listing>, FsError> {
        if let Some(l) = lock(&self.dirs).get(&dir) {
            return Ok(l);
        }
        if self.inode(dir)?.kind() != NodeKind::Directory {
            return Err(FsError::NotADirectory);
        }
        let (sv, _, ino) = self.subvol(dir)?;
        let mut items = Vec::new();
        if ino != EMPTY_SUBVOL_DIR {
            let (min, max) = all_of(ino, DIR_INDEX_KEY);
            self.trees.walk(sv.root, min, max, &mut |_, data, at| {
                if items.len() >= MAX_DIR_ENTRIES {
                    return Err(FsError::Unsupported(format!("a folder of more than {MAX_DIR_ENTRIES} entries")));
                }
                items.push((dir::parse_index(data, at)?, at));
                Ok(ControlFlow::Continue(()))
            })?;
        }
        let mut entries = Vec::with_capacity(items.len());
        let mut by_name = HashMap::with_capacity(items.len());
        for (item, at) in items {
            let node = match self.entry_node(dir, &item, at) {
                Ok(node) => Ok(node),
                Err(e @ (FsError::Corrupt { .. } | FsError::Unsupported(_))) => Err(e.to_string()),
                Err(e) => return Err(e),
            };
            by_name.entry(item.name.clone()).or_insert(entries.len());
            entries.push((item.name, node));
        }
        let listing = Arc::new(Listing { entries, by_name });
        lock(&self.dirs).insert(dir, listing.clone());
        Ok(listing)
    }

    fn extent_map(&self, node: NodeId) -> Result<Arc<ExtentMap>, FsError> {
        if let Some(m) = lock(&self.maps).get(&node) {
            return Ok(m);
        }
        let (sv, _, ino) = self.subvol(node)?;
        let mut map = ExtentMap::default();
        let (min, max) = all_of(ino, EXTENT_DATA_KEY);
        self.trees.walk(sv.root, min, max, &mut |key, data, at| {
            if map.extents.len() >= MAX_FILE_EXTENTS {
                return Err(FsError::Unsupported(format!("a file of more than {MAX_FILE_EXTENTS} extents")));
            }
            map.push(FileExtent::parse(key.offset, data, at)?, at)?;
            Ok(ControlFlow::Continue(()))
        })?;
        let map = Arc::new(map);
        lock(&self.maps).insert(node, map.clone());
        Ok(map)
    }

    /// Reads file bytes of any inode with data (files and symlinks).
    fn read_data(&self, node: NodeId, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if offset >= inode.size || buf.is_empty() {
            return Ok(0);
        }
        let len = (inode.size - offset).min(buf.len() as u64) as usize;
        let map = self.extent_map(node)?;
        let verify = inode.flags & INODE_NODATASUM == 0;
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let n = match map.find(pos) {
                Ok(e) => {
                    let n = (e.start + e.len - pos).min((len - done) as u64) as usize;
                    self.read_extent(e, pos, &mut buf[done..done + n], verify)?;
                    n
                }
                Err(next) => {
                    let n = (next - pos).min((len - done) as u64) as usize;
                    buf[done..done + n].fill(0);
                    n
                }
            };
            done += n;
        }
        Ok(len)
    }
}

/// What the kernel shows for a subvolume link that does not resolve.
fn placeholder() -> Inode {
    let t = Timestamp::default();
    Inode {
        size: 0,
        nlink: 1,
        uid: 0,
        gid: 0,
        mode: 0o040755,
        rdev: 0,
        flags: 0,
        atime: t,
        ctime: t,
        mtime: t,
        otime: t,
    }
}

impl Filesystem for BtrfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Btrfs
    }

    fn label(&self) -> Option<String> {
        Some(self.sb.label.clone()).filter(|l| !l.is_empty())
    }

    fn root(&self) -> NodeId {
        self.subvols[0].root_dirid
    }

    fn stat(&self, node: NodeId) -> Result<Attr, FsError> {
        Ok(self.inode(node)?.attr(node))
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>, FsError> {
        let l = self.listing(dir)?;
        // An entry whose inode (or the tree block holding it) is corrupt is
        // left out (a lookup by name gives the error), so a bad block costs
        // the files it holds, not their whole folder.
        let mut out = Vec::with_capacity(l.entries.len());
        for (name, node) in &l.entries {
            let Ok(node) = node else { continue };
            match self.stat(*node) {
                Ok(attr) => out.push(DirEntry { name: name.clone(), attr }),
                Err(FsError::Corrupt { .. } | FsError::Unsupported(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<DirEntry, FsError> {
        let l = self.listing(dir)?;
        let (name, node) = l.by_name.get(name).map(|&i| &l.entries[i]).ok_or(FsError::NotFound)?;
        let node = *node
            .as_ref()
            .map_err(|why| FsError::corrupt(0, format!("entry {}: {why}", String::from_utf8_lossy(name))))?;
        Ok(DirEntry { name: name.clone(), attr: self.stat(node)? })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let inode = self.inode(node)?;
        match inode.kind() {
            NodeKind::File => self.read_data(node, &inode, offset, buf),
            NodeKind::Directory => Err(FsError::IsADirectory),
            _ => Err(FsError::Unsupported("reading a special file".into())),
        }
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        let inode = self.inode(node)?;
        if inode.kind() != NodeKind::Symlink {
            return Err(FsError::NotASymlink);
        }
        if inode.size > MAX_SYMLINK_LEN {
            return Err(FsError::corrupt(0, format!("symlink target of {} bytes", inode.size)));
        }
        let mut target = vec![0u8; inode.size as usize];
        let n = self.read_data(node, &inode, 0, &mut target)?;
        target.truncate(n);
        Ok(target)
    }

    fn statfs(&self) -> Result<FsStats, FsError> {
        Ok(FsStats {
            block_size: self.sb.sectorsize,
            total_bytes: self.sb.total_bytes,
            free_bytes: self.sb.total_bytes.saturating_sub(self.sb.bytes_used),
            files: 0,
        })
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<Xattr>, FsError> {
        let (sv, _, ino) = self.subvol(node)?;
        let mut out = Vec::new();
        if ino == EMPTY_SUBVOL_DIR {
            return Ok(out);
        }
        let mut names = 0usize;
        let (min, max) = all_of(ino, XATTR_ITEM_KEY);
        self.trees.walk(sv.root, min, max, &mut |_, data, at| {
            for item in dir::parse_items(data, at)? {
                names += item.name.len() + 1;
                if item.name.len() > MAX_XATTR_NAME || item.data.len() > MAX_XATTR_VALUE || names > MAX_XATTR_LIST {
                    return Err(FsError::corrupt(at, "extended attributes past Linux's limits"));
                }
                out.push(Xattr { name: item.name, value: item.data });
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }
}
