//! ext2/3/4 through the `Filesystem` trait against images built by the real
//! mke2fs (`-d` populates them from a source tree this test generates): every
//! file's SHA-256, every folder's entries, symlink targets, sizes, modes,
//! owners, timestamps and hard links must match the source tree.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;

use backchain::block::{MemImage, RawFile, ReadAt};
use backchain::volume::fs::{self, Filesystem, FsError, FsKind, NodeId, NodeKind};
use common::{Rng, random, run, sha_fs, tempdir, tool, write};
use sha2::{Digest, Sha256};

/// The source tree: Unicode names, deep paths, a 3000-entry folder (htree),
/// empty files, a sparse file, short and long symlinks, hard links, special
/// modes and owners. `big` adds files that need ext2's double-indirect map.
fn build_tree(root: &Path, big: bool) {
    let mut rng = Rng::new(4);
    write(&root.join("hello.txt"), b"hello, ext4\n");
    write(&root.join("empty"), b"");
    write(&root.join("Ünïcödé ファイル 📁/naïve café.txt"), &random(&mut rng, 5000));
    write(&root.join("Ünïcödé ファイル 📁/empty inside"), b"");
    let mut deep = root.join("deep");
    for i in 0..24 {
        deep = deep.join(format!("level-{i:02}"));
    }
    write(&deep.join("bottom.bin"), &random(&mut rng, 777));
    for i in 0..3000 {
        let len = (i * 7) % 300;
        write(&root.join(format!("many/file-{i:05}.dat")), &random(&mut rng, len));
    }
    for (k, size) in [1usize, 511, 4095, 4096, 4097, 65536, 200_000, 1_000_003].into_iter().enumerate() {
        write(&root.join(format!("sizes/f{k}-{size}")), &random(&mut rng, size));
    }
    if big {
        write(&root.join("sizes/big-3m"), &random(&mut rng, 3 << 20));
    }
    // Sparse: holes at the start, between and after two data islands.
    let sparse = root.join("sparse.img");
    run(tool("truncate").args(["-s", "40M"]).arg(&sparse));
    write(&root.join("island"), &random(&mut rng, 100_000));
    for seek in ["3", "27"] {
        run(tool("dd")
            .arg(format!("if={}", root.join("island").display()))
            .arg(format!("of={}", sparse.display()))
            .args(["bs=1M", &format!("seek={seek}"), "conv=notrunc", "status=none"]));
    }
    symlink("hello.txt", root.join("short-link")).unwrap();
    let long = format!("{}/target-that-does-not-exist.txt", "long-path-component".repeat(5));
    assert!(long.len() > 60);
    symlink(&long, root.join("long-link")).unwrap();
    symlink("deep/level-00", root.join("dir-link")).unwrap();
    std::fs::hard_link(root.join("hello.txt"), root.join("hard-link-to-hello")).unwrap();
    std::fs::hard_link(root.join("sizes/f4-4097"), root.join("many/hard-link")).unwrap();
    common::special_modes_and_owners(root);
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o1444)).unwrap();
    run(tool("mkfifo").arg(root.join("a fifo")));
}

fn mkfs(tool_name: &str, args: &[&str], src: &Path, img: &Path, size: &str) {
    run(tool("truncate").args(["-s", size]).arg(img));
    run(tool(tool_name).args(["-q", "-F"]).args(args).arg("-d").arg(src).arg(img));
}

fn open(img: &Path) -> Arc<dyn Filesystem> {
    let vol: Arc<dyn ReadAt> = Arc::new(RawFile::open(img).unwrap());
    fs::open(vol).unwrap().expect("ext filesystem recognised")
}

struct Checked {
    files: usize,
    links: usize,
    dirs: usize,
}

/// Compares the folder `dir` of `fs` with the source folder `src`,
/// recursively. `nanos`: the inodes are large enough for nanoseconds.
fn compare(
    fs: &dyn Filesystem,
    dir: NodeId,
    src: &Path,
    nanos: bool,
    seen: &mut BTreeMap<u64, NodeId>,
    c: &mut Checked,
) {
    let entries = fs.read_dir(dir).unwrap();
    let mut got: Vec<Vec<u8>> = entries.iter().map(|e| e.name.clone()).collect();
    got.sort();
    let mut want: Vec<Vec<u8>> =
        std::fs::read_dir(src).unwrap().map(|e| e.unwrap().file_name().into_encoded_bytes()).collect();
    want.sort();
    // mke2fs adds lost+found, which the source does not have.
    got.retain(|n| n != b"lost+found");
    assert_eq!(got, want, "listing of {}", src.display());
    c.dirs += 1;
    for e in entries {
        if e.name == b"lost+found" {
            continue;
        }
        let path = src.join(std::str::from_utf8(&e.name).unwrap());
        let md = std::fs::symlink_metadata(&path).unwrap();
        let a = &e.attr;
        assert_eq!(fs.lookup(dir, &e.name).unwrap().attr, *a, "lookup {}", path.display());
        assert_eq!(fs.stat(a.node).unwrap(), *a);
        assert_eq!(u32::from(a.perm), md.mode() & 0o7777, "mode of {}", path.display());
        assert_eq!((a.uid, a.gid), (md.uid(), md.gid()), "owner of {}", path.display());
        assert_eq!(a.mtime.secs, md.mtime(), "mtime of {}", path.display());
        // mke2fs -d stores whole seconds; nanoseconds are checked by
        // `nanosecond_and_post_2038_timestamps`.
        if !nanos {
            assert_eq!(a.mtime.nanos, 0);
        }
        // Hard links: one node per source inode.
        if let Some(&prev) = seen.get(&md.ino()) {
            assert_eq!(prev, a.node, "hard link {}", path.display());
        }
        seen.insert(md.ino(), a.node);
        assert_eq!(u64::from(a.nlink), md.nlink(), "links of {}", path.display());
        if md.file_type().is_symlink() {
            assert_eq!(a.kind, NodeKind::Symlink);
            let target = std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes();
            assert_eq!(fs.read_link(a.node).unwrap(), target);
            assert_eq!(a.size, target.len() as u64);
            c.links += 1;
        } else if md.file_type().is_fifo() {
            assert_eq!(a.kind, NodeKind::Fifo);
            assert!(fs.read(a.node, 0, &mut [0u8; 4]).is_err());
        } else if md.is_dir() {
            assert_eq!(a.kind, NodeKind::Directory);
            assert!(matches!(fs.read(a.node, 0, &mut [0u8; 4]), Err(FsError::IsADirectory)));
            compare(fs, a.node, &path, nanos, seen, c);
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

fn check_all(fs: &dyn Filesystem, src: &Path, nanos: bool) -> Checked {
    let mut c = Checked { files: 0, links: 0, dirs: 0 };
    compare(fs, fs.root(), src, nanos, &mut BTreeMap::new(), &mut c);
    assert!(c.files > 3000 && c.links == 3 && c.dirs > 25, "walked {} files {} links", c.files, c.links);
    c
}

#[test]
fn ext4_matches_source_tree() {
    let t = tempdir();
    let src = t.path().join("src");
    build_tree(&src, false);
    let img = t.path().join("ext4.img");
    mkfs("mkfs.ext4", &["-L", "backchain-ext4"], &src, &img, "96M");
    let fs = open(&img);
    assert_eq!(fs.kind(), FsKind::Ext4);
    assert_eq!(fs.label().as_deref(), Some("backchain-ext4"));
    check_all(&*fs, &src, true);
    let st = fs.statfs().unwrap();
    assert_eq!(st.total_bytes, 96 << 20);
    assert!(st.free_bytes > 0 && st.free_bytes < st.total_bytes);

    // Random-offset reads of the sparse file, concurrently from 4 threads.
    let sparse = fs.lookup(fs.root(), b"sparse.img").unwrap().attr;
    let want = Arc::new(std::fs::read(src.join("sparse.img")).unwrap());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (fs, want) = (fs.clone(), want.clone());
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                for _ in 0..200 {
                    let off = rng.below(sparse.size + 1000);
                    let len = rng.below(300_000) as usize;
                    let mut buf = vec![0xAAu8; len];
                    let n = fs.read(sparse.node, off, &mut buf).unwrap();
                    let start = (off as usize).min(want.len());
                    let end = (start + len).min(want.len());
                    assert_eq!(&buf[..n], &want[start..end], "read of {len} at {off}");
                }
            });
        }
    });
}

#[test]
fn ext3_and_ext2_match_source_tree() {
    let t = tempdir();
    let src = t.path().join("src");
    build_tree(&src, true);
    // ext3: journal, block maps, 4 KiB blocks, 256-byte inodes.
    let img3 = t.path().join("ext3.img");
    mkfs("mkfs.ext3", &["-L", "v3", "-I", "256"], &src, &img3, "96M");
    let fs3 = open(&img3);
    assert_eq!(fs3.kind(), FsKind::Ext3);
    assert_eq!(fs3.label().as_deref(), Some("v3"));
    check_all(&*fs3, &src, true);
    // ext2: 1 KiB blocks (double-indirect maps for the 3 MiB file) and
    // 128-byte inodes (whole seconds only).
    let img2 = t.path().join("ext2.img");
    mkfs("mkfs.ext2", &["-b", "1024", "-I", "128"], &src, &img2, "96M");
    let fs2 = open(&img2);
    assert_eq!(fs2.kind(), FsKind::Ext2);
    assert_eq!(fs2.label(), None);
    check_all(&*fs2, &src, false);
}

/// debugfs (the oracle) sets the extra timestamp fields: nanoseconds in the
/// upper 30 bits, epoch bits extending seconds past 2038 in the lower 2.
#[test]
fn nanosecond_and_post_2038_timestamps() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src.join("a"), b"a");
    write(&src.join("b"), b"b");
    let img = t.path().join("ns.img");
    mkfs("mkfs.ext4", &[], &src, &img, "16M");
    let secs = std::fs::metadata(src.join("a")).unwrap().mtime();
    let cmds = [
        format!("sif /a mtime_extra {}", 123_456_789u32 << 2),
        format!("sif /b mtime_extra {}", (987_654_321u32 << 2) | 1),
        format!("sif /b atime_extra {}", 5u32 << 2),
    ];
    for c in &cmds {
        run(tool("debugfs").args(["-w", "-R", c]).arg(&img));
    }
    let fs = open(&img);
    let a = fs.lookup(fs.root(), b"a").unwrap().attr;
    assert_eq!((a.mtime.secs, a.mtime.nanos), (secs, 123_456_789));
    let b = fs.lookup(fs.root(), b"b").unwrap().attr;
    let b_secs = std::fs::metadata(src.join("b")).unwrap().mtime();
    assert_eq!((b.mtime.secs, b.mtime.nanos), (b_secs + (1 << 32), 987_654_321));
    assert_eq!(b.atime.nanos, 5);
    assert!(b.crtime.is_some());
}

#[test]
fn inline_data_is_refused_with_the_reason() {
    let t = tempdir();
    let src = t.path().join("src");
    write(&src.join("small.txt"), b"tiny");
    let img = t.path().join("inline.img");
    mkfs("mkfs.ext4", &["-O", "inline_data"], &src, &img, "16M");
    let vol: Arc<dyn ReadAt> = Arc::new(RawFile::open(&img).unwrap());
    match fs::open(vol) {
        Err(FsError::Unsupported(reason)) => assert!(reason.contains("ext4"), "{reason}"),
        other => panic!("expected Unsupported, got {:?}", other.map(|f| f.map(|f| f.kind()))),
    }
}

#[test]
fn corrupt_images_never_panic() {
    let t = tempdir();
    let src = t.path().join("src");
    common::small_tree(&src, 40, 5);
    let img = t.path().join("small.img");
    mkfs("mkfs.ext4", &["-b", "1024", "-N", "64", "-J", "size=1"], &src, &img, "4M");
    let base = std::fs::read(&img).unwrap();
    // The pristine image walks completely.
    let vol: Arc<dyn ReadAt> = Arc::new(MemImage(base.clone()));
    let walked = backchain::volume::fs::fuzz::walk(&*fs::open(vol).unwrap().unwrap());
    assert_eq!(walked, 47);
    // Metadata lives in the first blocks and the folder/inode blocks mkfs
    // wrote; flip bytes there.
    common::mutate_and_walk(&base, 600 << 10, 300, 9, backchain::volume::fs::ext4::fuzz_open_walk);
}

/// The shared fixture (fixtures/build.sh): ext4 with 1 KiB blocks holding
/// `src/` (emoji names, absolute and dangling symlinks, three hard links).
#[test]
fn fixture_ext4_matches_its_source() {
    let fs = open(&fixtures::fixture("ext4.img"));
    assert_eq!(fs.kind(), FsKind::Ext4);
    assert_eq!(fs.label().as_deref(), Some("BC-EXT4"));
    let mut c = Checked { files: 0, links: 0, dirs: 0 };
    compare(&*fs, fs.root(), &fixtures::fixture("src"), true, &mut BTreeMap::new(), &mut c);
    assert!(c.files > 3000 && c.links > 3, "walked {} files {} links", c.files, c.links);
}

/// Every node below `dir` by path: attributes and content digest.
fn snapshot(
    fs: &dyn Filesystem,
    dir: NodeId,
    prefix: &str,
    out: &mut BTreeMap<String, (backchain::volume::fs::Attr, [u8; 32])>,
) {
    for e in fs.read_dir(dir).unwrap() {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
        let digest = match e.attr.kind {
            NodeKind::File => sha_fs(fs, e.attr.node, e.attr.size),
            NodeKind::Symlink => Sha256::digest(fs.read_link(e.attr.node).unwrap()).into(),
            _ => [0; 32],
        };
        if e.attr.kind == NodeKind::Directory {
            snapshot(fs, e.attr.node, &path, out);
        }
        out.insert(path, (e.attr, digest));
    }
}

/// Committed but not checkpointed journal transactions (written with
/// debugfs `jw`, as a crash would leave them) are applied in memory: the
/// tree equals the one after debugfs `jr` (journal recovery) on a copy.
#[test]
fn uncheckpointed_journal_is_replayed() {
    for features in ["^metadata_csum", "metadata_csum"] {
        let t = tempdir();
        let src = t.path().join("src");
        let mut rng = Rng::new(31);
        write(&src.join("d/a.txt"), b"original\n");
        write(&src.join("b.bin"), &random(&mut rng, 4096));
        for i in 0..20 {
            write(&src.join(format!("d/f{i}")), &random(&mut rng, 100 * i));
        }
        let img = t.path().join("j.img");
        mkfs("mkfs.ext4", &["-b", "4096", "-O", features], &src, &img, "32M");
        let debugfs = |cmd: &str| {
            let out = run(tool("debugfs").args(["-R", cmd]).arg(&img));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        // The inode table block holding d/a.txt, and b.bin's data block.
        let imap = debugfs("imap /d/a.txt");
        let words: Vec<&str> = imap.split_whitespace().collect();
        // "... located at block N, offset 0xM"
        let at = words.iter().position(|w| *w == "located").unwrap();
        let iblock: u64 = words[at + 3].trim_end_matches(',').parse().unwrap();
        let ioff = usize::from_str_radix(words[at + 5].trim_start_matches("0x"), 16).unwrap();
        let bmap = debugfs("bmap /b.bin 0");
        let dblock: u64 = bmap.trim().parse().unwrap();
        let bs = 4096u64;
        let mut data = std::fs::read(&img).unwrap();
        let mut patched_inode = data[(iblock * bs) as usize..((iblock + 1) * bs) as usize].to_vec();
        patched_inode[ioff + 0x10..ioff + 0x14].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        let patched_data = random(&mut rng, bs as usize);
        std::fs::write(t.path().join("inode.blk"), &patched_inode).unwrap();
        std::fs::write(t.path().join("data.blk"), &patched_data).unwrap();
        let script = format!(
            "jo\njw -b {iblock} {}\njc\njo\njw -b {dblock} {}\njc\n",
            t.path().join("inode.blk").display(),
            t.path().join("data.blk").display()
        );
        let mut c = tool("debugfs");
        c.args(["-w", "-f", "-"]).arg(&img).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        // The blocks on disk are still the old ones.
        data = std::fs::read(&img).unwrap();
        assert_ne!(&data[(dblock * bs) as usize..((dblock + 1) * bs) as usize], &patched_data[..]);
        let recovered = t.path().join("recovered.img");
        std::fs::copy(&img, &recovered).unwrap();
        run(tool("debugfs").args(["-w", "-R", "jr"]).arg(&recovered));

        let (dirty, clean) = (open(&img), open(&recovered));
        let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
        snapshot(&*dirty, dirty.root(), "", &mut a);
        snapshot(&*clean, clean.root(), "", &mut b);
        assert_eq!(a, b, "{features}");
        assert_eq!(a["/d/a.txt"].0.mtime.secs, 1_000_000_000, "{features}");
        let want: [u8; 32] = Sha256::digest(&patched_data).into();
        assert_eq!(a["/b.bin"].1, want, "{features}");
    }
}
