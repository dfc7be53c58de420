//! Nodes as the kernel sees them: the inode mapping, attributes, open
//! flags, error numbers and folder listings with `.` and `..`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use fuser::{Errno, FileAttr, FileType, FopenFlags, INodeNo};

use crate::tree::{KEEP_CACHE_MIN_TTL, Kind, NodeError, ReadOnlyTree, Stat};

/// FUSE's inode number for the root folder.
pub(crate) const FUSE_ROOT_ID: u64 = 1;
/// Directory offsets 1 and 2 belong to `.` and `..`; the tree's entry `i`
/// has the offset `i + DIR_OFFSET_BASE + 1` (the offset of the next entry).
pub(crate) const DIR_OFFSET_BASE: u64 = 2;

/// Maps between the tree's inode numbers and the kernel's: only the root
/// differs (the kernel's root is always 1).
#[derive(Clone, Copy)]
pub(crate) struct Inodes {
    pub(crate) root: u64,
}

impl Inodes {
    pub(crate) fn to_tree(self, ino: INodeNo) -> u64 {
        if ino.0 == FUSE_ROOT_ID { self.root } else { ino.0 }
    }

    pub(crate) fn to_kernel(self, ino: u64) -> Result<u64, NodeError> {
        if ino == self.root {
            Ok(FUSE_ROOT_ID)
        } else if ino == 0 || ino == FUSE_ROOT_ID {
            Err(NodeError::Corrupt(format!("the tree gave a non-root node the reserved inode number {ino}")))
        } else {
            Ok(ino)
        }
    }

    pub(crate) fn file_attr(self, attr: &Stat) -> Result<FileAttr, NodeError> {
        Ok(FileAttr {
            ino: INodeNo(self.to_kernel(attr.ino)?),
            size: attr.size,
            blocks: attr.blocks,
            atime: attr.atime,
            mtime: attr.mtime,
            ctime: attr.ctime,
            crtime: attr.crtime,
            kind: file_type(attr.kind),
            perm: attr.perm & 0o7777,
            nlink: attr.nlink,
            uid: attr.uid,
            gid: attr.gid,
            rdev: attr.rdev,
            blksize: attr.blksize,
            flags: 0,
        })
    }
}

pub(crate) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Directory => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        Kind::NamedPipe => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
    }
}

pub(crate) fn errno(e: &NodeError) -> Errno {
    if matches!(e, NodeError::Corrupt(_) | NodeError::Io(_)) {
        log::warn!("backchain-fuse: {e}");
    }
    Errno::from_i32(e.errno())
}

/// A name the kernel would reject in a listing (it fails the whole folder
/// with EIO on a `/`), or that would shadow `.`/`..`.
pub(crate) fn listable(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

/// Lists folder `dir` from kernel offset `offset`: `.` and `..` first, then the
/// tree's entries. `add(ino, next_offset, type, name)` returns true when the
/// reply buffer is full. `..` carries the folder's own inode number: the tree
/// does not know parents, and nothing reads `d_ino` of `..`.
pub(crate) fn list_dir(
    inodes: Inodes,
    tree: &dyn ReadOnlyTree,
    dir: u64,
    offset: u64,
    add: &mut dyn FnMut(u64, u64, FileType, &OsStr) -> bool,
) -> Result<(), NodeError> {
    let dir_kernel = inodes.to_kernel(dir)?;
    if offset == 0 && add(dir_kernel, 1, FileType::Directory, OsStr::new(".")) {
        return Ok(());
    }
    if offset <= 1 && add(dir_kernel, DIR_OFFSET_BASE, FileType::Directory, OsStr::new("..")) {
        return Ok(());
    }
    let first = offset.saturating_sub(DIR_OFFSET_BASE);
    let mut index = first;
    let mut failed = None;
    tree.readdir(dir, first, &mut |entry| {
        index += 1;
        if !listable(entry.name) {
            log::warn!("backchain-fuse: skipping unlistable name {:?}", entry.name);
            return true;
        }
        match inodes.to_kernel(entry.ino) {
            Ok(ino) => !add(ino, index + DIR_OFFSET_BASE, file_type(entry.kind), entry.name),
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The attributes sent with a listing entry (kernel inode `ino`). An entry
/// whose attributes cannot be read is still listed, with placeholder
/// attributes the kernel may not cache: `stat` then asks again and gets the
/// real error.
pub(crate) fn entry_attr(inodes: Inodes, tree: &dyn ReadOnlyTree, ino: u64, kind: FileType) -> (FileAttr, Duration) {
    match tree.getattr(inodes.to_tree(INodeNo(ino))).and_then(|a| Ok((inodes.file_attr(&a)?, a.ttl))) {
        Ok((mut attr, ttl)) => {
            attr.ino = INodeNo(ino);
            (attr, ttl)
        }
        Err(_) => {
            let attr = FileAttr {
                ino: INodeNo(ino),
                size: 0,
                blocks: 0,
                atime: SystemTime::UNIX_EPOCH,
                mtime: SystemTime::UNIX_EPOCH,
                ctime: SystemTime::UNIX_EPOCH,
                crtime: SystemTime::UNIX_EPOCH,
                kind,
                perm: 0,
                nlink: 1,
                uid: 0,
                gid: 0,
                rdev: 0,
                blksize: 4096,
                flags: 0,
            };
            (attr, Duration::ZERO)
        }
    }
}

/// Open flags for a node: cached pages and listings survive reopening when
/// the node is immutable.
pub(crate) fn open_flags(attr: &Stat) -> FopenFlags {
    if attr.ttl >= KEEP_CACHE_MIN_TTL {
        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
    } else {
        FopenFlags::empty()
    }
}
