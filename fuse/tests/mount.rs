//! Real FUSE mounts of the in-memory sample tree, checked through the kernel
//! with ordinary file system calls.

mod common;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use backchain_fuse::{DirectIo, Kind, MountError, MountOptions, ReadOnlyTree, mount, unmount};
use common::*;

fn errno(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error().unwrap_or_else(|| panic!("no errno in {e}")),
    }
}

fn mount_sample(dir: &tempfile::TempDir) -> (Arc<MemTree>, backchain_fuse::MountHandle, std::path::PathBuf) {
    let tree = Arc::new(MemTree::sample());
    let mnt = mountpoint(dir);
    let handle = mount(tree.clone(), &mnt, &MountOptions::default()).expect("mount");
    (tree, handle, mnt)
}

fn check_attr(path: &Path, want: &backchain_fuse::Stat) {
    let m = fs::symlink_metadata(path).unwrap();
    let kind = match want.kind {
        Kind::File => libc::S_IFREG,
        Kind::Directory => libc::S_IFDIR,
        Kind::Symlink => libc::S_IFLNK,
        Kind::CharDevice => libc::S_IFCHR,
        Kind::BlockDevice => libc::S_IFBLK,
        Kind::NamedPipe => libc::S_IFIFO,
        Kind::Socket => libc::S_IFSOCK,
    };
    assert_eq!(m.mode(), kind | u32::from(want.perm), "{path:?} mode");
    if want.kind != Kind::Directory {
        assert_eq!(m.size(), want.size, "{path:?} size");
    }
    assert_eq!(m.nlink(), u64::from(want.nlink), "{path:?} nlink");
    assert_eq!((m.uid(), m.gid()), (want.uid, want.gid), "{path:?} owner");
    assert_eq!(m.modified().unwrap(), want.mtime, "{path:?} mtime");
    assert_eq!(m.accessed().unwrap(), want.atime, "{path:?} atime");
    assert_eq!(m.blocks(), want.blocks, "{path:?} blocks");
}

#[test]
fn tree_reads_back_through_the_kernel() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let (tree, handle, mnt) = mount_sample(&dir);

    // The root listing and every attribute, recursively.
    let mut names: Vec<_> = fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    let mut want: Vec<_> = tree.children(ROOT).iter().map(|(n, _)| n.to_os_string()).collect();
    want.sort();
    assert_eq!(names, want);
    check_attr(&mnt, &tree.nodes[&ROOT].attr);
    let mut checked = 0;
    let mut stack = vec![(ROOT, mnt.clone())];
    while let Some((ino, path)) = stack.pop() {
        for (name, attr) in tree.children(ino) {
            let p = path.join(name);
            check_attr(&p, attr);
            checked += 1;
            if attr.kind == Kind::Directory {
                stack.push((attr.ino, p));
            }
        }
    }
    assert_eq!(checked, tree.nodes.len() - 1);
    // Inode numbers are the tree's, except the root's.
    assert_eq!(fs::metadata(mnt.join("hello.txt")).unwrap().ino(), tree.attr_of(ROOT, "hello.txt").ino);
    assert_eq!(fs::metadata(&mnt).unwrap().ino(), 1);

    // Contents.
    assert_eq!(fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
    assert_eq!(fs::read(mnt.join("empty.txt")).unwrap(), b"");
    assert_eq!(fs::read(mnt.join("docs/nested/deep/leaf.bin")).unwrap(), generated(7, 0, 10_000));
    let big = fs::read(mnt.join("big.bin")).unwrap();
    assert_eq!(big.len() as u64, BIG_SIZE);
    assert!(big == generated(BIG_SEED, 0, BIG_SIZE as usize), "big.bin differs from its generator");
    assert_eq!(fs::read(mnt.join("many/file-04321")).unwrap(), b"file-04321");

    // Symlink: target, and following it.
    assert_eq!(fs::read_link(mnt.join("link")).unwrap(), Path::new(LINK_TARGET));
    assert_eq!(fs::read(mnt.join("link")).unwrap(), fs::read(mnt.join("docs/readme.md")).unwrap());

    // Errors keep their own errno.
    assert_eq!(errno(fs::metadata(mnt.join("missing"))), libc::ENOENT);
    assert_eq!(errno(fs::read_dir(mnt.join("hello.txt"))), libc::ENOTDIR);
    assert_eq!(errno(fs::metadata(mnt.join("hello.txt/x"))), libc::ENOTDIR);
    assert_eq!(errno(fs::read_link(mnt.join("hello.txt"))), libc::EINVAL);
    assert_eq!(errno(File::open(&mnt).and_then(|mut f| f.read(&mut [0; 8]))), libc::EISDIR);

    // Reads past the end are clamped.
    let f = File::open(mnt.join("hello.txt")).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(f.read_at(&mut buf, 7).unwrap(), HELLO.len() - 7);
    assert_eq!(&buf[..HELLO.len() - 7], &HELLO[7..]);
    assert_eq!(f.read_at(&mut buf, 1000).unwrap(), 0);

    // df
    let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
    let want = tree.statfs();
    assert_eq!(st.blocks(), want.blocks);
    assert_eq!(st.block_size(), u64::from(want.bsize));
    assert_eq!(st.files(), want.files);
    assert_eq!((st.blocks_free(), st.blocks_available(), st.files_free()), (0, 0, 0));
    assert_eq!(st.name_max(), u64::from(want.namelen));
    assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));

    handle.unmount().unwrap();
    assert!(fuse_mounts_at(&mnt).is_empty());
}

#[test]
fn large_folder_lists_completely_with_dot_entries() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let (tree, _handle, mnt) = mount_sample(&dir);
    // Raw readdir through libc (nix), `.` and `..` included; the kernel asks
    // for many small chunks, resuming at each offset we gave it.
    let mut d =
        nix::dir::Dir::open(&mnt.join("many"), nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).unwrap();
    let mut seen = Vec::new();
    for entry in d.iter() {
        let entry = entry.unwrap();
        seen.push((entry.file_name().to_bytes().to_vec(), entry.ino()));
    }
    let total = seen.len();
    let unique: HashSet<_> = seen.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(unique.len(), total, "duplicate names in the listing");
    assert_eq!(total, MANY + 2);
    assert!(unique.contains(b".".as_slice()) && unique.contains(b"..".as_slice()));
    for (name, attr) in tree.children(tree.ino_of("many")) {
        let got = seen.iter().find(|(n, _)| n.as_slice() == name.as_bytes()).expect("entry listed");
        assert_eq!(got.1, attr.ino, "{name:?}");
    }
    // Listing twice gives the same order.
    let again: Vec<_> = fs::read_dir(mnt.join("many")).unwrap().map(|e| e.unwrap().file_name()).collect();
    let first: Vec<_> =
        seen.iter().filter(|(n, _)| n != b"." && n != b"..").map(|(n, _)| OsStr::from_bytes(n).to_owned()).collect();
    assert_eq!(again, first);
}

#[test]
fn concurrent_random_reads_match_the_source() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    // Through the page cache (big.bin is below the default direct-I/O size)
    // and with direct I/O, where every odd read reaches the server as asked.
    for direct_io in [MountOptions::default().direct_io, DirectIo::Always] {
        let handle = mount(Arc::new(MemTree::sample()), &mnt, &MountOptions { direct_io, ..MountOptions::default() })
            .expect("mount");
        random_reads_of_big_bin(&mnt.join("big.bin"));
        handle.unmount().unwrap();
    }
}

/// 8 threads read big.bin at random offsets (some past its end) and check
/// every byte against the generator.
fn random_reads_of_big_bin(path: &Path) {
    let workers: Vec<_> = (0..8u64)
        .map(|t| {
            let path = path.to_path_buf();
            thread::spawn(move || {
                let f = File::open(&path).unwrap();
                let mut rng = t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                for _ in 0..150 {
                    // Some ranges run past the end of the file.
                    let off = next() % (BIG_SIZE + 4096);
                    let len = (next() % (3 << 20)) as usize + 1;
                    let mut buf = vec![0u8; len];
                    let mut got = 0;
                    while got < len {
                        let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
                        if n == 0 {
                            break;
                        }
                        got += n;
                    }
                    let want_len = BIG_SIZE.saturating_sub(off).min(len as u64) as usize;
                    assert_eq!(got, want_len, "read at {off} of {len}");
                    assert!(buf[..got] == generated(BIG_SEED, off, got), "bytes differ at {off}+{len}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Whether the running kernel maps files opened with direct I/O
/// (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6).
fn kernel_maps_direct_io() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 6)
}

/// Maps `path` shared and read-only and returns its bytes.
fn read_through_a_shared_map(path: &Path) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a fresh read-only mapping of `len` bytes of an open file, read
    // within its bounds and unmapped before the file is closed.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED, "mmap of {path:?}: {}", std::io::Error::last_os_error());
        let bytes = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        bytes
    }
}

/// With direct I/O a read reaches the tree as the program asked it; through
/// the page cache it starts at a page boundary. By default only large files
/// bypass the cache; `Always` and `Never` apply to every file. Files read
/// with direct I/O can still be mapped, and their bytes, unaligned or
/// mapped, are the tree's.
#[test]
fn large_files_bypass_the_page_cache() {
    if !fuse_available() {
        return;
    }
    let maps = kernel_maps_direct_io();
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let lent = generated(LENT_SEED, 0, LENT_SIZE as usize);
    // (mode, lent.bin direct, hello.txt direct)
    for (mode, large, small) in
        [(DirectIo::FromSize(1 << 20), maps, false), (DirectIo::Always, true, true), (DirectIo::Never, false, false)]
    {
        let tree = Arc::new(MemTree::sample());
        let opts = MountOptions { direct_io: mode, ..MountOptions::default() };
        let handle = mount(tree.clone(), &mnt, &opts).expect("mount");
        for (name, want, direct) in [("lent.bin", &lent[..], large), ("hello.txt", HELLO, small)] {
            let f = File::open(mnt.join(name)).unwrap();
            let mut buf = [0u8; 5];
            f.read_exact_at(&mut buf, 7).unwrap();
            assert_eq!(buf, want[7..12], "{mode:?} {name}");
            let first = tree.reads_of(tree.ino_of(name)).first().copied();
            let asked = if direct { (7, 5) } else { (0, first.map_or(0, |r| r.1)) };
            assert_eq!(first, Some(asked), "{mode:?} {name}: first read the tree saw");
            if direct && !maps {
                continue;
            }
            assert!(read_through_a_shared_map(&mnt.join(name)) == want, "{mode:?} {name}: mapped bytes differ");
        }
        handle.unmount().unwrap();
    }
}

/// A tree that panics while reading fails that read with EIO, on fuser's
/// own threads (lent reads) as on the workers, and the mount serves on.
#[test]
fn a_panicking_read_fails_with_eio_and_the_mount_serves_on() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    for direct_io in [DirectIo::Always, DirectIo::Never] {
        let mnt = mountpoint(&dir);
        let handle = mount(Arc::new(MemTree::sample()), &mnt, &MountOptions { direct_io, ..MountOptions::default() })
            .expect("mount");
        // More panics than fuser has threads. A panic that killed the thread
        // would leave the next request unanswered: wait a bounded time.
        let (p, h) = (mnt.join("panics.bin"), mnt.join("hello.txt"));
        let reads = thread::spawn(move || {
            let errnos: Vec<i32> =
                (0..2 * MountOptions::default().fuse_threads + 1).map(|_| errno(fs::read(&p))).collect();
            (errnos, fs::read(&h).unwrap())
        });
        let t0 = Instant::now();
        while !reads.is_finished() {
            if t0.elapsed() > Duration::from_secs(20) {
                abort_fuse_connection(&mnt);
                let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
                panic!("{direct_io:?}: a read after a panic was never answered (fuser's thread died)");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let (errnos, hello) = reads.join().unwrap();
        assert!(errnos.iter().all(|&e| e == libc::EIO), "{direct_io:?}: {errnos:?}");
        assert_eq!(hello, HELLO, "{direct_io:?}");
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), MemTree::sample().children(ROOT).len());
        handle.unmount().unwrap();
        fs::remove_dir(&mnt).unwrap();
    }
}

#[test]
fn every_write_fails_with_erofs() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let (tree, _handle, mnt) = mount_sample(&dir);
    let hello = mnt.join("hello.txt");
    let erofs = |what: &str, r: std::io::Result<()>| assert_eq!(errno(r), libc::EROFS, "{what}");
    erofs("create", File::create(mnt.join("new.txt")).map(drop));
    erofs("open for writing", OpenOptions::new().write(true).open(&hello).map(drop));
    erofs("open for appending", OpenOptions::new().append(true).open(&hello).map(drop));
    erofs("mkdir", fs::create_dir(mnt.join("newdir")));
    erofs("unlink", fs::remove_file(&hello));
    erofs("rmdir", fs::remove_dir(mnt.join("docs/nested/deep")));
    erofs("rename", fs::rename(&hello, mnt.join("renamed.txt")));
    erofs("chmod", fs::set_permissions(&hello, fs::Permissions::from_mode(0o777)));
    erofs("truncate", nix::unistd::truncate(&hello, 0).map_err(std::io::Error::from));
    erofs("symlink", std::os::unix::fs::symlink("x", mnt.join("newlink")));
    erofs("hard link", fs::hard_link(&hello, mnt.join("hardlink")));
    erofs("chown", std::os::unix::fs::chown(&hello, Some(1), Some(1)));
    erofs(
        "utimes",
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &hello,
            &nix::sys::time::TimeSpec::new(0, 0),
            &nix::sys::time::TimeSpec::new(0, 0),
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        )
        .map_err(std::io::Error::from),
    );
    // access(2) agrees: no writing, no executing a file without x bits.
    use nix::unistd::{AccessFlags, access};
    assert_eq!(access(&hello, AccessFlags::W_OK), Err(nix::errno::Errno::EROFS));
    assert_eq!(access(&hello, AccessFlags::X_OK), Err(nix::errno::Errno::EACCES));
    assert_eq!(access(&hello, AccessFlags::R_OK), Ok(()));
    assert_eq!(access(&mnt.join("docs"), AccessFlags::X_OK), Ok(()));
    // Nothing changed.
    assert_eq!(fs::read(&hello).unwrap(), HELLO);
    check_attr(&hello, tree.attr_of(ROOT, "hello.txt"));
    assert!(!mnt.join("new.txt").exists());
}

#[test]
fn slow_read_does_not_stall_other_requests() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let (tree, _handle, mnt) = mount_sample(&dir);
    // Warm nothing: every request below goes to the server.
    let readers: Vec<_> = (0..4u64)
        .map(|i| {
            let path = mnt.join("slow.bin");
            thread::spawn(move || {
                let f = File::open(path).unwrap();
                let off = i * (SLOW_SIZE / 4);
                let mut buf = vec![0u8; 4096];
                f.read_exact_at(&mut buf, off).unwrap();
                assert!(buf == generated(3, off, 4096));
            })
        })
        .collect();
    let t0 = Instant::now();
    while tree.gate.started.load(Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the slow read never reached the tree");
        thread::sleep(Duration::from_millis(5));
    }
    // While the slow reads block, other requests are answered at once.
    let t1 = Instant::now();
    assert_eq!(fs::read_dir(mnt.join("many")).unwrap().count(), MANY);
    assert_eq!(
        fs::metadata(mnt.join("docs/readme.md")).unwrap().len(),
        tree.attr_of(tree.ino_of("docs"), "readme.md").size
    );
    assert_eq!(fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
    assert_eq!(fs::read(mnt.join("docs/nested/deep/leaf.bin")).unwrap(), generated(7, 0, 10_000));
    let fast = t1.elapsed();
    assert!(
        fast < SLOW_READ / 2 && readers.iter().any(|r| !r.is_finished()),
        "listing and reads took {fast:?} while a slow read was in flight"
    );
    tree.gate.release();
    for r in readers {
        r.join().unwrap();
    }
}

#[test]
fn unmount_leaves_no_mount_and_the_place_is_reusable() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let tree = Arc::new(MemTree::sample());
    for round in 0..2 {
        let handle = mount(tree.clone(), &mnt, &MountOptions::default()).expect("mount");
        assert_eq!(fuse_mounts_at(&mnt).len(), 1, "round {round}");
        // A second mount at the same live place is refused.
        assert!(matches!(mount(tree.clone(), &mnt, &MountOptions::default()), Err(MountError::AlreadyMounted(_))));
        assert_eq!(fs::read(mnt.join("hello.txt")).unwrap(), HELLO);
        if round == 0 {
            handle.unmount().unwrap()
        } else {
            drop(handle)
        }
        assert!(fuse_mounts_at(&mnt).is_empty(), "round {round}: still mounted");
        assert!(fs::read_dir(&mnt).unwrap().next().is_none(), "the bare folder shows again");
    }

    // unmount(path) from outside; the handle sees it and drops quietly.
    let handle = mount(tree.clone(), &mnt, &MountOptions::default()).unwrap();
    unmount(&mnt).unwrap();
    assert!(fuse_mounts_at(&mnt).is_empty());
    assert!(matches!(unmount(&mnt), Err(MountError::NotMounted(_))));
    let t0 = Instant::now();
    while handle.is_serving() {
        assert!(t0.elapsed() < Duration::from_secs(5), "session did not end after unmount");
        thread::sleep(Duration::from_millis(10));
    }
    handle.unmount().unwrap();

    // Busy: unmount(path) refuses; the handle detaches, and an open file
    // keeps working until closed.
    let handle = mount(tree.clone(), &mnt, &MountOptions::default()).unwrap();
    let open = File::open(mnt.join("big.bin")).unwrap();
    assert!(matches!(unmount(&mnt), Err(MountError::Busy(_))));
    handle.unmount().unwrap();
    assert!(fuse_mounts_at(&mnt).is_empty());
    let mut buf = vec![0u8; 5000];
    open.read_exact_at(&mut buf, 123_456).unwrap();
    assert!(buf == generated(BIG_SEED, 123_456, 5000));
    drop(open);
}

/// Runs `cmd` as the unprivileged user nobody; returns its exit status and stderr.
fn as_nobody(args: &[&OsStr]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .output()
        .expect("setpriv (util-linux)");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn allow_other_lets_others_in_with_permission_checks() {
    if !fuse_available() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("\n*** SKIPPING allow_other test: it switches users, which needs root ***\n");
        return;
    }
    let dir = tempdir();
    // nobody must be able to reach the mount point.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = mountpoint(&dir);
    let tree = Arc::new(MemTree::sample());
    let cat = |p: &Path| as_nobody(&[OsStr::new("cat"), p.as_os_str()]);

    let private = mount(tree.clone(), &mnt, &MountOptions::default()).unwrap();
    let (ok, err) = cat(&mnt.join("hello.txt"));
    assert!(!ok && err.contains("Permission denied"), "a private mount let another user in: {err}");
    private.unmount().unwrap();

    let opts = MountOptions { allow_other: true, ..MountOptions::default() };
    let shared = mount(tree.clone(), &mnt, &opts).unwrap();
    let line = fuse_mounts_at(&mnt).pop().unwrap();
    assert!(line.contains("allow_other") && line.contains("default_permissions"), "{line}");
    let (ok, err) = cat(&mnt.join("hello.txt"));
    assert!(ok, "0644 file unreadable by another user: {err}");
    let (ok, err) = cat(&mnt.join("secret.txt"));
    assert!(!ok && err.contains("Permission denied"), "0600 root file readable by another user: {err}");
    assert_eq!(errno(File::open(mnt.join("new")).map(drop)), libc::ENOENT);
    shared.unmount().unwrap();
    assert_eq!(ErrorKind::NotFound, fs::metadata(mnt.join("hello.txt")).unwrap_err().kind());
}

/// A folder whose entries grow while mounted, like a repository's list of
/// backups: its attributes carry a zero ttl.
struct Growing {
    count: std::sync::atomic::AtomicU64,
}

const GROWING_ROOT: u64 = 2;

impl Growing {
    fn entry(&self, i: u64) -> backchain_fuse::Stat {
        let mut a = backchain_fuse::Stat::new(10 + i, Kind::File, i, 0o644);
        a.mtime = time(1_700_000_000 + i, 0);
        a
    }
}

impl ReadOnlyTree for Growing {
    fn root(&self) -> u64 {
        GROWING_ROOT
    }
    fn lookup(&self, parent: u64, name: &OsStr) -> Result<backchain_fuse::Stat, backchain_fuse::NodeError> {
        let n = self.count.load(Ordering::SeqCst);
        let i = name.to_str().and_then(|s| s.strip_prefix("backup-")).and_then(|s| s.parse::<u64>().ok());
        match i {
            Some(i) if parent == GROWING_ROOT && i < n => Ok(self.entry(i)),
            _ => Err(backchain_fuse::NodeError::NotFound),
        }
    }
    fn getattr(&self, ino: u64) -> Result<backchain_fuse::Stat, backchain_fuse::NodeError> {
        if ino == GROWING_ROOT {
            let mut a = backchain_fuse::Stat::new(ino, Kind::Directory, 0, 0o755);
            a.mtime = time(1_700_000_000 + self.count.load(Ordering::SeqCst), 0);
            a.ttl = Duration::ZERO;
            return Ok(a);
        }
        Ok(self.entry(ino.checked_sub(10).ok_or(backchain_fuse::NodeError::NotFound)?))
    }
    fn readdir(
        &self,
        _ino: u64,
        offset: u64,
        add: &mut dyn FnMut(backchain_fuse::DirEntry<'_>) -> bool,
    ) -> Result<(), backchain_fuse::NodeError> {
        for i in offset..self.count.load(Ordering::SeqCst) {
            let name = format!("backup-{i}");
            if !add(backchain_fuse::DirEntry { ino: 10 + i, kind: Kind::File, name: OsStr::new(&name) }) {
                break;
            }
        }
        Ok(())
    }
    fn read(&self, _: u64, _: u64, _: &mut [u8]) -> Result<usize, backchain_fuse::NodeError> {
        Ok(0)
    }
    fn readlink(&self, _: u64) -> Result<Vec<u8>, backchain_fuse::NodeError> {
        Err(backchain_fuse::NodeError::NotASymlink)
    }
}

#[test]
fn a_zero_ttl_folder_shows_new_entries() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let tree = Arc::new(Growing { count: 2.into() });
    let opts = MountOptions { fsname: "my repo,rw".into(), ..MountOptions::default() };
    let _handle = mount(tree.clone(), &mnt, &opts).unwrap();
    // The source name shows (made safe), and no option leaked out of it.
    let line = fuse_mounts_at(&mnt).pop().unwrap();
    let fields: Vec<&str> = line.split(" - ").nth(1).unwrap().split(' ').collect();
    assert_eq!(fields[1], "my_repo_rw", "{line}");
    assert!(line.split(' ').nth(5).unwrap().split(',').any(|o| o == "ro"), "{line}");
    let list = || {
        let mut v: Vec<_> = fs::read_dir(&mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    assert_eq!(list(), ["backup-0", "backup-1"]);
    assert_eq!(errno(fs::metadata(mnt.join("backup-2"))), libc::ENOENT);
    assert_eq!(fs::metadata(&mnt).unwrap().modified().unwrap(), time(1_700_000_002, 0));
    tree.count.store(3, Ordering::SeqCst);
    assert_eq!(list(), ["backup-0", "backup-1", "backup-2"]);
    assert_eq!(fs::metadata(mnt.join("backup-2")).unwrap().len(), 2);
    assert_eq!(fs::metadata(&mnt).unwrap().modified().unwrap(), time(1_700_000_003, 0));
}

#[test]
fn listings_carry_attributes_and_survive_a_damaged_entry() {
    if !fuse_available() {
        return;
    }
    let dir = tempdir();
    let mnt = mountpoint(&dir);
    let mut tree = MemTree::sample();
    let broken = tree.ino_of("many/file-00007");
    tree.broken.insert(broken);
    let tree = Arc::new(tree);
    let _handle = mount(tree.clone(), &mnt, &MountOptions::default()).unwrap();
    let many = tree.ino_of("many");
    let want = tree.children(many);
    let before = tree.lookups.load(Ordering::SeqCst);
    let mut listed = 0;
    for entry in fs::read_dir(mnt.join("many")).unwrap() {
        let entry = entry.unwrap();
        listed += 1;
        let (_, attr) = want.iter().find(|(n, _)| *n == entry.file_name()).expect("listed name exists");
        if attr.ino == broken {
            assert_eq!(errno(entry.metadata()), libc::EIO);
        } else {
            check_attr(&entry.path(), attr);
        }
    }
    assert_eq!(listed, MANY, "the damaged entry is still listed");
    // Stat'ing every entry after listing needed (almost) no lookups.
    let lookups = tree.lookups.load(Ordering::SeqCst) - before;
    assert!(lookups < 50, "{lookups} lookups for a listing of {MANY} entries");
}
