//! Applying a retention plan to one disk's chain: the images of dropped
//! points are merged away one at a time, oldest first, each as a recorded,
//! resumable merge (`qcow2::merge`) under the dropped point's exclusive lock.
//! Oldest first makes every drop either a fold of the next image into the
//! full (when the dropped point is the oldest left) or an absorb of the
//! dropped image into its child: each costs the clusters it merges, never
//! the disk.
//!
//! `drop_images` and `resume_merges` work on a folder with file journals
//! (the qcow2-level tests use them); `prune_vm` is the repository's prune:
//! it plans, then drops through `delete::drop_points`, whose merges the
//! catalog records.

use super::EngineError;
use super::delete::{Dropped, drop_points, lock_vm};
use super::retention::{self, Candidate, KeepOptions, Outcome, Reason};
use crate::qcow2::merge::{self, Merge, MergeError, Stats};
use crate::repo::{MergeDone, Repo};
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
    /// `keep`, `drop`, or `busy`: to drop, but a reader (a restore session,
    /// mount or export) holds it, so it stays until a later prune.
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
    /// Points to drop that readers hold (not dropped).
    pub busy: Vec<String>,
    /// Bytes the VM's folder takes less on disk (allocated blocks).
    pub bytes_reclaimed: u64,
    /// Each image merge run.
    pub merges: Vec<MergeDone>,
}

/// Prunes VM `req.vm` by the retention options: plans (a pure function of
/// the backups, `offset` giving the local UTC offset), then, unless a dry
/// run, drops the backups the plan drops (`delete::drop_points`: points a
/// reader holds are skipped and listed as busy). Under the VM's lock: no
/// backup of the VM runs meanwhile. Merges a crash left unfinished are
/// finished first.
pub fn prune_vm(repo: &Repo, req: &PruneRequest, offset: &dyn Fn(i64) -> i64) -> Result<PruneReport, EngineError> {
    crate::repo::check_vm_name(&req.vm)?;
    let vm_lock = lock_vm(repo, &req.vm)?;
    if repo.db().vm_id(&req.vm, false)?.is_none() {
        return Err(EngineError::NotFound(format!("no VM named {}", req.vm)));
    }
    let backups = repo.db().list_backups(Some(&req.vm))?;
    let candidates: Vec<Candidate> = backups
        .iter()
        .map(|b| Candidate {
            id: b.id.clone(),
            time: b.started_at.secs,
            subsec_nanos: b.started_at.nanos,
            outcome: Outcome::from(b.status),
        })
        .collect();
    let plan = retention::plan(&candidates, &req.keep, offset).map_err(|e| EngineError::BadRequest(e.to_string()))?;
    let to_drop: Vec<&crate::catalog::Backup> =
        backups.iter().zip(&plan).filter(|(_, d)| !d.keep).map(|(b, _)| b).collect();
    let done = if req.dry_run { Dropped::default() } else { drop_points(repo, &req.vm, &vm_lock, &to_drop)? };
    let rows: Vec<PrunedBackup> = backups
        .iter()
        .zip(&plan)
        .map(|(b, d)| PrunedBackup {
            id: b.id.clone(),
            started_at: b.started_at.to_string(),
            status: b.status.to_string(),
            action: match (d.keep, done.busy.contains(&b.id)) {
                (true, _) => "keep",
                (false, true) => "busy",
                (false, false) => "drop",
            },
            reason: d.reason.clone(),
        })
        .collect();
    let dropped = rows.iter().filter(|r| r.action == "drop").count();
    Ok(PruneReport {
        vm: req.vm.clone(),
        dry_run: req.dry_run,
        kept: rows.len() - dropped - done.busy.len(),
        dropped,
        backups: rows,
        busy: done.busy,
        bytes_reclaimed: done.bytes_reclaimed,
        merges: done.merges,
    })
}
