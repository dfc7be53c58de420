//! NTFS through the `Filesystem` trait, against images built with mkntfs and
//! filled through an ntfs-3g mount from a generated source tree: every file
//! must equal its source (SHA-256), every folder must list exactly the
//! source's entries, links and times must match.

mod common;
#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/ntfs3g.rs"]
mod ntfs3g;
use ntfs3g::{LABEL, Mount, mkntfs, ntfs_attrib, setfattr};

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backchain::block::{MemImage, RawFile, ReadAt};
use backchain::volume::fs::{self, Filesystem, FsError, FsKind, NodeId, NodeKind};
use common::{Rng, random, run, tempdir, tool, write};
use sha2::{Digest, Sha256};

/// Text that LZNT1 compresses well, `len` bytes.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = ["backup ", "chain ", "qcow2 ", "cluster ", "ntfs ", "restore ", "\n", "volume "];
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        v.extend_from_slice(WORDS[rng.below(8) as usize].as_bytes());
    }
    v.truncate(len);
    v
}

/// Sizes of the files in the compressed folder: tiny, unit-sized, odd,
/// over 1 MiB, with zero runs covering whole units and partial ones.
fn compressed_files(rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        ("small.txt".to_string(), text(rng, 3000)),
        ("unit.txt".to_string(), text(rng, 65536)),
        ("odd.txt".to_string(), text(rng, 3 * 65536 + 1234)),
        ("random.bin".to_string(), random(rng, 200_000 + 17)),
    ];
    let mut big = text(rng, 1_500_000 + 333);
    big[100_000..400_000].fill(0); // whole units of zeros
    big[70_000..70_500].fill(0); // a zero run inside a unit
    files.push(("big.txt".to_string(), big));
    let mut mixed = Vec::new();
    for i in 0..40 {
        match i % 3 {
            0 => mixed.extend(text(rng, 20_000 + i * 13)),
            1 => mixed.extend(random(rng, 9_000 + i)),
            _ => mixed.extend(vec![0u8; 70_000]),
        }
    }
    files.push(("mixed.bin".to_string(), mixed));
    files
}

/// Pieces of the fragmented file (4 KiB each).
const FRAGMENTS: usize = 600;

fn fragment(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; 4096]
}

const LONG_NAME: &str = "A rather long file name.text";
const DOS_ALIAS: &str = "ARATHE~1.TEX";
const ADS_FILE: &str = "with stream.txt";

/// Builds the source tree the NTFS image is filled from.
fn make_source(src: &Path, many: usize) {
    let mut rng = Rng::new(4);
    write(&src.join("héllo wörld.txt"), b"unicode name\n");
    write(&src.join("日本語のファイル.txt"), &text(&mut rng, 5000));
    write(&src.join("emoji 🎉 party.bin"), &random(&mut rng, 777));
    write(&src.join("empty.txt"), b"");
    std::fs::create_dir_all(src.join("empty folder")).unwrap();
    let mut deep = src.to_path_buf();
    for level in 0..12 {
        deep.push(format!("level {level} ñ"));
    }
    write(&deep.join("deep.txt"), b"at the bottom\n");
    for i in 0..many {
        write(&src.join("many").join(format!("file-{i:05}.txt")), format!("file number {i}\n").as_bytes());
    }
    write(&src.join(LONG_NAME), b"has an 8.3 alias\n");
    write(&src.join(ADS_FILE), b"main stream\n");
    write(&src.join("readonly.txt"), b"read only\n");
    write(&src.join("resident.bin"), &random(&mut rng, 300));
    write(&src.join("big random.bin"), &random(&mut rng, 3 * 1024 * 1024 + 5));
    // A sparse file: data, a hole of whole and partial clusters, data.
    let sparse = src.join("sparse.bin");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&sparse).unwrap();
        f.write_all(&random(&mut rng, 10_000)).unwrap();
        f.seek(SeekFrom::Start(5 * 1024 * 1024 + 123)).unwrap();
        f.write_all(&random(&mut rng, 70_000)).unwrap();
        f.set_len(9 * 1024 * 1024).unwrap();
    }
    std::fs::hard_link(src.join("héllo wörld.txt"), src.join("hard link.txt")).unwrap();
    std::os::unix::fs::symlink("héllo wörld.txt", src.join("link to file")).unwrap();
    std::os::unix::fs::symlink("/etc/absolute/target", src.join("absolute link")).unwrap();
    std::os::unix::fs::symlink("level 0 ñ/level 1 ñ", src.join("link to folder")).unwrap();
    std::os::unix::fs::symlink("does not exist", src.join("dangling")).unwrap();
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// A reparse buffer ([MS-FSCC] 2.1.2.4/2.1.2.5) as hex for setfattr.
fn reparse_hex(tag: u32, substitute: &str, print: &str, flags: Option<u32>) -> String {
    let (s, p) = (utf16(substitute), utf16(print));
    let mut d = Vec::new();
    for v in [0, s.len(), s.len(), p.len()] {
        d.extend_from_slice(&(v as u16).to_le_bytes());
    }
    if let Some(f) = flags {
        d.extend_from_slice(&f.to_le_bytes());
    }
    d.extend_from_slice(&s);
    d.extend_from_slice(&p);
    let mut v = tag.to_le_bytes().to_vec();
    v.extend_from_slice(&(d.len() as u16).to_le_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&d);
    let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

/// What the test expects beyond the plain copy of the source.
struct Extra {
    /// Reparse-point symlinks: name in the root -> expected target.
    reparse_links: BTreeMap<String, String>,
    compressed: Vec<(String, Vec<u8>)>,
}

/// mkntfs, then fill through ntfs-3g: the source tree, an NTFS-compressed
/// folder, reparse-point links, a DOS alias, an alternate data stream.
fn build_image(dir: &Path, many: usize, size_mib: u64, fragments: usize) -> (PathBuf, PathBuf, Extra) {
    let src = dir.join("src");
    make_source(&src, many);
    let image = dir.join("ntfs.img");
    mkntfs(&image, size_mib);
    let mnt = Mount::new(&image, &dir.join("mnt"));
    let m = mnt.dir.clone();
    run(tool("cp")
        .args(["-R", "--preserve=links,timestamps", "--sparse=always"])
        .arg(format!("{}/.", src.display()))
        .arg(&m));

    // Compressed folder: the attribute is set before the files go in, so
    // ntfs-3g writes them compressed.
    let mut rng = Rng::new(77);
    let comp = m.join("compressed");
    std::fs::create_dir(&comp).unwrap();
    setfattr(&comp, "system.ntfs_attrib_be", "0x00000800");
    let compressed = compressed_files(&mut rng);
    for (name, data) in &compressed {
        std::fs::write(comp.join(name), data).unwrap();
    }
    std::fs::create_dir(comp.join("sub")).unwrap();
    std::fs::write(comp.join("sub").join("nested.txt"), text(&mut rng, 100_000)).unwrap();
    for (name, data) in &compressed {
        if data.len() > 4096 {
            assert_ne!(ntfs_attrib(&comp.join(name)) & 0x800, 0, "{name} is not compressed");
        }
    }

    // Reparse-point symlink and junction, written as raw reparse data.
    let mut reparse_links = BTreeMap::new();
    std::fs::write(m.join("reparse symlink"), b"").unwrap();
    let symlink = reparse_hex(0xa000_000c, "level 0 ñ\\level 1 ñ", "level 0 ñ\\level 1 ñ", Some(1));
    setfattr(&m.join("reparse symlink"), "system.ntfs_reparse_data", &symlink);
    reparse_links.insert("reparse symlink".to_string(), "level 0 ñ/level 1 ñ".to_string());
    std::fs::create_dir(m.join("junction")).unwrap();
    setfattr(
        &m.join("junction"),
        "system.ntfs_reparse_data",
        &reparse_hex(0xa000_0003, "\\??\\C:\\Data\\Folder", "C:\\Data\\Folder", None),
    );
    reparse_links.insert("junction".to_string(), "C:\\Data\\Folder".to_string());

    // A file whose clusters alternate with other files' clusters: so many
    // runs that its $DATA spreads over extension records ($ATTRIBUTE_LIST).
    {
        use std::io::Write;
        std::fs::create_dir(m.join("fragmented")).unwrap();
        let mut f = std::fs::File::create(m.join("fragmented").join("fragmented.bin")).unwrap();
        for i in 0..fragments {
            f.write_all(&fragment(i)).unwrap();
            f.sync_all().unwrap();
            let mut pad = std::fs::File::create(m.join("fragmented").join(format!("pad-{i:04}.bin"))).unwrap();
            pad.write_all(&[7u8; 4096]).unwrap();
            pad.sync_all().unwrap();
        }
    }
    setfattr(&m.join(LONG_NAME), "system.ntfs_dos_name", DOS_ALIAS);
    setfattr(&m.join(ADS_FILE), "user.mystream", "alternate stream data");
    setfattr(&m.join("readonly.txt"), "system.ntfs_attrib_be", "0x00000021");
    // FILE_ATTRIBUTE_SPARSE_FILE: the holes really are holes on NTFS.
    assert_ne!(ntfs_attrib(&m.join("sparse.bin")) & 0x200, 0, "sparse.bin is not sparse");
    mnt.unmount();
    if fragments > 0 {
        let info = run(tool("ntfsinfo").args(["-F", "fragmented/fragmented.bin"]).arg(&image)).stdout;
        assert!(String::from_utf8_lossy(&info).contains("$ATTRIBUTE_LIST"), "fragmented.bin has no attribute list");
    }
    (image, src, Extra { reparse_links, compressed })
}

fn open(image: &Path) -> Arc<dyn Filesystem> {
    let vol: Arc<dyn ReadAt> = Arc::new(RawFile::open(image).unwrap());
    fs::open(vol).unwrap().expect("NTFS recognised")
}

fn read_all(fs: &dyn Filesystem, node: NodeId, size: u64, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    let mut buf = vec![0u8; chunk];
    loop {
        let n = fs.read(node, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len() as u64, size);
    out
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn names(fs: &dyn Filesystem, dir: NodeId) -> BTreeSet<String> {
    fs.read_dir(dir).unwrap().into_iter().map(|e| String::from_utf8(e.name).unwrap()).collect()
}

fn lookup_path(fs: &dyn Filesystem, path: &str) -> fs::DirEntry {
    let mut node = fs.root();
    let mut entry = None;
    for part in path.split('/') {
        let e = fs.lookup(node, part.as_bytes()).unwrap_or_else(|err| panic!("{path}: {part}: {err}"));
        node = e.attr.node;
        entry = Some(e);
    }
    entry.unwrap()
}

/// Compares the NTFS folder `node` with the source folder `src`, recursively.
fn compare_tree(fs: &dyn Filesystem, node: NodeId, src: &Path, checked: &mut usize) {
    let mut expect = BTreeSet::new();
    for e in std::fs::read_dir(src).unwrap() {
        expect.insert(e.unwrap().file_name().into_string().unwrap());
    }
    let entries = fs.read_dir(node).unwrap();
    let got: BTreeSet<String> = entries.iter().map(|e| String::from_utf8(e.name.clone()).unwrap()).collect();
    assert_eq!(got, expect, "listing of {}", src.display());
    assert_eq!(got.len(), entries.len(), "duplicate names in {}", src.display());
    for e in entries {
        let name = String::from_utf8(e.name.clone()).unwrap();
        let path = src.join(&name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(fs.stat(e.attr.node).unwrap(), e.attr, "{name}: stat and listing differ");
        assert_eq!(fs.lookup(node, &e.name).unwrap(), e);
        // NTFS keeps times in 100 ns units.
        assert_eq!(e.attr.mtime.secs, meta.mtime(), "{name}: mtime");
        assert_eq!(e.attr.mtime.nanos / 100, meta.mtime_nsec() as u32 / 100, "{name}: mtime ns");
        assert_eq!((e.attr.uid, e.attr.gid), (0, 0));
        if meta.file_type().is_symlink() {
            assert_eq!(e.attr.kind, NodeKind::Symlink, "{name}");
            let target = std::fs::read_link(&path).unwrap();
            assert_eq!(fs.read_link(e.attr.node).unwrap(), target.as_os_str().as_encoded_bytes(), "{name}");
            assert_eq!(e.attr.size, target.as_os_str().len() as u64);
        } else if meta.is_dir() {
            assert_eq!(e.attr.kind, NodeKind::Directory, "{name}");
            assert_eq!(e.attr.perm, 0o755);
            assert!(matches!(fs.read(e.attr.node, 0, &mut [0u8; 4]), Err(FsError::IsADirectory)));
            compare_tree(fs, e.attr.node, &path, checked);
        } else {
            assert_eq!(e.attr.kind, NodeKind::File, "{name}");
            assert_eq!(e.attr.size, meta.len(), "{name}: size");
            assert_eq!(e.attr.nlink, meta.nlink() as u32, "{name}: nlink");
            let expect_perm = if name == "readonly.txt" { 0o444 } else { 0o644 };
            assert_eq!(e.attr.perm, expect_perm, "{name}: perm");
            let data = read_all(fs, e.attr.node, e.attr.size, 1 << 20);
            assert_eq!(sha(&data), sha(&std::fs::read(&path).unwrap()), "{name}: content");
            assert!(matches!(fs.read_link(e.attr.node), Err(FsError::NotASymlink)));
        }
        *checked += 1;
    }
}

#[test]
fn ntfs_tree_equals_source() {
    let tmp = tempdir();
    let (image, src, extra) = build_image(tmp.path(), 3000, 64, FRAGMENTS);
    let fs = open(&image);
    assert_eq!(fs.kind(), FsKind::Ntfs);
    assert_eq!(fs.label().as_deref(), Some(LABEL));
    let stats = fs.statfs().unwrap();
    // The last sector holds the backup boot sector, outside the volume size.
    assert!(stats.total_bytes <= 64 << 20 && stats.total_bytes >= (64 << 20) - 4096);
    assert!(stats.free_bytes > 0 && stats.free_bytes < stats.total_bytes);

    // The root lists the source, plus what was made only on the NTFS side.
    let root = fs.root();
    let mut root_names = names(&*fs, root);
    for extra_name in ["compressed", "reparse symlink", "junction", "fragmented"] {
        assert!(root_names.remove(extra_name), "{extra_name} missing");
    }
    let mut src_names = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        src_names.insert(e.unwrap().file_name().into_string().unwrap());
    }
    assert_eq!(root_names, src_names);
    assert!(!names(&*fs, root).contains(DOS_ALIAS), "8.3 alias listed");
    assert!(matches!(fs.lookup(root, DOS_ALIAS.as_bytes()), Err(FsError::NotFound)));

    // Everything from the source tree (root entries made on NTFS only are
    // checked below), with the listing filtered the same way.
    let mut checked = 0;
    for name in &src_names {
        let e = fs.lookup(root, name.as_bytes()).unwrap();
        let path = src.join(name);
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            compare_tree(&*fs, e.attr.node, &path, &mut checked);
        }
    }
    assert!(checked > 3000);

    let mut seen = 0;
    for name in &src_names {
        let path = src.join(name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let e = fs.lookup(root, name.as_bytes()).unwrap();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            assert_eq!(e.attr.kind, NodeKind::Symlink, "{name}");
            assert_eq!(fs.read_link(e.attr.node).unwrap(), target.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            assert_eq!(e.attr.kind, NodeKind::File, "{name}");
            assert_eq!(e.attr.size, meta.len(), "{name}: {:?}", fs.read(e.attr.node, 0, &mut [0u8; 1]));
            assert_eq!(e.attr.mtime.secs, meta.mtime(), "{name}: mtime");
            let data = read_all(&*fs, e.attr.node, e.attr.size, 100_000);
            assert_eq!(sha(&data), sha(&std::fs::read(&path).unwrap()), "{name}: content");
            seen += 1;
        }
    }
    assert!(seen >= 10);

    // The fragmented file, its $DATA split over several MFT records.
    let frag = fs.lookup(root, b"fragmented").unwrap().attr.node;
    assert_eq!(fs.read_dir(frag).unwrap().len(), FRAGMENTS + 1);
    let f = fs.lookup(frag, b"fragmented.bin").unwrap();
    let expect: Vec<u8> = (0..FRAGMENTS).flat_map(fragment).collect();
    assert_eq!(sha(&read_all(&*fs, f.attr.node, f.attr.size, 1 << 20)), sha(&expect));

    // Hard links: one node, two names.
    let a = fs.lookup(root, "héllo wörld.txt".as_bytes()).unwrap();
    let b = fs.lookup(root, b"hard link.txt").unwrap();
    assert_eq!(a.attr.node, b.attr.node);
    assert_eq!(a.attr.nlink, 2);
    assert_eq!(fs.lookup(root, b"readonly.txt").unwrap().attr.perm, 0o444);
    assert_eq!(fs.lookup(root, b"empty.txt").unwrap().attr.size, 0);

    // The stream is not listed and not mixed into the main data.
    let ads = fs.lookup(root, ADS_FILE.as_bytes()).unwrap();
    assert_eq!(read_all(&*fs, ads.attr.node, ads.attr.size, 4096), b"main stream\n");

    // Reparse-point links.
    for (name, target) in &extra.reparse_links {
        let e = fs.lookup(root, name.as_bytes()).unwrap();
        assert_eq!(e.attr.kind, NodeKind::Symlink, "{name}");
        assert_eq!(String::from_utf8(fs.read_link(e.attr.node).unwrap()).unwrap(), *target);
        assert!(fs.read_dir(e.attr.node).is_err());
    }

    // Compressed folder: decompressed, equal to what was written, read in
    // several chunk sizes (unit-aligned and not).
    let comp = fs.lookup(root, b"compressed").unwrap().attr.node;
    let mut expect: BTreeSet<String> = extra.compressed.iter().map(|(n, _)| n.clone()).collect();
    expect.insert("sub".into());
    assert_eq!(names(&*fs, comp), expect);
    for (name, data) in &extra.compressed {
        let e = fs.lookup(comp, name.as_bytes()).unwrap();
        assert_eq!(e.attr.size, data.len() as u64, "{name}");
        for chunk in [4096, 65536, 100_003, 1 << 20] {
            assert_eq!(
                sha(&read_all(&*fs, e.attr.node, e.attr.size, chunk)),
                sha(data),
                "{name} in {chunk}-byte reads"
            );
        }
        // A read straddling two compression units.
        if data.len() > 70_000 {
            let mut buf = vec![0u8; 1000];
            assert_eq!(fs.read(e.attr.node, 65_000, &mut buf).unwrap(), 1000);
            assert_eq!(&buf[..], &data[65_000..66_000]);
        }
    }
    let nested = fs.lookup(comp, b"sub").unwrap().attr.node;
    let n = fs.lookup(nested, b"nested.txt").unwrap();
    assert_eq!(sha(&read_all(&*fs, n.attr.node, n.attr.size, 7777)), sha(&text(&mut skip_rng(), 100_000)));

    // Errors: not found, not a folder, beyond the end.
    assert!(matches!(fs.lookup(root, b"no such name"), Err(FsError::NotFound)));
    assert!(matches!(fs.read_dir(a.attr.node), Err(FsError::NotADirectory)));
    assert_eq!(fs.read(a.attr.node, 1 << 40, &mut [0u8; 10]).unwrap(), 0);

    // Many threads at once give the same bytes.
    let big = fs.lookup(root, b"big random.bin").unwrap();
    let expect = sha(&std::fs::read(src.join("big random.bin")).unwrap());
    let big_comp = fs.lookup(comp, b"big.txt").unwrap();
    let expect_comp = sha(&extra.compressed.iter().find(|(n, _)| n == "big.txt").unwrap().1);
    std::thread::scope(|s| {
        for t in 0..4 {
            let fs = fs.clone();
            let (big, big_comp) = (big.clone(), big_comp.clone());
            s.spawn(move || {
                for _ in 0..2 {
                    assert_eq!(sha(&read_all(&*fs, big.attr.node, big.attr.size, 65536 + t * 4096)), expect);
                    assert_eq!(sha(&read_all(&*fs, big_comp.attr.node, big_comp.attr.size, 30_000 + t)), expect_comp);
                }
            });
        }
    });

    // An EFS-encrypted file is listed but not read.
    let victim = fs.lookup(root, b"resident.bin").unwrap();
    let enc_image = tmp.path().join("encrypted.img");
    mark_encrypted(&image, victim.attr.node, &enc_image);
    let enc = open(&enc_image);
    let e = enc.lookup(enc.root(), b"resident.bin").unwrap();
    match enc.read(e.attr.node, 0, &mut [0u8; 16]) {
        Err(FsError::Unsupported(msg)) => assert!(msg.contains("encrypted"), "{msg}"),
        other => panic!("encrypted file read: {other:?}"),
    }
    assert!(enc.lookup(enc.root(), b"empty.txt").is_ok());

    // Deep paths by lookup.
    let deep = (0..12).map(|l| format!("level {l} ñ")).collect::<Vec<_>>().join("/") + "/deep.txt";
    let e = lookup_path(&*fs, &deep);
    assert_eq!(read_all(&*fs, e.attr.node, e.attr.size, 4096), b"at the bottom\n");
}

/// Sets FILE_ATTRIBUTE_ENCRYPTED in the $STANDARD_INFORMATION of MFT record
/// `frn` of a copy of `image` (ntfs-3g cannot make EFS files), the way an
/// EFS file looks to a reader without the key.
fn mark_encrypted(image: &Path, frn: u64, out: &Path) {
    let mut img = std::fs::read(image).unwrap();
    let le16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let cluster = le16(&img, 11) as u64 * u64::from(img[13]);
    let mft = u64::from_le_bytes(img[0x30..0x38].try_into().unwrap()) * cluster;
    // Records of 1024 bytes (mkntfs's default); the first MFT extent holds
    // the low-numbered records of a fresh volume.
    let rec = (mft + frn * 1024) as usize;
    assert_eq!(&img[rec..rec + 4], b"FILE");
    assert_eq!(u32::from_le_bytes(img[rec + 0x2c..rec + 0x30].try_into().unwrap()) as u64, frn);
    let attr = rec + le16(&img, rec + 0x14);
    assert_eq!(u32::from_le_bytes(img[attr..attr + 4].try_into().unwrap()), 0x10, "first attribute is not SI");
    let value = attr + le16(&img, attr + 0x14);
    img[value + 0x21] |= 0x40; // bit 0x4000 of the u32 at 0x20
    std::fs::write(out, img).unwrap();
}

/// The Rng state `build_image` had when it wrote `sub/nested.txt`.
fn skip_rng() -> Rng {
    let mut rng = Rng::new(77);
    compressed_files(&mut rng);
    rng
}

#[test]
fn corrupt_images_never_panic() {
    let tmp = tempdir();
    let (image, _src, _extra) = build_image(tmp.path(), 40, 8, 0);
    let pristine = std::fs::read(&image).unwrap();
    // The unmodified image walks cleanly.
    backchain::volume::fs::ntfs::fuzz_open_walk(&pristine);
    // Metadata lives in the boot sector, the first MFT records and the index
    // blocks ntfs-3g places near them: flip bytes there most of the time.
    let bps = u64::from(u16::from_le_bytes([pristine[11], pristine[12]]));
    let cluster = bps * u64::from(pristine[13]);
    let mft = u64::from_le_bytes(pristine[0x30..0x38].try_into().unwrap()) * cluster;
    let mut rng = Rng::new(2026);
    let started = Instant::now();
    for round in 0..300 {
        let mut img = pristine.clone();
        let flips = 1 + rng.below(8);
        for _ in 0..flips {
            let at = match rng.below(4) {
                0 => rng.below(512),
                1 | 2 => mft + rng.below(128 * 1024),
                _ => rng.below(img.len() as u64),
            } as usize;
            if at < img.len() {
                img[at] ^= 1 << rng.below(8);
            }
        }
        let one = Instant::now();
        backchain::volume::fs::ntfs::fuzz_open_walk(&img);
        assert!(one.elapsed() < Duration::from_secs(20), "round {round} took {:?}", one.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(300));
    // Truncated and empty volumes.
    for len in [0, 100, 512, 4096, 1 << 20] {
        backchain::volume::fs::ntfs::fuzz_open_walk(&pristine[..len.min(pristine.len())]);
    }
    // A non-NTFS volume is not recognised.
    let vol: Arc<dyn ReadAt> = Arc::new(MemImage(vec![0u8; 1 << 20]));
    assert!(fs::open(vol).unwrap().is_none());
}

/// The shared fixture ntfs.img (fixtures/build.sh): its tree equals
/// `src-ntfs/`, plus the Windows reparse points listed in ntfs-reparse.txt.
#[test]
fn fixture_ntfs_img() {
    let fs = open(&fixtures::fixture("ntfs.img"));
    assert_eq!(fs.label().as_deref(), Some("BC-NTFS"));
    let src = fixtures::fixture("src-ntfs");
    let root = fs.root();
    let mut got = names(&*fs, root);
    assert!(got.remove("reparse"));
    let mut expect = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap() {
        expect.insert(e.unwrap().file_name().into_string().unwrap());
    }
    assert_eq!(got, expect);
    let mut checked = 0;
    for name in &expect {
        let e = fs.lookup(root, name.as_bytes()).unwrap();
        let path = src.join(name);
        if path.is_dir() {
            compare_tree(&*fs, e.attr.node, &path, &mut checked);
        } else {
            let data = read_all(&*fs, e.attr.node, e.attr.size, 65536);
            assert_eq!(sha(&data), sha(&std::fs::read(&path).unwrap()), "{name}");
            checked += 1;
        }
    }
    assert!(checked > 3000);

    let rows = fixtures::manifest("ntfs-reparse.txt");
    assert!(!rows.is_empty());
    for row in rows {
        let (path, kind) = (&row[0], &row[1]);
        let e = lookup_path(&*fs, path);
        match kind.as_str() {
            "symlink" | "junction" => {
                let print = &row[2];
                // Documented mapping: relative targets get slashes.
                let absolute = print.starts_with('\\') || print.as_bytes().get(1) == Some(&b':');
                let want = if absolute { print.clone() } else { print.replace('\\', "/") };
                assert_eq!(e.attr.kind, NodeKind::Symlink, "{path}");
                assert_eq!(String::from_utf8(fs.read_link(e.attr.node).unwrap()).unwrap(), want, "{path}");
            }
            _ => {
                // WOF and other reparse kinds: listed, never read as bytes.
                assert_eq!(e.attr.kind, NodeKind::File, "{path}");
                match fs.read(e.attr.node, 0, &mut [0u8; 64]) {
                    Err(FsError::Unsupported(msg)) => assert!(msg.contains("reparse"), "{path}: {msg}"),
                    other => panic!("{path}: {other:?}"),
                }
            }
        }
    }
}

/// The same NTFS volume as partition 2 of the GPT and partition 7 (a
/// logical one) of the MBR fixture disks, through a partition window.
#[test]
fn fixture_ntfs_in_partitions() {
    use backchain::block::Slice;
    use backchain::volume::table::read_table;
    let plain = open(&fixtures::fixture("ntfs.img"));
    let readme = plain.lookup(plain.root(), b"README.txt").unwrap();
    let expect = read_all(&*plain, readme.attr.node, readme.attr.size, 4096);
    for (disk, number) in [("gpt.img", 2), ("mbr.img", 7)] {
        let vol: Arc<dyn ReadAt> = Arc::new(RawFile::open(&fixtures::fixture(disk)).unwrap());
        let table = read_table(&vol).unwrap();
        let part = table.partitions.iter().find(|p| p.number == number).unwrap();
        let window: Arc<dyn ReadAt> = Arc::new(Slice::new(vol.clone(), part.start, part.size).unwrap());
        let fs = fs::open(window).unwrap().expect("NTFS in the partition");
        assert_eq!(fs.label().as_deref(), Some("BC-NTFS"), "{disk}");
        let e = fs.lookup(fs.root(), b"README.txt").unwrap();
        assert_eq!(read_all(&*fs, e.attr.node, e.attr.size, 4096), expect, "{disk}");
        assert_eq!(names(&*fs, fs.root()), names(&*plain, plain.root()), "{disk}");
    }
}
