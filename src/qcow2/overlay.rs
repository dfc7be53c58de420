//! A writable QCOW2 overlay over a read-only base: the write side of a
//! restore-point export (instant recovery). Every write lands in the
//! overlay file; the base (a restore point's chain) is never written.
//!
//! Why not [`Writer`]: the writer lays out all metadata at `finish`, which
//! suits a backup written once. An overlay is written for days, must keep
//! what a client flushed across a crash, and is reopened after restarts, so
//! its metadata lives in place:
//! * the L1 table covers the whole disk from the start (an empty image made
//!   by [`Writer`]);
//! * data clusters and L2 tables are appended at the end of the file, and
//!   never reused while the overlay is open: a cluster a zero write frees
//!   may still be named by the L2 table on disk until the next flush;
//! * a flush makes the data durable first, then writes the changed L2
//!   tables, then (once those are durable) the L1 entries of new tables: a
//!   crash at any instant keeps every flushed write, and an unflushed one
//!   reads old or new, never another cluster's bytes;
//! * refcounts are not kept while the overlay is open: the header's dirty
//!   bit ("incompatible features" bit 0 of QEMU's qcow2.txt) says so, as
//!   with QEMU's lazy refcounts. [`Overlay::close`] writes fresh refcount
//!   blocks and clears the bit; they are recomputed from the L1 and L2
//!   tables, so a crash loses nothing.
//!
//! Memory: the L2 tables of the written part of the disk (one cluster per
//! 512 MiB of guest space at 64 KiB clusters).

use super::consts::*;
use super::error::{Error, Result};
use super::header::{ClusterSize, Header};
use super::writer::{Writer, WriterOptions};
use crate::block::{Alloc, RawFile, ReadAt, Run, check_range, whole_run};
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Header byte offsets patched in place (qcow2.txt, "Header").
const REFCOUNT_TABLE_FIELD: u64 = 48;
const INCOMPATIBLE_FIELD: u64 = 72;
/// The refcount width overlays are written with (that of [`Writer`]).
const REFCOUNT_ORDER: u32 = 4;
/// Bits of a standard L2 entry that must be zero ("Cluster mapping"):
/// 1-8 and 56-61.
const L2E_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// A QCOW2 file holding the writes made over `base`.
pub struct Overlay {
    file: File,
    base: Arc<dyn ReadAt>,
    size: u64,
    cluster: ClusterSize,
    l1_off: u64,
    state: RwLock<State>,
}

struct State {
    /// L1 entries as stored.
    l1: Vec<u64>,
    /// L2 tables by L1 index, entries as stored.
    l2: Vec<Option<Box<[u64]>>>,
    /// Tables changed since the last flush.
    dirty: BTreeSet<usize>,
    /// Tables whose L1 entry is not on disk yet.
    new_tables: BTreeSet<usize>,
    next_host: u64,
    unsynced: bool,
}

/// What one guest cluster of the overlay holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Nothing: the base shows through.
    Base,
    Zero,
    Data(u64),
}

impl State {
    fn entry(&self, cluster: u64, entries: u64) -> u64 {
        match &self.l2[(cluster / entries) as usize] {
            Some(t) => t[(cluster % entries) as usize],
            None => 0,
        }
    }

    fn slot(&self, cluster: u64, entries: u64) -> Slot {
        let e = self.entry(cluster, entries);
        match e & L2E_OFFSET_MASK {
            0 if e & OFLAG_ZERO != 0 => Slot::Zero,
            0 => Slot::Base,
            host => Slot::Data(host),
        }
    }

    fn alloc(&mut self, cs: u64) -> u64 {
        let at = self.next_host;
        self.next_host += cs;
        at
    }

    fn set(&mut self, cluster: u64, entry: u64, cs: u64) {
        let entries = cs / 8;
        let i = (cluster / entries) as usize;
        if self.l2[i].is_none() {
            let host = self.alloc(cs);
            self.l1[i] = host | OFLAG_COPIED;
            self.new_tables.insert(i);
            self.l2[i] = Some(vec![0u64; entries as usize].into());
        }
        // OK to unwrap: made just above when missing.
        self.l2[i].as_mut().unwrap()[(cluster % entries) as usize] = entry;
        self.dirty.insert(i);
    }
}

fn be_bytes(entries: &[u64]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_be_bytes()).collect()
}

impl Overlay {
    /// Creates an empty overlay at `path` (which must not exist) over
    /// `base`, naming `backing` (relative to the overlay's folder) as its
    /// backing file, so QEMU can open it too.
    pub fn create(path: &Path, base: Arc<dyn ReadAt>, backing: &str) -> Result<Self> {
        let opts = WriterOptions { backing: Some(backing.to_string()), ..Default::default() };
        Writer::create(path, base.size(), opts)?.finish()?;
        Self::open(path, base)
    }

    /// Opens an overlay made by [`Overlay::create`] over the same base, and
    /// marks it dirty until [`Overlay::close`].
    pub fn open(path: &Path, base: Arc<dyn ReadAt>) -> Result<Self> {
        let open_err = |source| Error::Open { path: path.to_path_buf(), source };
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(open_err)?;
        let raw = RawFile::from_file(file.try_clone().map_err(open_err)?).map_err(open_err)?;
        let h = Header::read(&raw)?;
        check_header(&h, base.size())?;
        let cs = h.cluster.bytes();
        let file_len = raw.size();
        let l1 = read_entries(&raw, h.l1_table_offset, h.l1_size as usize)?;
        let mut l2 = Vec::with_capacity(l1.len());
        for (i, &e) in l1.iter().enumerate() {
            let host = e & L1E_OFFSET_MASK;
            if host == 0 {
                l2.push(None);
                continue;
            }
            check_host(host, cs, file_len, "L2 table", h.l1_table_offset + i as u64 * 8)?;
            let t = read_entries(&raw, host, (cs / 8) as usize)?;
            for (j, &d) in t.iter().enumerate() {
                if d & (OFLAG_COMPRESSED | L2E_RESERVED) != 0 {
                    return Err(Error::Unsupported(format!("overlay L2 entry {d:#x} at {host}+{}", j * 8)));
                }
                let data = d & L2E_OFFSET_MASK;
                if data != 0 {
                    check_host(data, cs, file_len, "data cluster", host + j as u64 * 8)?;
                }
            }
            l2.push(Some(t.into_boxed_slice()));
        }
        let state = State {
            l1,
            l2,
            dirty: BTreeSet::new(),
            new_tables: BTreeSet::new(),
            next_host: file_len.next_multiple_of(cs),
            unsynced: false,
        };
        let size = base.size();
        let o = Self { file, base, size, cluster: h.cluster, l1_off: h.l1_table_offset, state: RwLock::new(state) };
        o.set_incompatible(h.incompatible | INCOMPAT_DIRTY)?;
        Ok(o)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        crate::util::read(&self.state)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        crate::util::write(&self.state)
    }

    fn set_incompatible(&self, bits: u64) -> Result<()> {
        self.file.write_all_at(&bits.to_be_bytes(), INCOMPATIBLE_FIELD).map_err(Error::io(INCOMPATIBLE_FIELD))?;
        self.file.sync_data().map_err(Error::io(0))
    }

    /// The guest bytes of `cluster`, which is about to get its own host
    /// cluster: the base's bytes, or zeros.
    fn cluster_bytes(&self, slot: Slot, cluster: u64) -> io::Result<Vec<u8>> {
        let cs = self.cluster.bytes();
        let mut buf = vec![0u8; cs as usize];
        let start = cluster * cs;
        let n = cs.min(self.base.size().saturating_sub(start)) as usize;
        if slot == Slot::Base && n > 0 {
            self.base.read_exact_at(start, &mut buf[..n])?;
        }
        Ok(buf)
    }

    /// Writes `data` (zeros when `None`) at `within` of guest `cluster`.
    fn write_piece(&self, st: &mut State, cluster: u64, within: u64, len: u64, data: Option<&[u8]>) -> io::Result<()> {
        let cs = self.cluster.bytes();
        let slot = st.slot(cluster, cs / 8);
        let guest_end = ((cluster + 1) * cs).min(self.size);
        let whole = within == 0 && cluster * cs + len >= guest_end;
        match (slot, data) {
            (Slot::Data(host), Some(d)) => return self.file.write_all_at(d, host + within),
            (Slot::Zero, None) => return Ok(()),
            (_, None) if whole => {
                st.set(cluster, OFLAG_ZERO, cs);
                return Ok(());
            }
            (Slot::Data(host), None) => return self.file.write_all_at(&vec![0u8; len as usize], host + within),
            _ => {}
        }
        let mut buf = self.cluster_bytes(slot, cluster)?;
        let range = within as usize..(within + len) as usize;
        match data {
            Some(d) => buf[range].copy_from_slice(d),
            None => buf[range].fill(0),
        }
        let host = st.alloc(cs);
        self.file.write_all_at(&buf, host)?;
        st.set(cluster, host | OFLAG_COPIED, cs);
        Ok(())
    }

    fn write_range(&self, offset: u64, len: u64, data: Option<&[u8]>) -> io::Result<()> {
        check_range(offset, len as usize, self.size)?;
        let cs = self.cluster.bytes();
        let mut st = self.write_state();
        let mut done = 0u64;
        while done < len {
            let at = offset + done;
            let within = at % cs;
            let n = (cs - within).min(len - done);
            let piece = data.map(|d| &d[done as usize..(done + n) as usize]);
            self.write_piece(&mut st, at / cs, within, n, piece)?;
            done += n;
        }
        st.unsynced = true;
        Ok(())
    }

    /// Writes `data` at guest `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_range(offset, data.len() as u64, Some(data))
    }

    /// Zeros `len` bytes at `offset`: whole clusters become zero clusters
    /// (no data stored), partial ones are written.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_range(offset, len, None)
    }

    /// Discards `len` bytes at `offset` (NBD TRIM: they may read as
    /// anything after): the whole clusters inside become zero clusters,
    /// the partial ones at the ends are left as they are.
    pub fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len as usize, self.size)?;
        let cs = self.cluster.bytes();
        let start = offset.next_multiple_of(cs);
        let end = if offset + len == self.size { self.size } else { (offset + len) / cs * cs };
        if start < end { self.write_zeroes(start, end - start) } else { Ok(()) }
    }

    /// Makes every write so far durable, data before the tables naming it.
    pub fn flush(&self) -> io::Result<()> {
        let mut st = self.write_state();
        if !st.unsynced && st.dirty.is_empty() {
            return Ok(());
        }
        self.file.sync_data()?;
        for &i in &st.dirty {
            // OK to unwrap: only existing tables are marked dirty.
            let t = st.l2[i].as_ref().unwrap();
            self.file.write_all_at(&be_bytes(t), st.l1[i] & L1E_OFFSET_MASK)?;
        }
        if !st.new_tables.is_empty() {
            self.file.sync_data()?;
            for &i in &st.new_tables {
                self.file.write_all_at(&st.l1[i].to_be_bytes(), self.l1_off + i as u64 * 8)?;
            }
        }
        self.file.sync_data()?;
        st.dirty.clear();
        st.new_tables.clear();
        st.unsynced = false;
        Ok(())
    }

    /// Flushes, writes refcounts for what the tables use, and clears the
    /// dirty bit: a clean QCOW2 image that `qemu-img check` accepts.
    pub fn close(&self) -> Result<()> {
        self.flush().map_err(Error::io(0))?;
        let st = self.write_state();
        let cs = self.cluster.bytes();
        let mut used = vec![0u16; (st.next_host / cs) as usize];
        let mut mark = |host: u64| {
            if let Some(r) = used.get_mut((host / cs) as usize) {
                *r = 1;
            }
        };
        mark(0);
        let l1_clusters = (st.l1.len() as u64 * 8).div_ceil(cs);
        (0..l1_clusters).for_each(|c| mark(self.l1_off + c * cs));
        for (i, t) in st.l2.iter().enumerate() {
            let Some(t) = t else { continue };
            mark(st.l1[i] & L1E_OFFSET_MASK);
            t.iter().map(|e| e & L2E_OFFSET_MASK).filter(|&h| h != 0).for_each(&mut mark);
        }
        let (rt_off, rt_clusters) = write_refcounts(&self.file, used, cs)?;
        let mut field = [0u8; 12];
        field[..8].copy_from_slice(&rt_off.to_be_bytes());
        field[8..].copy_from_slice(&rt_clusters.to_be_bytes());
        self.file.sync_data().map_err(Error::io(rt_off))?;
        self.file.write_all_at(&field, REFCOUNT_TABLE_FIELD).map_err(Error::io(REFCOUNT_TABLE_FIELD))?;
        let mut inc = [0u8; 8];
        self.file.read_exact_at(&mut inc, INCOMPATIBLE_FIELD).map_err(Error::io(INCOMPATIBLE_FIELD))?;
        self.set_incompatible(u64::from_be_bytes(inc) & !INCOMPAT_DIRTY)
    }
}

/// Appends a refcount table and blocks covering `refcounts` (one per host
/// cluster, in use or not) and themselves; returns the table's offset and
/// size in clusters.
fn write_refcounts(file: &File, mut refcounts: Vec<u16>, cs: u64) -> Result<(u64, u32)> {
    let per_block = cs * 8 / (1 << REFCOUNT_ORDER);
    let used = refcounts.len() as u64;
    let (mut blocks, mut table) = (0u64, 0u64);
    loop {
        let total = used + blocks + table;
        let nb = total.div_ceil(per_block);
        let nt = (nb * 8).div_ceil(cs).max(1);
        if (nb, nt) == (blocks, table) {
            break;
        }
        (blocks, table) = (nb, nt);
    }
    let rt_off = used * cs;
    let rb_off = rt_off + table * cs;
    refcounts.resize((used + table + blocks) as usize, 1);
    let mut rt = vec![0u8; (table * cs) as usize];
    for b in 0..blocks {
        rt[(b * 8) as usize..(b * 8 + 8) as usize].copy_from_slice(&(rb_off + b * cs).to_be_bytes());
    }
    let mut rb = vec![0u8; (blocks * cs) as usize];
    for (i, r) in refcounts.iter().enumerate() {
        rb[i * 2..i * 2 + 2].copy_from_slice(&r.to_be_bytes());
    }
    file.write_all_at(&rt, rt_off).map_err(Error::io(rt_off))?;
    file.write_all_at(&rb, rb_off).map_err(Error::io(rb_off))?;
    let table = u32::try_from(table).map_err(|_| Error::Unsupported(format!("{table} refcount table clusters")))?;
    Ok((rt_off, table))
}

/// Only overlays this module wrote are opened: version 3, a backing file,
/// plain L2 entries, 16-bit refcounts, no snapshots, the base's size.
fn check_header(h: &Header, base_size: u64) -> Result<()> {
    let want = base_size.next_multiple_of(512);
    let problem = if h.version != 3 {
        Some(format!("version {}", h.version))
    } else if h.backing_file.is_none() {
        Some("no backing file".into())
    } else if h.incompatible & !INCOMPAT_DIRTY != 0 {
        Some(format!("incompatible features {:#x}", h.incompatible))
    } else if h.refcount_order != REFCOUNT_ORDER || h.nb_snapshots != 0 {
        Some(format!("refcount order {}, {} snapshots", h.refcount_order, h.nb_snapshots))
    } else if h.size != want {
        Some(format!("virtual size {} over a base of {base_size} bytes", h.size))
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::Unsupported(format!("not an export overlay: {p}"))),
        None => Ok(()),
    }
}

fn check_host(host: u64, cs: u64, file_len: u64, what: &str, at: u64) -> Result<()> {
    if !host.is_multiple_of(cs) || host.checked_add(cs).is_none_or(|end| end > file_len.next_multiple_of(cs)) {
        return Err(Error::corrupt(at, format!("{what} at {host:#x} outside a file of {file_len} bytes")));
    }
    Ok(())
}

fn read_entries(file: &RawFile, at: u64, n: usize) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; n * 8];
    file.read_exact_at(at, &mut raw).map_err(Error::io(at))?;
    // OK to unwrap: chunks of exactly 8 bytes.
    Ok(raw.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap())).collect())
}

impl ReadAt for Overlay {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len(), self.size)?;
        let cs = self.cluster.bytes();
        let st = self.read_state();
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let slot = st.slot(at / cs, cs / 8);
            // Runs of clusters the base shows go to the base in one read.
            let mut end = ((at / cs + 1) * cs).min(offset + buf.len() as u64);
            if slot == Slot::Base {
                while end < offset + buf.len() as u64 && st.slot(end / cs, cs / 8) == Slot::Base {
                    end = ((end / cs + 1) * cs).min(offset + buf.len() as u64);
                }
            }
            let piece = &mut buf[done..done + (end - at) as usize];
            match slot {
                Slot::Base => self.base.read_exact_at(at, piece)?,
                Slot::Zero => piece.fill(0),
                Slot::Data(host) => self.file.read_exact_at(piece, host + at % cs)?,
            }
            done += piece.len();
        }
        Ok(())
    }

    fn status(&self, offset: u64, len: u64) -> io::Result<Run> {
        let run = whole_run(offset, len, self.size, Alloc::Data)?;
        let cs = self.cluster.bytes();
        let st = self.read_state();
        let first = st.slot(offset / cs, cs / 8);
        let same = |c: u64| match (first, st.slot(c, cs / 8)) {
            (Slot::Data(_), Slot::Data(_)) => true,
            (a, b) => a == b,
        };
        let mut end = ((offset / cs + 1) * cs).min(run.end());
        while end < run.end() && same(end / cs) {
            end = ((end / cs + 1) * cs).min(run.end());
        }
        let alloc = match first {
            Slot::Base => return self.base.status(offset, end - offset),
            Slot::Zero => Alloc::Zero,
            Slot::Data(_) => Alloc::Data,
        };
        Ok(Run { offset, len: end - offset, alloc })
    }
}
