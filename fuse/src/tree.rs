//! The read-only tree this crate serves: a small trait, the attributes it
//! returns and the errors it may fail with. Implementations know nothing about
//! FUSE; errno values appear only in [`NodeError::errno`].

use std::ffi::OsStr;
use std::io;
use std::time::{Duration, SystemTime};

/// How long the kernel may cache an attribute or a name lookup when the tree
/// does not say otherwise: a backup never changes, so a day is safe.
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A node's kind, as FUSE reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    /// Special files: served with their type and `rdev`; the mount is
    /// `nodev`, so they cannot be opened as devices.
    CharDevice,
    BlockDevice,
    NamedPipe,
    Socket,
}

/// What `stat` shows for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The tree's inode number: never 0, and 1 only for the root (see
    /// [`ReadOnlyTree::root`]).
    pub ino: u64,
    pub kind: Kind,
    /// Bytes of a file, length of a symlink's target, anything for a folder.
    pub size: u64,
    /// Allocated 512-byte blocks as `du` should report them.
    pub blocks: u64,
    /// Permission bits (e.g. 0o644); the file type bits come from `kind`.
    pub perm: u16,
    pub nlink: u32,
    /// A device's number in the kernel's 32-bit encoding (0 for the rest).
    pub rdev: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
    /// Preferred I/O size reported by `stat`.
    pub blksize: u32,
    /// How long the kernel may cache this attribute and the name that led to
    /// it. [`IMMUTABLE_TTL`] for anything inside a backup; short (or zero) for
    /// nodes that change, like a repository's list of backups. A file whose
    /// ttl is at least [`KEEP_CACHE_MIN_TTL`] also keeps its page cache
    /// across opens.
    pub ttl: Duration,
}

/// Files with at least this ttl keep their cached pages when reopened.
pub const KEEP_CACHE_MIN_TTL: Duration = Duration::from_secs(60);

impl Stat {
    /// Attributes with the usual defaults: owned by root, timestamps at the
    /// epoch, blocks derived from the size, `IMMUTABLE_TTL`.
    pub fn new(ino: u64, kind: Kind, size: u64, perm: u16) -> Stat {
        Stat {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            perm,
            nlink: if kind == Kind::Directory { 2 } else { 1 },
            rdev: 0,
            uid: 0,
            gid: 0,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            blksize: 4096,
            ttl: IMMUTABLE_TTL,
        }
    }
}

/// One folder entry, as [`ReadOnlyTree::readdir`] yields it (without `.` and
/// `..`, which the server adds).
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    pub ino: u64,
    pub kind: Kind,
    pub name: &'a OsStr,
}

/// What `statfs` (and so `df`) reports. Free counts are always zero: the
/// tree is read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    /// Total size in `bsize` units.
    pub blocks: u64,
    /// Number of nodes.
    pub files: u64,
    pub bsize: u32,
    /// Longest name, in bytes.
    pub namelen: u32,
}

impl Default for Statfs {
    fn default() -> Self {
        Statfs { blocks: 0, files: 0, bsize: 4096, namelen: 255 }
    }
}

/// Why a tree operation failed. Each variant maps to one errno at the FUSE
/// edge ([`NodeError::errno`]); nothing is turned into a blanket EIO.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no such file or folder")]
    NotFound,
    #[error("not a folder")]
    NotADirectory,
    #[error("is a folder")]
    IsADirectory,
    #[error("not a symlink")]
    NotASymlink,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("permission denied")]
    PermissionDenied,
    #[error("name too long")]
    NameTooLong,
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The data under the tree is damaged (a corrupt filesystem structure).
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Reading the data under the tree failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl NodeError {
    /// The errno the kernel (and so the program calling into the mount) sees.
    pub fn errno(&self) -> i32 {
        match self {
            NodeError::NotFound => libc::ENOENT,
            NodeError::NotADirectory => libc::ENOTDIR,
            NodeError::IsADirectory => libc::EISDIR,
            // readlink(2) on a non-symlink fails with EINVAL.
            NodeError::NotASymlink | NodeError::InvalidArgument(_) => libc::EINVAL,
            NodeError::PermissionDenied => libc::EACCES,
            NodeError::NameTooLong => libc::ENAMETOOLONG,
            NodeError::Unsupported(_) => libc::EOPNOTSUPP,
            NodeError::Corrupt(_) | NodeError::Io(_) => libc::EIO,
        }
    }
}

/// A read-only tree of folders, files and symlinks, addressed by inode
/// numbers the tree chooses. Inode numbers must be deterministic, never 0,
/// and 1 only for the root: the server shows the root to the kernel as inode
/// 1 (FUSE's root id) whatever number the tree gives it, and refuses (EIO)
/// any other node numbered 0 or 1.
///
/// Every method takes `&self` and may be called from several threads at once.
pub trait ReadOnlyTree: Send + Sync + 'static {
    /// The root folder's inode number.
    fn root(&self) -> u64;

    /// The entry `name` of folder `parent`.
    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Stat, NodeError>;

    /// The attributes of `ino`.
    fn getattr(&self, ino: u64) -> Result<Stat, NodeError>;

    /// Lists folder `ino` from entry number `offset` on (0 = the first
    /// entry; `.` and `..` are not counted), in an order that never changes
    /// between calls, calling `add` for each entry until it returns `false`
    /// (the reply buffer is full) or the folder ends. Resuming at any offset
    /// must be cheap: large folders are listed in many calls. The server
    /// sends each entry's attributes along (one [`getattr`](Self::getattr)
    /// per entry), so `getattr` should be cheap too.
    fn readdir(&self, ino: u64, offset: u64, add: &mut dyn FnMut(DirEntry<'_>) -> bool) -> Result<(), NodeError>;

    /// Fills `buf` with the bytes of file `ino` from `offset`; returns how
    /// many were written, fewer than `buf.len()` only at the end of the file
    /// (0 at or past it). The server never asks past the size it saw at open.
    fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize, NodeError>;

    /// Zero-copy reads: when the `len` bytes of file `ino` from `offset`
    /// sit in memory the tree can lend (a memory-mapped image), calls
    /// `reply` once with exactly them. Otherwise (the default) it does
    /// nothing and the server calls [`read`](Self::read). Never asked for a
    /// range past the end of the file. Runs on the thread that took the
    /// request from the kernel: it should answer from memory (it may read
    /// a little metadata through the tree's caches), never wait long.
    fn read_borrowed(&self, _ino: u64, _offset: u64, _len: usize, _reply: &mut dyn FnMut(&[u8])) {}

    /// The target of symlink `ino`.
    fn readlink(&self, ino: u64) -> Result<Vec<u8>, NodeError>;

    /// Totals for `df`.
    fn statfs(&self) -> Statfs {
        Statfs::default()
    }

    /// The extended attributes of `ino` (full names such as `user.comment`,
    /// with their values). The server answers `listxattr`/`getxattr` from
    /// them, hiding `trusted.*` from callers other than root. Default: none.
    fn xattrs(&self, _ino: u64) -> Result<Vec<Xattr>, NodeError> {
        Ok(Vec::new())
    }
}

/// One extended attribute of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}
