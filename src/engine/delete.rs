//! Deleting a restore point: its catalog rows, then its files.

use super::EngineError;
use crate::repo::Repo;

/// Deletes backup `id`, which no later backup may depend on. Returns the
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
