//! Restore points: a completed backup and the disks asked for. This is the
//! one place that decides whether a backup can be restored from; the CLI's
//! TARGET, the restore tree, HTTP sessions and `verify` all ask it.

use super::{Repo, RepoError};
use crate::block::{ReadAt, Slice};
use crate::catalog::{Backup, BackupDisk, BackupStatus, CatalogError};
use crate::qcow2::{Chain, OpenOptions};
use crate::util::flock::PointLock;
use crate::util::time::UtcTime;
use std::path::PathBuf;
use std::sync::Arc;

/// A completed backup, with the disks asked for (all, or one), and the
/// point's reader lock (`lock.rs`): no merge drops the point while this
/// value, or a guard taken from it, lives.
#[derive(Debug, Clone)]
pub struct RestorePoint {
    pub backup: Backup,
    /// The disks asked for, by disk index.
    pub disks: Vec<BackupDisk>,
    root: PathBuf,
    guard: Arc<PointLock>,
}

impl Repo {
    /// Backup `id` as a restore point: all its disks, or disk `disk` alone.
    /// Fails when there is no such backup, it is not completed, or it has
    /// no such disk.
    pub fn restore_point(&self, id: &str, disk: Option<usize>) -> Result<RestorePoint, RepoError> {
        let backup = self.db().backup(id).map_err(|e| match e {
            CatalogError::NotFound(_) => RepoError::NoBackup(id.to_string()),
            other => other.into(),
        })?;
        RestorePoint::new(self, backup, disk)
    }
}

impl RestorePoint {
    /// `backup` (a catalog row already read) as a restore point, under its
    /// reader lock. Fails with `Merging` while a merge drops it, and with
    /// `NoBackup` when a merge dropped it since the row was read.
    pub fn new(repo: &Repo, backup: Backup, disk: Option<usize>) -> Result<Self, RepoError> {
        if backup.status != BackupStatus::Completed {
            return Err(RepoError::NotCompleted { id: backup.id, status: backup.status });
        }
        let guard = Arc::new(repo.read_lock(&backup.id)?);
        match repo.db().backup(&backup.id) {
            Ok(_) => {}
            Err(CatalogError::NotFound(_)) => return Err(RepoError::NoBackup(backup.id)),
            Err(e) => return Err(e.into()),
        }
        let disks: Vec<BackupDisk> =
            backup.disks.iter().filter(|d| disk.is_none_or(|n| d.disk_index == n as i64)).cloned().collect();
        if let Some(n) = disk
            && disks.is_empty()
        {
            return Err(RepoError::NoDisk { id: backup.id, disk: n, count: backup.disks.len() });
        }
        Ok(Self { backup, disks, root: repo.root().to_path_buf(), guard })
    }

    /// The point's reader lock, for whoever keeps reading the point after
    /// this value is gone (a tree built from it, a session, an export).
    pub fn guard(&self) -> Arc<PointLock> {
        self.guard.clone()
    }

    pub fn id(&self) -> &str {
        &self.backup.id
    }

    /// When the backup started: the time its folders show.
    pub fn time(&self) -> UtcTime {
        self.backup.started_at
    }

    /// The absolute path of a disk's image.
    pub fn image_path(&self, d: &BackupDisk) -> PathBuf {
        self.root.join(&d.image_path)
    }

    /// The disk's size as it was backed up (QCOW2 rounds sizes up to whole
    /// sectors).
    pub fn disk_size(d: &BackupDisk) -> u64 {
        d.virtual_size as u64
    }

    /// Opens a disk's chain, confined to the repository, cut to the disk's
    /// own size.
    pub fn open_disk(&self, d: &BackupDisk) -> Result<Arc<dyn ReadAt>, RepoError> {
        let err = |message: String| RepoError::Image { id: self.backup.id.clone(), disk: d.disk_index, message };
        let opts = OpenOptions { confine_to: Some(self.root.clone()), ..Default::default() };
        let chain = Chain::open(&self.image_path(d), &opts).map_err(|e| err(e.to_string()))?;
        let slice = Slice::new(Arc::new(chain), 0, Self::disk_size(d)).map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(slice))
    }
}
