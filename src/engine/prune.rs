//! Applying a retention plan to one disk's chain: the images of dropped
//! points are merged away one at a time, oldest first, each as a recorded,
//! resumable merge (`qcow2::merge`) under the dropped point's exclusive lock.
//! Oldest first makes every drop either a fold of the next image into the
//! full (when the dropped point is the oldest left) or an absorb of the
//! dropped image into its child: each costs the clusters it merges, never
//! the disk.
//!
//! The catalog side (which backups, their rows, the per-VM lock) belongs to
//! the caller; this layer knows file names, lock files and journals only.

use crate::qcow2::merge::{self, Merge, MergeError, Stats};
use std::path::{Path, PathBuf};

/// Where the lock file of the restore point owning image `name` lives.
pub type LockFile<'a> = &'a dyn Fn(&str) -> PathBuf;

/// Drops the images `drop` from `chain` (one disk's images, oldest first,
/// file names in `dir`). Returns the chain left and each merge's stats.
pub fn drop_images(
    dir: &Path,
    chain: &[String],
    drop: &[String],
    lock_file: LockFile<'_>,
) -> Result<(Vec<String>, Vec<Stats>), MergeError> {
    if let Some(stranger) = drop.iter().find(|d| !chain.contains(d)) {
        return Err(MergeError::Unsupported(format!("{stranger} is not in the chain")));
    }
    let mut left = chain.to_vec();
    let mut stats = Vec::new();
    for name in chain.iter().filter(|n| drop.contains(n)) {
        // OK to unwrap: `name` is in `left` until it is dropped here.
        let i = left.iter().position(|n| n == name).unwrap();
        let lock = merge::lock_dropped(&lock_file(name), name)?;
        stats.push(Merge::begin(dir, &left, i, &lock)?.run()?);
        left.remove(i);
    }
    Ok((left, stats))
}

/// Finishes every merge a crash left in `dir` (its journals). Returns the
/// images whose points those merges dropped.
pub fn resume_merges(dir: &Path, lock_file: LockFile<'_>) -> Result<Vec<String>, MergeError> {
    let mut journals: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| MergeError::Io { path: dir.to_path_buf(), source: e })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".merge.json")))
        .collect();
    journals.sort();
    let mut finished = Vec::new();
    for j in journals {
        let Some(journal) = merge::Journal::load(&j)? else { continue };
        let lock = merge::lock_dropped(&lock_file(&journal.dropped), &journal.dropped)?;
        if let Some(m) = Merge::resume(dir, &j, &lock)? {
            m.run()?;
            finished.push(journal.dropped);
        }
    }
    Ok(finished)
}
