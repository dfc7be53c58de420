//! The Prometheus text page (`GET /metrics`): per VM the last successful
//! backup and the last job; the queue; the repository's space; and gauges
//! the front end counts (restore sessions, NBD exports).

use crate::catalog::{CatalogError, JobFilter, JobKind, RunState};
use crate::repo::Repo;
use std::fmt::Write;
use std::path::Path;

/// Gauges of the serving process that the catalog does not know.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub restore_sessions: usize,
    /// Open NBD exports, when this server has an NBD listener.
    pub nbd_exports: Option<usize>,
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Page(String);

impl Page {
    fn family(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        let l = if l.is_empty() { String::new() } else { format!("{{{}}}", l.join(",")) };
        let _ = writeln!(self.0, "{name}{l} {value}");
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks).
fn allocated(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

/// Renders the page. Blocking (it walks the repository): call it from a
/// blocking thread.
pub fn render(repo: &Repo, live: &Live) -> Result<String, CatalogError> {
    let mut page = Page(String::new());
    let db = repo.db();
    page.family("backchain_vm_last_success_timestamp_seconds", "Start of the VM's newest completed backup.");
    for vm in db.vms()? {
        if let Some(t) = vm.last_backup {
            page.sample("backchain_vm_last_success_timestamp_seconds", &[("vm", &vm.name)], t.secs as f64);
        }
    }
    let last = repo.db().last_jobs()?;
    let backups: Vec<_> = last.iter().filter(|j| j.kind == JobKind::Backup).collect();
    page.family("backchain_vm_last_job_state", "The VM's last ended backup job: 1 for its state.");
    for j in &backups {
        for s in RunState::ALL.iter().filter(|s| !s.is_open()) {
            let v = if *s == j.state { 1.0 } else { 0.0 };
            page.sample("backchain_vm_last_job_state", &[("vm", &j.vm_name), ("state", s.as_str())], v);
        }
    }
    page.family("backchain_vm_last_job_duration_seconds", "Run time of the VM's last ended backup job.");
    for j in &backups {
        if let (Some(a), Some(b)) = (j.started_at, j.ended_at) {
            let secs = (b.secs - a.secs) as f64 + (f64::from(b.nanos) - f64::from(a.nanos)) / 1e9;
            page.sample("backchain_vm_last_job_duration_seconds", &[("vm", &j.vm_name)], secs.max(0.0));
        }
    }
    page.family("backchain_vm_last_job_bytes_read", "Bytes the VM's last backup job read from its sources.");
    for j in &backups {
        page.sample("backchain_vm_last_job_bytes_read", &[("vm", &j.vm_name)], j.bytes_read as f64);
    }
    page.family("backchain_vm_last_job_bytes_stored", "Bytes the VM's last backup job stored.");
    for j in &backups {
        page.sample("backchain_vm_last_job_bytes_stored", &[("vm", &j.vm_name)], j.bytes_written as f64);
    }
    let count = |state| -> Result<usize, CatalogError> {
        Ok(repo.db().jobs(&JobFilter { state: Some(state), ..Default::default() })?.len())
    };
    page.family("backchain_jobs_queued", "Jobs waiting in the queue (retries waiting for their time included).");
    page.sample("backchain_jobs_queued", &[], count(RunState::Queued)? as f64);
    page.family("backchain_jobs_running", "Jobs running, in any process of this repository.");
    page.sample("backchain_jobs_running", &[], count(RunState::Running)? as f64);
    let root = repo.root().display().to_string();
    page.family("backchain_repository_used_bytes", "Bytes the repository's images take on disk.");
    page.sample(
        "backchain_repository_used_bytes",
        &[("repository", &root)],
        allocated(&repo.root().join("vms")) as f64,
    );
    if let Ok(fs) = rustix::fs::statvfs(repo.root()) {
        page.family("backchain_repository_free_bytes", "Bytes free for the repository (to unprivileged users).");
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        page.sample("backchain_repository_free_bytes", &[("repository", &root)], free as f64);
    }
    page.family("backchain_restore_sessions_open", "Restore sessions open.");
    page.sample("backchain_restore_sessions_open", &[], live.restore_sessions as f64);
    if let Some(n) = live.nbd_exports {
        page.family("backchain_nbd_exports_open", "NBD exports open.");
        page.sample("backchain_nbd_exports_open", &[], n as f64);
    }
    Ok(page.0)
}
