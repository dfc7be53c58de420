//! Deleting a restore point: its catalog rows, then its files.

use super::EngineError;
use crate::repo::Repo;
use crate::util::flock::PointLock;

/// Restore point `id`'s exclusive lock, to hold while it is dropped; fails
/// while an export names the point (the catalog) or a reader holds it (a
/// foreground `nbd-export`, a restore session). Deletion and retention both
/// ask this before changing anything.
pub fn lock_unused(repo: &Repo, id: &str) -> Result<PointLock, EngineError> {
    repo.db().check_not_exported(id)?;
    let path = repo.point_lock_file(id);
    match PointLock::try_exclusive(&path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(EngineError::Busy(format!(
            "restore point {id} is in use by a reader (an NBD export, a restore session or a mount); close it first"
        ))),
        Err(e) => Err(EngineError::io(&path, e)),
    }
}

/// Deletes backup `id`, which no later backup may depend on. Returns the
/// repository-relative paths of the files removed (images and digest maps;
/// files already gone are skipped).
pub fn delete_backup(repo: &Repo, id: &str) -> Result<Vec<String>, EngineError> {
    let _lock = lock_unused(repo, id)?;
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
