//! The FUSE side: answers kernel requests from a [`ReadOnlyTree`]. A read of
//! bytes the tree lends from a mapped image is answered at once on the
//! thread that took it (a hand-off to a worker cost more than the copy: 4 KiB
//! direct-I/O reads ran 1.6x faster inline). Every other request that may
//! touch the tree runs on a worker pool (reads on one, everything else on
//! another), so a slow read never stalls a listing and a burst of readahead
//! never starves metadata requests. Every request that would modify
//! anything fails with EROFS.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::nodes::{Inodes, entry_attr, errno, list_dir, open_flags};
use crate::options::DirectIo;
use crate::pool::Pool;
use crate::tree::{Kind, NodeError, ReadOnlyTree};
use crate::xattr::{reply_sized, visible};

/// Readahead we ask the kernel for; it may grant less.
pub(crate) const MAX_READAHEAD: u32 = 1 << 20;
/// Background requests (readahead) the kernel may have in flight at once.
const MAX_BACKGROUND: u16 = 64;

thread_local! {
    /// Each read worker's buffer, as large as the largest read it served
    /// (bounded by the kernel's maximum request size).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub(crate) struct Server {
    tree: Arc<dyn ReadOnlyTree>,
    root: u64,
    reads: Pool,
    meta: Pool,
    /// See `MountOptions::direct_io`; `FromSize` falls back to `Never` at
    /// init where the kernel cannot map direct-I/O files.
    direct_io: DirectIo,
}

impl Server {
    pub(crate) fn new(
        tree: Arc<dyn ReadOnlyTree>,
        read_threads: usize,
        meta_threads: usize,
        direct_io: DirectIo,
    ) -> std::io::Result<Self> {
        let root = tree.root();
        Ok(Server {
            tree,
            root,
            reads: Pool::new("backchain-read", read_threads)?,
            meta: Pool::new("backchain-meta", meta_threads)?,
            direct_io,
        })
    }

    /// Runs `f` on the metadata pool with the tree and the inode mapping.
    fn meta(&self, f: impl FnOnce(&Inodes, &dyn ReadOnlyTree) + Send + 'static) {
        let tree = Arc::clone(&self.tree);
        let inodes = Inodes { root: self.root };
        self.meta.run(move || f(&inodes, &*tree));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.reads.shutdown();
        self.meta.shutdown();
    }
}

impl Filesystem for Server {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        // Lookups and listings in one folder may run in parallel.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Every listing carries its entries' attributes: file managers, `ls -l`,
        // `find` and `du` stat every entry, and a lookup round trip per entry
        // costs far more than a getattr in the tree (measured: 5000 entries
        // listed and stat'ed in 15 ms instead of 200 ms).
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        // With direct I/O, shared maps of a file still work (Linux 6.6+;
        // private maps, as for running a program, work anyway).
        if self.direct_io != DirectIo::Never
            && config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP).is_err()
            && matches!(self.direct_io, DirectIo::FromSize(_))
        {
            // Shared maps of direct-I/O files would fail (ENODEV): a program
            // that maps a large file would break. Only an explicit `Always`
            // goes ahead.
            self.direct_io = DirectIo::Never;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name: OsString = name.to_owned();
        self.meta(move |inodes, tree| {
            match tree.lookup(inodes.to_tree(parent), &name).and_then(|a| Ok((inodes.file_attr(&a)?, a.ttl))) {
                Ok((attr, ttl)) => reply.entry(&ttl, &attr, Generation(0)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.meta(move |inodes, tree| {
            match tree.getattr(inodes.to_tree(ino)).and_then(|a| Ok((inodes.file_attr(&a)?, a.ttl))) {
                Ok((attr, ttl)) => reply.attr(&ttl, &attr),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.meta(move |inodes, tree| match tree.readlink(inodes.to_tree(ino)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            reply.error(Errno::EROFS);
            return;
        }
        let direct_io_from = self.direct_io.min_size();
        self.meta(move |inodes, tree| match tree.getattr(inodes.to_tree(ino)) {
            // The handle carries the size seen at open, so reads are clamped
            // at the end of the file without asking the tree again.
            Ok(attr) if attr.kind == Kind::File => {
                let flags = if direct_io_from.is_some_and(|min| attr.size >= min) {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    open_flags(&attr)
                };
                reply.opened(FileHandle(attr.size), flags)
            }
            Ok(attr) if attr.kind == Kind::Directory => reply.error(Errno::EISDIR),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file_size = fh.0;
        if offset >= file_size || size == 0 {
            reply.data(&[]);
            return;
        }
        // Bounded by the kernel's max read size (at most a few MiB).
        let len = u64::from(size).min(file_size - offset) as usize;
        let inodes = Inodes { root: self.root };
        // Bytes stored as they are in a mapped image go out at once, without a copy.
        let mut reply = Some(reply);
        let lent = catch_unwind(AssertUnwindSafe(|| {
            self.tree.read_borrowed(inodes.to_tree(ino), offset, len, &mut |bytes| {
                if let Some(r) = reply.take() {
                    r.data(bytes);
                }
            })
        }));
        // A panicking tree must not take fuser's thread down with it (as the
        // pool's workers survive one): an unsent reply dropped here is
        // answered with EIO by fuser.
        if lent.is_err() {
            return;
        }
        // Still here: nothing was lent; read on a worker.
        let Some(reply) = reply else { return };
        let tree = Arc::clone(&self.tree);
        self.reads.run(move || {
            READ_BUF.with_borrow_mut(|buf| {
                // Reused per worker: a fresh MiB per request costs page faults.
                if buf.len() < len {
                    buf.resize(len, 0);
                }
                let buf = &mut buf[..len];
                match tree.read(inodes.to_tree(ino), offset, buf) {
                    Ok(n) if n <= len => reply.data(&buf[..n]),
                    Ok(n) => reply.error(errno(&NodeError::Corrupt(format!("read returned {n} bytes for {len}")))),
                    Err(e) => reply.error(errno(&e)),
                }
            })
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            reply.error(Errno::EISDIR);
            return;
        }
        self.meta(move |inodes, tree| match tree.getattr(inodes.to_tree(ino)) {
            Ok(attr) if attr.kind == Kind::Directory => reply.opened(FileHandle(0), open_flags(&attr)),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.meta(move |inodes, tree| {
            let mut add = |ino: u64, next: u64, kind: FileType, name: &OsStr| reply.add(INodeNo(ino), next, kind, name);
            match list_dir(*inodes, tree, inodes.to_tree(ino), offset, &mut add) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        self.meta(move |inodes, tree| {
            let mut add = |ino: u64, next: u64, kind: FileType, name: &OsStr| {
                let (attr, ttl) = entry_attr(*inodes, tree, ino, kind);
                reply.add(INodeNo(ino), next, name, &ttl, &attr, Generation(0))
            };
            match list_dir(*inodes, tree, inodes.to_tree(ino), offset, &mut add) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.meta(move |_, tree| {
            let s = tree.statfs();
            reply.statfs(s.blocks, 0, 0, s.files, 0, s.bsize, s.namelen, s.bsize);
        });
    }

    /// Only asked without `default_permissions` (a private mount, where
    /// the mounting user may read everything): writing is never possible,
    /// and executing needs an x bit, as the kernel checks at exec.
    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            reply.error(Errno::EROFS);
            return;
        }
        if !mask.contains(AccessFlags::X_OK) {
            reply.ok();
            return;
        }
        self.meta(move |inodes, tree| match tree.getattr(inodes.to_tree(ino)) {
            Ok(attr) if attr.kind == Kind::File && attr.perm & 0o111 == 0 => reply.error(Errno::EACCES),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        });
    }

    // Everything below would modify the tree.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (name, root) = (name.as_bytes().to_vec(), req.uid() == 0);
        self.meta(move |inodes, tree| match tree.xattrs(inodes.to_tree(ino)) {
            Ok(all) => match all.into_iter().find(|x| x.name == name && visible(&x.name, root)) {
                Some(x) => reply_sized(reply, &x.value, size),
                None => reply.error(Errno::ENODATA),
            },
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let root = req.uid() == 0;
        self.meta(move |inodes, tree| match tree.xattrs(inodes.to_tree(ino)) {
            Ok(all) => {
                let mut names = Vec::new();
                for x in all.iter().filter(|x| visible(&x.name, root)) {
                    names.extend_from_slice(&x.name);
                    names.push(0);
                }
                reply_sized(reply, &names, size);
            }
            Err(e) => reply.error(errno(&e)),
        });
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::listable;
    use crate::tree::{DirEntry, Stat};

    /// A folder of `n` entries named by number, inode numbers from 10.
    struct Numbered(u64);

    impl ReadOnlyTree for Numbered {
        fn root(&self) -> u64 {
            7
        }
        fn lookup(&self, _: u64, _: &OsStr) -> Result<Stat, NodeError> {
            Err(NodeError::NotFound)
        }
        fn getattr(&self, ino: u64) -> Result<Stat, NodeError> {
            Ok(Stat::new(ino, Kind::Directory, 0, 0o755))
        }
        fn readdir(&self, _: u64, offset: u64, add: &mut dyn FnMut(DirEntry<'_>) -> bool) -> Result<(), NodeError> {
            for i in offset..self.0 {
                let name = i.to_string();
                if !add(DirEntry { ino: 10 + i, kind: Kind::File, name: OsStr::new(&name) }) {
                    break;
                }
            }
            Ok(())
        }
        fn read(&self, _: u64, _: u64, _: &mut [u8]) -> Result<usize, NodeError> {
            Err(NodeError::IsADirectory)
        }
        fn readlink(&self, _: u64) -> Result<Vec<u8>, NodeError> {
            Err(NodeError::NotASymlink)
        }
    }

    /// Lists the root in chunks of at most `chunk` entries, resuming at the
    /// offset of the last entry each time, as the kernel does.
    fn list_in_chunks(n: u64, chunk: usize) -> Vec<(u64, String)> {
        let tree = Numbered(n);
        let inodes = Inodes { root: 7 };
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let mut got: Vec<(u64, u64, String)> = Vec::new();
            list_dir(inodes, &tree, 7, offset, &mut |ino, next, _, name| {
                got.push((ino, next, name.to_string_lossy().into_owned()));
                got.len() >= chunk
            })
            .unwrap();
            let Some(last) = got.last() else { break };
            offset = last.1;
            all.extend(got.into_iter().map(|(ino, _, name)| (ino, name)));
        }
        all
    }

    #[test]
    fn listing_resumes_at_every_offset() {
        for chunk in [1, 2, 3, 7, 1000] {
            let all = list_in_chunks(25, chunk);
            assert_eq!(all.len(), 27, "chunk {chunk}");
            assert_eq!(all[0], (1, ".".to_string()));
            assert_eq!(all[1], (1, "..".to_string()));
            for (i, (ino, name)) in all[2..].iter().enumerate() {
                assert_eq!((*ino, name.clone()), (10 + i as u64, i.to_string()), "chunk {chunk}");
            }
        }
    }

    #[test]
    fn root_maps_to_fuse_root_and_reserved_numbers_are_refused() {
        let inodes = Inodes { root: 7 };
        assert_eq!(inodes.to_kernel(7).unwrap(), 1);
        assert_eq!(inodes.to_tree(INodeNo(1)), 7);
        assert_eq!(inodes.to_kernel(42).unwrap(), 42);
        assert_eq!(inodes.to_tree(INodeNo(42)), 42);
        assert_eq!(inodes.to_kernel(0).unwrap_err().errno(), libc::EIO);
        assert_eq!(inodes.to_kernel(1).unwrap_err().errno(), libc::EIO);
        // A tree whose root is 1 needs no mapping at all.
        assert_eq!(Inodes { root: 1 }.to_kernel(1).unwrap(), 1);
    }

    #[test]
    fn errors_map_to_their_own_errno() {
        let cases = [
            (NodeError::NotFound, libc::ENOENT),
            (NodeError::NotADirectory, libc::ENOTDIR),
            (NodeError::IsADirectory, libc::EISDIR),
            (NodeError::NotASymlink, libc::EINVAL),
            (NodeError::InvalidArgument("x".into()), libc::EINVAL),
            (NodeError::PermissionDenied, libc::EACCES),
            (NodeError::NameTooLong, libc::ENAMETOOLONG),
            (NodeError::Unsupported("x".into()), libc::EOPNOTSUPP),
            (NodeError::Corrupt("x".into()), libc::EIO),
            (NodeError::Io(std::io::Error::other("x")), libc::EIO),
        ];
        for (e, want) in cases {
            assert_eq!(e.errno(), want, "{e}");
        }
    }

    #[test]
    fn unlistable_names_are_skipped() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(!listable(OsStr::new(bad)), "{bad:?}");
        }
        assert!(listable(OsStr::new("...")));
    }
}
