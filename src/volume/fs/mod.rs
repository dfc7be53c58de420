//! Filesystems detected by their magic: NTFS, ext2/3/4, FAT12/16/32, XFS,
//! btrfs.
//!
//! Every filesystem is served through the [`Filesystem`] trait: thread-safe,
//! read-only, addressed by stable node ids. Parsers whose handles are not
//! `Send` run on worker threads behind that trait.

pub mod ntfs;

use std::io;
use std::sync::Arc;

use crate::block::{Extent, ReadAt};

pub mod acl;
pub mod btrfs;
pub mod ext4;
pub mod fat;
pub mod fuzz;
pub mod xfs;

/// A node (file, folder, symlink) of one filesystem. Stable for the life of
/// the filesystem handle and deterministic across runs where the format has
/// numbers (ext4 inode, NTFS file record number, FAT directory-entry offset).
pub type NodeId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Ntfs,
    Ext2,
    Ext3,
    Ext4,
    Fat12,
    Fat16,
    Fat32,
    Xfs,
    Btrfs,
}

impl FsKind {
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ntfs => "NTFS",
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Fat12 => "FAT12",
            FsKind::Fat16 => "FAT16",
            FsKind::Fat32 => "FAT32",
            FsKind::Xfs => "XFS",
            FsKind::Btrfs => "btrfs",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Directory,
    Symlink,
    /// Special files: listed with their type (and device number), never
    /// read. Front ends serve them `nodev`, so this is safe.
    CharDevice(Rdev),
    BlockDevice(Rdev),
    Fifo,
    Socket,
    /// A type the format has that POSIX has not (NTFS reparse points that
    /// are neither links nor files): listed, never read.
    Other,
}

impl NodeKind {
    /// The name front ends use for the type (the listing JSON's `type`).
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Directory => "directory",
            NodeKind::Symlink => "symlink",
            NodeKind::CharDevice(_) => "chardevice",
            NodeKind::BlockDevice(_) => "blockdevice",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::Other => "other",
        }
    }

    /// The kind a Unix `st_mode` (its `S_IFMT` bits, inode(7)) names, as
    /// ext4, XFS and btrfs store it; `rdev` is used for devices only.
    pub fn from_mode(mode: u32, rdev: Rdev) -> NodeKind {
        match mode & 0o170_000 {
            0o100_000 => NodeKind::File,
            0o040_000 => NodeKind::Directory,
            0o120_000 => NodeKind::Symlink,
            0o020_000 => NodeKind::CharDevice(rdev),
            0o060_000 => NodeKind::BlockDevice(rdev),
            0o010_000 => NodeKind::Fifo,
            0o140_000 => NodeKind::Socket,
            _ => NodeKind::Other,
        }
    }

    /// The device number of a device node.
    pub fn rdev(self) -> Option<Rdev> {
        match self {
            NodeKind::CharDevice(r) | NodeKind::BlockDevice(r) => Some(r),
            _ => None,
        }
    }
}

/// A device number as major and minor, the way Linux splits `dev_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rdev {
    pub major: u32,
    pub minor: u32,
}

impl Rdev {
    /// From the kernel's 32-bit "new" encoding (ext4's second i_block word,
    /// FUSE's `rdev`): minor low byte, 12 major bits, then the minor's rest.
    pub fn from_new(dev: u32) -> Self {
        Rdev { major: (dev & 0xfff00) >> 8, minor: (dev & 0xff) | ((dev >> 12) & 0xfff00) }
    }

    /// From the 16-bit "old" encoding (major high byte, minor low byte).
    pub fn from_old(dev: u16) -> Self {
        Rdev { major: u32::from(dev >> 8), minor: u32::from(dev & 0xff) }
    }

    /// The kernel's 32-bit "new" encoding; majors above 4095 and minors
    /// above 2^20 - 1 do not fit and are truncated, as the kernel does.
    pub fn to_new(self) -> u32 {
        (self.minor & 0xff) | ((self.major & 0xfff) << 8) | ((self.minor & !0xff) << 12)
    }
}

/// Locks a filesystem's cache. A panic while holding a cache lock leaves
/// only a cache behind, so a poisoned lock is used as it is.
pub(crate) use crate::util::lock;

/// Seconds and nanoseconds since the Unix epoch (may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub node: NodeId,
    pub kind: NodeKind,
    /// File size in bytes (symlink: target length; folder: 0 or on-disk size).
    pub size: u64,
    /// Permission bits (0o7777); NTFS/FAT synthesize 0o755 folders, 0o644
    /// files (0o444 when read-only).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name as stored: raw bytes on ext4, UTF-8 on NTFS and FAT (from
    /// UTF-16; unpaired surrogates become U+FFFD).
    pub name: Vec<u8>,
    pub attr: Attr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsStats {
    pub block_size: u32,
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub files: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or folder")]
    NotFound,
    #[error("not a folder")]
    NotADirectory,
    #[error("is a folder")]
    IsADirectory,
    #[error("not a symbolic link")]
    NotASymlink,
    #[error("corrupt filesystem: {what} (at byte {offset} of the volume)")]
    Corrupt { offset: u64, what: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl FsError {
    pub fn corrupt(offset: u64, what: impl Into<String>) -> Self {
        FsError::Corrupt { offset, what: what.into() }
    }
}

/// Why a name read from a folder cannot be served: it would let a path
/// leave its folder (`..`, `/`), or cut a path short (NUL). `None`: a fine
/// name. Names come from whoever owns the guest, so every front end (the
/// tree, and through it FUSE, HTTP and archives) passes them through this
/// one check and leaves such entries out as corrupt.
pub fn bad_name(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("an empty name"),
        b"." | b".." => Some("a name that is '.' or '..'"),
        _ if name.contains(&b'/') => Some("a name containing '/'"),
        _ if name.contains(&0) => Some("a name containing a NUL byte"),
        _ => None,
    }
}

/// A read-only filesystem, safe to use from many threads at once.
pub trait Filesystem: Send + Sync {
    fn kind(&self) -> FsKind;
    /// The volume label, if the filesystem has one.
    fn label(&self) -> Option<String>;
    fn root(&self) -> NodeId;
    fn stat(&self, node: NodeId) -> Result<Attr, FsError>;
    /// The entries of a folder, without `.` and `..`, in on-disk order.
    fn read_dir(&self, dir: NodeId) -> Result<Vec<DirEntry>, FsError>;
    /// One entry of a folder by exact name.
    fn lookup(&self, dir: NodeId, name: &[u8]) -> Result<DirEntry, FsError>;
    /// Reads file bytes at `offset`; returns fewer than `buf.len()` only at
    /// the end of the file.
    fn read(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, FsError>;
    fn read_link(&self, node: NodeId) -> Result<Vec<u8>, FsError>;
    fn statfs(&self) -> Result<FsStats, FsError>;
    /// Where file bytes from `offset` are stored verbatim in a host file,
    /// for up to `len` bytes (see `ReadAt::locate`); `None`: read them.
    fn locate(&self, _node: NodeId, _offset: u64, _len: u64) -> Result<Option<Extent>, FsError> {
        Ok(None)
    }
    /// The extended attributes of a node, with their values, in on-disk
    /// order, under the names Linux uses (`user.*`, `trusted.*`,
    /// `security.*`, `system.posix_acl_access` in the kernel's binary ACL
    /// format, ntfs-3g's names on NTFS). Bounded by [`MAX_XATTR_NAME`],
    /// [`MAX_XATTR_VALUE`] and [`MAX_XATTR_LIST`]; a corrupt attribute block
    /// is an error for this node only. Default: none.
    fn xattrs(&self, _node: NodeId) -> Result<Vec<Xattr>, FsError> {
        Ok(Vec::new())
    }
    /// Something the listing of the filesystem's root should say about the
    /// whole filesystem (a dirty log, corrupt group headers). Default: none.
    fn note(&self) -> Option<String> {
        None
    }
}

/// One extended attribute: its full name (`user.comment`) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// Longest xattr name Linux accepts (XATTR_NAME_MAX, linux/limits.h).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest xattr value Linux accepts (XATTR_SIZE_MAX, linux/limits.h).
pub const MAX_XATTR_VALUE: usize = 64 << 10;
/// Largest list of names `listxattr` can return (XATTR_LIST_MAX), which also
/// bounds how many attributes one node may carry here.
pub const MAX_XATTR_LIST: usize = 64 << 10;

/// Opens the filesystem on `volume` when one is recognised by its magic.
/// `Ok(None)`: no known filesystem. `Err`: recognised but unreadable (the
/// error says why, for the listing).
pub fn open(volume: Arc<dyn ReadAt>) -> Result<Option<Arc<dyn Filesystem>>, FsError> {
    let openers: &[Opener] = &[ntfs::open, ext4::open, xfs::open, fat::open, btrfs::open];
    for opener in openers {
        if let Some(fs) = opener(&volume)? {
            return Ok(Some(fs));
        }
    }
    Ok(None)
}

/// Tries one filesystem type: `Ok(None)` when the magic does not match.
type Opener = fn(&Arc<dyn ReadAt>) -> Result<Option<Arc<dyn Filesystem>>, FsError>;

#[cfg(test)]
mod tests {
    use super::bad_name;

    #[test]
    fn names_that_leave_or_cut_a_path_are_bad() {
        for bad in [&b""[..], b".", b"..", b"../x", b"/tmp/pw", b"a/b", b"a\0b"] {
            assert!(bad_name(bad).is_some(), "{bad:?}");
        }
        for fine in [&b"a"[..], b"...", b".hidden", b"a\"\r\nX-Evil", b"\xff\xfe"] {
            assert_eq!(bad_name(fine), None, "{fine:?}");
        }
    }
}
