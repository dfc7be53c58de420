//! The files under `vms/<vm>/disk-<N>/`, as the repository names them: what
//! the lost-catalog check counts, what `verify` compares with the catalog
//! (orphans) and what `repair --rebuild-catalog` recovers backups from.

use super::{MAX_VM_NAME, PARTIAL, Repo, RepoError, check_vm_name, sync_dir};
use crate::catalog::BackupStatus;
use serde::Serialize;
use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// Files looked at in one scan, at most: a repository holding more is
/// reported by its first ones (a scan must stay bounded in time and memory).
pub const MAX_SCAN: usize = 100_000;
/// Disk folders are `disk-<N>` with N below this (a VM has a few disks).
const MAX_DISK_INDEX: u32 = 4096;

/// What a file in a disk folder is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// `<backup-id>.qcow2`
    Image,
    /// `<backup-id>.digests`
    Digests,
    /// `*.partial`: being written, or left by a job that died.
    Partial,
    /// Anything else.
    Other,
}

/// One file in a disk folder of a VM.
#[derive(Debug, Clone, Serialize)]
pub struct RepoFile {
    pub vm: String,
    pub disk_index: u32,
    /// The file name up to its first '.': the backup id for images and maps.
    pub stem: String,
    /// Relative to the repository, as the catalog stores paths.
    pub rel: String,
    pub kind: FileKind,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The files of every disk folder of every VM under `root/vms`, sorted by
/// VM, disk and name; at most [`MAX_SCAN`]. Folders whose names the
/// repository never writes are not entered.
pub fn scan(root: &Path) -> Vec<RepoFile> {
    let mut out = Vec::new();
    for vm in names(&root.join("vms")) {
        if vm.len() > MAX_VM_NAME || check_vm_name(&vm).is_err() {
            continue;
        }
        for disk in names(&root.join("vms").join(&vm)) {
            let Some(n) = disk.strip_prefix("disk-").and_then(|n| n.parse::<u32>().ok()) else { continue };
            if n >= MAX_DISK_INDEX || disk != format!("disk-{n}") {
                continue;
            }
            for name in names(&root.join("vms").join(&vm).join(&disk)) {
                let kind = if name.ends_with(PARTIAL) {
                    FileKind::Partial
                } else if name.ends_with(".qcow2") {
                    FileKind::Image
                } else if name.ends_with(".digests") {
                    FileKind::Digests
                } else {
                    FileKind::Other
                };
                let stem = name.split('.').next().unwrap_or_default().to_string();
                out.push(RepoFile {
                    vm: vm.clone(),
                    disk_index: n,
                    stem,
                    rel: format!("vms/{vm}/{disk}/{name}"),
                    kind,
                });
                if out.len() >= MAX_SCAN {
                    return out;
                }
            }
        }
    }
    out
}

/// A file that no catalog row names.
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    #[serde(flatten)]
    pub file: RepoFile,
    /// Why it is there, as far as can be told.
    pub reason: String,
}

impl Repo {
    /// Files in disk folders that no catalog row names: images and maps of
    /// backups the catalog does not know, leftover `.partial` files, and
    /// anything else. VMs with a job running (their lock is held) are
    /// skipped, as are the files of backups still owned by a job.
    pub fn orphans(&self) -> Result<Vec<Orphan>, RepoError> {
        let backups = self.db().list_backups(None)?;
        let named: HashSet<&str> = backups
            .iter()
            .flat_map(|b| &b.disks)
            .flat_map(|d| [d.image_path.as_str(), d.digest_path.as_str()])
            .collect();
        let active: HashSet<&str> = backups.iter().filter(|b| b.status.is_active()).map(|b| b.id.as_str()).collect();
        let mut busy: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for file in scan(self.root()) {
            if named.contains(file.rel.as_str()) || active.contains(file.stem.as_str()) || busy.contains(&file.vm) {
                continue;
            }
            if self.try_lock(&file.vm)?.is_none() {
                busy.insert(file.vm.clone());
                continue;
            }
            let status = backups.iter().find(|b| b.id == file.stem).map(|b| b.status);
            let reason = match (file.kind, status) {
                (FileKind::Partial, _) => "a leftover of a write that never finished".to_string(),
                (FileKind::Other, _) => "not a file the repository writes".to_string(),
                (_, None) => format!("no catalog row names it (no backup {} in the catalog)", file.stem),
                (_, Some(BackupStatus::Completed)) => "its backup's rows do not name this file".to_string(),
                (_, Some(s)) => format!("its backup {} is {s}", file.stem),
            };
            out.push(Orphan { file, reason });
        }
        Ok(out)
    }

    /// Removes `orphans` (as [`Repo::orphans`] found them), each under its
    /// VM's lock, and makes the removals durable. Returns the files removed.
    pub fn remove_orphans(&self, orphans: &[Orphan]) -> Result<Vec<String>, RepoError> {
        let mut removed = Vec::new();
        let mut dirs = HashSet::new();
        for o in orphans {
            let Some(_lock) = self.try_lock(&o.file.vm)? else { continue };
            let path = self.path(&o.file.rel);
            match fs::remove_file(&path) {
                Ok(()) => removed.push(o.file.rel.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RepoError::io(&path, e)),
            }
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        Ok(removed)
    }
}
