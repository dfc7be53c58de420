//! backchain-fuse: serves a read-only tree over FUSE. It knows nothing about
//! disks or QCOW2; the main crate implements [`ReadOnlyTree`] for its tree
//! and calls [`mount`] (background) or [`mount_foreground`].
//!
//! The mount is read-only (every modifying request fails with EROFS), caches
//! attributes and names as long as each node's [`Stat::ttl`] allows, answers
//! reads of mapped bytes at once and every other request from worker threads
//! (reads apart from metadata, so a slow read never stalls a listing), reads
//! large files with direct I/O ([`DirectIo`]), and cleans up a dead mount
//! left at the same place by a server that died ([`clean_stale_mount`]).

mod mount;
mod mountinfo;
mod nodes;
mod options;
mod pool;
mod server;
mod tree;
mod xattr;

pub use mount::{
    FUSE_DEVICE, MountError, MountHandle, clean_stale_mount, is_mounted, mount, mount_foreground, unmount,
};
pub use options::{DIRECT_IO_MIN_SIZE, DirectIo, MountOptions, SUBTYPE};
pub use tree::{DirEntry, IMMUTABLE_TTL, KEEP_CACHE_MIN_TTL, Kind, NodeError, ReadOnlyTree, Stat, Statfs, Xattr};
