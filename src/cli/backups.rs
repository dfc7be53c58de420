//! Subcommands over the repository: backup, list, chain, verify.

use super::CliError;
use backchain::engine::{self, BackupRequest, Progress, Requested};
use backchain::qcow2::Compression;
use backchain::repo::Repo;
use std::io::IsTerminal;

/// A terminal progress bar (bytes, rate, ETA); nothing when stdout is not a
/// terminal.
pub struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub fn new() -> Self {
        if std::io::stdout().is_terminal() {
            let style = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let b = indicatif::ProgressBar::hidden();
            b.set_style(style);
            b.set_draw_target(indicatif::ProgressDrawTarget::stdout());
            Bar(Some(b))
        } else {
            Bar(None)
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

pub fn backup(
    repo: &Repo,
    vm: String,
    disks: Vec<String>,
    kind: Requested,
    compression: Option<Compression>,
    json: bool,
) -> Result<(), CliError> {
    let req = BackupRequest { vm, disks, kind, compression, id: None };
    let bar = if json { Bar(None) } else { Bar::new() };
    let r = engine::backup::run(repo, &req, &bar)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    for n in &r.notes {
        eprintln!("note: {n}");
    }
    outln!("{}", r.backup_id);
    for d in &r.disks {
        eprintln!(
            "disk {}: {} backup, {} changed, {} stored in {}",
            d.disk_index,
            d.disk_type.as_str(),
            backchain::util::human_size(d.changed_bytes as u64),
            backchain::util::human_size(d.stored_bytes as u64),
            d.image_path
        );
    }
    Ok(())
}

pub fn list(repo: &Repo, vm: Option<&str>, json: bool) -> Result<(), CliError> {
    let backups = repo.db().list_backups(vm)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&backups)?);
        return Ok(());
    }
    outln!(
        "{:<24} {:<16} {:<12} {:<11} {:<25} {:>6} {:>10}",
        "ID",
        "VM",
        "TYPE",
        "STATUS",
        "STARTED",
        "DISKS",
        "STORED"
    );
    for b in backups {
        let stored: i64 = b.disks.iter().map(|d| d.stored_bytes).sum();
        outln!(
            "{:<24} {:<16} {:<12} {:<11} {:<25} {:>6} {:>10}",
            b.id,
            b.vm,
            b.backup_type,
            b.status,
            b.started_at,
            b.disks.len(),
            backchain::util::human_size(stored as u64)
        );
    }
    Ok(())
}

pub fn prune(repo: &Repo, req: &backchain::engine::prune::PruneRequest, json: bool) -> Result<(), CliError> {
    use backchain::engine::retention::Reason;
    let report = backchain::engine::prune::prune_vm(repo, req, &backchain::util::time::local_offset)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return busy_error(&report.busy);
    }
    for b in &report.backups {
        let why = match &b.reason {
            Reason::Rule { rule, n, bucket } => format!("keep-{} #{n} ({bucket})", format!("{rule:?}").to_lowercase()),
            Reason::InProgress => "still running".into(),
            Reason::Unfinished => "failed or interrupted: never a restore point".into(),
            Reason::NotSelected => "no rule keeps it".into(),
        };
        let why = if b.action == "busy" { format!("{why}; in use by a reader: not dropped") } else { why };
        outln!("{:<24} {:<25} {:<11} {:<5} {why}", b.id, b.started_at, b.status, b.action);
    }
    let verb = if report.dry_run { "would drop" } else { "dropped" };
    outln!(
        "{} kept, {verb} {}; {} reclaimed",
        report.kept,
        report.dropped,
        backchain::util::human_size(report.bytes_reclaimed)
    );
    busy_error(&report.busy)
}

/// Points a prune could not drop because readers hold them: an error (after
/// the report), so scripts notice.
fn busy_error(busy: &[String]) -> Result<(), CliError> {
    if !busy.is_empty() {
        return Err(CliError::msg(format!(
            "{} restore points are in use by readers (restore sessions, mounts or exports) and were not dropped: \
             {}; close them and prune again",
            busy.len(),
            busy.join(", ")
        )));
    }
    Ok(())
}

pub fn delete(repo: &Repo, id: &str, json: bool) -> Result<(), CliError> {
    let done = backchain::engine::delete_point(repo, id)?;
    let merged = done.merges.iter().filter(|m| m.backup_id == id).count();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "deleted": id,
                "merges": done.merges,
                "bytes_reclaimed": done.bytes_reclaimed,
            }))?
        );
    } else {
        outln!(
            "deleted {id} ({merged} disk images merged away, {} reclaimed)",
            backchain::util::human_size(done.bytes_reclaimed)
        );
    }
    Ok(())
}

pub fn chain(repo: &Repo, vm: &str, json: bool) -> Result<(), CliError> {
    let chains = repo.db().chains(vm)?;
    if chains.is_empty() && repo.db().vm_id(vm, false)?.is_none() {
        return Err(CliError::msg(format!("no VM named {vm}")));
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&chains)?);
        return Ok(());
    }
    for c in chains {
        outln!(
            "disk {} (chain {}, {} bytes virtual, {} images, {} stored):",
            c.disk_index,
            c.id,
            c.virtual_size,
            c.image_count,
            backchain::util::human_size(c.total_bytes as u64)
        );
        for i in c.images {
            outln!(
                "  {} {:<12} {:>10} {}",
                i.backup_id,
                i.disk_type,
                backchain::util::human_size(i.stored_bytes as u64),
                i.image_path
            );
        }
    }
    Ok(())
}

pub fn verify(repo: &Repo, req: &engine::verify::VerifyRequest, json: bool) -> Result<(), CliError> {
    let reports = engine::verify::run(repo, req)?;
    let bad = reports.iter().filter(|r| !r.ok).count();
    let skipped = reports.iter().filter(|r| r.skipped).count();
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            if r.skipped {
                let when = r.verified_at.map(|t| t.to_string()).unwrap_or_default();
                outln!("skip   {} disk {} {} (passed {when})", r.backup_id, r.disk_index, r.image_path);
            } else if r.ok {
                outln!("ok     {} disk {} {}", r.backup_id, r.disk_index, r.image_path);
            } else {
                outln!("FAULT  {} disk {} {}: {}", r.backup_id, r.disk_index, r.image_path, r.problems.join("; "));
            }
        }
    }
    if bad > 0 {
        return Err(CliError::msg(format!("verify found faults in {bad} of {} disk images", reports.len())));
    }
    if !json {
        outln!("{} disk images verified", reports.len() - skipped);
        if skipped > 0 {
            outln!("{skipped} disk images skipped: they passed a verify that is not outdated");
        }
    }
    Ok(())
}
