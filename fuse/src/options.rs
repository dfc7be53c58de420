//! How to mount: the options `mount` and the server both read (kept apart
//! from both so neither imports the other for them).

/// The subtype shown in mount listings (`fuse.backchain` through fusermount3).
pub const SUBTYPE: &str = "backchain";

/// Files of this size and more are read with direct I/O by default.
pub const DIRECT_IO_MIN_SIZE: u64 = 64 << 20;

/// Which files are opened with FOPEN_DIRECT_IO: every read then goes to the
/// server in the size the program asked for and is copied once, straight
/// into the program's buffer, and nothing is cached twice. Through the page
/// cache the kernel instead allocates, fills and then copies out a page
/// cache of its own for every byte read, which on top of the image's own
/// page cache halves large sequential reads (bench/run.py fuse-read) and
/// doubles the memory they take; reads of a few KiB at a time, though, cost
/// a round trip to the server apiece with direct I/O (about 10 µs), where the
/// page cache serves them from its readahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectIo {
    /// Every file through the page cache (sshfs and rclone's default).
    Never,
    /// Files of at least this many bytes with direct I/O, smaller ones
    /// through the page cache. Only where the kernel also maps such files
    /// (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6+); elsewhere as `Never`.
    FromSize(u64),
    /// Every file with direct I/O (as `sshfs -o direct_io`, `rclone
    /// --direct-io`).
    Always,
}

impl DirectIo {
    /// The smallest file opened with direct I/O, if any is.
    pub(crate) fn min_size(self) -> Option<u64> {
        match self {
            DirectIo::Never => None,
            DirectIo::FromSize(min) => Some(min),
            DirectIo::Always => Some(0),
        }
    }
}

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Let other users (file managers running as someone else) in. Turns on
    /// the kernel's permission checks (`default_permissions`) against the
    /// tree's modes and owners. A non-root user needs `user_allow_other` in
    /// /etc/fuse.conf.
    pub allow_other: bool,
    /// The source shown by `mount` and `df` (e.g. the backup id).
    pub fsname: String,
    /// Which files bypass the kernel page cache (see [`DirectIo`]).
    pub direct_io: DirectIo,
    /// Threads taking requests from the kernel (fuser's own). Reads of bytes
    /// the tree can lend from a mapped image are answered on them at once;
    /// everything else is handed to the pools below.
    pub fuse_threads: usize,
    /// Threads serving the reads the tree cannot lend (compressed or
    /// sparse data, and trees that lend nothing).
    pub read_threads: usize,
    /// Threads serving lookups, listings, attributes and the rest.
    pub meta_threads: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            direct_io: DirectIo::FromSize(DIRECT_IO_MIN_SIZE),
            fuse_threads: 2,
            fsname: SUBTYPE.to_string(),
            read_threads: 8,
            meta_threads: 4,
        }
    }
}
