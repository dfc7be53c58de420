//! NTFS, read-only.
//!
//! The `ntfs` crate validates the boot sector (geometry, $MFT position) and
//! reads the volume label. The rest is own code, each module saying why:
//! the crate reads compressed attributes as raw on-disk bytes (`lznt1`,
//! `data`), assumes $MFT has no attribute list and re-reads MFT record 0 for
//! every file, hides the run lists of values split over attribute lists
//! (`record`, `data`), and can loop forever on a cyclic index (`index`).
//!
//! What the tree shows (see docs/filesystems.md): node ids are MFT record
//! numbers (so hard links share an id); DOS 8.3 aliases and the metadata
//! files ($MFT, $Bitmap, $Extend, ...) are not listed; alternate data
//! streams, the security descriptor, DOS attributes and creation time are
//! extended attributes under ntfs-3g's names (`xattr`); symlinks and junctions (and ntfs-3g's Interix
//! symlinks) are symlinks; other reparse points, EFS-encrypted files and
//! anything else not decodable give a per-file error instead of bytes.
#![forbid(unsafe_code)]

mod data;
mod index;
mod layout;
pub mod lznt1;
mod record;
mod reparse;
mod secure;
mod xattr;

use crate::util::lock;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex, OnceLock};

use self::data::{Data, Stream, UNIT_CACHE_ENTRIES, UnitCache};
use self::index::Index;
use self::layout::*;
use self::record::{Body, NonResident, RawAttr, RecordHeader, apply_fixups, parse_record};
use self::reparse::Reparse;
use super::{Attr, DirEntry, FsError, FsKind, FsStats, NodeId, NodeKind, Timestamp, Xattr};
use crate::block::{Extent, Lru, ReadAt, read_at_most};

/// Boot sector OEM id at byte 3 ("NTFS" and four spaces).
const BOOT_OEM_ID: &[u8; 8] = b"NTFS    ";
const BOOT_OEM_OFFSET: usize = 3;
/// Largest MFT record accepted.
const MAX_RECORD_SIZE: u32 = 64 * 1024;
/// Largest cluster accepted (NTFS allows up to 2 MiB).
const MAX_CLUSTER_SIZE: u32 = 2 * 1024 * 1024;
/// Largest $ATTRIBUTE_LIST value read.
const MAX_ATTRIBUTE_LIST: u64 = 1024 * 1024;
/// Most extension records gathered for one file.
const MAX_EXTENSION_RECORDS: usize = 4096;
/// Largest $REPARSE_POINT value (the format caps it at 16 KiB).
const MAX_REPARSE_VALUE: u64 = 16 * 1024 + 8;
/// Parsed nodes kept (each holds its run list).
const NODE_CACHE_ENTRIES: usize = 512;
/// Folder listings kept.
const DIR_CACHE_ENTRIES: usize = 32;
/// Bytes of $Bitmap read at a time when counting free clusters.
const BITMAP_CHUNK: usize = 1024 * 1024;

/// Why a node's content cannot be read (kept per node, raised on read).
#[derive(Debug, Clone)]
enum Broken {
    Unsupported(String),
    Corrupt(u64, String),
}

impl Broken {
    fn from_err(e: FsError) -> Result<Broken, FsError> {
        match e {
            FsError::Unsupported(m) => Ok(Broken::Unsupported(m)),
            FsError::Corrupt { offset, what } => Ok(Broken::Corrupt(offset, what)),
            other => Err(other),
        }
    }
    fn to_err(&self) -> FsError {
        match self {
            Broken::Unsupported(m) => FsError::Unsupported(m.clone()),
            Broken::Corrupt(o, w) => FsError::corrupt(*o, w.clone()),
        }
    }
}

#[derive(Debug)]
enum Content {
    Dir(Index),
    File(Data),
    Link(Vec<u8>),
    /// A device, FIFO or socket as ntfs-3g writes them (Interix).
    Special(NodeKind),
    Broken(Broken),
}

#[derive(Debug)]
struct Node {
    attr: Attr,
    content: Content,
}

struct Listing {
    entries: Vec<DirEntry>,
    by_name: HashMap<Vec<u8>, usize>,
}

pub struct NtfsFs {
    vol: Arc<dyn ReadAt>,
    cluster: u64,
    record_size: usize,
    size: u64,
    mft: Stream,
    label: Option<String>,
    nodes: Mutex<Lru<NodeId, Arc<Node>>>,
    dirs: Mutex<Lru<NodeId, Arc<Listing>>>,
    units: UnitCache,
    free: OnceLock<Option<u64>>,
    /// $Secure:$SDS's map, built on the first security descriptor asked.
    secure: OnceLock<Result<secure::Index, String>>,
}

/// `Read + Seek` over the volume, for the `ntfs` crate.
struct Cursor<'a> {
    vol: &'a dyn ReadAt,
    pos: u64,
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = read_at_most(self.vol, self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.vol.size().checked_add_signed(d),
        };
        self.pos = base.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// Opener for `volume::fs::open`: `Ok(None)` unless the boot sector says NTFS.
pub fn open(volume: &Arc<dyn ReadAt>) -> Result<Option<Arc<dyn super::Filesystem>>, FsError> {
    let mut boot = [0u8; 512];
    if volume.size() < boot.len() as u64 {
        return Ok(None);
    }
    volume.read_exact_at(0, &mut boot)?;
    if &boot[BOOT_OEM_OFFSET..BOOT_OEM_OFFSET + 8] != BOOT_OEM_ID {
        return Ok(None);
    }
    Ok(Some(Arc::new(NtfsFs::open(volume.clone())?)))
}

fn nt_time(ticks: u64) -> Timestamp {
    let secs = (ticks / NT_TICKS_PER_SEC) as i64 - NT_UNIX_EPOCH_SECS;
    Timestamp { secs, nanos: (ticks % NT_TICKS_PER_SEC) as u32 * 100 }
}

fn unnamed(a: &RawAttr, ty: u32) -> bool {
    a.ty == ty && a.name.is_empty()
}

fn named_i30(a: &RawAttr, ty: u32) -> bool {
    a.ty == ty && a.name == "$I30".encode_utf16().collect::<Vec<_>>()
}

impl NtfsFs {
    pub fn open(vol: Arc<dyn ReadAt>) -> Result<NtfsFs, FsError> {
        let mut cur = Cursor { vol: &*vol, pos: 0 };
        let geometry = ntfs::Ntfs::new(&mut cur).map_err(|e| FsError::corrupt(0, format!("NTFS boot sector: {e}")))?;
        let cluster = geometry.cluster_size();
        let record_size = geometry.file_record_size();
        if !cluster.is_power_of_two() || cluster > MAX_CLUSTER_SIZE {
            return Err(FsError::Unsupported(format!("NTFS cluster size {cluster}")));
        }
        if !record_size.is_power_of_two() || !(512..=MAX_RECORD_SIZE).contains(&record_size) {
            return Err(FsError::Unsupported(format!("NTFS file record size {record_size}")));
        }
        // `Ntfs::new` guarantees a nonzero $MFT position.
        let mft_pos = geometry.mft_position().value().map_or(0, |p| p.get());
        let label = geometry
            .volume_name(&mut cur)
            .and_then(|r| r.ok())
            .map(|n| n.name().to_string_lossy())
            .filter(|s| !s.is_empty());

        // Bootstrap: record 0 read from where the boot sector says, its
        // first $DATA extent maps (at least) the records of its extensions.
        let mut rec0 = vec![0u8; record_size as usize];
        vol.read_exact_at(mft_pos, &mut rec0)?;
        apply_fixups(&mut rec0, FILE_MAGIC, mft_pos)?;
        let (_, attrs0) = parse_record(&rec0, mft_pos)?;
        let first = attrs0
            .iter()
            .find_map(|a| match &a.body {
                Body::NonResident(nr) if unnamed(a, AT_DATA) && nr.lowest_vcn == 0 => Some(nr.clone()),
                _ => None,
            })
            .ok_or_else(|| FsError::corrupt(mft_pos, "$MFT without a $DATA attribute"))?;
        let cluster = u64::from(cluster);
        let mapped = first.runs.last().map_or(0, |r| r.vcn + r.len).saturating_mul(cluster);
        let boot_mft = Stream {
            size: first.data_size.min(mapped),
            init_size: first.init_size.min(mapped),
            runs: first.runs.clone(),
            cluster,
            unit_clusters: 0,
        };
        let mut fs = NtfsFs {
            vol,
            cluster,
            record_size: record_size as usize,
            size: geometry.size(),
            mft: boot_mft,
            label,
            nodes: Mutex::new(Lru::new(NODE_CACHE_ENTRIES)),
            dirs: Mutex::new(Lru::new(DIR_CACHE_ENTRIES)),
            units: Mutex::new(Lru::new(UNIT_CACHE_ENTRIES)),
            free: OnceLock::new(),
            secure: OnceLock::new(),
        };
        // The whole $MFT, including extents held in extension records.
        let (_, attrs) = fs.load_attrs(FRN_MFT)?;
        let extents = attrs
            .into_iter()
            .filter(|a| unnamed(a, AT_DATA))
            .filter_map(|a| match a.body {
                Body::NonResident(nr) => Some(nr),
                Body::Resident(_) => None,
            })
            .collect();
        fs.mft = Stream::from_extents(extents, cluster, mft_pos, false)?;
        if fs.mft.unit_clusters != 0 {
            return Err(FsError::corrupt(mft_pos, "compressed $MFT"));
        }
        Ok(fs)
    }

    fn read_record(&self, frn: u64) -> Result<(RecordHeader, Vec<RawAttr>), FsError> {
        let rs = self.record_size as u64;
        let offset = frn.checked_mul(rs).filter(|o| o.checked_add(rs).is_some_and(|e| e <= self.mft.size));
        let offset = offset.ok_or(FsError::NotFound)?;
        let mut buf = vec![0u8; self.record_size];
        self.mft.read(&*self.vol, &self.units, u64::MAX, offset, &mut buf)?;
        // Errors name the record's offset within $MFT; no single volume
        // offset exists when a record spans clusters of different runs.
        apply_fixups(&mut buf, FILE_MAGIC, offset)?;
        parse_record(&buf, offset)
    }

    /// The attributes of a base record and of its extension records.
    fn load_attrs(&self, frn: u64) -> Result<(RecordHeader, Vec<RawAttr>), FsError> {
        let (header, mut attrs) = self.read_record(frn)?;
        if header.flags & REC_FLAG_IN_USE == 0 || header.base_frn != 0 {
            return Err(FsError::NotFound);
        }
        let Some(list) = attrs.iter().find(|a| a.ty == AT_ATTRIBUTE_LIST) else {
            return Ok((header, attrs));
        };
        let value = self.small_value(list, MAX_ATTRIBUTE_LIST, frn)?;
        let le = record::Le { buf: &value, base: 0 };
        let mut others = BTreeSet::new();
        let mut off = 0usize;
        while off + AL_MIN_LEN <= value.len() {
            let len = usize::from(le.u16(off + AL_LENGTH, "attribute list entry length")?);
            if len < AL_MIN_LEN {
                return Err(FsError::corrupt(frn, "attribute list entry too short"));
            }
            let _ty = le.u32(off + AL_TYPE, "attribute list type")?;
            let other = le.u64(off + AL_REFERENCE, "attribute list reference")? & FRN_MASK;
            if other != frn {
                others.insert(other);
            }
            if others.len() > MAX_EXTENSION_RECORDS {
                return Err(FsError::Unsupported(format!("file with more than {MAX_EXTENSION_RECORDS} records")));
            }
            off += len;
        }
        for other in others {
            let (h, more) = self.read_record(other)?;
            if h.flags & REC_FLAG_IN_USE == 0 || h.base_frn != frn {
                return Err(FsError::corrupt(other, format!("extension record {other} does not belong to {frn}")));
            }
            attrs.extend(more.into_iter().filter(|a| a.ty != AT_ATTRIBUTE_LIST));
        }
        Ok((header, attrs))
    }

    /// The whole value of a (small) attribute, resident or not.
    fn small_value(&self, a: &RawAttr, max: u64, frn: u64) -> Result<Vec<u8>, FsError> {
        match &a.body {
            Body::Resident(v) => Ok(v.clone()),
            Body::NonResident(nr) => {
                if nr.data_size > max {
                    return Err(FsError::corrupt(frn, format!("attribute {:#x} of {} bytes", a.ty, nr.data_size)));
                }
                if a.flags & ATTR_FLAG_COMPRESSION_MASK != 0 {
                    return Err(FsError::Unsupported(format!("compressed attribute {:#x}", a.ty)));
                }
                let s = Stream::from_extents(vec![nr.clone()], self.cluster, frn, false)?;
                let mut v = vec![0u8; s.size as usize];
                s.read(&*self.vol, &self.units, u64::MAX, 0, &mut v)?;
                Ok(v)
            }
        }
    }

    fn node(&self, frn: NodeId) -> Result<Arc<Node>, FsError> {
        if let Some(n) = lock(&self.nodes).get(&frn) {
            return Ok(n);
        }
        let n = Arc::new(self.build_node(frn)?);
        lock(&self.nodes).insert(frn, n.clone());
        Ok(n)
    }

    fn build_node(&self, frn: NodeId) -> Result<Node, FsError> {
        let (header, attrs) = self.load_attrs(frn)?;
        let si = attrs
            .iter()
            .find_map(|a| match &a.body {
                Body::Resident(v) if a.ty == AT_STANDARD_INFORMATION && v.len() >= SI_MIN_LEN => Some(v),
                _ => None,
            })
            .ok_or_else(|| FsError::corrupt(frn, format!("record {frn} without $STANDARD_INFORMATION")))?;
        let le = record::Le { buf: si, base: 0 };
        let time = |off| le.u64(off, "time").map(nt_time);
        let file_attributes = le.u32(SI_FILE_ATTRIBUTES, "file attributes")?;
        let names = attrs
            .iter()
            .filter(|a| {
                a.ty == AT_FILE_NAME
                    && matches!(&a.body, Body::Resident(v) if v.get(FN_NAMESPACE).is_some_and(|&n| n != FN_NAMESPACE_DOS))
            })
            .count();
        let nlink = if names > 0 { names as u32 } else { u32::from(header.link_count).max(1) };
        let is_dir = header.flags & REC_FLAG_DIRECTORY != 0;

        let content = match self.content(frn, is_dir, file_attributes, &attrs) {
            Ok(c) => c,
            Err(e) => Content::Broken(Broken::from_err(e)?),
        };
        let (kind, size, perm) = match &content {
            Content::Dir(_) => (NodeKind::Directory, 0, 0o755),
            Content::Link(t) => (NodeKind::Symlink, t.len() as u64, 0o777),
            Content::Special(kind) => (*kind, 0, 0o644),
            Content::File(d) => (NodeKind::File, d.size(), 0o644),
            Content::Broken(_) if is_dir => (NodeKind::Directory, 0, 0o755),
            Content::Broken(_) => (NodeKind::File, 0, 0o644),
        };
        let perm = if kind == NodeKind::File && file_attributes & FILE_ATTRIBUTE_READONLY != 0 { 0o444 } else { perm };
        let attr = Attr {
            node: frn,
            kind,
            size,
            perm,
            uid: 0,
            gid: 0,
            nlink,
            mtime: time(SI_MODIFICATION)?,
            atime: time(SI_ACCESS)?,
            ctime: time(SI_MFT_CHANGE)?,
            crtime: Some(time(SI_CREATION)?),
        };
        Ok(Node { attr, content })
    }

    fn content(&self, frn: u64, is_dir: bool, file_attributes: u32, attrs: &[RawAttr]) -> Result<Content, FsError> {
        let reparse = match attrs.iter().find(|a| a.ty == AT_REPARSE_POINT) {
            Some(a) => Some(reparse::parse(&self.small_value(a, MAX_REPARSE_VALUE, frn)?, frn)?),
            None => None,
        };
        if let Some(Reparse::Link(t)) = reparse {
            return Ok(Content::Link(t));
        }
        if is_dir {
            let root = attrs
                .iter()
                .find_map(|a| match &a.body {
                    Body::Resident(v) if named_i30(a, AT_INDEX_ROOT) => Some(v.clone()),
                    _ => None,
                })
                .ok_or_else(|| FsError::corrupt(frn, format!("folder {frn} without an $I30 index root")))?;
            let alloc_attrs = || attrs.iter().filter(|a| named_i30(a, AT_INDEX_ALLOCATION));
            if alloc_attrs().any(|a| a.flags & ATTR_FLAG_COMPRESSION_MASK != 0) {
                return Err(FsError::Unsupported("compressed folder index".into()));
            }
            let extents: Vec<NonResident> = alloc_attrs()
                .filter_map(|a| match &a.body {
                    Body::NonResident(nr) => Some(nr.clone()),
                    Body::Resident(_) => None,
                })
                .collect();
            let alloc =
                if extents.is_empty() { None } else { Some(Stream::from_extents(extents, self.cluster, frn, false)?) };
            return Ok(Content::Dir(Index { root, root_pos: frn, alloc }));
        }
        if let Some(Reparse::Other(tag)) = reparse {
            return Err(FsError::Unsupported(format!("{} (reparse tag {tag:#010x})", reparse::tag_name(tag))));
        }
        let data_attrs: Vec<&RawAttr> = attrs.iter().filter(|a| unnamed(a, AT_DATA)).collect();
        if file_attributes & FILE_ATTRIBUTE_ENCRYPTED != 0
            || data_attrs.iter().any(|a| a.flags & ATTR_FLAG_ENCRYPTED != 0)
        {
            return Err(FsError::Unsupported("EFS-encrypted file".into()));
        }
        let data = match data_attrs.as_slice() {
            [] => return Err(FsError::corrupt(frn, format!("file {frn} without a $DATA attribute"))),
            [RawAttr { body: Body::Resident(v), .. }] => Data::Resident(v.clone()),
            many => {
                let compression = many.iter().map(|a| a.flags & ATTR_FLAG_COMPRESSION_MASK).max().unwrap_or(0);
                let mut extents = Vec::with_capacity(many.len());
                for a in many {
                    match &a.body {
                        Body::NonResident(nr) => extents.push(nr.clone()),
                        Body::Resident(_) => return Err(FsError::corrupt(frn, "resident and non-resident $DATA")),
                    }
                }
                // Flag value 1 is LZNT1, the only format NTFS defines.
                if compression > 1 {
                    return Err(FsError::Unsupported(format!("compression format {compression:#x}")));
                }
                Data::Clusters(Stream::from_extents(extents, self.cluster, frn, compression == 1)?)
            }
        };
        if file_attributes & FILE_ATTRIBUTE_SYSTEM != 0 {
            // ntfs-3g's Interix special files: a FIFO is an empty SYSTEM
            // file, a socket a one-byte one (ntfs-3g's own rule).
            match data.size() {
                0 => return Ok(Content::Special(NodeKind::Fifo)),
                1 => return Ok(Content::Special(NodeKind::Socket)),
                size if (8..=MAX_LINK_TARGET_DATA).contains(&size) => {
                    let mut head = vec![0u8; size as usize];
                    data.read(&*self.vol, &self.units, frn, 0, &mut head)?;
                    if let Some(t) = reparse::interix_target(&head) {
                        return Ok(Content::Link(t));
                    }
                    if let Some(kind) = reparse::interix_device(&head) {
                        return Ok(Content::Special(kind));
                    }
                }
                _ => {}
            }
        }
        Ok(Content::File(data))
    }

    fn listing(&self, dir: NodeId) -> Result<Arc<Listing>, FsError> {
        if let Some(l) = lock(&self.dirs).get(&dir) {
            return Ok(l);
        }
        let node = self.node(dir)?;
        let index = match &node.content {
            Content::Dir(i) => i,
            Content::Broken(b) if node.attr.kind == NodeKind::Directory => return Err(b.to_err()),
            _ => return Err(FsError::NotADirectory),
        };
        let raw = index.entries(&*self.vol, &self.units)?;
        let mut entries = Vec::with_capacity(raw.len());
        let mut by_name = HashMap::with_capacity(raw.len());
        for e in raw {
            if e.namespace == FN_NAMESPACE_DOS || e.frn == dir || (dir == FRN_ROOT && e.frn < FRN_FIRST_USER) {
                continue;
            }
            let name = reparse::utf16_to_string(&e.name.iter().flat_map(|u| u.to_le_bytes()).collect::<Vec<_>>());
            let name = name.into_bytes();
            if by_name.contains_key(&name) {
                continue;
            }
            let attr = match lock(&self.nodes).get(&e.frn) {
                Some(n) => n.attr.clone(),
                None => match self.build_node(e.frn) {
                    Ok(n) => n.attr,
                    // One unreadable entry must not hide its folder: it is
                    // listed with no permissions; opening it gives the error.
                    Err(FsError::NotFound) => continue,
                    Err(FsError::Io(err)) => return Err(FsError::Io(err)),
                    Err(_) => placeholder_attr(e.frn),
                },
            };
            by_name.insert(name.clone(), entries.len());
            entries.push(DirEntry { name, attr });
        }
        let l = Arc::new(Listing { entries, by_name });
        lock(&self.dirs).insert(dir, l.clone());
        Ok(l)
    }

    fn count_free(&self) -> Option<u64> {
        let node = self.node(FRN_BITMAP).ok()?;
        let Content::File(data) = &node.content else { return None };
        // The boot sector's size is not trusted beyond the volume's bytes.
        let clusters = self.size.min(self.vol.size()) / self.cluster;
        let bytes = clusters.div_ceil(8).min(data.size());
        let mut used = 0u64;
        let mut buf = vec![0u8; BITMAP_CHUNK];
        let mut off = 0u64;
        while off < bytes {
            let n = ((bytes - off) as usize).min(BITMAP_CHUNK);
            data.read(&*self.vol, &self.units, FRN_BITMAP, off, &mut buf[..n]).ok()?;
            used += buf[..n].iter().map(|b| u64::from(b.count_ones())).sum::<u64>();
            off += n as u64;
        }
        Some(clusters.saturating_sub(used) * self.cluster)
    }
}

/// $Bitmap's record number: one bit per cluster, set when in use.
const FRN_BITMAP: u64 = 6;
/// Interix symlink data: magic plus the longest target accepted.
const MAX_LINK_TARGET_DATA: u64 = 8 + reparse::MAX_LINK_TARGET as u64;

fn placeholder_attr(node: NodeId) -> Attr {
    Attr {
        node,
        kind: NodeKind::File,
        size: 0,
        perm: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: Timestamp::default(),
        atime: Timestamp::default(),
        ctime: Timestamp::default(),
        crtime: None,
    }
}

impl super::Filesystem for NtfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }

    fn label(&self) -> Option<String> {
        self.label.clone()
    }

    fn root(&self) -> NodeId {
        FRN_ROOT
    }

    fn stat(&self, node: NodeId) -> Result<Attr, FsError> {
        Ok(self.node(node)?.attr.clone())
    }

    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>, FsError> {
        Ok(self.listing(dir)?.entries.clone())
    }

    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<DirEntry, FsError> {
        let l = self.listing(dir)?;
        let i = *l.by_name.get(name).ok_or(FsError::NotFound)?;
        Ok(l.entries[i].clone())
    }

    fn locate(&self, node: NodeId, offset: u64, len: u64) -> Result<Option<Extent>, FsError> {
        Ok(match &self.node(node)?.content {
            Content::File(d) => d.locate(&*self.vol, offset, len),
            _ => None,
        })
    }

    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let n = self.node(node)?;
        match &n.content {
            Content::File(d) => d.read(&*self.vol, &self.units, node, offset, buf),
            Content::Dir(_) => Err(FsError::IsADirectory),
            Content::Broken(_) if n.attr.kind == NodeKind::Directory => Err(FsError::IsADirectory),
            Content::Broken(b) => Err(b.to_err()),
            Content::Link(_) => Err(FsError::Unsupported("reading a symbolic link as a file".into())),
            Content::Special(_) => Err(FsError::Unsupported("reading a device, FIFO or socket".into())),
        }
    }

    fn xattrs(&self, node: NodeId) -> Result<Vec<Xattr>, FsError> {
        self.read_xattrs(node)
    }

    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError> {
        match &self.node(node)?.content {
            Content::Link(t) => Ok(t.clone()),
            _ => Err(FsError::NotASymlink),
        }
    }

    fn statfs(&self) -> Result<FsStats, FsError> {
        let free = *self.free.get_or_init(|| self.count_free());
        Ok(FsStats {
            block_size: self.cluster as u32,
            total_bytes: self.size,
            free_bytes: free.unwrap_or(0),
            files: self.mft.size / self.record_size as u64,
        })
    }
}

/// Fuzzing entry: opens `data` as an NTFS volume and walks it all (bounded),
/// reading every file and link. Must never panic, hang or blow up memory.
pub fn fuzz_open_walk(data: &[u8]) {
    super::fuzz::open_walk(data, open);
}
