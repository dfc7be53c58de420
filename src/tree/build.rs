//! Building trees: a disk's partitions as folders, a backup's disks as
//! `disk-N/`, an image file on its own.

use super::{Ino, ROOT, Result, Tree, TreeError, names};
use crate::block::{MemImage, ReadAt};
use crate::engine::Repo;
use crate::qcow2::{self, OpenOptions};
use crate::volume::fs::{self, Timestamp};
use crate::volume::table::{self, FsHint, Partition, Scheme};
use std::path::Path;
use std::sync::Arc;

/// The note file placed in a folder that cannot be browsed.
pub const NOTE_FILE: &str = "README.txt";
/// The raw bytes of a partition that cannot be browsed.
pub const RAW_FILE: &str = "partition.img";

/// Adds the partitions of `disk` as folders of `parent`.
pub fn add_disk(tree: &Tree, parent: Ino, disk: Arc<dyn ReadAt>, time: Timestamp) -> Result<()> {
    let t = match table::read_table(&disk) {
        Ok(t) => t,
        Err(e) => {
            // The table is unreadable: keep the whole disk available raw.
            let dir = tree.add_dir(parent, "Disk (unreadable partition table)", time, Some(e.to_string()));
            add_raw(tree, dir, disk, time, &format!("The partition table cannot be read: {e}."));
            return Ok(());
        }
    };
    for p in &t.partitions {
        let window: Arc<dyn ReadAt> = Arc::new(p.window(&disk)?);
        add_partition(tree, parent, &t.scheme, p, window, time)?;
    }
    Ok(())
}

fn add_raw(tree: &Tree, dir: Ino, data: Arc<dyn ReadAt>, time: Timestamp, why: &str) {
    let text = format!("{why}\n{RAW_FILE} holds the raw bytes of this partition.\n");
    tree.add_file(dir, NOTE_FILE, time, Arc::new(MemImage(text.into_bytes())));
    tree.add_file(dir, RAW_FILE, time, data);
}

fn add_partition(
    tree: &Tree,
    parent: Ino,
    scheme: &Scheme,
    p: &Partition,
    window: Arc<dyn ReadAt>,
    time: Timestamp,
) -> Result<()> {
    let whole = matches!(scheme, Scheme::None);
    let folder = |label: Option<&str>| {
        if whole { names::volume_folder(p.size) } else { names::partition_folder(p.number, label, p.size) }
    };
    match fs::open(window.clone()) {
        Ok(Some(f)) => {
            let label = names::partition_label(p, f.label().as_deref());
            tree.add_fs(parent, &folder(label.as_deref()), f)?;
        }
        Ok(None) => {
            let hint = table::detect_fs_magic(&*window);
            let why = match hint {
                FsHint::Lvm => super::lvm::pv_note(window.clone()),
                h => table::unbrowsable_note("This partition", p.type_name, h),
            };
            let label = names::partition_label(p, None);
            let dir = tree.add_dir(parent, &folder(label.as_deref()), time, Some(why.clone()));
            add_raw(tree, dir, window, time, &why);
        }
        Err(e) => {
            let why = format!("This partition's filesystem cannot be read: {e}.");
            let label = names::partition_label(p, None);
            let dir = tree.add_dir(parent, &folder(label.as_deref()), time, Some(why.clone()));
            add_raw(tree, dir, window, time, &why);
        }
    }
    Ok(())
}

fn mtime_of(path: &Path) -> Timestamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Timestamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() })
        .unwrap_or_default()
}

/// The tree of one disk image file (QCOW2 with its chain, or raw).
pub fn for_image(path: &Path, opts: &OpenOptions) -> Result<Tree> {
    let disk = qcow2::open_disk(path, opts).map_err(|e| TreeError::Unavailable(format!("{}: {e}", path.display())))?;
    let time = mtime_of(path);
    let tree = Tree::new(time);
    add_disk(&tree, ROOT, disk.clone(), time)?;
    super::lvm::add_volumes(&tree, &[super::lvm::DiskAt { index: 0, disk, folder: ROOT }], ROOT, time)?;
    Ok(tree)
}

/// Parses a catalog time (RFC 3339 UTC, as the catalog writes it).
pub fn parse_time(s: &str) -> Timestamp {
    let num = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) =
        (num(0, 4), num(5, 7), num(8, 10), num(11, 13), num(14, 16), num(17, 19))
    else {
        return Timestamp::default();
    };
    // Days from civil, the inverse of util::time's conversion.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Timestamp { secs: days * 86_400 + h * 3600 + mi * 60 + se, nanos: 0 }
}

/// Adds the disks of backup `id` under `parent`: `disk-N/` folders, or the
/// partitions directly when one disk is asked for.
pub fn add_backup(repo: &Repo, tree: &Tree, parent: Ino, id: &str, disk: Option<usize>) -> Result<()> {
    let b = repo.block_on(repo.catalog.backup(id)).map_err(|e| TreeError::Unavailable(e.to_string()))?;
    if b.status != "completed" {
        return Err(TreeError::Unavailable(format!("backup {id} is {}, not completed", b.status)));
    }
    let time = parse_time(&b.started_at);
    let opts = OpenOptions { confine_to: Some(repo.root().to_path_buf()), ..Default::default() };
    let mut found = false;
    let mut lvm_disks = Vec::new();
    for d in &b.disks {
        if disk.is_some_and(|n| n as i64 != d.disk_index) {
            continue;
        }
        found = true;
        let chain = qcow2::Chain::open(&repo.path(&d.image_path), &opts)
            .map_err(|e| TreeError::Unavailable(format!("backup {id} disk {}: {e}", d.disk_index)))?;
        // The disk as it was: QCOW2 rounds sizes up to whole sectors.
        let reader: Arc<dyn ReadAt> = Arc::new(crate::block::Slice::new(Arc::new(chain), 0, d.virtual_size as u64)?);
        let at =
            if disk.is_some() { parent } else { tree.add_dir(parent, &format!("disk-{}", d.disk_index), time, None) };
        add_disk(tree, at, reader.clone(), time)?;
        lvm_disks.push(super::lvm::DiskAt {
            index: u32::try_from(d.disk_index).unwrap_or(u32::MAX),
            disk: reader,
            folder: at,
        });
    }
    if !found {
        return Err(TreeError::Unavailable(format!("backup {id} has no disk {}", disk.unwrap_or(0))));
    }
    super::lvm::add_volumes(tree, &lvm_disks, parent, time)?;
    Ok(())
}

/// The tree of one backup (all disks as `disk-N/`, or disk `disk` alone).
pub fn for_backup(repo: &Repo, id: &str, disk: Option<usize>) -> Result<Tree> {
    let tree = Tree::new(Timestamp::default());
    add_backup(repo, &tree, ROOT, id, disk)?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn catalog_times_round_trip() {
        for secs in [0i64, 951_782_400, 1_795_000_000] {
            let s = crate::util::time::rfc3339(secs, 5_000_000);
            assert_eq!(parse_time(&s).secs, secs, "{s}");
        }
    }
}
