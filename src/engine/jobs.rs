//! The job runner: backups started in the background, followed while they
//! run, remembered for a while after they end. HTTP starts jobs through it
//! today; the scheduler will too.

use super::Progress;
use super::backup::{self, BackupRequest};
use crate::repo::Repo;
use crate::util::lock;
use crate::util::time::UtcTime;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Jobs remembered after they end (their outcome stays in the catalog).
const KEPT_JOBS: usize = 1024;

/// Where a job stands, as this process knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Completed,
    Failed(String),
}

/// One backup job run by this process.
pub struct Job {
    pub vm: String,
    pub started_at: UtcTime,
    total: AtomicU64,
    done: AtomicU64,
    state: Mutex<JobState>,
}

impl Progress for Job {
    fn start(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
    fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Job {
    fn new(vm: &str) -> Self {
        Job {
            vm: vm.to_string(),
            started_at: UtcTime::now(),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            state: Mutex::new(JobState::Running),
        }
    }
    pub fn state(&self) -> JobState {
        lock(&self.state).clone()
    }
    pub fn is_running(&self) -> bool {
        matches!(*lock(&self.state), JobState::Running)
    }
    /// Bytes read so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
    /// Bytes to read in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The jobs this process started, by backup id.
#[derive(Default)]
pub struct Jobs(Mutex<HashMap<String, Arc<Job>>>);

impl Jobs {
    /// Starts backup `req` (whose id must be set) on a blocking thread of
    /// the repository's runtime; returns at once.
    pub fn start(&self, repo: Arc<Repo>, req: BackupRequest) -> Arc<Job> {
        let id = req.id.clone().unwrap_or_else(backup::new_backup_id);
        let req = BackupRequest { id: Some(id.clone()), ..req };
        let job = Arc::new(Job::new(&req.vm));
        self.insert(&id, job.clone());
        let running = job.clone();
        repo.handle().clone().spawn_blocking(move || {
            let outcome = backup::run(&repo, &req, &*running);
            *lock(&running.state) = match outcome {
                Ok(_) => JobState::Completed,
                Err(e) => JobState::Failed(e.to_string()),
            };
        });
        job
    }

    fn insert(&self, id: &str, job: Arc<Job>) {
        let mut jobs = lock(&self.0);
        if jobs.len() >= KEPT_JOBS {
            jobs.retain(|_, j| j.is_running());
        }
        jobs.insert(id.to_string(), job);
    }

    /// Forgets job `id` (its backup was deleted).
    pub fn remove(&self, id: &str) {
        lock(&self.0).remove(id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.0).get(id).cloned()
    }
}
