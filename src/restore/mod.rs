//! Restore: what the front ends (CLI, FUSE, HTTP, later NBD exports) share
//! to read restore points.
//!
//! * [`point_tree`] / [`backup_tree`]: the tree of one restore point,
//!   `disk-N/…` per disk (or one disk's partitions directly);
//! * [`repository_tree`]: the whole repository, `/<vm>/<backup-id>/…` and
//!   `/<vm>/latest`, read from the catalog as it is listed;
//! * [`Sessions`]: restore sessions (open, a cap on how many, idle expiry,
//!   kept alive while a download runs);
//! * [`exports`]: restore-point exports over NBD (instant recovery);
//! * [`entry`]: folder entries as the CLI's `ls --json` and HTTP list them.

pub mod entry;
pub mod exports;
mod repo_tree;
mod session;
pub mod tickets;

pub use repo_tree::repository_tree;
pub use session::{DEFAULT_IDLE_SECS, DEFAULT_MAX_SESSIONS, Session, SessionInfo, SessionLimits, Sessions, Transfer};

use crate::repo::{Repo, RepoError, RestorePoint};
use crate::tree::{self, Ino, ROOT, Tree, TreeError};
use crate::util::time::UtcTime;
use crate::volume::fs::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("no restore session {0}")]
    NoSession(String),
    #[error("restore session {0} expired")]
    Expired(String),
    #[error("{0} restore sessions are open: close one (DELETE /api/v1/restore/ID) or wait for one to expire")]
    TooMany(usize),
}

/// The time a backup's folders show: its start, to the second.
pub fn folder_time(t: UtcTime) -> Timestamp {
    Timestamp { secs: t.secs, nanos: 0 }
}

/// A restore point that cannot be opened, as the tree reports it.
fn unavailable(e: RepoError) -> TreeError {
    TreeError::Unavailable(e.to_string())
}

/// Adds the disks of `point` under `parent`: `disk-N/` folders, or, with
/// `flat`, the partitions of its only disk directly.
fn add_point(tree: &Tree, parent: Ino, point: &RestorePoint, flat: bool) -> Result<(), TreeError> {
    let disks = point
        .disks
        .iter()
        .map(|d| Ok((d.disk_index, point.open_disk(d).map_err(unavailable)?)))
        .collect::<Result<Vec<_>, TreeError>>()?;
    tree::add_backup_disks(tree, parent, disks, folder_time(point.time()), flat)
}

/// The tree of one restore point: all its disks as `disk-N/`, or, when one
/// disk was asked for, that disk's partitions at the root.
pub fn point_tree(point: &RestorePoint, one_disk: bool) -> Result<Tree, TreeError> {
    let tree = Tree::new(Timestamp::default());
    add_point(&tree, ROOT, point, one_disk)?;
    Ok(tree)
}

/// The tree of backup `id` (all disks, or disk `disk` alone).
pub fn backup_tree(repo: &Repo, id: &str, disk: Option<usize>) -> Result<Tree, RestoreError> {
    let point = repo.restore_point(id, disk)?;
    Ok(point_tree(&point, disk.is_some())?)
}
