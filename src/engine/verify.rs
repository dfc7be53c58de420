//! `verify`: re-read committed backups and check everything that can be
//! checked without the source: QCOW2 structure, chain links, digest maps and
//! the content itself. Results go to the catalog per disk image (shown by
//! `list --json` and `GET /backups/{id}`); a verify job may skip images that
//! passed recently (`--outdated-after DAYS`), and a merge clears the pass of
//! the images it changed, so the next job checks them again.

use super::digests::{self, MapReader};
use super::{EngineError, Repo};
use crate::catalog::{BackupDisk, VerifyState};
use crate::qcow2::{self, Chain, OpenOptions};
use crate::repo::{RepoError, RestorePoint};
use crate::util::time::UtcTime;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct DiskReport {
    pub backup_id: String,
    pub disk_index: i64,
    pub image_path: String,
    pub ok: bool,
    /// Not verified this time: its last verify passed recently enough.
    pub skipped: bool,
    /// When it was last verified (now, unless skipped).
    pub verified_at: Option<UtcTime>,
    pub problems: Vec<String>,
}

/// What a verify covers (PBS's verify jobs): one backup, a VM's, or all.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub id: Option<String>,
    pub vm: Option<String>,
    /// Skip backups whose every disk passed a verify (PBS's "skip
    /// verified").
    pub skip_verified: bool,
    /// With `skip_verified` implied: a pass older than this many days does
    /// not count ("re-verify after").
    pub outdated_after_days: Option<u32>,
}

const DAY_SECS: i64 = 86_400;

impl VerifyRequest {
    /// Whether `d`'s last verify lets this run skip it.
    fn skips(&self, d: &BackupDisk, now: UtcTime) -> bool {
        if !(self.skip_verified || self.outdated_after_days.is_some()) || d.verify_state != Some(VerifyState::Ok) {
            return false;
        }
        match (self.outdated_after_days, d.verified_at) {
            (None, Some(_)) => true,
            (Some(days), Some(t)) => now.secs.saturating_sub(t.secs) < i64::from(days) * DAY_SECS,
            (_, None) => false,
        }
    }
}

/// Verifies the backups `req` names (every completed one of a VM, or of the
/// repository, when no id is given) and records each disk's result in the
/// catalog: a corrupt image is marked, and its chain is never extended.
/// An explicit id is always verified; the others may be skipped by
/// `skip_verified` / `outdated_after_days`. Points being merged away are left
/// out.
pub fn run(repo: &Repo, req: &VerifyRequest) -> Result<Vec<DiskReport>, EngineError> {
    let points: Vec<RestorePoint> = match &req.id {
        Some(id) => match repo.restore_point(id, None) {
            Ok(p) => vec![p],
            Err(RepoError::NotCompleted { id, status }) => {
                return Ok(vec![DiskReport {
                    backup_id: id,
                    disk_index: -1,
                    image_path: String::new(),
                    ok: false,
                    skipped: false,
                    verified_at: None,
                    problems: vec![format!("backup status is {status}")],
                }]);
            }
            Err(e) => return Err(e.into()),
        },
        None => repo
            .db()
            .list_backups(req.vm.as_deref())?
            .into_iter()
            .filter_map(|b| RestorePoint::new(repo, b, None).ok())
            .collect(),
    };
    if let Some(vm) = &req.vm
        && repo.db().vm_id(vm, false)?.is_none()
    {
        return Err(EngineError::NotFound(format!("no VM named {vm}")));
    }
    let now = UtcTime::now();
    let mut reports = Vec::new();
    for p in &points {
        let b = &p.backup;
        for d in &p.disks {
            let report = |ok, skipped, verified_at, problems| DiskReport {
                backup_id: b.id.clone(),
                disk_index: d.disk_index,
                image_path: d.image_path.clone(),
                ok,
                skipped,
                verified_at,
                problems,
            };
            if req.id.is_none() && req.skips(d, now) {
                reports.push(report(true, true, d.verified_at, Vec::new()));
                continue;
            }
            let result = verify_disk(repo, d);
            repo.db().record_verify(d.id, result.as_ref().err().map(String::as_str))?;
            let problems: Vec<String> = result.err().into_iter().collect();
            reports.push(report(problems.is_empty(), false, Some(UtcTime::now()), problems));
        }
    }
    Ok(reports)
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
