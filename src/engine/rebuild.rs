//! `repair --rebuild-catalog`: a new catalog from the repository's images.
//!
//! Every image file is named after its own backup id (also after merges), in
//! the folder of its VM and disk, and names its parent as its QCOW2 backing
//! file; its digest map lies beside it. That is enough to recover each
//! completed backup: its id and time (the id starts with the UTC time it
//! started), its VM and disks, its chains, sizes and content digests. Each
//! image is checked before it is adopted: its chain must open inside the
//! repository and every cluster must match its digest map, so the rebuilt
//! catalog never vouches for damaged data. What cannot be recovered is in
//! docs/catalog.md: disk sources, change ids set by agents, failed and
//! interrupted jobs, and the times VMs were first seen.
//!
//! The new catalog is built beside the old one and renamed into place; the
//! old file (if any) is kept under a dated name, never deleted.

use super::EngineError;
use super::digests::{self, MapReader};
use crate::catalog::{AdoptedBackup, BackupType, Catalog, ChainRef, DiskImage, NewDisk, SyncCatalog};
use crate::qcow2::{Chain, OpenOptions};
use crate::repo::{self, CATALOG_FILE, FileKind, RepoFile, sync_dir};
use crate::util::time::UtcTime;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// The source recorded for a recovered disk: catalogs keep sources, images
/// do not.
pub const UNKNOWN_SOURCE: &str = "(unknown: catalog rebuilt from the images)";

/// One image adopted into the new catalog.
#[derive(Debug, Serialize)]
pub struct AdoptedImage {
    pub backup_id: String,
    pub vm: String,
    pub disk_index: u32,
    pub disk_type: BackupType,
    pub image_path: String,
}

/// One image left out, and why.
#[derive(Debug, Serialize)]
pub struct LeftOut {
    pub image_path: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct RebuildReport {
    pub backups: usize,
    pub vms: usize,
    pub adopted: Vec<AdoptedImage>,
    pub left_out: Vec<LeftOut>,
    /// Where the catalog that was there before now is.
    pub old_catalog: Option<String>,
}

/// What the catalog learns of an adopted image, for the images on top of it.
struct Known {
    disk_id: i64,
    chain_id: i64,
    map: PathBuf,
}

/// Rebuilds the catalog of the repository at `root` from its images.
pub fn rebuild_catalog(root: &Path, rt: Handle) -> Result<RebuildReport, EngineError> {
    if !root.join("vms").is_dir() {
        return Err(EngineError::NotFound(format!("{}: no vms/ folder: not a repository", root.display())));
    }
    let root = root.canonicalize().map_err(|e| EngineError::io(root, e))?;
    let files = repo::scan(&root);
    let _locks = lock_vms(&root, &files)?;
    let tmp = root.join(format!("{CATALOG_FILE}.rebuild"));
    remove_db(&tmp)?;
    let catalog = rt.block_on(Catalog::open_sqlite(&tmp))?;
    let db = SyncCatalog::new(catalog, rt);
    let filled =
        fill(&root, &db, &files).and_then(|r| Ok(db.handle().block_on(db.catalog().checkpoint()).map(|_| r)?));
    db.close();
    let mut report = match filled {
        Ok(r) => r,
        Err(e) => {
            let _ = remove_db(&tmp);
            return Err(e);
        }
    };
    // The log is empty now: what is left of it must not follow the rename.
    for suffix in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", tmp.display()));
        if let Err(e) = fs::remove_file(&p)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(EngineError::io(&p, e));
        }
    }
    report.old_catalog = replace_catalog(&root, &tmp)?;
    Ok(report)
}

/// Holds the lock of every VM with a folder: no job may write meanwhile.
fn lock_vms(root: &Path, files: &[RepoFile]) -> Result<Vec<repo::VmLock>, EngineError> {
    let dir = root.join("locks");
    fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let mut vms: Vec<&str> = files.iter().map(|f| f.vm.as_str()).collect();
    vms.dedup();
    let mut held = Vec::new();
    for vm in vms {
        match repo::try_lock_vm(root, vm)? {
            Some(lock) => held.push(lock),
            None => {
                return Err(EngineError::Busy(format!("a job of VM {vm} is running: stop it (and the server) first")));
            }
        }
    }
    Ok(held)
}

/// Adopts the images, VM by VM and backup by backup in id (time) order, so
/// parents are recorded before the images on top of them.
fn fill(root: &Path, db: &SyncCatalog, files: &[RepoFile]) -> Result<RebuildReport, EngineError> {
    let mut report = RebuildReport { backups: 0, vms: 0, adopted: Vec::new(), left_out: Vec::new(), old_catalog: None };
    let mut by_vm: BTreeMap<&str, BTreeMap<&str, Vec<&RepoFile>>> = BTreeMap::new();
    for f in files.iter().filter(|f| f.kind == FileKind::Image) {
        by_vm.entry(&f.vm).or_default().entry(&f.stem).or_default().push(f);
    }
    let mut known: HashMap<String, Known> = HashMap::new();
    for (vm, backups) in by_vm {
        let mut vm_id = None;
        for (id, images) in parents_first(root, backups) {
            let mut disks = Vec::new();
            let mut maps = Vec::new();
            for f in images {
                match examine(root, f, &known) {
                    Ok((disk, map)) => {
                        disks.push(disk);
                        maps.push(map);
                    }
                    Err(reason) => report.left_out.push(LeftOut { image_path: f.rel.clone(), reason }),
                }
            }
            if disks.is_empty() {
                continue;
            }
            let vm_id = match vm_id {
                Some(v) => v,
                None => *vm_id.insert(db.vm_id(vm, true)?.expect("created on demand")),
            };
            let started_at = id_time(id).unwrap_or_else(|| file_time(&root.join(&disks[0].image_path)));
            let ended_at = disks.iter().map(|d| file_time(&root.join(&d.image_path))).max().unwrap_or(started_at);
            let all_full = disks.iter().all(|d| d.disk_type == BackupType::Full);
            let b = AdoptedBackup {
                id: id.to_string(),
                vm_id,
                backup_type: if all_full { BackupType::Full } else { BackupType::Incremental },
                started_at,
                ended_at: ended_at.max(started_at),
                disks,
            };
            let ids = db.adopt_backup(&b)?;
            for ((d, map), (disk_id, chain_id)) in b.disks.iter().zip(maps).zip(ids) {
                known.insert(d.image_path.clone(), Known { disk_id, chain_id, map });
                report.adopted.push(AdoptedImage {
                    backup_id: b.id.clone(),
                    vm: vm.to_string(),
                    disk_index: d.disk_index as u32,
                    disk_type: d.disk_type,
                    image_path: d.image_path.clone(),
                });
            }
            report.backups += 1;
        }
        report.vms += usize::from(vm_id.is_some());
    }
    Ok(report)
}

/// The backing file of an image, relative to the repository; `None` for a
/// full image, or one whose header does not read (it is left out later).
fn parent_of(root: &Path, f: &RepoFile) -> Option<String> {
    let file = crate::block::open_shared(&root.join(&f.rel)).ok()?;
    let header = crate::qcow2::Header::read(&*file).ok()?;
    let name = header.backing_file?;
    let dir = Path::new(&f.rel).parent()?;
    Some(dir.join(name).display().to_string())
}

/// Backups in an order where every image comes after its parent: ids sort
/// by their start time, but only to the second.
fn parents_first<'a>(root: &Path, backups: BTreeMap<&'a str, Vec<&'a RepoFile>>) -> Vec<(&'a str, Vec<&'a RepoFile>)> {
    let all: HashSet<&str> = backups.values().flatten().map(|f| f.rel.as_str()).collect();
    let parents: HashMap<&str, Option<String>> =
        backups.values().flatten().map(|f| (f.rel.as_str(), parent_of(root, f))).collect();
    let mut placed: HashSet<&str> = HashSet::new();
    let mut order = Vec::new();
    let mut pending: Vec<(&str, Vec<&RepoFile>)> = backups.into_iter().collect();
    while !pending.is_empty() {
        let (ready, wait): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, images)| {
            images.iter().all(|f| match &parents[f.rel.as_str()] {
                Some(p) => placed.contains(p.as_str()) || !all.contains(p.as_str()),
                None => true,
            })
        });
        if ready.is_empty() {
            // A loop of backing names: adopt in id order; they fail there.
            order.extend(wait);
            break;
        }
        placed.extend(ready.iter().flat_map(|(_, images)| images.iter().map(|f| f.rel.as_str())));
        order.extend(ready);
        pending = wait;
    }
    order
}

/// Checks one image and its digest map; returns its catalog row (parent
/// and chain resolved through `known`) and its map's path, or why it is
/// left out.
fn examine(root: &Path, f: &RepoFile, known: &HashMap<String, Known>) -> Result<(NewDisk, PathBuf), String> {
    let image = root.join(&f.rel);
    let opts = OpenOptions { confine_to: Some(root.to_path_buf()), ..Default::default() };
    let chain = Chain::open(&image, &opts).map_err(|e| format!("its chain does not open: {e}"))?;
    let parent = match chain.layers().get(1) {
        None => None,
        Some(layer) => {
            let rel = layer
                .path
                .as_deref()
                .and_then(|p| p.strip_prefix(root).ok())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            Some(known.get(&rel).ok_or_else(|| format!("its parent {rel} was not recovered"))?)
        }
    };
    let map_path = image.with_extension("digests");
    let mut map = MapReader::open(&map_path).map_err(|e| e.to_string())?;
    let size = map.virtual_size;
    if size.div_ceil(512) * 512 != chain.virtual_size() || u64::from(map.cluster_size) != chain.cluster_size().bytes() {
        return Err("its digest map's geometry differs from the image's".into());
    }
    let content =
        digests::check(&chain, size, &mut map).map_err(|e| format!("it does not match its digest map: {e}"))?;
    let changed = changed_bytes(&map_path, parent.map(|p| p.map.as_path())).map_err(|e| e.to_string())?;
    let stored = fs::metadata(&image).map_err(|e| e.to_string())?.len();
    let image = DiskImage {
        disk_index: i64::from(f.disk_index),
        disk_type: if parent.is_some() { BackupType::Incremental } else { BackupType::Full },
        source: UNKNOWN_SOURCE.to_string(),
        image_path: f.rel.clone(),
        digest_path: format!("{}.digests", f.rel.strip_suffix(".qcow2").unwrap_or(&f.rel)),
        change_id: None,
        virtual_size: size as i64,
        cluster_size: i64::from(map.cluster_size),
        stored_bytes: stored as i64,
        changed_bytes: changed as i64,
        content_digest: content,
    };
    let disk = NewDisk {
        chain: parent.map_or(ChainRef::New, |p| ChainRef::Existing(p.chain_id)),
        parent_id: parent.map(|p| p.disk_id),
        image,
    };
    Ok((disk, map_path))
}

/// Guest bytes whose cluster digest differs between the map at `map` and
/// its parent's (every non-zero cluster when there is no parent).
fn changed_bytes(map: &Path, parent: Option<&Path>) -> Result<u64, digests::DigestError> {
    let mut child = MapReader::open(map)?;
    let mut parent = parent.map(MapReader::open).transpose()?;
    let (cs, size) = (u64::from(child.cluster_size), child.virtual_size);
    let mut changed = 0u64;
    loop {
        let a = child.peek()?;
        let b = match &mut parent {
            Some(p) => p.peek()?,
            None => None,
        };
        let index = match (a, b) {
            (None, None) => break,
            (Some((i, _)), None) => i,
            (None, Some((j, _))) => j,
            (Some((i, _)), Some((j, _))) => i.min(j),
        };
        let ca = child.next_below(index + 1)?;
        let cb = match &mut parent {
            Some(p) => p.next_below(index + 1)?,
            None => None,
        };
        if ca.map(|e| e.1) != cb.map(|e| e.1) {
            changed += cs.min(size.saturating_sub(index * cs));
        }
    }
    Ok(changed)
}

/// The start time a backup id carries: ids begin `YYYYMMDDTHHMMSSZ`.
fn id_time(id: &str) -> Option<UtcTime> {
    let b = id.as_bytes();
    if b.len() < 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let s = |a: usize, z: usize| id.get(a..z);
    let text = format!("{}-{}-{}T{}:{}:{}Z", s(0, 4)?, s(4, 6)?, s(6, 8)?, s(9, 11)?, s(11, 13)?, s(13, 15)?);
    UtcTime::parse(&text).ok()
}

/// A file's modification time (the epoch when it cannot be read).
fn file_time(path: &Path) -> UtcTime {
    let t = fs::metadata(path).and_then(|m| m.modified()).ok();
    let d = t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    UtcTime { secs: d.as_secs() as i64, nanos: d.subsec_millis() * 1_000_000 }
}

/// Removes an SQLite database and its journal files, if there.
fn remove_db(db: &Path) -> Result<(), EngineError> {
    for suffix in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{suffix}", db.display()));
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(EngineError::io(&p, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Moves the old catalog (and its journal files) aside under a dated name
/// and the rebuilt one into place; returns where the old one went.
fn replace_catalog(root: &Path, rebuilt: &Path) -> Result<Option<String>, EngineError> {
    let current = root.join(CATALOG_FILE);
    let aside = root.join(format!("{CATALOG_FILE}.before-repair-{}", crate::util::time::now_compact()));
    let mut moved = None;
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", current.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match fs::rename(&from, &to) {
            Ok(()) if suffix.is_empty() => moved = Some(to.display().to_string()),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io(&from, e)),
        }
    }
    fs::rename(rebuilt, &current).map_err(|e| EngineError::io(rebuilt, e))?;
    sync_dir(root)?;
    Ok(moved)
}
