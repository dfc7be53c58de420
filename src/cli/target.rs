//! TARGET arguments: `BACKUP_ID` (all disks), `BACKUP_ID:N` (disk N), or the
//! path of an image file (QCOW2 or raw), which needs no repository.

use super::CliError;
use backchain::engine::Repo;
use std::path::{Path, PathBuf};

pub enum Target {
    Image(PathBuf),
    Backup { id: String, disk: Option<usize> },
}

pub fn parse(s: &str) -> Target {
    if Path::new(s).exists() || s.contains('/') {
        return Target::Image(PathBuf::from(s));
    }
    if let Some((id, n)) = s.rsplit_once(':')
        && let Ok(n) = n.parse()
    {
        return Target::Backup { id: id.to_string(), disk: Some(n) };
    }
    Target::Backup { id: s.to_string(), disk: None }
}

/// The image paths of a backup's disks (one disk when `disk` is given).
/// The disks of a backup: (disk index, image path, disk size).
pub fn backup_images(repo: &Repo, id: &str, disk: Option<usize>) -> Result<Vec<(usize, PathBuf, u64)>, CliError> {
    let b = repo
        .block_on(repo.catalog.backup(id))
        .map_err(|_| CliError::msg(format!("{id}: no such backup or image file")))?;
    if b.status != "completed" {
        return Err(CliError::msg(format!("backup {id} is {}, not completed", b.status)));
    }
    let all: Vec<(usize, PathBuf, u64)> =
        b.disks.iter().map(|d| (d.disk_index as usize, repo.path(&d.image_path), d.virtual_size as u64)).collect();
    match disk {
        None => Ok(all),
        Some(n) => match all.into_iter().find(|(i, _, _)| *i == n) {
            Some(x) => Ok(vec![x]),
            None => Err(CliError::msg(format!("backup {id} has no disk {n} ({} disks)", b.disks.len()))),
        },
    }
}
