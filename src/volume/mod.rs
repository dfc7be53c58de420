//! Volumes: partition tables (`table`) and filesystems (`fs`).

pub mod fs;
pub mod table;
