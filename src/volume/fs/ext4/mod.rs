//! ext2, ext3 and ext4, read-only.
//!
//! Why our own reader and not `ext4-view` for every call: `ext4-view` is
//! path-based, its handle is not `Send`, it does not expose inode numbers
//! (our stable node ids, shared by hard links), ctime or link counts, and its
//! file reads go one block per call with seeks that re-walk the block list.
//! So `ext4-view` is the gatekeeper at open time (a filesystem it refuses,
//! e.g. `inline_data`, is refused with its reason, and it validates the
//! superblock, group descriptors and journal), and this module serves the
//! tree: inodes by number, folders by linear scan of their blocks, file data
//! from a cached run list with large positional reads. Everything is plain
//! data behind mutex-guarded caches, so the handle is `Send + Sync` and
//! needs no worker thread.
#![forbid(unsafe_code)]

mod blockmap;
mod dir;
mod inode;
mod journal;
mod superblock;
mod view;
mod xattr;

use std::sync::{Arc, Mutex};

use crate::block::{Extent, Lru, ReadAt};
use crate::volume::fs::{
    Attr, DirEntry, Filesystem, FsError, FsKind, FsStats, MAX_XATTR_VALUE, NodeId, NodeKind, Xattr, lock,
};

use blockmap::{BlockMap, Ctx};
use dir::RawEntry;
use inode::{FLAG_INLINE_DATA, Inode, ROOT_INODE};
use superblock::Superblock;

/// Files whose run lists stay cached (one per concurrently read file).
const MAP_CACHE: usize = 64;
/// Folders whose parsed listings stay cached (for lookups).
const DIR_CACHE: usize = 16;
/// Inode table blocks cached, so listing a folder reads each once.
const INODE_BLOCK_CACHE: usize = 256;
/// Largest folder we read (a 100,000-entry folder is a few MiB).
const MAX_DIR_BYTES: u64 = 256 << 20;
/// Largest symlink target (the kernel's limit is one block).
const MAX_SYMLINK_LEN: u64 = 64 << 10;

type Listing = crate::volume::fs::listing::Listing<RawEntry>;

pub struct Ext4Fs {
    volume: Arc<dyn ReadAt>,
    sb: Superblock,
    inode_tables: Vec<u64>,
    maps: Mutex<Lru<u32, Arc<BlockMap>>>,
    dirs: Mutex<Lru<u32, Arc<Listing>>>,
    inode_blocks: Mutex<Lru<u64, Arc<Vec<u8>>>>,
}

/// The opener for `fs::open`: `Ok(None)` when there is no ext2/3/4 magic.
pub fn open(volume: &Arc<dyn ReadAt>) -> Result<Option<Arc<dyn Filesystem>>, FsError> {
    Ok(Ext4Fs::open(volume.clone())?.map(|fs| Arc::new(fs) as Arc<dyn Filesystem>))
}

/// Fuzz entry point: opens an ext2/3/4 filesystem from `data` and walks it
/// (see `fs::fuzz`).
pub fn fuzz_open_walk(data: &[u8]) {
    super::fuzz::open_walk(data, open);
}

impl Ext4Fs {
    pub fn open(volume: Arc<dyn ReadAt>) -> Result<Option<Ext4Fs>, FsError> {
        let Some(sb) = Superblock::read(&*volume)? else {
            return Ok(None);
        };
        sb.check_group_count(volume.size())?;
        view::check(&volume)?;
        let mut fs = Ext4Fs::with(volume, sb)?;
        if fs.sb.journal_inode != 0 {
            let journal = fs.inode(fs.sb.journal_inode)?;
            let remap = journal::replay(&*fs.volume, &fs.ctx(), &journal)?;
            if !remap.is_empty() {
                let volume: Arc<dyn ReadAt> =
                    Arc::new(journal::Recovered { inner: fs.volume.clone(), remap, block_size: fs.bs() });
                let sb = Superblock::read(&*volume)?.ok_or_else(|| {
                    FsError::corrupt(superblock::SUPERBLOCK_OFFSET, "journal replaced the superblock")
                })?;
                fs = Ext4Fs::with(volume, sb)?;
            }
        }
        let root = fs.inode(ROOT_INODE)?;
        if root.kind() != NodeKind::Directory {
            return Err(FsError::corrupt(0, "the root inode is not a folder"));
        }
        Ok(Some(fs))
    }

    fn with(volume: Arc<dyn ReadAt>, sb: Superblock) -> Result<Ext4Fs, FsError> {
        let inode_tables = sb.read_inode_tables(&*volume)?;
        Ok(Ext4Fs {
            volume,
            sb,
            inode_tables,
            maps: Mutex::new(Lru::new(MAP_CACHE)),
            dirs: Mutex::new(Lru::new(DIR_CACHE)),
            inode_blocks: Mutex::new(Lru::new(INODE_BLOCK_CACHE)),
        })
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx { volume: &*self.volume, block_size: self.sb.block_size, blocks_count: self.sb.blocks_count }
    }

    fn bs(&self) -> u64 {
        u64::from(self.sb.block_size)
    }

    fn ino(&self, node: NodeId) -> Result<u32, FsError> {
        match u32::try_from(node) {
            Ok(n) if n >= 1 && n <= self.sb.inodes_count => Ok(n),
            _ => Err(FsError::NotFound),
        }
    }

    fn inode(&self, ino: u32) -> Result<Inode, FsError> {
        let (data, within, at) = self.inode_raw(ino)?;
        let inode = Inode::parse(&data[within..within + usize::from(self.sb.inode_size)]);
        let max = inode.max_size(self.sb.block_size);
        if inode.size > max {
            return Err(FsError::corrupt(
                at,
                format!("inode {ino} claims {} bytes, more than ext4's largest file ({max} bytes)", inode.size),
            ));
        }
        Ok(inode)
    }

    /// The inode table block holding inode `ino`, the inode's offset in it,
    /// and its byte offset in the volume.
    fn inode_raw(&self, ino: u32) -> Result<(Arc<Vec<u8>>, usize, u64), FsError> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(FsError::corrupt(0, format!("inode number {ino} out of range")));
        }
        let ipg = self.sb.inodes_per_group;
        let group = ((ino - 1) / ipg) as usize;
        let index = u64::from((ino - 1) % ipg);
        let Some(&table) = self.inode_tables.get(group) else {
            return Err(FsError::corrupt(0, format!("inode {ino} is in a missing group {group}")));
        };
        let isz = u64::from(self.sb.inode_size);
        let bs = self.bs();
        let pos = index * isz;
        let block = table
            .checked_add(pos / bs)
            .filter(|&b| b < self.sb.blocks_count)
            .ok_or_else(|| FsError::corrupt(0, format!("inode table of group {group} at block {table}")))?;
        let cached = lock(&self.inode_blocks).get(&block);
        let data = match cached {
            Some(d) => d,
            None => {
                let mut d = vec![0u8; bs as usize];
                self.volume.read_exact_at(block * bs, &mut d)?;
                let d = Arc::new(d);
                lock(&self.inode_blocks).insert(block, d.clone());
                d
            }
        };
        let within = (pos % bs) as usize;
        Ok((data, within, block * bs + within as u64))
    }

    /// The extended attributes of inode `ino`: the in-inode area first, then
    /// the attribute block, as the kernel lists them.
    fn read_xattrs(&self, ino: u32) -> Result<Vec<Xattr>, FsError> {
        let (data, within, at) = self.inode_raw(ino)?;
        let raw = &data[within..within + usize::from(self.sb.inode_size)];
        let mut entries = Vec::new();
        if raw.len() > 0x82 {
            let start = 128 + usize::from(u16::from_le_bytes([raw[0x80], raw[0x81]]));
            if start < raw.len() {
                entries = xattr::parse_ibody(&raw[start..], at + start as u64)?;
            }
        }
        // i_file_acl: low 32 bits at 0x68, high 16 bits in osd2 at 0x76.
        let acl_lo = u64::from(u32::from_le_bytes([raw[0x68], raw[0x69], raw[0x6A], raw[0x6B]]));
        let block = acl_lo | u64::from(u16::from_le_bytes([raw[0x76], raw[0x77]])) << 32;
        if block != 0 {
            if block >= self.sb.blocks_count {
                return Err(FsError::corrupt(at + 0x68, format!("attribute block {block} past the volume")));
            }
            let mut b = vec![0u8; self.bs() as usize];
            self.volume.read_exact_at(block * self.bs(), &mut b)?;
            entries.extend(xattr::parse_block(&b, block * self.bs())?);
        }
        entries.into_iter().map(|e| self.xattr_value(e, at)).collect()
    }

    fn xattr_value(&self, e: xattr::Entry, at: u64) -> Result<Xattr, FsError> {
        let value = match e.value {
            xattr::Value::Bytes(v) => v,
            xattr::Value::Inode { ino, size } => {
                let i = self.inode(ino)?;
                if i.size != u64::from(size) || size as usize > MAX_XATTR_VALUE {
                    return Err(FsError::corrupt(at, format!("attribute inode {ino} of {} bytes", i.size)));
                }
                let mut v = vec![0u8; size as usize];
                let n = self.read_data(ino, &i, 0, &mut v)?;
                v.truncate(n);
                v
            }
        };
        let value = if e.acl { xattr::acl_to_xattr(&value, at)? } else { value };
        Ok(Xattr { name: e.name, value })
    }

    fn attr(&self, ino: u32, i: &Inode) -> Attr {
        Attr {
            node: NodeId::from(ino),
            kind: i.kind(),
            size: i.size,
            perm: i.perm(),
            uid: i.uid,
            gid: i.gid,
            nlink: u32::from(i.links),
            mtime: i.mtime,
            atime: i.atime,
            ctime: i.ctime,
            crtime: i.crtime,
        }
    }

    fn map(&self, ino: u32, i: &Inode) -> Result<Arc<BlockMap>, FsError> {
        if let Some(m) = lock(&self.maps).get(&ino) {
            return Ok(m);
        }
        if i.flags & FLAG_INLINE_DATA != 0 {
            return Err(FsError::Unsupported(format!("inode {ino} keeps its data inline")));
        }
        let m = Arc::new(BlockMap::load(&self.ctx(), i)?);
        lock(&self.maps).insert(ino, m.clone());
        Ok(m)
    }

    /// Reads the data of any inode (file, folder, slow symlink).
    fn read_data(&self, ino: u32, i: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if offset >= i.size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(i.size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        let map = self.map(ino, i)?;
        let mut done = 0usize;
        while done < n {
            let (chunk, at) = self.piece(&map, offset + done as u64, (n - done) as u64);
            let dst = &mut buf[done..done + chunk as usize];
            match at {
                Some(at) => self.volume.read_exact_at(at, dst)?,
                None => dst.fill(0),
            }
            done += chunk as usize;
        }
        Ok(n)
    }

    /// The bytes of a file from `pos`: how many (at most `left`) lie in one
    /// run, and where on the volume (`None`: a hole or an unwritten extent).
    fn piece(&self, map: &BlockMap, pos: u64, left: u64) -> (u64, Option<u64>) {
        let bs = self.bs();
        let blk = pos / bs;
        match map.find(blk) {
            Some(r) if r.logical <= blk => {
                let end = (r.logical + r.len).saturating_mul(bs);
                let chunk = left.min(end - pos);
                (chunk, r.physical.map(|p| (p + blk - r.logical) * bs + pos % bs))
            }
            Some(r) => (left.min(r.logical.saturating_mul(bs) - pos), None),
            None => (left, None),
        }
    }

    fn listing(&self, ino: u32) -> Result<Arc<Listing>, FsError> {
        if let Some(l) = lock(&self.dirs).get(&ino) {
            return Ok(l);
        }
        let i = self.inode(ino)?;
        if i.kind() != NodeKind::Directory {
            return Err(FsError::NotADirectory);
        }
        if i.size > MAX_DIR_BYTES {
            return Err(FsError::Unsupported(format!("folder inode {ino} of {} bytes", i.size)));
        }
        let bs = self.bs();
        let mut entries = Vec::new();
        let mut block = vec![0u8; bs as usize];
        let mut pos = 0;
        while pos < i.size {
            let n = self.read_data(ino, &i, pos, &mut block)?;
            if n < block.len() {
                block[n..].fill(0);
            }
            dir::parse_block(&block[..n], pos, &mut entries)?;
            pos += bs;
        }
        let l = Arc::new(Listing::new(entries, |e| &e.name));
        lock(&self.dirs).insert(ino, l.clone());
        Ok(l)
    }
}

impl Filesystem for Ext4Fs {
    fn kind(&self) -> FsKind {
        self.sb.kind()
    }

    fn label(&self) -> Option<String> {
        self.sb.label()
    }

    fn root(&self) -> NodeId {
        NodeId::from(ROOT_INODE)
    }

    fn stat(&self, node: NodeId) -> Result<Attr, FsError> {
        let ino = self.ino(node)?;
        Ok(self.attr(ino, &self.inode(ino)?))
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>, FsError> {
        let l = self.listing(self.ino(dir)?)?;
        // An entry whose inode is corrupt is left out of the listing (looking
        // it up by name still gives the error), so one bad inode costs one
        // file, not its whole folder.
        let mut out = Vec::with_capacity(l.entries.len());
        for e in &l.entries {
            match self.inode(e.inode) {
                Ok(i) => out.push(DirEntry { name: e.name.clone(), attr: self.attr(e.inode, &i) }),
                Err(FsError::Corrupt { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<DirEntry, FsError> {
        let l = self.listing(self.ino(dir)?)?;
        let e = l.get(name).ok_or(FsError::NotFound)?;
        Ok(DirEntry { name: e.name.clone(), attr: self.attr(e.inode, &self.inode(e.inode)?) })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let ino = self.ino(node)?;
        let i = self.inode(ino)?;
        match i.kind() {
            NodeKind::File => self.read_data(ino, &i, offset, buf),
            NodeKind::Directory => Err(FsError::IsADirectory),
            _ => Err(FsError::Unsupported("not a regular file".into())),
        }
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<Xattr>, FsError> {
        self.read_xattrs(self.ino(node)?)
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        let ino = self.ino(node)?;
        let i = self.inode(ino)?;
        if i.kind() != NodeKind::Symlink {
            return Err(FsError::NotASymlink);
        }
        if i.is_fast_symlink() {
            return Ok(i.blocks[..i.size as usize].to_vec());
        }
        if i.size > MAX_SYMLINK_LEN {
            return Err(FsError::corrupt(0, format!("symlink inode {ino} of {} bytes", i.size)));
        }
        let mut target = vec![0u8; i.size as usize];
        let n = self.read_data(ino, &i, 0, &mut target)?;
        target.truncate(n);
        Ok(target)
    }

    fn locate(&self, node: NodeId, offset: u64, len: u64) -> Result<Option<Extent>, FsError> {
        let ino = self.ino(node)?;
        let i = self.inode(ino)?;
        if i.kind() != NodeKind::File || offset >= i.size || len == 0 {
            return Ok(None);
        }
        let map = self.map(ino, &i)?;
        let (chunk, at) = self.piece(&map, offset, len.min(i.size - offset));
        Ok(at.and_then(|at| self.volume.locate(at, chunk)))
    }

    fn statfs(&self) -> Result<FsStats, FsError> {
        let bs = self.bs();
        Ok(FsStats {
            block_size: self.sb.block_size,
            total_bytes: self.sb.blocks_count.saturating_mul(bs),
            free_bytes: self.sb.free_blocks.saturating_mul(bs),
            files: u64::from(self.sb.inodes_count.saturating_sub(self.sb.free_inodes)),
        })
    }
}
