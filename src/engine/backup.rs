//! One backup job: every disk of a VM into its own image, full or
//! incremental, committed atomically (see docs/repository.md).

use super::digests::MapReader;
use super::pipeline;
use super::repo::{Repo, check_vm_name, sync_dir};
use super::sink::{ImageSink, SinkOut};
use super::{EngineError, Progress};
use crate::catalog::{BackupDisk, BackupType, ChainRef, DiskImage, NewDisk};
use crate::qcow2::{ClusterSize, Compression, WriterOptions, consts::DEFAULT_CLUSTER_BITS};
use crate::source::{self, Source};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
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

/// One disk of a finished backup: the image as recorded, and the backup it
/// is an incremental of.
#[derive(Debug, Clone, Serialize)]
pub struct DiskResult {
    #[serde(flatten)]
    pub image: DiskImage,
    pub parent_backup: Option<String>,
    /// Bytes read from the source: holes, zeros and, with a dirty bitmap,
    /// everything outside its extents are never read.
    pub read_bytes: u64,
}

impl std::ops::Deref for DiskResult {
    type Target = DiskImage;
    fn deref(&self) -> &DiskImage {
        &self.image
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupResult {
    pub backup_id: String,
    pub vm: String,
    pub backup_type: BackupType,
    pub disks: Vec<DiskResult>,
    /// Bytes read from the sources (see [`DiskResult::read_bytes`]).
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// Things the user should know, such as a disk that starts a new chain.
    pub notes: Vec<String>,
}

struct Plan {
    source: Box<dyn Source>,
    parent: Option<BackupDisk>,
    chain: ChainRef,
}

/// Why the parent `p` cannot carry an incremental of a disk of `size`
/// bytes: verify marked an image of its chain corrupt, its chain does not
/// open (a moved or damaged image) or its digest map does not read or
/// match. `None` when it can.
fn parent_fault(repo: &Repo, p: &BackupDisk, size: u64) -> Option<String> {
    match repo.db().corrupt_in_chain(p.chain_id) {
        Ok(Some(bad)) => return Some(format!("verify found backup {bad} of its chain corrupt")),
        Err(e) => return Some(format!("the catalog does not say whether its chain is sound: {e}")),
        Ok(None) => {}
    }
    let opts = crate::qcow2::OpenOptions { confine_to: Some(repo.root().to_path_buf()), ..Default::default() };
    if let Err(e) = crate::qcow2::Chain::open(&repo.path(&p.image_path), &opts) {
        return Some(format!("its image chain does not open: {e}"));
    }
    match MapReader::open(&repo.path(&p.digest_path)) {
        Err(e) => Some(format!("its digest map does not read: {e}")),
        Ok(m) if m.virtual_size != size => {
            Some(format!("its digest map is for {} bytes, the disk has {size}", m.virtual_size))
        }
        Ok(_) => None,
    }
}

/// A note when the source's change tracking does not continue the
/// parent's: a dirty bitmap named differently from the one recorded for
/// the parent may have been started at another moment, so its extents are
/// trusted on the user's word alone.
fn tracking_note(i: usize, source: &dyn Source, parent: &BackupDisk) -> Option<String> {
    let bitmap = source.change_id()?;
    if parent.change_id.as_deref() == Some(bitmap.as_str()) {
        return None;
    }
    let recorded = match &parent.change_id {
        Some(c) if !c.is_empty() => format!("change id {c:?}"),
        _ => "no change id".to_string(),
    };
    Some(format!(
        "disk {i}: dirty bitmap {bitmap:?} differs from the parent backup {} ({recorded}); \
         its extents are trusted to hold every change since that backup",
        parent.backup_id
    ))
}

/// Where disk `i` (of `size` bytes) of VM `vm` goes, as `kind` asks: onto
/// its chain with the latest image as parent, or a new chain (with a note
/// in `notes` when the chain cannot be extended).
pub(super) fn plan_parent(
    repo: &Repo,
    vm: &str,
    vm_id: i64,
    i: usize,
    size: u64,
    kind: Requested,
    notes: &mut Vec<String>,
) -> Result<(Option<BackupDisk>, ChainRef), EngineError> {
    let latest = repo.db().latest_disk(vm_id, i as i64)?;
    Ok(match (kind, latest) {
        (Requested::Full, _) => (None, ChainRef::New),
        (Requested::Incremental, None) => {
            return Err(EngineError::NoParent(format!(
                "no parent backup found for incremental — full backup required first (VM {vm}, disk {i})"
            )));
        }
        (Requested::Auto, None) => (None, ChainRef::New),
        (_, Some(p)) if p.virtual_size as u64 != size => {
            notes
                .push(format!("disk {i} changed size ({} -> {size} bytes): starting a new full chain", p.virtual_size));
            (None, ChainRef::New)
        }
        (kind, Some(p)) => match parent_fault(repo, &p, size) {
            None => {
                let chain = ChainRef::Existing(p.chain_id);
                (Some(p), chain)
            }
            // An incremental on a chain that cannot be read could never
            // be opened either: say so before anything is written.
            Some(why) if kind == Requested::Incremental => {
                return Err(EngineError::Repository(format!(
                    "disk {i} of VM {vm}: its last backup {} cannot be used as a parent: {why}; \
                     run a full backup (--type full) to start a new chain",
                    p.backup_id
                )));
            }
            Some(why) => {
                notes.push(format!(
                    "disk {i}: its last backup {} cannot be used as a parent ({why}): starting a new full chain",
                    p.backup_id
                ));
                (None, ChainRef::New)
            }
        },
    })
}

/// The repository-relative image and digest map paths of disk `i` of
/// backup `id` of VM `vm`.
pub(super) fn disk_paths(vm: &str, i: usize, id: &str) -> (String, String) {
    let rel_dir = format!("vms/{vm}/disk-{i}");
    (format!("{rel_dir}/{id}.qcow2"), format!("{rel_dir}/{id}.digests"))
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
    let vm_id = repo.db().vm_id(&req.vm, true)?.expect("created above");

    let mut notes = Vec::new();
    let mut plans = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let (parent, chain) = plan_parent(repo, &req.vm, vm_id, i, source.size(), req.kind, &mut notes)?;
        if let Some(note) = parent.as_ref().and_then(|p| tracking_note(i, &*source, p)) {
            notes.push(note);
        }
        plans.push(Plan { source, parent, chain });
    }
    let kind = if plans.iter().all(|p| p.parent.is_none()) { BackupType::Full } else { BackupType::Incremental };
    let id = req.id.clone().unwrap_or_else(new_backup_id);
    let total: u64 = plans.iter().map(|p| p.source.size()).sum();
    repo.db().start_backup(&id, vm_id, kind, total)?;
    repo.db().set_vm_disks(vm_id, &req.disks)?;
    progress.start(total);

    let started = Instant::now();
    let mut job = BackupRun {
        repo,
        id: &id,
        progress,
        done: 0,
        last_report: Instant::now(),
        files: Vec::new(),
        notes: Vec::new(),
    };
    match job.write_all(req, &plans) {
        Ok((disks, new_disks)) => {
            notes.append(&mut job.notes);
            let read: u64 = disks.iter().map(|d| d.read_bytes).sum();
            let written: u64 = disks.iter().map(|d| d.stored_bytes as u64).sum();
            // Before the commit, so a committed backup always shows them.
            let committed = repo
                .db()
                .set_notes(&id, &notes)
                .and_then(|()| repo.db().commit_backup(&id, vm_id, &new_disks, read, written));
            if let Err(e) = committed {
                job.discard();
                let _ = repo.db().fail_backup(&id, &e.to_string());
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
            let _ = repo.db().fail_backup(&id, &e.to_string());
            progress.finish();
            Err(e)
        }
    }
}

struct BackupRun<'a> {
    repo: &'a Repo,
    id: &'a str,
    progress: &'a dyn Progress,
    done: u64,
    last_report: Instant,
    /// Every file this job created (partial or final), for cleanup on failure.
    files: Vec<PathBuf>,
    /// What the pipeline found worth telling the user.
    notes: Vec<String>,
}

impl BackupRun<'_> {
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
            let _ = self.repo.db().progress(self.id, self.done, 0);
        }
    }

    fn write_all(
        &mut self,
        req: &BackupRequest,
        plans: &[Plan],
    ) -> Result<(Vec<DiskResult>, Vec<NewDisk>), EngineError> {
        let mut results = Vec::new();
        let mut rows = Vec::new();
        let mut staged = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            let (image_rel, map_rel) = disk_paths(&req.vm, i, self.id);
            let image = self.repo.path(&image_rel);
            let map = self.repo.path(&map_rel);
            if let Some(dir) = image.parent() {
                std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
            }
            let (out, read_bytes) = self.write_disk(plan, &image, &map, req.compression)?;
            let change_id = plan.source.change_id().unwrap_or_else(|| out.content_digest.clone());
            let image = DiskImage {
                disk_index: i as i64,
                disk_type: if plan.parent.is_some() { BackupType::Incremental } else { BackupType::Full },
                source: plan.source.spec().to_string(),
                image_path: image_rel,
                digest_path: map_rel,
                change_id: Some(change_id),
                virtual_size: plan.source.size() as i64,
                cluster_size: 1 << DEFAULT_CLUSTER_BITS,
                stored_bytes: out.stored_bytes as i64,
                changed_bytes: out.changed_bytes as i64,
                content_digest: out.content_digest,
            };
            results.push(DiskResult {
                image: image.clone(),
                parent_backup: plan.parent.as_ref().map(|p| p.backup_id.clone()),
                read_bytes,
            });
            rows.push(NewDisk { chain: plan.chain.clone(), parent_id: plan.parent.as_ref().map(|p| p.id), image });
            staged.push(out.staged);
        }
        // Every image is complete and durable: move them into place, make the
        // renames durable, and only then let the caller commit the catalog.
        for files in &staged {
            files.commit(|to| self.files.push(to.to_path_buf()))?;
        }
        Ok((results, rows))
    }

    /// One disk through the pipeline into its sink; the sink's files stay
    /// under their partial names until the whole backup commits. Also
    /// returns the bytes read from the source.
    fn write_disk(
        &mut self,
        plan: &Plan,
        image: &Path,
        map: &Path,
        compression: Option<Compression>,
    ) -> Result<(SinkOut, u64), EngineError> {
        let mut sink = open_sink(self.repo, plan.parent.as_ref(), plan.source.size(), image, map, compression)?;
        self.files.extend(sink.files().map(Path::to_path_buf));
        let outcome = pipeline::run(&*plan.source, &mut sink, plan.parent.is_some(), &mut |n| self.advance(n))?;
        self.notes.extend(outcome.notes);
        Ok((sink.finish()?, outcome.bytes_read))
    }
}

/// Opens the image sink for one disk of `size` bytes: a new image beside
/// its parent, with the parent's digest map as its base.
pub(super) fn open_sink(
    repo: &Repo,
    parent: Option<&BackupDisk>,
    size: u64,
    image: &Path,
    map: &Path,
    compression: Option<Compression>,
) -> Result<ImageSink, EngineError> {
    // OK to unwrap: DEFAULT_CLUSTER_BITS is a valid cluster size.
    let cluster = ClusterSize::from_bits(DEFAULT_CLUSTER_BITS).unwrap();
    let base = match parent {
        Some(p) => {
            let m = MapReader::open(&repo.path(&p.digest_path))?;
            if u64::from(m.cluster_size) != cluster.bytes() || m.virtual_size != size {
                return Err(EngineError::Repository(format!(
                    "digest map of backup {} does not match disk {} (cluster {} / size {})",
                    p.backup_id, p.disk_index, m.cluster_size, m.virtual_size
                )));
            }
            if !repo.path(&p.image_path).is_file() {
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
    let backing = parent
        .map(|p| Path::new(&p.image_path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    ImageSink::create(image, map, size, WriterOptions { cluster, compression, backing }, base)
}
