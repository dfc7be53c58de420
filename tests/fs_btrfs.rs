//! btrfs through the `Filesystem` trait, the CLI and a FUSE mount, against
//! images built by the real tools: `mkfs.btrfs --rootdir` (DUP metadata,
//! inline files) and the kernel itself (loop mounts with compress-force=zlib,
//! lzo and zstd, subvolumes, a nested subvolume, snapshots, a prealloc
//! extent). Every file's SHA-256, mode, owner, size, mtime and symlink
//! target must equal the source tree; hard links share one node; node ids
//! group files exactly as the kernel's (st_dev, st_ino) do; a corrupt tree
//! block is healed from DUP's other copy, and with both copies bad is an
//! error for its folder only.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, chown, symlink};
use std::path::Path;
use std::sync::Arc;

use backchain::block::{RawFile, ReadAt};
use backchain::volume::fs::{self, Filesystem, FsError, FsKind, NodeId, NodeKind};
use common::{Rng, backchain, compressible, random, run, sha_fs, tempdir, tool, write};
use sha2::{Digest, Sha256};

/// What the tests compare of every entry below a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    kind: char,
    perm: u32,
    owner: (u32, u32),
    size: u64,
    mtime: (i64, u32),
    /// A file's SHA-256, or a symlink's target.
    content: Vec<u8>,
    /// Links of non-folders (btrfs folders always say 1).
    nlink: Option<u64>,
}

type Tree = BTreeMap<String, Meta>;

/// The source tree: inline-sized and multi-extent files, compressible and
/// random data, a sparse file, symlinks, hard links, modes, owners, a FIFO
/// and a folder of 400 small files (many tree leaves).
fn build_tree(root: &Path, many: usize) {
    let mut rng = Rng::new(7);
    write(&root.join("hello.txt"), b"hello, btrfs\n");
    write(&root.join("empty"), b"");
    write(&root.join("Ünïcödé ファイル/naïve café.txt"), &random(&mut rng, 3000));
    for (k, size) in [1usize, 2048, 2049, 4095, 4096, 4097, 65536, 131073, 300_000, 1_000_003].into_iter().enumerate() {
        write(&root.join(format!("sizes/c{k}-{size}")), &compressible(&mut rng, size));
        write(&root.join(format!("sizes/r{k}-{size}")), &random(&mut rng, size));
    }
    for i in 0..many {
        write(&root.join(format!("many/file-{i:05}.dat")), &compressible(&mut rng, 50 + i % 200));
    }
    let sparse = root.join("sparse.img");
    write(&sparse, b"");
    let f = std::fs::OpenOptions::new().write(true).open(&sparse).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random(&mut rng, 10_000), 3 << 20).unwrap();
    f.write_all_at(&compressible(&mut rng, 70_000), 9 << 20).unwrap();
    f.set_len(12 << 20).unwrap();
    symlink("hello.txt", root.join("short-link")).unwrap();
    symlink("long-path-component/".repeat(8) + "nowhere", root.join("long-link")).unwrap();
    symlink("sizes", root.join("dir-link")).unwrap();
    std::fs::hard_link(root.join("hello.txt"), root.join("hard-link-to-hello")).unwrap();
    std::fs::hard_link(root.join("sizes/r5-4097"), root.join("many/hard-link")).unwrap();
    let exe = root.join("script.sh");
    write(&exe, b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let private = root.join("private");
    write(&private.join("secret"), b"secret\n");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    chown(&private, Some(1234), Some(5678)).unwrap();
    chown(private.join("secret"), Some(70000), Some(80000)).unwrap();
    run(tool("mkfifo").arg(root.join("a fifo")));
    run(tool("setfattr").args(["-n", "user.note", "-v", "btrfs xattr"]).arg(root.join("script.sh")));
    run(tool("touch").args(["-h", "-d", "2031-05-06 07:08:09.123456789"]).arg(root.join("short-link")));
    run(tool("touch").args(["-d", "1999-12-31 23:59:59.5"]).arg(root.join("hello.txt")));
}

/// Every entry below `root` as the host's VFS shows it (a source tree, a
/// kernel mount or a FUSE mount). `nanos`: keep nanoseconds of mtimes.
fn host_tree(root: &Path, nanos: bool) -> Tree {
    fn walk(dir: &Path, prefix: &str, nanos: bool, out: &mut Tree) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let name = format!("{prefix}{}", e.file_name().to_str().unwrap());
            let md = std::fs::symlink_metadata(&path).unwrap();
            let ft = md.file_type();
            let (kind, content) = if ft.is_symlink() {
                ('l', std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes())
            } else if ft.is_dir() {
                ('d', Vec::new())
            } else if ft.is_file() {
                ('f', Sha256::digest(std::fs::read(&path).unwrap()).to_vec())
            } else {
                assert!(ft.is_fifo());
                ('o', Vec::new())
            };
            out.insert(
                name.clone(),
                Meta {
                    kind,
                    perm: md.mode() & 0o7777,
                    owner: (md.uid(), md.gid()),
                    size: if kind == 'd' { 0 } else { md.len() },
                    mtime: (md.mtime(), if nanos { md.mtime_nsec() as u32 } else { 0 }),
                    content,
                    nlink: (kind != 'd').then_some(md.nlink()),
                },
            );
            if kind == 'd' {
                walk(&path, &format!("{name}/"), nanos, out);
            }
        }
    }
    let mut out = Tree::new();
    walk(root, "", nanos, &mut out);
    out
}

/// Every entry below folder `dir` of `fs`, with its node id; checks that
/// lookup and stat agree with the listing on the way.
fn fs_tree(fs: &dyn Filesystem, dir: NodeId) -> (Tree, BTreeMap<String, NodeId>) {
    fn walk(fs: &dyn Filesystem, dir: NodeId, prefix: &str, out: &mut Tree, ids: &mut BTreeMap<String, NodeId>) {
        for e in fs.read_dir(dir).unwrap() {
            let name = format!("{prefix}{}", String::from_utf8(e.name.clone()).unwrap());
            let a = &e.attr;
            assert_eq!(fs.lookup(dir, &e.name).unwrap().attr, *a, "lookup {name}");
            assert_eq!(fs.stat(a.node).unwrap(), *a, "stat {name}");
            let (kind, content) = match a.kind {
                NodeKind::Symlink => ('l', fs.read_link(a.node).unwrap()),
                NodeKind::Directory => ('d', Vec::new()),
                NodeKind::File => ('f', sha_fs(fs, a.node, a.size).to_vec()),
                _ => ('o', Vec::new()),
            };
            out.insert(
                name.clone(),
                Meta {
                    kind,
                    perm: u32::from(a.perm),
                    owner: (a.uid, a.gid),
                    size: if kind == 'd' { 0 } else { a.size },
                    mtime: (a.mtime.secs, a.mtime.nanos),
                    content,
                    nlink: (kind != 'd').then_some(u64::from(a.nlink)),
                },
            );
            ids.insert(name.clone(), a.node);
            if kind == 'd' {
                walk(fs, a.node, &format!("{name}/"), out, ids);
            }
        }
    }
    let (mut out, mut ids) = (Tree::new(), BTreeMap::new());
    walk(fs, dir, "", &mut out, &mut ids);
    (out, ids)
}

fn open(img: &Path) -> Arc<dyn Filesystem> {
    let vol: Arc<dyn ReadAt> = Arc::new(RawFile::open(img).unwrap());
    let fs = fs::open(vol).unwrap().expect("btrfs recognised");
    assert_eq!(fs.kind(), FsKind::Btrfs);
    fs
}

fn resolve(fs: &dyn Filesystem, path: &str) -> NodeId {
    path.split('/')
        .filter(|p| !p.is_empty())
        .fold(fs.root(), |dir, name| fs.lookup(dir, name.as_bytes()).unwrap().attr.node)
}

fn assert_same(got: &Tree, want: &Tree, what: &str) {
    let names = |t: &Tree| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "entries of {what}");
    for (name, m) in want {
        assert_eq!(&got[name], m, "{what}: {name}");
    }
}

fn dump_tree(img: &Path, args: &[&str]) -> String {
    let out = run(tool("btrfs").args(["inspect-internal", "dump-tree"]).args(args).arg(img));
    String::from_utf8(out.stdout).unwrap()
}

fn mkfs_rootdir(src: &Path, img: &Path) {
    run(tool("truncate").args(["-s", "128M"]).arg(img));
    run(tool("mkfs.btrfs").args(["-q", "-m", "dup", "-L", "bc-btrfs", "--rootdir"]).arg(src).arg(img));
}

#[test]
fn mkfs_rootdir_image_matches_its_source() {
    let d = tempdir();
    let (src, img) = (d.path().join("src"), d.path().join("btrfs.img"));
    build_tree(&src, 400);
    mkfs_rootdir(&src, &img);
    assert!(dump_tree(&img, &["-t", "chunk"]).contains("METADATA|DUP"), "mkfs did not make DUP metadata");
    assert!(dump_tree(&img, &["-t", "5"]).contains("(inline)"), "no inline extents in the image");

    let fs = open(&img);
    assert_eq!(fs.label().as_deref(), Some("bc-btrfs"));
    // mkfs.btrfs --rootdir keeps whole seconds only.
    let want = host_tree(&src, false);
    let (got, ids) = fs_tree(&*fs, fs.root());
    assert_same(&got, &want, "mkfs --rootdir image");
    assert_eq!(ids["hello.txt"], ids["hard-link-to-hello"]);
    assert_eq!(ids["sizes/r5-4097"], ids["many/hard-link"]);
    let xattrs = fs.xattrs(resolve(&*fs, "script.sh")).unwrap();
    assert!(xattrs.iter().any(|x| x.name == b"user.note" && x.value == b"btrfs xattr"), "{xattrs:?}");
    let stats = fs.statfs().unwrap();
    assert_eq!((stats.block_size, stats.total_bytes), (4096, 128 << 20));
    assert!(matches!(fs.read(resolve(&*fs, "sizes"), 0, &mut [0u8; 4]), Err(FsError::IsADirectory)));
    // Reads at odd offsets across extents and past the end.
    let node = resolve(&*fs, "sparse.img");
    let mut buf = vec![0u8; 100_000];
    let n = fs.read(node, (3 << 20) - 77, &mut buf).unwrap();
    assert_eq!(n, buf.len());
    assert_eq!(&buf[..77], &[0u8; 77][..]);
    let host = std::fs::read(src.join("sparse.img")).unwrap();
    assert!(buf[..] == host[(3 << 20) - 77..(3 << 20) - 77 + 100_000]);
    assert_eq!(fs.read(node, 12 << 20, &mut buf).unwrap(), 0);

    cli_and_fuse(&img, &src, d.path());
    corrupt_data_sector(&img, &src);
    corrupt_leaf_of_one_folder(&img, &src);
}

/// A flipped byte in a file's data (single profile: one copy) fails that
/// file's reads with the checksum error, and only that file's.
fn corrupt_data_sector(img: &Path, src: &Path) {
    let victim = std::fs::read(src.join("sizes/r9-1000003")).unwrap();
    let probe = &victim[500_000..500_064];
    let image = std::fs::read(img).unwrap();
    let at = image.windows(probe.len()).position(|w| w == probe).expect("the file's bytes in the image");
    drop(image);
    flip_bit(img, at as u64 + 7);
    let fs = open(img);
    let node = resolve(&*fs, "sizes/r9-1000003");
    let mut buf = vec![0u8; 8192];
    let err = fs.read(node, 500_000 / 4096 * 4096, &mut buf).unwrap_err();
    assert!(err.to_string().contains("data checksum mismatch"), "{err}");
    // The sectors before it still read, and so does every other file.
    assert_eq!(fs.read(node, 0, &mut buf).unwrap(), buf.len());
    assert!(buf[..] == victim[..8192]);
    let other = resolve(&*fs, "sizes/c9-1000003");
    assert_eq!(
        sha_fs(&*fs, other, 1_000_003).to_vec(),
        Sha256::digest(std::fs::read(src.join("sizes/c9-1000003")).unwrap()).to_vec()
    );
    // Put it back for the next checks.
    flip_bit(img, at as u64 + 7);
}

fn flip_bit(img: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
}

/// `ls`, `cat` and `get` through the CLI, then a FUSE mount of the image,
/// against the source tree.
fn cli_and_fuse(img: &Path, src: &Path, scratch: &Path) {
    let out = run(backchain().args(["ls", "--json"]).arg(img));
    let root: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let vol = root.as_array().unwrap()[0]["name"].as_str().unwrap().to_string();
    assert!(vol.starts_with("Volume"), "{vol}");
    let out = run(backchain().args(["ls", "--json"]).arg(img).arg(format!("{vol}/sizes")));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<String> =
        listed.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().into()).collect();
    names.sort();
    let mut want: Vec<String> =
        std::fs::read_dir(src.join("sizes")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    want.sort();
    assert_eq!(names, want);
    let cat = run(backchain().arg("cat").arg(img).arg(format!("{vol}/sizes/c9-1000003")));
    assert!(cat.stdout == std::fs::read(src.join("sizes/c9-1000003")).unwrap());
    let got = scratch.join("got.bin");
    run(backchain().arg("get").arg(img).arg(format!("{vol}/Ünïcödé ファイル/naïve café.txt")).arg("-o").arg(&got));
    assert!(std::fs::read(&got).unwrap() == std::fs::read(src.join("Ünïcödé ファイル/naïve café.txt")).unwrap());

    let mnt = scratch.join("fuse");
    std::fs::create_dir(&mnt).unwrap();
    run(backchain().arg("mount").arg(img).arg(&mnt));
    let seen = std::panic::catch_unwind(|| host_tree(&mnt.join(&vol), false));
    run(backchain().arg("umount").arg(&mnt));
    let mut want = host_tree(src, false);
    // FUSE shows special files as empty files.
    want.retain(|_, m| m.kind != 'o');
    let mut seen = seen.unwrap();
    seen.retain(|name, _| want.contains_key(name));
    assert_same(&seen, &want, "FUSE mount");
}

/// Logical addresses of the FS tree leaves whose items all belong to files
/// of `many/` (every inode ref names a `file-` entry).
fn leaves_of_many(img: &Path) -> Vec<u64> {
    let dump = dump_tree(img, &["-t", "5"]);
    let mut found = Vec::new();
    for leaf in dump.split("\nleaf ").skip(1) {
        let refs: Vec<&str> = leaf.lines().filter_map(|l| l.trim().split("name: ").nth(1)).collect();
        if leaf.contains("INODE_REF") && !leaf.contains("DIR_INDEX") && refs.iter().all(|n| n.starts_with("file-")) {
            found.push(leaf.split_whitespace().next().unwrap().parse().unwrap());
        }
    }
    found
}

/// The device offsets of both copies of logical `addr` (btrfs-map-logical).
fn mirrors(img: &Path, addr: u64) -> Vec<u64> {
    let out = run(tool("btrfs-map-logical").args(["-l", &addr.to_string()]).arg(img));
    let text = String::from_utf8(out.stdout).unwrap();
    let offs: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split("physical ").nth(1))
        .map(|p| p.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(!offs.is_empty(), "{text}");
    offs
}

fn scribble(img: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&[0x5A; 64], at + 0x100).unwrap();
}

fn corrupt_leaf_of_one_folder(img: &Path, src: &Path) {
    let leaves = leaves_of_many(img);
    let leaf = *leaves.first().expect("a leaf holding only files of many/");
    let copies = mirrors(img, leaf);
    assert_eq!(copies.len(), 2, "DUP metadata has two copies");
    let want = host_tree(src, false);
    // One bad copy: the other one serves, and nothing changes.
    scribble(img, copies[0]);
    let fs = open(img);
    assert_same(&fs_tree(&*fs, fs.root()).0, &want, "image with one bad copy");
    // Both bad: the files of many/ whose items the block holds are left
    // out of its listing, and looking one up gives a clear error; every
    // other file of many/ and of the filesystem reads.
    scribble(img, copies[1]);
    let fs = open(img);
    let many = resolve(&*fs, "many");
    let listed: Vec<String> =
        fs.read_dir(many).unwrap().into_iter().map(|e| String::from_utf8(e.name).unwrap()).collect();
    let missing: Vec<String> = want
        .keys()
        .filter_map(|k| k.strip_prefix("many/"))
        .filter(|n| !listed.iter().any(|l| l == n))
        .map(String::from)
        .collect();
    assert!(!missing.is_empty() && listed.len() > 100, "{} listed, {missing:?} missing", listed.len());
    // A listed file may still have its extent items in the bad block: then
    // reading it gives that block's error, never wrong bytes.
    for name in &listed {
        let e = fs.lookup(many, name.as_bytes()).unwrap();
        if e.attr.kind == NodeKind::File {
            let mut buf = vec![0u8; e.attr.size as usize];
            match fs.read(e.attr.node, 0, &mut buf) {
                Ok(n) => {
                    assert!(n == buf.len() && Sha256::digest(&buf).to_vec() == want[&format!("many/{name}")].content)
                }
                Err(err) => assert!(err.to_string().contains(&format!("tree block {leaf}")), "{err}"),
            }
        }
    }
    let err = fs.lookup(many, missing[0].as_bytes()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FsError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&format!("tree block {leaf}")) && msg.contains("checksum"), "{msg}");
    let mut checked = 0;
    for e in fs.read_dir(fs.root()).unwrap() {
        if e.name == b"many" {
            continue;
        }
        let name = String::from_utf8(e.name).unwrap();
        let sub: Tree = want
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}/")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if e.attr.kind == NodeKind::Directory {
            let got: Tree = fs_tree(&*fs, e.attr.node).0.into_iter().map(|(k, v)| (format!("{name}/{k}"), v)).collect();
            assert_same(&got, &sub, &name);
        } else if e.attr.kind == NodeKind::File {
            assert_eq!(sha_fs(&*fs, e.attr.node, e.attr.size).to_vec(), want[&name].content, "{name}");
        }
        checked += 1;
    }
    assert!(checked >= 10);
}

/// Loop-mounts `img` at `mnt` and runs `f`, unmounting even if it fails.
fn with_loop_mount<T>(img: &Path, mnt: &Path, f: impl FnOnce() -> T + std::panic::UnwindSafe) -> T {
    run(tool("mount").args(["-o", "loop"]).arg(img).arg(mnt));
    let r = std::panic::catch_unwind(f);
    run(tool("umount").arg(mnt));
    r.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn sh(cmd: &str) {
    run(tool("sh").args(["-c", cmd]));
}

#[test]
fn kernel_written_compression_subvolumes_and_snapshots() {
    let d = tempdir();
    let (src, img, mnt) = (d.path().join("src"), d.path().join("kernel.img"), d.path().join("mnt"));
    build_tree(&src, 40);
    std::fs::create_dir(&mnt).unwrap();
    run(tool("truncate").args(["-s", "160M"]).arg(&img));
    run(tool("mkfs.btrfs").args(["-q", "-m", "dup"]).arg(&img));
    let mut rng = Rng::new(9);
    let prealloc_data = random(&mut rng, 4096);
    std::fs::write(d.path().join("island"), &prealloc_data).unwrap();
    let (m, s, island) = (mnt.display().to_string(), src.display().to_string(), d.path().join("island"));
    let kernel_ids: HashMap<String, (u64, u64)> = with_loop_mount(&img, &mnt, || {
        sh(&format!("cp -a '{s}' '{m}/plain'"));
        sh(&format!(
            "fallocate -l 256K '{m}/prealloc' && dd if='{}' of='{m}/prealloc' bs=4096 seek=16 conv=notrunc status=none",
            island.display()
        ));
        for comp in ["zlib", "lzo", "zstd"] {
            sh(&format!(
                "mount -o remount,compress-force={comp} '{m}' && btrfs -q subvolume create '{m}/sv-{comp}' && cp -a '{s}/.' '{m}/sv-{comp}/'"
            ));
        }
        sh(&format!(
            "mkdir '{m}/outer' && btrfs -q subvolume create '{m}/outer/nested' && cp -a '{s}/.' '{m}/outer/nested/'"
        ));
        sh(&format!(
            "btrfs -q subvolume snapshot '{m}/sv-lzo' '{m}/snap-lzo' && btrfs -q subvolume snapshot '{m}' '{m}/snap-top' && sync"
        ));
        let mut ids = HashMap::new();
        for name in ["sv-zlib", "sv-lzo", "snap-lzo", "outer/nested", "plain", "snap-top/plain"] {
            for path in host_tree(&mnt.join(name), false).keys() {
                let md = std::fs::symlink_metadata(mnt.join(name).join(path)).unwrap();
                ids.insert(format!("{name}/{path}"), (md.dev(), md.ino()));
            }
        }
        // A subvolume link copied into a snapshot shows as an empty folder.
        assert_eq!(std::fs::read_dir(mnt.join("snap-top/sv-zlib")).unwrap().count(), 0);
        ids
    });
    let dump = dump_tree(&img, &[]);
    for (n, name) in [(1, "zlib"), (2, "lzo"), (3, "zstd")] {
        assert!(dump.contains(&format!("compression {n} ({name})")), "no {name} extents in the image");
    }
    assert!(dump.contains("(prealloc)"), "no prealloc extent in the image");

    let fs = open(&img);
    let want = host_tree(&src, true);
    let mut ids = HashMap::new();
    for name in ["plain", "sv-zlib", "sv-lzo", "sv-zstd", "outer/nested", "snap-lzo", "snap-top/plain"] {
        let (got, got_ids) = fs_tree(&*fs, resolve(&*fs, name));
        assert_same(&got, &want, name);
        ids.extend(got_ids.into_iter().map(|(k, v)| (format!("{name}/{k}"), v)));
    }
    let xattrs = fs.xattrs(resolve(&*fs, "sv-lzo/script.sh")).unwrap();
    assert!(xattrs.iter().any(|x| x.name == b"user.note" && x.value == b"btrfs xattr"), "{xattrs:?}");
    let empty = resolve(&*fs, "snap-top/sv-zlib");
    assert_eq!(fs.stat(empty).unwrap().kind, NodeKind::Directory);
    assert!(fs.read_dir(empty).unwrap().is_empty());
    // Node ids group paths exactly as the kernel's (st_dev, st_ino) do.
    let mut by_kernel: HashMap<(u64, u64), NodeId> = HashMap::new();
    let mut by_node: HashMap<NodeId, (u64, u64)> = HashMap::new();
    for (path, kid) in &kernel_ids {
        let node = ids[path];
        assert_eq!(*by_kernel.entry(*kid).or_insert(node), node, "{path}");
        assert_eq!(*by_node.entry(node).or_insert(*kid), *kid, "{path}");
    }
    assert!(by_node.len() > 5 * 40);

    let node = resolve(&*fs, "prealloc");
    let mut expect = vec![0u8; 256 << 10];
    expect[16 * 4096..17 * 4096].copy_from_slice(&prealloc_data);
    assert_eq!(fs.stat(node).unwrap().size, expect.len() as u64);
    assert_eq!(sha_fs(&*fs, node, expect.len() as u64).to_vec(), Sha256::digest(&expect).to_vec());

    // Through FUSE, the compressed subvolumes read like their source.
    let fuse = d.path().join("fuse");
    std::fs::create_dir(&fuse).unwrap();
    run(backchain().arg("mount").arg(&img).arg(&fuse));
    let seen = std::panic::catch_unwind(|| {
        let vol = std::fs::read_dir(&fuse).unwrap().next().unwrap().unwrap().path();
        ["sv-zlib", "sv-lzo", "sv-zstd", "snap-lzo"].map(|n| host_tree(&vol.join(n), true))
    });
    run(backchain().arg("umount").arg(&fuse));
    let mut want = want;
    want.retain(|_, m| m.kind != 'o');
    for mut t in seen.unwrap() {
        t.retain(|name, _| want.contains_key(name));
        assert_same(&t, &want, "FUSE mount of a compressed subvolume");
    }
}

/// The smallest image mkfs makes (4 KiB nodes, single metadata, shrunk to
/// 22 MiB, as the fuzz seeds are) reads like its source; then tree blocks
/// with flipped bytes and a recomputed checksum, so that the parser and not
/// the checksum meets them, give errors and never a panic.
#[test]
fn corrupt_images_never_panic() {
    let d = tempdir();
    let (src, img) = (d.path().join("src"), d.path().join("small.img"));
    build_tree(&src, 10);
    run(tool("truncate").args(["-s", "128M"]).arg(&img));
    run(tool("mkfs.btrfs").args(["-q", "--shrink", "-m", "single", "-n", "4096", "--rootdir"]).arg(&src).arg(&img));
    let fs = open(&img);
    assert_same(&fs_tree(&*fs, fs.root()).0, &host_tree(&src, false), "4 KiB-node image");
    let image = std::fs::read(&img).unwrap();
    let dump = dump_tree(&img, &["-t", "5"]);
    let blocks: Vec<u64> = dump
        .lines()
        .filter(|l| l.starts_with("leaf ") || l.starts_with("node "))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert!(blocks.len() >= 3, "{blocks:?}");
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let mut rng = Rng::new(3);
    for round in 0..24 {
        let mut data = image.clone();
        let at = mirrors(&img, blocks[round % blocks.len()])[0] as usize;
        let block = &mut data[at..at + 4096];
        for _ in 0..1 + round % 4 {
            // Past the checksum, uuid and address fields of the header.
            let off = 0x50 + rng.below(4096 - 0x50) as usize;
            block[off] ^= 1 << rng.below(8);
        }
        let sum = crc.checksum(&block[32..]);
        block[..4].copy_from_slice(&sum.to_le_bytes());
        backchain::volume::fs::btrfs::fuzz_open_walk(&data);
    }
}

/// `ls --json` of `path` in `target`: the entry names.
fn ls(target: &Path, path: &str) -> Vec<String> {
    let out = run(backchain().args(["ls", "--json"]).arg(target).arg(path));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

/// A GPT disk with a btrfs and an ext4 partition: the btrfs partition is
/// browsable under its label; with its superblock damaged it becomes a
/// folder with the reason and its raw bytes, and the ext4 partition still
/// reads.
#[test]
fn btrfs_partition_beside_ext4_on_a_gpt_disk() {
    let d = tempdir();
    let (src, bimg, eimg, disk) =
        (d.path().join("src"), d.path().join("b.img"), d.path().join("e.img"), d.path().join("disk.img"));
    write(&src.join("hello.txt"), b"hello from a partition\n");
    mkfs_rootdir(&src, &bimg);
    run(tool("truncate").args(["-s", "16M"]).arg(&eimg));
    run(tool("mkfs.ext4").args(["-q", "-F", "-L", "bc-ext4", "-d"]).arg(&src).arg(&eimg));
    run(tool("truncate").args(["-s", "150M"]).arg(&disk));
    run(tool("sgdisk").args(["-n", "1:2048:+128M", "-n", "2:0:+16M"]).arg(&disk));
    let place = |img: &Path, sector: u64| {
        run(tool("dd").arg(format!("if={}", img.display())).arg(format!("of={}", disk.display())).args([
            "bs=512",
            &format!("seek={sector}"),
            "conv=notrunc,sparse",
            "status=none",
        ]));
    };
    place(&bimg, 2048);
    place(&eimg, 2048 + (128 << 11));
    let parts = ls(&disk, "");
    let btrfs = parts.iter().find(|n| n.starts_with("Partition 1")).unwrap().clone();
    let ext4 = parts.iter().find(|n| n.starts_with("Partition 2")).unwrap().clone();
    assert!(btrfs.contains("bc-btrfs"), "{parts:?}");
    let cat = run(backchain().arg("cat").arg(&disk).arg(format!("{btrfs}/hello.txt")));
    assert_eq!(cat.stdout, b"hello from a partition\n");

    // A flipped byte in the btrfs superblock (1 MiB into the disk + 64 KiB).
    flip_bit(&disk, (1 << 20) + 0x10000 + 0x100);
    let parts = ls(&disk, "");
    let broken = parts.iter().find(|n| n.starts_with("Partition 1")).unwrap().clone();
    assert!(ls(&disk, &broken).contains(&"partition.img".to_string()));
    let note = run(backchain().arg("cat").arg(&disk).arg(format!("{broken}/README.txt")));
    assert!(String::from_utf8_lossy(&note.stdout).contains("superblock checksum mismatch"));
    let cat = run(backchain().arg("cat").arg(&disk).arg(format!("{ext4}/hello.txt")));
    assert_eq!(cat.stdout, b"hello from a partition\n");
}
