//! `verify`: re-read committed backups and check everything that can be
//! checked without the source: QCOW2 structure, chain links, digest maps and
//! the content itself.

use super::digests::{self, MapReader};
use super::{EngineError, Repo};
use crate::catalog::BackupDisk;
use crate::qcow2::{self, Chain, OpenOptions};
use crate::repo::{RepoError, RestorePoint};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct DiskReport {
    pub backup_id: String,
    pub disk_index: i64,
    pub image_path: String,
    pub ok: bool,
    pub problems: Vec<String>,
}

/// Verifies one backup (or every completed backup when `id` is `None`).
pub fn run(repo: &Repo, id: Option<&str>) -> Result<Vec<DiskReport>, EngineError> {
    let points: Vec<RestorePoint> = match id {
        Some(id) => match repo.restore_point(id, None) {
            Ok(p) => vec![p],
            Err(RepoError::NotCompleted { id, status }) => {
                return Ok(vec![DiskReport {
                    backup_id: id,
                    disk_index: -1,
                    image_path: String::new(),
                    ok: false,
                    problems: vec![format!("backup status is {status}")],
                }]);
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            repo.db().list_backups(None)?.into_iter().filter_map(|b| RestorePoint::new(repo, b, None).ok()).collect()
        }
    };
    let mut reports = Vec::new();
    if id.is_none() {
        reports.extend(orphans(repo)?);
    }
    for p in &points {
        let b = &p.backup;
        for d in &p.disks {
            let mut problems = Vec::new();
            if let Err(p) = verify_disk(repo, d) {
                problems.push(p);
            }
            reports.push(DiskReport {
                backup_id: b.id.clone(),
                disk_index: d.disk_index,
                image_path: d.image_path.clone(),
                ok: problems.is_empty(),
                problems,
            });
        }
    }
    Ok(reports)
}

/// Files no catalog row names, as faults: a lost or rolled-back catalog
/// shows here, not as "0 disk images verified".
fn orphans(repo: &Repo) -> Result<Vec<DiskReport>, EngineError> {
    Ok(repo
        .orphans()?
        .into_iter()
        .map(|o| DiskReport {
            backup_id: o.file.stem,
            disk_index: i64::from(o.file.disk_index),
            image_path: o.file.rel,
            ok: false,
            problems: vec![format!(
                "orphan file: {}; `backchain repair --rebuild-catalog` adopts intact backups, \
                 `backchain repair --remove-orphans` removes it",
                o.reason
            )],
        })
        .collect())
}

/// The expected chain of images, top first, from the catalog's parent links.
fn expected_chain(repo: &Repo, d: &BackupDisk) -> Result<Vec<String>, String> {
    let mut paths = vec![d.image_path.clone()];
    let mut parent = d.parent_id;
    let images = repo
        .db()
        .chains(&vm_of(&d.image_path))
        .map_err(|e| e.to_string())?
        .into_iter()
        .flat_map(|c| c.images)
        .collect::<Vec<_>>();
    while let Some(pid) = parent {
        let p = images.iter().find(|i| i.id == pid).ok_or_else(|| format!("parent image row {pid} is missing"))?;
        paths.push(p.image_path.clone());
        parent = p.parent_id;
    }
    Ok(paths)
}

fn vm_of(image_path: &str) -> String {
    image_path.split('/').nth(1).unwrap_or_default().to_string()
}

fn verify_disk(repo: &Repo, d: &BackupDisk) -> Result<(), String> {
    let image = repo.path(&d.image_path);
    let opts = OpenOptions { confine_to: Some(repo.root().to_path_buf()), ..Default::default() };
    let chain = Chain::open(&image, &opts).map_err(|e| format!("cannot open image: {e}"))?;
    // Chain links: every layer is the image the catalog says.
    let expected = expected_chain(repo, d)?;
    let actual: Vec<String> = chain
        .layers()
        .iter()
        .map(|l| {
            l.path
                .as_deref()
                .and_then(|p| p.strip_prefix(repo.root()).ok())
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    if actual != expected {
        return Err(format!("backing chain is {actual:?}, the catalog says {expected:?}"));
    }
    // Structure: every L1/L2 entry of every layer is walked and validated.
    qcow2::info(&chain).map_err(|e| format!("QCOW2 structure: {e}"))?;
    // QCOW2 sizes are whole 512-byte sectors: the image may end up to 511
    // bytes after the disk it holds.
    let size = d.virtual_size as u64;
    if chain.virtual_size() != size.div_ceil(512) * 512 {
        return Err(format!("virtual size {} differs from the catalog's {size}", chain.virtual_size()));
    }
    // Content: every cluster's digest against the map, and the map against
    // the catalog.
    let mut map = MapReader::open(&repo.path(&d.digest_path)).map_err(|e| e.to_string())?;
    if map.cluster_size as u64 != d.cluster_size as u64 || map.virtual_size != size {
        return Err("digest map geometry differs from the image".into());
    }
    let content = digests::check(&chain, size, &mut map).map_err(|e| e.to_string())?;
    if content != d.content_digest {
        return Err("content digest differs from the catalog".into());
    }
    if !Path::new(&image).is_file() {
        return Err("image file is missing".into());
    }
    Ok(())
}
