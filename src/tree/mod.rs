//! The one namespace that the CLI, FUSE and HTTP front ends share.
//!
//! A tree is made of virtual nodes (folders such as `disk-0/` or
//! `Partition 1 - EFI (100 MB)`, raw `partition.img` files, notes, symlinks)
//! and filesystem nodes, served by the filesystems of `volume::fs`.
//!
//! Inode numbers are deterministic: a filesystem node is `(slot << 48) | id`,
//! where the slot numbers filesystems in the order the tree opened them (disk
//! order, then partition order) and `id` is the filesystem's own node id
//! (ext4 inode, NTFS record number, FAT entry offset); virtual nodes are
//! numbered from 1 (the root) in creation order.

mod build;
pub mod fuse;
mod lvm;
mod names;

pub use build::{add_backup_disks, add_disk, for_image};
pub use names::{partition_folder, partition_label, volume_folder};

use crate::block::{Extent, Lru, ReadAt, read_at_most};
use crate::util::{lock, read, write};
use crate::volume::fs::{Attr, Filesystem, FsError, FsStats, NodeKind, Timestamp, Xattr, bad_name};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

pub type Ino = u64;
/// The root folder of every tree.
pub const ROOT: Ino = 1;
const SLOT_SHIFT: u32 = 48;
const NODE_MASK: u64 = (1 << SLOT_SHIFT) - 1;
/// Filesystems one tree can hold (slot numbers must fit above bit 48).
pub const MAX_FILESYSTEMS: usize = (1 << 15) - 1;
/// Folder listings kept, so that paged readdir and lookups in big folders
/// do not list the folder again each time: many small ones, and a few big
/// ones, so memory stays bounded by a couple of the biggest folders.
const LISTING_CACHE: usize = 64;
const BIG_LISTING_CACHE: usize = 2;
/// A listing with more entries than this is "big".
const BIG_LISTING: usize = 4096;

/// The two tiers of cached listings.
struct Listings {
    small: Lru<Ino, Arc<Listing>>,
    big: Lru<Ino, Arc<Listing>>,
}

impl Listings {
    fn new() -> Self {
        Self { small: Lru::new(LISTING_CACHE), big: Lru::new(BIG_LISTING_CACHE) }
    }
    fn get(&mut self, ino: &Ino) -> Option<Arc<Listing>> {
        self.small.get(ino).or_else(|| self.big.get(ino))
    }
    fn insert(&mut self, ino: Ino, l: Arc<Listing>) {
        if l.entries.len() > BIG_LISTING { self.big.insert(ino, l) } else { self.small.insert(ino, l) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// Not found, not a folder, is a folder, not a symlink, and what the
    /// filesystem under the tree reports: one set of path errors, shared
    /// with `volume::fs`.
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = TreeError> = std::result::Result<T, E>;

/// One file, folder or symlink of the tree: its tree inode and name, and the
/// attributes the filesystem under it reports (synthesized for the tree's
/// own folders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub ino: Ino,
    /// The name in its folder (empty for the root).
    pub name: Vec<u8>,
    pub attr: Attr,
    /// Why a folder cannot be browsed, for partitions backchain cannot read.
    pub note: Option<String>,
}

// `node.size`, `node.kind`…: a node is its attributes plus a place in the tree.
impl std::ops::Deref for Node {
    type Target = Attr;
    fn deref(&self) -> &Attr {
        &self.attr
    }
}

impl Node {
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    fn from_attr(name: Vec<u8>, ino: Ino, a: &Attr) -> Self {
        Node { ino, name, attr: a.clone(), note: None }
    }
}

/// A folder listing, indexed by name.
pub struct Listing {
    pub entries: Vec<Node>,
    index: HashMap<Vec<u8>, usize>,
    /// What was left out of the folder and why (entries whose names are
    /// corrupt: see `volume::fs::bad_name`).
    pub note: Option<String>,
}

impl Listing {
    fn new(entries: Vec<Node>) -> Self {
        let index = entries.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        Self { entries, index, note: None }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Node> {
        self.index.get(name).map(|&i| &self.entries[i])
    }
}

/// Entries of a folder left out as corrupt, counted by reason.
#[derive(Default)]
struct LeftOut(Vec<(&'static str, usize)>);

impl LeftOut {
    fn add(&mut self, why: &'static str) {
        match self.0.iter_mut().find(|(w, _)| *w == why) {
            Some((_, n)) => *n += 1,
            None => self.0.push((why, 1)),
        }
    }

    fn note(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let parts: Vec<String> = self.0.iter().map(|(w, n)| format!("{n} with {w}")).collect();
        let total: usize = self.0.iter().map(|(_, n)| n).sum();
        Some(format!("{total} corrupt entries left out: {}", parts.join(", ")))
    }
}

/// Children of a virtual folder that are computed when asked (the
/// repository's VMs and backups).
pub trait DirSource: Send + Sync {
    fn children(&self, tree: &Tree, dir: Ino) -> Result<Vec<Child>>;
    /// Whether the answer may change (then it is never cached).
    fn dynamic(&self) -> bool;
}

#[derive(Debug, Clone)]
pub struct Child {
    pub name: Vec<u8>,
    pub ino: Ino,
}

enum VKind {
    Dir(Vec<Child>),
    LazyDir(Arc<dyn DirSource>),
    File(Arc<dyn ReadAt>),
    Symlink(Vec<u8>),
}

struct VNode {
    kind: VKind,
    time: Timestamp,
    note: Option<String>,
}

struct Inner {
    vnodes: RwLock<Vec<VNode>>,
    slots: RwLock<Vec<Arc<dyn Filesystem>>>,
    listings: Mutex<Listings>,
    /// Virtual nodes by (parent, name), so lazily built folders keep their
    /// inode numbers when they are built again.
    named: Mutex<HashMap<(Ino, Vec<u8>), Ino>>,
}

/// A read-only namespace; cheap to clone and safe to share between threads.
/// Calls block (they read disks, and the repository tree asks the catalog):
/// async code calls them from `spawn_blocking`.
#[derive(Clone)]
pub struct Tree {
    inner: Arc<Inner>,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new(Timestamp::default())
    }
}

fn fs_ino(slot: usize, node: u64) -> Result<Ino> {
    if node > NODE_MASK {
        return Err(TreeError::Fs(FsError::corrupt(0, format!("node id {node} is above 2^48"))));
    }
    Ok(((slot as u64 + 1) << SLOT_SHIFT) | node)
}

impl Tree {
    /// An empty tree: a root folder with the given time.
    pub fn new(time: Timestamp) -> Self {
        let root = VNode { kind: VKind::Dir(Vec::new()), time, note: None };
        Tree {
            inner: Arc::new(Inner {
                // Index 0 is a placeholder so that inode numbers start at 1.
                vnodes: RwLock::new(vec![VNode { kind: VKind::Dir(Vec::new()), time, note: None }, root]),
                slots: RwLock::new(Vec::new()),
                listings: Mutex::new(Listings::new()),
                named: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn add_vnode(&self, parent: Ino, name: &[u8], node: VNode, link: bool) -> Ino {
        let key = (parent, name.to_vec());
        if let Some(&ino) = lock(&self.inner.named).get(&key) {
            return ino;
        }
        let ino = {
            let mut v = write(&self.inner.vnodes);
            v.push(node);
            (v.len() - 1) as Ino
        };
        lock(&self.inner.named).insert(key, ino);
        if link {
            self.link(parent, name, ino);
        }
        ino
    }

    /// Adds `ino` under `name` to the static folder `parent`.
    fn link(&self, parent: Ino, name: &[u8], ino: Ino) {
        let mut v = write(&self.inner.vnodes);
        if let Some(VNode { kind: VKind::Dir(children), .. }) = v.get_mut(parent as usize)
            && !children.iter().any(|c| c.name == name)
        {
            children.push(Child { name: name.to_vec(), ino });
        }
        drop(v);
        // Static folders only change while a tree is built: start the
        // listing cache afresh rather than track which entry went stale.
        *lock(&self.inner.listings) = Listings::new();
    }

    /// Adds a static folder.
    pub fn add_dir(&self, parent: Ino, name: &str, time: Timestamp, note: Option<String>) -> Ino {
        self.add_vnode(parent, name.as_bytes(), VNode { kind: VKind::Dir(Vec::new()), time, note }, true)
    }

    /// Adds a folder whose children `source` computes when asked.
    pub fn add_lazy_dir(&self, parent: Ino, name: &str, time: Timestamp, source: Arc<dyn DirSource>) -> Ino {
        self.add_vnode(parent, name.as_bytes(), VNode { kind: VKind::LazyDir(source), time, note: None }, true)
    }

    /// A node for a lazily listed folder's child, not linked anywhere.
    pub fn lazy_child_dir(&self, parent: Ino, name: &str, time: Timestamp, source: Arc<dyn DirSource>) -> Ino {
        self.add_vnode(parent, name.as_bytes(), VNode { kind: VKind::LazyDir(source), time, note: None }, false)
    }

    pub fn lazy_child_symlink(&self, parent: Ino, name: &str, target: &str, time: Timestamp) -> Ino {
        let node = VNode { kind: VKind::Symlink(target.as_bytes().to_vec()), time, note: None };
        self.add_vnode(parent, name.as_bytes(), node, false)
    }

    /// A static folder not linked into its parent (a build area).
    pub(crate) fn add_dir_detached(&self, parent: Ino, name: &str) -> Ino {
        let node = VNode { kind: VKind::Dir(Vec::new()), time: Timestamp::default(), note: None };
        self.add_vnode(parent, name.as_bytes(), node, false)
    }

    /// The children of a static folder.
    pub(crate) fn static_children(&self, dir: Ino) -> Vec<Child> {
        self.with_vnode(dir, |v| match &v.kind {
            VKind::Dir(c) => c.clone(),
            _ => Vec::new(),
        })
        .unwrap_or_default()
    }

    /// Whether a node may change while the tree is served: the folders of a
    /// repository tree (VMs, backup lists, `latest`), never a backup's content.
    pub fn volatile(&self, ino: Ino) -> bool {
        ino >> SLOT_SHIFT == 0
            && self.with_vnode(ROOT, |v| matches!(v.kind, VKind::LazyDir(_))).unwrap_or(false)
            && self.with_vnode(ino, |v| matches!(v.kind, VKind::LazyDir(_) | VKind::Symlink(_))).unwrap_or(false)
    }

    /// Makes the root a folder whose children `source` computes.
    pub fn set_root_source(&self, source: Arc<dyn DirSource>) {
        let mut v = write(&self.inner.vnodes);
        v[ROOT as usize].kind = VKind::LazyDir(source);
    }

    /// Adds a file whose bytes are `data` (a partition window, a note).
    pub fn add_file(&self, parent: Ino, name: &str, time: Timestamp, data: Arc<dyn ReadAt>) -> Ino {
        self.add_vnode(parent, name.as_bytes(), VNode { kind: VKind::File(data), time, note: None }, true)
    }

    /// Mounts a filesystem's root as folder `name` of `parent`.
    pub fn add_fs(&self, parent: Ino, name: &str, fs: Arc<dyn Filesystem>) -> Result<Ino> {
        let root = fs.root();
        let slot = {
            let mut s = write(&self.inner.slots);
            if s.len() >= MAX_FILESYSTEMS {
                return Err(TreeError::Unavailable(format!("more than {MAX_FILESYSTEMS} filesystems in one tree")));
            }
            s.push(fs);
            s.len() - 1
        };
        let ino = fs_ino(slot, root)?;
        self.link(parent, name.as_bytes(), ino);
        Ok(ino)
    }

    fn fs_of(&self, ino: Ino) -> Option<(Arc<dyn Filesystem>, usize, u64)> {
        let slot = (ino >> SLOT_SHIFT) as usize;
        if slot == 0 {
            return None;
        }
        let fs = read(&self.inner.slots).get(slot - 1)?.clone();
        Some((fs, slot - 1, ino & NODE_MASK))
    }

    fn with_vnode<T>(&self, ino: Ino, f: impl FnOnce(&VNode) -> T) -> Result<T> {
        let v = read(&self.inner.vnodes);
        match v.get(ino as usize) {
            Some(n) if ino != 0 => Ok(f(n)),
            _ => Err(TreeError::Fs(FsError::NotFound)),
        }
    }

    /// The attributes of a node (its name is left empty).
    pub fn getattr(&self, ino: Ino) -> Result<Node> {
        if let Some((fs, _, node)) = self.fs_of(ino) {
            let mut n = Node::from_attr(Vec::new(), ino, &fs.stat(node)?);
            // A filesystem's root carries what it says about itself (a dirty log).
            if node == fs.root() {
                n.note = fs.note();
            }
            return Ok(n);
        }
        self.with_vnode(ino, |v| {
            let (kind, size, perm) = match &v.kind {
                VKind::Dir(_) | VKind::LazyDir(_) => (NodeKind::Directory, 0, 0o555),
                VKind::File(d) => (NodeKind::File, d.size(), 0o444),
                VKind::Symlink(t) => (NodeKind::Symlink, t.len() as u64, 0o777),
            };
            let attr = Attr {
                node: ino,
                kind,
                size,
                perm,
                uid: 0,
                gid: 0,
                nlink: if kind == NodeKind::Directory { 2 } else { 1 },
                mtime: v.time,
                atime: v.time,
                ctime: v.time,
                crtime: None,
            };
            Node { ino, name: Vec::new(), attr, note: v.note.clone() }
        })
    }

    /// The entries of a folder (cached; shared between callers).
    pub fn read_dir(&self, ino: Ino) -> Result<Arc<Listing>> {
        if let Some(l) = lock(&self.inner.listings).get(&ino) {
            return Ok(l);
        }
        let (listing, cache) = self.list_uncached(ino)?;
        let listing = Arc::new(listing);
        if cache {
            lock(&self.inner.listings).insert(ino, listing.clone());
        }
        Ok(listing)
    }

    fn list_uncached(&self, ino: Ino) -> Result<(Listing, bool)> {
        if let Some((fs, slot, node)) = self.fs_of(ino) {
            let entries = fs.read_dir(node)?;
            let mut nodes = Vec::with_capacity(entries.len());
            let mut left_out = LeftOut::default();
            for e in entries {
                if let Some(why) = bad_name(&e.name) {
                    left_out.add(why);
                    continue;
                }
                let ino = fs_ino(slot, e.attr.node)?;
                nodes.push(Node::from_attr(e.name, ino, &e.attr));
            }
            let mut listing = Listing::new(nodes);
            listing.note = left_out.note();
            return Ok((listing, true));
        }
        enum Kids {
            Static(Vec<Child>),
            Lazy(Arc<dyn DirSource>),
        }
        let kids = self.with_vnode(ino, |v| match &v.kind {
            VKind::Dir(c) => Ok(Kids::Static(c.clone())),
            VKind::LazyDir(s) => Ok(Kids::Lazy(s.clone())),
            _ => Err(TreeError::Fs(FsError::NotADirectory)),
        })??;
        let (children, cache) = match kids {
            Kids::Static(c) => (c, true),
            Kids::Lazy(s) => (s.children(self, ino)?, !s.dynamic()),
        };
        let mut nodes = Vec::with_capacity(children.len());
        for c in children {
            let mut n = self.getattr(c.ino)?;
            n.name = c.name;
            nodes.push(n);
        }
        Ok((Listing::new(nodes), cache))
    }

    /// One entry of a folder by name.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Node> {
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return Err(TreeError::InvalidPath(format!("{:?} is not a name", String::from_utf8_lossy(name))));
        }
        if let Some((fs, slot, node)) = self.fs_of(parent) {
            let cached = lock(&self.inner.listings).get(&parent);
            if let Some(l) = cached {
                return l.get(name).cloned().ok_or(TreeError::Fs(FsError::NotFound));
            }
            let e = fs.lookup(node, name)?;
            return Ok(Node::from_attr(e.name, fs_ino(slot, e.attr.node)?, &e.attr));
        }
        let l = self.read_dir(parent)?;
        l.get(name).cloned().ok_or(TreeError::Fs(FsError::NotFound))
    }

    /// A node by path from the root ("/a/b", "a/b"). `..` is refused and
    /// symlinks are never followed, so no path leaves the tree.
    pub fn resolve(&self, path: &str) -> Result<Node> {
        self.resolve_bytes(path.as_bytes())
    }

    pub fn resolve_bytes(&self, path: &[u8]) -> Result<Node> {
        let mut node = self.getattr(ROOT)?;
        for part in path.split(|&b| b == b'/') {
            match part {
                b"" | b"." => continue,
                b".." => return Err(TreeError::InvalidPath("'..' is not allowed".into())),
                _ => {}
            }
            if part.contains(&0) {
                return Err(TreeError::InvalidPath("NUL in path".into()));
            }
            if node.kind != NodeKind::Directory {
                return Err(TreeError::Fs(FsError::NotADirectory));
            }
            node = self.lookup(node.ino, part)?;
        }
        Ok(node)
    }

    /// The extended attributes of a node: its filesystem's, none for the
    /// folders and files backchain makes up.
    pub fn xattrs(&self, ino: Ino) -> Result<Vec<Xattr>> {
        match self.fs_of(ino) {
            Some((fs, _, node)) => Ok(fs.xattrs(node)?),
            None => Ok(Vec::new()),
        }
    }

    /// Reads file bytes; fewer than asked only at the end of the file.
    pub fn read(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if let Some((fs, _, node)) = self.fs_of(ino) {
            return Ok(fs.read(node, offset, buf)?);
        }
        let data = self.with_vnode(ino, |v| match &v.kind {
            VKind::File(d) => Ok(d.clone()),
            VKind::Dir(_) | VKind::LazyDir(_) => Err(TreeError::Fs(FsError::IsADirectory)),
            VKind::Symlink(_) => Err(TreeError::InvalidPath("a symbolic link has no bytes to read".into())),
        })??;
        Ok(read_at_most(&*data, offset, buf)?)
    }

    /// Where file bytes from `offset` are stored verbatim, for 1 to `len`
    /// bytes (see `ReadAt::locate`); `None` (also for any error): read them.
    pub fn locate(&self, ino: Ino, offset: u64, len: u64) -> Option<Extent> {
        if let Some((fs, _, node)) = self.fs_of(ino) {
            return fs.locate(node, offset, len).ok().flatten();
        }
        let data = self.with_vnode(ino, |v| match &v.kind {
            VKind::File(d) => Some(d.clone()),
            _ => None,
        });
        data.ok().flatten()?.locate(offset, len)
    }

    pub fn read_link(&self, ino: Ino) -> Result<Vec<u8>> {
        if let Some((fs, _, node)) = self.fs_of(ino) {
            return Ok(fs.read_link(node)?);
        }
        self.with_vnode(ino, |v| match &v.kind {
            VKind::Symlink(t) => Ok(t.clone()),
            _ => Err(TreeError::Fs(FsError::NotASymlink)),
        })?
    }

    /// Space figures for `df`: the sum over the tree's filesystems.
    pub fn statfs(&self) -> FsStats {
        let slots = read(&self.inner.slots).clone();
        let mut total = FsStats { block_size: 4096, ..Default::default() };
        for fs in slots {
            if let Ok(s) = fs.statfs() {
                total.total_bytes += s.total_bytes;
                total.free_bytes += s.free_bytes;
                total.files += s.files;
            }
        }
        total
    }
}
