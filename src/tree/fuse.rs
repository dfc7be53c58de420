//! The tree as a `backchain_fuse::ReadOnlyTree`: what `backchain mount`
//! serves. Errors map to the FUSE crate's kinds here; errno values appear
//! only inside that crate.

use super::{Ino, Tree, TreeError};
use crate::volume::fs::{FsError, NodeKind, Timestamp};
use backchain_fuse::{self as bf, DirEntry, Kind, ReadOnlyTree, Stat, Statfs};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may cache the repository's own folders (VMs, backup
/// lists, `latest`), which change as backups commit.
const VOLATILE_TTL: Duration = Duration::from_secs(1);

/// A tree served over FUSE.
pub struct FuseTree(pub Tree);

fn time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos.min(999_999_999))
    } else {
        // Nanoseconds count forward from the (negative) second, as in a timespec.
        let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs())).map_or(UNIX_EPOCH, |s| s + nanos)
    }
}

fn kind(k: NodeKind) -> Kind {
    match k {
        NodeKind::Directory => Kind::Directory,
        NodeKind::Symlink => Kind::Symlink,
        NodeKind::CharDevice(_) => Kind::CharDevice,
        NodeKind::BlockDevice(_) => Kind::BlockDevice,
        NodeKind::Fifo => Kind::NamedPipe,
        NodeKind::Socket => Kind::Socket,
        // A type POSIX has not: an empty file, never read.
        NodeKind::File | NodeKind::Other => Kind::File,
    }
}

fn err(e: TreeError) -> bf::NodeError {
    match e {
        TreeError::Fs(FsError::NotFound) => bf::NodeError::NotFound,
        TreeError::Fs(FsError::NotADirectory) => bf::NodeError::NotADirectory,
        TreeError::Fs(FsError::IsADirectory) => bf::NodeError::IsADirectory,
        TreeError::Fs(FsError::NotASymlink) => bf::NodeError::NotASymlink,
        TreeError::InvalidPath(m) => bf::NodeError::InvalidArgument(m),
        TreeError::Unavailable(m) => bf::NodeError::Unsupported(m),
        TreeError::Fs(FsError::Unsupported(m)) => bf::NodeError::Unsupported(m),
        TreeError::Fs(FsError::Io(e)) | TreeError::Io(e) => bf::NodeError::Io(e),
        TreeError::Fs(other) => bf::NodeError::Corrupt(other.to_string()),
    }
}

impl FuseTree {
    fn attr(&self, n: &super::Node) -> Stat {
        let mut a = Stat::new(n.ino, kind(n.kind), n.size, n.perm);
        a.nlink = n.nlink.max(1);
        a.rdev = n.kind.rdev().map_or(0, |r| r.to_new());
        a.uid = n.uid;
        a.gid = n.gid;
        a.mtime = time(n.mtime);
        a.atime = time(n.atime);
        a.ctime = time(n.ctime);
        a.crtime = time(n.mtime);
        a.blksize = 1 << 20;
        if self.0.volatile(n.ino) {
            a.ttl = VOLATILE_TTL;
        }
        a
    }
}

impl ReadOnlyTree for FuseTree {
    fn root(&self) -> u64 {
        super::ROOT
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Stat, bf::NodeError> {
        let n = self.0.lookup(parent as Ino, name.as_bytes()).map_err(err)?;
        Ok(self.attr(&n))
    }

    fn getattr(&self, ino: u64) -> Result<Stat, bf::NodeError> {
        let n = self.0.getattr(ino).map_err(err)?;
        Ok(self.attr(&n))
    }

    fn readdir(&self, ino: u64, offset: u64, add: &mut dyn FnMut(DirEntry<'_>) -> bool) -> Result<(), bf::NodeError> {
        let listing = self.0.read_dir(ino).map_err(err)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for n in listing.entries.iter().skip(start) {
            if !add(DirEntry { ino: n.ino, kind: kind(n.kind), name: OsStr::from_bytes(&n.name) }) {
                break;
            }
        }
        Ok(())
    }

    fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize, bf::NodeError> {
        self.0.read(ino, offset, buf).map_err(err)
    }

    fn read_borrowed(&self, ino: u64, offset: u64, len: usize, reply: &mut dyn FnMut(&[u8])) {
        if let Some(e) = self.0.locate(ino, offset, len as u64).filter(|e| e.len() == len as u64 && e.is_backed()) {
            reply(e.bytes());
        }
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>, bf::NodeError> {
        self.0.read_link(ino).map_err(err)
    }

    fn xattrs(&self, ino: u64) -> Result<Vec<bf::Xattr>, bf::NodeError> {
        let all = self.0.xattrs(ino).map_err(err)?;
        Ok(all.into_iter().map(|x| bf::Xattr { name: x.name, value: x.value }).collect())
    }

    fn statfs(&self) -> Statfs {
        let s = self.0.statfs();
        Statfs { blocks: s.total_bytes / 4096, files: s.files, bsize: 4096, namelen: 255 }
    }
}
