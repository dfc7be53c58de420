//! One job, start to end: a backup of one VM of a policy followed by the
//! policy's prune, or a verify of the VM's backups. Blocking: the scheduler
//! runs it on a blocking thread, `backchain policy run` on its own.

use super::clock::to_utc;
use super::policy::{Policy, VmSpec};
use crate::catalog::{BackupStatus, JobEnd, JobKind, JobReason, JobRow, NewJob, RunState};
use crate::engine::backup::{self, BackupRequest, Requested};
use crate::engine::prune::{PruneRequest, prune_vm};
use crate::engine::{EngineError, NoProgress, verify};
use crate::repo::Repo;
use jiff::{SignedDuration, Timestamp};

fn failed(error: String) -> JobEnd {
    JobEnd {
        state: RunState::Failed,
        error: Some(error),
        notes: None,
        backup_id: None,
        bytes_read: 0,
        bytes_written: 0,
    }
}

/// The VM of `job` in `policy`, or why the job cannot run any more.
fn vm_of<'a>(job: &JobRow, policy: Option<&'a Policy>) -> Result<(&'a Policy, &'a VmSpec), String> {
    let name = job.policy.as_deref().unwrap_or("");
    let p = policy.ok_or_else(|| format!("policy {name} was removed before the job ran"))?;
    let vm = p.spec.vms.iter().find(|v| v.vm_name == job.vm_name);
    vm.map(|v| (p, v)).ok_or_else(|| format!("VM {} was removed from policy {name} before the job ran", job.vm_name))
}

/// Runs claimed job `job` and says how it ended. Never panics on a bad
/// source or repository: every failure is the job's error.
pub fn execute(repo: &Repo, job: &JobRow, policy: Option<&Policy>) -> JobEnd {
    let (p, vm) = match vm_of(job, policy) {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    match job.kind {
        JobKind::Backup => backup_and_prune(repo, job, p, vm),
        JobKind::Verify => verify_vm(repo, &vm.vm_name),
    }
}

/// Full when a disk's newest chain already holds `full_every` images.
fn requested_type(repo: &Repo, vm: &str, full_every: Option<u32>) -> Result<Requested, EngineError> {
    let Some(n) = full_every else { return Ok(Requested::Auto) };
    let chains = repo.db().chains(vm)?;
    let mut newest: std::collections::BTreeMap<i64, (i64, i64)> = Default::default();
    for c in &chains {
        let e = newest.entry(c.disk_index).or_insert((c.id, c.image_count));
        if c.id > e.0 {
            *e = (c.id, c.image_count);
        }
    }
    let full = newest.values().any(|&(_, count)| count >= i64::from(n));
    Ok(if full { Requested::Full } else { Requested::Auto })
}

fn backup_and_prune(repo: &Repo, job: &JobRow, p: &Policy, vm: &VmSpec) -> JobEnd {
    let kind = match requested_type(repo, &vm.vm_name, p.spec.full_every) {
        Ok(k) => k,
        Err(e) => return failed(e.to_string()),
    };
    let id = backup::new_backup_id();
    // Known before the backup starts: the history links the job to it, and
    // a user can find the running backup from the job.
    if let Err(e) = repo.db().set_job_backup(job.id, &id) {
        return failed(e.to_string());
    }
    let req = BackupRequest {
        vm: vm.vm_name.clone(),
        disks: vm.disks.iter().map(|d| d.source.clone()).collect(),
        kind,
        compression: None,
        id: Some(id.clone()),
    };
    let result = match backup::run(repo, &req, &NoProgress) {
        Ok(r) => r,
        Err(e) => {
            let mut end = failed(e.to_string());
            // A backup refused before it started has no row: do not link it.
            let started = repo.db().backup(&id).is_ok_and(|b| b.status != BackupStatus::Completed);
            end.backup_id = started.then_some(id);
            return end;
        }
    };
    let mut notes = result.notes.clone();
    if !p.spec.retention.keeps_everything() {
        let req = PruneRequest { vm: vm.vm_name.clone(), keep: p.spec.retention.keep(), dry_run: false };
        match prune_vm(repo, &req, &crate::util::time::local_offset) {
            Ok(r) => notes.push(format!("prune: kept {}, dropped {}", r.kept, r.dropped)),
            Err(e) => notes.push(format!("prune failed: {e}")),
        }
    }
    JobEnd {
        state: RunState::Completed,
        error: None,
        notes: (!notes.is_empty()).then(|| notes.join("; ")),
        backup_id: Some(result.backup_id),
        bytes_read: result.bytes_read,
        bytes_written: result.bytes_written,
    }
}

/// Re-reads every completed backup of the VM.
fn verify_vm(repo: &Repo, vm: &str) -> JobEnd {
    let backups = match repo.db().list_backups(Some(vm)) {
        Ok(b) => b,
        Err(e) => return failed(e.to_string()),
    };
    let mut problems = Vec::new();
    let mut checked = 0;
    for b in backups.iter().filter(|b| b.status == BackupStatus::Completed) {
        checked += 1;
        let req =
            verify::VerifyRequest { id: Some(b.id.clone()), vm: None, skip_verified: false, outdated_after_days: None };
        match verify::run(repo, &req) {
            Ok(reports) => {
                for r in reports.iter().filter(|r| !r.ok) {
                    problems.push(format!("{} disk {}: {}", r.backup_id, r.disk_index, r.problems.join(", ")));
                }
            }
            Err(e) => problems.push(format!("{}: {e}", b.id)),
        }
    }
    let state = if problems.is_empty() { RunState::Completed } else { RunState::Failed };
    JobEnd {
        state,
        error: (!problems.is_empty()).then(|| problems.join("; ")),
        notes: Some(format!("verified {checked} backups")),
        backup_id: None,
        bytes_read: 0,
        bytes_written: 0,
    }
}

/// The next attempt of a failed backup job, when the policy has retries
/// left: only this VM, after the policy's delay on the scheduler's clock.
pub fn retry_of(job: &JobRow, end: &JobEnd, policy: Option<&Policy>, now: Timestamp) -> Option<NewJob> {
    let p = policy?;
    let retries = i64::from(p.spec.retries);
    if end.state != RunState::Failed || job.kind != JobKind::Backup || job.attempt > retries {
        return None;
    }
    let delay = SignedDuration::from_secs(p.spec.retry_delay_secs as i64);
    Some(NewJob {
        policy: job.policy.clone(),
        vm_name: job.vm_name.clone(),
        kind: job.kind,
        reason: JobReason::Retry,
        attempt: job.attempt + 1,
        not_before: to_utc(now.checked_add(delay).unwrap_or(now)),
    })
}

/// How often [`run_in_foreground`] looks at a job another process runs.
const FOREGROUND_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs queued `jobs` of `policy` in this process, one after another (for
/// `backchain policy run`): each job this process claims runs here, once,
/// without retries; a job a daemon claimed first is followed until it ends.
/// Returns the jobs as they ended.
pub fn run_in_foreground(repo: &Repo, jobs: &[JobRow], policy: &Policy) -> Result<Vec<JobRow>, EngineError> {
    let mut out = Vec::new();
    for job in jobs {
        if job.state == RunState::Queued && repo.db().claim_job(job.id, std::process::id())? {
            let end = execute(repo, job, Some(policy));
            repo.db().finish_job(job.id, &end)?;
        }
        loop {
            let now = repo.db().job(job.id)?;
            if !now.state.is_open() {
                out.push(now);
                break;
            }
            std::thread::sleep(FOREGROUND_POLL);
        }
    }
    Ok(out)
}
