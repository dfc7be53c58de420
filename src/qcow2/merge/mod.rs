//! Dropping a restore point from a QCOW2 chain without changing a byte any
//! kept point shows, before, during or after, with a cost proportional to
//! the clusters merged. docs/merge.md has the algorithm and why every step
//! is crash-safe.
//!
//! A merge is a plan of idempotent steps (`journal.rs`), recorded before any
//! file is touched and after every step; `Merge::resume` finishes a merge a
//! crash interrupted, from whatever instant. The caller holds the dropped
//! point's exclusive lock (`crate::util::flock`) for the whole run: readers
//! of a point hold its shared lock, so a merge never pulls data out from
//! under one.
//!
//! - the oldest point: its child is folded into it (`Step::Fold`), then the
//!   folded image takes the child's name (`Step::Replace`);
//! - a middle point: its clusters are copied into its child where the child
//!   has none (`Step::Absorb`), the child is pointed at the dropped point's
//!   parent (`Step::Rebase`), the dropped image is deleted (`Step::Remove`);
//! - the newest point: its image is deleted.

mod files;
mod journal;
mod target;
mod transfer;

pub use journal::{FileJournal, Journal, JournalStore, Step};
pub use transfer::Moved;

use crate::util::flock::PointLock;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    #[error(transparent)]
    Qcow2(#[from] crate::qcow2::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot merge: {0}")]
    Unsupported(String),
    #[error(
        "restore point {0} is in use by a reader (a restore session, mount or export); close it or try again later"
    )]
    Busy(String),
    #[error("merge journal {path}: {what}")]
    Journal { path: PathBuf, what: String },
}

impl MergeError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        MergeError::Io { path: path.to_path_buf(), source }
    }
}

/// What a finished merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub moved: Moved,
    pub files_removed: u64,
    pub steps_run: usize,
}

/// Takes the exclusive lock of the point being dropped, or says who holds it.
pub fn lock_dropped(lock_file: &Path, point: &str) -> Result<PointLock, MergeError> {
    match PointLock::try_exclusive(lock_file) {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(MergeError::Busy(point.to_string())),
        Err(e) => Err(MergeError::io(lock_file, e)),
    }
}

/// The steps that drop `chain[drop]`. `chain` is one disk's images, oldest
/// first, as file names in `dir`; each names the previous one as its
/// backing file, which is checked here.
pub fn plan(dir: &Path, chain: &[String], drop: usize) -> Result<Journal, MergeError> {
    for name in chain {
        journal::check_name(name)?;
    }
    let Some(dropped) = chain.get(drop) else {
        return Err(MergeError::Unsupported(format!("no image {drop} in a chain of {}", chain.len())));
    };
    for pair in chain[drop.saturating_sub(1)..chain.len().min(drop + 2)].windows(2) {
        let path = dir.join(&pair[1]);
        let file = crate::block::RawFile::open(&path).map_err(|e| MergeError::io(&path, e))?;
        let h = crate::qcow2::Header::read(&file)?;
        if h.backing_file.as_deref() != Some(pair[0].as_str()) {
            return Err(MergeError::Unsupported(format!(
                "{} names {:?} as its backing file, not {:?}",
                path.display(),
                h.backing_file,
                pair[0]
            )));
        }
    }
    let parent = drop.checked_sub(1).map(|p| chain[p].clone());
    let steps = match (parent, chain.get(drop + 1)) {
        (_, None) => vec![Step::Remove { image: dropped.clone() }],
        (None, Some(child)) => vec![
            Step::Fold { from: child.clone(), into: dropped.clone() },
            Step::Replace { from: dropped.clone(), to: child.clone() },
        ],
        (Some(parent), Some(child)) => vec![
            Step::Absorb { from: dropped.clone(), into: child.clone() },
            Step::Rebase { image: child.clone(), backing: parent },
            Step::Remove { image: dropped.clone() },
        ],
    };
    Ok(Journal::new(dropped, steps))
}

/// The journal file of a merge that drops `dropped`, next to the images
/// until the catalog records merges.
pub fn journal_path(dir: &Path, dropped: &str) -> PathBuf {
    dir.join(format!("{dropped}.merge.json"))
}

/// A recorded merge, ready to run.
pub struct Merge<'l> {
    dir: PathBuf,
    store: Box<dyn JournalStore + 'l>,
    journal: Journal,
    _guard: &'l PointLock,
}

impl<'l> Merge<'l> {
    /// Records the intent to drop `chain[drop]` (before any file changes),
    /// in a journal file next to the images.
    pub fn begin(dir: &Path, chain: &[String], drop: usize, guard: &'l PointLock) -> Result<Self, MergeError> {
        let journal = plan(dir, chain, drop)?;
        let store = FileJournal(journal_path(dir, &journal.dropped));
        Self::begin_with(dir, journal, guard, Box::new(store))
    }

    /// Records the planned `journal` in `store` (before any file changes).
    pub fn begin_with(
        dir: &Path,
        journal: Journal,
        guard: &'l PointLock,
        store: Box<dyn JournalStore + 'l>,
    ) -> Result<Self, MergeError> {
        store.save(&journal)?;
        Ok(Self { dir: dir.to_path_buf(), store, journal, _guard: guard })
    }

    /// The merge a crash interrupted, from its journal file, if there is one.
    pub fn resume(dir: &Path, journal_path: &Path, guard: &'l PointLock) -> Result<Option<Self>, MergeError> {
        let Some(journal) = Journal::load(journal_path)? else { return Ok(None) };
        Ok(Some(Self::resume_with(dir, journal, guard, Box::new(FileJournal(journal_path.to_path_buf())))))
    }

    /// The merge a crash interrupted, from a journal already loaded (and
    /// checked: `Journal::parse`) from `store`.
    pub fn resume_with(dir: &Path, journal: Journal, guard: &'l PointLock, store: Box<dyn JournalStore + 'l>) -> Self {
        Self { dir: dir.to_path_buf(), store, journal, _guard: guard }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Runs the remaining steps, recording each, then removes the journal.
    pub fn run(mut self) -> Result<Stats, MergeError> {
        let mut stats = Stats::default();
        while self.step(&mut stats)? {}
        self.store.finish()?;
        Ok(stats)
    }

    /// Runs and records the next step; `false` when none is left.
    pub fn step(&mut self, stats: &mut Stats) -> Result<bool, MergeError> {
        let Some(step) = self.journal.steps.get(self.journal.done).cloned() else { return Ok(false) };
        self.exec(&step, stats)?;
        self.journal.done += 1;
        stats.steps_run += 1;
        self.store.save(&self.journal)?;
        Ok(true)
    }

    fn exec(&self, step: &Step, stats: &mut Stats) -> Result<(), MergeError> {
        let d = &self.dir;
        match step {
            Step::Fold { from, into } => {
                stats.moved = transfer::transfer(&d.join(from), &d.join(into), transfer::Mode::Fold)?;
            }
            Step::Absorb { from, into } => {
                stats.moved = transfer::transfer(&d.join(from), &d.join(into), transfer::Mode::Absorb)?;
            }
            Step::Replace { from, to } => {
                files::replace(d, from, to)?;
                stats.files_removed += 1;
            }
            Step::Rebase { image, backing } => files::rebase(d, image, backing)?,
            Step::Remove { image } => {
                files::remove(d, image)?;
                stats.files_removed += 1;
            }
        }
        Ok(())
    }
}
