//! The scheduler on a synthetic clock, in process, over a real repository
//! with real backups of small files: schedules, retention after each run,
//! the concurrency limit, retries of only the failed VM with the webhook,
//! missed runs at start-up and jobs interrupted by a dead process. The
//! clock is set by the test and the outcome polled (no sleeps).

mod common;

use backchain::catalog::{JobFilter, JobKind, JobReason, JobRow, NewJob, RunState};
use backchain::repo::Repo;
use backchain::schedule::clock::to_utc;
use backchain::schedule::policy::PolicySpec;
use backchain::schedule::{Clock, Scheduler, SchedulerOptions, store};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A small disk image of distinct bytes.
fn disk(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let p = dir.join(name);
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed).collect();
    std::fs::write(&p, data).unwrap();
    p
}

struct Hub {
    rt: tokio::runtime::Runtime,
    repo: Arc<Repo>,
    clock: Clock,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    scheduler: Option<Arc<Scheduler>>,
    task: Option<tokio::task::JoinHandle<Result<(), backchain::catalog::CatalogError>>>,
}

impl Hub {
    fn open(repo_dir: &Path, clock: Clock) -> Hub {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let repo = Arc::new(Repo::open(repo_dir, rt.handle().clone()).unwrap());
        Hub { rt, repo, clock, stop: None, scheduler: None, task: None }
    }

    fn start(&mut self, max_jobs: usize) {
        let opts = SchedulerOptions {
            max_jobs,
            poll: Duration::from_millis(20),
            clock: self.clock.clone(),
            local: jiff::tz::TimeZone::UTC,
            shutdown_grace: Duration::from_secs(20),
            ..Default::default()
        };
        let s = Scheduler::new(self.repo.clone(), opts);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.task = Some(self.rt.spawn(s.clone().run(async {
            let _ = rx.await;
        })));
        self.stop = Some(tx);
        self.scheduler = Some(s);
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
            self.rt.block_on(self.task.take().unwrap()).unwrap().unwrap();
        }
    }

    fn add(&self, doc: Value) {
        let spec = PolicySpec::from_json(doc.to_string().as_bytes()).unwrap();
        let p = spec.check(None).unwrap();
        self.rt.block_on(store::add(&self.repo.catalog, &p, to_utc(self.clock.now()))).unwrap();
    }

    fn jobs(&self, policy: &str) -> Vec<JobRow> {
        let f = JobFilter { policy: Some(policy), ..Default::default() };
        let mut j = self.rt.block_on(self.repo.catalog.jobs(&f)).unwrap();
        j.reverse();
        j
    }

    /// Polls until `f` holds (30 s at most).
    fn wait(&self, what: &str, f: impl Fn(&Hub) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}: {:#?}", self.all_jobs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn all_jobs(&self) -> Vec<JobRow> {
        self.rt.block_on(self.repo.catalog.jobs(&JobFilter::default())).unwrap()
    }

    fn ended(&self, policy: &str, state: RunState) -> usize {
        self.jobs(policy).iter().filter(|j| j.state == state).count()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn runs_on_schedule_prunes_and_never_runs_two_jobs_at_once() {
    let d = tempfile::tempdir().unwrap();
    let vms: Vec<Value> = (0..3)
        .map(|i| {
            let src = disk(d.path(), &format!("vm{i}.img"), i as u8);
            json!({"vm_name": format!("vm{i}"), "disks": [{"source": src}]})
        })
        .collect();
    let mut hub = Hub::open(&d.path().join("repo"), Clock::manual(ts("2026-01-01T00:00:00Z")));
    hub.add(json!({"name": "nightly", "vms": vms, "schedule": "*-*-* 02:00:00 UTC", "retention": {"keep_last": 2}}));
    hub.start(1);
    // Past the start-up pass: an elapse after it is due, not missed.
    hub.wait("the start-up pass", |h| h.scheduler.as_ref().unwrap().ticks() > 0);
    for day in 1..=3 {
        hub.clock.set(ts(&format!("2026-01-0{day}T02:00:00Z")));
        hub.wait("the day's three backups", |h| h.ended("nightly", RunState::Completed) == 3 * day);
    }
    let jobs = hub.jobs("nightly");
    assert_eq!(jobs.len(), 9, "one job per VM per elapse: {jobs:#?}");
    assert!(
        jobs.iter().all(|j| j.reason == JobReason::Scheduled && j.kind == JobKind::Backup && j.backup_id.is_some())
    );
    assert!(jobs.iter().all(|j| j.bytes_read == 256 * 1024), "{jobs:#?}");
    // --max-jobs 1: each job started after the one before it ended.
    let mut spans: Vec<_> = jobs.iter().map(|j| (j.started_at.unwrap(), j.ended_at.unwrap())).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "jobs overlap: {w:?}");
    }
    // keep_last 2 after every backup: never more than two points.
    for i in 0..3 {
        let backups = hub.repo.db().list_backups(Some(&format!("vm{i}"))).unwrap();
        assert_eq!(backups.len(), 2, "vm{i}: {backups:#?}");
        let kept: Vec<_> = backups.iter().map(|b| b.id.clone()).collect();
        let newest: Vec<_> = jobs
            .iter()
            .rev()
            .filter(|j| j.vm_name == format!("vm{i}"))
            .take(2)
            .map(|j| j.backup_id.clone().unwrap())
            .collect();
        assert_eq!(kept, newest);
    }
    assert!(jobs[6..].iter().all(|j| j.notes.as_deref().is_some_and(|n| n.contains("dropped 1"))), "{jobs:#?}");
}

/// A one-request-at-a-time HTTP receiver: each POST body goes to the channel.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<Value>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let mut c = conn.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = c.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap();
                if buf.len() >= end + 4 + len || n == 0 {
                    break buf[end + 4..end + 4 + len].to_vec();
                }
            };
            c.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").unwrap();
            if tx.send(serde_json::from_slice(&body).unwrap()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn only_the_failed_vm_is_retried_then_fails_with_a_webhook() {
    let d = tempfile::tempdir().unwrap();
    let good = disk(d.path(), "good.img", 1);
    let bad = disk(d.path(), "bad.img", 2);
    let (url, hooks) = webhook_receiver();
    let t0 = ts("2026-02-01T10:00:00Z");
    let mut hub = Hub::open(&d.path().join("repo"), Clock::manual(t0));
    hub.add(json!({
        "name": "p", "schedule": "monthly UTC", "retries": 2, "retry_delay_secs": 60,
        "vms": [{"vm_name": "good", "disks": [{"source": good}]}, {"vm_name": "bad", "disks": [{"source": bad}]}],
        "webhook": {"url": url, "on": "failure"},
    }));
    // The source goes away after the policy was accepted.
    std::fs::remove_file(&bad).unwrap();
    hub.start(2);
    let queued = hub.rt.block_on(store::run_now(&hub.repo.catalog, "p", to_utc(t0))).unwrap();
    assert_eq!(queued.len(), 2);
    hub.wait("attempt 1 of each, and the retry of bad", |h| h.jobs("p").len() == 3);
    let jobs = hub.jobs("p");
    let retry = jobs.iter().find(|j| j.reason == JobReason::Retry).unwrap();
    assert_eq!((retry.vm_name.as_str(), retry.attempt, retry.state), ("bad", 2, RunState::Queued));
    assert_eq!(retry.not_before, to_utc(ts("2026-02-01T10:01:00Z")));
    hub.wait("the first attempts to end", |h| h.jobs("p").iter().filter(|j| j.state.is_open()).count() == 1);
    hub.clock.set(ts("2026-02-01T10:01:00Z"));
    hub.wait("attempt 2 and its retry", |h| h.jobs("p").len() == 4);
    hub.clock.set(ts("2026-02-01T10:02:00Z"));
    hub.wait("attempt 3", |h| h.ended("p", RunState::Failed) == 3);
    let jobs = hub.jobs("p");
    assert_eq!(jobs.len(), 4, "two retries, then no more: {jobs:#?}");
    assert_eq!(jobs.iter().filter(|j| j.vm_name == "good").count(), 1, "only the failed VM is retried");
    let last = jobs.last().unwrap();
    assert_eq!((last.vm_name.as_str(), last.attempt, last.state), ("bad", 3, RunState::Failed));
    assert!(last.error.as_deref().unwrap().contains("bad.img"), "{last:?}");
    // One webhook: the final failure (retried attempts are not reported).
    let hook = hooks.recv_timeout(Duration::from_secs(30)).expect("the webhook");
    assert_eq!(hook["policy"], "p");
    assert_eq!(hook["vm_name"], "bad");
    assert_eq!(hook["state"], "failed");
    assert_eq!(hook["attempt"], 3);
    assert_eq!(hook["last_attempt"], true);
    assert!(hook["error"].as_str().unwrap().contains("bad.img"), "{hook}");
    assert!(hooks.recv_timeout(Duration::from_millis(300)).is_err(), "exactly one webhook");
}

#[test]
fn restart_interrupts_dead_jobs_and_runs_missed_policies_once() {
    let d = tempfile::tempdir().unwrap();
    let a = disk(d.path(), "a.img", 3);
    let b = disk(d.path(), "b.img", 4);
    let mut hub = Hub::open(&d.path().join("repo"), Clock::manual(ts("2026-03-01T00:00:00Z")));
    let policy = |name: &str, vm: &str, src: &Path, repeat: bool| {
        json!({"name": name, "schedule": "02:00 UTC", "repeat_missed": repeat,
               "vms": [{"vm_name": vm, "disks": [{"source": src}]}]})
    };
    hub.add(policy("catch-up", "a", &a, true));
    hub.add(policy("no-catch-up", "b", &b, false));
    // A job whose process died mid-run, and a second queueing of one VM.
    let cat = &hub.repo.catalog;
    let new = |vm: &str| NewJob {
        policy: Some("no-catch-up".into()),
        vm_name: vm.into(),
        kind: JobKind::Backup,
        reason: JobReason::Manual,
        attempt: 1,
        not_before: to_utc(ts("2026-03-01T00:00:00Z")),
    };
    let dead = hub.rt.block_on(cat.enqueue(&new("b"))).unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(hub.rt.block_on(cat.claim_job(dead.id, pid)).unwrap());
    let twice = hub.rt.block_on(cat.enqueue(&new("b"))).unwrap();
    assert_eq!(twice.state, RunState::Skipped);
    assert!(twice.error.as_deref().unwrap().contains(&format!("job {}) is still running", dead.id)), "{twice:?}");

    // The daemon comes back two and a half days later.
    hub.clock.set(ts("2026-03-03T12:00:00Z"));
    hub.start(2);
    hub.wait("the missed run", |h| h.ended("catch-up", RunState::Completed) == 1);
    let j = hub.rt.block_on(hub.repo.catalog.job(dead.id)).unwrap();
    assert_eq!(j.state, RunState::Interrupted);
    assert!(j.error.as_deref().unwrap().contains(&format!("pid {pid}")), "{j:?}");
    let caught = hub.jobs("catch-up");
    assert_eq!(caught.len(), 1, "two missed elapses run once: {caught:#?}");
    assert_eq!(caught[0].reason, JobReason::Missed);
    assert_eq!(hub.jobs("no-catch-up").len(), 2, "no missed run without repeat_missed");
    assert!(hub.all_jobs().iter().all(|j| j.state != RunState::Running));

    // Both run at the next elapse.
    hub.clock.set(ts("2026-03-04T02:00:00Z"));
    hub.wait("the next scheduled runs", |h| {
        h.ended("catch-up", RunState::Completed) == 2 && h.ended("no-catch-up", RunState::Completed) == 1
    });
    let last = hub.jobs("no-catch-up").pop().unwrap();
    assert_eq!(last.reason, JobReason::Scheduled);
}

#[test]
fn policy_edits_apply_without_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let a = disk(d.path(), "a.img", 5);
    let mut hub = Hub::open(&d.path().join("repo"), Clock::manual(ts("2026-04-01T00:00:00Z")));
    let doc = |schedule: &str, enabled: bool| json!({"name": "p", "schedule": schedule, "enabled": enabled, "vms": [{"vm_name": "a", "disks": [{"source": a}]}]});
    hub.add(doc("03:00 UTC", false));
    hub.start(2);
    hub.wait("the start-up pass", |h| h.scheduler.as_ref().unwrap().ticks() > 0);
    // Disabled: its elapse passes without a run; enabled with a new
    // schedule, it runs at that schedule's next elapse.
    hub.clock.set(ts("2026-04-01T03:00:00Z"));
    let p = PolicySpec::from_json(doc("04:00 UTC", true).to_string().as_bytes()).unwrap().check(None).unwrap();
    hub.rt.block_on(store::replace(&hub.repo.catalog, "p", &p, to_utc(hub.clock.now()))).unwrap();
    hub.clock.set(ts("2026-04-01T04:00:00Z"));
    hub.wait("the run at the new schedule", |h| h.ended("p", RunState::Completed) == 1);
    assert_eq!(hub.jobs("p").len(), 1);
}
