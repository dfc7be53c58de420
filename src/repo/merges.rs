//! The merges the catalog records (`merges` rows): each drops one image of
//! one disk of a backup that already left the catalog. The row is written in
//! the same transaction that removes the backup; its journal (the qcow2
//! merge's steps and progress) is planned from the image files when the
//! merge starts and saved to the row after every step; the row goes, with
//! the changed images' new sizes, when the merge is done. Any open of the
//! repository runs the merges it finds (`recover`), so a merge a crash
//! interrupted at any instant is finished before anything else reads the
//! VM's chains. docs/merge.md has the why.

use super::{Repo, RepoError, VmLock, sync_dir};
use crate::catalog::{MergeIntent, SyncCatalog};
use crate::qcow2::merge::{self, Journal, JournalStore, Merge, MergeError, Stats, Step};
use crate::util::flock::PointLock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A merge's journal in its catalog row.
struct CatalogJournal<'a> {
    db: &'a SyncCatalog,
    id: i64,
}

impl JournalStore for CatalogJournal<'_> {
    fn save(&self, journal: &Journal) -> Result<(), MergeError> {
        self.db
            .save_merge_journal(self.id, &journal.to_json())
            .map_err(|e| MergeError::Journal { path: PathBuf::from("catalog"), what: e.to_string() })
    }
    /// The row goes with the stats update, in `finish_merge`.
    fn finish(&self) -> Result<(), MergeError> {
        Ok(())
    }
}

/// What one finished merge did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MergeDone {
    pub backup_id: String,
    pub disk_index: i64,
    #[serde(flatten)]
    pub stats: Stats,
}

/// The dropped points' merge locks, taken before they left the catalog
/// (prune, delete) or when a recovery finds their merges.
pub type MergeLocks = HashMap<String, PointLock>;

/// Why the merges of a VM stopped.
#[derive(Debug, thiserror::Error)]
pub enum MergeRunError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("merging away backup {backup} disk {disk}: {source}")]
    Merge {
        backup: String,
        disk: i64,
        #[source]
        source: Box<MergeError>,
    },
}

impl From<crate::catalog::CatalogError> for MergeRunError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        MergeRunError::Repo(e.into())
    }
}

impl Repo {
    /// Runs every merge due in VM `vm`, oldest first, under its lock.
    /// `locks` holds the dropped points' merge locks already taken; the
    /// others are taken here (a reader holding one stops the run with
    /// `MergeError::Busy`). A point's lock file goes with its last merge.
    pub fn run_merges(
        &self,
        vm: &str,
        _vm_lock: &VmLock,
        locks: &mut MergeLocks,
    ) -> Result<Vec<MergeDone>, MergeRunError> {
        let mut done = Vec::new();
        let intents = self.db().merges(vm)?;
        for (i, m) in intents.iter().enumerate() {
            let wrap = |source| MergeRunError::Merge {
                backup: m.backup_id.clone(),
                disk: m.disk_index,
                source: Box::new(source),
            };
            if !locks.contains_key(&m.backup_id) {
                let lock = self.merge_lock(&m.backup_id)?.ok_or_else(|| wrap(MergeError::Busy(m.backup_id.clone())))?;
                locks.insert(m.backup_id.clone(), lock);
            }
            let stats = self.run_merge(vm, m, &locks[&m.backup_id]).map_err(|e| match e {
                RunOne::Merge(e) => wrap(e),
                RunOne::Repo(e) => MergeRunError::Repo(e),
            })?;
            done.push(MergeDone { backup_id: m.backup_id.clone(), disk_index: m.disk_index, stats });
            if !intents[i + 1..].iter().any(|n| n.backup_id == m.backup_id) {
                self.remove_point_lock(&m.backup_id)?;
                locks.remove(&m.backup_id);
            }
        }
        Ok(done)
    }

    /// Runs (or finishes) one recorded merge.
    fn run_merge(&self, vm: &str, m: &MergeIntent, lock: &PointLock) -> Result<Stats, RunOne> {
        let dir = self.path(&m.dir);
        let store = Box::new(CatalogJournal { db: self.db(), id: m.id });
        let merge = match &m.journal {
            Some(text) => Merge::resume_with(&dir, Journal::parse(text.as_bytes())?, lock, store),
            None => Merge::begin_with(&dir, self.plan_merge(vm, m)?, lock, store)?,
        };
        let kept = merge.journal().steps.iter().find_map(|s| match s {
            Step::Replace { to, .. } => Some(to.clone()),
            Step::Absorb { into, .. } => Some(into.clone()),
            _ => None,
        });
        let stats = merge.run()?;
        let digests = dir.join(&m.digests);
        match std::fs::remove_file(&digests) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(RepoError::io(&digests, e).into()),
            _ => sync_dir(&dir)?,
        }
        let mut restat = Vec::new();
        if let Some(kept) = kept {
            let path = dir.join(&kept);
            restat.push((format!("{}/{kept}", m.dir), allocated(&path).map_err(|e| RepoError::io(&path, e))?));
        }
        self.db().finish_merge(m.id, &restat).map_err(RepoError::from)?;
        Ok(stats)
    }

    /// The steps of merge `m`, from the image files as they are now: the
    /// dropped image's place in the file chain of one of its disk's chains
    /// (each read from the catalog's latest image down the backing names).
    /// An image in no such chain is nobody's backing file: it is removed.
    fn plan_merge(&self, vm: &str, m: &MergeIntent) -> Result<Journal, RunOne> {
        let dir = self.path(&m.dir);
        for c in self.db().chains(vm).map_err(RepoError::from)? {
            let Some(top) = c.images.last() else { continue };
            let top = self.path(&top.image_path);
            if top.parent() != Some(dir.as_path()) {
                continue;
            }
            let files = file_chain(&top)?;
            if let Some(i) = files.iter().position(|f| *f == m.image) {
                return Ok(merge::plan(&dir, &files, i)?);
            }
        }
        let steps = if dir.join(&m.image).exists() { vec![Step::Remove { image: m.image.clone() }] } else { vec![] };
        Ok(Journal::new(&m.image, steps))
    }
}

/// One merge's failure: in the merge itself or around it.
enum RunOne {
    Merge(MergeError),
    Repo(RepoError),
}

impl From<MergeError> for RunOne {
    fn from(e: MergeError) -> Self {
        RunOne::Merge(e)
    }
}

impl From<RepoError> for RunOne {
    fn from(e: RepoError) -> Self {
        RunOne::Repo(e)
    }
}

impl From<crate::qcow2::Error> for RunOne {
    fn from(e: crate::qcow2::Error) -> Self {
        RunOne::Merge(e.into())
    }
}

/// Bytes a file takes on disk (its allocated blocks): what a merge's punched
/// holes give back shows here, not in the apparent length.
pub fn allocated(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

/// The file names of `top`'s chain as its images name their backing files,
/// oldest first.
pub fn file_chain(top: &Path) -> Result<Vec<String>, MergeError> {
    let dir = top.parent().unwrap_or(Path::new("."));
    let mut names = Vec::new();
    let mut next = top.file_name().map(|n| n.to_string_lossy().into_owned());
    while let Some(name) = next.take() {
        if names.len() > crate::qcow2::consts::MAX_CHAIN_DEPTH || names.contains(&name) {
            return Err(MergeError::Unsupported(format!("the chain of {} loops or is too deep", top.display())));
        }
        let path = dir.join(&name);
        let file = crate::block::RawFile::open(&path).map_err(|e| MergeError::io(&path, e))?;
        next = crate::qcow2::Header::read(&file)?.backing_file;
        names.push(name);
    }
    names.reverse();
    Ok(names)
}
