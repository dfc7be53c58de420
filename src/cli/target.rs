//! TARGET arguments: `BACKUP_ID` (all disks), `BACKUP_ID:N` (disk N), or the
//! path of an image file (QCOW2 or raw), which needs no repository.

use super::CliError;
use backchain::repo::{Repo, RepoError, RestorePoint};
use backchain::restore;
use backchain::tree::Tree;
use backchain::util::flock::PointLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub enum Target {
    Image(PathBuf),
    Backup { id: String, disk: Option<usize> },
}

pub fn parse(s: &str) -> Target {
    // symlink_metadata: a symlink loop or a dangling link is still a path
    // (opening it then says why), never taken for a backup id.
    if std::fs::symlink_metadata(s).is_ok() || s.contains('/') {
        return Target::Image(PathBuf::from(s));
    }
    if let Some((id, n)) = s.rsplit_once(':')
        && let Ok(n) = n.parse()
    {
        return Target::Backup { id: id.to_string(), disk: Some(n) };
    }
    Target::Backup { id: s.to_string(), disk: None }
}

/// A restore point's reader lock: hold it while reading the point's images.
pub type Guard = Arc<PointLock>;

/// One disk of a backup: its index, image path and size.
pub type DiskImage = (usize, PathBuf, u64);

/// The disks of a backup; one disk when `disk` is given. With the point's
/// reader lock.
pub fn backup_images(repo: &Repo, id: &str, disk: Option<usize>) -> Result<(Vec<DiskImage>, Guard), CliError> {
    let point = restore_point(repo, id, disk)?;
    let images =
        point.disks.iter().map(|d| (d.disk_index as usize, point.image_path(d), RestorePoint::disk_size(d))).collect();
    Ok((images, point.guard()))
}

/// The files an image reads: the image and its backing chain (just the
/// image when the chain does not open; opening the tree will say why).
pub fn chain_files(image: &Path) -> Vec<PathBuf> {
    match backchain::qcow2::Chain::open(image, &backchain::qcow2::OpenOptions::default()) {
        Ok(chain) => chain.layers().iter().filter_map(|l| l.path.clone()).collect(),
        Err(_) => vec![image.to_path_buf()],
    }
}

/// Backup `id` as a restore point, with the CLI's words for a TARGET that
/// names nothing.
fn restore_point(repo: &Repo, id: &str, disk: Option<usize>) -> Result<RestorePoint, CliError> {
    repo.restore_point(id, disk).map_err(|e| match e {
        RepoError::NoBackup(_) => CliError::msg(format!("{id}: no such backup or image file")),
        other => other.into(),
    })
}

/// The tree of backup `id` (all disks, or disk `disk` alone), with the
/// point's reader lock.
pub fn backup_tree(repo: &Repo, id: &str, disk: Option<usize>) -> Result<(Tree, Guard), CliError> {
    let point = restore_point(repo, id, disk)?;
    Ok((restore::point_tree(&point, disk.is_some())?, point.guard()))
}
