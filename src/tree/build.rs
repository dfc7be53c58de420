//! Building trees: a disk's partitions as folders, a backup's disks as
//! `disk-N/`, an image file on its own.

use super::{Ino, ROOT, Result, Tree, TreeError, names};
use crate::block::{MemImage, ReadAt};
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
    if !t.warnings.is_empty() {
        // Entries dropped or clamped are said, never silently lost.
        let mut text = String::from("Notes on this disk's partition table:\n\n");
        for w in &t.warnings {
            text.push_str(&format!("- {w}\n"));
        }
        tree.add_file(parent, NOTE_FILE, time, Arc::new(MemImage(text.into_bytes())));
    }
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

/// Adds the disks of one backup under `parent`: a `disk-N/` folder each,
/// or, with `flat`, the partitions of the only disk directly; then the LVM
/// logical volumes their physical volumes hold (beside the partitions of
/// the disk holding them, or at `parent` when they span disks). `disks`
/// are (disk index, the disk's bytes), in disk order.
pub fn add_backup_disks(
    tree: &Tree,
    parent: Ino,
    disks: Vec<(i64, Arc<dyn ReadAt>)>,
    time: Timestamp,
    flat: bool,
) -> Result<()> {
    let mut lvm_disks = Vec::with_capacity(disks.len());
    for (index, reader) in disks {
        let at = if flat { parent } else { tree.add_dir(parent, &format!("disk-{index}"), time, None) };
        add_disk(tree, at, reader.clone(), time)?;
        lvm_disks.push(super::lvm::DiskAt {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            disk: reader,
            folder: at,
        });
    }
    super::lvm::add_volumes(tree, &lvm_disks, parent, time)?;
    Ok(())
}
