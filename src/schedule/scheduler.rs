//! The scheduler inside `backchain serve`: each tick it reads the policies
//! (so edits apply without a restart), queues one job per VM of every due
//! policy, and starts queued jobs while fewer than `max_jobs` run, never
//! two of one VM. The queue is the catalog's `jobs` table; jobs queued by
//! `POST /policies/{name}/run` or `backchain policy run` are picked up at
//! the next tick (at most `poll` later).
//!
//! At start, jobs whose process died are marked `interrupted` (nothing
//! stays `running`), and runs missed while the daemon was down run once or
//! are skipped, following each policy's `repeat_missed`. On shutdown no new
//! job starts; running jobs get `shutdown_grace` to end, and those still
//! running then are marked `aborted` (their files are cleaned up at the
//! next start, as after a crash).

use super::clock::{Clock, to_ts, to_utc};
use super::due::{self, Phase, PolicySchedule, Reason};
use super::policy::Policy;
use super::{notify, runner, store};
use crate::catalog::{CatalogError, JobEnd, JobFilter, JobKind, JobReason, JobRow, RunState};
use crate::repo::Repo;
use crate::util::lock;
use crate::util::time::UtcTime;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Xen Orchestra's default: two jobs at a time.
pub const DEFAULT_MAX_JOBS: usize = 2;
/// How often the catalog is read for new policies and queued jobs.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// Job history older than this is forgotten.
pub const DEFAULT_HISTORY_DAYS: u32 = 90;
/// How long running jobs may take to end on shutdown (systemd's default
/// stop timeout is 90 s: end before it kills us).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
/// How often old history is pruned.
const HISTORY_SWEEP: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct SchedulerOptions {
    pub max_jobs: usize,
    pub poll: Duration,
    pub history_days: u32,
    pub shutdown_grace: Duration,
    pub clock: Clock,
    /// The zone of schedules without a zone suffix.
    pub local: TimeZone,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            max_jobs: DEFAULT_MAX_JOBS,
            poll: DEFAULT_POLL,
            history_days: DEFAULT_HISTORY_DAYS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            clock: Clock::system(),
            local: TimeZone::system(),
        }
    }
}

pub struct Scheduler {
    repo: Arc<Repo>,
    opts: SchedulerOptions,
    /// Jobs this process runs: job id → VM.
    running: Mutex<HashMap<i64, String>>,
    wake: Notify,
    stopping: AtomicBool,
    ticks: AtomicU64,
    recovered: AtomicBool,
}

type Policies = HashMap<String, Arc<Policy>>;

impl Scheduler {
    pub fn new(repo: Arc<Repo>, opts: SchedulerOptions) -> Arc<Scheduler> {
        let opts = SchedulerOptions { max_jobs: opts.max_jobs.max(1), ..opts };
        Arc::new(Scheduler {
            repo,
            opts,
            running: Mutex::default(),
            wake: Notify::new(),
            stopping: false.into(),
            ticks: 0.into(),
            recovered: false.into(),
        })
    }

    /// Looks at the queue and the schedules now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Jobs this process is running.
    pub fn running(&self) -> usize {
        lock(&self.running).len()
    }

    /// Passes over the schedules and the queue so far (the first one is the
    /// start-up pass, which decides about missed runs).
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::SeqCst)
    }

    /// Runs until `shutdown` completes, then drains (see the module doc).
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<(), CatalogError> {
        if !self.recovered.load(Ordering::SeqCst) {
            self.recover().await?;
        }
        tokio::pin!(shutdown);
        let mut phase = Phase::Startup;
        let mut swept: Option<Instant> = None;
        loop {
            let next = match self.tick(phase).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(error = %e, "scheduler tick failed");
                    None
                }
            };
            phase = Phase::Running;
            self.ticks.fetch_add(1, Ordering::SeqCst);
            if swept.is_none_or(|t| t.elapsed() >= HISTORY_SWEEP) {
                swept = Some(Instant::now());
                self.sweep_history().await;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.sleep_for(next)) => {}
            }
        }
        self.drain().await
    }

    fn sleep_for(&self, next: Option<Timestamp>) -> Duration {
        let poll = self.opts.poll;
        match next {
            Some(t) if !self.opts.clock.is_manual() => {
                let until = t.duration_since(self.opts.clock.now());
                Duration::try_from(until).unwrap_or(Duration::ZERO).min(poll)
            }
            _ => poll,
        }
    }

    /// Marks the jobs of dead processes `interrupted`. [`Scheduler::run`]
    /// does it first unless it was done already; the daemon does it before
    /// it announces itself, so no client ever sees a dead job `running`.
    pub async fn recover(&self) -> Result<(), CatalogError> {
        self.recovered.store(true, Ordering::SeqCst);
        let cat = &self.repo.catalog;
        for (id, pid) in cat.running_jobs().await? {
            if pid.is_some_and(alive) {
                continue;
            }
            let error = match pid {
                Some(pid) => format!("the process running the job (pid {pid}) stopped before the job ended"),
                None => "the job's process is unknown and gone".to_string(),
            };
            let end = JobEnd { state: RunState::Interrupted, error: Some(error), ..no_outcome() };
            cat.finish_job(id, &end).await?;
            tracing::warn!(job = id, "job interrupted by the end of its process");
            let job = cat.job(id).await?;
            let policy = self.policy_of(&job).await;
            if let Some((url, ev)) = notify::event_for(&job, policy.as_deref(), false) {
                notify::spawn(url, ev);
            }
        }
        Ok(())
    }

    async fn policy_of(&self, job: &JobRow) -> Option<Arc<Policy>> {
        let row = self.repo.catalog.policy(job.policy.as_deref()?).await.ok()?;
        store::parse_row(&row).ok().map(Arc::new)
    }

    /// One pass: queue due policies, start queued jobs. Returns when to look
    /// again (the next elapse or retry), on the scheduler's clock.
    async fn tick(self: &Arc<Self>, phase: Phase) -> Result<Option<Timestamp>, CatalogError> {
        let now = self.opts.clock.now();
        let mut policies: Policies = HashMap::new();
        let mut rows = Vec::new();
        for row in self.repo.catalog.policies().await? {
            match store::parse_row(&row) {
                Ok(p) => {
                    let p = Arc::new(p);
                    policies.insert(row.name.clone(), p.clone());
                    if row.enabled {
                        rows.push((row, p));
                    }
                }
                Err(e) => tracing::error!(policy = %row.name, error = %e, "policy cannot be read: not run"),
            }
        }
        let backups = self.queue_due(&rows, false, now, phase).await?;
        let verifies = self.queue_due(&rows, true, now, phase).await?;
        let retry = self.dispatch(&policies, now).await?;
        Ok([backups, verifies, retry].into_iter().flatten().min())
    }

    /// Queues the due policies' jobs (backups, or verifies when `verify`)
    /// and moves their anchors.
    async fn queue_due(
        &self,
        rows: &[(crate::catalog::PolicyRow, Arc<Policy>)],
        verify: bool,
        now: Timestamp,
        phase: Phase,
    ) -> Result<Option<Timestamp>, CatalogError> {
        let with: Vec<_> = rows.iter().filter(|(_, p)| !verify || p.verify.is_some()).collect();
        let schedules: Vec<PolicySchedule<'_>> = with
            .iter()
            .map(|(row, p)| PolicySchedule {
                schedule: if verify { p.verify.as_ref().unwrap_or(&p.schedule) } else { &p.schedule },
                repeat_missed: p.spec.repeat_missed,
                anchor: to_ts(if verify { row.verify_anchor } else { row.anchor }),
            })
            .collect();
        let plan = due::plan(&schedules, now, phase, &self.opts.local);
        let kind = if verify { JobKind::Verify } else { JobKind::Backup };
        let cat = &self.repo.catalog;
        for d in &plan.due {
            let (row, p) = with[d.index];
            let reason = if d.reason == Reason::Missed { JobReason::Missed } else { JobReason::Scheduled };
            let jobs = store::enqueue_all(cat, p, kind, reason, to_utc(now)).await.map_err(store_err)?;
            cat.set_anchor(&row.name, verify, to_utc(d.anchor)).await?;
            for j in jobs {
                tracing::info!(policy = %row.name, vm = %j.vm_name, job = j.id, kind = %kind, reason = %reason,
                    state = %j.state, slot = %d.slot, "job queued");
            }
        }
        for s in &plan.skipped {
            let (row, _) = with[s.index];
            cat.set_anchor(&row.name, verify, to_utc(s.anchor)).await?;
            tracing::info!(policy = %row.name, kind = %kind, missed = %s.slot,
                "runs missed while the daemon was down are not repeated (repeat_missed is off)");
        }
        Ok(plan.next_wakeup)
    }

    /// Starts queued jobs whose time has come while there is room. Returns
    /// the earliest time a waiting retry may start.
    async fn dispatch(
        self: &Arc<Self>,
        policies: &Policies,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, CatalogError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let filter = JobFilter { state: Some(RunState::Queued), ..Default::default() };
        let mut queued = self.repo.catalog.jobs(&filter).await?;
        queued.reverse();
        let mut waiting: Option<Timestamp> = None;
        for job in queued {
            let at = to_ts(job.not_before);
            if at > now {
                waiting = Some(waiting.map_or(at, |w| w.min(at)));
                continue;
            }
            {
                let running = lock(&self.running);
                if running.len() >= self.opts.max_jobs {
                    break;
                }
                if running.values().any(|vm| *vm == job.vm_name) {
                    continue;
                }
            }
            if !self.repo.catalog.claim_job(job.id, std::process::id()).await? {
                continue;
            }
            lock(&self.running).insert(job.id, job.vm_name.clone());
            let policy = job.policy.as_ref().and_then(|n| policies.get(n)).cloned();
            tracing::info!(job = job.id, vm = %job.vm_name, kind = %job.kind, attempt = job.attempt, "job started");
            tokio::spawn(self.clone().run_one(job, policy));
        }
        Ok(waiting)
    }

    async fn run_one(self: Arc<Self>, job: JobRow, policy: Option<Arc<Policy>>) {
        let repo = self.repo.clone();
        let (j, p) = (job.clone(), policy.clone());
        let end =
            tokio::task::spawn_blocking(move || runner::execute(&repo, &j, p.as_deref())).await.unwrap_or_else(|e| {
                JobEnd { state: RunState::Failed, error: Some(format!("the job panicked: {e}")), ..no_outcome() }
            });
        if let Err(e) = self.finish(&job, &end, policy.as_deref()).await {
            tracing::error!(job = job.id, error = %e, "recording the job's end failed");
        }
        lock(&self.running).remove(&job.id);
        self.wake.notify_one();
    }

    /// Records a job's end, queues its retry, sends its webhook.
    async fn finish(&self, job: &JobRow, end: &JobEnd, policy: Option<&Policy>) -> Result<(), CatalogError> {
        let cat = &self.repo.catalog;
        let retry = runner::retry_of(job, end, policy, self.opts.clock.now());
        cat.finish_job(job.id, end).await?;
        let done = cat.job(job.id).await?;
        tracing::info!(job = job.id, vm = %job.vm_name, state = %done.state, error = done.error.as_deref().unwrap_or(""),
            backup = done.backup_id.as_deref().unwrap_or(""), bytes_read = done.bytes_read, "job ended");
        if let Some(r) = &retry {
            let next = cat.enqueue(r).await?;
            tracing::info!(job = next.id, vm = %next.vm_name, attempt = next.attempt, not_before = %next.not_before,
                "retry queued");
        }
        if let Some((url, ev)) = notify::event_for(&done, policy, retry.is_some()) {
            notify::spawn(url, ev);
        }
        Ok(())
    }

    async fn sweep_history(&self) {
        let keep = i64::from(self.opts.history_days) * 86_400;
        let cutoff = UtcTime { secs: UtcTime::now().secs - keep, nanos: 0 };
        match self.repo.catalog.delete_jobs_before(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, days = self.opts.history_days, "old job history pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning the job history failed"),
        }
    }

    /// Stops starting jobs, waits up to the grace for running ones, and
    /// marks those left `aborted`.
    async fn drain(&self) -> Result<(), CatalogError> {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.opts.shutdown_grace;
        while self.running() > 0 && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(left, self.wake.notified()).await;
        }
        let left: Vec<i64> = lock(&self.running).keys().copied().collect();
        for id in left {
            let error = format!("the daemon stopped and the job did not end within {:?}", self.opts.shutdown_grace);
            let end = JobEnd { state: RunState::Aborted, error: Some(error), ..no_outcome() };
            self.repo.catalog.finish_job(id, &end).await?;
            tracing::warn!(job = id, "job aborted by the daemon's shutdown");
        }
        Ok(())
    }
}

fn no_outcome() -> JobEnd {
    JobEnd { state: RunState::Failed, error: None, notes: None, backup_id: None, bytes_read: 0, bytes_written: 0 }
}

fn store_err(e: store::StoreError) -> CatalogError {
    match e {
        store::StoreError::Catalog(c) => c,
        other => CatalogError::Invalid(other.to_string()),
    }
}

/// Whether process `pid` still runs (a pid of another user's process
/// counts as running; our own pid cannot be a job's at start).
fn alive(pid: i64) -> bool {
    if pid == i64::from(std::process::id()) {
        return false;
    }
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else { return false };
    match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        Err(e) => e != rustix::io::Errno::SRCH,
    }
}
