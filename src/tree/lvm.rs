//! LVM2 logical volumes in the tree. After the disks of a backup (or one
//! image) are added, their PVs are assembled into VGs and each visible LV
//! becomes a folder `LV VG-LV (SIZE)` holding its filesystem, browsed like
//! a partition: beside the partitions of its disk when all its extents lie
//! on one disk, at the backup's root (beside `disk-N/`) when they span
//! disks. An LV that cannot be read is a folder with a note saying why.

use super::build::{NOTE_FILE, RAW_FILE};
use super::{Ino, Result, Tree, names};
use crate::block::{MemImage, ReadAt};
use crate::volume::fs::{self, Timestamp};
use crate::volume::lvm::{self, LvData};
use crate::volume::table;
use std::collections::HashMap;
use std::sync::Arc;

/// One disk of the view: its index in the backup, its bytes, and the
/// folder its partitions were added to.
pub struct DiskAt {
    pub index: u32,
    pub disk: Arc<dyn ReadAt>,
    pub folder: Ino,
}

/// The note of a partition that is an LVM PV: which VG it belongs to.
pub fn pv_note(window: Arc<dyn ReadAt>) -> String {
    lvm::describe_pv(window)
}

/// Adds the LVs of every VG on `disks`; LVs spanning disks go to `root`.
pub fn add_volumes(tree: &Tree, disks: &[DiskAt], root: Ino, time: Timestamp) -> Result<()> {
    let list: Vec<(u32, Arc<dyn ReadAt>)> = disks.iter().map(|d| (d.index, d.disk.clone())).collect();
    let scan = lvm::scan(&list);
    let mut named: HashMap<&str, usize> = HashMap::new();
    for vg in &scan.vgs {
        *named.entry(vg.name.as_str()).or_default() += 1;
    }
    for vg in &scan.vgs {
        // Same-named VGs (cloned disks) are told apart by their first disk.
        let tag = if named[vg.name.as_str()] > 1 { vg.disks.first().copied() } else { None };
        for lv in &vg.lvs {
            let only = if lv.disks.len() == 1 { lv.disks.first() } else { None };
            let parent = only.and_then(|i| disks.iter().find(|d| d.index == *i)).map_or(root, |d| d.folder);
            let name = names::lv_folder(&vg.name, &lv.name, tag, lv.size);
            match &lv.data {
                LvData::Readable(r) => add_lv(tree, parent, &name, r.clone(), time)?,
                LvData::Unreadable(why) => {
                    let dir = tree.add_dir(parent, &name, time, Some(why.clone()));
                    tree.add_file(dir, NOTE_FILE, time, Arc::new(MemImage(format!("{why}\n").into_bytes())));
                }
            }
        }
    }
    Ok(())
}

/// One readable LV: its filesystem, or its raw bytes with a note.
fn add_lv(tree: &Tree, parent: Ino, name: &str, lv: Arc<lvm::LvReader>, time: Timestamp) -> Result<()> {
    let volume: Arc<dyn ReadAt> = lv;
    let why = match fs::open(volume.clone()) {
        Ok(Some(f)) => {
            tree.add_fs(parent, name, f)?;
            return Ok(());
        }
        Ok(None) => table::unbrowsable_note("This logical volume", None, table::detect_fs_magic(&*volume)),
        Err(e) => format!("This logical volume's filesystem cannot be read: {e}."),
    };
    let dir = tree.add_dir(parent, name, time, Some(why.clone()));
    let text = format!("{why}\n{RAW_FILE} holds the raw bytes of this logical volume.\n");
    tree.add_file(dir, NOTE_FILE, time, Arc::new(MemImage(text.into_bytes())));
    tree.add_file(dir, RAW_FILE, time, volume);
    Ok(())
}
