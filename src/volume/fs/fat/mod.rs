//! FAT12, FAT16 and FAT32 with VFAT long names, read-only.
//!
//! Why our own parser and not the `fatfs` crate: `fatfs` wants
//! `Read + Write + Seek` storage and hands out `RefCell`-based, non-`Send`
//! handles, so it would need a worker thread and a seek-based adapter over
//! our positional reads. The read-only subset of FAT is small (boot sector,
//! table, 32-byte entries), and parsing it ourselves gives plain data that
//! many threads can share behind a few caches, byte offsets of directory
//! entries as stable node ids, and large direct reads of contiguous cluster
//! runs.
#![forbid(unsafe_code)]

mod bpb;
mod dir;
mod table;

use crate::util::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::block::{Extent, Lru, ReadAt};
use crate::volume::fs::{Attr, DirEntry, Filesystem, FsError, FsKind, FsStats, NodeId, NodeKind};

use bpb::{Bpb, NO_NAME};
use dir::{ATTR_READ_ONLY, ENTRY_LEN, Entry, Parser, ShortEntry};
use table::{ClusterRun, Fat};

/// The root folder has no directory entry; offset 1 is never the start of
/// a 32-byte entry (entries are 32-byte aligned), so it cannot collide.
pub const ROOT_NODE: NodeId = 1;
/// A folder holds at most 65,536 entries (FAT specification section 6).
const MAX_DIR_BYTES: u64 = 65_536 * ENTRY_LEN as u64;
/// Parsed folders kept for lookups.
const DIR_CACHE: usize = 16;
/// Files whose cluster runs stay cached (one per concurrently read file).
const CHAIN_CACHE: usize = 64;

struct Listing {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

/// A file's clusters: runs with the file-relative index of their first
/// cluster, for binary search.
struct Chain {
    runs: Vec<(u64, ClusterRun)>,
    clusters: u64,
}

pub struct FatFs {
    volume: Arc<dyn ReadAt>,
    bpb: Bpb,
    fat: Fat,
    label: Option<String>,
    /// Free clusters, counted on the first `statfs` (a scan of the FAT).
    free: OnceLock<u64>,
    dirs: Mutex<Lru<NodeId, Arc<Listing>>>,
    chains: Mutex<Lru<u32, Arc<Chain>>>,
}

/// The opener for `fs::open`: `Ok(None)` when there is no FAT boot sector.
pub fn open(volume: &Arc<dyn ReadAt>) -> Result<Option<Arc<dyn Filesystem>>, FsError> {
    Ok(FatFs::open(volume.clone())?.map(|fs| Arc::new(fs) as Arc<dyn Filesystem>))
}

/// Opens a FAT filesystem from `data` and walks it (for cargo-fuzz).
pub fn fuzz_open_walk(data: &[u8]) {
    super::fuzz::open_walk(data, open);
}

fn label_text(raw: &[u8; 11]) -> Option<String> {
    let s: String = raw.iter().map(|&c| char::from(c)).collect();
    let s = s.trim_end().to_string();
    (!s.is_empty() && raw != NO_NAME).then_some(s)
}

impl FatFs {
    pub fn open(volume: Arc<dyn ReadAt>) -> Result<Option<FatFs>, FsError> {
        let Some(bpb) = Bpb::read(&*volume)? else {
            return Ok(None);
        };
        let fat = Fat::load(&*volume, &bpb)?;
        let mut fs = FatFs {
            volume,
            bpb,
            fat,
            label: None,
            free: OnceLock::new(),
            dirs: Mutex::new(Lru::new(DIR_CACHE)),
            chains: Mutex::new(Lru::new(CHAIN_CACHE)),
        };
        // The label: the root folder's volume-label entry, else the BPB's.
        let root_label = fs.parse_dir(None)?.label;
        fs.label = root_label.as_ref().and_then(label_text).or_else(|| label_text(&fs.bpb.label));
        Ok(Some(fs))
    }

    fn chain(&self, first: u32) -> Result<Arc<Chain>, FsError> {
        if let Some(c) = lock(&self.chains).get(&first) {
            return Ok(c);
        }
        let mut runs = Vec::new();
        let mut clusters = 0u64;
        for r in self.fat.chain(first)? {
            runs.push((clusters, r));
            clusters += u64::from(r.len);
        }
        let c = Arc::new(Chain { runs, clusters });
        lock(&self.chains).insert(first, c.clone());
        Ok(c)
    }

    /// Parses a folder: `None` is the root.
    fn parse_dir(&self, dir: Option<&ShortEntry>) -> Result<Parser, FsError> {
        let mut p = Parser::default();
        let first = match dir {
            None if self.bpb.kind != FsKind::Fat32 => {
                let mut b = vec![0u8; self.bpb.root_len as usize];
                self.volume.read_exact_at(self.bpb.root_offset, &mut b)?;
                p.feed(self.bpb.root_offset, &b);
                return Ok(p);
            }
            None => self.bpb.root_cluster,
            Some(e) => e.first_cluster,
        };
        if first == 0 {
            // An empty folder never written to (mkdir leaves at least "."
            // and "..", but tolerate it).
            return Ok(p);
        }
        let chain = self.chain(first)?;
        let cs = u64::from(self.bpb.cluster_size);
        if chain.clusters * cs > MAX_DIR_BYTES {
            return Err(FsError::corrupt(
                self.bpb.cluster_offset(first),
                format!("folder of {} clusters", chain.clusters),
            ));
        }
        for (_, r) in &chain.runs {
            let at = self.bpb.cluster_offset(r.first);
            let mut b = vec![0u8; (u64::from(r.len) * cs) as usize];
            self.volume.read_exact_at(at, &mut b)?;
            p.feed(at, &b);
            if p.ended() {
                break;
            }
        }
        Ok(p)
    }

    /// A file's size and clusters, or `None` when `offset` is at or past
    /// its end; folders and chains too short for the size are errors.
    fn file_chain(&self, node: NodeId, offset: u64) -> Result<Option<(u64, Arc<Chain>)>, FsError> {
        let Some(e) = self.entry(node)? else {
            return Err(FsError::IsADirectory);
        };
        if e.is_dir() {
            return Err(FsError::IsADirectory);
        }
        let size = u64::from(e.size);
        if offset >= size {
            return Ok(None);
        }
        let chain = self.chain(e.first_cluster)?;
        let cs = u64::from(self.bpb.cluster_size);
        if chain.clusters.saturating_mul(cs) < size {
            return Err(FsError::corrupt(node, format!("{size} bytes in a chain of {} clusters", chain.clusters)));
        }
        Ok(Some((size, chain)))
    }

    /// The bytes of a file from `pos` (inside its size, which the chain
    /// covers): how many (at most `left`) lie in one run, and where.
    fn piece(&self, chain: &Chain, pos: u64, left: u64) -> (u64, u64) {
        let cs = u64::from(self.bpb.cluster_size);
        let idx = pos / cs;
        let k = chain.runs.partition_point(|(start, r)| start + u64::from(r.len) <= idx);
        // OK to index: the chain covers the file's size, so some run holds `idx`.
        let (start, r) = chain.runs[k];
        let run_end = (start + u64::from(r.len)) * cs;
        (left.min(run_end - pos), self.bpb.cluster_offset(r.first) + (idx - start) * cs + pos % cs)
    }

    /// The short entry a node id points at.
    fn entry(&self, node: NodeId) -> Result<Option<ShortEntry>, FsError> {
        if node == ROOT_NODE {
            return Ok(None);
        }
        let b = &self.bpb;
        let data_end = b.data_offset + u64::from(b.cluster_count) * u64::from(b.cluster_size);
        let in_root = node >= b.root_offset && node < b.root_offset + b.root_len;
        let in_data = node >= b.data_offset && node < data_end;
        if node & (ENTRY_LEN as u64 - 1) != 0 || !(in_root || in_data) {
            return Err(FsError::NotFound);
        }
        let mut raw = [0u8; ENTRY_LEN];
        self.volume.read_exact_at(node, &mut raw)?;
        let e = ShortEntry::parse(&raw);
        if !e.is_live() {
            return Err(FsError::NotFound);
        }
        Ok(Some(e))
    }

    fn attr(&self, node: NodeId, e: Option<&ShortEntry>) -> Attr {
        let Some(e) = e else {
            return Attr {
                node,
                kind: NodeKind::Directory,
                size: 0,
                perm: 0o755,
                uid: 0,
                gid: 0,
                nlink: 1,
                mtime: Default::default(),
                atime: Default::default(),
                ctime: Default::default(),
                crtime: None,
            };
        };
        let dir = e.is_dir();
        let perm = match (dir, e.attr & ATTR_READ_ONLY != 0) {
            (true, _) => 0o755,
            (false, true) => 0o444,
            (false, false) => 0o644,
        };
        let mtime = e.mtime();
        Attr {
            node,
            kind: if dir { NodeKind::Directory } else { NodeKind::File },
            size: if dir { 0 } else { u64::from(e.size) },
            perm,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime,
            atime: e.atime(),
            // FAT keeps no change time; the modification time stands in.
            ctime: mtime,
            crtime: Some(e.crtime()),
        }
    }

    fn listing(&self, dir: NodeId) -> Result<Arc<Listing>, FsError> {
        if let Some(l) = lock(&self.dirs).get(&dir) {
            return Ok(l);
        }
        let e = self.entry(dir)?;
        if e.as_ref().is_some_and(|e| !e.is_dir()) {
            return Err(FsError::NotADirectory);
        }
        let entries = self.parse_dir(e.as_ref())?.entries;
        let mut by_name = HashMap::with_capacity(entries.len());
        for (k, e) in entries.iter().enumerate() {
            by_name.entry(e.name.clone()).or_insert(k);
        }
        let l = Arc::new(Listing { entries, by_name });
        lock(&self.dirs).insert(dir, l.clone());
        Ok(l)
    }

    fn dir_entry(&self, e: &Entry) -> DirEntry {
        DirEntry { name: e.name.clone().into_bytes(), attr: self.attr(e.offset, Some(&e.short)) }
    }
}

impl Filesystem for FatFs {
    fn kind(&self) -> FsKind {
        self.bpb.kind
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn root(&self) -> NodeId {
        ROOT_NODE
    }

    fn stat(&self, node: NodeId) -> Result<Attr, FsError> {
        let e = self.entry(node)?;
        Ok(self.attr(node, e.as_ref()))
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>, FsError> {
        Ok(self.listing(dir)?.entries.iter().map(|e| self.dir_entry(e)).collect())
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<DirEntry, FsError> {
        let l = self.listing(dir)?;
        let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
        let k = l.by_name.get(name).ok_or(FsError::NotFound)?;
        Ok(self.dir_entry(&l.entries[*k]))
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let Some((size, chain)) = self.file_chain(node, offset)? else { return Ok(0) };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = usize::try_from(size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        let mut done = 0usize;
        while done < n {
            let (len, at) = self.piece(&chain, offset + done as u64, (n - done) as u64);
            let len = len as usize;
            self.volume.read_exact_at(at, &mut buf[done..done + len])?;
            done += len;
        }
        Ok(n)
    }

    fn locate(&self, node: NodeId, offset: u64, len: u64) -> Result<Option<Extent>, FsError> {
        let Some((size, chain)) = self.file_chain(node, offset)? else { return Ok(None) };
        if len == 0 {
            return Ok(None);
        }
        let (len, at) = self.piece(&chain, offset, len.min(size - offset));
        Ok(self.volume.locate(at, len))
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        self.entry(node)?;
        Err(FsError::NotASymlink)
    }

    fn statfs(&self) -> Result<FsStats, FsError> {
        let cs = u64::from(self.bpb.cluster_size);
        Ok(FsStats {
            block_size: self.bpb.cluster_size,
            total_bytes: u64::from(self.bpb.cluster_count) * cs,
            free_bytes: *self.free.get_or_init(|| self.fat.free_clusters()) * cs,
            files: 0,
        })
    }
}
