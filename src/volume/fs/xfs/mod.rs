//! XFS (v4 and v5), read-only.
//!
//! Why this shape: XFS addresses everything by inode number and by
//! AG-relative block numbers, so the reader needs no per-AG state beyond
//! the superblock's geometry — opening costs one sector and a look at the
//! log's head, however large the volume. Inodes are read through a cache of
//! inode blocks (a folder's inodes sit together in chunks), files keep their
//! run list (from the inode's extent list or its bmap B+tree) in a small
//! cache, and folders are listed once from their data blocks and then
//! looked up through a name index. On v5 every metadata block's CRC, owner
//! and UUID are checked as it is read, so a corrupt block is an error for
//! the one file or folder that owns it. Extended attributes are read from
//! the attribute fork on request (`attr.rs`).
#![forbid(unsafe_code)]

mod agheader;
mod attr;
mod be;
mod bmbt;
mod consts;
mod crc;
mod dir;
mod inode;
mod log;
mod superblock;
mod symlink;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::block::{Extent, Lru, ReadAt};
use crate::volume::fs::{Attr, DirEntry, Filesystem, FsError, FsKind, FsStats, NodeId, NodeKind, Xattr, lock};

use bmbt::{Ctx, Run};
use consts::*;
use dir::RawEntry;
use inode::Inode;
use superblock::Superblock;

/// Files whose run lists stay cached (one per concurrently read file).
const MAP_CACHE: usize = 64;
/// Folders whose parsed listings stay cached (for lookups).
const DIR_CACHE: usize = 16;
/// Inode blocks cached, so listing a folder reads each once.
const INODE_BLOCK_CACHE: usize = 512;
/// Largest folder data we read (100,000 entries take a few MiB).
const MAX_DIR_BYTES: u64 = 256 << 20;

struct Listing {
    entries: Vec<RawEntry>,
    by_name: HashMap<Vec<u8>, usize>,
}

pub struct XfsFs {
    volume: Arc<dyn ReadAt>,
    sb: Superblock,
    note: Option<String>,
    maps: Mutex<Lru<u64, Arc<Vec<Run>>>>,
    dirs: Mutex<Lru<u64, Arc<Listing>>>,
    inode_blocks: Mutex<Lru<u64, Arc<Vec<u8>>>>,
}

/// The opener for `fs::open`: `Ok(None)` when there is no XFS magic.
pub fn open(volume: &Arc<dyn ReadAt>) -> Result<Option<Arc<dyn Filesystem>>, FsError> {
    Ok(XfsFs::open(volume.clone())?.map(|fs| Arc::new(fs) as Arc<dyn Filesystem>))
}

/// Fuzz entry point: opens an XFS filesystem from `data` and walks it
/// (see `fs::fuzz`).
pub fn fuzz_open_walk(data: &[u8]) {
    super::fuzz::open_walk(data, open);
}

impl XfsFs {
    pub fn open(volume: Arc<dyn ReadAt>) -> Result<Option<XfsFs>, FsError> {
        let Some(sb) = Superblock::read(&*volume)? else {
            return Ok(None);
        };
        let needed = sb.dblocks.checked_shl(u32::from(sb.block_log)).filter(|b| b >> sb.block_log == sb.dblocks);
        if needed.is_none_or(|n| n > volume.size()) {
            return Err(FsError::corrupt(8, format!("XFS of {} blocks is larger than its volume", sb.dblocks)));
        }
        let mut notes = Vec::new();
        match log::state(&*volume, &sb) {
            Ok(log::LogState::Clean) => {}
            Ok(log::LogState::Dirty) => notes.push(
                "The XFS log is dirty (not cleanly unmounted): changes still in the log are not shown.".to_string(),
            ),
            Ok(log::LogState::External) => {
                notes.push("The XFS log is on an external device: whether it is clean is unknown.".to_string())
            }
            Err(e) => notes.push(format!("The XFS log cannot be read ({e}): it may hold changes not shown.")),
        }
        if sb.incompat & INCOMPAT_NEEDSREPAIR != 0 {
            notes.push("This XFS is marked as needing xfs_repair.".to_string());
        }
        notes.extend(agheader::check(&*volume, &sb));
        let fs = XfsFs {
            volume,
            note: (!notes.is_empty()).then(|| notes.join(" ")),
            sb,
            maps: Mutex::new(Lru::new(MAP_CACHE)),
            dirs: Mutex::new(Lru::new(DIR_CACHE)),
            inode_blocks: Mutex::new(Lru::new(INODE_BLOCK_CACHE)),
        };
        let root = fs.inode(fs.sb.root_ino)?;
        if root.kind() != NodeKind::Directory {
            return Err(FsError::corrupt(root.at, "the XFS root inode is not a folder"));
        }
        Ok(Some(fs))
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx { volume: &*self.volume, sb: &self.sb }
    }

    fn bs(&self) -> u64 {
        u64::from(self.sb.block_size)
    }

    fn inode(&self, ino: u64) -> Result<Inode, FsError> {
        let at =
            self.sb.ino_to_byte(ino).ok_or_else(|| FsError::corrupt(0, format!("inode number {ino} out of range")))?;
        let bs = self.bs();
        let block = at - at % bs;
        let cached = lock(&self.inode_blocks).get(&block);
        let data = match cached {
            Some(d) => d,
            None => {
                let mut d = vec![0u8; bs as usize];
                self.volume.read_exact_at(block, &mut d)?;
                let d = Arc::new(d);
                lock(&self.inode_blocks).insert(block, d.clone());
                d
            }
        };
        let within = (at - block) as usize;
        Inode::parse(&self.sb, ino, &data[within..within + usize::from(self.sb.inode_size)], at)
    }

    fn attr(&self, i: &Inode) -> Attr {
        Attr {
            node: i.ino,
            kind: i.kind(),
            size: i.size,
            perm: i.perm(),
            uid: i.uid,
            gid: i.gid,
            nlink: i.nlink,
            mtime: i.mtime,
            atime: i.atime,
            ctime: i.ctime,
            crtime: i.crtime,
        }
    }

    fn runs(&self, i: &Inode) -> Result<Arc<Vec<Run>>, FsError> {
        if let Some(m) = lock(&self.maps).get(&i.ino) {
            return Ok(m);
        }
        if i.flags & DIFLAG_REALTIME != 0 {
            return Err(FsError::Unsupported(format!("inode {} keeps its data on the realtime device", i.ino)));
        }
        let m = Arc::new(bmbt::load(&self.ctx(), i, &i.data)?);
        lock(&self.maps).insert(i.ino, m.clone());
        Ok(m)
    }

    /// Reads `buf.len()` bytes at byte `pos` of a fork mapped by `runs`.
    /// Holes and unwritten extents read as zeros, unless `holes_ok` is false
    /// (metadata: a hole there is corruption).
    fn read_mapped(&self, i: &Inode, runs: &[Run], pos: u64, buf: &mut [u8], holes_ok: bool) -> Result<(), FsError> {
        let mut done = 0usize;
        while done < buf.len() {
            let (chunk, at) = self.piece(runs, pos + done as u64, (buf.len() - done) as u64);
            let dst = &mut buf[done..done + chunk as usize];
            match at {
                Some(at) => self.volume.read_exact_at(at, dst)?,
                None if holes_ok => dst.fill(0),
                None => return Err(i.corrupt(format!("hole at byte {} of its metadata", pos + done as u64))),
            }
            done += chunk as usize;
        }
        Ok(())
    }

    /// The bytes from `pos`: how many (at most `left`) lie in one run, and
    /// where on the volume (`None`: a hole or an unwritten extent).
    fn piece(&self, runs: &[Run], pos: u64, left: u64) -> (u64, Option<u64>) {
        let bs = self.bs();
        let blk = pos / bs;
        match bmbt::find(runs, blk) {
            Some(r) if r.logical <= blk => {
                let end = r.end().saturating_mul(bs);
                let chunk = left.min(end - pos);
                let at = self.sb.fsb_to_byte(r.fsb).map(|b| b + (blk - r.logical) * bs + pos % bs);
                (chunk, if r.unwritten { None } else { at })
            }
            Some(r) => (left.min(r.logical.saturating_mul(bs) - pos), None),
            None => (left, None),
        }
    }

    fn read_file(&self, i: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        if offset >= i.size || buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(i.size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        let runs = self.runs(i)?;
        self.read_mapped(i, &runs, offset, &mut buf[..n], true)?;
        Ok(n)
    }

    fn listing(&self, ino: u64) -> Result<Arc<Listing>, FsError> {
        if let Some(l) = lock(&self.dirs).get(&ino) {
            return Ok(l);
        }
        let i = self.inode(ino)?;
        if i.kind() != NodeKind::Directory {
            return Err(FsError::NotADirectory);
        }
        let entries = match i.data.format {
            FMT_LOCAL => {
                let size = usize::try_from(i.size).ok().filter(|&s| s <= i.data.bytes.len());
                let size = size.ok_or_else(|| i.corrupt(format!("short-form folder of {} bytes", i.size)))?;
                dir::shortform::parse(&i.data.bytes[..size], self.sb.ftype, i.at)?
            }
            _ => self.block_dir_entries(&i)?,
        };
        let mut by_name = HashMap::with_capacity(entries.len());
        for (k, e) in entries.iter().enumerate() {
            by_name.entry(e.name.clone()).or_insert(k);
        }
        let l = Arc::new(Listing { entries, by_name });
        lock(&self.dirs).insert(ino, l.clone());
        Ok(l)
    }

    /// The entries of a block, leaf, node or btree folder: its data blocks
    /// in order (below `DIR2_LEAF_OFFSET`; freed ones are holes).
    fn block_dir_entries(&self, i: &Inode) -> Result<Vec<RawEntry>, FsError> {
        let runs = self.runs(i)?;
        let dbs = u64::from(self.sb.dir_block_size);
        let per = dbs / self.bs();
        let leaf_blk = DIR2_LEAF_OFFSET >> self.sb.block_log;
        let mut indices = Vec::new();
        for r in runs.iter().take_while(|r| r.logical < leaf_blk) {
            let last = r.end().min(leaf_blk) - 1;
            for d in r.logical / per..=last / per {
                if indices.last() != Some(&d) {
                    indices.push(d);
                }
                if (indices.len() as u64).saturating_mul(dbs) > MAX_DIR_BYTES {
                    return Err(FsError::Unsupported(format!("folder inode {} above {MAX_DIR_BYTES} bytes", i.ino)));
                }
            }
        }
        let format = dir::data::Format { v5: self.sb.v5, ftype: self.sb.ftype, owner: i.ino, uuid: self.sb.meta_uuid };
        let mut entries = Vec::new();
        let mut block = vec![0u8; dbs as usize];
        for d in indices {
            let pos = d * dbs;
            self.read_mapped(i, &runs, pos, &mut block, false)?;
            let (_, at) = self.piece(&runs, pos, 1);
            dir::data::parse(&block, &format, at.unwrap_or(i.at), &mut entries)?;
        }
        Ok(entries)
    }

    fn remote_link(&self, i: &Inode) -> Result<Vec<u8>, FsError> {
        let runs = self.runs(i)?;
        let want = i.size as usize;
        let mut target = Vec::with_capacity(want);
        let mut block = vec![0u8; self.bs() as usize];
        let mut blk = 0u64;
        while target.len() < want {
            // Corrupt headers could claim zero bytes each: bound the blocks.
            if blk > SYMLINK_MAXLEN {
                return Err(i.corrupt("symlink blocks hold less than its size"));
            }
            self.read_mapped(i, &runs, blk * self.bs(), &mut block, false)?;
            let (_, at) = self.piece(&runs, blk * self.bs(), 1);
            let left = want - target.len();
            symlink::block_bytes(&block, self.sb.v5, i.ino, &self.sb.meta_uuid, at.unwrap_or(i.at), left, &mut target)?;
            blk += 1;
        }
        Ok(target)
    }
}

impl Filesystem for XfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Xfs
    }

    fn label(&self) -> Option<String> {
        self.sb.label()
    }

    fn root(&self) -> NodeId {
        self.sb.root_ino
    }

    fn note(&self) -> Option<String> {
        self.note.clone()
    }

    fn stat(&self, node: NodeId) -> Result<Attr, FsError> {
        Ok(self.attr(&self.inode(node)?))
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>, FsError> {
        let l = self.listing(dir)?;
        // An entry whose inode is corrupt is left out of the listing (looking
        // it up by name still gives the error), so one bad inode costs one
        // file, not its whole folder.
        let mut out = Vec::with_capacity(l.entries.len());
        for e in &l.entries {
            match self.inode(e.ino) {
                Ok(i) => out.push(DirEntry { name: e.name.clone(), attr: self.attr(&i) }),
                Err(FsError::Corrupt { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(out)
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<DirEntry, FsError> {
        let l = self.listing(dir)?;
        let e = l.by_name.get(name).map(|&k| &l.entries[k]).ok_or(FsError::NotFound)?;
        Ok(DirEntry { name: e.name.clone(), attr: self.attr(&self.inode(e.ino)?) })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let i = self.inode(node)?;
        match i.kind() {
            NodeKind::File => self.read_file(&i, offset, buf),
            NodeKind::Directory => Err(FsError::IsADirectory),
            _ => Err(FsError::Unsupported("not a regular file".into())),
        }
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        let i = self.inode(node)?;
        if i.kind() != NodeKind::Symlink {
            return Err(FsError::NotASymlink);
        }
        if i.size == 0 || i.size > SYMLINK_MAXLEN {
            return Err(i.corrupt(format!("symlink of {} bytes", i.size)));
        }
        if i.data.format == FMT_LOCAL {
            let n = i.size as usize;
            return i.data.bytes.get(..n).map(<[u8]>::to_vec).ok_or_else(|| i.corrupt("inline symlink past its fork"));
        }
        self.remote_link(&i)
    }

    fn locate(&self, node: NodeId, offset: u64, len: u64) -> Result<Option<Extent>, FsError> {
        let i = self.inode(node)?;
        if i.kind() != NodeKind::File || offset >= i.size || len == 0 {
            return Ok(None);
        }
        let runs = self.runs(&i)?;
        let (chunk, at) = self.piece(&runs, offset, len.min(i.size - offset));
        Ok(at.and_then(|at| self.volume.locate(at, chunk)))
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<Xattr>, FsError> {
        self.read_xattrs(&self.inode(node)?)
    }

    fn statfs(&self) -> Result<FsStats, FsError> {
        let bs = self.bs();
        Ok(FsStats {
            block_size: self.sb.block_size,
            total_bytes: self.sb.dblocks.saturating_mul(bs),
            free_bytes: self.sb.fdblocks.min(self.sb.dblocks).saturating_mul(bs),
            files: self.sb.icount.saturating_sub(self.sb.ifree),
        })
    }
}
