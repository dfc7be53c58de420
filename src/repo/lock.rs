//! Restore-point locks in the repository (`locks/point-<backup-id>.lock`,
//! `util::flock::PointLock`): every reader of a point — a restore session, a
//! FUSE mount, an NBD export, `export`, `verify`, in this process or another
//! — holds the point's lock shared for as long as it reads; a merge that
//! drops the point holds it exclusively. The order makes the two meet
//! safely: a merge takes the lock before the point leaves the catalog, and a
//! reader checks the catalog again once it holds the lock.

use super::{Repo, RepoError};
use crate::util::flock::PointLock;
use std::path::PathBuf;

impl Repo {
    /// The lock file of restore point `id`.
    pub fn point_lock_file(&self, id: &str) -> Result<PathBuf, RepoError> {
        let ok = !id.is_empty()
            && !id.starts_with('.')
            && id.len() <= 128
            && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(RepoError::NoBackup(id.to_string()));
        }
        Ok(self.root.join("locks").join(format!("point-{id}.lock")))
    }

    /// A reader's lock on restore point `id`, without waiting: fails with
    /// [`RepoError::Merging`] while a prune or delete is dropping the point.
    /// The caller checks that the point still exists once it holds it
    /// (`RestorePoint::new` does).
    pub fn read_lock(&self, id: &str) -> Result<PointLock, RepoError> {
        let path = self.point_lock_file(id)?;
        match PointLock::try_shared(&path) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => Err(RepoError::Merging(id.to_string())),
            Err(e) => Err(RepoError::io(&path, e)),
        }
    }

    /// A merge's lock on restore point `id`, without waiting; `None` while a
    /// reader holds the point.
    pub fn merge_lock(&self, id: &str) -> Result<Option<PointLock>, RepoError> {
        let path = self.point_lock_file(id)?;
        PointLock::try_exclusive(&path).map_err(|e| RepoError::io(&path, e))
    }

    /// Removes the lock file of a point that is gone (its merges are done),
    /// while its merge lock is still held: a reader that opens the old file
    /// afterwards finds the point missing from the catalog.
    pub(super) fn remove_point_lock(&self, id: &str) -> Result<(), RepoError> {
        let path = self.point_lock_file(id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RepoError::io(&path, e)),
            _ => Ok(()),
        }
    }
}
