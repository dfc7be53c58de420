//! Restore sessions: a read-only tree over one restore point (all disks, or
//! one), opened on request, capped in number, closed on request or after an
//! idle time, and never closed under a running download.

use super::{RestoreError, point_tree};
use crate::repo::Repo;
use crate::tree::Tree;
use crate::util::lock;
use crate::util::time::UtcTime;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Seconds after which an unused restore session closes.
pub const DEFAULT_IDLE_SECS: u64 = 3600;
/// Restore sessions open at once, at most.
pub const DEFAULT_MAX_SESSIONS: usize = 64;
/// Longest interval between two sweeps of idle sessions.
const MAX_SWEEP: Duration = Duration::from_secs(30);
/// Shortest interval between two sweeps (tests use idle times of a second).
const MIN_SWEEP: Duration = Duration::from_millis(100);

/// How long sessions live unused, and how many may be open.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub idle: Duration,
    pub max: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self { idle: Duration::from_secs(DEFAULT_IDLE_SECS), max: DEFAULT_MAX_SESSIONS }
    }
}

pub struct Session {
    pub id: String,
    pub backup_id: String,
    pub vm: String,
    pub disk_index: Option<usize>,
    pub tree: Tree,
    created_at: UtcTime,
    opened: Instant,
    /// Milliseconds since `opened` at the last use.
    last_used: AtomicU64,
    /// Downloads whose bytes are still being produced.
    transfers: AtomicUsize,
    /// The restore point's reader lock: no merge drops it while the session
    /// lives.
    _guard: Arc<crate::util::flock::PointLock>,
}

/// What a session looks like in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub mount_id: String,
    pub backup_id: String,
    pub disk_index: Option<usize>,
    pub created_at: UtcTime,
    pub idle_seconds: u64,
    pub active_downloads: usize,
}

/// A download in progress in a session, until its last clone is dropped
/// (one goes with the task producing the bytes, one with the response body):
/// a session never expires under a running download (a 100 GB file may take
/// hours), and its idle time counts from the end of the last one.
#[derive(Clone)]
pub struct Transfer {
    _end: Arc<TransferEnd>,
}

struct TransferEnd(Arc<Session>);

impl Drop for TransferEnd {
    fn drop(&mut self) {
        self.0.touch();
        self.0.transfers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Session {
    fn touch(&self) {
        self.last_used.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    /// Marks a download in progress until the guard is dropped.
    pub fn transfer(self: &Arc<Self>) -> Transfer {
        self.transfers.fetch_add(1, Ordering::SeqCst);
        Transfer { _end: Arc::new(TransferEnd(self.clone())) }
    }
    fn idle(&self) -> Duration {
        if self.transfers.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.opened.elapsed().saturating_sub(Duration::from_millis(self.last_used.load(Ordering::Relaxed)))
    }
    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            mount_id: self.id.clone(),
            backup_id: self.backup_id.clone(),
            disk_index: self.disk_index,
            created_at: self.created_at,
            idle_seconds: self.idle().as_secs(),
            active_downloads: self.transfers.load(Ordering::SeqCst),
        }
    }
}

/// The open sessions of one server.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    limits: SessionLimits,
}

impl Sessions {
    pub fn new(limits: SessionLimits) -> Self {
        Self { map: Mutex::new(HashMap::new()), limits }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        lock(&self.map)
    }

    /// Opens a session over backup `backup_id` (disk `disk` alone, or all).
    /// Blocking: it reads the catalog and opens the disks.
    pub fn open(&self, repo: &Repo, backup_id: &str, disk: Option<usize>) -> Result<Arc<Session>, RestoreError> {
        self.expire();
        if self.lock().len() >= self.limits.max {
            return Err(RestoreError::TooMany(self.limits.max));
        }
        let point = repo.restore_point(backup_id, disk)?;
        let tree = point_tree(&point, disk.is_some())?;
        let session = Arc::new(Session {
            id: new_id(),
            backup_id: backup_id.to_string(),
            vm: point.backup.vm.clone(),
            disk_index: disk,
            tree,
            created_at: UtcTime::now(),
            opened: Instant::now(),
            last_used: AtomicU64::new(0),
            transfers: AtomicUsize::new(0),
            _guard: point.guard(),
        });
        let mut map = self.lock();
        // Checked again: other sessions may have opened meanwhile.
        if map.len() >= self.limits.max {
            return Err(RestoreError::TooMany(self.limits.max));
        }
        map.insert(session.id.clone(), session.clone());
        Ok(session)
    }

    /// The live session `id`, marked as used.
    pub fn get(&self, id: &str) -> Result<Arc<Session>, RestoreError> {
        let mut map = self.lock();
        let s = map.get(id).cloned().ok_or_else(|| RestoreError::NoSession(id.to_string()))?;
        if s.idle() > self.limits.idle {
            map.remove(id);
            return Err(RestoreError::Expired(id.to_string()));
        }
        s.touch();
        Ok(s)
    }

    /// The open sessions, oldest first.
    pub fn list(&self) -> Vec<SessionInfo> {
        self.expire();
        let mut list: Vec<SessionInfo> = self.lock().values().map(|s| s.info()).collect();
        list.sort_by_key(|s| s.created_at);
        list
    }

    /// Closes session `id`; false when there is none.
    pub fn close(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Drops the sessions idle for longer than the limit.
    pub fn expire(&self) {
        let idle = self.limits.idle;
        self.lock().retain(|_, s| s.idle() <= idle);
    }

    /// Closes the sessions over a backup (it is being deleted).
    pub fn close_backup(&self, backup_id: &str) {
        self.lock().retain(|_, s| s.backup_id != backup_id);
    }

    /// How often idle sessions should be swept.
    pub fn sweep_interval(&self) -> Duration {
        (self.limits.idle / 4).clamp(MIN_SWEEP, MAX_SWEEP)
    }
}

/// An id no one can guess from the others.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{nanos}-{n}-{}-{:p}", std::process::id(), &COUNTER);
    blake3::hash(seed.as_bytes()).to_hex()[..24].to_string()
}
