//! backchain: a backup hub for virtual-machine disks.
//!
//! Backups are QCOW2 chains in a repository; restores open any point of any
//! chain read-only, in userspace. See docs/architecture.md.

pub mod api;
pub mod archive;
pub mod block;
pub mod catalog;
pub mod daemon;
pub mod engine;
pub mod export;
pub mod nbd;
pub mod qcow2;
pub mod repo;
pub mod restore;
pub mod schedule;
pub mod source;
pub mod tree;
pub mod util;
pub mod volume;
