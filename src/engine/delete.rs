//! Dropping restore points: a completed one by merging its images into
//! their neighbours (any point of a chain: the oldest, a middle one or the
//! newest), an unfinished one by deleting its rows and files. Shared by
//! `prune` and `delete` (CLI `backchain delete ID`, HTTP `DELETE
//! /backups/{id}`).
//!
//! The order is what makes it safe against readers and crashes: each
//! completed point's merge lock is taken first (a point a reader holds is
//! not dropped), then the point leaves the catalog in the same transaction
//! that records its merges, and only then do files change
//! (`Repo::run_merges`, resumable from any instant at the next open).

use super::EngineError;
use crate::catalog::{Backup, BackupStatus};
use crate::repo::{MergeDone, MergeLocks, MergeRunError, Repo, VmLock, allocated};
use std::path::Path;

/// Deletes backup `id`, which no later backup may depend on (a failed,
/// interrupted or aborted one: nothing was committed on it). Returns the
/// repository-relative paths of the files removed (images and digest maps;
/// files already gone are skipped).
pub fn delete_backup(repo: &Repo, id: &str) -> Result<Vec<String>, EngineError> {
    let disks = repo.db().delete_backup(id)?;
    let mut removed = Vec::new();
    for d in &disks {
        for rel in [&d.image_path, &d.digest_path] {
            let path = repo.path(rel);
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(rel.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io(&path, e)),
            }
        }
    }
    Ok(removed)
}

/// What dropping points did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Dropped {
    /// The backups dropped, oldest first.
    pub dropped: Vec<String>,
    /// Completed points not dropped because a reader (a restore session,
    /// mount or export) holds them.
    pub busy: Vec<String>,
    /// Each image merge run (the dropped point's images, and any a crash
    /// had left).
    pub merges: Vec<MergeDone>,
    /// Bytes the VM's folder takes less on disk (allocated blocks).
    pub bytes_reclaimed: u64,
}

/// Drops `backups` (of VM `vm`, whose lock the caller holds; none running),
/// oldest first. Busy points are skipped and listed; the rest leave the
/// catalog and their images are merged away.
pub fn drop_points(repo: &Repo, vm: &str, vm_lock: &VmLock, backups: &[&Backup]) -> Result<Dropped, EngineError> {
    let before = usage(&repo.vm_dir(vm));
    // Merges a crash interrupted belong to the past: they come first.
    let merges = repo.run_merges(vm, vm_lock, &mut MergeLocks::new()).map_err(merge_err)?;
    let mut out = Dropped { merges, ..Default::default() };
    let mut order: Vec<&Backup> = backups.to_vec();
    order.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    let mut locks = MergeLocks::new();
    for b in order {
        if b.status.is_active() {
            return Err(EngineError::Busy(format!("backup {} is {}: it cannot be dropped", b.id, b.status)));
        }
        if b.status != BackupStatus::Completed {
            // Never committed: no later backup depends on it.
            delete_backup(repo, &b.id)?;
        } else {
            // An export names it (the daemon may be down): kept, as busy.
            if repo.db().check_not_exported(&b.id).is_err() {
                out.busy.push(b.id.clone());
                continue;
            }
            let Some(lock) = repo.merge_lock(&b.id)? else {
                out.busy.push(b.id.clone());
                continue;
            };
            locks.insert(b.id.clone(), lock);
            repo.db().drop_merged_backup(&b.id)?;
        }
        out.dropped.push(b.id.clone());
    }
    out.merges.extend(repo.run_merges(vm, vm_lock, &mut locks).map_err(merge_err)?);
    out.bytes_reclaimed = before.saturating_sub(usage(&repo.vm_dir(vm)));
    Ok(out)
}

/// The VM's lock for a prune or delete, or a clear "busy".
pub fn lock_vm(repo: &Repo, vm: &str) -> Result<VmLock, EngineError> {
    repo.try_lock(vm)?.ok_or_else(|| {
        EngineError::Busy(format!("a backup, prune or delete of VM {vm} is running; try again when it is done"))
    })
}

/// Drops one restore point, wherever it is in its chains (`backchain delete
/// ID`, `DELETE /backups/{id}`): 409-style `Busy` when a reader holds it or
/// a job of its VM runs, and nothing changes then.
pub fn delete_point(repo: &Repo, id: &str) -> Result<Dropped, EngineError> {
    let b = repo.db().backup(id).map_err(|e| match e {
        crate::catalog::CatalogError::NotFound(_) => EngineError::NotFound(format!("no backup {id}")),
        other => other.into(),
    })?;
    if b.status.is_active() {
        return Err(EngineError::Busy(format!("backup {id} is still running")));
    }
    repo.db().check_not_exported(id)?;
    let vm_lock = lock_vm(repo, &b.vm)?;
    let done = drop_points(repo, &b.vm, &vm_lock, &[&b])?;
    if !done.busy.is_empty() {
        return Err(EngineError::Busy(format!(
            "restore point {id} is in use by a reader (a restore session, mount or export); \
             close it or try again later"
        )));
    }
    Ok(done)
}

pub(super) fn merge_err(e: MergeRunError) -> EngineError {
    match e {
        MergeRunError::Repo(r) => r.into(),
        MergeRunError::Merge { ref source, .. } if matches!(**source, crate::qcow2::merge::MergeError::Busy(_)) => {
            EngineError::Busy(e.to_string())
        }
        other => EngineError::Repository(other.to_string()),
    }
}

/// Bytes allocated under a folder.
fn usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => usage(&e.path()),
            _ => allocated(&e.path()).unwrap_or(0),
        })
        .sum()
}
