//! XFS through the `Filesystem` trait, the CLI and a FUSE mount, against
//! images built by the real mkfs.xfs: v5 (CRC, bigtime, nrext64, reflink)
//! filled through a kernel loop mount, v4 (`-m crc=0`, which this kernel no
//! longer mounts) from a protofile. Every file's SHA-256, every folder's
//! entries, symlink targets, sizes, modes, owners, link counts and (where
//! the builder keeps them) timestamps must match the source tree; xfs_db
//! confirms that each folder format and a B+tree data fork really occur;
//! xfs_logprint says whether the log is clean.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use backchain::block::{RawFile, ReadAt};
use backchain::volume::fs::{self, Filesystem, FsError, FsKind, NodeId, NodeKind, Rdev};
use common::{FuseMount, LoopMount, Rng, backchain, mkfs_xfs, random, run, run_fail, sha_fs, tempdir, tool, write};
use sha2::{Digest, Sha256};

/// Names long enough that a few hundred fill several folder blocks.
fn long_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}-{}", "n".repeat(30))
}

/// The source tree. `proto`: built by a protofile, which has no hard links,
/// no sticky bit and no spaces in names.
fn build_tree(root: &Path, proto: bool) {
    let mut rng = Rng::new(17);
    write(&root.join("hello.txt"), b"hello, xfs\n");
    write(&root.join("empty"), b"");
    write(&root.join("Ünïcödé-ファイル-📁/naïve-café.txt"), &random(&mut rng, 5000));
    let mut deep = root.join("deep");
    for i in 0..12 {
        deep = deep.join(format!("level-{i:02}"));
    }
    write(&deep.join("bottom.bin"), &random(&mut rng, 777));
    for (k, size) in [1usize, 511, 4095, 4096, 4097, 65536, 200_000, 1_000_003].into_iter().enumerate() {
        write(&root.join(format!("sizes/f{k}-{size}")), &random(&mut rng, size));
    }
    // Sparse: holes at the start, between and after two data islands.
    let island = random(&mut rng, 100_000);
    let f = File::create(root.join("sparse.img")).unwrap();
    f.set_len(12 << 20).unwrap();
    f.write_all_at(&island, 1 << 20).unwrap();
    f.write_all_at(&island, 9 << 20).unwrap();
    // Short form, block, leaf and node folders.
    for i in 0..3 {
        write(&root.join(format!("sf/s{i}")), &random(&mut rng, i * 10));
    }
    for i in 0..30 {
        write(&root.join(format!("blk/file-{i:02}")), &random(&mut rng, i));
    }
    for i in 0..250 {
        write(&root.join("leaf").join(long_name("leaf", i)), &random(&mut rng, i % 7));
    }
    // Node: more hash entries (8 bytes each) than one leaf block holds,
    // with short names so the few data blocks fit in the inode's extents.
    for i in 0..700 {
        write(&root.join(format!("node/n{i:04}")), b"");
    }
    symlink("hello.txt", root.join("short-link")).unwrap();
    // Longer than any inode's literal area: stored in a block.
    let long = format!("{}/target.txt", "long-path-component".repeat(36));
    assert!(long.len() > 600 && long.len() < 1024);
    symlink(&long, root.join("long-link")).unwrap();
    symlink("deep/level-00", root.join("dir-link")).unwrap();
    common::special_modes_and_owners(root);
    run(tool("mkfifo").arg(root.join("a-fifo")));
    run(tool("mknod").arg(root.join("null-dev")).args(["c", "1", "3"]));
    if !proto {
        std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o1444)).unwrap();
        std::fs::hard_link(root.join("hello.txt"), root.join("hard-link-to-hello")).unwrap();
        std::fs::hard_link(root.join("sizes/f4-4097"), root.join("blk/hard-link")).unwrap();
        // Nanoseconds, and a time past 2038 (bigtime).
        let at = |s: u64, ns: u32| UNIX_EPOCH + Duration::new(s, ns);
        File::open(root.join("hello.txt")).unwrap().set_modified(at(1_234_567_890, 123_456_789)).unwrap();
        write(&root.join("future.txt"), b"from 2100\n");
        File::open(root.join("future.txt")).unwrap().set_modified(at(4_102_444_800, 5)).unwrap();
        write(&root.join("old.txt"), b"from 1969\n");
        let before = UNIX_EPOCH - Duration::new(1_000_000, 0) + Duration::new(0, 7);
        File::open(root.join("old.txt")).unwrap().set_modified(before).unwrap();
    }
}

/// The protofile (mkfs.xfs -p) that recreates `src` with modes and owners.
fn protofile(src: &Path, out: &mut String, depth: usize) {
    let mut names: Vec<_> = std::fs::read_dir(src).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    for n in names {
        let p = src.join(&n);
        let md = std::fs::symlink_metadata(&p).unwrap();
        let m = md.mode();
        let perm = format!(
            "{}{}{:03o}",
            if m & 0o4000 != 0 { 'u' } else { '-' },
            if m & 0o2000 != 0 { 'g' } else { '-' },
            m & 0o777
        );
        let (name, own) = (n.to_str().unwrap(), format!("{} {}", md.uid(), md.gid()));
        let pad = " ".repeat(depth);
        let t = md.file_type();
        if t.is_dir() {
            out.push_str(&format!("{pad}{name} d{perm} {own}\n"));
            protofile(&p, out, depth + 1);
            out.push_str(&format!("{pad}$\n"));
        } else if t.is_symlink() {
            let target = std::fs::read_link(&p).unwrap();
            out.push_str(&format!("{pad}{name} l{perm} {own} {}\n", target.display()));
        } else if t.is_fifo() {
            out.push_str(&format!("{pad}{name} p{perm} {own}\n"));
        } else if t.is_char_device() {
            let r = md.rdev();
            out.push_str(&format!("{pad}{name} c{perm} {own} {} {}\n", r >> 8, r & 0xff));
        } else {
            out.push_str(&format!("{pad}{name} -{perm} {own} {}\n", p.display()));
        }
    }
}

fn open(img: &Path) -> Arc<dyn Filesystem> {
    let vol: Arc<dyn ReadAt> = Arc::new(RawFile::open(img).unwrap());
    fs::open(vol).unwrap().expect("XFS recognised")
}

#[derive(Default)]
struct Checked {
    files: usize,
    links: usize,
    dirs: usize,
    others: usize,
}

/// Compares folder `dir` of `fs` with the source folder `src`, recursively.
/// `times`: the builder kept timestamps (the loop mount; a protofile
/// stamps mkfs's own time).
fn compare(
    fs: &dyn Filesystem,
    dir: NodeId,
    src: &Path,
    times: bool,
    skip: &[u8],
    seen: &mut BTreeMap<u64, NodeId>,
    c: &mut Checked,
) {
    let mut entries = fs.read_dir(dir).unwrap();
    entries.retain(|e| e.name != skip);
    let mut got: Vec<Vec<u8>> = entries.iter().map(|e| e.name.clone()).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> =
        std::fs::read_dir(src).unwrap().map(|e| e.unwrap().file_name().into_encoded_bytes()).collect();
    want.sort();
    assert_eq!(got, want, "listing of {}", src.display());
    c.dirs += 1;
    for e in entries {
        let path = src.join(std::str::from_utf8(&e.name).unwrap());
        let md = std::fs::symlink_metadata(&path).unwrap();
        let a = &e.attr;
        assert_eq!(fs.lookup(dir, &e.name).unwrap().attr, *a, "lookup {}", path.display());
        assert_eq!(fs.stat(a.node).unwrap(), *a);
        assert_eq!(u32::from(a.perm), md.mode() & 0o7777, "mode of {}", path.display());
        assert_eq!((a.uid, a.gid), (md.uid(), md.gid()), "owner of {}", path.display());
        if times {
            assert_eq!((a.mtime.secs, a.mtime.nanos), (md.mtime(), md.mtime_nsec() as u32), "mtime {}", path.display());
        }
        if let Some(&prev) = seen.get(&md.ino()) {
            assert_eq!(prev, a.node, "hard link {}", path.display());
        }
        seen.insert(md.ino(), a.node);
        if !md.is_dir() {
            assert_eq!(u64::from(a.nlink), md.nlink(), "links of {}", path.display());
        }
        let t = md.file_type();
        if t.is_symlink() {
            assert_eq!(a.kind, NodeKind::Symlink);
            let target = std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes();
            assert_eq!(fs.read_link(a.node).unwrap(), target, "{}", path.display());
            assert_eq!(a.size, target.len() as u64);
            c.links += 1;
        } else if t.is_fifo() || t.is_char_device() {
            let want =
                if t.is_fifo() { NodeKind::Fifo } else { NodeKind::CharDevice(Rdev::from_new(md.rdev() as u32)) };
            assert_eq!(a.kind, want, "{}", path.display());
            assert!(fs.read(a.node, 0, &mut [0u8; 4]).is_err());
            c.others += 1;
        } else if md.is_dir() {
            assert_eq!(a.kind, NodeKind::Directory);
            assert!(matches!(fs.read(a.node, 0, &mut [0u8; 4]), Err(FsError::IsADirectory)));
            compare(fs, a.node, &path, times, skip, seen, c);
        } else {
            assert_eq!(a.kind, NodeKind::File);
            assert_eq!(a.size, md.len(), "size of {}", path.display());
            let want: [u8; 32] = Sha256::digest(std::fs::read(&path).unwrap()).into();
            assert_eq!(sha_fs(fs, a.node, a.size), want, "content of {}", path.display());
            assert!(matches!(fs.read_link(a.node), Err(FsError::NotASymlink)));
            c.files += 1;
        }
    }
}

fn xfs_db(img: &Path, cmds: &[&str]) -> String {
    let mut c = tool("xfs_db");
    c.arg("-r");
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    String::from_utf8(run(c.arg(img)).stdout).unwrap()
}

/// The folder format of `path` as xfs_db sees it: the inode's fork format,
/// then for extent folders which of the leaf (32 GiB) and free-index
/// (64 GiB) ranges hold blocks.
fn dir_format(img: &Path, path: &str) -> &'static str {
    let out = xfs_db(img, &[&format!("path {path}"), "print core.format", "bmap"]);
    let bs: u64 = xfs_db(img, &["sb 0", "print blocksize"]).trim().trim_start_matches("blocksize = ").parse().unwrap();
    let (leaf, free) = ((32u64 << 30) / bs, (64u64 << 30) / bs);
    let has = |off: u64| out.contains(&format!("data offset {off} "));
    if out.contains("core.format = 1 (local)") {
        "shortform"
    } else if out.contains("core.format = 3 (btree)") {
        "btree"
    } else if has(free) {
        "node"
    } else if has(leaf) {
        "leaf"
    } else {
        "block"
    }
}

fn fork_format(img: &Path, path: &str) -> String {
    let out = xfs_db(img, &[&format!("path {path}"), "print core.format"]);
    out.trim().trim_start_matches("core.format = ").to_string()
}

/// Writes `data` into `path` one 4 KiB block at a time, even blocks first,
/// each synced: every block becomes its own extent (a B+tree data fork).
fn write_fragmented(path: &Path, data: &[u8]) {
    let f = File::create(path).unwrap();
    for parity in [0, 1] {
        for (k, block) in data.chunks(4096).enumerate().filter(|(k, _)| k % 2 == parity) {
            f.write_all_at(block, (k * 4096) as u64).unwrap();
            f.sync_data().unwrap();
        }
    }
}

/// Builds the v5 image: the source tree copied in through a loop mount,
/// plus a fragmented file, a B+tree folder and a reflinked copy, made in
/// the mount and mirrored into the source.
fn build_v5(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("src");
    build_tree(&src, false);
    let img = dir.join("v5.img");
    mkfs_xfs(&img, "160M", &["-L", "bc-xfs5", "-m", "crc=1,reflink=1,bigtime=1", "-i", "nrext64=1"]);
    let m = LoopMount::new(&img, &dir.join("mnt"));
    run(tool("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&m.0));
    let mut rng = Rng::new(5);
    let frag = random(&mut rng, 300 * 4096 + 123);
    write_fragmented(&m.0.join("frag.bin"), &frag);
    write(&src.join("frag.bin"), &frag);
    // Folder blocks and synced file blocks allocated in turn: the folder's
    // blocks are scattered, too many for extents in the inode.
    for round in 0..120 {
        for i in 0..25 {
            let name = format!("btree-dir/{}", long_name(&format!("r{round:02}"), i));
            write(&m.0.join(&name), b"");
            write(&src.join(&name), b"");
        }
        let filler = random(&mut rng, 4096);
        let name = format!("fillers/f{round:02}");
        write(&m.0.join(&name), &filler);
        File::open(m.0.join(&name)).unwrap().sync_all().unwrap();
        write(&src.join(&name), &filler);
    }
    // Preallocated (unwritten) extents around one written block.
    run(tool("xfs_io")
        .args(["-f", "-c", "falloc 0 1m", "-c", "pwrite -q -S 0x61 4096 4096"])
        .arg(m.0.join("prealloc")));
    std::fs::set_permissions(m.0.join("prealloc"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut pre = vec![0u8; 1 << 20];
    pre[4096..8192].fill(0x61);
    write(&src.join("prealloc"), &pre);
    // A reflinked copy, then one block of it rewritten (copy on write).
    run(tool("cp").arg("--reflink=always").arg(m.0.join("sizes/f7-1000003")).arg(m.0.join("reflinked")));
    std::fs::copy(src.join("sizes/f7-1000003"), src.join("reflinked")).unwrap();
    let patch = random(&mut rng, 4096);
    for root in [&m.0, &src] {
        let f = std::fs::OpenOptions::new().write(true).open(root.join("reflinked")).unwrap();
        f.write_all_at(&patch, 8192).unwrap();
    }
    let shared = run(tool("filefrag").arg("-v").arg(m.0.join("sizes/f7-1000003")));
    assert!(String::from_utf8_lossy(&shared.stdout).contains("shared"), "the copy is not reflinked");
    copy_times(&src, &m.0);
    drop(m);
    (img, src)
}

/// Gives every file and folder under `to` the mtime of its twin in `from`
/// (the folders and files made in the mount got the mount's times).
fn copy_times(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_symlink() || !(t.is_dir() || t.is_file()) {
            continue;
        }
        if t.is_dir() {
            copy_times(&e.path(), &to.join(e.file_name()));
        }
        let when = e.metadata().unwrap().modified().unwrap();
        File::open(to.join(e.file_name())).unwrap().set_modified(when).unwrap();
    }
    let when = std::fs::metadata(from).unwrap().modified().unwrap();
    File::open(to).unwrap().set_modified(when).unwrap();
}

fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// The one folder at the root of an image's tree (`Volume (SIZE)`).
fn volume_folder(img: &Path) -> (String, serde_json::Value) {
    let out = run(backchain().arg("ls").arg(img).args(["/", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    (v[0]["path"].as_str().unwrap().to_string(), v[0].clone())
}

#[test]
fn v5_matches_source_tree_through_library_cli_and_fuse() {
    let t = tempdir();
    let (img, src) = build_v5(t.path());
    // xfs_db, not us, says which structures the image holds.
    assert_eq!(dir_format(&img, "/sf"), "shortform");
    assert_eq!(dir_format(&img, "/blk"), "block");
    assert_eq!(dir_format(&img, "/leaf"), "leaf");
    assert_eq!(dir_format(&img, "/node"), "node");
    assert_eq!(dir_format(&img, "/btree-dir"), "btree");
    assert_eq!(fork_format(&img, "/frag.bin"), "3 (btree)");
    assert_eq!(fork_format(&img, "/short-link"), "1 (local)");
    assert_eq!(fork_format(&img, "/long-link"), "2 (extents)");
    assert!(xfs_db(&img, &["path /prealloc", "bmap"]).contains("flag 1"), "no unwritten extent");
    let sb = xfs_db(&img, &["sb 0", "print features_incompat"]);
    let incompat = u32::from_str_radix(sb.trim().trim_start_matches("features_incompat = 0x"), 16).unwrap();
    assert_eq!(incompat & 0x28, 0x28, "bigtime and nrext64: {sb}");

    let fs = open(&img);
    assert_eq!(fs.kind(), FsKind::Xfs);
    assert_eq!(fs.label().as_deref(), Some("bc-xfs5"));
    assert_eq!(fs.note(), None);
    let mut c = Checked::default();
    compare(&*fs, fs.root(), &src, true, b"", &mut BTreeMap::new(), &mut c);
    assert!(c.files > 1900 && c.links == 3 && c.dirs > 20 && c.others == 2, "{} files", c.files);
    let st = fs.statfs().unwrap();
    assert_eq!(st.total_bytes, 160 << 20);
    assert!(st.free_bytes > 0 && st.free_bytes < st.total_bytes);

    // Random reads of the sparse and the fragmented file from 4 threads.
    for name in ["sparse.img", "frag.bin"] {
        let node = fs.lookup(fs.root(), name.as_bytes()).unwrap().attr;
        let want = Arc::new(std::fs::read(src.join(name)).unwrap());
        std::thread::scope(|s| {
            for k in 0..4u64 {
                let (fs, want) = (fs.clone(), want.clone());
                s.spawn(move || {
                    let mut rng = Rng::new(100 + k);
                    for _ in 0..100 {
                        let off = rng.below(node.size + 1000);
                        let mut buf = vec![0xAAu8; rng.below(300_000) as usize];
                        let n = fs.read(node.node, off, &mut buf).unwrap();
                        let start = (off as usize).min(want.len());
                        let end = (start + buf.len()).min(want.len());
                        assert_eq!(&buf[..n], &want[start..end], "{name} at {off}");
                    }
                });
            }
        });
    }

    // The CLI: ls (modes, sizes, symlink targets), cat and get.
    let (vol, entry) = volume_folder(&img);
    assert!(entry["note"].is_null(), "{entry}");
    let out = run(backchain().arg("ls").arg(&img).arg(&vol).arg("--json"));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| list.as_array().unwrap().iter().find(|e| e["name"] == n).unwrap().clone();
    assert_eq!(by_name("long-link")["target"], std::fs::read_link(src.join("long-link")).unwrap().to_str().unwrap());
    assert_eq!(by_name("script.sh")["mode"], "4755");
    assert_eq!(by_name("sparse.img")["size"], 12 << 20);
    for name in ["sparse.img", "frag.bin", "reflinked", "sizes/f7-1000003"] {
        let out = run(backchain().arg("cat").arg(&img).arg(format!("{vol}/{name}")));
        assert_eq!(sha_hex(&out.stdout), sha_hex(&std::fs::read(src.join(name)).unwrap()), "cat {name}");
    }
    let got = t.path().join("got.bin");
    run(backchain().arg("get").arg(&img).arg(format!("{vol}/frag.bin")).arg("-o").arg(&got));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(src.join("frag.bin")).unwrap());

    // FUSE: the kernel's view of our tree equals the source tree.
    let mnt = t.path().join("fuse");
    std::fs::create_dir(&mnt).unwrap();
    run(backchain().arg("mount").arg(&img).arg(&mnt));
    let guard = FuseMount(mnt.clone());
    let n = compare_mounted(&mnt.join(vol.trim_start_matches('/')), &src);
    assert!(n > 1900, "{n} files through FUSE");
    drop(guard);
}

/// Walks a FUSE-mounted copy against the source: names, kinds, modes,
/// owners, sizes, mtimes, symlink targets and bytes. Returns files checked.
fn compare_mounted(mine: &Path, src: &Path) -> usize {
    let names = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    assert_eq!(names(mine), names(src), "listing of {}", mine.display());
    let mut files = 0;
    for n in names(src) {
        let (m, s) = (mine.join(&n), src.join(&n));
        let (mm, sm) = (std::fs::symlink_metadata(&m).unwrap(), std::fs::symlink_metadata(&s).unwrap());
        assert_eq!(mm.mode(), sm.mode(), "mode of {}", m.display());
        assert_eq!((mm.uid(), mm.gid()), (sm.uid(), sm.gid()), "owner of {}", m.display());
        assert_eq!((mm.mtime(), mm.mtime_nsec()), (sm.mtime(), sm.mtime_nsec()), "mtime of {}", m.display());
        if sm.is_symlink() {
            assert_eq!(std::fs::read_link(&m).unwrap(), std::fs::read_link(&s).unwrap());
        } else if sm.file_type().is_char_device() {
            assert_eq!(mm.rdev(), sm.rdev(), "device number of {}", m.display());
        } else if sm.is_dir() {
            files += compare_mounted(&m, &s);
        } else if sm.is_file() {
            assert_eq!(mm.len(), sm.len(), "size of {}", m.display());
            assert!(std::fs::read(&m).unwrap() == std::fs::read(&s).unwrap(), "content of {}", m.display());
            files += 1;
        }
    }
    files
}

/// v4 from a protofile: v2 inodes, v2 folder blocks without CRCs, and a
/// 100,000-entry folder.
#[test]
fn v4_from_a_protofile_matches_source_tree() {
    let t = tempdir();
    let src = t.path().join("src");
    build_tree(&src, true);
    let empty = t.path().join("empty-source");
    write(&empty, b"");
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    protofile(&src, &mut proto, 1);
    proto.push_str(" huge d--755 0 0\n");
    for i in 0..100_000 {
        proto.push_str(&format!("  entry-{i:06} ---644 0 0 {}\n", empty.display()));
    }
    proto.push_str(" $\n$\n");
    let proto_file = t.path().join("proto.txt");
    std::fs::write(&proto_file, proto).unwrap();
    let img = t.path().join("v4.img");
    mkfs_xfs(&img, "256M", &["-m", "crc=0", "-L", "bc-xfs4", "-p", proto_file.to_str().unwrap()]);
    let sb = xfs_db(&img, &["sb 0", "print versionnum"]);
    let version = u16::from_str_radix(sb.trim().trim_start_matches("versionnum = 0x"), 16).unwrap();
    assert_eq!(version & 0xf, 4, "{sb}");
    assert_eq!(dir_format(&img, "/sf"), "shortform");
    assert_eq!(dir_format(&img, "/blk"), "block");
    assert_eq!(dir_format(&img, "/leaf"), "leaf");
    assert_eq!(dir_format(&img, "/node"), "node");
    assert_eq!(fork_format(&img, "/long-link"), "2 (extents)");

    let fs = open(&img);
    assert_eq!(fs.label().as_deref(), Some("bc-xfs4"));
    let root = fs.read_dir(fs.root()).unwrap();
    let huge = root.iter().find(|e| e.name == b"huge").unwrap().attr.node;
    let entries = fs.read_dir(huge).unwrap();
    assert_eq!(entries.len(), 100_000);
    let mut names: Vec<_> = entries.iter().map(|e| e.name.clone()).collect();
    names.sort();
    assert!(names.iter().enumerate().all(|(i, n)| *n == format!("entry-{i:06}").into_bytes()));
    assert!(entries.iter().all(|e| e.attr.kind == NodeKind::File && e.attr.size == 0 && e.attr.perm == 0o644));
    assert_eq!(fs.lookup(huge, b"entry-099999").unwrap().name, b"entry-099999");
    // The rest equals the source, except `huge`, which the source lacks.
    let mut c = Checked::default();
    compare(&*fs, fs.root(), &src, false, b"huge", &mut BTreeMap::new(), &mut c);
    assert!(c.files > 900 && c.dirs > 15, "{} files", c.files);
    let out = run(backchain().arg("cat").arg(&img).arg(format!("{}/sparse.img", volume_folder(&img).0)));
    assert_eq!(sha_hex(&out.stdout), sha_hex(&std::fs::read(src.join("sparse.img")).unwrap()));
    let link = fs.lookup(fs.root(), b"long-link").unwrap().attr.node;
    assert_eq!(
        fs.read_link(link).unwrap(),
        std::fs::read_link(src.join("long-link")).unwrap().into_os_string().into_encoded_bytes()
    );
}

/// The byte offset of `path`'s first data block, from xfs_db's bmap.
fn first_block_byte(img: &Path, path: &str) -> u64 {
    let out = xfs_db(img, &[&format!("path {path}"), "bmap"]);
    let line = out.lines().find(|l| l.starts_with("data offset 0 ")).unwrap();
    let ag_pair = line.split('(').nth(1).unwrap().split(')').next().unwrap();
    let (ag, agbno) = ag_pair.split_once('/').unwrap();
    let geo = xfs_db(img, &["sb 0", "print agblocks blocksize"]);
    let num = |k: &str| -> u64 {
        geo.lines().find(|l| l.starts_with(k)).unwrap().split(" = ").nth(1).unwrap().trim().parse().unwrap()
    };
    (ag.parse::<u64>().unwrap() * num("agblocks") + agbno.parse::<u64>().unwrap()) * num("blocksize")
}

/// A corrupt folder block is an error for that folder only; a corrupt
/// inode costs one entry; a dirty log is noted; nothing else is affected.
#[test]
fn corruption_is_confined_and_a_dirty_log_is_noted() {
    let t = tempdir();
    let src = t.path().join("src");
    for i in 0..250 {
        write(&src.join("leaf").join(long_name("leaf", i)), b"x");
    }
    for i in 0..30 {
        write(&src.join(format!("blk/file-{i:02}")), format!("{i}\n").as_bytes());
    }
    write(&src.join("ok/fine.txt"), b"fine\n");
    write(&src.join("ok/too-big"), b"soon too big\n");
    for i in 0..2000 {
        write(&src.join(format!("many/m{i:04}")), b"");
    }
    let img = t.path().join("c.img");
    // 16 KiB folder blocks: each spans four filesystem blocks.
    mkfs_xfs(&img, "64M", &["-n", "size=16384"]);
    {
        let m = LoopMount::new(&img, &t.path().join("mnt"));
        run(tool("cp").arg("-a").arg(format!("{}/.", src.display())).arg(&m.0));
    }
    assert!(String::from_utf8_lossy(&run(tool("xfs_logprint").arg("-t").arg(&img)).stdout).contains("<CLEAN>"));
    // A size past XFS's largest file (2^63 - 1 bytes here), with a valid
    // CRC: xfs_db recomputes it.
    let _ = tool("xfs_db").args(["-x", "-c", "path /ok/too-big", "-c", "write core.size -- -1"]).arg(&img).output();
    // xfs_db itself now calls the inode corrupt (and exits non-zero).
    let out =
        tool("xfs_db").args(["-r", "-c", "path /ok/too-big", "-c", "print core.size"]).arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("core.size = -1"));
    let leaf_block = first_block_byte(&img, "/leaf");
    let ino = xfs_db(&img, &["path /blk/file-07", "stack"]);
    let ino_byte: u64 = ino.split("byte offset ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    let mut data = std::fs::read(&img).unwrap();
    data[(leaf_block + 300) as usize] ^= 0x55;
    data[(ino_byte + 0x40) as usize] ^= 0x55;
    std::fs::write(&img, &data).unwrap();

    let fs = open(&img);
    let root = fs.root();
    let dir = |name: &str| fs.lookup(root, name.as_bytes()).unwrap().attr.node;
    match fs.read_dir(dir("leaf")) {
        Err(FsError::Corrupt { what, .. }) => assert!(what.contains("CRC"), "{what}"),
        other => panic!("corrupt folder block read as {:?}", other.map(|v| v.len())),
    }
    let blk = fs.read_dir(dir("blk")).unwrap();
    assert_eq!(blk.len(), 29, "only the corrupt inode is left out");
    match fs.lookup(dir("blk"), b"file-07") {
        Err(FsError::Corrupt { what, .. }) => assert!(what.contains("CRC"), "{what}"),
        other => panic!("corrupt inode looked up as {other:?}"),
    }
    match fs.lookup(dir("ok"), b"too-big") {
        Err(FsError::Corrupt { what, .. }) => assert!(what.contains("largest file"), "{what}"),
        other => panic!("oversized inode looked up as {other:?}"),
    }
    assert_eq!(xfs_db(&img, &["sb 0", "print dirblklog"]).trim(), "dirblklog = 2");
    let mut many: Vec<_> = fs.read_dir(dir("many")).unwrap().into_iter().map(|e| e.name).collect();
    many.sort();
    assert_eq!(many, (0..2000).map(|i| format!("m{i:04}").into_bytes()).collect::<Vec<_>>());
    let fine = fs.lookup(dir("ok"), b"fine.txt").unwrap().attr;
    assert_eq!(sha_fs(&*fs, fine.node, fine.size), <[u8; 32]>::from(Sha256::digest(b"fine\n")));
    // The CLI: one clear line for the corrupt folder, the rest browsable.
    let (vol, _) = volume_folder(&img);
    let err = run_fail(backchain().arg("ls").arg(&img).arg(format!("{vol}/leaf")));
    assert!(err.contains("CRC") && err.trim().lines().count() == 1, "{err}");
    run(backchain().arg("cat").arg(&img).arg(format!("{vol}/blk/file-08")));

    // A shut-down filesystem leaves its log dirty: the listing says so.
    let dirty = t.path().join("dirty.img");
    mkfs_xfs(&dirty, "64M", &[]);
    {
        let m = LoopMount::new(&dirty, &t.path().join("mnt2"));
        write(&m.0.join("a"), b"a");
        File::open(m.0.join("a")).unwrap().sync_all().unwrap();
        write(&m.0.join("b"), b"b");
        run(tool("xfs_io").args(["-x", "-c", "shutdown -f"]).arg(&m.0));
    }
    assert!(String::from_utf8_lossy(&run(tool("xfs_logprint").arg("-t").arg(&dirty)).stdout).contains("<DIRTY>"));
    let note = open(&dirty).note().unwrap();
    assert!(note.contains("dirty"), "{note}");
    let (_, entry) = volume_folder(&dirty);
    assert!(entry["note"].as_str().unwrap().contains("dirty"), "{entry}");
}

#[test]
fn corrupt_images_never_panic() {
    let t = tempdir();
    let src = t.path().join("src");
    let mut rng = Rng::new(9);
    for i in 0..30 {
        write(&src.join(format!("d{}/f{i}", i % 3)), &random(&mut rng, (i * 997) % 20_000));
    }
    symlink("d0/f0", src.join("link")).unwrap();
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    protofile(&src, &mut proto, 1);
    proto.push_str("$\n");
    std::fs::write(t.path().join("p"), proto).unwrap();
    let proto = t.path().join("p");
    // v5, and v4 without file types in folder entries (`ftype=0`).
    for (k, args) in [&["-m", "crc=1"][..], &["-m", "crc=0", "-n", "ftype=0"]].into_iter().enumerate() {
        let img = t.path().join(format!("small{k}.img"));
        mkfs_xfs(&img, "24M", &[args, &["-p", proto.to_str().unwrap()]].concat());
        let base = std::fs::read(&img).unwrap();
        let sb = xfs_db(&img, &["sb 0", "print versionnum features2"]);
        let field = |name: &str| {
            let line = sb.lines().find(|l| l.starts_with(name)).unwrap();
            u32::from_str_radix(line.split("0x").nth(1).unwrap().trim(), 16).unwrap()
        };
        // v5, then v4 without XFS_SB_VERSION2_FTYPE (0x200).
        assert_eq!(field("versionnum") & 0xf, 5 - k as u32, "{sb}");
        assert!(k == 0 || field("features2") & 0x200 == 0, "{sb}");
        assert_eq!(backchain::volume::fs::fuzz::walk(&*open(&img)), 34, "{args:?}");
        // Metadata sits in the first megabyte of the first AG.
        common::mutate_and_walk(&base, 1 << 20, 200, 9 + k as u64, backchain::volume::fs::xfs::fuzz_open_walk);
    }
}
