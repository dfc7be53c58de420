//! The image a merge writes into, opened read-write: which host clusters its
//! metadata references (a scan, not its refcounts: after a crash those may be
//! stale), a bump allocator past everything referenced, L1/L2 updates, and a
//! rebuild of the refcount structure once the clusters have moved.
//!
//! Nothing a reader may still read is ever overwritten or freed: new
//! clusters are only allocated past the end of the file, L2 tables are
//! updated in place only where no reader looks (see `transfer.rs`), and only
//! clusters that held data or refcounts are punched out when freed; L1 and
//! L2 tables never move.

use super::MergeError;
use crate::qcow2::consts::*;
use crate::qcow2::header::Header;
use crate::qcow2::l2;
use crate::qcow2::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Host clusters a merge tracks (2 bytes of refcount and 1 of kind each):
/// 2^26 clusters are 4 TiB of image at 64 KiB clusters, 192 MiB of memory.
const MAX_HOST_CLUSTERS: u64 = 1 << 26;
/// The refcount width merges write and accept: 16 bits, QEMU's default.
const REFCOUNT_ORDER: u32 = 4;
/// Offset of refcount_table_offset (8 bytes) and refcount_table_clusters
/// (4 bytes) in the header: switched together by one 12-byte write.
const REFCOUNT_FIELDS_AT: u64 = 48;

/// What a host cluster held when the step started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Free,
    Header,
    L1,
    L2,
    Refcount,
    Data,
    Compressed,
}

/// References per host cluster, as the metadata states them.
struct Scan {
    counts: Vec<u16>,
    kinds: Vec<Kind>,
    /// Clusters the file holds (a compressed cluster's sector-rounded end may
    /// reach one further): references beyond are corruption.
    limit: u64,
}

impl Scan {
    fn mark(&mut self, host: u64, cs: u64, kind: Kind) -> Result<()> {
        let c = host / cs;
        if c > self.limit {
            return Err(Error::corrupt(host, format!("{kind:?} cluster at {host:#x} lies past the end of the file")));
        }
        if c >= MAX_HOST_CLUSTERS {
            return Err(Error::Unsupported(format!(
                "host offset {host:#x} is past the {MAX_HOST_CLUSTERS} clusters a merge tracks"
            )));
        }
        if c as usize >= self.counts.len() {
            self.counts.resize(c as usize + 1, 0);
            self.kinds.resize(c as usize + 1, Kind::Free);
        }
        let n = &mut self.counts[c as usize];
        *n = n.checked_add(1).ok_or_else(|| Error::corrupt(host, "more than 65535 references to one cluster"))?;
        self.kinds[c as usize] = kind;
        Ok(())
    }

    fn mark_range(&mut self, at: u64, len: u64, cs: u64, kind: Kind) -> Result<()> {
        let end = at.checked_add(len).ok_or_else(|| Error::corrupt(at, "range overflows"))?;
        let mut c = at / cs * cs;
        while c < end {
            self.mark(c, cs, kind)?;
            c += cs;
        }
        Ok(())
    }

    /// One past the last referenced cluster.
    fn end(&self) -> u64 {
        self.counts.iter().rposition(|&n| n > 0).map_or(0, |i| i as u64 + 1)
    }
}

pub(super) struct Target {
    file: File,
    pub header: Header,
    l1: Vec<u64>,
    /// Kinds at the start of the step: what may be punched once unreferenced.
    start_kinds: Vec<Kind>,
    /// The file's length before `reserve`.
    start_len: u64,
    /// Where the next cluster is allocated.
    next: u64,
    /// Room for compressed clusters: [ctail, ctail_end).
    ctail: u64,
    ctail_end: u64,
    /// Data clusters owned by exactly one L2 entry (safe to overwrite).
    exclusive: Vec<bool>,
}

fn read_u64s(file: &File, at: u64, n: usize) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; n * 8];
    file.read_exact_at(&mut raw, at).map_err(Error::io(at))?;
    // OK to unwrap: chunks_exact(8) yields 8-byte slices.
    Ok(raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect())
}

fn to_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

/// Refuses what a merge cannot rewrite without losing something.
pub(super) fn check_supported(h: &Header, path: &Path) -> Result<(), MergeError> {
    let why = if h.nb_snapshots > 0 {
        Some("it has internal snapshots")
    } else if h.has_bitmaps_ext || h.autoclear & AUTOCLEAR_BITMAPS != 0 {
        Some("it has persistent bitmaps")
    } else if h.extended_l2() {
        Some("it uses extended L2 entries (subclusters)")
    } else if h.incompatible & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT) != 0 {
        Some("it is marked dirty or corrupt (run qemu-img check -r all first)")
    } else if h.refcount_order != REFCOUNT_ORDER {
        Some("its refcounts are not 16 bits wide")
    } else {
        None
    };
    match why {
        Some(w) => Err(MergeError::Unsupported(format!("{}: {w}", path.display()))),
        None => Ok(()),
    }
}

impl Target {
    pub fn open(path: &Path) -> Result<Self, MergeError> {
        let header = Header::read(&crate::block::RawFile::open(path).map_err(|e| MergeError::io(path, e))?)?;
        check_supported(&header, path)?;
        let file =
            std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| MergeError::io(path, e))?;
        let l1 = read_u64s(&file, header.l1_table_offset, header.l1_size as usize)?;
        let start_len = file.metadata().map_err(|e| MergeError::io(path, e))?.len();
        let mut t = Self {
            file,
            header,
            l1,
            start_kinds: Vec::new(),
            start_len,
            next: 0,
            ctail: 0,
            ctail_end: 0,
            exclusive: Vec::new(),
        };
        let scan = t.scan(true)?;
        let cs = t.cs();
        // Past everything referenced and everything in the file, so that a
        // crashed run's leftovers are never reused while a reader may hold
        // metadata pointing at them.
        t.next = (scan.end() * cs).max(start_len.next_multiple_of(cs));
        t.exclusive = scan.counts.iter().zip(&scan.kinds).map(|(&n, &k)| n == 1 && k == Kind::Data).collect();
        t.start_kinds = scan.kinds;
        Ok(t)
    }

    pub fn cs(&self) -> u64 {
        self.header.cluster.bytes()
    }

    fn scan(&self, with_refcounts: bool) -> Result<Scan> {
        let h = &self.header;
        let cs = self.cs();
        let len = self.file.metadata().map_err(Error::io(0))?.len();
        let mut s = Scan { counts: Vec::new(), kinds: Vec::new(), limit: len.div_ceil(cs) };
        s.mark(0, cs, Kind::Header)?;
        s.mark_range(h.l1_table_offset, h.l1_size as u64 * 8, cs, Kind::L1)?;
        if with_refcounts {
            let rt_len = h.refcount_table_clusters as u64 * cs;
            s.mark_range(h.refcount_table_offset, rt_len, cs, Kind::Refcount)?;
            let entries = usize::try_from(rt_len / 8).map_err(|_| Error::corrupt(56, "refcount table too large"))?;
            for e in read_u64s(&self.file, h.refcount_table_offset, entries)? {
                let block = e & REFT_OFFSET_MASK;
                if block != 0 {
                    s.mark(block, cs, Kind::Refcount)?;
                }
            }
        }
        for (i, &e) in self.l1.iter().enumerate() {
            let t = e & L1E_OFFSET_MASK;
            if t == 0 {
                continue;
            }
            if !t.is_multiple_of(cs) {
                return Err(Error::corrupt(t, format!("L2 table of L1 entry {i} is not cluster aligned")));
            }
            s.mark(t, cs, Kind::L2)?;
            for e in read_u64s(&self.file, t, (cs / 8) as usize)? {
                if e & OFLAG_COMPRESSED != 0 {
                    let (host, len) = l2::compressed(e, h.cluster.bits());
                    s.mark_range(host, len, cs, Kind::Compressed)?;
                } else if e & L2E_OFFSET_MASK != 0 {
                    s.mark(e & L2E_OFFSET_MASK, cs, Kind::Data)?;
                }
            }
        }
        Ok(s)
    }

    /// Makes the file long enough for `clusters` more clusters, before any
    /// metadata points past its current end: a reader that opens the image
    /// during the merge sees a size covering everything it may find.
    pub fn reserve(&mut self, clusters: u64) -> Result<()> {
        let want = clusters.checked_mul(self.cs()).and_then(|b| b.checked_add(self.next));
        let want = want.ok_or_else(|| Error::Unsupported("merge needs more space than a file can hold".into()))?;
        if want > self.start_len {
            self.file.set_len(want).map_err(Error::io(want))?;
        }
        Ok(())
    }

    /// `n` contiguous new clusters.
    pub fn alloc(&mut self, n: u64) -> Result<u64> {
        let at = self.next;
        let end =
            n.checked_mul(self.cs()).and_then(|b| at.checked_add(b)).filter(|&e| e / self.cs() < MAX_HOST_CLUSTERS);
        self.next =
            end.ok_or_else(|| Error::Unsupported("merge target grows past the clusters it can track".into()))?;
        Ok(at)
    }

    /// Room for `len` bytes of compressed data, packed like QEMU does; a
    /// compressed cluster never spans clusters that are not contiguous.
    pub fn place_compressed(&mut self, len: u64) -> Result<u64> {
        if self.ctail + len > self.ctail_end {
            let n = len.div_ceil(self.cs());
            self.ctail = self.alloc(n)?;
            self.ctail_end = self.ctail + n * self.cs();
        }
        let at = self.ctail;
        self.ctail += len;
        Ok(at)
    }

    /// Whether data cluster `host` belongs to one L2 entry only, so it can be
    /// rewritten in place.
    pub fn is_exclusive(&self, host: u64) -> bool {
        self.exclusive.get((host / self.cs()) as usize).copied().unwrap_or(false)
    }

    pub fn write(&self, at: u64, data: &[u8]) -> Result<()> {
        self.file.write_all_at(data, at).map_err(Error::io(at))
    }

    pub fn sync_data(&self) -> Result<()> {
        self.file.sync_data().map_err(Error::io(0))
    }

    /// The L2 table of L1 entry `i`: its offset (if any) and entries.
    pub fn l2(&self, i: usize) -> Result<(Option<u64>, Vec<u64>)> {
        let entries = (self.cs() / 8) as usize;
        match self.l1.get(i).map(|e| e & L1E_OFFSET_MASK) {
            None => Err(Error::corrupt(self.header.l1_table_offset, format!("L1 index {i} is past the table"))),
            Some(0) => Ok((None, vec![0; entries])),
            Some(off) => Ok((Some(off), read_u64s(&self.file, off, entries)?)),
        }
    }

    /// Stores L2 table `i`. In place when `in_place` and it exists;
    /// otherwise at a new cluster, made durable, and only then linked from
    /// the L1 entry (one 8-byte write: readers see the old or the new table).
    pub fn store_l2(&mut self, i: usize, old: Option<u64>, table: &[u64], in_place: bool) -> Result<()> {
        // The data the table points to is durable before the table is.
        self.sync_data()?;
        if let (Some(off), true) = (old, in_place) {
            return self.write(off, &to_bytes(table));
        }
        let off = self.alloc(1)?;
        self.write(off, &to_bytes(table))?;
        self.sync_data()?;
        let entry = off | OFLAG_COPIED;
        self.write(self.header.l1_table_offset + i as u64 * 8, &entry.to_be_bytes())?;
        self.l1[i] = entry;
        Ok(())
    }

    /// Writes a refcount structure for what the metadata references now,
    /// past everything, and switches the header to it (one 12-byte write).
    /// Returns the references per host cluster it recorded.
    pub fn rebuild_refcounts(&mut self) -> Result<Vec<u16>> {
        let cs = self.cs();
        let mut counts = self.scan(false)?.counts;
        let per_block = cs * 8 / (1 << REFCOUNT_ORDER);
        let first = self.next / cs;
        let (mut blocks, mut table) = (1u64, 1u64);
        loop {
            let top = first + table + blocks;
            let (nb, nt) = (top.div_ceil(per_block), (top.div_ceil(per_block) * 8).div_ceil(cs));
            if nb <= blocks && nt <= table {
                break;
            }
            (blocks, table) = (nb.max(blocks), nt.max(table));
        }
        let rt_off = self.alloc(table)?;
        let rb_off = self.alloc(blocks)?;
        counts.resize((self.next / cs) as usize, 0);
        for c in (rt_off / cs)..(self.next / cs) {
            counts[c as usize] = 1;
        }
        let mut rb = vec![0u8; (blocks * cs) as usize];
        for (i, n) in counts.iter().enumerate() {
            rb[i * 2..i * 2 + 2].copy_from_slice(&n.to_be_bytes());
        }
        self.write(rb_off, &rb)?;
        let rt: Vec<u64> = (0..table * cs / 8).map(|b| if b < blocks { rb_off + b * cs } else { 0 }).collect();
        self.write(rt_off, &to_bytes(&rt))?;
        self.sync_data()?;
        let mut fields = [0u8; 12];
        fields[..8].copy_from_slice(&rt_off.to_be_bytes());
        fields[8..].copy_from_slice(&(table as u32).to_be_bytes());
        self.write(REFCOUNT_FIELDS_AT, &fields)?;
        self.header.refcount_table_offset = rt_off;
        self.header.refcount_table_clusters = table as u32;
        self.file.sync_all().map_err(Error::io(0))?;
        Ok(counts)
    }

    /// Gives back the space of clusters that held data or refcounts when the
    /// step started and are referenced no more, and trims what `reserve`
    /// added beyond the last cluster used. Returns the bytes punched.
    pub fn release(&self, counts: &[u16]) -> Result<u64> {
        let cs = self.cs();
        let freed = |c: usize| {
            counts.get(c).copied().unwrap_or(0) == 0
                && matches!(self.start_kinds[c], Kind::Data | Kind::Compressed | Kind::Refcount)
        };
        let mut punched = 0;
        let mut c = 0;
        while c < self.start_kinds.len() {
            if !freed(c) {
                c += 1;
                continue;
            }
            let run = (c..self.start_kinds.len()).take_while(|&k| freed(k)).count();
            punch(&self.file, c as u64 * cs, run as u64 * cs)?;
            punched += run as u64 * cs;
            c += run;
        }
        let end = self.next.max(self.start_len);
        self.file.set_len(end).map_err(Error::io(end))?;
        self.file.sync_all().map_err(Error::io(0))?;
        Ok(punched)
    }
}

/// Deallocates a byte range, keeping the file size. Filesystems without hole
/// punching keep the bytes: the clusters are free either way.
fn punch(file: &File, at: u64, len: u64) -> Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, at, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
        Err(e) => Err(Error::io(at)(e.into())),
    }
}
