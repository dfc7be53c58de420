//! Volumes: partition tables (`table`), LVM2 volume groups (`lvm`) and filesystems (`fs`).

pub mod fs;
pub mod lvm;
pub mod table;
