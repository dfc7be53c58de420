//! Recovery: what a job that died leaves behind is found and removed under
//! the VM's lock, at open and before every backup.

use super::{PARTIAL, Repo, RepoError, VmLock, check_vm_name, sync_dir};
use crate::catalog::BackupStatus;
use std::fs;
use std::path::Path;

impl Repo {
    /// Cleans up after every VM whose lock is free: no job of theirs runs.
    pub(super) fn recover_all(&self) -> Result<(), RepoError> {
        let vms = fs::read_dir(self.root.join("vms")).map_err(|e| RepoError::io(&self.root, e))?;
        for entry in vms.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_vm_name(&name).is_err() {
                continue;
            }
            if let Some(lock) = self.try_lock(&name)? {
                self.recover(&name, &lock)?;
                self.finish_merges(&name, &lock)?;
            }
        }
        Ok(())
    }

    /// Under VM `vm`'s lock: marks its unfinished jobs interrupted and removes
    /// what they left: `.partial` files, and images renamed into place whose
    /// job never committed.
    pub fn recover(&self, vm: &str, _lock: &VmLock) -> Result<(), RepoError> {
        let Some(vm_id) = self.db().vm_id(vm, false)? else {
            return remove_partials(&self.vm_dir(vm), &[]);
        };
        self.db().mark_interrupted(vm_id)?;
        let dead: Vec<String> = self
            .db()
            .list_backups(Some(vm))?
            .into_iter()
            .filter(|b| matches!(b.status, BackupStatus::Failed | BackupStatus::Interrupted | BackupStatus::Aborted))
            .map(|b| b.id)
            .collect();
        remove_partials(&self.vm_dir(vm), &dead)
    }
}

impl Repo {
    /// Finishes the merges a crash left in VM `vm` (under its lock). One that
    /// cannot finish now (a reader holds its point for the instant it takes
    /// to find the point gone, or an image is damaged) must not stop the
    /// repository from opening: it is reported and retried at the next open.
    fn finish_merges(&self, vm: &str, lock: &VmLock) -> Result<(), RepoError> {
        match self.run_merges(vm, lock, &mut Default::default()) {
            Ok(_) => Ok(()),
            Err(super::MergeRunError::Repo(e)) => Err(e),
            Err(e) => {
                eprintln!("backchain: warning: {e}; it is retried at the next start");
                Ok(())
            }
        }
    }
}

/// Removes `*.partial` files, and files named after uncommitted backups, in
/// the disk folders of one VM; then makes the removals durable.
fn remove_partials(vm_dir: &Path, dead_ids: &[String]) -> Result<(), RepoError> {
    let Ok(disks) = fs::read_dir(vm_dir) else { return Ok(()) };
    for disk in disks.flatten() {
        let dir = disk.path();
        let Ok(files) = fs::read_dir(&dir) else { continue };
        let mut removed = false;
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or("");
            if name.ends_with(PARTIAL) || dead_ids.iter().any(|id| id == stem) {
                fs::remove_file(f.path()).map_err(|e| RepoError::io(&f.path(), e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&dir)?;
        }
    }
    Ok(())
}
