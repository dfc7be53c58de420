//! The repository on disk: `catalog.db`, `vms/<vm>/disk-<N>/<backup-id>.qcow2`
//! (+ `.digests`), and `locks/<vm>.lock`. See docs/repository.md.

use super::EngineError;
use crate::catalog::Catalog;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// Suffix of files being written; never part of a committed backup.
pub const PARTIAL: &str = ".partial";

/// An open repository: its folder and catalog. Engine calls are blocking;
/// they must run on a thread outside the async runtime (the CLI's main
/// thread, or `spawn_blocking` in the server).
pub struct Repo {
    root: PathBuf,
    pub catalog: Catalog,
    rt: Handle,
}

/// A held per-VM lock; released when dropped (or when the process dies).
pub struct VmLock {
    _file: File,
}

/// VM names become folder names: keep them to a safe, portable alphabet.
pub fn check_vm_name(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::BadRequest(format!(
            "invalid VM name {name:?}: use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

impl Repo {
    /// Opens the repository at `root`, creating it on first use.
    pub fn open(root: &Path, rt: Handle) -> Result<Self, EngineError> {
        for d in [root.to_path_buf(), root.join("vms"), root.join("locks")] {
            fs::create_dir_all(&d).map_err(|e| EngineError::io(&d, e))?;
        }
        let root = root.canonicalize().map_err(|e| EngineError::io(root, e))?;
        let catalog = rt.block_on(Catalog::open_sqlite(&root.join("catalog.db")))?;
        let repo = Self { root, catalog, rt };
        repo.recover_all()?;
        Ok(repo)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn handle(&self) -> &Handle {
        &self.rt
    }

    pub fn vm_dir(&self, vm: &str) -> PathBuf {
        self.root.join("vms").join(vm)
    }

    /// An absolute path for a repository-relative one.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Takes VM `vm`'s lock without waiting; `None` when another process (or
    /// thread) holds it.
    pub fn try_lock(&self, vm: &str) -> Result<Option<VmLock>, EngineError> {
        let p = self.root.join("locks").join(format!("{vm}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| EngineError::io(&p, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(VmLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(EngineError::io(&p, e)),
        }
    }

    /// Cleans up after every VM whose lock is free: no job of theirs runs.
    fn recover_all(&self) -> Result<(), EngineError> {
        let vms = fs::read_dir(self.root.join("vms")).map_err(|e| EngineError::io(&self.root, e))?;
        for entry in vms.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_vm_name(&name).is_err() {
                continue;
            }
            if let Some(lock) = self.try_lock(&name)? {
                self.recover(&name, &lock)?;
            }
        }
        Ok(())
    }

    /// Under VM `vm`'s lock: marks its unfinished jobs interrupted and removes
    /// what they left: `.partial` files, and images renamed into place whose
    /// job never committed.
    pub fn recover(&self, vm: &str, _lock: &VmLock) -> Result<(), EngineError> {
        let Some(vm_id) = self.block_on(self.catalog.vm_id(vm, false))? else {
            return remove_partials(&self.vm_dir(vm), &[]);
        };
        self.block_on(self.catalog.mark_interrupted(vm_id))?;
        let dead: Vec<String> = self
            .block_on(self.catalog.list_backups(Some(vm)))?
            .into_iter()
            .filter(|b| b.status == "failed" || b.status == "interrupted")
            .map(|b| b.id)
            .collect();
        remove_partials(&self.vm_dir(vm), &dead)
    }
}

/// Removes `*.partial` files, and files named after uncommitted backups, in
/// the disk folders of one VM; then makes the removals durable.
fn remove_partials(vm_dir: &Path, dead_ids: &[String]) -> Result<(), EngineError> {
    let Ok(disks) = fs::read_dir(vm_dir) else { return Ok(()) };
    for disk in disks.flatten() {
        let dir = disk.path();
        let Ok(files) = fs::read_dir(&dir) else { continue };
        let mut removed = false;
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or("");
            if name.ends_with(PARTIAL) || dead_ids.iter().any(|id| id == stem) {
                fs::remove_file(f.path()).map_err(|e| EngineError::io(&f.path(), e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&dir)?;
        }
    }
    Ok(())
}

/// fsync of a folder, so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| EngineError::io(dir, e))
}
