//! One backup job: every disk of a VM into its own image, full or
//! incremental, committed atomically (see docs/repository.md).

use super::digests::{self, Digest, MapReader, MapWriter, ZERO};
use super::repo::{PARTIAL, Repo, check_vm_name, sync_dir};
use super::{EngineError, Progress};
use crate::block::{Alloc, Extent, ReadAt};
use crate::catalog::{BackupDisk, BackupType, ChainRef, NewDisk};
use crate::qcow2::{ClusterSize, Compression, Writer, WriterOptions, consts::DEFAULT_CLUSTER_BITS};
use crate::source::{self, Source};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes read from a source per step (a multiple of every cluster size).
const CHUNK: usize = 4 << 20;
/// Threads reading and digesting a source (two cores are the norm here).
const READERS: usize = 2;
/// How often a running job's progress is written to the catalog.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requested {
    #[default]
    Auto,
    Full,
    Incremental,
}

#[derive(Debug, Clone, Default)]
pub struct BackupRequest {
    pub vm: String,
    pub disks: Vec<String>,
    pub kind: Requested,
    pub compression: Option<Compression>,
    /// The backup id to use (the server hands it out before the job runs);
    /// a fresh one when `None`.
    pub id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskResult {
    pub disk_index: usize,
    pub disk_type: BackupType,
    pub source: String,
    pub image_path: String,
    /// The backup this image is an incremental of.
    pub parent_backup: Option<String>,
    pub virtual_size: u64,
    /// Bytes of the image file.
    pub stored_bytes: u64,
    /// Guest bytes whose content changed since the parent (all data for a full).
    pub changed_bytes: u64,
    pub change_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupResult {
    pub backup_id: String,
    pub vm: String,
    pub backup_type: BackupType,
    pub disks: Vec<DiskResult>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// Things the user should know, such as a disk that starts a new chain.
    pub notes: Vec<String>,
}

struct Plan {
    source: Source,
    parent: Option<BackupDisk>,
    chain: ChainRef,
}

/// A fresh backup id: sortable by time, unique across VMs and processes.
pub fn new_backup_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let salt = blake3::hash(format!("{nanos}-{}", std::process::id()).as_bytes());
    format!("{}-{}", crate::util::time::now_compact(), &salt.to_hex()[..6])
}

/// Runs one backup job to completion (or to a clean failure).
pub fn run(repo: &Repo, req: &BackupRequest, progress: &dyn Progress) -> Result<BackupResult, EngineError> {
    check_vm_name(&req.vm)?;
    if req.disks.is_empty() {
        return Err(EngineError::BadRequest("a backup needs at least one --disk".into()));
    }
    // Open every source before anything is written.
    let sources = req.disks.iter().map(|d| source::open(d)).collect::<Result<Vec<_>, _>>()?;
    let lock = repo
        .try_lock(&req.vm)?
        .ok_or_else(|| EngineError::Busy(format!("a backup of VM {} is already running", req.vm)))?;
    repo.recover(&req.vm, &lock)?;
    let vm_id = repo.block_on(repo.catalog.vm_id(&req.vm, true))?.expect("created above");

    let mut notes = Vec::new();
    let mut plans = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let latest = repo.block_on(repo.catalog.latest_disk(vm_id, i as i64))?;
        let (parent, chain) = match (req.kind, latest) {
            (Requested::Full, _) => (None, ChainRef::New),
            (Requested::Incremental, None) => {
                return Err(EngineError::NoParent(format!(
                    "no parent backup found for incremental — full backup required first (VM {}, disk {i})",
                    req.vm
                )));
            }
            (Requested::Auto, None) => (None, ChainRef::New),
            (_, Some(p)) if p.virtual_size as u64 != source.size() => {
                notes.push(format!(
                    "disk {i} changed size ({} -> {} bytes): starting a new full chain",
                    p.virtual_size,
                    source.size()
                ));
                (None, ChainRef::New)
            }
            (_, Some(p)) => {
                let chain = ChainRef::Existing(p.chain_id);
                (Some(p), chain)
            }
        };
        plans.push(Plan { source, parent, chain });
    }
    let kind = if plans.iter().all(|p| p.parent.is_none()) { BackupType::Full } else { BackupType::Incremental };
    let id = req.id.clone().unwrap_or_else(new_backup_id);
    let total: u64 = plans.iter().map(|p| p.source.size()).sum();
    repo.block_on(repo.catalog.start_backup(&id, vm_id, kind, total))?;
    repo.block_on(repo.catalog.set_vm_disks(vm_id, &req.disks))?;
    progress.start(total);

    let started = Instant::now();
    let mut job = Job { repo, id: &id, progress, done: 0, last_report: Instant::now(), files: Vec::new() };
    match job.write_all(req, &plans) {
        Ok((disks, new_disks)) => {
            let read = total;
            let written: u64 = disks.iter().map(|d| d.stored_bytes).sum();
            if let Err(e) = repo.block_on(repo.catalog.commit_backup(&id, vm_id, &new_disks, read, written)) {
                job.discard();
                let _ = repo.block_on(repo.catalog.fail_backup(&id, &e.to_string()));
                return Err(e.into());
            }
            progress.finish();
            drop(lock);
            Ok(BackupResult {
                backup_id: id.clone(),
                vm: req.vm.clone(),
                backup_type: kind,
                disks,
                bytes_read: read,
                bytes_written: written,
                seconds: started.elapsed().as_secs_f64(),
                notes,
            })
        }
        Err(e) => {
            job.discard();
            let _ = repo.block_on(repo.catalog.fail_backup(&id, &e.to_string()));
            progress.finish();
            Err(e)
        }
    }
}

struct Job<'a> {
    repo: &'a Repo,
    id: &'a str,
    progress: &'a dyn Progress,
    done: u64,
    last_report: Instant,
    /// Every file this job created (partial or final), for cleanup on failure.
    files: Vec<PathBuf>,
}

impl Job<'_> {
    fn discard(&mut self) {
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(&f);
            if let Some(d) = f.parent() {
                let _ = sync_dir(d);
            }
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        self.progress.advance(n);
        if self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            let _ = self.repo.block_on(self.repo.catalog.progress(self.id, self.done, 0));
        }
    }

    fn write_all(
        &mut self,
        req: &BackupRequest,
        plans: &[Plan],
    ) -> Result<(Vec<DiskResult>, Vec<NewDisk>), EngineError> {
        let mut results = Vec::new();
        let mut rows = Vec::new();
        let mut renames = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let rel_dir = format!("vms/{}/disk-{i}", req.vm);
            let dir = self.repo.path(&rel_dir);
            std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
            let image_rel = format!("{rel_dir}/{}.qcow2", self.id);
            let map_rel = format!("{rel_dir}/{}.digests", self.id);
            let image = self.repo.path(&image_rel);
            let map = self.repo.path(&map_rel);
            let (image_tmp, map_tmp) = (partial(&image), partial(&map));
            self.files.extend([image_tmp.clone(), map_tmp.clone()]);
            let out = self.write_disk(plan, &image_tmp, &map_tmp, req.compression)?;
            renames.push((image_tmp, image));
            renames.push((map_tmp, map));
            let change_id = out.content_digest.clone();
            results.push(DiskResult {
                disk_index: i,
                disk_type: if plan.parent.is_some() { BackupType::Incremental } else { BackupType::Full },
                source: plan.source.spec.clone(),
                image_path: image_rel.clone(),
                parent_backup: plan.parent.as_ref().map(|p| p.backup_id.clone()),
                virtual_size: plan.source.size(),
                stored_bytes: out.stored_bytes,
                changed_bytes: out.changed_bytes,
                change_id: change_id.clone(),
            });
            rows.push(NewDisk {
                disk_index: i as i64,
                chain: plan.chain.clone(),
                parent_id: plan.parent.as_ref().map(|p| p.id),
                disk_type: if plan.parent.is_some() { BackupType::Incremental } else { BackupType::Full },
                source: plan.source.spec.clone(),
                image_path: image_rel,
                digest_path: map_rel,
                change_id: Some(change_id),
                virtual_size: plan.source.size() as i64,
                cluster_size: 1 << DEFAULT_CLUSTER_BITS,
                stored_bytes: out.stored_bytes as i64,
                changed_bytes: out.changed_bytes as i64,
                content_digest: out.content_digest,
            });
        }
        // Every image is complete and durable: move them into place, make the
        // renames durable, and only then let the caller commit the catalog.
        for (from, to) in renames {
            std::fs::rename(&from, &to).map_err(|e| EngineError::io(&from, e))?;
            self.files.push(to.clone());
            if let Some(d) = to.parent() {
                sync_dir(d)?;
            }
        }
        Ok((results, rows))
    }

    fn write_disk(
        &mut self,
        plan: &Plan,
        image: &Path,
        map: &Path,
        compression: Option<Compression>,
    ) -> Result<DiskOut, EngineError> {
        // OK to unwrap: DEFAULT_CLUSTER_BITS is a valid cluster size.
        let cluster = ClusterSize::from_bits(DEFAULT_CLUSTER_BITS).unwrap();
        let cs = cluster.usize();
        let size = plan.source.size();
        let mut parent_map = match &plan.parent {
            Some(p) => {
                let m = MapReader::open(&self.repo.path(&p.digest_path))?;
                if m.cluster_size as usize != cs || m.virtual_size != size {
                    return Err(EngineError::Repository(format!(
                        "digest map of backup {} does not match disk {} (cluster {} / size {})",
                        p.backup_id, p.disk_index, m.cluster_size, m.virtual_size
                    )));
                }
                let parent_image = self.repo.path(&p.image_path);
                if !parent_image.is_file() {
                    return Err(EngineError::Repository(format!(
                        "parent image {} of disk {} is missing",
                        p.image_path, p.disk_index
                    )));
                }
                Some(m)
            }
            None => None,
        };
        // The parent lives in the same folder: name it by file name alone.
        let backing = plan.parent.as_ref().map(|p| {
            Path::new(&p.image_path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        });
        let mut w = Writer::create(image, size, WriterOptions { cluster, compression, backing })?;
        let mut digests_out = MapWriter::create(map, cluster.bytes() as u32, size)?;
        let reader = &plan.source.reader;
        let mut changed = 0u64;
        // An incremental reads a mappable source (a raw file's data runs, a
        // QCOW2 image's data clusters) through its memory map: the digests
        // that find the few changed clusters are computed on the page cache
        // itself, without copying every byte into a buffer first (that copy
        // took more time than the hashing). Full backups store every cluster
        // and read as before.
        let incremental = parent_map.is_some();
        let locate = |off: u64, n: u64| reader.locate(off, n);
        let locate = &locate;
        let holes = &**reader;
        std::thread::scope(|s| -> Result<(), EngineError> {
            // READERS threads each read and digest every READERS-th chunk, so
            // reading and hashing overlap on all cores; this thread takes
            // the chunks in order (one channel per reader keeps the order
            // without an unbounded reorder buffer) and writes.
            // A raw file's holes are neither read nor scanned (SEEK_DATA /
            // SEEK_HOLE, as qemu-img does); elsewhere everything is data.
            let mut rxs = Vec::new();
            let mut backs = Vec::new();
            for r in 0..READERS {
                let (tx, rx) = mpsc::sync_channel::<Chunk>(2);
                let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
                rxs.push(rx);
                backs.push(back_tx);
                s.spawn(move || {
                    let mut off = r as u64 * CHUNK as u64;
                    while off < size {
                        let n = (size - off).min(CHUNK as u64) as usize;
                        let mapped = if incremental { locate(off, n as u64) } else { None };
                        let item = match mapped.filter(|e| e.len() == n as u64 && e.is_backed()) {
                            Some(e) => hole_clusters(holes, off, n, cs)
                                .map(|in_hole| (off, digest_chunk(e.bytes(), cs, &in_hole), ChunkData::Mapped(e))),
                            None => {
                                let mut buf = back_rx.try_recv().unwrap_or_default();
                                // Debug builds poison fresh buffers, so that a
                                // byte `read_chunk` leaves unfilled never passes
                                // for a zero in tests (recycled buffers hold
                                // stale bytes anyway).
                                buf.resize(n, if cfg!(debug_assertions) { 0xA5 } else { 0 });
                                read_chunk(holes, off, &mut buf, cs)
                                    .map(|in_hole| (off, digest_chunk(&buf, cs, &in_hole), ChunkData::Owned(buf)))
                            }
                        };
                        let failed = item.is_err();
                        if tx.send(item).is_err() || failed {
                            return;
                        }
                        off += (READERS * CHUNK) as u64;
                    }
                });
            }
            let chunks = size.div_ceil(CHUNK as u64) as usize;
            let rx = (0..chunks).map(|k| rxs[k % READERS].recv().unwrap_or_else(|_| Err(reader_gone())));
            let mut scratch: Vec<u8> = Vec::new();
            for item in rx {
                let (off, ds, data) = item.map_err(|e| EngineError::Read(plan.source.spec.clone(), e))?;
                let first = off / cs as u64;
                let bytes = data.bytes();
                let mapped = matches!(data, ChunkData::Mapped(_));
                // Consecutive whole clusters to store go to the writer as one
                // run: new data clusters are then written straight from the
                // chunk (no copy into the writer's gather buffer); the writer
                // still turns all-zero ones into zero clusters. A stored
                // cluster of a mapped chunk is first copied out (into
                // `scratch`, which then holds the pending run) and hashed
                // again: its stored bytes and digest agree even if the source
                // changes under the map.
                let mut run: Option<usize> = None;
                for (i, (c, d)) in bytes.chunks(cs).zip(&ds).enumerate() {
                    let store = match &mut parent_map {
                        Some(pm) => pm.next_digest()? != *d,
                        None => *d != ZERO,
                    };
                    let digest = if store && mapped && *d != ZERO {
                        scratch.extend_from_slice(c);
                        digests::digest(&scratch[scratch.len() - c.len()..])
                    } else {
                        *d
                    };
                    digests_out.push(&digest)?;
                    // ZERO: all zeros, or in a hole (whose bytes in an owned
                    // buffer are stale: `read_chunk` does not fill them);
                    // either way a zero cluster, never data.
                    if store {
                        changed += c.len() as u64;
                        if c.len() == cs && digest != ZERO {
                            run.get_or_insert(i);
                            continue;
                        }
                    }
                    if let Some(start) = run.take() {
                        let src = if mapped { &scratch[..(i - start) * cs] } else { &bytes[start * cs..i * cs] };
                        w.write_clusters(first + start as u64, src)?;
                    }
                    if store {
                        // A zero cluster, or a short last cluster (never part of a run).
                        let index = first + i as u64;
                        if digest == ZERO {
                            w.write_zero_cluster(index)?
                        } else if mapped {
                            w.write_cluster(index, &scratch[scratch.len() - c.len()..])?
                        } else {
                            w.write_cluster(index, c)?
                        }
                    }
                    scratch.clear();
                }
                if let Some(start) = run {
                    let src = if mapped { &scratch[..] } else { &bytes[start * cs..] };
                    w.write_clusters(first + start as u64, src)?;
                }
                scratch.clear();
                self.advance(bytes.len() as u64);
                if let ChunkData::Owned(buf) = data {
                    let _ = backs[(off / CHUNK as u64) as usize % READERS].send(buf);
                }
            }
            Ok(())
        })?;
        let stats = w.finish()?;
        let content_digest = digests_out.finish()?;
        Ok(DiskOut { stored_bytes: stats.file_size, changed_bytes: changed, content_digest })
    }
}

/// A chunk as a reader thread hands it over: offset, digests, bytes.
type Chunk = Result<(u64, Vec<Digest>, ChunkData), std::io::Error>;

/// A chunk's bytes: read into a buffer (which goes back to its reader), or
/// lent from the source's memory map.
enum ChunkData {
    Owned(Vec<u8>),
    Mapped(Extent),
}

impl ChunkData {
    fn bytes(&self) -> &[u8] {
        match self {
            ChunkData::Owned(b) => b,
            ChunkData::Mapped(e) => e.bytes(),
        }
    }
}

fn reader_gone() -> std::io::Error {
    std::io::Error::other("a reader thread stopped")
}

/// The data and hole runs of the `n` bytes at `off`: `(hole, start, len)`
/// relative to `off`, from the source's allocation status.
fn runs(reader: &dyn ReadAt, off: u64, n: usize) -> std::io::Result<Vec<(bool, usize, usize)>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < n {
        let run = reader.status(off + pos as u64, (n - pos) as u64)?;
        let len = (run.len as usize).clamp(1, n - pos);
        out.push((run.alloc != Alloc::Data, pos, len));
        pos += len;
    }
    Ok(out)
}

/// The clusters of a hole run that it covers whole (hole edges are
/// cluster aligned, 64 KiB, except at the end of the disk).
fn whole_clusters(pos: usize, len: usize, cs: usize) -> std::ops::Range<usize> {
    pos.div_ceil(cs)..(pos + len) / cs
}

/// Per cluster of the `n` bytes at `off`, whether it lies wholly in a hole,
/// found without reading.
fn hole_clusters(reader: &dyn ReadAt, off: u64, n: usize, cs: usize) -> std::io::Result<Vec<bool>> {
    let mut in_hole = vec![false; n.div_ceil(cs)];
    for (hole, pos, len) in runs(reader, off, n)? {
        let r = whole_clusters(pos, len, cs);
        if hole && r.start < r.end {
            in_hole[r].fill(true);
        }
    }
    Ok(in_hole)
}

/// Reads the chunk at `off` into `buf`; holes of a raw file are not read.
/// Returns, per cluster, whether it lies wholly in a hole.
fn read_chunk(reader: &dyn ReadAt, off: u64, buf: &mut [u8], cs: usize) -> std::io::Result<Vec<bool>> {
    let n = buf.len();
    let mut in_hole = vec![false; n.div_ceil(cs)];
    for (hole, pos, len) in runs(reader, off, n)? {
        if hole {
            // Whole clusters in the hole are marked and left unfilled (their
            // digest is ZERO and they are stored, if at all, as zero
            // clusters); only the bytes of partly covered clusters, which
            // are digested, are zeroed.
            let r = whole_clusters(pos, len, cs);
            if r.start < r.end {
                buf[pos..r.start * cs].fill(0);
                buf[r.end * cs..pos + len].fill(0);
                in_hole[r].fill(true);
            } else {
                buf[pos..pos + len].fill(0);
            }
        } else {
            reader.read_exact_at(off + pos as u64, &mut buf[pos..pos + len])?;
        }
    }
    Ok(in_hole)
}

/// The digests of a chunk's clusters (ZERO for clusters inside a hole).
fn digest_chunk(buf: &[u8], cs: usize, in_hole: &[bool]) -> Vec<Digest> {
    buf.chunks(cs).zip(in_hole).map(|(c, &hole)| if hole { ZERO } else { digests::digest(c) }).collect()
}

struct DiskOut {
    stored_bytes: u64,
    changed_bytes: u64,
    content_digest: String,
}

fn partial(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(PARTIAL);
    PathBuf::from(s)
}
