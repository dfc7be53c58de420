//! One push job: its disks and its states (waiting → running → completed,
//! or failed / aborted), each step taken under the job's step lock so a
//! completion, the background reader of source disks, an abort and the
//! idle timeout never cross.

use super::export::{Activity, PushExport};
use super::{DiskSpec, EXPORT_NAME_BYTES, PushRequest};
use crate::catalog::{BackupDisk, BackupStatus, BackupType, ChainRef, DiskImage, NewDisk};
use crate::engine::backup::{disk_paths, open_sink, plan_parent};
use crate::engine::sink::{ImageSink, SinkOut, partial};
use crate::engine::{EngineError, pipeline};
use crate::nbd::server::NbdService;
use crate::qcow2::consts::DEFAULT_CLUSTER_BITS;
use crate::qcow2::{Chain, OpenOptions};
use crate::repo::{Repo, VmLock, check_vm_name, sync_dir};
use crate::source::{self, Source};
use crate::util::lock;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pushed disk sizes are whole sectors: what every hypervisor's disks are,
/// and what a QCOW2 virtual size is.
const SECTOR: u64 = 512;

/// Where a push job stands, as this process knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushState {
    Waiting,
    /// Committing.
    Running,
    Completed,
    Failed(String),
    Aborted(String),
}

impl PushState {
    /// The backup status this state shows as.
    pub fn status(&self) -> BackupStatus {
        match self {
            PushState::Waiting => BackupStatus::Waiting,
            PushState::Running => BackupStatus::Running,
            PushState::Completed => BackupStatus::Completed,
            PushState::Failed(_) => BackupStatus::Failed,
            PushState::Aborted(_) => BackupStatus::Aborted,
        }
    }
}

/// A push job as `GET /backups/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PushStatus {
    pub backup_id: String,
    pub vm: String,
    pub status: BackupStatus,
    pub error: Option<String>,
    pub notes: Vec<String>,
    pub disks: Vec<DiskStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskStatus {
    pub disk_index: usize,
    /// Pushed by an agent (else read from its source).
    pub push: bool,
    /// While the disk waits for its data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbd_uri: Option<String>,
    pub size: u64,
    pub bytes_written: u64,
    pub bytes_zeroed: u64,
    pub completed: bool,
    pub change_id: Option<String>,
}

/// A disk's finished image, staged until the whole backup commits.
struct Done {
    out: SinkOut,
    change_id: String,
}

struct Disk {
    size: u64,
    /// As recorded in the catalog: the source, or `push`.
    source: String,
    parent: Option<BackupDisk>,
    chain: ChainRef,
    image_rel: String,
    map_rel: String,
    /// A pushed disk's export name and target.
    push: Option<(String, Arc<PushExport>)>,
    done: Mutex<Option<Done>>,
}

/// A source disk to read in the background.
pub(super) struct SourceWork {
    index: usize,
    source: Box<dyn Source>,
    sink: ImageSink,
}

pub(super) struct PushJob {
    id: String,
    vm: String,
    vm_id: i64,
    state: Mutex<PushState>,
    step: Mutex<()>,
    disks: Vec<Disk>,
    notes: Vec<String>,
    activity: Activity,
    /// The VM's lock, held until the job ends.
    vm_lock: Mutex<Option<VmLock>>,
}

/// A disk of the request, before its sink is opened.
struct Planned {
    spec: DiskSpec,
    source: Option<Box<dyn Source>>,
    size: u64,
}

fn plan(req: &PushRequest) -> Result<Vec<Planned>, EngineError> {
    check_vm_name(&req.vm)?;
    if req.disks.is_empty() {
        return Err(EngineError::BadRequest("a backup needs at least one disk".into()));
    }
    let mut out = Vec::new();
    for (i, spec) in req.disks.iter().enumerate() {
        let (source, size) = match spec {
            DiskSpec::Source(s) => {
                let src = source::open(s)?;
                let size = src.size();
                (Some(src), size)
            }
            DiskSpec::Push { size } if *size > 0 && size.is_multiple_of(SECTOR) => (None, *size),
            DiskSpec::Push { size } => {
                return Err(EngineError::BadRequest(format!(
                    "disk {i}: push size {size} must be a positive multiple of {SECTOR} bytes"
                )));
            }
        };
        out.push(Planned { spec: spec.clone(), source, size });
    }
    Ok(out)
}

impl PushJob {
    /// Plans, records and publishes a new job; on failure nothing of it is
    /// left (no export, no file, the catalog row failed).
    pub(super) fn create(
        repo: &Repo,
        nbd: &NbdService,
        req: &PushRequest,
        id: &str,
    ) -> Result<(PushJob, Vec<SourceWork>), EngineError> {
        let planned = plan(req)?;
        let vm_lock = repo
            .try_lock(&req.vm)?
            .ok_or_else(|| EngineError::Busy(format!("a backup of VM {} is already running", req.vm)))?;
        repo.recover(&req.vm, &vm_lock)?;
        let vm_id = repo
            .db()
            .vm_id(&req.vm, true)?
            .ok_or_else(|| EngineError::Repository(format!("VM {} was not recorded", req.vm)))?;
        let mut notes = Vec::new();
        let mut disks = Vec::new();
        for (i, p) in planned.iter().enumerate() {
            let (parent, chain) = plan_parent(repo, &req.vm, vm_id, i, p.size, req.kind, &mut notes)?;
            let (image_rel, map_rel) = disk_paths(&req.vm, i, id);
            let source = match &p.spec {
                DiskSpec::Source(s) => s.clone(),
                DiskSpec::Push { .. } => "push".to_string(),
            };
            let done = Mutex::new(None);
            disks.push(Disk { size: p.size, source, parent, chain, image_rel, map_rel, push: None, done });
        }
        let kind = if disks.iter().all(|d| d.parent.is_none()) { BackupType::Full } else { BackupType::Incremental };
        let total = disks.iter().map(|d| d.size).sum();
        repo.db().start_backup(id, vm_id, kind, total)?;
        let mut job = PushJob {
            id: id.to_string(),
            vm: req.vm.clone(),
            vm_id,
            state: Mutex::new(PushState::Waiting),
            step: Mutex::new(()),
            disks,
            notes,
            activity: Arc::new(Mutex::new(Instant::now())),
            vm_lock: Mutex::new(Some(vm_lock)),
        };
        match job.open(repo, nbd, planned) {
            Ok(work) => Ok((job, work)),
            Err(e) => {
                job.end(repo, nbd, PushState::Failed(e.to_string()));
                Err(e)
            }
        }
    }

    /// Records the job waiting and opens every disk's sink: pushed disks
    /// are published, source disks handed back to be read.
    fn open(&mut self, repo: &Repo, nbd: &NbdService, planned: Vec<Planned>) -> Result<Vec<SourceWork>, EngineError> {
        repo.db().set_backup_status(&self.id, BackupStatus::Waiting)?;
        let specs: Vec<String> = self.disks.iter().map(|d| d.source.clone()).collect();
        repo.db().set_vm_disks(self.vm_id, &specs)?;
        let mut work = Vec::new();
        for (index, p) in planned.into_iter().enumerate() {
            let d = &mut self.disks[index];
            let (image, map) = (repo.path(&d.image_rel), repo.path(&d.map_rel));
            if let Some(dir) = image.parent() {
                std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
            }
            let mut sink = open_sink(repo, d.parent.as_ref(), d.size, &image, &map, None)?;
            match p.source {
                Some(source) => work.push(SourceWork { index, source, sink }),
                None => {
                    if let Some(parent) = &d.parent {
                        let opts = OpenOptions { confine_to: Some(repo.root().to_path_buf()), ..Default::default() };
                        sink.set_backing_reader(Arc::new(Chain::open(&repo.path(&parent.image_path), &opts)?));
                    }
                    let name = crate::util::random::hex(EXPORT_NAME_BYTES)
                        .map_err(|e| EngineError::io(Path::new("/dev/urandom"), e))?;
                    let export = Arc::new(PushExport::new(sink, d.size, self.activity.clone()));
                    nbd.exports.insert(&name, export.clone());
                    d.push = Some((name, export));
                }
            }
        }
        Ok(work)
    }

    pub(super) fn state(&self) -> PushState {
        lock(&self.state).clone()
    }

    pub(super) fn is_active(&self) -> bool {
        matches!(self.state(), PushState::Waiting | PushState::Running)
    }

    /// How long no data came (zero unless waiting).
    pub(super) fn idle_for(&self) -> Duration {
        match self.state() {
            PushState::Waiting => lock(&self.activity).elapsed(),
            _ => Duration::ZERO,
        }
    }

    fn check_waiting(&self) -> Result<(), EngineError> {
        match self.state() {
            PushState::Waiting => Ok(()),
            s => Err(EngineError::Busy(format!("backup {} is {}, not waiting for data", self.id, s.status()))),
        }
    }

    /// Disk `index` is complete: its export closes and its image is
    /// finished; the last one commits the backup.
    pub(super) fn complete(
        &self,
        repo: &Repo,
        nbd: &NbdService,
        index: usize,
        change_id: &str,
    ) -> Result<(), EngineError> {
        let _step = lock(&self.step);
        self.check_waiting()?;
        let disk = self.disks.get(index).ok_or_else(|| {
            EngineError::NotFound(format!("backup {} has no disk {index} ({} disks)", self.id, self.disks.len()))
        })?;
        let Some((name, export)) = &disk.push else {
            return Err(EngineError::BadRequest(format!("disk {index} is read from its source, not pushed")));
        };
        if lock(&disk.done).is_some() {
            return Err(EngineError::Busy(format!("disk {index} of backup {} is already complete", self.id)));
        }
        nbd.exports.remove(name);
        let sink = export.close().ok_or_else(|| EngineError::Busy(format!("disk {index} is closed")))?;
        match sink.finish() {
            Ok(out) => *lock(&disk.done) = Some(Done { out, change_id: change_id.to_string() }),
            Err(e) => {
                self.end(repo, nbd, PushState::Failed(format!("disk {index}: {e}")));
                return Err(e);
            }
        }
        self.commit_if_done(repo, nbd)
    }

    /// Reads the source disks into their images, in the background; the
    /// job commits when the last of them and of the pushed disks is done.
    pub(super) fn read_sources(&self, repo: &Repo, nbd: &NbdService, work: Vec<SourceWork>) {
        for SourceWork { index, source, mut sink } in work {
            if !self.is_active() {
                return;
            }
            let incremental = self.disks[index].parent.is_some();
            let out = pipeline::run(&*source, &mut sink, incremental, &mut |_| {}).and_then(|_| sink.finish());
            let _step = lock(&self.step);
            match out {
                Ok(_) if self.state() != PushState::Waiting => return,
                Ok(out) => {
                    let change_id = out.content_digest.clone();
                    *lock(&self.disks[index].done) = Some(Done { out, change_id });
                }
                Err(e) => return self.end(repo, nbd, PushState::Failed(format!("disk {index}: {e}"))),
            }
        }
        let _step = lock(&self.step);
        if self.state() == PushState::Waiting {
            let _ = self.commit_if_done(repo, nbd);
        }
    }

    /// Under the step lock: commits once every disk is done.
    fn commit_if_done(&self, repo: &Repo, nbd: &NbdService) -> Result<(), EngineError> {
        if self.disks.iter().any(|d| lock(&d.done).is_none()) {
            return Ok(());
        }
        *lock(&self.state) = PushState::Running;
        match self.commit(repo) {
            Ok(()) => {
                *lock(&self.state) = PushState::Completed;
                lock(&self.vm_lock).take();
                Ok(())
            }
            Err(e) => {
                self.end(repo, nbd, PushState::Failed(e.to_string()));
                Err(e)
            }
        }
    }

    /// The commit protocol of every backup: each image and map renamed
    /// into place (their fsync was `finish`'s), the folders fsynced, then
    /// one catalog transaction.
    fn commit(&self, repo: &Repo) -> Result<(), EngineError> {
        repo.db().set_backup_status(&self.id, BackupStatus::Running)?;
        let mut rows = Vec::new();
        let mut written = 0;
        for (i, d) in self.disks.iter().enumerate() {
            let done = lock(&d.done);
            let Some(Done { out, change_id }) = done.as_ref() else { continue };
            out.staged.commit(|_| {})?;
            written += out.stored_bytes;
            let image = DiskImage {
                disk_index: i as i64,
                disk_type: if d.parent.is_some() { BackupType::Incremental } else { BackupType::Full },
                source: d.source.clone(),
                image_path: d.image_rel.clone(),
                digest_path: d.map_rel.clone(),
                change_id: Some(change_id.clone()),
                virtual_size: d.size as i64,
                cluster_size: 1 << DEFAULT_CLUSTER_BITS,
                stored_bytes: out.stored_bytes as i64,
                changed_bytes: out.changed_bytes as i64,
                content_digest: out.content_digest.clone(),
            };
            rows.push(NewDisk { chain: d.chain.clone(), parent_id: d.parent.as_ref().map(|p| p.id), image });
        }
        let total = self.disks.iter().map(|d| d.size).sum();
        Ok(repo.db().commit_backup(&self.id, self.vm_id, &rows, total, written)?)
    }

    /// Cancels the job if it still waits; a job that ended stays as it is,
    /// a committed one cannot be aborted.
    pub(super) fn abort(&self, repo: &Repo, nbd: &NbdService, why: PushState) -> Result<(), EngineError> {
        let _step = lock(&self.step);
        match self.state() {
            PushState::Waiting => {
                self.end(repo, nbd, why);
                Ok(())
            }
            PushState::Completed => Err(EngineError::Busy(format!("backup {} is already committed", self.id))),
            _ => Ok(()),
        }
    }

    /// Under the step lock: ends the job as `state` (failed or aborted):
    /// exports closed, every file of it removed, the catalog marked, the
    /// VM's lock released.
    fn end(&self, repo: &Repo, nbd: &NbdService, state: PushState) {
        *lock(&self.state) = state.clone();
        for d in &self.disks {
            if let Some((name, export)) = &d.push {
                nbd.exports.remove(name);
                drop(export.close());
            }
            lock(&d.done).take();
            let (image, map) = (repo.path(&d.image_rel), repo.path(&d.map_rel));
            for f in [partial(&image), partial(&map), image.clone(), map] {
                let _ = std::fs::remove_file(f);
            }
            if let Some(dir) = image.parent() {
                let _ = sync_dir(dir);
            }
        }
        let marked = match &state {
            PushState::Aborted(why) => repo.db().abort_backup(&self.id, why),
            PushState::Failed(why) => repo.db().fail_backup(&self.id, why),
            _ => Ok(()),
        };
        if let Err(e) = marked {
            eprintln!("backchain: backup {}: recording its end: {e}", self.id);
        }
        lock(&self.vm_lock).take();
    }

    pub(super) fn status(&self, nbd: &NbdService) -> PushStatus {
        let state = self.state();
        let error = match &state {
            PushState::Failed(e) | PushState::Aborted(e) => Some(e.clone()),
            _ => None,
        };
        let disks = self
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let done = lock(&d.done);
                let open = state == PushState::Waiting && done.is_none();
                let export = d.push.as_ref();
                DiskStatus {
                    disk_index: i,
                    push: export.is_some(),
                    nbd_uri: export.filter(|_| open).map(|(name, _)| nbd.uri(name)),
                    size: d.size,
                    bytes_written: export.map_or(0, |(_, e)| e.bytes_written()),
                    bytes_zeroed: export.map_or(0, |(_, e)| e.bytes_zeroed()),
                    completed: done.is_some() || state == PushState::Completed,
                    change_id: done.as_ref().map(|d| d.change_id.clone()),
                }
            })
            .collect();
        PushStatus {
            backup_id: self.id.clone(),
            vm: self.vm.clone(),
            status: state.status(),
            error,
            notes: self.notes.clone(),
            disks,
        }
    }
}
