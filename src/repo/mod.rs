//! The repository on disk: `catalog.db`, `vms/<vm>/disk-<N>/<backup-id>.qcow2`
//! (+ `.digests`), `locks/<vm>.lock` and `locks/point-<backup-id>.lock`; its
//! locks, its recovery after a crash (merges included), and the one lookup of a restore point ("a completed backup → its
//! disks") that every front end and the engine use. See docs/repository.md.
//!
//! It sits below the engine and the front ends and above the catalog: it
//! knows files and catalog rows, never HTTP, jobs or trees.

mod lock;
mod merges;
mod point;
mod recover;

pub use merges::{MergeDone, MergeLocks, MergeRunError, allocated, file_chain};
pub use point::RestorePoint;

use crate::catalog::{BackupStatus, Catalog, CatalogError, SyncCatalog};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// Suffix of files being written; never part of a committed backup.
pub const PARTIAL: &str = ".partial";
/// Longest VM name (VM names are folder names).
pub const MAX_VM_NAME: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{0}")]
    BadName(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("no backup {0}")]
    NoBackup(String),
    /// A prune or delete is merging the point away.
    #[error("restore point {0} is being merged away by a prune or delete")]
    Merging(String),
    #[error("backup {id} is {status}, not completed")]
    NotCompleted { id: String, status: BackupStatus },
    #[error("backup {id} has no disk {disk} ({count} disks)")]
    NoDisk { id: String, disk: usize, count: usize },
    /// A committed image that cannot be opened.
    #[error("backup {id} disk {disk}: {message}")]
    Image { id: String, disk: i64, message: String },
    #[error(
        "no repository at {0} (no catalog.db there): check --repo or $BACKCHAIN_REPO; a backup creates a new repository"
    )]
    Missing(String),
    #[error(
        "{root}: vms/ holds {images} image files but the catalog ({root}/catalog.db) is missing or empty; \
         refusing to start a new catalog over them (their backups would be orphaned): put back catalog.db \
         from a copy, or move vms/ aside to start afresh"
    )]
    CatalogLost { root: String, images: usize },
}

impl RepoError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RepoError::Io { path: path.display().to_string(), source }
    }
}

/// The catalog's file in a repository.
pub const CATALOG_FILE: &str = "catalog.db";
/// Image files counted when looking for orphans, at most.
const MAX_ORPHAN_SCAN: usize = 100_000;

/// Refuses a repository whose catalog is gone (missing or truncated to
/// nothing) while `vms/` still holds images: opening it would start a new,
/// empty catalog, and the next backup a new full chain, orphaning them.
fn check_catalog_not_lost(root: &Path) -> Result<(), RepoError> {
    let empty = match fs::metadata(root.join(CATALOG_FILE)) {
        Ok(m) => m.len() == 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(RepoError::io(&root.join(CATALOG_FILE), e)),
    };
    if !empty {
        return Ok(());
    }
    let images = count_images(&root.join("vms"));
    if images > 0 {
        return Err(RepoError::CatalogLost { root: root.display().to_string(), images });
    }
    Ok(())
}

/// QCOW2 files under `vms/<vm>/disk-<N>/`.
fn count_images(vms: &Path) -> usize {
    let dirs = |p: &Path| fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).collect::<Vec<_>>();
    let mut n = 0;
    for vm in dirs(vms) {
        for disk in dirs(&vm) {
            n += dirs(&disk).iter().filter(|f| f.extension().is_some_and(|x| x == "qcow2")).count();
            if n >= MAX_ORPHAN_SCAN {
                return n;
            }
        }
    }
    n
}

/// An open repository: its folder and catalog. Its calls block; they must
/// run on a thread outside the async runtime (the CLI's main thread, or
/// `spawn_blocking` in the server).
pub struct Repo {
    root: PathBuf,
    /// The catalog, for async code (HTTP handlers). Blocking code uses
    /// [`Repo::db`].
    pub catalog: Catalog,
    db: SyncCatalog,
}

/// A held per-VM lock; released when dropped (or when the process dies).
pub struct VmLock {
    _file: File,
}

/// VM names become folder names: keep them to a safe, portable alphabet.
pub fn check_vm_name(name: &str) -> Result<(), RepoError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_VM_NAME
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(RepoError::BadName(format!(
            "invalid VM name {name:?}: use 1-{MAX_VM_NAME} letters, digits, '.', '_' or '-', not starting with '.'"
        )))
    }
}

impl Repo {
    /// Opens the repository at `root`, creating it on first use, and cleans
    /// up after jobs that died (see `recover`).
    pub fn open(root: &Path, rt: Handle) -> Result<Self, RepoError> {
        check_catalog_not_lost(root)?;
        for d in [root.to_path_buf(), root.join("vms"), root.join("locks")] {
            fs::create_dir_all(&d).map_err(|e| RepoError::io(&d, e))?;
        }
        let root = root.canonicalize().map_err(|e| RepoError::io(root, e))?;
        let catalog = rt.block_on(Catalog::open_sqlite(&root.join(CATALOG_FILE)))?;
        let db = SyncCatalog::new(catalog.clone(), rt);
        let repo = Self { root, catalog, db };
        repo.recover_all()?;
        Ok(repo)
    }

    /// Opens a repository that must exist already: for commands that only
    /// read, which must not create one at a mistyped path.
    pub fn open_existing(root: &Path, rt: Handle) -> Result<Self, RepoError> {
        if !root.join(CATALOG_FILE).is_file() {
            check_catalog_not_lost(root)?;
            return Err(RepoError::Missing(root.display().to_string()));
        }
        Self::open(root, rt)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The catalog, for blocking code: every call waits for its answer.
    pub fn db(&self) -> &SyncCatalog {
        &self.db
    }

    /// Runs a future on the repository's runtime. For catalog queries that
    /// [`SyncCatalog`] does not offer yet; prefer [`Repo::db`].
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.db.handle().block_on(f)
    }

    pub fn handle(&self) -> &Handle {
        self.db.handle()
    }

    /// Closes the catalog (waits for its connections to finish).
    pub fn close(&self) {
        self.db.close();
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
    pub fn try_lock(&self, vm: &str) -> Result<Option<VmLock>, RepoError> {
        let p = self.root.join("locks").join(format!("{vm}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| RepoError::io(&p, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(VmLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(RepoError::io(&p, e)),
        }
    }
}

/// fsync of a folder, so renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), RepoError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| RepoError::io(dir, e))
}
