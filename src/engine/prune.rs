//! Applying a retention plan to one disk's chain: the images of dropped
//! points are merged away one at a time, oldest first, each as a recorded,
//! resumable merge (`qcow2::merge`) under the dropped point's exclusive lock.
//! Oldest first makes every drop either a fold of the next image into the
//! full (when the dropped point is the oldest left) or an absorb of the
//! dropped image into its child: each costs the clusters it merges, never
//! the disk.
//!
//! The catalog side (which backups, their rows, the per-VM lock) belongs to
//! the caller; this layer knows file names, lock files and journals only.

use super::EngineError;
use super::retention::{self, Candidate, KeepOptions, Outcome, Reason};
use crate::qcow2::merge::{self, Merge, MergeError, Stats};
use crate::repo::Repo;
use std::path::{Path, PathBuf};

/// Where the lock file of the restore point owning image `name` lives.
pub type LockFile<'a> = &'a dyn Fn(&str) -> PathBuf;

/// Drops the images `drop` from `chain` (one disk's images, oldest first,
/// file names in `dir`). Returns the chain left and each merge's stats.
pub fn drop_images(
    dir: &Path,
    chain: &[String],
    drop: &[String],
    lock_file: LockFile<'_>,
) -> Result<(Vec<String>, Vec<Stats>), MergeError> {
    if let Some(stranger) = drop.iter().find(|d| !chain.contains(d)) {
        return Err(MergeError::Unsupported(format!("{stranger} is not in the chain")));
    }
    let mut left = chain.to_vec();
    let mut stats = Vec::new();
    for name in chain.iter().filter(|n| drop.contains(n)) {
        // OK to unwrap: `name` is in `left` until it is dropped here.
        let i = left.iter().position(|n| n == name).unwrap();
        let lock = merge::lock_dropped(&lock_file(name), name)?;
        stats.push(Merge::begin(dir, &left, i, &lock)?.run()?);
        left.remove(i);
    }
    Ok((left, stats))
}

/// Finishes every merge a crash left in `dir` (its journals). Returns the
/// images whose points those merges dropped.
pub fn resume_merges(dir: &Path, lock_file: LockFile<'_>) -> Result<Vec<String>, MergeError> {
    let mut journals: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| MergeError::Io { path: dir.to_path_buf(), source: e })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".merge.json")))
        .collect();
    journals.sort();
    let mut finished = Vec::new();
    for j in journals {
        let Some(journal) = merge::Journal::load(&j)? else { continue };
        let lock = merge::lock_dropped(&lock_file(&journal.dropped), &journal.dropped)?;
        if let Some(m) = Merge::resume(dir, &j, &lock)? {
            m.run()?;
            finished.push(journal.dropped);
        }
    }
    Ok(finished)
}

/// What `prune` is asked for.
#[derive(Debug, Clone, Default)]
pub struct PruneRequest {
    pub vm: String,
    pub keep: KeepOptions,
    pub dry_run: bool,
}

/// One backup's verdict, for `--dry-run` and `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrunedBackup {
    pub id: String,
    pub started_at: String,
    pub status: String,
    pub action: &'static str,
    #[serde(flatten)]
    pub reason: Reason,
}

/// What a prune decided and, unless a dry run, did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneReport {
    pub vm: String,
    pub dry_run: bool,
    pub backups: Vec<PrunedBackup>,
    pub kept: usize,
    pub dropped: usize,
    /// Bytes the VM's folder takes less on disk (allocated blocks).
    pub bytes_reclaimed: u64,
}

/// The lock file of restore point `id`: readers hold it shared, a merge
/// dropping the point exclusive.
pub fn point_lock_file(repo: &Repo, id: &str) -> PathBuf {
    repo.point_lock_file(id)
}

/// Prunes VM `req.vm` by the retention options: plans (a pure function of
/// the backups, `offset` giving the local UTC offset), then, unless a dry
/// run, drops each dropped backup from the catalog and merges its images
/// away. Under the VM's lock: no backup of the VM runs meanwhile. Merges a
/// crash left unfinished are finished first.
pub fn prune_vm(repo: &Repo, req: &PruneRequest, offset: &dyn Fn(i64) -> i64) -> Result<PruneReport, EngineError> {
    crate::repo::check_vm_name(&req.vm)?;
    let Some(_vm_lock) = repo.try_lock(&req.vm)? else {
        return Err(EngineError::Busy(format!("a job of VM {} is running; prune it when it is done", req.vm)));
    };
    if repo.db().vm_id(&req.vm, false)?.is_none() {
        return Err(EngineError::NotFound(format!("no VM named {}", req.vm)));
    }
    if !req.dry_run {
        // Merges a crash interrupted come first: they belong to the past.
        for (dir, _) in file_chains(repo, &req.vm)? {
            resume_merges(&dir, &|n| point_lock_file(repo, stem(n))).map_err(merge_err)?;
        }
    }
    let backups = repo.db().list_backups(Some(&req.vm))?;
    let candidates: Vec<Candidate> = backups
        .iter()
        .map(|b| Candidate {
            id: b.id.clone(),
            time: b.started_at.secs,
            subsec_nanos: b.started_at.nanos,
            outcome: Outcome::from_status(b.status.as_str()),
        })
        .collect();
    let plan = retention::plan(&candidates, &req.keep, offset).map_err(|e| EngineError::BadRequest(e.to_string()))?;
    let report_rows: Vec<PrunedBackup> = backups
        .iter()
        .zip(&plan)
        .map(|(b, d)| PrunedBackup {
            id: b.id.clone(),
            started_at: b.started_at.to_string(),
            status: b.status.to_string(),
            action: if d.keep { "keep" } else { "drop" },
            reason: d.reason.clone(),
        })
        .collect();
    let dropped = plan.iter().filter(|d| !d.keep).count();
    let mut report = PruneReport {
        vm: req.vm.clone(),
        dry_run: req.dry_run,
        kept: plan.len() - dropped,
        dropped,
        backups: report_rows,
        bytes_reclaimed: 0,
    };
    if req.dry_run {
        return Ok(report);
    }
    // Nothing changes while a point to drop is exported or read.
    for (b, _) in backups.iter().zip(&plan).filter(|(_, d)| !d.keep) {
        drop(super::lock_unused(repo, &b.id)?);
    }
    let before = usage(&repo.vm_dir(&req.vm));
    // The chains as their files link them, before the catalog forgets the
    // dropped points (a dropped newest image is nobody's backing file).
    let chains = file_chains(repo, &req.vm)?;
    for (b, d) in backups.iter().zip(&plan).filter(|(_, d)| !d.keep) {
        match d.reason {
            // Never committed: no later backup depends on it.
            Reason::Unfinished => {
                super::delete_backup(repo, &b.id)?;
            }
            _ => {
                repo.db().drop_merged_backup(&b.id)?;
            }
        }
    }
    merge_dropped(repo, &req.vm, &chains)?;
    report.bytes_reclaimed = before.saturating_sub(usage(&repo.vm_dir(&req.vm)));
    Ok(report)
}

fn stem(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Each disk's folder and chain of image files (oldest first), from the
/// catalog's latest image of each chain down its backing files.
fn file_chains(repo: &Repo, vm: &str) -> Result<Vec<(PathBuf, Vec<String>)>, EngineError> {
    let mut out = Vec::new();
    for chain in repo.db().chains(vm)? {
        let Some(latest) = chain.images.last() else { continue };
        let top = repo.path(&latest.image_path);
        let dir = top.parent().map(Path::to_path_buf).unwrap_or_default();
        out.push((dir, file_chain(&top)?));
    }
    Ok(out)
}

/// Merges away every image of `chains` the catalog no longer lists (the
/// dropped points, and any a crash left), with its digest map.
fn merge_dropped(repo: &Repo, vm: &str, chains: &[(PathBuf, Vec<String>)]) -> Result<(), EngineError> {
    let listed: Vec<String> =
        repo.db().chains(vm)?.iter().flat_map(|c| c.images.iter().map(|i| format!("{}.qcow2", i.backup_id))).collect();
    let lock_file = |name: &str| point_lock_file(repo, stem(name));
    for (dir, files) in chains {
        let drop: Vec<String> = files.iter().filter(|f| !listed.contains(f)).cloned().collect();
        drop_images(dir, files, &drop, &lock_file).map_err(merge_err)?;
        for f in &drop {
            let digests = dir.join(format!("{}.digests", stem(f)));
            match std::fs::remove_file(&digests) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(EngineError::io(&digests, e)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The file names of `top`'s chain as its images name their backing files,
/// oldest first.
fn file_chain(top: &Path) -> Result<Vec<String>, EngineError> {
    let dir = top.parent().unwrap_or(Path::new("."));
    let mut names = Vec::new();
    let mut next = top.file_name().map(|n| n.to_string_lossy().into_owned());
    while let Some(name) = next.take() {
        if names.len() > crate::qcow2::consts::MAX_CHAIN_DEPTH || names.contains(&name) {
            return Err(EngineError::Repository(format!("the chain of {} loops or is too deep", top.display())));
        }
        let path = dir.join(&name);
        let file = crate::block::RawFile::open(&path).map_err(|e| EngineError::io(&path, e))?;
        next = crate::qcow2::Header::read(&file)?.backing_file;
        names.push(name);
    }
    names.reverse();
    Ok(names)
}

fn merge_err(e: MergeError) -> EngineError {
    match e {
        MergeError::Busy(_) => EngineError::Busy(e.to_string()),
        MergeError::Qcow2(q) => EngineError::Qcow2(q),
        other => EngineError::Repository(other.to_string()),
    }
}

/// Bytes allocated under a folder.
fn usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}
