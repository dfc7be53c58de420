//! The whole repository as one tree: `/<vm>/<backup-id>/disk-N/…` and
//! `/<vm>/latest` (a symlink to the newest backup). VM and backup folders are
//! read from the catalog whenever they are listed, so backups committed after
//! a mount appear in it; a backup's disks are opened on first use.

use super::{add_point, folder_time};
use crate::catalog::BackupStatus;
use crate::repo::Repo;
use crate::tree::{Child, DirSource, Ino, ROOT, Result, Tree, TreeError};
use crate::volume::fs::Timestamp;
use std::sync::{Arc, OnceLock};

struct RootSource(Arc<Repo>);
struct VmSource(Arc<Repo>, String);
struct BackupSource {
    repo: Arc<Repo>,
    id: String,
    built: OnceLock<Vec<Child>>,
    /// The point's reader lock, from its first use for as long as the tree
    /// lives: a prune skips (or a delete refuses) a point a mount has open.
    guard: OnceLock<Arc<crate::util::flock::PointLock>>,
}

fn catalog_err(e: impl std::fmt::Display) -> TreeError {
    TreeError::Unavailable(format!("catalog: {e}"))
}

impl DirSource for RootSource {
    fn children(&self, tree: &Tree, dir: Ino) -> Result<Vec<Child>> {
        let vms = self.0.db().vms().map_err(catalog_err)?;
        Ok(vms
            .into_iter()
            .filter(|v| v.backup_count > 0)
            .map(|v| {
                let time = v.last_backup.map(folder_time).unwrap_or_default();
                let src = Arc::new(VmSource(self.0.clone(), v.name.clone()));
                Child { ino: tree.lazy_child_dir(dir, &v.name, time, src), name: v.name.into_bytes() }
            })
            .collect())
    }
    fn dynamic(&self) -> bool {
        true
    }
}

impl DirSource for VmSource {
    fn children(&self, tree: &Tree, dir: Ino) -> Result<Vec<Child>> {
        let backups = self.0.db().list_backups(Some(&self.1)).map_err(catalog_err)?;
        let mut out = Vec::new();
        let mut newest: Option<(String, Timestamp)> = None;
        for b in backups.into_iter().filter(|b| b.status == BackupStatus::Completed) {
            let time = folder_time(b.started_at);
            if newest.is_none() {
                newest = Some((b.id.clone(), time));
            }
            let src = Arc::new(BackupSource {
                repo: self.0.clone(),
                id: b.id.clone(),
                built: OnceLock::new(),
                guard: OnceLock::new(),
            });
            out.push(Child { ino: tree.lazy_child_dir(dir, &b.id, time, src), name: b.id.into_bytes() });
        }
        if let Some((id, time)) = newest {
            out.push(Child {
                ino: tree.lazy_child_symlink(dir, &format!("latest\0{id}"), &id, time),
                name: b"latest".to_vec(),
            });
        }
        Ok(out)
    }
    fn dynamic(&self) -> bool {
        true
    }
}

impl DirSource for BackupSource {
    fn children(&self, tree: &Tree, dir: Ino) -> Result<Vec<Child>> {
        if let Some(c) = self.built.get() {
            return Ok(c.clone());
        }
        // Build the backup's folders under a holder that no path can name
        // (its name has a NUL), then serve the holder's children.
        let holder = tree.add_dir_detached(dir, "\0disks");
        let point = self.repo.restore_point(&self.id, None).map_err(super::unavailable)?;
        add_point(tree, holder, &point, false)?;
        let _ = self.guard.set(point.guard());
        let kids = tree.static_children(holder);
        Ok(self.built.get_or_init(|| kids).clone())
    }
    fn dynamic(&self) -> bool {
        false
    }
}

/// The tree of the whole repository.
pub fn repository_tree(repo: Arc<Repo>) -> Tree {
    let tree = Tree::new(Timestamp::default());
    tree.set_root_source(Arc::new(RootSource(repo)));
    debug_assert_eq!(ROOT, 1);
    tree
}
