//! Push targets: backups whose disks a remote agent writes over NBD (as
//! VMware CBT agents do), instead of backchain reading them.
//!
//! A push job is created `waiting`: each pushed disk gets an image sink
//! (a new QCOW2 over the parent restore point, or a full) published in the
//! daemon's NBD export table under an unguessable name (128 random bits).
//! The agent writes what changed, then reports the disk complete with its
//! change id; that closes the disk's export and finishes its image. When
//! the last disk is complete the backup commits exactly as a pulled one
//! does (fsync, rename, folder fsync, one catalog transaction). `{source}`
//! disks of the same job are read by the pipeline in the background and
//! wait for the pushed ones.
//!
//! The job holds the VM's lock from creation to its end, so a second backup
//! of the VM is refused while it waits, and a job whose process died is
//! recovered (marked interrupted, its `.partial` files removed) by the next
//! open of the repository. An abort (a user's DELETE, or no write for the
//! idle timeout) closes the exports, removes the files and marks the
//! backup `aborted`.

mod export;
mod job;

pub use export::PushExport;
pub use job::{DiskStatus, PushState, PushStatus};

use super::EngineError;
use super::backup::{self, Requested};
use crate::nbd::server::NbdService;
use crate::repo::Repo;
use crate::util::lock;
use job::PushJob;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Abort a push job after this long without a write (`serve --push-idle`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);
/// Random bytes in an export name: 128 bits, as hex.
pub const EXPORT_NAME_BYTES: usize = 16;
/// The longest change id an agent may report.
pub const MAX_CHANGE_ID: usize = 1024;
/// Ended jobs remembered for their status (their outcome stays in the
/// catalog).
const KEPT_JOBS: usize = 256;

/// One disk of a push job: read from a source, or pushed by the agent.
#[derive(Debug, Clone)]
pub enum DiskSpec {
    Source(String),
    Push { size: u64 },
}

/// `POST /backups` with at least one pushed disk.
#[derive(Debug, Clone)]
pub struct PushRequest {
    pub vm: String,
    pub disks: Vec<DiskSpec>,
    pub kind: Requested,
    /// The backup id; a fresh one when `None`.
    pub id: Option<String>,
}

/// The push jobs of the daemon, over its NBD listener.
pub struct Pushes {
    repo: Arc<Repo>,
    nbd: NbdService,
    idle: Duration,
    jobs: Mutex<HashMap<String, Arc<PushJob>>>,
}

impl Pushes {
    pub fn new(repo: Arc<Repo>, nbd: NbdService, idle: Duration) -> Self {
        Pushes { repo, nbd, idle, jobs: Mutex::default() }
    }

    /// Creates a waiting job (blocking: it opens files and the catalog).
    /// Its pushed disks are published at once; its source disks are read
    /// in the background.
    pub fn create(self: &Arc<Self>, req: PushRequest) -> Result<PushStatus, EngineError> {
        let id = req.id.clone().unwrap_or_else(backup::new_backup_id);
        let (job, sources) = PushJob::create(&self.repo, &self.nbd, &req, &id)?;
        let job = Arc::new(job);
        self.remember(&id, job.clone());
        if !sources.is_empty() {
            let (me, running) = (self.clone(), job.clone());
            self.repo.handle().spawn_blocking(move || running.read_sources(&me.repo, &me.nbd, sources));
        }
        Ok(job.status(&self.nbd))
    }

    fn remember(&self, id: &str, job: Arc<PushJob>) {
        let mut jobs = lock(&self.jobs);
        if jobs.len() >= KEPT_JOBS {
            jobs.retain(|_, j| j.is_active());
        }
        jobs.insert(id.to_string(), job);
    }

    fn get(&self, id: &str) -> Option<Arc<PushJob>> {
        lock(&self.jobs).get(id).cloned()
    }

    /// Whether `id` is a push job of this process.
    pub fn holds(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// The job's state and each disk's progress.
    pub fn status(&self, id: &str) -> Option<PushStatus> {
        self.get(id).map(|j| j.status(&self.nbd))
    }

    /// The agent is done with one disk (blocking). The last disk completed
    /// commits the backup before this returns.
    pub fn complete(&self, id: &str, disk_index: usize, change_id: &str) -> Result<PushStatus, EngineError> {
        if change_id.is_empty() || change_id.len() > MAX_CHANGE_ID {
            return Err(EngineError::BadRequest(format!("change_id must be 1 to {MAX_CHANGE_ID} characters")));
        }
        let job = self.get(id).ok_or_else(|| EngineError::NotFound(format!("no push job {id}")))?;
        job.complete(&self.repo, &self.nbd, disk_index, change_id)?;
        Ok(job.status(&self.nbd))
    }

    /// Cancels a waiting job (blocking): exports gone, files removed, the
    /// backup marked aborted.
    pub fn abort(&self, id: &str, reason: &str) -> Result<PushStatus, EngineError> {
        let job = self.get(id).ok_or_else(|| EngineError::NotFound(format!("no push job {id}")))?;
        job.abort(&self.repo, &self.nbd, PushState::Aborted(reason.to_string()))?;
        Ok(job.status(&self.nbd))
    }

    /// How often [`Pushes::expire`] should run: often enough that a job
    /// outlives its timeout by at most a quarter of it.
    pub fn sweep_interval(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30))
    }

    /// Aborts every waiting job with no write for the idle timeout
    /// (blocking).
    pub fn expire(&self) {
        let idle: Vec<_> = lock(&self.jobs).values().filter(|j| j.idle_for() >= self.idle).cloned().collect();
        for job in idle {
            let why = format!("no data was pushed for {} s: timed out", self.idle.as_secs_f64());
            let _ = job.abort(&self.repo, &self.nbd, PushState::Aborted(why));
        }
    }

    /// Aborts every job still waiting: the daemon is stopping, and its
    /// exports go with it (blocking).
    pub fn shutdown(&self) {
        let jobs: Vec<_> = lock(&self.jobs).values().cloned().collect();
        for job in jobs {
            let _ = job.abort(&self.repo, &self.nbd, PushState::Aborted("the server stopped".into()));
        }
    }
}
