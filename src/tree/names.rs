//! Folder names for partitions: `Partition N - LABEL (SIZE)`, `Partition N
//! (SIZE)`, `Volume (SIZE)`.

use crate::util::human_size;
use crate::volume::table::{PartKind, Partition};

/// GPT partition names that say nothing (tools write them by default).
const GENERIC_GPT_NAMES: &[&str] = &[
    "basic data partition",
    "microsoft basic data",
    "linux filesystem",
    "linux filesystem data",
    "primary",
    "logical",
    "",
];

/// Names for partition types worth showing when nothing better exists.
fn type_label(p: &Partition) -> Option<&'static str> {
    let t = p.type_name?;
    let lower = t.to_ascii_lowercase();
    if lower.contains("efi system") {
        Some("EFI")
    } else if lower.contains("recovery") {
        Some("Recovery")
    } else if lower.contains("swap") {
        Some("Linux swap")
    } else if lower.contains("lvm") {
        Some("Linux LVM")
    } else if lower.contains("reserved") {
        Some("Microsoft reserved")
    } else if lower.contains("bios boot") {
        Some("BIOS boot")
    } else if lower.contains("raid") {
        Some("Linux RAID")
    } else {
        None
    }
}

/// Makes a label safe as one path component.
fn clean(label: &str) -> String {
    label.trim().chars().map(|c| if c == '/' || c == '\0' || c.is_control() { '_' } else { c }).collect()
}

/// The label shown for a partition: the filesystem label, else a GPT name
/// that is not generic, else a name from the partition type.
pub fn partition_label(p: &Partition, fs_label: Option<&str>) -> Option<String> {
    if let Some(l) = fs_label.map(clean).filter(|l| !l.is_empty()) {
        return Some(l);
    }
    if let PartKind::Gpt { name, .. } = &p.kind {
        let n = clean(name);
        if !GENERIC_GPT_NAMES.contains(&n.to_ascii_lowercase().as_str()) {
            return Some(n);
        }
    }
    type_label(p).map(str::to_string)
}

pub fn partition_folder(number: u32, label: Option<&str>, size: u64) -> String {
    match label {
        Some(l) => format!("Partition {number} - {l} ({})", human_size(size)),
        None => format!("Partition {number} ({})", human_size(size)),
    }
}

pub fn volume_folder(size: u64) -> String {
    format!("Volume ({})", human_size(size))
}

/// The folder of an LVM logical volume: `LV VG-LV (SIZE)`, or with the disk
/// that tells two same-named VGs of one backup apart: `LV VG-LV [disk-N] (SIZE)`.
pub fn lv_folder(vg: &str, lv: &str, disk: Option<u32>, size: u64) -> String {
    let (vg, lv) = (clean(vg), clean(lv));
    match disk {
        Some(n) => format!("LV {vg}-{lv} [disk-{n}] ({})", human_size(size)),
        None => format!("LV {vg}-{lv} ({})", human_size(size)),
    }
}
